//! `agora bench failover`: how long a cluster takes to recover from the
//! death of its leading master.
//!
//! 1. ZooKeeper: a private server from Debian's `zookeeper` package
//!    (`tickTime=500`, so short sessions work) in a temporary directory, or
//!    the ensemble given with `--zk`.
//! 2. `--masters` real `agora master --zk ... --zk-session-timeout T`
//!    processes on free ports of 127.0.0.1.
//! 3. `--agents` simulated agents ([`crate::sim`], each with its own gRPC
//!    session) that follow the leader ZooKeeper names (one ZooKeeper
//!    detector shared by the simulation, not one session per agent), and one
//!    framework on the scheduler SDK that finds the leader through ZooKeeper
//!    itself and launches `--tasks` tasks, spread evenly over the agents.
//! 4. Once every task runs, the leader is killed with SIGKILL. Measured from
//!    that instant: (a) `elected_ms`, until another master answers `/state`
//!    with `elected: true`; (b) `agents_reregistered_ms`, until every agent
//!    has reregistered; (c) `offers_resumed_ms`, until the framework, having
//!    resubscribed with its id, receives offers again. `tasks_lost` counts
//!    the tasks the framework heard of in any state but `TASK_RUNNING` after
//!    the kill (0 is the goal), once the new leader knows every task again.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agora_coord::{Detector, ZkDetector, ZkUrl};
use agora_proto::Resources;
use agora_proto::v1::{self, TaskState};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use parking_lot::Mutex;
use serde_json::json;
use tokio::process::Child;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::allocator::round3;
use crate::poll_until;
use crate::sim::{SimCluster, SimConfig, parse_duration};

/// How often the benchmark looks again while it waits.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// `agora bench failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// Simulated agents.
    #[arg(long, env = "AGORA_AGENTS", default_value_t = 100)]
    pub agents: usize,
    /// Tasks running when the leader dies (spread evenly over the agents).
    #[arg(long, env = "AGORA_TASKS", default_value_t = 1000)]
    pub tasks: usize,
    /// Masters (one leads, the others stand by).
    #[arg(long, env = "AGORA_MASTERS", default_value_t = 3)]
    pub masters: usize,
    /// The masters' ZooKeeper session timeout (`--zk-session-timeout`).
    #[arg(long, env = "AGORA_ZK_SESSION_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub zk_session_timeout: Duration,
    /// A ZooKeeper ensemble to use, `zk://host:port,...` (a fresh path is
    /// used under it). Default: start a private server from Debian's
    /// `zookeeper` package.
    #[arg(long, env = "AGORA_ZK")]
    pub zk: Option<String>,
    /// The `agora` binary that runs the masters (default: this one).
    #[arg(long, env = "AGORA_MASTER_BIN")]
    pub master_bin: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, env = "AGORA_TIMEOUT", default_value = "3m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    pub agents: usize,
    pub tasks: usize,
    pub elected_ms: f64,
    pub agents_reregistered_ms: f64,
    pub offers_resumed_ms: f64,
    pub tasks_lost: usize,
    pub session_timeout_ms: f64,
    pub masters: usize,
    /// RUNNING tasks the new leader knows once everything settled.
    pub tasks_running_after: usize,
}

impl FailoverReport {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "agents": self.agents,
            "tasks": self.tasks,
            "elected_ms": round3(self.elected_ms),
            "agents_reregistered_ms": round3(self.agents_reregistered_ms),
            "offers_resumed_ms": round3(self.offers_resumed_ms),
            "tasks_lost": self.tasks_lost,
            "session_timeout_ms": round3(self.session_timeout_ms),
            "masters": self.masters,
            "tasks_running_after": self.tasks_running_after,
        })
    }
}

/// A private ZooKeeper server, killed when dropped (also for
/// `agora bench batch-chaos`). A 1 GB heap: the services bench writes
/// megabytes of instance records a second, and the server keeps its last
/// 500 proposals in memory.
pub(crate) struct ZkServer {
    child: std::process::Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl ZkServer {
    const CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar";

    pub(crate) async fn start() -> anyhow::Result<ZkServer> {
        anyhow::ensure!(
            std::path::Path::new("/usr/share/java/zookeeper.jar").exists(),
            "ZooKeeper is not installed: `apt-get install -y --no-install-recommends zookeeper`, \
             or give an ensemble with --zk"
        );
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cfg = dir.path().join("zoo.cfg");
        std::fs::create_dir_all(dir.path().join("data"))?;
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n\
                 dataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=srvr\nmaxClientCnxns=0\n",
                dir.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("zookeeper.log"))?;
        let child = std::process::Command::new("java")
            .args(["-Xmx1g", "-XX:+UseSerialGC", "-cp", Self::CLASSPATH])
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start ZooKeeper (java): {e}"))?;
        let mut server = ZkServer {
            child,
            port,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(60);
        while !server.serving() {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("ZooKeeper exited at start: {status}");
            }
            anyhow::ensure!(
                Instant::now() < until,
                "ZooKeeper did not start within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(server)
    }

    /// Whether the server serves clients (`srvr` names its mode only then).
    fn serving(&self) -> bool {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = String::new();
        s.write_all(b"srvr").is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.contains("Mode: ")
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the framework saw, shared with the measuring side.
#[derive(Default)]
struct Seen {
    framework_id: Option<String>,
    /// Tasks seen RUNNING before the kill.
    running: std::collections::HashSet<String>,
    /// Set at the kill: what happens after it is what counts.
    killed_at: Option<Instant>,
    resubscribed_at: Option<Instant>,
    offers_after_kill_at: Option<Instant>,
    /// Tasks reported in another state than RUNNING after the kill.
    lost: HashMap<String, TaskState>,
    stopped: Option<String>,
}

/// Runs the benchmark.
pub async fn run(args: &FailoverArgs) -> anyhow::Result<FailoverReport> {
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(args.masters >= 2, "--masters must be at least 2");
    let deadline = Instant::now() + args.timeout;
    let (_zk, servers) = match &args.zk {
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
    let path = format!("/agora-bench-failover-{}", std::process::id());
    let zk_url = ZkUrl::parse(&format!("zk://{servers}{path}"))?;
    tracing::info!(zk = %zk_url, "ZooKeeper ready");

    let bin = match &args.master_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let mut masters: Vec<(String, Child)> = Vec::new();
    for _ in 0..args.masters {
        masters.push(start_master(&bin, &zk_url, args.zk_session_timeout).await?);
    }
    let result = measure(args, &zk_url, &mut masters, deadline).await;
    for (_, mut child) in masters {
        let _ = child.kill().await;
    }
    result
}

async fn start_master(
    bin: &std::path::Path,
    zk: &ZkUrl,
    session: Duration,
) -> anyhow::Result<(String, Child)> {
    let extra = [
        "--zk".to_string(),
        zk.to_string(),
        "--zk-session-timeout".to_string(),
        format!("{}ms", session.as_millis()),
    ];
    crate::process::spawn_master(bin, &extra).await
}

/// A master's `/state`, if it answers.
async fn state(http: &reqwest::Client, address: &str) -> Option<serde_json::Value> {
    let r = http
        .get(format!("http://{address}/state"))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

async fn measure(
    args: &FailoverArgs,
    zk_url: &ZkUrl,
    masters: &mut [(String, Child)],
    deadline: Instant,
) -> anyhow::Result<FailoverReport> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    // The leader, as ZooKeeper names it, for the simulated agents.
    let detector = ZkDetector::start(zk_url, args.zk_session_timeout);
    let mut detected = detector.leader();
    let (leader_tx, leader_rx) = watch::channel(String::new());
    let follow = tokio::spawn(async move {
        loop {
            if let Some(l) = detected.borrow_and_update().as_ref() {
                leader_tx.send_replace(agora_coord::address_of(l));
            }
            if detected.changed().await.is_err() {
                return;
            }
        }
    });
    let addresses: Vec<String> = masters.iter().map(|(a, _)| a.clone()).collect();
    let leader = poll_until("a leading master", deadline, POLL_EVERY, || {
        let http = http.clone();
        let addresses = addresses.clone();
        async move {
            for a in &addresses {
                if state(&http, a).await.is_some_and(|s| s["elected"] == true) {
                    return Some(a.clone());
                }
            }
            None
        }
    })
    .await?;
    tracing::info!(%leader, "a master leads");

    let sim = SimCluster::start(SimConfig::new(args.agents), leader_rx)?;
    let n = args.agents;
    sim.wait_for(deadline - Instant::now(), |s| s.registered == n)
        .await?;
    tracing::info!(agents = n, "simulated agents registered");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let changed = Arc::new(Notify::new());
    let mut config = SchedulerConfig::new(zk_url.to_string(), "agora-bench-failover");
    config.framework.failover_timeout = 7.0 * 24.0 * 3600.0;
    let (scheduler, events) = Scheduler::start(config)?;
    let per_agent = args.tasks.div_ceil(args.agents).max(1);
    let framework = tokio::spawn(run_framework(
        scheduler.clone(),
        events,
        args.tasks,
        per_agent,
        seen.clone(),
        changed.clone(),
    ));
    let tasks = args.tasks;
    let all_running = wait_seen(&seen, &changed, deadline, |s| {
        if let Some(why) = &s.stopped {
            return Some(Err(anyhow::anyhow!("the framework stopped: {why}")));
        }
        (s.running.len() >= tasks).then_some(Ok(()))
    })
    .await;
    let outcome = match all_running {
        Ok(Ok(())) => {
            tracing::info!(tasks, "every task runs; killing the leader");
            failover(
                args, &http, masters, &leader, &sim, &seen, &changed, deadline,
            )
            .await
        }
        Ok(Err(e)) | Err(e) => Err(e),
    };
    scheduler.stop().await;
    framework.abort();
    sim.stop().await;
    follow.abort();
    drop(detector);
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn failover(
    args: &FailoverArgs,
    http: &reqwest::Client,
    masters: &mut [(String, Child)],
    leader: &str,
    sim: &SimCluster,
    seen: &Arc<Mutex<Seen>>,
    changed: &Arc<Notify>,
    deadline: Instant,
) -> anyhow::Result<FailoverReport> {
    let before = sim.stats();
    let (_, child) = masters
        .iter_mut()
        .find(|(a, _)| a == leader)
        .expect("the leader is one of ours");
    let killed_at = Instant::now();
    seen.lock().killed_at = Some(killed_at);
    child.start_kill()?;
    let standbys: Vec<String> = masters
        .iter()
        .map(|(a, _)| a.clone())
        .filter(|a| a != leader)
        .collect();

    let elected = poll_until("a new leader", deadline, POLL_EVERY, || {
        let http = http.clone();
        let standbys = standbys.clone();
        async move {
            for a in &standbys {
                if state(&http, a).await.is_some_and(|s| s["elected"] == true) {
                    return Some((a.clone(), killed_at.elapsed()));
                }
            }
            None
        }
    });
    let n = args.agents;
    let reregistered = async {
        sim.wait_for(deadline - Instant::now(), |s| {
            s.registered == n && s.reregistrations >= before.reregistrations + n as u64
        })
        .await
        .map(|_| killed_at.elapsed())
        .map_err(anyhow::Error::from)
    };
    let offers = wait_seen(seen, changed, deadline, |s| {
        s.offers_after_kill_at.map(|at| at - killed_at)
    });
    let (elected, reregistered, offers) = tokio::join!(elected, reregistered, offers);
    let ((new_leader, elected), reregistered, offers) = (elected?, reregistered?, offers?);
    tracing::info!(%new_leader, ?elected, ?reregistered, ?offers, "recovered");

    // Settle: the new leader knows every task again.
    let tasks = args.tasks;
    let running_after = poll_until(
        "the new leader to know every task",
        deadline,
        POLL_EVERY,
        || {
            let http = http.clone();
            let new_leader = new_leader.clone();
            async move {
                let s = state(&http, &new_leader).await?;
                let running = s["frameworks"]
                    .as_array()?
                    .iter()
                    .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
                    .filter(|t| t["state"] == "TASK_RUNNING")
                    .count();
                (running >= tasks).then_some(running)
            }
        },
    )
    .await
    .unwrap_or(0);
    let lost = seen.lock().lost.len();
    Ok(FailoverReport {
        agents: args.agents,
        tasks: args.tasks,
        elected_ms: elected.as_secs_f64() * 1e3,
        agents_reregistered_ms: reregistered.as_secs_f64() * 1e3,
        offers_resumed_ms: offers.as_secs_f64() * 1e3,
        tasks_lost: lost,
        session_timeout_ms: args.zk_session_timeout.as_secs_f64() * 1e3,
        masters: args.masters,
        tasks_running_after: running_after,
    })
}

/// Waits until `check` finds something in what the framework saw.
async fn wait_seen<T>(
    seen: &Arc<Mutex<Seen>>,
    changed: &Arc<Notify>,
    deadline: Instant,
    check: impl Fn(&Seen) -> Option<T>,
) -> anyhow::Result<T> {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(v) = check(&seen.lock()) {
            return Ok(v);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            anyhow::bail!("timed out waiting for the framework");
        }
    }
}

/// The framework: launches `total` tasks, at most `per_agent` on each
/// offer, declines the rest for an hour, acknowledges every update, and
/// records what happens after the kill.
async fn run_framework(
    scheduler: Scheduler,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    total: usize,
    per_agent: usize,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
) {
    let task_resources = Resources::parse("cpus:0.1;mem:32").expect("valid");
    let mut launched = 0usize;
    while let Some(event) = events.recv().await {
        let now = Instant::now();
        let mut s = seen.lock();
        let after_kill = s.killed_at.is_some_and(|k| now >= k);
        match event {
            Event::Subscribed {
                framework_id,
                resubscribed,
                ..
            } => {
                if resubscribed && after_kill && s.resubscribed_at.is_none() {
                    s.resubscribed_at = Some(now);
                }
                s.framework_id = Some(framework_id);
            }
            Event::Offers(offers) => {
                if after_kill && s.resubscribed_at.is_some() && s.offers_after_kill_at.is_none() {
                    s.offers_after_kill_at = Some(now);
                }
                for offer in offers {
                    if launched >= total {
                        let _ = scheduler.decline(vec![offer.id], Some(3600.0));
                        continue;
                    }
                    let n = per_agent.min(total - launched);
                    let tasks: Vec<v1::TaskInfo> = (launched..launched + n)
                        .map(|i| v1::TaskInfo {
                            name: "failover".into(),
                            task_id: format!("failover-{i}"),
                            agent_id: offer.agent_id.clone(),
                            resources: task_resources.to_proto(),
                            command: Some(v1::CommandInfo {
                                value: "sleep 3600".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect();
                    launched += n;
                    let _ = scheduler.accept(vec![offer.id], tasks, Some(3600.0));
                }
            }
            Event::Updates(statuses) => {
                for st in &statuses {
                    match st.state() {
                        TaskState::TaskRunning if !after_kill => {
                            s.running.insert(st.task_id.clone());
                        }
                        TaskState::TaskRunning
                        | TaskState::TaskStaging
                        | TaskState::TaskStarting => {}
                        other => {
                            s.lost.insert(st.task_id.clone(), other);
                        }
                    }
                }
                let _ = scheduler.acknowledge(&statuses);
            }
            Event::Stopped { reason } => {
                s.stopped = Some(reason);
                drop(s);
                changed.notify_waiters();
                return;
            }
            Event::Rescind(_)
            | Event::Failure { .. }
            | Event::Error(_)
            | Event::Disconnected { .. } => {}
        }
        drop(s);
        changed.notify_waiters();
    }
}
