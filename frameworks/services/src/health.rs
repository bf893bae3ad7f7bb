//! The health seam: the one place that says whether an instance counts as
//! healthy. Deployments (rolling restarts), counts (`tasksHealthy`) and the
//! events all ask here.
//!
//! Today an instance is healthy once it is RUNNING: the agents do not run
//! health checks yet, and `healthChecks` / `readinessChecks` are stored as
//! given. When agent-side checks report through the status's `healthy`
//! field (kept in [`Instance::healthy`]), an app with health checks will
//! count an instance healthy only when its latest check passed; only this
//! function changes.

use agora_proto::v1::TaskState;

use crate::app::AppDefinition;
use crate::instance::Instance;

/// Whether `instance` counts as healthy for `app`.
pub fn is_healthy(instance: &Instance, _app: &AppDefinition) -> bool {
    instance.state == TaskState::TaskRunning
        && !instance.killing
        && instance.unreachable_since.is_none()
}

/// What `tasksHealthy` / `tasksUnhealthy` count `instance` as: neither
/// (`None`) while the app has no health checks, as in Marathon.
pub fn reported_health(instance: &Instance, app: &AppDefinition) -> Option<bool> {
    if app.health_checks.is_empty() {
        None
    } else {
        Some(is_healthy(instance, app))
    }
}
