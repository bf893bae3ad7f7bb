//! The offer cycle end to end, in one process: a real master and real
//! agents on loopback sockets, frameworks on the scheduler SDK, tasks as
//! real processes.

mod common;

use std::time::Duration;

use agora_proto::Resources;
use agora_proto::v1::{StatusReason, TaskState};
use common::*;

#[tokio::test]
async fn a_task_finishes() {
    let cluster = Cluster::start(master_config(), &["cpus:2;mem:512"]).await;
    let fw = TestFramework::start(&cluster.addr(), "finish", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    fw.launch(
        &offer,
        vec![shell_task("t1", "echo hello; exit 0", "cpus:0.5;mem:64")],
    );
    fw.wait_state("t1", TaskState::TaskRunning).await;
    let done = fw.wait_state("t1", TaskState::TaskFinished).await;
    assert_eq!(done.agent_id, offer.agent_id);
    assert_eq!(done.exit_code, Some(0));
    // The master lists it as ended once acknowledged.
    let url = cluster.url();
    eventually("t1 among completed tasks", DEADLINE, || {
        let url = url.clone();
        async move {
            let s = get_json(&format!("{url}/state")).await;
            let done = &s["frameworks"][0]["completed_tasks"];
            (done[0]["id"] == "t1" && done[0]["state"] == "TASK_FINISHED").then_some(())
        }
    })
    .await;
    // Its output is on the agent.
    let agent = &cluster.agents[0];
    let logs = reqwest::get(format!(
        "http://{}/tasks/t1/logs?stream=stdout",
        agent.http_addr()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(logs, "hello\n");
}

#[tokio::test]
async fn a_task_fails_with_its_exit_code() {
    let cluster = Cluster::start(master_config(), &["cpus:2;mem:512"]).await;
    let fw = TestFramework::start(&cluster.addr(), "fail", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    fw.launch(&offer, vec![shell_task("t1", "exit 3", "cpus:0.5;mem:64")]);
    let failed = fw.wait_state("t1", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(3));
    assert!(failed.message.contains('3'), "message: {}", failed.message);
}

#[tokio::test]
async fn a_task_is_killed() {
    let cluster = Cluster::start(master_config(), &["cpus:2;mem:512"]).await;
    let fw = TestFramework::start(&cluster.addr(), "kill", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    fw.launch(
        &offer,
        vec![shell_task(
            "t1",
            &linger(cluster.dir.path()),
            "cpus:0.5;mem:64",
        )],
    );
    let running = fw.wait_state("t1", TaskState::TaskRunning).await;
    fw.scheduler.kill("t1", &running.agent_id, None).unwrap();
    fw.wait_state("t1", TaskState::TaskKilled).await;
}

#[tokio::test]
async fn an_invalid_launch_gets_task_error() {
    let cluster = Cluster::start(master_config(), &["cpus:1;mem:256"]).await;
    let fw = TestFramework::start(&cluster.addr(), "invalid", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    fw.launch(
        &offer,
        vec![
            shell_task("too-big", "true", "cpus:8;mem:64"),
            shell_task("ok", "true", "cpus:0.5;mem:64"),
        ],
    );
    let err = fw.wait_state("too-big", TaskState::TaskError).await;
    assert_eq!(err.reason(), StatusReason::ReasonTaskInvalid);
    assert!(err.message.contains("cpus:8"), "message: {}", err.message);
    fw.wait_state("ok", TaskState::TaskFinished).await;
}

#[tokio::test]
async fn a_declined_offer_is_not_reoffered_before_refuse_seconds() {
    let cluster = Cluster::start(master_config(), &["cpus:1;mem:256"]).await;
    let fw = TestFramework::start(&cluster.addr(), "decline", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    let declined_at = tokio::time::Instant::now();
    fw.scheduler
        .decline(vec![offer.id.clone()], Some(2.0))
        .unwrap();
    let again = fw.take_offer().await;
    let waited = declined_at.elapsed();
    assert_eq!(again.agent_id, offer.agent_id);
    assert!(
        waited >= Duration::from_secs(2),
        "re-offered after {waited:?}, before refuse_seconds (2 s)"
    );
}

#[tokio::test]
async fn weighted_roles_hold_one_to_three_of_a_saturated_cluster() {
    let mut config = master_config();
    config.weights = [("batch".to_string(), 1.0), ("web".to_string(), 3.0)].into();
    config.core.allocation_interval = Duration::from_millis(100);
    let cluster = Cluster::start(config, &["cpus:4;mem:4096", "cpus:4;mem:4096"]).await;
    let batch = TestFramework::start(&cluster.addr(), "batch", &["batch"], 0.0).await;
    let web = TestFramework::start(&cluster.addr(), "web", &["web"], 0.0).await;
    let task_res = Resources::parse("cpus:0.25;mem:256").unwrap();
    // Both frameworks launch one small long task per offer until the cluster
    // is full (32 slots).
    let mut n = 0;
    let count = |fw: &TestFramework| {
        fw.seen
            .lock()
            .unwrap()
            .updates
            .iter()
            .filter(|u| u.state() == TaskState::TaskRunning)
            .count()
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while count(&batch) + count(&web) < 32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster not saturated in time"
        );
        for fw in [&batch, &web] {
            let offers: Vec<_> = std::mem::take(&mut fw.seen.lock().unwrap().offers);
            for offer in offers {
                let fits = Resources::from_proto(&offer.resources)
                    .unwrap()
                    .contains(&task_res);
                let tasks = if fits {
                    n += 1;
                    vec![shell_task(
                        &format!("t{n}"),
                        &linger(cluster.dir.path()),
                        "cpus:0.25;mem:256",
                    )]
                } else {
                    vec![]
                };
                fw.launch(&offer, tasks);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (b, w) = (count(&batch) as f64, count(&web) as f64);
    assert_eq!(b + w, 32.0);
    let ratio = w / b;
    assert!(
        (2.5..=3.5).contains(&ratio),
        "web {w} : batch {b} = {ratio}, want about 3"
    );
    batch.scheduler.teardown().await.unwrap();
    web.scheduler.teardown().await.unwrap();
}

/// A framework with `failover` seconds of failover timeout, running task
/// "t1" until the test ends.
async fn framework_with_running_task(
    cluster: &Cluster,
    name: &str,
    failover: f64,
) -> TestFramework {
    let fw = TestFramework::start(&cluster.addr(), name, &["*"], failover).await;
    let offer = fw.take_offer().await;
    let task = shell_task("t1", &linger(cluster.dir.path()), "cpus:0.5;mem:64");
    fw.launch(&offer, vec![task]);
    fw.wait_state("t1", TaskState::TaskRunning).await;
    fw
}

#[tokio::test]
async fn a_framework_that_reconnects_within_its_failover_timeout_keeps_its_tasks() {
    let cluster = Cluster::start(master_config(), &["cpus:2;mem:512"]).await;
    let fw = framework_with_running_task(&cluster, "failover", 30.0).await;
    let id = fw.id();
    // The scheduler goes away without tearing down, then a new instance
    // subscribes with the same id.
    fw.scheduler.stop().await;
    let mut config = agora_scheduler::SchedulerConfig::new(cluster.addr(), "failover");
    config.framework.id = id.clone();
    config.framework.failover_timeout = 30.0;
    let fw2 = TestFramework::start_with(config).await;
    assert_eq!(fw2.id(), id);
    fw2.scheduler.reconcile(vec![]).unwrap();
    let s = fw2.wait("t1 reconciled", |s| s.latest("t1").cloned()).await;
    assert_eq!(s.state(), TaskState::TaskRunning);
    let state = cluster.state().await;
    assert_eq!(state["frameworks"][0]["tasks"][0]["state"], "TASK_RUNNING");
    fw2.scheduler.teardown().await.unwrap();
}

#[tokio::test]
async fn a_framework_that_does_not_come_back_has_its_tasks_killed() {
    let cluster = Cluster::start(master_config(), &["cpus:2;mem:512"]).await;
    let fw = framework_with_running_task(&cluster, "gone", 1.0).await;
    let id = fw.id();
    fw.scheduler.stop().await;
    // After the failover timeout the master removes the framework and the
    // agent kills its task.
    let agent_url = format!("http://{}/state", cluster.agents[0].http_addr());
    eventually("the agent killed t1", DEADLINE, || {
        let agent_url = agent_url.clone();
        async move {
            let s = get_json(&agent_url).await;
            let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
            let t1 = tasks.iter().find(|t| t["id"] == "t1");
            t1.is_none_or(|t| t["state"] == "TASK_KILLED").then_some(())
        }
    })
    .await;
    let state = cluster.state().await;
    assert!(state["frameworks"].as_array().unwrap().is_empty());
    assert_eq!(state["completed_frameworks"][0]["id"], id);
}

#[tokio::test]
async fn http_endpoints_answer_and_errors_are_json() {
    let cluster = Cluster::start(master_config(), &["cpus:1;mem:256"]).await;
    let url = cluster.url();
    assert_eq!(
        reqwest::get(format!("{url}/health"))
            .await
            .unwrap()
            .status(),
        200
    );
    let v = get_json(&format!("{url}/version")).await;
    assert!(
        v["version"]
            .as_str()
            .unwrap()
            .split('.')
            .all(|p| p.parse::<u32>().is_ok())
    );
    let state = cluster.state().await;
    assert_eq!(state["agents"][0]["resources"]["total"]["cpus"], 1.0);
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "agora_master_agents{status=\"connected\"} 1",
        "agora_master_tasks{state=\"TASK_RUNNING\"} 0",
        "agora_master_allocation_cycle_seconds_bucket",
        "agora_master_offers_outstanding",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
    let resp = reqwest::get(format!("{url}/nope")).await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["message"].is_string());
    let resp = reqwest::Client::new()
        .post(format!("{url}/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}
