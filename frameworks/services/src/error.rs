//! The framework's own failures (as opposed to refused requests, which are
//! [`crate::refusal::Refusal`]).

/// What can stop the services framework.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] agora_coord::CoordError),
    #[error("stored record `{key}` is unreadable: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Kit(#[from] agora_framework_kit::KitError),
    #[error("the scheduler driver stopped: {0}")]
    Stopped(String),
    #[error("scheduler driver: {0}")]
    Scheduler(#[from] agora_scheduler::SchedulerError),
}
