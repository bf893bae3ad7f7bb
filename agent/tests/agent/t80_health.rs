//! Health and readiness checks run by the agent against real task
//! processes: busybox `httpd` in the task, checks over real sockets.

use std::path::Path;

use agora_proto::v1::health_check::{HttpCheckInfo, TcpCheckInfo, Type};
use agora_proto::v1::{
    CommandInfo, Environment, HealthCheck, ReadinessCheck, StatusReason, TaskInfo, TaskState,
    TaskStatus, environment::Variable,
};

use crate::common::*;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The busybox the tasks serve HTTP with.
pub fn busybox() -> &'static str {
    for path in ["/usr/bin/busybox", "/bin/busybox"] {
        if Path::new(path).exists() {
            return path;
        }
    }
    panic!("these tests need busybox (Debian: busybox-static; scripts/test installs it)");
}

/// A task that serves `www/` of its sandbox over HTTP on 127.0.0.1:$PORT0
/// after `wait` seconds, until a file `stop` appears in its sandbox; then
/// it runs on without a server until its sandbox is removed.
pub fn web_task(id: &str, port: u16, wait: f64) -> TaskInfo {
    let script = format!(
        "mkdir -p www && echo ok > www/health; sleep {wait}; \
         {bb} httpd -f -p 127.0.0.1:$PORT0 -h www & pid=$!; \
         while [ ! -e stop ]; do sleep 0.05; done; kill $pid; \
         while [ -e \"$AGORA_SANDBOX\" ]; do sleep 0.05; done",
        bb = busybox()
    );
    let mut t = shell_task(id, &script);
    t.resources = agora_proto::Resources::parse(&format!("cpus:0.1;mem:32;ports:[{port}-{port}]"))
        .unwrap()
        .to_proto();
    t
}

/// An HTTP check of `path` on the task's first port, every 0.2 s, with no
/// delay.
pub fn http_check(path: &str, failures: u32, kill: bool, grace: f64) -> HealthCheck {
    HealthCheck {
        r#type: Type::Http as i32,
        http: Some(HttpCheckInfo {
            path: path.into(),
            port_index: Some(0),
            ..Default::default()
        }),
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.2),
        timeout_seconds: Some(2.0),
        consecutive_failures: Some(failures),
        grace_period_seconds: Some(grace),
        kill_on_failure: Some(kill),
        ..Default::default()
    }
}

/// The updates of a task that report a change of health.
pub fn health_updates(master: &FakeMaster, task_id: &str) -> Vec<TaskStatus> {
    updates_of(&master.seen(), task_id)
        .into_iter()
        .filter(|s| s.reason() == StatusReason::ReasonTaskHealthCheckStatusUpdated)
        .collect()
}

/// Waits for a TASK_RUNNING update of `task_id` with `healthy`.
pub async fn wait_health(master: &FakeMaster, task_id: &str, healthy: bool) -> TaskStatus {
    master
        .wait_for(
            &format!("{task_id} to be reported healthy={healthy}"),
            |seen| {
                updates_of(seen, task_id).into_iter().find(|s| {
                    s.state() == TaskState::TaskRunning
                        && s.reason() == StatusReason::ReasonTaskHealthCheckStatusUpdated
                        && s.healthy == Some(healthy)
                })
            },
        )
        .await
}

#[tokio::test]
async fn an_http_check_goes_healthy_then_unhealthy_and_kills_the_task_with_the_reason() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let port = free_port();
    let mut task = web_task("web", port, 0.0);
    task.health_checks = vec![http_check("/health", 2, true, 30.0)];
    master.launch(&framework("f1"), vec![task]);

    let running = master.wait_update("web", TaskState::TaskRunning).await;
    assert_eq!(running.healthy, None, "no verdict before the first check");
    let healthy = wait_health(&master, "web", true).await;
    assert_eq!(
        healthy.message,
        format!("The health check (GET http://127.0.0.1:{port}/health) passed: answered 200 OK")
    );
    let t = agent.task_state("web").await.unwrap();
    assert_eq!(t["healthy"], true);
    assert!(
        agent.state().await["health_checks"]["checks_passed"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // The server stops: unhealthy at the first failure, killed at the second.
    std::fs::write(agent.sandbox("web").await.join("stop"), b"").unwrap();
    let unhealthy = wait_health(&master, "web", false).await;
    assert!(
        unhealthy.message.contains("failed: cannot connect"),
        "{}",
        unhealthy.message
    );
    let killed = master.wait_update("web", TaskState::TaskKilled).await;
    assert_eq!(
        killed.reason(),
        StatusReason::ReasonTaskHealthCheckStatusUpdated
    );
    assert_eq!(killed.healthy, Some(false));
    assert!(
        killed.message.starts_with(&format!(
            "Task killed because its health check (GET http://127.0.0.1:{port}/health) failed 2 \
             times in a row (last: cannot connect"
        )),
        "{}",
        killed.message
    );
    // Healthy, then unhealthy, reported once each; nothing after the kill.
    let changes: Vec<Option<bool>> = health_updates(&master, "web")
        .iter()
        .filter(|s| s.state() == TaskState::TaskRunning)
        .map(|s| s.healthy)
        .collect();
    assert_eq!(changes, [Some(true), Some(false)]);
    let states: Vec<TaskState> = updates_of(&master.seen(), "web")
        .iter()
        .map(|s| s.state())
        .collect();
    assert_eq!(states.last(), Some(&TaskState::TaskKilled));
    agent.stop().await;
}

#[tokio::test]
async fn tcp_checks_and_checks_that_only_report() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let port = free_port();
    let tcp = |port: Option<u32>| HealthCheck {
        r#type: Type::Tcp as i32,
        tcp: Some(TcpCheckInfo {
            port,
            port_index: None,
        }),
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.2),
        timeout_seconds: Some(1.0),
        consecutive_failures: Some(1),
        grace_period_seconds: Some(0.0),
        kill_on_failure: Some(false),
        ..Default::default()
    };
    let mut up = web_task("up", port, 0.0);
    up.health_checks = vec![tcp(None)];
    let mut down = shell_task("down", RUN_UNTIL_SANDBOX_GONE);
    down.health_checks = vec![tcp(Some(u32::from(free_port())))];
    master.launch(&framework("f1"), vec![up, down]);

    let ok = wait_health(&master, "up", true).await;
    assert!(
        ok.message.contains(&format!("TCP 127.0.0.1:{port}")),
        "{}",
        ok.message
    );
    let bad = wait_health(&master, "down", false).await;
    assert!(bad.message.contains("cannot connect"), "{}", bad.message);
    // Without kill_on_failure the task keeps running, unhealthy, and its
    // failures are not reported again and again.
    eventually("more failed checks", async || {
        let s = agent.state().await;
        (s["health_checks"]["checks_failed"].as_u64()? >= 5).then_some(())
    })
    .await;
    assert_eq!(health_updates(&master, "down").len(), 1);
    assert_eq!(
        agent.task_state("down").await.unwrap()["state"],
        "TASK_RUNNING"
    );
    agent.stop().await;
}

#[tokio::test]
async fn command_checks_run_in_the_sandbox_with_the_tasks_environment() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let command = |value: &str, timeout: f64| HealthCheck {
        r#type: Type::Command as i32,
        command: Some(CommandInfo {
            value: value.into(),
            environment: Some(Environment {
                variables: vec![Variable {
                    name: "CHECK_VAR".into(),
                    value: "x".into(),
                }],
            }),
            ..Default::default()
        }),
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.2),
        timeout_seconds: Some(timeout),
        grace_period_seconds: Some(0.0),
        kill_on_failure: Some(false),
        ..Default::default()
    };
    let mut task = shell_task("cmd", RUN_UNTIL_SANDBOX_GONE);
    task.command.as_mut().unwrap().environment = Some(Environment {
        variables: vec![Variable {
            name: "GREETING".into(),
            value: "hi".into(),
        }],
    });
    task.health_checks = vec![command(
        "echo checking; test -e ok && test \"$GREETING\" = hi && test \"$CHECK_VAR\" = x \
         && test \"$AGORA_TASK_ID\" = cmd",
        5.0,
    )];
    let mut hangs = shell_task("hangs", RUN_UNTIL_SANDBOX_GONE);
    hangs.health_checks = vec![command("echo $$ > check.pid; exec sleep 30", 0.5)];
    master.launch(&framework("f1"), vec![task, hangs]);

    let bad = wait_health(&master, "cmd", false).await;
    assert!(
        bad.message
            .ends_with("failed: the command exited with code 1: checking"),
        "{}",
        bad.message
    );
    std::fs::write(agent.sandbox("cmd").await.join("ok"), b"").unwrap();
    let good = wait_health(&master, "cmd", true).await;
    assert!(
        good.message.contains("exited with code 0"),
        "{}",
        good.message
    );

    // A command that outlives its timeout fails, and is killed.
    let timed_out = wait_health(&master, "hangs", false).await;
    assert!(
        timed_out
            .message
            .contains("no result within the timeout of 500ms"),
        "{}",
        timed_out.message
    );
    let pid_file = agent.sandbox("hangs").await.join("check.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually("the timed-out check command to be killed", async || {
        (!process_alive(pid)).then_some(())
    })
    .await;
    assert!(
        agent.state().await["health_checks"]["checks_timed_out"]
            .as_u64()
            .unwrap()
            >= 1
    );
    agent.stop().await;
}

#[tokio::test]
async fn the_grace_period_holds_a_slow_starter() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    // Both start their server after 2 s; one check kills at its first
    // failure. With a grace period the slow starter lives; without, not.
    let mut patient = web_task("patient", free_port(), 2.0);
    patient.health_checks = vec![http_check("/health", 1, true, 60.0)];
    let mut hasty = web_task("hasty", free_port(), 2.0);
    hasty.health_checks = vec![http_check("/health", 1, true, 0.0)];
    master.launch(&framework("f1"), vec![patient, hasty]);

    let killed = master.wait_update("hasty", TaskState::TaskKilled).await;
    assert!(
        killed.message.contains("failed 1 time in a row"),
        "{}",
        killed.message
    );
    wait_health(&master, "patient", true).await;
    let reported: Vec<Option<bool>> = health_updates(&master, "patient")
        .iter()
        .map(|s| s.healthy)
        .collect();
    assert_eq!(
        reported,
        [Some(true)],
        "failures within the grace period are not reported"
    );
    assert_eq!(
        agent.task_state("patient").await.unwrap()["state"],
        "TASK_RUNNING"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_readiness_check_marks_the_task_ready_once() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let mut task = web_task("ready", free_port(), 0.0);
    task.readiness_checks = vec![ReadinessCheck {
        http: Some(HttpCheckInfo {
            path: "/ready".into(),
            ..Default::default()
        }),
        interval_seconds: Some(0.2),
        timeout_seconds: Some(1.0),
    }];
    master.launch(&framework("f1"), vec![task]);
    let running = master.wait_update("ready", TaskState::TaskRunning).await;
    assert_eq!(
        running.ready,
        Some(false),
        "not ready until the check succeeds"
    );
    assert_eq!(running.healthy, None);
    // 404 until the file exists.
    eventually("a few failed readiness checks", async || {
        let s = agent.state().await;
        (s["health_checks"]["checks_failed"].as_u64()? >= 2).then_some(())
    })
    .await;
    assert_eq!(agent.task_state("ready").await.unwrap()["ready"], false);
    std::fs::write(agent.sandbox("ready").await.join("www/ready"), b"yes").unwrap();
    let ready = master
        .wait_for("the task to be ready", |seen| {
            updates_of(seen, "ready")
                .into_iter()
                .find(|s| s.reason() == StatusReason::ReasonTaskCheckStatusUpdated)
        })
        .await;
    assert_eq!(ready.state(), TaskState::TaskRunning);
    assert_eq!(ready.ready, Some(true));
    assert!(
        ready.message.contains("answered 200 OK"),
        "{}",
        ready.message
    );
    // Ready for good: no more readiness checks, and a kill still says so.
    let started = agent.state().await["health_checks"]["checks_started"].clone();
    master.kill("f1", "ready", Some(1.0));
    let killed = master.wait_update("ready", TaskState::TaskKilled).await;
    assert_eq!(killed.ready, Some(true));
    assert_eq!(
        killed.reason(),
        StatusReason::ReasonNone,
        "killed by the framework"
    );
    assert_eq!(
        agent.state().await["health_checks"]["checks_started"],
        started
    );
    agent.stop().await;
}
