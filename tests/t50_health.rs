//! Health and readiness checks through a real master: checks the agent runs
//! against real processes and real containers, the health the master keeps
//! and shows (`/state`, `agora tasks`), and the check definitions the master
//! refuses.

mod common;

use agora_proto::v1::health_check::{HttpCheckInfo, Type};
use agora_proto::v1::{
    CommandInfo, HealthCheck, ReadinessCheck, StatusReason, TaskState, TaskStatus,
};
use common::docker::*;
use common::*;

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn http_check(path: &str, failures: u32) -> HealthCheck {
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
        grace_period_seconds: Some(60.0),
        ..Default::default()
    }
}

/// Waits for a TASK_RUNNING update of `task_id` with `healthy`.
async fn wait_health(fw: &TestFramework, task_id: &str, healthy: bool) -> TaskStatus {
    fw.wait(&format!("{task_id} healthy={healthy}"), |s| {
        s.updates
            .iter()
            .find(|u| {
                u.task_id == task_id
                    && u.state() == TaskState::TaskRunning
                    && u.reason() == StatusReason::ReasonTaskHealthCheckStatusUpdated
                    && u.healthy == Some(healthy)
            })
            .cloned()
    })
    .await
}

#[tokio::test]
async fn the_master_keeps_and_shows_health_and_refuses_bad_checks() {
    let port = free_port();
    let cluster = Cluster::start(
        master_config(),
        &[&format!("cpus:2;mem:1024;ports:[{port}-{port}]")],
    )
    .await;
    let fw = TestFramework::start(&cluster.addr(), "health", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("health"), b"ok").unwrap();
    // The cluster's agent stops with the test, its tasks do not: the
    // server goes when the test's directory does.
    let mut web = shell_task(
        "web",
        &format!(
            "busybox httpd -f -p 127.0.0.1:$PORT0 -h {} & {}",
            www.display(),
            linger(dir.path())
        ),
        &format!("cpus:0.1;mem:32;ports:[{port}-{port}]"),
    );
    web.health_checks = vec![http_check("/health", 3)];
    web.readiness_checks = vec![ReadinessCheck {
        http: Some(HttpCheckInfo {
            path: "/health".into(),
            ..Default::default()
        }),
        interval_seconds: Some(0.2),
        ..Default::default()
    }];
    let bad = |id: &str, change: fn(&mut HealthCheck)| {
        let mut t = shell_task(id, "sleep 100", "cpus:0.1;mem:32");
        let mut c = http_check("/", 3);
        change(&mut c);
        t.health_checks = vec![c];
        t
    };
    fw.launch(
        &offer,
        vec![
            web,
            // The task has no ports: port index 0 is out of range.
            bad("no-ports", |_| {}),
            bad("nan", |c| {
                c.http.as_mut().unwrap().port = Some(8080);
                c.http.as_mut().unwrap().port_index = None;
                c.interval_seconds = Some(f64::NAN);
            }),
            bad("no-type", |c| c.r#type = Type::Unknown as i32),
            bad("no-command", |c| {
                c.r#type = Type::Command as i32;
                c.http = None;
                c.command = Some(CommandInfo::default());
            }),
        ],
    );
    for (id, says) in [
        (
            "no-ports",
            "health_checks[0].http.port_index: the task has no ports",
        ),
        (
            "nan",
            "health_checks[0].interval_seconds: NaN is not a number of seconds > 0",
        ),
        ("no-type", "health_checks[0].type: not set"),
        ("no-command", "health_checks[0].command.value: empty"),
    ] {
        let err = fw.wait_state(id, TaskState::TaskError).await;
        assert_eq!(err.reason(), StatusReason::ReasonTaskInvalid, "{id}");
        assert!(err.message.contains(says), "{id}: {}", err.message);
    }

    let healthy = wait_health(&fw, "web", true).await;
    assert!(
        healthy
            .message
            .contains(&format!("GET http://127.0.0.1:{port}/health"))
    );
    let ready = fw
        .wait("web ready", |s| {
            s.updates
                .iter()
                .find(|u| u.task_id == "web" && u.ready == Some(true))
                .cloned()
        })
        .await;
    assert_eq!(ready.state(), TaskState::TaskRunning);
    let state = eventually(
        "the master to show the task healthy and ready",
        DEADLINE,
        || async {
            let s = cluster.state().await;
            let t = s["frameworks"][0]["tasks"]
                .as_array()?
                .iter()
                .find(|t| t["id"] == "web")?
                .clone();
            (t["healthy"] == true && t["ready"] == true).then_some(t)
        },
    )
    .await;
    assert_eq!(state["state"], "TASK_RUNNING");

    let mut cli = Proc::spawn(&["tasks", "--master", &cluster.addr()], &[]);
    assert_eq!(cli.exit_code().await, 0, "{}", cli.text());
    let table = cli.text();
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("web "))
        .unwrap_or_else(|| panic!("no row for web in:\n{table}"));
    assert!(table.lines().next().unwrap().contains("HEALTH"), "{table}");
    assert!(row.contains(" healthy "), "{row}");
}

#[tokio::test]
async fn checks_reach_into_a_container_and_a_failing_one_kills_it() {
    let Some(_docker) =
        docker_or_skip("checks_reach_into_a_container_and_a_failing_one_kills_it").await
    else {
        return;
    };
    let port = free_port();
    let (cluster, _guard) =
        docker_cluster(&format!("cpus:2;mem:1024;ports:[{port}-{port}]"), |_| {}).await;
    let agent_http = cluster.agents[0].http_addr().to_string();
    let fw = TestFramework::start(&cluster.addr(), "docker-health", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    // The file the COMMAND check looks for exists only inside the container;
    // the HTTP check reaches httpd in the container (host network).
    let mut task = docker_task(
        "boxed",
        Some(
            "mkdir -p /www && echo ok > /www/health && touch /tmp/healthy && \
             (httpd -f -p 127.0.0.1:$PORT0 -h /www &) && \
             while [ ! -e /mnt/mesos/sandbox/stop ]; do sleep 0.1; done; \
             rm /tmp/healthy; exec sleep 1000",
        ),
        &format!("cpus:0.1;mem:64;ports:[{port}-{port}]"),
    );
    let mut command = http_check("/", 1);
    command.r#type = Type::Command as i32;
    command.http = None;
    command.command = Some(CommandInfo {
        value: "test -f /tmp/healthy".into(),
        ..Default::default()
    });
    task.health_checks = vec![http_check("/health", 3), command];
    task.kill_policy = Some(agora_proto::v1::KillPolicy {
        grace_period: Some(1.0),
    });
    fw.launch(&offer, vec![task]);

    let healthy = wait_health(&fw, "boxed", true).await;
    assert!(
        healthy.message.contains("health check"),
        "{}",
        healthy.message
    );
    assert!(
        !std::path::Path::new("/tmp/healthy").exists(),
        "the check's file must not exist on the host for this test to mean anything"
    );
    let sandbox = agent_task(&agent_http, "boxed").await.unwrap()["sandbox"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(std::path::Path::new(&sandbox).join("stop"), b"").unwrap();
    let unhealthy = wait_health(&fw, "boxed", false).await;
    assert!(
        unhealthy.message.contains(
            "health check 2 (command `test -f /tmp/healthy`) failed: the command exited with code 1"
        ),
        "{}",
        unhealthy.message
    );
    let killed = fw.wait_state("boxed", TaskState::TaskKilled).await;
    assert_eq!(
        killed.reason(),
        StatusReason::ReasonTaskHealthCheckStatusUpdated
    );
    assert_eq!(killed.healthy, Some(false));
    assert!(
        killed
            .message
            .starts_with("Task killed because its health check 2"),
        "{}",
        killed.message
    );
}
