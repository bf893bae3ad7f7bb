//! The services framework through failures, with real processes: an agent
//! SIGKILLed (its instances replaced elsewhere, none extra once it is
//! back), the services leader SIGKILLed under a real ZooKeeper (the standby
//! leads, nothing relaunched), and `agora dev` restarted (apps kept).

mod common;

use std::path::Path;
use std::time::Duration;

use common::services::{Services, running, task_ids};
use common::zk::ZkServer;
use common::{Cluster, DEADLINE, Proc, eventually, linger};
use serde_json::{Value, json};

/// `agora agent` named `hostname`; returns once the master accepted it.
async fn spawn_named_agent(master: &str, work: &Path, hostname: &str) -> Proc {
    let p = Proc::spawn(
        &[
            "agent",
            "--master",
            master,
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            work.to_str().unwrap(),
            "--resources",
            "cpus:2;mem:512;ports:[31000-31099]",
            "--hostname",
            hostname,
            "--kill-grace",
            "1s",
        ],
        &[],
    );
    p.wait_line("the master accepted the agent").await;
    p
}

/// The master's tasks of the services framework (ids), ended ones too.
async fn launched(master_url: &str) -> Vec<String> {
    let state = common::get_json(&format!("{master_url}/state")).await;
    let mut out = Vec::new();
    for f in state["frameworks"].as_array().unwrap() {
        if f["name"] != "agora-services" {
            continue;
        }
        for key in ["tasks", "completed_tasks"] {
            for t in f[key].as_array().into_iter().flatten() {
                out.push(t["id"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn an_agent_killed_has_its_instances_replaced_elsewhere_and_none_extra_when_it_returns() {
    let mut master = common::master_config();
    master.core.agent_timeout = Duration::from_secs(2);
    master.core.agent_heartbeat_interval = Duration::from_millis(400);
    let cluster = Cluster::start(master, &[]).await;
    let dir = cluster.dir.path().to_path_buf();
    let mut agents = [
        Some(spawn_named_agent(&cluster.addr(), &dir.join("a"), "host-a").await),
        Some(spawn_named_agent(&cluster.addr(), &dir.join("b"), "host-b").await),
    ];
    let svc = Services::start(&cluster.addr()).await;
    let def = json!({
        "id": "/web", "cmd": linger(&dir), "cpus": 0.1, "mem": 16, "instances": 2,
        "constraints": [["hostname", "UNIQUE"]],
        "unreachableStrategy": {"inactiveAfterSeconds": 1, "expungeAfterSeconds": 3600}
    });
    svc.create(&def.to_string()).await;
    let a = svc.wait_running("/web", 2).await;
    let on_a: Vec<String> = a["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["host"] == "host-a")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on_a.len(), 1, "{a}");

    // UNIQUE hostname and two agents: the replacement needs a third host.
    agents[0].as_mut().unwrap().kill9().await;
    let _c = spawn_named_agent(&cluster.addr(), &dir.join("c"), "host-c").await;
    let replaced = svc
        .wait_app("the lost instance replaced on host-c", "/web", |a| {
            running(a)
                .iter()
                .any(|t| t["host"] == "host-c" && t["state"] == "TASK_RUNNING")
                && running(a).iter().any(|t| t["host"] == "host-b")
        })
        .await;
    assert_eq!(replaced["instances"], 2);

    // The agent comes back with its task: one of the three goes, and two
    // stay.
    agents[0] = Some(spawn_named_agent(&cluster.addr(), &dir.join("a"), "host-a").await);
    let settled = svc
        .wait_app("two instances once the agent is back", "/web", |a| {
            running(a).len() == 2 && a["tasks"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    // It stays at two.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a = svc.app("/web").await;
        assert!(
            a["tasks"].as_array().unwrap().len() <= 2,
            "more than two instances: {a}"
        );
    }
    let mut hosts: Vec<&str> = settled["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["host"].as_str().unwrap())
        .collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 2, "UNIQUE hostname holds: {settled}");
}

/// `agora services` with ZooKeeper election, on a free port.
async fn spawn_services(master: &str, zk: &str) -> (Proc, Services) {
    let p = Proc::spawn(
        &[
            "services",
            "--master",
            master,
            "--listen",
            "127.0.0.1:0",
            "--zk",
            zk,
            "--zk-session-timeout",
            "2s",
        ],
        &[],
    );
    let addr = p
        .wait_field("services framework API listening", "addr")
        .await;
    (p, Services::at(&format!("http://{addr}")))
}

async fn elected(s: &Services) -> Option<bool> {
    let (status, v) = s.call("GET", "/v2/info", None).await;
    (status == 200).then(|| v["elected"].as_bool()).flatten()
}

#[tokio::test]
async fn a_services_leader_killed_hands_over_to_the_standby_and_nothing_is_relaunched() {
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let cluster = Cluster::start(
        common::master_config(),
        &["cpus:4;mem:1024;ports:[31000-31099]"],
    )
    .await;
    let zk_url = zk.url("/agora-services");
    let (mut a, api_a) = spawn_services(&cluster.addr(), &zk_url).await;
    eventually("the first instance to lead", DEADLINE, || async {
        (elected(&api_a).await == Some(true)).then_some(())
    })
    .await;
    let (_b, api_b) = spawn_services(&cluster.addr(), &zk_url).await;
    let leader_addr = api_a.url.trim_start_matches("http://").to_string();
    eventually(
        "the second instance to stand by, knowing the leader",
        DEADLINE,
        || async {
            let (status, v) = api_b.call("GET", "/v2/leader", None).await;
            (elected(&api_b).await == Some(false)
                && status == 200
                && v["leader"] == leader_addr.as_str())
            .then_some(())
        },
    )
    .await;
    api_a.wait_serving().await;

    // The standby serves the leader's API (forwarded).
    let def = json!({"id": "/ha", "cmd": linger(cluster.dir.path()), "cpus": 0.1, "mem": 16, "instances": 3});
    let (status, v) = api_b.call("POST", "/v2/apps", Some(&def.to_string())).await;
    assert_eq!(status, 201, "{v}");
    let before = api_a.wait_running("/ha", 3).await;
    let framework_id = api_a.get("/v2/info").await["frameworkId"].clone();
    assert!(framework_id.is_string());
    let ids = task_ids(&before);
    assert_eq!(launched(&cluster.url()).await, ids);

    a.kill9().await;
    eventually("the standby to take over", DEADLINE, || async {
        (elected(&api_b).await == Some(true)).then_some(())
    })
    .await;
    api_b.wait_serving().await;
    let after = api_b
        .wait_app(
            "the same three tasks running under the new leader",
            "/ha",
            |a| running(a).len() == 3 && task_ids(a) == ids,
        )
        .await;
    assert_eq!(after["version"], before["version"]);
    assert_eq!(api_b.get("/v2/info").await["frameworkId"], framework_id);
    // The new leader works: a scale goes through it.
    api_b.update("/ha", r#"{"instances": 4}"#).await;
    let scaled = api_b.wait_running("/ha", 4).await;
    let four = task_ids(&scaled);
    assert!(ids.iter().all(|t| four.contains(t)), "{ids:?} / {four:?}");
    // Nothing was relaunched: the master saw exactly these four tasks.
    assert_eq!(launched(&cluster.url()).await, four);
}

#[tokio::test]
async fn agora_dev_restarted_keeps_its_apps_and_their_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || {
        Proc::spawn(
            &[
                "dev",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
                "--batch-listen",
                "127.0.0.1:0",
                "--services-listen",
                "127.0.0.1:0",
                "--resources",
                "cpus:2;mem:512;ports:[31000-31099]",
                "--containerizers",
                "process",
            ],
            &[],
        )
    };
    let url_of = |line: String| -> String {
        line.split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in: {line}"))
            .to_string()
    };
    let mut dev = start();
    let svc = Services::at(&url_of(dev.wait_line("services (apps):").await));
    svc.wait_serving().await;
    let def =
        json!({"id": "/kept", "cmd": linger(dir.path()), "cpus": 0.1, "mem": 16, "instances": 2});
    svc.create(&def.to_string()).await;
    let before = svc.wait_running("/kept", 2).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(dev.exit_code().await, 0, "{}", dev.text());

    let dev = start();
    let svc = Services::at(&url_of(dev.wait_line("services (apps):").await));
    svc.wait_serving().await;
    let after = svc
        .wait_app("the app back with its two tasks", "/kept", |a: &Value| {
            running(a).len() == 2 && task_ids(a) == task_ids(&before)
        })
        .await;
    assert_eq!(after["version"], before["version"]);
}

#[tokio::test]
async fn a_deployment_under_way_goes_on_under_the_new_leader() {
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let cluster = Cluster::start(
        common::master_config(),
        &["cpus:4;mem:1024;ports:[31000-31099]"],
    )
    .await;
    let zk_url = zk.url("/agora-services");
    let (mut a, api_a) = spawn_services(&cluster.addr(), &zk_url).await;
    eventually("the first instance to lead", DEADLINE, || async {
        (elected(&api_a).await == Some(true)).then_some(())
    })
    .await;
    api_a.wait_serving().await;
    let (_b, api_b) = spawn_services(&cluster.addr(), &zk_url).await;
    // New instances are healthy once a marker file exists: the upgrade
    // waits for it.
    let marker = cluster.dir.path().join("healthy");
    let def = json!({
        "id": "/up", "cmd": linger(cluster.dir.path()), "cpus": 0.1, "mem": 16, "instances": 2,
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.5}
    });
    api_a.create(&def.to_string()).await;
    let before = api_a.wait_running("/up", 2).await;
    let old = task_ids(&before);
    let check = json!([{
        "protocol": "COMMAND", "command": {"value": format!("test -e {}", marker.display())},
        "delaySeconds": 0, "intervalSeconds": 1, "gracePeriodSeconds": 600,
        "maxConsecutiveFailures": 0
    }]);
    let deployment = api_a
        .update("/up", &json!({"healthChecks": check}).to_string())
        .await;
    api_a
        .wait_app("a new instance running, not healthy", "/up", |a| {
            running(a).len() == 3
        })
        .await;

    a.kill9().await;
    eventually("the standby to take over", DEADLINE, || async {
        (elected(&api_b).await == Some(true)).then_some(())
    })
    .await;
    api_b.wait_serving().await;
    // The deployment is still there, the old instances still run.
    let list = api_b.get("/v2/deployments").await;
    assert_eq!(list[0]["id"], deployment.as_str(), "{list}");
    let app = api_b.app("/up").await;
    assert!(old.iter().all(|t| task_ids(&app).contains(t)), "{app}");
    // Healthy now: the new leader finishes the upgrade.
    std::fs::write(&marker, b"").unwrap();
    let done = api_b
        .wait_app("the upgrade finished by the new leader", "/up", |a| {
            running(a).len() == 2
                && a["tasksHealthy"] == 2
                && a["deployments"].as_array().is_some_and(|d| d.is_empty())
        })
        .await;
    assert!(task_ids(&done).iter().all(|t| !old.contains(t)), "{done}");
}
