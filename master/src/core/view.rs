//! The master's state as JSON, for `/state`, the CLI and the UI.
//!
//! Resources read like Mesos's `/state`: scalars as numbers, ranges in the
//! text form (`"[31000-32000]"`), reservations under `reserved`.

use agora_proto::resources::{Resource, Value as RValue};
use agora_proto::{Resources, format_attributes, v1};
use serde_json::{Map, Value, json};

use super::{Agent, Framework, MasterCore, Offer, RemovedFramework, Task};

/// Resources as a JSON object.
pub fn resources_json(r: &Resources) -> Value {
    let mut top = Map::new();
    let mut reserved: Map<String, Value> = Map::new();
    for kind in ["cpus", "mem", "disk", "gpus"] {
        top.insert(kind.into(), json!(0.0));
    }
    let value = |res: &Resource| match &res.value {
        RValue::Scalar(s) => json!(s.as_f64()),
        RValue::Ranges(rs) => json!(rs.to_string()),
        RValue::Set(s) => json!(s.iter().collect::<Vec<_>>()),
    };
    for res in r.iter() {
        if res.is_unreserved() {
            top.insert(res.name.clone(), value(res));
        } else {
            let entry = reserved
                .entry(res.role.clone())
                .or_insert_with(|| json!({}));
            entry[res.name.as_str()] = value(res);
        }
    }
    if !reserved.is_empty() {
        top.insert("reserved".into(), Value::Object(reserved));
    }
    Value::Object(top)
}

fn attributes_json(attrs: &[v1::Attribute]) -> Value {
    let mut m = Map::new();
    for a in attrs {
        let v = match &a.value {
            Some(v1::attribute::Value::Text(t)) => json!(t),
            Some(v1::attribute::Value::Scalar(x)) => json!(x),
            None => Value::Null,
        };
        m.insert(a.name.clone(), v);
    }
    Value::Object(m)
}

pub fn task_json(t: &Task) -> Value {
    let status = t.status_fields();
    json!({
        "id": t.id,
        "name": t.name,
        "framework_id": &*t.framework_id,
        "agent_id": &*t.agent_id,
        "state": t.state.as_str_name(),
        "role": &*t.role,
        "resources": resources_json(&t.resources),
        "message": status.map(|s| s.message.as_str()).unwrap_or(""),
        "reason": status.map(|s| s.reason().as_str_name()).unwrap_or("REASON_NONE"),
        "exit_code": status.and_then(|s| s.exit_code),
        "healthy": status.and_then(|s| s.healthy),
        "ready": status.and_then(|s| s.ready),
        "staged_at": t.staged_at,
        "updated_at": status.map(|s| s.timestamp),
        "docker_image": t.container.as_ref().and_then(|c| c.docker.as_ref()).map(|d| d.image.clone()),
    })
}

fn offer_json(id: String, o: &Offer) -> Value {
    json!({
        "id": id,
        "framework_id": &*o.framework_id,
        "agent_id": &*o.agent_id,
        "role": &*o.role,
        "resources": resources_json(&o.resources),
    })
}

impl MasterCore {
    fn agent_json(&self, a: &Agent, offered: Option<&Resources>) -> Value {
        let mut used = Resources::new();
        let mut active_tasks = 0;
        for (fw_id, task_id) in &a.tasks {
            if let Some(t) = self
                .frameworks
                .get(&**fw_id)
                .and_then(|f| f.tasks.get(task_id))
                && !t.released
            {
                used.add(&t.resources);
                active_tasks += 1;
            }
        }
        let offered = offered.cloned().unwrap_or_default();
        let mut available = a.total.clone();
        available.subtract(&used);
        available.subtract(&offered);
        json!({
            "id": a.info.id,
            "hostname": a.info.hostname,
            "http_address": a.info.http_address,
            "status": a.status.as_str(),
            "active": a.status == super::AgentStatus::Connected,
            "registered_at": a.registered_at,
            "version": a.info.version,
            "attributes": attributes_json(&a.info.attributes),
            "attributes_text": format_attributes(&a.info.attributes),
            "resources": {
                "total": resources_json(&a.total),
                "used": resources_json(&used),
                "offered": resources_json(&offered),
                "available": resources_json(&available),
            },
            "resources_text": a.total.to_string(),
            "tasks": active_tasks,
        })
    }

    fn framework_json(&self, f: &Framework, offers: &[&Offer]) -> Value {
        let mut tasks: Vec<&Task> = f.tasks.values().map(|t| &**t).collect();
        tasks.sort_by(|a, b| a.staged_at.total_cmp(&b.staged_at).then(a.id.cmp(&b.id)));
        let mut used = Resources::new();
        for t in f.tasks.values().filter(|t| !t.released) {
            used.add(&t.resources);
        }
        let mut offers: Vec<&Offer> = offers.to_vec();
        offers.sort_by_key(|o| o.seq);
        let offers: Vec<Value> = offers
            .into_iter()
            .map(|o| offer_json(self.offer_id(o.seq), o))
            .collect();
        json!({
            "id": f.info.id,
            "name": f.info.name,
            "user": f.info.user,
            "hostname": f.info.hostname,
            "webui_url": f.info.webui_url,
            "roles": f.roles,
            "connected": f.conn.is_some(),
            "active": f.conn.is_some(),
            "failover_timeout": f.info.failover_timeout,
            "checkpoint": f.info.checkpoint,
            "registered_at": f.registered_at,
            "disconnected_at": f.disconnected_at,
            "dominant_share": self.allocator.framework_share(&f.info.id),
            "used_resources": resources_json(&used),
            "tasks": tasks.into_iter().map(task_json).collect::<Vec<_>>(),
            "completed_tasks": f.completed.iter().rev().map(|t| task_json(t)).collect::<Vec<_>>(),
            "offers": offers,
        })
    }

    fn removed_framework_json(r: &RemovedFramework) -> Value {
        json!({
            "id": r.info.id,
            "name": r.info.name,
            "roles": r.info.roles,
            "removed_at": r.removed_at,
            "reason": r.reason,
            "tasks": r.tasks.iter().map(task_json).collect::<Vec<_>>(),
        })
    }

    /// Everything `/state` shows.
    pub fn state_json(&self, address: &str) -> Value {
        let mut agents: Vec<&Agent> = self.agents.values().collect();
        agents.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        let mut frameworks: Vec<&Framework> = self.frameworks.values().collect();
        frameworks.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        let mut total = Resources::new();
        let mut used = Resources::new();
        for a in self.agents.values().filter(|a| a.in_allocator()) {
            total.add(&a.total);
        }
        for f in self.frameworks.values() {
            for t in f.tasks.values().filter(|t| !t.released) {
                used.add(&t.resources);
            }
        }
        // Offers grouped once, not searched per agent and framework.
        let mut offered = Resources::new();
        let mut offered_on: std::collections::HashMap<&str, Resources> = Default::default();
        let mut offers_to: std::collections::HashMap<&str, Vec<&Offer>> = Default::default();
        for o in self.offers.values() {
            offered.add(&o.resources);
            offered_on.entry(&o.agent_id).or_default().add(&o.resources);
            offers_to.entry(&o.framework_id).or_default().push(o);
        }
        json!({
            "version": agora_proto::VERSION,
            "id": self.info.id,
            "hostname": self.info.hostname,
            "address": address,
            "elected": true,
            "leader": {
                "id": self.info.id,
                "hostname": self.info.hostname,
                "address": address,
            },
            "started_at": self.started_at,
            "resources": {
                "total": resources_json(&total.flatten()),
                "used": resources_json(&used.flatten()),
                "offered": resources_json(&offered.flatten()),
            },
            "roles": self.allocator.role_shares().into_iter()
                .map(|(role, share)| json!({"role": role, "share": share}))
                .collect::<Vec<_>>(),
            "agents": agents
                .into_iter()
                .map(|a| self.agent_json(a, offered_on.get(a.info.id.as_str())))
                .collect::<Vec<_>>(),
            "frameworks": frameworks
                .into_iter()
                .map(|f| {
                    let offers = offers_to.get(f.info.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                    self.framework_json(f, offers)
                })
                .collect::<Vec<_>>(),
            "completed_frameworks": self.removed_frameworks.iter().rev()
                .map(MasterCore::removed_framework_json).collect::<Vec<_>>(),
        })
    }
}

/// Which framework a proxied request is for: its id, or its name (the
/// short names `/services` and `/batch` of the UI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameworkRef {
    Id(String),
    Name(String),
}

/// Where a framework serves its web UI and API, for the master's proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct WebUiTarget {
    pub framework_id: String,
    pub name: String,
    pub url: agora_proto::WebUiUrl,
    /// Whether the framework's stream to the master is open.
    pub connected: bool,
}

/// Why a proxied request has nowhere to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebUiLookupError {
    /// No framework with that id or name is known.
    Unknown(FrameworkRef),
    /// It is known but announced no `webui_url`.
    NoWebUi { framework_id: String, name: String },
}

/// Where a task's logs are served: its agent's HTTP address.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLocation {
    pub framework_id: String,
    pub agent_id: String,
    /// `host:port` of the agent's HTTP endpoints (empty if it has none).
    pub agent_http_address: String,
    /// Whether the task has ended (its logs will not grow).
    pub ended: bool,
}

/// Why a task's logs cannot be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskLookupError {
    Unknown,
    /// The same task id in several frameworks: the request must say which.
    Ambiguous(Vec<String>),
    /// The task's agent is not known any more.
    AgentGone(String),
}

/// What `/tasks` lists.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Only tasks in this state (`TASK_RUNNING`, ...).
    pub state: Option<String>,
    pub framework_id: Option<String>,
    pub agent_id: Option<String>,
    /// At most this many, after skipping `offset`.
    pub limit: usize,
    pub offset: usize,
}

impl MasterCore {
    /// A framework's web address (see [`FrameworkRef`]). By name, the
    /// connected framework of that name wins over disconnected ones, and a
    /// newer over an older.
    pub fn framework_webui(&self, key: &FrameworkRef) -> Result<WebUiTarget, WebUiLookupError> {
        let f = match key {
            FrameworkRef::Id(id) => self.frameworks.get(id),
            FrameworkRef::Name(name) => self
                .frameworks
                .values()
                .filter(|f| &f.info.name == name)
                .max_by(|a, b| {
                    (a.conn.is_some(), a.registered_at)
                        .partial_cmp(&(b.conn.is_some(), b.registered_at))
                        .unwrap_or(std::cmp::Ordering::Equal)
                }),
        }
        .ok_or_else(|| WebUiLookupError::Unknown(key.clone()))?;
        match agora_proto::parse_webui_url(&f.info.webui_url) {
            Ok(Some(url)) => Ok(WebUiTarget {
                framework_id: f.info.id.clone(),
                name: f.info.name.clone(),
                url,
                connected: f.conn.is_some(),
            }),
            // Checked when the framework subscribed; a bad one reads as none.
            _ => Err(WebUiLookupError::NoWebUi {
                framework_id: f.info.id.clone(),
                name: f.info.name.clone(),
            }),
        }
    }

    /// Where the task `task_id` (of `framework_id`, when given) ran or runs.
    pub fn task_location(
        &self,
        task_id: &str,
        framework_id: Option<&str>,
    ) -> Result<TaskLocation, TaskLookupError> {
        let mut found: Vec<(&Task, bool)> = Vec::new();
        for f in self.frameworks.values() {
            if framework_id.is_some_and(|id| id != f.info.id) {
                continue;
            }
            if let Some(t) = f.tasks.get(task_id) {
                found.push((t, t.released));
            } else if let Some(t) = f.completed.iter().rev().find(|t| t.id == task_id) {
                found.push((t, true));
            }
        }
        for r in &self.removed_frameworks {
            if framework_id.is_some_and(|id| id != r.info.id) {
                continue;
            }
            if let Some(t) = r.tasks.iter().find(|t| t.id == task_id) {
                found.push((t, true));
            }
        }
        let (task, ended) = match found.as_slice() {
            [] => return Err(TaskLookupError::Unknown),
            [one] => *one,
            many => {
                let mut ids: Vec<String> = many
                    .iter()
                    .map(|(t, _)| t.framework_id.to_string())
                    .collect();
                ids.sort();
                ids.dedup();
                if ids.len() > 1 {
                    return Err(TaskLookupError::Ambiguous(ids));
                }
                many[0]
            }
        };
        let agent = self
            .agents
            .get(&*task.agent_id)
            .ok_or_else(|| TaskLookupError::AgentGone(task.agent_id.to_string()))?;
        Ok(TaskLocation {
            framework_id: task.framework_id.to_string(),
            agent_id: task.agent_id.to_string(),
            agent_http_address: agent.info.http_address.clone(),
            ended,
        })
    }

    /// Tasks, active ones first (newest first), then ended ones (newest
    /// first), filtered and paged: `{"total", "tasks": [...]}`.
    pub fn tasks_json(&self, q: &TaskQuery) -> Value {
        let wanted = |t: &Task| {
            q.state
                .as_deref()
                .is_none_or(|s| s == t.state.as_str_name())
                && q.framework_id
                    .as_deref()
                    .is_none_or(|f| f == &*t.framework_id)
                && q.agent_id.as_deref().is_none_or(|a| a == &*t.agent_id)
        };
        let mut active: Vec<&Task> = self
            .frameworks
            .values()
            .flat_map(|f| f.tasks.values().map(|t| &**t))
            .filter(|t| wanted(t))
            .collect();
        active.sort_by(|a, b| b.staged_at.total_cmp(&a.staged_at).then(a.id.cmp(&b.id)));
        let mut ended: Vec<&Task> = self
            .frameworks
            .values()
            .flat_map(|f| f.completed.iter().map(|t| &**t))
            .filter(|t| wanted(t))
            .collect();
        ended.sort_by(|a, b| b.staged_at.total_cmp(&a.staged_at).then(a.id.cmp(&b.id)));
        let total = active.len() + ended.len();
        let page: Vec<Value> = active
            .into_iter()
            .chain(ended)
            .skip(q.offset)
            .take(q.limit)
            .map(task_json)
            .collect();
        json!({ "total": total, "tasks": page })
    }

    /// What the UI's dashboard shows, without the task lists of `/state`:
    /// the cluster's resources, roles with weights and shares, agents,
    /// frameworks with their tasks counted by state, outstanding offers,
    /// and every task counted by state.
    pub fn summary_json(&self, address: &str) -> Value {
        let state_counts = |tasks: &mut dyn Iterator<Item = &Task>| {
            let mut m: std::collections::BTreeMap<&str, u64> = Default::default();
            for t in tasks {
                *m.entry(t.state.as_str_name()).or_default() += 1;
            }
            m
        };
        let mut total = Resources::new();
        for a in self.agents.values().filter(|a| a.in_allocator()) {
            total.add(&a.total);
        }
        let mut used = Resources::new();
        let mut all_tasks: std::collections::BTreeMap<&str, u64> = Default::default();
        let mut frameworks: Vec<&Framework> = self.frameworks.values().collect();
        frameworks.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        let mut offered = Resources::new();
        let mut offered_on: std::collections::HashMap<&str, Resources> = Default::default();
        let mut offered_to: std::collections::HashMap<&str, (Resources, usize)> =
            Default::default();
        let mut offers: Vec<&Offer> = self.offers.values().collect();
        offers.sort_by_key(|o| o.seq);
        for o in &offers {
            offered.add(&o.resources);
            offered_on.entry(&o.agent_id).or_default().add(&o.resources);
            let e = offered_to.entry(&o.framework_id).or_default();
            e.0.add(&o.resources);
            e.1 += 1;
        }
        let frameworks: Vec<Value> = frameworks
            .into_iter()
            .map(|f| {
                let mut fw_used = Resources::new();
                for t in f.tasks.values().filter(|t| !t.released) {
                    fw_used.add(&t.resources);
                }
                used.add(&fw_used);
                let counts = state_counts(
                    &mut f
                        .tasks
                        .values()
                        .map(|t| &**t)
                        .chain(f.completed.iter().map(|t| &**t)),
                );
                for (s, n) in &counts {
                    *all_tasks.entry(s).or_default() += n;
                }
                let (fw_offered, offer_count) = offered_to
                    .get(f.info.id.as_str())
                    .cloned()
                    .unwrap_or_default();
                json!({
                    "id": f.info.id,
                    "name": f.info.name,
                    "user": f.info.user,
                    "hostname": f.info.hostname,
                    "webui_url": f.info.webui_url,
                    "roles": f.roles,
                    "weights": f.roles.iter().map(|r| self.allocator.weight(r)).collect::<Vec<_>>(),
                    "connected": f.conn.is_some(),
                    "failover_timeout": f.info.failover_timeout,
                    "registered_at": f.registered_at,
                    "disconnected_at": f.disconnected_at,
                    "dominant_share": self.allocator.framework_share(&f.info.id),
                    "used_resources": resources_json(&fw_used),
                    "offered_resources": resources_json(&fw_offered),
                    "offers": offer_count,
                    "active_tasks": f.tasks.values().filter(|t| !t.released).count(),
                    "tasks_by_state": counts,
                })
            })
            .collect();
        let mut agents: Vec<&Agent> = self.agents.values().collect();
        agents.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        // At most this many offers are listed (all are counted).
        const MAX_LISTED_OFFERS: usize = 1000;
        json!({
            "version": agora_proto::VERSION,
            "id": self.info.id,
            "hostname": self.info.hostname,
            "address": address,
            "elected": true,
            "leader": {
                "id": self.info.id,
                "hostname": self.info.hostname,
                "address": address,
            },
            "started_at": self.started_at,
            "resources": {
                "total": resources_json(&total.flatten()),
                "used": resources_json(&used.flatten()),
                "offered": resources_json(&offered.flatten()),
            },
            "roles": self.allocator.role_shares().into_iter()
                .map(|(role, share)| json!({
                    "role": role, "share": share, "weight": self.allocator.weight(&role),
                }))
                .collect::<Vec<_>>(),
            "agents": agents
                .into_iter()
                .map(|a| self.agent_json(a, offered_on.get(a.info.id.as_str())))
                .collect::<Vec<_>>(),
            "frameworks": frameworks,
            "completed_frameworks": self.removed_frameworks.len(),
            "offer_count": offers.len(),
            "offers": offers
                .into_iter()
                .take(MAX_LISTED_OFFERS)
                .map(|o| offer_json(self.offer_id(o.seq), o))
                .collect::<Vec<_>>(),
            "tasks_by_state": all_tasks,
        })
    }
}
