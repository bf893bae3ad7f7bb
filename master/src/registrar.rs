//! The registrar: records which frameworks and agents the cluster has, in a
//! [`Store`], so that a master that takes over (or restarts) knows them.
//!
//! Layout: `frameworks/<id>` holds a `FrameworkInfo`, `agents/<id>` an
//! `AgentInfo`, both protobuf-encoded.

use std::sync::Arc;
use std::time::Duration;

use agora_coord::{Expected, Store};
use agora_proto::v1::{AgentInfo, FrameworkInfo};
use prost::Message;
use tokio::sync::mpsc;

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

/// Reads the whole registry.
pub async fn load(store: &dyn Store) -> Result<Registry, MasterError> {
    let mut out = Registry::default();
    for key in store.list(FRAMEWORKS).await? {
        if let Some(e) = store.get(&key).await? {
            match FrameworkInfo::decode(e.value.as_slice()) {
                Ok(info) => out.frameworks.push(info),
                Err(err) => tracing::warn!(%key, %err, "unreadable registry entry; skipped"),
            }
        }
    }
    for key in store.list(AGENTS).await? {
        if let Some(e) = store.get(&key).await? {
            match AgentInfo::decode(e.value.as_slice()) {
                Ok(info) => out.agents.push(info),
                Err(err) => tracing::warn!(%key, %err, "unreadable registry entry; skipped"),
            }
        }
    }
    Ok(out)
}

async fn apply(store: &dyn Store, op: &RegistryOp) -> Result<(), agora_coord::CoordError> {
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

/// Applies registry changes in order until the channel closes, retrying a
/// failed write with backoff (a change is never skipped).
pub(crate) async fn run(store: Arc<dyn Store>, mut ops: mpsc::UnboundedReceiver<RegistryOp>) {
    while let Some(op) = ops.recv().await {
        let mut delay = Duration::from_millis(100);
        loop {
            match apply(store.as_ref(), &op).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::error!(%err, ?delay, "registry write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
