//! `agora-coord`: leader election and the replicated store masters share.
//!
//! * [`Contender`]: "I want to lead". Resolves to a [`Leadership`] once this
//!   master leads; the leadership ends when [`Leadership::lost`] resolves.
//! * [`Detector`]: "who leads?", as a watch channel of the leader's
//!   [`MasterInfo`].
//! * [`Store`]: versioned key-value storage with compare-and-set, for the
//!   master's registry.
//!
//! The standalone backends here serve a single master (`agora master` without
//! `--zk`, and `agora dev`): it always leads, and its registry lives in memory
//! or in a local file. The ZooKeeper backends ([`zk`]) serve several masters.

mod standalone;
mod store;
pub mod zk;

pub use standalone::{StandaloneContender, StandaloneDetector};
pub use store::{FileStore, MemoryStore};
pub use zk::{ZkContender, ZkDetector, ZkStore, ZkUrl};

use agora_proto::v1::MasterInfo;
use tokio::sync::{oneshot, watch};

/// What went wrong in coordination.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("version conflict on `{key}`: expected {expected:?}, found {found:?}")]
    Conflict {
        key: String,
        expected: Expected,
        found: Option<u64>,
    },
    #[error(
        "registry file {path}: {source}; check the path is writable and not used by another master"
    )]
    File {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the store is closed")]
    Closed,
    #[error("invalid ZooKeeper address `{url}`: {reason}")]
    InvalidZkUrl { url: String, reason: String },
    #[error("ZooKeeper at {servers}: {what}: {source}")]
    ZooKeeper {
        servers: String,
        what: String,
        #[source]
        source: zookeeper_client::Error,
    },
    #[error(
        "this master no longer leads (its leader node {fence} is gone); the registry write was refused"
    )]
    Fenced { fence: String },
    #[error("the leader's node {znode} holds no usable MasterInfo: {reason}")]
    InvalidMasterInfo { znode: String, reason: String },
}

/// The condition a write is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Write whatever is there.
    Any,
    /// Write only if the key does not exist.
    Absent,
    /// Write only if the key exists with this version.
    Version(u64),
}

/// A stored value and its version (1 for a new key, +1 on every write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
}

/// Versioned key-value storage with compare-and-set.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Entry>, CoordError>;
    /// Writes `value` if `expected` holds; returns the new version.
    async fn set(&self, key: &str, value: Vec<u8>, expected: Expected) -> Result<u64, CoordError>;
    /// Deletes `key` if `expected` holds; deleting a missing key with
    /// `Expected::Any` is not an error.
    async fn delete(&self, key: &str, expected: Expected) -> Result<(), CoordError>;
    /// Every key that starts with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, CoordError>;
}

/// Held by the leading master. Dropping it withdraws from leadership.
pub struct Leadership {
    lost: watch::Receiver<bool>,
    _guard: Option<Box<dyn Send + Sync>>,
    /// What proves this leadership to the store (the leader's ZooKeeper
    /// node); `None` for a standalone master.
    fence: Option<String>,
    /// Asks the backend to give leadership up now, and to say when done.
    resign: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

impl Leadership {
    /// A leadership that ends when `lost` turns true (or its sender drops).
    /// `guard` is kept alive as long as the leadership (e.g. a ZooKeeper
    /// node's owner).
    pub fn new(lost: watch::Receiver<bool>, guard: Option<Box<dyn Send + Sync>>) -> Leadership {
        Leadership {
            lost,
            _guard: guard,
            fence: None,
            resign: None,
        }
    }

    /// The same leadership, given up through `resign` (see
    /// [`Leadership::resign`]).
    pub fn with_resign(mut self, resign: oneshot::Sender<oneshot::Sender<()>>) -> Leadership {
        self.resign = Some(resign);
        self
    }

    /// Gives leadership up and waits (a moment at most) until the backend
    /// has done so, e.g. deleted the leader's node so that the next master
    /// takes over at once. Dropping the leadership gives it up too, without
    /// waiting.
    pub async fn resign(mut self) {
        if let Some(resign) = self.resign.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if resign.send(done_tx).is_ok() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), done_rx).await;
            }
        }
    }

    /// The same leadership, proven by `fence` (see [`Leadership::fence`]).
    pub fn with_fence(mut self, fence: String) -> Leadership {
        self.fence = Some(fence);
        self
    }

    /// What exists exactly as long as this leadership: for ZooKeeper, the
    /// path of the leader's node. A store can make writes conditional on
    /// it, so a master that lost leadership cannot write any more.
    pub fn fence(&self) -> Option<&str> {
        self.fence.as_deref()
    }

    /// Resolves when this master no longer leads.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Whether leadership is already lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow() || self.lost.has_changed().is_err()
    }
}

/// "I want to lead."
#[async_trait::async_trait]
pub trait Contender: Send + Sync + 'static {
    /// Waits until this master leads.
    async fn contend(&self, info: MasterInfo) -> Result<Leadership, CoordError>;
}

/// `host:port` that reaches a master: its IP (IPv6 in brackets), or its
/// hostname when it advertises no usable IP.
pub fn address_of(info: &MasterInfo) -> String {
    let host = match info.ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) if !ip.is_unspecified() => format!("[{ip}]"),
        Ok(ip) if !ip.is_unspecified() => ip.to_string(),
        _ if !info.hostname.is_empty() => info.hostname.clone(),
        _ => info.ip.clone(),
    };
    format!("{host}:{}", info.port)
}

/// "Who leads?"
pub trait Detector: Send + Sync + 'static {
    /// The current leader (`None` while nobody leads), updated as it changes.
    fn leader(&self) -> watch::Receiver<Option<MasterInfo>>;
}
