//! `agora bench batch-chaos`: a checker in the spirit of Jepsen's Chronos
//! test, on a real cluster of processes.
//!
//! 1. A private ZooKeeper server (Debian's `zookeeper` package), `--masters`
//!    `agora master --zk` processes, `--agents` `agora agent` processes
//!    (process containerizer, each with its own work directory, kept across
//!    restarts) and two `agora batch --zk` processes electing a leader; all
//!    follow the leading master through ZooKeeper.
//! 2. `--jobs` jobs, each scheduled every `--period` with
//!    `startingDeadlineSeconds` `--starting-deadline` and restart policy
//!    `ON_FAILURE`; each run's task appends `<job id> <scheduled time>
//!    <start time>` to one file.
//! 3. For `--minutes`, a seeded random generator (`--seed`) picks, every 2-8
//!    s, one of: the batch leader, the master leader, an agent, and kills it
//!    with SIGKILL; it is started again 1-8 s later (faults overlap).
//! 4. Then every process is started again, and the checker waits until every
//!    scheduled time of the chaos has its line, or until the last one is
//!    past its starting deadline. A scheduled time is **met** when it has a
//!    line whose start is within its starting deadline; **missed** otherwise
//!    (with the run's status and reason as the batch framework recorded
//!    them); **duplicated** when it has more than one line.
//!
//! Prints one JSON line. The processes' logs are kept (and their directory
//! named) when a time was missed or duplicated.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::failover::ZkServer;
use crate::poll_until;
use crate::sim::parse_duration;

/// How often the benchmark looks again while it waits.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// `agora bench batch-chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// How long faults are injected, in minutes.
    #[arg(long, env = "AGORA_MINUTES", default_value = "5", value_parser = crate::batch::positive)]
    pub minutes: f64,
    /// Jobs, each with one schedule.
    #[arg(long, env = "AGORA_JOBS", default_value = "5", value_parser = crate::at_least_one)]
    pub jobs: usize,
    /// The seed of the fault schedule.
    #[arg(long, env = "AGORA_SEED", default_value_t = 1)]
    pub seed: u64,
    /// How often each job is scheduled (whole seconds that divide 60, or 60s).
    #[arg(long, env = "AGORA_PERIOD", default_value = "5s", value_parser = crate::batch::period)]
    pub period: Duration,
    /// Each schedule's `startingDeadlineSeconds`.
    #[arg(long, env = "AGORA_STARTING_DEADLINE", default_value_t = 60)]
    pub starting_deadline: u64,
    /// Master processes.
    #[arg(long, env = "AGORA_MASTERS", default_value = "3", value_parser = crate::at_least_one)]
    pub masters: usize,
    /// Agent processes.
    #[arg(long, env = "AGORA_AGENTS", default_value = "3", value_parser = crate::at_least_one)]
    pub agents: usize,
    /// The ZooKeeper session timeout of masters and batch instances.
    #[arg(long, env = "AGORA_ZK_SESSION_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub zk_session_timeout: Duration,
    /// The `agora` binary to run (default: this one).
    #[arg(long, env = "AGORA_BIN")]
    pub bin: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, env = "AGORA_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What one run found.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub minutes: f64,
    pub jobs: usize,
    pub period_s: u64,
    pub starting_deadline_s: u64,
    pub masters: usize,
    pub agents: usize,
    pub faults: BTreeMap<&'static str, u64>,
    pub expected: usize,
    pub met: usize,
    pub missed: usize,
    /// Missed because their line came after the starting deadline.
    pub late: usize,
    pub duplicated: usize,
    /// The missed times, as the batch framework recorded them (at most 20).
    pub missed_reasons: Vec<Value>,
    /// Start lateness of the met times: p50, p99, max (seconds).
    pub lateness_s: [f64; 3],
}

impl ChaosReport {
    pub fn json(&self) -> Value {
        let pct = if self.expected == 0 {
            0.0
        } else {
            100.0 * self.met as f64 / self.expected as f64
        };
        json!({
            "seed": self.seed,
            "minutes": self.minutes,
            "jobs": self.jobs,
            "period_s": self.period_s,
            "starting_deadline_s": self.starting_deadline_s,
            "masters": self.masters,
            "agents": self.agents,
            "batch_instances": 2,
            "faults": self.faults,
            "expected": self.expected,
            "met": self.met,
            "met_pct": (pct * 100.0).round() / 100.0,
            "missed": self.missed,
            "late": self.late,
            "duplicated": self.duplicated,
            "missed_reasons": self.missed_reasons,
            "lateness_s_p50": crate::allocator::round3(self.lateness_s[0]),
            "lateness_s_p99": crate::allocator::round3(self.lateness_s[1]),
            "lateness_s_max": crate::allocator::round3(self.lateness_s[2]),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Master,
    Agent,
    Batch,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Master => "master",
            Kind::Agent => "agent",
            Kind::Batch => "batch",
        }
    }
}

/// One process of the cluster.
struct Node {
    kind: Kind,
    index: usize,
    child: Option<Child>,
    /// `127.0.0.1:port` of its API (masters and batch instances).
    addr: String,
    /// When it is to be started again.
    restart_at: Option<Instant>,
}

/// The cluster's processes and what they share.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    master_zk: String,
    batch_zk: String,
    session: String,
    nodes: Vec<Node>,
    http: reqwest::Client,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    fn log_file(&self, kind: Kind, index: usize) -> anyhow::Result<std::fs::File> {
        let path = self.dir.join(format!("{}-{index}.log", kind.name()));
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?)
    }

    /// Starts node `i` (again).
    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let (kind, index) = (self.nodes[i].kind, self.nodes[i].index);
        let mut args: Vec<String> = Vec::new();
        let mut addr = String::new();
        match kind {
            Kind::Master => {
                addr = format!("127.0.0.1:{}", free_port()?);
                args.extend(
                    [
                        "master",
                        "--listen",
                        &addr,
                        "--zk",
                        &self.master_zk,
                        "--zk-session-timeout",
                        &self.session,
                    ]
                    .map(String::from),
                );
            }
            Kind::Agent => {
                let work = self.dir.join(format!("agent-{index}"));
                args.extend(
                    [
                        "agent",
                        "--master",
                        &self.master_zk,
                        "--listen",
                        "127.0.0.1:0",
                        "--work-dir",
                        &work.display().to_string(),
                        "--resources",
                        "cpus:4;mem:4096;disk:10000",
                        "--kill-grace",
                        "1s",
                        "--containerizers",
                        "process",
                    ]
                    .map(String::from),
                );
            }
            Kind::Batch => {
                addr = format!("127.0.0.1:{}", free_port()?);
                args.extend(
                    [
                        "batch",
                        "--master",
                        &self.master_zk,
                        "--listen",
                        &addr,
                        "--zk",
                        &self.batch_zk,
                        "--zk-session-timeout",
                        &self.session,
                        "--history-count",
                        "100000",
                    ]
                    .map(String::from),
                );
            }
        }
        let log = self.log_file(kind, index)?;
        let child = Command::new(&self.bin)
            .args(&args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.bin.display()))?;
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.addr = addr;
        node.restart_at = None;
        Ok(())
    }

    /// SIGKILL, as a crash would.
    async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    async fn get(&self, url: &str) -> Option<Value> {
        let r = self.http.get(url).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// The running node of `kind` that leads, if one does.
    async fn leader(&self, kind: Kind) -> Option<usize> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.kind != kind || n.child.is_none() {
                continue;
            }
            let leads = match kind {
                Kind::Master => self
                    .get(&format!("http://{}/state", n.addr))
                    .await
                    .is_some_and(|s| s["elected"] == true),
                Kind::Batch => self
                    .get(&format!("http://{}/v1/leader", n.addr))
                    .await
                    .is_some_and(|s| s["leading"] == true),
                Kind::Agent => false,
            };
            if leads {
                return Some(i);
            }
        }
        None
    }

    /// Connected agents, as the leading master sees them.
    async fn active_agents(&self) -> usize {
        let Some(m) = self.leader(Kind::Master).await else {
            return 0;
        };
        let Some(s) = self
            .get(&format!("http://{}/state", self.nodes[m].addr))
            .await
        else {
            return 0;
        };
        s["agents"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|a| a["active"] == true).count())
    }

    async fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
    }
}

/// Runs the benchmark.
pub async fn run(args: &ChaosArgs) -> anyhow::Result<ChaosReport> {
    let deadline = Instant::now() + args.timeout;
    let zk = ZkServer::start().await?;
    let dir = tempfile::Builder::new()
        .prefix("agora-batch-chaos-")
        .tempdir()?;
    let servers = format!("127.0.0.1:{}", zk.port);
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let mut cluster = Cluster {
        bin,
        dir: dir.path().to_path_buf(),
        master_zk: format!("zk://{servers}/agora"),
        batch_zk: format!("zk://{servers}/agora-batch"),
        session: format!("{}ms", args.zk_session_timeout.as_millis()),
        nodes: Vec::new(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
    };
    for (kind, n) in [
        (Kind::Master, args.masters),
        (Kind::Agent, args.agents),
        (Kind::Batch, 2),
    ] {
        for index in 0..n {
            cluster.nodes.push(Node {
                kind,
                index,
                child: None,
                addr: String::new(),
                restart_at: None,
            });
        }
    }
    for i in 0..cluster.nodes.len() {
        cluster.start(i)?;
    }
    let result = chaos(args, &mut cluster, deadline).await;
    cluster.stop_all().await;
    drop(zk);
    match &result {
        Ok(r) if r.missed == 0 && r.duplicated == 0 => {}
        _ => {
            let kept = dir.keep();
            eprintln!("the processes' logs are kept in {}", kept.display());
        }
    }
    result
}

async fn chaos(
    args: &ChaosArgs,
    cluster: &mut Cluster,
    deadline: Instant,
) -> anyhow::Result<ChaosReport> {
    let agents = args.agents;
    poll_until("every agent registered", deadline, POLL_EVERY, || async {
        (cluster.active_agents().await == agents).then_some(())
    })
    .await?;
    let leader = poll_until("a batch leader", deadline, POLL_EVERY, || {
        cluster.leader(Kind::Batch)
    })
    .await?;
    eprintln!(
        "cluster up: {} masters, {agents} agents, 2 batch instances",
        args.masters
    );

    let file = cluster.dir.join("runs.log");
    let base = format!("http://{}", cluster.nodes[leader].addr);
    let cron = crate::batch::cron_for(args.period);
    for j in 0..args.jobs {
        let job = json!({
            "id": job_id(j),
            "run": {
                "cmd": format!(
                    "echo \"$AGORA_JOB_ID $AGORA_RUN_SCHEDULED_AT $(date +%s.%N)\" >> {}",
                    file.display()
                ),
                "cpus": 0.1,
                "mem": 32,
                "restart": {"policy": "ON_FAILURE"},
            },
            "schedules": [{
                "id": "s",
                "cron": cron,
                "startingDeadlineSeconds": args.starting_deadline,
            }],
        });
        let r = cluster
            .http
            .post(format!("{base}/v1/jobs"))
            .json(&job)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "creating job {j}: {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    let period = args.period.as_secs() as i64;
    let first = (Timestamp::now().as_second() + 1) / period * period + period;
    let chaos_for = Duration::try_from_secs_f64(args.minutes * 60.0)
        .map_err(|e| anyhow::anyhow!("--minutes {}: {e}", args.minutes))?;
    let chaos_end = Instant::now() + chaos_for;
    let last =
        (Timestamp::now() + SignedDuration::try_from(chaos_for)?).as_second() / period * period;
    anyhow::ensure!(last >= first, "--minutes is shorter than one --period");
    eprintln!(
        "{} jobs every {period} s; faults for {:.1} min (seed {})",
        args.jobs, args.minutes, args.seed
    );

    // The faults.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::from([
        ("batch_leader", 0),
        ("master_leader", 0),
        ("agent", 0),
        ("skipped", 0),
    ]);
    let mut next_fault = Instant::now() + secs(rng.random_range(2.0..8.0));
    while Instant::now() < chaos_end {
        let now = Instant::now();
        for i in 0..cluster.nodes.len() {
            if cluster.nodes[i].restart_at.is_some_and(|t| t <= now) {
                cluster.start(i)?;
                let n = &cluster.nodes[i];
                eprintln!("  started {}-{} again", n.kind.name(), n.index);
            }
        }
        if now >= next_fault {
            let pick = rng.random_range(0..3u32);
            let down_for = secs(rng.random_range(1.0..8.0));
            let agent_pick = rng.random_range(0..args.agents);
            let (what, target) = match pick {
                0 => ("batch_leader", cluster.leader(Kind::Batch).await),
                1 => ("master_leader", cluster.leader(Kind::Master).await),
                _ => {
                    let i = cluster
                        .nodes
                        .iter()
                        .position(|n| n.kind == Kind::Agent && n.index == agent_pick);
                    ("agent", i.filter(|&i| cluster.nodes[i].child.is_some()))
                }
            };
            match target {
                Some(i) => {
                    cluster.kill(i).await;
                    cluster.nodes[i].restart_at = Some(Instant::now() + down_for);
                    *faults.entry(what).or_default() += 1;
                    let n = &cluster.nodes[i];
                    eprintln!(
                        "  killed {what} ({}-{}) for {:.1} s",
                        n.kind.name(),
                        n.index,
                        down_for.as_secs_f64()
                    );
                }
                None => *faults.entry("skipped").or_default() += 1,
            }
            next_fault = Instant::now() + secs(rng.random_range(2.0..8.0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Everything up again.
    for i in 0..cluster.nodes.len() {
        if cluster.nodes[i].child.is_none() {
            cluster.start(i)?;
        }
    }
    eprintln!("faults over: {faults:?}; waiting for the last runs");

    let times: Vec<Timestamp> = (0..)
        .map(|k| first + k * period)
        .take_while(|t| *t <= last)
        .map(Timestamp::from_second)
        .collect::<Result<_, _>>()?;
    let expected: Vec<(String, Timestamp)> = (0..args.jobs)
        .flat_map(|j| times.iter().map(move |t| (job_id(j), *t)))
        .collect();
    let give_up = Timestamp::from_second(last)?
        + SignedDuration::from_secs(args.starting_deadline as i64 + 30);
    loop {
        let lines = read_lines(&file);
        if expected.iter().all(|k| lines.contains_key(k)) || Timestamp::now() > give_up {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for the runs");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A duplicate would come moments later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lines = read_lines(&file);

    let slack = args.starting_deadline as f64 + 1.0;
    let mut report = ChaosReport {
        seed: args.seed,
        minutes: args.minutes,
        jobs: args.jobs,
        period_s: period as u64,
        starting_deadline_s: args.starting_deadline,
        masters: args.masters,
        agents: args.agents,
        faults,
        expected: expected.len(),
        duplicated: lines.values().filter(|starts| starts.len() > 1).count(),
        ..Default::default()
    };
    let mut lateness = Vec::new();
    let mut missing = Vec::new();
    for key in &expected {
        let first_start = lines
            .get(key)
            .and_then(|s| s.iter().copied().reduce(f64::min));
        let scheduled = key.1.as_second() as f64;
        match first_start {
            Some(start) if start - scheduled <= slack => {
                report.met += 1;
                lateness.push((start - scheduled).max(0.0));
            }
            Some(_) => {
                report.late += 1;
                missing.push(key.clone());
            }
            None => missing.push(key.clone()),
        }
    }
    report.missed = expected.len() - report.met;
    lateness.sort_by(f64::total_cmp);
    report.lateness_s = [
        crate::batch::quantile(&lateness, 0.5),
        crate::batch::quantile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0.0),
    ];
    for (job, t) in &lines_duplicated(&lines) {
        eprintln!("  duplicated: {job} {t}");
    }
    // What the batch framework recorded about the missed times.
    if !missing.is_empty() {
        let leader = poll_until("a batch leader", deadline, POLL_EVERY, || {
            cluster.leader(Kind::Batch)
        })
        .await?;
        let base = format!("http://{}", cluster.nodes[leader].addr);
        for (job, t) in missing.iter().take(20) {
            let run = agora_batch::run::scheduled_run_id(*t);
            let v = cluster
                .get(&format!("{base}/v1/jobs/{job}/runs/{run}"))
                .await;
            report.missed_reasons.push(match v {
                Some(r) => json!({
                    "job": job, "scheduled": t.to_string(), "status": r["status"],
                    "reason": r["reason"], "tasks": r["tasks"].as_array().map_or(0, Vec::len),
                }),
                None => json!({"job": job, "scheduled": t.to_string(), "status": null,
                               "reason": "no run recorded"}),
            });
        }
    }
    Ok(report)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn job_id(j: usize) -> String {
    format!("chaos-{j:03}")
}

/// `(job, scheduled time)` -> the start times of its lines.
fn read_lines(file: &Path) -> HashMap<(String, Timestamp), Vec<f64>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out: HashMap<(String, Timestamp), Vec<f64>> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(job), Some(t), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(t), Ok(start)) = (t.parse::<Timestamp>(), start.parse::<f64>()) else {
            continue;
        };
        out.entry((job.to_string(), t)).or_default().push(start);
    }
    out
}

fn lines_duplicated(lines: &HashMap<(String, Timestamp), Vec<f64>>) -> Vec<(String, Timestamp)> {
    let mut d: Vec<(String, Timestamp)> = lines
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(k, _)| k.clone())
        .collect();
    d.sort();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_by_job_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("runs.log");
        std::fs::write(
            &f,
            "chaos-000 2026-12-03T16:00:05Z 1796313605.1\n\
             chaos-000 2026-12-03T16:00:05Z 1796313606.2\n\
             chaos-001 2026-12-03T16:00:05Z 1796313605.3\n\
             garbage\n",
        )
        .unwrap();
        let lines = read_lines(&f);
        assert_eq!(lines.len(), 2);
        let t: Timestamp = "2026-12-03T16:00:05Z".parse().unwrap();
        assert_eq!(lines[&("chaos-000".to_string(), t)].len(), 2);
        assert_eq!(lines_duplicated(&lines), vec![("chaos-000".to_string(), t)]);
    }
}
