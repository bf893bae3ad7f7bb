//! The actor that owns the [`MasterCore`]: it drains one channel of inputs
//! (from gRPC streams and HTTP handlers), feeds them to the core with the
//! current time, runs allocation cycles, and sends what the core decided.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use agora_proto::v1::{MasterToAgent, RegisterAgent, Subscribe, agent_message, call};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::core::view::{
    FrameworkRef, TaskLocation, TaskLookupError, TaskQuery, WebUiLookupError, WebUiTarget,
};
use crate::core::{ConnId, Counts, MasterCore, Now, OutEvent, RegistryOp};
use crate::metrics::Metrics;
use crate::outbound::{OutTx, Overflow};

/// The sending half of a stream to an agent or a framework: a bounded
/// queue (see [`crate::outbound`]).
pub(crate) type StreamTx<T> = OutTx<T>;

/// Everything that reaches the actor.
pub(crate) enum Input {
    AgentOpened {
        conn: ConnId,
        register: RegisterAgent,
        tx: StreamTx<MasterToAgent>,
        cancel: CancellationToken,
    },
    AgentMessage {
        conn: ConnId,
        msg: agent_message::Message,
    },
    AgentClosed {
        conn: ConnId,
    },
    FrameworkOpened {
        conn: ConnId,
        subscribe: Subscribe,
        tx: StreamTx<OutEvent>,
        cancel: CancellationToken,
    },
    FrameworkCall {
        conn: ConnId,
        call: call::Call,
    },
    FrameworkClosed {
        conn: ConnId,
    },
    State(oneshot::Sender<serde_json::Value>),
    /// What the UI's dashboard shows (`/state-summary`).
    Summary(oneshot::Sender<serde_json::Value>),
    /// Tasks, filtered and paged (`/tasks`).
    Tasks(TaskQuery, oneshot::Sender<serde_json::Value>),
    /// Where a framework serves its web UI (the proxy).
    WebUi(
        FrameworkRef,
        oneshot::Sender<Result<WebUiTarget, WebUiLookupError>>,
    ),
    /// Where a task's logs are (the task-log proxy).
    TaskLocation {
        task_id: String,
        framework_id: Option<String>,
        reply: oneshot::Sender<Result<TaskLocation, TaskLookupError>>,
    },
    Counts(oneshot::Sender<Counts>),
    /// A test's fault hook (`MasterConfig::fault_hooks`): the actor panics
    /// as a bug in the core would.
    Panic,
}

/// How often deadlines (agent, failover and offer timeouts, heartbeats) are
/// checked.
const TICK: Duration = Duration::from_millis(100);

/// Inputs handled per batch before the actor allocates.
const BATCH: usize = 4096;

/// Within a batch, what the core decided is sent after this many inputs, so
/// that agents start on the first launches of a burst while the master
/// still reads the rest.
const FLUSH_EVERY: usize = 32;

/// Cycles that events ask for (rather than the periodic one) wait until the
/// actor has spent this many times the last cycle's duration on other work,
/// so that on a large cluster a stream of small events cannot keep the actor
/// allocating. On small clusters (cycles of microseconds) this is no wait.
const CYCLE_SPACING: u32 = 3;

pub(crate) fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: agora_proto::unix_seconds(SystemTime::now()),
    }
}

struct Streams {
    agents: HashMap<ConnId, (StreamTx<MasterToAgent>, CancellationToken)>,
    frameworks: HashMap<ConnId, (StreamTx<OutEvent>, CancellationToken)>,
}

/// Which kind of peer a stream goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Agent,
    Framework,
}

impl Peer {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Peer::Agent => "agent",
            Peer::Framework => "framework",
        }
    }
}

impl Streams {
    /// Ends a stream at once with `status` (what waits in its queue is
    /// dropped).
    fn fail(&mut self, conn: ConnId, status: Status) {
        if let Some((tx, cancel)) = self.agents.remove(&conn) {
            tx.fail(status.clone());
            cancel.cancel();
        }
        if let Some((tx, cancel)) = self.frameworks.remove(&conn) {
            tx.fail(status);
            cancel.cancel();
        }
    }

    fn close(&mut self, conn: ConnId) {
        if let Some((_, cancel)) = self.agents.remove(&conn) {
            cancel.cancel();
        }
        if let Some((_, cancel)) = self.frameworks.remove(&conn) {
            cancel.cancel();
        }
    }
}

/// Runs the actor until `shutdown` fires or every input sender is gone.
pub(crate) async fn run(
    mut core: MasterCore,
    mut inputs: mpsc::Receiver<Input>,
    registry: mpsc::UnboundedSender<RegistryOp>,
    metrics: Metrics,
    address: String,
    shutdown: CancellationToken,
) {
    let mut streams = Streams {
        agents: HashMap::new(),
        frameworks: HashMap::new(),
    };
    // Periodic duties run every TICK, whether or not inputs keep coming:
    // the select below prefers inputs, so the deadline is also checked
    // after every batch.
    let mut next_tick = Instant::now() + TICK;
    let mut batch = Vec::with_capacity(BATCH);
    // When the next cycle may run (see CYCLE_SPACING).
    let mut next_cycle = Instant::now();
    let mut cycle_pending = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            n = inputs.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                let now = now();
                for (i, input) in batch.drain(..).enumerate() {
                    handle(&mut core, &mut streams, input, now, &metrics, &address);
                    if (i + 1) % FLUSH_EVERY == 0 {
                        flush(&mut core, &mut streams, &registry, &metrics);
                    }
                }
            }
            _ = tokio::time::sleep_until(next_tick.into()) => {}
            _ = tokio::time::sleep_until(next_cycle.into()), if cycle_pending => {}
        }
        let now = now();
        if now.instant >= next_tick {
            core.tick(now);
            next_tick = now.instant + TICK;
        }
        cycle_pending = false;
        if core.allocation_due(now) {
            if now.instant >= next_cycle {
                let offers = core.allocate(now);
                let took = now.instant.elapsed();
                metrics.observe_allocation(took, offers);
                next_cycle = Instant::now() + took * CYCLE_SPACING;
            } else {
                cycle_pending = true;
            }
        }
        flush(&mut core, &mut streams, &registry, &metrics);
    }
    // Ending every stream lets agents and frameworks notice at once.
    for (_, (_, cancel)) in streams.agents.drain() {
        cancel.cancel();
    }
    for (_, (_, cancel)) in streams.frameworks.drain() {
        cancel.cancel();
    }
    tracing::info!("master actor stopped");
}

fn handle(
    core: &mut MasterCore,
    streams: &mut Streams,
    input: Input,
    now: Now,
    metrics: &Metrics,
    address: &str,
) {
    match input {
        Input::AgentOpened {
            conn,
            register,
            tx,
            cancel,
        } => {
            streams.agents.insert(conn, (tx, cancel));
            core.agent_register(conn, register, now);
        }
        Input::AgentMessage { conn, msg } => {
            if let agent_message::Message::Updates(u) = &msg {
                metrics.status_updates.inc_by(u.statuses.len() as u64);
            }
            core.agent_message(conn, msg, now)
        }
        Input::AgentClosed { conn } => {
            streams.close(conn);
            core.agent_closed(conn, now);
        }
        Input::FrameworkOpened {
            conn,
            subscribe,
            tx,
            cancel,
        } => {
            streams.frameworks.insert(conn, (tx, cancel));
            core.framework_subscribe(conn, subscribe, now);
        }
        Input::FrameworkCall { conn, call } => {
            metrics.calls.inc();
            core.framework_call(conn, call, now)
        }
        Input::FrameworkClosed { conn } => {
            streams.close(conn);
            core.framework_closed(conn, now);
        }
        Input::State(reply) => {
            let _ = reply.send(core.state_json(address));
        }
        Input::Summary(reply) => {
            let _ = reply.send(core.summary_json(address));
        }
        Input::Tasks(query, reply) => {
            let _ = reply.send(core.tasks_json(&query));
        }
        Input::WebUi(key, reply) => {
            let _ = reply.send(core.framework_webui(&key));
        }
        Input::TaskLocation {
            task_id,
            framework_id,
            reply,
        } => {
            let _ = reply.send(core.task_location(&task_id, framework_id.as_deref()));
        }
        Input::Counts(reply) => {
            let _ = reply.send(core.counts());
        }
        Input::Panic => panic!("fault hook: the core was asked to panic"),
    }
}

/// Sends what the core decided. A peer whose queue is full (it does not
/// read its stream) is disconnected with the reason, and the core treats it
/// as any peer whose stream ended; what the core decides about that is sent
/// in turn.
fn flush(
    core: &mut MasterCore,
    streams: &mut Streams,
    registry: &mpsc::UnboundedSender<RegistryOp>,
    metrics: &Metrics,
) {
    loop {
        let outbox = core.take_outbox();
        if outbox.is_empty() {
            return;
        }
        let mut slow: Vec<(Peer, ConnId, Overflow)> = Vec::new();
        for (conn, msgs) in outbox.agents {
            if let Some((tx, _)) = streams.agents.get(&conn) {
                for m in msgs {
                    if let Err(o) = tx.push(m) {
                        slow.push((Peer::Agent, conn, o));
                        break;
                    }
                }
            }
        }
        for (conn, events) in outbox.frameworks {
            if let Some((tx, _)) = streams.frameworks.get(&conn) {
                for e in events {
                    if let Err(o) = tx.push(e) {
                        slow.push((Peer::Framework, conn, o));
                        break;
                    }
                }
            }
        }
        for conn in outbox.close {
            streams.close(conn);
        }
        for op in outbox.registry {
            let _ = registry.send(op);
        }
        if slow.is_empty() {
            return;
        }
        let now = now();
        for (peer, conn, overflow) in slow {
            tracing::warn!(peer = peer.as_str(), conn, %overflow,
                "disconnecting a peer that does not read its stream");
            metrics.stream_overflow(peer);
            streams.fail(
                conn,
                Status::resource_exhausted(format!(
                    "the master disconnected this {} stream: {overflow}",
                    peer.as_str()
                )),
            );
            match peer {
                Peer::Agent => core.agent_closed(conn, now),
                Peer::Framework => core.framework_closed(conn, now),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agora_allocator::AllocatorConfig;
    use agora_proto::v1::{self, FrameworkInfo, MasterInfo, event};
    use futures::StreamExt;

    use super::*;
    use crate::core::CoreConfig;
    use crate::outbound::{QueueGauges, QueueLimits, queue};

    fn subscribe(name: &str, failover: f64) -> Subscribe {
        Subscribe {
            framework_info: Some(FrameworkInfo {
                name: name.into(),
                failover_timeout: failover,
                ..Default::default()
            }),
        }
    }

    /// Inputs that never stop coming do not starve the periodic duties:
    /// heartbeats go out and failover timeouts fire while the actor's
    /// channel is never empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn periodic_work_runs_while_inputs_flood_the_actor() {
        let config = CoreConfig {
            framework_heartbeat_interval: Duration::from_millis(50),
            ..Default::default()
        };
        let info = MasterInfo {
            id: "m".into(),
            ..Default::default()
        };
        let core = MasterCore::new(info, config, AllocatorConfig::default(), now());
        let (input_tx, input_rx) = mpsc::channel(1024);
        let (registry_tx, _registry_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let actor = tokio::spawn(run(
            core,
            input_rx,
            registry_tx,
            Metrics::new(),
            "m:5050".into(),
            cancel.clone(),
        ));
        let gauges = Arc::new(QueueGauges::default());
        let limits = QueueLimits::default();
        // A framework that stays, and one that leaves with a short
        // failover timeout.
        let (tx, mut events) = queue(limits, gauges.clone());
        input_tx
            .send(Input::FrameworkOpened {
                conn: 1,
                subscribe: subscribe("stays", 3600.0),
                tx,
                cancel: CancellationToken::new(),
            })
            .await
            .unwrap();
        let (tx, _leaver) = queue(limits, gauges.clone());
        input_tx
            .send(Input::FrameworkOpened {
                conn: 2,
                subscribe: subscribe("leaves", 0.05),
                tx,
                cancel: CancellationToken::new(),
            })
            .await
            .unwrap();
        input_tx
            .send(Input::FrameworkClosed { conn: 2 })
            .await
            .unwrap();
        // The flood: the channel is refilled as fast as the actor drains it.
        let flooding = CancellationToken::new();
        let mut flooders = Vec::new();
        for _ in 0..4 {
            let tx = input_tx.clone();
            let stop = flooding.clone();
            flooders.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let (reply, _) = oneshot::channel();
                    if tx.send(Input::Counts(reply)).await.is_err() {
                        return;
                    }
                }
            }));
        }
        // Heartbeats keep coming.
        let mut heartbeats = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while heartbeats < 5 {
            let ev = tokio::time::timeout_at(deadline, events.next())
                .await
                .unwrap_or_else(|_| panic!("5 heartbeats in time, got {heartbeats}"))
                .expect("the stream stays open")
                .expect("no failure");
            if matches!(
                ev.to_event().event,
                Some(event::Event::Heartbeat(v1::Heartbeat {}))
            ) {
                heartbeats += 1;
            }
        }
        // The framework that left was removed (its failover timeout
        // fired), while the flood still goes on.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (reply, counts) = oneshot::channel();
            input_tx.send(Input::Counts(reply)).await.unwrap();
            if counts.await.unwrap().frameworks_removed == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the failover timeout fired in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        flooding.cancel();
        for f in flooders {
            f.await.unwrap();
        }
        cancel.cancel();
        actor.await.unwrap();
    }
}
