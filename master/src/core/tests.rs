//! The master core, driven without sockets or clocks: inputs in, outbox out,
//! time advanced by hand.

use std::time::{Duration, Instant};

use agora_allocator::AllocatorConfig;
use agora_proto::Resources;
use agora_proto::v1::{
    self, FrameworkInfo, StatusReason, TaskState, agent_message, call, event, master_to_agent,
};

use serde_json::json;

use super::*;

struct Harness {
    core: MasterCore,
    now: Now,
}

fn master_info() -> MasterInfo {
    MasterInfo {
        id: "m1".into(),
        hostname: "localhost".into(),
        ip: "127.0.0.1".into(),
        port: 5050,
        version: "0.1.0".into(),
    }
}

impl Harness {
    fn new() -> Harness {
        Self::with(CoreConfig::default(), AllocatorConfig::default())
    }

    fn with(config: CoreConfig, alloc: AllocatorConfig) -> Harness {
        let now = Now {
            instant: Instant::now(),
            unix: 1_700_000_000.0,
        };
        Harness {
            core: MasterCore::new(master_info(), config, alloc, now),
            now,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
        self.core.tick(self.now);
    }

    fn agent(&mut self, conn: ConnId, resources: &str) -> String {
        self.core.agent_register(
            conn,
            v1::RegisterAgent {
                info: Some(v1::AgentInfo {
                    hostname: format!("host{conn}"),
                    resources: Resources::parse(resources).unwrap().to_proto(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            self.now,
        );
        let out = self.core.take_outbox();
        match out.agents[&conn][0].message.as_ref().unwrap() {
            master_to_agent::Message::Registered(r) => r.agent_id.clone(),
            other => panic!("expected registered, got {other:?}"),
        }
    }

    fn framework(&mut self, conn: ConnId, roles: &[&str], failover: f64) -> String {
        self.core.framework_subscribe(
            conn,
            v1::Subscribe {
                framework_info: Some(FrameworkInfo {
                    name: format!("fw{conn}"),
                    roles: roles.iter().map(|r| r.to_string()).collect(),
                    failover_timeout: failover,
                    checkpoint: true,
                    ..Default::default()
                }),
            },
            self.now,
        );
        let out = self.core.take_outbox();
        match out.frameworks[&conn][0].to_event().event.unwrap() {
            event::Event::Subscribed(s) => s.framework_id.clone(),
            other => panic!("expected subscribed, got {other:?}"),
        }
    }

    fn call(&mut self, conn: ConnId, c: call::Call) {
        self.core.framework_call(conn, c, self.now);
    }

    /// Runs an allocation and returns the offers each framework connection got.
    fn offers(&mut self) -> Vec<(ConnId, v1::Offer)> {
        self.core.allocate(self.now);
        let out = self.core.take_outbox();
        let mut offers = Vec::new();
        for (conn, events) in out.frameworks {
            for e in events {
                if let Some(event::Event::Offers(o)) = e.to_event().event {
                    offers.extend(o.offers.into_iter().map(|o| (conn, o)));
                }
            }
        }
        offers.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        offers
    }

    fn updates(out: &Outbox, conn: ConnId) -> Vec<v1::TaskStatus> {
        out.frameworks
            .get(&conn)
            .into_iter()
            .flatten()
            .filter_map(|e| match &e.to_event().event {
                Some(event::Event::Updates(u)) => Some(u.statuses.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn agent_msgs(out: &Outbox, conn: ConnId) -> Vec<master_to_agent::Message> {
        out.agents
            .get(&conn)
            .into_iter()
            .flatten()
            .filter_map(|m| m.message.clone())
            .collect()
    }

    fn decline(&mut self, conn: ConnId, offer_id: &str, refuse_seconds: f64) {
        self.call(
            conn,
            call::Call::Decline(v1::Decline {
                offer_ids: vec![offer_id.to_string()],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            }),
        );
    }

    /// The agent `agent_id` comes back on connection `conn` with `tasks`
    /// (task id, framework id, state), each using cpus:1;mem:128.
    fn reregister(&mut self, conn: ConnId, agent_id: &str, tasks: &[(&str, &str, TaskState)]) {
        self.core.agent_register(
            conn,
            v1::RegisterAgent {
                info: Some(v1::AgentInfo {
                    id: agent_id.to_string(),
                    hostname: "host1".into(),
                    resources: Resources::parse("cpus:4;mem:1024").unwrap().to_proto(),
                    ..Default::default()
                }),
                tasks: tasks
                    .iter()
                    .map(|(task, fw, state)| v1::Task {
                        task_id: task.to_string(),
                        framework_id: fw.to_string(),
                        agent_id: agent_id.to_string(),
                        state: *state as i32,
                        resources: Resources::parse("cpus:1;mem:128").unwrap().to_proto(),
                        role: "*".into(),
                        ..Default::default()
                    })
                    .collect(),
                frameworks: vec![],
            },
            self.now,
        );
    }

    fn agent_update(&mut self, conn: ConnId, fw: &str, task: &str, state: TaskState, uuid: u8) {
        self.core.agent_message(
            conn,
            agent_message::Message::Updates(v1::StatusUpdates {
                statuses: vec![v1::TaskStatus {
                    task_id: task.into(),
                    framework_id: fw.into(),
                    state: state as i32,
                    uuid: vec![uuid; 16],
                    source: v1::StatusSource::SourceExecutor as i32,
                    ..Default::default()
                }],
            }),
            self.now,
        );
    }
}

fn task(id: &str, res: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: Resources::parse(res).unwrap().to_proto(),
        command: Some(v1::CommandInfo {
            value: "sleep 100".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn accept(offer: &str, tasks: Vec<v1::TaskInfo>, refuse: Option<f64>) -> call::Call {
    call::Call::Accept(v1::Accept {
        offer_ids: vec![offer.into()],
        operations: vec![v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch {
                task_infos: tasks,
            })),
        }],
        filters: Some(v1::Filters {
            refuse_seconds: refuse,
        }),
    })
}

/// A cluster with one agent (conn 1), one framework (conn 10) running task
/// "t1", which is RUNNING and acknowledged.
fn running_task(h: &mut Harness, failover: f64) -> (String, String) {
    let agent = h.agent(1, "cpus:4;mem:1024");
    let fw = h.framework(10, &["*"], failover);
    let offers = h.offers();
    h.call(
        10,
        accept(
            &offers[0].1.id,
            vec![task("t1", "cpus:1;mem:128")],
            Some(0.0),
        ),
    );
    let out = h.core.take_outbox();
    assert!(matches!(
        Harness::agent_msgs(&out, 1)[0],
        master_to_agent::Message::RunTasks(_)
    ));
    h.agent_update(1, &fw, "t1", TaskState::TaskRunning, 1);
    h.call(
        10,
        call::Call::Acknowledge(v1::Acknowledge {
            acks: vec![v1::TaskAcknowledgement {
                agent_id: agent.clone(),
                task_id: "t1".into(),
                uuid: vec![1; 16],
            }],
        }),
    );
    h.core.take_outbox();
    (agent, fw)
}

#[test]
fn agent_gets_an_id_and_framework_gets_offers_of_all_its_resources() {
    let mut h = Harness::new();
    let agent = h.agent(1, "cpus:4;mem:1024;ports:[31000-31009]");
    assert!(agent.starts_with("m1-S"));
    let fw = h.framework(10, &["*"], 0.0);
    let offers = h.offers();
    assert_eq!(offers.len(), 1);
    let (conn, offer) = &offers[0];
    assert_eq!(*conn, 10);
    assert_eq!(offer.agent_id, agent);
    assert_eq!(offer.framework_id, fw);
    assert_eq!(
        Resources::from_proto(&offer.resources).unwrap(),
        Resources::parse("cpus:4;mem:1024;ports:[31000-31009]").unwrap()
    );
    // Nothing is offered twice.
    assert!(h.offers().is_empty());
}

#[test]
fn accept_launches_valid_tasks_and_errors_invalid_ones() {
    let mut h = Harness::new();
    h.agent(1, "cpus:2;mem:512");
    let fw = h.framework(10, &["*"], 0.0);
    let offers = h.offers();
    let bad_command = v1::TaskInfo {
        command: None,
        ..task("nocmd", "cpus:0.1")
    };
    h.call(
        10,
        accept(
            &offers[0].1.id,
            vec![
                task("ok", "cpus:1;mem:256"),
                task("too-big", "cpus:2;mem:256"),
                task("ok", "cpus:0.5"),
                bad_command,
                task("bad/id", "cpus:0.1"),
            ],
            Some(0.0),
        ),
    );
    let out = h.core.take_outbox();
    let run: Vec<_> = Harness::agent_msgs(&out, 1);
    let master_to_agent::Message::RunTasks(run) = &run[0] else {
        panic!("expected run_tasks");
    };
    assert_eq!(run.launches.len(), 1);
    assert_eq!(run.launches[0].task.as_ref().unwrap().task_id, "ok");
    assert_eq!(run.frameworks[0].id, fw);
    let errors = Harness::updates(&out, 10);
    assert_eq!(errors.len(), 4);
    for e in &errors {
        assert_eq!(e.state(), TaskState::TaskError);
        assert_eq!(e.reason(), StatusReason::ReasonTaskInvalid);
        assert!(e.uuid.is_empty());
    }
    assert!(errors[0].message.contains("only"), "{}", errors[0].message);
    assert!(errors[1].message.contains("already in use"));
    // The unused cpus:1;mem:256 come back at once (refuse 0).
    let offers = h.offers();
    assert_eq!(offers.len(), 1);
    assert_eq!(
        Resources::from_proto(&offers[0].1.resources).unwrap(),
        Resources::parse("cpus:1;mem:256").unwrap()
    );
}

#[test]
fn accept_of_an_unknown_offer_loses_the_tasks() {
    let mut h = Harness::new();
    h.agent(1, "cpus:2;mem:512");
    h.framework(10, &["*"], 0.0);
    h.offers();
    h.call(10, accept("nope", vec![task("a", "cpus:1")], None));
    let out = h.core.take_outbox();
    let u = Harness::updates(&out, 10);
    assert_eq!(u[0].state(), TaskState::TaskLost);
    assert_eq!(u[0].reason(), StatusReason::ReasonInvalidOffers);
    assert!(out.agents.is_empty());
}

#[test]
fn declined_resources_are_not_reoffered_before_refuse_seconds() {
    let mut h = Harness::new();
    h.agent(1, "cpus:2;mem:512");
    h.framework(10, &["*"], 0.0);
    let offers = h.offers();
    h.decline(10, &offers[0].1.id, 5.0);
    h.advance(Duration::from_millis(4900));
    assert!(h.offers().is_empty(), "re-offered within refuse_seconds");
    h.advance(Duration::from_millis(200));
    assert_eq!(h.offers().len(), 1, "not re-offered after refuse_seconds");
}

#[test]
fn revive_clears_filters() {
    let mut h = Harness::new();
    h.agent(1, "cpus:2;mem:512");
    h.framework(10, &["*"], 0.0);
    let offers = h.offers();
    h.decline(10, &offers[0].1.id, 100.0);
    assert!(h.offers().is_empty());
    h.call(10, call::Call::Revive(v1::Revive { roles: vec![] }));
    assert_eq!(h.offers().len(), 1);
}

#[test]
fn updates_flow_to_the_framework_and_acks_to_the_agent() {
    let mut h = Harness::new();
    let agent = h.agent(1, "cpus:4;mem:1024");
    let fw = h.framework(10, &["*"], 0.0);
    let offers = h.offers();
    h.call(
        10,
        accept(&offers[0].1.id, vec![task("t1", "cpus:1;mem:128")], None),
    );
    h.core.take_outbox();
    h.agent_update(1, &fw, "t1", TaskState::TaskFinished, 7);
    let out = h.core.take_outbox();
    let u = Harness::updates(&out, 10);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state(), TaskState::TaskFinished);
    assert_eq!(u[0].agent_id, agent);
    assert_eq!(u[0].uuid, vec![7; 16]);
    // Still listed until acknowledged.
    assert!(h.core.frameworks[&fw].tasks.contains_key("t1"));
    h.call(
        10,
        call::Call::Acknowledge(v1::Acknowledge {
            acks: vec![v1::TaskAcknowledgement {
                agent_id: agent.clone(),
                task_id: "t1".into(),
                uuid: vec![7; 16],
            }],
        }),
    );
    let out = h.core.take_outbox();
    let msgs = Harness::agent_msgs(&out, 1);
    let master_to_agent::Message::Acknowledge(a) = &msgs[0] else {
        panic!("expected acknowledge, got {msgs:?}");
    };
    assert_eq!(a.acks[0].uuid, vec![7; 16]);
    assert_eq!(a.acks[0].framework_id, fw);
    assert!(!h.core.frameworks[&fw].tasks.contains_key("t1"));
    assert_eq!(h.core.frameworks[&fw].completed.len(), 1);
    // Its resources are free again: the whole agent is offered.
    let offers = h.offers();
    assert_eq!(
        Resources::from_proto(&offers[0].1.resources).unwrap(),
        Resources::parse("cpus:4;mem:1024").unwrap()
    );
}

#[test]
fn agent_disconnect_rescinds_offers_and_timeout_makes_tasks_unreachable() {
    let mut h = Harness::new();
    let (agent, fw) = running_task(&mut h, 60.0);
    let offers = h.offers();
    assert_eq!(offers.len(), 1);
    h.core.agent_closed(1, h.now);
    let out = h.core.take_outbox();
    let rescinded: Vec<String> = out.frameworks[&10]
        .iter()
        .filter_map(|e| match &e.to_event().event {
            Some(event::Event::Rescind(r)) => Some(r.offer_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(rescinded, vec![offers[0].1.id.clone()]);
    assert!(h.offers().is_empty(), "a disconnected agent got offered");

    h.advance(Duration::from_secs(14));
    assert!(Harness::updates(&h.core.take_outbox(), 10).is_empty());
    h.advance(Duration::from_secs(2));
    let out = h.core.take_outbox();
    let u = Harness::updates(&out, 10);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state(), TaskState::TaskUnreachable);
    assert!(u[0].uuid.is_empty());
    assert!(out.frameworks[&10].iter().any(
        |e| matches!(&e.to_event().event, Some(event::Event::Failure(f)) if f.agent_id == agent)
    ));

    // The agent comes back with its task still running.
    h.reregister(2, &agent, &[("t1", &fw, TaskState::TaskRunning)]);
    let out = h.core.take_outbox();
    let u = Harness::updates(&out, 10);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state(), TaskState::TaskRunning);
    assert_eq!(u[0].reason(), StatusReason::ReasonAgentReregistered);
    assert!(
        Harness::agent_msgs(&out, 2)
            .iter()
            .all(|m| !matches!(m, master_to_agent::Message::RunTasks(_)))
    );
    // Only what the task does not use is offered.
    let offers = h.offers();
    assert_eq!(
        Resources::from_proto(&offers[0].1.resources).unwrap(),
        Resources::parse("cpus:3;mem:896").unwrap()
    );
}

#[test]
fn reregistration_without_a_task_loses_it_and_never_relaunches() {
    let mut h = Harness::new();
    let (agent, _fw) = running_task(&mut h, 60.0);
    h.core.agent_closed(1, h.now);
    h.reregister(2, &agent, &[]);
    let out = h.core.take_outbox();
    let u = Harness::updates(&out, 10);
    assert_eq!(u[0].state(), TaskState::TaskLost);
    assert_eq!(u[0].reason(), StatusReason::ReasonTaskUnknown);
    assert!(
        Harness::agent_msgs(&out, 2)
            .iter()
            .all(|m| !matches!(m, master_to_agent::Message::RunTasks(_)))
    );
}

#[test]
fn framework_that_fails_over_in_time_keeps_its_tasks() {
    let mut h = Harness::new();
    let (agent, fw) = running_task(&mut h, 10.0);
    h.core.framework_closed(10, h.now);
    h.advance(Duration::from_secs(5));
    // An update arrives while the framework is away.
    h.agent_update(1, &fw, "t1", TaskState::TaskFinished, 9);
    h.core.take_outbox();
    h.core.framework_subscribe(
        11,
        v1::Subscribe {
            framework_info: Some(FrameworkInfo {
                id: fw.clone(),
                name: "fw".into(),
                failover_timeout: 10.0,
                ..Default::default()
            }),
        },
        h.now,
    );
    let out = h.core.take_outbox();
    let events = &out.frameworks[&11];
    assert!(
        matches!(&events[0].to_event().event, Some(event::Event::Subscribed(s)) if s.framework_id == fw)
    );
    let u = Harness::updates(&out, 11);
    assert_eq!(u.len(), 1, "the pending update is sent again");
    assert_eq!(u[0].uuid, vec![9; 16]);
    h.advance(Duration::from_secs(20));
    assert!(h.core.frameworks.contains_key(&fw));
    assert!(
        Harness::agent_msgs(&h.core.take_outbox(), 1)
            .iter()
            .all(|m| !matches!(m, master_to_agent::Message::ShutdownFramework(_)))
    );
    let _ = agent;
}

#[test]
fn framework_that_does_not_come_back_has_its_tasks_killed() {
    let mut h = Harness::new();
    let (_agent, fw) = running_task(&mut h, 10.0);
    h.core.framework_closed(10, h.now);
    h.advance(Duration::from_secs(9));
    assert!(h.core.frameworks.contains_key(&fw));
    h.advance(Duration::from_secs(2));
    assert!(!h.core.frameworks.contains_key(&fw));
    let out = h.core.take_outbox();
    assert!(Harness::agent_msgs(&out, 1).iter().any(
        |m| matches!(m, master_to_agent::Message::ShutdownFramework(s) if s.framework_id == fw)
    ));
    // A later subscription with the old id is refused.
    h.core.framework_subscribe(
        12,
        v1::Subscribe {
            framework_info: Some(FrameworkInfo {
                id: fw.clone(),
                name: "fw".into(),
                ..Default::default()
            }),
        },
        h.now,
    );
    let out = h.core.take_outbox();
    assert!(
        matches!(&out.frameworks[&12][0].to_event().event, Some(event::Event::Error(e)) if e.message.contains("removed"))
    );
    assert!(out.close.contains(&12));
    // The agent's late TASK_KILLED is acknowledged by the master.
    h.agent_update(1, &fw, "t1", TaskState::TaskKilled, 3);
    let out = h.core.take_outbox();
    assert!(Harness::agent_msgs(&out, 1).iter().any(
        |m| matches!(m, master_to_agent::Message::Acknowledge(a) if a.acks[0].uuid == vec![3; 16])
    ));
}

#[test]
fn teardown_removes_at_once() {
    let mut h = Harness::new();
    let (_agent, fw) = running_task(&mut h, 1000.0);
    h.call(10, call::Call::Teardown(v1::Teardown {}));
    assert!(!h.core.frameworks.contains_key(&fw));
    let out = h.core.take_outbox();
    assert!(
        Harness::agent_msgs(&out, 1)
            .iter()
            .any(|m| matches!(m, master_to_agent::Message::ShutdownFramework(_)))
    );
    assert!(out.close.contains(&10));
}

#[test]
fn kill_goes_to_the_agent_or_waits_for_it() {
    let mut h = Harness::new();
    let (agent, fw) = running_task(&mut h, 100.0);
    let kill = || {
        call::Call::Kill(v1::Kill {
            task_id: "t1".into(),
            agent_id: String::new(),
            kill_policy: None,
        })
    };
    h.call(10, kill());
    let out = h.core.take_outbox();
    assert!(
        matches!(&Harness::agent_msgs(&out, 1)[0], master_to_agent::Message::KillTasks(k) if k.kills[0].task_id == "t1")
    );
    // While the agent is away, the kill waits for it.
    h.core.agent_closed(1, h.now);
    h.call(10, kill());
    h.core.take_outbox();
    h.reregister(2, &agent, &[("t1", &fw, TaskState::TaskRunning)]);
    let out = h.core.take_outbox();
    assert!(Harness::agent_msgs(&out, 2).iter().any(
        |m| matches!(m, master_to_agent::Message::KillTasks(k) if k.kills[0].task_id == "t1")
    ));
    // Killing an unknown task answers TASK_LOST.
    h.call(
        10,
        call::Call::Kill(v1::Kill {
            task_id: "ghost".into(),
            ..Default::default()
        }),
    );
    let u = Harness::updates(&h.core.take_outbox(), 10);
    assert_eq!(u[0].state(), TaskState::TaskLost);
}

#[test]
fn reconcile_explicit_and_implicit() {
    let mut h = Harness::new();
    let (agent, fw) = running_task(&mut h, 100.0);
    h.call(10, call::Call::Reconcile(v1::Reconcile { tasks: vec![] }));
    let u = Harness::updates(&h.core.take_outbox(), 10);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state(), TaskState::TaskRunning);
    // The task keeps its status without the ids; they are back on the way
    // out, here and in the task's record.
    assert_eq!(
        (
            u[0].task_id.as_str(),
            u[0].agent_id.as_str(),
            u[0].framework_id.as_str()
        ),
        ("t1", agent.as_str(), fw.as_str())
    );
    let record = h.core.frameworks[&fw].tasks["t1"].to_proto();
    let status = record.status.expect("a running task has a status");
    assert_eq!(
        (
            status.task_id.as_str(),
            status.agent_id.as_str(),
            status.framework_id.as_str()
        ),
        ("t1", agent.as_str(), fw.as_str())
    );
    assert_eq!(u[0].reason(), StatusReason::ReasonReconciliation);
    assert!(u[0].uuid.is_empty());
    h.call(
        10,
        call::Call::Reconcile(v1::Reconcile {
            tasks: vec![
                v1::reconcile::TaskRef {
                    task_id: "t1".into(),
                    agent_id: agent.clone(),
                },
                v1::reconcile::TaskRef {
                    task_id: "nope".into(),
                    agent_id: agent,
                },
            ],
        }),
    );
    let u = Harness::updates(&h.core.take_outbox(), 10);
    assert_eq!(u[0].state(), TaskState::TaskRunning);
    assert_eq!(u[1].state(), TaskState::TaskUnknown);
}

#[test]
fn heartbeats_and_offer_timeout() {
    let mut h = Harness::with(
        CoreConfig {
            offer_timeout: Some(Duration::from_secs(30)),
            // The agent here sends no heartbeats.
            agent_timeout: Duration::from_secs(3600),
            ..CoreConfig::default()
        },
        AllocatorConfig::default(),
    );
    h.agent(1, "cpus:1;mem:64");
    h.framework(10, &["*"], 0.0);
    assert_eq!(h.offers().len(), 1);
    h.advance(Duration::from_secs(16));
    let out = h.core.take_outbox();
    assert!(
        out.frameworks[&10]
            .iter()
            .any(|e| matches!(e.to_event().event, Some(event::Event::Heartbeat(_))))
    );
    h.advance(Duration::from_secs(15));
    let out = h.core.take_outbox();
    assert!(
        out.frameworks[&10]
            .iter()
            .any(|e| matches!(e.to_event().event, Some(event::Event::Rescind(_))))
    );
}

#[test]
fn weighted_roles_share_a_saturated_cluster_one_to_three() {
    let mut weights = std::collections::HashMap::new();
    weights.insert("batch".to_string(), 1.0);
    weights.insert("web".to_string(), 3.0);
    let mut h = Harness::with(
        CoreConfig::default(),
        AllocatorConfig {
            weights,
            ..Default::default()
        },
    );
    for conn in 1..=4 {
        h.agent(conn, "cpus:4;mem:4096");
    }
    let batch = h.framework(10, &["batch"], 0.0);
    let web = h.framework(20, &["web"], 0.0);
    // Each framework launches one small task per offer and returns the rest
    // at once, until the cluster is full.
    let mut n = 0;
    loop {
        let offers = h.offers();
        if offers.is_empty() {
            break;
        }
        for (conn, offer) in offers {
            n += 1;
            let t = task(&format!("t{n}"), "cpus:0.25;mem:256");
            let fits = Resources::from_proto(&offer.resources)
                .unwrap()
                .contains(&Resources::parse("cpus:0.25;mem:256").unwrap());
            let tasks = if fits { vec![t] } else { vec![] };
            h.call(conn, accept(&offer.id, tasks, Some(0.0)));
        }
        h.core.take_outbox();
        assert!(n < 1000, "allocation did not converge");
    }
    let count = |fw: &str| h.core.frameworks[fw].tasks.len() as f64;
    let (b, w) = (count(&batch), count(&web));
    assert_eq!(b + w, 64.0, "the cluster is saturated");
    let ratio = w / b;
    assert!(
        (2.5..=3.5).contains(&ratio),
        "web/batch = {w}/{b} = {ratio}"
    );
}

#[test]
fn invalid_agent_resources_are_refused() {
    let mut h = Harness::new();
    h.core.agent_register(
        1,
        v1::RegisterAgent {
            info: Some(v1::AgentInfo {
                resources: vec![v1::Resource {
                    name: "cpus".into(),
                    scalar: -1.0,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
        h.now,
    );
    let out = h.core.take_outbox();
    assert!(
        matches!(&Harness::agent_msgs(&out, 1)[0], master_to_agent::Message::Refused(r) if r.message.contains("invalid agent resources"))
    );
    assert!(out.close.contains(&1));
}

#[test]
fn reconciliation_waits_for_agents_that_have_not_reregistered_after_a_failover() {
    let mut h = Harness::new();
    h.core.recover(
        vec![],
        vec![v1::AgentInfo {
            id: "old-S0".into(),
            hostname: "host1".into(),
            resources: Resources::parse("cpus:1;mem:64").unwrap().to_proto(),
            ..Default::default()
        }],
        h.now,
    );
    h.framework(10, &["*"], 100.0);
    let ask = |task: &str, agent: &str| {
        call::Call::Reconcile(v1::Reconcile {
            tasks: vec![v1::reconcile::TaskRef {
                task_id: task.into(),
                agent_id: agent.into(),
            }],
        })
    };
    // The agent of the task has not reregistered: no answer yet.
    h.call(10, ask("t1", "old-S0"));
    assert!(Harness::updates(&h.core.take_outbox(), 10).is_empty());
    h.call(10, ask("t1", ""));
    assert!(Harness::updates(&h.core.take_outbox(), 10).is_empty());
    // Once it is back, a task it does not report is unknown.
    h.reregister(1, "old-S0", &[]);
    h.core.take_outbox();
    h.call(10, ask("t1", "old-S0"));
    let u = Harness::updates(&h.core.take_outbox(), 10);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state(), TaskState::TaskUnknown);
}

#[test]
fn a_cycle_with_more_offers_than_a_batch_holds_sends_them_all_in_order() {
    let mut h = Harness::new();
    let n = MAX_MERGED + 5;
    let agents: Vec<String> = (0..n as u64)
        .map(|i| h.agent(100 + i, "cpus:1;mem:64"))
        .collect();
    // An agent that registers again (with more cpus) gets fresh offer
    // fields.
    h.core.agent_register(
        100,
        v1::RegisterAgent {
            info: Some(v1::AgentInfo {
                id: agents[0].clone(),
                hostname: "host100".into(),
                resources: Resources::parse("cpus:2;mem:64").unwrap().to_proto(),
                ..Default::default()
            }),
            ..Default::default()
        },
        h.now,
    );
    let out = h.core.take_outbox();
    assert!(matches!(
        out.agents[&100][0].message,
        Some(master_to_agent::Message::Registered(_))
    ));
    let fw = h.framework(10, &["*"], 60.0);
    h.core.allocate(h.now);
    let out = h.core.take_outbox();
    let events = &out.frameworks[&10];
    let batches: Vec<Vec<v1::Offer>> = events
        .iter()
        .map(|e| {
            // What goes on the wire decodes as what the event says.
            let mut bytes = Vec::new();
            e.encode(&mut bytes).unwrap();
            let event = e.to_event();
            assert_eq!(
                <v1::Event as prost::Message>::decode(bytes.as_slice()).unwrap(),
                event
            );
            match event.event {
                Some(event::Event::Offers(o)) => o.offers,
                other => panic!("expected offers, got {other:?}"),
            }
        })
        .collect();
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![MAX_MERGED, 5]
    );
    let offers: Vec<v1::Offer> = batches.into_iter().flatten().collect();
    let mut seen: Vec<&str> = offers.iter().map(|o| o.agent_id.as_str()).collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = agents.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(seen, want, "every agent offered once");
    for o in &offers {
        assert_eq!(o.framework_id, fw);
        assert_eq!(o.role, "*");
        let cpus = if o.agent_id == agents[0] { 2.0 } else { 1.0 };
        assert_eq!(
            Resources::from_proto(&o.resources).unwrap(),
            Resources::parse(&format!("cpus:{cpus};mem:64")).unwrap(),
            "offer on {}",
            o.agent_id
        );
        assert_eq!(
            o.hostname,
            format!(
                "host{}",
                100 + agents.iter().position(|a| *a == o.agent_id).unwrap()
            )
        );
    }
    // Offer numbers grow in the order the offers were sent.
    let seqs: Vec<u64> = offers
        .iter()
        .map(|o| o.id.rsplit('O').next().unwrap().parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[test]
fn the_latest_health_and_readiness_are_kept_shown_and_reconciled() {
    let mut h = Harness::new();
    let (_agent, fw) = running_task(&mut h, 100.0);
    // The agent reports the task unhealthy and not ready.
    h.core.agent_message(
        1,
        agent_message::Message::Updates(v1::StatusUpdates {
            statuses: vec![v1::TaskStatus {
                task_id: "t1".into(),
                framework_id: fw.clone(),
                state: TaskState::TaskRunning as i32,
                uuid: vec![2; 16],
                source: v1::StatusSource::SourceAgent as i32,
                reason: StatusReason::ReasonTaskHealthCheckStatusUpdated as i32,
                message: "GET http://127.0.0.1:31000/ answered 503".into(),
                healthy: Some(false),
                ready: Some(false),
                ..Default::default()
            }],
        }),
        h.now,
    );
    let u = Harness::updates(&h.core.take_outbox(), 10);
    assert_eq!(u[0].healthy, Some(false), "forwarded as sent");
    let state = h.core.state_json("m:5050");
    let t = &state["frameworks"][0]["tasks"][0];
    assert_eq!(t["state"], "TASK_RUNNING");
    assert_eq!(t["healthy"], false);
    assert_eq!(t["ready"], false);
    assert_eq!(t["reason"], "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED");

    // Reconciliation answers with the latest health, as do the statuses the
    // master makes up itself (here: the agent goes unreachable).
    h.call(10, call::Call::Reconcile(v1::Reconcile { tasks: vec![] }));
    let u = Harness::updates(&h.core.take_outbox(), 10);
    assert_eq!((u[0].healthy, u[0].ready), (Some(false), Some(false)));
    h.core.agent_closed(1, h.now);
    h.advance(Duration::from_secs(16));
    let u = Harness::updates(&h.core.take_outbox(), 10);
    let unreachable = u
        .iter()
        .find(|s| s.state() == TaskState::TaskUnreachable)
        .expect("the task is reported unreachable");
    assert_eq!(
        (unreachable.healthy, unreachable.ready),
        (Some(false), Some(false))
    );
}

#[test]
fn the_summary_counts_tasks_by_state_and_shows_offers_weights_and_shares() {
    let mut h = Harness::new();
    let (agent, fw) = running_task(&mut h, 0.0);
    // The rest of the agent is offered again.
    let offers = h.offers();
    assert_eq!(offers.len(), 1);
    let s = h.core.summary_json("127.0.0.1:5050");
    assert_eq!(s["elected"], true);
    assert_eq!(s["tasks_by_state"]["TASK_RUNNING"], 1);
    assert_eq!(s["offer_count"], 1);
    assert_eq!(s["offers"][0]["agent_id"], agent.as_str());
    let f = &s["frameworks"][0];
    assert_eq!(f["id"], fw.as_str());
    assert_eq!(f["active_tasks"], 1);
    assert_eq!(f["offers"], 1);
    assert_eq!(f["weights"], json!([1.0]));
    assert!(f["dominant_share"].as_f64().unwrap() > 0.0);
    assert!(f.get("tasks").is_none(), "no task lists in the summary");
    let a = &s["agents"][0];
    assert_eq!(a["resources"]["used"]["cpus"], 1.0);
    assert_eq!(a["resources"]["offered"]["cpus"], 3.0);
    assert_eq!(s["roles"][0]["weight"], 1.0);
}

#[test]
fn tasks_are_listed_filtered_and_paged_and_found_for_their_logs() {
    let mut h = Harness::new();
    let (agent, fw) = running_task(&mut h, 0.0);
    let all = h.core.tasks_json(&view::TaskQuery {
        limit: 10,
        ..Default::default()
    });
    assert_eq!(all["total"], 1);
    assert_eq!(all["tasks"][0]["id"], "t1");
    let none = h.core.tasks_json(&view::TaskQuery {
        state: Some("TASK_FINISHED".into()),
        limit: 10,
        ..Default::default()
    });
    assert_eq!(none["total"], 0);
    let paged = h.core.tasks_json(&view::TaskQuery {
        limit: 10,
        offset: 1,
        ..Default::default()
    });
    assert_eq!(paged["total"], 1);
    assert_eq!(paged["tasks"], json!([]));
    let at = h.core.task_location("t1", None).unwrap();
    assert_eq!(at.agent_id, agent);
    assert_eq!(at.framework_id, fw);
    assert!(!at.ended);
    assert_eq!(
        h.core.task_location("t1", Some("other")),
        Err(view::TaskLookupError::Unknown)
    );
    assert_eq!(
        h.core.task_location("nope", None),
        Err(view::TaskLookupError::Unknown)
    );
}

#[test]
fn frameworks_are_found_for_the_proxy_by_id_or_name() {
    let mut h = Harness::new();
    let fw = h.framework(10, &["*"], 60.0);
    // fw10 announced no address.
    assert!(matches!(
        h.core.framework_webui(&view::FrameworkRef::Id(fw.clone())),
        Err(view::WebUiLookupError::NoWebUi { .. })
    ));
    h.core.framework_subscribe(
        11,
        v1::Subscribe {
            framework_info: Some(FrameworkInfo {
                name: "agora-batch".into(),
                roles: vec!["*".into()],
                webui_url: "http://127.0.0.1:9000".into(),
                ..Default::default()
            }),
        },
        h.now,
    );
    h.core.take_outbox();
    let t = h
        .core
        .framework_webui(&view::FrameworkRef::Name("agora-batch".into()))
        .unwrap();
    assert_eq!(
        t.url.join("/v1/jobs", Some("a=1")),
        "http://127.0.0.1:9000/v1/jobs?a=1"
    );
    assert!(t.connected);
    assert_eq!(
        h.core
            .framework_webui(&view::FrameworkRef::Id(t.framework_id.clone()))
            .unwrap()
            .name,
        "agora-batch"
    );
    assert!(matches!(
        h.core
            .framework_webui(&view::FrameworkRef::Name("agora-services".into())),
        Err(view::WebUiLookupError::Unknown(_))
    ));
}

/// An agent that reregisters with a FrameworkInfo whose failover timeout is
/// not a number of seconds >= 0 is refused with the reason, and nothing of
/// its report is kept (the core does not panic on it, either).
#[test]
fn a_reregistration_with_a_bad_failover_timeout_is_refused_and_nothing_is_kept() {
    for bad in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY] {
        let mut h = Harness::new();
        h.core.agent_register(
            7,
            v1::RegisterAgent {
                info: Some(v1::AgentInfo {
                    id: "S7".into(),
                    hostname: "host7".into(),
                    resources: Resources::parse("cpus:4;mem:1024").unwrap().to_proto(),
                    ..Default::default()
                }),
                tasks: vec![v1::Task {
                    task_id: "t1".into(),
                    framework_id: "F1".into(),
                    agent_id: "S7".into(),
                    state: TaskState::TaskRunning as i32,
                    resources: Resources::parse("cpus:1;mem:128").unwrap().to_proto(),
                    ..Default::default()
                }],
                frameworks: vec![FrameworkInfo {
                    id: "F1".into(),
                    name: "f".into(),
                    failover_timeout: bad,
                    ..Default::default()
                }],
            },
            h.now,
        );
        let out = h.core.take_outbox();
        match &Harness::agent_msgs(&out, 7)[..] {
            [master_to_agent::Message::Refused(r)] => assert!(
                r.message
                    .contains("invalid reregistration: framework F1: failover_timeout is"),
                "{bad}: {}",
                r.message
            ),
            other => panic!("{bad}: expected a refusal, got {other:?}"),
        }
        assert_eq!(out.close, vec![7]);
        assert!(out.registry.is_empty());
        assert!(h.core.agents.is_empty() && h.core.frameworks.is_empty());
        // The master goes on: a good agent registers.
        h.agent(8, "cpus:1;mem:128");
        h.advance(Duration::from_secs(60));
    }
}

#[test]
fn a_reregistration_with_bad_task_resources_or_ids_is_refused() {
    let mut h = Harness::new();
    let mut register = v1::RegisterAgent {
        info: Some(v1::AgentInfo {
            id: "S7".into(),
            hostname: "host7".into(),
            resources: Resources::parse("cpus:4;mem:1024").unwrap().to_proto(),
            ..Default::default()
        }),
        tasks: vec![v1::Task {
            task_id: "t1".into(),
            framework_id: "F1".into(),
            state: TaskState::TaskRunning as i32,
            resources: Resources::parse("cpus:1;mem:128").unwrap().to_proto(),
            ..Default::default()
        }],
        frameworks: vec![],
    };
    register.tasks[0].resources[0].scalar = f64::NAN;
    h.core.agent_register(7, register.clone(), h.now);
    let out = h.core.take_outbox();
    assert!(matches!(
        &Harness::agent_msgs(&out, 7)[..],
        [master_to_agent::Message::Refused(r)] if r.message.contains("task t1: invalid resources")
    ));
    register.tasks[0].resources = Resources::parse("cpus:1").unwrap().to_proto();
    register.tasks[0].framework_id = String::new();
    h.core.agent_register(7, register, h.now);
    let out = h.core.take_outbox();
    assert!(matches!(
        &Harness::agent_msgs(&out, 7)[..],
        [master_to_agent::Message::Refused(r)] if r.message.contains("framework id is empty")
    ));
    assert!(h.core.agents.is_empty() && h.core.frameworks.is_empty());
}

/// A framework the master recovered with a failover timeout from the
/// registry that is not a number does not take the master down when it
/// times out or disconnects.
#[test]
fn recovered_frameworks_with_bad_failover_timeouts_do_not_panic() {
    let mut h = Harness::new();
    h.core.recover(
        vec![FrameworkInfo {
            id: "F1".into(),
            name: "f".into(),
            failover_timeout: f64::NAN,
            ..Default::default()
        }],
        vec![],
        h.now,
    );
    assert!(h.core.frameworks.contains_key("F1"));
    h.advance(Duration::from_secs(60));
    assert!(
        !h.core.frameworks.contains_key("F1"),
        "removed after the reregister timeout"
    );
}

#[test]
fn a_nan_refuse_filter_is_an_error_and_the_default_filter_is_used() {
    let mut h = Harness::new();
    h.agent(1, "cpus:4;mem:1024");
    h.framework(10, &["*"], 0.0);
    let offers = h.offers();
    h.decline(10, &offers[0].1.id, f64::NAN);
    let out = h.core.take_outbox();
    let errors: Vec<String> = out.frameworks[&10]
        .iter()
        .filter_map(|e| match e.to_event().event {
            Some(event::Event::Error(e)) => Some(e.message),
            _ => None,
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("filters.refuse_seconds is NaN")),
        "{errors:?}"
    );
    // The default filter (5 s) holds; an infinite one is capped, not a panic.
    assert!(h.offers().is_empty());
    h.advance(Duration::from_secs(6));
    let offers = h.offers();
    assert_eq!(offers.len(), 1);
    h.decline(10, &offers[0].1.id, f64::INFINITY);
    h.advance(Duration::from_secs(3600));
    assert!(h.offers().is_empty());
}

#[test]
fn a_kill_with_a_bad_grace_period_is_an_error_and_not_sent() {
    let mut h = Harness::new();
    let (agent, _fw) = running_task(&mut h, 0.0);
    h.call(
        10,
        call::Call::Kill(v1::Kill {
            task_id: "t1".into(),
            agent_id: agent,
            kill_policy: Some(v1::KillPolicy {
                grace_period: Some(f64::NAN),
            }),
        }),
    );
    let out = h.core.take_outbox();
    assert!(Harness::agent_msgs(&out, 1).is_empty());
    assert!(out.frameworks[&10].iter().any(|e| matches!(
        e.to_event().event,
        Some(event::Event::Error(ref e)) if e.message.contains("kill_policy.grace_period is NaN")
    )));
}

/// Mesos's latest_state: a task that ends while its RUNNING update waits for
/// the framework's acknowledgement has its resources freed (and offered
/// again) as soon as the agent resends RUNNING saying the task finished,
/// without the framework acknowledging anything.
#[test]
fn a_task_that_ends_behind_an_unacknowledged_update_frees_its_resources() {
    let mut h = Harness::new();
    h.agent(1, "cpus:1;mem:128");
    let fw = h.framework(10, &["*"], 60.0);
    let offers = h.offers();
    h.call(
        10,
        accept(
            &offers[0].1.id,
            vec![task("t1", "cpus:1;mem:128")],
            Some(0.0),
        ),
    );
    h.core.take_outbox();
    h.agent_update(1, &fw, "t1", TaskState::TaskRunning, 1);
    h.core.take_outbox();
    assert!(h.offers().is_empty(), "the task holds the whole agent");
    // The agent resends RUNNING (not acknowledged), saying the task finished.
    h.core.agent_message(
        1,
        agent_message::Message::Updates(v1::StatusUpdates {
            statuses: vec![v1::TaskStatus {
                task_id: "t1".into(),
                framework_id: fw.clone(),
                state: TaskState::TaskRunning as i32,
                uuid: vec![1; 16],
                latest_state: Some(TaskState::TaskFinished as i32),
                ..Default::default()
            }],
        }),
        h.now,
    );
    let out = h.core.take_outbox();
    let updates = Harness::updates(&out, 10);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].state(), TaskState::TaskRunning);
    let offers = h.offers();
    assert_eq!(offers.len(), 1, "the task's resources are offered again");
    // The framework still gets, and settles, the final update; nothing is
    // freed twice.
    h.agent_update(1, &fw, "t1", TaskState::TaskFinished, 2);
    h.call(
        10,
        call::Call::Decline(v1::Decline {
            offer_ids: vec![offers[0].1.id.clone()],
            filters: Some(v1::Filters {
                refuse_seconds: Some(0.0),
            }),
        }),
    );
    h.core.take_outbox();
    let offers = h.offers();
    assert_eq!(offers.len(), 1);
    let total: f64 = offers[0]
        .1
        .resources
        .iter()
        .filter(|r| r.name == "cpus")
        .map(|r| r.scalar)
        .sum();
    assert_eq!(total, 1.0, "{:?}", offers[0].1.resources);
}
