//! Following the launched task's state: which updates are news, what to
//! print, and how it ended. Pure functions over the updates.

use agora_proto::v1::{StatusReason, TaskState, TaskStatus};

/// How the task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub task_id: String,
    /// The agent the task ran on.
    pub agent_id: String,
    /// A terminal state.
    pub final_state: TaskState,
    /// What the agent or the master said about the end (e.g. the exit
    /// status, or why a launch was invalid).
    pub message: String,
    /// The process exit code for the CLI: 0 when the task finished; the
    /// task's own exit code when it failed with one (1 to 255); else 1.
    pub exit_code: i32,
}

/// Whether `status` says the launch never reached an agent because its
/// offer was not valid any more (rescinded, gone): the task itself may be
/// fine and can be launched again on another offer.
pub(crate) fn launch_refused(status: &TaskStatus) -> bool {
    status.state() == TaskState::TaskLost && status.reason() == StatusReason::ReasonInvalidOffers
}

/// The launched task as far as we know: a state that only moves along the
/// legal task-state transitions, so repeated or stale updates (resent after
/// a reconnection, or answers to reconciliation) change nothing.
#[derive(Debug, Clone)]
pub(crate) struct TaskProgress {
    task_id: String,
    agent_id: String,
    hostname: String,
    state: TaskState,
}

impl TaskProgress {
    /// A task just accepted: the master has it as STAGING.
    pub(crate) fn staging(task_id: &str, agent_id: &str, hostname: &str) -> TaskProgress {
        TaskProgress {
            task_id: task_id.to_string(),
            agent_id: agent_id.to_string(),
            hostname: hostname.to_string(),
            state: TaskState::TaskStaging,
        }
    }

    pub(crate) fn task_id(&self) -> &str {
        &self.task_id
    }

    pub(crate) fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub(crate) fn state(&self) -> TaskState {
        self.state
    }

    pub(crate) fn is_terminal(&self) -> bool {
        agora_proto::is_terminal(self.state)
    }

    /// The line for the current state, e.g. `hello-1a2b3c4d TASK_STAGING`.
    pub(crate) fn current_line(&self) -> String {
        format!("{} {}", self.task_id, self.state.as_str_name())
    }

    /// Takes an update of this task into account. Returns the line to print
    /// when it moved the task to a new state, `None` when it said nothing new.
    pub(crate) fn apply(&mut self, status: &TaskStatus) -> Option<String> {
        let to = status.state();
        if status.task_id != self.task_id || to == self.state {
            return None;
        }
        if let Err(refused) = agora_proto::transition(self.state, to) {
            tracing::debug!(task_id = %self.task_id, %refused, "ignoring a stale update");
            return None;
        }
        self.state = to;
        let mut line = format!("{} {}", self.task_id, to.as_str_name());
        if to == TaskState::TaskRunning {
            line.push_str(&format!(" on agent {}", self.agent_id));
            if !self.hostname.is_empty() {
                line.push_str(&format!(" ({})", self.hostname));
            }
        }
        if !status.message.is_empty() {
            line.push_str(": ");
            line.push_str(&status.message);
        }
        if status.reason() != StatusReason::ReasonNone {
            line.push_str(&format!(" ({})", status.reason().as_str_name()));
        }
        Some(line)
    }

    /// How the task ended, given the update that ended it.
    pub(crate) fn outcome(&self, last: &TaskStatus) -> Outcome {
        let message = if !last.message.is_empty() {
            last.message.clone()
        } else if last.reason() != StatusReason::ReasonNone {
            last.reason().as_str_name().to_string()
        } else {
            String::new()
        };
        let exit_code = match (self.state, last.exit_code) {
            (TaskState::TaskFinished, _) => 0,
            (TaskState::TaskFailed, Some(code)) if (1..=255).contains(&code) => code,
            _ => 1,
        };
        Outcome {
            task_id: self.task_id.clone(),
            agent_id: self.agent_id.clone(),
            final_state: self.state,
            message,
            exit_code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    fn status(state: TaskState, message: &str) -> TaskStatus {
        let mut s = TaskStatus {
            task_id: "t-1".into(),
            agent_id: "a1".into(),
            message: message.into(),
            ..Default::default()
        };
        s.set_state(state);
        s
    }

    #[test]
    fn prints_each_new_state_once_and_ignores_stale_ones() {
        let mut p = TaskProgress::staging("t-1", "a1", "host1");
        assert_eq!(p.current_line(), "t-1 TASK_STAGING");
        assert_eq!(p.apply(&status(TaskStaging, "")), None);
        assert_eq!(
            p.apply(&status(TaskStarting, "")).as_deref(),
            Some("t-1 TASK_STARTING")
        );
        assert_eq!(
            p.apply(&status(TaskRunning, "")).as_deref(),
            Some("t-1 TASK_RUNNING on agent a1 (host1)")
        );
        // Resent, or stale from reconciliation.
        assert_eq!(p.apply(&status(TaskRunning, "")), None);
        assert_eq!(p.apply(&status(TaskStarting, "")), None);
        // Another task's update.
        let mut other = status(TaskFailed, "");
        other.task_id = "t-2".into();
        assert_eq!(p.apply(&other), None);
        assert!(!p.is_terminal());
        let mut failed = status(TaskFailed, "Command exited with status 3");
        failed.set_reason(StatusReason::ReasonCommandExecutorFailed);
        failed.exit_code = Some(3);
        assert_eq!(
            p.apply(&failed).as_deref(),
            Some("t-1 TASK_FAILED: Command exited with status 3 (REASON_COMMAND_EXECUTOR_FAILED)")
        );
        assert!(p.is_terminal());
        // Nothing leaves a terminal state.
        assert_eq!(p.apply(&status(TaskRunning, "")), None);
        let outcome = p.outcome(&failed);
        assert_eq!(outcome.final_state, TaskFailed);
        assert_eq!(outcome.exit_code, 3);
        assert_eq!(outcome.message, "Command exited with status 3");
    }

    #[test]
    fn only_lost_with_invalid_offers_is_a_refused_launch() {
        let mut lost = status(TaskLost, "offer o1 was rescinded");
        assert!(!launch_refused(&lost));
        lost.set_reason(StatusReason::ReasonInvalidOffers);
        assert!(launch_refused(&lost));
        let mut error = status(TaskError, "");
        error.set_reason(StatusReason::ReasonInvalidOffers);
        assert!(!launch_refused(&error));
    }

    #[test]
    fn exit_codes() {
        let end = |state, code: Option<i32>| {
            let mut p = TaskProgress::staging("t-1", "a1", "");
            let mut s = status(state, "");
            s.exit_code = code;
            p.apply(&s);
            p.outcome(&s).exit_code
        };
        assert_eq!(end(TaskFinished, Some(0)), 0);
        assert_eq!(end(TaskFinished, None), 0);
        assert_eq!(end(TaskFailed, Some(2)), 2);
        assert_eq!(end(TaskFailed, Some(-9)), 1);
        assert_eq!(end(TaskFailed, Some(300)), 1);
        assert_eq!(end(TaskFailed, None), 1);
        assert_eq!(end(TaskKilled, None), 1);
        assert_eq!(end(TaskError, None), 1);
        assert_eq!(end(TaskLost, None), 1);
    }

    #[test]
    fn running_without_a_hostname_and_unreachable_then_back() {
        let mut p = TaskProgress::staging("t-1", "a1", "");
        assert_eq!(
            p.apply(&status(TaskRunning, "")).as_deref(),
            Some("t-1 TASK_RUNNING on agent a1")
        );
        let mut gone = status(TaskUnreachable, "agent a1 is unreachable");
        gone.set_reason(StatusReason::ReasonAgentDisconnected);
        assert!(p.apply(&gone).is_some());
        assert!(!p.is_terminal());
        assert!(p.apply(&status(TaskRunning, "")).is_some());
        let mut error = status(TaskError, "");
        error.set_reason(StatusReason::ReasonTaskInvalid);
        p.apply(&error);
        assert_eq!(p.outcome(&error).message, "REASON_TASK_INVALID");
    }
}
