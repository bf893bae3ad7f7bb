//! Leader election: each master holds an ephemeral sequential
//! `json.info_NNNNNNNNNN` node; the lowest number leads.
//!
//! ```text
//!   Connecting --session--> Queued --lowest node--> Leading --session lost,
//!       ^                     |                        |     node deleted,
//!       +---- session lost ---+                        |     or dropped
//!                                                      v
//!                                                  Lost (session closed)
//! ```
//!
//! A leader stops leading as soon as its session may be gone: when it
//! expires, when the node disappears, or when the client has been
//! disconnected from every server for a third of the session timeout. The
//! client notices a silent server within 2/5 of the timeout, so the master
//! has stepped down before ZooKeeper can expire the session and let another
//! master lead: two masters never lead at once.

use std::time::Duration;

use agora_proto::v1::MasterInfo;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use zookeeper_client::{Acls, Client, CreateMode, EventType, SessionState};

use super::{
    Backoff, Connector, LEADER_PREFIX, ZkUrl, contenders, master_info_to_json, session_ended,
};
use crate::{Contender, CoordError, Leadership};

/// Contends for leadership through ZooKeeper.
pub struct ZkContender {
    connector: Connector,
    path: String,
}

impl ZkContender {
    pub fn new(url: &ZkUrl, session_timeout: Duration) -> ZkContender {
        ZkContender {
            connector: Connector::new(url, session_timeout, "leader election"),
            path: url.path().to_string(),
        }
    }

    /// Creates this master's node and waits until it is the lowest. Errors
    /// when the session is lost meanwhile.
    async fn queue(&self, client: &Client, data: &[u8]) -> Result<String, CoordError> {
        let zk = |what: &str, e| self.connector.error(what, e);
        let dir = CreateMode::Persistent.with_acls(Acls::anyone_all());
        client
            .mkdir(&self.path, &dir)
            .await
            .map_err(|e| zk(&format!("cannot create {}", self.path), e))?;
        let node = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
        let (_, seq) = client
            .create(&format!("{}/{LEADER_PREFIX}", self.path), data, &node)
            .await
            .map_err(|e| zk("cannot create this master's node", e))?;
        let name = format!("{LEADER_PREFIX}{seq}");
        let znode = format!("{}/{name}", self.path);
        tracing::info!(%znode, "contending for leadership");
        let mut state = client.state_watcher();
        let mut announced = false;
        loop {
            let children = client
                .list_children(&self.path)
                .await
                .map_err(|e| zk("cannot list the masters", e))?;
            let queue = contenders(children);
            let Some(pos) = queue.iter().position(|c| *c == name) else {
                return Err(zk(
                    &format!("this master's node {znode} vanished"),
                    zookeeper_client::Error::NoNode,
                ));
            };
            if pos == 0 {
                return Ok(znode);
            }
            // Watch only the node just ahead (no herd when a leader goes).
            let ahead = format!("{}/{}", self.path, queue[pos - 1]);
            let (stat, watcher) = client
                .check_and_watch_stat(&ahead)
                .await
                .map_err(|e| zk("cannot watch the masters", e))?;
            if stat.is_none() {
                continue;
            }
            if !announced {
                tracing::info!(%znode, waiting_for = %ahead, "standing by: another master leads or is ahead in line");
                announced = true;
            }
            tokio::select! {
                _ = watcher.changed() => {}
                e = session_ended(&mut state) => return Err(zk("the session ended while standing by", e)),
            }
        }
    }
}

#[async_trait::async_trait]
impl Contender for ZkContender {
    async fn contend(&self, info: MasterInfo) -> Result<Leadership, CoordError> {
        let data = master_info_to_json(&info);
        let mut backoff = Backoff::new();
        loop {
            let client = self.connector.connect().await;
            match self.queue(&client, &data).await {
                Ok(znode) => {
                    let timeout = client.session_timeout();
                    let (lost_tx, lost_rx) = watch::channel(false);
                    let (withdraw_tx, withdraw_rx) = oneshot::channel();
                    tracing::info!(%znode, session_timeout = ?timeout, "elected: this master leads");
                    tokio::spawn(hold(
                        client,
                        znode.clone(),
                        timeout / 3,
                        lost_tx,
                        withdraw_rx,
                    ));
                    return Ok(Leadership::new(lost_rx, None)
                        .with_fence(znode)
                        .with_resign(withdraw_tx));
                }
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(retry_in = ?delay, "{e}; contending again with a new session");
                    drop(client);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Why a leader stopped leading.
fn lost(lost_tx: &watch::Sender<bool>, znode: &str, why: &str) {
    tracing::error!(%znode, "lost leadership: {why}; stepping down");
    lost_tx.send_replace(true);
}

/// Holds the leader's session while it leads: turns `lost_tx` true as soon
/// as leadership may be gone, and deletes the node (and answers) when the
/// leadership resigns or is dropped.
async fn hold(
    client: Client,
    znode: String,
    grace: Duration,
    lost_tx: watch::Sender<bool>,
    mut withdraw: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let mut state = client.state_watcher();
    let mut disconnected_until = match state.peek_state() {
        SessionState::SyncConnected | SessionState::ConnectedReadOnly => None,
        _ => {
            tracing::warn!(%znode, ?grace, "disconnected from ZooKeeper; stepping down unless reconnected in time");
            Some(Instant::now() + grace)
        }
    };
    let mut node = Box::pin(watch_node(client.clone(), znode.clone()));
    let why = loop {
        tokio::select! {
            resigned = &mut withdraw => {
                // Leadership given up (resigned, or the leadership dropped):
                // delete the node so the next master takes over at once.
                let _ = tokio::time::timeout(Duration::from_secs(1), client.delete(&znode, None)).await;
                tracing::info!(%znode, "withdrew from leadership");
                if let Ok(done) = resigned {
                    let _ = done.send(());
                }
                return;
            }
            why = &mut node => break why,
            s = state.changed() => match s {
                SessionState::Disconnected => {
                    tracing::warn!(%znode, ?grace, "disconnected from ZooKeeper; stepping down unless reconnected in time");
                    disconnected_until = Some(Instant::now() + grace);
                }
                SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                    if disconnected_until.take().is_some() {
                        tracing::info!(%znode, "reconnected to ZooKeeper; still leading");
                    }
                }
                other => break format!("the ZooKeeper session ended ({other:?})"),
            },
            _ = sleep_until(disconnected_until), if disconnected_until.is_some() => {
                break format!("disconnected from ZooKeeper for {grace:?}, a third of the session timeout");
            }
        }
    };
    lost(&lost_tx, &znode, &why);
    // Dropping the clients closes the session (when a server can still be
    // reached), which deletes the node; otherwise ZooKeeper expires it.
    drop(node);
    drop(client);
    if let Ok(done) = withdraw.await {
        let _ = done.send(());
    }
}

/// Watches the leader's node; resolves with why leadership is gone.
async fn watch_node(client: Client, znode: String) -> String {
    loop {
        let watcher = match client.check_and_watch_stat(&znode).await {
            Ok((Some(_), w)) => w,
            Ok((None, _)) => return "this master's node is gone".into(),
            Err(e) => return format!("cannot watch this master's node: {e}"),
        };
        let event = watcher.changed().await;
        match event.event_type {
            EventType::NodeDeleted => return "this master's node was deleted".into(),
            EventType::Session => {
                return format!("the ZooKeeper session ended ({:?})", event.session_state);
            }
            _ => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
