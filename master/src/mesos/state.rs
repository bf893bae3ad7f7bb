//! `GET /master/state` and `/state.json`: the master's `/state` with
//! Mesos's field names, for the parts Agora has (what tools that read a
//! Mesos master expect). A pure function of Agora's `/state`.

use serde_json::{Value, json};

fn task(t: &Value) -> Value {
    json!({
        "id": t["id"],
        "name": t["name"],
        "framework_id": t["framework_id"],
        "executor_id": "",
        "slave_id": t["agent_id"],
        "state": t["state"],
        "role": t["role"],
        "resources": t["resources"],
        "statuses": match t["updated_at"].as_f64() {
            Some(ts) => json!([{"state": t["state"], "timestamp": ts}]),
            None => json!([]),
        },
    })
}

fn tasks(v: &Value) -> Vec<Value> {
    v.as_array()
        .map(|ts| ts.iter().map(task).collect())
        .unwrap_or_default()
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Mesos's `/master/state` from Agora's `/state` (of a leading master).
pub fn master_state(s: &Value) -> Value {
    let pid = |addr: &Value| format!("master@{}", addr.as_str().unwrap_or_default());
    let slaves: Vec<Value> = list(&s["agents"])
        .iter()
        .map(|a| {
            json!({
                "id": a["id"],
                "hostname": a["hostname"],
                "pid": format!("slave(1)@{}", a["http_address"].as_str().unwrap_or_default()),
                "active": a["active"],
                "registered_time": a["registered_at"],
                "version": a["version"],
                "attributes": a["attributes"],
                "resources": a["resources"]["total"],
                "used_resources": a["resources"]["used"],
                "offered_resources": a["resources"]["offered"],
            })
        })
        .collect();
    let active = slaves.iter().filter(|a| a["active"] == true).count();
    let frameworks: Vec<Value> = list(&s["frameworks"])
        .iter()
        .map(|f| {
            json!({
                "id": f["id"],
                "name": f["name"],
                "user": f["user"],
                "hostname": f["hostname"],
                "webui_url": f["webui_url"],
                "role": f["roles"][0],
                "roles": f["roles"],
                "active": f["active"],
                "connected": f["connected"],
                "failover_timeout": f["failover_timeout"],
                "checkpoint": f["checkpoint"],
                "registered_time": f["registered_at"],
                "unregistered_time": f["disconnected_at"],
                "used_resources": f["used_resources"],
                "tasks": tasks(&f["tasks"]),
                "completed_tasks": tasks(&f["completed_tasks"]),
                "offers": list(&f["offers"]).iter().map(|o| json!({
                    "id": o["id"],
                    "framework_id": o["framework_id"],
                    "slave_id": o["agent_id"],
                    "resources": o["resources"],
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let completed: Vec<Value> = list(&s["completed_frameworks"])
        .iter()
        .map(|f| {
            json!({
                "id": f["id"],
                "name": f["name"],
                "roles": f["roles"],
                "active": false,
                "unregistered_time": f["removed_at"],
                "tasks": [],
                "completed_tasks": tasks(&f["tasks"]),
            })
        })
        .collect();
    json!({
        "version": s["version"],
        "id": s["id"],
        "hostname": s["hostname"],
        "pid": pid(&s["address"]),
        "leader": pid(&s["leader"]["address"]),
        "start_time": s["started_at"],
        "elected_time": s["started_at"],
        "activated_slaves": active,
        "deactivated_slaves": slaves.len() - active,
        "slaves": slaves,
        "frameworks": frameworks,
        "completed_frameworks": completed,
        "unregistered_frameworks": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agoras_state_reads_with_mesos_names() {
        let agora = json!({
            "version": "0.1.0", "id": "m1", "hostname": "h", "address": "h:5050",
            "leader": {"id": "m1", "address": "h:5050"}, "started_at": 10.0,
            "agents": [{"id": "m1-S0", "hostname": "a", "http_address": "a:5051",
                "active": true, "registered_at": 11.0, "version": "0.1.0",
                "attributes": {"rack": "r1"},
                "resources": {"total": {"cpus": 2.0}, "used": {"cpus": 0.5},
                    "offered": {"cpus": 1.5}}}],
            "frameworks": [{"id": "m1-0000", "name": "fw", "user": "u", "roles": ["*"],
                "active": true, "connected": true, "failover_timeout": 60.0,
                "registered_at": 12.0, "disconnected_at": null,
                "used_resources": {"cpus": 0.5},
                "tasks": [{"id": "t1", "name": "t1", "framework_id": "m1-0000",
                    "agent_id": "m1-S0", "state": "TASK_RUNNING", "role": "*",
                    "resources": {"cpus": 0.5}, "updated_at": 13.0}],
                "completed_tasks": [],
                "offers": [{"id": "m1-O1", "framework_id": "m1-0000",
                    "agent_id": "m1-S0", "resources": {"cpus": 1.5}}]}],
            "completed_frameworks": [{"id": "m1-0001", "name": "old", "roles": ["*"],
                "removed_at": 14.0, "tasks": []}],
        });
        let m = master_state(&agora);
        assert_eq!(m["pid"], "master@h:5050");
        assert_eq!(m["leader"], "master@h:5050");
        assert_eq!(m["activated_slaves"], 1);
        assert_eq!(m["slaves"][0]["id"], "m1-S0");
        assert_eq!(m["slaves"][0]["pid"], "slave(1)@a:5051");
        assert_eq!(m["slaves"][0]["resources"]["cpus"], 2.0);
        assert_eq!(m["slaves"][0]["attributes"]["rack"], "r1");
        let f = &m["frameworks"][0];
        assert_eq!(f["registered_time"], 12.0);
        assert_eq!(f["role"], "*");
        assert_eq!(f["tasks"][0]["slave_id"], "m1-S0");
        assert_eq!(f["tasks"][0]["statuses"][0]["timestamp"], 13.0);
        assert_eq!(f["offers"][0]["slave_id"], "m1-S0");
        assert_eq!(m["completed_frameworks"][0]["unregistered_time"], 14.0);
    }
}
