//! Leader election among a framework's instances.
//!
//! ```text
//!            contend                 elected
//!  Starting ────────► Standby{leader} ───────► Leading ──┐
//!                        ▲                               │ session lost, node
//!                        └───────── term lost ◄──────────┘ deleted, shutdown
//! ```
//!
//! Standalone: the one instance leads at once, until shutdown. ZooKeeper
//! (coord's [`ZkContender`] / [`ZkDetector`], Mesos's `json.info_` layout
//! under the URL's path): each instance writes a MasterInfo describing its
//! HTTP address; the lowest node leads; standbys learn the leader's address
//! from its node, so they can redirect to it.
//!
//! Each period of leadership is a [`Term`]. A term ends the moment the
//! leadership may be gone (coord's contender steps down before ZooKeeper
//! could let another instance lead); its cancellation token fires, and its
//! fenced store ([`Term::store`]) refuses writes from then on even if the
//! instance has not noticed yet. Then the instance stands by and contends
//! again.

use std::net::SocketAddr;
use std::time::Duration;

use agora_coord::zk::{ZkContender, ZkDetector, ZkUrl};
use agora_coord::{Contender, Detector, Leadership, address_of};
use agora_proto::v1::MasterInfo;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::store::FrameworkStore;

/// How the instances of a framework find their leader.
#[derive(Debug, Clone, PartialEq)]
pub enum Election {
    /// One instance, always the leader (no ZooKeeper).
    Standalone,
    /// Through ZooKeeper, at the URL's path (e.g. `zk://h:2181/agora-services`).
    Zk {
        url: ZkUrl,
        session_timeout: Duration,
    },
}

/// What this instance is right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not yet known (before the first answer from ZooKeeper).
    Starting,
    /// This instance leads.
    Leading,
    /// Another instance leads (`host:port` of its HTTP address), or nobody
    /// does right now (`None`).
    Standby { leader: Option<String> },
}

/// One period of leadership. Stop acting as the leader the moment
/// [`lost`](Self::lost) resolves.
#[derive(Debug, Clone)]
pub struct Term {
    /// Counts this instance's terms from 1.
    number: u64,
    /// What proves the leadership to the store (ZooKeeper: the leader's
    /// node).
    fence: Option<String>,
    token: CancellationToken,
}

impl Term {
    /// The framework's store, fenced to this term: once the leadership is
    /// gone its writes are refused (ZooKeeper; a standalone store is
    /// returned as it is).
    pub fn store(&self, base: &FrameworkStore) -> FrameworkStore {
        base.fenced(self.fence.as_deref())
    }

    /// Resolves when the leadership ends (or the elector shuts down).
    pub async fn lost(&self) {
        self.token.cancelled().await
    }

    pub fn is_lost(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Cancelled when the leadership ends: give it to everything that must
    /// stop then.
    pub fn cancel_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// 1 for this instance's first term, 2 for the next ...
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The leader's node in ZooKeeper; `None` when standalone.
    pub fn fence(&self) -> Option<&str> {
        self.fence.as_deref()
    }
}

/// Runs the election in the background. Dropping it (or cancelling the
/// shutdown token) gives leadership up, so that a standby takes over at
/// once.
pub struct Elector {
    role: watch::Receiver<Role>,
    terms: mpsc::Receiver<Term>,
    me: MasterInfo,
    stop: CancellationToken,
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The host name of this machine, for the MasterInfo (used when the
/// advertised IP is unspecified).
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Elector {
    /// Starts contending (call it inside a Tokio runtime). `advertise` is
    /// this instance's HTTP address, which standbys redirect to while it
    /// leads; an unspecified IP (`0.0.0.0`) is replaced by the host name.
    pub fn start(
        election: Election,
        advertise: SocketAddr,
        shutdown: CancellationToken,
    ) -> Elector {
        let me = MasterInfo {
            id: uuid::Uuid::new_v4().to_string(),
            hostname: local_hostname(),
            ip: advertise.ip().to_string(),
            port: u32::from(advertise.port()),
            version: agora_proto::VERSION.to_string(),
        };
        let stop = shutdown.child_token();
        let (role_tx, role) = watch::channel(Role::Starting);
        let (terms_tx, terms) = mpsc::channel(1);
        let span = tracing::info_span!("election", instance = %me.id, address = %address_of(&me));
        match election {
            Election::Standalone => {
                tokio::spawn(run_standalone(role_tx, terms_tx, stop.clone()).instrument(span));
            }
            Election::Zk {
                url,
                session_timeout,
            } => {
                tokio::spawn(
                    run_zk(
                        url,
                        session_timeout,
                        me.clone(),
                        role_tx,
                        terms_tx,
                        stop.clone(),
                    )
                    .instrument(span),
                );
            }
        }
        Elector {
            role,
            terms,
            me,
            stop,
        }
    }

    /// The current role, updated as it changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Waits for the next term of leadership; `None` once shut down.
    pub async fn next_term(&mut self) -> Option<Term> {
        self.terms.recv().await
    }

    /// This instance's id in the election.
    pub fn id(&self) -> &str {
        &self.me.id
    }

    /// This instance's address (`host:port`), as standbys see it.
    pub fn address(&self) -> String {
        address_of(&self.me)
    }

    /// Gives leadership up and stops contending; [`next_term`](Self::next_term)
    /// returns `None` after the terms already handed out.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

async fn run_standalone(
    role: watch::Sender<Role>,
    terms: mpsc::Sender<Term>,
    stop: CancellationToken,
) {
    let token = stop.child_token();
    role.send_replace(Role::Leading);
    tracing::info!("standalone: this instance leads");
    let term = Term {
        number: 1,
        fence: None,
        token: token.clone(),
    };
    if terms.send(term).await.is_ok() {
        stop.cancelled().await;
    }
    token.cancel();
}

/// The standby role for what the detector says (this instance's own node
/// counts as nobody: it is about to lead, and must not redirect to itself).
fn standby(leader: &Option<MasterInfo>, me: &MasterInfo) -> Role {
    Role::Standby {
        leader: leader.as_ref().filter(|l| l.id != me.id).map(address_of),
    }
}

async fn run_zk(
    url: ZkUrl,
    session_timeout: Duration,
    me: MasterInfo,
    role: watch::Sender<Role>,
    terms: mpsc::Sender<Term>,
    stop: CancellationToken,
) {
    let detector = ZkDetector::start(&url, session_timeout);
    let mut leader = detector.leader();
    let contender = ZkContender::new(&url, session_timeout);
    let mut number = 0;
    loop {
        // Standing by until elected, following who leads.
        let leadership: Leadership = {
            let contend = contender.contend(me.clone());
            tokio::pin!(contend);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    elected = &mut contend => match elected {
                        Ok(l) => break l,
                        Err(e) => {
                            tracing::warn!("cannot contend for leadership: {e}; trying again");
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                            contend.set(contender.contend(me.clone()));
                        }
                    },
                    changed = leader.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let r = standby(&leader.borrow_and_update(), &me);
                        if *role.borrow() != r {
                            tracing::info!(role = ?r, "standing by");
                            role.send_replace(r);
                        }
                    }
                }
            }
        };
        number += 1;
        let token = stop.child_token();
        let fence = leadership.fence().map(str::to_string);
        tracing::info!(term = number, fence = ?fence, "elected: this instance leads");
        role.send_replace(Role::Leading);
        let term = Term {
            number,
            fence,
            token: token.clone(),
        };
        let mut leadership = leadership;
        if terms.send(term).await.is_err() {
            // Nobody takes terms any more.
            token.cancel();
            leadership.resign().await;
            return;
        }
        tokio::select! {
            _ = leadership.lost() => {
                token.cancel();
                tracing::warn!(term = number, "leadership lost; standing by");
                role.send_replace(standby(&leader.borrow_and_update(), &me));
                drop(leadership);
            }
            _ = stop.cancelled() => {
                token.cancel();
                role.send_replace(Role::Standby { leader: None });
                leadership.resign().await;
                tracing::info!(term = number, "gave leadership up");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn standalone_leads_at_once_until_shutdown() {
        let shutdown = CancellationToken::new();
        let mut elector = Elector::start(
            Election::Standalone,
            "127.0.0.1:8080".parse().unwrap(),
            shutdown.clone(),
        );
        assert_eq!(elector.address(), "127.0.0.1:8080");
        let term = elector.next_term().await.expect("a term");
        assert_eq!(term.number(), 1);
        assert_eq!(term.fence(), None);
        let mut role = elector.role();
        role.wait_for(|r| *r == Role::Leading).await.unwrap();
        assert!(!term.is_lost());
        let store = FrameworkStore::memory();
        term.store(&store)
            .put("k", &1, agora_coord::Expected::Any)
            .await
            .unwrap();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), term.lost())
            .await
            .expect("the term ends at shutdown");
        assert!(elector.next_term().await.is_none());
    }

    #[test]
    fn a_standby_never_redirects_to_itself() {
        let me = MasterInfo {
            id: "me".into(),
            ip: "10.0.0.1".into(),
            port: 8080,
            ..Default::default()
        };
        let other = MasterInfo {
            id: "other".into(),
            ip: "10.0.0.2".into(),
            port: 8080,
            ..Default::default()
        };
        assert_eq!(standby(&None, &me), Role::Standby { leader: None });
        assert_eq!(
            standby(&Some(me.clone()), &me),
            Role::Standby { leader: None }
        );
        assert_eq!(
            standby(&Some(other), &me),
            Role::Standby {
                leader: Some("10.0.0.2:8080".into())
            }
        );
    }
}
