//! Prometheus metrics of the batch framework (`GET /metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::run::RunStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    /// 1 while this instance leads.
    pub leader: Gauge,
    pub jobs: Gauge,
    pub active_runs: Gauge,
    /// Runs whose first task was launched.
    pub runs_launched: Counter,
    /// Runs that ended, by status (SUCCESS, FAILED, MISSED, SKIPPED).
    pub runs_ended_total: Family<StatusLabel, Counter>,
    /// Seconds from a run's scheduled time to its first launch.
    pub lateness: Histogram,
    pub store_writes: Counter,
    pub store_failures: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("agora_batch");
        let leader = Gauge::default();
        registry.register("leader", "1 while this instance leads", leader.clone());
        let jobs = Gauge::default();
        registry.register("jobs", "Jobs defined", jobs.clone());
        let active_runs = Gauge::default();
        registry.register("active_runs", "Runs not ended", active_runs.clone());
        let runs_launched = Counter::default();
        registry.register(
            "runs_launched",
            "Runs whose first task was launched",
            runs_launched.clone(),
        );
        let runs_ended_total = Family::<StatusLabel, Counter>::default();
        registry.register(
            "runs_ended",
            "Runs that ended, by status",
            runs_ended_total.clone(),
        );
        let lateness =
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]);
        registry.register(
            "start_lateness_seconds",
            "Seconds from a run's scheduled time to its first launch",
            lateness.clone(),
        );
        let store_writes = Counter::default();
        registry.register(
            "store_writes",
            "Values written to the store",
            store_writes.clone(),
        );
        let store_failures = Counter::default();
        registry.register(
            "store_failures",
            "Store commits that failed (each ends the term)",
            store_failures.clone(),
        );
        Metrics {
            registry,
            leader,
            jobs,
            active_runs,
            runs_launched,
            runs_ended_total,
            lateness,
            store_writes,
            store_failures,
        }
    }

    pub fn runs_ended(&self, status: RunStatus) {
        self.runs_ended_total
            .get_or_create(&StatusLabel {
                status: status.as_str().to_string(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
