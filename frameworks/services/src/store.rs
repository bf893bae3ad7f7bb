//! What the framework keeps in the coord Store, and how.
//!
//! | key | value |
//! | --- | --- |
//! | `apps/<app id>` | the current [`StoredApp`] |
//! | `versions/<app id>@<millis>` | every kept version of an app (the newest [`MAX_VERSIONS`]) |
//! | `instances/<app id>#<shard>` | the app's [`Instance`]s whose id hashes to that shard (of [`SHARDS`]) |
//! | `deployments/<id>` | a running [`Deployment`] |
//! | `failures/<app id>` | the app's last task failure |
//! | `framework-id` | the framework id (kept by the framework kit's session) |
//!
//! Instances are sharded so that a launch or a loss touches a few keys,
//! written together in one batch, never one write per instance; a new leader
//! reads all of them with one listing and one multi-get. Changes are
//! collected in a [`Changes`] and committed in one batch (the kit splits
//! it into as few atomic writes as the store allows).

use std::collections::{BTreeMap, BTreeSet};

use agora_coord::Expected;
use agora_framework_kit::store::FrameworkStore;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ServicesError;
use crate::app::StoredApp;
use crate::deployment::Deployment;
use crate::instance::Instance;
use crate::time::Millis;

/// Versions kept per app (Marathon's `zk_max_versions` default).
pub const MAX_VERSIONS: usize = 50;
/// Instance shards per app: 10,000 instances make about 160 per shard
/// (some 50 KB), well under ZooKeeper's 1 MB node limit.
pub const SHARDS: u32 = 64;

pub fn app_key(app: &str) -> String {
    format!("apps/{app}")
}
pub fn version_key(app: &str, version: Millis) -> String {
    format!("versions/{app}@{version:013}")
}
pub fn versions_prefix(app: &str) -> String {
    format!("versions/{app}@")
}
pub fn shard_of(task_id: &str) -> u32 {
    // FNV-1a: stable across processes and releases (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in task_id.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as u32
}
pub fn shard_key(app: &str, shard: u32) -> String {
    format!("instances/{app}#{shard:02}")
}
pub fn deployment_key(id: &str) -> String {
    format!("deployments/{id}")
}
pub fn failure_key(app: &str) -> String {
    format!("failures/{app}")
}

/// The last task of an app that failed (Marathon's `lastTaskFailure`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    pub app_id: String,
    pub host: String,
    pub message: String,
    pub state: String,
    pub task_id: String,
    pub timestamp: String,
    pub version: String,
    pub slave_id: String,
}

/// Writes to make together.
#[derive(Debug, Default)]
pub struct Changes {
    pub puts: BTreeMap<String, Box<RawValue>>,
    pub deletes: BTreeSet<String>,
}

impl Changes {
    pub fn put<T: Serialize + ?Sized>(&mut self, key: String, value: &T) {
        let raw = serde_json::value::to_raw_value(value).expect("records serialise");
        self.deletes.remove(&key);
        self.puts.insert(key, raw);
    }

    pub fn delete(&mut self, key: String) {
        self.puts.remove(&key);
        self.deletes.insert(key);
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    /// Adds `other`'s writes (later ones win).
    pub fn merge(&mut self, other: Changes) {
        for key in other.deletes {
            self.delete(key);
        }
        for (key, value) in other.puts {
            self.deletes.remove(&key);
            self.puts.insert(key, value);
        }
    }

    /// Writes the given shards of `app` from its instances (deleting the
    /// ones that became empty).
    pub fn put_shards<'a>(
        &mut self,
        app: &str,
        shards: impl IntoIterator<Item = u32>,
        instances: impl Iterator<Item = &'a Instance>,
    ) {
        // One pass over the instances, whatever the number of shards.
        let mut members: BTreeMap<u32, Vec<&Instance>> =
            shards.into_iter().map(|s| (s, Vec::new())).collect();
        for i in instances {
            if let Some(m) = members.get_mut(&shard_of(&i.task_id)) {
                m.push(i);
            }
        }
        for (shard, members) in members {
            let key = shard_key(app, shard);
            if members.is_empty() {
                self.delete(key);
            } else {
                self.put(key, &members);
            }
        }
    }
}

/// Everything the framework had stored, as a new leader reads it.
#[derive(Debug, Default)]
pub struct Loaded {
    pub apps: BTreeMap<String, StoredApp>,
    /// Kept versions per app, oldest first.
    pub versions: BTreeMap<String, Vec<Millis>>,
    pub instances: BTreeMap<String, Vec<Instance>>,
    pub deployments: Vec<Deployment>,
    pub failures: BTreeMap<String, TaskFailure>,
}

/// The store, as the framework uses it: the framework kit's store (fenced
/// to the current term of leadership while it leads).
#[derive(Clone, Debug)]
pub struct Records {
    store: FrameworkStore,
}

impl Records {
    pub fn new(store: FrameworkStore) -> Records {
        Records { store }
    }

    pub fn store(&self) -> &FrameworkStore {
        &self.store
    }

    /// Reads every record: one listing and one multi-get per kind.
    pub async fn load(&self) -> Result<Loaded, ServicesError> {
        let mut loaded = Loaded::default();
        for (_, app) in self.store.load_prefix::<StoredApp>("apps/").await? {
            loaded
                .apps
                .insert(app.value.definition.id.clone(), app.value);
        }
        for key in self.store.list("versions/").await? {
            if let Some((app, v)) = key
                .strip_prefix("versions/")
                .and_then(|rest| rest.rsplit_once('@'))
                && let Ok(v) = v.parse::<Millis>()
            {
                loaded.versions.entry(app.to_string()).or_default().push(v);
            }
        }
        for v in loaded.versions.values_mut() {
            v.sort_unstable();
        }
        for (_, members) in self
            .store
            .load_prefix::<Vec<Instance>>("instances/")
            .await?
        {
            for i in members.value {
                loaded
                    .instances
                    .entry(i.app_id.clone())
                    .or_default()
                    .push(i);
            }
        }
        for (_, d) in self.store.load_prefix::<Deployment>("deployments/").await? {
            loaded.deployments.push(d.value);
        }
        for (_, f) in self.store.load_prefix::<TaskFailure>("failures/").await? {
            loaded.failures.insert(f.value.app_id.clone(), f.value);
        }
        Ok(loaded)
    }

    /// One stored version of an app.
    pub async fn version(
        &self,
        app: &str,
        version: Millis,
    ) -> Result<Option<StoredApp>, ServicesError> {
        Ok(self
            .store
            .get::<StoredApp>(&version_key(app, version))
            .await?
            .map(|v| v.value))
    }

    /// Writes `changes` in as few atomic batches as the store allows.
    pub async fn commit(&self, changes: Changes) -> Result<(), ServicesError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = self.store.batch();
        for (key, value) in &changes.puts {
            batch.put(key, value, Expected::Any)?;
        }
        for key in &changes.deletes {
            batch.delete(key, Expected::Any);
        }
        batch.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_merge_later_writes_over_earlier_ones() {
        let mut a = Changes::default();
        a.put("k1".into(), &1);
        a.delete("k2".into());
        let mut b = Changes::default();
        b.delete("k1".into());
        b.put("k2".into(), &2);
        b.put("k3".into(), &3);
        a.merge(b);
        assert_eq!(a.deletes.iter().collect::<Vec<_>>(), ["k1"]);
        assert_eq!(a.puts.keys().collect::<Vec<_>>(), ["k2", "k3"]);
        assert_eq!(a.puts["k2"].get(), "2");
        assert_eq!(a.len(), 3);
    }

    #[tokio::test]
    async fn records_round_trip_through_a_store() {
        let records = Records::new(FrameworkStore::memory());
        let app: crate::app::AppDefinition =
            serde_json::from_value(serde_json::json!({"id": "/a", "cmd": "x"})).unwrap();
        let stored = StoredApp {
            definition: app,
            version: 5,
            last_scaling_at: 5,
            last_config_change_at: 5,
        };
        let mut c = Changes::default();
        c.put(app_key("/a"), &stored);
        c.put(version_key("/a", 5), &stored);
        records.commit(c).await.unwrap();
        let loaded = records.load().await.unwrap();
        assert_eq!(loaded.apps["/a"], stored);
        assert_eq!(loaded.versions["/a"], [5]);
        assert_eq!(records.version("/a", 5).await.unwrap(), Some(stored));
        assert_eq!(records.version("/a", 6).await.unwrap(), None);
    }

    #[test]
    fn keys_sort_and_split() {
        assert!(version_key("/a", 5) < version_key("/a", 40));
        assert_eq!(shard_key("/team/web", 3), "instances//team/web#03");
        assert!(shard_of("web.1234") < SHARDS);
        assert_eq!(shard_of("web.1234"), shard_of("web.1234"));
    }
}
