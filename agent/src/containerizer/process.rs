//! Plain-process tasks, each under a detached task supervisor (see
//! [`crate::supervisor`]) so it survives the agent.
//!
//! Each container has a run directory `<work_dir>/containers/<container_id>/`
//! with the supervisor's `spec.json`, `supervisor.json` (supervisor and task
//! pids with their start times), `status.json` (the exit status, once the
//! task has ended) and `supervisor.log`. This containerizer keeps no other
//! state: after a restart it reads everything back from there.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::v1::{CommandInfo, TaskInfo, container_info};
use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{
    CHECK_OUTPUT_KEPT, CheckExit, ContainerId, Containerizer, KnownContainer, LaunchRequest,
    Launched, Recovered, Termination, Usage, command_argv, output_tail, set_var, task_environment,
};
use crate::checkpoint::{list_dir, remove_dir_all_if_exists, write_atomic};
use crate::error::AgentError;
use crate::procfs::{boot_id, may_signal_group, read_stat};
use crate::supervisor::{
    LOG_FILE, SPEC_FILE, StatusRecord, SupervisorRecord, SupervisorSpec, TaskUser,
};

/// How long a new supervisor may take to start the task before the launch
/// is given up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

struct Container {
    run_dir: PathBuf,
    /// Set once the supervisor has said who it is.
    record: Option<SupervisorRecord>,
    /// Turns true when the supervisor (our child) has been reaped; `None`
    /// for recovered supervisors, which are not our children and are polled.
    reaped: Option<watch::Receiver<bool>>,
}

/// Runs tasks as plain processes.
pub struct ProcessContainerizer {
    containers_dir: PathBuf,
    supervisor_command: Vec<OsString>,
    /// How often to look at a container that is not our child.
    poll_interval: Duration,
    containers: Mutex<HashMap<ContainerId, Container>>,
}

impl ProcessContainerizer {
    /// `containers_dir` holds the run directories; `supervisor_command` is
    /// the argv prefix that starts a task supervisor.
    pub fn new(containers_dir: PathBuf, supervisor_command: Vec<OsString>) -> ProcessContainerizer {
        ProcessContainerizer {
            containers_dir,
            supervisor_command,
            poll_interval: Duration::from_millis(100),
            containers: Mutex::new(HashMap::new()),
        }
    }

    fn run_dir(&self, id: &ContainerId) -> PathBuf {
        self.containers_dir.join(id.as_str())
    }

    fn lookup(
        &self,
        id: &ContainerId,
    ) -> Result<(PathBuf, Option<watch::Receiver<bool>>), AgentError> {
        let map = self.containers.lock();
        let c = map
            .get(id)
            .ok_or_else(|| AgentError::UnknownContainer(id.to_string()))?;
        Ok((c.run_dir.clone(), c.reaped.clone()))
    }

    /// The supervisor record, from memory or (fresher) from disk.
    fn record(&self, id: &ContainerId, run_dir: &Path) -> Option<SupervisorRecord> {
        let fresh = SupervisorRecord::read(run_dir);
        let mut map = self.containers.lock();
        let c = map.get_mut(id)?;
        if fresh.is_some() {
            c.record = fresh;
        }
        c.record.clone()
    }

    /// Whether the container's supervisor has ended (dead, or a zombie).
    fn supervisor_gone(
        record: Option<&SupervisorRecord>,
        reaped: &Option<watch::Receiver<bool>>,
    ) -> bool {
        reaped.as_ref().is_some_and(|r| *r.borrow())
            || record.is_some_and(|r| !r.supervisor.is_alive())
    }

    fn launch_blocking_prepare(
        &self,
        request: &LaunchRequest,
    ) -> Result<(PathBuf, SupervisorSpec), AgentError> {
        let command = request
            .task
            .command
            .as_ref()
            .ok_or_else(|| AgentError::Launch("the task has no command".into()))?;
        let (program, argv) = command_argv(command).map_err(AgentError::Launch)?;
        let mut env = task_environment(request, |k| std::env::var(k).ok());
        let user = task_user(&command.user, &request.sandbox)?;
        if let Some(u) = &user {
            set_var(&mut env, "USER", u.name.clone());
            set_var(&mut env, "LOGNAME", u.name.clone());
        }
        let resources =
            agora_proto::Resources::from_proto(&request.task.resources).unwrap_or_default();
        let spec = SupervisorSpec {
            program,
            argv,
            env,
            cwd: request.sandbox.clone(),
            stdout: request.sandbox.join("stdout"),
            stderr: request.sandbox.join("stderr"),
            memory_limit_bytes: crate::limits::memory_limit_bytes(&resources),
            user,
        };
        let run_dir = self.run_dir(&request.container_id);
        let bytes = serde_json::to_vec_pretty(&spec).unwrap_or_default();
        write_atomic(&run_dir.join(SPEC_FILE), &bytes).map_err(|e| {
            AgentError::io("cannot write the launch spec", run_dir.join(SPEC_FILE), e)
        })?;
        Ok((run_dir, spec))
    }

    /// Waits until the supervisor has started the task, recorded a launch
    /// failure, or died.
    async fn await_start(
        &self,
        id: &ContainerId,
        run_dir: &Path,
        mut reaped: watch::Receiver<bool>,
    ) -> Result<Launched, AgentError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = StatusRecord::read(run_dir) {
                return match status.termination {
                    Termination::LaunchFailed { message } => Err(AgentError::Launch(message)),
                    // It started and already ended: it did run; `wait` will
                    // report how it ended.
                    _ => Ok(launched(self.record(id, run_dir))),
                };
            }
            let record = self.record(id, run_dir);
            if record.as_ref().is_some_and(|r| r.task.is_some()) {
                return Ok(launched(record));
            }
            if *reaped.borrow() {
                // Dead without a status: one last look (it may have written
                // the status just before exiting).
                if StatusRecord::read(run_dir).is_some() {
                    continue;
                }
                return Err(AgentError::Launch(format!(
                    "the task supervisor exited before starting the task; see {}",
                    run_dir.join(LOG_FILE).display()
                )));
            }
            if Instant::now() > deadline {
                if let Some(r) = &record {
                    let _ = killpg(Pid::from_raw(r.supervisor.pid), Signal::SIGKILL);
                }
                return Err(AgentError::Launch(format!(
                    "the task supervisor did not start the task within {}s; see {}",
                    START_TIMEOUT.as_secs(),
                    run_dir.join(LOG_FILE).display()
                )));
            }
            tokio::select! {
                _ = reaped.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }

    /// Kills a container's task group if it still runs and is provably the
    /// task's (same boot, same start time; see [`may_signal_group`]). Used
    /// for containers whose supervisor is gone, and for orphans.
    fn kill_task_group(record: &SupervisorRecord) {
        let Some(task) = &record.task else {
            return;
        };
        let leader = read_stat(task.pid);
        let ours = may_signal_group(
            task,
            boot_id().as_deref(),
            leader.as_ref(),
            group_exists(task.pid),
        );
        if ours {
            let _ = killpg(Pid::from_raw(task.pid), Signal::SIGKILL);
        } else if leader.is_some() || group_exists(task.pid) {
            tracing::warn!(
                pid = task.pid,
                "not signalling process group {}: it is not provably the task's (its pid was \
                 reused, or the machine rebooted since)",
                task.pid
            );
        }
    }
}

/// The user a task runs as: the one its command names, when the agent runs
/// as root (its sandbox is then given to that user); `None` for the agent's
/// own user. An unknown user is the task's mistake (`TASK_ERROR`).
fn task_user(name: &str, sandbox: &Path) -> Result<Option<TaskUser>, AgentError> {
    if name.is_empty() {
        return Ok(None);
    }
    let me = nix::unistd::geteuid();
    if !me.is_root() {
        let mine = nix::unistd::User::from_uid(me)
            .ok()
            .flatten()
            .is_some_and(|u| u.name == name);
        if !mine {
            tracing::warn!(user = %name,
                "the task asks to run as another user; the agent is not root, so it runs as the agent's user");
        }
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| AgentError::Launch(format!("cannot look up the user `{name}`: {e}")))?
        .ok_or_else(|| {
            AgentError::Refused(format!(
                "the task's user `{name}` does not exist on this agent"
            ))
        })?;
    nix::unistd::chown(sandbox, Some(user.uid), Some(user.gid)).map_err(|e| {
        AgentError::Launch(format!(
            "cannot give the sandbox {} to the user `{name}`: {e}",
            sandbox.display()
        ))
    })?;
    Ok(Some(TaskUser {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// Sleeps for `d`, or less if the supervisor is reaped meanwhile.
async fn pause(reaped: &mut Option<watch::Receiver<bool>>, d: Duration) {
    match reaped {
        Some(r) if !*r.borrow() => {
            tokio::select! {
                changed = r.changed() => {
                    // The reaper went away without a word: just sleep.
                    if changed.is_err() {
                        tokio::time::sleep(d).await;
                    }
                }
                _ = tokio::time::sleep(d) => {}
            }
        }
        _ => tokio::time::sleep(d).await,
    }
}

fn launched(record: Option<SupervisorRecord>) -> Launched {
    Launched {
        pid: record.as_ref().and_then(|r| r.task.as_ref().map(|t| t.pid)),
        checkpoint: record
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .unwrap_or_default(),
    }
}

/// Reads a stream to its end, keeping its last [`CHECK_OUTPUT_KEPT`] bytes.
async fn read_tail(mut r: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * CHECK_OUTPUT_KEPT {
            kept.drain(..kept.len() - CHECK_OUTPUT_KEPT);
        }
    }
    kept
}

/// Whether any process is in process group `pgid` (signal 0 checks).
fn group_exists(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}

fn vanished_message(run_dir: &Path, record: Option<&SupervisorRecord>) -> String {
    match record {
        Some(r) => format!(
            "the task's supervisor (pid {}) is gone and left no exit status: it was killed \
             outside the agent, or the machine rebooted; see {}",
            r.supervisor.pid,
            run_dir.join(LOG_FILE).display()
        ),
        None => "the agent stopped while starting the task, and its supervisor never ran".into(),
    }
}

#[async_trait]
impl Containerizer for ProcessContainerizer {
    fn name(&self) -> &'static str {
        "process"
    }

    fn supports(&self, task: &TaskInfo) -> bool {
        let docker = task
            .container
            .as_ref()
            .is_some_and(|c| c.r#type() == container_info::Type::Docker);
        !docker && task.command.is_some()
    }

    async fn recover(&self, known: Vec<KnownContainer>) -> Result<Vec<Recovered>, AgentError> {
        let mut out = Vec::with_capacity(known.len());
        for k in &known {
            let run_dir = self.run_dir(&k.container_id);
            let status = StatusRecord::read(&run_dir);
            let mut record = SupervisorRecord::read(&run_dir);
            if record.is_none() {
                record = k
                    .checkpoint
                    .clone()
                    .and_then(|v| serde_json::from_value(v).ok());
            }
            if let Some(s) = status {
                out.push(Recovered::Ended(s.termination));
                continue;
            }
            let alive = record.as_ref().is_some_and(|r| r.supervisor.is_alive());
            if alive {
                self.containers.lock().insert(
                    k.container_id.clone(),
                    Container {
                        run_dir: run_dir.clone(),
                        record: record.clone(),
                        reaped: None,
                    },
                );
                out.push(Recovered::Running(launched(record)));
                continue;
            }
            // Dead: maybe it wrote its status just now.
            if let Some(s) = StatusRecord::read(&run_dir) {
                out.push(Recovered::Ended(s.termination));
                continue;
            }
            if let Some(r) = &record {
                ProcessContainerizer::kill_task_group(r);
            }
            out.push(Recovered::Ended(Termination::Vanished {
                message: vanished_message(&run_dir, record.as_ref()),
            }));
        }
        // Containers nobody knows any more (their task's checkpoint is
        // gone) must not run on unaccounted: kill them.
        let known_ids: Vec<&str> = known.iter().map(|k| k.container_id.as_str()).collect();
        for name in list_dir(&self.containers_dir)? {
            if known_ids.contains(&name.as_str()) {
                continue;
            }
            let run_dir = self.containers_dir.join(&name);
            if StatusRecord::read(&run_dir).is_some() {
                continue;
            }
            if let Some(r) = SupervisorRecord::read(&run_dir)
                && r.supervisor.is_alive()
            {
                tracing::warn!(container_id = %name, pid = r.supervisor.pid,
                    "killing a task no checkpointed task owns");
                ProcessContainerizer::kill_task_group(&r);
            }
        }
        Ok(out)
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Launched, AgentError> {
        let id = request.container_id.clone();
        let (program, rest) = self
            .supervisor_command
            .split_first()
            .ok_or_else(|| AgentError::Launch("no task supervisor command is configured".into()))?;
        let (run_dir, _spec) = self.launch_blocking_prepare(&request)?;
        let log_path = run_dir.join(LOG_FILE);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| AgentError::io("cannot create", &log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| AgentError::io("cannot open", &log_path, e))?;
        let mut child = tokio::process::Command::new(program)
            .args(rest)
            .arg("--run-dir")
            .arg(&run_dir)
            .current_dir(&run_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                AgentError::Launch(format!(
                    "cannot start the task supervisor `{}`: {e}",
                    program.to_string_lossy()
                ))
            })?;
        let (tx, reaped) = watch::channel(false);
        // Reap the supervisor when it exits, so it does not linger as a
        // zombie, and wake up whoever waits for it.
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = tx.send(true);
        });
        self.containers.lock().insert(
            id.clone(),
            Container {
                run_dir: run_dir.clone(),
                record: None,
                reaped: Some(reaped.clone()),
            },
        );
        self.await_start(&id, &run_dir, reaped).await
    }

    async fn wait(&self, id: &ContainerId) -> Result<Termination, AgentError> {
        let (run_dir, mut reaped) = self.lookup(id)?;
        loop {
            if let Some(s) = StatusRecord::read(&run_dir) {
                return Ok(s.termination);
            }
            let record = self.record(id, &run_dir);
            if ProcessContainerizer::supervisor_gone(record.as_ref(), &reaped) {
                if let Some(s) = StatusRecord::read(&run_dir) {
                    return Ok(s.termination);
                }
                if let Some(r) = &record {
                    ProcessContainerizer::kill_task_group(r);
                }
                return Ok(Termination::Vanished {
                    message: vanished_message(&run_dir, record.as_ref()),
                });
            }
            pause(&mut reaped, self.poll_interval).await;
        }
    }

    async fn kill(&self, id: &ContainerId, grace: Duration) -> Result<(), AgentError> {
        let (run_dir, mut reaped) = self.lookup(id)?;
        let ended = |reaped: &Option<watch::Receiver<bool>>| {
            StatusRecord::read(&run_dir).is_some()
                || ProcessContainerizer::supervisor_gone(self.record(id, &run_dir).as_ref(), reaped)
        };
        if ended(&reaped) {
            return Ok(());
        }
        let Some(task) = self.record(id, &run_dir).and_then(|r| r.task) else {
            // Launches finish before the agent kills, so the task exists;
            // without it there is nothing to signal.
            return Ok(());
        };
        let pgid = Pid::from_raw(task.pid);
        tracing::debug!(container_id = %id, pgid = task.pid, ?grace, "SIGTERM to the task's process group");
        match killpg(pgid, Signal::SIGTERM) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(AgentError::Signal {
                    pgid: task.pid,
                    source: e,
                });
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if ended(&reaped) {
                return Ok(());
            }
            pause(&mut reaped, Duration::from_millis(20)).await;
        }
        if ended(&reaped) {
            return Ok(());
        }
        tracing::info!(container_id = %id, pgid = task.pid, ?grace,
            "the task did not stop within its grace period: SIGKILL");
        match killpg(pgid, Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(AgentError::Signal {
                pgid: task.pid,
                source: e,
            }),
        }
    }

    async fn usage(&self, id: &ContainerId) -> Result<Usage, AgentError> {
        let (run_dir, _) = self.lookup(id)?;
        let Some(task) = self.record(id, &run_dir).and_then(|r| r.task) else {
            return Ok(Usage::default());
        };
        // The task's main process only (no cgroups here); clock ticks are
        // 100 per second and pages 4 KiB on every Linux we run on.
        Ok(read_stat(task.pid)
            .filter(|s| s.start_time == task.start_time)
            .map(|s| Usage {
                cpu_seconds: (s.utime + s.stime) as f64 / 100.0,
                rss_bytes: s.rss_pages * 4096,
            })
            .unwrap_or_default())
    }

    /// Runs the command in the task's sandbox with the task's environment
    /// (read back from its `spec.json`, so recovered tasks work too) plus
    /// the command's own variables, in a process group of its own that is
    /// killed when the command ends or times out.
    async fn run_check(
        &self,
        id: &ContainerId,
        command: &CommandInfo,
        timeout: Duration,
    ) -> Result<CheckExit, AgentError> {
        let (run_dir, _) = self.lookup(id)?;
        let spec_path = run_dir.join(SPEC_FILE);
        let spec: SupervisorSpec = tokio::fs::read(&spec_path)
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| {
                AgentError::Check(format!(
                    "cannot read the task's launch spec {}: {e}",
                    spec_path.display()
                ))
            })?;
        let (program, argv) = command_argv(command).map_err(AgentError::Check)?;
        let mut env = spec.env;
        for v in command.environment.iter().flat_map(|e| &e.variables) {
            set_var(&mut env, &v.name, v.value.clone());
        }
        let mut cmd = tokio::process::Command::new(&program);
        if let Some((argv0, rest)) = argv.split_first() {
            cmd.arg0(argv0).args(rest);
        }
        cmd.env_clear()
            .envs(env)
            .current_dir(&spec.cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| AgentError::Check(format!("cannot start `{program}`: {e}")))?;
        let pgid = child.id().map(|p| Pid::from_raw(p as i32));
        let out = child.stdout.take().map(|o| tokio::spawn(read_tail(o)));
        let err = child.stderr.take().map(|e| tokio::spawn(read_tail(e)));
        let waited = tokio::time::timeout(timeout, child.wait()).await;
        // Whatever the command left running goes with it.
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let status = match waited {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(AgentError::Check(format!(
                    "cannot wait for `{program}`: {e}"
                )));
            }
            Err(_) => {
                let _ = child.wait().await;
                return Ok(CheckExit::TimedOut);
            }
        };
        let mut output = Vec::new();
        for reader in [out, err].into_iter().flatten() {
            if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_millis(200), reader).await {
                output.extend_from_slice(&bytes);
            }
        }
        let output = output_tail(&output);
        use std::os::unix::process::ExitStatusExt;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => CheckExit::Exited { code, output },
            (None, Some(signal)) => CheckExit::Signaled { signal, output },
            (None, None) => CheckExit::Exited { code: -1, output },
        })
    }

    async fn containers(&self) -> Vec<ContainerId> {
        let mut ids: Vec<ContainerId> = self.containers.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), AgentError> {
        self.containers.lock().remove(id);
        let run_dir = self.run_dir(id);
        remove_dir_all_if_exists(&run_dir).map_err(|e| AgentError::io("cannot remove", run_dir, e))
    }
}
