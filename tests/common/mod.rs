//! Shared by the integration tests: in-process clusters on port 0, the built
//! `agora` binary as real processes, a test framework on the scheduler SDK,
//! and waiting on conditions with deadlines (never fixed sleeps).
#![allow(dead_code)]

pub mod batch;
pub mod docker;
pub mod kit;
pub mod services;
pub mod ui;
pub mod zk;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_master::{MasterConfig, RunningMaster};
use agora_proto::Resources;
use agora_proto::v1::{self, Offer, TaskState, TaskStatus};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen within seconds.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The built `agora` binary.
pub fn agora_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agora"))
}

/// Logs of the in-process parts, once per test binary (`RUST_LOG` to see more).
/// A Python that can `import module`: `$env`'s if set, else `python3`; or
/// `None` (after saying `how` to get one) when the run is not strict
/// (`AGORA_TEST_STRICT=1` fails instead).
pub fn python_with(module: &str, env: &str, how: &str) -> Option<String> {
    let candidates = std::env::var(env)
        .into_iter()
        .chain(["python3".to_string()]);
    for python in candidates {
        let ok = std::process::Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(python);
        }
    }
    if std::env::var("AGORA_TEST_STRICT").is_ok_and(|v| v == "1") {
        panic!("{how} (AGORA_TEST_STRICT=1: this test needs it)");
    }
    eprintln!("skipping: {how}");
    None
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it returns `Some`, or panics after `deadline`
/// saying what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= until {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// GET a URL and parse JSON.
pub async fn get_json(url: &str) -> Value {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A master config suited to tests: listens on a free loopback port.
pub fn master_config() -> MasterConfig {
    MasterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    }
}

/// An agent config suited to tests.
pub fn agent_config(master: &str, work_dir: &Path, resources: &str) -> agora_agent::AgentConfig {
    let mut c = agora_agent::AgentConfig::new(master, work_dir);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.resources = Some(Resources::parse(resources).unwrap());
    c.supervisor_command = vec![agora_bin().into(), "task-supervisor".into()];
    c.default_kill_grace = Duration::from_secs(1);
    c
}

/// A master and agents in this process, each on a free port.
pub struct Cluster {
    pub master: Option<RunningMaster>,
    pub agents: Vec<agora_agent::RunningAgent>,
    pub shutdown: CancellationToken,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(config: MasterConfig, agents: &[&str]) -> Cluster {
        init_logs();
        let shutdown = CancellationToken::new();
        let master = agora_master::start(config, shutdown.child_token())
            .await
            .expect("master starts");
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            master: Some(master),
            agents: Vec::new(),
            shutdown,
            dir,
        };
        for res in agents {
            cluster.add_agent(res).await;
        }
        cluster.wait_agents(agents.len()).await;
        cluster
    }

    pub fn addr(&self) -> String {
        self.master.as_ref().unwrap().addr().to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub async fn add_agent(&mut self, resources: &str) {
        let work = self.dir.path().join(format!("agent{}", self.agents.len()));
        let config = agent_config(&self.addr(), &work, resources);
        let agent = agora_agent::start(config, self.shutdown.child_token())
            .await
            .expect("agent starts");
        self.agents.push(agent);
    }

    pub async fn state(&self) -> Value {
        get_json(&format!("{}/state", self.url())).await
    }

    /// Waits until `n` agents are connected.
    pub async fn wait_agents(&self, n: usize) {
        let url = format!("{}/state", self.url());
        eventually(&format!("{n} connected agents"), DEADLINE, || {
            let url = url.clone();
            async move {
                let s = get_json(&url).await;
                let connected = s["agents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["status"] == "connected")
                    .count();
                (connected >= n).then_some(())
            }
        })
        .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a test framework has seen.
#[derive(Default, Debug)]
pub struct Seen {
    pub framework_id: Option<String>,
    pub subscribed: usize,
    pub offers: Vec<Offer>,
    pub rescinded: Vec<String>,
    pub updates: Vec<TaskStatus>,
    pub failures: Vec<String>,
    pub errors: Vec<String>,
    pub stopped: Option<String>,
}

impl Seen {
    pub fn latest(&self, task_id: &str) -> Option<&TaskStatus> {
        self.updates.iter().rev().find(|u| u.task_id == task_id)
    }
}

/// A framework for tests: records every event, acknowledges every update.
pub struct TestFramework {
    pub scheduler: Scheduler,
    pub seen: Arc<Mutex<Seen>>,
}

impl TestFramework {
    pub async fn start(master: &str, name: &str, roles: &[&str], failover: f64) -> TestFramework {
        let mut config = SchedulerConfig::new(master, name);
        config.framework.roles = roles.iter().map(|r| r.to_string()).collect();
        config.framework.failover_timeout = failover;
        Self::start_with(config).await
    }

    pub async fn start_with(config: SchedulerConfig) -> TestFramework {
        let (scheduler, mut events) = Scheduler::start(config).expect("valid scheduler config");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let sched = scheduler.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                let mut seen = s.lock().unwrap();
                match e {
                    Event::Subscribed { framework_id, .. } => {
                        seen.framework_id = Some(framework_id);
                        seen.subscribed += 1;
                    }
                    Event::Offers(o) => seen.offers.extend(o),
                    Event::Rescind(ids) => {
                        seen.offers.retain(|o| !ids.contains(&o.id));
                        seen.rescinded.extend(ids);
                    }
                    Event::Updates(u) => {
                        let _ = sched.acknowledge(&u);
                        seen.updates.extend(u);
                    }
                    Event::Failure { agent_id } => seen.failures.push(agent_id),
                    Event::Error(m) => seen.errors.push(m),
                    Event::Disconnected { .. } => {}
                    Event::Stopped { reason } => {
                        seen.stopped = Some(reason);
                        break;
                    }
                }
            }
        });
        let fw = TestFramework { scheduler, seen };
        fw.wait("subscribed", |s| (s.subscribed > 0).then_some(()))
            .await;
        fw
    }

    pub fn id(&self) -> String {
        self.seen.lock().unwrap().framework_id.clone().unwrap()
    }

    /// Waits until `check` finds something in what was seen.
    pub async fn wait<T>(&self, what: &str, check: impl Fn(&Seen) -> Option<T>) -> T {
        self.wait_for(what, DEADLINE, check).await
    }

    pub async fn wait_for<T>(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn(&Seen) -> Option<T>,
    ) -> T {
        let seen = self.seen.clone();
        let check = &check;
        eventually(what, deadline, || {
            let seen = seen.clone();
            async move { check(&seen.lock().unwrap()) }
        })
        .await
    }

    /// Takes the next outstanding offer (waiting for one).
    pub async fn take_offer(&self) -> Offer {
        self.wait("an offer", |s| s.offers.first().cloned()).await;
        let mut seen = self.seen.lock().unwrap();
        seen.offers.remove(0)
    }

    /// Waits for `task_id` to reach `state`.
    pub async fn wait_state(&self, task_id: &str, state: TaskState) -> TaskStatus {
        self.wait(&format!("{task_id} in {}", state.as_str_name()), |s| {
            s.updates
                .iter()
                .find(|u| u.task_id == task_id && u.state() == state)
                .cloned()
        })
        .await
    }

    /// Launches tasks on an offer (the unused rest returns at once).
    pub fn launch(&self, offer: &Offer, tasks: Vec<v1::TaskInfo>) {
        self.scheduler
            .accept(vec![offer.id.clone()], tasks, Some(0.0))
            .expect("accept");
    }
}

/// A shell-command task.
pub fn shell_task(id: &str, cmd: &str, resources: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: Resources::parse(resources).unwrap().to_proto(),
        command: Some(v1::CommandInfo {
            value: cmd.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A running `agora` process whose output the test reads.
pub struct Proc {
    pub child: tokio::process::Child,
    pub output: Arc<Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Proc {
    /// Starts `agora ARGS...`; stdout and stderr lines are collected.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut cmd = tokio::process::Command::new(agora_bin());
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn agora");
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    out.lock().unwrap().push(line);
                }
            }));
        }
        Proc {
            child,
            output,
            readers,
        }
    }

    pub fn text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Waits for an output line containing `needle`, and returns it. On
    /// timeout the panic shows what the process printed, so a failure says
    /// why (it exited, or stalled at some step).
    pub async fn wait_line(&self, needle: &str) -> String {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self
                .output
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
            {
                return line;
            }
            if tokio::time::Instant::now() >= until {
                let out = self.output.lock().unwrap();
                let tail = out[out.len().saturating_sub(40)..].join("\n");
                panic!(
                    "timed out after {DEADLINE:?} waiting for a line with `{needle}` from agora; \
                     its last output:\n{tail}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the `key=value` field of a log line containing `needle`.
    pub async fn wait_field(&self, needle: &str, key: &str) -> String {
        let line = self.wait_line(needle).await;
        let pat = format!("{key}=");
        let start = line
            .find(&pat)
            .unwrap_or_else(|| panic!("no {key}= in: {line}"))
            + pat.len();
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_matches('"')
            .to_string()
    }

    /// SIGKILL, as a crash would.
    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// Waits for the process to exit (and its output to be read), with a
    /// deadline.
    pub async fn exit_code(&mut self) -> i32 {
        match tokio::time::timeout(DEADLINE, self.child.wait()).await {
            Ok(Ok(status)) => {
                for reader in self.readers.drain(..) {
                    let _ = tokio::time::timeout(DEADLINE, reader).await;
                }
                status.code().unwrap_or(-1)
            }
            Ok(Err(e)) => panic!("wait: {e}"),
            Err(_) => panic!(
                "agora did not exit within {DEADLINE:?}; output:\n{}",
                self.text()
            ),
        }
    }
}

/// Starts `agora master` on a free port; returns it with its address.
pub async fn spawn_master(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["master", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args, &[]);
    let addr = p.wait_field("master listening", "address").await;
    (p, addr)
}

/// Starts `agora agent` against `master` with `work_dir`; returns once it
/// registered.
pub async fn spawn_agent(master: &str, work_dir: &Path, resources: &str) -> Proc {
    let work = work_dir.to_str().unwrap();
    let p = Proc::spawn(
        &[
            "agent",
            "--master",
            master,
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            work,
            "--resources",
            resources,
            "--kill-grace",
            "1s",
        ],
        &[],
    );
    p.wait_line("the master accepted the agent").await;
    p
}

/// A command that runs until the test's temporary directory `dir` is
/// deleted, so a test that fails never leaves a task running for long. It
/// watches a marker file rather than the directory itself, because task
/// supervisors writing under `dir` may recreate directories after the test
/// removed them.
pub fn linger(dir: &Path) -> String {
    let marker = dir.join(".tasks-may-run");
    std::fs::write(&marker, b"").expect("write the linger marker");
    format!("while [ -e '{}' ]; do sleep 0.2; done", marker.display())
}
