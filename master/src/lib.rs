//! `agora-master`: the master. It pools the resources of agents and offers
//! them to frameworks.
//!
//! * [`core`]: all master state and decisions, without I/O (sans-IO).
//! * `actor`: owns the core; feeds it inputs and the time; sends its output.
//! * `grpc`, `http`, `server`: the agent and scheduler streams and the HTTP
//!   endpoints, on one address.
//! * `registrar`: remembers frameworks and agents in a `coord::Store`.
//! * `leadership`: contends for leadership (ZooKeeper, or alone), runs a term
//!   of the above while leading, and stands by otherwise.

// The HTTP routes are one warp filter chain; its type is deeper than the
// default limit lets an optimised build evaluate (E0275 in release only).
#![recursion_limit = "256"]

mod actor;
pub mod core;
mod error;
mod grpc;
mod http;
mod leadership;
mod mesos;
mod metrics;
mod outbound;
mod proxy;
pub mod registrar;
mod server;
mod ui;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agora_coord::{
    Contender, Detector, FileStore, MemoryStore, StandaloneContender, Store, ZkContender,
    ZkDetector, ZkStore, ZkUrl,
};
use agora_proto::v1::MasterInfo;
use agora_proto::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::leadership::{RegistryStore, Role, Seed};

pub use crate::core::{CoreConfig, MasterCore, Now};
pub use error::MasterError;
pub use metrics::Metrics;
pub use outbound::QueueLimits;

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryBackend {
    /// In memory: a restarted master forgets frameworks and agents (they
    /// reregister, and their tasks are learned back from the agents).
    Memory,
    /// A local file: a restarted master remembers them.
    File(PathBuf),
}

/// Everything `agora master` is configured with.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Address for gRPC and HTTP.
    pub listen: SocketAddr,
    /// The hostname the master advertises (default: the listen IP).
    pub hostname: Option<String>,
    pub core: CoreConfig,
    /// Role weights for DRF.
    pub weights: HashMap<String, f64>,
    pub registry: RegistryBackend,
    /// Several masters, one leading, elected through ZooKeeper (`--zk`);
    /// the registry then lives in ZooKeeper too. `None`: this master alone
    /// leads.
    pub zk: Option<ZkConfig>,
    /// For tests only: serve `POST /debug/faults/panic-core`, which makes the
    /// core's actor panic (so that tests can check the master's
    /// supervision). `agora master` turns it on when the environment has
    /// `AGORA_TEST_FAULT_HOOKS=1`.
    pub fault_hooks: bool,
    /// The bounds of each agent's and framework's outbound queue: a peer
    /// that lets more wait (it does not read its stream) is disconnected.
    pub stream_queue: QueueLimits,
}

/// `--zk` and `--zk-session-timeout`.
#[derive(Debug, Clone)]
pub struct ZkConfig {
    /// The ensemble and the path the masters share.
    pub url: ZkUrl,
    /// A leader that loses its session this long stops leading; a dead
    /// leader is replaced after about this long.
    pub session_timeout: Duration,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5050)),
            hostname: None,
            core: CoreConfig::default(),
            weights: HashMap::new(),
            registry: RegistryBackend::Memory,
            zk: None,
            fault_hooks: false,
            stream_queue: QueueLimits::default(),
        }
    }
}

impl MasterConfig {
    /// Checks the settings before anything is bound.
    pub fn validate(&self) -> Result<(), MasterError> {
        let c = &self.core;
        let positive = [
            ("--agent-timeout", c.agent_timeout),
            ("--allocation-interval", c.allocation_interval),
            ("agent heartbeat interval", c.agent_heartbeat_interval),
            (
                "framework heartbeat interval",
                c.framework_heartbeat_interval,
            ),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return Err(MasterError::Config(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        if c.agent_heartbeat_interval >= c.agent_timeout {
            return Err(MasterError::Config(
                "the agent heartbeat interval must be shorter than --agent-timeout".into(),
            ));
        }
        if c.offer_timeout.is_some_and(|d| d.is_zero()) {
            return Err(MasterError::Config(
                "--offer-timeout must be greater than 0 (leave it unset for none)".into(),
            ));
        }
        if let Some(zk) = &self.zk {
            if let RegistryBackend::File(path) = &self.registry {
                return Err(MasterError::Config(format!(
                    "--registry-dir ({}) cannot be used with --zk: the registry then lives in \
                     ZooKeeper, under {}",
                    path.display(),
                    zk.url.registry_path()
                )));
            }
            if zk.session_timeout < Duration::from_millis(100)
                || zk.session_timeout > Duration::from_secs(3600)
            {
                return Err(MasterError::Config(format!(
                    "--zk-session-timeout must be between 100ms and 1h, got {:?}",
                    zk.session_timeout
                )));
            }
        }
        if self.stream_queue.messages == 0 || self.stream_queue.bytes == 0 {
            return Err(MasterError::Config(
                "the stream queue limits must be greater than 0".into(),
            ));
        }
        for (role, w) in &self.weights {
            if !(w.is_finite() && *w > 0.0) {
                return Err(MasterError::Config(format!(
                    "the weight of role {role} must be a number > 0"
                )));
            }
        }
        Ok(())
    }
}

/// A running master.
pub struct RunningMaster {
    addr: SocketAddr,
    info: MasterInfo,
    role: watch::Receiver<Role>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Why the master stopped by itself, if it did (a part of it failed).
    fatal: Arc<OnceLock<String>>,
    /// Follows the leader (with ZooKeeper); kept alive with the master.
    _detector: Option<ZkDetector>,
}

impl RunningMaster {
    /// The address it serves on (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// This master's address and version, with the id of its first term
    /// (each term as leader has its own id: see [`RunningMaster::leader`]).
    pub fn info(&self) -> &MasterInfo {
        &self.info
    }

    /// Whether this master leads now.
    pub fn is_leading(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Leading(_))
    }

    /// The leading master as this master knows it: itself (with the id of
    /// its current term) while it leads.
    pub fn leader(&self) -> Option<MasterInfo> {
        match &*self.role.borrow() {
            Role::Leading(term) => Some(term.info.clone()),
            Role::Standby { leader } => leader.clone(),
            Role::TakingOver => None,
        }
    }

    /// Stops the master (as the shutdown token would) and waits for it.
    /// A failure of the master meanwhile is logged (see [`RunningMaster::wait`]).
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(e) = self.wait().await {
            tracing::error!(error = %e, "the master failed before it was stopped");
        }
    }

    /// Waits until the master stops. An error says why it stopped by itself:
    /// a part of the leading master (its core's actor, its registrar)
    /// panicked or ended, so it resigned leadership and stopped; the process
    /// should exit non-zero.
    pub async fn wait(self) -> Result<(), MasterError> {
        for t in self.tasks {
            let _ = t.await;
        }
        match self.fatal.get() {
            Some(reason) => Err(MasterError::Stopped(reason.clone())),
            None => Ok(()),
        }
    }
}

fn default_hostname(addr: SocketAddr) -> String {
    addr.ip().to_string()
}

/// How many connections may wait to be accepted. Every agent of a cluster
/// reconnects at once after a failover; with tokio's default (1,024) the
/// kernel drops the excess and those agents retry only after its 1 s SYN
/// timeout. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

/// Binds the master's listener with a deep accept queue.
fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted master can bind at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds and starts serving. A standalone master recovers its registry and
/// leads before this returns; with ZooKeeper the master starts as a standby
/// (redirecting to the leader) and leads once elected. Returns once the
/// master accepts connections.
pub async fn start(
    config: MasterConfig,
    shutdown: CancellationToken,
) -> Result<RunningMaster, MasterError> {
    config.validate()?;
    // The master's own token: it stops the master when a part of it fails,
    // without cancelling the caller's.
    let shutdown = shutdown.child_token();
    let fatal = Arc::new(OnceLock::new());
    let listener = bind_listener(config.listen).map_err(|source| MasterError::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| MasterError::Bind {
        addr: config.listen,
        source,
    })?;
    let hostname = config
        .hostname
        .clone()
        .unwrap_or_else(|| default_hostname(addr));
    let info = MasterInfo {
        id: uuid::Uuid::new_v4().to_string(),
        hostname: hostname.clone(),
        ip: addr.ip().to_string(),
        port: addr.port() as u32,
        version: agora_proto::VERSION.to_string(),
    };
    if config.zk.is_some() && addr.ip().is_unspecified() && config.hostname.is_none() {
        tracing::warn!(
            address = %addr,
            "listening on an unspecified address: other hosts cannot reach this master at the \
             address it advertises in ZooKeeper; listen on this host's own address"
        );
    }
    let (contender, store, preloaded, detector): (
        Arc<dyn Contender>,
        RegistryStore,
        Option<registrar::Registry>,
        Option<ZkDetector>,
    ) = match &config.zk {
        None => {
            let store: Arc<dyn Store> = match &config.registry {
                RegistryBackend::Memory => Arc::new(MemoryStore::new()),
                RegistryBackend::File(path) => Arc::new(FileStore::open(path)?),
            };
            let registry = registrar::load(store.as_ref()).await?;
            (
                Arc::new(StandaloneContender::new()),
                RegistryStore::Local(store),
                Some(registry),
                None,
            )
        }
        Some(zk) => (
            Arc::new(ZkContender::new(&zk.url, zk.session_timeout)),
            RegistryStore::ZooKeeper(ZkStore::new(&zk.url, zk.session_timeout)),
            None,
            Some(ZkDetector::start(&zk.url, zk.session_timeout)),
        ),
    };

    let metrics = Metrics::new();
    let address = format!("{hostname}:{}", addr.port());
    let (role_tx, role_rx) = watch::channel(Role::Standby { leader: None });

    // Connection ids: one space for gRPC streams and Mesos API subscriptions.
    let next_conn = Arc::new(AtomicU64::new(1));
    let services = grpc::Services {
        role: role_rx.clone(),
        next_conn: next_conn.clone(),
        shutdown: shutdown.clone(),
    };
    let grpc_routes = tonic::service::Routes::new(
        AgentServiceServer::new(grpc::AgentSvc(services.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
    .add_service(grpc::SchedulerServer {
        services,
        max_message: MAX_MESSAGE,
    })
    .prepare();
    let http_context = http::HttpContext {
        role: role_rx.clone(),
        metrics: metrics.clone(),
        me: info.clone(),
        address: address.clone(),
        proxy: proxy::Proxy::new(shutdown.clone()),
        feed: http::SummaryFeed::new(),
        shutdown: shutdown.clone(),
        fatal: fatal.clone(),
        fault_hooks: config.fault_hooks,
        masters: detector
            .as_ref()
            .map(|d| d.members())
            .unwrap_or_else(|| watch::channel(Vec::new()).1),
        mesos: mesos::MesosApi::new(next_conn),
    };
    let feed = tokio::spawn(http::run_summary_feed(http_context.clone()));
    let http_routes = http::routes(http_context);

    let mut tasks = vec![
        feed,
        tokio::spawn(server::serve(
            listener,
            grpc_routes,
            http_routes,
            shutdown.clone(),
        )),
    ];
    if let Some(d) = &detector {
        tasks.push(tokio::spawn(leadership::follow_leader(
            d.leader(),
            info.clone(),
            role_tx.clone(),
            shutdown.clone(),
        )));
    }
    let seed = Seed {
        config: config.clone(),
        info: info.clone(),
        first_id: info.id.clone(),
        address,
        metrics,
    };
    tasks.push(tokio::spawn(leadership::run(
        seed,
        contender,
        store,
        preloaded,
        role_tx,
        fatal.clone(),
        shutdown.clone(),
    )));
    match &config.zk {
        None => {
            // A standalone master leads at once.
            let mut role = role_rx.clone();
            tokio::select! {
                _ = role.wait_for(|r| matches!(r, Role::Leading(_))) => {}
                _ = shutdown.cancelled() => {}
            }
            tracing::info!(address = %addr, master_id = %info.id, "master listening");
        }
        Some(zk) => tracing::info!(
            address = %addr, master_id = %info.id, zk = %zk.url,
            "master listening; contending for leadership"
        ),
    }
    Ok(RunningMaster {
        addr,
        info,
        role: role_rx,
        shutdown,
        tasks,
        fatal,
        _detector: detector,
    })
}

/// Runs the master until `shutdown`.
pub async fn run(config: MasterConfig, shutdown: CancellationToken) -> Result<(), MasterError> {
    let master = start(config, shutdown).await?;
    master.wait().await
}

/// The largest gRPC message either side may send (a big accept, a
/// reregistration with many tasks).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How long graceful shutdown may take before the process gives up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
