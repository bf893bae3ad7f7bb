//! Reliable status updates: resent until acknowledged, in order, batched,
//! resent after reregistration, forgotten after the terminal one is
//! acknowledged.

use agora_proto::v1::{TaskState, TaskStatus};

use crate::common::*;

fn count(seen: &[Seen], uuid: &[u8]) -> usize {
    seen.iter()
        .flat_map(|s| match s {
            Seen::Updates { statuses, .. } => statuses.clone(),
            _ => Vec::new(),
        })
        .filter(|s| s.uuid == uuid)
        .count()
}

/// Waits until the update with `uuid` has been seen `n` times.
async fn wait_sent(master: &FakeMaster, uuid: &[u8], n: usize) {
    master
        .wait_for(&format!("an update sent {n} times"), |seen| {
            (count(seen, uuid) >= n).then_some(())
        })
        .await;
}

/// Position in `seen` of the first update with `uuid`.
fn first_index(seen: &[Seen], uuid: &[u8]) -> usize {
    seen.iter()
        .position(|s| matches!(s, Seen::Updates { statuses, .. } if statuses.iter().any(|x| x.uuid == uuid)))
        .unwrap()
}

#[tokio::test]
async fn unacknowledged_updates_are_resent_in_order_and_acknowledged_ones_are_not() {
    let master = FakeMaster::start().await;
    master.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    master.launch(&framework("f1"), vec![shell_task("t1", "true")]);

    // STARTING is resent, with the same uuid, and nothing overtakes it.
    let starting = master.wait_update("t1", TaskState::TaskStarting).await;
    wait_sent(&master, &starting.uuid, 3).await;
    let t1: Vec<TaskStatus> = updates_of(&master.seen(), "t1");
    assert!(
        t1.iter().all(|s| s.state() == TaskState::TaskStarting),
        "{t1:?}"
    );
    // The task ends meanwhile; the agent knows, and holds the updates back.
    eventually("the agent to see the task finish", async || {
        let state = agent.task_state("t1").await?;
        (state["state"] == "TASK_FINISHED" && state["unacknowledged_updates"] == 3).then_some(())
    })
    .await;
    assert_eq!(
        updates_of(&master.seen(), "t1")
            .iter()
            .filter(|s| s.state() != TaskState::TaskStarting)
            .count(),
        0
    );

    // An acknowledgement with another uuid changes nothing.
    let mut wrong = starting.clone();
    wrong.uuid = uuid::Uuid::new_v4().as_bytes().to_vec();
    master.acknowledge(&wrong);

    master.acknowledge(&starting);
    let running = master.wait_update("t1", TaskState::TaskRunning).await;
    master.acknowledge(&running);
    let finished = master.wait_update("t1", TaskState::TaskFinished).await;
    assert_eq!(finished.exit_code, Some(0));
    // FINISHED is resent until acknowledged ...
    wait_sent(&master, &finished.uuid, 3).await;
    // ... and what was acknowledged never came again.
    let seen = master.seen();
    let after_running = first_index(&seen, &running.uuid);
    let after_finished = first_index(&seen, &finished.uuid);
    assert_eq!(count(&seen[after_running..], &starting.uuid), 0);
    assert_eq!(count(&seen[after_finished..], &running.uuid), 0);

    master.acknowledge(&finished);
    // Then the task is forgotten: no checkpoint left, listed as completed.
    eventually("the task to be forgotten", async || {
        let state = agent.state().await;
        (state["tasks"].as_array()?.is_empty()
            && state["completed_tasks"]
                .as_array()?
                .iter()
                .any(|t| t["id"] == "t1"))
        .then_some(())
    })
    .await;
    // Its checkpoint goes too (written off the core's loop: soon after).
    let framework_dir = dir.path().join("meta/frameworks/f1");
    eventually("the task's checkpoint to be removed", async || {
        (!framework_dir.exists()).then_some(())
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn updates_ready_together_go_in_one_message() {
    let master = FakeMaster::start().await;
    master.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![
            shell_task("a", "true"),
            shell_task("b", "true"),
            shell_task("c", "true"),
        ],
    );
    master
        .wait_for("one message with the three STARTING updates", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Updates { statuses, .. } if statuses.len() == 3))
                .then_some(())
        })
        .await;
    master.set_auto_ack(true);
    master.drop_session();
    for t in ["a", "b", "c"] {
        master.wait_update(t, TaskState::TaskFinished).await;
    }
    agent.stop().await;
}

#[tokio::test]
async fn pending_updates_are_resent_at_once_after_reregistration() {
    let master = FakeMaster::start().await;
    master.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&master, dir.path());
    // Resends would take an hour: only the reregistration sends it again.
    cfg.status_retry_min = std::time::Duration::from_secs(3600);
    cfg.status_retry_max = std::time::Duration::from_secs(3600);
    let agent = TestAgent::start(cfg).await;
    agent.wait_id().await;
    master.launch(&framework("f1"), vec![shell_task("t1", "true")]);
    let starting = master.wait_update("t1", TaskState::TaskStarting).await;
    eventually("the agent to see the task finish", async || {
        (agent.task_state("t1").await?["state"] == "TASK_FINISHED").then_some(())
    })
    .await;

    master.drop_session();
    let reg = master.wait_registration(2).await;
    assert_eq!(reg.tasks.len(), 1);
    assert_eq!(
        reg.tasks[0].state(),
        TaskState::TaskFinished,
        "the latest state"
    );
    // Each send of STARTING: (session, latest_state).
    let sends = |seen: &[Seen]| -> Vec<(usize, Option<i32>)> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::Updates { session, statuses } => statuses
                    .iter()
                    .find(|x| x.uuid == starting.uuid)
                    .map(|x| (*session, x.latest_state)),
                _ => None,
            })
            .collect()
    };
    let sent = master
        .wait_for("STARTING resent on the new session", |seen| {
            let sent = sends(seen);
            sent.iter()
                .any(|(session, _)| *session == 2)
                .then_some(sent)
        })
        .await;
    // On the first session, the task's end went out with STARTING (its
    // latest state), without waiting for the hour-long retry.
    assert!(
        sent.iter()
            .any(|(session, latest)| *session == 1
                && *latest == Some(TaskState::TaskFinished as i32)),
        "{sent:?}"
    );

    master.set_auto_ack(true);
    master.acknowledge(&starting);
    master.wait_update("t1", TaskState::TaskFinished).await;
    agent.stop().await;
}
