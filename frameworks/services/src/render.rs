//! The JSON the REST API answers with: exactly Marathon's keys (the Python
//! `marathon` client refuses keys it does not know).

use std::collections::BTreeMap;

use agora_proto::v1::TaskState;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::AppDefinition;
use crate::deployment::Deployment;
use crate::health;
use crate::instance::Instance;
use crate::path_id::PathId;
use crate::state::{AppState, State};
use crate::store::TaskFailure;
use crate::time::{self, Millis};

/// What to embed in app JSON (`embed=apps.tasks` ...).
#[derive(Debug, Clone, Copy, Default)]
pub struct Embed {
    pub tasks: bool,
    pub counts: bool,
    pub deployments: bool,
    pub last_task_failure: bool,
}

impl Embed {
    /// Reads `embed` values (`apps.tasks` or `app.tasks` ...); unknown ones
    /// are ignored as Marathon does.
    pub fn parse<'a>(values: impl Iterator<Item = &'a str>) -> Embed {
        let mut e = Embed::default();
        for v in values {
            let what = v
                .strip_prefix("apps.")
                .or_else(|| v.strip_prefix("app."))
                .unwrap_or(v);
            match what {
                "tasks" => e.tasks = true,
                "counts" => e.counts = true,
                "deployments" => e.deployments = true,
                "lastTaskFailure" => e.last_task_failure = true,
                _ => {}
            }
        }
        e
    }

    /// GET /v2/apps/{id}: everything.
    pub fn all() -> Embed {
        Embed {
            tasks: true,
            counts: true,
            deployments: true,
            last_task_failure: true,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: String,
    pub last_config_change_at: String,
}

/// A task as Marathon shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskJson {
    pub id: String,
    pub app_id: String,
    pub host: String,
    pub ports: Vec<u64>,
    pub service_ports: Vec<i64>,
    pub slave_id: String,
    pub state: String,
    pub staged_at: String,
    pub started_at: Option<String>,
    pub version: String,
    #[schema(value_type = Vec<Object>)]
    pub ip_addresses: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub health_check_results: Vec<Value>,
    pub local_volumes: Vec<String>,
    pub role: String,
}

/// An app as Marathon shows it: the definition, its version and counts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppJson<'a> {
    #[serde(flatten)]
    pub definition: &'a AppDefinition,
    pub version: String,
    pub version_info: VersionInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_staged: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_running: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_healthy: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_unhealthy: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployments: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_task_failure: Option<&'a TaskFailure>,
}

pub fn service_ports(def: &AppDefinition) -> Vec<i64> {
    let defs = def.port_definitions().iter().map(|p| p.port);
    let maps = def.port_mappings().iter().map(|m| m.service_port);
    defs.chain(maps).collect()
}

pub fn task(i: &Instance, app: &AppDefinition) -> TaskJson {
    TaskJson {
        id: i.task_id.clone(),
        app_id: i.app_id.clone(),
        host: i.host.clone(),
        ports: i.ports.clone(),
        service_ports: service_ports(app),
        slave_id: i.agent_id.clone(),
        state: i.state.as_str_name().to_string(),
        staged_at: time::format(i.staged_at),
        started_at: i.started_at.map(time::format),
        version: time::format(i.version),
        ip_addresses: Vec::new(),
        health_check_results: health::results(i),
        local_volumes: Vec::new(),
        role: i.role.clone(),
    }
}

/// The tasks the API lists for an app: the active ones.
pub fn tasks_of(app: &AppState) -> impl Iterator<Item = &Instance> {
    app.instances.values().filter(|i| i.is_active())
}

/// Marathon's counts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub staged: usize,
    pub running: usize,
    pub healthy: usize,
    pub unhealthy: usize,
}

pub fn counts(app: &AppState) -> Counts {
    let mut c = Counts::default();
    for i in tasks_of(app) {
        match i.state {
            TaskState::TaskRunning => c.running += 1,
            TaskState::TaskStaging | TaskState::TaskStarting => c.staged += 1,
            _ => {}
        }
        match health::reported_health(i) {
            Some(true) => c.healthy += 1,
            Some(false) => c.unhealthy += 1,
            None => {}
        }
    }
    c
}

pub fn app<'a>(state: &'a State, a: &'a AppState, embed: Embed) -> AppJson<'a> {
    let c = counts(a);
    let def = &a.current.definition;
    let deployments = state
        .deployments_of(a.id())
        .into_iter()
        .map(|d| json!({ "id": d.id }))
        .collect();
    AppJson {
        definition: def,
        version: time::format(a.current.version),
        version_info: VersionInfo {
            last_scaling_at: time::format(a.current.last_scaling_at),
            last_config_change_at: time::format(a.current.last_config_change_at),
        },
        tasks_staged: Some(c.staged),
        tasks_running: Some(c.running),
        tasks_healthy: Some(c.healthy),
        tasks_unhealthy: Some(c.unhealthy),
        deployments: Some(deployments),
        tasks: embed
            .tasks
            .then(|| tasks_of(a).map(|i| task(i, def)).collect()),
        last_task_failure: if embed.last_task_failure {
            a.last_failure.as_ref()
        } else {
            None
        },
    }
}

/// A stored version of an app, as `/v2/apps/{id}/versions/{v}` shows it.
pub fn app_version(stored: &crate::app::StoredApp) -> Value {
    let mut v = serde_json::to_value(&stored.definition).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("version".into(), json!(time::format(stored.version)));
        m.insert(
            "versionInfo".into(),
            json!({
                "lastScalingAt": time::format(stored.last_scaling_at),
                "lastConfigChangeAt": time::format(stored.last_config_change_at),
            }),
        );
    }
    v
}

fn action_json(a: &crate::deployment::Action) -> Value {
    json!({ "action": a.kind.name(), "app": a.app })
}

/// A deployment as `GET /v2/deployments` shows it.
pub fn deployment(d: &Deployment) -> Value {
    let current_step = if d.steps.is_empty() {
        0
    } else {
        (d.current_step + 1).min(d.steps.len())
    };
    json!({
        "id": d.id,
        "version": time::format(d.version),
        "affectedApps": d.affected_apps(),
        "affectedPods": [],
        "steps": d.steps.iter().map(|s| json!({"actions": s.iter().map(action_json).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "currentActions": d.current_actions().iter().map(|a| {
            json!({"action": a.kind.name(), "app": a.app, "readinessCheckResults": []})
        }).collect::<Vec<_>>(),
        "currentStep": current_step,
        "totalSteps": d.steps.len(),
    })
}

/// A group as events and `/v2/groups` show it: its apps and subgroups.
fn group_of(id: &PathId, apps: &BTreeMap<PathId, Value>, version: Millis) -> Value {
    let mut own_apps = Vec::new();
    let mut children: BTreeMap<PathId, ()> = BTreeMap::new();
    for (app_id, app) in apps {
        if !app_id.is_within(id) || app_id == id {
            continue;
        }
        if app_id.parent() == *id {
            own_apps.push(app.clone());
        } else {
            let depth = id.segments().len() + 1;
            let child = PathId::parse(&format!("/{}", app_id.segments()[..depth].join("/")))
                .unwrap_or_else(|_| PathId::root());
            children.insert(child, ());
        }
    }
    json!({
        "id": id.to_string(),
        "apps": own_apps,
        "groups": children.keys().map(|c| group_of(c, apps, version)).collect::<Vec<_>>(),
        "dependencies": [],
        "pods": [],
        "version": time::format(version),
    })
}

/// The group `id` of the current apps (`None` when no app lies in it).
pub fn group(state: &State, id: &PathId, embed: Embed) -> Option<Value> {
    let mut apps = BTreeMap::new();
    let mut version = 0;
    for a in state.visible_apps() {
        if let Ok(pid) = PathId::parse(a.id())
            && pid.is_within(id)
            && pid != *id
        {
            version = version.max(a.current.version);
            apps.insert(
                pid,
                serde_json::to_value(app(state, a, embed)).unwrap_or(Value::Null),
            );
        }
    }
    if apps.is_empty() && !id.is_root() {
        return None;
    }
    Some(group_of(id, &apps, version))
}

/// Deployment plans in events (`deployment_info` ...): the Python client
/// needs `original` and `target` as groups.
pub fn plan_json(d: &Deployment) -> Value {
    let side = |apps: &BTreeMap<String, Option<crate::app::StoredApp>>| {
        let apps: BTreeMap<PathId, Value> = apps
            .iter()
            .filter_map(|(id, a)| {
                let a = a.as_ref()?;
                Some((PathId::parse(id).ok()?, app_version(a)))
            })
            .collect();
        group_of(&PathId::root(), &apps, d.version)
    };
    json!({
        "id": d.id,
        "version": time::format(d.version),
        "original": side(&d.original),
        "target": side(&d.target),
        "steps": d.steps.iter().map(|s| json!({"actions": s.iter().map(action_json).collect::<Vec<_>>()})).collect::<Vec<_>>(),
    })
}
