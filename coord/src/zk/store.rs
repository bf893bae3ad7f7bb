//! The registry in ZooKeeper.
//!
//! A key `bucket/name` is the node `<root>/<bucket>/<name>` (each part
//! percent-encoded, so any key is a valid node name); a key without `/` is
//! `<root>/%/<key>`. A value's version is the node's version plus one (1 for
//! a new key, as the [`Store`] trait says).
//!
//! A fenced store ([`ZkStore::fenced`]) makes every write a ZooKeeper
//! transaction that first checks that the leader's node still exists: a
//! master whose session expired can no longer change the registry, even if
//! it has not noticed yet.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use zookeeper_client::{
    Acls, Client, CreateMode, Error as ZkError, MultiWriteError, MultiWriteResult,
};

use super::{Connector, ZkUrl};
use crate::{CoordError, Entry, Expected, Store};

/// The registry, in ZooKeeper under `<path>-registry`.
#[derive(Clone)]
pub struct ZkStore {
    shared: Arc<Shared>,
    /// The leader's node that must exist for a write to happen.
    fence: Option<String>,
}

struct Shared {
    connector: Connector,
    root: String,
    /// The current session; a new one is opened when it ended.
    client: Mutex<Option<Client>>,
}

/// How a transactional write failed.
enum WriteError {
    /// The fence node is gone.
    Fenced,
    /// The write itself failed (no node, bad version, node exists...).
    Op(ZkError),
}

impl ZkStore {
    /// The registry of the masters at `url` (under
    /// [`ZkUrl::registry_path`]). Connects on first use.
    pub fn new(url: &ZkUrl, session_timeout: Duration) -> ZkStore {
        ZkStore {
            shared: Arc::new(Shared {
                connector: Connector::new(url, session_timeout, "registry"),
                root: url.registry_path(),
                client: Mutex::new(None),
            }),
            fence: None,
        }
    }

    /// The same store, writing only while the node `fence` exists (the
    /// leader's node, from [`crate::Leadership::fence`]).
    pub fn fenced(&self, fence: &str) -> ZkStore {
        ZkStore {
            shared: self.shared.clone(),
            fence: Some(fence.to_string()),
        }
    }

    fn zk(&self, what: &str, e: ZkError) -> CoordError {
        self.shared.connector.error(what, e)
    }

    /// The session, opened (once per call) if there is none or it ended.
    async fn client(&self) -> Result<Client, CoordError> {
        let mut slot = self.shared.client.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.state().is_terminated()
        {
            return Ok(c.clone());
        }
        let client = self.shared.connector.connect_once().await?;
        *slot = Some(client.clone());
        Ok(client)
    }

    fn bucket_path(&self, bucket: &str) -> String {
        format!("{}/{}", self.shared.root, escape(bucket))
    }

    fn node(&self, key: &str) -> (String, String) {
        let (bucket, name) = key.split_once('/').unwrap_or(("", key));
        let dir = self.bucket_path(bucket);
        let node = format!("{dir}/{}", escape(name));
        (dir, node)
    }

    async fn version(&self, client: &Client, node: &str) -> Option<u64> {
        match client.check_stat(node).await {
            Ok(Some(stat)) => Some(stat.version as u64 + 1),
            _ => None,
        }
    }

    /// One write, in a transaction with the fence check when fenced.
    async fn write(
        &self,
        client: &Client,
        node: &str,
        op: WriteOp<'_>,
    ) -> Result<Option<i32>, WriteError> {
        let mut writer = client.new_multi_writer();
        let fenced = self.fence.is_some();
        if let Some(fence) = &self.fence {
            writer
                .add_check_version(fence, -1)
                .map_err(WriteError::Op)?;
        }
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        match op {
            WriteOp::Create(data) => writer.add_create(node, data, &persistent),
            WriteOp::Set(data, version) => writer.add_set_data(node, data, version),
            WriteOp::Delete(version) => writer.add_delete(node, version),
        }
        .map_err(WriteError::Op)?;
        match writer.commit().await {
            Ok(results) => Ok(results.into_iter().find_map(|r| match r {
                // A created node has version 0 (a multi's create stat may be
                // invalid: ZOOKEEPER-4026).
                MultiWriteResult::Create { .. } => Some(0),
                MultiWriteResult::SetData { stat } => Some(stat.version.max(0)),
                _ => None,
            })),
            Err(MultiWriteError::OperationFailed { index: 0, .. }) if fenced => {
                Err(WriteError::Fenced)
            }
            Err(MultiWriteError::OperationFailed { source, .. }) => Err(WriteError::Op(source)),
            Err(MultiWriteError::RequestFailed { source }) => Err(WriteError::Op(source)),
        }
    }

    fn fenced_error(&self) -> CoordError {
        CoordError::Fenced {
            fence: self.fence.clone().unwrap_or_default(),
        }
    }

    /// Creates `node` (and its bucket if needed).
    async fn create(
        &self,
        client: &Client,
        dir: &str,
        node: &str,
        value: &[u8],
    ) -> Result<Result<u64, ZkError>, CoordError> {
        for _ in 0..2 {
            match self.write(client, node, WriteOp::Create(value)).await {
                Ok(v) => return Ok(Ok(v.map_or(1, |v| v as u64 + 1))),
                Err(WriteError::Fenced) => return Err(self.fenced_error()),
                Err(WriteError::Op(ZkError::NoNode)) => {
                    let dir_mode = CreateMode::Persistent.with_acls(Acls::anyone_all());
                    client
                        .mkdir(dir, &dir_mode)
                        .await
                        .map_err(|e| self.zk(&format!("cannot create {dir}"), e))?;
                }
                Err(WriteError::Op(e)) => return Ok(Err(e)),
            }
        }
        Ok(Err(ZkError::NoNode))
    }
}

enum WriteOp<'a> {
    Create(&'a [u8]),
    Set(&'a [u8], Option<i32>),
    Delete(Option<i32>),
}

fn conflict(key: &str, expected: Expected, found: Option<u64>) -> CoordError {
    CoordError::Conflict {
        key: key.to_string(),
        expected,
        found,
    }
}

fn zk_version(v: u64) -> Option<i32> {
    // Our versions start at 1, ZooKeeper's at 0.
    i32::try_from(v.checked_sub(1)?).ok()
}

#[async_trait::async_trait]
impl Store for ZkStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, CoordError> {
        let client = self.client().await?;
        let (_, node) = self.node(key);
        match client.get_data(&node).await {
            Ok((value, stat)) => Ok(Some(Entry {
                value,
                version: stat.version as u64 + 1,
            })),
            Err(ZkError::NoNode) => Ok(None),
            Err(e) => Err(self.zk(&format!("cannot read {node}"), e)),
        }
    }

    async fn set(&self, key: &str, value: Vec<u8>, expected: Expected) -> Result<u64, CoordError> {
        let client = self.client().await?;
        let (dir, node) = self.node(key);
        let failed = |e| self.zk(&format!("cannot write {node}"), e);
        match expected {
            Expected::Absent => match self.create(&client, &dir, &node, &value).await? {
                Ok(v) => Ok(v),
                Err(ZkError::NodeExists) => {
                    Err(conflict(key, expected, self.version(&client, &node).await))
                }
                Err(e) => Err(failed(e)),
            },
            Expected::Version(v) => {
                let Some(zv) = zk_version(v) else {
                    return Err(conflict(key, expected, self.version(&client, &node).await));
                };
                match self
                    .write(&client, &node, WriteOp::Set(&value, Some(zv)))
                    .await
                {
                    Ok(nv) => Ok(nv.map_or(v + 1, |nv| nv as u64 + 1)),
                    Err(WriteError::Fenced) => Err(self.fenced_error()),
                    Err(WriteError::Op(ZkError::BadVersion | ZkError::NoNode)) => {
                        Err(conflict(key, expected, self.version(&client, &node).await))
                    }
                    Err(WriteError::Op(e)) => Err(failed(e)),
                }
            }
            Expected::Any => loop {
                match self.write(&client, &node, WriteOp::Set(&value, None)).await {
                    Ok(v) => return Ok(v.map_or(1, |v| v as u64 + 1)),
                    Err(WriteError::Fenced) => return Err(self.fenced_error()),
                    Err(WriteError::Op(ZkError::NoNode)) => {
                        match self.create(&client, &dir, &node, &value).await? {
                            Ok(v) => return Ok(v),
                            // Created meanwhile by someone else: set it.
                            Err(ZkError::NodeExists) => continue,
                            Err(e) => return Err(failed(e)),
                        }
                    }
                    Err(WriteError::Op(e)) => return Err(failed(e)),
                }
            },
        }
    }

    async fn delete(&self, key: &str, expected: Expected) -> Result<(), CoordError> {
        let client = self.client().await?;
        let (_, node) = self.node(key);
        let version = match expected {
            Expected::Any => None,
            Expected::Absent => {
                return match self.version(&client, &node).await {
                    None => Ok(()),
                    found => Err(conflict(key, expected, found)),
                };
            }
            Expected::Version(v) => match zk_version(v) {
                Some(zv) => Some(zv),
                None => return Err(conflict(key, expected, self.version(&client, &node).await)),
            },
        };
        match self.write(&client, &node, WriteOp::Delete(version)).await {
            Ok(_) => Ok(()),
            Err(WriteError::Fenced) => Err(self.fenced_error()),
            Err(WriteError::Op(ZkError::NoNode)) if version.is_none() => Ok(()),
            Err(WriteError::Op(ZkError::NoNode | ZkError::BadVersion)) => {
                Err(conflict(key, expected, self.version(&client, &node).await))
            }
            Err(WriteError::Op(e)) => Err(self.zk(&format!("cannot delete {node}"), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, CoordError> {
        let client = self.client().await?;
        let children = |path: String| {
            let client = client.clone();
            async move {
                match client.list_children(&path).await {
                    Ok(c) => Ok(c),
                    Err(ZkError::NoNode) => Ok(Vec::new()),
                    Err(e) => Err(self.zk(&format!("cannot list {path}"), e)),
                }
            }
        };
        let mut keys = Vec::new();
        let key = |bucket: &str, name: &str| {
            if bucket.is_empty() {
                name.to_string()
            } else {
                format!("{bucket}/{name}")
            }
        };
        if let Some((bucket, rest)) = prefix.split_once('/') {
            for child in children(self.bucket_path(bucket)).await? {
                if let Some(name) = unescape(&child)
                    && name.starts_with(rest)
                {
                    keys.push(key(bucket, &name));
                }
            }
        } else {
            for escaped_bucket in children(self.shared.root.clone()).await? {
                let Some(bucket) = unescape(&escaped_bucket) else {
                    continue;
                };
                // Keys without `/` live in the "" bucket; any other bucket
                // matches when its name starts with the prefix.
                if !bucket.is_empty() && !bucket.starts_with(prefix) {
                    continue;
                }
                for child in children(self.bucket_path(&bucket)).await? {
                    if let Some(name) = unescape(&child) {
                        let k = key(&bucket, &name);
                        if k.starts_with(prefix) {
                            keys.push(k);
                        }
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// A node name for any string: letters, digits, `-` and `_` stay, every
/// other byte becomes `%XX`; the empty string is `%`.
fn escape(s: &str) -> String {
    if s.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for a name it cannot have made.
fn unescape(s: &str) -> Option<String> {
    if s == "%" {
        return Some(String::new());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_key_becomes_a_valid_node_name_and_back() {
        for key in ["", "a", "abc-S0", "x.y", "..", "a/b", "日本", "%", "50%"] {
            let e = escape(key);
            assert!(
                !e.is_empty() && !e.contains('/') && e != "." && e != "..",
                "{key}: {e}"
            );
            assert_eq!(unescape(&e).as_deref(), Some(key));
        }
        assert_eq!(unescape("%G1"), None);
        assert_eq!(unescape("%4"), None);
        assert_eq!(zk_version(1), Some(0));
        assert_eq!(zk_version(0), None);
    }
}
