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
/// Ids of removed frameworks (the value is empty): a framework torn down
/// or timed out before a failover stays removed after it.
const REMOVED_FRAMEWORKS: &str = "removed-frameworks/";

/// What the registry remembers.
#[derive(Debug, Default)]
pub struct Registry {
    pub frameworks: Vec<FrameworkInfo>,
    pub agents: Vec<AgentInfo>,
    /// Ids of frameworks the master removed.
    pub removed_frameworks: Vec<String>,
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
    out.removed_frameworks = store
        .list(REMOVED_FRAMEWORKS)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(REMOVED_FRAMEWORKS).map(str::to_string))
        .collect();
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
            // The mark first: a failure between the two leaves a framework
            // both known and removed, which reads as removed.
            store
                .set(
                    &format!("{REMOVED_FRAMEWORKS}{id}"),
                    Vec::new(),
                    Expected::Any,
                )
                .await?;
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use agora_allocator::AllocatorConfig;
    use agora_coord::MemoryStore;
    use agora_proto::v1::{self, MasterInfo, call, event};

    use super::*;
    use crate::core::{CoreConfig, MasterCore, Now};

    fn core(id: &str, now: Now) -> MasterCore {
        let info = MasterInfo {
            id: id.into(),
            ..Default::default()
        };
        MasterCore::new(info, CoreConfig::default(), AllocatorConfig::default(), now)
    }

    fn subscribe(id: &str) -> v1::Subscribe {
        v1::Subscribe {
            framework_info: Some(FrameworkInfo {
                id: id.into(),
                name: "f".into(),
                failover_timeout: 3600.0,
                ..Default::default()
            }),
        }
    }

    async fn write(store: &dyn Store, core: &mut MasterCore) -> crate::core::Outbox {
        let mut out = core.take_outbox();
        for op in out.registry.drain(..) {
            apply(store, &op).await.expect("the store takes the write");
        }
        out
    }

    /// A framework torn down before a failover cannot subscribe again after
    /// it: the registry remembers that it was removed.
    #[tokio::test]
    async fn a_framework_torn_down_before_a_failover_cannot_resubscribe_after_it() {
        let store = MemoryStore::new();
        let now = Now {
            instant: Instant::now(),
            unix: 1_700_000_000.0,
        };
        let mut first = core("m1", now);
        first.framework_subscribe(1, subscribe(""), now);
        let out = write(&store, &mut first).await;
        let id = match out.frameworks[&1][0].to_event().event {
            Some(event::Event::Subscribed(s)) => s.framework_id,
            other => panic!("expected subscribed, got {other:?}"),
        };
        assert_eq!(load(&store).await.unwrap().frameworks.len(), 1);
        first.framework_call(1, call::Call::Teardown(v1::Teardown {}), now);
        write(&store, &mut first).await;

        // The next leader.
        let registry = load(&store).await.unwrap();
        assert!(registry.frameworks.is_empty(), "{registry:?}");
        assert_eq!(registry.removed_frameworks, vec![id.clone()]);
        let mut second = core("m2", now);
        second.recover(registry.frameworks, registry.agents, now);
        second.recover_removed(registry.removed_frameworks);
        second.framework_subscribe(7, subscribe(&id), now);
        let out = second.take_outbox();
        match out.frameworks[&7][0].to_event().event {
            Some(event::Event::Error(e)) => {
                assert!(e.message.contains("removed"), "{}", e.message)
            }
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(out.close.contains(&7));
        assert!(out.registry.is_empty(), "{:?}", out.registry);
        // A new framework still subscribes.
        second.framework_subscribe(8, subscribe(""), now);
        let out = second.take_outbox();
        assert!(matches!(
            out.frameworks[&8][0].to_event().event,
            Some(event::Event::Subscribed(_))
        ));
    }
}
