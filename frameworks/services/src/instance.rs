//! An instance: one task of an app, as the framework records it.

use agora_proto::v1::TaskState;
use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// One task of an app. Kept in the store from before its launch until its
/// end, so that a new leader knows every task it may find running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The Mesos task id: `<app path with _>.<uuid>`, as Marathon makes them.
    pub task_id: String,
    pub app_id: String,
    /// The app version it was launched for (shown as the task's `version`).
    pub version: Millis,
    /// The app's `lastConfigChangeAt` at launch: a restart replaces the
    /// instances whose configuration is older than the app's.
    pub config_version: Millis,
    pub agent_id: String,
    pub host: String,
    /// Host ports, in the order of the app's port definitions / mappings.
    pub ports: Vec<u64>,
    /// The latest state reported for the task.
    #[serde(with = "state_name")]
    pub state: TaskState,
    pub staged_at: Millis,
    pub started_at: Option<Millis>,
    /// The task's health as its status reports it (`None` until a health
    /// check reports; see [`crate::health`]).
    pub healthy: Option<bool>,
    /// Why its health check last failed (the agent's message), for
    /// Marathon's `lastFailureCause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_failure: Option<String>,
    /// Whether the task is ready (its readiness checks all passed); `None`
    /// until its agent says.
    #[serde(default)]
    pub ready: Option<bool>,
    /// Launched with health checks: healthy only once they pass.
    #[serde(default)]
    pub health_checked: bool,
    /// Launched with readiness checks: ready only once they passed.
    #[serde(default)]
    pub readiness_checked: bool,
    /// Since when the agent has not been answering.
    pub unreachable_since: Option<Millis>,
    /// The framework wants this task dead (scaled down, replaced, killed
    /// over the API); kills are retried until it ends.
    pub killing: bool,
    /// The role its resources came from.
    #[serde(default)]
    pub role: String,
    /// Its agent's attributes (`rack:r1;zone:a`), for the constraints of
    /// later placements.
    #[serde(default)]
    pub attributes: String,
}

impl Instance {
    /// Whether the task is still (as far as anyone knows) on its agent.
    pub fn is_active(&self) -> bool {
        !agora_proto::is_terminal(self.state)
    }

    /// Counted as one of the app's instances: active, not being killed,
    /// and not unreachable for longer than the app's `inactiveAfterSeconds`.
    pub fn counts(&self, inactive_after: Option<Millis>, now: Millis) -> bool {
        if !self.is_active() || self.killing {
            return false;
        }
        match (self.unreachable_since, inactive_after) {
            (Some(since), Some(wait)) => now.saturating_sub(since) < wait,
            _ => true,
        }
    }

    /// Still starting (not yet running).
    pub fn is_launching(&self) -> bool {
        matches!(self.state, TaskState::TaskStaging | TaskState::TaskStarting)
    }
}

/// Task states as Mesos names them (`TASK_RUNNING`).
pub mod state_name {
    use agora_proto::v1::TaskState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(state: &TaskState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(state.as_str_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TaskState, D::Error> {
        let name = String::deserialize(d)?;
        TaskState::from_str_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown task state {name}")))
    }
}

/// A new task id for `app`: `<segments joined by _>.<uuid>`.
pub fn new_task_id(app: &crate::path_id::PathId) -> String {
    format!("{}.{}", app.safe_name(), uuid::Uuid::new_v4())
}
