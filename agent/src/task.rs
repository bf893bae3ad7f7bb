//! A task as the agent's core tracks it, and the rule that turns how a
//! container ended into the task's final status.

use std::path::PathBuf;
use std::time::Duration;

use agora_proto::v1::{LaunchTask, StatusReason, StatusSource, TaskState, TaskStatus};

use crate::checkpoint::{ContainerRecord, HealthRecord, KillRecord};
use crate::containerizer::{ContainerId, Termination, signal_name};
use crate::status_update::UpdateStream;

/// `(framework_id, task_id)`.
pub(crate) type TaskKey = (String, String);

/// Where a task's container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The containerizer is starting it.
    Launching,
    /// It runs; a watcher waits for it to end.
    Running,
    /// It has ended (or never started); only its updates remain to deliver.
    Ended,
}

/// One task of the agent.
#[derive(Debug)]
pub(crate) struct TaskEntry {
    /// `None` for a notice about a task the agent does not know (the answer
    /// to a kill of an unknown task): such entries only deliver their update
    /// and are not checkpointed.
    pub launch: Option<LaunchTask>,
    pub container: Option<ContainerRecord>,
    pub sandbox: Option<PathBuf>,
    pub phase: Phase,
    pub stream: UpdateStream,
    /// The pid of the task's main process, when known.
    pub pid: Option<i32>,
    /// The task's health and readiness as last reported (every update of
    /// the task carries them, once known).
    pub healthy: Option<bool>,
    pub ready: Option<bool>,
    /// When the task started to run and which health checks passed
    /// (checkpointed), once its checks have started.
    pub health: Option<HealthRecord>,
    /// Whether the task is in the checkpoint (its `task.pb` was written):
    /// its updates are then sent only once checkpointed. A launch whose
    /// checkpoint failed, and a notice about an unknown task, are not.
    pub recorded: bool,
}

impl TaskEntry {
    pub fn container_id(&self) -> Option<ContainerId> {
        self.container
            .as_ref()
            .and_then(|c| ContainerId::parse(&c.container_id).ok())
    }

    pub fn kill(&self) -> Option<&KillRecord> {
        self.container.as_ref().and_then(|c| c.kill.as_ref())
    }

    pub fn name(&self) -> &str {
        self.launch
            .as_ref()
            .and_then(|l| l.task.as_ref())
            .map_or("", |t| t.name.as_str())
    }
}

/// The final status a task gets, before the ids, uuid and time are added.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outcome {
    pub state: TaskState,
    pub reason: StatusReason,
    pub message: String,
    pub exit_code: Option<i32>,
}

/// How a container's end reads as the task's final status.
///
/// * exit 0: `TASK_FINISHED`; any other code: `TASK_FAILED`, "exit code N";
/// * killed by a signal: `TASK_FAILED`, with the signal's name, and
///   `exit_code` 128 + the signal number (the shell's convention);
/// * could not start: `TASK_FAILED`, `REASON_CONTAINER_LAUNCH_FAILED`;
/// * vanished without an exit status: `TASK_FAILED`,
///   `REASON_EXECUTOR_TERMINATED`;
/// * after a kill the agent asked for, whatever the end: `TASK_KILLED`.
pub(crate) fn outcome(termination: &Termination, kill: Option<&KillRecord>) -> Outcome {
    let (exit_code, detail) = match termination {
        Termination::Exited { code } => (Some(*code), format!("exit code {code}")),
        Termination::Signaled { signal } => (
            Some(128 + signal),
            format!("signal {} ({signal})", signal_name(*signal)),
        ),
        Termination::OomKilled { code } => (Some(*code), format!("exit code {code}")),
        Termination::LaunchFailed { message }
        | Termination::Vanished { message }
        | Termination::Refused { message }
        | Termination::Lost { message } => (None, message.clone()),
    };
    if let Some(kill) = kill {
        let grace = Duration::from_secs_f64(kill.grace_seconds.max(0.0));
        let prefix = match &kill.health_check {
            Some(cause) => format!("Task killed because {cause}"),
            None => "Task killed".to_string(),
        };
        let message = match termination {
            Termination::Signaled { signal: 9 } => format!(
                "{prefix}: it did not stop within its grace period of {grace:?} after SIGTERM, \
                 so it was killed with SIGKILL"
            ),
            Termination::Signaled { .. }
            | Termination::Exited { .. }
            | Termination::OomKilled { .. } => {
                format!("{prefix}: it ended with {detail} after SIGTERM")
            }
            Termination::LaunchFailed { .. }
            | Termination::Vanished { .. }
            | Termination::Refused { .. }
            | Termination::Lost { .. } => format!("{prefix}: {detail}"),
        };
        let reason = if matches!(
            termination,
            Termination::LaunchFailed { .. } | Termination::Refused { .. }
        ) {
            StatusReason::ReasonTaskKilledDuringLaunch
        } else if kill.health_check.is_some() {
            StatusReason::ReasonTaskHealthCheckStatusUpdated
        } else {
            StatusReason::ReasonNone
        };
        return Outcome {
            state: TaskState::TaskKilled,
            reason,
            message,
            exit_code,
        };
    }
    match termination {
        Termination::Exited { code: 0 } => Outcome {
            state: TaskState::TaskFinished,
            reason: StatusReason::ReasonNone,
            message: "Command exited with exit code 0".into(),
            exit_code,
        },
        Termination::Exited { .. } => Outcome {
            state: TaskState::TaskFailed,
            reason: StatusReason::ReasonNone,
            message: format!("Command exited with {detail}"),
            exit_code,
        },
        Termination::Signaled { .. } => Outcome {
            state: TaskState::TaskFailed,
            reason: StatusReason::ReasonNone,
            message: format!("Command terminated by {detail}"),
            exit_code,
        },
        Termination::LaunchFailed { .. } => Outcome {
            state: TaskState::TaskFailed,
            reason: StatusReason::ReasonContainerLaunchFailed,
            message: format!("Cannot launch the task: {detail}"),
            exit_code,
        },
        Termination::Vanished { .. } => Outcome {
            state: TaskState::TaskFailed,
            reason: StatusReason::ReasonExecutorTerminated,
            message: format!("The task was lost: {detail}"),
            exit_code,
        },
        Termination::OomKilled { .. } => Outcome {
            state: TaskState::TaskFailed,
            reason: StatusReason::ReasonContainerLimitationMemory,
            message: format!("Memory limit exceeded: the container was OOM killed ({detail})"),
            exit_code,
        },
        Termination::Lost { .. } => Outcome {
            state: TaskState::TaskLost,
            reason: StatusReason::ReasonAgentRestarted,
            message: format!("The agent lost track of the task: {detail}"),
            exit_code,
        },
        Termination::Refused { .. } => Outcome {
            state: TaskState::TaskError,
            reason: StatusReason::ReasonTaskInvalid,
            message: format!("The agent refused the task: {detail}"),
            exit_code,
        },
    }
}

/// A new status update from the agent: fresh uuid (v4), now as timestamp.
pub(crate) fn new_status(key: &TaskKey, agent_id: &str, outcome: Outcome) -> TaskStatus {
    let mut s = TaskStatus {
        task_id: key.1.clone(),
        message: outcome.message,
        agent_id: agent_id.to_string(),
        framework_id: key.0.clone(),
        uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
        timestamp: agora_proto::unix_seconds(std::time::SystemTime::now()),
        exit_code: outcome.exit_code,
        ..Default::default()
    };
    s.set_state(outcome.state);
    s.set_reason(outcome.reason);
    s.set_source(StatusSource::SourceAgent);
    s
}

/// A status that is not terminal (STARTING, RUNNING, ...).
pub(crate) fn progress(state: TaskState, message: impl Into<String>) -> Outcome {
    Outcome {
        state,
        reason: StatusReason::ReasonNone,
        message: message.into(),
        exit_code: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(secs: f64) -> KillRecord {
        KillRecord {
            grace_seconds: secs,
            health_check: None,
        }
    }

    #[test]
    fn a_kill_a_health_check_asked_for_says_so() {
        let k = KillRecord {
            grace_seconds: 3.0,
            health_check: Some(
                "its health check (TCP 127.0.0.1:31000) failed 3 times in a row".into(),
            ),
        };
        let o = outcome(&Termination::Signaled { signal: 15 }, Some(&k));
        assert_eq!(o.state, TaskState::TaskKilled);
        assert_eq!(o.reason, StatusReason::ReasonTaskHealthCheckStatusUpdated);
        assert!(
            o.message.starts_with(
                "Task killed because its health check (TCP 127.0.0.1:31000) failed 3 times in a row: \
                 it ended with signal SIGTERM"
            ),
            "{}",
            o.message
        );
    }

    #[test]
    fn exit_statuses_map_to_task_states() {
        let o = outcome(&Termination::Exited { code: 0 }, None);
        assert_eq!((o.state, o.exit_code), (TaskState::TaskFinished, Some(0)));

        let o = outcome(&Termination::Exited { code: 3 }, None);
        assert_eq!(o.state, TaskState::TaskFailed);
        assert_eq!(o.exit_code, Some(3));
        assert!(o.message.contains("exit code 3"), "{}", o.message);

        let o = outcome(&Termination::Signaled { signal: 11 }, None);
        assert_eq!(o.state, TaskState::TaskFailed);
        assert_eq!(o.exit_code, Some(139));
        assert!(o.message.contains("SIGSEGV"), "{}", o.message);

        let o = outcome(
            &Termination::LaunchFailed {
                message: "no such file".into(),
            },
            None,
        );
        assert_eq!(o.state, TaskState::TaskFailed);
        assert_eq!(o.reason, StatusReason::ReasonContainerLaunchFailed);
        assert!(o.message.contains("no such file"));
        assert_eq!(o.exit_code, None);

        let o = outcome(
            &Termination::Vanished {
                message: "gone".into(),
            },
            None,
        );
        assert_eq!(o.state, TaskState::TaskFailed);
        assert_eq!(o.reason, StatusReason::ReasonExecutorTerminated);
    }

    #[test]
    fn a_container_the_agent_cannot_follow_is_lost_not_failed() {
        let o = outcome(
            &Termination::Lost {
                message: "Docker does not answer".into(),
            },
            None,
        );
        assert_eq!(o.state, TaskState::TaskLost);
        assert!(
            o.message.contains("Docker does not answer"),
            "{}",
            o.message
        );
    }

    #[test]
    fn oom_kills_and_refusals_have_their_own_states() {
        let o = outcome(&Termination::OomKilled { code: 137 }, None);
        assert_eq!(o.state, TaskState::TaskFailed);
        assert_eq!(o.reason, StatusReason::ReasonContainerLimitationMemory);
        assert_eq!(o.exit_code, Some(137));
        assert!(o.message.contains("OOM killed"), "{}", o.message);

        let refused = Termination::Refused {
            message: "volume /etc is outside the allowed roots".into(),
        };
        let o = outcome(&refused, None);
        assert_eq!(o.state, TaskState::TaskError);
        assert_eq!(o.reason, StatusReason::ReasonTaskInvalid);
        assert!(o.message.contains("/etc"), "{}", o.message);

        let o = outcome(&refused, Some(&kill(1.0)));
        assert_eq!(o.state, TaskState::TaskKilled);
        assert_eq!(o.reason, StatusReason::ReasonTaskKilledDuringLaunch);
    }

    #[test]
    fn a_requested_kill_always_ends_killed() {
        let o = outcome(&Termination::Signaled { signal: 9 }, Some(&kill(1.5)));
        assert_eq!(o.state, TaskState::TaskKilled);
        assert!(
            o.message.contains("SIGKILL") && o.message.contains("1.5s"),
            "{}",
            o.message
        );
        assert_eq!(o.exit_code, Some(137));

        let o = outcome(&Termination::Signaled { signal: 15 }, Some(&kill(3.0)));
        assert_eq!(o.state, TaskState::TaskKilled);
        assert!(o.message.contains("SIGTERM"), "{}", o.message);

        let o = outcome(&Termination::Exited { code: 0 }, Some(&kill(3.0)));
        assert_eq!(o.state, TaskState::TaskKilled);

        let o = outcome(
            &Termination::LaunchFailed {
                message: "x".into(),
            },
            Some(&kill(3.0)),
        );
        assert_eq!(o.reason, StatusReason::ReasonTaskKilledDuringLaunch);
    }

    #[test]
    fn new_statuses_carry_ids_source_and_a_fresh_uuid() {
        let key = ("f1".to_string(), "t1".to_string());
        let a = new_status(&key, "a1", progress(TaskState::TaskRunning, ""));
        let b = new_status(&key, "a1", progress(TaskState::TaskRunning, ""));
        assert_eq!(a.uuid.len(), 16);
        assert_ne!(a.uuid, b.uuid);
        assert_eq!((a.framework_id.as_str(), a.task_id.as_str()), ("f1", "t1"));
        assert_eq!(a.agent_id, "a1");
        assert_eq!(a.source(), StatusSource::SourceAgent);
        assert!(a.timestamp > 0.0);
    }
}
