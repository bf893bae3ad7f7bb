//! The master's errors.

use std::net::SocketAddr;

/// What can stop the master.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("registry: {0}")]
    Registry(#[from] agora_coord::CoordError),
    #[error("the master stopped unexpectedly: {0}")]
    Stopped(String),
}
