//! Who leads, and this master's terms as leader.
//!
//! ```text
//!            contend                 registry loaded
//!  Standby ----------> TakingOver -------------------> Leading(term)
//!     ^   (elected)        |                               |
//!     |                    | leadership lost               | leadership lost
//!     +--------------------+-------------------------------+ (streams end with
//!                                                             UNAVAILABLE, the
//!                                                             term's actor stops)
//! ```
//!
//! Each term has its own master id, core, actor and registrar, so nothing of
//! a term survives it: a master that loses leadership stops offering at once
//! (its actor and every stream are cancelled), stands by, and contends
//! again; elected again, it recovers from the registry like any new leader.
//! A fresh id per term keeps the ids it hands out (frameworks, agents,
//! offers) from colliding with those of its earlier terms.
//!
//! Supervision: the parts of a term (the core's actor, which also runs the
//! allocation cycles, and the registrar) end only when the term does. If
//! one panics or stops by itself, the master resigns leadership at once
//! (its ZooKeeper node goes, so a standby takes over), ends every stream,
//! and stops with the reason ([`crate::RunningMaster::wait`] returns it).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agora_allocator::AllocatorConfig;
use agora_coord::{Contender, Leadership, Store, ZkStore};
use agora_proto::v1::MasterInfo;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actor::{self, Input};
use crate::core::MasterCore;
use crate::metrics::Metrics;
use crate::outbound::Queues;
use crate::registrar::{self, Registry};
use crate::{CoreConfig, MasterConfig};

/// How long a stream or request that arrives while this master takes over
/// waits for it to lead, before it is refused.
pub(crate) const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// This master's part, as the gRPC and HTTP handlers see it.
#[derive(Clone)]
pub(crate) enum Role {
    /// Leading: the current term.
    Leading(Term),
    /// Elected; recovering the registry. Requests wait a moment.
    TakingOver,
    /// Another master leads; `None` while nobody does (or while this
    /// master's own node is first in line but it has not taken over).
    Standby { leader: Option<MasterInfo> },
}

/// One term as leader: the actor that owns the core, and the token that
/// ends the term (and every stream opened in it).
#[derive(Clone)]
pub(crate) struct Term {
    pub actor: mpsc::Sender<Input>,
    /// Makes the bounded queues of the term's streams.
    pub queues: Queues,
    pub cancel: CancellationToken,
    pub info: MasterInfo,
}

/// Why a request cannot be served here.
pub(crate) struct NotLeading {
    /// Who leads instead, when known.
    pub leader: Option<MasterInfo>,
}

/// The current term, waiting up to [`TAKEOVER_WAIT`] while this master
/// takes over.
pub(crate) async fn current_term(role: &watch::Receiver<Role>) -> Result<Term, NotLeading> {
    let mut waiting = role.clone();
    let settled = tokio::time::timeout(
        TAKEOVER_WAIT,
        waiting.wait_for(|r| !matches!(r, Role::TakingOver)),
    )
    .await
    .ok()
    .and_then(|r| r.ok().map(|r| r.clone()));
    let current = settled.unwrap_or_else(|| role.borrow().clone());
    match current {
        Role::Leading(term) if !term.cancel.is_cancelled() => Ok(term),
        Role::Standby { leader } => Err(NotLeading { leader }),
        _ => Err(NotLeading { leader: None }),
    }
}

/// Where the registry lives.
#[derive(Clone)]
pub(crate) enum RegistryStore {
    /// In this process or a local file: one master only.
    Local(Arc<dyn Store>),
    /// In ZooKeeper; each term writes fenced on its leader node.
    ZooKeeper(ZkStore),
}

impl RegistryStore {
    fn for_term(&self, leadership: &Leadership) -> Arc<dyn Store> {
        match (self, leadership.fence()) {
            (RegistryStore::Local(s), _) => s.clone(),
            (RegistryStore::ZooKeeper(z), Some(fence)) => Arc::new(z.fenced(fence)),
            (RegistryStore::ZooKeeper(z), None) => Arc::new(z.clone()),
        }
    }
}

/// What every term is made from.
pub(crate) struct Seed {
    pub config: MasterConfig,
    /// The master's address and version; each term gets its own id.
    pub info: MasterInfo,
    /// The id of the first term (so `RunningMaster::info` names it).
    pub first_id: String,
    /// `host:port`, for `/state`.
    pub address: String,
    pub metrics: Metrics,
}

impl Seed {
    fn term_info(&self, term: u64) -> MasterInfo {
        MasterInfo {
            id: if term == 0 {
                self.first_id.clone()
            } else {
                uuid::Uuid::new_v4().to_string()
            },
            ..self.info.clone()
        }
    }
}

/// Contends for leadership, leads while elected, stands by otherwise, until
/// `shutdown`.
pub(crate) async fn run(
    seed: Seed,
    contender: Arc<dyn Contender>,
    store: RegistryStore,
    mut preloaded: Option<Registry>,
    role: watch::Sender<Role>,
    fatal: Arc<OnceLock<String>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    for n in 0u64.. {
        let info = seed.term_info(n);
        let contended = tokio::select! {
            _ = shutdown.cancelled() => break,
            l = contender.contend(info.clone()) => l,
        };
        let mut leadership = match contended {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?backoff, "cannot contend for leadership; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        role.send_replace(Role::TakingOver);
        let term_store = store.for_term(&leadership);
        let registry = match preloaded.take() {
            Some(r) => Some(r),
            None => tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = leadership.lost() => None,
                r = load_until_done(term_store.as_ref()) => Some(r),
            },
        };
        let Some(registry) = registry else {
            tracing::warn!("lost leadership while recovering the registry; standing by");
            role.send_replace(Role::Standby { leader: None });
            continue;
        };
        let (term, mut tasks) = begin_term(&seed, info.clone(), registry, term_store, &shutdown);
        role.send_replace(Role::Leading(term.clone()));
        tracing::info!(master_id = %info.id, address = %seed.address, "leading");
        let end = tokio::select! {
            // A shutdown ends the term's parts too: it must read as a
            // shutdown, not as their failure.
            biased;
            _ = shutdown.cancelled() => TermEnd::Shutdown,
            _ = leadership.lost() => {
                tracing::warn!(master_id = %info.id,
                    "lost leadership: no more offers; ending every agent and framework stream and standing by");
                TermEnd::Lost
            }
            reason = first_to_end(&mut tasks) => if shutdown.is_cancelled() {
                TermEnd::Shutdown
            } else {
                TermEnd::Failed(reason)
            },
        };
        // No new stream may join the ending term.
        role.send_replace(Role::Standby { leader: None });
        term.cancel.cancel();
        if let TermEnd::Failed(reason) = &end {
            // Nothing of this term can be trusted any more: give up
            // leadership at once (its ZooKeeper node goes, so a standby leads
            // within moments rather than a session timeout), then stop the
            // whole master.
            tracing::error!(master_id = %info.id, %reason,
                "a part of the leading master failed; resigning leadership and exiting");
            let _ = fatal.set(reason.clone());
            leadership.resign().await;
            for (_, t) in tasks {
                let _ = t.await;
            }
        } else {
            for (_, t) in tasks {
                let _ = t.await;
            }
            // Withdraws (deletes this master's node, so that a standby takes
            // over at once) if still held.
            leadership.resign().await;
        }
        match end {
            TermEnd::Lost => {}
            TermEnd::Shutdown => break,
            TermEnd::Failed(_) => {
                shutdown.cancel();
                break;
            }
        }
    }
    role.send_replace(Role::Standby { leader: None });
}

/// How a term ended.
enum TermEnd {
    /// Leadership was lost: stand by and contend again.
    Lost,
    /// The master shuts down.
    Shutdown,
    /// A part of the term (the core's actor, the registrar) panicked or
    /// stopped on its own: the master exits with this reason.
    Failed(String),
}

/// Waits for the first of a term's parts to end, and says how it ended.
/// While the term lasts none of them ends by itself, so any end is a
/// failure. The part that ended leaves `tasks` (a finished handle is not awaited
/// again).
async fn first_to_end(tasks: &mut Vec<(&'static str, JoinHandle<()>)>) -> String {
    let (result, i, _) =
        futures::future::select_all(tasks.iter_mut().map(|(_, handle)| handle)).await;
    let (name, _) = tasks.remove(i);
    match result {
        Ok(()) => format!("the {name} stopped unexpectedly"),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            format!("the {name} panicked: {message}")
        }
        Err(e) => format!("the {name} was cancelled: {e}"),
    }
}

/// Reads the registry, retrying (with a warning) until it succeeds.
async fn load_until_done(store: &dyn Store) -> Registry {
    let mut delay = Duration::from_millis(100);
    loop {
        match registrar::load(store).await {
            Ok(r) => return r,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot read the registry; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Starts a term: a core recovered from `registry`, its actor and its
/// registrar.
fn begin_term(
    seed: &Seed,
    info: MasterInfo,
    registry: Registry,
    store: Arc<dyn Store>,
    shutdown: &CancellationToken,
) -> (Term, Vec<(&'static str, JoinHandle<()>)>) {
    let now = actor::now();
    let allocator = AllocatorConfig {
        weights: seed.config.weights.clone(),
        ..Default::default()
    };
    let core_config: CoreConfig = seed.config.core.clone();
    let mut core = MasterCore::new(info.clone(), core_config, allocator, now);
    if !registry.frameworks.is_empty() || !registry.agents.is_empty() {
        tracing::info!(
            frameworks = registry.frameworks.len(),
            agents = registry.agents.len(),
            reregister_timeout = ?seed.config.core.agent_reregister_timeout,
            "recovered the registry; waiting for agents and frameworks to come back"
        );
    }
    core.recover(registry.frameworks, registry.agents, now);
    core.recover_removed(registry.removed_frameworks);
    let (input_tx, input_rx) = mpsc::channel(65_536);
    let (registry_tx, registry_rx) = mpsc::unbounded_channel();
    let cancel = shutdown.child_token();
    let tasks = vec![
        (
            "registrar",
            tokio::spawn(registrar::run(store, registry_rx, cancel.clone())),
        ),
        (
            "core actor (which also runs the allocation cycles)",
            tokio::spawn(actor::run(
                core,
                input_rx,
                registry_tx,
                seed.metrics.clone(),
                seed.address.clone(),
                cancel.clone(),
            )),
        ),
    ];
    let term = Term {
        actor: input_tx,
        queues: seed.metrics.queues(seed.config.stream_queue),
        cancel,
        info,
    };
    (term, tasks)
}

/// Keeps a standby's idea of who leads up to date from the detector.
/// Leaders other than this master only: its own node first in line means
/// it is about to take over (or holds a node of a session it gave up),
/// and nobody can serve meanwhile.
pub(crate) async fn follow_leader(
    mut detected: watch::Receiver<Option<MasterInfo>>,
    me: MasterInfo,
    role: watch::Sender<Role>,
    shutdown: CancellationToken,
) {
    loop {
        let leader = detected
            .borrow_and_update()
            .clone()
            .filter(|l| !(l.port == me.port && (l.ip == me.ip || l.hostname == me.hostname)));
        role.send_if_modified(|r| match r {
            Role::Standby { leader: current } if *current != leader => {
                *current = leader.clone();
                true
            }
            _ => false,
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = detected.changed() => if changed.is_err() { return },
            // The role went back to standby: fill in the leader again.
            _ = wait_standby_without_leader(role.subscribe()) => {}
        }
    }
}

async fn wait_standby_without_leader(mut role: watch::Receiver<Role>) {
    // Only a change *into* a leaderless standby matters.
    let _ = role.borrow_and_update();
    loop {
        if role.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if matches!(&*role.borrow(), Role::Standby { leader: None }) {
            return;
        }
    }
}
