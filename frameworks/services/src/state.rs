//! The framework's state: apps, their versions and instances, deployments.
//!
//! One task (the scheduler loop) changes it; HTTP handlers read it. A
//! change requested over the API goes through [`State::prepare`] (pure:
//! checks, the new app versions and the deployment plan), then its
//! [`Prepared::changes`] are written to the store, and only then
//! [`State::apply`] makes it visible and the request is answered.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::Value;

use crate::app::{AppDefinition, StoredApp};
use crate::deployment::{Deployment, plan::plan};
use crate::instance::Instance;
use crate::path_id::PathId;
use crate::refusal::Refusal;
use crate::store::{self, Changes, MAX_VERSIONS, TaskFailure};
use crate::time::Millis;
use crate::validation::{self, Context};

/// Service ports are assigned from this range (Marathon's
/// `local_port_min` / `local_port_max`).
pub const SERVICE_PORTS: std::ops::RangeInclusive<i64> = 10000..=20000;

/// Everything the framework knows.
#[derive(Debug, Default)]
pub struct State {
    pub apps: BTreeMap<String, AppState>,
    pub deployments: BTreeMap<String, Deployment>,
    pub framework_id: Option<String>,
}

/// One app.
#[derive(Debug, Clone)]
pub struct AppState {
    pub current: StoredApp,
    /// Removed by a deployment that is still stopping its instances; not
    /// shown by the API any more.
    pub removed: bool,
    /// Kept versions, oldest first (the current one last).
    pub versions: Vec<Millis>,
    pub instances: BTreeMap<String, Instance>,
    pub last_failure: Option<TaskFailure>,
    pub launch: LaunchState,
}

/// Launching: backoff after failures and what offers did (for `/v2/queue`).
#[derive(Debug, Clone, Default)]
pub struct LaunchState {
    /// Instances to launch now (the controller's latest decision; shown
    /// as the queue's `count`).
    pub wanted: u32,
    /// Failed tasks since the last configuration change.
    pub failures: u32,
    /// No launch before this time (backoff).
    pub delay_until: Millis,
    /// Since when instances have been waiting to launch.
    pub since: Option<Millis>,
    pub processed_offers: u64,
    pub unused_offers: u64,
    pub last_unused_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
    /// Why offers were not used, with counts, in the latest round.
    pub reasons: BTreeMap<String, u64>,
    /// The latest unused offers (offer id, agent, hostname, reason, when).
    pub last_unused: VecDeque<UnusedOffer>,
}

#[derive(Debug, Clone)]
pub struct UnusedOffer {
    pub offer_id: String,
    pub agent_id: String,
    pub hostname: String,
    pub reason: String,
    pub at: Millis,
}

impl AppState {
    fn new(current: StoredApp) -> AppState {
        AppState {
            versions: vec![current.version],
            current,
            removed: false,
            instances: BTreeMap::new(),
            last_failure: None,
            launch: LaunchState::default(),
        }
    }

    pub fn id(&self) -> &str {
        &self.current.definition.id
    }
}

/// One change an API request asks for.
#[derive(Debug, Clone)]
pub enum AppChange {
    /// POST: a new app (409 if the id is taken).
    Create(AppDefinition),
    /// PUT with a full definition: create or replace.
    Put(AppDefinition),
    /// PUT (partial update): the given top-level fields replace the
    /// current ones; creates the app when it does not exist.
    Patch {
        id: String,
        body: Value,
    },
    Remove(String),
    Restart(String),
    /// Back to a stored version (as a new version).
    Rollback {
        id: String,
        to: Box<StoredApp>,
    },
    /// Kill these tasks and lower `instances` by as many.
    KillAndScale {
        id: String,
        tasks: Vec<String>,
    },
}

/// A checked change, ready to be stored and applied.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub deployment: Deployment,
    /// Deployments this one replaces (`force`).
    pub cancelled: Vec<String>,
    /// Tasks to kill now (`KillAndScale`), by app.
    pub kill: Vec<(String, String)>,
}

impl Prepared {
    /// The store writes that make this change durable.
    pub fn changes(&self, state: &State) -> Changes {
        let mut c = Changes::default();
        for (id, target) in &self.deployment.target {
            match target {
                Some(app) => {
                    c.put(store::app_key(id), app);
                    c.put(store::version_key(id, app.version), app);
                    if let Some(a) = state.apps.get(id) {
                        let keep = MAX_VERSIONS.saturating_sub(1);
                        let n = a.versions.len();
                        for old in a.versions.iter().take(n.saturating_sub(keep)) {
                            c.delete(store::version_key(id, *old));
                        }
                    }
                }
                None => c.delete(store::app_key(id)),
            }
        }
        c.put(store::deployment_key(&self.deployment.id), &self.deployment);
        for d in &self.cancelled {
            c.delete(store::deployment_key(d));
        }
        let mut shards: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
        for (app, task) in &self.kill {
            shards.entry(app).or_default().insert(store::shard_of(task));
        }
        for (app, shard_ids) in shards {
            if let Some(a) = state.apps.get(app) {
                let killed: BTreeSet<&str> = self.kill.iter().map(|(_, t)| t.as_str()).collect();
                let marked: Vec<Instance> = a
                    .instances
                    .values()
                    .map(|i| {
                        let mut i = i.clone();
                        if killed.contains(i.task_id.as_str()) {
                            i.killing = true;
                        }
                        i
                    })
                    .collect();
                c.put_shards(app, shard_ids, marked.iter());
            }
        }
        c
    }
}

impl State {
    /// The apps the API shows (not those being removed).
    pub fn visible_apps(&self) -> impl Iterator<Item = &AppState> {
        self.apps.values().filter(|a| !a.removed)
    }

    pub fn app(&self, id: &str) -> Option<&AppState> {
        self.apps.get(id).filter(|a| !a.removed)
    }

    /// Deployments that hold `app`.
    pub fn deployments_of(&self, app: &str) -> Vec<&Deployment> {
        self.deployments
            .values()
            .filter(|d| d.target.contains_key(app))
            .collect()
    }

    /// A version for a change made at `now`: later than every version of
    /// the affected apps.
    fn next_version(&self, ids: &[String], now: Millis) -> Millis {
        ids.iter()
            .filter_map(|id| self.apps.get(id))
            .map(|a| a.current.version + 1)
            .fold(now, Millis::max)
    }

    /// Checks `changes` against the current state and plans them.
    pub fn prepare(
        &self,
        changes: Vec<AppChange>,
        force: bool,
        now: Millis,
        ctx: &Context,
    ) -> Result<Prepared, Refusal> {
        // The new definitions (None: removed), in request order.
        let mut wanted: BTreeMap<String, Option<AppDefinition>> = BTreeMap::new();
        let mut restarts = BTreeSet::new();
        // Rollbacks: the definition and configuration version gone back to.
        let mut rolled_back: BTreeMap<String, (AppDefinition, Millis)> = BTreeMap::new();
        let mut kill = Vec::new();
        for change in changes {
            match change {
                AppChange::Create(def) => {
                    if self.apps.contains_key(&def.id) || wanted.contains_key(&def.id) {
                        return Err(Refusal::conflict(format!(
                            "An app with id [{}] already exists.",
                            def.id
                        )));
                    }
                    wanted.insert(def.id.clone(), Some(def));
                }
                AppChange::Put(def) => {
                    wanted.insert(def.id.clone(), Some(def));
                }
                AppChange::Patch { id, body } => {
                    let def = self.patched(&id, body, ctx)?;
                    wanted.insert(id, Some(def));
                }
                AppChange::Remove(id) => {
                    if self.app(&id).is_none() {
                        return Err(Refusal::app_not_found(&id));
                    }
                    wanted.insert(id, None);
                }
                AppChange::Restart(id) => {
                    let app = self.app(&id).ok_or_else(|| Refusal::app_not_found(&id))?;
                    wanted.insert(id.clone(), Some(app.current.definition.clone()));
                    restarts.insert(id);
                }
                AppChange::Rollback { id, to } => {
                    let mut def = to.definition;
                    def.id = id.clone();
                    rolled_back.insert(id.clone(), (def.clone(), to.last_config_change_at));
                    wanted.insert(id, Some(def));
                }
                AppChange::KillAndScale { id, tasks } => {
                    let app = self.app(&id).ok_or_else(|| Refusal::app_not_found(&id))?;
                    let mut def = app.current.definition.clone();
                    let mut n = 0;
                    for t in &tasks {
                        if let Some(i) = app.instances.get(t)
                            && !i.killing
                            && i.is_active()
                        {
                            n += 1;
                            kill.push((id.clone(), t.clone()));
                        }
                    }
                    def.instances = (def.instances - n).max(0);
                    wanted.insert(id, Some(def));
                }
            }
        }
        let ids: Vec<String> = wanted.keys().cloned().collect();
        self.check_ids(&wanted)?;
        // One deployment per app: a running one holds its apps.
        let mut locking: Vec<String> = Vec::new();
        for id in &ids {
            for d in self.deployments_of(id) {
                if !locking.contains(&d.id) {
                    locking.push(d.id.clone());
                }
            }
        }
        if !locking.is_empty() && !force {
            return Err(Refusal::locked(&locking));
        }
        let version = self.next_version(&ids, now);
        let mut used_service_ports = self.service_ports_except(&ids);
        let mut original = BTreeMap::new();
        let mut target = BTreeMap::new();
        for (id, def) in wanted {
            let before = self.app(&id).map(|a| a.current.clone());
            let after = def.map(|mut def| {
                assign_service_ports(&mut def, &mut used_service_ports);
                match &before {
                    None => StoredApp {
                        definition: def,
                        version,
                        last_scaling_at: version,
                        last_config_change_at: version,
                    },
                    Some(b) => {
                        let config_changed =
                            restarts.contains(&id) || !b.definition.is_only_scale_of(&def);
                        let scaled = b.definition.instances != def.instances;
                        let config = match rolled_back.get(&id) {
                            _ if !config_changed => b.last_config_change_at,
                            // Back to an earlier configuration: the
                            // instances launched with it are current again,
                            // and only the others are replaced (Marathon
                            // deploys the stored version).
                            Some((to, at))
                                if !restarts.contains(&id) && to.is_only_scale_of(&def) =>
                            {
                                *at
                            }
                            _ => version,
                        };
                        StoredApp {
                            definition: def,
                            version,
                            last_scaling_at: if scaled || restarts.contains(&id) {
                                version
                            } else {
                                b.last_scaling_at
                            },
                            last_config_change_at: config,
                        }
                    }
                }
            });
            original.insert(id.clone(), before);
            target.insert(id, after);
        }
        let deployment = plan(uuid::Uuid::new_v4().to_string(), version, original, target);
        Ok(Prepared {
            deployment,
            cancelled: locking,
            kill,
        })
    }

    /// The current definition with the body's fields in place of its own.
    fn patched(&self, id: &str, body: Value, ctx: &Context) -> Result<AppDefinition, Refusal> {
        let body = validation::strip_read_only(body)?;
        let Value::Object(fields) = body else {
            return Err(Refusal::invalid_at("/", "expected a JSON object"));
        };
        let mut merged = match self.app(id) {
            Some(app) => match serde_json::to_value(&app.current.definition) {
                Ok(Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            },
            None => serde_json::Map::new(),
        };
        if fields.contains_key("ports") && !fields.contains_key("portDefinitions") {
            merged.remove("portDefinitions");
        }
        for (k, v) in fields {
            merged.insert(k, v);
        }
        merged.insert("id".into(), Value::String(id.to_string()));
        Ok(validation::parse_app(
            Value::Object(merged),
            &PathId::root(),
            ctx,
        )?)
    }

    /// An app id may not be a group holding other apps, nor lie under
    /// another app.
    fn check_ids(&self, wanted: &BTreeMap<String, Option<AppDefinition>>) -> Result<(), Refusal> {
        let existing: BTreeSet<&String> = self
            .visible_apps()
            .map(|a| &a.current.definition.id)
            .filter(|id| !matches!(wanted.get(*id), Some(None)))
            .chain(wanted.iter().filter(|(_, d)| d.is_some()).map(|(id, _)| id))
            .collect();
        for (id, def) in wanted {
            if def.is_none() {
                continue;
            }
            let pid = PathId::parse(id).map_err(|e| Refusal::invalid_at("/id", e))?;
            for other in &existing {
                if *other == id {
                    continue;
                }
                let Ok(o) = PathId::parse(other) else {
                    continue;
                };
                if o.is_within(&pid) {
                    return Err(Refusal::conflict(format!(
                        "{id} is a group holding the app {other}; an app cannot have the id of a group"
                    )));
                }
                if pid.is_within(&o) {
                    return Err(Refusal::conflict(format!(
                        "{id} would lie inside the app {other}; apps cannot hold apps"
                    )));
                }
            }
        }
        Ok(())
    }

    fn service_ports_except(&self, ids: &[String]) -> BTreeSet<i64> {
        let mut used = BTreeSet::new();
        for a in self
            .apps
            .values()
            .filter(|a| !ids.contains(&a.current.definition.id))
        {
            let d = &a.current.definition;
            for p in d.port_definitions.iter().flatten() {
                used.insert(p.port);
            }
            for m in d
                .container
                .iter()
                .flat_map(|c| c.port_mappings.iter().flatten())
            {
                used.insert(m.service_port);
            }
        }
        used
    }

    /// Makes a stored change visible.
    pub fn apply(&mut self, p: &Prepared) {
        for d in &p.cancelled {
            self.deployments.remove(d);
        }
        for (id, target) in &p.deployment.target {
            match target {
                Some(app) => {
                    let entry = self
                        .apps
                        .entry(id.clone())
                        .or_insert_with(|| AppState::new(app.clone()));
                    if entry.current.last_config_change_at != app.last_config_change_at {
                        // A new configuration starts without backoff.
                        entry.launch.failures = 0;
                        entry.launch.delay_until = 0;
                    }
                    entry.current = app.clone();
                    entry.removed = false;
                    if entry.versions.last() != Some(&app.version) {
                        entry.versions.push(app.version);
                    }
                    let excess = entry.versions.len().saturating_sub(MAX_VERSIONS);
                    entry.versions.drain(..excess);
                }
                None => {
                    if let Some(a) = self.apps.get_mut(id) {
                        a.removed = true;
                    }
                }
            }
        }
        for (app, task) in &p.kill {
            if let Some(i) = self
                .apps
                .get_mut(app)
                .and_then(|a| a.instances.get_mut(task))
            {
                i.killing = true;
            }
        }
        self.deployments
            .insert(p.deployment.id.clone(), p.deployment.clone());
    }

    /// The state a new leader starts from.
    pub fn from_loaded(loaded: store::Loaded) -> (State, Vec<Instance>) {
        let mut state = State::default();
        for (id, app) in loaded.apps {
            let mut a = AppState::new(app);
            if let Some(v) = loaded.versions.get(&id) {
                a.versions = v.clone();
            }
            a.last_failure = loaded.failures.get(&id).cloned();
            state.apps.insert(id, a);
        }
        for d in loaded.deployments {
            // Apps a deployment is removing: back as `removed`, from the
            // deployment's record of them.
            for (id, before) in &d.original {
                if matches!(d.target.get(id), Some(None))
                    && !state.apps.contains_key(id)
                    && let Some(b) = before
                {
                    let mut a = AppState::new(b.clone());
                    a.removed = true;
                    state.apps.insert(id.clone(), a);
                }
            }
            state.deployments.insert(d.id.clone(), d);
        }
        let mut orphans = Vec::new();
        for (app, instances) in loaded.instances {
            match state.apps.get_mut(&app) {
                Some(a) => {
                    for i in instances {
                        a.instances.insert(i.task_id.clone(), i);
                    }
                }
                None => orphans.extend(instances),
            }
        }
        (state, orphans)
    }
}

/// Gives every `port: 0` definition and `servicePort: 0` mapping a service
/// port nobody else uses.
fn assign_service_ports(def: &mut AppDefinition, used: &mut BTreeSet<i64>) {
    fn next(used: &mut BTreeSet<i64>) -> i64 {
        let p = SERVICE_PORTS.clone().find(|p| !used.contains(p));
        if let Some(p) = p {
            used.insert(p);
        }
        p.unwrap_or(0)
    }
    if !def.require_ports
        && let Some(defs) = def.port_definitions.as_mut()
    {
        for p in defs.iter_mut() {
            if p.port == 0 {
                p.port = next(used);
            } else {
                used.insert(p.port);
            }
        }
    }
    if let Some(mappings) = def
        .container
        .as_mut()
        .and_then(|c| c.port_mappings.as_mut())
    {
        for m in mappings.iter_mut() {
            if m.service_port == 0 {
                m.service_port = next(used);
            } else {
                used.insert(m.service_port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::ActionKind;
    use serde_json::json;

    fn ctx() -> Context {
        Context {
            roles: vec!["*".into()],
        }
    }

    fn def(v: Value) -> AppDefinition {
        validation::parse_app(v, &PathId::root(), &ctx()).unwrap()
    }

    fn deploy(
        state: &mut State,
        changes: Vec<AppChange>,
        force: bool,
        now: Millis,
    ) -> Result<Prepared, Refusal> {
        let p = state.prepare(changes, force, now, &ctx())?;
        state.apply(&p);
        Ok(p)
    }

    fn finish_all(state: &mut State) {
        state.deployments.clear();
    }

    #[test]
    fn create_assigns_versions_and_service_ports() {
        let mut s = State::default();
        let p = deploy(
            &mut s,
            vec![AppChange::Create(def(json!({"id": "/a", "cmd": "x"})))],
            false,
            100,
        )
        .unwrap();
        let a = s.app("/a").unwrap();
        assert_eq!(a.current.version, 100);
        assert_eq!(
            a.current.definition.port_definitions.as_ref().unwrap()[0].port,
            10000
        );
        assert_eq!(p.deployment.steps.len(), 2);
        finish_all(&mut s);
        deploy(
            &mut s,
            vec![AppChange::Create(def(json!({"id": "/b", "cmd": "x"})))],
            false,
            100,
        )
        .unwrap();
        assert_eq!(
            s.app("/b")
                .unwrap()
                .current
                .definition
                .port_definitions
                .as_ref()
                .unwrap()[0]
                .port,
            10001
        );
        let e = s
            .prepare(
                vec![AppChange::Create(def(json!({"id": "/a", "cmd": "y"})))],
                false,
                101,
                &ctx(),
            )
            .unwrap_err();
        assert_eq!(e.status, 409);
    }

    #[test]
    fn one_deployment_per_app_unless_forced() {
        let mut s = State::default();
        let first = deploy(
            &mut s,
            vec![AppChange::Create(def(json!({"id": "/a", "cmd": "x"})))],
            false,
            100,
        )
        .unwrap();
        let e = s
            .prepare(
                vec![AppChange::Patch {
                    id: "/a".into(),
                    body: json!({"instances": 3}),
                }],
                false,
                101,
                &ctx(),
            )
            .unwrap_err();
        assert_eq!(e.status, 409);
        assert_eq!(e.body["deployments"][0]["id"], first.deployment.id.as_str());
        let p = deploy(
            &mut s,
            vec![AppChange::Patch {
                id: "/a".into(),
                body: json!({"instances": 3}),
            }],
            true,
            101,
        )
        .unwrap();
        assert_eq!(p.cancelled, vec![first.deployment.id.clone()]);
        assert_eq!(s.deployments.len(), 1);
    }

    #[test]
    fn scale_keeps_the_configuration_and_a_change_restarts() {
        let mut s = State::default();
        deploy(
            &mut s,
            vec![AppChange::Create(def(json!({"id": "/a", "cmd": "x"})))],
            false,
            100,
        )
        .unwrap();
        finish_all(&mut s);
        let p = deploy(
            &mut s,
            vec![AppChange::Patch {
                id: "/a".into(),
                body: json!({"instances": 4}),
            }],
            false,
            200,
        )
        .unwrap();
        assert_eq!(p.deployment.steps[0][0].kind, ActionKind::ScaleApplication);
        let a = &s.app("/a").unwrap().current;
        assert_eq!(
            (a.version, a.last_scaling_at, a.last_config_change_at),
            (200, 200, 100)
        );
        assert_eq!(a.definition.instances, 4);
        assert_eq!(
            a.definition.cmd.as_deref(),
            Some("x"),
            "a partial update keeps the other fields"
        );
        finish_all(&mut s);
        let p = deploy(
            &mut s,
            vec![AppChange::Patch {
                id: "/a".into(),
                body: json!({"cmd": "y"}),
            }],
            false,
            150,
        )
        .unwrap();
        assert_eq!(
            p.deployment.steps[0][0].kind,
            ActionKind::RestartApplication
        );
        let a = &s.app("/a").unwrap().current;
        assert_eq!(a.version, 201, "versions only go forward");
        assert_eq!(a.last_config_change_at, 201);
        assert_eq!(s.app("/a").unwrap().versions, vec![100, 200, 201]);
        finish_all(&mut s);
        let p = deploy(&mut s, vec![AppChange::Restart("/a".into())], false, 300).unwrap();
        assert_eq!(
            p.deployment.steps[0][0].kind,
            ActionKind::RestartApplication
        );
    }

    #[test]
    fn a_rollback_goes_back_to_the_earlier_configuration() {
        let mut s = State::default();
        deploy(
            &mut s,
            vec![AppChange::Create(def(json!({"id": "/a", "cmd": "x"})))],
            false,
            100,
        )
        .unwrap();
        finish_all(&mut s);
        let v1 = s.app("/a").unwrap().current.clone();
        let patch = |body: Value| AppChange::Patch {
            id: "/a".into(),
            body,
        };
        deploy(&mut s, vec![patch(json!({"cmd": "y"}))], false, 200).unwrap();
        // Back to v1 (as DELETE /v2/deployments or PUT {"version"} do): a
        // new version, v1's configuration, so v1's instances stay.
        let p = deploy(
            &mut s,
            vec![AppChange::Rollback {
                id: "/a".into(),
                to: Box::new(v1.clone()),
            }],
            true,
            300,
        )
        .unwrap();
        assert_eq!(
            p.deployment.steps[0][0].kind,
            ActionKind::RestartApplication
        );
        let a = &s.app("/a").unwrap().current;
        assert_eq!((a.version, a.last_config_change_at), (300, 100));
        assert_eq!(a.definition.cmd.as_deref(), Some("x"));
        finish_all(&mut s);
        // A restart asked afterwards is a new configuration.
        deploy(&mut s, vec![AppChange::Restart("/a".into())], false, 400).unwrap();
        assert_eq!(s.app("/a").unwrap().current.last_config_change_at, 400);
        finish_all(&mut s);
        // Rolled back to a version with another instance count: that count
        // and the configuration, which the current one already has.
        let mut scaled = v1.clone();
        scaled.definition.instances = 3;
        let p = deploy(
            &mut s,
            vec![AppChange::Rollback {
                id: "/a".into(),
                to: Box::new(scaled),
            }],
            false,
            500,
        )
        .unwrap();
        assert_eq!(p.deployment.steps[0][0].kind, ActionKind::ScaleApplication);
        assert_eq!(s.app("/a").unwrap().current.last_config_change_at, 400);
    }

    #[test]
    fn a_bad_patch_is_refused_with_its_path() {
        let mut s = State::default();
        deploy(
            &mut s,
            vec![AppChange::Create(def(json!({"id": "/a", "cmd": "x"})))],
            false,
            100,
        )
        .unwrap();
        finish_all(&mut s);
        let e = s
            .prepare(
                vec![AppChange::Patch {
                    id: "/a".into(),
                    body: json!({"cpus": -1}),
                }],
                false,
                101,
                &ctx(),
            )
            .unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(e.body["details"][0]["path"], "/cpus");
        assert_eq!(s.app("/a").unwrap().current.version, 100, "nothing changed");
    }

    #[test]
    fn groups_and_apps_do_not_overlap() {
        let mut s = State::default();
        deploy(
            &mut s,
            vec![AppChange::Create(def(
                json!({"id": "/team/web", "cmd": "x"}),
            ))],
            false,
            100,
        )
        .unwrap();
        finish_all(&mut s);
        for id in ["/team", "/team/web/x"] {
            let e = s
                .prepare(
                    vec![AppChange::Create(def(json!({"id": id, "cmd": "x"})))],
                    false,
                    101,
                    &ctx(),
                )
                .unwrap_err();
            assert_eq!(e.status, 409, "{id}");
        }
        deploy(
            &mut s,
            vec![AppChange::Create(def(
                json!({"id": "/team/db", "cmd": "x"}),
            ))],
            false,
            101,
        )
        .unwrap();
    }

    #[test]
    fn remove_hides_the_app_and_kill_and_scale_lowers_instances() {
        let mut s = State::default();
        deploy(
            &mut s,
            vec![AppChange::Create(def(
                json!({"id": "/a", "cmd": "x", "instances": 3}),
            ))],
            false,
            100,
        )
        .unwrap();
        finish_all(&mut s);
        let app = s.apps.get_mut("/a").unwrap();
        for n in 0..3 {
            let id = format!("a.{n}");
            app.instances.insert(
                id.clone(),
                Instance {
                    task_id: id,
                    app_id: "/a".into(),
                    version: 100,
                    config_version: 100,
                    agent_id: "s".into(),
                    host: "h".into(),
                    ports: vec![],
                    state: agora_proto::v1::TaskState::TaskRunning,
                    staged_at: n,
                    started_at: None,
                    healthy: None,
                    health_failure: None,
                    ready: None,
                    health_checked: false,
                    readiness_checked: false,
                    unreachable_since: None,
                    killing: false,
                    role: "*".into(),
                    attributes: String::new(),
                },
            );
        }
        let p = deploy(
            &mut s,
            vec![AppChange::KillAndScale {
                id: "/a".into(),
                tasks: vec!["a.1".into(), "nope".into()],
            }],
            false,
            200,
        )
        .unwrap();
        assert_eq!(p.kill, vec![("/a".to_string(), "a.1".to_string())]);
        assert_eq!(s.app("/a").unwrap().current.definition.instances, 2);
        assert!(s.app("/a").unwrap().instances["a.1"].killing);
        let changes = p.changes(&s);
        assert!(changes.puts.keys().any(|k| k.starts_with("instances//a#")));
        finish_all(&mut s);
        deploy(&mut s, vec![AppChange::Remove("/a".into())], false, 300).unwrap();
        assert!(s.app("/a").is_none());
        assert!(s.apps["/a"].removed);
        assert_eq!(
            s.prepare(vec![AppChange::Remove("/a".into())], true, 301, &ctx())
                .unwrap_err()
                .status,
            404
        );
    }
}
