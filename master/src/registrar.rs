//! The registrar: records which frameworks and agents the cluster has, in a
//! [`Store`], so that a master that takes over (or restarts) knows them.
//!
//! Layout: `frameworks/<id>` holds a `FrameworkInfo`, `agents/<id>` an
//! `AgentInfo`, both protobuf-encoded. With ZooKeeper the store is
//! `agora_coord::ZkStore` (under `<zk path>-registry`), its writes fenced on
//! the leader's node.

use std::sync::Arc;
use std::time::Duration;

use agora_coord::{CoordError, Expected, Store};
use agora_proto::v1::{AgentInfo, FrameworkInfo};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::RegistryOp;
use crate::error::MasterError;

const FRAMEWORKS: &str = "frameworks/";
const AGENTS: &str = "agents/";

/// What the registry remembers.
#[derive(Debug, Default)]
pub struct Registry {
    pub frameworks: Vec<FrameworkInfo>,
    pub agents: Vec<AgentInfo>,
}

/// Reads the whole registry (the values of each kind fetched concurrently).
pub async fn load(store: &dyn Store) -> Result<Registry, MasterError> {
    let mut out = Registry::default();
    for (key, value) in read_all(store, FRAMEWORKS).await? {
        match FrameworkInfo::decode(value.as_slice()) {
            Ok(info) => out.frameworks.push(info),
            Err(err) => tracing::warn!(%key, %err, "unreadable registry entry; skipped"),
        }
    }
    for (key, value) in read_all(store, AGENTS).await? {
        match AgentInfo::decode(value.as_slice()) {
            Ok(info) => out.agents.push(info),
            Err(err) => tracing::warn!(%key, %err, "unreadable registry entry; skipped"),
        }
    }
    Ok(out)
}

/// Every key under `prefix` with its value (keys deleted meanwhile left out).
async fn read_all(store: &dyn Store, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, MasterError> {
    let keys = store.list(prefix).await?;
    let values = futures::future::join_all(keys.iter().map(|k| store.get(k))).await;
    let mut out = Vec::with_capacity(keys.len());
    for (key, value) in keys.into_iter().zip(values) {
        if let Some(e) = value? {
            out.push((key, e.value));
        }
    }
    Ok(out)
}

async fn apply(store: &dyn Store, op: &RegistryOp) -> Result<(), CoordError> {
    match op {
        RegistryOp::PutFramework(info) => store
            .set(
                &format!("{FRAMEWORKS}{}", info.id),
                info.encode_to_vec(),
                Expected::Any,
            )
            .await
            .map(|_| ()),
        RegistryOp::RemoveFramework(id) => {
            store
                .delete(&format!("{FRAMEWORKS}{id}"), Expected::Any)
                .await
        }
        RegistryOp::PutAgent(info) => store
            .set(
                &format!("{AGENTS}{}", info.id),
                info.encode_to_vec(),
                Expected::Any,
            )
            .await
            .map(|_| ()),
        RegistryOp::RemoveAgent(id) => store.delete(&format!("{AGENTS}{id}"), Expected::Any).await,
    }
}

/// Applies registry changes in order until the channel closes or the term
/// ends (`cancel`), retrying a failed write with backoff (a change is never
/// skipped). A write refused because this master no longer leads stops it.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    mut ops: mpsc::UnboundedReceiver<RegistryOp>,
    cancel: CancellationToken,
) {
    loop {
        let op = tokio::select! {
            _ = cancel.cancelled() => return,
            op = ops.recv() => match op {
                Some(op) => op,
                // The actor is gone: its end (not this one) says why.
                None => {
                    cancel.cancelled().await;
                    return;
                }
            },
        };
        let mut delay = Duration::from_millis(100);
        loop {
            match apply(store.as_ref(), &op).await {
                Ok(()) => break,
                Err(err @ CoordError::Fenced { .. }) => {
                    // Another master leads: this term ends as soon as the
                    // leadership watch says so. Until then nothing more is
                    // written, and the registrar stays up (its end would
                    // read as a failure of this master).
                    tracing::error!(%err, "registry writes stop");
                    cancel.cancelled().await;
                    return;
                }
                Err(err) => {
                    tracing::error!(%err, ?delay, "registry write failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
