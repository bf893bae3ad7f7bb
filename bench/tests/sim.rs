//! The simulated agents against a real master (in this process, on a real
//! socket, over gRPC), and the launch benchmark at a small scale.
//!
//! These tests check behaviour only; no figure decides a test.

use std::collections::BTreeSet;
use std::time::Duration;

use agora_bench::launch::{LaunchApi, LaunchArgs, run as run_launch};
use agora_bench::sim::{SimCluster, SimConfig};
use agora_master::{MasterConfig, RunningMaster};
use agora_proto::Resources;
use agora_proto::v1::{self, Offer, TaskState, TaskStatus};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

async fn master() -> RunningMaster {
    let config = MasterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    agora_master::start(config, CancellationToken::new())
        .await
        .expect("master starts")
}

fn framework(address: &str) -> (Scheduler, mpsc::UnboundedReceiver<Event>) {
    let mut config = SchedulerConfig::new(address, "sim-test");
    config.framework.failover_timeout = 600.0;
    Scheduler::start(config).expect("driver starts")
}

/// The next event that `pick` accepts, skipping others; acknowledges every
/// update on the way.
async fn next<T>(
    scheduler: &Scheduler,
    events: &mut mpsc::UnboundedReceiver<Event>,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(until, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("the driver stopped while waiting for {what}"));
        if let Event::Updates(statuses) = &event {
            scheduler.acknowledge(statuses).unwrap();
        }
        if let Some(v) = pick(&event) {
            return v;
        }
    }
}

fn task(id: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: Resources::parse("cpus:0.5;mem:64").unwrap().to_proto(),
        command: Some(v1::CommandInfo {
            value: "sleep 1000".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn small(agents: usize) -> SimConfig {
    let mut config = SimConfig::new(agents);
    config.resources = Resources::parse("cpus:4;mem:4096;ports:[31000-31100]").unwrap();
    config.reconnect_min = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    config
}

/// Waits for offers until every one of `agents` agents has offered; returns
/// the last offer of each, by agent id.
async fn offers_from(
    scheduler: &Scheduler,
    events: &mut mpsc::UnboundedReceiver<Event>,
    agents: usize,
) -> Vec<Offer> {
    let mut seen: Vec<Offer> = Vec::new();
    while seen.len() < agents {
        let offers = next(scheduler, events, "offers", |e| match e {
            Event::Offers(o) => Some(o.clone()),
            _ => None,
        })
        .await;
        for o in offers {
            seen.retain(|s| s.agent_id != o.agent_id);
            seen.push(o);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_agents_register_and_run_tasks_to_their_end() {
    let master = master().await;
    let address = master.addr().to_string();
    let mut config = small(3);
    config.task_duration = Some(Duration::from_millis(50));
    let (_tx, leader) = watch::channel(address.clone());
    let cluster = SimCluster::start(config, leader).unwrap();
    cluster
        .wait_for(DEADLINE, |s| s.registered == 3)
        .await
        .unwrap();

    let (scheduler, mut events) = framework(&address);
    let offers = offers_from(&scheduler, &mut events, 3).await;
    let hostnames: BTreeSet<&str> = offers.iter().map(|o| o.hostname.as_str()).collect();
    assert_eq!(
        hostnames.len(),
        3,
        "each agent has its own name: {hostnames:?}"
    );
    // Two tasks on each agent.
    for (i, offer) in offers.iter().enumerate() {
        let tasks = vec![task(&format!("t{i}a")), task(&format!("t{i}b"))];
        scheduler
            .accept(vec![offer.id.clone()], tasks, Some(60.0))
            .unwrap();
    }
    let mut finished = BTreeSet::new();
    let mut running = BTreeSet::new();
    while finished.len() < 6 {
        let statuses: Vec<TaskStatus> = next(&scheduler, &mut events, "updates", |e| match e {
            Event::Updates(s) => Some(s.clone()),
            _ => None,
        })
        .await;
        for s in statuses {
            assert!(!s.uuid.is_empty(), "agent updates carry a uuid: {s:?}");
            match s.state() {
                TaskState::TaskRunning => {
                    running.insert(s.task_id.clone());
                }
                TaskState::TaskFinished => {
                    assert!(
                        running.contains(&s.task_id),
                        "RUNNING comes before FINISHED"
                    );
                    assert_eq!(s.exit_code, Some(0));
                    finished.insert(s.task_id.clone());
                }
                other => panic!("unexpected {other:?} for {}", s.task_id),
            }
        }
    }
    // Every update was acknowledged, and the agents let the tasks go.
    let stats = cluster
        .wait_for(DEADLINE, |s| s.tasks_finished == 6 && s.tasks_active == 0)
        .await
        .unwrap();
    assert_eq!(stats.tasks_launched, 6);
    assert_eq!(stats.tasks_running, 6);
    assert_eq!(stats.updates_acknowledged, 12);
    scheduler.stop().await;
    cluster.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_end_tasks_killed() {
    let master = master().await;
    let address = master.addr().to_string();
    let (_tx, leader) = watch::channel(address.clone());
    let cluster = SimCluster::start(small(1), leader).unwrap();
    let (scheduler, mut events) = framework(&address);
    let offer = offers_from(&scheduler, &mut events, 1).await.remove(0);
    scheduler
        .accept(vec![offer.id.clone()], vec![task("long")], Some(60.0))
        .unwrap();
    next(&scheduler, &mut events, "long RUNNING", |e| match e {
        Event::Updates(s) => s
            .iter()
            .any(|s| s.task_id == "long" && s.state() == TaskState::TaskRunning)
            .then_some(()),
        _ => None,
    })
    .await;
    scheduler.kill("long", &offer.agent_id, None).unwrap();
    next(&scheduler, &mut events, "long KILLED", |e| match e {
        Event::Updates(s) => s
            .iter()
            .any(|s| s.task_id == "long" && s.state() == TaskState::TaskKilled)
            .then_some(()),
        _ => None,
    })
    .await;
    cluster
        .wait_for(DEADLINE, |s| s.tasks_killed == 1 && s.tasks_active == 0)
        .await
        .unwrap();
    scheduler.stop().await;
    cluster.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_follow_a_new_leader_and_reregister_with_their_tasks() {
    let first = master().await;
    let (leader_tx, leader) = watch::channel(first.addr().to_string());
    let cluster = SimCluster::start(small(4), leader).unwrap();
    cluster
        .wait_for(DEADLINE, |s| s.registered == 4)
        .await
        .unwrap();

    // A task on one agent, running.
    let (scheduler, mut events) = framework(&first.addr().to_string());
    let offer = offers_from(&scheduler, &mut events, 1).await.remove(0);
    scheduler
        .accept(vec![offer.id.clone()], vec![task("kept")], Some(60.0))
        .unwrap();
    next(&scheduler, &mut events, "kept RUNNING", |e| match e {
        Event::Updates(s) => s
            .iter()
            .any(|s| s.task_id == "kept" && s.state() == TaskState::TaskRunning)
            .then_some(()),
        _ => None,
    })
    .await;
    let framework_id = scheduler.framework_id().unwrap();
    scheduler.stop().await;

    // The first master goes away; the streams break and the agents retry
    // until they are told of the second.
    first.stop().await;
    cluster
        .wait_for(DEADLINE, |s| s.registered == 0 && s.disconnects >= 4)
        .await
        .unwrap();
    let second = master().await;
    leader_tx.send_replace(second.addr().to_string());
    let stats = cluster
        .wait_for(DEADLINE, |s| s.registered == 4 && s.reregistrations >= 4)
        .await
        .unwrap();
    assert_eq!(stats.tasks_active, 1, "the task survived: {stats}");

    // The new master learned the task from its agent: the framework takes
    // it over by resubscribing with its id, and reconciles it as running.
    let mut config = SchedulerConfig::new(second.addr().to_string(), "sim-test");
    config.framework.id = framework_id;
    config.framework.failover_timeout = 600.0;
    let (scheduler, mut events) = Scheduler::start(config).unwrap();
    next(&scheduler, &mut events, "subscribed", |e| {
        matches!(e, Event::Subscribed { .. }).then_some(())
    })
    .await;
    // Every agent offers on the new master.
    offers_from(&scheduler, &mut events, 4).await;
    scheduler.reconcile(Vec::new()).unwrap();
    next(
        &scheduler,
        &mut events,
        "kept reconciled RUNNING",
        |e| match e {
            Event::Updates(s) => s
                .iter()
                .any(|s| s.task_id == "kept" && s.state() == TaskState::TaskRunning)
                .then_some(()),
            _ => None,
        },
    )
    .await;
    scheduler.stop().await;
    cluster.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_benchmark_runs_every_task_and_reports_its_figures() {
    let args = LaunchArgs {
        api: LaunchApi::Grpc,
        agents: 20,
        tasks: 500,
        agent_resources: Resources::parse("cpus:4;mem:8192").unwrap(),
        task_resources: Resources::parse("cpus:0.1;mem:32").unwrap(),
        master: None,
        in_process: true,
        master_bin: None,
        timeout: Duration::from_secs(60),
    };
    let report = run_launch(&args).await.unwrap();
    assert_eq!(report.tasks, 500);
    assert!(report.tasks_per_s > 0.0);
    assert!(report.latency_ms_p50 <= report.latency_ms_p99);
    assert!(
        report.master_peak_rss_mb.is_none(),
        "in-process: not measured"
    );
    let line = report.json();
    for key in [
        "agents",
        "tasks",
        "tasks_per_s",
        "latency_ms_p50",
        "latency_ms_p99",
        "master_peak_rss_mb",
    ] {
        assert!(line.get(key).is_some(), "{key} missing in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_benchmark_over_the_mesos_http_api_runs_every_task() {
    let args = LaunchArgs {
        api: LaunchApi::Mesos,
        agents: 20,
        tasks: 500,
        agent_resources: Resources::parse("cpus:4;mem:8192").unwrap(),
        task_resources: Resources::parse("cpus:0.1;mem:32").unwrap(),
        master: None,
        in_process: true,
        master_bin: None,
        timeout: Duration::from_secs(60),
    };
    let report = run_launch(&args).await.unwrap();
    assert_eq!(report.tasks, 500);
    assert!(report.tasks_per_s > 0.0);
    assert!(report.latency_ms_p50 <= report.latency_ms_p99);
    // 40 tasks fit on each agent's offer: at least 13 accepts.
    assert!(report.accepts >= 13, "{}", report.json());
    let line = report.json();
    assert_eq!(line["api"], "mesos");
    for key in [
        "agents",
        "tasks",
        "tasks_per_s",
        "latency_ms_p50",
        "latency_ms_p99",
    ] {
        assert!(line.get(key).is_some(), "{key} missing in {line}");
    }
}
