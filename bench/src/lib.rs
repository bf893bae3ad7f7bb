//! `agora bench ...`: the benchmarks behind the figures in the README's
//! Performance section. Each prints its result as one JSON line on stdout
//! (progress goes to stderr), so runs can be compared and collected.
//!
//! Benchmarks never decide whether a test passes; they measure.
//!
//! * [`allocator`]: the master's allocation cycle on a large cluster in memory.
//! * [`batch`]: how late the batch framework starts cron runs (10,000 jobs
//!   every minute on 1,000 simulated agents).
//! * [`batch_chaos`]: a Jepsen-style checker of the batch framework's
//!   schedules on a real cluster of processes while leaders and agents are
//!   killed at random.
//! * [`docker`]: containers started through a master and a Docker agent,
//!   beside the same number of `docker run -d` on the same daemon.
//! * [`failover`]: SIGKILL of the leading master (three masters, ZooKeeper):
//!   time to a new leader, to every agent back, to offers again.
//! * [`health`]: one agent running an HTTP health check every second for
//!   each of 1,000 tasks (simulated tasks, real checks over loopback).
//! * [`launch`]: a real master, simulated agents and a framework launching
//!   tasks as fast as offers allow, over gRPC (the SDK) or the Mesos v1
//!   scheduler HTTP API ([`mesos_http`]).
//! * [`services`]: the services framework scaling one app to 10,000
//!   instances (embedded store and ZooKeeper), a rolling restart, and
//!   listing 1,000 apps with their tasks.
//! * [`services_failover`]: SIGKILL of the leading services framework
//!   (two `agora services` processes, ZooKeeper) running 10,000 instances.
//! * [`ui`]: the web UI's first render of a large cluster, in headless Chromium.
//! * [`sim`]: simulated agents over real gRPC sessions, as a library (also
//!   `agora bench agents`, to point at any master).

// The master's HTTP routes are one deep warp filter type; an optimised
// build needs a higher limit to evaluate it (E0275 in release only).
#![recursion_limit = "256"]

pub mod allocator;
pub mod batch;
pub mod batch_chaos;
pub mod browser;
pub mod docker;
pub mod failover;
pub mod health;
pub mod launch;
pub mod mesos_http;
mod process;
pub mod services;
pub mod services_failover;
pub mod sim;
pub mod ui;

use clap::Subcommand;

pub use sim::SimStats;

/// What can go wrong in a benchmark or a simulated cluster.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Settings that cannot work (`agora` exits with status 64).
    #[error("invalid settings: {0}")]
    Config(String),
    /// A condition awaited on the simulated agents did not hold in time.
    #[error("timed out after {waited:?} waiting for the simulated agents ({stats})")]
    Timeout {
        waited: std::time::Duration,
        stats: SimStats,
    },
}

/// Reads a whole number of at least 1.
/// Polls `check` every `every` until it returns `Some`; fails, naming
/// `what`, once `deadline` has passed.
pub(crate) async fn poll_until<T, F, Fut>(
    what: &str,
    deadline: tokio::time::Instant,
    every: std::time::Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(e) => Err(format!("`{s}` is not a whole number: {e}")),
    }
}

/// Reads resources in the text form (`cpus:4;mem:8192;ports:[31000-32000]`).
pub(crate) fn resources(s: &str) -> Result<agora_proto::Resources, String> {
    let r = agora_proto::Resources::parse(s).map_err(|e| e.to_string())?;
    if r.is_empty() {
        return Err("no resources given".into());
    }
    Ok(r)
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Times allocation cycles (allocator decisions to offers ready to send)
    /// of a master holding a large cluster in memory.
    Allocator(allocator::AllocatorArgs),
    /// Starts a master, simulated agents and a framework that launches tasks
    /// as fast as offers allow; measures launch to TASK_RUNNING.
    Launch(launch::LaunchArgs),
    /// Runs simulated agents against a master until interrupted.
    Agents(sim::AgentsArgs),
    /// Starts containers through a master and a Docker agent, and the same
    /// number of parallel `docker run -d` on the same daemon; compares.
    Docker(docker::DockerArgs),
    /// Kills the leading master of three (ZooKeeper) with 100 agents and
    /// 1,000 running tasks; measures the time to a new leader, to every
    /// agent reregistered, and to offers again.
    Failover(failover::FailoverArgs),
    /// One agent with 1,000 tasks, each with an HTTP health check every
    /// second against its own endpoint on loopback; measures the agent's CPU
    /// use and how late the checks start.
    Health(health::HealthArgs),
    /// Scales one app of the services framework from 0 to 10,000 instances
    /// on 1,000 simulated agents (embedded store and ZooKeeper), restarts
    /// 1,000 instances (rolling), then lists 1,000 apps x 10 tasks
    /// (`GET /v2/apps?embed=apps.tasks`).
    Services(services::ServicesBenchArgs),
    /// 10,000 cron jobs of the batch framework, each every minute, on 1,000
    /// simulated agents for 5 minutes; measures how late each run's task
    /// reaches its agent after its scheduled time, and counts missed and
    /// duplicated runs.
    BatchLateness(batch::LatenessArgs),
    /// A Jepsen-style checker: cron jobs every few seconds on a real cluster
    /// (ZooKeeper, masters, agents, two batch instances) while a seeded
    /// random schedule SIGKILLs and restarts the batch leader, the master
    /// leader and agents; reports scheduled times met, missed, duplicated.
    BatchChaos(batch_chaos::ChaosArgs),
    /// Two `agora services` processes (ZooKeeper) with 10,000 instances on
    /// 1,000 simulated agents: SIGKILL of the leader; measures the time
    /// until the standby serves every instance, and counts the instances
    /// relaunched (0 is the goal).
    ServicesFailover(services_failover::ServicesFailoverArgs),
    /// Times the web UI's first render of the dashboard and of the apps list
    /// (1,000 apps, 10,000 tasks) in headless Chromium, through the
    /// Performance API.
    Ui(ui::UiArgs),
}

/// Runs one benchmark and prints its JSON line.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Allocator(args) => {
            let r = tokio::task::spawn_blocking(move || allocator::run(&args)).await??;
            report(&r.json());
        }
        BenchCommand::Launch(args) => {
            let r = launch::run(&args).await?;
            report(&r.json());
        }
        BenchCommand::Agents(args) => sim::run_agents(&args).await?,
        BenchCommand::Docker(args) => report(&docker::run(&args).await?.json()),
        BenchCommand::Failover(args) => report(&failover::run(&args).await?.json()),
        BenchCommand::Health(args) => report(&health::run(&args).await?.json()),
        BenchCommand::Services(args) => report(&services::run(&args).await?.json()),
        BenchCommand::BatchLateness(args) => report(&batch::run(&args).await?.json()),
        BenchCommand::BatchChaos(args) => report(&batch_chaos::run(&args).await?.json()),
        BenchCommand::ServicesFailover(args) => {
            report(&services_failover::run(&args).await?.json())
        }
        BenchCommand::Ui(args) => report(&ui::run(&args).await?.json()),
    }
    Ok(())
}

/// Prints a benchmark's result: one JSON line on stdout.
pub fn report(value: &serde_json::Value) {
    println!("{value}");
}
