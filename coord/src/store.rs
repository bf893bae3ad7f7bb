//! Standalone stores: in memory, or in a local redb file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{CoordError, Entry, Expected, Op, Store, check_unique_keys};

/// The default limit of one atomic batch in the standalone stores: large
/// enough for any batch a framework makes in one go (10,000 records of a few
/// hundred bytes), small enough to keep one write transaction short.
const STANDALONE_MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Refuses a batch above `max`.
fn check_size(store: &dyn Store, ops: &[Op], max: usize) -> Result<(), CoordError> {
    let bytes: usize = ops.iter().map(|op| store.op_bytes(op)).sum();
    if bytes > max {
        return Err(CoordError::BatchTooLarge { bytes, max });
    }
    Ok(())
}

/// Checks `expected` against the current version of `key`.
fn check(key: &str, current: Option<u64>, expected: Expected) -> Result<(), CoordError> {
    let ok = match expected {
        Expected::Any => true,
        Expected::Absent => current.is_none(),
        Expected::Version(v) => current == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(CoordError::Conflict {
            key: key.to_string(),
            expected,
            found: current,
        })
    }
}

/// A store in memory: gone when the process ends.
#[derive(Clone)]
pub struct MemoryStore {
    map: Arc<Mutex<BTreeMap<String, Entry>>>,
    max_batch_bytes: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            map: Arc::default(),
            max_batch_bytes: STANDALONE_MAX_BATCH_BYTES,
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same kind of store with a smaller batch limit (to test what
    /// splits batches, as a ZooKeeper store would need).
    pub fn with_max_batch_bytes(max_batch_bytes: usize) -> Self {
        MemoryStore {
            max_batch_bytes,
            ..Self::default()
        }
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, CoordError> {
        Ok(self.map.lock().expect("store lock").get(key).cloned())
    }

    async fn set(&self, key: &str, value: Vec<u8>, expected: Expected) -> Result<u64, CoordError> {
        let mut map = self.map.lock().expect("store lock");
        let current = map.get(key).map(|e| e.version);
        check(key, current, expected)?;
        let version = current.unwrap_or(0) + 1;
        map.insert(key.to_string(), Entry { value, version });
        Ok(version)
    }

    async fn delete(&self, key: &str, expected: Expected) -> Result<(), CoordError> {
        let mut map = self.map.lock().expect("store lock");
        check(key, map.get(key).map(|e| e.version), expected)?;
        map.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, CoordError> {
        let map = self.map.lock().expect("store lock");
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<Vec<Option<u64>>, CoordError> {
        check_unique_keys(&ops)?;
        check_size(self, &ops, self.max_batch_bytes)?;
        let mut map = self.map.lock().expect("store lock");
        // Check every condition first, then write: all or nothing.
        for op in &ops {
            check(
                op.key(),
                map.get(op.key()).map(|e| e.version),
                op.expected(),
            )?;
        }
        let mut versions = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Set { key, value, .. } => {
                    let version = map.get(&key).map_or(0, |e| e.version) + 1;
                    map.insert(key, Entry { value, version });
                    versions.push(Some(version));
                }
                Op::Delete { key, .. } => {
                    map.remove(&key);
                    versions.push(None);
                }
            }
        }
        Ok(versions)
    }

    fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, CoordError> {
        let map = self.map.lock().expect("store lock");
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
    }
}

/// Key -> (version, value).
const TABLE: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("registry");

/// A store in one local redb file: survives restarts, crash-safe.
#[derive(Clone)]
pub struct FileStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl FileStore {
    /// Opens (or creates) the store at `path`, creating parent directories.
    pub fn open(path: &Path) -> Result<FileStore, CoordError> {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| CoordError::File {
            path: path.display().to_string(),
            source: e,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(Box::new(e)))?;
        }
        let db = Database::create(path).map_err(|e| err(Box::new(e)))?;
        let txn = db.begin_write().map_err(|e| err(Box::new(e)))?;
        txn.open_table(TABLE).map_err(|e| err(Box::new(e)))?;
        txn.commit().map_err(|e| err(Box::new(e)))?;
        Ok(FileStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: impl std::error::Error + Send + Sync + 'static) -> CoordError {
        CoordError::File {
            path: self.path.display().to_string(),
            source: Box::new(e),
        }
    }

    /// Runs blocking database work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileStore) -> Result<T, CoordError> + Send + 'static,
    ) -> Result<T, CoordError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|_| CoordError::Closed)?
    }

    fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        expected: Expected,
    ) -> Result<u64, CoordError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let version;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            let current = table
                .get(key)
                .map_err(|e| self.err(e))?
                .map(|g| g.value().0);
            check(key, current, expected)?;
            version = current.unwrap_or(0) + 1;
            match &value {
                Some(v) => {
                    table
                        .insert(key, (version, v.as_slice()))
                        .map_err(|e| self.err(e))?;
                }
                None => {
                    table.remove(key).map_err(|e| self.err(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(version)
    }

    /// Every op in one write transaction: nothing is committed unless every
    /// condition holds.
    fn write_batch(&self, ops: Vec<Op>) -> Result<Vec<Option<u64>>, CoordError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut versions = Vec::with_capacity(ops.len());
        {
            let mut table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            for op in &ops {
                let current = table
                    .get(op.key())
                    .map_err(|e| self.err(e))?
                    .map(|g| g.value().0);
                // Dropping the transaction uncommitted aborts it.
                check(op.key(), current, op.expected())?;
                match op {
                    Op::Set { key, value, .. } => {
                        let version = current.unwrap_or(0) + 1;
                        table
                            .insert(key.as_str(), (version, value.as_slice()))
                            .map_err(|e| self.err(e))?;
                        versions.push(Some(version));
                    }
                    Op::Delete { key, .. } => {
                        table.remove(key.as_str()).map_err(|e| self.err(e))?;
                        versions.push(None);
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(versions)
    }
}

#[async_trait::async_trait]
impl Store for FileStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, CoordError> {
        let key = key.to_string();
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(|e| s.err(e))?;
            let table = txn.open_table(TABLE).map_err(|e| s.err(e))?;
            Ok(table.get(key.as_str()).map_err(|e| s.err(e))?.map(|g| {
                let (version, value) = g.value();
                Entry {
                    value: value.to_vec(),
                    version,
                }
            }))
        })
        .await
    }

    async fn set(&self, key: &str, value: Vec<u8>, expected: Expected) -> Result<u64, CoordError> {
        let key = key.to_string();
        self.blocking(move |s| s.write(&key, Some(value), expected))
            .await
    }

    async fn delete(&self, key: &str, expected: Expected) -> Result<(), CoordError> {
        let key = key.to_string();
        self.blocking(move |s| s.write(&key, None, expected).map(|_| ()))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, CoordError> {
        let prefix = prefix.to_string();
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(|e| s.err(e))?;
            let table = txn.open_table(TABLE).map_err(|e| s.err(e))?;
            let mut out = Vec::new();
            for item in table.range(prefix.as_str()..).map_err(|e| s.err(e))? {
                let (k, _) = item.map_err(|e| s.err(e))?;
                let k = k.value();
                if !k.starts_with(prefix.as_str()) {
                    break;
                }
                out.push(k.to_string());
            }
            Ok(out)
        })
        .await
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<Vec<Option<u64>>, CoordError> {
        check_unique_keys(&ops)?;
        check_size(self, &ops, STANDALONE_MAX_BATCH_BYTES)?;
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        self.blocking(move |s| s.write_batch(ops)).await
    }

    fn max_batch_bytes(&self) -> usize {
        STANDALONE_MAX_BATCH_BYTES
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, CoordError> {
        let keys = keys.to_vec();
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(|e| s.err(e))?;
            let table = txn.open_table(TABLE).map_err(|e| s.err(e))?;
            keys.iter()
                .map(|key| {
                    Ok(table.get(key.as_str()).map_err(|e| s.err(e))?.map(|g| {
                        let (version, value) = g.value();
                        Entry {
                            value: value.to_vec(),
                            version,
                        }
                    }))
                })
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(store: &dyn Store) {
        assert_eq!(store.get("a/1").await.unwrap(), None);
        assert_eq!(
            store
                .set("a/1", b"x".to_vec(), Expected::Absent)
                .await
                .unwrap(),
            1
        );
        assert!(matches!(
            store.set("a/1", b"y".to_vec(), Expected::Absent).await,
            Err(CoordError::Conflict { found: Some(1), .. })
        ));
        assert!(
            store
                .set("a/1", b"y".to_vec(), Expected::Version(7))
                .await
                .is_err()
        );
        assert_eq!(
            store
                .set("a/1", b"y".to_vec(), Expected::Version(1))
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .set("a/2", b"z".to_vec(), Expected::Any)
                .await
                .unwrap(),
            1
        );
        store
            .set("b/1", b"w".to_vec(), Expected::Any)
            .await
            .unwrap();
        assert_eq!(store.list("a/").await.unwrap(), vec!["a/1", "a/2"]);
        assert_eq!(
            store.get("a/1").await.unwrap(),
            Some(Entry {
                value: b"y".to_vec(),
                version: 2
            })
        );
        assert!(store.delete("a/1", Expected::Version(1)).await.is_err());
        store.delete("a/1", Expected::Version(2)).await.unwrap();
        store.delete("missing", Expected::Any).await.unwrap();
        assert_eq!(store.list("a/").await.unwrap(), vec!["a/2"]);
    }

    fn set(key: &str, value: &str, expected: Expected) -> Op {
        Op::Set {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            expected,
        }
    }

    fn del(key: &str, expected: Expected) -> Op {
        Op::Delete {
            key: key.into(),
            expected,
        }
    }

    /// Batches: all or nothing, versions as single writes give them.
    async fn exercise_batches(store: &dyn Store) {
        assert_eq!(
            store.apply(Vec::new()).await.unwrap(),
            Vec::<Option<u64>>::new()
        );
        let v = store
            .apply(vec![
                set("i/1", "a", Expected::Absent),
                set("i/2", "b", Expected::Any),
                set("j", "c", Expected::Absent),
            ])
            .await
            .unwrap();
        assert_eq!(v, vec![Some(1), Some(1), Some(1)]);

        // One failing condition: nothing of the batch is applied, and the
        // error names the key.
        let err = store
            .apply(vec![
                set("i/1", "a2", Expected::Version(1)),
                set("i/3", "new", Expected::Absent),
                set("i/2", "b2", Expected::Version(5)),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CoordError::Conflict { key, found: Some(1), .. } if key == "i/2"),
            "{err}"
        );
        assert_eq!(store.get("i/1").await.unwrap().unwrap().value, b"a");
        assert_eq!(store.get("i/3").await.unwrap(), None);

        let v = store
            .apply(vec![
                set("i/1", "a2", Expected::Version(1)),
                del("i/2", Expected::Version(1)),
                del("missing", Expected::Any),
                del("also-missing", Expected::Absent),
                set("i/3", "c", Expected::Any),
            ])
            .await
            .unwrap();
        assert_eq!(v, vec![Some(2), None, None, None, Some(1)]);
        assert_eq!(store.list("i/").await.unwrap(), vec!["i/1", "i/3"]);

        // A delete whose condition fails stops the batch too.
        assert!(
            store
                .apply(vec![
                    set("i/4", "d", Expected::Absent),
                    del("i/1", Expected::Absent),
                ])
                .await
                .is_err()
        );
        assert_eq!(store.get("i/4").await.unwrap(), None);

        // A key twice in one batch is refused before anything is written.
        let err = store
            .apply(vec![
                set("i/5", "x", Expected::Any),
                set("i/5", "y", Expected::Any),
            ])
            .await
            .unwrap_err();
        assert!(matches!(err, CoordError::DuplicateKey { .. }), "{err}");
        assert_eq!(store.get("i/5").await.unwrap(), None);

        let keys: Vec<String> = ["i/3", "nope", "i/1", "j"].map(String::from).to_vec();
        let got = store.get_many(&keys).await.unwrap();
        let values: Vec<Option<(&[u8], u64)>> = got
            .iter()
            .map(|e| e.as_ref().map(|e| (e.value.as_slice(), e.version)))
            .collect();
        assert_eq!(
            values,
            vec![
                Some((&b"c"[..], 1)),
                None,
                Some((&b"a2"[..], 2)),
                Some((&b"c"[..], 1))
            ]
        );
        assert!(store.max_batch_bytes() >= 1024 * 1024);
    }

    #[tokio::test]
    async fn memory_store_compare_and_set() {
        exercise(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn memory_store_batches_are_atomic() {
        exercise_batches(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn a_batch_above_the_limit_is_refused_whole() {
        let store = MemoryStore::with_max_batch_bytes(10);
        let err = store
            .apply(vec![
                set("a", "1234", Expected::Any),
                set("b", "12345", Expected::Any),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(err, CoordError::BatchTooLarge { bytes: 11, max: 10 }),
            "{err}"
        );
        assert_eq!(store.list("").await.unwrap(), Vec::<String>::new());
        store
            .apply(vec![set("a", "1234", Expected::Any)])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn file_store_batches_are_atomic_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.redb");
        {
            let s = FileStore::open(&path).unwrap();
            exercise_batches(&s).await;
        }
        let s = FileStore::open(&path).unwrap();
        assert_eq!(s.list("").await.unwrap(), vec!["i/1", "i/3", "j"]);
        assert_eq!(s.get("i/1").await.unwrap().unwrap().version, 2);
    }

    #[tokio::test]
    async fn file_store_compare_and_set_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/registry.redb");
        {
            let s = FileStore::open(&path).unwrap();
            exercise(&s).await;
        }
        let s = FileStore::open(&path).unwrap();
        assert_eq!(s.list("").await.unwrap(), vec!["a/2", "b/1"]);
        assert_eq!(s.get("a/2").await.unwrap().unwrap().value, b"z");
    }
}
