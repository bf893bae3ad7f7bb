//! The health seam: the one place that says whether an instance counts as
//! healthy. Deployments (rolling restarts, scaling), counts
//! (`tasksHealthy`) and the task JSON all ask here.
//!
//! An instance is judged by the checks it was launched with (an app's
//! checks may have changed since): without health checks it is healthy
//! once `RUNNING`; with them, once its agent reports them passing
//! (`TaskStatus.healthy`). A deployment also waits for readiness: an
//! instance launched with readiness checks serves only once its agent
//! reports it ready.

use agora_proto::v1::TaskState;
use serde_json::{Value, json};

use crate::instance::Instance;

fn up(instance: &Instance) -> bool {
    instance.state == TaskState::TaskRunning
        && !instance.killing
        && instance.unreachable_since.is_none()
}

/// Whether `instance` is healthy (`tasksHealthy`).
pub fn is_healthy(instance: &Instance) -> bool {
    up(instance) && (!instance.health_checked || instance.healthy == Some(true))
}

/// Whether `instance` counts for a deployment: healthy, and ready when it
/// has readiness checks.
pub fn is_serving(instance: &Instance) -> bool {
    is_healthy(instance) && (!instance.readiness_checked || instance.ready == Some(true))
}

/// What `tasksHealthy` / `tasksUnhealthy` count `instance` as: neither
/// (`None`) without health checks, as in Marathon.
pub fn reported_health(instance: &Instance) -> Option<bool> {
    instance.health_checked.then(|| is_healthy(instance))
}

/// Marathon's `healthCheckResults` of a task: one entry once its checks
/// have a verdict.
pub fn results(instance: &Instance) -> Vec<Value> {
    match (instance.health_checked, instance.healthy) {
        (true, Some(alive)) => vec![json!({
            "alive": alive,
            "consecutiveFailures": if alive { 0 } else { 1 },
            "firstSuccess": null,
            "lastFailure": null,
            "lastFailureCause": null,
            "lastSuccess": null,
            "instanceId": instance.task_id,
            "taskId": instance.task_id,
        })],
        _ => Vec::new(),
    }
}
