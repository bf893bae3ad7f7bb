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
    #[error(
        "a batch of {bytes} bytes exceeds this store's limit of {max} bytes per atomic write; \
         split it (Store::max_batch_bytes)"
    )]
    BatchTooLarge { bytes: usize, max: usize },
    #[error("the batch writes `{key}` twice; a key may appear once per atomic batch")]
    DuplicateKey { key: String },
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

/// One write of an atomic batch ([`Store::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes `value` at `key` if `expected` holds.
    Set {
        key: String,
        value: Vec<u8>,
        expected: Expected,
    },
    /// Deletes `key` if `expected` holds (a missing key with
    /// [`Expected::Any`] is no error, as in [`Store::delete`]).
    Delete { key: String, expected: Expected },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Set { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    pub fn expected(&self) -> Expected {
        match self {
            Op::Set { expected, .. } | Op::Delete { expected, .. } => *expected,
        }
    }

    /// The bytes of the key and value.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Op::Set { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
        }
    }
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

    /// Applies `ops` all or nothing: either every op's condition holds and
    /// every op is applied, or none is (a [`CoordError::Conflict`] names the
    /// first key whose condition failed). Returns the new version of each
    /// `Set` and `None` for each `Delete`, in order. A key may appear once
    /// per batch. Memory: under one lock; redb file: one write transaction
    /// (one fsync); ZooKeeper: one `multi` request (with the fence check
    /// first when fenced).
    async fn apply(&self, ops: Vec<Op>) -> Result<Vec<Option<u64>>, CoordError>;

    /// What one op costs against [`max_batch_bytes`](Self::max_batch_bytes):
    /// its key and value, plus the backend's own framing.
    fn op_bytes(&self, op: &Op) -> usize {
        op.payload_bytes()
    }

    /// The most one [`apply`](Self::apply) may carry, as a sum of
    /// [`op_bytes`](Self::op_bytes); a larger batch is refused with
    /// [`CoordError::BatchTooLarge`]. (ZooKeeper: 256 KiB, well below its
    /// 1 MiB request limit so that a multi is answered quickly.)
    fn max_batch_bytes(&self) -> usize;

    /// The values of many keys at once (`None` for a missing key), in the
    /// order of `keys`. ZooKeeper: multi-read requests, several in flight,
    /// for fast loads at failover. Each value is read atomically; the whole set is one
    /// snapshot for the memory and redb stores only.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, CoordError>;
}

/// Refuses a batch that names a key twice (its outcome would depend on the
/// order of the ops, and ZooKeeper could not apply it).
pub(crate) fn check_unique_keys(ops: &[Op]) -> Result<(), CoordError> {
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(CoordError::DuplicateKey {
                key: op.key().to_string(),
            });
        }
    }
    Ok(())
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

    /// Every contender that has announced itself, the leader first, as far
    /// as this detector can tell (empty when it cannot: a standalone
    /// detector knows only the leader).
    fn members(&self) -> watch::Receiver<Vec<MasterInfo>> {
        watch::channel(Vec::new()).1
    }
}
