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

use agora_proto::v1::{StatusReason, TaskState, TaskStatus};
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

/// What `tasksHealthy` / `tasksUnhealthy` count `instance` as. As in
/// Marathon, neither (`None`) without health checks, nor while its checks
/// have no verdict (staging, or failing in their grace period): unhealthy
/// means its agent reported a check failing.
pub fn reported_health(instance: &Instance) -> Option<bool> {
    if !instance.health_checked {
        None
    } else if is_healthy(instance) {
        Some(true)
    } else if instance.healthy == Some(false) && instance.is_active() {
        Some(false)
    } else {
        None
    }
}

/// Whether `status` is the end of a task its agent killed because a
/// health check failed too often (`TASK_KILLED` with the health reason).
pub fn killed_by_check(status: &TaskStatus) -> bool {
    status.state() == TaskState::TaskKilled
        && status.reason() == StatusReason::ReasonTaskHealthCheckStatusUpdated
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
            "lastFailureCause": instance.health_failure,
            "lastSuccess": null,
            "instanceId": instance.task_id,
            "taskId": instance.task_id,
        })],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(state: TaskState, checked: bool, healthy: Option<bool>) -> Instance {
        Instance {
            task_id: "a.1".into(),
            app_id: "/a".into(),
            version: 1,
            config_version: 1,
            agent_id: "agent".into(),
            host: "host".into(),
            ports: vec![31000],
            state,
            staged_at: 1,
            started_at: None,
            healthy,
            health_failure: None,
            ready: None,
            health_checked: checked,
            readiness_checked: false,
            unreachable_since: None,
            killing: false,
            role: "*".into(),
            attributes: String::new(),
        }
    }

    #[test]
    fn counted_unhealthy_only_once_a_check_failed() {
        use TaskState::*;
        // Without checks: healthy once running, never counted.
        let i = instance(TaskRunning, false, None);
        assert!(is_healthy(&i));
        assert_eq!(reported_health(&i), None);
        // Staging, or running without a verdict yet: neither.
        assert_eq!(reported_health(&instance(TaskStaging, true, None)), None);
        let waiting = instance(TaskRunning, true, None);
        assert!(!is_healthy(&waiting));
        assert_eq!(reported_health(&waiting), None);
        assert!(results(&waiting).is_empty());
        // A verdict: counted either way.
        assert_eq!(
            reported_health(&instance(TaskRunning, true, Some(true))),
            Some(true)
        );
        let mut failing = instance(TaskRunning, true, Some(false));
        failing.health_failure = Some("The health check (TCP 127.0.0.1:31000) failed".into());
        assert_eq!(reported_health(&failing), Some(false));
        assert_eq!(results(&failing)[0]["alive"], false);
        assert_eq!(
            results(&failing)[0]["lastFailureCause"],
            "The health check (TCP 127.0.0.1:31000) failed"
        );
        // Healthy but being killed: no longer counted healthy.
        let mut going = instance(TaskRunning, true, Some(true));
        going.killing = true;
        assert!(!is_healthy(&going));
        assert_eq!(reported_health(&going), None);
    }

    #[test]
    fn a_kill_for_failing_checks_is_told_apart() {
        let status = |state: TaskState, reason: StatusReason| {
            let mut s = TaskStatus::default();
            s.set_state(state);
            s.set_reason(reason);
            s
        };
        let health = StatusReason::ReasonTaskHealthCheckStatusUpdated;
        assert!(killed_by_check(&status(TaskState::TaskKilled, health)));
        assert!(!killed_by_check(&status(TaskState::TaskRunning, health)));
        assert!(!killed_by_check(&status(
            TaskState::TaskKilled,
            StatusReason::ReasonNone
        )));
    }
}
