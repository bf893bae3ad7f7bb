//! pymesos (0.3.15, from the Python package registry), the Python library
//! of Mesos frameworks, drives a scheduler against a real `agora master`
//! process and a real `agora agent` over the Mesos v1 scheduler HTTP API
//! (tests/python/mesos_flows.py): subscribe, offers, a command task and a
//! Docker task, updates acknowledged, reconcile, kill, decline with a
//! filter, revive, teardown; and the same driver, finding the leader through
//! `zk://` with a real ZooKeeper, following a leader failover
//! (tests/python/mesos_failover.py). `scripts/test` installs pymesos in a
//! virtualenv and names its interpreter in `AGORA_TEST_PYMESOS_PYTHON`.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::docker::{ContainerGuard, TEST_IMAGE, docker_or_skip};
use common::zk::ZkServer;
use common::{DEADLINE, Proc, eventually, linger, spawn_master};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const HOW_TO_GET_PYMESOS: &str = "pymesos is not installed: see the `pymesos` step of \
    scripts/test (it needs http-parser without its C extension on Python 3.11), then \
    AGORA_TEST_PYMESOS_PYTHON=<that venv>/bin/python";

#[tokio::test]
async fn t91_a_pymesos_scheduler_runs_on_agora() {
    common::init_logs();
    let Some(python) =
        common::python_with("pymesos", "AGORA_TEST_PYMESOS_PYTHON", HOW_TO_GET_PYMESOS)
    else {
        return;
    };
    let docker = docker_or_skip("t91_a_pymesos_scheduler_runs_on_agora").await;
    let dir = tempfile::tempdir().unwrap();
    let _containers = ContainerGuard::new(dir.path());
    let (_master, master) = spawn_master(&[]).await;
    let work = dir.path().join("agent");
    let containerizers = if docker.is_some() {
        "docker,process"
    } else {
        "process"
    };
    let agent = Proc::spawn(
        &[
            "agent",
            "--master",
            &master,
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            work.to_str().unwrap(),
            "--resources",
            "cpus:2;mem:512",
            "--kill-grace",
            "1s",
            "--containerizers",
            containerizers,
        ],
        &[],
    );
    agent.wait_line("the master accepted the agent").await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/mesos_flows.py");
    let mut args = vec![script.to_string(), master.clone(), linger(dir.path())];
    if docker.is_some() {
        args.push(TEST_IMAGE.to_string());
    }
    let child = tokio::process::Command::new(&python)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    let out = tokio::time::timeout(DEADLINE * 4, child.wait_with_output())
        .await
        .expect("the flows finish in time")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the pymesos scheduler failed:\n{text}"
    );
    assert!(text.lines().any(|l| l == "ok"), "{text}");
}

/// A Python script run with piped stdin and its output lines collected.
struct Script {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Script {
    fn spawn(python: &str, args: &[String]) -> Script {
        let mut child = tokio::process::Command::new(python)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Script { child, lines }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The first line starting with `prefix`, split on spaces; panics with
    /// the script's output when it exits first or after `deadline`.
    async fn wait_line(&mut self, prefix: &str, deadline: std::time::Duration) -> Vec<String> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return line.split(' ').map(str::to_string).collect();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers take the last lines.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                panic!(
                    "the pymesos scheduler exited ({status}) before `{prefix}`:\n{}",
                    self.text()
                );
            }
            if tokio::time::Instant::now() >= until {
                panic!(
                    "timed out after {deadline:?} waiting for `{prefix}` from the pymesos \
                     scheduler:\n{}",
                    self.text()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The tasks an agent runs: (id, container, state).
async fn agent_tasks(agent_http: &str) -> Vec<(String, String, String)> {
    let s = common::get_json(&format!("http://{agent_http}/state")).await;
    s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["container_id"].as_str().unwrap_or("").to_string(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn t91_a_pymesos_scheduler_follows_a_leader_failover_through_zookeeper() {
    common::init_logs();
    let Some(python) =
        common::python_with("pymesos", "AGORA_TEST_PYMESOS_PYTHON", HOW_TO_GET_PYMESOS)
    else {
        return;
    };
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let zk_url = zk.url("/agora");
    let mut masters = Vec::new();
    for _ in 0..2 {
        masters.push(common::zk::spawn_zk_master(&zk_url, &[]).await);
    }
    let addrs: Vec<String> = masters.iter().map(|(_, a)| a.clone()).collect();
    let leader = common::zk::wait_one_leader(&addrs, DEADLINE).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = common::spawn_agent(&zk_url, &dir.path().join("agent"), "cpus:1;mem:256").await;

    // pymesos reads the leader from ZooKeeper (the lowest `json.info_`
    // node), subscribes, and launches one long task.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/mesos_failover.py"
    );
    let mut sched = Script::spawn(
        &python,
        &[script.to_string(), zk_url.clone(), linger(dir.path())],
    );
    let running = sched.wait_line("running ", DEADLINE * 2).await;
    let (framework_id, first_master) = (running[1].clone(), running[2].clone());
    assert_eq!(
        first_master, leader,
        "pymesos found the leader in ZooKeeper"
    );
    let state = common::zk::try_state(&leader).await.unwrap();
    let agent_http = state["agents"][0]["http_address"]
        .as_str()
        .unwrap()
        .to_string();
    let before = agent_tasks(&agent_http).await;
    assert!(
        before
            .iter()
            .any(|t| t.0 == "long-1" && t.2 == "TASK_RUNNING"),
        "{before:?}"
    );

    // SIGKILL the leader: the standby takes over, pymesos follows it through
    // ZooKeeper and subscribes again with its framework id.
    let idx = addrs.iter().position(|a| *a == leader).unwrap();
    let (mut dead, _) = masters.remove(idx);
    let killed_at = tokio::time::Instant::now();
    dead.kill9().await;
    let standby = masters[0].1.clone();
    let new_leader = common::zk::wait_one_leader(std::slice::from_ref(&standby), DEADLINE).await;
    let reconciled = sched.wait_line("reconciled ", DEADLINE * 3).await;
    assert_eq!(reconciled[1], new_leader, "{}", sched.text());
    eprintln!(
        "leader {leader} killed; pymesos resubscribed to {new_leader} and reconciled after {:?}",
        killed_at.elapsed()
    );

    // The new leader has the framework, under its id, with its task running;
    // the agent runs the same task in the same container (never relaunched).
    let s = eventually(
        "the new leader knows the framework's task",
        DEADLINE,
        || {
            let new_leader = new_leader.clone();
            let framework_id = framework_id.clone();
            async move {
                let s = common::zk::try_state(&new_leader).await?;
                let fw = s["frameworks"]
                    .as_array()?
                    .iter()
                    .find(|f| f["id"] == framework_id.as_str())?
                    .clone();
                fw["tasks"]
                    .as_array()?
                    .iter()
                    .any(|t| t["id"] == "long-1" && t["state"] == "TASK_RUNNING")
                    .then_some(s)
            }
        },
    )
    .await;
    assert_eq!(
        s["frameworks"].as_array().unwrap().len(),
        1,
        "one framework, resubscribed, not a second one: {s}"
    );
    let after = agent_tasks(&agent_http).await;
    assert_eq!(before, after, "the task runs on, in the same container");

    // Done: the driver stops and tears the framework down.
    sched
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"done\n")
        .await
        .unwrap();
    sched.wait_line("ok", DEADLINE).await;
    let status = tokio::time::timeout(DEADLINE, sched.child.wait())
        .await
        .expect("the scheduler exits")
        .unwrap();
    assert!(status.success(), "{}", sched.text());
    eventually("the task killed by the teardown", DEADLINE, || {
        let agent_http = agent_http.clone();
        async move { agent_tasks(&agent_http).await.is_empty().then_some(()) }
    })
    .await;
}
