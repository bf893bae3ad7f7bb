//! The master under faults: bad input from the network is refused without
//! harm, a failure of the leading master's core makes it resign and exit
//! (and a standby lead), and an agent's word that a task ended frees its
//! resources whatever the framework has acknowledged.

mod common;

use agora_proto::Resources;
use agora_proto::v1::{
    self, AgentMessage, FrameworkInfo, TaskState, agent_message, agent_service_client,
    master_to_agent,
};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use common::zk::{SESSION_TIMEOUT, ZkServer};
use common::{Cluster, DEADLINE, Proc};
use futures::StreamExt;

/// Opens an agent session with `register` and returns the master's first
/// answer.
async fn register(master: &str, register: v1::RegisterAgent) -> master_to_agent::Message {
    let mut client = agent_service_client::AgentServiceClient::connect(format!("http://{master}"))
        .await
        .expect("connect to the master");
    let first = AgentMessage {
        message: Some(agent_message::Message::Register(register)),
    };
    // The session stays open from this side (a stream that never ends).
    let outbound = futures::stream::iter(vec![first]).chain(futures::stream::pending());
    let mut inbound = client
        .session(outbound)
        .await
        .expect("the master opens the session")
        .into_inner();
    tokio::time::timeout(DEADLINE, inbound.next())
        .await
        .expect("the master answers the registration in time")
        .expect("an answer")
        .expect("not an error")
        .message
        .expect("a message")
}

fn agent_info(id: &str) -> v1::AgentInfo {
    v1::AgentInfo {
        id: id.into(),
        hostname: "localhost".into(),
        resources: Resources::parse("cpus:2;mem:512").unwrap().to_proto(),
        ..Default::default()
    }
}

#[tokio::test]
async fn t42_a_reregistration_with_a_nan_failover_timeout_is_refused_and_the_master_goes_on() {
    common::init_logs();
    let cluster = Cluster::start(common::master_config(), &[]).await;
    let addr = cluster.addr();
    for bad in [f64::NAN, -5.0, f64::INFINITY] {
        let answer = register(
            &addr,
            v1::RegisterAgent {
                info: Some(agent_info("bad-agent")),
                tasks: vec![v1::Task {
                    task_id: "t1".into(),
                    framework_id: "F1".into(),
                    agent_id: "bad-agent".into(),
                    state: TaskState::TaskRunning as i32,
                    resources: Resources::parse("cpus:1;mem:64").unwrap().to_proto(),
                    ..Default::default()
                }],
                frameworks: vec![FrameworkInfo {
                    id: "F1".into(),
                    name: "f".into(),
                    failover_timeout: bad,
                    ..Default::default()
                }],
            },
        )
        .await;
        match answer {
            master_to_agent::Message::Refused(r) => assert!(
                r.message
                    .contains("invalid reregistration: framework F1: failover_timeout is"),
                "{bad}: {}",
                r.message
            ),
            other => panic!("{bad}: expected a refusal, got {other:?}"),
        }
    }
    // Nothing was kept, the master still leads and serves, and a good agent
    // registers.
    let state = cluster.state().await;
    assert_eq!(state["agents"].as_array().unwrap().len(), 0, "{state}");
    assert_eq!(state["frameworks"].as_array().unwrap().len(), 0, "{state}");
    let health = reqwest::get(format!("{}/health", cluster.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let answer = register(
        &addr,
        v1::RegisterAgent {
            info: Some(agent_info("good-agent")),
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(answer, master_to_agent::Message::Registered(_)),
        "{answer:?}"
    );
}

/// `agora master --zk` with the test-only fault hooks on.
async fn spawn_faulty_master(zk_url: &str) -> (Proc, String) {
    let p = Proc::spawn(
        &[
            "master",
            "--listen",
            "127.0.0.1:0",
            "--zk",
            zk_url,
            "--zk-session-timeout",
            SESSION_TIMEOUT,
        ],
        &[("AGORA_TEST_FAULT_HOOKS", "1")],
    );
    let addr = p.wait_field("master listening", "address").await;
    (p, addr)
}

#[tokio::test]
async fn t42_a_core_panic_makes_the_leader_resign_and_exit_and_a_standby_leads() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let zk_url = zk.url("/agora");
    let mut masters = Vec::new();
    for _ in 0..2 {
        masters.push(spawn_faulty_master(&zk_url).await);
    }
    let addrs: Vec<String> = masters.iter().map(|(_, a)| a.clone()).collect();
    let leader = common::zk::wait_one_leader(&addrs, DEADLINE).await;
    let i = addrs.iter().position(|a| *a == leader).unwrap();
    let standby = addrs[1 - i].clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let health = http
        .get(format!("http://{leader}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // The core panics: the leader exits non-zero, saying why.
    let resp = http
        .post(format!("http://{leader}/debug/faults/panic-core"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let (proc, _) = &mut masters[i];
    let code = proc.exit_code().await;
    assert_ne!(code, 0, "the master must fail; output:\n{}", proc.text());
    let text = proc.text();
    assert!(
        text.contains("panicked: fault hook: the core was asked to panic"),
        "{text}"
    );
    assert!(text.contains("resigning leadership"), "{text}");

    // The standby leads, well within a session timeout of the exit (the
    // leader's node was deleted, not left to expire).
    common::zk::wait_one_leader(std::slice::from_ref(&standby), DEADLINE).await;

    // Without the hooks the route does not exist.
    let (_plain, plain) = common::zk::spawn_zk_master(&zk_url, &[]).await;
    common::zk::wait_one_leader(&[standby.clone(), plain.clone()], DEADLINE).await;
    let resp = http
        .post(format!("http://{plain}/debug/faults/panic-core"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status() == 404 || resp.status() == 307,
        "{}",
        resp.status()
    );
}

#[tokio::test]
async fn t42_a_task_that_ends_behind_an_unacknowledged_update_frees_its_resources() {
    common::init_logs();
    let cluster = Cluster::start(common::master_config(), &["cpus:1;mem:256"]).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("end-now");
    let (scheduler, mut events) =
        Scheduler::start(SchedulerConfig::new(cluster.addr(), "no-acks")).unwrap();
    // This framework never acknowledges anything.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let offer = loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("an offer in time")
            .expect("events");
        if let Event::Offers(mut o) = e
            && !o.is_empty()
        {
            break o.remove(0);
        }
    };
    let cmd = format!("while [ ! -e '{}' ]; do sleep 0.1; done", marker.display());
    scheduler
        .accept(
            vec![offer.id.clone()],
            vec![common::shell_task("t1", &cmd, "cpus:1;mem:256")],
            Some(0.0),
        )
        .unwrap();
    // STARTING is acknowledged; RUNNING comes, and is not.
    let mut saw_running = false;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !saw_running {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("RUNNING in time; saw {seen:?}"))
            .expect("events");
        if let Event::Updates(u) = &e {
            let starting: Vec<_> = u
                .iter()
                .filter(|s| s.state() == TaskState::TaskStarting)
                .cloned()
                .collect();
            scheduler.acknowledge(&starting).unwrap();
            saw_running |= u
                .iter()
                .any(|s| s.task_id == "t1" && s.state() == TaskState::TaskRunning);
        }
        seen.push(format!("{e:?}"));
    }
    // The task ends; its FINISHED update waits at the agent behind RUNNING.
    std::fs::write(&marker, b"").unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let offer = loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the task's resources offered again in time, without acknowledging")
            .expect("events");
        match e {
            Event::Offers(mut o) if !o.is_empty() => break o.remove(0),
            Event::Updates(u) => assert!(
                u.iter().all(|s| s.state() == TaskState::TaskRunning),
                "FINISHED must wait for RUNNING's acknowledgement: {u:?}"
            ),
            _ => {}
        }
    };
    assert_eq!(offer.agent_id, cluster.state().await["agents"][0]["id"]);
    let cpus: f64 = offer
        .resources
        .iter()
        .filter(|r| r.name == "cpus")
        .map(|r| r.scalar)
        .sum();
    assert_eq!(cpus, 1.0, "{offer:?}");
    scheduler.stop().await;
}

/// Opens an agent session with `register` and returns the session's
/// inbound stream, which the caller keeps (the session lasts as long).
async fn open_agent(
    master: &str,
    register: v1::RegisterAgent,
) -> tonic::Streaming<v1::MasterToAgent> {
    let mut client = agent_service_client::AgentServiceClient::connect(format!("http://{master}"))
        .await
        .expect("connect to the master");
    let first = AgentMessage {
        message: Some(agent_message::Message::Register(register)),
    };
    let outbound = futures::stream::iter(vec![first]).chain(futures::stream::pending());
    let mut inbound = client
        .session(outbound)
        .await
        .expect("the master opens the session")
        .into_inner();
    let answer = tokio::time::timeout(DEADLINE, inbound.next())
        .await
        .expect("the master answers the registration in time")
        .expect("an answer")
        .expect("not an error");
    assert!(
        matches!(
            answer.message,
            Some(master_to_agent::Message::Registered(_))
        ),
        "{answer:?}"
    );
    inbound
}

/// The value of one sample in the master's `/metrics`.
async fn metric(url: &str, sample: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
}

#[tokio::test]
async fn t42_a_framework_that_stops_reading_is_disconnected_and_the_master_stays_bounded() {
    common::init_logs();
    const LIMIT: usize = 256 * 1024;
    let mut config = common::master_config();
    // Offers time out and are made again all the time: events keep coming.
    config.core.allocation_interval = std::time::Duration::from_millis(20);
    config.core.offer_timeout = Some(std::time::Duration::from_millis(30));
    config.stream_queue = agora_master::QueueLimits {
        messages: 100_000,
        bytes: LIMIT,
    };
    let cluster = Cluster::start(config, &[]).await;
    let addr = cluster.addr();
    let url = cluster.url();
    // Agents whose offers are large (a 2 KB attribute each).
    let mut sessions = Vec::new();
    for i in 0..20 {
        let mut info = agent_info(&format!("big-{i}"));
        info.attributes = agora_proto::parse_attributes(&format!("note:{}", "x".repeat(2000)))
            .expect("attributes");
        sessions.push(
            open_agent(
                &addr,
                v1::RegisterAgent {
                    info: Some(info),
                    ..Default::default()
                },
            )
            .await,
        );
    }
    // A framework that subscribes, reads SUBSCRIBED, and stops reading.
    let mut client =
        v1::scheduler_service_client::SchedulerServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_decoding_message_size(64 * 1024 * 1024);
    let subscribe = v1::Call {
        call: Some(v1::call::Call::Subscribe(v1::Subscribe {
            framework_info: Some(FrameworkInfo {
                name: "stuck".into(),
                user: "nobody".into(),
                failover_timeout: 3600.0,
                ..Default::default()
            }),
        })),
    };
    let mut events = client
        .subscribe(futures::stream::iter(vec![subscribe]).chain(futures::stream::pending()))
        .await
        .expect("subscribed")
        .into_inner();
    let first = events.next().await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(v1::event::Event::Subscribed(_))),
        "{first:?}"
    );
    // The master disconnects it once its queue is full.
    common::eventually("the stuck framework disconnected", DEADLINE, || {
        let url = url.clone();
        async move {
            let n = metric(
                &url,
                "agora_master_stream_overflows_total{peer=\"framework\"}",
            )
            .await;
            (n >= 1.0).then_some(())
        }
    })
    .await;
    // Its queue never held more than the limit and one event (an offers
    // event of 20 offers of about 2 KB), and nothing waits any more.
    let peak = metric(
        &url,
        "agora_master_stream_queue_peak_bytes{peer=\"framework\"}",
    )
    .await;
    assert!(peak <= (LIMIT + 64 * 1024) as f64, "peak {peak}");
    assert_eq!(
        metric(&url, "agora_master_stream_queue_bytes{peer=\"framework\"}").await,
        0.0
    );
    // The master treats it as disconnected: no offers outstanding to it.
    let state = cluster.state().await;
    let fw = &state["frameworks"][0];
    assert_eq!(fw["connected"], false, "{fw}");
    assert_eq!(fw["offers"].as_array().map(Vec::len), Some(0), "{fw}");
    // Read now, the stream ends with the reason after what was in flight.
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => break Some(status),
                None => break None,
            }
        }
    })
    .await
    .expect("the stream ends in time")
    .expect("with a status");
    assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
    assert!(
        end.message().contains("does not read its stream"),
        "{end:?}"
    );
    // Its resources are offered again (to a framework that reads).
    let (scheduler, mut offers) =
        Scheduler::start(SchedulerConfig::new(addr.clone(), "reader")).unwrap();
    let mut agents = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while agents.len() < sessions.len() {
        match tokio::time::timeout_at(deadline, offers.recv())
            .await
            .unwrap_or_else(|_| panic!("offers of every agent in time; got {agents:?}"))
            .expect("events")
        {
            Event::Offers(o) => agents.extend(o.into_iter().map(|o| o.agent_id)),
            _ => continue,
        }
    }
    scheduler.stop().await;
    drop(sessions);
}
