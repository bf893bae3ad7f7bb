//! The task supervisor: a small process between the agent and each process
//! task, so the task outlives the agent.
//!
//! The agent starts `SUPERVISOR_COMMAND... --run-dir DIR` with `DIR/spec.json`
//! written beforehand. The supervisor
//!
//! 1. leaves the agent's session (`setsid`), so signals and the death of the
//!    agent do not reach it;
//! 2. records its own pid, start time and the machine's boot id in
//!    `DIR/supervisor.json`;
//! 3. starts the task (cwd = sandbox, stdout and stderr to files, the given
//!    environment only) in a process group of its own, and adds the task's
//!    pid and start time to `supervisor.json`;
//! 4. waits for the task, kills what is left of its process group, and writes
//!    the exit status (code or signal) to `DIR/status.json`;
//! 5. exits.
//!
//! Every file is written atomically (temporary file + rename). The agent
//! reads them to follow the task, also after its own restart. The
//! supervisor's own messages go to its stderr, which the agent points at
//! `DIR/supervisor.log`.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::containerizer::Termination;
use crate::procfs::ProcessIdentity;

pub(crate) const SPEC_FILE: &str = "spec.json";
pub(crate) const SUPERVISOR_FILE: &str = "supervisor.json";
pub(crate) const STATUS_FILE: &str = "status.json";
pub(crate) const LOG_FILE: &str = "supervisor.log";

/// What to run, written by the agent to `spec.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SupervisorSpec {
    /// The executable (looked up in the task's `PATH` when it has no `/`).
    pub program: String,
    /// argv, argv[0] included.
    pub argv: Vec<String>,
    /// The task's whole environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The most resident memory the task's processes may use together;
    /// above it they are killed (reported like an OOM kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// The user to run the task as (the supervisor runs as root then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<TaskUser>,
}

/// A user a task runs as.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// `supervisor.json`: who the supervisor and the task are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SupervisorRecord {
    pub supervisor: ProcessIdentity,
    /// Set once the task has been started.
    #[serde(default)]
    pub task: Option<ProcessIdentity>,
}

/// `status.json`: how the task ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StatusRecord {
    pub termination: Termination,
    /// Seconds since the Unix epoch.
    pub ended_at: f64,
}

impl StatusRecord {
    pub fn read(run_dir: &Path) -> Option<StatusRecord> {
        let bytes = fs::read(run_dir.join(STATUS_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl SupervisorRecord {
    pub fn read(run_dir: &Path) -> Option<SupervisorRecord> {
        let bytes = fs::read(run_dir.join(SUPERVISOR_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn log(msg: std::fmt::Arguments<'_>) {
    let now = agora_proto::unix_seconds(std::time::SystemTime::now());
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "{now:.3} agora-task-supervisor[{}]: {msg}",
        std::process::id()
    );
}

const USAGE: &str = "usage: task-supervisor --run-dir DIR (started by the agent; not for people)";

/// Entry point of the task-supervisor process (synchronous; needs no async
/// runtime). Returns the process's exit code: 0 when the task's exit status
/// was recorded, 2 on bad arguments, 1 when nothing could be recorded.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut run_dir: Option<PathBuf> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--run-dir") => run_dir = it.next().map(PathBuf::from),
            _ => {
                log(format_args!("unexpected argument {a:?}; {USAGE}"));
                return 2;
            }
        }
    }
    let Some(run_dir) = run_dir else {
        log(format_args!("{USAGE}"));
        return 2;
    };
    match supervise(&run_dir) {
        Ok(()) => 0,
        Err(e) => {
            log(format_args!("{e}"));
            1
        }
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    write_atomic(path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn record_end(run_dir: &Path, termination: Termination) -> Result<(), String> {
    let rec = StatusRecord {
        termination,
        ended_at: agora_proto::unix_seconds(std::time::SystemTime::now()),
    };
    write_json(&run_dir.join(STATUS_FILE), &rec)
}

fn supervise(run_dir: &Path) -> Result<(), String> {
    // Leave the agent's session and process group. This fails only when we
    // already lead a group, which the agent never makes us do.
    if let Err(e) = nix::unistd::setsid() {
        log(format_args!(
            "setsid failed ({e}); going on in the agent's session"
        ));
    }
    let me = ProcessIdentity::of(std::process::id() as i32)
        .ok_or("cannot read this process's own /proc entry")?;
    let mut record = SupervisorRecord {
        supervisor: me,
        task: None,
    };
    write_json(&run_dir.join(SUPERVISOR_FILE), &record)?;

    let spec: SupervisorSpec = match fs::read(run_dir.join(SPEC_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            let message = format!("the supervisor cannot read its launch spec: {e}");
            record_end(
                run_dir,
                Termination::LaunchFailed {
                    message: message.clone(),
                },
            )?;
            return Err(message);
        }
    };

    let mut child = match start_task(&spec) {
        Ok(c) => c,
        Err(message) => {
            log(format_args!("{message}"));
            return record_end(run_dir, Termination::LaunchFailed { message });
        }
    };
    let pid = child.id() as i32;
    record.task = ProcessIdentity::of(pid);
    if record.task.is_none() {
        // It already exited (and is a zombie we have not reaped, so /proc
        // would still show it): cannot happen in practice; record a start
        // time of 0 so the agent still knows the pid.
        record.task = Some(ProcessIdentity {
            pid,
            start_time: 0,
            boot_id: crate::procfs::boot_id(),
        });
    }
    write_json(&run_dir.join(SUPERVISOR_FILE), &record)?;
    log(format_args!("started the task as pid {pid}"));

    let over_limit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = spec.memory_limit_bytes.map(|limit| {
        let (over_limit, ended) = (over_limit.clone(), ended.clone());
        std::thread::spawn(move || watch_memory(pid, limit, &over_limit, &ended))
    });
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot wait for the task (pid {pid}): {e}")),
        }
    };
    ended.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    // The task's main process has ended; whatever it left behind in its
    // process group goes with it (as when Mesos destroys a container).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let termination = match (status.code(), status.signal()) {
        _ if over_limit.load(std::sync::atomic::Ordering::SeqCst) => Termination::OomKilled {
            code: status.code().unwrap_or(128 + status.signal().unwrap_or(9)),
        },
        (Some(code), _) => Termination::Exited { code },
        (None, Some(signal)) => Termination::Signaled { signal },
        (None, None) => Termination::Vanished {
            message: format!("the task's wait status {status:?} is neither an exit nor a signal"),
        },
    };
    log(format_args!("the task ended: {termination:?}"));
    record_end(run_dir, termination)
}

/// Kills the task's processes (its group, and whatever it started) with
/// SIGKILL once they use more than `limit` bytes of resident memory.
fn watch_memory(
    pid: i32,
    limit: u64,
    over_limit: &std::sync::atomic::AtomicBool,
    ended: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    while !ended.load(Ordering::SeqCst) {
        let used = crate::limits::resident_bytes(pid);
        if used > limit {
            over_limit.store(true, Ordering::SeqCst);
            log(format_args!(
                "the task uses {} MB of resident memory, over its limit of {} MB: killing it",
                used >> 20,
                limit >> 20
            ));
            let members = crate::limits::descendants(pid);
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            for p in members.into_iter().filter(|&p| p != pid && p > 1) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return;
        }
        std::thread::sleep(crate::limits::MEMORY_WATCH_INTERVAL);
    }
}

fn open_output(path: &Path) -> Result<fs::File, String> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn start_task(spec: &SupervisorSpec) -> Result<std::process::Child, String> {
    let stdout = open_output(&spec.stdout)?;
    let stderr = open_output(&spec.stderr)?;
    let mut cmd = Command::new(&spec.program);
    if let Some((argv0, rest)) = spec.argv.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if let Some(u) = &spec.user {
        cmd.uid(u.uid).gid(u.gid);
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", spec.program))
}
