//! The driver against the fake master: subscription, events, calls,
//! reconnection, refusal, teardown. Numbered by theme: t1x subscribing and
//! events, t2x calls, t3x reconnecting, t4x refusals, t5x stopping.

use std::time::Duration;

use agora_proto::v1::{TaskInfo, TaskState, call, event};
use agora_scheduler::testing::{FakeMaster, offer, update};
use agora_scheduler::{Event, Scheduler, SchedulerConfig, SchedulerError};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(10);

fn config(master: &FakeMaster) -> SchedulerConfig {
    SchedulerConfig {
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..SchedulerConfig::new(master.address(), "test-framework")
    }
}

/// The next event that `pick` maps to a value, skipping the others; panics
/// after [`WAIT`].
async fn wait_for<T>(
    events: &mut UnboundedReceiver<Event>,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
                seen.push(event);
            }
            Ok(None) => panic!("the driver ended before {what}; saw {seen:?}"),
            Err(_) => panic!("no {what} within {WAIT:?}; saw {seen:?}"),
        }
    }
}

/// Waits for `Subscribed`; returns `(framework_id, resubscribed)`.
async fn subscribed(events: &mut UnboundedReceiver<Event>) -> (String, bool) {
    wait_for(events, "Subscribed", |e| match e {
        Event::Subscribed {
            framework_id,
            resubscribed,
            ..
        } => Some((framework_id.clone(), *resubscribed)),
        _ => None,
    })
    .await
}

async fn stopped(events: &mut UnboundedReceiver<Event>) -> String {
    let reason = wait_for(events, "Stopped", |e| match e {
        Event::Stopped { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    // Stopped is the last event: the channel closes right after.
    let end = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("channel closes");
    assert_eq!(end, None, "an event after Stopped");
    reason
}

async fn start(master: &FakeMaster) -> (Scheduler, UnboundedReceiver<Event>, String) {
    let (scheduler, mut events) = Scheduler::start(config(master)).unwrap();
    let (id, resubscribed) = subscribed(&mut events).await;
    assert!(!resubscribed);
    (scheduler, events, id)
}

#[tokio::test]
async fn t10_subscribe_gets_a_framework_id() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events) = Scheduler::start(config(&master)).unwrap();
    assert_eq!(scheduler.framework_id(), None);
    let event = wait_for(&mut events, "Subscribed", |e| Some(e.clone())).await;
    let Event::Subscribed {
        framework_id,
        master: info,
        resubscribed,
    } = event
    else {
        panic!("the first event is {event:?}")
    };
    assert_eq!(framework_id, "fake-0001");
    assert_eq!(info.id, "fake");
    assert!(!resubscribed);
    assert_eq!(scheduler.framework_id().as_deref(), Some("fake-0001"));
    assert!(scheduler.is_connected());
    let sent = master.subscriptions();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].id, "");
    assert_eq!(sent[0].name, "test-framework");
    assert!(sent[0].checkpoint, "checkpoint is on by default");
    assert_eq!(sent[0].roles, ["*"]);
}

#[tokio::test]
async fn t11_the_masters_events_arrive_in_order() {
    let master = FakeMaster::start().await;
    let (_scheduler, mut events, id) = start(&master).await;
    master.wait_for_connected(Some(&id)).await;
    let offers = vec![
        offer("o1", "a1", "host1", "cpus:1;mem:128"),
        offer("o2", "a2", "host2", "cpus:2;mem:256"),
    ];
    master.send_offers(offers.clone());
    master.send(event::Event::Rescind(agora_proto::v1::Rescind {
        offer_ids: vec!["o1".into()],
    }));
    let statuses = vec![update("t1", "a1", TaskState::TaskRunning, Some(1), "")];
    master.send_updates(statuses.clone());
    master.send(event::Event::Heartbeat(agora_proto::v1::Heartbeat {}));
    master.send(event::Event::Failure(agora_proto::v1::Failure {
        agent_id: "a2".into(),
    }));
    master.send(event::Event::Error(agora_proto::v1::Error {
        message: "offer o9 does not exist".into(),
    }));
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(wait_for(&mut events, "an event", |e| Some(e.clone())).await);
    }
    assert_eq!(
        got,
        vec![
            Event::Offers(offers),
            Event::Rescind(vec!["o1".into()]),
            Event::Updates(statuses),
            // Heartbeats are not events.
            Event::Failure {
                agent_id: "a2".into()
            },
            Event::Error("offer o9 does not exist".into()),
        ]
    );
    // An error alone does not end the session.
    master.send_offers(vec![offer("o3", "a1", "host1", "cpus:1")]);
    let again = wait_for(&mut events, "offers", |e| match e {
        Event::Offers(o) => Some(o.clone()),
        _ => None,
    })
    .await;
    assert_eq!(again[0].id, "o3");
}

#[tokio::test]
async fn t20_calls_are_sent_as_given() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events, _id) = start(&master).await;
    master.send_offers(vec![offer("o1", "a1", "host1", "cpus:1;mem:128")]);
    wait_for(&mut events, "offers", |e| {
        matches!(e, Event::Offers(_)).then_some(())
    })
    .await;

    let task = TaskInfo {
        name: "t".into(),
        task_id: "t1".into(),
        ..Default::default()
    };
    scheduler
        .accept(vec!["o1".into()], vec![task], Some(30.0))
        .unwrap();
    scheduler.decline(vec!["o2".into()], Some(7.0)).unwrap();
    scheduler.decline(vec!["o3".into()], None).unwrap();
    scheduler.revive(vec!["web".into()]).unwrap();
    scheduler.suppress(vec![]).unwrap();
    scheduler
        .kill("t1", "a1", Some(Duration::from_secs(2)))
        .unwrap();
    scheduler.kill("t2", "a2", None).unwrap();
    scheduler
        .reconcile(vec![("t1".into(), "a1".into())])
        .unwrap();
    scheduler.reconcile(vec![]).unwrap();

    let calls = master
        .wait_for_calls("9 calls", 9, |c| Some(c.clone()))
        .await;
    let call::Call::Accept(accept) = &calls[0] else {
        panic!("{:?}", calls[0])
    };
    assert_eq!(accept.offer_ids, ["o1"]);
    assert_eq!(accept.filters.unwrap().refuse_seconds, Some(30.0));
    let Some(agora_proto::v1::operation::Operation::Launch(launch)) =
        &accept.operations[0].operation
    else {
        panic!("{accept:?}")
    };
    assert_eq!(launch.task_infos[0].task_id, "t1");
    assert_eq!(
        launch.task_infos[0].agent_id, "a1",
        "the driver fills in the offer's agent"
    );
    let call::Call::Decline(d) = &calls[1] else {
        panic!("{:?}", calls[1])
    };
    assert_eq!(d.offer_ids, ["o2"]);
    assert_eq!(d.filters.unwrap().refuse_seconds, Some(7.0));
    let call::Call::Decline(d) = &calls[2] else {
        panic!("{:?}", calls[2])
    };
    assert_eq!(d.filters, None, "None leaves the master's default");
    assert!(matches!(&calls[3], call::Call::Revive(r) if r.roles == ["web"]));
    assert!(matches!(&calls[4], call::Call::Suppress(s) if s.roles.is_empty()));
    let call::Call::Kill(k) = &calls[5] else {
        panic!("{:?}", calls[5])
    };
    assert_eq!((k.task_id.as_str(), k.agent_id.as_str()), ("t1", "a1"));
    assert_eq!(k.kill_policy.unwrap().grace_period, Some(2.0));
    assert!(
        matches!(&calls[6], call::Call::Kill(k) if k.task_id == "t2" && k.kill_policy.is_none())
    );
    let call::Call::Reconcile(r) = &calls[7] else {
        panic!("{:?}", calls[7])
    };
    assert_eq!(r.tasks.len(), 1);
    assert_eq!(
        (r.tasks[0].task_id.as_str(), r.tasks[0].agent_id.as_str()),
        ("t1", "a1")
    );
    assert!(matches!(&calls[8], call::Call::Reconcile(r) if r.tasks.is_empty()));
}

#[tokio::test]
async fn t21_acknowledge_skips_updates_without_a_uuid() {
    let master = FakeMaster::start().await;
    let (scheduler, _events, _id) = start(&master).await;
    let updates = vec![
        update("t1", "a1", TaskState::TaskRunning, Some(1), ""),
        update("t2", "a1", TaskState::TaskError, None, "invalid"),
        update("t3", "a2", TaskState::TaskFinished, Some(3), ""),
    ];
    // Only master-made updates: nothing to send, and that is fine.
    scheduler.acknowledge(&updates[1..2]).unwrap();
    scheduler.acknowledge(&updates).unwrap();
    // A marker call, so that everything before it has arrived.
    scheduler.reconcile(vec![]).unwrap();
    master
        .wait_for_call("the marker", |c| {
            matches!(c, call::Call::Reconcile(_)).then_some(())
        })
        .await;
    let calls = master.calls();
    assert_eq!(calls.len(), 2, "one acknowledge, one reconcile: {calls:?}");
    let Some(call::Call::Acknowledge(ack)) = &calls[0].call else {
        panic!("{calls:?}")
    };
    let acked: Vec<_> = ack
        .acks
        .iter()
        .map(|a| (a.task_id.as_str(), a.agent_id.as_str(), a.uuid[0]))
        .collect();
    assert_eq!(acked, [("t1", "a1", 1), ("t3", "a2", 3)]);
}

#[tokio::test]
async fn t30_reconnects_after_the_stream_breaks() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events, id) = start(&master).await;
    master.wait_for_connected(Some(&id)).await;
    master.break_streams();
    let reason = wait_for(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("broke"), "{reason}");
    let (again, resubscribed) = subscribed(&mut events).await;
    assert_eq!(again, id);
    assert!(resubscribed);
    let sent = master.wait_for_subscriptions(2).await;
    assert_eq!(sent[1].id, id, "resubscribes with the framework id");
    // Calls go through the new stream.
    scheduler.reconcile(vec![]).unwrap();
    master
        .wait_for_call("reconcile", |c| {
            matches!(c, call::Call::Reconcile(_)).then_some(())
        })
        .await;
}

#[tokio::test]
async fn t31_reconnects_after_the_master_closes_the_stream() {
    let master = FakeMaster::start().await;
    let (_scheduler, mut events, id) = start(&master).await;
    master.wait_for_connected(Some(&id)).await;
    master.close_streams();
    let reason = wait_for(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("closed"), "{reason}");
    assert_eq!(subscribed(&mut events).await, (id, true));
}

#[tokio::test]
async fn t32_reconnects_after_the_master_was_down_for_a_while() {
    let mut master = FakeMaster::start().await;
    let (scheduler, mut events, id) = start(&master).await;
    master.stop().await;
    // Several attempts fail while the master is down, each one reported.
    for _ in 0..3 {
        wait_for(&mut events, "Disconnected", |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await;
    }
    assert!(!scheduler.is_connected());
    assert_eq!(
        scheduler.decline(vec!["o1".into()], None),
        Err(SchedulerError::NotConnected)
    );
    assert_eq!(
        scheduler.reconcile(vec![]),
        Err(SchedulerError::NotConnected)
    );
    assert_eq!(
        scheduler.teardown().await,
        Err(SchedulerError::NotConnected)
    );
    // The framework id stays known while disconnected.
    assert_eq!(scheduler.framework_id().as_deref(), Some(id.as_str()));
    master.restart().await;
    assert_eq!(subscribed(&mut events).await, (id.clone(), true));
    assert_eq!(master.subscriptions().last().unwrap().id, id);
    scheduler.decline(vec!["o1".into()], None).unwrap();
}

#[tokio::test]
async fn t33_reconnects_when_the_master_goes_silent() {
    let master = FakeMaster::start().await;
    master.set_heartbeats(0.1, false);
    let (_scheduler, mut events, id) = start(&master).await;
    let reason = wait_for(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("3 heartbeat intervals"), "{reason}");
    master.set_heartbeats(15.0, true);
    assert_eq!(subscribed(&mut events).await, (id, true));
}

#[tokio::test]
async fn t34_heartbeats_keep_the_session_alive() {
    let master = FakeMaster::start().await;
    master.set_heartbeats(0.05, true);
    let (_scheduler, mut events, id) = start(&master).await;
    // Ten heartbeats span more than three intervals of the driver's patience.
    master.wait_for_heartbeats(10).await;
    master.send(event::Event::Error(agora_proto::v1::Error {
        message: "marker".into(),
    }));
    let got = wait_for(&mut events, "the marker", |e| Some(e.clone())).await;
    assert_eq!(
        got,
        Event::Error("marker".into()),
        "no disconnection came first"
    );
    assert_eq!(master.subscriptions().len(), 1);
    assert!(master.connected().contains(&id));
}

#[tokio::test]
async fn t35_suppression_survives_a_reconnection() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events, _id) = start(&master).await;
    scheduler.suppress(vec![]).unwrap();
    master
        .wait_for_call("suppress", |c| {
            matches!(c, call::Call::Suppress(_)).then_some(())
        })
        .await;
    master.break_streams();
    subscribed(&mut events).await;
    let suppressed = master
        .wait_for_calls("a second suppress", 2, |c| match c {
            call::Call::Suppress(s) => Some(s.roles.clone()),
            _ => None,
        })
        .await;
    assert_eq!(suppressed[1], ["*"]);
    // After a revive, a reconnection does not suppress again.
    scheduler.revive(vec![]).unwrap();
    master
        .wait_for_call("revive", |c| {
            matches!(c, call::Call::Revive(_)).then_some(())
        })
        .await;
    master.break_streams();
    subscribed(&mut events).await;
    scheduler.reconcile(vec![]).unwrap();
    master
        .wait_for_call("reconcile", |c| {
            matches!(c, call::Call::Reconcile(_)).then_some(())
        })
        .await;
    let suppresses = master
        .calls()
        .iter()
        .filter(|c| matches!(c.call, Some(call::Call::Suppress(_))))
        .count();
    assert_eq!(suppresses, 2);
}

#[tokio::test]
async fn t40_an_error_on_subscribe_stops_the_driver() {
    let master = FakeMaster::start().await;
    master.refuse_subscriptions(Some("role `web` is not allowed"));
    let (scheduler, mut events) = Scheduler::start(config(&master)).unwrap();
    let error = wait_for(&mut events, "Error", |e| match e {
        Event::Error(m) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(error, "role `web` is not allowed");
    let reason = stopped(&mut events).await;
    assert!(reason.contains("refused"), "{reason}");
    assert_eq!(master.subscriptions().len(), 1, "no retry");
    assert_eq!(scheduler.reconcile(vec![]), Err(SchedulerError::Stopped));
    assert_eq!(scheduler.teardown().await, Err(SchedulerError::Stopped));
}

#[tokio::test]
async fn t41_an_unknown_framework_id_stops_the_driver() {
    let master = FakeMaster::start().await;
    let mut config = config(&master);
    config.framework.id = "fake-9999".into();
    let (scheduler, mut events) = Scheduler::start(config).unwrap();
    assert_eq!(scheduler.framework_id().as_deref(), Some("fake-9999"));
    let error = wait_for(&mut events, "Error", |e| match e {
        Event::Error(m) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("unknown"), "{error}");
    stopped(&mut events).await;
    assert_eq!(master.subscriptions()[0].id, "fake-9999");
}

#[tokio::test]
async fn t42_a_framework_removed_while_disconnected_stops_the_driver() {
    let master = FakeMaster::start().await;
    let (_scheduler, mut events, id) = start(&master).await;
    master.forget_framework(&id);
    master.break_streams();
    wait_for(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await;
    stopped(&mut events).await;
    assert_eq!(master.subscriptions().len(), 2);
}

#[tokio::test]
async fn t43_a_failover_to_another_instance_stops_the_old_one() {
    let master = FakeMaster::start().await;
    let (_old, mut old_events, id) = start(&master).await;
    let mut config = config(&master);
    config.framework.id = id.clone();
    let (_new, mut new_events) = Scheduler::start(config).unwrap();
    assert_eq!(subscribed(&mut new_events).await, (id.clone(), true));
    let error = wait_for(&mut old_events, "Error", |e| match e {
        Event::Error(m) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(error, "framework failed over");
    let reason = stopped(&mut old_events).await;
    assert!(reason.contains("failed over"), "{reason}");
    // The old one does not fight back.
    assert_eq!(master.subscriptions().len(), 2);
    assert!(master.connected().contains(&id));
}

#[tokio::test]
async fn t50_teardown_removes_the_framework_and_stops() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events, id) = start(&master).await;
    scheduler.teardown().await.unwrap();
    master
        .wait_for_call("teardown", |c| {
            matches!(c, call::Call::Teardown(_)).then_some(())
        })
        .await;
    let reason = stopped(&mut events).await;
    assert!(reason.contains("torn down"), "{reason}");
    assert_eq!(scheduler.kill("t", "a", None), Err(SchedulerError::Stopped));
    master.wait_for_connected(None).await;
    // The master forgot it: a new driver with that id is refused.
    let mut config = config(&master);
    config.framework.id = id;
    let (_again, mut events) = Scheduler::start(config).unwrap();
    stopped(&mut events).await;
}

#[tokio::test]
async fn t51_stop_disconnects_without_teardown() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events, id) = start(&master).await;
    let clone = scheduler.clone();
    scheduler.stop().await;
    let reason = stopped(&mut events).await;
    assert!(reason.contains("stopped by the framework"), "{reason}");
    assert_eq!(clone.reconcile(vec![]), Err(SchedulerError::Stopped));
    clone.stop().await; // stopping twice is fine
    master.wait_for_connected(None).await;
    assert!(
        !master
            .calls()
            .iter()
            .any(|c| matches!(c.call, Some(call::Call::Teardown(_))))
    );
    // The framework is kept: a new driver takes it over.
    let mut config = config(&master);
    config.framework.id = id.clone();
    let (_new, mut events) = Scheduler::start(config).unwrap();
    assert_eq!(subscribed(&mut events).await, (id, true));
}

#[tokio::test]
async fn t52_dropping_the_receiver_or_every_handle_stops_the_driver() {
    let master = FakeMaster::start().await;
    let (scheduler, events, id) = start(&master).await;
    master.wait_for_connected(Some(&id)).await;
    drop(events);
    master.wait_for_connected(None).await;
    assert_eq!(scheduler.reconcile(vec![]), Err(SchedulerError::Stopped));

    let (scheduler, mut events, id) = start(&master).await;
    master.wait_for_connected(Some(&id)).await;
    drop(scheduler);
    let reason = stopped(&mut events).await;
    assert!(reason.contains("handle"), "{reason}");
    master.wait_for_connected(None).await;
}

#[tokio::test]
async fn t53_calls_before_the_first_subscription_are_refused() {
    // Nothing listens on this address.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let config = SchedulerConfig {
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(100),
        ..SchedulerConfig::new(address, "lonely")
    };
    let (scheduler, mut events) = Scheduler::start(config).unwrap();
    let reason = wait_for(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("cannot connect"), "{reason}");
    assert_eq!(
        scheduler.accept(vec!["o".into()], vec![], None),
        Err(SchedulerError::NotConnected)
    );
    assert_eq!(scheduler.framework_id(), None);
    scheduler.stop().await;
    stopped(&mut events).await;
}

#[tokio::test]
async fn t54_bad_configuration_is_refused_at_start() {
    let err = Scheduler::start(SchedulerConfig::new("zk://z1:2181", "x")).unwrap_err();
    assert!(matches!(err, SchedulerError::InvalidMaster { .. }), "{err}");
    let master = FakeMaster::start().await;
    let (scheduler, _events, _id) = start(&master).await;
    let err = scheduler.decline(vec![], None).unwrap_err();
    assert!(matches!(err, SchedulerError::InvalidCall(_)), "{err}");
}
