//! `agora agents | frameworks | tasks`: tables (or JSON) from the master's
//! `/state`.

use anyhow::{Context, bail};
use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

/// `http://host:port` for a master given as `host:port` or a URL.
pub fn master_url(master: &str) -> String {
    let m = master.trim().trim_end_matches('/');
    if m.starts_with("http://") || m.starts_with("https://") {
        m.to_string()
    } else {
        format!("http://{m}")
    }
}

/// Reads the leading master's `/state`. `master` is `host:port`, a URL, or
/// `zk://.../path` (the leader is looked up in ZooKeeper). A master that
/// does not lead says who does, and the leader is asked instead.
pub async fn fetch_state(master: &str) -> anyhow::Result<Value> {
    let base = if agora_coord::ZkUrl::is_zk(master) {
        let url = agora_coord::ZkUrl::parse(master)?;
        let leader = agora_coord::zk::find_leader(&url, std::time::Duration::from_secs(10))
            .await
            .with_context(|| format!("cannot find the leading master in ZooKeeper ({url})"))?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no master leads at the moment (ZooKeeper at {url} names none); retry shortly"
                )
            })?;
        format!("http://{}", agora_coord::address_of(&leader))
    } else {
        master_url(master)
    };
    let state = get_state(&base).await?;
    if state["elected"] == Value::Bool(false) {
        let Some(leader) = state["leader"]["address"].as_str() else {
            bail!(
                "the master at {base} does not lead, and no master leads at the moment; retry shortly"
            );
        };
        return get_state(&master_url(leader)).await;
    }
    Ok(state)
}

async fn get_state(base: &str) -> anyhow::Result<Value> {
    let url = format!("{base}/state");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let resp =
        client.get(&url).send().await.with_context(|| {
            format!("cannot reach the master at {url}; is it running? (--master)")
        })?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        bail!("the master answered {status} for {url}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("the master's {url} is not JSON"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING).set_header(header.to_vec());
    t
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub fn agents(state: &Value) -> String {
    let mut t = table(&[
        "ID",
        "HOSTNAME",
        "STATUS",
        "CPUS",
        "MEM (MB)",
        "DISK (MB)",
        "TASKS",
        "ATTRIBUTES",
    ]);
    for a in arr(&state["agents"]) {
        let r = &a["resources"];
        let pair = |k: &str| {
            format!(
                "{}/{}",
                fmt_num(num(&r["used"][k])),
                fmt_num(num(&r["total"][k]))
            )
        };
        t.add_row(vec![
            s(&a["id"]).to_string(),
            s(&a["hostname"]).to_string(),
            s(&a["status"]).to_string(),
            pair("cpus"),
            pair("mem"),
            pair("disk"),
            a["tasks"].to_string(),
            s(&a["attributes_text"]).to_string(),
        ]);
    }
    t.to_string()
}

pub fn frameworks(state: &Value) -> String {
    let mut t = table(&[
        "ID",
        "NAME",
        "ROLES",
        "CONNECTED",
        "TASKS",
        "CPUS",
        "MEM (MB)",
    ]);
    for f in arr(&state["frameworks"]) {
        let roles: Vec<&str> = arr(&f["roles"]).iter().map(s).collect();
        t.add_row(vec![
            s(&f["id"]).to_string(),
            s(&f["name"]).to_string(),
            roles.join(","),
            if f["connected"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
            .to_string(),
            arr(&f["tasks"]).len().to_string(),
            fmt_num(num(&f["used_resources"]["cpus"])),
            fmt_num(num(&f["used_resources"]["mem"])),
        ]);
    }
    t.to_string()
}

/// Every task in `/state` (ended ones too when `all`), as JSON values.
pub fn task_list(state: &Value, all: bool) -> Vec<Value> {
    let mut out = Vec::new();
    for f in arr(&state["frameworks"]) {
        out.extend(arr(&f["tasks"]).iter().cloned());
        if all {
            out.extend(arr(&f["completed_tasks"]).iter().cloned());
        }
    }
    if all {
        for f in arr(&state["completed_frameworks"]) {
            out.extend(arr(&f["tasks"]).iter().cloned());
        }
    }
    out
}

pub fn tasks(tasks: &[Value]) -> String {
    let mut t = table(&[
        "ID",
        "NAME",
        "FRAMEWORK",
        "AGENT",
        "STATE",
        "HEALTH",
        "CPUS",
        "MEM (MB)",
        "MESSAGE",
    ]);
    for task in tasks {
        t.add_row(vec![
            s(&task["id"]).to_string(),
            s(&task["name"]).to_string(),
            s(&task["framework_id"]).to_string(),
            s(&task["agent_id"]).to_string(),
            s(&task["state"]).to_string(),
            health(task),
            fmt_num(num(&task["resources"]["cpus"])),
            fmt_num(num(&task["resources"]["mem"])),
            s(&task["message"]).to_string(),
        ]);
    }
    t.to_string()
}

/// A task's health for the tables: `healthy`, `unhealthy` or `-` (no
/// health checks, or no verdict yet), and `not ready` while its readiness
/// checks have not all succeeded.
fn health(task: &Value) -> String {
    let health = match task["healthy"].as_bool() {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "-",
    };
    match task["ready"].as_bool() {
        Some(false) if health == "-" => "not ready".to_string(),
        Some(false) => format!("{health}, not ready"),
        _ => health.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls() {
        assert_eq!(master_url("127.0.0.1:5050"), "http://127.0.0.1:5050");
        assert_eq!(master_url("http://m:1/"), "http://m:1");
    }

    #[test]
    fn tables_show_the_state() {
        let state = json!({
            "agents": [{"id": "S0", "hostname": "h", "status": "connected", "tasks": 1,
                        "attributes_text": "rack:r1",
                        "resources": {"total": {"cpus": 4.0, "mem": 1024.0, "disk": 0.0},
                                      "used": {"cpus": 0.5, "mem": 64.0, "disk": 0.0}}}],
            "frameworks": [{"id": "F0", "name": "web", "roles": ["web"], "connected": true,
                            "used_resources": {"cpus": 0.5, "mem": 64.0},
                            "tasks": [{"id": "t1", "name": "t1", "framework_id": "F0", "agent_id": "S0",
                                       "state": "TASK_RUNNING", "resources": {"cpus": 0.5, "mem": 64.0}, "message": ""}],
                            "completed_tasks": [{"id": "t0", "state": "TASK_FINISHED"}]}],
            "completed_frameworks": []
        });
        let a = agents(&state);
        assert!(a.contains("0.50/4") && a.contains("rack:r1"), "{a}");
        assert!(frameworks(&state).contains("web"));
        assert_eq!(task_list(&state, false).len(), 1);
        assert_eq!(task_list(&state, true).len(), 2);
        assert!(tasks(&task_list(&state, false)).contains("TASK_RUNNING"));
    }

    #[test]
    fn the_health_column() {
        let row =
            |healthy: Value, ready: Value| health(&json!({"healthy": healthy, "ready": ready}));
        assert_eq!(row(Value::Null, Value::Null), "-");
        assert_eq!(row(json!(true), Value::Null), "healthy");
        assert_eq!(row(json!(false), json!(true)), "unhealthy");
        assert_eq!(row(json!(true), json!(false)), "healthy, not ready");
        assert_eq!(row(Value::Null, json!(false)), "not ready");
        let table = tasks(&[json!({"id": "t1", "state": "TASK_RUNNING", "healthy": false})]);
        assert!(
            table.contains("HEALTH") && table.contains("unhealthy"),
            "{table}"
        );
    }
}
