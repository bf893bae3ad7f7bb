//! The actor that runs every task's checks on time.
//!
//! One task of the agent's runtime holds a timer queue of the checks that
//! are due. When one is due it starts the check as a small task of its own,
//! which first takes a slot of the agent's concurrency bound (so a burst of
//! checks, or endpoints that hang until their timeout, cannot swamp the
//! agent: checks then start late, and the lateness is measured), then runs
//! the probe under the check's timeout. Results come back to the actor,
//! which feeds them to the task's [`Verdict`] and tells the agent's core
//! what changed; the core reports it (through the status-update stream) and
//! kills the task when a check asks for it.
//!
//! A check runs once at a time: its next run is due `interval` after the
//! previous one was due, or when that one finished if it took longer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_proto::health::{Probe, TaskChecks};
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::DelayQueue;
use tracing::{Instrument, debug, warn};

use super::probe::{self, Tls};
use super::stats::HealthStats;
use super::verdict::{CheckResult, Verdict};
use crate::containerizer::{CheckExit, ContainerId, Containerizer, signal_name};
use crate::core::Command;
use crate::task::TaskKey;

/// What the checks tell the agent's core about one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HealthEvent {
    /// The task's health changed.
    Health { healthy: bool, message: String },
    /// The task became ready.
    Ready { message: String },
    /// A health check failed too often: the task must be killed.
    Kill { message: String },
    /// Health check `check` passed for the first time: its grace period is
    /// over for good (the core checkpoints it).
    FirstPass { check: usize },
}

/// Starts checking a task that runs.
#[derive(Clone, Debug)]
pub(crate) struct Start {
    pub key: TaskKey,
    pub container_id: ContainerId,
    pub checks: TaskChecks,
    /// When the task started to run, in seconds since the Unix epoch (the
    /// delay and the grace period count from there, across agent restarts).
    pub running_since: f64,
    /// Which health checks had passed before (after an agent restart).
    pub passed: Vec<bool>,
    /// The health and readiness last reported.
    pub healthy: Option<bool>,
    pub ready: Option<bool>,
}

enum Control {
    Start(Box<Start>),
    Stop(TaskKey),
}

/// The handle the core holds.
#[derive(Clone)]
pub(crate) struct HealthChecks {
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<HealthStats>,
}

impl HealthChecks {
    /// Starts the actor; it stops on `shutdown`. At most `concurrency`
    /// checks run at once.
    pub fn spawn(
        containerizer: Arc<dyn Containerizer>,
        core: mpsc::Sender<Command>,
        concurrency: usize,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> HealthChecks {
        let (control, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(HealthStats::default());
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let runner = Runner {
            tasks: HashMap::new(),
            queue: DelayQueue::new(),
            next_generation: 0,
            done_tx,
            semaphore: Arc::new(Semaphore::new(concurrency.max(1))),
            containerizer,
            core,
            stats: stats.clone(),
            tls: Tls::new(),
            shutdown,
        };
        tracker.spawn(runner.run(rx, done_rx).in_current_span());
        HealthChecks { control, stats }
    }

    /// Starts (or restarts) checking a task.
    pub fn start(&self, start: Start) {
        let _ = self.control.send(Control::Start(Box::new(start)));
    }

    /// Stops checking a task (it ended, or is being killed).
    pub fn stop(&self, key: &TaskKey) {
        let _ = self.control.send(Control::Stop(key.clone()));
    }

    pub fn stats(&self) -> &Arc<HealthStats> {
        &self.stats
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Health(usize),
    Readiness(usize),
}

/// A check that is due.
struct Due {
    key: TaskKey,
    generation: u64,
    which: Which,
}

/// A check that has run.
struct Done {
    key: TaskKey,
    generation: u64,
    which: Which,
    due: Instant,
    result: CheckResult,
}

/// A task whose checks run.
struct Watched {
    /// Tells this run of the task's checks from an earlier one (a task id
    /// launched again, checks restarted): results of another generation are
    /// dropped.
    generation: u64,
    container_id: ContainerId,
    checks: Arc<TaskChecks>,
    verdict: Verdict,
    running_since: f64,
}

struct Runner {
    tasks: HashMap<TaskKey, Watched>,
    queue: DelayQueue<Due>,
    next_generation: u64,
    done_tx: mpsc::UnboundedSender<Done>,
    semaphore: Arc<Semaphore>,
    containerizer: Arc<dyn Containerizer>,
    core: mpsc::Sender<Command>,
    stats: Arc<HealthStats>,
    tls: Tls,
    shutdown: CancellationToken,
}

fn now_unix() -> f64 {
    agora_proto::unix_seconds(std::time::SystemTime::now())
}

impl Runner {
    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut done: mpsc::UnboundedReceiver<Done>,
    ) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                c = control.recv() => match c {
                    Some(Control::Start(s)) => self.start(*s),
                    Some(Control::Stop(key)) => self.stop(&key),
                    None => break,
                },
                Some(expired) = self.queue.next(), if !self.queue.is_empty() => {
                    let deadline = expired.deadline();
                    self.launch(expired.into_inner(), deadline);
                }
                Some(d) = done.recv() => self.finished(d).await,
            }
        }
        debug!("health checks stopped");
    }

    fn start(&mut self, s: Start) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let verdict = Verdict::new(&s.checks, &s.passed, s.healthy, s.ready);
        let running_for = Duration::from_secs_f64((now_unix() - s.running_since).clamp(0.0, 1e9));
        let now = Instant::now();
        for (i, c) in s.checks.health.iter().enumerate() {
            let first = now + c.delay.saturating_sub(running_for);
            self.queue.insert_at(
                Due {
                    key: s.key.clone(),
                    generation,
                    which: Which::Health(i),
                },
                first,
            );
        }
        for i in 0..s.checks.readiness.len() {
            if verdict.readiness_pending(i) {
                self.queue.insert_at(
                    Due {
                        key: s.key.clone(),
                        generation,
                        which: Which::Readiness(i),
                    },
                    now,
                );
            }
        }
        debug!(framework_id = %s.key.0, task_id = %s.key.1,
            health = s.checks.health.len(), readiness = s.checks.readiness.len(),
            "checking the task");
        self.tasks.insert(
            s.key,
            Watched {
                generation,
                container_id: s.container_id,
                checks: Arc::new(s.checks),
                verdict,
                running_since: s.running_since,
            },
        );
        self.stats
            .tasks
            .store(self.tasks.len() as u64, Ordering::Relaxed);
    }

    /// Forgets a task; its checks already queued or running are dropped
    /// when they come up (their generation is gone).
    fn stop(&mut self, key: &TaskKey) {
        if self.tasks.remove(key).is_some() {
            debug!(framework_id = %key.0, task_id = %key.1, "no more checks of the task");
        }
        self.stats
            .tasks
            .store(self.tasks.len() as u64, Ordering::Relaxed);
    }

    /// Starts a check that is due.
    fn launch(&mut self, due: Due, deadline: Instant) {
        let Some(w) = self
            .tasks
            .get(&due.key)
            .filter(|w| w.generation == due.generation)
        else {
            return;
        };
        let checks = w.checks.clone();
        let container_id = w.container_id.clone();
        let semaphore = self.semaphore.clone();
        let stats = self.stats.clone();
        let done = self.done_tx.clone();
        let containerizer = self.containerizer.clone();
        let tls = self.tls.clone();
        let cancel = self.shutdown.clone();
        let span = tracing::debug_span!("check", framework_id = %due.key.0, task_id = %due.key.1);
        tokio::spawn(
            async move {
                let run = async {
                    let Ok(_slot) = semaphore.acquire_owned().await else {
                        return;
                    };
                    stats.started.fetch_add(1, Ordering::Relaxed);
                    stats
                        .lateness
                        .lock()
                        .record(Instant::now().saturating_duration_since(deadline));
                    let (probe, timeout) = match due.which {
                        Which::Health(i) => (&checks.health[i].probe, checks.health[i].timeout),
                        Which::Readiness(i) => {
                            let r = &checks.readiness[i];
                            return finish(
                                &stats,
                                &done,
                                due,
                                deadline,
                                bounded(timeout_message(r.timeout), r.timeout, &stats, async {
                                    probe::http(&r.probe, &tls).await
                                })
                                .await,
                            );
                        }
                    };
                    // A command is killed by its containerizer at the
                    // timeout; the bound here is only a backstop.
                    let bound = match probe {
                        Probe::Command(_) => timeout + COMMAND_BACKSTOP,
                        _ => timeout,
                    };
                    let result = bounded(timeout_message(timeout), bound, &stats, async {
                        execute(
                            probe,
                            &tls,
                            containerizer.as_ref(),
                            &container_id,
                            timeout,
                            &stats,
                        )
                        .await
                    })
                    .await;
                    finish(&stats, &done, due, deadline, result);
                };
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = run => {}
                }
            }
            .instrument(span),
        );
    }

    /// A check has run: what does it change?
    async fn finished(&mut self, d: Done) {
        let Some(w) = self
            .tasks
            .get_mut(&d.key)
            .filter(|w| w.generation == d.generation)
        else {
            return;
        };
        let running_for = Duration::from_secs_f64((now_unix() - w.running_since).clamp(0.0, 1e9));
        let mut events = Vec::new();
        let mut again = None;
        match d.which {
            Which::Health(i) => {
                let decision = w.verdict.record_health(i, d.result, running_for);
                if decision.first_pass {
                    events.push(HealthEvent::FirstPass { check: i });
                }
                if let Some((healthy, message)) = decision.health {
                    events.push(HealthEvent::Health { healthy, message });
                }
                match decision.kill {
                    Some(message) => events.push(HealthEvent::Kill { message }),
                    None => again = Some(w.checks.health[i].interval),
                }
            }
            Which::Readiness(i) => {
                let decision = w.verdict.record_readiness(i, d.result);
                if let Some(message) = decision.ready {
                    events.push(HealthEvent::Ready { message });
                }
                if !decision.done {
                    again = Some(w.checks.readiness[i].interval);
                }
            }
        }
        let container_id = w.container_id.clone();
        match again {
            Some(interval) => {
                let next = (d.due + interval).max(Instant::now());
                self.queue.insert_at(
                    Due {
                        key: d.key.clone(),
                        generation: d.generation,
                        which: d.which,
                    },
                    next,
                );
            }
            // A kill: nothing more to check.
            None if matches!(d.which, Which::Health(_)) => self.stop(&d.key),
            None => {}
        }
        for event in events {
            let sent = self
                .core
                .send(Command::Health {
                    key: d.key.clone(),
                    container_id: container_id.clone(),
                    event,
                })
                .await;
            if sent.is_err() {
                // The core has stopped: so does the agent.
                return;
            }
        }
    }
}

/// How much longer than its timeout a check command may take before it is
/// given up (its containerizer kills it at the timeout).
const COMMAND_BACKSTOP: Duration = Duration::from_secs(5);

fn timeout_message(timeout: Duration) -> String {
    format!("no result within the timeout of {timeout:?}")
}

/// Runs a probe under its timeout, counting timeouts.
async fn bounded(
    timed_out: String,
    timeout: Duration,
    stats: &HealthStats,
    probe: impl Future<Output = CheckResult>,
) -> CheckResult {
    match tokio::time::timeout(timeout, probe).await {
        Ok(r) => r,
        Err(_) => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            CheckResult::Failed(timed_out)
        }
    }
}

fn finish(
    stats: &HealthStats,
    done: &mpsc::UnboundedSender<Done>,
    due: Due,
    deadline: Instant,
    result: CheckResult,
) {
    match &result {
        CheckResult::Passed(_) => stats.passed.fetch_add(1, Ordering::Relaxed),
        CheckResult::Failed(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
    };
    let _ = done.send(Done {
        key: due.key,
        generation: due.generation,
        which: due.which,
        due: deadline,
        result,
    });
}

/// Runs one health check.
async fn execute(
    probe: &Probe,
    tls: &Tls,
    containerizer: &dyn Containerizer,
    container_id: &ContainerId,
    timeout: Duration,
    stats: &HealthStats,
) -> CheckResult {
    match probe {
        Probe::Http(http) => probe::http(http, tls).await,
        Probe::Tcp { port } => probe::tcp(*port).await,
        Probe::Command(command) => {
            match containerizer
                .run_check(container_id, command, timeout)
                .await
            {
                Ok(CheckExit::Exited { code: 0, .. }) => {
                    CheckResult::Passed("the command exited with code 0".into())
                }
                Ok(CheckExit::Exited { code, output }) => CheckResult::Failed(with_output(
                    format!("the command exited with code {code}"),
                    &output,
                )),
                Ok(CheckExit::Signaled { signal, output }) => CheckResult::Failed(with_output(
                    format!("the command was killed by {}", signal_name(signal)),
                    &output,
                )),
                Ok(CheckExit::TimedOut) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    CheckResult::Failed(timeout_message(timeout))
                }
                Err(e) => {
                    warn!("{e}");
                    CheckResult::Failed(e.to_string())
                }
            }
        }
    }
}

fn with_output(what: String, output: &str) -> String {
    if output.is_empty() {
        what
    } else {
        let line: String = output
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        format!("{what}: {line}")
    }
}
