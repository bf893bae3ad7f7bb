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

/// The sending half of a stream to an agent or a framework.
pub(crate) type StreamTx<T> = mpsc::UnboundedSender<Result<T, Status>>;

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

impl Streams {
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
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
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
                        flush(&mut core, &mut streams, &registry);
                    }
                }
            }
            _ = tick.tick() => core.tick(now()),
            _ = tokio::time::sleep_until(next_cycle.into()), if cycle_pending => {}
        }
        let now = now();
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
        flush(&mut core, &mut streams, &registry);
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

fn flush(
    core: &mut MasterCore,
    streams: &mut Streams,
    registry: &mpsc::UnboundedSender<RegistryOp>,
) {
    let outbox = core.take_outbox();
    if outbox.is_empty() {
        return;
    }
    for (conn, msgs) in outbox.agents {
        if let Some((tx, _)) = streams.agents.get(&conn) {
            for m in msgs {
                let _ = tx.send(Ok(m));
            }
        }
    }
    for (conn, events) in outbox.frameworks {
        if let Some((tx, _)) = streams.frameworks.get(&conn) {
            for e in events {
                let _ = tx.send(Ok(e));
            }
        }
    }
    for conn in outbox.close {
        streams.close(conn);
    }
    for op in outbox.registry {
        let _ = registry.send(op);
    }
}
