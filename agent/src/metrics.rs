//! The agent's `/metrics` (Prometheus text format) and the state of its
//! checkpoint writes, which `/health` reports.
//!
//! Counters and the launch-latency histogram are updated as things happen;
//! the gauges (tasks by state, status updates waiting for an
//! acknowledgement) are set from the core's counts when `/metrics` is read.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every task state, so each appears in `/metrics` even at zero.
pub(crate) const TASK_STATES: [&str; 14] = [
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

/// What the core counts when `/metrics` is read.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    /// Live tasks by their latest state (`TASK_RUNNING`, ...).
    pub tasks: Vec<(String, i64)>,
    /// Status updates not yet acknowledged, over all tasks.
    pub pending_updates: i64,
}

/// The agent's metrics and checkpoint health. Cheap to clone.
#[derive(Clone)]
pub struct AgentMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    tasks: Family<Labels, Gauge>,
    pending_updates: Gauge,
    checkpoint_writes: Counter,
    checkpoint_failures: Counter,
    containerizer_errors: Family<Labels, Counter>,
    launch_seconds: Histogram,
    /// Set while checkpoint writes fail: why the last one failed.
    checkpoint_error: Mutex<Option<String>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        let mut registry = Registry::with_prefix("agora_agent");
        let tasks = Family::<Labels, Gauge>::default();
        let pending_updates = Gauge::default();
        let checkpoint_writes = Counter::default();
        let checkpoint_failures = Counter::default();
        let containerizer_errors = Family::<Labels, Counter>::default();
        let launch_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register("tasks", "Live tasks by their latest state", tasks.clone());
        registry.register(
            "status_updates_pending",
            "Status updates not yet acknowledged by the master",
            pending_updates.clone(),
        );
        registry.register(
            "checkpoint_writes",
            "Checkpoint writes done (each file written or removed)",
            checkpoint_writes.clone(),
        );
        registry.register(
            "checkpoint_failures",
            "Checkpoint writes that failed",
            checkpoint_failures.clone(),
        );
        registry.register(
            "containerizer_errors",
            "Errors of the containerizers, by operation (launch, wait, kill, recover)",
            containerizer_errors.clone(),
        );
        registry.register(
            "launch_seconds",
            "Time from a launch's checkpoint to its task running (or failing to start)",
            launch_seconds.clone(),
        );
        AgentMetrics {
            inner: Arc::new(Inner {
                registry,
                tasks,
                pending_updates,
                checkpoint_writes,
                checkpoint_failures,
                containerizer_errors,
                launch_seconds,
                checkpoint_error: Mutex::new(None),
            }),
        }
    }

    /// A checkpoint write succeeded: checkpoints are healthy again.
    pub(crate) fn checkpoint_ok(&self, writes: u64) {
        self.inner.checkpoint_writes.inc_by(writes);
        let mut e = self.inner.checkpoint_error.lock();
        if let Some(old) = e.take() {
            tracing::info!(previous_error = %old, "checkpoint writes work again");
        }
    }

    /// A checkpoint write failed (the agent is unhealthy until one succeeds).
    pub(crate) fn checkpoint_failed(&self, reason: &str) {
        self.inner.checkpoint_writes.inc();
        self.inner.checkpoint_failures.inc();
        *self.inner.checkpoint_error.lock() = Some(reason.to_string());
    }

    /// Why checkpoints fail, while they do.
    pub fn checkpoint_error(&self) -> Option<String> {
        self.inner.checkpoint_error.lock().clone()
    }

    /// How many checkpoint writes have failed so far.
    pub fn checkpoint_failures(&self) -> u64 {
        self.inner.checkpoint_failures.get()
    }

    pub(crate) fn containerizer_error(&self, operation: &'static str) {
        self.inner
            .containerizer_errors
            .get_or_create(&vec![("operation", operation.to_string())])
            .inc();
    }

    pub(crate) fn launch_took(&self, d: Duration) {
        self.inner.launch_seconds.observe(d.as_secs_f64());
    }

    /// The text format, with the gauges set from `counts`.
    pub(crate) fn render(&self, counts: &Counts) -> String {
        let i = &self.inner;
        i.tasks.clear();
        for state in TASK_STATES {
            let n = counts
                .tasks
                .iter()
                .filter(|(s, _)| s == state)
                .map(|(_, n)| *n)
                .sum();
            i.tasks
                .get_or_create(&vec![("state", state.to_string())])
                .set(n);
        }
        i.pending_updates.set(counts.pending_updates);
        for op in ["launch", "wait", "kill", "recover"] {
            let _ = i
                .containerizer_errors
                .get_or_create(&vec![("operation", op.to_string())]);
        }
        let mut out = String::new();
        let _ = encode(&mut out, &i.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_and_tracks_checkpoint_health() {
        let m = AgentMetrics::new();
        assert!(m.checkpoint_error().is_none());
        m.checkpoint_failed("disk full");
        assert_eq!(m.checkpoint_error().as_deref(), Some("disk full"));
        m.containerizer_error("launch");
        m.launch_took(Duration::from_millis(20));
        let text = m.render(&Counts {
            tasks: vec![("TASK_RUNNING".into(), 3)],
            pending_updates: 2,
        });
        assert!(
            text.contains("agora_agent_tasks{state=\"TASK_RUNNING\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("agora_agent_tasks{state=\"TASK_LOST\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("agora_agent_status_updates_pending 2"),
            "{text}"
        );
        assert!(
            text.contains("agora_agent_checkpoint_failures_total 1"),
            "{text}"
        );
        assert!(
            text.contains("agora_agent_containerizer_errors_total{operation=\"launch\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("agora_agent_launch_seconds_count 1"),
            "{text}"
        );
        m.checkpoint_ok(1);
        assert!(m.checkpoint_error().is_none());
        assert_eq!(m.checkpoint_failures(), 1);
    }
}
