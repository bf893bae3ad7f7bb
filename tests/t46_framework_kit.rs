//! The framework kit with real parts: an in-process master and agents
//! running real task processes, and a small framework built on the kit
//! (tests/common/kit.rs).

mod common;

use std::time::Duration;

use agora_coord::Expected;
use agora_framework_kit::matcher::PortRequest;
use agora_framework_kit::store::{FrameworkStore, StoreBackend};
use agora_framework_kit::tracker::TrackerConfig;
use agora_proto::v1::TaskState;
use common::kit::{KitFramework, StoredTask, request, task_key};
use common::{Cluster, DEADLINE, eventually};
use tokio_util::sync::CancellationToken;

const SLEEP: &str = "sleep 600";

async fn stored_id(store: &FrameworkStore) -> String {
    store
        .get::<String>("framework-id")
        .await
        .unwrap()
        .expect("a stored framework id")
        .value
}

fn fast_tracker() -> TrackerConfig {
    TrackerConfig {
        reconcile_min: Duration::from_millis(200),
        reconcile_max: Duration::from_secs(1),
        kill_retry_min: Duration::from_millis(200),
        kill_retry_max: Duration::from_millis(500),
        periodic_reconcile: Duration::from_secs(60),
    }
}

/// The framework's tasks in the master's `/state`: task id -> (state, ports).
async fn master_tasks(cluster: &Cluster, framework_id: &str) -> Vec<(String, String, Vec<u64>)> {
    let state = cluster.state().await;
    let mut out = Vec::new();
    for fw in state["frameworks"].as_array().unwrap() {
        if fw["id"] != framework_id {
            continue;
        }
        for t in fw["tasks"].as_array().unwrap() {
            // Ranges as text: "[31000-31001, 31005-31005]".
            let ports: Vec<u64> = t["resources"]["ports"]
                .as_str()
                .unwrap_or("[]")
                .trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .filter(|r| !r.is_empty())
                .flat_map(|r| {
                    let (b, e) = r.split_once('-').unwrap();
                    b.parse::<u64>().unwrap()..=e.parse::<u64>().unwrap()
                })
                .collect();
            out.push((
                t["id"]
                    .as_str()
                    .or(t["task_id"].as_str())
                    .unwrap()
                    .to_string(),
                t["state"].as_str().unwrap().to_string(),
                ports,
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn t46_framework_id_survives_a_restart_and_reconciliation_adopts_known_tasks_and_kills_strangers()
 {
    let cluster = Cluster::start(
        common::master_config(),
        &["cpus:4;mem:2048;ports:[31000-31009]"],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let backend = StoreBackend::File(dir.path().join("fw/store.redb"));
    let store = FrameworkStore::open(&backend).unwrap();

    let fw = KitFramework::start(&cluster.addr(), "kit-test", store.clone(), fast_tracker()).await;
    fw.wait("subscribed", |s| s.framework_id.clone()).await;
    let id = fw.id();
    // Written before the framework heard of it.
    assert_eq!(stored_id(&store).await, id);

    // Three tasks packed into the agent's one offer: ports taken from its
    // range, by number where asked.
    fw.launch(vec![
        (
            request("a", "app", "cpus:0.1;mem:32", PortRequest::Any(2)),
            SLEEP.into(),
        ),
        (
            request(
                "b",
                "app",
                "cpus:0.1;mem:32",
                PortRequest::Exact(vec![31005, 0]),
            ),
            SLEEP.into(),
        ),
        (
            request("c", "app", "cpus:0.1;mem:32", PortRequest::None),
            SLEEP.into(),
        ),
    ]);
    for t in ["a", "b", "c"] {
        fw.wait_state(t, TaskState::TaskRunning).await;
    }
    let (launches, placements) = {
        let s = fw.seen.lock().unwrap();
        let ports: Vec<Vec<u64>> = ["a", "b", "c"]
            .iter()
            .map(|k| s.placement(k).unwrap().ports.clone())
            .collect();
        (s.launches.len(), ports)
    };
    assert_eq!(launches, 1, "several tasks in one offer, one accept");
    assert_eq!(
        placements,
        vec![vec![31000, 31001], vec![31005, 31002], vec![]]
    );
    // The master runs them with exactly those ports.
    let tasks = master_tasks(&cluster, &id).await;
    assert_eq!(
        tasks,
        vec![
            ("a".into(), "TASK_RUNNING".into(), vec![31000, 31001]),
            ("b".into(), "TASK_RUNNING".into(), vec![31002, 31005]),
            ("c".into(), "TASK_RUNNING".into(), vec![]),
        ]
    );

    // Down; meanwhile the store forgets c (as if its record were lost).
    fw.stop().await;
    store.delete(&task_key("c"), Expected::Any).await.unwrap();

    // Up again: the same framework id, the tasks kept; a and b answer the
    // reconciliation, c is a stranger now and is killed.
    let fw = KitFramework::start(&cluster.addr(), "kit-test", store.clone(), fast_tracker()).await;
    fw.wait("resubscribed", |s| s.subscribed.first().copied())
        .await;
    assert_eq!(fw.id(), id);
    assert_eq!(fw.seen.lock().unwrap().subscribed, vec![true]);
    fw.wait("every known task answered", |s| s.reconciled.then_some(()))
        .await;
    fw.wait_state("c", TaskState::TaskKilled).await;
    {
        let s = fw.seen.lock().unwrap();
        assert!(s.unknown.contains(&"c".to_string()), "{:?}", s.unknown);
        assert!(!s.unknown.contains(&"a".to_string()));
        assert_eq!(s.latest("a"), Some(TaskState::TaskRunning));
        assert_eq!(s.latest("b"), Some(TaskState::TaskRunning));
        assert!(s.kills_sent("c") >= 1);
        assert_eq!(s.kills_sent("a") + s.kills_sent("b"), 0);
        assert!(s.launches.is_empty(), "nothing relaunched");
    }
    let url = format!("{}/state", cluster.url());
    eventually(
        "the master keeps a and b running, and c ended",
        DEADLINE,
        || {
            let cluster = &cluster;
            let id = id.clone();
            let _ = &url;
            async move {
                let tasks = master_tasks(cluster, &id).await;
                let running: Vec<&str> = tasks
                    .iter()
                    .filter(|t| t.1 == "TASK_RUNNING")
                    .map(|t| t.0.as_str())
                    .collect();
                (running == ["a", "b"]).then_some(())
            }
        },
    )
    .await;
    let stored = store
        .get::<StoredTask>(&task_key("a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.value.ports, vec![31000, 31001]);

    // Task processes outlive the test's agent: end them.
    for t in ["a", "b"] {
        fw.kill(t);
        fw.wait_state(t, TaskState::TaskKilled).await;
    }
    fw.stop().await;
}

#[tokio::test]
async fn t46_a_kill_is_retried_until_the_terminal_update_arrives() {
    let mut cluster = Cluster::start(common::master_config(), &[]).await;
    // An agent of its own, to stop and start again.
    let work = cluster.dir.path().join("agent-k");
    let agent_token = CancellationToken::new();
    let config = common::agent_config(&cluster.addr(), &work, "cpus:2;mem:1024");
    let agent = agora_agent::start(config.clone(), agent_token.clone())
        .await
        .unwrap();
    cluster.wait_agents(1).await;

    let fw = KitFramework::start(
        &cluster.addr(),
        "kit-kill",
        FrameworkStore::memory(),
        fast_tracker(),
    )
    .await;
    fw.launch(vec![(
        request("k", "app", "cpus:0.1;mem:32", PortRequest::None),
        SLEEP.into(),
    )]);
    fw.wait_state("k", TaskState::TaskRunning).await;

    // The agent goes away (its task keeps running); the kill cannot take
    // effect, and the framework keeps sending it.
    agent_token.cancel();
    agent.wait().await.unwrap();
    fw.kill("k");
    fw.wait("the kill sent three times", |s| {
        (s.kills_sent("k") >= 3).then_some(())
    })
    .await;
    assert_ne!(
        fw.seen.lock().unwrap().latest("k"),
        Some(TaskState::TaskKilled)
    );

    // The agent is back: the task is killed, and the kills stop.
    let agent_token = CancellationToken::new();
    let _agent = agora_agent::start(config, agent_token.clone())
        .await
        .unwrap();
    fw.wait_state("k", TaskState::TaskKilled).await;
    fw.wait("no kill pending", |s| (s.killing == 0).then_some(()))
        .await;
    let sent = fw.seen.lock().unwrap().kills_sent("k");
    assert!(sent >= 3, "{sent}");
    fw.stop().await;
    agent_token.cancel();
    let _ = &mut cluster;
}

#[tokio::test]
async fn t46_a_stored_id_the_master_removed_is_replaced_by_a_new_one() {
    let cluster = Cluster::start(common::master_config(), &["cpus:1;mem:256"]).await;
    let store = FrameworkStore::memory();
    let fw = KitFramework::start(&cluster.addr(), "kit-gone", store.clone(), fast_tracker()).await;
    fw.wait("subscribed", |s| s.framework_id.clone()).await;
    let old = fw.id();
    // Torn down: the master removes the framework for good.
    fw.scheduler.teardown().await.unwrap();
    fw.stop().await;

    let fw = KitFramework::start(&cluster.addr(), "kit-gone", store.clone(), fast_tracker()).await;
    fw.wait("subscribed anew", |s| s.framework_id.clone()).await;
    let new = fw.id();
    assert_ne!(new, old);
    {
        let s = fw.seen.lock().unwrap();
        assert_eq!(s.subscribed, vec![false]);
        assert!(
            s.errors
                .iter()
                .any(|e| e.contains(&old) && e.contains("refused")),
            "{:?}",
            s.errors
        );
    }
    assert_eq!(stored_id(&store).await, new);
    fw.stop().await;
}
