//! Leader detection: follows the lowest `json.info_` node under the path.
//!
//! ```text
//!   Connecting --session--> Reading --children/data--> Watching
//!       ^                      ^                          |
//!       |                      +------ a child changed ---+
//!       +---------- session expired / closed -------------+
//! ```
//!
//! While the session is down the last known leader stays published (a
//! client keeps trying it, and is refused or redirected if it is stale);
//! `None` means ZooKeeper said that no master leads.

use std::time::Duration;

use agora_proto::v1::MasterInfo;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client::{Client, Error as ZkError};

use super::{Backoff, Connector, ZkUrl, contenders, master_info_from_json, session_ended};
use crate::{CoordError, Detector};

/// Who leads, according to ZooKeeper. Stops following when dropped.
pub struct ZkDetector {
    leader: watch::Sender<Option<MasterInfo>>,
    members: watch::Sender<Vec<MasterInfo>>,
    task: JoinHandle<()>,
}

impl ZkDetector {
    /// Starts following the leader at `url` (in the background: call it
    /// inside a Tokio runtime).
    pub fn start(url: &ZkUrl, session_timeout: Duration) -> ZkDetector {
        let (leader, _) = watch::channel(None);
        let (members, _) = watch::channel(Vec::new());
        let connector = Connector::new(url, session_timeout, "leader detection");
        let out = Published {
            leader: leader.clone(),
            members: members.clone(),
        };
        let task = tokio::spawn(follow(connector, url.path().to_string(), out));
        ZkDetector {
            leader,
            members,
            task,
        }
    }
}

impl Drop for ZkDetector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Detector for ZkDetector {
    fn leader(&self) -> watch::Receiver<Option<MasterInfo>> {
        self.leader.subscribe()
    }

    fn members(&self) -> watch::Receiver<Vec<MasterInfo>> {
        self.members.subscribe()
    }
}

/// What the detector publishes: the leader, and every contender.
struct Published {
    leader: watch::Sender<Option<MasterInfo>>,
    members: watch::Sender<Vec<MasterInfo>>,
}

fn publish(tx: &watch::Sender<Option<MasterInfo>>, leader: Option<MasterInfo>) {
    tx.send_if_modified(|current| {
        if *current == leader {
            return false;
        }
        match &leader {
            Some(l) => tracing::info!(leader_id = %l.id, leader = %format!("{}:{}", l.ip, l.port), "the leading master is known"),
            None => tracing::warn!("no master leads at the moment"),
        }
        *current = leader;
        true
    });
}

async fn follow(connector: Connector, path: String, tx: Published) {
    let mut backoff = Backoff::new();
    loop {
        let client = connector.connect().await;
        let e = watch_leader(&connector, &client, &path, &tx).await;
        let delay = backoff.next();
        tracing::warn!(retry_in = ?delay, "{e}; following the leader again with a new session");
        drop(client);
        tokio::time::sleep(delay).await;
    }
}

/// Reads and watches the leader until the session ends.
async fn watch_leader(
    connector: &Connector,
    client: &Client,
    path: &str,
    tx: &Published,
) -> CoordError {
    let zk = |what: &str, e| connector.error(what, e);
    let mut state = client.state_watcher();
    loop {
        let (children, watcher) = match client.list_and_watch_children(path).await {
            Ok(x) => x,
            Err(ZkError::NoNode) => {
                // No master has ever started here.
                publish(&tx.leader, None);
                tx.members
                    .send_if_modified(|m| !std::mem::take(m).is_empty());
                let (stat, watcher) = match client.check_and_watch_stat(path).await {
                    Ok(x) => x,
                    Err(e) => return zk(&format!("cannot watch {path}"), e),
                };
                if stat.is_some() {
                    continue;
                }
                tokio::select! {
                    _ = watcher.changed() => continue,
                    e = session_ended(&mut state) => return zk("the session ended", e),
                }
            }
            Err(e) => return zk(&format!("cannot list the masters under {path}"), e),
        };
        match read_leader(client, path, children.clone()).await {
            Ok(Some(leader)) => {
                publish(&tx.leader, leader);
                let members = read_members(client, path, children).await;
                tx.members.send_if_modified(|m| {
                    let changed = *m != members;
                    *m = members;
                    changed
                });
            }
            // The leader's node went between the listing and the read.
            Ok(None) => continue,
            Err(e) => return zk("cannot read the leader's node", e),
        }
        tokio::select! {
            _ = watcher.changed() => {}
            e = session_ended(&mut state) => return zk("the session ended", e),
        }
    }
}

/// The leader among `children` (`Some(None)`: nobody leads; `None`: its node
/// went while it was read).
async fn read_leader(
    client: &Client,
    path: &str,
    children: Vec<String>,
) -> Result<Option<Option<MasterInfo>>, ZkError> {
    let Some(first) = contenders(children).into_iter().next() else {
        return Ok(Some(None));
    };
    let znode = format!("{path}/{first}");
    match client.get_data(&znode).await {
        Ok((data, _)) => match master_info_from_json(&data) {
            Ok(info) => Ok(Some(Some(info))),
            Err(reason) => {
                tracing::warn!(%znode, %reason, "the leader's node holds no usable MasterInfo");
                Ok(Some(None))
            }
        },
        Err(ZkError::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every contender among `children` whose node still holds a usable
/// MasterInfo, in election order (the leader first). Nodes that go or do
/// not parse while they are read are left out.
async fn read_members(client: &Client, path: &str, children: Vec<String>) -> Vec<MasterInfo> {
    let mut members = Vec::new();
    for child in contenders(children) {
        if let Ok((data, _)) = client.get_data(&format!("{path}/{child}")).await
            && let Ok(info) = master_info_from_json(&data)
        {
            members.push(info);
        }
    }
    members
}

/// Asks ZooKeeper once who leads (for command-line clients): `None` when no
/// master leads. Fails when the ensemble cannot be reached within
/// `timeout`.
pub async fn find_leader(url: &ZkUrl, timeout: Duration) -> Result<Option<MasterInfo>, CoordError> {
    let connector = Connector::new(url, timeout, "leader lookup");
    let client = connector.connect_once().await?;
    let path = url.path();
    let lookup = async {
        loop {
            let children = match client.list_children(path).await {
                Ok(c) => c,
                Err(ZkError::NoNode) => return Ok(None),
                Err(e) => {
                    return Err(
                        connector.error(&format!("cannot list the masters under {path}"), e)
                    );
                }
            };
            match read_leader(&client, path, children).await {
                Ok(Some(leader)) => return Ok(leader),
                Ok(None) => continue,
                Err(e) => return Err(connector.error("cannot read the leader's node", e)),
            }
        }
    };
    match tokio::time::timeout(timeout, lookup).await {
        Ok(r) => r,
        Err(_) => Err(connector.error("no answer", ZkError::Timeout)),
    }
}
