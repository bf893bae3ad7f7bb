//! pymesos (0.3.15, from the Python package registry), the Python library
//! of Mesos frameworks, drives a scheduler against a real `agora master`
//! process and a real `agora agent` over the Mesos v1 scheduler HTTP API
//! (tests/python/mesos_flows.py): subscribe, offers, a command task and a
//! Docker task, updates acknowledged, reconcile, kill, decline with a
//! filter, revive, teardown. `scripts/test` installs pymesos in a
//! virtualenv and names its interpreter in `AGORA_TEST_PYMESOS_PYTHON`.

mod common;

use std::process::Stdio;

use common::docker::{ContainerGuard, TEST_IMAGE, docker_or_skip};
use common::{DEADLINE, Proc, linger, spawn_master};

#[tokio::test]
async fn t91_a_pymesos_scheduler_runs_on_agora() {
    common::init_logs();
    let Some(python) = common::python_with(
        "pymesos",
        "AGORA_TEST_PYMESOS_PYTHON",
        "pymesos is not installed: see the `pymesos` step of scripts/test (it needs \
               http-parser without its C extension on Python 3.11), then \
               AGORA_TEST_PYMESOS_PYTHON=<that venv>/bin/python",
    ) else {
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
