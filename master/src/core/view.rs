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
