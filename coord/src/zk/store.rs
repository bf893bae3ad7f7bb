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

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use zookeeper_client::{
    Acls, Client, CreateMode, Error as ZkError, MultiReadResult, MultiWriteError, MultiWriteResult,
};

use super::{Connector, ZkUrl};
use crate::{CoordError, Entry, Expected, Op, Store, check_unique_keys};

/// What one op of a `multi` costs on top of its node path and value: the op
/// header, length prefixes, a create's ACL, flags and version (about 60
/// bytes), and the result coming back (a stat of 68 bytes).
const MULTI_OP_OVERHEAD: usize = 128;

/// The most one `multi` carries. ZooKeeper refuses (by closing the
/// connection) a request above its `jute.maxbuffer`, 1 MiB - 1 by default;
/// well below that, a batch also stays quick for the server to apply: the
/// client takes a connection for dead when an answer is later than 2/5 of
/// the session timeout (800 ms for a 2 s session), and a cold or busy
/// server needs well over that for a 1 MB multi. 256 KiB is about 700
/// records of 200 bytes.
const MAX_MULTI_BYTES: usize = 256 * 1024;

/// Keys read by one multi-read request in `get_many`.
const READ_BATCH: usize = 500;

/// Multi-read requests kept in flight at once by `get_many`.
const READ_BATCHES_IN_FLIGHT: usize = 4;

/// Single reads kept in flight at once when the server has no multi-read
/// (ZooKeeper before 3.6).
const READ_WINDOW: usize = 1024;

/// How often `apply` starts over when a concurrent writer changed what an
/// `Expected::Any` op had found (created or deleted the node meanwhile).
const APPLY_RETRIES: usize = 5;

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
    /// Bucket nodes known to exist, so that a batch creates them only once.
    buckets: std::sync::Mutex<HashSet<String>>,
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
                buckets: std::sync::Mutex::new(HashSet::new()),
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

/// How one op of a batch goes into the `multi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planned {
    Create,
    SetData(Option<i32>),
    Delete(Option<i32>),
    /// Nothing to write (deleting a node that does not exist).
    Skip,
}

/// How one attempt at a batch ended.
enum Attempt {
    Done(Vec<Option<u64>>),
    /// A concurrent writer or a vanished bucket: plan again.
    Again,
}

impl ZkStore {
    /// Whether each of `nodes` exists, read in one pipeline.
    async fn exist(&self, client: &Client, nodes: &[&str]) -> Result<Vec<bool>, CoordError> {
        let pending: Vec<_> = nodes.iter().map(|n| client.check_stat(n)).collect();
        let mut out = Vec::with_capacity(nodes.len());
        for (node, stat) in nodes.iter().zip(pending) {
            let stat = stat
                .await
                .map_err(|e| self.zk(&format!("cannot read {node}"), e))?;
            out.push(stat.is_some());
        }
        Ok(out)
    }

    /// Creates the bucket nodes of `dirs` that are not known to exist.
    async fn ensure_buckets(&self, client: &Client, dirs: &[&str]) -> Result<(), CoordError> {
        let missing: Vec<String> = {
            let known = self.shared.buckets.lock().expect("bucket cache");
            let mut missing: Vec<String> = dirs
                .iter()
                .filter(|d| !known.contains(**d))
                .map(|d| d.to_string())
                .collect();
            missing.sort();
            missing.dedup();
            missing
        };
        let dir_mode = CreateMode::Persistent.with_acls(Acls::anyone_all());
        for dir in missing {
            client
                .mkdir(&dir, &dir_mode)
                .await
                .map_err(|e| self.zk(&format!("cannot create {dir}"), e))?;
            self.shared
                .buckets
                .lock()
                .expect("bucket cache")
                .insert(dir);
        }
        Ok(())
    }

    /// One attempt at a batch: reads what the plan depends on, then one
    /// `multi`.
    async fn apply_once(
        &self,
        client: &Client,
        ops: &[Op],
        nodes: &[(String, String)],
    ) -> Result<Attempt, CoordError> {
        // Whether the nodes exist, where the op depends on it.
        let depends: Vec<usize> = (0..ops.len())
            .filter(|&i| {
                matches!(
                    &ops[i],
                    Op::Set {
                        expected: Expected::Any,
                        ..
                    } | Op::Delete {
                        expected: Expected::Any | Expected::Absent,
                        ..
                    }
                )
            })
            .collect();
        let paths: Vec<&str> = depends.iter().map(|&i| nodes[i].1.as_str()).collect();
        let mut exists: Vec<Option<bool>> = vec![None; ops.len()];
        for (i, e) in depends.iter().zip(self.exist(client, &paths).await?) {
            exists[*i] = Some(e);
        }
        let mut plan = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let node = &nodes[i].1;
            let p = match op {
                Op::Set { expected, .. } => match expected {
                    Expected::Absent => Planned::Create,
                    Expected::Any if exists[i] == Some(true) => Planned::SetData(None),
                    Expected::Any => Planned::Create,
                    Expected::Version(v) => match zk_version(*v) {
                        Some(zv) => Planned::SetData(Some(zv)),
                        None => {
                            return Err(conflict(
                                op.key(),
                                *expected,
                                self.version(client, node).await,
                            ));
                        }
                    },
                },
                Op::Delete { expected, .. } => match expected {
                    Expected::Any if exists[i] == Some(true) => Planned::Delete(None),
                    Expected::Any => Planned::Skip,
                    Expected::Absent if exists[i] == Some(true) => {
                        return Err(conflict(
                            op.key(),
                            *expected,
                            self.version(client, node).await,
                        ));
                    }
                    Expected::Absent => Planned::Skip,
                    Expected::Version(v) => match zk_version(*v) {
                        Some(zv) => Planned::Delete(Some(zv)),
                        None => {
                            return Err(conflict(
                                op.key(),
                                *expected,
                                self.version(client, node).await,
                            ));
                        }
                    },
                },
            };
            plan.push(p);
        }
        let dirs: Vec<&str> = plan
            .iter()
            .zip(nodes)
            .filter(|(p, _)| **p == Planned::Create)
            .map(|(_, (dir, _))| dir.as_str())
            .collect();
        self.ensure_buckets(client, &dirs).await?;

        let mut writer = client.new_multi_writer();
        let offset = usize::from(self.fence.is_some());
        if let Some(fence) = &self.fence {
            writer
                .add_check_version(fence, -1)
                .map_err(|e| self.zk("cannot check the fence", e))?;
        }
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        // The op behind each entry of the multi.
        let mut op_of = Vec::with_capacity(ops.len());
        for (i, (op, p)) in ops.iter().zip(&plan).enumerate() {
            let node = nodes[i].1.as_str();
            let value: &[u8] = match op {
                Op::Set { value, .. } => value,
                Op::Delete { .. } => &[],
            };
            let added = match p {
                Planned::Create => writer.add_create(node, value, &persistent),
                Planned::SetData(v) => writer.add_set_data(node, value, *v),
                Planned::Delete(v) => writer.add_delete(node, *v),
                Planned::Skip => continue,
            };
            added.map_err(|e| self.zk(&format!("cannot write {node}"), e))?;
            op_of.push(i);
        }
        if op_of.is_empty() && self.fence.is_none() {
            return Ok(Attempt::Done(vec![None; ops.len()]));
        }
        match writer.commit().await {
            Ok(results) => {
                let mut versions = vec![None; ops.len()];
                for (i, r) in op_of.iter().zip(results.into_iter().skip(offset)) {
                    versions[*i] = match r {
                        // A created node has version 0 (a multi's create
                        // stat may be invalid: ZOOKEEPER-4026).
                        MultiWriteResult::Create { .. } => Some(1),
                        MultiWriteResult::SetData { stat } => Some(stat.version.max(0) as u64 + 1),
                        _ => None,
                    };
                }
                Ok(Attempt::Done(versions))
            }
            Err(MultiWriteError::OperationFailed { index: 0, .. }) if offset == 1 => {
                Err(self.fenced_error())
            }
            Err(MultiWriteError::OperationFailed { index, source }) => {
                let Some(&i) = index.checked_sub(offset).and_then(|j| op_of.get(j)) else {
                    return Err(self.zk("a batch failed", source));
                };
                let (op, (dir, node)) = (&ops[i], &nodes[i]);
                let expected = op.expected();
                match (plan[i], source) {
                    (Planned::Create, ZkError::NoNode) => {
                        // The bucket went away (deleted by hand): create it again.
                        self.shared
                            .buckets
                            .lock()
                            .expect("bucket cache")
                            .remove(dir);
                        Ok(Attempt::Again)
                    }
                    // Created or deleted meanwhile by another writer: plan again.
                    (Planned::Create, ZkError::NodeExists) if expected == Expected::Any => {
                        Ok(Attempt::Again)
                    }
                    (Planned::SetData(None) | Planned::Delete(None), ZkError::NoNode) => {
                        Ok(Attempt::Again)
                    }
                    (
                        Planned::Create | Planned::SetData(Some(_)) | Planned::Delete(Some(_)),
                        ZkError::NodeExists | ZkError::NoNode | ZkError::BadVersion,
                    ) => Err(conflict(
                        op.key(),
                        expected,
                        self.version(client, node).await,
                    )),
                    (_, e) => Err(self.zk(&format!("cannot write {node} in a batch"), e)),
                }
            }
            Err(MultiWriteError::RequestFailed { source }) => Err(self.zk(
                &format!("cannot apply a batch of {} writes", op_of.len()),
                source,
            )),
        }
    }
}

/// Why a multi-read `get_many` failed.
enum MultiRead {
    /// The server does not know multi-reads (before 3.6).
    Unsupported,
    Failed(CoordError),
}

impl ZkStore {
    /// `get_many` in multi-read requests of [`READ_BATCH`] keys, a few in
    /// flight at once.
    async fn get_many_multi(
        &self,
        client: &Client,
        keys: &[String],
    ) -> Result<Vec<Option<Entry>>, MultiRead> {
        let mut out = Vec::with_capacity(keys.len());
        let mut batches = keys.chunks(READ_BATCH);
        let mut in_flight = VecDeque::with_capacity(READ_BATCHES_IN_FLIGHT);
        loop {
            while in_flight.len() < READ_BATCHES_IN_FLIGHT {
                let Some(batch) = batches.next() else { break };
                let mut reader = client.new_multi_reader();
                for key in batch {
                    let (_, node) = self.node(key);
                    reader.add_get_data(&node).map_err(|e| {
                        MultiRead::Failed(self.zk(&format!("cannot read {node}"), e))
                    })?;
                }
                // The request goes out now; its answer is awaited in order.
                in_flight.push_back((batch, reader.commit()));
            }
            let Some((batch, answer)) = in_flight.pop_front() else {
                break;
            };
            let results = match answer.await {
                Ok(r) => r,
                Err(ZkError::Unimplemented) if out.is_empty() => {
                    return Err(MultiRead::Unsupported);
                }
                Err(e) => {
                    return Err(MultiRead::Failed(
                        self.zk(&format!("cannot read {} keys", batch.len()), e),
                    ));
                }
            };
            for (key, r) in batch.iter().zip(results) {
                out.push(match r {
                    MultiReadResult::Data { data, stat } => Some(Entry {
                        value: data,
                        version: stat.version as u64 + 1,
                    }),
                    MultiReadResult::Error {
                        err: ZkError::NoNode,
                    } => None,
                    MultiReadResult::Error { err } => {
                        return Err(MultiRead::Failed(
                            self.zk(&format!("cannot read {}", self.node(key).1), err),
                        ));
                    }
                    // Only data reads were asked for.
                    _ => None,
                });
            }
        }
        Ok(out)
    }

    /// `get_many` as single reads, a window of them in flight.
    async fn get_many_pipelined(
        &self,
        client: &Client,
        keys: &[String],
    ) -> Result<Vec<Option<Entry>>, CoordError> {
        let mut out = Vec::with_capacity(keys.len());
        let mut in_flight = VecDeque::with_capacity(READ_WINDOW.min(keys.len()));
        let mut next = keys.iter();
        loop {
            while in_flight.len() < READ_WINDOW {
                let Some(key) = next.next() else { break };
                let (_, node) = self.node(key);
                let read = client.get_data(&node);
                in_flight.push_back((node, read));
            }
            let Some((node, read)) = in_flight.pop_front() else {
                break;
            };
            match read.await {
                Ok((value, stat)) => out.push(Some(Entry {
                    value,
                    version: stat.version as u64 + 1,
                })),
                Err(ZkError::NoNode) => out.push(None),
                Err(e) => return Err(self.zk(&format!("cannot read {node}"), e)),
            }
        }
        Ok(out)
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

    async fn apply(&self, ops: Vec<Op>) -> Result<Vec<Option<u64>>, CoordError> {
        check_unique_keys(&ops)?;
        let bytes: usize = ops.iter().map(|op| self.op_bytes(op)).sum();
        if bytes > MAX_MULTI_BYTES {
            return Err(CoordError::BatchTooLarge {
                bytes,
                max: MAX_MULTI_BYTES,
            });
        }
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let nodes: Vec<(String, String)> = ops.iter().map(|op| self.node(op.key())).collect();
        for _ in 0..APPLY_RETRIES {
            if let Attempt::Done(versions) = self.apply_once(&client, &ops, &nodes).await? {
                return Ok(versions);
            }
        }
        Err(self.zk(
            &format!(
                "a batch of {} writes kept racing with other writers ({APPLY_RETRIES} attempts)",
                ops.len()
            ),
            ZkError::BadVersion,
        ))
    }

    fn op_bytes(&self, op: &Op) -> usize {
        let (_, node) = self.node(op.key());
        let value = match op {
            Op::Set { value, .. } => value.len(),
            Op::Delete { .. } => 0,
        };
        node.len() + value + MULTI_OP_OVERHEAD
    }

    fn max_batch_bytes(&self) -> usize {
        MAX_MULTI_BYTES
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, CoordError> {
        let client = self.client().await?;
        match self.get_many_multi(&client, keys).await {
            Err(MultiRead::Unsupported) => self.get_many_pipelined(&client, keys).await,
            Err(MultiRead::Failed(e)) => Err(e),
            Ok(entries) => Ok(entries),
        }
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
