//! Killing tasks: SIGTERM, SIGKILL after the grace period, unknown tasks,
//! framework shutdown.

use std::time::{Duration, Instant};

use agora_proto::v1::{KillPolicy, ShutdownFramework, StatusReason, TaskState, master_to_agent};

use crate::common::*;

/// Waits until the task has written `ready` to its stdout.
async fn wait_ready(agent: &TestAgent, task_id: &str) {
    let url = agent.url(&format!("/tasks/{task_id}/logs?stream=stdout"));
    eventually(&format!("{task_id} to be ready"), async || {
        let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
        body.contains("ready").then_some(())
    })
    .await;
}

#[tokio::test]
async fn kill_stops_a_task_with_sigterm() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![shell_task("t1", RUN_UNTIL_SANDBOX_GONE)],
    );
    master.wait_update("t1", TaskState::TaskRunning).await;
    wait_ready(&agent, "t1").await;
    master.kill("f1", "t1", None);
    let killed = master.wait_update("t1", TaskState::TaskKilled).await;
    assert!(killed.message.contains("SIGTERM"), "{}", killed.message);
    assert_eq!(killed.exit_code, Some(128 + 15));
    // Exactly one terminal update.
    let terminal = updates_of(&master.seen(), "t1")
        .iter()
        .filter(|s| agora_proto::is_terminal(s.state()))
        .count();
    assert_eq!(terminal, 1);
    agent.stop().await;
}

#[tokio::test]
async fn a_task_that_ignores_sigterm_gets_sigkill_after_its_grace_period() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let mut task = shell_task(
        "stubborn",
        "trap '' TERM; echo ready; while [ -e \"$AGORA_SANDBOX\" ]; do sleep 0.05; done",
    );
    // The task's own policy; the kill below overrides it.
    task.kill_policy = Some(KillPolicy {
        grace_period: Some(60.0),
    });
    master.launch(&framework("f1"), vec![task]);
    master.wait_update("stubborn", TaskState::TaskRunning).await;
    wait_ready(&agent, "stubborn").await;

    let grace = Duration::from_millis(700);
    let started = Instant::now();
    master.kill("f1", "stubborn", Some(grace.as_secs_f64()));
    let killed = master.wait_update("stubborn", TaskState::TaskKilled).await;
    let took = started.elapsed();
    assert!(killed.message.contains("SIGKILL"), "{}", killed.message);
    assert_eq!(killed.exit_code, Some(128 + 9));
    assert!(
        took >= grace,
        "SIGKILL came after {took:?}, before the {grace:?} grace period"
    );
    agent.stop().await;
}

#[tokio::test]
async fn the_task_kill_policy_sets_the_grace_period() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let mut task = shell_task(
        "stubborn",
        "trap '' TERM; echo ready; while [ -e \"$AGORA_SANDBOX\" ]; do sleep 0.05; done",
    );
    task.kill_policy = Some(KillPolicy {
        grace_period: Some(0.3),
    });
    master.launch(&framework("f1"), vec![task]);
    wait_ready(&agent, "stubborn").await;
    master.kill("f1", "stubborn", None);
    let killed = master.wait_update("stubborn", TaskState::TaskKilled).await;
    assert!(killed.message.contains("300ms"), "{}", killed.message);
    agent.stop().await;
}

#[tokio::test]
async fn killing_an_unknown_task_answers_task_lost() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    master.kill("f1", "nobody", None);
    let lost = master.wait_update("nobody", TaskState::TaskLost).await;
    assert_eq!(lost.reason(), StatusReason::ReasonTaskUnknown);
    assert_eq!(lost.framework_id, "f1");
    assert_eq!(lost.uuid.len(), 16);
    agent.stop().await;
}

#[tokio::test]
async fn shutting_a_framework_down_kills_its_tasks_only() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![
            shell_task("a", RUN_UNTIL_SANDBOX_GONE),
            shell_task("b", RUN_UNTIL_SANDBOX_GONE),
        ],
    );
    master.launch(
        &framework("f2"),
        vec![shell_task("c", RUN_UNTIL_SANDBOX_GONE)],
    );
    for t in ["a", "b", "c"] {
        master.wait_update(t, TaskState::TaskRunning).await;
    }
    master.send(master_to_agent::Message::ShutdownFramework(
        ShutdownFramework {
            framework_id: "f1".into(),
        },
    ));
    master.wait_update("a", TaskState::TaskKilled).await;
    master.wait_update("b", TaskState::TaskKilled).await;
    let c = agent.task_state("c").await.unwrap();
    assert_eq!(c["state"], "TASK_RUNNING");
    agent.stop().await;
}
