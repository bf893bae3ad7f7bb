//! `agora-agent`: the agent. It registers with the master, runs the tasks the
//! master sends it, reports their states reliably, and keeps them running
//! across its own restarts (even after SIGKILL).
//!
//! Parts, each in its own module:
//!
//! * [`config`]: [`AgentConfig`], validated before anything is bound;
//!   [`detect_resources`].
//! * `core`: the actor that owns the agent's state (task table, update
//!   streams) and checkpoints every change; recovery after a restart.
//! * `session`: the gRPC session with the master (register, heartbeats,
//!   reconnect with backoff).
//! * [`containerizer`]: the [`Containerizer`] trait; the process backend,
//!   whose tasks run under a detached [`supervisor`]; the Docker backend
//!   (bollard); the composing one that picks per task.
//! * `status_update`: one task's ordered, acknowledged update stream.
//! * [`health`]: the tasks' health and readiness checks (HTTP, HTTPS and
//!   TCP from the agent's runtime, COMMAND through the containerizer).
//! * `checkpoint`, `paths`: the work directory (see `docs/agent.md`).
//! * `http`: `/health`, `/state`, `/metrics`, `/tasks/{id}/logs`.
//! * `metrics`: [`AgentMetrics`], and whether checkpoint writes fail.
//!
//! ```no_run
//! # async fn example() -> Result<(), agora_agent::AgentError> {
//! let config = agora_agent::AgentConfig::new("127.0.0.1:5050", "/var/lib/agora/agent");
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! agora_agent::run(config, shutdown).await
//! # }
//! ```

mod backoff;
mod checkpoint;
pub mod config;
pub mod containerizer;
mod core;
mod error;
pub mod health;
mod http;
mod limits;
mod metrics;
mod paths;
mod procfs;
mod session;
mod status_update;
pub mod supervisor;
mod task;

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info};

pub use crate::config::{
    AgentConfig, ContainerizerKind, DEFAULT_LISTEN, detect_resources, parse_containerizers,
};
pub use crate::containerizer::{
    ComposingContainerizer, Containerizer, DockerContainerizer, ProcessContainerizer,
};
pub use crate::error::AgentError;
pub use crate::metrics::AgentMetrics;
pub use crate::paths::validate_id;

use crate::backoff::Backoff;
use crate::checkpoint::Checkpoint;
use crate::core::{Core, Settings};
use crate::paths::Layout;
use crate::status_update::RetryPolicy;

/// How long shutdown waits for open HTTP requests.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// A started agent.
pub struct RunningAgent {
    http_addr: SocketAddr,
    agent_id: watch::Receiver<Option<String>>,
    parts: Vec<(&'static str, JoinHandle<()>)>,
    /// Held until the agent has stopped, so that no second agent uses the
    /// same work directory meanwhile.
    lock: Flock<File>,
    /// The containerizers in use, in order (`docker,process`), and where
    /// the Docker daemon is when Docker is one of them.
    containerizers: Vec<&'static str>,
    docker_host: Option<String>,
    health_stats: Arc<health::stats::HealthStats>,
    metrics: AgentMetrics,
}

impl RunningAgent {
    /// Where the HTTP server listens (with the port picked when the config
    /// said 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The id the master gave this agent, once it has one.
    pub fn agent_id(&self) -> Option<String> {
        self.agent_id.borrow().clone()
    }

    /// Follows the agent id as it changes.
    pub fn agent_id_watch(&self) -> watch::Receiver<Option<String>> {
        self.agent_id.clone()
    }

    /// The containerizers tasks run with, in the order they are asked
    /// (`["docker", "process"]`).
    pub fn containerizers(&self) -> &[&'static str] {
        &self.containerizers
    }

    /// The Docker daemon's address, when Docker runs tasks here.
    pub fn docker_host(&self) -> Option<&str> {
        self.docker_host.as_deref()
    }

    /// What the tasks' health and readiness checks have done so far.
    pub fn health_stats(&self) -> health::HealthStatsSnapshot {
        self.health_stats.snapshot()
    }

    /// The agent's metrics (what `/metrics` shows) and checkpoint health.
    pub fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    /// Waits until the agent has stopped (after its shutdown token was
    /// cancelled). Running tasks are left running.
    pub async fn wait(self) -> Result<(), AgentError> {
        let mut first_error = None;
        for (name, handle) in self.parts {
            if let Err(e) = handle.await
                && first_error.is_none()
            {
                first_error = Some(AgentError::Internal(format!(
                    "the agent's {name} failed: {e}"
                )));
            }
        }
        drop(self.lock);
        info!("the agent stopped; its tasks keep running");
        first_error.map_or(Ok(()), Err)
    }
}

/// Starts an agent: validates the configuration, takes the work directory,
/// binds the HTTP address, recovers checkpointed tasks, then runs until
/// `shutdown` is cancelled. Errors here happen before anything runs.
pub async fn start(
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    start_agent(config, None, shutdown).await
}

/// Starts an agent that runs its tasks with `containerizer` rather than the
/// containerizers its configuration names (`agora bench health` simulates
/// tasks with one).
pub async fn start_with_containerizer(
    config: AgentConfig,
    containerizer: Arc<dyn Containerizer>,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    start_agent(config, Some(containerizer), shutdown).await
}

async fn start_agent(
    config: AgentConfig,
    containerizer: Option<Arc<dyn Containerizer>>,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    config.validate()?;
    let master_url = config::master_url(&config.master)?;
    let layout = Layout::new(&config.work_dir);
    std::fs::create_dir_all(layout.root()).map_err(|source| AgentError::WorkDir {
        path: config.work_dir.clone(),
        source,
    })?;
    let lock = lock_work_dir(&layout)?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: config.listen,
        source,
    })?;
    let http_address = if http_addr.ip().is_unspecified() {
        format!("{}:{}", config.hostname, http_addr.port())
    } else {
        http_addr.to_string()
    };

    let settings = Settings {
        hostname: config.hostname.clone(),
        http_address: http_address.clone(),
        master: config.master.clone(),
        resources: config::effective_resources(config.resources.as_ref(), &config.work_dir),
        attributes: config.attributes.clone(),
        default_kill_grace: config.default_kill_grace,
        retry: RetryPolicy {
            min: config.status_retry_min,
            max: config.status_retry_max,
        },
        sandbox_gc_delay: config.sandbox_gc_delay,
        health_check_concurrency: config.health_check_concurrency,
    };
    info!(
        master = %config.master,
        http = %http_address,
        work_dir = %config.work_dir.display(),
        resources = %settings.resources,
        "starting the agent"
    );
    info!("limits: {}", limits::describe());
    let (containerizer, containerizers, docker_host) = match containerizer {
        Some(c) => {
            let name = c.name();
            (c, vec![name], None)
        }
        None => containerizers(&config, &layout, shutdown.clone()).await?,
    };
    let span = tracing::info_span!(
        "agent",
        agent_id = tracing::field::Empty,
        hostname = %config.hostname,
        http = %http_address
    );
    let metrics = AgentMetrics::new();
    let (core, handle, agent_id) = Core::recover(
        settings,
        Checkpoint::new(layout),
        containerizer,
        metrics.clone(),
        shutdown.clone(),
    )
    .instrument(span.clone())
    .await?;

    let health_stats = core.health_stats();
    let core_task = tokio::spawn(core.run().instrument(span.clone()));
    let session_task = tokio::spawn(
        session::run(
            master_url,
            handle.clone(),
            Backoff::new(config.reconnect_min, config.reconnect_max, true),
            shutdown.clone(),
        )
        .instrument(span.clone()),
    );
    let routes = http::routes(handle, metrics.clone());
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(
        async move {
            let server = warp::serve(routes)
                .incoming(listener)
                .graceful(http_shutdown.clone().cancelled_owned())
                .run();
            tokio::pin!(server);
            tokio::select! {
                _ = &mut server => {}
                _ = async {
                    http_shutdown.cancelled().await;
                    tokio::time::sleep(HTTP_DRAIN).await;
                } => {}
            }
        }
        .instrument(span),
    );
    Ok(RunningAgent {
        http_addr,
        agent_id,
        parts: vec![
            ("core", core_task),
            ("master session", session_task),
            ("HTTP server", http_task),
        ],
        lock,
        containerizers,
        docker_host,
        health_stats,
        metrics,
    })
}

/// The containerizers the configuration asks for; without a choice,
/// `docker,process` when a Docker daemon answers, else `process`.
async fn containerizers(
    config: &AgentConfig,
    layout: &Layout,
    shutdown: CancellationToken,
) -> Result<(Arc<dyn Containerizer>, Vec<&'static str>, Option<String>), AgentError> {
    let host = config
        .docker_host
        .clone()
        .unwrap_or_else(containerizer::default_docker_host);
    let (kinds, docker) = match &config.containerizers {
        Some(kinds) => {
            let docker = if kinds.contains(&ContainerizerKind::Docker) {
                Some(connect_docker_waiting(&host, config.docker_wait, &shutdown).await?)
            } else {
                None
            };
            (kinds.clone(), docker)
        }
        None => match containerizer::connect_docker(&host).await {
            Ok(docker) => (
                vec![ContainerizerKind::Docker, ContainerizerKind::Process],
                Some(docker),
            ),
            Err(e) => {
                info!("Docker tasks are off: {e}");
                (vec![ContainerizerKind::Process], None)
            }
        },
    };
    let mut members: Vec<Arc<dyn Containerizer>> = Vec::new();
    for kind in &kinds {
        match kind {
            ContainerizerKind::Process => members.push(Arc::new(ProcessContainerizer::new(
                layout.containers_dir(),
                config.supervisor_command.clone(),
            ))),
            ContainerizerKind::Docker => {
                let Some(docker) = docker.clone() else {
                    continue;
                };
                members.push(Arc::new(DockerContainerizer::new(
                    docker,
                    containerizer::DockerSettings {
                        volume_roots: config.docker_volume_roots.clone(),
                        allow_privileged: config.docker_allow_privileged,
                        remove_delay: config.docker_remove_delay,
                        launch_timeout: config.docker_launch_timeout,
                        work_dir: layout.root().to_path_buf(),
                    },
                    shutdown.clone(),
                )));
            }
        }
    }
    let names: Vec<&'static str> = kinds.iter().map(|k| k.name()).collect();
    let docker_host = docker.is_some().then_some(host);
    info!(
        containerizers = %names.join(","),
        docker = docker_host.as_deref().unwrap_or("off"),
        "containerizers"
    );
    let containerizer: Arc<dyn Containerizer> = if members.len() == 1 {
        members.remove(0)
    } else {
        Arc::new(ComposingContainerizer::new(members))
    };
    Ok((containerizer, names, docker_host))
}

/// Connects to the Docker daemon, trying again (every second at most) for
/// up to `wait` while it does not answer.
async fn connect_docker_waiting(
    host: &str,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<bollard::Docker, AgentError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(100);
    loop {
        match containerizer::connect_docker(host).await {
            Ok(d) => return Ok(d),
            Err(AgentError::DockerUnavailable { host, reason })
                if tokio::time::Instant::now() + delay > deadline =>
            {
                return Err(AgentError::DockerUnavailable {
                    host,
                    reason: format!("{reason} (waited {wait:?})"),
                });
            }
            Err(AgentError::DockerUnavailable { reason, .. }) => {
                tracing::warn!(retry_in = ?delay, "the Docker daemon does not answer: {reason}");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(AgentError::Stopped),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Starts an agent and runs it until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    start(config, shutdown).await?.wait().await
}

fn lock_work_dir(layout: &Layout) -> Result<Flock<File>, AgentError> {
    let path = layout.lock_file();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| AgentError::WorkDir {
            path: layout.root().to_path_buf(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            AgentError::WorkDirLocked {
                path: layout.root().to_path_buf(),
            }
        } else {
            AgentError::WorkDir {
                path: layout.root().to_path_buf(),
                source: std::io::Error::from(errno),
            }
        }
    })
}
