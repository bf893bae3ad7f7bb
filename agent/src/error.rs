//! The one error type of the agent crate.
//!
//! Each message says what went wrong and, where the user can act, what to do.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A configuration value is wrong; nothing was started.
    #[error("invalid agent configuration: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// The work directory cannot be created, read or written.
    #[error(
        "cannot use the work directory {}: {source}; check that it exists and is writable \
         by this user, or pass another --work-dir",
        path.display()
    )]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Another agent process holds the work directory.
    #[error(
        "the work directory {} is in use by another agent (its lock file is held); stop that \
         agent first or give this one another --work-dir",
        path.display()
    )]
    WorkDirLocked { path: PathBuf },

    /// The HTTP address cannot be bound.
    #[error("cannot listen on {addr}: {source}; choose a free address with --listen")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    /// A file of the work directory could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A checkpointed file exists but does not parse.
    #[error(
        "the checkpoint {} is damaged ({reason}); move it away to let the agent start without it",
        path.display()
    )]
    CorruptCheckpoint { path: PathBuf, reason: String },

    /// An id cannot be used as a path component.
    #[error(
        "invalid {what} `{id}`: ids must be 1 to 255 characters of A-Z, a-z, 0-9, '.', '_' \
         and '-', and neither '.' nor '..'"
    )]
    InvalidId { what: &'static str, id: String },

    /// A checkpoint write failed (the agent does not act on what it cannot
    /// record).
    #[error("cannot checkpoint: {0}")]
    Checkpoint(String),

    /// A task could not be started by its containerizer.
    #[error("cannot launch the task: {0}")]
    Launch(String),

    /// The containerizer refuses the task as it is written (reported
    /// `TASK_ERROR`): a volume outside the allowed roots, privileged mode
    /// where it is not allowed, a port mapping outside the task's ports, ...
    #[error("the task is refused: {0}")]
    Refused(String),

    /// The Docker daemon does not answer (at agent start).
    #[error(
        "cannot reach the Docker daemon at {host}: {reason}; start Docker, point --docker-socket \
         (or DOCKER_HOST) at it, or run without Docker with --containerizers process"
    )]
    DockerUnavailable { host: String, reason: String },

    /// A Docker Engine API call failed.
    #[error("Docker: {action}: {source}")]
    Docker {
        action: String,
        source: bollard::errors::Error,
    },

    /// A health-check command could not be run.
    #[error("cannot run the check command: {0}")]
    Check(String),

    /// The containerizer does not know this container.
    #[error("unknown container {0}")]
    UnknownContainer(String),

    /// Sending a signal to a task failed.
    #[error("cannot signal the task's process group {pgid}: {source}")]
    Signal {
        pgid: i32,
        source: nix::errno::Errno,
    },

    /// The agent's core has stopped (it is shutting down).
    #[error("the agent is shutting down")]
    Stopped,

    /// A background part of the agent panicked.
    #[error("an agent task failed: {0}")]
    Internal(String),
}

impl AgentError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        AgentError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        AgentError::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}
