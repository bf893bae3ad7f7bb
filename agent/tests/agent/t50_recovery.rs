//! Agent restarts on the same work directory: running tasks are kept and
//! reported, tasks that ended meanwhile are reported with their real exit
//! status, tasks of frameworks that do not checkpoint are killed.

use std::path::{Path, PathBuf};

use agora_proto::v1::{StatusReason, TaskState};

use crate::common::*;

/// The run directory of the container whose sandbox is `sandbox` (the
/// sandbox's last component is the container id).
fn run_dir(work_dir: &Path, sandbox: &Path) -> PathBuf {
    work_dir
        .join("containers")
        .join(sandbox.file_name().unwrap())
}

async fn pid_of(agent: &TestAgent, task_id: &str) -> i32 {
    let t = agent.task_state(task_id).await.unwrap();
    t["pid"].as_i64().expect("a running task has a pid") as i32
}

#[tokio::test]
async fn a_restarted_agent_keeps_its_running_tasks_and_reports_those_that_ended() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = TestAgent::start(config(&master, dir.path())).await;
    let id = first.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![
            shell_task("keeps-running", RUN_UNTIL_SANDBOX_GONE),
            shell_task(
                "ends-meanwhile",
                "while [ ! -e go ]; do sleep 0.05; done; echo bye; exit 7",
            ),
        ],
    );
    master
        .wait_update("keeps-running", TaskState::TaskRunning)
        .await;
    master
        .wait_update("ends-meanwhile", TaskState::TaskRunning)
        .await;
    let running_pid = pid_of(&first, "keeps-running").await;
    let ending_sandbox = first.sandbox("ends-meanwhile").await;
    first.stop().await;

    // While the agent is away, one task ends.
    std::fs::write(ending_sandbox.join("go"), b"").unwrap();
    let status_file = run_dir(dir.path(), &ending_sandbox).join("status.json");
    eventually("the task to end while the agent is down", async || {
        status_file.exists().then_some(())
    })
    .await;
    assert!(
        process_alive(running_pid),
        "the agent's shutdown left the task running"
    );

    let second = TestAgent::start(config(&master, dir.path())).await;
    let reg = master.wait_registration(2).await;
    assert_eq!(reg.info.as_ref().unwrap().id, id, "reregisters with its id");
    let mut reported: Vec<(String, TaskState)> = reg
        .tasks
        .iter()
        .map(|t| (t.task_id.clone(), t.state()))
        .collect();
    reported.sort();
    assert_eq!(
        reported,
        [
            ("ends-meanwhile".to_string(), TaskState::TaskFailed),
            ("keeps-running".to_string(), TaskState::TaskRunning),
        ],
        "both tasks, in the latest state the agent knows"
    );
    assert_eq!(reg.frameworks.len(), 1);

    let failed = master
        .wait_update("ends-meanwhile", TaskState::TaskFailed)
        .await;
    assert_eq!(failed.exit_code, Some(7));
    assert!(failed.message.contains("exit code 7"), "{}", failed.message);
    assert_eq!(failed.agent_id, id);

    // The running task is the same process, still watched: the new agent
    // can kill it.
    assert_eq!(pid_of(&second, "keeps-running").await, running_pid);
    assert_eq!(
        second.task_state("keeps-running").await.unwrap()["state"],
        "TASK_RUNNING"
    );
    master.kill("f1", "keeps-running", None);
    master
        .wait_update("keeps-running", TaskState::TaskKilled)
        .await;
    assert!(!process_alive(running_pid));
    second.stop().await;
}

#[tokio::test]
async fn a_task_that_ends_after_the_restart_is_reported() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = TestAgent::start(config(&master, dir.path())).await;
    first.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![shell_task(
            "later",
            "while [ ! -e go ]; do sleep 0.05; done; exit 0",
        )],
    );
    master.wait_update("later", TaskState::TaskRunning).await;
    let sandbox = first.sandbox("later").await;
    first.stop().await;

    let second = TestAgent::start(config(&master, dir.path())).await;
    master.wait_registration(2).await;
    eventually("the recovered task in /state", async || {
        (second.task_state("later").await?["state"] == "TASK_RUNNING").then_some(())
    })
    .await;
    std::fs::write(sandbox.join("go"), b"").unwrap();
    let finished = master.wait_update("later", TaskState::TaskFinished).await;
    assert_eq!(finished.exit_code, Some(0));
    second.stop().await;
}

#[tokio::test]
async fn tasks_of_frameworks_that_do_not_checkpoint_are_killed_at_recovery() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = TestAgent::start(config(&master, dir.path())).await;
    first.wait_id().await;
    let mut fw = framework("volatile");
    fw.checkpoint = false;
    master.launch(&fw, vec![shell_task("t1", RUN_UNTIL_SANDBOX_GONE)]);
    master.wait_update("t1", TaskState::TaskRunning).await;
    let pid = pid_of(&first, "t1").await;
    first.stop().await;
    assert!(process_alive(pid));

    let second = TestAgent::start(config(&master, dir.path())).await;
    let failed = master.wait_update("t1", TaskState::TaskFailed).await;
    assert_eq!(failed.reason(), StatusReason::ReasonAgentRestarted);
    eventually("the task to be killed", async || {
        (!process_alive(pid)).then_some(())
    })
    .await;
    second.stop().await;
}

#[tokio::test]
async fn a_task_whose_supervisor_vanished_is_reported_failed() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = TestAgent::start(config(&master, dir.path())).await;
    first.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![shell_task("orphan", RUN_UNTIL_SANDBOX_GONE)],
    );
    master.wait_update("orphan", TaskState::TaskRunning).await;
    let task_pid = pid_of(&first, "orphan").await;
    let sandbox = first.sandbox("orphan").await;
    first.stop().await;

    // Someone kills the supervisor (not the task) while the agent is down.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_dir(dir.path(), &sandbox).join("supervisor.json")).unwrap(),
    )
    .unwrap();
    let supervisor = record["supervisor"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the supervisor to die", async || {
        (!process_alive(supervisor)).then_some(())
    })
    .await;

    let second = TestAgent::start(config(&master, dir.path())).await;
    let failed = master.wait_update("orphan", TaskState::TaskFailed).await;
    assert!(failed.message.contains("supervisor"), "{}", failed.message);
    assert_eq!(failed.reason(), StatusReason::ReasonExecutorTerminated);
    // The task it left behind does not run on unaccounted.
    eventually("the orphaned task to be killed", async || {
        (!process_alive(task_pid)).then_some(())
    })
    .await;
    second.stop().await;
}

#[tokio::test]
async fn unacknowledged_updates_survive_a_restart() {
    let master = FakeMaster::start().await;
    master.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let first = TestAgent::start(config(&master, dir.path())).await;
    first.wait_id().await;
    master.launch(&framework("f1"), vec![shell_task("t1", "exit 5")]);
    let starting = master.wait_update("t1", TaskState::TaskStarting).await;
    eventually("the task to end", async || {
        (first.task_state("t1").await?["state"] == "TASK_FAILED").then_some(())
    })
    .await;
    first.stop().await;

    let second = TestAgent::start(config(&master, dir.path())).await;
    let reg = master.wait_registration(2).await;
    assert_eq!(reg.tasks.len(), 1);
    assert_eq!(reg.tasks[0].state(), TaskState::TaskFailed);
    // The same update (same uuid) comes again, then the rest in order.
    master
        .wait_for("STARTING again on the new session", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Updates { session: 2, statuses } if statuses.iter().any(|x| x.uuid == starting.uuid)))
                .then_some(())
        })
        .await;
    master.set_auto_ack(true);
    master.acknowledge(&starting);
    let failed = master.wait_update("t1", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(5));
    let states: Vec<TaskState> = updates_of(&master.seen(), "t1")
        .iter()
        .map(|s| s.state())
        .filter(|s| *s != TaskState::TaskStarting)
        .collect();
    assert_eq!(states[0], TaskState::TaskRunning);
    second.stop().await;
}
