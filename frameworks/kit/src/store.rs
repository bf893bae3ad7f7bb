//! A framework's durable state: JSON values in a coord [`Store`], written
//! one by one or in batches.
//!
//! A [`Batch`] turns many writes (e.g. the records of 10,000 instances)
//! into as few atomic [`Store::apply`] calls as the store's
//! [`max_batch_bytes`](Store::max_batch_bytes) allows: one for the
//! embedded stores, one per ~1 MB for ZooKeeper. Each of those chunks is
//! atomic; a batch larger than one chunk is not (a failure part way says
//! how many writes were applied, [`KitError::Batch`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_coord::zk::ZkStore;
use agora_coord::{Expected, FileStore, MemoryStore, Op, Store, ZkUrl};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::KitError;

/// Where a framework keeps its state.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreBackend {
    /// In memory: gone when the process ends (tests).
    Memory,
    /// One local redb file (standalone mode, `agora dev`).
    File(PathBuf),
    /// ZooKeeper, under `<url path>-registry` (HA mode: the instances'
    /// leader election uses `<url path>` itself).
    Zk {
        url: ZkUrl,
        session_timeout: Duration,
    },
}

/// A stored value and its version (for compare-and-set).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// A framework's store: typed JSON values over a coord [`Store`]. Cheap to
/// clone.
#[derive(Clone)]
pub struct FrameworkStore {
    store: Arc<dyn Store>,
    /// The same store unfenced, when it is a ZooKeeper store (to fence it
    /// to a leadership).
    zk: Option<ZkStore>,
}

impl std::fmt::Debug for FrameworkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameworkStore")
            .field("zookeeper", &self.zk.is_some())
            .finish()
    }
}

impl FrameworkStore {
    /// Opens the store `backend` names. A ZooKeeper store connects on first
    /// use.
    pub fn open(backend: &StoreBackend) -> Result<FrameworkStore, KitError> {
        Ok(match backend {
            StoreBackend::Memory => FrameworkStore::new(Arc::new(MemoryStore::new())),
            StoreBackend::File(path) => FrameworkStore::new(Arc::new(FileStore::open(path)?)),
            StoreBackend::Zk {
                url,
                session_timeout,
            } => {
                let zk = ZkStore::new(url, *session_timeout);
                FrameworkStore {
                    store: Arc::new(zk.clone()),
                    zk: Some(zk),
                }
            }
        })
    }

    /// A framework store over any coord store.
    pub fn new(store: Arc<dyn Store>) -> FrameworkStore {
        FrameworkStore { store, zk: None }
    }

    /// An empty store in memory.
    pub fn memory() -> FrameworkStore {
        FrameworkStore::new(Arc::new(MemoryStore::new()))
    }

    /// The same store, refusing writes once the leadership proven by
    /// `fence` (a ZooKeeper node) is gone. Stores without ZooKeeper serve
    /// a single instance and are returned as they are.
    pub fn fenced(&self, fence: Option<&str>) -> FrameworkStore {
        match (&self.zk, fence) {
            (Some(zk), Some(fence)) => FrameworkStore {
                store: Arc::new(zk.fenced(fence)),
                zk: Some(zk.clone()),
            },
            _ => self.clone(),
        }
    }

    /// The coord store underneath.
    pub fn raw(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, KitError> {
        match self.store.get(key).await? {
            Some(entry) => Ok(Some(Versioned {
                value: decode(key, &entry.value)?,
                version: entry.version,
            })),
            None => Ok(None),
        }
    }

    /// Writes `value` if `expected` holds; returns the new version.
    pub async fn put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expected: Expected,
    ) -> Result<u64, KitError> {
        let bytes = encode(key, value)?;
        Ok(self.store.set(key, bytes, expected).await?)
    }

    pub async fn delete(&self, key: &str, expected: Expected) -> Result<(), KitError> {
        Ok(self.store.delete(key, expected).await?)
    }

    /// Every key that starts with `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, KitError> {
        Ok(self.store.list(prefix).await?)
    }

    /// The values of `keys`, in order (`None` for missing keys); one
    /// pipelined read for ZooKeeper.
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Versioned<T>>>, KitError> {
        let entries = self.store.get_many(keys).await?;
        keys.iter()
            .zip(entries)
            .map(|(key, entry)| match entry {
                Some(e) => Ok(Some(Versioned {
                    value: decode(key, &e.value)?,
                    version: e.version,
                })),
                None => Ok(None),
            })
            .collect()
    }

    /// Every value under `prefix`, as `(key, value)` sorted by key.
    pub async fn load_prefix<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Versioned<T>)>, KitError> {
        let keys = self.list(prefix).await?;
        let values = self.get_many::<T>(&keys).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// A batch of writes, committed with [`Batch::commit`].
    pub fn batch(&self) -> Batch {
        Batch {
            store: self.store.clone(),
            ops: Vec::new(),
        }
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, KitError> {
    serde_json::from_slice(bytes).map_err(|source| KitError::Decode {
        key: key.to_string(),
        source,
    })
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, KitError> {
    serde_json::to_vec(value).map_err(|source| KitError::Encode {
        key: key.to_string(),
        source,
    })
}

/// Writes gathered to be applied together. Each key once per batch.
pub struct Batch {
    store: Arc<dyn Store>,
    ops: Vec<Op>,
}

impl Batch {
    /// Writes `value` at `key` if `expected` holds at commit.
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
        expected: Expected,
    ) -> Result<&mut Batch, KitError> {
        let value = encode(key, value)?;
        self.ops.push(Op::Set {
            key: key.to_string(),
            value,
            expected,
        });
        Ok(self)
    }

    /// Deletes `key` if `expected` holds at commit.
    pub fn delete(&mut self, key: &str, expected: Expected) -> &mut Batch {
        self.ops.push(Op::Delete {
            key: key.to_string(),
            expected,
        });
        self
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Applies the writes in as few atomic chunks as the store allows, in
    /// order. Returns the new version of each put (`None` for deletes).
    /// When a chunk fails, the chunks before it stay applied and nothing
    /// after it is tried: [`KitError::Batch`] says how many writes were
    /// applied (a single chunk fails with [`KitError::Store`]).
    pub async fn commit(self) -> Result<Vec<Option<u64>>, KitError> {
        let total = self.ops.len();
        let chunks = chunk(&*self.store, self.ops)?;
        let single = chunks.len() <= 1;
        let mut versions = Vec::with_capacity(total);
        for ops in chunks {
            let n = ops.len();
            match self.store.apply(ops).await {
                Ok(v) => versions.extend(v),
                Err(e) if single => return Err(KitError::Store(e)),
                Err(source) => {
                    return Err(KitError::Batch {
                        applied: versions.len(),
                        total,
                        source,
                    });
                }
            }
            tracing::trace!(ops = n, "batch chunk applied");
        }
        Ok(versions)
    }
}

/// Splits `ops` into chunks within the store's limit, in order.
fn chunk(store: &dyn Store, ops: Vec<Op>) -> Result<Vec<Vec<Op>>, KitError> {
    let max = store.max_batch_bytes();
    let mut chunks: Vec<Vec<Op>> = Vec::new();
    let mut current: Vec<Op> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let size = store.op_bytes(&op);
        if size > max {
            return Err(KitError::Store(agora_coord::CoordError::BatchTooLarge {
                bytes: size,
                max,
            }));
        }
        if bytes + size > max && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(op);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_coord::CoordError;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Instance {
        id: String,
        state: String,
    }

    fn inst(i: usize) -> Instance {
        Instance {
            id: format!("i{i}"),
            state: "running".into(),
        }
    }

    #[tokio::test]
    async fn typed_values_with_versions() {
        let s = FrameworkStore::memory();
        assert_eq!(s.get::<Instance>("x/1").await.unwrap(), None);
        let v = s.put("x/1", &inst(1), Expected::Absent).await.unwrap();
        assert_eq!(v, 1);
        let got = s.get::<Instance>("x/1").await.unwrap().unwrap();
        assert_eq!(
            got,
            Versioned {
                value: inst(1),
                version: 1
            }
        );
        assert!(matches!(
            s.put("x/1", &inst(2), Expected::Version(7)).await,
            Err(KitError::Store(CoordError::Conflict { .. }))
        ));
        // A value of another shape is a decode error naming the key.
        s.put("x/2", &"just text", Expected::Any).await.unwrap();
        let err = s.get::<Instance>("x/2").await.unwrap_err();
        assert!(err.to_string().contains("`x/2`"), "{err}");
        s.delete("x/2", Expected::Version(1)).await.unwrap();
        assert_eq!(s.list("x/").await.unwrap(), vec!["x/1"]);
        let loaded = s.load_prefix::<Instance>("x/").await.unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].1.value, inst(1));
    }

    #[tokio::test]
    async fn a_batch_is_one_atomic_write_when_it_fits() {
        let s = FrameworkStore::memory();
        s.put("i/3", &inst(3), Expected::Any).await.unwrap();
        let mut b = s.batch();
        for i in 0..10 {
            b.put(&format!("i/{i}"), &inst(i), Expected::Absent)
                .unwrap();
        }
        assert_eq!(b.len(), 10);
        // i/3 exists: nothing of the batch is written.
        let err = b.commit().await.unwrap_err();
        assert!(
            matches!(err, KitError::Store(CoordError::Conflict { ref key, .. }) if key == "i/3"),
            "{err}"
        );
        assert_eq!(s.list("i/").await.unwrap(), vec!["i/3"]);

        let mut b = s.batch();
        for i in 0..10 {
            let expected = if i == 3 {
                Expected::Version(1)
            } else {
                Expected::Absent
            };
            b.put(&format!("i/{i}"), &inst(i), expected).unwrap();
        }
        b.delete("missing", Expected::Any);
        let versions = b.commit().await.unwrap();
        assert_eq!(versions.len(), 11);
        assert_eq!(versions[3], Some(2));
        assert_eq!(versions[0], Some(1));
        assert_eq!(versions[10], None);
        let keys: Vec<String> = (0..10).map(|i| format!("i/{i}")).collect();
        let got = s.get_many::<Instance>(&keys).await.unwrap();
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, v)| v.as_ref().unwrap().value == inst(i))
        );
        assert!(s.batch().commit().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_large_batch_is_split_within_the_store_limit() {
        // Room for two or three records per atomic write.
        let raw = Arc::new(MemoryStore::with_max_batch_bytes(120));
        let s = FrameworkStore::new(raw.clone());
        let mut b = s.batch();
        for i in 0..10 {
            b.put(&format!("i/{i}"), &inst(i), Expected::Absent)
                .unwrap();
        }
        let chunks = chunk(&*raw, b.ops.clone()).unwrap();
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        for c in &chunks {
            assert!(c.iter().map(|op| raw.op_bytes(op)).sum::<usize>() <= 120);
        }
        assert_eq!(b.commit().await.unwrap().len(), 10);
        assert_eq!(s.list("i/").await.unwrap().len(), 10);

        // A failure in a later chunk leaves the earlier ones applied, and
        // says how many.
        let mut b = s.batch();
        for i in 10..20 {
            b.put(&format!("i/{i}"), &inst(i), Expected::Absent)
                .unwrap();
        }
        b.put("i/5", &inst(5), Expected::Absent).unwrap();
        match b.commit().await.unwrap_err() {
            KitError::Batch { applied, total, .. } => {
                assert_eq!(total, 11);
                assert!((1..11).contains(&applied), "{applied}");
                assert_eq!(s.list("i/").await.unwrap().len(), 10 + applied);
            }
            other => panic!("{other}"),
        }

        // One record above the limit cannot be written at all.
        let mut b = s.batch();
        b.put("big", &"x".repeat(200), Expected::Any).unwrap();
        assert!(matches!(
            b.commit().await,
            Err(KitError::Store(CoordError::BatchTooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn file_backend_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let backend = StoreBackend::File(dir.path().join("fw/store.redb"));
        {
            let s = FrameworkStore::open(&backend).unwrap();
            let mut b = s.batch();
            b.put("framework-id", "abc-0001", Expected::Absent).unwrap();
            b.put("i/1", &inst(1), Expected::Absent).unwrap();
            b.commit().await.unwrap();
        }
        let s = FrameworkStore::open(&backend).unwrap();
        assert_eq!(
            s.get::<String>("framework-id")
                .await
                .unwrap()
                .unwrap()
                .value,
            "abc-0001"
        );
        // Not ZooKeeper: fencing is a no-op.
        assert_eq!(
            s.fenced(Some("/x/json.info_0000000001"))
                .list("")
                .await
                .unwrap()
                .len(),
            2
        );
    }
}
