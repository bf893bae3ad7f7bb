//! The built `agora` binary as real processes: agents killed with SIGKILL
//! and restarted, `agora execute`, the CLI's tables and its errors.

mod common;

use std::time::Duration;

use agora_proto::v1::TaskState;
use common::*;

#[tokio::test]
async fn an_agent_killed_makes_its_tasks_unreachable_and_its_offers_rescinded() {
    init_logs();
    let (_master, addr) = spawn_master(&["--agent-timeout", "2s"]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for name in ["a", "b"] {
        let p = spawn_agent(&addr, &dir.path().join(name), "cpus:2;mem:512").await;
        let id = p
            .wait_field("the master accepted the agent", "agent_id")
            .await;
        agents.push((p, id));
    }
    let fw = TestFramework::start(&addr, "unreachable", &["*"], 60.0).await;
    // One long task on each agent.
    let mut on = std::collections::HashMap::new();
    for task in ["t1", "t2"] {
        let offer = fw.take_offer().await;
        fw.launch(
            &offer,
            vec![shell_task(task, &linger(dir.path()), "cpus:0.5;mem:64")],
        );
        let running = fw.wait_state(task, TaskState::TaskRunning).await;
        on.insert(task, running.agent_id);
    }
    assert_ne!(
        on["t1"], on["t2"],
        "the two offers came from the same agent"
    );
    // Hold the offer of what is left on the agent that will die.
    let held = fw
        .wait("an offer from t1's agent", |s| {
            s.offers.iter().find(|o| o.agent_id == on["t1"]).cloned()
        })
        .await;

    // Kill t1's agent (which process that is depends on the allocation).
    let doomed = agents
        .iter_mut()
        .find(|(_, id)| *id == on["t1"])
        .expect("t1 runs on one of the two agents");
    doomed.0.kill9().await;
    fw.wait("the held offer rescinded", |s| {
        s.rescinded.contains(&held.id).then_some(())
    })
    .await;
    let unreachable = fw.wait_state("t1", TaskState::TaskUnreachable).await;
    assert_eq!(unreachable.agent_id, on["t1"]);
    fw.wait("a failure event for the agent", |s| {
        s.failures.contains(&on["t1"]).then_some(())
    })
    .await;
    // The other agent's task is untouched, and its resources are still offered.
    let seen = fw.seen.lock().unwrap();
    assert!(
        seen.updates
            .iter()
            .filter(|u| u.task_id == "t2")
            .all(|u| matches!(u.state(), TaskState::TaskStarting | TaskState::TaskRunning)),
        "t2 changed state: {:?}",
        seen.updates
    );
    assert!(seen.offers.iter().all(|o| o.agent_id != on["t1"]));
    // (The task of the killed agent kept running; it ends with the test's
    // directory.)
}

#[tokio::test]
async fn an_agent_restarted_after_sigkill_keeps_its_running_task() {
    init_logs();
    let (_master, addr) = spawn_master(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = spawn_agent(&addr, dir.path(), "cpus:2;mem:512").await;
    let fw = TestFramework::start(&addr, "restart", &["*"], 60.0).await;
    let offer = fw.take_offer().await;
    // The task runs until a file appears, then exits 7.
    let flag = dir.path().join("stop-now");
    let cmd = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exit 7",
        flag.display()
    );
    fw.launch(&offer, vec![shell_task("t1", &cmd, "cpus:0.5;mem:64")]);
    fw.wait_state("t1", TaskState::TaskRunning).await;

    agent.kill9().await;
    let _agent = spawn_agent(&addr, dir.path(), "cpus:2;mem:512").await;
    // The same agent id came back with the task still running.
    let url = format!("http://{addr}/state");
    eventually("the agent back with t1 running", DEADLINE, || {
        let url = url.clone();
        let agent_id = offer.agent_id.clone();
        async move {
            let s = get_json(&url).await;
            let a = s["agents"]
                .as_array()?
                .iter()
                .find(|a| a["id"] == agent_id.as_str())?
                .clone();
            let t = s["frameworks"][0]["tasks"][0].clone();
            (a["status"] == "connected" && t["id"] == "t1" && t["state"] == "TASK_RUNNING")
                .then_some(())
        }
    })
    .await;
    // Its end is reported with its real exit code.
    std::fs::write(&flag, b"").unwrap();
    let failed = fw.wait_state("t1", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(7));
    // It was launched once: RUNNING was never preceded by a second STAGING/STARTING.
    let starts = fw
        .seen
        .lock()
        .unwrap()
        .updates
        .iter()
        .filter(|u| u.task_id == "t1" && u.state() == TaskState::TaskStarting)
        .count();
    assert!(starts <= 1, "t1 started {starts} times");
}

#[tokio::test]
async fn execute_exits_zero_when_the_task_finishes_and_nonzero_when_it_fails() {
    init_logs();
    let (_master, addr) = spawn_master(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = spawn_agent(&addr, dir.path(), "cpus:2;mem:512").await;

    let mut ok = Proc::spawn(
        &[
            "execute",
            "--master",
            &addr,
            "--name",
            "hello",
            "--command",
            "echo hi",
        ],
        &[],
    );
    assert_eq!(ok.exit_code().await, 0, "output:\n{}", ok.text());
    let text = ok.text();
    assert!(
        text.contains("TASK_RUNNING") && text.contains("TASK_FINISHED"),
        "{text}"
    );

    let mut bad = Proc::spawn(
        &[
            "execute",
            "--master",
            &addr,
            "--name",
            "boom",
            "--command",
            "exit 5",
            "--env",
            "A=1",
        ],
        &[],
    );
    let code = bad.exit_code().await;
    assert_ne!(code, 0);
    assert!(bad.text().contains("TASK_FAILED"), "{}", bad.text());

    let mut too_big = Proc::spawn(
        &[
            "execute",
            "--master",
            &addr,
            "--name",
            "big",
            "--command",
            "true",
            "--resources",
            "cpus:0.1;mem:32;disk:-1",
        ],
        &[],
    );
    assert_eq!(too_big.exit_code().await, 64, "{}", too_big.text());
}

#[tokio::test]
async fn bad_flags_exit_64_before_binding() {
    for args in [
        vec!["master", "--agent-timeout", "soon"],
        vec!["master", "--weights", "web=-1"],
        vec!["master", "--listen", "not-an-address"],
        vec!["agent", "--resources", "cpus:lots"],
        vec!["agent", "--attributes", "rack"],
        vec!["frobnicate"],
        vec!["execute", "--name", "x"],
    ] {
        let mut p = Proc::spawn(&args, &[]);
        let code = p.exit_code().await;
        assert_eq!(code, 64, "agora {args:?} exited {code}:\n{}", p.text());
        assert!(!p.text().is_empty(), "agora {args:?} said nothing");
    }
    // Environment variables count as flags.
    let mut p = Proc::spawn(&["master"], &[("AGORA_ALLOCATION_INTERVAL", "-3s")]);
    assert_eq!(p.exit_code().await, 64, "{}", p.text());
}

#[tokio::test]
async fn cli_lists_agents_frameworks_and_tasks() {
    init_logs();
    let (_master, addr) = spawn_master(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = Proc::spawn(
        &[
            "agent",
            "--master",
            &addr,
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            dir.path().to_str().unwrap(),
            "--resources",
            "cpus:3;mem:300",
            "--attributes",
            "rack:r1",
        ],
        &[],
    );
    _agent.wait_line("the master accepted the agent").await;
    let fw = TestFramework::start(&addr, "lister", &["*"], 60.0).await;
    let offer = fw.take_offer().await;
    fw.launch(
        &offer,
        vec![shell_task("listed", &linger(dir.path()), "cpus:1;mem:64")],
    );
    fw.wait_state("listed", TaskState::TaskRunning).await;

    let mut agents = Proc::spawn(&["agents", "--master", &addr], &[]);
    assert_eq!(agents.exit_code().await, 0);
    assert!(
        agents.text().contains("rack:r1") && agents.text().contains("1/3"),
        "{}",
        agents.text()
    );

    let mut frameworks = Proc::spawn(&["frameworks", "--master", &addr, "--json"], &[]);
    assert_eq!(frameworks.exit_code().await, 0);
    let v: serde_json::Value = serde_json::from_str(&frameworks.text()).unwrap();
    assert_eq!(v[0]["name"], "lister");

    let mut tasks = Proc::spawn(&["tasks", "--master", &addr], &[]);
    assert_eq!(tasks.exit_code().await, 0);
    assert!(tasks.text().contains("listed") && tasks.text().contains("TASK_RUNNING"));

    // A master that does not answer is a clear error, not a hang.
    let mut none = Proc::spawn(&["agents", "--master", "127.0.0.1:1"], &[]);
    assert_ne!(none.exit_code().await, 0);
    assert!(
        none.text().contains("cannot reach the master"),
        "{}",
        none.text()
    );
    fw.scheduler.teardown().await.unwrap();
}

#[tokio::test]
async fn dev_runs_a_whole_cluster_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent_listen = format!("127.0.0.1:{}", free_port());
    let mut dev = Proc::spawn(
        &[
            "dev",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &listen,
            "--agent-listen",
            &agent_listen,
            "--batch-listen",
            "127.0.0.1:0",
            "--services-listen",
            "127.0.0.1:0",
            "--resources",
            "cpus:2;mem:512",
        ],
        &[],
    );
    dev.wait_line("agora execute").await;
    let mut exec = Proc::spawn(
        &[
            "execute",
            "--master",
            &listen,
            "--name",
            "dev-hello",
            "--command",
            "echo dev",
        ],
        &[],
    );
    assert_eq!(exec.exit_code().await, 0, "{}", exec.text());
    // Ctrl-C stops it cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let code = tokio::time::timeout(Duration::from_secs(20), dev.child.wait())
        .await
        .expect("agora dev stops within 20 s of SIGINT")
        .unwrap();
    assert!(code.success(), "agora dev exited {code:?}:\n{}", dev.text());
}

#[tokio::test]
async fn dev_takes_any_free_ports_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Proc::spawn(
        &[
            "dev",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--batch-listen",
            "127.0.0.1:0",
            "--services-listen",
            "127.0.0.1:0",
            "--resources",
            "cpus:1;mem:256",
        ],
        &[],
    );
    // "  batch (jobs):         http://127.0.0.1:PORT   API: ..."
    let line = dev.wait_line("batch (jobs):").await;
    let batch = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in: {line}"))
        .to_string();
    assert!(!batch.ends_with(":0"), "the bound port, not 0: {line}");
    let jobs = common::get_json(&format!("{batch}/v1/jobs")).await;
    assert_eq!(jobs, serde_json::json!([]), "batch serves in agora dev");
    // "  services (apps):      http://127.0.0.1:PORT   API: ..."
    let line = dev.wait_line("services (apps):").await;
    let services = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in: {line}"))
        .to_string();
    assert!(!services.ends_with(":0"), "the bound port, not 0: {line}");
    let apps = common::eventually("services to serve in agora dev", common::DEADLINE, || {
        let url = format!("{services}/v2/apps");
        async move {
            let r = reqwest::get(&url).await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            r.json::<serde_json::Value>().await.ok()
        }
    })
    .await;
    assert_eq!(
        apps,
        serde_json::json!({"apps": []}),
        "services serves in agora dev"
    );
    // "  agora execute --master 127.0.0.1:PORT --name hello ..."
    let line = dev.wait_line("agora execute --master").await;
    let addr = line
        .split_whitespace()
        .skip_while(|w| *w != "--master")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in: {line}"))
        .to_string();
    assert!(!addr.ends_with(":0"), "the bound port, not 0: {line}");
    let mut exec = Proc::spawn(
        &[
            "execute",
            "--master",
            &addr,
            "--name",
            "any-port",
            "--command",
            "true",
        ],
        &[],
    );
    assert_eq!(exec.exit_code().await, 0, "{}", exec.text());
}

/// A port nobody listens on right now (for flags that need a fixed port).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
