//! The agent's core: one actor owns the agent's mutable state (its id, its
//! frameworks, the task table and every task's status-update stream). The
//! master session, the HTTP handlers and the task watchers talk to it over a
//! channel through a cloneable [`CoreHandle`].
//!
//! Every change is checkpointed before it is acted on or reported, so a
//! restarted agent can pick up where this one stopped ([`Core::recover`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::Resources;
use agora_proto::v1::{
    AgentInfo, AgentMessage, AgentRegistered, Attribute, FrameworkInfo, KillPolicy, LaunchTask,
    RegisterAgent, StatusReason, StatusUpdates, Task, TaskState, agent_message, master_to_agent,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::checkpoint::{
    Checkpoint, ContainerRecord, HealthRecord, KillRecord, Writer, list_dir,
    remove_dir_all_if_exists,
};
use crate::containerizer::{
    ContainerId, Containerizer, KnownContainer, LaunchRequest, Launched, Recovered, Termination,
};
use crate::error::AgentError;
use crate::health::stats::HealthStatsView;
use crate::health::{HealthChecks, HealthEvent, Start};
use crate::metrics::{AgentMetrics, Counts};
use crate::paths::validate_id;
use crate::status_update::{AckOutcome, RetryPolicy, UpdateStream};
use crate::task::{Outcome, Phase, TaskEntry, TaskKey, new_status, outcome, progress};

/// How many ended tasks `/state` and the logs endpoint remember.
const COMPLETED_TASKS_KEPT: usize = 1000;

/// What the core needs to know about its agent (fixed for its lifetime).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub hostname: String,
    pub http_address: String,
    pub master: String,
    pub resources: Resources,
    pub attributes: Vec<Attribute>,
    pub default_kill_grace: Duration,
    pub retry: RetryPolicy,
    pub sandbox_gc_delay: Duration,
    /// How many health checks may run at once.
    pub health_check_concurrency: usize,
}

/// A message to the core.
pub(crate) enum Command {
    /// The session wants the `register` message to open a session with.
    Registration {
        reply: oneshot::Sender<RegisterAgent>,
    },
    /// The master accepted the agent on session `session`.
    Registered {
        session: u64,
        registered: AgentRegistered,
        outbound: mpsc::UnboundedSender<AgentMessage>,
        /// Whether the agent took the id (it could checkpoint it).
        accepted: oneshot::Sender<Result<(), String>>,
    },
    /// The master refused the agent.
    Refused { session: u64, message: String },
    /// Session `session` ended.
    Disconnected { session: u64 },
    /// Launches, kills, acknowledgements, framework shutdowns.
    Master(master_to_agent::Message),
    /// A launch finished.
    Launched {
        key: TaskKey,
        container_id: ContainerId,
        result: Result<Launched, AgentError>,
    },
    /// A container ended.
    Ended {
        key: TaskKey,
        container_id: ContainerId,
        termination: Result<Termination, AgentError>,
    },
    /// A task's checks found something to act on.
    Health {
        key: TaskKey,
        container_id: ContainerId,
        event: HealthEvent,
    },
    /// `/state`.
    State { reply: oneshot::Sender<StateView> },
    /// The counts `/metrics` shows.
    Counts { reply: oneshot::Sender<Counts> },
    /// Where a task's sandbox is (for its logs).
    Sandbox {
        task_id: String,
        framework_id: Option<String>,
        reply: oneshot::Sender<Result<PathBuf, SandboxLookupError>>,
    },
}

/// Why a task's sandbox cannot be named.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SandboxLookupError {
    Unknown,
    Ambiguous(Vec<String>),
}

/// A cheap handle to the core.
#[derive(Clone)]
pub(crate) struct CoreHandle {
    tx: mpsc::Sender<Command>,
}

impl CoreHandle {
    pub async fn send(&self, cmd: Command) -> Result<(), AgentError> {
        self.tx.send(cmd).await.map_err(|_| AgentError::Stopped)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, AgentError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| AgentError::Stopped)
    }

    pub async fn registration(&self) -> Result<RegisterAgent, AgentError> {
        self.ask(|reply| Command::Registration { reply }).await
    }

    pub async fn state(&self) -> Result<StateView, AgentError> {
        self.ask(|reply| Command::State { reply }).await
    }

    pub async fn counts(&self) -> Result<Counts, AgentError> {
        self.ask(|reply| Command::Counts { reply }).await
    }

    pub async fn sandbox(
        &self,
        task_id: String,
        framework_id: Option<String>,
    ) -> Result<Result<PathBuf, SandboxLookupError>, AgentError> {
        self.ask(|reply| Command::Sandbox {
            task_id,
            framework_id,
            reply,
        })
        .await
    }
}

/// `/state` as JSON.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct StateView {
    pub id: Option<String>,
    pub hostname: String,
    pub http_address: String,
    pub master: String,
    pub connected: bool,
    pub resources: String,
    pub attributes: String,
    pub frameworks: Vec<FrameworkView>,
    pub tasks: Vec<TaskView>,
    pub completed_tasks: Vec<TaskView>,
    pub health_checks: HealthStatsView,
    pub version: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct FrameworkView {
    pub id: String,
    pub name: String,
    pub user: String,
    pub roles: Vec<String>,
    pub checkpoint: bool,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct TaskView {
    pub id: String,
    pub framework_id: String,
    pub name: String,
    pub state: String,
    pub message: String,
    pub exit_code: Option<i32>,
    pub role: String,
    pub resources: String,
    pub container_id: Option<String>,
    pub containerizer: Option<String>,
    pub pid: Option<i32>,
    pub sandbox: Option<PathBuf>,
    pub unacknowledged_updates: usize,
    pub healthy: Option<bool>,
    pub ready: Option<bool>,
}

/// A task's update stream was checkpointed up to update `upto` (or the
/// write failed).
pub(crate) struct Persisted {
    key: TaskKey,
    upto: u64,
    result: Result<(), String>,
}

/// The master session the core may send on.
struct Session {
    id: u64,
    outbound: mpsc::UnboundedSender<AgentMessage>,
}

/// A sandbox waiting to be removed.
struct Garbage {
    at: Instant,
    container_id: Option<ContainerId>,
    sandbox: PathBuf,
}

/// The actor.
pub(crate) struct Core {
    settings: Arc<Settings>,
    checkpoint: Checkpoint,
    /// Does the checkpoint writes, off this actor's loop.
    writer: Writer,
    metrics: AgentMetrics,
    /// Tasks whose update stream could not be checkpointed: when to try
    /// again.
    persist_retry: BTreeMap<TaskKey, Instant>,
    /// Launches in progress: a kill cancels them.
    launching: BTreeMap<TaskKey, CancellationToken>,
    /// The writer's word on update checkpoints (unbounded: the writer
    /// thread never waits for the actor).
    persisted_tx: mpsc::UnboundedSender<Persisted>,
    persisted_rx: mpsc::UnboundedReceiver<Persisted>,
    containerizer: Arc<dyn Containerizer>,
    agent_id: Option<String>,
    agent_id_tx: watch::Sender<Option<String>>,
    frameworks: BTreeMap<String, FrameworkInfo>,
    /// Frameworks whose checkpointed info was damaged: known by id only
    /// (taken to checkpoint, and not sent to the master) until the master
    /// sends their info again.
    unknown_frameworks: BTreeSet<String>,
    tasks: BTreeMap<TaskKey, TaskEntry>,
    completed: VecDeque<TaskView>,
    garbage: Vec<Garbage>,
    session: Option<Session>,
    /// Runs the tasks' health and readiness checks.
    health: HealthChecks,
    /// For the core's own helpers (launches, watchers, kills).
    tx: mpsc::Sender<Command>,
    rx: mpsc::Receiver<Command>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Core {
    /// Reads the checkpoint, finds every task's container again, and queues
    /// the updates the restart calls for (tasks that ended while the agent
    /// was down, tasks of frameworks without checkpointing, ...).
    pub async fn recover(
        settings: Settings,
        checkpoint: Checkpoint,
        containerizer: Arc<dyn Containerizer>,
        metrics: AgentMetrics,
        shutdown: CancellationToken,
    ) -> Result<(Core, CoreHandle, watch::Receiver<Option<String>>), AgentError> {
        let state = checkpoint.recover()?;
        let observed = metrics.clone();
        let writer = Writer::start(move |r| match r {
            Ok(n) => observed.checkpoint_ok(n),
            Err(e) => observed.checkpoint_failed(e),
        });
        for s in &state.skipped {
            warn!("skipped while recovering: {s}");
        }
        if let Some(id) = &state.agent_id {
            tracing::Span::current().record("agent_id", id.as_str());
        }
        let (tx, rx) = mpsc::channel(1024);
        let (persisted_tx, persisted_rx) = mpsc::unbounded_channel();
        let (agent_id_tx, agent_id_rx) = watch::channel(state.agent_id.clone());
        let tracker = TaskTracker::new();
        let health = HealthChecks::spawn(
            containerizer.clone(),
            tx.clone(),
            settings.health_check_concurrency,
            &tracker,
            shutdown.clone(),
        );
        let mut core = Core {
            settings: Arc::new(settings),
            checkpoint,
            writer,
            metrics,
            persist_retry: BTreeMap::new(),
            launching: BTreeMap::new(),
            persisted_tx,
            persisted_rx,
            health,
            containerizer,
            agent_id: state.agent_id,
            agent_id_tx,
            frameworks: state.frameworks,
            unknown_frameworks: BTreeSet::new(),
            tasks: BTreeMap::new(),
            completed: VecDeque::new(),
            garbage: Vec::new(),
            session: None,
            tx: tx.clone(),
            rx,
            tracker,
            shutdown,
        };

        // A framework whose info is lost still has its tasks: they are
        // kept (as if it checkpointed) until the master tells more.
        for t in &state.tasks {
            let fid = &t.launch.framework_id;
            if !core.frameworks.contains_key(fid) {
                warn!(framework_id = %fid, damaged = state.damaged_frameworks.contains(fid),
                    "the framework's checkpointed info is missing; keeping its tasks");
                core.frameworks.insert(
                    fid.clone(),
                    FrameworkInfo {
                        id: fid.clone(),
                        checkpoint: true,
                        ..Default::default()
                    },
                );
                core.unknown_frameworks.insert(fid.clone());
            }
        }

        // Containers to look for, with the task each belongs to.
        let mut known: Vec<(TaskKey, KnownContainer)> = Vec::new();
        // Tasks whose container record was damaged and rebuilt from the
        // sandbox they ran in.
        let mut rebuilt: BTreeSet<TaskKey> = BTreeSet::new();
        for mut t in state.tasks {
            let Some(info) = t.launch.task.clone() else {
                continue;
            };
            let key: TaskKey = (t.launch.framework_id.clone(), info.task_id.clone());
            let mut lost: Option<String> = None;
            if t.container_damaged {
                match core.container_from_sandbox(&key, &info) {
                    Ok(record) => {
                        let _span = task_span(&key).entered();
                        warn!(container_id = %record.container_id,
                            "the task's container record was damaged; found its container by its sandbox");
                        core.writer
                            .submit(core.checkpoint.container_op(&key.0, &key.1, &record), None);
                        t.container = Some(record);
                        rebuilt.insert(key.clone());
                    }
                    Err(why) => lost = Some(why),
                }
            }
            let stream = UpdateStream::from_records(t.updates, core.settings.retry);
            let container_id = t
                .container
                .as_ref()
                .and_then(|c| ContainerId::parse(&c.container_id).ok());
            let sandbox = container_id.as_ref().map(|c| {
                core.checkpoint
                    .layout()
                    .sandbox_dir(&key.0, &key.1, c.as_str())
            });
            let ended = stream.has_terminal();
            let latest = stream.latest();
            let (healthy, ready) = (latest.and_then(|s| s.healthy), latest.and_then(|s| s.ready));
            let entry = TaskEntry {
                launch: Some(t.launch),
                container: t.container,
                sandbox: sandbox.clone(),
                phase: if ended {
                    Phase::Ended
                } else {
                    Phase::Launching
                },
                stream,
                pid: None,
                healthy,
                ready,
                health: t.health,
                recorded: true,
            };
            if let Some(why) = lost.filter(|_| !entry.stream.has_terminal()) {
                core.tasks.insert(key.clone(), entry);
                let _span = task_span(&key).entered();
                warn!("{why}");
                core.emit(
                    &key,
                    Outcome {
                        state: TaskState::TaskLost,
                        reason: StatusReason::ReasonAgentRestarted,
                        message: format!("The agent lost track of the task: {why}"),
                        exit_code: None,
                    },
                );
                core.set_phase(&key, Phase::Ended);
                continue;
            }
            if entry.stream.is_complete() {
                core.tasks.insert(key.clone(), entry);
                core.finish(&key);
                continue;
            }
            let recorded_by = entry.container.as_ref().map(|c| c.containerizer.clone());
            let checkpoint_data = entry.container.as_ref().and_then(|c| c.launched.clone());
            core.tasks.insert(key.clone(), entry);
            if ended {
                continue;
            }
            match (container_id, sandbox, recorded_by) {
                (Some(container_id), Some(sandbox), Some(by))
                    if core.containerizer.recovers(&by) =>
                {
                    known.push((
                        key,
                        KnownContainer {
                            container_id,
                            containerizer: by,
                            sandbox,
                            checkpoint: checkpoint_data,
                        },
                    ));
                }
                (Some(_), _, Some(by)) if by == "docker" => {
                    // Its container may well run on: lost, not failed.
                    core.end_task(
                        &key,
                        Termination::Lost {
                            message: "it runs in a Docker container, and Docker is not \
                                      available to this agent since its restart (see the \
                                      agent's log), so its container is not followed; it \
                                      may still run"
                                .into(),
                        },
                    );
                }
                (Some(_), _, Some(by)) => {
                    core.end_task(
                        &key,
                        Termination::Vanished {
                            message: format!(
                                "it ran in a `{by}` container, which this agent cannot run"
                            ),
                        },
                    );
                }
                _ => {
                    let _span = task_span(&key).entered();
                    warn!("the agent stopped before launching the task");
                    core.emit(
                        &key,
                        Outcome {
                            state: TaskState::TaskFailed,
                            reason: StatusReason::ReasonAgentRestarted,
                            message: "The agent restarted before it launched the task".into(),
                            exit_code: None,
                        },
                    );
                    core.set_phase(&key, Phase::Ended);
                }
            }
        }

        let (keys, containers): (Vec<TaskKey>, Vec<KnownContainer>) = known.into_iter().unzip();
        let found = core.containerizer.recover(containers).await?;
        for (key, recovered) in keys.into_iter().zip(found) {
            match recovered {
                // A rebuilt record that names no container the runtime
                // knows: the task is lost, not failed.
                Recovered::Ended(Termination::Vanished { message }) if rebuilt.contains(&key) => {
                    let _span = task_span(&key).entered();
                    warn!("{message}");
                    core.emit(
                        &key,
                        Outcome {
                            state: TaskState::TaskLost,
                            reason: StatusReason::ReasonAgentRestarted,
                            message: format!(
                                "The agent lost track of the task: its container record was \
                                 damaged, and {message}"
                            ),
                            exit_code: None,
                        },
                    );
                    core.set_phase(&key, Phase::Ended);
                }
                other => core.recovered(&key, other),
            }
        }
        core.forget_unused_frameworks();
        core.sweep_sandboxes();
        info!(
            agent_id = core.agent_id.as_deref().unwrap_or(""),
            tasks = core.tasks.len(),
            "recovered the agent's state"
        );
        Ok((core, CoreHandle { tx }, agent_id_rx))
    }

    /// Whether the agent has room for `task` beside the tasks it runs.
    fn check_room(&self, task: &agora_proto::v1::TaskInfo) -> Result<(), String> {
        let running: Vec<Resources> = self
            .tasks
            .values()
            .filter(|e| e.phase != Phase::Ended)
            .filter_map(|e| e.launch.as_ref()?.task.as_ref())
            .filter_map(|t| Resources::from_proto(&t.resources).ok())
            .collect();
        let wanted = Resources::from_proto(&task.resources)
            .map_err(|e| format!("the task's resources are invalid: {e}"))?;
        crate::limits::check_room(&self.settings.resources, &running, &wanted)
    }

    /// The container a task ran in, found by its sandbox (whose name is
    /// the container id), when its container record is lost.
    fn container_from_sandbox(
        &self,
        key: &TaskKey,
        info: &agora_proto::v1::TaskInfo,
    ) -> Result<ContainerRecord, String> {
        let dir = self
            .checkpoint
            .layout()
            .sandboxes_dir()
            .join(&key.0)
            .join(&key.1);
        let found: Vec<ContainerId> = list_dir(&dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| ContainerId::parse(n).ok())
            .collect();
        match found.as_slice() {
            [one] => Ok(ContainerRecord {
                container_id: one.to_string(),
                containerizer: self.containerizer.name_for(info).to_string(),
                launched: None,
                kill: None,
            }),
            [] => Err(format!(
                "its container record was damaged and it has no sandbox in {} to find its \
                 container by",
                dir.display()
            )),
            many => Err(format!(
                "its container record was damaged and {} sandboxes in {} could be its \
                 container's",
                many.len(),
                dir.display()
            )),
        }
    }

    /// The counters of the tasks' checks.
    pub fn health_stats(&self) -> Arc<crate::health::stats::HealthStats> {
        self.health.stats().clone()
    }

    /// Acts on what the containerizer found of a checkpointed task.
    fn recovered(&mut self, key: &TaskKey, recovered: Recovered) {
        let _span = task_span(key).entered();
        let checkpointing = self.frameworks.get(&key.0).is_some_and(|f| f.checkpoint);
        match recovered {
            Recovered::Running(_) if !checkpointing => {
                info!("the task's framework does not checkpoint: killing the task");
                if let Some(cid) = self.tasks.get(key).and_then(TaskEntry::container_id) {
                    let c = self.containerizer.clone();
                    self.tracker.spawn(async move {
                        if let Err(e) = c.kill(&cid, Duration::ZERO).await {
                            warn!("cannot kill the task: {e}");
                        }
                    });
                }
                self.emit(
                    key,
                    Outcome {
                        state: TaskState::TaskFailed,
                        reason: StatusReason::ReasonAgentRestarted,
                        message: "The agent restarted and the task's framework does not \
                                  checkpoint, so the task was killed"
                            .into(),
                        exit_code: None,
                    },
                );
                self.set_phase(key, Phase::Ended);
            }
            Recovered::Running(launched) => {
                info!(pid = launched.pid, "the task still runs");
                let starting = self
                    .tasks
                    .get(key)
                    .is_some_and(|e| e.stream.latest_state() != Some(TaskState::TaskRunning));
                self.mark_running(key, launched);
                if self.tasks.get(key).is_some_and(|e| e.kill().is_none()) {
                    self.start_checks(key);
                    if starting {
                        self.emit(key, progress(TaskState::TaskRunning, "Command is running"));
                    }
                }
                if let Some(grace) = self
                    .tasks
                    .get(key)
                    .and_then(|e| e.kill())
                    .map(|k| k.grace_seconds)
                {
                    self.spawn_kill(key, Duration::from_secs_f64(grace.max(0.0)));
                }
            }
            Recovered::Ended(termination) => {
                info!(?termination, "the task ended while the agent was away");
                self.end_task(key, termination);
            }
        }
    }

    /// Runs the actor until shutdown.
    pub async fn run(mut self) {
        loop {
            let wake = self.next_wakeup();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                Some(p) = self.persisted_rx.recv() => {
                    // A batch's outcomes together, so that its updates go
                    // out in one message.
                    self.persisted(&p.key, p.upto, p.result);
                    while let Ok(p) = self.persisted_rx.try_recv() {
                        self.persisted(&p.key, p.upto, p.result);
                    }
                }
                _ = sleep_until_opt(wake) => {}
            }
            self.retry_persists();
            self.flush_updates();
            self.collect_garbage();
        }
        self.tracker.close();
        // Watchers, launches and kills stop on the same token; the tasks
        // themselves keep running and are recovered on the next start.
        self.tracker.wait().await;
        // What was queued for the checkpoint is written before the agent
        // lets go of its work directory.
        if let Some(thread) = self.writer.close() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        debug!("the agent's core stopped");
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let updates = if self.session.is_some() {
            self.tasks
                .values()
                .filter_map(|e| e.stream.next_deadline())
                .min()
        } else {
            None
        };
        let gc = self.garbage.iter().map(|g| g.at).min();
        let retry = self.persist_retry.values().min().copied();
        updates.into_iter().chain(gc).chain(retry).min()
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Registration { reply } => {
                let _ = reply.send(self.registration());
            }
            Command::Registered {
                session,
                registered,
                outbound,
                accepted,
            } => {
                let r = self.registered(session, registered, outbound);
                let _ = accepted.send(r);
            }
            Command::Counts { reply } => {
                let _ = reply.send(self.counts());
            }
            Command::Refused { session, message } => self.refused(session, &message),
            Command::Disconnected { session } => {
                if self.session.as_ref().is_some_and(|s| s.id == session) {
                    info!("disconnected from the master");
                    self.session = None;
                }
            }
            Command::Master(msg) => self.master_message(msg),
            Command::Launched {
                key,
                container_id,
                result,
            } => self.launched(&key, &container_id, result),
            Command::Ended {
                key,
                container_id,
                termination,
            } => {
                let current = self.tasks.get(&key).is_some_and(|e| {
                    e.phase != Phase::Ended && e.container_id() == Some(container_id.clone())
                });
                if termination.is_err() {
                    self.metrics.containerizer_error("wait");
                }
                if current {
                    let _span = task_span(&key).entered();
                    let termination = termination.unwrap_or_else(|e| Termination::Vanished {
                        message: format!("the agent lost track of the task: {e}"),
                    });
                    info!(?termination, "the task ended");
                    self.end_task(&key, termination);
                }
            }
            Command::Health {
                key,
                container_id,
                event,
            } => self.health_event(&key, &container_id, event),
            Command::State { reply } => {
                let _ = reply.send(self.state_view());
            }
            Command::Sandbox {
                task_id,
                framework_id,
                reply,
            } => {
                let _ = reply.send(self.sandbox_of(&task_id, framework_id.as_deref()));
            }
        }
    }

    // ----- master session -------------------------------------------------

    fn registration(&self) -> RegisterAgent {
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let s = &self.settings;
        let mut frameworks = BTreeMap::new();
        let mut tasks = Vec::new();
        for (key, e) in &self.tasks {
            let (Some(launch), Some(latest)) = (&e.launch, e.stream.latest()) else {
                continue;
            };
            if e.stream.is_complete() {
                continue;
            }
            let info = launch.task.clone().unwrap_or_default();
            if let Some(f) = self.frameworks.get(&key.0)
                && !self.unknown_frameworks.contains(&key.0)
            {
                frameworks.insert(key.0.clone(), f.clone());
            }
            tasks.push(Task {
                task_id: key.1.clone(),
                framework_id: key.0.clone(),
                agent_id: agent_id.clone(),
                name: info.name,
                state: latest.state,
                resources: info.resources,
                status: Some(latest.clone()),
                container: info.container,
                labels: info.labels,
                role: launch.role.clone(),
            });
        }
        RegisterAgent {
            info: Some(AgentInfo {
                id: agent_id,
                hostname: s.hostname.clone(),
                resources: s.resources.to_proto(),
                attributes: s.attributes.clone(),
                http_address: s.http_address.clone(),
                version: agora_proto::VERSION.to_string(),
            }),
            tasks,
            frameworks: frameworks.into_values().collect(),
        }
    }

    fn registered(
        &mut self,
        session: u64,
        registered: AgentRegistered,
        outbound: mpsc::UnboundedSender<AgentMessage>,
    ) -> Result<(), String> {
        let id = registered.agent_id;
        if id.is_empty() {
            warn!("the master registered the agent without an id; ignoring it");
            return Err("the master registered the agent without an id".into());
        }
        if self.agent_id.as_deref() != Some(id.as_str()) {
            if let Some(old) = &self.agent_id {
                warn!(old_agent_id = %old, agent_id = %id, "the master gave this agent a new id");
            }
            // Written here, on the loop, and waited for: it happens once per
            // agent id, and nothing may use an id that a restart would lose
            // (the restarted agent would register anew and orphan every task).
            if let Err(e) = self.checkpoint.save_agent_id(&id) {
                let reason = format!(
                    "cannot checkpoint the agent id `{id}` the master gave ({e}); not \
                     registering until it can be written"
                );
                error!("{reason}");
                self.metrics.checkpoint_failed(&reason);
                return Err(reason);
            }
            self.metrics.checkpoint_ok(1);
            self.agent_id = Some(id.clone());
            self.agent_id_tx.send_replace(Some(id.clone()));
            tracing::Span::current().record("agent_id", id.as_str());
        }
        let master = registered.master.unwrap_or_default();
        info!(agent_id = %id, master_id = %master.id, master = %format!("{}:{}", master.hostname, master.port),
            "registered with the master");
        self.session = Some(Session {
            id: session,
            outbound,
        });
        // Everything not yet acknowledged goes out again at once.
        for e in self.tasks.values_mut() {
            e.stream.resend_now();
        }
        Ok(())
    }

    fn refused(&mut self, session: u64, message: &str) {
        if self.session.as_ref().is_some_and(|s| s.id == session) {
            self.session = None;
        }
        if !message.to_ascii_lowercase().contains("removed") {
            error!(reason = %message, "the master refused the agent; trying again");
            return;
        }
        error!(
            reason = %message,
            "the master removed this agent: its tasks were reported gone to their frameworks, \
             so the agent kills them, forgets its id and registers as a new agent"
        );
        let keys: Vec<TaskKey> = self.tasks.keys().cloned().collect();
        for key in keys {
            let Some(e) = self.tasks.remove(&key) else {
                continue;
            };
            self.health.stop(&key);
            if e.phase == Phase::Running
                && let Some(cid) = e.container_id()
            {
                let c = self.containerizer.clone();
                self.tracker.spawn(async move {
                    let _ = c.kill(&cid, Duration::ZERO).await;
                });
            }
            if e.launch.is_some() {
                self.writer
                    .submit(self.checkpoint.remove_task_op(&key.0, &key.1), None);
                if let Some(sandbox) = e.sandbox.clone() {
                    self.garbage.push(Garbage {
                        at: Instant::now() + self.settings.sandbox_gc_delay,
                        container_id: e.container_id(),
                        sandbox,
                    });
                }
            }
        }
        self.forget_unused_frameworks();
        if let Err(e) = self.checkpoint.clear_agent_id() {
            error!("{e}");
        }
        self.agent_id = None;
        self.agent_id_tx.send_replace(None);
    }

    fn master_message(&mut self, msg: master_to_agent::Message) {
        match msg {
            master_to_agent::Message::RunTasks(run) => {
                for f in run.frameworks {
                    self.add_framework(f);
                }
                for launch in run.launches {
                    self.launch(launch);
                }
            }
            master_to_agent::Message::KillTasks(kills) => {
                for k in kills.kills {
                    self.kill(&(k.framework_id, k.task_id), k.kill_policy.as_ref(), None);
                }
            }
            master_to_agent::Message::Acknowledge(acks) => {
                for a in acks.acks {
                    self.acknowledge(&(a.framework_id, a.task_id), &a.uuid);
                }
            }
            master_to_agent::Message::ShutdownFramework(s) => {
                info!(framework_id = %s.framework_id, "shutting the framework's tasks down");
                let keys: Vec<TaskKey> = self
                    .tasks
                    .iter()
                    .filter(|(k, e)| k.0 == s.framework_id && e.launch.is_some())
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    self.kill(&key, None, None);
                }
            }
            master_to_agent::Message::Registered(_) | master_to_agent::Message::Refused(_) => {}
        }
    }

    /// Sends every update that is due, in one message.
    fn flush_updates(&mut self) {
        let Some(session) = &self.session else {
            return;
        };
        let now = Instant::now();
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let mut statuses = Vec::new();
        for e in self.tasks.values_mut() {
            if let Some(mut s) = e.stream.outgoing(now) {
                if s.agent_id.is_empty() {
                    s.agent_id = agent_id.clone();
                }
                statuses.push(s);
                e.stream.mark_sent(now);
            }
        }
        if statuses.is_empty() {
            return;
        }
        debug!(count = statuses.len(), "sending status updates");
        let msg = AgentMessage {
            message: Some(agent_message::Message::Updates(StatusUpdates { statuses })),
        };
        if session.outbound.send(msg).is_err() {
            // The session is gone; everything goes out again after the next
            // registration.
            self.session = None;
        }
    }

    // ----- tasks ----------------------------------------------------------

    fn add_framework(&mut self, f: FrameworkInfo) {
        if let Err(e) = validate_id("framework id", &f.id) {
            error!("ignoring a framework: {e}");
            return;
        }
        self.unknown_frameworks.remove(&f.id);
        if self.frameworks.get(&f.id) != Some(&f) {
            self.writer.submit(self.checkpoint.framework_op(&f), None);
            self.frameworks.insert(f.id.clone(), f);
        }
    }

    fn launch(&mut self, launch: LaunchTask) {
        let Some(info) = launch.task.clone() else {
            warn!(framework_id = %launch.framework_id, "ignoring a launch without a task");
            return;
        };
        let key: TaskKey = (launch.framework_id.clone(), info.task_id.clone());
        let _span = task_span(&key).entered();
        if let Err(e) = validate_id("framework id", &key.0).and(validate_id("task id", &key.1)) {
            error!("refusing to launch: {e}");
            return;
        }
        if let Some(e) = self.tasks.get(&key) {
            if e.launch.is_some() && !e.stream.has_terminal() {
                info!("the task is already known here; ignoring the duplicate launch");
                return;
            }
            if e.stream.pending() > 0 {
                warn!(
                    pending = e.stream.pending(),
                    "a task with this id ended earlier and not all of its updates were \
                     acknowledged; they are dropped for the new launch"
                );
            }
            self.finish(&key);
        }
        if !self.frameworks.contains_key(&key.0) {
            warn!("the launch came without its framework's info; assuming defaults");
            self.add_framework(FrameworkInfo {
                id: key.0.clone(),
                ..Default::default()
            });
        }
        let container_id = ContainerId::random();
        let sandbox = self
            .checkpoint
            .layout()
            .sandbox_dir(&key.0, &key.1, container_id.as_str());
        // A task beyond what the agent has free is refused before anything
        // of it is recorded (the master offers only what is free: this
        // catches a master and an agent that disagree).
        if let Err(why) = self.check_room(&info) {
            warn!("refusing the launch: {why}");
            self.tasks.insert(
                key.clone(),
                TaskEntry {
                    launch: Some(launch),
                    container: None,
                    sandbox: None,
                    phase: Phase::Ended,
                    stream: UpdateStream::new(self.settings.retry),
                    pid: None,
                    healthy: None,
                    ready: None,
                    health: None,
                    recorded: false,
                },
            );
            self.end_task(&key, Termination::Refused { message: why });
            return;
        }
        let record = ContainerRecord {
            container_id: container_id.to_string(),
            containerizer: self.containerizer.name_for(&info).to_string(),
            launched: None,
            kill: None,
        };
        // The task and its container are checkpointed before anything runs:
        // the launch below waits for both writes.
        let saved_task = self.writer.submit_waited(self.checkpoint.task_op(&launch));
        let saved_container = self
            .writer
            .submit_waited(self.checkpoint.container_op(&key.0, &key.1, &record));
        self.tasks.insert(
            key.clone(),
            TaskEntry {
                launch: Some(launch),
                container: Some(record),
                sandbox: Some(sandbox.clone()),
                phase: Phase::Launching,
                stream: UpdateStream::new(self.settings.retry),
                pid: None,
                healthy: None,
                ready: None,
                health: None,
                recorded: true,
            },
        );
        if !self.containerizer.supports(&info) {
            self.end_task(
                &key,
                Termination::LaunchFailed {
                    message: format!(
                        "this agent has no containerizer for this task (its containerizer is \
                         `{}`; plain commands need `process`, Docker tasks `docker`: see the \
                         agent's --containerizers)",
                        self.containerizer.name()
                    ),
                },
            );
            return;
        }
        if let Err(e) = std::fs::create_dir_all(&sandbox) {
            let e = AgentError::io("cannot create the sandbox", &sandbox, e);
            self.end_task(
                &key,
                Termination::LaunchFailed {
                    message: e.to_string(),
                },
            );
            return;
        }
        info!(container_id = %container_id, "launching the task");
        self.emit(&key, progress(TaskState::TaskStarting, "Starting the task"));
        let request = LaunchRequest {
            container_id: container_id.clone(),
            framework_id: key.0.clone(),
            agent_id: self.agent_id.clone().unwrap_or_default(),
            hostname: self.settings.hostname.clone(),
            task: info,
            sandbox,
        };
        let c = self.containerizer.clone();
        let tx = self.tx.clone();
        let token = self.shutdown.clone();
        let metrics = self.metrics.clone();
        let cancel = CancellationToken::new();
        self.launching.insert(key.clone(), cancel.clone());
        self.tracker.spawn(
            async move {
                let cid = container_id.clone();
                let c2 = c.clone();
                let launch = async {
                    for saved in [saved_task, saved_container] {
                        match saved.await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Err(AgentError::Checkpoint(e)),
                            Err(_) => return Err(AgentError::Stopped),
                        }
                    }
                    let started = std::time::Instant::now();
                    let result = c.launch(request).await;
                    metrics.launch_took(started.elapsed());
                    result
                };
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = cancel.cancelled() => {
                        // A kill came during the launch: whatever of the
                        // container was made goes.
                        let _ = c2.kill(&cid, Duration::ZERO).await;
                        let _ = c2.remove(&cid).await;
                        let result = Err(AgentError::Launch(
                            "the launch was cancelled by a kill".into(),
                        ));
                        let _ = tx.send(Command::Launched { key, container_id, result }).await;
                    }
                    result = launch => {
                        let _ = tx.send(Command::Launched { key, container_id, result }).await;
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
    }

    fn launched(
        &mut self,
        key: &TaskKey,
        container_id: &ContainerId,
        result: Result<Launched, AgentError>,
    ) {
        self.launching.remove(key);
        let current = self.tasks.get(key).is_some_and(|e| {
            e.phase == Phase::Launching && e.container_id().as_ref() == Some(container_id)
        });
        if !current {
            // The task was dropped while it launched (the agent was removed,
            // or the id was launched again): its container must not run on.
            if result.is_ok() {
                let c = self.containerizer.clone();
                let cid = container_id.clone();
                self.tracker.spawn(async move {
                    let _ = c.kill(&cid, Duration::ZERO).await;
                });
            }
            return;
        }
        let _span = task_span(key).entered();
        match result {
            Ok(launched) => {
                info!(pid = launched.pid, "the task runs");
                self.mark_running(key, launched);
                let kill = self
                    .tasks
                    .get(key)
                    .and_then(|e| e.kill())
                    .map(|k| k.grace_seconds);
                match kill {
                    Some(grace) => self.spawn_kill(key, Duration::from_secs_f64(grace.max(0.0))),
                    None => {
                        self.start_checks(key);
                        self.emit(key, progress(TaskState::TaskRunning, "Command is running"));
                    }
                }
            }
            Err(AgentError::Checkpoint(reason)) => {
                error!("the task's checkpoint cannot be written, so it was not started: {reason}");
                // Nothing of it may be left for a restarted agent to find
                // half-written; its final update goes out unrecorded (the
                // task never ran).
                if let Some(e) = self.tasks.get_mut(key) {
                    e.recorded = false;
                }
                self.writer
                    .submit(self.checkpoint.remove_task_op(&key.0, &key.1), None);
                self.end_task(
                    key,
                    Termination::LaunchFailed {
                        message: format!(
                            "the agent cannot checkpoint the task ({reason}), so it did not \
                             start it"
                        ),
                    },
                );
            }
            Err(e) => {
                warn!("the task could not be launched: {e}");
                if !matches!(e, AgentError::Refused(_)) {
                    self.metrics.containerizer_error("launch");
                }
                let termination = match e {
                    AgentError::Launch(message) => Termination::LaunchFailed { message },
                    AgentError::Refused(message) => Termination::Refused { message },
                    other => Termination::LaunchFailed {
                        message: other.to_string(),
                    },
                };
                self.end_task(key, termination);
            }
        }
    }

    /// Records a running container (checkpointed) and starts its watcher.
    fn mark_running(&mut self, key: &TaskKey, launched: Launched) {
        let Some(e) = self.tasks.get_mut(key) else {
            return;
        };
        e.phase = Phase::Running;
        e.pid = launched.pid;
        let Some(record) = e.container.as_mut() else {
            return;
        };
        record.launched = Some(launched.checkpoint);
        // The container's id was checkpointed before the launch; these facts
        // only help recovery (a failed write shows in /health and /metrics).
        self.writer
            .submit(self.checkpoint.container_op(&key.0, &key.1, record), None);
        let Some(cid) = e.container_id() else {
            return;
        };
        let c = self.containerizer.clone();
        let tx = self.tx.clone();
        let token = self.shutdown.clone();
        let key = key.clone();
        self.tracker.spawn(
            async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    termination = c.wait(&cid) => {
                        let _ = tx.send(Command::Ended { key, container_id: cid, termination }).await;
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
    }

    /// Kills a task: asked by the master (`policy` may override the grace
    /// period), or by a failing health check (`health_check` says why).
    fn kill(&mut self, key: &TaskKey, policy: Option<&KillPolicy>, health_check: Option<String>) {
        let _span = task_span(key).entered();
        let known = self.tasks.get(key).is_some_and(|e| e.launch.is_some());
        if !known {
            let already = self.tasks.get(key).is_some_and(|e| e.stream.pending() > 0);
            if !already {
                info!("asked to kill a task this agent does not know; answering TASK_LOST");
                self.tasks.insert(
                    key.clone(),
                    TaskEntry {
                        launch: None,
                        container: None,
                        sandbox: None,
                        phase: Phase::Ended,
                        stream: UpdateStream::new(self.settings.retry),
                        pid: None,
                        healthy: None,
                        ready: None,
                        health: None,
                        recorded: false,
                    },
                );
                self.emit(
                    key,
                    Outcome {
                        state: TaskState::TaskLost,
                        reason: StatusReason::ReasonTaskUnknown,
                        message: "The agent does not know this task".into(),
                        exit_code: None,
                    },
                );
            }
            return;
        }
        let default = self.settings.default_kill_grace;
        let Some(e) = self.tasks.get_mut(key) else {
            return;
        };
        if e.phase == Phase::Ended {
            debug!("asked to kill a task that has already ended");
            return;
        }
        if e.kill().is_some() {
            debug!("the task is already being killed");
            return;
        }
        let task_policy = e
            .launch
            .as_ref()
            .and_then(|l| l.task.as_ref())
            .and_then(|t| t.kill_policy.as_ref());
        let grace = grace_period(policy, task_policy, default);
        let Some(record) = e.container.as_mut() else {
            return;
        };
        record.kill = Some(KillRecord {
            grace_seconds: grace.as_secs_f64(),
            health_check,
        });
        // The kill is checkpointed before it is done, so that a restarted
        // agent finishes it (it is done even if the write fails).
        let saved = self
            .writer
            .submit_waited(self.checkpoint.container_op(&key.0, &key.1, record));
        let running = e.phase == Phase::Running;
        // A Docker launch (its pull may take long, or hang) is cancelled by
        // a kill; a process launch takes moments and is killed, with its
        // grace period, once it runs.
        let cancel_launch = record.containerizer == "docker";
        // No more checks once a task is on its way out (as in Mesos).
        self.health.stop(key);
        info!(?grace, "killing the task");
        if running {
            self.spawn_kill_after(key, grace, Some(saved));
        } else if cancel_launch && let Some(cancel) = self.launching.get(key) {
            // A launch in progress (a Docker pull, say) is not waited for.
            cancel.cancel();
        }
        // A task still launching is killed as soon as its launch finishes.
    }

    fn spawn_kill(&mut self, key: &TaskKey, grace: Duration) {
        self.spawn_kill_after(key, grace, None);
    }

    /// Kills the task's container once `saved` (the kill's checkpoint) is
    /// done.
    fn spawn_kill_after(
        &mut self,
        key: &TaskKey,
        grace: Duration,
        saved: Option<oneshot::Receiver<Result<(), String>>>,
    ) {
        let Some(cid) = self.tasks.get(key).and_then(TaskEntry::container_id) else {
            return;
        };
        let c = self.containerizer.clone();
        let token = self.shutdown.clone();
        let metrics = self.metrics.clone();
        self.tracker.spawn(
            async move {
                let kill = async {
                    if let Some(saved) = saved {
                        let _ = saved.await;
                    }
                    c.kill(&cid, grace).await
                };
                tokio::select! {
                    _ = token.cancelled() => {}
                    r = kill => if let Err(e) = r {
                        metrics.containerizer_error("kill");
                        error!("cannot kill the task: {e}");
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
    }

    // ----- health checks ----------------------------------------------------

    /// Starts the task's health and readiness checks, if it has any (a task
    /// that starts to run, or one found running after a restart). A task
    /// with readiness checks is not ready until they succeed: the
    /// TASK_RUNNING update that follows says so.
    fn start_checks(&mut self, key: &TaskKey) {
        let Some(e) = self.tasks.get_mut(key) else {
            return;
        };
        let Some(info) = e.launch.as_ref().and_then(|l| l.task.as_ref()) else {
            return;
        };
        if info.health_checks.is_empty() && info.readiness_checks.is_empty() {
            return;
        }
        let checks = match agora_proto::health::task_checks(info) {
            Ok(c) => c,
            Err(err) => {
                // The master refuses such tasks; an older master may not.
                warn!("the task's checks cannot run: {err}");
                return;
            }
        };
        let Some(container_id) = e.container_id() else {
            return;
        };
        let record = e.health.get_or_insert_with(|| HealthRecord {
            running_since: agora_proto::unix_seconds(SystemTime::now()),
            passed: Vec::new(),
        });
        record.passed.resize(checks.health.len(), false);
        self.writer
            .submit(self.checkpoint.health_op(&key.0, &key.1, record), None);
        if !checks.readiness.is_empty() && e.ready.is_none() {
            e.ready = Some(false);
        }
        self.health.start(Start {
            key: key.clone(),
            container_id,
            running_since: record.running_since,
            passed: record.passed.clone(),
            healthy: e.healthy,
            ready: e.ready,
            checks,
        });
    }

    /// What the checks found: reported as a TASK_RUNNING update (health or
    /// readiness changed), or a kill.
    fn health_event(&mut self, key: &TaskKey, container_id: &ContainerId, event: HealthEvent) {
        let Some(e) = self.tasks.get_mut(key).filter(|e| {
            e.phase == Phase::Running
                && e.kill().is_none()
                && e.container_id().as_ref() == Some(container_id)
        }) else {
            return;
        };
        let _span = task_span(key).entered();
        match event {
            HealthEvent::FirstPass { check } => {
                if let Some(record) = e.health.as_mut()
                    && let Some(passed) = record.passed.get_mut(check)
                {
                    *passed = true;
                    self.writer
                        .submit(self.checkpoint.health_op(&key.0, &key.1, record), None);
                }
            }
            HealthEvent::Health { healthy, message } => {
                info!(healthy, "{message}");
                e.healthy = Some(healthy);
                self.emit(
                    key,
                    Outcome {
                        state: TaskState::TaskRunning,
                        reason: StatusReason::ReasonTaskHealthCheckStatusUpdated,
                        message,
                        exit_code: None,
                    },
                );
            }
            HealthEvent::Ready { message } => {
                info!("{message}");
                e.ready = Some(true);
                self.emit(
                    key,
                    Outcome {
                        state: TaskState::TaskRunning,
                        reason: StatusReason::ReasonTaskCheckStatusUpdated,
                        message,
                        exit_code: None,
                    },
                );
            }
            HealthEvent::Kill { message } => {
                warn!("killing the task because {message}");
                e.healthy = Some(false);
                self.kill(key, None, Some(message));
            }
        }
    }

    fn acknowledge(&mut self, key: &TaskKey, uuid: &[u8]) {
        let Some(e) = self.tasks.get_mut(key) else {
            debug!(framework_id = %key.0, task_id = %key.1, "acknowledgement for an unknown task");
            return;
        };
        match e.stream.acknowledge(uuid) {
            AckOutcome::Ignored => {
                debug!(framework_id = %key.0, task_id = %key.1, "ignoring an acknowledgement for another update");
            }
            AckOutcome::Acknowledged { terminal } => {
                if terminal || e.stream.is_complete() {
                    self.finish(key);
                } else {
                    self.persist_updates(key);
                }
            }
        }
    }

    /// A task whose every update is acknowledged after the terminal one: its
    /// checkpoint goes now, its sandbox after the GC delay.
    fn finish(&mut self, key: &TaskKey) {
        let Some(e) = self.tasks.remove(key) else {
            return;
        };
        self.health.stop(key);
        if e.launch.is_none() {
            return;
        }
        debug!(framework_id = %key.0, task_id = %key.1, "forgetting the ended task");
        self.persist_retry.remove(key);
        self.writer
            .submit(self.checkpoint.remove_task_op(&key.0, &key.1), None);
        self.completed.push_back(task_view(key, &e));
        while self.completed.len() > COMPLETED_TASKS_KEPT {
            self.completed.pop_front();
        }
        if let Some(cid) = e.container_id() {
            let c = self.containerizer.clone();
            self.tracker.spawn(async move { c.released(&cid).await });
        }
        if let Some(sandbox) = e.sandbox.clone() {
            self.garbage.push(Garbage {
                at: Instant::now() + self.settings.sandbox_gc_delay,
                container_id: e.container_id(),
                sandbox,
            });
        }
        self.forget_unused_frameworks();
    }

    fn forget_unused_frameworks(&mut self) {
        let unused: Vec<String> = self
            .frameworks
            .keys()
            .filter(|f| {
                !self
                    .tasks
                    .iter()
                    .any(|(k, e)| &k.0 == *f && e.launch.is_some())
            })
            .cloned()
            .collect();
        for f in unused {
            self.frameworks.remove(&f);
            self.unknown_frameworks.remove(&f);
            self.writer
                .submit(self.checkpoint.remove_framework_op(&f), None);
        }
    }

    /// Reports how a task ended.
    fn end_task(&mut self, key: &TaskKey, termination: Termination) {
        self.health.stop(key);
        let kill = self.tasks.get(key).and_then(|e| e.kill().cloned());
        self.emit(key, outcome(&termination, kill.as_ref()));
        self.set_phase(key, Phase::Ended);
    }

    fn set_phase(&mut self, key: &TaskKey, phase: Phase) {
        if let Some(e) = self.tasks.get_mut(key) {
            e.phase = phase;
        }
    }

    /// Adds an update to the task's stream and checkpoints the stream; the
    /// next flush sends it when it is the head.
    fn emit(&mut self, key: &TaskKey, outcome: Outcome) {
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let Some(e) = self.tasks.get_mut(key) else {
            return;
        };
        let state = outcome.state;
        let mut status = new_status(key, &agent_id, outcome);
        status.healthy = e.healthy;
        status.ready = e.ready;
        e.stream.push_and_hurry_if_terminal(status);
        info!(framework_id = %key.0, task_id = %key.1, state = state.as_str_name(), "status update");
        self.persist_updates(key);
    }

    /// Queues a checkpoint of the task's update stream; its updates are
    /// sent once it is written ([`Command::Persisted`]). A task that is not
    /// in the checkpoint sends its updates unrecorded.
    fn persist_updates(&mut self, key: &TaskKey) {
        let Some(e) = self.tasks.get_mut(key) else {
            return;
        };
        let upto = e.stream.pushed();
        if e.launch.is_none() || !e.recorded {
            e.stream.mark_durable(upto);
            return;
        }
        let tx = self.persisted_tx.clone();
        let k = key.clone();
        self.writer.submit(
            self.checkpoint
                .updates_op(&key.0, &key.1, e.stream.records()),
            Some(Box::new(move |result| {
                let _ = tx.send(Persisted {
                    key: k,
                    upto,
                    result,
                });
            })),
        );
    }

    /// A checkpoint of a task's update stream is done.
    fn persisted(&mut self, key: &TaskKey, upto: u64, result: Result<(), String>) {
        let Some(e) = self.tasks.get_mut(key) else {
            return;
        };
        match result {
            Ok(()) => {
                e.stream.mark_durable(upto);
                if e.stream.is_durable() {
                    self.persist_retry.remove(key);
                }
            }
            Err(reason) if e.recorded && !e.stream.is_durable() => {
                let _span = task_span(key).entered();
                warn!(
                    "the task's status updates cannot be checkpointed ({reason}); they are held \
                     back and the write is tried again"
                );
                self.persist_retry
                    .entry(key.clone())
                    .or_insert_with(|| Instant::now() + self.settings.retry.min);
            }
            Err(_) => {}
        }
    }

    /// Tries again the update checkpoints that failed and are due.
    fn retry_persists(&mut self) {
        let now = Instant::now();
        let due: Vec<TaskKey> = self
            .persist_retry
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.persist_retry.remove(&key);
            self.persist_updates(&key);
        }
    }

    fn counts(&self) -> Counts {
        let mut tasks: BTreeMap<String, i64> = BTreeMap::new();
        let mut pending = 0i64;
        for e in self.tasks.values() {
            pending += e.stream.pending() as i64;
            if e.launch.is_none() {
                continue;
            }
            let state = e
                .stream
                .latest()
                .map_or("TASK_STAGING", |s| s.state().as_str_name());
            *tasks.entry(state.to_string()).or_default() += 1;
        }
        Counts {
            tasks: tasks.into_iter().collect(),
            pending_updates: pending,
        }
    }

    // ----- sandboxes --------------------------------------------------------

    /// Queues the removal of sandboxes no task owns, each at the GC delay
    /// after it was last changed.
    fn sweep_sandboxes(&mut self) {
        let layout = self.checkpoint.layout().clone();
        let owned: Vec<PathBuf> = self
            .tasks
            .values()
            .filter_map(|e| e.sandbox.clone())
            .collect();
        let now = SystemTime::now();
        for fid in list_dir(&layout.sandboxes_dir()).unwrap_or_default() {
            let fdir = layout.sandboxes_dir().join(&fid);
            for tid in list_dir(&fdir).unwrap_or_default() {
                for cid in list_dir(&fdir.join(&tid)).unwrap_or_default() {
                    let sandbox = fdir.join(&tid).join(&cid);
                    if owned.contains(&sandbox) {
                        continue;
                    }
                    let age = std::fs::metadata(&sandbox)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| now.duration_since(m).ok())
                        .unwrap_or_default();
                    self.garbage.push(Garbage {
                        at: Instant::now() + self.settings.sandbox_gc_delay.saturating_sub(age),
                        container_id: ContainerId::parse(&cid).ok(),
                        sandbox,
                    });
                }
            }
        }
    }

    fn collect_garbage(&mut self) {
        let now = Instant::now();
        if !self.garbage.iter().any(|g| g.at <= now) {
            return;
        }
        let (due, later): (Vec<Garbage>, Vec<Garbage>) =
            self.garbage.drain(..).partition(|g| g.at <= now);
        self.garbage = later;
        for g in due {
            self.completed
                .retain(|t| t.sandbox.as_ref() != Some(&g.sandbox));
            let c = self.containerizer.clone();
            self.tracker.spawn(async move {
                if let Some(cid) = g.container_id
                    && let Err(e) = c.remove(&cid).await
                {
                    warn!("{e}");
                }
                if let Err(e) = remove_dir_all_if_exists(&g.sandbox) {
                    warn!(sandbox = %g.sandbox.display(), "cannot remove the sandbox: {e}");
                }
                // Drop the task's and framework's directories once empty.
                let mut dir = g.sandbox.parent();
                for _ in 0..2 {
                    if let Some(d) = dir {
                        let _ = std::fs::remove_dir(d);
                        dir = d.parent();
                    }
                }
            });
        }
    }

    // ----- views ------------------------------------------------------------

    fn state_view(&self) -> StateView {
        let s = &self.settings;
        StateView {
            id: self.agent_id.clone(),
            hostname: s.hostname.clone(),
            http_address: s.http_address.clone(),
            master: s.master.clone(),
            connected: self.session.is_some(),
            resources: s.resources.to_string(),
            attributes: agora_proto::format_attributes(&s.attributes),
            frameworks: self
                .frameworks
                .values()
                .map(|f| FrameworkView {
                    id: f.id.clone(),
                    name: f.name.clone(),
                    user: f.user.clone(),
                    roles: f.roles.clone(),
                    checkpoint: f.checkpoint,
                })
                .collect(),
            tasks: self
                .tasks
                .iter()
                .filter(|(_, e)| e.launch.is_some())
                .map(|(k, e)| task_view(k, e))
                .collect(),
            completed_tasks: self.completed.iter().cloned().collect(),
            health_checks: self.health.stats().view(),
            version: agora_proto::VERSION,
        }
    }

    fn sandbox_of(
        &self,
        task_id: &str,
        framework_id: Option<&str>,
    ) -> Result<PathBuf, SandboxLookupError> {
        let live = self
            .tasks
            .iter()
            .filter(|(_, e)| e.launch.is_some())
            .filter_map(|(k, e)| Some((k.0.as_str(), k.1.as_str(), e.sandbox.clone()?)));
        let done = self
            .completed
            .iter()
            .rev()
            .filter_map(|t| Some((t.framework_id.as_str(), t.id.as_str(), t.sandbox.clone()?)));
        let mut found: Vec<(&str, PathBuf)> = Vec::new();
        for (f, t, sandbox) in live.chain(done) {
            if t == task_id
                && framework_id.is_none_or(|want| want == f)
                && !found.iter().any(|(seen, _)| *seen == f)
            {
                found.push((f, sandbox));
            }
        }
        match found.len() {
            0 => Err(SandboxLookupError::Unknown),
            1 => Ok(found.remove(0).1),
            _ => Err(SandboxLookupError::Ambiguous(
                found.into_iter().map(|(f, _)| f.to_string()).collect(),
            )),
        }
    }
}

fn task_view(key: &TaskKey, e: &TaskEntry) -> TaskView {
    let latest = e.stream.latest();
    let info = e.launch.as_ref().and_then(|l| l.task.as_ref());
    TaskView {
        id: key.1.clone(),
        framework_id: key.0.clone(),
        name: e.name().to_string(),
        state: latest
            .map_or("TASK_STAGING", |s| s.state().as_str_name())
            .to_string(),
        message: latest.map(|s| s.message.clone()).unwrap_or_default(),
        exit_code: latest.and_then(|s| s.exit_code),
        role: e
            .launch
            .as_ref()
            .map(|l| l.role.clone())
            .unwrap_or_default(),
        resources: info
            .and_then(|t| Resources::from_proto(&t.resources).ok())
            .map(|r| r.to_string())
            .unwrap_or_default(),
        container_id: e.container.as_ref().map(|c| c.container_id.clone()),
        containerizer: e.container.as_ref().map(|c| c.containerizer.clone()),
        pid: e.pid,
        sandbox: e.sandbox.clone(),
        unacknowledged_updates: e.stream.pending(),
        healthy: e.healthy,
        ready: e.ready,
    }
}

/// The grace period of a kill: the kill's own policy, else the task's, else
/// the agent's default. Negative or non-finite values count as zero.
pub(crate) fn grace_period(
    kill: Option<&KillPolicy>,
    task: Option<&KillPolicy>,
    default: Duration,
) -> Duration {
    kill.and_then(|p| p.grace_period)
        .or_else(|| task.and_then(|p| p.grace_period))
        .map(|secs| {
            if secs.is_finite() && secs > 0.0 {
                Duration::from_secs_f64(secs.min(86_400.0))
            } else {
                Duration::ZERO
            }
        })
        .unwrap_or(default)
}

fn task_span(key: &TaskKey) -> tracing::Span {
    info_span!("task", framework_id = %key.0, task_id = %key.1)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_comes_from_the_kill_then_the_task_then_the_default() {
        let p = |s: f64| KillPolicy {
            grace_period: Some(s),
        };
        let d = Duration::from_secs(3);
        assert_eq!(grace_period(None, None, d), d);
        assert_eq!(grace_period(None, Some(&p(1.0)), d), Duration::from_secs(1));
        assert_eq!(
            grace_period(Some(&p(0.5)), Some(&p(1.0)), d),
            Duration::from_millis(500)
        );
        assert_eq!(grace_period(Some(&p(-1.0)), None, d), Duration::ZERO);
        assert_eq!(grace_period(Some(&p(f64::NAN)), None, d), Duration::ZERO);
        let empty = KillPolicy { grace_period: None };
        assert_eq!(
            grace_period(Some(&empty), Some(&p(2.0)), d),
            Duration::from_secs(2)
        );
    }
}
