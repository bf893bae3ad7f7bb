//! Task-state rules: which states are terminal, and which moves are legal.

use crate::v1::TaskState;

/// Whether a task in `state` has ended for good.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskLost
            | TaskState::TaskError
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator
    )
}

/// Whether a task in `state` is (as far as anyone knows) still holding its
/// resources on an agent.
pub fn is_active(state: TaskState) -> bool {
    !is_terminal(state)
}

/// A refused state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a task cannot go from {} to {}", .from.as_str_name(), .to.as_str_name())]
pub struct IllegalTransition {
    pub from: TaskState,
    pub to: TaskState,
}

/// The one transition function for task states.
///
/// * Nothing leaves a terminal state.
/// * A task never goes back to STAGING, and never back to STARTING once it ran.
/// * UNREACHABLE and UNKNOWN are what the master believes while it cannot see
///   the agent; the agent's report when it comes back wins, so any
///   non-STAGING state may follow them.
/// * Repeating the current state is allowed (a resent update).
pub fn transition(from: TaskState, to: TaskState) -> Result<TaskState, IllegalTransition> {
    use TaskState::*;
    let ok = if from == to {
        true
    } else if is_terminal(from) {
        false
    } else {
        match to {
            TaskStaging => false,
            TaskStarting => matches!(from, TaskStaging | TaskUnreachable | TaskUnknown),
            _ => true,
        }
    };
    if ok {
        Ok(to)
    } else {
        Err(IllegalTransition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn lifecycle() {
        let mut s = TaskStaging;
        for next in [TaskStarting, TaskRunning, TaskKilling, TaskKilled] {
            s = transition(s, next).unwrap();
        }
        assert!(is_terminal(s));
        assert!(transition(TaskKilled, TaskRunning).is_err());
        assert!(transition(TaskRunning, TaskStarting).is_err());
        assert!(transition(TaskRunning, TaskStaging).is_err());
        assert!(transition(TaskUnreachable, TaskRunning).is_ok());
        assert!(transition(TaskRunning, TaskUnreachable).is_ok());
        assert_eq!(
            transition(TaskFinished, TaskFailed)
                .unwrap_err()
                .to_string(),
            "a task cannot go from TASK_FINISHED to TASK_FAILED"
        );
        assert!(!is_terminal(TaskUnreachable));
    }
}
