//! The agent as its own process, killed with SIGKILL and started again.

use std::path::{Path, PathBuf};

use agora_proto::v1::TaskState;
use tokio::process::{Child, Command};

use crate::common::*;

fn spawn_agent(master: &FakeMaster, work_dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_agora-test-agent"))
        .arg(master.addr.to_string())
        .arg(work_dir)
        .arg(env!("CARGO_BIN_EXE_agora-task-supervisor"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the test agent starts")
}

/// The sandbox and run directory of a task's only container.
fn container_dirs(work_dir: &Path, task_id: &str) -> (PathBuf, PathBuf) {
    let tasks = work_dir.join("sandboxes/f1").join(task_id);
    let cid = std::fs::read_dir(&tasks)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    (tasks.join(&cid), work_dir.join("containers").join(&cid))
}

fn task_pid(run_dir: &Path) -> i32 {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("supervisor.json")).unwrap()).unwrap();
    record["task"]["pid"].as_i64().unwrap() as i32
}

#[tokio::test]
async fn an_agent_killed_with_sigkill_keeps_its_tasks_and_reports_their_real_end() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn_agent(&master, dir.path());
    let id = master.wait_registration(1).await;
    assert_eq!(id.info.unwrap().id, "");
    master
        .wait_for("the agent to be registered", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Heartbeat))
                .then_some(())
        })
        .await;
    master.launch(
        &framework("f1"),
        vec![
            shell_task("keeps-running", RUN_UNTIL_SANDBOX_GONE),
            shell_task(
                "ends-meanwhile",
                "while [ ! -e go ]; do sleep 0.05; done; exit 7",
            ),
        ],
    );
    master
        .wait_update("keeps-running", TaskState::TaskRunning)
        .await;
    master
        .wait_update("ends-meanwhile", TaskState::TaskRunning)
        .await;
    let (_, running_dir) = container_dirs(dir.path(), "keeps-running");
    let running_pid = task_pid(&running_dir);
    let (ending_sandbox, ending_dir) = container_dirs(dir.path(), "ends-meanwhile");

    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    std::fs::write(ending_sandbox.join("go"), b"").unwrap();
    eventually("the task to end while the agent is dead", async || {
        ending_dir.join("status.json").exists().then_some(())
    })
    .await;
    assert!(
        process_alive(running_pid),
        "SIGKILL of the agent left the task running"
    );

    let _second = spawn_agent(&master, dir.path());
    let reg = master.wait_registration(2).await;
    assert_eq!(reg.info.unwrap().id, "fake-S1", "reregisters with its id");
    assert_eq!(reg.tasks.len(), 2);
    let failed = master
        .wait_update("ends-meanwhile", TaskState::TaskFailed)
        .await;
    assert_eq!(failed.exit_code, Some(7));

    // The surviving task is still under the agent's control.
    master.kill("f1", "keeps-running", None);
    master
        .wait_update("keeps-running", TaskState::TaskKilled)
        .await;
    eventually("the task to be killed", async || {
        (!process_alive(running_pid)).then_some(())
    })
    .await;
}
