//! Deployment plans: from the apps before a change to the apps after it, a
//! list of steps, each a set of actions on apps that run together. Pure.
//!
//! As in Marathon: apps that go away are stopped first; new apps are then
//! started (with no instances) in the order of their dependencies; last,
//! apps are scaled or restarted, dependencies before the apps that depend
//! on them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::app::StoredApp;

/// What one action does to one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// Create the app (with no instances yet).
    StartApplication,
    /// Kill all its instances and remove it.
    StopApplication,
    /// Launch or kill instances until `instances` run, replacing none.
    ScaleApplication,
    /// Replace every instance of an older configuration (rolling, by the
    /// app's `upgradeStrategy`), at the target instance count.
    RestartApplication,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::StartApplication => "StartApplication",
            ActionKind::StopApplication => "StopApplication",
            ActionKind::ScaleApplication => "ScaleApplication",
            ActionKind::RestartApplication => "RestartApplication",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    pub app: String,
}

/// A deployment: what the apps were, what they become, and the steps in
/// between. Stored until it is done so a new leader carries on with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    /// When it was made (shown as its `version`).
    pub version: crate::time::Millis,
    /// The affected apps before (`None`: did not exist).
    pub original: BTreeMap<String, Option<StoredApp>>,
    /// The affected apps after (`None`: removed).
    pub target: BTreeMap<String, Option<StoredApp>>,
    pub steps: Vec<Vec<Action>>,
    /// Index of the step being carried out; `steps.len()` when all are done.
    pub current_step: usize,
}

impl Deployment {
    /// The apps this deployment changes, sorted.
    pub fn affected_apps(&self) -> Vec<String> {
        self.target.keys().cloned().collect()
    }

    pub fn current_actions(&self) -> &[Action] {
        self.steps
            .get(self.current_step)
            .map(|s| s.as_slice())
            .unwrap_or(&[])
    }

    pub fn is_done(&self) -> bool {
        self.current_step >= self.steps.len()
    }

    /// The action for `app` in the current step, if any.
    pub fn current_action_for(&self, app: &str) -> Option<ActionKind> {
        self.current_actions()
            .iter()
            .find(|a| a.app == app)
            .map(|a| a.kind)
    }
}

/// Plans the change of the apps in `original` into those in `target` (both
/// keyed by app id; only the apps that change need to be given, and an app
/// absent from `target` but present in `original` is removed).
pub fn plan(
    id: String,
    version: crate::time::Millis,
    original: BTreeMap<String, Option<StoredApp>>,
    target: BTreeMap<String, Option<StoredApp>>,
) -> Deployment {
    let mut stops = Vec::new();
    let mut starts = Vec::new();
    let mut changes = Vec::new();
    for (app, after) in &target {
        let before = original.get(app).and_then(|b| b.as_ref());
        match (before, after) {
            (Some(_), None) => stops.push(Action {
                kind: ActionKind::StopApplication,
                app: app.clone(),
            }),
            (None, Some(_)) => {
                starts.push(app.clone());
                changes.push(Action {
                    kind: ActionKind::ScaleApplication,
                    app: app.clone(),
                });
            }
            (Some(b), Some(a)) => {
                if b.last_config_change_at != a.last_config_change_at {
                    changes.push(Action {
                        kind: ActionKind::RestartApplication,
                        app: app.clone(),
                    });
                } else if b.definition.instances != a.definition.instances
                    || b.last_scaling_at != a.last_scaling_at
                {
                    changes.push(Action {
                        kind: ActionKind::ScaleApplication,
                        app: app.clone(),
                    });
                }
            }
            (None, None) => {}
        }
    }
    let levels = dependency_levels(&target);
    let mut steps = Vec::new();
    if !stops.is_empty() {
        steps.push(stops);
    }
    for level in group_by_level(
        starts
            .iter()
            .map(|a| (a.clone(), ActionKind::StartApplication)),
        &levels,
    ) {
        steps.push(level);
    }
    for level in group_by_level(changes.iter().map(|a| (a.app.clone(), a.kind)), &levels) {
        steps.push(level);
    }
    Deployment {
        id,
        version,
        original,
        target,
        steps,
        current_step: 0,
    }
}

/// Each app's depth in the dependency graph among `apps` (0: depends on no
/// other app of the change). Cycles are cut (validation refuses
/// self-dependencies; longer cycles just end up on one level).
fn dependency_levels(apps: &BTreeMap<String, Option<StoredApp>>) -> BTreeMap<String, usize> {
    let mut levels = BTreeMap::new();
    fn level_of(
        app: &str,
        apps: &BTreeMap<String, Option<StoredApp>>,
        levels: &mut BTreeMap<String, usize>,
        visiting: &mut BTreeSet<String>,
    ) -> usize {
        if let Some(l) = levels.get(app) {
            return *l;
        }
        if !visiting.insert(app.to_string()) {
            return 0;
        }
        let deps: Vec<String> = apps
            .get(app)
            .and_then(|a| a.as_ref())
            .map(|a| a.definition.dependencies.clone())
            .unwrap_or_default();
        let level = deps
            .iter()
            .filter(|d| apps.contains_key(*d))
            .map(|d| level_of(d, apps, levels, visiting) + 1)
            .max()
            .unwrap_or(0);
        visiting.remove(app);
        levels.insert(app.to_string(), level);
        level
    }
    for app in apps.keys() {
        level_of(app, apps, &mut levels, &mut BTreeSet::new());
    }
    levels
}

fn group_by_level(
    actions: impl Iterator<Item = (String, ActionKind)>,
    levels: &BTreeMap<String, usize>,
) -> Vec<Vec<Action>> {
    let mut by_level: BTreeMap<usize, Vec<Action>> = BTreeMap::new();
    for (app, kind) in actions {
        let l = levels.get(&app).copied().unwrap_or(0);
        by_level.entry(l).or_default().push(Action { kind, app });
    }
    by_level.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppDefinition;

    fn app(id: &str, instances: i64, config: i64, deps: &[&str]) -> Option<StoredApp> {
        let mut definition: AppDefinition = serde_json::from_value(serde_json::json!({
            "id": id, "cmd": "sleep 1", "instances": instances,
            "dependencies": deps,
        }))
        .unwrap();
        definition.id = id.into();
        Some(StoredApp {
            definition,
            version: config,
            last_scaling_at: config,
            last_config_change_at: config,
        })
    }

    fn kinds(d: &Deployment) -> Vec<Vec<(ActionKind, String)>> {
        d.steps
            .iter()
            .map(|s| s.iter().map(|a| (a.kind, a.app.clone())).collect())
            .collect()
    }

    #[test]
    fn new_app_is_started_then_scaled() {
        let d = plan(
            "d".into(),
            1,
            BTreeMap::from([("/a".into(), None)]),
            BTreeMap::from([("/a".into(), app("/a", 2, 1, &[]))]),
        );
        use ActionKind::*;
        assert_eq!(
            kinds(&d),
            vec![
                vec![(StartApplication, "/a".into())],
                vec![(ScaleApplication, "/a".into())]
            ]
        );
    }

    #[test]
    fn config_change_restarts_and_count_change_scales() {
        use ActionKind::*;
        let d = plan(
            "d".into(),
            2,
            BTreeMap::from([("/a".into(), app("/a", 2, 1, &[]))]),
            BTreeMap::from([("/a".into(), app("/a", 2, 2, &[]))]),
        );
        assert_eq!(kinds(&d), vec![vec![(RestartApplication, "/a".into())]]);
        let mut scaled = app("/a", 5, 1, &[]);
        scaled.as_mut().unwrap().last_scaling_at = 2;
        let d = plan(
            "d".into(),
            2,
            BTreeMap::from([("/a".into(), app("/a", 2, 1, &[]))]),
            BTreeMap::from([("/a".into(), scaled)]),
        );
        assert_eq!(kinds(&d), vec![vec![(ScaleApplication, "/a".into())]]);
    }

    #[test]
    fn removal_stops_first_and_dependencies_order_the_rest() {
        use ActionKind::*;
        let d = plan(
            "d".into(),
            1,
            BTreeMap::from([
                ("/old".into(), app("/old", 1, 1, &[])),
                ("/db".into(), None),
                ("/web".into(), None),
            ]),
            BTreeMap::from([
                ("/old".into(), None),
                ("/db".into(), app("/db", 1, 1, &[])),
                ("/web".into(), app("/web", 1, 1, &["/db"])),
            ]),
        );
        assert_eq!(
            kinds(&d),
            vec![
                vec![(StopApplication, "/old".into())],
                vec![(StartApplication, "/db".into())],
                vec![(StartApplication, "/web".into())],
                vec![(ScaleApplication, "/db".into())],
                vec![(ScaleApplication, "/web".into())],
            ]
        );
        assert_eq!(d.affected_apps(), ["/db", "/old", "/web"]);
    }

    #[test]
    fn no_change_is_an_empty_plan() {
        let d = plan(
            "d".into(),
            1,
            BTreeMap::from([("/a".into(), app("/a", 2, 1, &[]))]),
            BTreeMap::from([("/a".into(), app("/a", 2, 1, &[]))]),
        );
        assert!(d.steps.is_empty());
        assert!(d.is_done());
    }
}
