//! Simulated agents: many agents in one process, each with its own gRPC
//! session with the master, so that one machine can play a datacenter.
//!
//! Each simulated agent speaks the agent side of the protocol
//! (`docs/protocol.md`, "Agent session") as a real agent does, without
//! running anything:
//!
//! * it opens its own connection and `Session` stream to the leader, sends
//!   `register` (with its id, tasks and their frameworks when it has an id),
//!   and heartbeats at the interval the master asks for;
//! * each launched task reaches `TASK_RUNNING` at once (or after
//!   [`SimConfig::start_delay`]), then `TASK_FINISHED` after
//!   [`SimConfig::task_duration`] (never, if `None`: it runs until killed);
//! * updates carry a fresh uuid and are resent until acknowledged; a task's
//!   next update waits for the acknowledgement of the previous one; updates
//!   due together go out in one `StatusUpdates` message;
//! * kills end tasks with `TASK_KILLED` (`TASK_LOST` for unknown tasks),
//!   `shutdown_framework` kills a framework's tasks;
//! * it follows the leader: when the address in the `watch` channel changes,
//!   or the stream breaks, it reconnects (jittered backoff) and reregisters
//!   with its id and every task it has; refused as removed, it forgets them
//!   and registers anew.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agora_bench::sim::SimError> {
//! use std::time::Duration;
//! use agora_bench::sim::{SimCluster, SimConfig};
//!
//! let (leader_tx, leader) = tokio::sync::watch::channel("127.0.0.1:5050".to_string());
//! let cluster = SimCluster::start(SimConfig::new(1000), leader)?;
//! cluster.wait_for(Duration::from_secs(30), |s| s.registered == 1000).await?;
//! // A failover: point the agents at the new leader and time their return.
//! leader_tx.send_replace("127.0.0.1:5060".to_string());
//! cluster.wait_for(Duration::from_secs(30), |s| s.registered == 1000 && s.reregistrations >= 1000).await?;
//! cluster.stop().await;
//! # Ok(()) }
//! ```
//!
//! The API ([`SimConfig`], [`SimCluster`], [`SimStats`]) is kept stable for
//! other benchmarks (master failover) to build on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use agora_proto::Resources;
use agora_proto::v1::agent_service_client::AgentServiceClient;
use agora_proto::v1::{
    self, AgentMessage, FrameworkInfo, MasterToAgent, TaskState, TaskStatus, agent_message,
    master_to_agent,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::BenchError;

/// What can go wrong with a simulated cluster (the crate's error).
pub use crate::BenchError as SimError;

/// Settings shared by every simulated agent.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many agents.
    pub agents: usize,
    /// Each agent's resources.
    pub resources: Resources,
    /// Hostnames are `<prefix>-<n>` (n from 0, six digits).
    pub hostname_prefix: String,
    /// From launch to `TASK_RUNNING` (zero: in the same breath).
    pub start_delay: Duration,
    /// From `TASK_RUNNING` to `TASK_FINISHED`; `None`: until killed.
    pub task_duration: Option<Duration>,
    /// Unacknowledged updates are sent again after this long (and right
    /// after every reregistration).
    pub resend_interval: Duration,
    /// Reconnection backoff: the n-th retry waits a random time in
    /// `[d/2, d]`, `d = min(min * 2^n, max)`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// One connection attempt (TCP connect and the master's answer).
    pub connect_timeout: Duration,
    /// Called with `(framework id, task id)` as each task reaches its agent
    /// (repeated launches of a task the agent has included), for benchmarks
    /// that time launches (`agora bench batch-lateness`).
    pub on_launch: Option<LaunchHook>,
}

/// A function called as each task reaches its simulated agent, with its
/// framework id and task id.
pub type LaunchFn = dyn Fn(&str, &str) + Send + Sync;

/// A [`LaunchFn`] in a [`SimConfig`].
#[derive(Clone)]
pub struct LaunchHook(pub Arc<LaunchFn>);

impl std::fmt::Debug for LaunchHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LaunchHook")
    }
}

impl SimConfig {
    /// `agents` agents with `cpus:32;mem:131072;disk:1000000;ports:[31000-32000]`
    /// each, tasks that start at once and run until killed.
    pub fn new(agents: usize) -> SimConfig {
        SimConfig {
            agents,
            resources: Resources::parse("cpus:32;mem:131072;disk:1000000;ports:[31000-32000]")
                .expect("valid resources"),
            hostname_prefix: "sim".into(),
            start_delay: Duration::ZERO,
            task_duration: None,
            resend_interval: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            on_launch: None,
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        if self.agents == 0 {
            return Err(BenchError::Config("at least one agent is needed".into()));
        }
        if self.resources.is_empty() {
            return Err(BenchError::Config("the agents need some resources".into()));
        }
        if self.resend_interval.is_zero() || self.reconnect_min.is_zero() {
            return Err(BenchError::Config(
                "resend_interval and reconnect_min must be greater than 0".into(),
            ));
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(BenchError::Config(
                "reconnect_max must be at least reconnect_min".into(),
            ));
        }
        Ok(())
    }
}

/// Counters over all simulated agents, as [`SimCluster::stats`] reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimStats {
    /// Agents simulated.
    pub agents: usize,
    /// Agents whose session is registered now.
    pub registered: usize,
    /// `registered` answers received, first registrations and
    /// reregistrations together.
    pub registrations: u64,
    /// Of those, answers to a registration with an id.
    pub reregistrations: u64,
    /// Sessions that ended (stream broke, leader changed, refused).
    pub disconnects: u64,
    /// Registrations the master refused.
    pub refused: u64,
    /// Tasks received in `run_tasks` (repeated launches not counted).
    pub tasks_launched: u64,
    /// Tasks not yet settled (their terminal update not acknowledged).
    pub tasks_active: u64,
    /// Tasks whose `TASK_RUNNING` was sent.
    pub tasks_running: u64,
    /// Tasks settled as finished, or as killed or lost.
    pub tasks_finished: u64,
    pub tasks_killed: u64,
    /// Status updates sent (resends included) and acknowledged.
    pub updates_sent: u64,
    pub updates_acknowledged: u64,
}

impl std::fmt::Display for SimStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} registered, {} registrations ({} with an id), {} disconnects, {} refused; \
             tasks: {} launched, {} active, {} running, {} finished, {} killed; \
             updates: {} sent, {} acknowledged",
            self.registered,
            self.agents,
            self.registrations,
            self.reregistrations,
            self.disconnects,
            self.refused,
            self.tasks_launched,
            self.tasks_active,
            self.tasks_running,
            self.tasks_finished,
            self.tasks_killed,
            self.updates_sent,
            self.updates_acknowledged
        )
    }
}

#[derive(Default)]
struct Counters {
    registered: AtomicU64,
    registrations: AtomicU64,
    reregistrations: AtomicU64,
    disconnects: AtomicU64,
    refused: AtomicU64,
    tasks_launched: AtomicU64,
    tasks_active: AtomicU64,
    tasks_running: AtomicU64,
    tasks_finished: AtomicU64,
    tasks_killed: AtomicU64,
    updates_sent: AtomicU64,
    updates_acknowledged: AtomicU64,
}

struct Shared {
    config: SimConfig,
    counters: Counters,
    /// Woken whenever a counter moved.
    changed: Notify,
    /// The seed of the agents' uuids (unique per cluster).
    seed: u64,
}

impl Shared {
    fn add(&self, counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn sub(&self, counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// A running set of simulated agents.
pub struct SimCluster {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl SimCluster {
    /// Starts `config.agents` agents that connect to the address in
    /// `leader` (`host:port` or `http://host:port`; empty: no leader known,
    /// wait) and follow it when it changes. Call inside a Tokio runtime.
    pub fn start(
        config: SimConfig,
        leader: watch::Receiver<String>,
    ) -> Result<SimCluster, SimError> {
        config.validate()?;
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 40;
        let shared = Arc::new(Shared {
            config,
            counters: Counters::default(),
            changed: Notify::new(),
            seed,
        });
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for index in 0..shared.config.agents {
            let agent = SimAgent::new(index, shared.clone());
            let leader = leader.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(agent.run(leader, shutdown));
        }
        Ok(SimCluster {
            shared,
            shutdown,
            tasks,
        })
    }

    /// The counters now.
    pub fn stats(&self) -> SimStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            agents: self.shared.config.agents,
            registered: get(&c.registered) as usize,
            registrations: get(&c.registrations),
            reregistrations: get(&c.reregistrations),
            disconnects: get(&c.disconnects),
            refused: get(&c.refused),
            tasks_launched: get(&c.tasks_launched),
            tasks_active: get(&c.tasks_active),
            tasks_running: get(&c.tasks_running),
            tasks_finished: get(&c.tasks_finished),
            tasks_killed: get(&c.tasks_killed),
            updates_sent: get(&c.updates_sent),
            updates_acknowledged: get(&c.updates_acknowledged),
        }
    }

    /// Waits until `done` holds for the counters, at most `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&SimStats) -> bool,
    ) -> Result<SimStats, SimError> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let stats = self.stats();
            if done(&stats) {
                return Ok(stats);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let stats = self.stats();
                if done(&stats) {
                    return Ok(stats);
                }
                return Err(BenchError::Timeout {
                    waited: timeout,
                    stats,
                });
            }
        }
    }

    /// Stops every agent (their sessions end; nothing is torn down).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One task on a simulated agent.
struct SimTask {
    role: String,
    resources: Vec<v1::Resource>,
    name: String,
    /// The latest state the agent gave it.
    state: TaskState,
    /// The update in flight (sent, not acknowledged) and when it was sent.
    in_flight: Option<(TaskStatus, Instant)>,
    /// Updates waiting for the one in flight.
    queued: VecDeque<TaskStatus>,
}

/// Something that happens to a task later.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Running,
    Finished,
}

struct SimAgent {
    index: usize,
    shared: Arc<Shared>,
    id: String,
    /// framework id -> task id -> task.
    tasks: HashMap<String, HashMap<String, SimTask>>,
    frameworks: HashMap<String, FrameworkInfo>,
    /// (when, framework id, task id, what).
    timers: BinaryHeap<Reverse<(Instant, String, String, Due)>>,
    /// Updates to send with the next flush.
    outgoing: Vec<TaskStatus>,
    next_uuid: u64,
    registered: bool,
}

/// How a session ended.
enum End {
    Shutdown,
    /// Reconnect after the backoff.
    Retry(String),
    /// The leader changed: reconnect at once.
    LeaderChanged,
}

impl SimAgent {
    fn new(index: usize, shared: Arc<Shared>) -> SimAgent {
        SimAgent {
            index,
            shared,
            id: String::new(),
            tasks: HashMap::new(),
            frameworks: HashMap::new(),
            timers: BinaryHeap::new(),
            outgoing: Vec::new(),
            next_uuid: 0,
            registered: false,
        }
    }

    async fn run(mut self, mut leader: watch::Receiver<String>, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let address = leader.borrow_and_update().clone();
            if address.trim().is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = leader.changed() => if r.is_err() { return },
                }
                continue;
            }
            let end = self.session(&address, &mut leader, &shutdown).await;
            self.set_registered(false);
            match end {
                End::Shutdown => return,
                End::LeaderChanged => {
                    failures = 0;
                    self.shared.add(&self.shared.counters.disconnects, 1);
                    self.shared.changed.notify_waiters();
                }
                End::Retry(why) => {
                    self.shared.add(&self.shared.counters.disconnects, 1);
                    self.shared.changed.notify_waiters();
                    tracing::debug!(agent = self.index, %why, "simulated agent reconnecting");
                    let delay = self.backoff(failures);
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                        // A new leader is worth trying at once.
                        _ = leader_changed(&mut leader) => {}
                    }
                }
            }
        }
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let c = &self.shared.config;
        let d = c
            .reconnect_min
            .saturating_mul(1u32 << failures.min(16))
            .min(c.reconnect_max);
        // Jitter in [d/2, d], from the uuid counter's mix.
        let r = self.mix(0x5eed) % 1000;
        d / 2 + d / 2 * (r as u32) / 1000
    }

    fn set_registered(&mut self, registered: bool) {
        if self.registered != registered {
            self.registered = registered;
            let c = &self.shared.counters.registered;
            if registered {
                self.shared.add(c, 1);
            } else {
                self.shared.sub(c, 1);
            }
        }
    }

    fn mix(&mut self, salt: u64) -> u64 {
        self.next_uuid += 1;
        let mut x = self.shared.seed ^ salt ^ ((self.index as u64) << 32) ^ self.next_uuid;
        x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }

    /// A fresh 16-byte uuid: unique per cluster run (seed), agent and
    /// update.
    fn uuid(&mut self) -> Vec<u8> {
        let mut u = Vec::with_capacity(16);
        u.extend_from_slice(&(self.index as u32).to_be_bytes());
        u.extend_from_slice(&self.next_uuid.to_be_bytes());
        let salt = self.mix(0);
        u.extend_from_slice(&(salt as u32).to_be_bytes());
        u
    }

    fn registration(&self) -> v1::RegisterAgent {
        let c = &self.shared.config;
        let i = self.index;
        let mut tasks = Vec::new();
        let mut frameworks = Vec::new();
        for (fw_id, fw_tasks) in &self.tasks {
            for (task_id, t) in fw_tasks {
                let status = t
                    .queued
                    .back()
                    .or(t.in_flight.as_ref().map(|(s, _)| s))
                    .cloned();
                tasks.push(v1::Task {
                    task_id: task_id.clone(),
                    framework_id: fw_id.clone(),
                    agent_id: self.id.clone(),
                    name: t.name.clone(),
                    state: t.state as i32,
                    resources: t.resources.clone(),
                    status,
                    container: None,
                    labels: Vec::new(),
                    role: t.role.clone(),
                });
            }
            if let Some(info) = self.frameworks.get(fw_id) {
                frameworks.push(info.clone());
            }
        }
        v1::RegisterAgent {
            info: Some(v1::AgentInfo {
                id: self.id.clone(),
                hostname: format!("{}-{i:06}", c.hostname_prefix),
                resources: c.resources.to_proto(),
                attributes: vec![v1::Attribute {
                    name: "rack".into(),
                    value: Some(v1::attribute::Value::Text(format!("r{}", i % 40))),
                }],
                http_address: format!("127.0.0.1:{}", 20_000 + i % 40_000),
                version: agora_proto::VERSION.to_string(),
            }),
            tasks,
            frameworks,
        }
    }

    async fn session(
        &mut self,
        address: &str,
        leader: &mut watch::Receiver<String>,
        shutdown: &CancellationToken,
    ) -> End {
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let timeout = self.shared.config.connect_timeout;
        let endpoint = match Endpoint::from_shared(url.clone()) {
            Ok(e) => e
                .connect_timeout(timeout)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true),
            Err(e) => return End::Retry(format!("bad master address {url}: {e}")),
        };
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            _ = leader_changed(leader) => return End::LeaderChanged,
            c = endpoint.connect() => match c {
                Ok(c) => c,
                Err(e) => return End::Retry(format!("cannot connect to {url}: {e}")),
            },
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let reregistering = !self.id.is_empty();
        let _ = tx.send(AgentMessage {
            message: Some(agent_message::Message::Register(self.registration())),
        });
        let mut client = AgentServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let response = tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            _ = leader_changed(leader) => return End::LeaderChanged,
            _ = tokio::time::sleep(timeout) => return End::Retry("the master did not open the session in time".into()),
            r = client.session(UnboundedReceiverStream::new(rx)) => match r {
                Ok(r) => r.into_inner(),
                Err(status) => return End::Retry(format!("the master did not open a session: {status}")),
            },
        };
        let mut inbound = response;
        let mut heartbeat: Option<tokio::time::Interval> = None;
        let register_deadline = Instant::now() + timeout;
        let mut resend = tokio::time::interval(self.shared.config.resend_interval);
        resend.reset();
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, ..))| *at);
            tokio::select! {
                _ = shutdown.cancelled() => return End::Shutdown,
                _ = leader_changed(leader) => return End::LeaderChanged,
                _ = tokio::time::sleep_until(register_deadline), if heartbeat.is_none() => {
                    return End::Retry("the master did not answer the registration in time".into());
                }
                _ = tick(&mut heartbeat) => {
                    let hb = AgentMessage { message: Some(agent_message::Message::Heartbeat(v1::AgentHeartbeat {})) };
                    if tx.send(hb).is_err() {
                        return End::Retry("the session's outbound stream closed".into());
                    }
                }
                _ = resend.tick(), if heartbeat.is_some() => self.resend_stale(),
                _ = sleep_until(next_timer), if heartbeat.is_some() => self.fire_timers(),
                msg = inbound.message() => match msg {
                    Ok(Some(MasterToAgent { message: Some(m) })) => match m {
                        master_to_agent::Message::Registered(r) => {
                            self.id = r.agent_id;
                            let every = if r.heartbeat_interval_seconds.is_finite() && r.heartbeat_interval_seconds > 0.0 {
                                Duration::from_secs_f64(r.heartbeat_interval_seconds.clamp(0.01, 3600.0))
                            } else {
                                Duration::from_secs(15)
                            };
                            let mut iv = tokio::time::interval_at(Instant::now() + every, every);
                            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            heartbeat = Some(iv);
                            let counters = &self.shared.counters;
                            self.shared.add(&counters.registrations, 1);
                            if reregistering {
                                self.shared.add(&counters.reregistrations, 1);
                            }
                            self.set_registered(true);
                            // Every update not yet acknowledged goes out again.
                            self.resend_all();
                            self.shared.changed.notify_waiters();
                        }
                        master_to_agent::Message::Refused(r) => {
                            self.shared.add(&self.shared.counters.refused, 1);
                            if r.message.contains("removed") {
                                self.forget_everything();
                            }
                            return End::Retry(format!("the master refused the agent: {}", r.message));
                        }
                        master_to_agent::Message::RunTasks(run) => self.run_tasks(run),
                        master_to_agent::Message::KillTasks(k) => {
                            for kill in k.kills {
                                self.kill(&kill.framework_id, &kill.task_id, TaskState::TaskKilled);
                            }
                        }
                        master_to_agent::Message::Acknowledge(a) => self.acknowledge(a.acks),
                        master_to_agent::Message::ShutdownFramework(s) => {
                            let ids: Vec<String> = self
                                .tasks
                                .get(&s.framework_id)
                                .map(|t| t.keys().cloned().collect())
                                .unwrap_or_default();
                            for task_id in ids {
                                self.kill(&s.framework_id, &task_id, TaskState::TaskKilled);
                            }
                        }
                    },
                    Ok(Some(MasterToAgent { message: None })) => {}
                    Ok(None) => return End::Retry("the master closed the session".into()),
                    Err(status) => return End::Retry(format!("the session broke: {status}")),
                },
            }
            if !self.outgoing.is_empty() {
                let statuses = std::mem::take(&mut self.outgoing);
                self.shared
                    .add(&self.shared.counters.updates_sent, statuses.len() as u64);
                let msg = AgentMessage {
                    message: Some(agent_message::Message::Updates(v1::StatusUpdates {
                        statuses,
                    })),
                };
                if tx.send(msg).is_err() {
                    return End::Retry("the session's outbound stream closed".into());
                }
            }
            // Counters may have moved (acknowledgements settle tasks
            // without sending anything).
            self.shared.changed.notify_waiters();
        }
    }

    fn status(&mut self, fw_id: &str, task_id: &str, state: TaskState) -> TaskStatus {
        let uuid = self.uuid();
        TaskStatus {
            task_id: task_id.to_string(),
            state: state as i32,
            message: String::new(),
            source: v1::StatusSource::SourceAgent as i32,
            reason: if state == TaskState::TaskLost {
                v1::StatusReason::ReasonTaskUnknown as i32
            } else {
                0
            },
            agent_id: self.id.clone(),
            framework_id: fw_id.to_string(),
            uuid,
            timestamp: agora_proto::unix_seconds(SystemTime::now()),
            healthy: None,
            exit_code: (state == TaskState::TaskFinished).then_some(0),
            ready: None,
            latest_state: None,
        }
    }

    /// Gives a task a new state: its update goes out now if none is in
    /// flight, else after the one in flight is acknowledged.
    fn update(&mut self, fw_id: &str, task_id: &str, state: TaskState) {
        let status = self.status(fw_id, task_id, state);
        let Some(task) = self.tasks.get_mut(fw_id).and_then(|t| t.get_mut(task_id)) else {
            return;
        };
        task.state = state;
        if state == TaskState::TaskRunning {
            self.shared.add(&self.shared.counters.tasks_running, 1);
        }
        if task.in_flight.is_none() {
            self.outgoing.push(status.clone());
            task.in_flight = Some((status, Instant::now()));
        } else {
            task.queued.push_back(status);
        }
    }

    fn run_tasks(&mut self, run: v1::RunTasks) {
        for info in run.frameworks {
            self.frameworks.insert(info.id.clone(), info);
        }
        let now = Instant::now();
        let config = &self.shared.config;
        let (delay, duration) = (config.start_delay, config.task_duration);
        let mut launched = 0;
        let hook = config.on_launch.clone();
        for launch in run.launches {
            let Some(task) = launch.task else { continue };
            if let Some(hook) = &hook {
                (hook.0)(&launch.framework_id, &task.task_id);
            }
            let fw_tasks = self.tasks.entry(launch.framework_id.clone()).or_default();
            if fw_tasks.contains_key(&task.task_id) {
                continue;
            }
            fw_tasks.insert(
                task.task_id.clone(),
                SimTask {
                    role: launch.role,
                    resources: task.resources,
                    name: task.name,
                    state: TaskState::TaskStaging,
                    in_flight: None,
                    queued: VecDeque::new(),
                },
            );
            launched += 1;
            if delay.is_zero() {
                self.update(&launch.framework_id, &task.task_id, TaskState::TaskRunning);
                match duration {
                    Some(d) if d.is_zero() => {
                        self.update(&launch.framework_id, &task.task_id, TaskState::TaskFinished)
                    }
                    Some(d) => self.timers.push(Reverse((
                        now + d,
                        launch.framework_id,
                        task.task_id,
                        Due::Finished,
                    ))),
                    None => {}
                }
            } else {
                self.timers.push(Reverse((
                    now + delay,
                    launch.framework_id,
                    task.task_id,
                    Due::Running,
                )));
            }
        }
        let counters = &self.shared.counters;
        self.shared.add(&counters.tasks_launched, launched);
        self.shared.add(&counters.tasks_active, launched);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, ..))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, fw_id, task_id, due))) = self.timers.pop() else {
                break;
            };
            // Killed meanwhile: nothing to do.
            let live = self
                .tasks
                .get(&fw_id)
                .and_then(|t| t.get(&task_id))
                .is_some_and(|t| !agora_proto::is_terminal(t.state));
            if !live {
                continue;
            }
            match due {
                Due::Running => {
                    self.update(&fw_id, &task_id, TaskState::TaskRunning);
                    match self.shared.config.task_duration {
                        Some(d) if d.is_zero() => {
                            self.update(&fw_id, &task_id, TaskState::TaskFinished)
                        }
                        Some(d) => {
                            self.timers
                                .push(Reverse((now + d, fw_id, task_id, Due::Finished)))
                        }
                        None => {}
                    }
                }
                Due::Finished => self.update(&fw_id, &task_id, TaskState::TaskFinished),
            }
        }
    }

    fn kill(&mut self, fw_id: &str, task_id: &str, state: TaskState) {
        let known = self.tasks.get(fw_id).and_then(|t| t.get(task_id));
        match known {
            Some(t) if agora_proto::is_terminal(t.state) => {}
            Some(_) => self.update(fw_id, task_id, state),
            None => {
                // Unknown: answer TASK_LOST, settled like any task once
                // acknowledged.
                self.tasks.entry(fw_id.to_string()).or_default().insert(
                    task_id.to_string(),
                    SimTask {
                        role: String::new(),
                        resources: Vec::new(),
                        name: String::new(),
                        state: TaskState::TaskStaging,
                        in_flight: None,
                        queued: VecDeque::new(),
                    },
                );
                self.shared.add(&self.shared.counters.tasks_active, 1);
                self.update(fw_id, task_id, TaskState::TaskLost);
            }
        }
    }

    fn acknowledge(&mut self, acks: Vec<v1::Acknowledgement>) {
        let mut acknowledged = 0;
        let (mut finished, mut killed) = (0, 0);
        for ack in acks {
            let Some(fw_tasks) = self.tasks.get_mut(&ack.framework_id) else {
                continue;
            };
            let Some(task) = fw_tasks.get_mut(&ack.task_id) else {
                continue;
            };
            let matches = task
                .in_flight
                .as_ref()
                .is_some_and(|(s, _)| s.uuid == ack.uuid);
            if !matches {
                continue;
            }
            acknowledged += 1;
            let (done, _) = task.in_flight.take().expect("checked");
            match task.queued.pop_front() {
                Some(next) => {
                    self.outgoing.push(next.clone());
                    task.in_flight = Some((next, Instant::now()));
                }
                None if agora_proto::is_terminal(done.state()) => {
                    if done.state() == TaskState::TaskFinished {
                        finished += 1;
                    } else {
                        killed += 1;
                    }
                    fw_tasks.remove(&ack.task_id);
                    if fw_tasks.is_empty() {
                        self.tasks.remove(&ack.framework_id);
                    }
                }
                None => {}
            }
        }
        let counters = &self.shared.counters;
        self.shared
            .add(&counters.updates_acknowledged, acknowledged);
        self.shared.add(&counters.tasks_finished, finished);
        self.shared.add(&counters.tasks_killed, killed);
        self.shared.sub(&counters.tasks_active, finished + killed);
    }

    /// Sends again every update in flight (after a registration).
    fn resend_all(&mut self) {
        let now = Instant::now();
        let id = self.id.clone();
        for fw_tasks in self.tasks.values_mut() {
            for task in fw_tasks.values_mut() {
                if let Some((status, sent)) = task.in_flight.as_mut() {
                    status.agent_id.clone_from(&id);
                    *sent = now;
                    self.outgoing.push(status.clone());
                }
            }
        }
    }

    /// Sends again the updates in flight for longer than the resend
    /// interval.
    fn resend_stale(&mut self) {
        let now = Instant::now();
        let every = self.shared.config.resend_interval;
        for fw_tasks in self.tasks.values_mut() {
            for task in fw_tasks.values_mut() {
                if let Some((status, sent)) = task.in_flight.as_mut()
                    && now.duration_since(*sent) >= every
                {
                    *sent = now;
                    self.outgoing.push(status.clone());
                }
            }
        }
    }

    /// Refused as removed: the master reported the tasks gone; start anew.
    fn forget_everything(&mut self) {
        let active: usize = self.tasks.values().map(|t| t.len()).sum();
        self.shared
            .sub(&self.shared.counters.tasks_active, active as u64);
        self.tasks.clear();
        self.frameworks.clear();
        self.timers.clear();
        self.outgoing.clear();
        self.id.clear();
    }
}

/// Resolves when the leader's address changes. Once the sender is gone the
/// address can no longer change: never resolves (the agents keep the last
/// address).
async fn leader_changed(leader: &mut watch::Receiver<String>) {
    if leader.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn tick(iv: &mut Option<tokio::time::Interval>) {
    match iv {
        Some(iv) => {
            iv.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub use agora_proto::parse_duration;

/// `agora bench agents`: simulated agents against a running master.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentsArgs {
    /// The leading master, host:port.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// How many agents to simulate.
    #[arg(long, env = "AGORA_AGENTS", default_value = "1000", value_parser = crate::at_least_one)]
    pub agents: usize,
    /// Each agent's resources.
    #[arg(
        long,
        env = "AGORA_RESOURCES",
        default_value = "cpus:32;mem:131072;disk:1000000;ports:[31000-32000]",
        value_parser = crate::resources
    )]
    pub resources: Resources,
    /// How long tasks run once RUNNING (`0s`: they finish at once); without
    /// it they run until killed.
    #[arg(long, env = "AGORA_TASK_DURATION", value_parser = parse_duration)]
    pub task_duration: Option<Duration>,
    /// From launch to TASK_RUNNING.
    #[arg(long, env = "AGORA_START_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub start_delay: Duration,
}

/// Runs simulated agents until SIGINT/SIGTERM, logging their counters every
/// few seconds; prints the final counters as one JSON line.
pub async fn run_agents(args: &AgentsArgs) -> anyhow::Result<()> {
    let mut config = SimConfig::new(args.agents);
    config.resources = args.resources.clone();
    config.task_duration = args.task_duration;
    config.start_delay = args.start_delay;
    let (_leader_tx, leader) = watch::channel(args.master.clone());
    let cluster = SimCluster::start(config, leader)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = every.tick() => tracing::warn!("{}", cluster.stats()),
        }
    }
    let stats = cluster.stats();
    cluster.stop().await;
    crate::report(&serde_json::to_value(stats)?);
    Ok(())
}

/// A real master in this process on a free port of 127.0.0.1, and simulated
/// agents registered with it: what the framework benchmarks run against.
pub struct SimMaster {
    /// The master's `host:port`.
    pub address: String,
    pub cluster: SimCluster,
    master: agora_master::RunningMaster,
    shutdown: CancellationToken,
    /// Keeps the agents' idea of the leader alive.
    _leader: watch::Sender<String>,
}

impl SimMaster {
    /// Starts the master and `agents` agents offering `resources` each, and
    /// waits (at most `timeout`) until every agent has registered.
    pub async fn start(
        agents: usize,
        resources: &str,
        timeout: Duration,
    ) -> anyhow::Result<SimMaster> {
        let shutdown = CancellationToken::new();
        let master = agora_master::start(
            agora_master::MasterConfig {
                listen: "127.0.0.1:0".parse()?,
                ..Default::default()
            },
            shutdown.child_token(),
        )
        .await?;
        let address = master.addr().to_string();
        let mut sim = SimConfig::new(agents);
        sim.resources = Resources::parse(resources)?;
        let (leader_tx, leader) = watch::channel(address.clone());
        let cluster = SimCluster::start(sim, leader)?;
        cluster
            .wait_for(timeout, |s| s.registered == agents)
            .await?;
        eprintln!("{agents} simulated agents registered");
        Ok(SimMaster {
            address,
            cluster,
            master,
            shutdown,
            _leader: leader_tx,
        })
    }

    /// Stops the agents, then the master.
    pub async fn stop(self) {
        self.cluster.stop().await;
        self.shutdown.cancel();
        self.master.stop().await;
    }
}
