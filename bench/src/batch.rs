//! `agora bench batch-lateness`: how late cron runs start, with the real
//! batch framework (its runtime, core and embedded store, in this process)
//! on a real master (in this process) and simulated agents.
//!
//! `--jobs` jobs, each with one schedule every `--period` (default: every
//! minute, `* * * * *`), for `--minutes`. The jobs are created through the
//! REST API first; the measured scheduled times are those from the first
//! one after every job exists. A simulated agent notes the instant each
//! task reaches it; a task's id names its run, and the run id its scheduled
//! time (`<job>_<YYYYmmddHHMMSS>.<attempt>`), so
//!
//! * start lateness = the instant the task of a run's first attempt reached
//!   its agent - the run's scheduled time (p50, p99, max);
//! * expected = jobs x measured scheduled times; started = those with a
//!   task; missed = expected - started; duplicated = scheduled times whose
//!   task reached an agent more than once (simulated tasks always succeed,
//!   so any second launch is a duplicate).
//!
//! Tasks finish `--task-duration` after they start, so each minute's runs
//! have ended before the next minute's start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::Resources;
use futures::StreamExt;
use jiff::Timestamp;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::allocator::round3;
use crate::sim::{LaunchHook, SimCluster, SimConfig, parse_duration};

/// `agora bench batch-lateness`.
#[derive(Debug, Clone, clap::Args)]
pub struct LatenessArgs {
    /// Jobs, each with one schedule.
    #[arg(long, env = "AGORA_JOBS", default_value = "10000", value_parser = crate::at_least_one)]
    pub jobs: usize,
    /// Simulated agents.
    #[arg(long, env = "AGORA_AGENTS", default_value = "1000", value_parser = crate::at_least_one)]
    pub agents: usize,
    /// How long the schedules are measured, in minutes (fractions allowed
    /// with a shorter --period).
    #[arg(long, env = "AGORA_MINUTES", default_value = "5", value_parser = positive)]
    pub minutes: f64,
    /// How often each job is scheduled: 60s (`* * * * *`), or a number of
    /// seconds that divides 60 (a seconds cron, `*/N * * * * *`), for
    /// quicker runs.
    #[arg(long, env = "AGORA_PERIOD", default_value = "60s", value_parser = period)]
    pub period: Duration,
    /// How long each run's task runs once it started.
    #[arg(long, env = "AGORA_TASK_DURATION", default_value = "1s", value_parser = parse_duration)]
    pub task_duration: Duration,
    /// Jobs created at once through the API.
    #[arg(long, env = "AGORA_CONCURRENCY", default_value = "32", value_parser = crate::at_least_one)]
    pub concurrency: usize,
    /// Give up after this long.
    #[arg(long, env = "AGORA_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub(crate) fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err("must be a number greater than 0".into()),
        Err(e) => Err(format!("`{s}` is not a number: {e}")),
    }
}

pub(crate) fn period(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 || (secs != 60 && 60 % secs != 0) {
        return Err(format!(
            "`{s}`: give 60s, or whole seconds that divide 60 (1s, 2s, 5s, 10s, 15s, 20s, 30s)"
        ));
    }
    Ok(d)
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LatenessReport {
    pub jobs: usize,
    pub agents: usize,
    pub minutes: f64,
    pub period_s: u64,
    pub create_s: f64,
    pub runs_expected: usize,
    pub runs_started: usize,
    pub runs_missed: usize,
    pub runs_duplicated: usize,
    pub lateness_ms_p50: f64,
    pub lateness_ms_p99: f64,
    pub lateness_ms_max: f64,
}

impl LatenessReport {
    pub fn json(&self) -> Value {
        json!({
            "jobs": self.jobs,
            "agents": self.agents,
            "minutes": self.minutes,
            "period_s": self.period_s,
            "store": "redb",
            "create_s": round3(self.create_s),
            "runs_expected": self.runs_expected,
            "runs_started": self.runs_started,
            "runs_missed": self.runs_missed,
            "runs_duplicated": self.runs_duplicated,
            "lateness_ms_p50": round3(self.lateness_ms_p50),
            "lateness_ms_p99": round3(self.lateness_ms_p99),
            "lateness_ms_max": round3(self.lateness_ms_max),
        })
    }
}

/// `q`-quantile of sorted values (nearest rank).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The schedule's cron expression for `period`.
pub(crate) fn cron_for(period: Duration) -> String {
    match period.as_secs() {
        60 => "* * * * *".to_string(),
        1 => "* * * * * *".to_string(),
        s => format!("*/{s} * * * * *"),
    }
}

/// Tasks as they reached the simulated agents: `(task id, when)`.
type Arrivals = Arc<Mutex<Vec<(String, SystemTime)>>>;

/// Runs the benchmark.
pub async fn run(args: &LatenessArgs) -> anyhow::Result<LatenessReport> {
    let until = Instant::now() + args.timeout;
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

    let arrivals: Arrivals = Arc::new(Mutex::new(Vec::with_capacity(args.jobs * 8)));
    let mut sim = SimConfig::new(args.agents);
    // Room for 20 runs of 0.1 cpus per agent.
    sim.resources = Resources::parse("cpus:2;mem:4096;disk:10000;ports:[31000-32000]")?;
    sim.task_duration = Some(args.task_duration);
    let seen = arrivals.clone();
    sim.on_launch = Some(LaunchHook(Arc::new(move |_fw, task| {
        let now = SystemTime::now();
        seen.lock().push((task.to_string(), now));
    })));
    let (_leader_tx, leader) = watch::channel(address.clone());
    let cluster = SimCluster::start(sim, leader)?;
    cluster
        .wait_for(args.timeout, |s| s.registered == args.agents)
        .await?;
    eprintln!("{} simulated agents registered", args.agents);

    let dir = tempfile::tempdir()?;
    let mut config = agora_batch::BatchConfig::new(&address, "127.0.0.1:0".parse()?);
    config.store = agora_framework_kit::store::StoreBackend::File(dir.path().join("store.redb"));
    let batch = agora_batch::start(config, shutdown.child_token()).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = batch.url();
    loop {
        let ok = http
            .get(format!("{base}/v1/jobs"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        anyhow::ensure!(Instant::now() < until, "the batch API did not serve");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The jobs.
    let cron = cron_for(args.period);
    let created = Instant::now();
    let mut creates = futures::stream::iter(0..args.jobs)
        .map(|i| {
            let (http, base, cron) = (http.clone(), base.clone(), cron.clone());
            async move {
                let job = json!({
                    "id": job_id(i),
                    "run": {"cmd": "true", "cpus": 0.1, "mem": 32},
                    "schedules": [{"id": "s", "cron": cron, "startingDeadlineSeconds": 60}],
                });
                let r = http
                    .post(format!("{base}/v1/jobs"))
                    .json(&job)
                    .send()
                    .await?;
                let status = r.status();
                if !status.is_success() {
                    let body = r.text().await.unwrap_or_default();
                    anyhow::bail!("creating job {i}: {status}: {body}");
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency);
    let mut done = 0usize;
    while let Some(r) = creates.next().await {
        r?;
        done += 1;
        if done.is_multiple_of(1000) {
            eprintln!("{done} jobs created");
        }
        anyhow::ensure!(Instant::now() < until, "timed out creating the jobs");
    }
    drop(creates);
    let create_s = created.elapsed().as_secs_f64();
    eprintln!("{} jobs created in {create_s:.3} s", args.jobs);

    // The scheduled times measured: from the first after now (and a second
    // to spare) on.
    let period = args.period.as_secs() as i64;
    let count = ((args.minutes * 60.0) / period as f64).round().max(1.0) as i64;
    let now = Timestamp::now().as_second() + 1;
    let first = (now / period + 1) * period;
    let times: Vec<Timestamp> = (0..count)
        .map(|k| Timestamp::from_second(first + k * period))
        .collect::<Result<_, _>>()?;
    let last = *times.last().expect("at least one");
    let run_ids: HashMap<String, Timestamp> = times
        .iter()
        .map(|t| (agora_batch::run::scheduled_run_id(*t), *t))
        .collect();
    eprintln!(
        "measuring {count} scheduled times from {} to {last}",
        times[0]
    );
    let expected = args.jobs * times.len();

    // Wait for every expected run's task, or until the last scheduled time
    // is past its starting deadline.
    let give_up = last + jiff::SignedDuration::from_secs(75);
    loop {
        let started = tally(&arrivals, &run_ids).firsts.len();
        if started >= expected || Timestamp::now() > give_up {
            break;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "timed out ({started} of {expected} runs started)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Late duplicates would come within moments.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = tally(&arrivals, &run_ids);
    let mut lateness: Vec<f64> = t.firsts.values().map(|l| l * 1000.0).collect();
    lateness.sort_by(f64::total_cmp);

    shutdown.cancel();
    batch.wait().await;
    cluster.stop().await;
    master.stop().await;
    Ok(LatenessReport {
        jobs: args.jobs,
        agents: args.agents,
        minutes: args.minutes,
        period_s: period as u64,
        create_s,
        runs_expected: expected,
        runs_started: t.firsts.len(),
        runs_missed: expected.saturating_sub(t.firsts.len()),
        runs_duplicated: t.duplicated,
        lateness_ms_p50: quantile(&lateness, 0.5),
        lateness_ms_p99: quantile(&lateness, 0.99),
        lateness_ms_max: lateness.last().copied().unwrap_or(0.0),
    })
}

fn job_id(i: usize) -> String {
    format!("bench-{i:05}")
}

struct Tally {
    /// `(job, run)` -> seconds from the scheduled time to the first task.
    firsts: HashMap<(String, String), f64>,
    /// Runs whose task reached an agent more than once.
    duplicated: usize,
}

fn tally(arrivals: &Arrivals, run_ids: &HashMap<String, Timestamp>) -> Tally {
    let arrivals = arrivals.lock().clone();
    let mut firsts: HashMap<(String, String), f64> = HashMap::new();
    let mut launches: HashMap<(String, String), usize> = HashMap::new();
    for (task, at) in arrivals {
        let Some((job, run, _attempt)) = agora_batch::run::parse_task_id(&task) else {
            continue;
        };
        let Some(scheduled) = run_ids.get(run) else {
            continue;
        };
        let Ok(at) = Timestamp::try_from(at) else {
            continue;
        };
        let key = (job.to_string(), run.to_string());
        let late = at.duration_since(*scheduled).as_secs_f64();
        firsts
            .entry(key.clone())
            .and_modify(|l| *l = l.min(late))
            .or_insert(late);
        *launches.entry(key).or_default() += 1;
    }
    Tally {
        firsts,
        duplicated: launches.values().filter(|n| **n > 1).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_crons() {
        assert_eq!(period("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(period("5s").unwrap(), Duration::from_secs(5));
        assert!(period("7s").is_err());
        assert!(period("0s").is_err());
        assert!(period("1500ms").is_err());
        assert!(period("2m").is_err());
        assert_eq!(cron_for(Duration::from_secs(60)), "* * * * *");
        assert_eq!(cron_for(Duration::from_secs(5)), "*/5 * * * * *");
        assert_eq!(cron_for(Duration::from_secs(1)), "* * * * * *");
        assert!(positive("0").is_err());
        assert_eq!(positive("0.25").unwrap(), 0.25);
    }
}
