//! Standalone stores: in memory, or in a local redb file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{CoordError, Entry, Expected, Store};

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
#[derive(Default, Clone)]
pub struct MemoryStore {
    map: Arc<Mutex<BTreeMap<String, Entry>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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

    #[tokio::test]
    async fn memory_store_compare_and_set() {
        exercise(&MemoryStore::new()).await;
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
