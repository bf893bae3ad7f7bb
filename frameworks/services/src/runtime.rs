//! The services framework's runtime: its HTTP server, leader election, and
//! while it leads, the [`Controller`] that owns every change.
//!
//! A term of leadership: load apps, versions, deployments and instances
//! from the (fenced) store, subscribe with the stored framework id,
//! reconcile every known task, then serve. A failed store write, a stopped
//! driver or the loss of leadership ends the term at once: nothing decided
//! after the last durable write is acted on, and the next term starts from
//! the store again. A standby answers `/ping`, `/v2/leader`, `/v2/info`,
//! `/metrics` and `/openapi.json` itself and forwards everything else to
//! the leader.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_framework_kit::election::{Election, Elector, Role, Term};
use agora_framework_kit::session::{SessionConfig, start_session};
use agora_framework_kit::store::{FrameworkStore, StoreBackend};
use agora_scheduler::SchedulerConfig;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ServicesError;
use crate::api::{self, Handle, Info};
use crate::command::Command;
use crate::controller::{Controller, ControllerConfig};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::state::State;
use crate::store::Records;
use crate::validation::Context;

/// The framework's name at the master.
pub const FRAMEWORK_NAME: &str = "agora-services";

/// How the services framework runs.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// The master: `host:port`, or `zk://...` to follow the leading master.
    pub master: String,
    /// The REST API's address (port 0: any free port).
    pub listen: SocketAddr,
    /// Where apps, versions, deployments and instances are kept.
    pub store: StoreBackend,
    /// Standalone (always leads) or ZooKeeper leader election.
    pub election: Election,
    /// How long the master keeps the framework's tasks while no instance is
    /// connected: a failover within it relaunches nothing.
    pub failover_timeout: Duration,
    /// The role whose resources the apps use (and `*`).
    pub role: String,
    pub controller: ControllerConfig,
}

impl ServicesConfig {
    /// Standalone, in memory, on `listen`.
    pub fn new(master: impl Into<String>, listen: SocketAddr) -> ServicesConfig {
        ServicesConfig {
            master: master.into(),
            listen,
            store: StoreBackend::Memory,
            election: Election::Standalone,
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            role: "*".into(),
            controller: ControllerConfig::default(),
        }
    }

    /// Checks the settings before anything binds.
    pub fn validate(&self) -> Result<(), String> {
        if self.role.trim().is_empty() {
            return Err("--role must not be empty".into());
        }
        if self.failover_timeout.is_zero() {
            return Err(
                "--failover-timeout must be above 0 (the master would drop the tasks at once)"
                    .into(),
            );
        }
        // Port 0 (any free port) is known once bound; check with a stand-in.
        let stand_in = SocketAddr::new(self.listen.ip(), self.listen.port().max(1));
        self.scheduler_config(stand_in)
            .validate()
            .map_err(|e| e.to_string())
    }

    fn roles(&self) -> Vec<String> {
        vec![self.role.clone()]
    }

    fn scheduler_config(&self, http: SocketAddr) -> SchedulerConfig {
        let mut c = SchedulerConfig::new(self.master.clone(), FRAMEWORK_NAME);
        c.framework.roles = self.roles();
        c.framework.failover_timeout = self.failover_timeout.as_secs_f64();
        c.framework.webui_url = format!("http://{http}");
        c
    }

    fn info(&self, http: SocketAddr) -> Info {
        let (zk, zk_session_timeout_ms) = match &self.election {
            Election::Zk {
                url,
                session_timeout,
            } => (Some(url.to_string()), session_timeout.as_millis() as u64),
            Election::Standalone => (None, 0),
        };
        Info {
            advertise: http.to_string(),
            master: self.master.clone(),
            zk,
            zk_session_timeout_ms,
            roles: self.roles(),
            failover_timeout_s: self.failover_timeout.as_secs_f64(),
            http_port: http.port(),
        }
    }
}

/// A running services framework.
pub struct RunningServices {
    addr: SocketAddr,
    role: watch::Receiver<Role>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningServices {
    /// The REST API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// This instance's role.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Waits until it has stopped (after the shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: ServicesConfig, shutdown: CancellationToken) -> Result<(), ServicesError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// What every term shares.
struct Ctx {
    config: ServicesConfig,
    base: FrameworkStore,
    http_addr: SocketAddr,
    state: Arc<RwLock<State>>,
    events: EventBus,
    metrics: Arc<Metrics>,
    serving: watch::Sender<bool>,
    ctx: Context,
}

/// Binds the API, starts the election, and returns once it listens.
pub async fn start(
    config: ServicesConfig,
    shutdown: CancellationToken,
) -> Result<RunningServices, ServicesError> {
    config.validate().map_err(ServicesError::Config)?;
    let base = FrameworkStore::open(&config.store)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServicesError::Bind {
            addr: config.listen,
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| ServicesError::Bind {
        addr: config.listen,
        source: e,
    })?;
    let mut elector = Elector::start(config.election.clone(), addr, shutdown.clone());
    let role = elector.role();
    let (commands_tx, mut commands) = mpsc::unbounded_channel::<Command>();
    let (serving_tx, serving) = watch::channel(false);
    let ctx = Ctx {
        http_addr: addr,
        base: base.clone(),
        state: Arc::new(RwLock::new(State::default())),
        events: EventBus::new(),
        metrics: Arc::new(Metrics::default()),
        serving: serving_tx,
        ctx: Context {
            roles: {
                let mut r = config.roles();
                if !r.iter().any(|r| r == "*") {
                    r.push("*".into());
                }
                r
            },
        },
        config,
    };
    let handle = Handle {
        state: ctx.state.clone(),
        commands: commands_tx,
        records: Records::new(base),
        events: ctx.events.clone(),
        info: Arc::new(ctx.config.info(addr)),
        ctx: ctx.ctx.clone(),
        metrics: ctx.metrics.clone(),
        role: role.clone(),
        serving,
        proxy: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ServicesError::Config(format!("cannot build the HTTP client: {e}")))?,
        render: Arc::default(),
    };
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(
        warp::serve(api::routes(handle))
            .incoming(listener)
            .graceful(async move { server_shutdown.cancelled().await })
            .run(),
    );
    tracing::info!(%addr, "services framework API listening");

    let done = tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    term = elector.next_term() => {
                        let Some(term) = term else { break };
                        ctx.metrics.elected.set(1);
                        loop {
                            let result = run_term(&ctx, &term, &mut commands)
                                .instrument(tracing::info_span!("term", term = term.number()))
                                .await;
                            ctx.serving.send_replace(false);
                            match result {
                                Ok(()) => tracing::info!("leadership ended"),
                                Err(e) => tracing::error!("the term ended: {e}; loading again from the store"),
                            }
                            if shutdown.is_cancelled() || term.is_lost() {
                                break;
                            }
                            // Still leading: a failed write (or a stopped
                            // driver) ended the term; start again from the
                            // store after a moment.
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                                _ = term.lost() => break,
                                _ = shutdown.cancelled() => break,
                            }
                        }
                        ctx.metrics.elected.set(0);
                    }
                    Some(cmd) = commands.recv() => refuse(cmd, "this instance is not serving yet (it is starting or standing by); retry shortly"),
                }
            }
            elector.shutdown();
            let _ = server.await;
        }
        .instrument(tracing::info_span!("services")),
    );
    Ok(RunningServices { addr, role, done })
}

/// Answers a command that no term can carry out.
fn refuse(cmd: Command, why: &str) {
    let r = || Refusal::unavailable(why);
    match cmd {
        Command::Deploy { reply, .. } => {
            let _ = reply.send(Err(r()));
        }
        Command::KillTasks { reply, .. } => {
            let _ = reply.send(Err(r()));
        }
        Command::CancelDeployment { reply, .. } => {
            let _ = reply.send(Err(r()));
        }
        Command::ResetDelay { reply, .. } => {
            let _ = reply.send(Err(r()));
        }
    }
}

/// One term of leadership (see the module docs).
async fn run_term(
    ctx: &Ctx,
    term: &Term,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Result<(), ServicesError> {
    let store = term.store(&ctx.base);
    let records = Records::new(store.clone());
    let started = Instant::now();
    let loaded = tokio::select! {
        l = records.load() => l?,
        _ = term.lost() => return Ok(()),
    };
    let (state, orphans) = State::from_loaded(loaded);
    tracing::info!(
        apps = state.apps.len(),
        instances = state
            .apps
            .values()
            .map(|a| a.instances.len())
            .sum::<usize>(),
        deployments = state.deployments.len(),
        ms = started.elapsed().as_millis() as u64,
        "loaded from the store"
    );
    *ctx.state.write() = state;
    let session = SessionConfig::new(ctx.config.scheduler_config(ctx.http_addr));
    let (scheduler, events) = tokio::select! {
        s = start_session(session, &store) => s?,
        _ = term.lost() => return Ok(()),
    };
    let controller = Controller::new(
        ctx.state.clone(),
        records,
        ctx.events.clone(),
        ctx.ctx.clone(),
        ctx.metrics.clone(),
        ctx.config.controller.clone(),
        orphans,
    );
    ctx.serving.send_replace(true);
    // The term's token is cancelled when leadership ends and at shutdown.
    let result = controller
        .run(scheduler.clone(), events, commands, term.cancel_token())
        .await;
    ctx.serving.send_replace(false);
    scheduler.stop().await;
    result
}
