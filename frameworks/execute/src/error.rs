//! Why `agora execute` could not run its task to an end.

use agora_proto::v1::TaskState;

/// Everything but a task that ran and ended (which is an
/// [`Outcome`](crate::Outcome), whatever its state).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// A flag's value cannot work; nothing was sent to the master.
    #[error("invalid --{field}: {problem}")]
    InvalidConfig {
        /// The flag, as the CLI spells it (`resources`, `command`, ...).
        field: &'static str,
        problem: String,
    },

    /// The scheduler driver stopped before the task ended, e.g. because the
    /// master refused the framework.
    #[error("{0}")]
    Stopped(String),

    /// The run was cancelled. The task (if it was launched) was killed and
    /// the framework torn down.
    #[error("cancelled{}", describe_cancelled(.task_id, .last_state))]
    Cancelled {
        /// The task, if it had been launched.
        task_id: Option<String>,
        /// The last state heard of the task.
        last_state: Option<TaskState>,
    },

    /// The scheduler driver could not start.
    #[error(transparent)]
    Scheduler(#[from] agora_scheduler::SchedulerError),

    /// Writing the progress report failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

fn describe_cancelled(task_id: &Option<String>, state: &Option<TaskState>) -> String {
    match (task_id, state) {
        (None, _) => ": no task was launched".to_string(),
        (Some(task), Some(state)) => format!(": task {task} was {}", state.as_str_name()),
        (Some(task), None) => format!(": task {task} was killed"),
    }
}

impl ExecuteError {
    /// The process exit code for the CLI: 64 (EX_USAGE) for a bad flag, 130
    /// (as after Ctrl-C) when cancelled, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExecuteError::InvalidConfig { .. } => 64,
            ExecuteError::Cancelled { .. } => 130,
            ExecuteError::Stopped(_) | ExecuteError::Scheduler(_) | ExecuteError::Output(_) => 1,
        }
    }
}
