//! The one error type of the batch framework.

use std::net::SocketAddr;

use agora_framework_kit::KitError;

/// What stopped the batch framework, or one of its terms of leadership.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Settings that cannot work (reported before anything binds).
    #[error("invalid settings: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}; is another process using it?")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The Store or the scheduler driver failed (a term ends and starts
    /// again from the Store).
    #[error(transparent)]
    Kit(#[from] KitError),
    /// The scheduler driver stopped (the master refused the framework).
    #[error("the scheduler driver stopped: {0}")]
    Stopped(String),
}
