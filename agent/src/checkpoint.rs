//! Checkpointing: what the agent writes to its work directory so that a
//! restarted agent (even after SIGKILL) knows its id, its frameworks, its
//! tasks and their status-update streams.
//!
//! Every file is replaced atomically (write a temporary file, fsync, rename,
//! fsync the directory), so a reader sees the old content or the new, never a
//! mix. Protocol messages are stored as protobuf (forward compatible as the
//! proto grows); the agent's own records as JSON.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use agora_proto::v1::{FrameworkInfo, LaunchTask, TaskStatus};
use base64::Engine;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::paths::{Layout, validate_id};

/// Writes `bytes` to `path` atomically, creating parent directories.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` through a temporary file (fsynced) and a rename,
/// but does not fsync the directory: the caller does, once per directory
/// for a batch of writes.
fn write_renamed(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.w{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a file that may not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a directory tree that may not exist.
pub fn remove_dir_all_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `meta/agent.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub agent_id: String,
}

/// A kill the agent has started (kept so a restarted agent finishes it and
/// reports `TASK_KILLED`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KillRecord {
    pub grace_seconds: f64,
    /// Set when a failing health check asked for the kill: why (the task's
    /// final status says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
}

/// `health.json`: what a restarted agent needs to resume a task's health
/// checks where they were.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// When the task started to run (seconds since the Unix epoch): the
    /// checks' delay and grace period count from there.
    pub running_since: f64,
    /// Which health checks have passed at least once (their grace period
    /// is over for good).
    #[serde(default)]
    pub passed: Vec<bool>,
}

/// `container.json`: which container runs the task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub container_id: String,
    /// The name of the containerizer that runs it (see `Containerizer::name`).
    pub containerizer: String,
    /// What the containerizer said when the launch succeeded (for the process
    /// containerizer: the supervisor's pid and start time, and the task's).
    #[serde(default)]
    pub launched: Option<serde_json::Value>,
    #[serde(default)]
    pub kill: Option<KillRecord>,
}

/// One update of a task's stream, as stored in `updates.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateRecord {
    pub status: TaskStatus,
    pub acknowledged: bool,
}

#[derive(Serialize, Deserialize)]
struct UpdatesFile {
    updates: Vec<UpdateEntry>,
}

#[derive(Serialize, Deserialize)]
struct UpdateEntry {
    /// The TaskStatus, protobuf then base64.
    status: String,
    /// Its uuid, for people reading the file.
    #[serde(default)]
    uuid: String,
    #[serde(default)]
    state: String,
    acknowledged: bool,
}

/// One task as found on disk.
#[derive(Clone, Debug)]
pub struct CheckpointedTask {
    pub launch: LaunchTask,
    pub container: Option<ContainerRecord>,
    pub updates: Vec<UpdateRecord>,
    pub health: Option<HealthRecord>,
    /// Its `container.json` was damaged (and moved aside): the container is
    /// to be found some other way.
    pub container_damaged: bool,
}

/// Everything a restarted agent finds in its work directory.
#[derive(Debug, Default)]
pub struct CheckpointedState {
    pub agent_id: Option<String>,
    pub frameworks: BTreeMap<String, FrameworkInfo>,
    pub tasks: Vec<CheckpointedTask>,
    /// Entries that could not be read and were skipped or moved aside
    /// (each says why).
    pub skipped: Vec<String>,
    /// Frameworks whose `framework.pb` was damaged (and moved aside).
    pub damaged_frameworks: Vec<String>,
}

/// A checkpoint file as read back.
enum Found<T> {
    Absent,
    Read(T),
    /// Unreadable or unparsable: moved aside (the message says where).
    Damaged,
}

/// Reads and writes the agent's checkpoint files.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    layout: Layout,
}

fn write(path: PathBuf, bytes: &[u8]) -> Result<(), AgentError> {
    write_atomic(&path, bytes).map_err(|e| AgentError::io("cannot write the checkpoint", path, e))
}

fn corrupt(path: &Path, reason: impl ToString) -> AgentError {
    AgentError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, AgentError> {
    read_optional(path).map_err(|e| AgentError::io("cannot read the checkpoint", path, e))
}

pub fn encode_updates(updates: &[UpdateRecord]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let file = UpdatesFile {
        updates: updates
            .iter()
            .map(|u| UpdateEntry {
                status: b64.encode(u.status.encode_to_vec()),
                uuid: uuid::Uuid::from_slice(&u.status.uuid)
                    .map(|x| x.to_string())
                    .unwrap_or_default(),
                state: u.status.state().as_str_name().to_string(),
                acknowledged: u.acknowledged,
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&file).unwrap_or_default()
}

pub fn decode_updates(path: &Path, bytes: &[u8]) -> Result<Vec<UpdateRecord>, AgentError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let file: UpdatesFile = serde_json::from_slice(bytes).map_err(|e| corrupt(path, e))?;
    file.updates
        .into_iter()
        .map(|e| {
            let raw = b64.decode(e.status).map_err(|err| corrupt(path, err))?;
            let status = TaskStatus::decode(raw.as_slice()).map_err(|err| corrupt(path, err))?;
            Ok(UpdateRecord {
                status,
                acknowledged: e.acknowledged,
            })
        })
        .collect()
}

impl Checkpoint {
    pub fn new(layout: Layout) -> Checkpoint {
        Checkpoint { layout }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn save_agent_id(&self, agent_id: &str) -> Result<(), AgentError> {
        let rec = AgentRecord {
            agent_id: agent_id.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&rec).unwrap_or_default();
        write(self.layout.agent_file(), &bytes)
    }

    /// Forgets the agent id (after the master said the agent was removed).
    pub fn clear_agent_id(&self) -> Result<(), AgentError> {
        let path = self.layout.agent_file();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(AgentError::io("cannot remove", path, e))
            }
            _ => Ok(()),
        }
    }

    /// The change that saves `info` (for the [`Writer`]).
    pub(crate) fn framework_op(&self, info: &FrameworkInfo) -> WriteOp {
        WriteOp::Write {
            path: self.layout.framework_file(&info.id),
            bytes: info.encode_to_vec(),
        }
    }

    pub(crate) fn task_op(&self, launch: &LaunchTask) -> WriteOp {
        let task_id = launch.task.as_ref().map_or("", |t| t.task_id.as_str());
        WriteOp::Write {
            path: self.layout.task_file(&launch.framework_id, task_id),
            bytes: launch.encode_to_vec(),
        }
    }

    pub(crate) fn container_op(&self, fid: &str, tid: &str, record: &ContainerRecord) -> WriteOp {
        WriteOp::Write {
            path: self.layout.container_file(fid, tid),
            bytes: serde_json::to_vec_pretty(record).unwrap_or_default(),
        }
    }

    pub(crate) fn updates_op(&self, fid: &str, tid: &str, updates: &[UpdateRecord]) -> WriteOp {
        WriteOp::Write {
            path: self.layout.updates_file(fid, tid),
            bytes: encode_updates(updates),
        }
    }

    pub(crate) fn health_op(&self, fid: &str, tid: &str, record: &HealthRecord) -> WriteOp {
        WriteOp::Write {
            path: self.layout.health_file(fid, tid),
            bytes: serde_json::to_vec_pretty(record).unwrap_or_default(),
        }
    }

    pub(crate) fn remove_task_op(&self, fid: &str, tid: &str) -> WriteOp {
        WriteOp::RemoveDir(self.layout.task_dir(fid, tid))
    }

    pub(crate) fn remove_framework_op(&self, fid: &str) -> WriteOp {
        WriteOp::RemoveDir(self.layout.framework_dir(fid))
    }

    #[cfg(test)]
    pub fn save_framework(&self, info: &FrameworkInfo) -> Result<(), AgentError> {
        write(self.layout.framework_file(&info.id), &info.encode_to_vec())
    }

    #[cfg(test)]
    pub fn save_task(&self, launch: &LaunchTask) -> Result<(), AgentError> {
        let task_id = launch
            .task
            .as_ref()
            .map(|t| t.task_id.as_str())
            .unwrap_or("");
        write(
            self.layout.task_file(&launch.framework_id, task_id),
            &launch.encode_to_vec(),
        )
    }

    #[cfg(test)]
    pub fn save_container(
        &self,
        framework_id: &str,
        task_id: &str,
        record: &ContainerRecord,
    ) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        write(self.layout.container_file(framework_id, task_id), &bytes)
    }

    #[cfg(test)]
    pub fn save_updates(
        &self,
        framework_id: &str,
        task_id: &str,
        updates: &[UpdateRecord],
    ) -> Result<(), AgentError> {
        write(
            self.layout.updates_file(framework_id, task_id),
            &encode_updates(updates),
        )
    }

    #[cfg(test)]
    pub fn save_health(
        &self,
        framework_id: &str,
        task_id: &str,
        record: &HealthRecord,
    ) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        write(self.layout.health_file(framework_id, task_id), &bytes)
    }

    #[cfg(test)]
    pub fn remove_task(&self, framework_id: &str, task_id: &str) -> Result<(), AgentError> {
        let dir = self.layout.task_dir(framework_id, task_id);
        remove_dir_all_if_exists(&dir).map_err(|e| AgentError::io("cannot remove", dir, e))
    }

    /// Moves a damaged file aside, to `meta/corrupt/`, and says so.
    fn move_aside(&self, path: &Path, reason: &str) -> String {
        let meta = self.layout.meta_dir();
        let name = path
            .strip_prefix(&meta)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('/', ".");
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let dest = meta.join("corrupt").join(format!("{name}.corrupt-{ts}"));
        let moved = fs::create_dir_all(meta.join("corrupt")).and_then(|()| fs::rename(path, &dest));
        match moved {
            Ok(()) => format!(
                "the checkpoint {} is damaged ({reason}); moved it to {}",
                path.display(),
                dest.display()
            ),
            Err(e) => format!(
                "the checkpoint {} is damaged ({reason}); it could not be moved aside ({e}) \
                 and is ignored",
                path.display()
            ),
        }
    }

    /// Reads and parses a checkpoint file; one that cannot be read or does
    /// not parse is moved aside (with a message in `skipped`).
    fn read_file<T>(
        &self,
        path: &Path,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
        skipped: &mut Vec<String>,
    ) -> Found<T> {
        let reason = match read_optional(path) {
            Ok(None) => return Found::Absent,
            Ok(Some(bytes)) => match parse(&bytes) {
                Ok(t) => return Found::Read(t),
                Err(e) => e,
            },
            Err(e) => format!("cannot read it: {e}"),
        };
        skipped.push(self.move_aside(path, &reason));
        Found::Damaged
    }

    /// Reads everything back. What cannot be read is moved aside and listed
    /// in `skipped` rather than stopping the agent (a task with a damaged
    /// `container.json` or `updates.json` is still returned, without it;
    /// one with a damaged `task.pb` is not); an unreadable agent id is an
    /// error, because registering anew would orphan every task.
    pub fn recover(&self) -> Result<CheckpointedState, AgentError> {
        let mut state = CheckpointedState::default();
        let agent_file = self.layout.agent_file();
        if let Some(bytes) = read(&agent_file)? {
            let rec: AgentRecord =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&agent_file, e))?;
            if !rec.agent_id.is_empty() {
                state.agent_id = Some(rec.agent_id);
            }
        }
        for fid in list_dir(&self.layout.frameworks_dir())? {
            if validate_id("framework id", &fid).is_err() {
                state
                    .skipped
                    .push(format!("framework directory `{fid}`: not a valid id"));
                continue;
            }
            let path = self.layout.framework_file(&fid);
            let parse = |b: &[u8]| {
                let info = FrameworkInfo::decode(b).map_err(|e| e.to_string())?;
                if info.id == fid {
                    Ok(info)
                } else {
                    Err(format!("it is not the info of framework `{fid}`"))
                }
            };
            match self.read_file(&path, parse, &mut state.skipped) {
                Found::Read(info) => {
                    state.frameworks.insert(fid.clone(), info);
                }
                Found::Damaged => state.damaged_frameworks.push(fid.clone()),
                Found::Absent => {}
            }
            for tid in list_dir(&self.layout.tasks_dir(&fid))? {
                match self.recover_task(&fid, &tid, &mut state.skipped) {
                    Ok(Some(t)) => state.tasks.push(t),
                    Ok(None) => {}
                    Err(e) => state.skipped.push(e.to_string()),
                }
            }
        }
        Ok(state)
    }

    fn recover_task(
        &self,
        fid: &str,
        tid: &str,
        skipped: &mut Vec<String>,
    ) -> Result<Option<CheckpointedTask>, AgentError> {
        validate_id("task id", tid)?;
        let task_file = self.layout.task_file(fid, tid);
        let parse_task = |b: &[u8]| {
            let launch = LaunchTask::decode(b).map_err(|e| e.to_string())?;
            let named = launch
                .task
                .as_ref()
                .is_some_and(|t| t.task_id == tid && launch.framework_id == fid);
            if named {
                Ok(launch)
            } else {
                Err(format!(
                    "it is not the launch of task `{tid}` of framework `{fid}`"
                ))
            }
        };
        let launch = match self.read_file(&task_file, parse_task, skipped) {
            Found::Read(l) => l,
            // Absent: the agent died between creating the directory and
            // writing the task, so nothing was launched yet.
            Found::Absent | Found::Damaged => return Ok(None),
        };
        let container_file = self.layout.container_file(fid, tid);
        let parse_container = |b: &[u8]| {
            let c: ContainerRecord = serde_json::from_slice(b).map_err(|e| e.to_string())?;
            validate_id("container id", &c.container_id).map_err(|e| e.to_string())?;
            Ok(c)
        };
        let (container, container_damaged) =
            match self.read_file(&container_file, parse_container, skipped) {
                Found::Read(c) => (Some(c), false),
                Found::Absent => (None, false),
                Found::Damaged => (None, true),
            };
        let updates_file = self.layout.updates_file(fid, tid);
        let parse_updates = |b: &[u8]| decode_updates(&updates_file, b).map_err(|e| e.to_string());
        let updates = match self.read_file(&updates_file, parse_updates, skipped) {
            Found::Read(u) => u,
            Found::Absent | Found::Damaged => Vec::new(),
        };
        // Only a convenience for the checks: a damaged one is started anew.
        let health_file = self.layout.health_file(fid, tid);
        let parse_health =
            |b: &[u8]| serde_json::from_slice::<HealthRecord>(b).map_err(|e| e.to_string());
        let health = match self.read_file(&health_file, parse_health, skipped) {
            Found::Read(h) => Some(h),
            Found::Absent | Found::Damaged => None,
        };
        Ok(Some(CheckpointedTask {
            launch,
            container,
            updates,
            health,
            container_damaged,
        }))
    }
}

/// One change to the checkpoint, for the [`Writer`].
#[derive(Debug)]
pub(crate) enum WriteOp {
    /// Replace a file atomically.
    Write { path: PathBuf, bytes: Vec<u8> },
    /// Remove a directory tree (a task's or a framework's).
    RemoveDir(PathBuf),
}

impl WriteOp {
    fn path(&self) -> &Path {
        match self {
            WriteOp::Write { path, .. } | WriteOp::RemoveDir(path) => path,
        }
    }
}

/// The writer takes jobs into one batch until none came for this long ...
const BATCH_IDLE: std::time::Duration = std::time::Duration::from_millis(2);
/// ... or the batch is this old, or this big.
const MAX_BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(20);
const MAX_BATCH: usize = 4096;

/// Called with the outcome of a write once it is durable (or failed).
pub(crate) type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Job {
    op: WriteOp,
    done: Option<Done>,
}

/// The checkpoint writer: a thread of its own that does the agent's
/// checkpoint writes in order, off the agent's event loop. It takes every
/// job that is waiting as one batch: of several writes of one file only the
/// last is done (its outcome goes to every caller), and each directory is
/// fsynced once per batch rather than once per file.
pub(crate) struct Writer {
    tx: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread; `observe` is told of every outcome (for
    /// metrics and health): `Ok(n)` for n files written (removals do not
    /// count: they say nothing of whether writes work), `Err(reason)`.
    pub fn start(observe: impl Fn(Result<u64, &str>) + Send + 'static) -> Writer {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("agora-checkpoint".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Group commit: what the agent queues in one go (a
                    // message's launches, their updates) is written together.
                    let started = std::time::Instant::now();
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH && started.elapsed() < MAX_BATCH_WAIT {
                        match rx.recv_timeout(BATCH_IDLE) {
                            Ok(more) => batch.push(more),
                            Err(_) => break,
                        }
                    }
                    run_batch(batch, &observe);
                }
            })
            .expect("the checkpoint writer thread starts");
        Writer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues a change; `done` is called once it is durable or has failed.
    pub fn submit(&self, op: WriteOp, done: Option<Done>) {
        let job = Job { op, done };
        if let Some(tx) = &self.tx
            && let Err(std::sync::mpsc::SendError(job)) = tx.send(job)
            && let Some(done) = job.done
        {
            done(Err("the checkpoint writer has stopped".into()));
        }
    }

    /// Queues a change and returns a receiver for its outcome.
    pub fn submit_waited(&self, op: WriteOp) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            op,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        rx
    }

    /// Finishes the queued writes and stops the thread.
    pub fn close(&mut self) -> Option<std::thread::JoinHandle<()>> {
        self.tx.take();
        self.thread.take()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
    }
}

/// Which jobs of a batch are superseded by a later write of the same file
/// (with no removal of a directory holding it in between): for each job,
/// the index of the job that does its work.
pub(crate) fn coalesce(ops: &[&WriteOp]) -> Vec<usize> {
    let mut target: Vec<usize> = (0..ops.len()).collect();
    for i in (0..ops.len()).rev() {
        let WriteOp::Write { path, .. } = ops[i] else {
            continue;
        };
        for j in i + 1..ops.len() {
            match ops[j] {
                WriteOp::Write { path: p, .. } if p == path => {
                    target[i] = target[j];
                    break;
                }
                WriteOp::RemoveDir(d) if path.starts_with(d) => break,
                _ => {}
            }
        }
    }
    target
}

fn run_batch(batch: Vec<Job>, observe: &dyn Fn(Result<u64, &str>)) {
    let ops: Vec<&WriteOp> = batch.iter().map(|j| &j.op).collect();
    let target = coalesce(&ops);
    let mut results: Vec<Option<Result<(), String>>> = vec![None; batch.len()];
    // Directories with renames not yet fsynced, and which jobs wait on each.
    let mut unsynced: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    let sync_dirs = |unsynced: &mut Vec<(PathBuf, Vec<usize>)>,
                     results: &mut Vec<Option<Result<(), String>>>| {
        for (dir, jobs) in unsynced.drain(..) {
            if let Err(e) = fs::File::open(&dir).and_then(|f| f.sync_all()) {
                let msg = format!("cannot write the checkpoint {}: {e}", dir.display());
                for j in jobs {
                    results[j] = Some(Err(msg.clone()));
                }
            }
        }
    };
    for (i, job) in batch.iter().enumerate() {
        if target[i] != i {
            continue;
        }
        match &job.op {
            WriteOp::Write { path, bytes } => match write_renamed(path, bytes) {
                Ok(()) => {
                    results[i] = Some(Ok(()));
                    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                    match unsynced.iter_mut().find(|(d, _)| *d == dir) {
                        Some((_, jobs)) => jobs.push(i),
                        None => unsynced.push((dir, vec![i])),
                    }
                }
                Err(e) => {
                    results[i] = Some(Err(format!(
                        "cannot write the checkpoint {}: {e}",
                        path.display()
                    )))
                }
            },
            WriteOp::RemoveDir(dir) => {
                // Renames inside it land first (an order a reader can rely on).
                sync_dirs(&mut unsynced, &mut results);
                results[i] = Some(
                    remove_dir_all_if_exists(dir)
                        .map_err(|e| format!("cannot remove {}: {e}", dir.display())),
                );
            }
        }
    }
    sync_dirs(&mut unsynced, &mut results);
    // Successes first, so that a failure in this batch leaves the agent
    // unhealthy.
    let done_ok = (0..batch.len())
        .filter(|&i| {
            target[i] == i
                && matches!(batch[i].op, WriteOp::Write { .. })
                && matches!(results[i], Some(Ok(())))
        })
        .count() as u64;
    if done_ok > 0 {
        observe(Ok(done_ok));
    }
    for (i, job) in batch.into_iter().enumerate() {
        let r = results[target[i]]
            .clone()
            .unwrap_or_else(|| Err("the checkpoint write was skipped".into()));
        if target[i] == i
            && let Err(e) = &r
        {
            tracing::error!(path = %job.op.path().display(), "{e}");
            observe(Err(e));
        }
        if let Some(done) = job.done {
            done(r);
        }
    }
}

/// The names of the directory's entries (none if it does not exist), sorted;
/// temporary files are skipped.
pub fn list_dir(dir: &Path) -> Result<Vec<String>, AgentError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AgentError::io("cannot list", dir, e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1::{CommandInfo, TaskInfo, TaskState};

    fn launch(fid: &str, tid: &str) -> LaunchTask {
        LaunchTask {
            framework_id: fid.into(),
            task: Some(TaskInfo {
                name: "web".into(),
                task_id: tid.into(),
                command: Some(CommandInfo {
                    value: "sleep 1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            role: "web".into(),
        }
    }

    fn status(state: TaskState) -> TaskStatus {
        let mut s = TaskStatus {
            task_id: "t1".into(),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            exit_code: Some(3),
            message: "hello".into(),
            ..Default::default()
        };
        s.set_state(state);
        s
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(list_dir(&dir.path().join("a/b")).unwrap(), ["c.json"]);
        let all: Vec<_> = fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(all.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn everything_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::new(Layout::new(dir.path()));
        assert!(cp.recover().unwrap().agent_id.is_none());

        cp.save_agent_id("m-S1").unwrap();
        let fw = FrameworkInfo {
            id: "f1".into(),
            name: "services".into(),
            checkpoint: true,
            ..Default::default()
        };
        cp.save_framework(&fw).unwrap();
        cp.save_task(&launch("f1", "t1")).unwrap();
        let container = ContainerRecord {
            container_id: "c1".into(),
            containerizer: "process".into(),
            launched: Some(serde_json::json!({"pid": 42})),
            kill: Some(KillRecord {
                grace_seconds: 1.5,
                health_check: Some("its health check failed".into()),
            }),
        };
        cp.save_container("f1", "t1", &container).unwrap();
        let updates = vec![
            UpdateRecord {
                status: status(TaskState::TaskStarting),
                acknowledged: true,
            },
            UpdateRecord {
                status: status(TaskState::TaskFailed),
                acknowledged: false,
            },
        ];
        cp.save_updates("f1", "t1", &updates).unwrap();
        let health = HealthRecord {
            running_since: 1_700_000_000.5,
            passed: vec![true, false],
        };
        cp.save_health("f1", "t1", &health).unwrap();
        // A task directory without its task file (the agent died while
        // creating it) is ignored.
        fs::create_dir_all(cp.layout().task_dir("f1", "t2")).unwrap();

        let got = cp.recover().unwrap();
        assert_eq!(got.agent_id.as_deref(), Some("m-S1"));
        assert_eq!(got.frameworks["f1"], fw);
        assert_eq!(got.tasks.len(), 1);
        assert_eq!(got.tasks[0].launch, launch("f1", "t1"));
        assert_eq!(got.tasks[0].container.as_ref(), Some(&container));
        assert_eq!(got.tasks[0].updates, updates);
        assert_eq!(got.tasks[0].health.as_ref(), Some(&health));
        assert!(got.skipped.is_empty(), "{:?}", got.skipped);

        cp.clear_agent_id().unwrap();
        cp.clear_agent_id().unwrap();
        cp.remove_task("f1", "t1").unwrap();
        let got = cp.recover().unwrap();
        assert!(got.agent_id.is_none());
        assert!(got.tasks.is_empty());
    }

    #[test]
    fn damaged_tasks_are_skipped_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::new(Layout::new(dir.path()));
        cp.save_task(&launch("f1", "good")).unwrap();
        cp.save_task(&launch("f1", "bad")).unwrap();
        fs::write(cp.layout().updates_file("f1", "bad"), b"{not json").unwrap();
        // A damaged task.pb: the task cannot be known.
        fs::create_dir_all(cp.layout().task_dir("f1", "gone")).unwrap();
        fs::write(cp.layout().task_file("f1", "gone"), b"\xff\xff\xff").unwrap();
        let got = cp.recover().unwrap();
        // A damaged update stream: the task is kept, without it.
        let mut ids: Vec<&str> = got
            .tasks
            .iter()
            .map(|t| t.launch.task.as_ref().unwrap().task_id.as_str())
            .collect();
        ids.sort();
        assert_eq!(ids, ["bad", "good"]);
        assert!(got.tasks.iter().all(|t| t.updates.is_empty()));
        assert_eq!(got.skipped.len(), 2, "{:?}", got.skipped);
        assert!(
            got.skipped
                .iter()
                .all(|s| s.contains("damaged") && s.contains("moved it to")),
            "{:?}",
            got.skipped
        );
        assert!(!cp.layout().updates_file("f1", "bad").exists());
        let corrupt = list_dir(&cp.layout().meta_dir().join("corrupt")).unwrap();
        assert_eq!(corrupt.len(), 2, "{corrupt:?}");
        assert!(
            corrupt
                .iter()
                .any(|n| n.starts_with("frameworks.f1.tasks.bad.updates.json.corrupt-")),
            "{corrupt:?}"
        );
        // Read again: nothing damaged is left.
        let again = cp.recover().unwrap();
        assert!(again.skipped.is_empty(), "{:?}", again.skipped);

        fs::write(cp.layout().agent_file(), b"nope").unwrap();
        let err = cp.recover().unwrap_err().to_string();
        assert!(err.contains("move it away"), "{err}");
    }

    #[test]
    fn later_writes_of_a_file_stand_for_earlier_ones_but_not_across_a_removal() {
        let w = |p: &str| WriteOp::Write {
            path: PathBuf::from(p),
            bytes: Vec::new(),
        };
        let ops = [
            w("/w/t1/updates.json"),
            w("/w/t2/updates.json"),
            w("/w/t1/updates.json"),
            WriteOp::RemoveDir(PathBuf::from("/w/t1")),
            w("/w/t1/updates.json"),
            w("/w/t1/updates.json"),
        ];
        let refs: Vec<&WriteOp> = ops.iter().collect();
        assert_eq!(coalesce(&refs), [2, 1, 2, 3, 5, 5]);
    }

    #[test]
    fn the_writer_does_every_write_in_order_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<Result<u64, String>>::new()));
        let s2 = seen.clone();
        let mut writer = Writer::start(move |r| s2.lock().push(r.map_err(str::to_string)));
        let p = dir.path().join("a/b.json");
        let mut waits = Vec::new();
        for i in 0..20 {
            waits.push(writer.submit_waited(WriteOp::Write {
                path: p.clone(),
                bytes: format!("{i}").into_bytes(),
            }));
        }
        // Under a regular file: cannot be written.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let bad = writer.submit_waited(WriteOp::Write {
            path: dir.path().join("file/c.json"),
            bytes: b"no".to_vec(),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for w in waits {
                assert_eq!(w.await.unwrap(), Ok(()));
            }
            let err = bad.await.unwrap().unwrap_err();
            assert!(err.contains("cannot write the checkpoint"), "{err}");
        });
        writer.close().unwrap().join().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"19");
        let seen = seen.lock();
        assert!(seen.iter().any(Result::is_err));
        let written: u64 = seen.iter().filter_map(|r| r.as_ref().ok()).sum();
        assert!((1..=20).contains(&written), "{seen:?}");
        assert_eq!(list_dir(&dir.path().join("a")).unwrap(), ["b.json"]);
    }

    /// A checkpoint with every kind of file, for one task.
    fn full_checkpoint(cp: &Checkpoint) {
        cp.save_agent_id("a1").unwrap();
        cp.save_framework(&FrameworkInfo {
            id: "f1".into(),
            checkpoint: true,
            ..Default::default()
        })
        .unwrap();
        cp.save_task(&launch("f1", "t1")).unwrap();
        cp.save_container(
            "f1",
            "t1",
            &ContainerRecord {
                container_id: "c1".into(),
                containerizer: "process".into(),
                launched: Some(serde_json::json!({"pid": 42})),
                kill: None,
            },
        )
        .unwrap();
        cp.save_updates(
            "f1",
            "t1",
            &[UpdateRecord {
                status: status(TaskState::TaskRunning),
                acknowledged: false,
            }],
        )
        .unwrap();
        cp.save_health(
            "f1",
            "t1",
            &HealthRecord {
                running_since: 1.0,
                passed: vec![true],
            },
        )
        .unwrap();
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn no_bytes_panic_the_readers(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_updates(Path::new("updates.json"), &bytes);
            let _ = serde_json::from_slice::<ContainerRecord>(&bytes);
            let _ = serde_json::from_slice::<HealthRecord>(&bytes);
            let _ = serde_json::from_slice::<AgentRecord>(&bytes);
            let _ = FrameworkInfo::decode(bytes.as_slice());
            let _ = LaunchTask::decode(bytes.as_slice());
        }

        /// Whatever one of a task's files holds (garbage, or its own content
        /// cut short or with a byte changed), recovery neither panics nor
        /// fails, and keeps the task unless its task.pb is unusable.
        #[test]
        fn recovery_survives_any_content_of_any_file(
            which in 0usize..5,
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
            mode in 0u8..3,
            at in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let cp = Checkpoint::new(Layout::new(dir.path()));
            full_checkpoint(&cp);
            let l = cp.layout();
            let path = [
                l.framework_file("f1"),
                l.task_file("f1", "t1"),
                l.container_file("f1", "t1"),
                l.updates_file("f1", "t1"),
                l.health_file("f1", "t1"),
            ][which].clone();
            let mut bytes = fs::read(&path).unwrap();
            match mode {
                0 => bytes = garbage,
                1 => bytes.truncate(at.index(bytes.len() + 1)),
                _ => {
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] ^= flip;
                    }
                }
            }
            fs::write(&path, &bytes).unwrap();
            let got = cp.recover().unwrap();
            prop_assert_eq!(got.agent_id.as_deref(), Some("a1"));
            if which != 1 {
                prop_assert_eq!(got.tasks.len(), 1, "{:?}", got.skipped);
            }
            // Whatever was damaged was moved aside: a second read is clean.
            let again = cp.recover().unwrap();
            prop_assert!(again.skipped.is_empty(), "{:?}", again.skipped);
        }
    }
}
