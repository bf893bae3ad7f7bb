//! `agora execute` against the fake master, which plays the master and the
//! agent: e1x the happy path, e2x tasks that do not finish, e3x
//! cancellation, e4x the master misbehaving.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use agora_execute::{ExecuteConfig, ExecuteError, Outcome, run, run_with_cancel};
use agora_proto::Resources;
use agora_proto::v1::{StatusReason, TaskInfo, TaskState, TaskStatus, call};
use agora_scheduler::testing::{FakeMaster, offer, update};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// What `run` writes, readable while it runs. (A std mutex is fine here:
/// held for a copy, never across an await.)
#[derive(Clone, Default)]
struct Output(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Output {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until a line contains `text`; panics after [`WAIT`].
    async fn wait_for_line(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line with {text:?} within {WAIT:?}; output: {:#?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn config(master: &FakeMaster, resources: &str) -> ExecuteConfig {
    ExecuteConfig {
        resources: Resources::parse(resources).unwrap(),
        env: vec![("GREETING".into(), "hello".into())],
        ..ExecuteConfig::new(master.address(), "hello", "echo $GREETING")
    }
}

fn spawn_run(
    config: ExecuteConfig,
    cancel: CancellationToken,
) -> (Output, JoinHandle<Result<Outcome, ExecuteError>>) {
    let output = Output::default();
    let mut out = output.clone();
    let handle = tokio::spawn(async move { run_with_cancel(config, &mut out, cancel).await });
    (output, handle)
}

async fn finished(
    handle: JoinHandle<Result<Outcome, ExecuteError>>,
) -> Result<Outcome, ExecuteError> {
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("run ends")
        .expect("run does not panic")
}

/// Waits for the launch and returns the task.
async fn launched(master: &FakeMaster) -> (Vec<String>, TaskInfo) {
    master
        .wait_for_call("accept", |c| match c {
            call::Call::Accept(a) => {
                let Some(agora_proto::v1::operation::Operation::Launch(l)) =
                    &a.operations.first()?.operation
                else {
                    return None;
                };
                Some((a.offer_ids.clone(), l.task_infos.first()?.clone()))
            }
            _ => None,
        })
        .await
}

fn with_exit_code(mut status: TaskStatus, code: i32) -> TaskStatus {
    status.exit_code = Some(code);
    status
}

async fn teardown_sent(master: &FakeMaster) {
    master
        .wait_for_call("teardown", |c| {
            matches!(c, call::Call::Teardown(_)).then_some(())
        })
        .await;
}

#[tokio::test]
async fn e10_runs_a_task_to_the_finish() {
    let master = FakeMaster::start().await;
    let (output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), CancellationToken::new());
    master.wait_for_connected(Some("fake-0001")).await;
    let framework = &master.subscriptions()[0];
    assert_eq!(framework.name, "agora-execute");
    assert_eq!(framework.failover_timeout, 0.0);
    assert!(framework.checkpoint);

    // Too small (cpus), too small (mem): declined for 5 s, "waiting" said once.
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:0.05;mem:1024")]);
    master.send_offers(vec![offer("o2", "a1", "host1", "cpus:8;mem:16")]);
    let declined = master
        .wait_for_calls("two declines", 2, |c| match c {
            call::Call::Decline(d) => {
                Some((d.offer_ids.clone(), d.filters.unwrap().refuse_seconds))
            }
            _ => None,
        })
        .await;
    assert_eq!(declined[0], (vec!["o1".to_string()], Some(5.0)));
    assert_eq!(declined[1], (vec!["o2".to_string()], Some(5.0)));

    master.send_offers(vec![offer(
        "o3",
        "a2",
        "host2",
        "cpus:4;mem:4096;ports:[31000-32000]",
    )]);
    let (offer_ids, task) = launched(&master).await;
    assert_eq!(offer_ids, ["o3"]);
    // Exactly what was asked: no more cpus or mem, no ports.
    assert_eq!(
        Resources::from_proto(&task.resources).unwrap(),
        Resources::parse("cpus:0.1;mem:32").unwrap()
    );
    assert_eq!(task.name, "hello");
    assert!(task.task_id.starts_with("hello-"), "{}", task.task_id);
    assert_eq!(task.agent_id, "a2");
    let command = task.command.clone().unwrap();
    assert_eq!(
        (command.shell, command.value.as_str()),
        (Some(true), "echo $GREETING")
    );
    let var = &command.environment.unwrap().variables[0];
    assert_eq!(
        (var.name.as_str(), var.value.as_str()),
        ("GREETING", "hello")
    );
    // No more offers wanted.
    master
        .wait_for_call("suppress", |c| {
            matches!(c, call::Call::Suppress(_)).then_some(())
        })
        .await;

    let id = task.task_id.clone();
    master.send_updates(vec![update(
        &id,
        "a2",
        TaskState::TaskStarting,
        Some(1),
        "",
    )]);
    master.send_updates(vec![
        update(&id, "a2", TaskState::TaskRunning, Some(2), ""),
        // Resent: printed once.
        update(&id, "a2", TaskState::TaskRunning, Some(2), ""),
    ]);
    output.wait_for_line("TASK_RUNNING").await;
    master.send_updates(vec![with_exit_code(
        update(
            &id,
            "a2",
            TaskState::TaskFinished,
            Some(3),
            "Command exited with status 0",
        ),
        0,
    )]);
    let outcome = finished(handle).await.unwrap();
    assert_eq!(outcome.task_id, id);
    assert_eq!(outcome.agent_id, "a2");
    assert_eq!(outcome.final_state, TaskState::TaskFinished);
    assert_eq!(outcome.message, "Command exited with status 0");
    assert_eq!(outcome.exit_code, 0);

    assert_eq!(
        output.lines(),
        [
            "Subscribed as framework fake-0001".to_string(),
            "Waiting for an offer with cpus:0.1;mem:32 ...".to_string(),
            format!("Launching task {id} with cpus:0.1;mem:32 on agent a2 (host2)"),
            format!("{id} TASK_STAGING"),
            format!("{id} TASK_STARTING"),
            format!("{id} TASK_RUNNING on agent a2 (host2)"),
            format!("{id} TASK_FINISHED: Command exited with status 0"),
        ]
    );
    // Every update acknowledged with its uuid, then the framework torn down.
    let acked: Vec<u8> = master
        .wait_for_calls("acknowledgements", 3, |c| match c {
            call::Call::Acknowledge(a) => {
                Some(a.acks.iter().map(|a| a.uuid[0]).collect::<Vec<_>>())
            }
            _ => None,
        })
        .await
        .concat();
    assert_eq!(acked, [1, 2, 2, 3]);
    teardown_sent(&master).await;
    let calls = master.calls();
    assert!(matches!(
        calls.last().unwrap().call,
        Some(call::Call::Teardown(_))
    ));
}

#[tokio::test]
async fn e11_run_without_cancel_and_a_docker_image() {
    let master = FakeMaster::start().await;
    let mut config = config(&master, "cpus:1;mem:128");
    config.docker_image = Some("alpine:3".into());
    let output = Output::default();
    let mut out = output.clone();
    let handle = tokio::spawn(async move { run(config, &mut out).await });
    master.wait_for_connected(Some("fake-0001")).await;
    master.send_offers(vec![offer("o1", "a1", "", "cpus:1;mem:128")]);
    let (_, task) = launched(&master).await;
    assert_eq!(task.container.unwrap().docker.unwrap().image, "alpine:3");
    master.send_updates(vec![update(
        &task.task_id,
        "a1",
        TaskState::TaskFinished,
        Some(1),
        "",
    )]);
    let outcome = finished(handle).await.unwrap();
    assert_eq!(outcome.exit_code, 0);
    // Without a hostname, none is printed.
    assert!(output.lines().contains(&format!(
        "Launching task {} with cpus:1;mem:128 on agent a1",
        task.task_id
    )));
}

#[tokio::test]
async fn e20_a_failed_task_exits_non_zero_with_the_message() {
    let master = FakeMaster::start().await;
    let (output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), CancellationToken::new());
    master.wait_for_connected(Some("fake-0001")).await;
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:1;mem:128")]);
    let (_, task) = launched(&master).await;
    let mut failed = with_exit_code(
        update(
            &task.task_id,
            "a1",
            TaskState::TaskFailed,
            Some(9),
            "Command exited with status 3",
        ),
        3,
    );
    failed.set_reason(StatusReason::ReasonCommandExecutorFailed);
    master.send_updates(vec![
        update(&task.task_id, "a1", TaskState::TaskRunning, Some(8), ""),
        failed,
    ]);
    let outcome = finished(handle).await.unwrap();
    assert_eq!(outcome.final_state, TaskState::TaskFailed);
    assert_eq!(outcome.message, "Command exited with status 3");
    assert_eq!(outcome.exit_code, 3);
    assert_eq!(
        output.lines().last().unwrap(),
        &format!(
            "{} TASK_FAILED: Command exited with status 3 (REASON_COMMAND_EXECUTOR_FAILED)",
            task.task_id
        )
    );
    teardown_sent(&master).await;
}

#[tokio::test]
async fn e21_an_invalid_launch_exits_non_zero_with_the_masters_reason() {
    let master = FakeMaster::start().await;
    let (output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), CancellationToken::new());
    master.wait_for_connected(Some("fake-0001")).await;
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:1;mem:128")]);
    let (_, task) = launched(&master).await;
    // The master's own update: no uuid, nothing to acknowledge.
    let mut error = update(
        &task.task_id,
        "a1",
        TaskState::TaskError,
        None,
        "the task uses more cpus than offered",
    );
    error.set_reason(StatusReason::ReasonTaskInvalid);
    master.send_updates(vec![error]);
    let outcome = finished(handle).await.unwrap();
    assert_eq!(outcome.final_state, TaskState::TaskError);
    assert_eq!(outcome.message, "the task uses more cpus than offered");
    assert_ne!(outcome.exit_code, 0);
    assert!(
        output
            .lines()
            .last()
            .unwrap()
            .ends_with("TASK_ERROR: the task uses more cpus than offered (REASON_TASK_INVALID)")
    );
    teardown_sent(&master).await;
    assert!(
        !master
            .calls()
            .iter()
            .any(|c| matches!(c.call, Some(call::Call::Acknowledge(_)))),
        "updates without a uuid are not acknowledged"
    );
}

#[tokio::test]
async fn e22_a_killed_task_exits_non_zero() {
    let master = FakeMaster::start().await;
    let (_output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), CancellationToken::new());
    master.wait_for_connected(Some("fake-0001")).await;
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:1;mem:128")]);
    let (_, task) = launched(&master).await;
    master.send_updates(vec![update(
        &task.task_id,
        "a1",
        TaskState::TaskKilled,
        Some(1),
        "killed by the operator",
    )]);
    let outcome = finished(handle).await.unwrap();
    assert_eq!(outcome.final_state, TaskState::TaskKilled);
    assert_eq!(outcome.exit_code, 1);
}

#[tokio::test]
async fn e23_a_launch_on_a_vanished_offer_is_retried_on_the_next_offer() {
    let master = FakeMaster::start().await;
    let (output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), CancellationToken::new());
    master.wait_for_connected(Some("fake-0001")).await;
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:1;mem:128")]);
    let (_, task) = launched(&master).await;
    master
        .wait_for_call("suppress", |c| {
            matches!(c, call::Call::Suppress(_)).then_some(())
        })
        .await;
    // The offer was rescinded before the master saw the accept.
    let mut lost = update(
        &task.task_id,
        "a1",
        TaskState::TaskLost,
        None,
        "offer o1 is gone",
    );
    lost.set_reason(StatusReason::ReasonInvalidOffers);
    master.send_updates(vec![lost]);
    // Offers are asked for again, and the same task is launched on the next.
    master
        .wait_for_call("revive", |c| {
            matches!(c, call::Call::Revive(_)).then_some(())
        })
        .await;
    master.send_offers(vec![offer("o2", "a2", "host2", "cpus:1;mem:128")]);
    let launches = master
        .wait_for_calls("a second accept", 2, |c| match c {
            call::Call::Accept(a) => Some(a.offer_ids.clone()),
            _ => None,
        })
        .await;
    assert_eq!(launches[1], ["o2"]);
    master.send_updates(vec![update(
        &task.task_id,
        "a2",
        TaskState::TaskFinished,
        Some(1),
        "",
    )]);
    let outcome = finished(handle).await.unwrap();
    assert_eq!((outcome.exit_code, outcome.agent_id.as_str()), (0, "a2"));
    let id = &task.task_id;
    let lines = output.lines();
    assert_eq!(
        lines[1..],
        [
            format!("Launching task {id} with cpus:0.1;mem:32 on agent a1 (host1)"),
            format!("{id} TASK_STAGING"),
            format!("{id} TASK_LOST: offer o1 is gone (REASON_INVALID_OFFERS)"),
            format!("The offer was not valid any more; waiting for another one to launch {id}"),
            format!("Launching task {id} with cpus:0.1;mem:32 on agent a2 (host2)"),
            format!("{id} TASK_STAGING"),
            format!("{id} TASK_FINISHED"),
        ]
    );
}

#[tokio::test]
async fn e30_cancel_before_launch_tears_down() {
    let master = FakeMaster::start().await;
    let cancel = CancellationToken::new();
    let (output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), cancel.clone());
    output.wait_for_line("Subscribed").await;
    cancel.cancel();
    let err = finished(handle).await.unwrap_err();
    assert!(
        matches!(err, ExecuteError::Cancelled { task_id: None, .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), 130);
    teardown_sent(&master).await;
}

#[tokio::test]
async fn e31_cancel_after_launch_kills_the_task_then_tears_down() {
    let master = FakeMaster::start().await;
    let cancel = CancellationToken::new();
    let (output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), cancel.clone());
    master.wait_for_connected(Some("fake-0001")).await;
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:1;mem:128")]);
    let (_, task) = launched(&master).await;
    master.send_updates(vec![update(
        &task.task_id,
        "a1",
        TaskState::TaskRunning,
        Some(1),
        "",
    )]);
    output.wait_for_line("TASK_RUNNING").await;
    cancel.cancel();
    let (killed, agent) = master
        .wait_for_call("kill", |c| match c {
            call::Call::Kill(k) => Some((k.task_id.clone(), k.agent_id.clone())),
            _ => None,
        })
        .await;
    assert_eq!(
        (killed.as_str(), agent.as_str()),
        (task.task_id.as_str(), "a1")
    );
    assert!(
        !master
            .calls()
            .iter()
            .any(|c| matches!(c.call, Some(call::Call::Teardown(_)))),
        "waits for the kill before tearing down"
    );
    master.send_updates(vec![update(
        &task.task_id,
        "a1",
        TaskState::TaskKilled,
        Some(2),
        "",
    )]);
    let err = finished(handle).await.unwrap_err();
    let ExecuteError::Cancelled {
        task_id,
        last_state,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(task_id.as_deref(), Some(task.task_id.as_str()));
    assert_eq!(*last_state, Some(TaskState::TaskKilled));
    teardown_sent(&master).await;
    let lines = output.lines();
    assert_eq!(
        lines[lines.len() - 2],
        format!("Cancelled: killing task {}", task.task_id)
    );
    assert_eq!(
        lines[lines.len() - 1],
        format!("{} TASK_KILLED", task.task_id)
    );
}

#[tokio::test]
async fn e32_dropping_the_run_disconnects_the_framework() {
    let master = FakeMaster::start().await;
    let (_output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), CancellationToken::new());
    master.wait_for_connected(Some("fake-0001")).await;
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:1;mem:128")]);
    launched(&master).await;
    handle.abort();
    // The driver goes with the future; with no failover timeout the master
    // then removes the framework and kills the task.
    master.wait_for_connected(None).await;
}

#[tokio::test]
async fn e40_keeps_retrying_while_the_master_is_unreachable() {
    let mut master = FakeMaster::start().await;
    // Same address, nobody listening yet.
    master.stop().await;
    let (output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), CancellationToken::new());
    let note = output.wait_for_line("Cannot reach the master").await;
    assert!(note.contains("retrying in"), "{note}");
    master.restart().await;
    output
        .wait_for_line("Subscribed as framework fake-0001")
        .await;
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:1;mem:128")]);
    let (_, task) = launched(&master).await;
    master.send_updates(vec![update(
        &task.task_id,
        "a1",
        TaskState::TaskFinished,
        Some(1),
        "",
    )]);
    assert_eq!(finished(handle).await.unwrap().exit_code, 0);
}

#[tokio::test]
async fn e41_a_refused_subscription_is_an_error() {
    let master = FakeMaster::start().await;
    master.refuse_subscriptions(Some("role `*` is not allowed for agora-execute"));
    let (output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), CancellationToken::new());
    let err = finished(handle).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Stopped(_)), "{err}");
    assert!(err.to_string().contains("is not allowed"), "{err}");
    assert_ne!(err.exit_code(), 0);
    output.wait_for_line("The master says: role").await;
}

#[tokio::test]
async fn e42_after_a_reconnection_the_task_is_reconciled() {
    let master = FakeMaster::start().await;
    let (output, handle) = spawn_run(config(&master, "cpus:0.1;mem:32"), CancellationToken::new());
    master.wait_for_connected(Some("fake-0001")).await;
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:1;mem:128")]);
    let (_, task) = launched(&master).await;
    master.break_streams();
    output.wait_for_line("Disconnected from the master").await;
    output
        .wait_for_line("Resubscribed as framework fake-0001")
        .await;
    let asked = master
        .wait_for_call("reconcile", |c| match c {
            call::Call::Reconcile(r) => Some(r.tasks.clone()),
            _ => None,
        })
        .await;
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].task_id.as_str(), asked[0].agent_id.as_str()),
        (task.task_id.as_str(), "a1")
    );
    // The master answers, then resends the final update it kept.
    let mut answer = update(&task.task_id, "a1", TaskState::TaskRunning, None, "");
    answer.set_reason(StatusReason::ReasonReconciliation);
    master.send_updates(vec![answer]);
    master.send_updates(vec![update(
        &task.task_id,
        "a1",
        TaskState::TaskFinished,
        Some(4),
        "",
    )]);
    assert_eq!(finished(handle).await.unwrap().exit_code, 0);
    let running = output
        .lines()
        .iter()
        .filter(|l| l.contains("TASK_RUNNING"))
        .count();
    assert_eq!(running, 1);
}

#[tokio::test]
async fn e43_invalid_flags_fail_before_any_connection() {
    let master = FakeMaster::start().await;
    let mut config = config(&master, "cpus:0.1");
    let mut out = Vec::new();
    let err = run(config.clone(), &mut out).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::InvalidConfig {
                field: "resources",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), 64);
    config.resources = Resources::parse("cpus:0.1;mem:32").unwrap();
    config.command = String::new();
    let err = run(config, &mut out).await.unwrap_err();
    assert!(err.to_string().contains("--command"), "{err}");
    assert!(out.is_empty());
    assert!(master.subscriptions().is_empty());
}
