//! The agent as its own process, killed with SIGKILL and started again.

use std::path::{Path, PathBuf};

use agora_proto::v1::TaskState;
use tokio::process::{Child, Command};

use crate::common::*;

pub(crate) fn spawn_agent(master: &FakeMaster, work_dir: &Path) -> Child {
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

#[tokio::test]
async fn health_checks_resume_after_the_agent_is_killed_and_restarted() {
    use crate::t80_health::{free_port, health_updates, http_check, wait_health, web_task};
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn_agent(&master, dir.path());
    master.wait_registration(1).await;
    // A grace period far longer than the test may take: after the restart,
    // a failure counts only if the agent remembers that the check passed.
    let mut task = web_task("web", free_port(), 0.0);
    task.health_checks = vec![http_check("/health", 2, true, 600.0)];
    master.launch(&framework("f1"), vec![task]);
    wait_health(&master, "web", true).await;
    let (sandbox, run_dir) = container_dirs(dir.path(), "web");
    let pid = task_pid(&run_dir);

    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    let _second = spawn_agent(&master, dir.path());
    let reg = master.wait_registration(2).await;
    let reported = &reg.tasks[0];
    assert_eq!(
        reported.status.as_ref().and_then(|s| s.healthy),
        Some(true),
        "the agent reregisters with the task's health"
    );

    std::fs::write(sandbox.join("stop"), b"").unwrap();
    let unhealthy = wait_health(&master, "web", false).await;
    let killed = master.wait_update("web", TaskState::TaskKilled).await;
    assert!(
        killed.message.contains("failed 2 times in a row"),
        "{}",
        killed.message
    );
    // Both came from the restarted agent, whose checks resumed.
    let session_of = |uuid: &[u8]| {
        master.seen().iter().find_map(|s| match s {
            Seen::Updates { session, statuses } if statuses.iter().any(|x| x.uuid == uuid) => {
                Some(*session)
            }
            _ => None,
        })
    };
    assert_eq!(session_of(&unhealthy.uuid), Some(2));
    assert_eq!(session_of(&killed.uuid), Some(2));
    let changes: Vec<Option<bool>> = health_updates(&master, "web")
        .iter()
        .filter(|s| s.state() == TaskState::TaskRunning)
        .map(|s| s.healthy)
        .collect();
    assert_eq!(
        changes,
        [Some(true), Some(false)],
        "healthy is not reported twice"
    );
    eventually("the task to be gone", async || {
        (!process_alive(pid)).then_some(())
    })
    .await;
}
