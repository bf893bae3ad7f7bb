//! `agora bench services-failover`: SIGKILL of the leading services
//! framework while it runs many instances.
//!
//! 1. ZooKeeper: a private server from Debian's `zookeeper` package, or the
//!    ensemble given with `--zk`.
//! 2. A master in this process on a free port of 127.0.0.1, with `--agents`
//!    simulated agents ([`crate::sim`]; tasks run as soon as they launch).
//! 3. Two `agora services --zk ...` processes (the binary given with
//!    `--services-bin`, by default this one): one leads, one stands by.
//! 4. One app of `--instances` instances is deployed through the leader;
//!    once every instance runs, the leader is killed with SIGKILL.
//!    Measured from that instant: `elected_ms`, until the standby names
//!    itself at `/v2/leader`; `served_ms`, until it answers `GET /v2/apps`
//!    itself with every instance `TASK_RUNNING`. Then, once the new leader
//!    has heard from every task again (reconciliation) and for `--settle`
//!    after, `relaunched` counts the tasks the agents were asked to launch
//!    and `killed` those they were asked to kill since the kill (0 and 0 are
//!    the goal: a failover changes nothing on the agents).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agora_coord::ZkUrl;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::allocator::round3;
use crate::failover::ZkServer;
use crate::poll_until;
use crate::sim::{SimCluster, SimMaster, parse_duration};

/// How often the benchmark looks again while it waits.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// `agora bench services-failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServicesFailoverArgs {
    /// Simulated agents.
    #[arg(long, env = "AGORA_AGENTS", default_value = "1000", value_parser = crate::at_least_one)]
    pub agents: usize,
    /// Instances of the one app running when the leader dies.
    #[arg(long, env = "AGORA_INSTANCES", default_value = "10000", value_parser = crate::at_least_one)]
    pub instances: usize,
    /// The services processes' ZooKeeper session timeout
    /// (`--zk-session-timeout`): a dead leader is replaced after about this.
    #[arg(long, env = "AGORA_ZK_SESSION_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub zk_session_timeout: Duration,
    /// How long to watch for relaunches and kills once the new leader has
    /// heard from every task.
    #[arg(long, env = "AGORA_SETTLE", default_value = "3s", value_parser = parse_duration)]
    pub settle: Duration,
    /// A ZooKeeper ensemble to use, `zk://host:port,...` (a fresh path is
    /// used under it). Default: a private server from Debian's `zookeeper`
    /// package.
    #[arg(long, env = "AGORA_ZK")]
    pub zk: Option<String>,
    /// The `agora` binary that runs `agora services` (default: this one).
    #[arg(long, env = "AGORA_SERVICES_BIN")]
    pub services_bin: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, env = "AGORA_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ServicesFailoverReport {
    pub agents: usize,
    pub instances: usize,
    pub zk_session_timeout_ms: f64,
    /// From the SIGKILL to the standby naming itself leader.
    pub elected_ms: f64,
    /// From the SIGKILL to the new leader serving `/v2/apps` with every
    /// instance running.
    pub served_ms: f64,
    /// Tasks launched on the agents after the kill.
    pub relaunched: u64,
    /// Tasks killed on the agents after the kill.
    pub killed: u64,
    /// Instances the new leader shows running at the end.
    pub running_after: u64,
}

impl ServicesFailoverReport {
    pub fn json(&self) -> Value {
        json!({
            "agents": self.agents,
            "instances": self.instances,
            "zk_session_timeout_ms": round3(self.zk_session_timeout_ms),
            "elected_ms": round3(self.elected_ms),
            "served_ms": round3(self.served_ms),
            "relaunched": self.relaunched,
            "killed": self.killed,
            "running_after": self.running_after,
        })
    }
}

/// One `agora services` process, killed when dropped.
struct ServicesProcess {
    address: String,
    child: Child,
    _dir: tempfile::TempDir,
}

async fn spawn_services(
    bin: &Path,
    master: &str,
    zk: &ZkUrl,
    session: Duration,
    http: &reqwest::Client,
) -> anyhow::Result<ServicesProcess> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin)
        .arg("services")
        .args(["--master", master, "--listen", &address])
        .args(["--zk", &zk.to_string()])
        .arg("--zk-session-timeout")
        .arg(format!("{}ms", session.as_millis()))
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {} services: {e}", bin.display()))?;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if http
            .get(format!("http://{address}/ping"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("agora services ({}) exited: {status}", bin.display());
        }
        anyhow::ensure!(
            Instant::now() < until,
            "agora services did not answer on {address} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(ServicesProcess {
        address,
        child,
        _dir: dir,
    })
}

async fn get(http: &reqwest::Client, address: &str, path: &str) -> Option<Value> {
    let r = http
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The leader `address` names at `/v2/leader`.
async fn leader_of(http: &reqwest::Client, address: &str) -> Option<String> {
    get(http, address, "/v2/leader").await?["leader"]
        .as_str()
        .map(str::to_string)
}

/// `tasksRunning` of the app `id` as `address` shows it.
async fn running(http: &reqwest::Client, address: &str, id: &str) -> Option<u64> {
    let v = get(
        http,
        address,
        &format!("/v2/apps?id={id}&embed=apps.counts"),
    )
    .await?;
    v["apps"].as_array()?.iter().find(|a| a["id"] == id)?["tasksRunning"].as_u64()
}

/// A counter of `address`'s `/metrics` (`None` when it does not answer).
async fn metric(http: &reqwest::Client, address: &str, name: &str) -> Option<u64> {
    let text = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .next()
        .map(|v| v as u64)
}

/// Runs the benchmark.
pub async fn run(args: &ServicesFailoverArgs) -> anyhow::Result<ServicesFailoverReport> {
    let until = Instant::now() + args.timeout;
    let (zk_server, servers) = match &args.zk {
        Some(url) => {
            let url = ZkUrl::parse(&format!("{}/x", url.trim_end_matches('/')))
                .map_err(|e| anyhow::anyhow!("--zk: {e}"))?;
            (None, url.servers())
        }
        None => {
            let zk = ZkServer::start().await?;
            let servers = format!("127.0.0.1:{}", zk.port);
            (Some(zk), servers)
        }
    };
    let zk_url = ZkUrl::parse(&format!(
        "zk://{servers}/agora-bench-services-failover-{}",
        std::process::id()
    ))?;
    let bin = match &args.services_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };

    let sim = SimMaster::start(args.agents, crate::services::AGENT_RESOURCES, args.timeout).await?;
    let address = sim.address.clone();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut processes = Vec::new();
    for _ in 0..2 {
        processes
            .push(spawn_services(&bin, &address, &zk_url, args.zk_session_timeout, &http).await?);
    }
    let result = measure(args, &http, &mut processes, &sim.cluster, until).await;
    for mut p in processes {
        let _ = p.child.kill().await;
    }
    sim.stop().await;
    drop(zk_server);
    result
}

async fn measure(
    args: &ServicesFailoverArgs,
    http: &reqwest::Client,
    processes: &mut [ServicesProcess],
    cluster: &SimCluster,
    until: Instant,
) -> anyhow::Result<ServicesFailoverReport> {
    let addresses: Vec<String> = processes.iter().map(|p| p.address.clone()).collect();
    let leader = poll_until("a leading services instance", until, POLL_EVERY, || {
        let addresses = addresses.clone();
        async move {
            let l = leader_of(http, &addresses[0]).await?;
            addresses.contains(&l).then_some(l)
        }
    })
    .await?;
    poll_until("the leader to serve", until, POLL_EVERY, || async {
        get(http, &leader, "/v2/apps").await
    })
    .await?;

    let n = args.instances;
    let id = "/bench/failover";
    let app = json!({"id": id, "cmd": "sleep 3600", "cpus": 0.01, "mem": 1, "instances": n});
    let resp = http
        .post(format!("http://{leader}/v2/apps"))
        .json(&app)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "POST /v2/apps: {}: {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
    let started = Instant::now();
    poll_until("every instance running", until, POLL_EVERY, || async {
        (running(http, &leader, id).await? == n as u64).then_some(())
    })
    .await?;
    poll_until("the deployment done", until, POLL_EVERY, || async {
        get(http, &leader, "/v2/deployments")
            .await?
            .as_array()?
            .is_empty()
            .then_some(())
    })
    .await?;
    // The leader now (a busy machine may have moved it meanwhile).
    let leader = poll_until("a leading services instance", until, POLL_EVERY, || {
        let addresses = addresses.clone();
        async move {
            let l = leader_of(http, &addresses[0]).await?;
            addresses.contains(&l).then_some(l)
        }
    })
    .await?;
    let standby = addresses
        .iter()
        .find(|a| **a != leader)
        .cloned()
        .expect("two processes");
    eprintln!(
        "{n} instances running in {:.3} s; killing the leader {leader}",
        started.elapsed().as_secs_f64()
    );

    let before = cluster.stats();
    let killed_at = Instant::now();
    let process = processes
        .iter_mut()
        .find(|p| p.address == leader)
        .expect("the leader is one of ours");
    process.child.start_kill()?;
    let elected = async {
        poll_until("the standby to lead", until, POLL_EVERY, || async {
            (leader_of(http, &standby).await? == standby).then(|| killed_at.elapsed())
        })
        .await
    };
    let served = async {
        poll_until(
            "the new leader to serve every instance",
            until,
            POLL_EVERY,
            || async {
                (running(http, &standby, id).await? == n as u64).then(|| killed_at.elapsed())
            },
        )
        .await
    };
    let (elected, served) = tokio::join!(elected, served);
    let (elected, served) = (elected?, served?);
    eprintln!(
        "the standby leads after {:.3} s and serves every instance after {:.3} s",
        elected.as_secs_f64(),
        served.as_secs_f64()
    );
    // Every task has answered the new leader (its reconciliation), then a
    // while for anything it would launch or kill.
    poll_until(
        "the new leader to hear from every task",
        until,
        POLL_EVERY,
        || async {
            let updates = metric(http, &standby, "agora_services_status_updates_total").await?;
            (updates >= n as u64).then_some(())
        },
    )
    .await?;
    tokio::time::sleep(args.settle).await;
    let after = cluster.stats();
    let running_after = running(http, &standby, id).await.unwrap_or(0);
    Ok(ServicesFailoverReport {
        agents: args.agents,
        instances: n,
        zk_session_timeout_ms: args.zk_session_timeout.as_secs_f64() * 1e3,
        elected_ms: elected.as_secs_f64() * 1e3,
        served_ms: served.as_secs_f64() * 1e3,
        relaunched: after.tasks_launched - before.tasks_launched,
        killed: after.tasks_killed - before.tasks_killed,
        running_after,
    })
}
