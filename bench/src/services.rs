//! `agora bench services`: the services framework at scale, on a real
//! master and simulated agents (both in this process), over its REST API.
//!
//! 1. **Scale**: one app scaled from 0 to `--instances` on `--agents`
//!    simulated agents (tasks run as soon as they launch). Measured from
//!    the `PUT` being answered to every instance `TASK_RUNNING` as the API
//!    shows it (`tasksRunning`), with each store `--stores` names: the
//!    embedded store (a redb file) and ZooKeeper (a private server from
//!    Debian's `zookeeper` package, or the ensemble given with `--zk`).
//! 2. **Rolling restart**: an app of `--restart-instances` instances with
//!    `minimumHealthCapacity` 0.9 (and `maximumOverCapacity` 0.1) restarted;
//!    the time until the deployment is done, and the fewest instances
//!    running (healthy) seen meanwhile, polling every 20 ms.
//! 3. **List**: `--apps` apps of `--tasks-per-app` running instances each,
//!    then `GET /v2/apps?embed=apps.tasks` `--requests` times one after
//!    another: the latency of one answer (request sent to the whole body
//!    received; the client's JSON parsing is not counted), p50 / p99 / max.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::allocator::round3;
use crate::sim::{SimMaster, parse_duration};

/// What each simulated agent of the services benchmarks offers.
pub(crate) const AGENT_RESOURCES: &str = "cpus:64;mem:262144;disk:1000000;ports:[31000-32000]";

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
    /// The stores the scale-up is measured with: `embedded` (redb),
    /// `zookeeper`, or `both`. The rolling restart and the list use the
    /// first.
    #[arg(long, env = "AGORA_STORES", default_value = "both", value_enum)]
    pub stores: Stores,
    /// A ZooKeeper ensemble for the ZooKeeper store (`zk://host:port,...`;
    /// a fresh path is used under it). Default: a private server from
    /// Debian's `zookeeper` package.
    #[arg(long, env = "AGORA_ZK")]
    pub zk: Option<String>,
    /// Give up after this long.
    #[arg(long, env = "AGORA_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Which stores the scale-up runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stores {
    Embedded,
    Zookeeper,
    Both,
}

impl Stores {
    fn list(self) -> &'static [Store] {
        match self {
            Stores::Embedded => &[Store::Embedded],
            Stores::Zookeeper => &[Store::Zookeeper],
            Stores::Both => &[Store::Embedded, Store::Zookeeper],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Embedded,
    Zookeeper,
}

/// One scale-up: how long 0 -> n instances took with one store.
#[derive(Debug, Clone)]
pub struct ScaleReport {
    /// `redb` or `zookeeper`.
    pub store: &'static str,
    pub scale_s: f64,
    pub instances_per_s: f64,
    /// Store batches written and records in them, during the scale-up
    /// (the services framework's `/metrics`).
    pub store_batches: u64,
    pub store_writes: u64,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ServicesReport {
    pub agents: usize,
    pub instances: usize,
    /// One per store, in the order run.
    pub scale: Vec<ScaleReport>,
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
            "instances": self.instances,
            "scale": self.scale.iter().map(|s| json!({
                "store": s.store,
                "scale_s": round3(s.scale_s),
                "instances_per_s": s.instances_per_s.round(),
                "store_batches": s.store_batches,
                "store_writes": s.store_writes,
            })).collect::<Vec<_>>(),
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

/// A counter of the services framework's `/metrics` (0 when absent).
async fn metric(api: &Api, name: &str) -> u64 {
    let Ok(resp) = api.http.get(format!("{}/metrics", api.base)).send().await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .next()
        .map_or(0, |v| v as u64)
}

/// A services framework in this process, with its store.
struct Services {
    running: agora_services::RunningServices,
    shutdown: CancellationToken,
    api: Api,
    _dir: tempfile::TempDir,
}

impl Services {
    async fn start(
        master: &str,
        store: agora_framework_kit::store::StoreBackend,
        until: Instant,
    ) -> anyhow::Result<Services> {
        let dir = tempfile::tempdir()?;
        let mut config = agora_services::ServicesConfig::new(master, "127.0.0.1:0".parse()?);
        config.store = match store {
            agora_framework_kit::store::StoreBackend::File(name) => {
                agora_framework_kit::store::StoreBackend::File(dir.path().join(name))
            }
            other => other,
        };
        config.controller.refuse_seconds = 1.0;
        let shutdown = CancellationToken::new();
        let running = agora_services::start(config, shutdown.clone()).await?;
        let api = Api {
            base: running.url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        };
        api.wait("/v2/apps", until, "the services API", |v| {
            v["apps"].is_array()
        })
        .await?;
        Ok(Services {
            running,
            shutdown,
            api,
            _dir: dir,
        })
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }
}

/// Waits until the app `id` has `n` instances running, polling its counts.
async fn wait_running(api: &Api, id: &str, n: usize, until: Instant) -> anyhow::Result<()> {
    api.wait(
        &format!("/v2/apps?id={id}&embed=apps.counts"),
        until,
        "every instance running",
        |v| {
            v["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["id"] == id)
                .is_some_and(|a| a["tasksRunning"].as_u64() == Some(n as u64))
        },
    )
    .await
}

/// Scales one app from 0 to `n` and back to nothing (the app deleted).
async fn scale(
    api: &Api,
    store: &'static str,
    n: usize,
    until: Instant,
) -> anyhow::Result<ScaleReport> {
    let app =
        json!({"id": "/bench/scale", "cmd": "sleep 3600", "cpus": 0.01, "mem": 1, "instances": 0});
    api.send(reqwest::Method::POST, "/v2/apps", Some(app))
        .await?;
    api.wait("/v2/deployments", until, "the app created", |v| {
        v.as_array().is_some_and(|d| d.is_empty())
    })
    .await?;
    let batches = metric(api, "agora_services_store_batches_total").await;
    let writes = metric(api, "agora_services_store_batch_keys_total").await;
    let started = Instant::now();
    api.send(
        reqwest::Method::PUT,
        "/v2/apps/bench/scale",
        Some(json!({"instances": n})),
    )
    .await?;
    wait_running(api, "/bench/scale", n, until).await?;
    let scale_s = started.elapsed().as_secs_f64();
    let store_batches = metric(api, "agora_services_store_batches_total").await - batches;
    let store_writes = metric(api, "agora_services_store_batch_keys_total").await - writes;
    eprintln!(
        "{store}: {n} instances running in {scale_s:.3} s ({store_batches} store batches, {store_writes} records)"
    );
    api.send(reqwest::Method::DELETE, "/v2/apps/bench/scale", None)
        .await?;
    api.wait("/v2/apps", until, "the scaled app removed", |v| {
        v["apps"].as_array().is_some_and(|a| a.is_empty())
    })
    .await?;
    Ok(ScaleReport {
        store,
        scale_s,
        instances_per_s: n as f64 / scale_s,
        store_batches,
        store_writes,
    })
}

/// Runs the benchmark.
pub async fn run(args: &ServicesBenchArgs) -> anyhow::Result<ServicesReport> {
    let until = Instant::now() + args.timeout;
    let stores = args.stores.list();
    // ZooKeeper first: a missing server is said before anything runs.
    let mut zk_server = None;
    let zk_url = if stores.contains(&Store::Zookeeper) {
        let servers = match &args.zk {
            Some(url) => agora_coord::ZkUrl::parse(&format!("{}/x", url.trim_end_matches('/')))
                .map_err(|e| anyhow::anyhow!("--zk: {e}"))?
                .servers(),
            None => {
                let zk = crate::failover::ZkServer::start().await?;
                let servers = format!("127.0.0.1:{}", zk.port);
                zk_server = Some(zk);
                servers
            }
        };
        let path = format!("/agora-bench-services-{}", std::process::id());
        Some(agora_coord::ZkUrl::parse(&format!("zk://{servers}{path}"))?)
    } else {
        None
    };

    let sim = SimMaster::start(args.agents, AGENT_RESOURCES, args.timeout).await?;
    let address = sim.address.clone();

    let backend = |store: Store| match store {
        Store::Embedded => (
            "redb",
            agora_framework_kit::store::StoreBackend::File("store.redb".into()),
        ),
        Store::Zookeeper => (
            "zookeeper",
            agora_framework_kit::store::StoreBackend::Zk {
                url: zk_url.clone().expect("a ZooKeeper url"),
                session_timeout: Duration::from_secs(10),
            },
        ),
    };
    let n = args.instances;
    let mut scales = Vec::new();
    // 1. Scale one app from 0 to `instances`, with each store; the first
    //    framework stays for the rest.
    let (name, store) = backend(stores[0]);
    let services = Services::start(&address, store, until).await?;
    scales.push(scale(&services.api, name, n, until).await?);
    for s in &stores[1..] {
        let (name, store) = backend(*s);
        let other = Services::start(&address, store, until).await?;
        let r = scale(&other.api, name, n, until).await;
        other.stop().await;
        scales.push(r?);
    }
    let api = &services.api;

    // 2. A rolling restart that keeps 90 % running.
    let r = args.restart_instances;
    let app = json!({"id": "/bench/roll", "cmd": "sleep 3600", "cpus": 0.01, "mem": 1, "instances": r,
                     "upgradeStrategy": {"minimumHealthCapacity": 0.9, "maximumOverCapacity": 0.1}});
    api.send(reqwest::Method::POST, "/v2/apps", Some(app))
        .await?;
    wait_running(api, "/bench/roll", r, until).await?;
    api.wait(
        "/v2/deployments",
        until,
        "the app to restart deployed",
        |v| v.as_array().is_some_and(|d| d.is_empty()),
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
    let url = format!("{}/v2/apps?embed=apps.tasks", api.base);
    let mut latencies = Vec::with_capacity(args.requests);
    let mut body = None;
    for _ in 0..args.requests {
        let t = Instant::now();
        let resp = api.http.get(&url).send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "GET /v2/apps?embed=apps.tasks: {}",
            resp.status()
        );
        body = Some(resp.bytes().await?);
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let v: Value = serde_json::from_slice(body.as_deref().unwrap_or(b"{}"))?;
    let listed = v["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["tasks"].as_array().map_or(0, Vec::len))
        .sum();

    services.stop().await;
    sim.stop().await;
    drop(zk_server);
    Ok(ServicesReport {
        agents: args.agents,
        instances: n,
        scale: scales,
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
