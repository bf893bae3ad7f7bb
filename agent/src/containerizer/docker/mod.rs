//! Docker tasks, through the Docker Engine API (bollard).
//!
//! A task whose `container` is DOCKER runs as the container
//! `agora-<container id>`, labelled with its task, framework and agent ids,
//! its container id and the agent's work directory (see [`spec`] for what
//! the container gets). The daemon keeps the containers, so this
//! containerizer needs little state of its own: after an agent restart it
//! finds its containers again by label.
//!
//! * launch: the image is used when present, pulled otherwise (or always,
//!   with `force_pull_image`); a pull that fails fails the launch with the
//!   daemon's reason. Then create, start, and a watcher per container that
//!   waits for it to stop and copies its logs into the sandbox
//!   ([`logs`]).
//! * kill: SIGTERM, SIGKILL after the grace period.
//! * an ended container stays (so `docker logs` and `docker inspect` work)
//!   until `remove_delay` after its final status was acknowledged.
//! * recover: running containers are watched again, ended ones reported with
//!   their exit status, and containers of this agent that no task owns
//!   (orphans) are killed and removed.
//!
//! `<work_dir>/docker/<container id>/logs.json` remembers how far each
//! container's logs were copied.

mod logs;
mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use agora_proto::v1::{CommandInfo, TaskInfo};
use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerState, ContainerStateStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, RemoveContainerOptions, StatsOptions, WaitContainerOptions,
};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::{
    CheckExit, ContainerId, Containerizer, KnownContainer, LaunchRequest, Launched, Recovered,
    Termination, Usage, output_tail,
};
use crate::checkpoint::remove_dir_all_if_exists;
use crate::error::AgentError;

pub use spec::{
    LABEL_AGENT_ID, LABEL_CONTAINER_ID, LABEL_FRAMEWORK_ID, LABEL_TASK_ID, LABEL_WORK_DIR,
    SANDBOX_IN_CONTAINER, container_name, pull_reference,
};

use logs::{LogCopy, is_not_found};
use spec::{SpecRules, container_spec, is_docker_task};

/// How long the daemon may take to answer the first call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a watcher waits for the last of a stopped container's logs
/// before it reports the end anyway.
const LOG_DRAIN: Duration = Duration::from_secs(10);

/// The Docker daemon the agent uses when nothing says otherwise:
/// `DOCKER_HOST`, else the local socket.
pub fn default_docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// Connects to the daemon at `host` (`unix:///path`, a socket path,
/// `tcp://host:port` or `http://host:port`) and agrees on the API version
/// with it (the daemon may be older than bollard's default).
pub async fn connect_docker(host: &str) -> Result<Docker, AgentError> {
    let url = if host.starts_with('/') {
        format!("unix://{host}")
    } else {
        host.to_string()
    };
    let unavailable = |reason: String| AgentError::DockerUnavailable {
        host: url.clone(),
        reason,
    };
    let docker = Docker::connect_with_host(&url).map_err(|e| unavailable(e.to_string()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(unavailable(e.to_string())),
        Err(_) => Err(unavailable(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// How often recovery asks Docker about a container before it gives up
/// (about 6 s with the backoff).
const RECOVER_ATTEMPTS: u32 = 6;

/// How the agent runs Docker tasks.
#[derive(Clone, Debug)]
pub struct DockerSettings {
    /// Host directories Docker volumes may come from.
    pub volume_roots: Vec<PathBuf>,
    /// Whether tasks may ask for privileged containers.
    pub allow_privileged: bool,
    /// How long an ended container is kept after its task's final status
    /// was acknowledged.
    pub remove_delay: Duration,
    /// How long a launch (pull included) may take.
    pub launch_timeout: Duration,
    /// The agent's work directory (containers are labelled with it).
    pub work_dir: PathBuf,
}

/// A container this containerizer watches.
#[derive(Clone)]
struct Watched {
    name: String,
    /// Becomes `Some` when the container has ended (and its logs are
    /// copied).
    ended: watch::Receiver<Option<Termination>>,
    /// The last signal the agent sent it (0: none): the daemon reports a
    /// death by signal N as exit code 128 + N, which this tells apart from
    /// a task that exits with that code by itself.
    signalled: Arc<AtomicI32>,
}

struct Inner {
    docker: Docker,
    rules: SpecRules,
    remove_delay: Duration,
    launch_timeout: Duration,
    /// `<work_dir>/docker`.
    state_dir: PathBuf,
    containers: Mutex<HashMap<ContainerId, Watched>>,
    /// The agent's shutdown: watchers and delayed removals stop on it
    /// (containers keep running).
    shutdown: CancellationToken,
}

/// Runs tasks as Docker containers.
#[derive(Clone)]
pub struct DockerContainerizer {
    inner: Arc<Inner>,
}

impl DockerContainerizer {
    /// A containerizer on a connected daemon ([`connect_docker`]).
    pub fn new(
        docker: Docker,
        settings: DockerSettings,
        shutdown: CancellationToken,
    ) -> DockerContainerizer {
        let work_dir = std::fs::canonicalize(&settings.work_dir).unwrap_or(settings.work_dir);
        DockerContainerizer {
            inner: Arc::new(Inner {
                docker,
                rules: SpecRules {
                    // Compared with resolved paths, so resolve the roots too.
                    volume_roots: settings
                        .volume_roots
                        .iter()
                        .map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone()))
                        .collect(),
                    allow_privileged: settings.allow_privileged,
                    work_dir: work_dir.to_string_lossy().into_owned(),
                },
                remove_delay: settings.remove_delay,
                launch_timeout: settings.launch_timeout,
                state_dir: work_dir.join("docker"),
                containers: Mutex::new(HashMap::new()),
                shutdown,
            }),
        }
    }

    fn state_dir(&self, id: &ContainerId) -> PathBuf {
        self.inner.state_dir.join(id.as_str())
    }

    fn lookup(&self, id: &ContainerId) -> Result<Watched, AgentError> {
        self.inner
            .containers
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::UnknownContainer(id.to_string()))
    }

    /// Makes sure the image is here: pulls it when it is missing, or always
    /// when the task asks for it.
    async fn ensure_image(&self, image: &str, force: bool) -> Result<(), AgentError> {
        let docker = &self.inner.docker;
        if !force {
            match docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(AgentError::Launch(format!(
                        "cannot look up the image `{image}`: {}",
                        daemon_message(&e)
                    )));
                }
            }
        }
        let (from_image, tag) = pull_reference(image);
        info!(image, "pulling the image");
        let mut pull = docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(from_image),
                tag,
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(item) = pull.next().await {
            if let Err(e) = item {
                return Err(AgentError::Launch(format!(
                    "cannot pull the image `{image}`: {}",
                    daemon_message(&e)
                )));
            }
        }
        Ok(())
    }

    /// Starts watching a container that runs (or ran): copies its logs and
    /// waits for its end.
    fn watch(&self, id: &ContainerId, name: String, sandbox: PathBuf) {
        let (tx, rx) = watch::channel(None);
        let signalled = Arc::new(AtomicI32::new(0));
        self.inner.containers.lock().insert(
            id.clone(),
            Watched {
                name: name.clone(),
                ended: rx,
                signalled: signalled.clone(),
            },
        );
        let inner = self.inner.clone();
        let span = tracing::info_span!("container", container = %name);
        let copy = LogCopy {
            docker: inner.docker.clone(),
            name: name.clone(),
            sandbox,
            state_dir: self.state_dir(id),
        };
        tokio::spawn(
            async move {
                let cancel = inner.shutdown.clone();
                let logs = tokio::spawn({
                    let cancel = cancel.clone();
                    async move {
                        if let Err(e) = copy.run(true, &cancel).await {
                            warn!("{e}");
                        }
                    }
                    .in_current_span()
                });
                let termination = tokio::select! {
                    _ = cancel.cancelled() => return,
                    t = wait_for_end(&inner.docker, &name, &cancel) => match t {
                        Some(t) => by_signal(t, signalled.load(Ordering::SeqCst)),
                        None => return,
                    },
                };
                // Report the end once the last lines are in the sandbox.
                let _ = tokio::time::timeout(LOG_DRAIN, logs).await;
                let _ = tx.send(Some(termination));
            }
            .instrument(span),
        );
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<(), AgentError> {
        self.inner.containers.lock().remove(id);
        let name = container_name(id.as_str());
        match self
            .inner
            .docker
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => debug!(container = %name, "removed the container"),
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => {
                return Err(AgentError::Docker {
                    action: format!("removing the container {name}"),
                    source: e,
                });
            }
        }
        let dir = self.state_dir(id);
        remove_dir_all_if_exists(&dir).map_err(|e| AgentError::io("cannot remove", dir, e))
    }

    /// What became of one container the agent knew.
    async fn recover_one(&self, k: &KnownContainer) -> Recovered {
        let name = container_name(k.container_id.as_str());
        // Errors other than "no such container" may pass: tried again,
        // with backoff, for a few seconds.
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        let inspected = loop {
            match self
                .inner
                .docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
            {
                Err(e) if !is_not_found(&e) && attempt < RECOVER_ATTEMPTS => {
                    warn!(container = %name, attempt, "cannot inspect the container: {}; trying again", daemon_message(&e));
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let state = match inspected {
            Ok(c) => c.state.unwrap_or_default(),
            Err(e) if is_not_found(&e) => {
                return Recovered::Ended(Termination::Vanished {
                    message: format!(
                        "its Docker container {name} is gone (removed outside the agent, or \
                         the daemon lost it)"
                    ),
                });
            }
            Err(e) => {
                return Recovered::Ended(Termination::Lost {
                    message: format!(
                        "cannot inspect its Docker container {name} ({RECOVER_ATTEMPTS} tries): \
                         {}; it may still run",
                        daemon_message(&e)
                    ),
                });
            }
        };
        match state.status {
            Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::PAUSED)
            | Some(ContainerStateStatusEnum::RESTARTING) => {
                let pid = state
                    .pid
                    .and_then(|p| i32::try_from(p).ok())
                    .filter(|p| *p > 0);
                self.watch(&k.container_id, name.clone(), k.sandbox.clone());
                Recovered::Running(launched(pid, &name))
            }
            Some(ContainerStateStatusEnum::CREATED) => {
                // The agent stopped between creating and starting it.
                let _ = self.remove_container(&k.container_id).await;
                Recovered::Ended(Termination::LaunchFailed {
                    message: "the agent stopped while starting the container".into(),
                })
            }
            _ => {
                // Ended while the agent was away: catch up on its logs, then
                // report its real exit status.
                let copy = LogCopy {
                    docker: self.inner.docker.clone(),
                    name: name.clone(),
                    sandbox: k.sandbox.clone(),
                    state_dir: self.state_dir(&k.container_id),
                };
                match tokio::time::timeout(LOG_DRAIN, copy.run(false, &self.inner.shutdown)).await {
                    Ok(Err(e)) => warn!(container = %name, "{e}"),
                    Err(_) => {
                        warn!(container = %name, "gave up copying the logs of an ended container")
                    }
                    Ok(Ok(())) => {}
                }
                Recovered::Ended(termination(&state))
            }
        }
    }

    /// Kills and removes this agent's containers that no task owns.
    async fn remove_orphans(&self, known: &[KnownContainer]) -> Result<(), AgentError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_WORK_DIR}={}", self.inner.rules.work_dir)],
        )]);
        let list = self
            .inner
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| AgentError::Docker {
                action: "listing the agent's containers".into(),
                source: e,
            })?;
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let Some(cid) = labels
                .get(LABEL_CONTAINER_ID)
                .and_then(|id| ContainerId::parse(id).ok())
            else {
                continue;
            };
            if known.iter().any(|k| k.container_id == cid) {
                continue;
            }
            let running = matches!(
                c.state,
                Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                    | Some(bollard::models::ContainerSummaryStateEnum::PAUSED)
                    | Some(bollard::models::ContainerSummaryStateEnum::RESTARTING)
            );
            if running {
                warn!(container_id = %cid, task_id = labels.get(LABEL_TASK_ID).map(String::as_str).unwrap_or(""),
                    "killing a container no checkpointed task owns");
            } else {
                debug!(container_id = %cid, "removing an ended container no task owns any more");
            }
            if let Err(e) = self.remove_container(&cid).await {
                warn!("{e}");
            }
        }
        Ok(())
    }
}

/// Waits until the container has stopped and says how it ended; `None` at
/// shutdown.
async fn wait_for_end(
    docker: &Docker,
    name: &str,
    cancel: &CancellationToken,
) -> Option<Termination> {
    let mut failures = 0u32;
    loop {
        let mut wait = docker.wait_container(
            name,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        let result = tokio::select! {
            _ = cancel.cancelled() => return None,
            r = wait.next() => r,
        };
        match result {
            // It stopped (a non-zero exit comes as an error).
            Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => {}
            Some(Err(e)) if is_not_found(&e) => {
                return Some(Termination::Vanished {
                    message: format!("its Docker container {name} was removed while it ran"),
                });
            }
            // The daemon went away, or the stream broke: look again.
            other => {
                failures += 1;
                if failures % 20 == 1 {
                    warn!(container = %name, result = ?other.map(|r| r.map(|_| ())), "lost the wait on the container; waiting again");
                }
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(500).min(Duration::from_millis(50) * failures)) => {}
                }
                continue;
            }
        }
        match docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                if state.running == Some(true) {
                    continue; // restarted meanwhile: wait again
                }
                return Some(termination(&state));
            }
            Err(e) if is_not_found(&e) => {
                return Some(Termination::Vanished {
                    message: format!("its Docker container {name} was removed while it ran"),
                });
            }
            Err(e) => {
                failures += 1;
                warn!(container = %name, "cannot inspect the stopped container: {e}");
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

/// How a stopped container ended, from the daemon's record.
fn termination(state: &ContainerState) -> Termination {
    let code = state
        .exit_code
        .and_then(|c| i32::try_from(c).ok())
        .unwrap_or(-1);
    if state.oom_killed == Some(true) {
        return Termination::OomKilled { code };
    }
    match state.error.as_deref() {
        Some(err) if !err.is_empty() && state.started_at.as_deref().is_none_or(is_zero_time) => {
            Termination::LaunchFailed {
                message: err.to_string(),
            }
        }
        _ => Termination::Exited { code },
    }
}

/// A container that exited with 128 + N after the agent sent it signal N
/// died of that signal.
fn by_signal(t: Termination, sent: i32) -> Termination {
    match t {
        Termination::Exited { code } if sent > 0 && code == 128 + sent => {
            Termination::Signaled { signal: sent }
        }
        other => other,
    }
}

fn is_zero_time(t: &str) -> bool {
    t.starts_with("0001-01-01")
}

fn launched(pid: Option<i32>, name: &str) -> Launched {
    Launched {
        pid,
        checkpoint: serde_json::json!({ "container": name }),
    }
}

/// The daemon's own words for an error (without bollard's wrapping).
fn daemon_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        DockerError::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

fn is_conflict(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

/// Kills the process of an exec that ran too long. The Engine API cannot
/// stop an exec, so its process is signalled by its pid, but only when that
/// pid is, as seen from here, a process of the exec's container (its cgroup
/// names the container): an agent in another pid namespace than the daemon
/// leaves it alone.
async fn kill_exec(docker: &Docker, exec_id: &str) {
    let Ok(inspect) = docker.inspect_exec(exec_id).await else {
        return;
    };
    let (Some(true), Some(pid), Some(container)) =
        (inspect.running, inspect.pid, inspect.container_id)
    else {
        return;
    };
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    let ours = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|cgroup| !container.is_empty() && cgroup.contains(&container));
    if ours && pid > 1 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    } else {
        debug!(
            exec_id,
            pid, "a timed-out check command runs on in its container"
        );
    }
}

/// Sends `signal`; a container that is not running (409) or gone (404) is
/// fine.
async fn signal(docker: &Docker, name: &str, signal: &str) -> Result<(), AgentError> {
    match docker
        .kill_container(
            name,
            Some(KillContainerOptions {
                signal: signal.into(),
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(AgentError::Docker {
            action: format!("sending {signal} to {name}"),
            source: e,
        }),
    }
}

impl DockerContainerizer {
    async fn launch_in_time(&self, request: LaunchRequest) -> Result<Launched, AgentError> {
        let spec = container_spec(&request, &self.inner.rules).map_err(AgentError::Refused)?;
        self.ensure_image(&spec.image, spec.force_pull).await?;
        let docker = &self.inner.docker;
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                spec.body,
            )
            .await
            .map_err(|e| {
                AgentError::Launch(format!(
                    "cannot create the container: {}",
                    daemon_message(&e)
                ))
            })?;
        if let Err(e) = docker.start_container(&spec.name, None).await {
            let _ = self.remove_container(&request.container_id).await;
            return Err(AgentError::Launch(format!(
                "cannot start the container: {}",
                daemon_message(&e)
            )));
        }
        let pid = docker
            .inspect_container(&spec.name, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0);
        debug!(container = %spec.name, pid, "the container runs");
        self.watch(&request.container_id, spec.name.clone(), request.sandbox);
        Ok(launched(pid, &spec.name))
    }
}

#[async_trait]
impl Containerizer for DockerContainerizer {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn supports(&self, task: &TaskInfo) -> bool {
        is_docker_task(task.container.as_ref())
    }

    async fn recover(&self, known: Vec<KnownContainer>) -> Result<Vec<Recovered>, AgentError> {
        let mut out = Vec::with_capacity(known.len());
        for k in &known {
            out.push(self.recover_one(k).await);
        }
        self.remove_orphans(&known).await?;
        Ok(out)
    }

    /// Launches within `launch_timeout` (pull included); a launch that
    /// takes longer is given up and its container removed.
    async fn launch(&self, request: LaunchRequest) -> Result<Launched, AgentError> {
        let id = request.container_id.clone();
        let limit = self.inner.launch_timeout;
        match tokio::time::timeout(limit, self.launch_in_time(request)).await {
            Ok(r) => r,
            Err(_) => {
                let _ = self.remove_container(&id).await;
                Err(AgentError::Launch(format!(
                    "the container did not start within {limit:?} (its image pull included; \
                     see the agent's docker_launch_timeout)"
                )))
            }
        }
    }
    async fn wait(&self, id: &ContainerId) -> Result<Termination, AgentError> {
        let mut ended = self.lookup(id)?.ended;
        loop {
            if let Some(t) = ended.borrow().clone() {
                return Ok(t);
            }
            if ended.changed().await.is_err() {
                // The watcher stopped (shutdown): nothing to report.
                return std::future::pending().await;
            }
        }
    }

    async fn kill(&self, id: &ContainerId, grace: Duration) -> Result<(), AgentError> {
        let Watched {
            name,
            mut ended,
            signalled,
        } = self.lookup(id)?;
        if ended.borrow().is_some() {
            return Ok(());
        }
        let docker = &self.inner.docker;
        if !grace.is_zero() {
            debug!(container = %name, ?grace, "SIGTERM to the container");
            signalled.store(15, Ordering::SeqCst);
            signal(docker, &name, "SIGTERM").await?;
            let stopped = matches!(
                tokio::time::timeout(grace, ended.wait_for(Option::is_some)).await,
                Ok(Ok(_))
            );
            if stopped {
                return Ok(());
            }
            info!(container = %name, ?grace, "the container did not stop within its grace period: SIGKILL");
        }
        signalled.store(9, Ordering::SeqCst);
        signal(docker, &name, "SIGKILL").await
    }

    async fn usage(&self, id: &ContainerId) -> Result<Usage, AgentError> {
        let name = self.lookup(id)?.name;
        let mut stats = self.inner.docker.stats(
            &name,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        let Some(Ok(s)) = stats.next().await else {
            return Ok(Usage::default());
        };
        Ok(Usage {
            cpu_seconds: s
                .cpu_stats
                .and_then(|c| c.cpu_usage)
                .and_then(|u| u.total_usage)
                .map_or(0.0, |ns| ns as f64 / 1e9),
            rss_bytes: s.memory_stats.and_then(|m| m.usage).unwrap_or(0),
        })
    }

    /// `docker exec` of the command in the task's container (the
    /// container's environment, plus the command's own variables).
    async fn run_check(
        &self,
        id: &ContainerId,
        command: &CommandInfo,
        timeout: Duration,
    ) -> Result<CheckExit, AgentError> {
        let name = self.lookup(id)?.name;
        let (program, argv) = super::command_argv(command).map_err(AgentError::Check)?;
        // `docker exec` cannot set argv[0] apart from the program.
        let mut cmd = vec![program];
        cmd.extend(argv.into_iter().skip(1));
        let env: Vec<String> = command
            .environment
            .iter()
            .flat_map(|e| &e.variables)
            .map(|v| format!("{}={}", v.name, v.value))
            .collect();
        let docker = &self.inner.docker;
        let exec = docker
            .create_exec(
                &name,
                CreateExecOptions {
                    cmd: Some(cmd),
                    env: Some(env),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                AgentError::Check(format!("docker exec in {name}: {}", daemon_message(&e)))
            })?;
        let run = async {
            let mut output = Vec::new();
            if let StartExecResults::Attached {
                output: mut out, ..
            } = docker
                .start_exec(&exec.id, None::<StartExecOptions>)
                .await?
            {
                while let Some(item) = out.next().await {
                    output.extend_from_slice(&item?.into_bytes());
                    if output.len() > 2 * super::CHECK_OUTPUT_KEPT {
                        output.drain(..output.len() - super::CHECK_OUTPUT_KEPT);
                    }
                }
            }
            let inspect = docker.inspect_exec(&exec.id).await?;
            Ok::<_, DockerError>((inspect.exit_code, output))
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok((code, output))) => Ok(CheckExit::Exited {
                code: code.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1),
                output: output_tail(&output),
            }),
            Ok(Err(e)) => Err(AgentError::Check(format!(
                "docker exec in {name}: {}",
                daemon_message(&e)
            ))),
            Err(_) => {
                kill_exec(docker, &exec.id).await;
                Ok(CheckExit::TimedOut)
            }
        }
    }

    async fn containers(&self) -> Vec<ContainerId> {
        let mut ids: Vec<ContainerId> = self.inner.containers.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), AgentError> {
        self.remove_container(id).await
    }

    async fn released(&self, id: &ContainerId) {
        let this = self.clone();
        let id = id.clone();
        let delay = self.inner.remove_delay;
        let cancel = self.inner.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            if let Err(e) = this.remove_container(&id).await {
                warn!(container_id = %id, "{e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_states_become_terminations() {
        let state = |code: i64, oom: bool, error: &str, started: &str| ContainerState {
            exit_code: Some(code),
            oom_killed: Some(oom),
            error: Some(error.into()),
            started_at: Some(started.into()),
            ..Default::default()
        };
        let t = "2026-11-21T21:56:22.968262524Z";
        assert_eq!(
            termination(&state(0, false, "", t)),
            Termination::Exited { code: 0 }
        );
        assert_eq!(
            termination(&state(3, false, "", t)),
            Termination::Exited { code: 3 }
        );
        assert_eq!(
            termination(&state(137, true, "", t)),
            Termination::OomKilled { code: 137 }
        );
        assert_eq!(
            termination(&state(
                127,
                false,
                "exec: \"nope\": not found",
                "0001-01-01T00:00:00Z"
            )),
            Termination::LaunchFailed {
                message: "exec: \"nope\": not found".into()
            }
        );
        let e = |code| Termination::Exited { code };
        assert_eq!(by_signal(e(137), 9), Termination::Signaled { signal: 9 });
        assert_eq!(by_signal(e(143), 15), Termination::Signaled { signal: 15 });
        assert_eq!(
            by_signal(e(137), 0),
            e(137),
            "no signal sent: its own exit code"
        );
        assert_eq!(by_signal(e(0), 15), e(0), "it exited cleanly on SIGTERM");
    }
}
