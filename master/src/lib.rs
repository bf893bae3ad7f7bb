//! `agora-master`: the master. It pools the resources of agents and offers
//! them to frameworks.
//!
//! * [`core`]: all master state and decisions, without I/O (sans-IO).
//! * `actor`: owns the core; feeds it inputs and the time; sends its output.
//! * `grpc`, `http`, `server`: the agent and scheduler streams and the HTTP
//!   endpoints, on one address.
//! * `registrar`: remembers frameworks and agents in a `coord::Store`.

mod actor;
pub mod core;
mod error;
mod grpc;
mod http;
mod metrics;
pub mod registrar;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use agora_allocator::AllocatorConfig;
use agora_coord::{FileStore, MemoryStore, Store};
use agora_proto::v1::MasterInfo;
use agora_proto::v1::agent_service_server::AgentServiceServer;
use agora_proto::v1::scheduler_service_server::SchedulerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::core::{CoreConfig, MasterCore, Now};
pub use error::MasterError;
pub use metrics::Metrics;

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
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5050)),
            hostname: None,
            core: CoreConfig::default(),
            weights: HashMap::new(),
            registry: RegistryBackend::Memory,
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
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningMaster {
    /// The address it serves on (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn info(&self) -> &MasterInfo {
        &self.info
    }

    /// Stops the master (as the shutdown token would) and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the master stops.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn default_hostname(addr: SocketAddr) -> String {
    addr.ip().to_string()
}

/// Binds, recovers the registry and starts serving. Returns once the
/// master accepts connections.
pub async fn start(
    config: MasterConfig,
    shutdown: CancellationToken,
) -> Result<RunningMaster, MasterError> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| MasterError::Bind {
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
    let store: Arc<dyn Store> = match &config.registry {
        RegistryBackend::Memory => Arc::new(MemoryStore::new()),
        RegistryBackend::File(path) => Arc::new(FileStore::open(path)?),
    };
    let registry = registrar::load(store.as_ref()).await?;

    let now = actor::now();
    let allocator = AllocatorConfig {
        weights: config.weights.clone(),
        ..Default::default()
    };
    let mut core = MasterCore::new(info.clone(), config.core.clone(), allocator, now);
    if !registry.frameworks.is_empty() || !registry.agents.is_empty() {
        tracing::info!(
            frameworks = registry.frameworks.len(),
            agents = registry.agents.len(),
            "recovered the registry; waiting for agents and frameworks to come back"
        );
    }
    core.recover(registry.frameworks, registry.agents, now);

    let (input_tx, input_rx) = mpsc::channel(65_536);
    let (registry_tx, registry_rx) = mpsc::unbounded_channel();
    let metrics = Metrics::new();
    let address = format!("{hostname}:{}", addr.port());

    let services = grpc::Services {
        actor: input_tx.clone(),
        next_conn: Arc::new(AtomicU64::new(1)),
        shutdown: shutdown.clone(),
    };
    let grpc_routes = tonic::service::Routes::new(
        AgentServiceServer::new(grpc::AgentSvc(services.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
    .add_service(
        SchedulerServiceServer::new(grpc::SchedulerSvc(services))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
    .prepare();
    let http_routes = http::routes(http::HttpContext {
        actor: input_tx,
        metrics: metrics.clone(),
    });

    let tasks = vec![
        tokio::spawn(registrar::run(store, registry_rx)),
        tokio::spawn(actor::run(
            core,
            input_rx,
            registry_tx,
            metrics,
            address,
            shutdown.clone(),
        )),
        tokio::spawn(server::serve(
            listener,
            grpc_routes,
            http_routes,
            shutdown.clone(),
        )),
    ];
    tracing::info!(address = %addr, master_id = %info.id, "master listening");
    Ok(RunningMaster {
        addr,
        info,
        shutdown,
        tasks,
    })
}

/// Runs the master until `shutdown`.
pub async fn run(config: MasterConfig, shutdown: CancellationToken) -> Result<(), MasterError> {
    let master = start(config, shutdown).await?;
    master.wait().await;
    Ok(())
}

/// The largest gRPC message either side may send (a big accept, a
/// reregistration with many tasks).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How long graceful shutdown may take before the process gives up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
