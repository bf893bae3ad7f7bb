//! `/metrics` in the Prometheus text format.
//!
//! Counters and the allocation histogram are updated as things happen; the
//! gauges (agents, frameworks, offers, tasks by state) are set from the
//! core's counts when `/metrics` is read.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::actor::Peer;
use crate::core::Counts;
use crate::outbound::{QueueGauges, QueueLimits, Queues};

type Labels = Vec<(&'static str, &'static str)>;

/// The master's metrics. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    agents: Family<Labels, Gauge>,
    frameworks: Family<Labels, Gauge>,
    offers: Gauge,
    tasks: Family<Labels, Gauge>,
    allocation_seconds: Histogram,
    offers_made: Counter,
    pub(crate) status_updates: Counter,
    pub(crate) calls: Counter,
    /// What waits in the streams' outbound queues, by peer kind.
    agent_queues: Arc<QueueGauges>,
    framework_queues: Arc<QueueGauges>,
    queued_messages: Family<Labels, Gauge>,
    queued_bytes: Family<Labels, Gauge>,
    queue_peak_bytes: Family<Labels, Gauge>,
    overflows: Family<Labels, Counter>,
}

/// Every task state, so each appears in `/metrics` even at zero.
const TASK_STATES: [&str; 14] = [
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_UNREACHABLE",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
    "TASK_UNKNOWN",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("agora_master");
        let agents = Family::<Labels, Gauge>::default();
        let frameworks = Family::<Labels, Gauge>::default();
        let offers = Gauge::default();
        let tasks = Family::<Labels, Gauge>::default();
        let allocation_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        let offers_made = Counter::default();
        let status_updates = Counter::default();
        let calls = Counter::default();
        registry.register("agents", "Agents by status", agents.clone());
        registry.register(
            "frameworks",
            "Frameworks by connection state",
            frameworks.clone(),
        );
        registry.register(
            "offers_outstanding",
            "Offers not yet accepted, declined or rescinded",
            offers.clone(),
        );
        registry.register(
            "tasks",
            "Tasks by state (active and recently ended)",
            tasks.clone(),
        );
        registry.register(
            "allocation_cycle_seconds",
            "Duration of allocation cycles",
            allocation_seconds.clone(),
        );
        registry.register(
            "offers_made",
            "Offers sent to frameworks",
            offers_made.clone(),
        );
        registry.register(
            "status_updates_received",
            "Status updates received from agents",
            status_updates.clone(),
        );
        registry.register(
            "scheduler_calls",
            "Calls received from frameworks",
            calls.clone(),
        );
        let queued_messages = Family::<Labels, Gauge>::default();
        let queued_bytes = Family::<Labels, Gauge>::default();
        let queue_peak_bytes = Family::<Labels, Gauge>::default();
        let overflows = Family::<Labels, Counter>::default();
        registry.register(
            "stream_queue_messages",
            "Messages waiting in the outbound queues of agent and framework streams",
            queued_messages.clone(),
        );
        registry.register(
            "stream_queue_bytes",
            "Bytes waiting in the outbound queues of agent and framework streams",
            queued_bytes.clone(),
        );
        registry.register(
            "stream_queue_peak_bytes",
            "The most bytes one stream's outbound queue held",
            queue_peak_bytes.clone(),
        );
        registry.register(
            "stream_overflows",
            "Peers disconnected because they did not read their stream (queue full)",
            overflows.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            agent_queues: Arc::default(),
            framework_queues: Arc::default(),
            queued_messages,
            queued_bytes,
            queue_peak_bytes,
            overflows,
            agents,
            frameworks,
            offers,
            tasks,
            allocation_seconds,
            offers_made,
            status_updates,
            calls,
        }
    }

    /// The queues of a term's streams, counted here.
    pub(crate) fn queues(&self, limits: QueueLimits) -> Queues {
        Queues {
            limits,
            agents: self.agent_queues.clone(),
            frameworks: self.framework_queues.clone(),
        }
    }

    /// A peer was disconnected because its queue was full.
    pub(crate) fn stream_overflow(&self, peer: Peer) {
        self.overflows
            .get_or_create(&vec![("peer", peer.as_str())])
            .inc();
    }

    pub(crate) fn observe_allocation(&self, took: Duration, offers: usize) {
        self.allocation_seconds.observe(took.as_secs_f64());
        self.offers_made.inc_by(offers as u64);
    }

    /// The text form, with the gauges set from `counts`.
    pub fn render(&self, counts: &Counts) -> String {
        for status in ["connected", "disconnected", "unreachable", "recovering"] {
            let n = counts.agents.get(status).copied().unwrap_or(0);
            self.agents
                .get_or_create(&vec![("status", status)])
                .set(n as i64);
        }
        self.frameworks
            .get_or_create(&vec![("state", "connected")])
            .set(counts.frameworks_connected as i64);
        self.frameworks
            .get_or_create(&vec![("state", "disconnected")])
            .set(counts.frameworks_disconnected as i64);
        self.frameworks
            .get_or_create(&vec![("state", "removed")])
            .set(counts.frameworks_removed as i64);
        self.offers.set(counts.offers as i64);
        for state in TASK_STATES {
            let n = counts.tasks.get(state).copied().unwrap_or(0);
            self.tasks
                .get_or_create(&vec![("state", state)])
                .set(n as i64);
        }
        for (peer, g) in [
            ("agent", &self.agent_queues),
            ("framework", &self.framework_queues),
        ] {
            use std::sync::atomic::Ordering::Relaxed;
            let labels = vec![("peer", peer)];
            self.queued_messages
                .get_or_create(&labels)
                .set(g.messages.load(Relaxed) as i64);
            self.queued_bytes
                .get_or_create(&labels)
                .set(g.bytes.load(Relaxed) as i64);
            self.queue_peak_bytes
                .get_or_create(&labels)
                .set(g.peak_bytes.load(Relaxed) as i64);
            let _ = self.overflows.get_or_create(&labels);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
