//! `agora bench ui`: how long the web UI takes to show a large cluster,
//! measured in headless Chromium through the Performance API.
//!
//! 1. A real master (in this process) with `--agents` simulated agents
//!    ([`crate::sim`]) and `--tasks` tasks running on them, launched by a
//!    framework named `agora-services`.
//! 2. That framework announces a simulated services API as its web address:
//!    `--apps` apps of `--instances` instances each (Marathon's JSON shapes,
//!    counts changing on every request, as a busy cluster's do), and a
//!    second framework, `agora-batch`, a simulated jobs API. The browser
//!    reaches both through the master's proxy, as it would the real ones.
//! 3. For each page (the dashboard, the apps list) the browser loads the UI
//!    `--runs` times from scratch; the page marks its first render with data
//!    (`performance.mark("agora:first-render:<page>")`), and the time of that
//!    mark from navigation start is the figure (median and max of the runs).
//!    Then it watches the page for `--watch` while the data updates and
//!    reports the longest task that blocked the page (PerformanceObserver
//!    `longtask`; none means none over 50 ms).
//!
//! `--screenshots DIR` also saves PNGs of the dashboard, the apps list, an
//! app and the jobs list (the README's pictures).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_proto::Resources;
use agora_proto::v1::{self, TaskState};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use fantoccini::Locator;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use warp::Filter;

use crate::browser::Browser;
use crate::sim::{SimCluster, SimConfig};

/// `agora bench ui`.
#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    /// Simulated agents.
    #[arg(long, default_value = "100", value_parser = crate::at_least_one)]
    pub agents: usize,
    /// Tasks running on them (in the master).
    #[arg(long, default_value = "10000", value_parser = crate::at_least_one)]
    pub tasks: usize,
    /// Apps in the simulated services API.
    #[arg(long, default_value = "1000", value_parser = crate::at_least_one)]
    pub apps: usize,
    /// Instances of each app.
    #[arg(long, default_value = "10", value_parser = crate::at_least_one)]
    pub instances: usize,
    /// Page loads per page (the median is reported).
    #[arg(long, default_value = "5", value_parser = crate::at_least_one)]
    pub runs: usize,
    /// How long each page is watched while its data updates.
    #[arg(long, default_value = "10s", value_parser = crate::sim::parse_duration)]
    pub watch: Duration,
    /// Save screenshots of the pages (PNG) in this directory.
    #[arg(long)]
    pub screenshots: Option<PathBuf>,
}

/// What one run measured (milliseconds).
#[derive(Debug, Clone)]
pub struct UiReport {
    pub args: UiArgs,
    pub dashboard_ms: Vec<f64>,
    pub apps_ms: Vec<f64>,
    /// Until every row of the list is built (it is built in slices).
    pub apps_complete_ms: Vec<f64>,
    pub dashboard_longest_task_ms: f64,
    pub apps_longest_task_ms: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl UiReport {
    pub fn json(&self) -> Value {
        json!({
            "agents": self.args.agents,
            "tasks": self.args.tasks,
            "apps": self.args.apps,
            "app_instances": self.args.apps * self.args.instances,
            "runs": self.args.runs,
            "dashboard_first_render_ms_median": round1(median(&self.dashboard_ms)),
            "dashboard_first_render_ms_max": round1(max(&self.dashboard_ms)),
            "apps_first_render_ms_median": round1(median(&self.apps_ms)),
            "apps_first_render_ms_max": round1(max(&self.apps_ms)),
            "apps_all_rows_ms_median": round1(median(&self.apps_complete_ms)),
            "dashboard_longest_task_ms": round1(self.dashboard_longest_task_ms),
            "apps_longest_task_ms": round1(self.apps_longest_task_ms),
        })
    }
}

/// Runs the benchmark.
pub async fn run(args: &UiArgs) -> anyhow::Result<UiReport> {
    crate::browser::available()?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let master = agora_master::start(
        agora_master::MasterConfig {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        },
        shutdown.child_token(),
    )
    .await?;
    let address = master.addr().to_string();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);

    let mut sim = SimConfig::new(args.agents);
    sim.resources = Resources::parse("cpus:32;mem:131072;disk:1000000;ports:[31000-32000]")?;
    let (_leader_tx, leader) = watch::channel(address.clone());
    let cluster = SimCluster::start(sim, leader)?;
    let agents = args.agents;
    cluster
        .wait_for(Duration::from_secs(120), |s| s.registered == agents)
        .await?;

    // The simulated framework APIs, on one port.
    let data = Arc::new(SimData::new(args.apps, args.instances));
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = api.local_addr()?;
    let routes = sim_routes(data.clone());
    let api_shutdown = shutdown.clone();
    tokio::spawn(
        warp::serve(routes)
            .incoming(api)
            .graceful(async move { api_shutdown.cancelled().await })
            .run(),
    );

    // agora-services launches the tasks; agora-batch only announces itself.
    let mut config = SchedulerConfig::new(&address, "agora-services");
    config.framework.webui_url = format!("http://{api_addr}");
    let (services, mut events) = Scheduler::start(config)?;
    let mut batch_config = SchedulerConfig::new(&address, "agora-batch");
    batch_config.framework.webui_url = format!("http://{api_addr}/batch-sim");
    let (batch, mut batch_events) = Scheduler::start(batch_config)?;
    // It wants no offers: it declines any it gets, and asks for none.
    let batch_handle = batch.clone();
    let batch_loop = tokio::spawn(async move {
        while let Some(e) = batch_events.recv().await {
            match e {
                Event::Subscribed { .. } => {
                    let _ = batch_handle.suppress(vec![]);
                }
                Event::Offers(offers) => {
                    let ids = offers.into_iter().map(|o| o.id).collect();
                    let _ = batch_handle.decline(ids, Some(3600.0));
                }
                _ => {}
            }
        }
    });
    launch(&services, &mut events, args.tasks, deadline).await?;
    let total = args.tasks as u64;
    cluster
        .wait_for(Duration::from_secs(120), |s| s.tasks_running >= total)
        .await?;
    tracing::info!(
        took = ?started.elapsed(),
        "cluster ready: {} agents, {} tasks",
        args.agents,
        args.tasks
    );
    // Updates keep the framework acknowledged while the browser works.
    let acks = tokio::spawn(async move {
        let services = services;
        while let Some(e) = events.recv().await {
            if let Event::Updates(u) = e {
                let _ = services.acknowledge(&u);
            }
        }
    });

    let browser = Browser::start(1280, 900).await?;
    let base = format!("http://{address}");
    let result = measure(&browser, &base, args).await;
    if result.is_ok()
        && let Some(dir) = &args.screenshots
    {
        screenshots(&browser, &base, dir, &data).await?;
    }
    browser.close().await;
    acks.abort();
    batch_loop.abort();
    batch.stop().await;
    cluster.stop().await;
    shutdown.cancel();
    master.wait().await?;
    result
}

/// Launches `n` tasks (`cpus:0.1;mem:32`) on the offers, acknowledging
/// their updates, until all run.
async fn launch(
    scheduler: &Scheduler,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    n: usize,
    deadline: Instant,
) -> anyhow::Result<()> {
    let task = Resources::parse("cpus:0.1;mem:32")?;
    let proto = task.to_proto();
    let mut launched = 0usize;
    let mut running = 0usize;
    while running < n {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| anyhow::anyhow!("timed out launching: {running} of {n} running"))?
            .ok_or_else(|| anyhow::anyhow!("the scheduler driver stopped"))?;
        match event {
            Event::Offers(offers) => {
                for offer in offers {
                    if launched >= n {
                        scheduler.decline(vec![offer.id], Some(3600.0))?;
                        continue;
                    }
                    let have = Resources::from_proto(&offer.resources)?;
                    let k = crate::launch::fits(&have, &task).min(n - launched);
                    let tasks = (launched..launched + k)
                        .map(|i| v1::TaskInfo {
                            name: format!("app-{}", i % 1000),
                            task_id: format!("app-{}.instance-{i}", i % 1000),
                            agent_id: offer.agent_id.clone(),
                            resources: proto.clone(),
                            command: Some(v1::CommandInfo {
                                value: "sleep 3600".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect();
                    launched += k;
                    scheduler.accept(vec![offer.id], tasks, Some(3600.0))?;
                }
            }
            Event::Updates(u) => {
                running += u
                    .iter()
                    .filter(|s| s.state() == TaskState::TaskRunning)
                    .count();
                scheduler.acknowledge(&u)?;
            }
            Event::Stopped { reason } => anyhow::bail!("the framework stopped: {reason}"),
            _ => {}
        }
    }
    Ok(())
}

/// The page's first render with data, in ms from navigation start, or
/// `None` while it has not rendered.
const MARK: &str = "const e = performance.getEntriesByName(arguments[0]); \
     return e.length ? e[0].startTime : null;";

/** Waits for the performance mark `name`; its time from navigation start. */
async fn mark(browser: &Browser, name: &str) -> anyhow::Result<f64> {
    let c = browser.client();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(ms) = c.execute(MARK, vec![json!(name)]).await?.as_f64() {
            return Ok(ms);
        }
        anyhow::ensure!(Instant::now() < until, "no mark {name} within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Loads `url` from scratch and waits for the page's first-render mark.
async fn first_render(browser: &Browser, url: &str, page: &str) -> anyhow::Result<f64> {
    let c = browser.client();
    c.goto("about:blank").await?;
    c.goto(url).await?;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let v = c
            .execute(MARK, vec![json!(format!("agora:first-render:{page}"))])
            .await?;
        if let Some(ms) = v.as_f64() {
            if ms > 5000.0 {
                let r = c
                    .execute(
                        "return performance.getEntriesByType('resource').map(e => [e.name, Math.round(e.startTime), Math.round(e.requestStart), Math.round(e.responseStart), Math.round(e.responseEnd)]);",
                        vec![],
                    )
                    .await?;
                eprintln!("slow {page} render ({ms} ms); resources: {r}");
            }
            return Ok(ms);
        }
        if Instant::now() >= until {
            let text = c
                .execute("return document.body.innerText.slice(0, 2000);", vec![])
                .await?;
            anyhow::bail!(
                "the {page} page did not render within 60 s; it shows:\n{}",
                text.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The longest task (ms) that blocked the page over `watch`, while its data
/// updated.
async fn longest_task(browser: &Browser, watch: Duration) -> anyhow::Result<f64> {
    let c = browser.client();
    let supported = c
        .execute(
            "return PerformanceObserver.supportedEntryTypes.includes('longtask');",
            vec![],
        )
        .await?;
    anyhow::ensure!(
        supported == json!(true),
        "this browser does not report long tasks"
    );
    c.execute(
        "window.__longest = 0; new PerformanceObserver((l) => { for (const e of l.getEntries()) \
         window.__longest = Math.max(window.__longest, e.duration); }).observe({type: 'longtask'});",
        vec![],
    )
    .await?;
    tokio::time::sleep(watch).await;
    Ok(c.execute("return window.__longest;", vec![])
        .await?
        .as_f64()
        .unwrap_or(0.0))
}

async fn measure(browser: &Browser, base: &str, args: &UiArgs) -> anyhow::Result<UiReport> {
    let mut dashboard_ms = Vec::new();
    let mut apps_ms = Vec::new();
    // One load first, so every measured one finds the same warm caches.
    first_render(browser, &format!("{base}/#/"), "cluster").await?;
    for _ in 0..args.runs {
        dashboard_ms.push(first_render(browser, &format!("{base}/#/"), "cluster").await?);
    }
    let dashboard_longest_task_ms = longest_task(browser, args.watch).await?;
    let mut apps_complete_ms = Vec::new();
    for _ in 0..args.runs {
        apps_ms.push(first_render(browser, &format!("{base}/#/apps"), "apps").await?);
        apps_complete_ms.push(mark(browser, "agora:complete:apps").await?);
    }
    let apps_longest_task_ms = longest_task(browser, args.watch).await?;
    // The list really shows every app.
    let shown = browser
        .client()
        .find_all(Locator::Css("main tr[data-app]"))
        .await?
        .len();
    anyhow::ensure!(
        shown == args.apps,
        "the apps list shows {shown} apps, not {}",
        args.apps
    );
    Ok(UiReport {
        args: args.clone(),
        dashboard_ms,
        apps_ms,
        apps_complete_ms,
        dashboard_longest_task_ms,
        apps_longest_task_ms,
    })
}

async fn screenshots(
    browser: &Browser,
    base: &str,
    dir: &std::path::Path,
    data: &SimData,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let c = browser.client();
    let app = data.app_id(3);
    for (name, path, page, height) in [
        ("dashboard", "#/".to_string(), "cluster", 1400),
        ("apps", "#/apps".to_string(), "apps", 900),
        ("app", format!("#/apps{app}"), "app", 1300),
        ("jobs", "#/jobs".to_string(), "jobs", 700),
    ] {
        c.set_window_size(1280, height).await?;
        first_render(browser, &format!("{base}/{path}"), page).await?;
        // The live charts need a few samples.
        if name == "dashboard" {
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        let png = c.screenshot().await?;
        let file = dir.join(format!("{name}.png"));
        std::fs::write(&file, png)?;
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}

/// The simulated services and batch APIs.
struct SimData {
    apps: usize,
    instances: usize,
    /// Requests so far: the counts move with it.
    requests: AtomicU64,
}

impl SimData {
    fn new(apps: usize, instances: usize) -> SimData {
        SimData {
            apps,
            instances,
            requests: AtomicU64::new(0),
        }
    }

    fn app_id(&self, i: usize) -> String {
        format!("/team-{}/app-{i:04}", i % 10)
    }

    fn version(i: usize) -> String {
        format!("2026-12-0{}T{:02}:{:02}:00.000Z", 1 + i % 3, i % 24, i % 60)
    }

    /// App `i` as `GET /v2/apps` shows it; `tick` moves its counts.
    fn app(&self, i: usize, tick: u64) -> Value {
        let n = self.instances;
        // A few apps deploy or lack instances at any time.
        let deploying = (i as u64 + tick / 5).is_multiple_of(97);
        let running = if deploying { n.saturating_sub(1) } else { n };
        let unhealthy = usize::from(i.is_multiple_of(53));
        let suspended = i.is_multiple_of(89);
        json!({
            "id": self.app_id(i),
            "cmd": format!("./serve --port $PORT0 --shard {i}"),
            "cpus": 0.1, "mem": 32.0, "disk": 0.0,
            "instances": if suspended { 0 } else { n },
            "env": {}, "labels": {"team": format!("team-{}", i % 10)},
            "portDefinitions": [{"port": 10000 + i, "protocol": "tcp", "name": "http"}],
            "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0}],
            "version": Self::version(i),
            "versionInfo": {"lastScalingAt": Self::version(i), "lastConfigChangeAt": Self::version(i)},
            "tasksStaged": n - running,
            "tasksRunning": if suspended { 0 } else { running },
            "tasksHealthy": if suspended { 0 } else { running - unhealthy },
            "tasksUnhealthy": if suspended { 0 } else { unhealthy },
            "deployments": if deploying { json!([{"id": format!("deploy-{i}")}]) } else { json!([]) },
        })
    }

    fn apps_json(&self) -> Value {
        let tick = self.requests.fetch_add(1, Ordering::Relaxed);
        json!({ "apps": (0..self.apps).map(|i| self.app(i, tick)).collect::<Vec<_>>() })
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        let i: usize = id.rsplit_once("app-")?.1.parse().ok()?;
        (i < self.apps && self.app_id(i) == id).then_some(i)
    }

    fn app_detail(&self, i: usize) -> Value {
        let mut app = self.app(i, 0);
        let id = self.app_id(i);
        app["tasks"] = (0..self.instances)
            .map(|k| {
                json!({
                    "id": format!("{}.instance-{k:02}", id.trim_start_matches('/').replace('/', "_")),
                    "appId": id, "host": format!("sim-{:06}", (i * 7 + k) % 100),
                    "ports": [31000 + k], "servicePorts": [10000 + i],
                    "slaveId": "sim", "state": "TASK_RUNNING",
                    "stagedAt": Self::version(i), "startedAt": Self::version(i),
                    "version": Self::version(i), "ipAddresses": [],
                    "healthCheckResults": [{"alive": true}],
                })
            })
            .collect();
        app["lastTaskFailure"] = json!({
            "appId": id, "host": "sim-000042", "message": "Command exited with exit code 137",
            "state": "TASK_FAILED", "taskId": format!("{}.instance-old", id.trim_start_matches('/').replace('/', "_")),
            "timestamp": Self::version(i), "version": Self::version(i),
        });
        app["deployments"] = json!([{"id": "deploy-sim"}]);
        app
    }

    fn deployments(&self) -> Value {
        let app = self.app_id(3);
        json!([{
            "id": "deploy-sim", "version": Self::version(3), "affectedApps": [app], "affectedPods": [],
            "steps": [
                {"actions": [{"action": "RestartApplication", "app": app}]},
                {"actions": [{"action": "ScaleApplication", "app": app}]},
            ],
            "currentActions": [{"action": "RestartApplication", "app": app, "readinessCheckResults": []}],
            "currentStep": 1, "totalSteps": 2,
        }])
    }

    fn jobs(&self) -> Value {
        let job = |id: &str, cron: Option<&str>, ok: bool| {
            json!({
                "id": id, "description": format!("{id} (simulated)"),
                "run": {"cmd": format!("./{id}.sh"), "cpus": 0.5, "mem": 256.0, "disk": 0.0},
                "schedules": cron.map(|c| json!([{"id": "s", "cron": c, "timezone": "UTC", "enabled": true,
                    "concurrencyPolicy": "FORBID", "startingDeadlineSeconds": 60,
                    "nextRunAt": "2026-12-04T02:00:00Z"}])).unwrap_or(json!([])),
                "activeRuns": [],
                "historySummary": {"successCount": 41, "failureCount": if ok { 0 } else { 2 },
                    "lastSuccessAt": "2026-12-03T02:00:04Z",
                    "lastFailureAt": if ok { Value::Null } else { json!("2026-12-03T03:00:09Z") }},
            })
        };
        json!([
            job("nightly-report", Some("0 2 * * *"), true),
            job("hourly-compaction", Some("0 * * * *"), false),
            job("reindex", None, true),
        ])
    }
}

fn sim_routes(
    data: Arc<SimData>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    use warp::Reply;
    let d = warp::any().map(move || data.clone());
    let reply = |v: Value| warp::reply::json(&v).into_response();
    let apps = warp::path!("v2" / "apps")
        .and(d.clone())
        .map(move |d: Arc<SimData>| reply(d.apps_json()));
    let queue = warp::path!("v2" / "queue").map(move || reply(json!({"queue": []})));
    let deployments = warp::path!("v2" / "deployments")
        .and(d.clone())
        .map(move |d: Arc<SimData>| reply(d.deployments()));
    let app = warp::path("v2")
        .and(warp::path("apps"))
        .and(warp::path::tail())
        .and(d.clone())
        .map(move |tail: warp::path::Tail, d: Arc<SimData>| {
            let path = format!("/{}", tail.as_str());
            if let Some(id) = path.strip_suffix("/versions") {
                return match d.index_of(id) {
                    Some(i) => reply(json!({"versions": [SimData::version(i), "2026-11-20T10:00:00.000Z", "2026-11-02T09:30:00.000Z"]})),
                    None => not_found(id),
                };
            }
            match d.index_of(&path) {
                Some(i) => reply(json!({"app": d.app_detail(i)})),
                None => not_found(&path),
            }
        });
    let jobs = warp::path!("batch-sim" / "v1" / "jobs")
        .and(d)
        .map(move |d: Arc<SimData>| reply(d.jobs()));
    apps.or(queue)
        .unify()
        .or(deployments)
        .unify()
        .or(app)
        .unify()
        .or(jobs)
        .unify()
        .recover(|_| async { Ok::<_, std::convert::Infallible>(not_found("that path")) })
        .unify()
}

fn not_found(what: &str) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(
        warp::reply::json(&json!({"message": format!("App '{what}' does not exist")})),
        warp::http::StatusCode::NOT_FOUND,
    )
    .into_response()
}
