//! `agora bench services`: the services framework at scale, on a real
//! master and simulated agents (both in this process), over its REST API.
//!
//! 1. **Scale**: one app scaled from 0 to `--instances` on `--agents`
//!    simulated agents (tasks run as soon as they launch). Measured from
//!    the `PUT` being answered to every instance `TASK_RUNNING` as the API
//!    shows it (`tasksRunning`); the store is a redb file (the embedded
//!    store), or ZooKeeper with `--zk`.
//! 2. **Rolling restart**: an app of `--restart-instances` instances with
//!    `minimumHealthCapacity` 0.9 (and `maximumOverCapacity` 0.1) restarted;
//!    the time until the deployment is done, and the fewest instances
//!    running (healthy) seen meanwhile, polling every 20 ms.
//! 3. **List**: `--apps` apps of `--tasks-per-app` running instances each,
//!    then `GET /v2/apps?embed=apps.tasks` `--requests` times one after
//!    another: the latency of one answer, p50 / p99 / max.

use std::time::Duration;

use agora_proto::Resources;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::allocator::round3;
use crate::sim::{SimCluster, SimConfig, parse_duration};

/// `agora bench services`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServicesBenchArgs {
    /// Simulated agents.
    #[arg(long, env = "AGORA_AGENTS", default_value = "1000", value_parser = crate::at_least_one)]
    pub agents: usize,
    /// Instances the one app is scaled to.
    #[arg(long, env = "AGORA_INSTANCES", default_value = "10000", value_parser = crate::at_least_one)]
    pub instances: usize,
    /// Instances of the app restarted (rolling).
    #[arg(long, env = "AGORA_RESTART_INSTANCES", default_value = "1000", value_parser = crate::at_least_one)]
    pub restart_instances: usize,
    /// Apps for the list measurement.
    #[arg(long, env = "AGORA_APPS", default_value = "1000", value_parser = crate::at_least_one)]
    pub apps: usize,
    /// Running instances of each of those apps.
    #[arg(long, env = "AGORA_TASKS_PER_APP", default_value = "10", value_parser = crate::at_least_one)]
    pub tasks_per_app: usize,
    /// `GET /v2/apps?embed=apps.tasks` requests to time.
    #[arg(long, env = "AGORA_REQUESTS", default_value = "200", value_parser = crate::at_least_one)]
    pub requests: usize,
    /// Keep the framework's store in ZooKeeper (`zk://host:port/path`)
    /// instead of a redb file.
    #[arg(long, env = "AGORA_ZK")]
    pub zk: Option<String>,
    /// Give up after this long.
    #[arg(long, env = "AGORA_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ServicesReport {
    pub agents: usize,
    pub store: &'static str,
    pub instances: usize,
    pub scale_s: f64,
    pub instances_per_s: f64,
    pub restart_instances: usize,
    pub restart_s: f64,
    pub restart_min_running: u64,
    pub apps: usize,
    pub tasks_listed: usize,
    pub list_ms_p50: f64,
    pub list_ms_p99: f64,
    pub list_ms_max: f64,
}

impl ServicesReport {
    pub fn json(&self) -> Value {
        json!({
            "agents": self.agents,
            "store": self.store,
            "instances": self.instances,
            "scale_s": round3(self.scale_s),
            "instances_per_s": self.instances_per_s.round(),
            "restart_instances": self.restart_instances,
            "restart_s": round3(self.restart_s),
            "restart_min_running": self.restart_min_running,
            "apps": self.apps,
            "tasks_listed": self.tasks_listed,
            "list_ms_p50": round3(self.list_ms_p50),
            "list_ms_p99": round3(self.list_ms_p99),
            "list_ms_max": round3(self.list_ms_max),
        })
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("{method} {path}: {status}: {v}");
        }
        Ok(v)
    }

    /// Waits until `done` holds for `GET path`, polling every 20 ms.
    async fn wait(
        &self,
        path: &str,
        until: Instant,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        loop {
            if let Ok(v) = self.send(reqwest::Method::GET, path, None).await
                && done(&v)
            {
                return Ok(());
            }
            if Instant::now() >= until {
                anyhow::bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs the benchmark.
pub async fn run(args: &ServicesBenchArgs) -> anyhow::Result<ServicesReport> {
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
    let mut sim = SimConfig::new(args.agents);
    sim.resources = Resources::parse("cpus:64;mem:262144;disk:1000000;ports:[31000-32000]")?;
    let (_leader_tx, leader) = watch::channel(address.clone());
    let cluster = SimCluster::start(sim, leader)?;
    cluster
        .wait_for(args.timeout, |s| s.registered == args.agents)
        .await?;
    eprintln!("{} simulated agents registered", args.agents);

    let dir = tempfile::tempdir()?;
    let mut config = agora_services::ServicesConfig::new(&address, "127.0.0.1:0".parse()?);
    let store = match &args.zk {
        Some(url) => {
            let url = agora_coord::ZkUrl::parse(url).map_err(|e| anyhow::anyhow!("--zk: {e}"))?;
            config.store = agora_framework_kit::store::StoreBackend::Zk {
                url,
                session_timeout: Duration::from_secs(10),
            };
            "zookeeper"
        }
        None => {
            config.store =
                agora_framework_kit::store::StoreBackend::File(dir.path().join("store.redb"));
            "redb"
        }
    };
    config.controller.refuse_seconds = 1.0;
    let services = agora_services::start(config, shutdown.child_token()).await?;
    let api = Api {
        base: services.url(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
    };
    api.wait("/v2/apps", until, "the services API", |v| {
        v["apps"].is_array()
    })
    .await?;

    // 1. Scale one app from 0 to `instances`.
    let app =
        json!({"id": "/bench/scale", "cmd": "sleep 3600", "cpus": 0.01, "mem": 1, "instances": 0});
    api.send(reqwest::Method::POST, "/v2/apps", Some(app))
        .await?;
    api.wait("/v2/deployments", until, "the app created", |v| {
        v.as_array().is_some_and(|d| d.is_empty())
    })
    .await?;
    let n = args.instances;
    let started = Instant::now();
    api.send(
        reqwest::Method::PUT,
        "/v2/apps/bench/scale",
        Some(json!({"instances": n})),
    )
    .await?;
    api.wait(
        "/v2/apps/bench/scale",
        until,
        "every instance running",
        |v| v["app"]["tasksRunning"].as_u64() == Some(n as u64),
    )
    .await?;
    let scale_s = started.elapsed().as_secs_f64();
    eprintln!("{n} instances running in {scale_s:.3} s");
    api.send(reqwest::Method::DELETE, "/v2/apps/bench/scale", None)
        .await?;
    api.wait("/v2/apps", until, "the scaled app removed", |v| {
        v["apps"].as_array().is_some_and(|a| a.is_empty())
    })
    .await?;

    // 2. A rolling restart that keeps 90 % running.
    let r = args.restart_instances;
    let app = json!({"id": "/bench/roll", "cmd": "sleep 3600", "cpus": 0.01, "mem": 1, "instances": r,
                     "upgradeStrategy": {"minimumHealthCapacity": 0.9, "maximumOverCapacity": 0.1}});
    api.send(reqwest::Method::POST, "/v2/apps", Some(app))
        .await?;
    api.wait(
        "/v2/apps/bench/roll",
        until,
        "the app to restart running",
        |v| {
            v["app"]["tasksRunning"].as_u64() == Some(r as u64)
                && v["app"]["deployments"]
                    .as_array()
                    .is_some_and(|d| d.is_empty())
        },
    )
    .await?;
    let started = Instant::now();
    api.send(reqwest::Method::POST, "/v2/apps/bench/roll/restart", None)
        .await?;
    let mut restart_min_running = u64::MAX;
    loop {
        let v = api
            .send(reqwest::Method::GET, "/v2/apps/bench/roll", None)
            .await?;
        let a = &v["app"];
        restart_min_running = restart_min_running.min(a["tasksRunning"].as_u64().unwrap_or(0));
        let done = a["deployments"].as_array().is_some_and(|d| d.is_empty())
            && a["tasks"].as_array().is_some_and(|t| {
                t.len() == r
                    && t.iter()
                        .all(|t| t["version"] == a["version"] && t["state"] == "TASK_RUNNING")
            });
        if done {
            break;
        }
        if Instant::now() >= until {
            anyhow::bail!("timed out waiting for the rolling restart");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart_s = started.elapsed().as_secs_f64();
    eprintln!(
        "{r} instances restarted in {restart_s:.3} s, at least {restart_min_running} running throughout"
    );
    api.send(reqwest::Method::DELETE, "/v2/apps/bench/roll", None)
        .await?;
    api.wait("/v2/apps", until, "the restarted app removed", |v| {
        v["apps"].as_array().is_some_and(|a| a.is_empty())
    })
    .await?;

    // 3. Many apps, then the list with every task.
    let k = args.tasks_per_app;
    for i in 0..args.apps {
        let app = json!({"id": format!("/bench/list/app-{i:05}"), "cmd": "sleep 3600",
                         "cpus": 0.01, "mem": 1, "instances": k});
        api.send(reqwest::Method::POST, "/v2/apps", Some(app))
            .await?;
    }
    let total = args.apps * k;
    loop {
        let v = api
            .send(reqwest::Method::GET, "/v2/apps?embed=apps.counts", None)
            .await?;
        let running: u64 = v["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["tasksRunning"].as_u64())
            .sum();
        if running == total as u64 {
            break;
        }
        if Instant::now() >= until {
            anyhow::bail!(
                "timed out waiting for {total} instances of {} apps ({running} running)",
                args.apps
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{} apps x {k} instances running", args.apps);
    let mut latencies = Vec::with_capacity(args.requests);
    let mut listed = 0;
    for _ in 0..args.requests {
        let t = Instant::now();
        let v = api
            .send(reqwest::Method::GET, "/v2/apps?embed=apps.tasks", None)
            .await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        listed = v["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["tasks"].as_array().map_or(0, Vec::len))
            .sum();
    }
    latencies.sort_by(f64::total_cmp);

    shutdown.cancel();
    services.wait().await;
    cluster.stop().await;
    master.stop().await;
    Ok(ServicesReport {
        agents: args.agents,
        store,
        instances: n,
        scale_s,
        instances_per_s: n as f64 / scale_s,
        restart_instances: r,
        restart_s,
        restart_min_running,
        apps: args.apps,
        tasks_listed: listed,
        list_ms_p50: quantile(&latencies, 0.5),
        list_ms_p99: quantile(&latencies, 0.99),
        list_ms_max: latencies.last().copied().unwrap_or(0.0),
    })
}
