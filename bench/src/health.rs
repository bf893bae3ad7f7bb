//! `agora bench health`: one agent running an HTTP health check for each of
//! many tasks.
//!
//! 1. A master runs inside the benchmark, and one real agent (the agent's
//!    own code: its core, checkpoints, status updates and health checker)
//!    on a runtime of its own whose threads are named `agora-agent`, so that
//!    their CPU time can be read apart from the rest of the process
//!    (`/proc/self/task/*/schedstat`).
//! 2. The agent's tasks are simulated: a containerizer that starts no
//!    process but opens an HTTP endpoint on loopback at the task's port
//!    (`PORT0`), served on a third runtime. The checks themselves are the
//!    agent's real HTTP checks, one TCP connection and one GET each.
//! 3. A framework launches `--tasks` tasks, each with an HTTP health check
//!    every `--interval` seconds, and waits until every task is reported
//!    healthy. Then, for `--seconds`, the benchmark measures the agent's
//!    CPU use and how late its checks start (the agent's own lateness
//!    histogram: the time from when a check is due to when it starts).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_agent::containerizer::{
    ContainerId, KnownContainer, LaunchRequest, Launched, Recovered, Termination, Usage,
};
use agora_agent::{AgentConfig, AgentError, Containerizer};
use agora_proto::Resources;
use agora_proto::v1::health_check::{HttpCheckInfo, Type};
use agora_proto::v1::{self, HealthCheck, TaskState};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::BenchError;
use crate::allocator::round3;
use crate::sim::parse_duration;

/// The prefix of the names of the agent runtime's threads.
const AGENT_THREADS: &str = "agora-agent";

/// `agora bench health`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Tasks on the agent, each with one HTTP health check.
    #[arg(long, default_value = "1000", value_parser = crate::at_least_one)]
    pub tasks: usize,
    /// Seconds between two checks of one task.
    #[arg(long, default_value = "1", value_parser = positive_seconds)]
    pub interval: f64,
    /// How long to measure, once every task is healthy.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub seconds: Duration,
    /// The agent's bound on checks in flight at once.
    #[arg(long, default_value_t = agora_agent::config::DEFAULT_HEALTH_CHECK_CONCURRENCY)]
    pub concurrency: usize,
    /// The first loopback port of the tasks' endpoints (one port per task,
    /// from here on).
    #[arg(long, default_value = "42000", value_parser = clap::value_parser!(u16).range(1024..))]
    pub first_port: u16,
    /// Give up after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > 3600.0 {
        return Err(format!("{text}: give seconds above 0 and at most 3600"));
    }
    Ok(v)
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub tasks: usize,
    pub interval_s: f64,
    pub concurrency: usize,
    pub seconds: f64,
    /// From the first launch until every task was reported healthy.
    pub all_healthy_after_s: f64,
    /// Over the measured window.
    pub checks_per_s: f64,
    pub checks_failed: u64,
    pub agent_cpu_cores: f64,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
}

impl HealthReport {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "tasks": self.tasks,
            "interval_s": self.interval_s,
            "concurrency": self.concurrency,
            "seconds": round3(self.seconds),
            "all_healthy_after_s": round3(self.all_healthy_after_s),
            "checks_per_s": round3(self.checks_per_s),
            "checks_failed": self.checks_failed,
            "agent_cpu_cores": round3(self.agent_cpu_cores),
            "lateness_p50_ms": round3(self.lateness_p50_ms),
            "lateness_p99_ms": round3(self.lateness_p99_ms),
            "lateness_max_ms": round3(self.lateness_max_ms),
        })
    }
}

/// Runs the benchmark.
pub async fn run(args: &HealthArgs) -> anyhow::Result<HealthReport> {
    let last_port = args.first_port as usize + args.tasks - 1;
    if last_port > u16::MAX as usize {
        return Err(BenchError::Config(format!(
            "--first-port {} leaves no room for {} ports",
            args.first_port, args.tasks
        ))
        .into());
    }
    let deadline = Instant::now() + args.timeout;

    let endpoints = Runtime::new("bench-endpoint", 1)?;
    let agent_rt = Runtime::new(AGENT_THREADS, 2)?;

    let master = agora_master::start(
        agora_master::MasterConfig {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await?;
    let address = master.addr().to_string();

    let work_dir = tempfile::tempdir()?;
    let mut config = AgentConfig::new(address.clone(), work_dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    config.health_check_concurrency = args.concurrency;
    config.resources = Some(Resources::parse(&format!(
        "cpus:{};mem:{};disk:{};ports:[{}-{}]",
        args.tasks,
        args.tasks * 16,
        args.tasks * 16,
        args.first_port,
        last_port
    ))?);
    let containerizer = Arc::new(SimContainerizer::new(endpoints.handle()));
    let agent_shutdown = CancellationToken::new();
    let agent = agent_rt
        .handle()
        .spawn(agora_agent::start_with_containerizer(
            config,
            containerizer,
            agent_shutdown.clone(),
        ))
        .await??;

    let mut framework = SchedulerConfig::new(&address, "agora-bench-health");
    framework.framework.failover_timeout = 0.0;
    let (scheduler, mut events) = Scheduler::start(framework)?;
    let result = measure(args, &scheduler, &mut events, &agent, deadline).await;

    scheduler.stop().await;
    agent_shutdown.cancel();
    let _ = agent_rt.handle().spawn(agent.wait()).await;
    master.stop().await;
    drop((agent_rt, endpoints));
    result
}

async fn measure(
    args: &HealthArgs,
    scheduler: &Scheduler,
    events: &mut UnboundedReceiver<Event>,
    agent: &agora_agent::RunningAgent,
    deadline: Instant,
) -> anyhow::Result<HealthReport> {
    let mut launched = 0;
    let mut first_launch = None;
    let mut healthy = vec![false; args.tasks];
    let mut healthy_count = 0;
    while healthy_count < args.tasks {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "timed out: {launched} of {} tasks launched, {healthy_count} healthy",
                    args.tasks
                )
            })?
            .ok_or_else(|| anyhow::anyhow!("the scheduler driver stopped"))?;
        match event {
            Event::Offers(offers) => {
                for offer in offers {
                    let tasks = tasks_for(args, &offer, &mut launched)?;
                    if tasks.is_empty() {
                        scheduler.decline(vec![offer.id], Some(3600.0))?;
                        continue;
                    }
                    first_launch.get_or_insert_with(Instant::now);
                    scheduler.accept(vec![offer.id], tasks, Some(3600.0))?;
                }
                if launched >= args.tasks {
                    scheduler.suppress(Vec::new())?;
                }
            }
            Event::Updates(statuses) => {
                for s in &statuses {
                    let Some(i) = task_index(&s.task_id, args.tasks) else {
                        continue;
                    };
                    match s.state() {
                        TaskState::TaskRunning => {
                            let now = s.healthy == Some(true);
                            if now != healthy[i] {
                                healthy[i] = now;
                                if now {
                                    healthy_count += 1;
                                } else {
                                    healthy_count -= 1;
                                }
                            }
                        }
                        TaskState::TaskStaging | TaskState::TaskStarting => {}
                        other => anyhow::bail!(
                            "task {} ended {}: {}",
                            s.task_id,
                            other.as_str_name(),
                            s.message
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
    }
    let all_healthy_after_s = first_launch
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or_default();
    tracing::info!(all_healthy_after_s, "every task is healthy; measuring");

    // The measured window. Updates keep being acknowledged meanwhile.
    let before = agent.health_stats();
    let cpu_before = agent_cpu_ns()?;
    let started = Instant::now();
    let until = started + args.seconds;
    loop {
        match tokio::time::timeout_at(until, events.recv()).await {
            Err(_) => break,
            Ok(None) => anyhow::bail!("the scheduler driver stopped"),
            Ok(Some(Event::Updates(statuses))) => {
                if let Some(s) = statuses
                    .iter()
                    .find(|s| s.state() != TaskState::TaskRunning)
                {
                    anyhow::bail!("task {} ended: {}", s.task_id, s.message);
                }
                scheduler.acknowledge(&statuses)?;
            }
            Ok(Some(Event::Offers(offers))) => {
                scheduler.decline(offers.into_iter().map(|o| o.id).collect(), Some(3600.0))?
            }
            Ok(Some(_)) => {}
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = agent_cpu_ns()?.saturating_sub(cpu_before) as f64 / 1e9;
    let after = agent.health_stats();
    let lateness = after.lateness.since(&before.lateness);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(HealthReport {
        tasks: args.tasks,
        interval_s: args.interval,
        concurrency: args.concurrency,
        seconds: elapsed,
        all_healthy_after_s,
        checks_per_s: (after.started - before.started) as f64 / elapsed,
        checks_failed: after.failed - before.failed,
        agent_cpu_cores: cpu / elapsed,
        lateness_p50_ms: ms(lateness.quantile(0.5)),
        lateness_p99_ms: ms(lateness.quantile(0.99)),
        lateness_max_ms: ms(lateness.quantile(1.0)),
    })
}

/// The tasks to launch on `offer`: as many as its ports allow, up to the
/// number still to launch.
fn tasks_for(
    args: &HealthArgs,
    offer: &v1::Offer,
    launched: &mut usize,
) -> anyhow::Result<Vec<v1::TaskInfo>> {
    let offered = Resources::from_proto(&offer.resources)?;
    let mut tasks = Vec::new();
    for &(begin, end) in offered.ports().ranges() {
        for port in begin..=end {
            if *launched >= args.tasks {
                return Ok(tasks);
            }
            let mut resources = Resources::parse("cpus:0.01;mem:1")?;
            resources.add(&Resources::parse(&format!("ports:[{port}-{port}]"))?);
            tasks.push(v1::TaskInfo {
                name: "bench-health".into(),
                task_id: format!("health-{launched}"),
                agent_id: offer.agent_id.clone(),
                resources: resources.to_proto(),
                command: Some(v1::CommandInfo {
                    value: "simulated".into(),
                    ..Default::default()
                }),
                health_checks: vec![HealthCheck {
                    r#type: Type::Http as i32,
                    http: Some(HttpCheckInfo {
                        port_index: Some(0),
                        path: "/health".into(),
                        ..Default::default()
                    }),
                    delay_seconds: Some(0.0),
                    interval_seconds: Some(args.interval),
                    timeout_seconds: Some(args.interval.max(1.0)),
                    grace_period_seconds: Some(60.0),
                    ..Default::default()
                }],
                ..Default::default()
            });
            *launched += 1;
        }
    }
    Ok(tasks)
}

fn task_index(task_id: &str, tasks: usize) -> Option<usize> {
    task_id
        .strip_prefix("health-")?
        .parse()
        .ok()
        .filter(|&i| i < tasks)
}

/// The CPU time of the agent runtime's threads so far, in nanoseconds
/// (`/proc/self/task/*/schedstat`, first field).
fn agent_cpu_ns() -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let dir = entry?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(AGENT_THREADS) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("cannot read {}", dir.join("schedstat").display()))?;
    }
    Ok(total)
}

/// A tokio runtime on threads of its own, named `name`; shut down without
/// waiting when dropped (also from inside another runtime).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new(name: &str, threads: usize) -> anyhow::Result<Runtime> {
        Ok(Runtime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()?,
        )))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until dropped")
            .handle()
            .clone()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs no process: each task is an HTTP endpoint on 127.0.0.1 at its first
/// port that answers every request with 200, until the task is killed.
struct SimContainerizer {
    endpoints: tokio::runtime::Handle,
    containers: Mutex<HashMap<ContainerId, CancellationToken>>,
}

impl SimContainerizer {
    fn new(endpoints: tokio::runtime::Handle) -> SimContainerizer {
        SimContainerizer {
            endpoints,
            containers: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Containerizer for SimContainerizer {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn supports(&self, _task: &v1::TaskInfo) -> bool {
        true
    }

    async fn recover(&self, known: Vec<KnownContainer>) -> Result<Vec<Recovered>, AgentError> {
        Ok(known
            .iter()
            .map(|_| {
                Recovered::Ended(Termination::Vanished {
                    message: "simulated tasks do not survive a restart".into(),
                })
            })
            .collect())
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Launched, AgentError> {
        let port = Resources::from_proto(&request.task.resources)
            .ok()
            .and_then(|r| r.ports().ranges().first().map(|&(p, _)| p));
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
            return Err(AgentError::Check("a simulated task needs a port".into()));
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| AgentError::Check(format!("cannot listen on {addr}: {e}")))?;
        let stop = CancellationToken::new();
        let serving = stop.clone();
        self.endpoints.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            loop {
                tokio::select! {
                    () = serving.cancelled() => return,
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            tokio::spawn(answer(stream));
                        }
                    }
                }
            }
        });
        self.containers.lock().insert(request.container_id, stop);
        Ok(Launched {
            pid: None,
            checkpoint: serde_json::Value::Null,
        })
    }

    async fn wait(&self, id: &ContainerId) -> Result<Termination, AgentError> {
        let stop = self.containers.lock().get(id).cloned();
        match stop {
            Some(stop) => {
                stop.cancelled().await;
                Ok(Termination::Signaled { signal: 15 })
            }
            None => Ok(Termination::Vanished {
                message: format!("no simulated container {id}"),
            }),
        }
    }

    async fn kill(&self, id: &ContainerId, _grace: Duration) -> Result<(), AgentError> {
        if let Some(stop) = self.containers.lock().get(id) {
            stop.cancel();
        }
        Ok(())
    }

    async fn usage(&self, _id: &ContainerId) -> Result<Usage, AgentError> {
        Ok(Usage::default())
    }

    async fn containers(&self) -> Vec<ContainerId> {
        self.containers.lock().keys().cloned().collect()
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), AgentError> {
        self.containers.lock().remove(id);
        Ok(())
    }
}

/// Reads one request's head and answers 200.
async fn answer(mut stream: tokio::net::TcpStream) {
    let mut buf = [0u8; 1024];
    let mut seen = Vec::new();
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() > 8192 {
                    break;
                }
            }
        }
    }
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .await;
    let _ = stream.shutdown().await;
}
