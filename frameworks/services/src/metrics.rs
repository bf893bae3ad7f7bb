//! Prometheus `/metrics` (the OpenMetrics text format).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::State;

/// Counters the controller bumps; gauges are read from the state when
/// scraped.
#[derive(Default)]
pub struct Metrics {
    pub launched: Counter,
    pub killed: Counter,
    pub failed: Counter,
    pub status_updates: Counter,
    pub offers_processed: Counter,
    pub offers_declined: Counter,
    pub deployments_succeeded: Counter,
    pub store_batches: Counter,
    pub store_batch_writes: Counter,
    pub elected: Gauge,
}

impl Metrics {
    pub fn render(&self, state: &State) -> String {
        let mut reg = Registry::with_prefix("agora_services");
        let gauge = |v: usize| {
            let g: Gauge = Gauge::default();
            g.set(v as i64);
            g
        };
        let apps = state.visible_apps().count();
        let instances: usize = state.apps.values().map(|a| a.instances.len()).sum();
        let running: usize = state
            .apps
            .values()
            .flat_map(|a| a.instances.values())
            .filter(|i| i.state == agora_proto::v1::TaskState::TaskRunning)
            .count();
        let waiting: usize = state.apps.values().map(|a| a.launch.wanted as usize).sum();
        reg.register("apps", "Apps defined", gauge(apps));
        reg.register(
            "instances",
            "Instances known (launching, running, unreachable)",
            gauge(instances),
        );
        reg.register(
            "instances_running",
            "Instances in TASK_RUNNING",
            gauge(running),
        );
        reg.register(
            "queue_instances",
            "Instances waiting to launch",
            gauge(waiting),
        );
        reg.register(
            "deployments",
            "Deployments in progress",
            gauge(state.deployments.len()),
        );
        reg.register(
            "elected",
            "1 while this instance leads",
            self.elected.clone(),
        );
        reg.register("tasks_launched", "Tasks launched", self.launched.clone());
        reg.register("tasks_killed", "Kills decided", self.killed.clone());
        reg.register(
            "tasks_failed",
            "Tasks that failed (backoff applies)",
            self.failed.clone(),
        );
        reg.register(
            "status_updates",
            "Status updates received",
            self.status_updates.clone(),
        );
        reg.register(
            "offers_processed",
            "Offers looked at",
            self.offers_processed.clone(),
        );
        reg.register(
            "offers_declined",
            "Offers declined",
            self.offers_declined.clone(),
        );
        reg.register(
            "deployments_succeeded",
            "Deployments finished",
            self.deployments_succeeded.clone(),
        );
        reg.register(
            "store_batches",
            "Batched store writes",
            self.store_batches.clone(),
        );
        reg.register(
            "store_batch_keys",
            "Keys written in batches",
            self.store_batch_writes.clone(),
        );
        let mut out = String::new();
        if encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }
}
