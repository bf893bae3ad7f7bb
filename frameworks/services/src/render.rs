//! The JSON the REST API answers with: exactly Marathon's keys (the Python
//! `marathon` client refuses keys it does not know).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agora_proto::v1::TaskState;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::{AppDefinition, StoredApp};
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

// Straight to bytes: the lists (`GET /v2/apps?embed=apps.tasks` with
// 10,000 tasks, `/v2/tasks`) are written into the response body as they are
// read, without a `Value` tree or a `String` per field, and with each app's
// definition rendered once per version. What they write equals what
// [`app`] and [`task`] serialise to (a test compares them).

/// Each app's definition, `version` and `versionInfo` as rendered for the
/// version it was rendered for: an app's JSON without counts or tasks only
/// changes with a new version. Shared by every request (the API's
/// [`Handle`](crate::api::Handle) holds one).
#[derive(Debug, Default)]
pub struct RenderCache {
    heads: parking_lot::Mutex<HashMap<String, Head>>,
    /// The size of the latest list written: the next one's first guess.
    last_len: std::sync::atomic::AtomicUsize,
}

/// An app's rendered head and the version it was rendered from.
type Head = (StoredApp, Arc<[u8]>);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HeadJson<'a> {
    #[serde(flatten)]
    definition: &'a AppDefinition,
    version: String,
    version_info: VersionInfo,
}

impl RenderCache {
    /// `{"id":...,...,"version":...,"versionInfo":{...}` (the object left
    /// open) for `stored`.
    fn head(&self, stored: &StoredApp) -> Arc<[u8]> {
        let id = &stored.definition.id;
        if let Some((at, bytes)) = self.heads.lock().get(id)
            && at == stored
        {
            return bytes.clone();
        }
        let mut bytes = serde_json::to_vec(&HeadJson {
            definition: &stored.definition,
            version: time::format(stored.version),
            version_info: VersionInfo {
                last_scaling_at: time::format(stored.last_scaling_at),
                last_config_change_at: time::format(stored.last_config_change_at),
            },
        })
        .unwrap_or_else(|_| b"{}".to_vec());
        bytes.pop(); // the closing brace
        let bytes: Arc<[u8]> = bytes.into();
        let mut heads = self.heads.lock();
        heads.insert(id.clone(), (stored.clone(), bytes.clone()));
        bytes
    }

    /// Forgets apps that are gone.
    fn prune(&self, state: &State) {
        let mut heads = self.heads.lock();
        if heads.len() > state.apps.len() + 64 {
            heads.retain(|id, _| state.apps.contains_key(id));
        }
    }

    /// A buffer for a list about as long as the latest one.
    pub fn buffer(&self) -> Vec<u8> {
        Vec::with_capacity(
            self.last_len
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_add(4096),
        )
    }

    /// Remembers how long a list was.
    pub fn wrote(&self, len: usize) {
        self.last_len
            .store(len, std::sync::atomic::Ordering::Relaxed);
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn write_time(out: &mut Vec<u8>, ms: Millis) {
    out.push(b'"');
    time::write(ms, out);
    out.push(b'"');
}

fn write_int(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    use std::io::Write;
    let _ = write!(out, "{n}");
}

fn write_ints<T: std::fmt::Display>(out: &mut Vec<u8>, ns: &[T]) {
    out.push(b'[');
    for (k, n) in ns.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write_int(out, n);
    }
    out.push(b']');
}

/// What every task of an app shares: its `servicePorts`, rendered.
pub struct TaskShared {
    service_ports: Vec<u8>,
}

impl TaskShared {
    pub fn of(def: &AppDefinition) -> TaskShared {
        let mut service_ports = Vec::new();
        write_ints(&mut service_ports, &self::service_ports(def));
        TaskShared { service_ports }
    }
}

/// Writes [`task`]`(i, app)` as JSON.
pub fn write_task(out: &mut Vec<u8>, i: &Instance, shared: &TaskShared) {
    out.extend_from_slice(b"{\"id\":");
    write_str(out, &i.task_id);
    out.extend_from_slice(b",\"appId\":");
    write_str(out, &i.app_id);
    out.extend_from_slice(b",\"host\":");
    write_str(out, &i.host);
    out.extend_from_slice(b",\"ports\":");
    write_ints(out, &i.ports);
    out.extend_from_slice(b",\"servicePorts\":");
    out.extend_from_slice(&shared.service_ports);
    out.extend_from_slice(b",\"slaveId\":");
    write_str(out, &i.agent_id);
    out.extend_from_slice(b",\"state\":");
    write_str(out, i.state.as_str_name());
    out.extend_from_slice(b",\"stagedAt\":");
    write_time(out, i.staged_at);
    out.extend_from_slice(b",\"startedAt\":");
    match i.started_at {
        Some(t) => write_time(out, t),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"version\":");
    write_time(out, i.version);
    out.extend_from_slice(b",\"ipAddresses\":[],\"healthCheckResults\":");
    let results = health::results(i);
    if results.is_empty() {
        out.extend_from_slice(b"[]");
    } else {
        let _ = serde_json::to_writer(&mut *out, &results);
    }
    out.extend_from_slice(b",\"localVolumes\":[],\"role\":");
    write_str(out, &i.role);
    out.push(b'}');
}

/// Writes [`app`]`(state, a, embed)` as JSON.
pub fn write_app(
    out: &mut Vec<u8>,
    cache: &RenderCache,
    state: &State,
    a: &AppState,
    embed: Embed,
) {
    out.extend_from_slice(&cache.head(&a.current));
    let c = counts(a);
    out.extend_from_slice(b",\"tasksStaged\":");
    write_int(out, c.staged);
    out.extend_from_slice(b",\"tasksRunning\":");
    write_int(out, c.running);
    out.extend_from_slice(b",\"tasksHealthy\":");
    write_int(out, c.healthy);
    out.extend_from_slice(b",\"tasksUnhealthy\":");
    write_int(out, c.unhealthy);
    out.extend_from_slice(b",\"deployments\":[");
    for (k, d) in state.deployments_of(a.id()).into_iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &d.id);
        out.push(b'}');
    }
    out.push(b']');
    if embed.tasks {
        out.extend_from_slice(b",\"tasks\":[");
        let shared = TaskShared::of(&a.current.definition);
        for (k, i) in tasks_of(a).enumerate() {
            if k > 0 {
                out.push(b',');
            }
            write_task(out, i, &shared);
        }
        out.push(b']');
    }
    if embed.last_task_failure
        && let Some(f) = &a.last_failure
    {
        out.extend_from_slice(b",\"lastTaskFailure\":");
        let _ = serde_json::to_writer(&mut *out, f);
    }
    out.push(b'}');
}

/// Writes `{"apps":[...]}` for `apps`.
pub fn write_apps<'a>(
    out: &mut Vec<u8>,
    cache: &RenderCache,
    state: &State,
    apps: impl Iterator<Item = &'a AppState>,
    embed: Embed,
) {
    out.extend_from_slice(b"{\"apps\":[");
    for (k, a) in apps.enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write_app(out, cache, state, a, embed);
    }
    out.extend_from_slice(b"]}");
    cache.prune(state);
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

/// Marathon's `readinessCheckResults` of a deployment's current action on
/// `app`: for each instance of the app's new configuration launched with
/// readiness checks, one entry per check (`ready` once its agent reports
/// the checks passed).
fn readiness_results(state: &State, app: &str) -> Vec<Value> {
    let Some(a) = state.app(app) else {
        return Vec::new();
    };
    let checks = &a.current.definition.readiness_checks;
    if checks.is_empty() {
        return Vec::new();
    }
    tasks_of(a)
        .filter(|i| {
            i.readiness_checked && !i.killing && i.config_version == a.current.last_config_change_at
        })
        .flat_map(|i| {
            checks.iter().map(move |c| {
                json!({"name": c.name, "taskId": i.task_id, "ready": i.ready == Some(true)})
            })
        })
        .collect()
}

/// A deployment as `GET /v2/deployments` shows it.
pub fn deployment(state: &State, d: &Deployment) -> Value {
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
            json!({"action": a.kind.name(), "app": a.app,
                   "readinessCheckResults": readiness_results(state, &a.app)})
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AppChange;
    use crate::validation::{self, Context};

    fn instance(app: &str, n: i64, state: TaskState) -> Instance {
        Instance {
            task_id: format!("{}.{n}", app.trim_start_matches('/').replace('/', "_")),
            app_id: app.into(),
            version: 1_795_809_600_123 + n,
            config_version: 1_795_809_600_123,
            agent_id: format!("agent-\"{n}\""),
            host: format!("host-{n}"),
            ports: vec![31000 + n as u64, 31500],
            state,
            staged_at: 1_795_809_600_000 + n * 1_000,
            started_at: (state == TaskState::TaskRunning).then_some(1_795_809_700_000 + n),
            healthy: (n % 3 == 0).then_some(n % 2 == 0),
            health_failure: (n % 3 == 0 && n % 2 == 1).then(|| format!("check \"{n}\" failed")),
            ready: None,
            health_checked: n % 2 == 0,
            readiness_checked: false,
            unreachable_since: None,
            killing: false,
            role: "*".into(),
            attributes: String::new(),
        }
    }

    /// The lists written as bytes say exactly what the serialised structs
    /// say (keys, values, nulls), for apps of every shape.
    #[test]
    fn written_json_equals_the_serialised_structs() {
        let ctx = Context {
            roles: vec!["*".into()],
        };
        let mut s = State::default();
        let defs = [
            json!({"id": "/plain", "cmd": "sleep 1", "instances": 3}),
            json!({"id": "/team/web", "cmd": "x", "instances": 2, "labels": {"a": "b\n\"c\""},
                   "env": {"K": "v"}, "portDefinitions": [{"port": 0}, {"port": 0, "name": "admin"}],
                   "healthChecks": [{"protocol": "HTTP", "path": "/h"}],
                   "constraints": [["hostname", "UNIQUE"]]}),
            json!({"id": "/docker", "instances": 1, "container": {"type": "DOCKER",
                   "docker": {"image": "busybox", "network": "BRIDGE",
                              "portMappings": [{"containerPort": 80, "hostPort": 0}]}}}),
        ];
        for d in defs {
            let def = validation::parse_app(d, &PathId::root(), &ctx).unwrap();
            let p = s
                .prepare(vec![AppChange::Create(def)], false, 1_795_809_600_123, &ctx)
                .unwrap();
            s.apply(&p);
        }
        let states = [
            TaskState::TaskRunning,
            TaskState::TaskStaging,
            TaskState::TaskStarting,
            TaskState::TaskKilled,
        ];
        for a in s.apps.values_mut() {
            let id = a.id().to_string();
            for n in 0..8 {
                let i = instance(&id, n, states[n as usize % states.len()]);
                a.instances.insert(i.task_id.clone(), i);
            }
        }
        s.apps.get_mut("/plain").unwrap().last_failure = Some(TaskFailure {
            app_id: "/plain".into(),
            host: "h".into(),
            message: "exit 1".into(),
            state: "TASK_FAILED".into(),
            task_id: "plain.x".into(),
            timestamp: time::format(5),
            version: time::format(6),
            slave_id: "a".into(),
        });
        let cache = RenderCache::default();
        let embeds = [
            Embed::default(),
            Embed::all(),
            Embed::parse(["apps.tasks"].into_iter()),
            Embed::parse(["apps.lastTaskFailure", "apps.counts"].into_iter()),
        ];
        for embed in embeds {
            // Twice: the second time from the cache.
            for _ in 0..2 {
                let mut out = Vec::new();
                write_apps(&mut out, &cache, &s, s.visible_apps(), embed);
                let written: Value = serde_json::from_slice(&out).unwrap();
                let apps: Vec<_> = s.visible_apps().map(|a| app(&s, a, embed)).collect();
                assert_eq!(written, json!({ "apps": apps }), "{embed:?}");
            }
        }
        // The cached part follows a new version.
        let a = s.apps.get_mut("/plain").unwrap();
        a.current.definition.cmd = Some("sleep 2".into());
        a.current.version += 1;
        let mut out = Vec::new();
        write_apps(&mut out, &cache, &s, s.visible_apps(), Embed::all());
        let written: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(written["apps"][1]["cmd"], "sleep 2");
        for a in s.visible_apps() {
            let shared = TaskShared::of(&a.current.definition);
            for i in a.instances.values() {
                let mut out = Vec::new();
                write_task(&mut out, i, &shared);
                let written: Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(
                    written,
                    serde_json::to_value(task(i, &a.current.definition)).unwrap()
                );
            }
        }
    }
}

#[cfg(test)]
mod readiness_tests {
    use super::*;
    use crate::state::AppChange;
    use crate::validation::{self, Context};

    /// A deployment's current action lists the readiness of the new
    /// configuration's instances, one entry per check.
    #[test]
    fn deployments_show_readiness_check_results() {
        let ctx = Context {
            roles: vec!["*".into()],
        };
        let mut s = State::default();
        let def = validation::parse_app(
            json!({"id": "/web", "cmd": "x", "instances": 2,
                   "portDefinitions": [{"port": 0, "name": "http"}],
                   "readinessChecks": [{"name": "ready", "portName": "http"}]}),
            &PathId::root(),
            &ctx,
        )
        .unwrap();
        let p = s
            .prepare(vec![AppChange::Create(def)], false, 1_000, &ctx)
            .unwrap();
        s.apply(&p);
        let a = s.apps.get_mut("/web").unwrap();
        let config = a.current.last_config_change_at;
        for (n, ready) in [(0, Some(true)), (1, None)] {
            let id = format!("web.{n}");
            a.instances.insert(
                id.clone(),
                Instance {
                    task_id: id,
                    app_id: "/web".into(),
                    version: config,
                    config_version: config,
                    agent_id: "a".into(),
                    host: "h".into(),
                    ports: vec![31000],
                    state: TaskState::TaskRunning,
                    staged_at: 1,
                    started_at: Some(2),
                    healthy: None,
                    health_failure: None,
                    ready,
                    health_checked: false,
                    readiness_checked: true,
                    unreachable_since: None,
                    killing: false,
                    role: "*".into(),
                    attributes: String::new(),
                },
            );
        }
        let d = s.deployments.values().next().unwrap();
        let v = deployment(&s, d);
        let actions = v["currentActions"].as_array().unwrap();
        let results: Vec<&Value> = actions
            .iter()
            .flat_map(|a| a["readinessCheckResults"].as_array().unwrap())
            .collect();
        assert_eq!(
            results,
            [
                &json!({"name": "ready", "taskId": "web.0", "ready": true}),
                &json!({"name": "ready", "taskId": "web.1", "ready": false}),
            ],
            "{v}"
        );
    }
}
