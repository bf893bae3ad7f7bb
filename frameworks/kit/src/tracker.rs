//! Task tracking: reconciliation with backoff and kills retried until a
//! terminal status arrives. Sans-IO: events and the time go in, actions to
//! send come out of [`TaskTracker::poll`]; [`drive`] sends them through the
//! scheduler driver.
//!
//! ```text
//!  on_subscribed ──► Reconciling: explicit reconcile of every known task,
//!                    resent with backoff (reconcile_min .. reconcile_max)
//!                    until each one has answered
//!                         │ all answered
//!                         ▼
//!                    one implicit reconcile (finds tasks the framework
//!                    does not know: they come back as Observed::Unknown
//!                    and are killed) ──► Reconciled
//!                         │ every periodic_reconcile
//!                         └──────────► a new round (reconciled() stays true)
//! ```
//!
//! Kills: [`TaskTracker::kill`] sends a kill at once and again with backoff
//! (kill_retry_min .. kill_retry_max) until an update with a terminal state
//! arrives for the task. Tasks that updates reveal but the framework does
//! not [`expect`](TaskTracker::expect) are killed the same way, unless the
//! framework expects them before the kill goes out.
//!
//! Call [`expect`](TaskTracker::expect) before launching a task, so that its
//! first update is not taken for a stranger's.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use agora_proto::is_terminal;
use agora_proto::v1::{TaskState, TaskStatus};
use agora_scheduler::{Scheduler, SchedulerError};

/// Timings of reconciliation and kill retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// The first wait before asking again for tasks that did not answer.
    pub reconcile_min: Duration,
    /// The longest wait between two asks.
    pub reconcile_max: Duration,
    /// The first wait before sending a kill again.
    pub kill_retry_min: Duration,
    /// The longest wait between two kills of one task.
    pub kill_retry_max: Duration,
    /// How often a reconciliation round starts while subscribed (heals a
    /// missed update by itself).
    pub periodic_reconcile: Duration,
}

impl Default for TrackerConfig {
    fn default() -> TrackerConfig {
        TrackerConfig {
            reconcile_min: Duration::from_secs(1),
            reconcile_max: Duration::from_secs(60),
            kill_retry_min: Duration::from_secs(2),
            kill_retry_max: Duration::from_secs(60),
            periodic_reconcile: Duration::from_secs(5 * 60),
        }
    }
}

/// What to send to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerAction {
    /// Explicit reconciliation of these `(task id, agent id)` pairs.
    Reconcile(Vec<(String, String)>),
    /// Implicit reconciliation: the master answers for every task it knows
    /// of the framework.
    ReconcileAll,
    /// Kill this task.
    Kill { task_id: String, agent_id: String },
}

/// What an update told about a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A task the framework expects; `prev_state` is `None` before its first
    /// update.
    Known {
        prev_state: Option<TaskState>,
        state: TaskState,
    },
    /// A task the framework does not expect: it is killed (when not
    /// terminal) unless the framework [`expect`](TaskTracker::expect)s it
    /// before the next [`poll`](TaskTracker::poll).
    Unknown,
}

#[derive(Debug, Clone)]
struct Tracked {
    agent_id: Option<String>,
    state: Option<TaskState>,
}

/// A kill being sent until the task ends.
#[derive(Debug, Clone)]
struct Killing {
    agent_id: String,
    /// Kills sent so far.
    sent: u32,
    next_at: Instant,
    /// Killed because an update revealed it and the framework does not
    /// know it (not because the framework asked): `expect` cancels it.
    stranger: bool,
}

/// A reconciliation round.
#[derive(Debug, Clone)]
struct Round {
    /// When the round started.
    started: Instant,
    /// Known tasks that have not answered yet.
    waiting: HashSet<String>,
    /// Asks sent so far.
    sent: u32,
    next_at: Instant,
}

/// The tasks a framework knows, what the master said of them, and what
/// must be sent about them. Time is passed in.
#[derive(Debug, Clone)]
pub struct TaskTracker {
    config: TrackerConfig,
    tasks: HashMap<String, Tracked>,
    kills: HashMap<String, Killing>,
    round: Option<Round>,
    /// When the implicit ask that ends a round is due (once every known
    /// task answered).
    implicit_at: Option<Instant>,
    reconciled: bool,
    next_periodic: Option<Instant>,
}

/// The `n`th retry's wait: `min * 2^n`, at most `max`.
fn retry_delay(sent: u32, min: Duration, max: Duration) -> Duration {
    min.checked_mul(2u32.saturating_pow(sent.saturating_sub(1).min(31)))
        .unwrap_or(max)
        .min(max)
}

impl TaskTracker {
    pub fn new(config: TrackerConfig) -> TaskTracker {
        TaskTracker {
            config,
            tasks: HashMap::new(),
            kills: HashMap::new(),
            round: None,
            implicit_at: None,
            reconciled: false,
            next_periodic: None,
        }
    }

    /// A task the framework knows (from its store, or about to launch it),
    /// on `agent_id` when known. Adopts a task an update revealed, and
    /// cancels its pending kill unless [`kill`](Self::kill) asked for it.
    pub fn expect(&mut self, task_id: &str, agent_id: Option<String>) {
        match self.tasks.get_mut(task_id) {
            Some(t) => {
                if agent_id.is_some() {
                    t.agent_id = agent_id;
                }
            }
            None => {
                self.tasks.insert(
                    task_id.to_string(),
                    Tracked {
                        agent_id,
                        state: None,
                    },
                );
            }
        }
        if self.kills.get(task_id).is_some_and(|k| k.stranger) {
            self.kills.remove(task_id);
        }
    }

    /// Stops tracking a task (its kill too).
    pub fn forget(&mut self, task_id: &str) {
        self.tasks.remove(task_id);
        self.kills.remove(task_id);
        if let Some(round) = &mut self.round {
            round.waiting.remove(task_id);
        }
    }

    /// The driver (re)subscribed: every known task that has not ended must
    /// answer again, and kills go out again at once.
    pub fn on_subscribed(&mut self, now: Instant) {
        self.reconciled = false;
        self.start_round(now);
        for k in self.kills.values_mut() {
            k.next_at = now;
        }
    }

    fn start_round(&mut self, now: Instant) {
        let waiting = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_some_and(is_terminal))
            .map(|(id, _)| id.clone())
            .collect();
        self.round = Some(Round {
            started: now,
            waiting,
            sent: 0,
            next_at: now,
        });
        self.implicit_at = None;
        self.next_periodic = Some(now + self.config.periodic_reconcile);
    }

    /// Ends the round once every known task answered: the implicit ask
    /// follows at once.
    fn finish_round_if_answered(&mut self, now: Instant) {
        if self.round.as_ref().is_some_and(|r| r.waiting.is_empty()) {
            self.round = None;
            self.reconciled = true;
            self.implicit_at = Some(now);
        }
    }

    /// An update from the master (a status change or a reconciliation
    /// answer).
    pub fn on_update(&mut self, status: &TaskStatus, now: Instant) -> Observed {
        let state = status.state();
        let terminal = is_terminal(state);
        if terminal {
            self.kills.remove(&status.task_id);
        }
        if let Some(round) = &mut self.round {
            round.waiting.remove(&status.task_id);
        }
        self.finish_round_if_answered(now);
        match self.tasks.get_mut(&status.task_id) {
            Some(t) => {
                let prev_state = t.state;
                t.state = Some(state);
                if !status.agent_id.is_empty() {
                    t.agent_id = Some(status.agent_id.clone());
                }
                Observed::Known { prev_state, state }
            }
            None => {
                if !terminal && !self.kills.contains_key(&status.task_id) {
                    self.kills.insert(
                        status.task_id.clone(),
                        Killing {
                            agent_id: status.agent_id.clone(),
                            sent: 0,
                            next_at: now,
                            stranger: true,
                        },
                    );
                }
                Observed::Unknown
            }
        }
    }

    /// Wants `task_id` dead: a kill goes out at the next poll and again
    /// with backoff until an update with a terminal state arrives.
    pub fn kill(&mut self, task_id: &str, now: Instant) {
        let agent_id = self
            .tasks
            .get(task_id)
            .and_then(|t| t.agent_id.clone())
            .unwrap_or_default();
        match self.kills.get_mut(task_id) {
            Some(k) => {
                if !agent_id.is_empty() {
                    k.agent_id = agent_id;
                }
                k.stranger = false;
            }
            None => {
                self.kills.insert(
                    task_id.to_string(),
                    Killing {
                        agent_id,
                        sent: 0,
                        next_at: now,
                        stranger: false,
                    },
                );
            }
        }
    }

    /// What to send now.
    pub fn poll(&mut self, now: Instant) -> Vec<TrackerAction> {
        let mut actions = Vec::new();
        if self.next_periodic.is_some_and(|at| at <= now) && self.round.is_none() {
            self.start_round(now);
        }
        self.finish_round_if_answered(now);
        if self.implicit_at.is_some_and(|at| at <= now) {
            self.implicit_at = None;
            actions.push(TrackerAction::ReconcileAll);
        }
        if let Some(round) = &mut self.round
            && round.next_at <= now
        {
            let mut pairs: Vec<(String, String)> = round
                .waiting
                .iter()
                .map(|id| {
                    let agent = self
                        .tasks
                        .get(id)
                        .and_then(|t| t.agent_id.clone())
                        .unwrap_or_default();
                    (id.clone(), agent)
                })
                .collect();
            pairs.sort();
            round.sent += 1;
            round.next_at = now
                + retry_delay(
                    round.sent,
                    self.config.reconcile_min,
                    self.config.reconcile_max,
                );
            actions.push(TrackerAction::Reconcile(pairs));
        }
        let mut kills: Vec<TrackerAction> = Vec::new();
        for (task_id, k) in self.kills.iter_mut().filter(|(_, k)| k.next_at <= now) {
            k.sent += 1;
            k.next_at = now
                + retry_delay(
                    k.sent,
                    self.config.kill_retry_min,
                    self.config.kill_retry_max,
                );
            kills.push(TrackerAction::Kill {
                task_id: task_id.clone(),
                agent_id: k.agent_id.clone(),
            });
        }
        // In task order, so that a run is repeatable.
        kills.sort_by(|a, b| match (a, b) {
            (TrackerAction::Kill { task_id: x, .. }, TrackerAction::Kill { task_id: y, .. }) => {
                x.cmp(y)
            }
            _ => std::cmp::Ordering::Equal,
        });
        actions.extend(kills);
        actions
    }

    /// When [`poll`](Self::poll) next has something to send (`None`:
    /// nothing until an event).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let round = self.round.as_ref().map(|r| {
            if r.waiting.is_empty() {
                // Every task answered (or was forgotten): finishing the round
                // is due already.
                r.started
            } else {
                r.next_at
            }
        });
        let periodic = self.next_periodic.filter(|_| self.round.is_none());
        [round, periodic, self.implicit_at]
            .into_iter()
            .chain(self.kills.values().map(|k| Some(k.next_at)))
            .flatten()
            .min()
    }

    /// Whether every known task has answered since the last subscription.
    pub fn reconciled(&self) -> bool {
        self.reconciled
    }

    /// The latest state the master reported for `task_id`.
    pub fn state(&self, task_id: &str) -> Option<TaskState> {
        self.tasks.get(task_id).and_then(|t| t.state)
    }

    /// Whether the framework tracks `task_id`.
    pub fn knows(&self, task_id: &str) -> bool {
        self.tasks.contains_key(task_id)
    }

    /// Tasks being killed (until their terminal update).
    pub fn killing(&self) -> usize {
        self.kills.len()
    }
}

/// Sends what the tracker wants sent now, through the scheduler driver;
/// returns when to call again. A call the driver cannot send (it is between
/// two connections) is simply retried later: reconciliation and kills are
/// resent with backoff anyway, and everything again after the next
/// subscription.
pub fn drive(tracker: &mut TaskTracker, scheduler: &Scheduler, now: Instant) -> Option<Instant> {
    let actions = tracker.poll(now);
    execute(&actions, scheduler);
    tracker.next_wakeup()
}

/// Sends `actions` through the scheduler driver (what [`drive`] does with
/// what [`TaskTracker::poll`] returns).
pub fn execute(actions: &[TrackerAction], scheduler: &Scheduler) {
    for action in actions {
        let sent = match action {
            TrackerAction::Reconcile(pairs) => {
                tracing::debug!(tasks = pairs.len(), "reconciling tasks");
                scheduler.reconcile(pairs.clone())
            }
            TrackerAction::ReconcileAll => {
                tracing::debug!("reconciling all tasks (implicit)");
                scheduler.reconcile(Vec::new())
            }
            TrackerAction::Kill { task_id, agent_id } => {
                tracing::info!(%task_id, %agent_id, "killing task");
                scheduler.kill(task_id, agent_id, None)
            }
        };
        match sent {
            Ok(()) | Err(SchedulerError::NotConnected) => {}
            Err(e) => tracing::warn!(?action, "cannot send: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
