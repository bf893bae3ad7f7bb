//! Runs: one execution of a job, for one scheduled time (or one "run now"),
//! with every attempt's task; the run state machine.
//!
//! ```text
//!             Launch              TaskRunning
//!   INITIAL ---------> STARTING -------------> ACTIVE
//!    ^  |  ^               |  |                  |
//!    |  |  '-- LaunchLost -'  |                  |
//!    |  |                     '--- TaskEnded ----+--> SUCCESS | FAILED
//!    |  |                                        |
//!    |  '-- Expire --> MISSED | FAILED           |
//!    '------------- TaskEnded with a retry ------'
//! ```
//!
//! `Stop` ends an INITIAL run at once (FAILED); a STARTING or ACTIVE run
//! keeps its status, remembers the reason, and ends FAILED with it when its
//! task's end is seen. SKIPPED and MISSED runs are recorded ended: they
//! never had a task. [`Run::apply`] is the one transition function; it
//! refuses every other move.
//!
//! Ids: a run for a scheduled time is named by that time
//! (`20250301020000`, UTC), so a time can have at most one run of a job;
//! a run started by hand adds five random characters. A run's tasks are
//! `<job>_<run>.<attempt>`: after any restart the framework knows which task
//! to look for before it launches anything.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A run's status (Metronome's, plus MISSED and SKIPPED for scheduled
/// times that never got a task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Created; waiting for an offer (or a retry's backoff).
    Initial,
    /// Its task is launched and not yet running.
    Starting,
    /// Its task runs.
    Active,
    Success,
    Failed,
    /// Its scheduled time was not started within `startingDeadlineSeconds`.
    Missed,
    /// Not started: the concurrency policy, or a dependency that did not
    /// succeed.
    Skipped,
}

impl RunStatus {
    /// Ended: nothing more happens to the run.
    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }

    /// Not ended yet.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Initial | RunStatus::Starting | RunStatus::Active
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Initial => "INITIAL",
            RunStatus::Starting => "STARTING",
            RunStatus::Active => "ACTIVE",
            RunStatus::Success => "SUCCESS",
            RunStatus::Failed => "FAILED",
            RunStatus::Missed => "MISSED",
            RunStatus::Skipped => "SKIPPED",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What made a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Trigger {
    /// `POST /v1/jobs/{id}/runs`.
    Manual,
    /// A schedule's time.
    Schedule { schedule: String },
    /// The jobs it depends on succeeded for its scheduled time.
    Dependencies,
}

/// One attempt: one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The task id, `<job>_<run>.<attempt>`.
    pub id: String,
    pub attempt: u32,
    /// The task's latest state (`TASK_STAGING`, `TASK_RUNNING`, ...).
    pub status: String,
    pub agent_id: String,
    pub host: String,
    /// Where the agent serves the task's logs (`host:port`).
    pub agent_http_address: String,
    pub launched_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A run, as stored and as answered by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub id: String,
    pub job_id: String,
    pub status: RunStatus,
    pub trigger: Trigger,
    /// The time the run is for: its schedule's time, the triggering runs'
    /// time, or the time it was asked for.
    pub scheduled_at: Timestamp,
    pub created_at: Timestamp,
    /// When the first task was launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// Why the run ended as it did, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The first launch must happen before this, or the run ends (MISSED
    /// for a scheduled time past its starting deadline, FAILED past
    /// `maxLaunchDelay`).
    pub launch_by: Timestamp,
    /// What ending the run at `launch_by` makes it.
    pub launch_by_status: RunStatus,
    /// While INITIAL after a failed attempt: when the next one may launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// A stop was asked for: the reason the run will end with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<String>,
    /// Every attempt, oldest first.
    #[serde(default)]
    pub tasks: Vec<Attempt>,
    /// The run's end has been passed on to the jobs that depend on its job.
    #[serde(default)]
    pub dependents_notified: bool,
}

/// What happens to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The next attempt's task is about to be launched (recorded before it
    /// is). Relaunching an attempt whose launch was lost reuses its id.
    Launch {
        task_id: String,
        agent_id: String,
        host: String,
        agent_http_address: String,
    },
    /// The master does not know the current attempt's task and it never
    /// reported a state: it was never launched. Launch it again.
    LaunchLost,
    /// A task state that is not an end (`TASK_STAGING`, `TASK_STARTING`,
    /// `TASK_RUNNING`, ...). `running` when the task runs.
    TaskState {
        task_id: String,
        state: String,
        running: bool,
    },
    /// The current attempt's task ended. `retry_at`: the restart policy's
    /// answer for a failure (None: no retry).
    TaskEnded {
        task_id: String,
        state: String,
        success: bool,
        exit_code: Option<i32>,
        message: String,
        retry_at: Option<Timestamp>,
    },
    /// Stop the run (a user, REPLACE, `activeDeadlineSeconds`).
    Stop { reason: String },
    /// `launch_by` passed with no launch.
    Expire { reason: String },
}

/// A move the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run {run} is {status}: {what} is not possible")]
pub struct IllegalTransition {
    pub run: String,
    pub status: RunStatus,
    pub what: String,
}

/// The run id for a scheduled time: the time in UTC, to the second.
pub fn scheduled_run_id(t: Timestamp) -> String {
    t.strftime("%Y%m%d%H%M%S").to_string()
}

/// The run id for a run started by hand: the time, then `suffix` (five
/// random characters).
pub fn manual_run_id(t: Timestamp, suffix: &str) -> String {
    format!("{}{suffix}", scheduled_run_id(t))
}

/// The task id of a run's attempt.
pub fn task_id(job_id: &str, run_id: &str, attempt: u32) -> String {
    format!("{job_id}_{run_id}.{attempt}")
}

/// `(job, run, attempt)` of a task id made by [`task_id`].
pub fn parse_task_id(task_id: &str) -> Option<(&str, &str, u32)> {
    let (rest, attempt) = task_id.rsplit_once('.')?;
    let attempt = attempt.parse().ok()?;
    let (job, run) = rest.rsplit_once('_')?;
    if job.is_empty() || run.is_empty() || run.contains('.') {
        return None;
    }
    Some((job, run, attempt))
}

impl Run {
    /// A new run waiting for its first launch.
    pub fn new(
        job_id: &str,
        id: String,
        trigger: Trigger,
        scheduled_at: Timestamp,
        now: Timestamp,
        launch_by: Timestamp,
        launch_by_status: RunStatus,
    ) -> Run {
        Run {
            id,
            job_id: job_id.to_string(),
            status: RunStatus::Initial,
            trigger,
            scheduled_at,
            created_at: now,
            started_at: None,
            completed_at: None,
            reason: None,
            exit_code: None,
            launch_by,
            launch_by_status,
            next_attempt_at: None,
            stopping: None,
            tasks: Vec::new(),
            dependents_notified: false,
        }
    }

    /// A scheduled time that was never started, recorded with why
    /// (`status`: MISSED or SKIPPED).
    pub fn not_started(
        job_id: &str,
        id: String,
        trigger: Trigger,
        scheduled_at: Timestamp,
        now: Timestamp,
        status: RunStatus,
        reason: String,
    ) -> Run {
        debug_assert!(matches!(status, RunStatus::Missed | RunStatus::Skipped));
        let mut run = Run::new(job_id, id, trigger, scheduled_at, now, now, status);
        run.status = status;
        run.completed_at = Some(now);
        run.reason = Some(reason);
        run
    }

    /// The current attempt's task, if one was launched.
    pub fn current_task(&self) -> Option<&Attempt> {
        self.tasks.last()
    }

    /// The number of the next attempt to launch.
    pub fn next_attempt(&self) -> u32 {
        match (self.status, self.tasks.last()) {
            // A lost launch is launched again under its own number.
            (RunStatus::Initial, Some(t)) if t.status == LAUNCH_LOST => t.attempt,
            (_, Some(t)) => t.attempt + 1,
            (_, None) => 1,
        }
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.tasks
            .iter()
            .filter(|t| t.completed_at.is_some() && t.status != "TASK_FINISHED")
            .count() as u32
    }

    fn illegal(&self, what: impl Into<String>) -> IllegalTransition {
        IllegalTransition {
            run: format!("{}/{}", self.job_id, self.id),
            status: self.status,
            what: what.into(),
        }
    }

    fn end(&mut self, status: RunStatus, reason: Option<String>, now: Timestamp) {
        self.status = status;
        self.completed_at = Some(now);
        self.next_attempt_at = None;
        if reason.is_some() {
            self.reason = reason;
        }
    }

    /// Applies `event` at `now`, or refuses it (leaving the run as it was).
    /// Updates about a task that is not the current attempt's are refused
    /// too: the caller ignores stale news.
    pub fn apply(&mut self, event: RunEvent, now: Timestamp) -> Result<(), IllegalTransition> {
        match event {
            RunEvent::Launch {
                task_id,
                agent_id,
                host,
                agent_http_address,
            } => {
                if self.status != RunStatus::Initial || self.stopping.is_some() {
                    return Err(self.illegal("a launch"));
                }
                let attempt = self.next_attempt();
                if task_id != self::task_id(&self.job_id, &self.id, attempt) {
                    return Err(self.illegal(format!("launching {task_id} as attempt {attempt}")));
                }
                if self.tasks.last().is_some_and(|t| t.attempt == attempt) {
                    self.tasks.pop();
                }
                self.tasks.push(Attempt {
                    id: task_id,
                    attempt,
                    status: "TASK_STAGING".into(),
                    agent_id,
                    host,
                    agent_http_address,
                    launched_at: now,
                    started_at: None,
                    completed_at: None,
                    exit_code: None,
                    message: String::new(),
                });
                self.status = RunStatus::Starting;
                self.started_at.get_or_insert(now);
                self.next_attempt_at = None;
                self.reason = None;
                Ok(())
            }
            RunEvent::LaunchLost => {
                if self.status != RunStatus::Starting {
                    return Err(self.illegal("a lost launch"));
                }
                let Some(state) = self.tasks.last().map(|t| t.status.clone()) else {
                    return Err(self.illegal("a lost launch without a task"));
                };
                if state != "TASK_STAGING" {
                    return Err(self.illegal(format!("a lost launch of a task that was {state}")));
                }
                if let Some(t) = self.tasks.last_mut() {
                    t.status = LAUNCH_LOST.into();
                }
                self.status = RunStatus::Initial;
                if let Some(reason) = self.stopping.take() {
                    // Nothing runs: the stop is done.
                    self.end(RunStatus::Failed, Some(reason), now);
                }
                Ok(())
            }
            RunEvent::TaskState {
                task_id,
                state,
                running,
            } => {
                if !matches!(self.status, RunStatus::Starting | RunStatus::Active) {
                    return Err(self.illegal(format!("{state} of {task_id}")));
                }
                let t = self.current_mut(&task_id)?;
                t.status = state;
                if running {
                    t.started_at.get_or_insert(now);
                    self.status = RunStatus::Active;
                }
                Ok(())
            }
            RunEvent::TaskEnded {
                task_id,
                state,
                success,
                exit_code,
                message,
                retry_at,
            } => {
                if !matches!(self.status, RunStatus::Starting | RunStatus::Active) {
                    return Err(self.illegal(format!("{state} of {task_id}")));
                }
                let t = self.current_mut(&task_id)?;
                t.status = state.clone();
                t.completed_at = Some(now);
                t.exit_code = exit_code;
                t.message = message.clone();
                self.exit_code = exit_code;
                if let Some(reason) = self.stopping.take() {
                    self.end(RunStatus::Failed, Some(reason), now);
                } else if success {
                    self.end(RunStatus::Success, None, now);
                } else {
                    let why = failure_reason(&state, exit_code, &message);
                    match retry_at {
                        Some(at) => {
                            self.status = RunStatus::Initial;
                            self.next_attempt_at = Some(at);
                            self.reason = Some(format!("{why}; retrying"));
                        }
                        None => self.end(RunStatus::Failed, Some(why), now),
                    }
                }
                Ok(())
            }
            RunEvent::Stop { reason } => match self.status {
                RunStatus::Initial => {
                    self.end(RunStatus::Failed, Some(reason), now);
                    Ok(())
                }
                RunStatus::Starting | RunStatus::Active => {
                    self.stopping.get_or_insert(reason);
                    Ok(())
                }
                _ => Err(self.illegal("a stop")),
            },
            RunEvent::Expire { reason } => {
                if self.status != RunStatus::Initial || self.started_at.is_some() {
                    return Err(self.illegal("expiring"));
                }
                let status = self.launch_by_status;
                self.end(status, Some(reason), now);
                Ok(())
            }
        }
    }

    fn current_mut(&mut self, task_id: &str) -> Result<&mut Attempt, IllegalTransition> {
        let current = self
            .tasks
            .last()
            .is_some_and(|t| t.id == task_id && t.completed_at.is_none());
        if !current {
            return Err(self.illegal(format!("news of {task_id}, not its current task")));
        }
        Ok(self.tasks.last_mut().expect("checked above"))
    }
}

/// The status of an attempt whose launch never reached the master.
pub const LAUNCH_LOST: &str = "LAUNCH_LOST";

/// Says why an attempt failed, for the run's `reason`.
fn failure_reason(state: &str, exit_code: Option<i32>, message: &str) -> String {
    let mut why = match exit_code {
        Some(code) => format!("{state} with exit code {code}"),
        None => state.to_string(),
    };
    if !message.is_empty() {
        why.push_str(": ");
        why.push_str(message);
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn now() -> Timestamp {
        ts("2025-03-01T02:00:00Z")
    }

    fn run() -> Run {
        let t = now();
        Run::new(
            "nightly",
            scheduled_run_id(t),
            Trigger::Schedule {
                schedule: "daily".into(),
            },
            t,
            t,
            ts("2025-03-01T02:15:00Z"),
            RunStatus::Missed,
        )
    }

    fn launch(r: &mut Run) -> String {
        let id = task_id(&r.job_id, &r.id, r.next_attempt());
        r.apply(
            RunEvent::Launch {
                task_id: id.clone(),
                agent_id: "a1".into(),
                host: "h1".into(),
                agent_http_address: "h1:5051".into(),
            },
            now(),
        )
        .unwrap();
        id
    }

    fn ended(task_id: &str, success: bool, retry_at: Option<Timestamp>) -> RunEvent {
        RunEvent::TaskEnded {
            task_id: task_id.into(),
            state: if success {
                "TASK_FINISHED"
            } else {
                "TASK_FAILED"
            }
            .into(),
            success,
            exit_code: Some(if success { 0 } else { 3 }),
            message: String::new(),
            retry_at,
        }
    }

    fn running(task_id: &str) -> RunEvent {
        RunEvent::TaskState {
            task_id: task_id.into(),
            state: "TASK_RUNNING".into(),
            running: true,
        }
    }

    #[test]
    fn ids() {
        assert_eq!(scheduled_run_id(now()), "20250301020000");
        assert_eq!(manual_run_id(now(), "ab3x9"), "20250301020000ab3x9");
        let t = task_id("prod.reports-1", "20250301020000", 2);
        assert_eq!(t, "prod.reports-1_20250301020000.2");
        assert_eq!(
            parse_task_id(&t),
            Some(("prod.reports-1", "20250301020000", 2))
        );
        for bad in ["x", "a_b", "a_b.x", "_b.1", "a_.1", "a.b.1"] {
            assert_eq!(parse_task_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_happy_path() {
        let mut r = run();
        let t = launch(&mut r);
        assert_eq!(r.status, RunStatus::Starting);
        assert_eq!(r.started_at, Some(now()));
        r.apply(running(&t), now()).unwrap();
        assert_eq!(r.status, RunStatus::Active);
        r.apply(ended(&t, true, None), now()).unwrap();
        assert_eq!(r.status, RunStatus::Success);
        assert_eq!(r.exit_code, Some(0));
        assert!(r.completed_at.is_some());
        // Nothing moves an ended run.
        for e in [
            running(&t),
            ended(&t, false, None),
            RunEvent::Stop { reason: "x".into() },
            RunEvent::Expire { reason: "x".into() },
            RunEvent::LaunchLost,
        ] {
            let before = r.clone();
            assert!(r.apply(e, now()).is_err());
            assert_eq!(r, before);
        }
    }

    #[test]
    fn a_failure_with_a_retry_goes_back_to_initial_and_the_next_attempt_has_its_own_id() {
        let mut r = run();
        let t1 = launch(&mut r);
        r.apply(ended(&t1, false, Some(ts("2025-03-01T02:00:05Z"))), now())
            .unwrap();
        assert_eq!(r.status, RunStatus::Initial);
        assert_eq!(r.next_attempt_at, Some(ts("2025-03-01T02:00:05Z")));
        assert_eq!(
            r.reason.as_deref(),
            Some("TASK_FAILED with exit code 3; retrying")
        );
        assert_eq!(r.failures(), 1);
        assert_eq!(r.next_attempt(), 2);
        let t2 = launch(&mut r);
        assert_ne!(t1, t2);
        // News of the old attempt is refused.
        assert!(r.apply(running(&t1), now()).is_err());
        r.apply(ended(&t2, false, None), now()).unwrap();
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.reason.as_deref(), Some("TASK_FAILED with exit code 3"));
        assert_eq!(r.tasks.len(), 2);
    }

    #[test]
    fn a_lost_launch_is_launched_again_under_the_same_id() {
        let mut r = run();
        let t1 = launch(&mut r);
        r.apply(RunEvent::LaunchLost, now()).unwrap();
        assert_eq!(r.status, RunStatus::Initial);
        assert_eq!(r.next_attempt(), 1);
        let again = launch(&mut r);
        assert_eq!(t1, again);
        assert_eq!(r.tasks.len(), 1);
        // Once the task reported a state, its launch was not lost.
        r.apply(running(&again), now()).unwrap();
        assert!(r.apply(RunEvent::LaunchLost, now()).is_err());
    }

    #[test]
    fn launching_the_wrong_attempt_is_refused() {
        let mut r = run();
        let wrong = task_id("nightly", &r.id, 2);
        assert!(
            r.apply(
                RunEvent::Launch {
                    task_id: wrong,
                    agent_id: "a".into(),
                    host: "h".into(),
                    agent_http_address: "h:1".into()
                },
                now()
            )
            .is_err()
        );
        assert_eq!(r.status, RunStatus::Initial);
    }

    #[test]
    fn a_stop_ends_a_waiting_run_at_once_and_a_running_one_when_its_task_ends() {
        let mut r = run();
        r.apply(
            RunEvent::Stop {
                reason: "stopped by a user".into(),
            },
            now(),
        )
        .unwrap();
        assert_eq!(r.status, RunStatus::Failed);

        let mut r = run();
        let t = launch(&mut r);
        r.apply(running(&t), now()).unwrap();
        r.apply(
            RunEvent::Stop {
                reason: "replaced by run 20250301020100".into(),
            },
            now(),
        )
        .unwrap();
        assert_eq!(r.status, RunStatus::Active);
        // No relaunch while stopping.
        assert!(r.next_attempt_at.is_none());
        // The kill's end, even with a retry policy, ends the run with the
        // stop's reason.
        r.apply(
            RunEvent::TaskEnded {
                task_id: t,
                state: "TASK_KILLED".into(),
                success: false,
                exit_code: None,
                message: String::new(),
                retry_at: Some(now()),
            },
            now(),
        )
        .unwrap();
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.reason.as_deref(), Some("replaced by run 20250301020100"));
    }

    #[test]
    fn expiring_only_before_the_first_launch() {
        let mut r = run();
        r.apply(
            RunEvent::Expire {
                reason: "not launched within startingDeadlineSeconds".into(),
            },
            now(),
        )
        .unwrap();
        assert_eq!(r.status, RunStatus::Missed);

        let mut r = run();
        let t = launch(&mut r);
        r.apply(ended(&t, false, Some(now())), now()).unwrap();
        assert_eq!(r.status, RunStatus::Initial);
        assert!(
            r.apply(RunEvent::Expire { reason: "x".into() }, now())
                .is_err()
        );
    }

    #[test]
    fn not_started_records_are_ended() {
        let r = Run::not_started(
            "nightly",
            scheduled_run_id(now()),
            Trigger::Schedule {
                schedule: "daily".into(),
            },
            now(),
            now(),
            RunStatus::Skipped,
            "FORBID: run 20250301010000 is still active".into(),
        );
        assert!(r.status.is_terminal());
        assert_eq!(r.completed_at, Some(now()));
    }

    #[test]
    fn json_shape() {
        let mut r = run();
        launch(&mut r);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "STARTING");
        assert_eq!(v["jobId"], "nightly");
        assert_eq!(v["trigger"]["kind"], "schedule");
        assert_eq!(v["tasks"][0]["id"], "nightly_20250301020000.1");
        assert_eq!(v["scheduledAt"], "2025-03-01T02:00:00Z");
        let back: Run = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
