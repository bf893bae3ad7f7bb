//! `agora bench launch`: a real master, simulated agents and a framework
//! that launches tasks as fast as offers allow.
//!
//! 1. The master runs as its own process (`agora master` on a free port of
//!    127.0.0.1, logging warnings only), so that its memory can be read from
//!    `/proc` (`VmHWM`: peak resident set) apart from the simulation's. With
//!    `--in-process` it runs inside the benchmark instead (its memory is then
//!    not reported); with `--master` the benchmark uses a master that is
//!    already running.
//! 2. `--agents` simulated agents ([`crate::sim`]) register, each over its own
//!    connection; their tasks reach `TASK_RUNNING` as soon as they are
//!    launched and run until the end.
//! 3. One framework subscribes and, for every offer, launches as many tasks
//!    as fit in it until it has launched `--tasks`; it acknowledges every
//!    update. With `--api grpc` (the default) it is the scheduler SDK, as
//!    every Agora framework; with `--api mesos` it speaks the Mesos v1
//!    scheduler HTTP API as a Mesos framework does ([`crate::mesos_http`]:
//!    JSON calls, one `POST` each, events read from the RecordIO stream, one
//!    `ACKNOWLEDGE` per update).
//!
//! Measured from the framework's side: a task's latency runs from the
//! moment its `accept` is handed to the driver to the moment its
//! `TASK_RUNNING` update reaches the framework; the rate is the number of
//! tasks over the time from the first launch to the last `TASK_RUNNING`.

use std::path::PathBuf;
use std::time::Duration;

use agora_proto::Resources;
use agora_proto::v1::{self, TaskState};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::BenchError;
use crate::allocator::round3;
use crate::mesos_http::{MesosEvent, MesosScheduler, OfferJson, StatusJson};
use crate::sim::{SimCluster, SimConfig, parse_duration};

/// The API the benchmark's framework speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LaunchApi {
    /// Agora's gRPC scheduler service, through the scheduler SDK.
    #[default]
    Grpc,
    /// The Mesos v1 scheduler HTTP API (`POST /api/v1/scheduler`, JSON).
    Mesos,
}

impl LaunchApi {
    pub fn name(self) -> &'static str {
        match self {
            LaunchApi::Grpc => "grpc",
            LaunchApi::Mesos => "mesos",
        }
    }
}

/// `agora bench launch`.
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchArgs {
    /// The framework's API: `grpc` (the SDK) or `mesos` (the Mesos v1
    /// scheduler HTTP API, JSON).
    #[arg(long, env = "AGORA_API", value_enum, default_value = "grpc")]
    pub api: LaunchApi,
    /// Simulated agents.
    #[arg(long, env = "AGORA_AGENTS", default_value = "1000", value_parser = crate::at_least_one)]
    pub agents: usize,
    /// Tasks to launch.
    #[arg(long, env = "AGORA_TASKS", default_value = "100000", value_parser = crate::at_least_one)]
    pub tasks: usize,
    /// Each simulated agent's resources.
    #[arg(
        long,
        env = "AGORA_AGENT_RESOURCES",
        default_value = "cpus:32;mem:131072;disk:1000000;ports:[31000-32000]",
        value_parser = crate::resources
    )]
    pub agent_resources: Resources,
    /// Each task's resources (scalars only).
    #[arg(
        long,
        env = "AGORA_TASK_RESOURCES",
        default_value = "cpus:0.1;mem:32",
        value_parser = crate::resources
    )]
    pub task_resources: Resources,
    /// Use a master that is already running (host:port) instead of starting
    /// one; its memory is not reported.
    #[arg(long, env = "AGORA_MASTER", conflicts_with = "in_process")]
    pub master: Option<String>,
    /// Run the master inside the benchmark's process (its memory is not
    /// reported).
    #[arg(long, env = "AGORA_IN_PROCESS")]
    pub in_process: bool,
    /// The `agora` binary that runs the master (default: this one).
    #[arg(long, env = "AGORA_MASTER_BIN")]
    pub master_bin: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, env = "AGORA_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LaunchReport {
    pub api: LaunchApi,
    pub agents: usize,
    pub tasks: usize,
    pub tasks_per_s: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// The master process's peak resident set (VmHWM), when it ran apart.
    pub master_peak_rss_mb: Option<f64>,
    /// The master's resident set once every task runs.
    pub master_rss_mb: Option<f64>,
    /// Accept calls sent (each launches the tasks of one offer).
    pub accepts: usize,
    /// Seconds from the first launch to the last TASK_RUNNING.
    pub launch_s: f64,
    /// Seconds until every agent had registered.
    pub register_s: f64,
}

impl LaunchReport {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "api": self.api.name(),
            "agents": self.agents,
            "tasks": self.tasks,
            "tasks_per_s": self.tasks_per_s.round(),
            "latency_ms_p50": round3(self.latency_ms_p50),
            "latency_ms_p99": round3(self.latency_ms_p99),
            "master_peak_rss_mb": self.master_peak_rss_mb.map(|m| m.round()),
            "latency_ms_max": round3(self.latency_ms_max),
            "master_rss_mb": self.master_rss_mb.map(|m| m.round()),
            "accepts": self.accepts,
            "launch_s": round3(self.launch_s),
            "register_s": round3(self.register_s),
        })
    }
}

/// The master under test.
enum MasterUnderTest {
    Process { child: Child, pid: u32 },
    InProcess(agora_master::RunningMaster),
    External,
}

impl MasterUnderTest {
    fn pid(&self) -> Option<u32> {
        match self {
            MasterUnderTest::Process { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    async fn stop(self) {
        match self {
            MasterUnderTest::Process { mut child, pid } => {
                // SIGTERM: the master shuts down gracefully.
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
                if tokio::time::timeout(Duration::from_secs(15), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            MasterUnderTest::InProcess(m) => m.stop().await,
            MasterUnderTest::External => {}
        }
    }
}

/// Reads `VmHWM` (peak) and `VmRSS` (now) of a process, in MiB.
pub fn rss_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

async fn start_master(args: &LaunchArgs) -> anyhow::Result<(MasterUnderTest, String)> {
    if let Some(address) = &args.master {
        return Ok((MasterUnderTest::External, address.clone()));
    }
    if args.in_process {
        let config = agora_master::MasterConfig {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        };
        let master = agora_master::start(config, CancellationToken::new()).await?;
        let address = master.addr().to_string();
        return Ok((MasterUnderTest::InProcess(master), address));
    }
    let bin = match &args.master_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let (address, child) = crate::process::spawn_master(&bin, &[]).await?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the master exited at once"))?;
    let master = MasterUnderTest::Process { child, pid };
    Ok((master, address))
}

/// How many tasks of `task` fit in `offer` (scalars only).
pub(crate) fn fits(offer: &Resources, task: &Resources) -> usize {
    fits_by(|name| offer.scalar(name).milli(), task)
}

/// How many tasks of `task` fit in what `have` says is there (thousandths
/// of each scalar, by name).
fn fits_by(have: impl Fn(&str) -> i64, task: &Resources) -> usize {
    let mut n = usize::MAX;
    for r in task.iter() {
        let need = task.scalar(&r.name).milli();
        if need > 0 {
            n = n.min((have(&r.name).max(0) / need) as usize);
        }
    }
    if n == usize::MAX { 0 } else { n }
}

/// Runs the benchmark.
pub async fn run(args: &LaunchArgs) -> anyhow::Result<LaunchReport> {
    let (agent_resources, task_resources) =
        (args.agent_resources.clone(), args.task_resources.clone());
    if args.agents == 0 || args.tasks == 0 {
        return Err(BenchError::Config("--agents and --tasks must be at least 1".into()).into());
    }
    if fits(&agent_resources, &task_resources) == 0 {
        return Err(BenchError::Config(format!(
            "--task-resources ({task_resources}) must fit in --agent-resources ({agent_resources})"
        ))
        .into());
    }
    let (master, address) = start_master(args).await?;
    let result = drive(
        args,
        &address,
        agent_resources,
        task_resources,
        master.pid(),
    )
    .await;
    master.stop().await;
    result
}

async fn drive(
    args: &LaunchArgs,
    address: &str,
    agent_resources: Resources,
    task_resources: Resources,
    master_pid: Option<u32>,
) -> anyhow::Result<LaunchReport> {
    let deadline = Instant::now() + args.timeout;
    let started = Instant::now();
    let mut sim_config = SimConfig::new(args.agents);
    sim_config.resources = agent_resources;
    let (_leader_tx, leader) = watch::channel(address.to_string());
    let cluster = SimCluster::start(sim_config, leader)?;
    let agents = args.agents;
    cluster
        .wait_for(deadline - Instant::now(), |s| s.registered == agents)
        .await?;
    let register_s = started.elapsed().as_secs_f64();
    tracing::info!(agents, register_s, "simulated agents registered");

    let outcome = match args.api {
        LaunchApi::Grpc => launch_grpc(args, address, &task_resources, deadline).await,
        LaunchApi::Mesos => launch_mesos(args, address, &task_resources, deadline).await,
    };
    let (latencies, first, last, accepts) = match outcome {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("simulated agents at the end: {}", cluster.stats());
            cluster.stop().await;
            return Err(e);
        }
    };
    let rss = master_pid.and_then(rss_mb);
    cluster.stop().await;
    tracing::info!("simulated agents stopped");

    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let q = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    let launch_s = last.duration_since(first).as_secs_f64();
    Ok(LaunchReport {
        api: args.api,
        agents: args.agents,
        tasks: args.tasks,
        tasks_per_s: args.tasks as f64 / launch_s.max(1e-9),
        latency_ms_p50: q(0.5),
        latency_ms_p99: q(0.99),
        latency_ms_max: q(1.0),
        master_peak_rss_mb: rss.map(|(peak, _)| peak),
        master_rss_mb: rss.map(|(_, now)| now),
        accepts,
        launch_s,
        register_s,
    })
}

/// What the framework measured: each task's launch-to-RUNNING latency, the
/// first launch and last RUNNING instants, and the accepts sent.
type Outcome = (Vec<Duration>, Instant, Instant, usize);

/// The framework on the scheduler SDK (gRPC).
async fn launch_grpc(
    args: &LaunchArgs,
    address: &str,
    task_resources: &Resources,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let mut config = SchedulerConfig::new(address, "agora-bench-launch");
    config.framework.failover_timeout = 3600.0;
    let (scheduler, mut events) = Scheduler::start(config)?;
    let outcome = launch_tasks(args, &scheduler, &mut events, task_resources, deadline).await;
    tracing::info!(
        ok = outcome.is_ok(),
        "launching done; stopping the framework"
    );
    scheduler.stop().await;
    tracing::info!("framework stopped");
    outcome
}

/// The framework: launches on every offer until `args.tasks` are launched,
/// acknowledges every update, returns each task's launch-to-RUNNING
/// latency, the first launch and last RUNNING instants and the accepts
/// sent.
///
/// Offers are taken one at a time, and the updates that arrived meanwhile
/// are handled between two accepts, so that a `TASK_RUNNING` is timed when
/// it arrives, not when the framework is done launching.
async fn launch_tasks(
    args: &LaunchArgs,
    scheduler: &Scheduler,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    task_resources: &Resources,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let mut f = Launcher {
        total: args.tasks,
        task_proto: task_resources.to_proto(),
        task_resources,
        launched_at: vec![None; args.tasks],
        latencies: Vec::with_capacity(args.tasks),
        launched: 0,
        running: 0,
        accepts: 0,
        first: None,
        last: Instant::now(),
        suppressed: false,
        offers: std::collections::VecDeque::new(),
    };
    while f.running < f.total {
        // Everything that has arrived, then one offer.
        while let Ok(event) = events.try_recv() {
            f.handle(scheduler, event)?;
        }
        if f.running >= f.total {
            break;
        }
        if let Some(offer) = f.offers.pop_front() {
            f.launch(scheduler, offer)?;
            continue;
        }
        let wait = deadline.min(Instant::now() + Duration::from_secs(5));
        let event = match tokio::time::timeout_at(wait, events.recv()).await {
            Err(_) if wait < deadline => {
                tracing::info!(
                    launched = f.launched,
                    running = f.running,
                    offers = f.offers.len(),
                    "still waiting"
                );
                continue;
            }
            other => other,
        };
        let event = event.map_err(|_| {
            anyhow::anyhow!(
                "timed out: {} of {} tasks launched, {} running",
                f.launched,
                f.total,
                f.running
            )
        })?;
        let Some(event) = event else {
            anyhow::bail!("the scheduler driver stopped");
        };
        f.handle(scheduler, event)?;
    }
    Ok((f.latencies, f.first.unwrap_or(f.last), f.last, f.accepts))
}

struct Launcher<'a> {
    total: usize,
    task_proto: Vec<v1::Resource>,
    task_resources: &'a Resources,
    /// When each task was launched, until its TASK_RUNNING.
    launched_at: Vec<Option<Instant>>,
    latencies: Vec<Duration>,
    launched: usize,
    running: usize,
    accepts: usize,
    first: Option<Instant>,
    last: Instant,
    suppressed: bool,
    offers: std::collections::VecDeque<v1::Offer>,
}

impl Launcher<'_> {
    fn handle(&mut self, scheduler: &Scheduler, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Offers(offers) => self.offers.extend(offers),
            Event::Updates(statuses) => {
                let now = Instant::now();
                for s in &statuses {
                    let Some(i) = s
                        .task_id
                        .strip_prefix("bench-")
                        .and_then(|n| n.parse::<usize>().ok())
                        .filter(|&i| i < self.total)
                    else {
                        continue;
                    };
                    match s.state() {
                        TaskState::TaskRunning => {
                            if let Some(at) = self.launched_at[i].take() {
                                self.latencies.push(now.duration_since(at));
                                self.running += 1;
                                self.last = now;
                            }
                        }
                        TaskState::TaskStaging | TaskState::TaskStarting => {}
                        other => anyhow::bail!(
                            "task {} ended {}: {} ({:?})",
                            s.task_id,
                            other.as_str_name(),
                            s.message,
                            s.reason()
                        ),
                    }
                }
                scheduler.acknowledge(&statuses)?;
            }
            Event::Stopped { reason } => anyhow::bail!("the framework stopped: {reason}"),
            Event::Error(e) => anyhow::bail!("the master refused a call: {e}"),
            Event::Disconnected { reason, .. } => {
                anyhow::bail!("the framework lost the master: {reason}")
            }
            Event::Subscribed { .. } | Event::Rescind(_) | Event::Failure { .. } => {}
        }
        Ok(())
    }

    /// Launches as many tasks as fit on the offer (declines it once every
    /// task is launched).
    fn launch(&mut self, scheduler: &Scheduler, offer: v1::Offer) -> anyhow::Result<()> {
        if self.launched >= self.total {
            scheduler.decline(vec![offer.id], Some(3600.0))?;
            return Ok(());
        }
        let available = Resources::from_proto(&offer.resources)?;
        let n = fits(&available, self.task_resources).min(self.total - self.launched);
        let range = self.launched..self.launched + n;
        let tasks: Vec<v1::TaskInfo> = range
            .clone()
            .map(|i| v1::TaskInfo {
                name: "bench".into(),
                task_id: format!("bench-{i}"),
                agent_id: offer.agent_id.clone(),
                resources: self.task_proto.clone(),
                command: Some(v1::CommandInfo {
                    value: "sleep 3600".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let now = Instant::now();
        self.first.get_or_insert(now);
        for slot in &mut self.launched_at[range] {
            *slot = Some(now);
        }
        self.launched += n;
        self.accepts += 1;
        scheduler.accept(vec![offer.id], tasks, Some(3600.0))?;
        if self.launched >= self.total && !self.suppressed {
            scheduler.suppress(Vec::new())?;
            self.suppressed = true;
        }
        Ok(())
    }
}

/// The framework on the Mesos v1 scheduler HTTP API: the same workload as
/// [`launch_tasks`], in Mesos's JSON.
async fn launch_mesos(
    args: &LaunchArgs,
    address: &str,
    task_resources: &Resources,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let info = json!({"user": "root", "name": "agora-bench-launch", "failover_timeout": 3600.0});
    let (scheduler, mut events) =
        tokio::time::timeout_at(deadline, MesosScheduler::subscribe(address, info))
            .await
            .map_err(|_| anyhow::anyhow!("timed out subscribing"))??;
    let mut names: Vec<&str> = task_resources.iter().map(|r| r.name.as_str()).collect();
    names.dedup();
    let resources: Vec<Value> = names
        .into_iter()
        .map(|name| {
            json!({"name": name, "type": "SCALAR",
                   "scalar": {"value": task_resources.scalar(name).as_f64()}, "role": "*"})
        })
        .collect();
    let mut f = MesosLauncher {
        total: args.tasks,
        resources,
        task_resources,
        launched_at: vec![None; args.tasks],
        latencies: Vec::with_capacity(args.tasks),
        launched: 0,
        running: 0,
        accepts: 0,
        first: None,
        last: Instant::now(),
        suppressed: false,
        offers: std::collections::VecDeque::new(),
    };
    let outcome = async {
        while f.running < f.total {
            if let Some(why) = scheduler.failure() {
                anyhow::bail!("{why}");
            }
            while let Ok(event) = events.try_recv() {
                f.handle(&scheduler, event)?;
            }
            if f.running >= f.total {
                break;
            }
            if let Some(offer) = f.offers.pop_front() {
                f.launch(&scheduler, offer);
                continue;
            }
            let wait = deadline.min(Instant::now() + Duration::from_secs(5));
            match tokio::time::timeout_at(wait, events.recv()).await {
                Ok(Some(event)) => f.handle(&scheduler, event)?,
                Ok(None) => anyhow::bail!("the event stream's reader stopped"),
                Err(_) if wait < deadline => tracing::info!(
                    launched = f.launched,
                    running = f.running,
                    offers = f.offers.len(),
                    "still waiting"
                ),
                Err(_) => anyhow::bail!(
                    "timed out: {} of {} tasks launched, {} running",
                    f.launched,
                    f.total,
                    f.running
                ),
            }
        }
        Ok(())
    }
    .await;
    tracing::info!(
        ok = outcome.is_ok(),
        "launching done; closing the framework's stream"
    );
    scheduler.close().await;
    outcome?;
    Ok((f.latencies, f.first.unwrap_or(f.last), f.last, f.accepts))
}

struct MesosLauncher<'a> {
    total: usize,
    /// A task's resources, as Mesos JSON.
    resources: Vec<Value>,
    task_resources: &'a Resources,
    launched_at: Vec<Option<Instant>>,
    latencies: Vec<Duration>,
    launched: usize,
    running: usize,
    accepts: usize,
    first: Option<Instant>,
    last: Instant,
    suppressed: bool,
    offers: std::collections::VecDeque<OfferJson>,
}

impl MesosLauncher<'_> {
    fn handle(&mut self, scheduler: &MesosScheduler, event: MesosEvent) -> anyhow::Result<()> {
        match event {
            MesosEvent::Offers(offers) => self.offers.extend(offers),
            MesosEvent::Update(status) => {
                self.update(&status)?;
                scheduler.acknowledge(&status);
            }
            MesosEvent::Error(e) => anyhow::bail!("the master sent an ERROR: {e}"),
            MesosEvent::Ended(why) => anyhow::bail!("the framework lost the master: {why}"),
            MesosEvent::Subscribed { .. } => {}
        }
        Ok(())
    }

    fn update(&mut self, s: &StatusJson) -> anyhow::Result<()> {
        let Some(i) = s
            .task_id
            .value
            .strip_prefix("bench-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < self.total)
        else {
            return Ok(());
        };
        match s.state.as_str() {
            "TASK_RUNNING" => {
                if let Some(at) = self.launched_at[i].take() {
                    let now = Instant::now();
                    self.latencies.push(now.duration_since(at));
                    self.running += 1;
                    self.last = now;
                }
            }
            "TASK_STAGING" | "TASK_STARTING" => {}
            other => anyhow::bail!(
                "task {} ended {other}: {} ({})",
                s.task_id.value,
                s.message.as_deref().unwrap_or(""),
                s.reason.as_deref().unwrap_or("no reason")
            ),
        }
        Ok(())
    }

    /// Launches as many tasks as fit on the offer (declines it once every
    /// task is launched).
    fn launch(&mut self, scheduler: &MesosScheduler, offer: OfferJson) {
        if self.launched >= self.total {
            scheduler.decline(&[offer.id.value.as_str()], 3600.0);
            return;
        }
        let have = |name: &str| (offer.scalar(name) * 1000.0).round() as i64;
        let n = fits_by(have, self.task_resources).min(self.total - self.launched);
        let range = self.launched..self.launched + n;
        let tasks: Vec<Value> = range
            .clone()
            .map(|i| {
                json!({
                    "name": "bench",
                    "task_id": {"value": format!("bench-{i}")},
                    "agent_id": {"value": offer.agent_id.value},
                    "resources": self.resources,
                    "command": {"value": "sleep 3600"},
                })
            })
            .collect();
        let now = Instant::now();
        self.first.get_or_insert(now);
        for slot in &mut self.launched_at[range] {
            *slot = Some(now);
        }
        self.launched += n;
        self.accepts += 1;
        scheduler.launch(&offer.id.value, tasks, 3600.0);
        if self.launched >= self.total && !self.suppressed {
            scheduler.suppress();
            self.suppressed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_counts_by_the_scarcest_scalar() {
        let offer = Resources::parse("cpus:4;mem:1000;ports:[1-10]").unwrap();
        assert_eq!(
            fits(&offer, &Resources::parse("cpus:0.5;mem:100").unwrap()),
            8
        );
        assert_eq!(
            fits(&offer, &Resources::parse("cpus:0.1;mem:300").unwrap()),
            3
        );
        assert_eq!(fits(&offer, &Resources::parse("cpus:8").unwrap()), 0);
    }
}
