//! The master's core: all master state and every decision, with no I/O.
//!
//! The actor ([`crate::actor`]) feeds it what arrives (agent and framework
//! messages, stream ends, ticks) together with the current time, and sends out
//! what the core leaves in its [`Outbox`]. Time is a value ([`Now`]), never
//! read here, so tests can drive hours of cluster life in microseconds.

mod agents;
mod frameworks;
mod offer_book;
pub mod validation;
pub mod view;
pub mod wire;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_allocator::{Allocator, AllocatorConfig};
use agora_proto::Resources;
use agora_proto::v1::{
    self, AgentInfo, ContainerInfo, Event, FrameworkInfo, KillPolicy, MasterInfo, MasterToAgent,
    TaskState, TaskStatus, event, master_to_agent,
};
pub use wire::{EncodedOffers, OutEvent};

/// Identifies one gRPC stream (an agent session or a framework subscription).
pub type ConnId = u64;

/// The hash maps of the core: keyed by ids that clients choose, so seeded
/// (no collision attacks), and with a hash several times faster than the
/// standard one on short keys.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// The hash sets of the core (see [`Map`]).
pub type Set<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// The current time, as the actor read it from its clock.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub instant: Instant,
    /// Seconds since the Unix epoch, for timestamps users see.
    pub unix: f64,
}

impl Now {
    pub fn after(self, d: Duration) -> Now {
        Now {
            instant: self.instant + d,
            unix: self.unix + d.as_secs_f64(),
        }
    }
}

/// The master's timing and bookkeeping settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// An agent not heard from for this long is unreachable.
    pub agent_timeout: Duration,
    /// How often agents are asked to send a heartbeat.
    pub agent_heartbeat_interval: Duration,
    /// How often frameworks get a HEARTBEAT event.
    pub framework_heartbeat_interval: Duration,
    /// Offers outstanding this long are rescinded (none if unset).
    pub offer_timeout: Option<Duration>,
    /// Time between periodic allocation cycles.
    pub allocation_interval: Duration,
    /// The refuse filter of a decline or accept that does not say.
    pub default_refuse: Duration,
    /// How long agents known from the registry have to reregister after this
    /// master takes over before they are unreachable.
    pub agent_reregister_timeout: Duration,
    /// Ended tasks kept per framework for `/state`.
    pub max_completed_tasks: usize,
    /// Removed frameworks kept for `/state`.
    pub max_completed_frameworks: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            agent_timeout: Duration::from_secs(15),
            agent_heartbeat_interval: Duration::from_secs(3),
            framework_heartbeat_interval: Duration::from_secs(15),
            offer_timeout: None,
            allocation_interval: Duration::from_secs(1),
            default_refuse: Duration::from_secs(5),
            agent_reregister_timeout: Duration::from_secs(15),
            max_completed_tasks: 1000,
            max_completed_frameworks: 50,
        }
    }
}

/// Where an agent stands with the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// Its session stream is open.
    Connected,
    /// Its stream ended; it has `agent_timeout` (from when it was last heard)
    /// to come back before it is unreachable. It gets no offers meanwhile.
    Disconnected,
    /// Not heard from within `agent_timeout`; its tasks were reported
    /// unreachable. It may still come back.
    Unreachable,
    /// Known from the registry after a failover, not reregistered yet.
    Recovering,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Connected => "connected",
            AgentStatus::Disconnected => "disconnected",
            AgentStatus::Unreachable => "unreachable",
            AgentStatus::Recovering => "recovering",
        }
    }
}

/// What the master knows of an agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub info: AgentInfo,
    pub total: Resources,
    pub conn: Option<ConnId>,
    pub status: AgentStatus,
    pub last_seen: Instant,
    /// Until when a `Recovering` agent may reregister.
    pub recover_deadline: Option<Instant>,
    pub registered_at: f64,
    /// The agent's tasks, as (framework id, task id); the framework id is
    /// the task's own (shared).
    pub tasks: BTreeSet<(Arc<str>, String)>,
}

impl Agent {
    /// Whether the allocator holds this agent (its resources count and can be
    /// offered once it is connected).
    fn in_allocator(&self) -> bool {
        matches!(
            self.status,
            AgentStatus::Connected | AgentStatus::Disconnected
        )
    }
}

/// What the master knows of a task.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    /// The framework's, agent's and role's ids are shared (with the
    /// allocator's and the offers'): a master holds hundreds of thousands of
    /// tasks, and each would otherwise own three copies.
    pub framework_id: Arc<str>,
    pub agent_id: Arc<str>,
    pub name: String,
    pub role: Arc<str>,
    pub resources: Resources,
    pub state: TaskState,
    /// The latest status, kept without the task, agent and framework ids
    /// (the task has them; see [`Task::set_status`] and [`Task::status`]).
    last_status: Option<TaskStatus>,
    /// The uuid of the latest agent update, until the framework acknowledges it.
    pub pending_ack: Option<Vec<u8>>,
    /// Whether the task's resources went back to the allocator (it ended).
    pub released: bool,
    /// A kill asked for while the agent could not be told; sent when it
    /// reregisters.
    pub kill_pending: Option<Option<KillPolicy>>,
    /// Boxed: most tasks have none, and a task should stay small.
    pub container: Option<Box<ContainerInfo>>,
    pub labels: Vec<v1::Label>,
    pub staged_at: f64,
}

impl Task {
    /// Records the task's latest status.
    pub fn set_status(&mut self, status: TaskStatus) {
        self.last_status = Some(Task::without_ids(status));
    }

    /// A status as a task keeps it: a master holds hundreds of thousands of
    /// tasks, so no copies of the ids the task already has.
    fn without_ids(mut status: TaskStatus) -> TaskStatus {
        status.task_id = String::new();
        status.agent_id = String::new();
        status.framework_id = String::new();
        status
    }

    /// The latest status, whole.
    pub fn status(&self) -> Option<TaskStatus> {
        self.last_status.as_ref().map(|s| TaskStatus {
            task_id: self.id.clone(),
            agent_id: self.agent_id.to_string(),
            framework_id: self.framework_id.to_string(),
            ..s.clone()
        })
    }

    /// The latest status, for its other fields (its ids are empty).
    pub fn status_fields(&self) -> Option<&TaskStatus> {
        self.last_status.as_ref()
    }

    pub fn to_proto(&self) -> v1::Task {
        v1::Task {
            task_id: self.id.clone(),
            framework_id: self.framework_id.to_string(),
            agent_id: self.agent_id.to_string(),
            name: self.name.clone(),
            state: self.state as i32,
            resources: self.resources.to_proto(),
            status: self.status(),
            container: self.container.as_deref().cloned(),
            labels: self.labels.clone(),
            role: self.role.to_string(),
        }
    }
}

/// What the master knows of a framework.
#[derive(Debug, Clone)]
pub struct Framework {
    pub info: FrameworkInfo,
    pub roles: Vec<String>,
    pub conn: Option<ConnId>,
    /// When a disconnected framework is removed.
    pub failover_deadline: Option<Instant>,
    pub registered_at: f64,
    pub disconnected_at: Option<f64>,
    /// Active tasks, and ended ones whose final update is not acknowledged.
    /// Boxed: the table stays small and growing it moves pointers, not
    /// tasks.
    pub tasks: Map<String, Box<Task>>,
    /// Ended and acknowledged tasks, newest last.
    pub completed: VecDeque<Box<Task>>,
    pub next_heartbeat: Instant,
    /// The framework id field of its offers, encoded once.
    pub offer_field: bytes::Bytes,
}

/// What an offer on an agent needs, kept by the allocator's slot of the
/// agent so that the allocation cycle reads one dense table instead of
/// hashing ids. `id` is the allocator's own `Arc` for the agent: an entry
/// is used only when it is that very `Arc` (`Arc::ptr_eq`), and holding it
/// keeps its address from being reused by another agent's id.
#[derive(Debug, Clone)]
struct HotAgent {
    id: Arc<str>,
    /// The agent's encoded offer fields, in [`MasterCore::field_arena`].
    fields: wire::AgentFields,
}

/// What an offer to a framework needs, by the allocator's slot of it; see
/// [`HotAgent`].
#[derive(Debug, Clone)]
struct HotFramework {
    id: Arc<str>,
    conn: Option<ConnId>,
    field: bytes::Bytes,
}

/// A framework the master removed, kept for `/state`.
#[derive(Debug, Clone)]
pub struct RemovedFramework {
    pub info: FrameworkInfo,
    pub removed_at: f64,
    pub reason: String,
    pub tasks: Vec<Task>,
}

/// An outstanding offer. Its id on the wire is `<master id>-O<seq>`; the
/// other ids are shared with the allocator's decision, not copied.
#[derive(Debug, Clone)]
pub struct Offer {
    pub seq: u64,
    pub framework_id: Arc<str>,
    pub agent_id: Arc<str>,
    /// The allocator's slots of the agent and the framework (the offer
    /// book's indexes).
    pub agent_slot: u32,
    pub framework_slot: u32,
    pub role: Arc<str>,
    pub resources: Resources,
    pub created: Instant,
}

/// A change the registry must record.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryOp {
    PutFramework(FrameworkInfo),
    RemoveFramework(String),
    PutAgent(AgentInfo),
    RemoveAgent(String),
}

/// Merging stops once a message holds this many items: a burst then goes out
/// as several messages of bounded size, which the receiver can start on
/// while the rest is encoded, instead of one message of many megabytes.
pub const MAX_MERGED: usize = 1024;

/// What the core wants sent, per connection, in order. Consecutive messages
/// of a batchable kind are merged into one (up to [`MAX_MERGED`] items).
#[derive(Debug, Default)]
pub struct Outbox {
    pub agents: Map<ConnId, Vec<MasterToAgent>>,
    pub frameworks: Map<ConnId, Vec<OutEvent>>,
    /// Streams to end (after their messages are sent).
    pub close: Vec<ConnId>,
    pub registry: Vec<RegistryOp>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
            && self.frameworks.is_empty()
            && self.close.is_empty()
            && self.registry.is_empty()
    }

    pub fn to_agent(&mut self, conn: ConnId, msg: master_to_agent::Message) {
        use master_to_agent::Message as M;
        let queue = self.agents.entry(conn).or_default();
        if let Some(last) = queue.last_mut().and_then(|m| m.message.as_mut()) {
            match (last, msg) {
                (M::RunTasks(a), M::RunTasks(b)) if a.launches.len() < MAX_MERGED => {
                    for f in b.frameworks {
                        if !a.frameworks.iter().any(|x| x.id == f.id) {
                            a.frameworks.push(f);
                        }
                    }
                    a.launches.extend(b.launches);
                }
                (M::KillTasks(a), M::KillTasks(b)) if a.kills.len() < MAX_MERGED => {
                    a.kills.extend(b.kills)
                }
                (M::Acknowledge(a), M::Acknowledge(b)) if a.acks.len() < MAX_MERGED => {
                    a.acks.extend(b.acks)
                }
                (_, msg) => queue.push(MasterToAgent { message: Some(msg) }),
            }
        } else {
            queue.push(MasterToAgent { message: Some(msg) });
        }
    }

    /// Puts a batch of offers at the end of a framework's queue.
    pub fn push_offers(&mut self, conn: ConnId, offers: EncodedOffers) {
        self.frameworks
            .entry(conn)
            .or_default()
            .push(OutEvent::Offers(offers));
    }

    pub fn to_framework(&mut self, conn: ConnId, ev: event::Event) {
        use event::Event as E;
        let queue = self.frameworks.entry(conn).or_default();
        if let Some(OutEvent::Event(Event { event: Some(last) })) = queue.last_mut() {
            match (last, ev) {
                (E::Rescind(a), E::Rescind(b)) if a.offer_ids.len() < MAX_MERGED => {
                    a.offer_ids.extend(b.offer_ids)
                }
                (E::Updates(a), E::Updates(b)) if a.statuses.len() < MAX_MERGED => {
                    a.statuses.extend(b.statuses)
                }
                (_, ev) => queue.push(OutEvent::Event(Event { event: Some(ev) })),
            }
        } else {
            queue.push(OutEvent::Event(Event { event: Some(ev) }));
        }
    }
}

/// Everything the master knows, and the decisions over it.
pub struct MasterCore {
    pub(crate) config: CoreConfig,
    pub(crate) info: MasterInfo,
    pub(crate) allocator: Allocator,
    pub(crate) agents: Map<String, Agent>,
    pub(crate) agent_conns: Map<ConnId, String>,
    pub(crate) frameworks: Map<String, Framework>,
    pub(crate) framework_conns: Map<ConnId, String>,
    /// Ids of every framework removed (so their stragglers are settled).
    pub(crate) removed_framework_ids: Set<String>,
    pub(crate) removed_frameworks: VecDeque<RemovedFramework>,
    /// Outstanding offers, by number.
    pub(crate) offers: offer_book::OfferBook,
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    /// `<master id>-O`, the start of every offer id.
    offer_prefix: String,
    /// Reused while encoding offers.
    scratch: Vec<u8>,
    /// By allocator slot: what offers on each agent and to each framework
    /// need (see [`HotAgent`]).
    hot_agents: Vec<Option<HotAgent>>,
    hot_frameworks: Vec<Option<HotFramework>>,
    /// The agents' encoded offer fields, laid out in slot order.
    field_arena: wire::FieldArena,
    /// The offers of the cycle under way, by framework slot, and the slots
    /// that have some (one batch per framework, put in the outbox at the
    /// end of the cycle).
    batches: Vec<Option<EncodedOffers>>,
    batched: Vec<u32>,
    /// Batches filled up during the cycle, waiting for it to end.
    full_batches: Vec<(ConnId, EncodedOffers)>,
    /// Where each cycle writes its offers; reused from cycle to
    /// cycle once the last cycle's offers were sent (see [`EncodedOffers`]).
    offer_heads: bytes::BytesMut,
    /// Bytes per offer in the last cycle (a little more).
    offer_size_estimate: usize,
    /// The allocator's decisions, kept between cycles so that each cycle
    /// reuses the same vector.
    allocations: Vec<agora_allocator::Allocation>,
    /// Something freed resources or changed who wants them.
    allocation_wanted: bool,
    last_allocation: Option<Instant>,
    pub(crate) started_at: f64,
    pub(crate) outbox: Outbox,
}

impl MasterCore {
    pub fn new(info: MasterInfo, config: CoreConfig, allocator: AllocatorConfig, now: Now) -> Self {
        let offer_prefix = format!("{}-O", info.id);
        MasterCore {
            config,
            info,
            allocator: Allocator::new(allocator),
            agents: Map::default(),
            agent_conns: Map::default(),
            frameworks: Map::default(),
            framework_conns: Map::default(),
            removed_framework_ids: Set::default(),
            removed_frameworks: VecDeque::new(),
            offers: offer_book::OfferBook::default(),
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            offer_prefix,
            scratch: Vec::new(),
            hot_agents: Vec::new(),
            hot_frameworks: Vec::new(),
            field_arena: wire::FieldArena::default(),
            batches: Vec::new(),
            batched: Vec::new(),
            full_batches: Vec::new(),
            offer_heads: bytes::BytesMut::new(),
            offer_size_estimate: 0,
            allocations: Vec::new(),
            allocation_wanted: false,
            last_allocation: None,
            started_at: now.unix,
            outbox: Outbox::default(),
        }
    }

    pub fn info(&self) -> &MasterInfo {
        &self.info
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Takes what the core wants sent since the last call.
    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.outbox)
    }

    /// Loads what the registry remembers after this master takes over:
    /// frameworks wait for their schedulers to resubscribe, agents for their
    /// reregistration.
    pub fn recover(&mut self, frameworks: Vec<FrameworkInfo>, agents: Vec<AgentInfo>, now: Now) {
        for info in frameworks {
            if info.id.is_empty() || self.frameworks.contains_key(&info.id) {
                continue;
            }
            self.add_recovered_framework(info, now);
        }
        for info in agents {
            if info.id.is_empty() || self.agents.contains_key(&info.id) {
                continue;
            }
            let total = Resources::from_proto(&info.resources).unwrap_or_default();
            self.agents.insert(
                info.id.clone(),
                Agent {
                    info,
                    total,
                    conn: None,
                    status: AgentStatus::Recovering,
                    last_seen: now.instant,
                    recover_deadline: Some(now.instant + self.config.agent_reregister_timeout),
                    registered_at: now.unix,
                    tasks: BTreeSet::new(),
                },
            );
        }
    }

    /// Learns, from the registry, the ids of frameworks removed before this
    /// master took over: they cannot subscribe again, and tasks of theirs
    /// that agents report are shut down.
    pub fn recover_removed(&mut self, ids: Vec<String>) {
        self.removed_framework_ids.extend(ids);
    }

    fn new_agent_id(&mut self) -> String {
        let id = format!("{}-S{}", self.info.id, self.next_agent);
        self.next_agent += 1;
        id
    }

    fn new_framework_id(&mut self) -> String {
        let id = format!("{}-{:04}", self.info.id, self.next_framework);
        self.next_framework += 1;
        id
    }

    /// An offer's id on the wire.
    pub fn offer_id(&self, seq: u64) -> String {
        format!("{}{seq}", self.offer_prefix)
    }

    /// The number of an offer id this master (in this term) made.
    pub fn parse_offer_id(&self, id: &str) -> Option<u64> {
        id.strip_prefix(self.offer_prefix.as_str())?.parse().ok()
    }

    /// Asks for an allocation cycle soon (after the current batch of input).
    pub(crate) fn want_allocation(&mut self) {
        self.allocation_wanted = true;
    }

    /// Whether an allocation cycle is due: something changed, or the
    /// periodic interval passed.
    pub fn allocation_due(&self, now: Now) -> bool {
        self.allocation_wanted
            || self
                .last_allocation
                .is_none_or(|t| now.instant >= t + self.config.allocation_interval)
    }

    /// Runs one allocation cycle and turns its decisions into offers.
    /// Returns how many offers were made.
    ///
    /// Per offer: one lookup of the framework and one of the agent, an
    /// offer record keyed by number (its ids shared with the allocator's
    /// decision, its resources moved from it), and the offer written once
    /// as protobuf bytes onto the framework's pending `offers` event, from
    /// pieces encoded when the agent and the framework arrived.
    pub fn allocate(&mut self, now: Now) -> usize {
        self.allocation_wanted = false;
        self.last_allocation = Some(now.instant);
        let mut allocations = std::mem::take(&mut self.allocations);
        allocations.clear();
        self.allocator.allocate_into(now.instant, &mut allocations);
        let mut made = 0;
        // What the offers will take, going by the last cycle's; `reserve`
        // takes back the last cycle's space when its offers are gone.
        self.offer_heads
            .reserve(allocations.len() * self.offer_size_estimate.max(128));
        if self.batches.len() < self.hot_frameworks.len() {
            self.batches.resize_with(self.hot_frameworks.len(), || None);
        }
        for a in allocations.drain(..) {
            let hot_fw = self
                .hot_frameworks
                .get(a.framework_slot as usize)
                .and_then(Option::as_ref)
                .filter(|h| Arc::ptr_eq(&h.id, &a.framework_id));
            let hot_agent = self
                .hot_agents
                .get(a.agent_slot as usize)
                .and_then(Option::as_ref)
                .filter(|h| Arc::ptr_eq(&h.id, &a.agent_id));
            let (
                Some(HotFramework {
                    conn: Some(conn),
                    field,
                    ..
                }),
                Some(agent),
            ) = (hot_fw, hot_agent)
            else {
                // The allocator should not offer to a framework or agent that
                // cannot take it; give the resources back.
                tracing::warn!(framework_id = %a.framework_id, agent_id = %a.agent_id,
                    "allocation for a disconnected framework or unknown agent; recovering it");
                self.allocator.recover(
                    &a.framework_id,
                    &a.role,
                    &a.agent_id,
                    &a.resources,
                    None,
                    now.instant,
                );
                continue;
            };
            let seq = self.next_offer;
            self.next_offer += 1;
            let resources = (!a.whole_agent).then_some(&a.resources);
            let slot = a.framework_slot as usize;
            let batch = self.batches[slot].get_or_insert_with(|| {
                self.batched.push(a.framework_slot);
                EncodedOffers::default()
            });
            batch.push(
                &mut self.offer_heads,
                &mut self.scratch,
                &self.offer_prefix,
                seq,
                field,
                &agent.fields,
                &a.role,
                resources,
            );
            if batch.count >= MAX_MERGED {
                let full = std::mem::take(batch);
                self.full_batches.push((*conn, full));
            }
            self.offers.insert(
                seq,
                Offer {
                    seq,
                    framework_id: a.framework_id,
                    agent_id: a.agent_id,
                    agent_slot: a.agent_slot,
                    framework_slot: a.framework_slot,
                    role: a.role,
                    resources: a.resources,
                    created: now.instant,
                },
            );
            made += 1;
        }
        if made > 0 {
            self.offer_size_estimate = self.offer_heads.len().div_ceil(made) + 16;
        }
        let heads = self.offer_heads.split().freeze();
        for (conn, mut batch) in self.full_batches.drain(..) {
            batch.seal(&heads);
            self.outbox.push_offers(conn, batch);
        }
        for slot in self.batched.drain(..) {
            let slot = slot as usize;
            let Some(mut batch) = self.batches[slot].take() else {
                continue;
            };
            let conn = self.hot_frameworks[slot].as_ref().and_then(|h| h.conn);
            if let (Some(conn), false) = (conn, batch.is_empty()) {
                batch.seal(&heads);
                self.outbox.push_offers(conn, batch);
            }
        }
        self.allocations = allocations;
        made
    }

    /// Filters an agent's resources for a framework for `refuse`, in each of
    /// its roles, as declining an offer of all of them would. For simulations
    /// and benchmarks that need, at once, the filters that hours of declines
    /// leave behind. Unknown agents or frameworks are ignored.
    pub fn install_refuse_filter(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        refuse: Duration,
        now: Now,
    ) {
        let (Some(agent), Some(fw)) =
            (self.agents.get(agent_id), self.frameworks.get(framework_id))
        else {
            return;
        };
        for role in &fw.roles {
            self.allocator.recover(
                framework_id,
                role,
                agent_id,
                &agent.total,
                Some(refuse),
                now.instant,
            );
        }
    }

    /// Removes an offer and gives its resources back to the allocator
    /// (filtered for the framework when `refuse` is set). Tells the framework
    /// when `notify` is set.
    pub(crate) fn remove_offer(
        &mut self,
        seq: u64,
        refuse: Option<Duration>,
        notify: bool,
        now: Now,
    ) -> Option<Offer> {
        let offer = self.take_offer(seq)?;
        self.allocator.recover(
            &offer.framework_id,
            &offer.role,
            &offer.agent_id,
            &offer.resources,
            refuse,
            now.instant,
        );
        self.want_allocation();
        let conn = self
            .frameworks
            .get(&*offer.framework_id)
            .and_then(|f| f.conn);
        if notify && let Some(conn) = conn {
            let id = self.offer_id(seq);
            self.outbox.to_framework(
                conn,
                event::Event::Rescind(v1::Rescind {
                    offer_ids: vec![id],
                }),
            );
        }
        Some(offer)
    }

    /// Takes an offer out of the book (its resources stay with the
    /// allocator as allocated).
    pub(crate) fn take_offer(&mut self, seq: u64) -> Option<Offer> {
        self.offers.remove(&seq)
    }

    /// The outstanding offers on an agent, ascending (through the offer
    /// book's index: an agent that comes, goes or goes quiet costs its own
    /// offers only).
    pub(crate) fn offers_on(&self, agent_id: &str) -> Vec<u64> {
        match self.allocator.agent_key(agent_id) {
            Some((slot, _)) => self.offers.on_agent(slot, agent_id),
            // The allocator forgets an agent only after its offers went;
            // should one be left, a scan finds it.
            None => self.scan_offers(|o| &*o.agent_id == agent_id),
        }
    }

    /// Points the allocation cycle's table at the agent's offer fields (after
    /// the allocator learned the agent).
    pub(crate) fn refresh_hot_agent(&mut self, agent_id: &str) {
        let (Some((slot, id)), Some(agent)) = (
            self.allocator.agent_key(agent_id),
            self.agents.get(agent_id),
        ) else {
            return;
        };
        let slot = slot as usize;
        if self.hot_agents.len() <= slot {
            self.hot_agents.resize(slot + 1, None);
        }
        let fields = self.field_arena.push(&agent.info, &agent.total);
        if let Some(old) = self.hot_agents[slot].replace(HotAgent { id, fields }) {
            self.field_arena.release(&old.fields);
        }
        if self.field_arena.wants_compaction() {
            self.field_arena
                .compact(self.hot_agents.iter_mut().flatten().map(|h| &mut h.fields));
        }
    }

    /// Forgets the agent's entry in the allocation cycle's table (before
    /// the allocator forgets the agent).
    pub(crate) fn drop_hot_agent(&mut self, agent_id: &str) {
        let Some((slot, _)) = self.allocator.agent_key(agent_id) else {
            return;
        };
        if let Some(old) = self
            .hot_agents
            .get_mut(slot as usize)
            .and_then(Option::take)
        {
            self.field_arena.release(&old.fields);
        }
    }

    /// Points the allocation cycle's table at the framework's connection and
    /// offer field (after it subscribed, disconnected, or the allocator
    /// learned it).
    pub(crate) fn refresh_hot_framework(&mut self, framework_id: &str) {
        let Some((slot, id)) = self.allocator.framework_key(framework_id) else {
            return;
        };
        let slot = slot as usize;
        if self.hot_frameworks.len() <= slot {
            self.hot_frameworks.resize(slot + 1, None);
        }
        self.hot_frameworks[slot] = self.frameworks.get(framework_id).map(|f| HotFramework {
            id,
            conn: f.conn,
            field: f.offer_field.clone(),
        });
    }

    /// The outstanding offers of a framework, ascending (through the offer
    /// book's index).
    pub(crate) fn offers_of(&self, framework_id: &str) -> Vec<u64> {
        match self.allocator.framework_key(framework_id) {
            Some((slot, _)) => self.offers.of_framework(slot, framework_id),
            None => self.scan_offers(|o| &*o.framework_id == framework_id),
        }
    }

    fn scan_offers(&self, keep: impl Fn(&Offer) -> bool) -> Vec<u64> {
        self.offers
            .values()
            .filter(|o| keep(o))
            .map(|o| o.seq)
            .collect()
    }

    /// Periodic duties: agent timeouts, framework failover timeouts, offer
    /// timeouts, heartbeats.
    pub fn tick(&mut self, now: Now) {
        self.expire_agents(now);
        self.expire_frameworks(now);
        if let Some(timeout) = self.config.offer_timeout {
            let old: Vec<u64> = self
                .offers
                .values()
                .filter(|o| now.instant >= o.created + timeout)
                .map(|o| o.seq)
                .collect();
            for seq in old {
                tracing::debug!(offer = seq, "offer timed out; rescinding");
                self.remove_offer(seq, None, true, now);
            }
        }
        let interval = self.config.framework_heartbeat_interval;
        for fw in self.frameworks.values_mut() {
            if let Some(conn) = fw.conn
                && now.instant >= fw.next_heartbeat
            {
                fw.next_heartbeat = now.instant + interval;
                self.outbox
                    .to_framework(conn, event::Event::Heartbeat(v1::Heartbeat {}));
            }
        }
    }

    /// A status the master makes up itself: no uuid, no acknowledgement.
    pub(crate) fn master_status(
        task: &Task,
        state: TaskState,
        reason: v1::StatusReason,
        message: impl Into<String>,
        now: Now,
    ) -> TaskStatus {
        TaskStatus {
            task_id: task.id.clone(),
            state: state as i32,
            message: message.into(),
            source: v1::StatusSource::SourceMaster as i32,
            reason: reason as i32,
            agent_id: task.agent_id.to_string(),
            framework_id: task.framework_id.to_string(),
            uuid: Vec::new(),
            timestamp: now.unix,
            healthy: task.status_fields().and_then(|s| s.healthy),
            exit_code: None,
            ready: task.status_fields().and_then(|s| s.ready),
            latest_state: None,
        }
    }

    /// Sends statuses to a framework, if it is connected.
    pub(crate) fn send_updates(&mut self, framework_id: &str, statuses: Vec<TaskStatus>) {
        if statuses.is_empty() {
            return;
        }
        if let Some(conn) = self.frameworks.get(framework_id).and_then(|f| f.conn) {
            self.outbox
                .to_framework(conn, event::Event::Updates(v1::Updates { statuses }));
        }
    }

    /// Sends a message to an agent, if it is connected.
    pub(crate) fn send_to_agent(&mut self, agent_id: &str, msg: master_to_agent::Message) -> bool {
        match self.agents.get(agent_id).and_then(|a| a.conn) {
            Some(conn) => {
                self.outbox.to_agent(conn, msg);
                true
            }
            None => false,
        }
    }

    /// Moves a task that ended and whose last update is settled out of the
    /// framework's active tasks into its completed ones.
    pub(crate) fn complete_task(&mut self, framework_id: &str, task_id: &str) {
        let max = self.config.max_completed_tasks;
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let Some(task) = fw.tasks.remove(task_id) else {
            return;
        };
        if let Some(agent) = self.agents.get_mut(&*task.agent_id) {
            agent
                .tasks
                .remove(&(Arc::clone(&task.framework_id), task_id.to_string()));
        }
        fw.completed.push_back(task);
        while fw.completed.len() > max {
            fw.completed.pop_front();
        }
    }

    /// Counts for `/metrics`.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for a in self.agents.values() {
            *c.agents.entry(a.status.as_str()).or_default() += 1;
        }
        for fw in self.frameworks.values() {
            if fw.conn.is_some() {
                c.frameworks_connected += 1;
            } else {
                c.frameworks_disconnected += 1;
            }
            for t in fw.tasks.values() {
                *c.tasks.entry(t.state.as_str_name()).or_default() += 1;
            }
            for t in &fw.completed {
                *c.tasks.entry(t.state.as_str_name()).or_default() += 1;
            }
        }
        c.frameworks_removed = self.removed_framework_ids.len();
        c.offers = self.offers.len();
        c
    }
}

/// Counts for `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    pub agents: HashMap<&'static str, usize>,
    pub frameworks_connected: usize,
    pub frameworks_disconnected: usize,
    pub frameworks_removed: usize,
    pub offers: usize,
    pub tasks: HashMap<&'static str, usize>,
}

#[cfg(test)]
mod tests;
