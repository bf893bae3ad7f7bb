//! The run: subscribe, wait for a fitting offer, launch, follow the task to
//! its end, tear down.

use std::io::Write;
use std::time::Duration;

use agora_proto::v1::{Offer, TaskStatus};
use agora_scheduler::{Event, Scheduler};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::launch::{new_task_id, offer_fits, task_info};
use crate::progress::{Outcome, TaskProgress, launch_refused};
use crate::{ExecuteConfig, ExecuteError};

/// How long offers that do not fit are refused while waiting for one that
/// does (Mesos's default filter).
const REFUSE_WHILE_WAITING: f64 = 5.0;

/// How long offers are refused once the task is launched: none is needed
/// any more.
const REFUSE_AFTER_LAUNCH: f64 = 3600.0;

/// How long a cancelled run waits for the killed task to report its end
/// (the agent's default grace period is 3 s) before tearing down anyway.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Runs `config`'s task to its end, writing each step to `out`.
///
/// Returns the [`Outcome`] whatever the task's final state (check
/// [`Outcome::exit_code`]); an error when the configuration is invalid, the
/// master refused the framework, or `out` failed. While the master cannot be
/// reached it keeps retrying and says so on `out`.
///
/// Cancel-safe: dropping the future drops the driver, and the master, which
/// has no failover timeout for this framework, kills the task at once. Use
/// [`run_with_cancel`] to kill the task, wait for its end and tear down
/// first.
pub async fn run(
    config: ExecuteConfig,
    out: &mut (dyn Write + Send),
) -> Result<Outcome, ExecuteError> {
    run_with_cancel(config, out, CancellationToken::new()).await
}

/// [`run`], stopping when `cancel` is cancelled (e.g. on Ctrl-C): the task,
/// if launched, is killed and followed to its end (at most 10 s), then the
/// framework is torn down, and the result is [`ExecuteError::Cancelled`].
pub async fn run_with_cancel(
    config: ExecuteConfig,
    out: &mut (dyn Write + Send),
    cancel: CancellationToken,
) -> Result<Outcome, ExecuteError> {
    config.validate()?;
    let span = tracing::info_span!("execute", name = %config.name);
    async move {
        // `events` lives until the end: dropping the receiver stops the
        // driver, and the teardown below needs it running.
        let (scheduler, mut events) = Scheduler::start(config.scheduler_config())?;
        let mut execution = Execution {
            task_id: new_task_id(&config.name),
            config: &config,
            scheduler: scheduler.clone(),
            out,
            task: None,
            said_waiting: false,
            subscribed: false,
            suppressed: false,
            cancelled: false,
        };
        let result = execution.follow(&mut events, cancel).await;
        if !matches!(result, Err(ExecuteError::Stopped(_))) {
            end_framework(&scheduler).await;
        }
        result
    }
    .instrument(span)
    .await
}

/// Removes the framework, which kills the task if it still runs. Failing
/// that (disconnected), disconnects: with no failover timeout the master
/// removes the framework all the same.
async fn end_framework(scheduler: &Scheduler) {
    if let Err(e) = scheduler.teardown().await {
        tracing::debug!(error = %e, "teardown failed; disconnecting instead");
        scheduler.stop().await;
    }
}

struct Execution<'a> {
    config: &'a ExecuteConfig,
    scheduler: Scheduler,
    out: &'a mut (dyn Write + Send),
    /// Chosen up front, so every message names the same task.
    task_id: String,
    /// Set once the task is launched.
    task: Option<TaskProgress>,
    /// "Waiting for an offer" is said once.
    said_waiting: bool,
    /// Whether the framework was subscribed at least once.
    subscribed: bool,
    /// Whether offers are suppressed (after a launch), so a relaunch must
    /// revive them.
    suppressed: bool,
    cancelled: bool,
}

/// What a batch of updates means for the run.
enum Next {
    /// Keep following the task.
    Follow,
    /// The launch was refused for its offer: launch again on another.
    Relaunch,
    /// The task has ended.
    Ended(Outcome),
}

impl Execution<'_> {
    fn say(&mut self, line: &str) -> Result<(), ExecuteError> {
        writeln!(self.out, "{line}")?;
        self.out.flush()?;
        Ok(())
    }

    fn cancelled_error(&self) -> ExecuteError {
        ExecuteError::Cancelled {
            task_id: self.task.as_ref().map(|t| t.task_id().to_string()),
            last_state: self.task.as_ref().map(TaskProgress::state),
        }
    }

    async fn follow(
        &mut self,
        events: &mut UnboundedReceiver<Event>,
        cancel: CancellationToken,
    ) -> Result<Outcome, ExecuteError> {
        let mut kill_deadline: Option<Instant> = None;
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled(), if !self.cancelled => {
                    self.cancelled = true;
                    let Some(task) = self.task.as_ref().filter(|t| !t.is_terminal()) else {
                        self.say("Cancelled before the task was launched")?;
                        return Err(self.cancelled_error());
                    };
                    let (task_id, agent_id) = (task.task_id().to_string(), task.agent_id().to_string());
                    self.say(&format!("Cancelled: killing task {task_id}"))?;
                    if let Err(e) = self.scheduler.kill(&task_id, &agent_id, None) {
                        // The teardown that follows kills it.
                        tracing::debug!(error = %e, "cannot send the kill");
                        return Err(self.cancelled_error());
                    }
                    kill_deadline = Some(Instant::now() + KILL_WAIT);
                    continue;
                }
                _ = sleep_until(kill_deadline), if kill_deadline.is_some() => {
                    self.say(&format!(
                        "Task {} did not report its end within {KILL_WAIT:?}; \
                         tearing the framework down, which kills it",
                        self.task_id
                    ))?;
                    return Err(self.cancelled_error());
                }
                event = events.recv() => event,
            };
            let Some(event) = event else {
                return Err(ExecuteError::Stopped("the scheduler driver ended".into()));
            };
            match event {
                Event::Subscribed {
                    framework_id,
                    resubscribed,
                    ..
                } => self.subscribed(&framework_id, resubscribed)?,
                Event::Offers(offers) => self.offers(offers)?,
                Event::Rescind(_) => {}
                Event::Updates(statuses) => match self.updates(&statuses)? {
                    Next::Follow => {}
                    Next::Relaunch if !self.cancelled => self.relaunch()?,
                    Next::Relaunch => return Err(self.cancelled_error()),
                    Next::Ended(_) if self.cancelled => return Err(self.cancelled_error()),
                    Next::Ended(outcome) => return Ok(outcome),
                },
                Event::Failure { agent_id } => {
                    if self.task.as_ref().is_some_and(|t| t.agent_id() == agent_id) {
                        self.say(&format!(
                            "Agent {agent_id} of task {} is unreachable or was removed",
                            self.task_id
                        ))?;
                    }
                }
                Event::Error(message) => self.say(&format!("The master says: {message}"))?,
                Event::Disconnected { reason, retry_in } => {
                    let line = if self.subscribed {
                        format!(
                            "Disconnected from the master: {reason}; reconnecting in {retry_in:.1?}"
                        )
                    } else {
                        format!("Cannot reach the master: {reason}; retrying in {retry_in:.1?}")
                    };
                    self.say(&line)?;
                }
                Event::Stopped { reason } => return Err(ExecuteError::Stopped(reason)),
            }
        }
    }

    fn subscribed(&mut self, framework_id: &str, resubscribed: bool) -> Result<(), ExecuteError> {
        if !self.subscribed || !resubscribed {
            self.say(&format!("Subscribed as framework {framework_id}"))?;
        } else {
            self.say(&format!("Resubscribed as framework {framework_id}"))?;
        }
        self.subscribed = true;
        if self.task.is_none() && self.suppressed {
            self.revive();
        }
        // Updates may have been missed while disconnected: ask for the
        // task's latest state.
        if resubscribed && let Some(task) = self.task.as_ref().filter(|t| !t.is_terminal()) {
            let task = (task.task_id().to_string(), task.agent_id().to_string());
            if let Err(e) = self.scheduler.reconcile(vec![task]) {
                tracing::debug!(error = %e, "cannot reconcile");
            }
        }
        Ok(())
    }

    /// Launches the task on the first offer that fits; declines the others.
    fn offers(&mut self, offers: Vec<Offer>) -> Result<(), ExecuteError> {
        for offer in offers {
            let wanted = &self.config.resources;
            if self.task.is_none()
                && !self.cancelled
                && offer_fits(&offer, wanted, &self.config.role)
            {
                let task = task_info(self.config, &self.task_id, &offer.agent_id);
                match self
                    .scheduler
                    .accept(vec![offer.id.clone()], vec![task], None)
                {
                    Ok(()) => {
                        let host = if offer.hostname.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", offer.hostname)
                        };
                        self.say(&format!(
                            "Launching task {} with {wanted} on agent {}{host}",
                            self.task_id, offer.agent_id
                        ))?;
                        let progress =
                            TaskProgress::staging(&self.task_id, &offer.agent_id, &offer.hostname);
                        self.say(&progress.current_line())?;
                        self.task = Some(progress);
                        match self.scheduler.suppress(vec![]) {
                            Ok(()) => self.suppressed = true,
                            Err(e) => tracing::debug!(error = %e, "cannot suppress offers"),
                        }
                    }
                    // Disconnected: the offer is void; wait for the next one.
                    Err(e) => tracing::debug!(offer_id = %offer.id, error = %e, "cannot accept"),
                }
                continue;
            }
            let refuse = if self.task.is_none() {
                if !self.said_waiting {
                    self.said_waiting = true;
                    self.say(&format!("Waiting for an offer with {wanted} ..."))?;
                }
                REFUSE_WHILE_WAITING
            } else {
                REFUSE_AFTER_LAUNCH
            };
            if let Err(e) = self.scheduler.decline(vec![offer.id.clone()], Some(refuse)) {
                tracing::debug!(offer_id = %offer.id, error = %e, "cannot decline");
            }
        }
        Ok(())
    }

    /// Prints what is new, acknowledges everything, and says what next.
    fn updates(&mut self, statuses: &[TaskStatus]) -> Result<Next, ExecuteError> {
        let mut next = Next::Follow;
        let mut lines = Vec::new();
        if let Some(task) = &mut self.task {
            for status in statuses {
                if let Some(line) = task.apply(status) {
                    lines.push(line);
                    if task.is_terminal() {
                        next = if launch_refused(status) {
                            Next::Relaunch
                        } else {
                            Next::Ended(task.outcome(status))
                        };
                        break;
                    }
                }
            }
        }
        // Acknowledge before anything can fail, so the agent stops resending.
        if let Err(e) = self.scheduler.acknowledge(statuses) {
            tracing::debug!(error = %e, "cannot acknowledge; the agent will resend");
        }
        for line in lines {
            self.say(&line)?;
        }
        Ok(next)
    }

    /// The offer was gone by the time the master saw the launch: wait for
    /// another one and launch the same task there.
    fn relaunch(&mut self) -> Result<(), ExecuteError> {
        self.task = None;
        self.say(&format!(
            "The offer was not valid any more; waiting for another one to launch {}",
            self.task_id
        ))?;
        if self.suppressed {
            self.revive();
        }
        Ok(())
    }

    /// Asks for offers again (after a refused launch). While disconnected it
    /// is asked again after the next subscription.
    fn revive(&mut self) {
        match self.scheduler.revive(vec![]) {
            Ok(()) => self.suppressed = false,
            Err(e) => tracing::debug!(error = %e, "cannot revive offers"),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
