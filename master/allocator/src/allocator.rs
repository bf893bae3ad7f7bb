//! The allocator proper: the state of agents, frameworks, roles and filters,
//! and the weighted-DRF allocation loop over them.
//!
//! # Layout, and why
//!
//! One `allocate` over 10,000 agents has about 200 ns per agent, so the loop
//! must not sort, hash strings, allocate per candidate, or chase pointers it
//! can avoid.
//!
//! - Agents, frameworks, roles and subscriptions (a framework in one role:
//!   the unit that holds resources, is suppressed and is filtered) live in
//!   dense tables indexed by `u32`, with a `HashMap` from id to index for the
//!   calls that name them. Removed slots are reused. The loop walks the
//!   agent table front to back.
//! - Roles with at least one framework that may receive offers (active, not
//!   suppressed there) sit in `role_order`, an indexed 4-ary heap keyed by
//!   weighted dominant share; each role keeps its eligible subscriptions in
//!   its own heap keyed by their share. An allocation moves the one role and
//!   subscription it changed, in O(log n) without allocating; the loop
//!   usually looks at the first entry only, and walks on in order when that
//!   one is filtered on the agent. When the cluster's totals or the weights
//!   change, every share moves: the orders are then marked stale and rebuilt
//!   once, at the next `allocate`.
//! - Shares come from fixed-point integers: each agent keeps its available
//!   cpus, mem, disk and gpus (unreserved, and per reserving role) in fixed
//!   arrays beside the full `Resources` bag, and each role and subscription
//!   keeps what it holds the same way. The bag is only touched to build an
//!   offer (for an agent without reservations, it is moved out whole).
//! - Filters sit in a [`FilterTable`]: a bit per (agent, subscription) in one
//!   flat bitset that the loop reads in agent order, the filters themselves
//!   in per-agent lists found by counting bits, and the refused resources
//!   interned in a [`FilterBook`].
//! - The allocation loop reads each agent's out-of-line id a few agents
//!   ahead, so that the cache miss overlaps with other work (see
//!   [`Allocator::warm_up`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::Resources;

use crate::agent::Agent;
use crate::config::{AllocatorConfig, validate_weight};
use crate::filter::{Filter, FilterBook, FilterTable};
use crate::order::{ABSENT, Heap, OrderKey, Walk};
use crate::quantities::{CPUS, MEM, Milli4, Quantities, add4, dominant_share, sub4};

/// How far ahead of the allocation loop [`Allocator::warm_up`] reads.
const WARM_AHEAD: usize = 8;

/// The longest refuse filter honoured, as in Mesos (a year): longer requests,
/// and ones whose expiry overflows, are cut to this.
pub const MAX_REFUSE: Duration = Duration::from_secs(365 * 24 * 3600);

/// One decision of [`Allocator::allocate`]: offer `resources` of `agent_id`
/// to `framework_id`, acting in `role`. The allocator already counts them as
/// allocated; they come back through [`Allocator::recover`].
///
/// Ids are `Arc<str>` so that producing thousands of allocations per cycle
/// copies no strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The framework to offer to.
    pub framework_id: Arc<str>,
    /// The role the framework receives them in (it may be in several).
    pub role: Arc<str>,
    /// The agent the resources are on.
    pub agent_id: Arc<str>,
    /// Everything the role may use on the agent: unreserved and reserved
    /// for `role`.
    pub resources: Resources,
    /// Whether `resources` is the agent's whole total (nothing else was
    /// held there and it has no reservations), so a caller may reuse what it
    /// derived from the total instead of reading `resources`.
    pub whole_agent: bool,
    /// The agent's slot (see [`Allocator::agent_key`]): stable while the
    /// agent stays, reused after it goes.
    pub agent_slot: u32,
    /// The framework's slot (see [`Allocator::framework_key`]).
    pub framework_slot: u32,
}

/// A role as `/state` and `/metrics` report it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleSummary {
    /// The role's name.
    pub role: String,
    /// Its DRF weight (1.0 unless configured).
    pub weight: f64,
    /// Dominant share divided by the weight: what DRF orders roles by.
    pub share: f64,
    /// What the role's frameworks hold (DRF kinds only).
    pub allocated: Quantities,
    /// Frameworks subscribed in the role.
    pub frameworks: usize,
}

/// A framework as `/state` and `/metrics` report it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameworkSummary {
    /// The framework's id.
    pub framework_id: String,
    /// Whether it may receive offers (connected, and subscribed at least
    /// once).
    pub active: bool,
    /// Roles it is subscribed in, sorted.
    pub roles: Vec<String>,
    /// Subscribed roles in which it asked for no offers, sorted.
    pub suppressed_roles: Vec<String>,
    /// Dominant share over all its roles (unweighted).
    pub share: f64,
    /// What it holds in all roles (DRF kinds only).
    pub allocated: Quantities,
    /// Its unweighted dominant share in each role where it is subscribed or
    /// holds resources, sorted by role.
    pub role_shares: Vec<(String, f64)>,
}

/// Weighted-DRF allocator with refuse filters, suppress and revive, in the
/// manner of Mesos's hierarchical allocator. Pure and synchronous: the
/// master's actor feeds it events and the current time and acts on the
/// allocations it returns.
#[derive(Debug)]
pub struct Allocator {
    /// Configured weights; roles not listed weigh 1.0.
    weights: HashMap<String, f64>,
    /// Minimum offer, in milli-units of cpus and mem.
    min_cpus: i64,
    min_mem: i64,

    agents: Vec<Option<Agent>>,
    agent_ids: HashMap<Arc<str>, u32>,
    free_agents: Vec<u32>,

    frameworks: Vec<Option<Framework>>,
    framework_ids: HashMap<Arc<str>, u32>,
    free_frameworks: Vec<u32>,

    /// Roles are never removed (there are few, and their index is their tie
    /// break).
    roles: Vec<Role>,
    role_ids: HashMap<Arc<str>, u32>,

    subs: Vec<Option<Sub>>,
    free_subs: Vec<u32>,
    /// Creation counter of subscriptions: ties within a role go to the
    /// earliest. (It wraps after four billion subscriptions, which would
    /// only make some ties break differently.)
    next_seq: u32,

    /// Roles with at least one eligible subscription, by weighted share.
    role_order: Heap,
    /// Where each role sits in `role_order` (`ABSENT` if not there).
    role_pos: Vec<u32>,
    /// Where each subscription sits in its role's order.
    sub_pos: Vec<u32>,
    /// Scratch space for walking the orders past filtered entries.
    role_walk: Walk,
    sub_walk: Walk,
    /// Set when every share moved (totals or weights changed); the orders are
    /// rebuilt at the next `allocate` instead of after each such event.
    orders_stale: bool,
    /// The cluster's total of each DRF kind, over all agents.
    totals: Milli4,
    filters: FilterBook,
    /// Every refuse filter, by agent and subscription.
    filter_table: FilterTable,
    /// How many allocations the last `allocate` made: the next one reserves
    /// that much room up front instead of growing its vector step by step.
    last_allocations: usize,
}

#[derive(Debug)]
struct Framework {
    id: Arc<str>,
    active: bool,
    /// Known only from resources found in use on a registering agent; such
    /// an entry goes away with its last allocation unless the framework
    /// subscribes.
    placeholder: bool,
    /// Its subscriptions, including roles it left that still hold resources.
    subs: Vec<u32>,
}

#[derive(Debug)]
struct Role {
    name: Arc<str>,
    weight: f64,
    /// What all its subscriptions hold.
    allocated: Milli4,
    /// Its eligible subscriptions, by unweighted share.
    frameworks: Heap,
    /// Subscriptions (eligible or not) in this role.
    subs: usize,
}

/// A framework acting in one role: the unit that holds resources, is
/// suppressed, and is filtered.
#[derive(Debug)]
struct Sub {
    framework: u32,
    role: u32,
    seq: u32,
    allocated: Milli4,
    /// The role is among the framework's current roles (a role it left stays
    /// here, unsubscribed, while it holds resources).
    subscribed: bool,
    suppressed: bool,
    /// Agents on which it holds a record, so removal knows when to stop.
    records: u32,
    /// On how many agents it has a refuse filter (the filters live with the
    /// agents).
    filters: u32,
}

impl Allocator {
    /// An allocator with no agents and no frameworks. Invalid weights in the
    /// config count as 1.0 (check with [`AllocatorConfig::validate`] first).
    pub fn new(config: AllocatorConfig) -> Self {
        Allocator {
            weights: valid_weights(config.weights),
            min_cpus: config.min_allocatable_cpus.milli(),
            min_mem: config.min_allocatable_mem.milli(),
            agents: Vec::new(),
            agent_ids: HashMap::new(),
            free_agents: Vec::new(),
            frameworks: Vec::new(),
            framework_ids: HashMap::new(),
            free_frameworks: Vec::new(),
            roles: Vec::new(),
            role_ids: HashMap::new(),
            subs: Vec::new(),
            free_subs: Vec::new(),
            next_seq: 0,
            role_order: Heap::default(),
            role_pos: Vec::new(),
            sub_pos: Vec::new(),
            role_walk: Walk::new(),
            sub_walk: Walk::new(),
            orders_stale: false,
            totals: [0; 4],
            filters: FilterBook::default(),
            filter_table: FilterTable::default(),
            last_allocations: 0,
        }
    }

    // ----- agents -----

    /// Adds an agent with its `total` resources, of which `used` (framework
    /// id, role, resources) are already held by running tasks: an agent
    /// re-registering after a master failover. Frameworks not yet known get
    /// an inactive entry so that what they use counts in the shares. `used`
    /// beyond what the agent has is clamped. Adding a known agent replaces
    /// it (its old allocations are forgotten).
    pub fn add_agent(
        &mut self,
        agent_id: &str,
        total: Resources,
        used: &[(String, String, Resources)],
    ) {
        if self.agent_ids.contains_key(agent_id) {
            self.remove_agent(agent_id);
        }
        let id: Arc<str> = agent_id.into();
        let mut role_index = |name: &str| self.role_index(name);
        let mut agent = Agent::new(id.clone(), total, &mut role_index);
        let a = match self.free_agents.pop() {
            Some(a) => a,
            None => {
                self.agents.push(None);
                (self.agents.len() - 1) as u32
            }
        };
        add4(&mut self.totals, &agent.total_scalars);
        self.orders_stale = true;
        for (framework_id, role, resources) in used {
            let f = self.framework_index(framework_id);
            let s = self.sub_index(f, role);
            let (scalars, created, _exact) = agent.claim(s, resources);
            self.charge(s, &scalars);
            if created && let Some(sub) = self.sub_mut(s) {
                sub.records += 1;
            }
            self.settle_sub(s);
        }
        self.agents[a as usize] = Some(agent);
        self.agent_ids.insert(id, a);
    }

    /// Removes an agent: what frameworks held there leaves their shares, the
    /// cluster's total shrinks, and its filters go. Unknown ids are ignored.
    pub fn remove_agent(&mut self, agent_id: &str) {
        let Some(a) = self.agent_ids.remove(agent_id) else {
            return;
        };
        let Some(agent) = self.agents[a as usize].take() else {
            return;
        };
        self.free_agents.push(a);
        sub4(&mut self.totals, &agent.total_scalars);
        self.orders_stale = true;
        let holders = agent.holders();
        for &s in &holders {
            let scalars = agent.held_scalars(s);
            self.discharge(s, &scalars);
            if let Some(sub) = self.sub_mut(s) {
                sub.records = sub.records.saturating_sub(1);
            }
        }
        for (s, filter) in self.filter_table.take_agent(a) {
            self.filters.release(filter.resources);
            if let Some(sub) = self.subs[s as usize].as_mut() {
                sub.filters = sub.filters.saturating_sub(1);
            }
        }
        for s in holders {
            self.settle_sub(s);
        }
    }

    /// Inactive agents (e.g. draining, or not heard from) keep their
    /// bookkeeping but get no offers.
    pub fn set_agent_active(&mut self, agent_id: &str, active: bool) {
        if let Some(agent) = self.agent_mut(agent_id) {
            agent.active = active;
        }
    }

    // ----- frameworks -----

    /// Adds a framework or updates it on resubscription. `roles` become its
    /// roles; allocations in roles it no longer lists stay accounted until
    /// recovered, but its filters and suppression there are dropped. Roles it
    /// keeps keep their suppression and filters. Inactive frameworks get no
    /// offers.
    pub fn add_framework(&mut self, framework_id: &str, roles: &[String], active: bool) {
        let f = self.framework_index(framework_id);
        if let Some(fw) = self.frameworks[f as usize].as_mut() {
            fw.placeholder = false;
            fw.active = active;
        }
        let existing = self.framework_subs(f);
        for &s in &existing {
            let Some(role) = self.sub(s).map(|sub| sub.role) else {
                continue;
            };
            let keep = roles.iter().any(|r| *r == *self.roles[role as usize].name);
            if !keep {
                self.clear_filters(s);
                if let Some(sub) = self.sub_mut(s) {
                    sub.subscribed = false;
                    sub.suppressed = false;
                }
            }
        }
        for role in roles {
            let s = self.sub_index(f, role);
            if let Some(sub) = self.sub_mut(s) {
                sub.subscribed = true;
            }
        }
        for s in self.framework_subs(f) {
            self.settle_sub(s);
        }
    }

    /// Removes a framework, releasing everything it held on every agent back
    /// to available and dropping its filters. Unknown ids are ignored.
    pub fn remove_framework(&mut self, framework_id: &str) {
        let Some(&f) = self.framework_ids.get(framework_id) else {
            return;
        };
        let subs = self.framework_subs(f);
        let mut holding: u32 = subs
            .iter()
            .filter_map(|&s| self.sub(s))
            .map(|s| s.records)
            .sum();
        let mut a = 0;
        while holding > 0 && a < self.agents.len() {
            if let Some(agent) = self.agents[a].as_mut() {
                for &s in &subs {
                    if let Some(scalars) = agent.release_all(s) {
                        holding = holding.saturating_sub(1);
                        if let Some(role) = self.subs[s as usize].as_ref().map(|x| x.role) {
                            sub4(&mut self.roles[role as usize].allocated, &scalars);
                        }
                    }
                }
            }
            a += 1;
        }
        for s in subs {
            if let Some(sub) = self.sub_mut(s) {
                sub.allocated = [0; 4];
                sub.records = 0;
                sub.subscribed = false;
            }
            self.remove_sub(s);
        }
        // `remove_sub` drops the framework with its last subscription; a
        // framework without any is dropped here.
        if let Some(id) = self
            .frameworks
            .get(f as usize)
            .and_then(|x| x.as_ref())
            .map(|x| x.id.clone())
        {
            self.framework_ids.remove(&id);
            self.frameworks[f as usize] = None;
            self.free_frameworks.push(f);
        }
    }

    /// Disconnected frameworks get no offers but keep their allocations.
    /// A framework known only from running tasks stays inactive until it
    /// subscribes through [`Self::add_framework`].
    pub fn set_framework_active(&mut self, framework_id: &str, active: bool) {
        let Some(&f) = self.framework_ids.get(framework_id) else {
            return;
        };
        if let Some(fw) = self.frameworks[f as usize].as_mut()
            && !fw.placeholder
        {
            fw.active = active;
        }
        for s in self.framework_subs(f) {
            self.reposition(s);
        }
    }

    /// Stops offers to the framework in `roles` (empty: all its roles) until
    /// it revives. Roles it is not subscribed in are ignored.
    pub fn suppress(&mut self, framework_id: &str, roles: &[String]) {
        for s in self.matching_subs(framework_id, roles) {
            if let Some(sub) = self.sub_mut(s)
                && sub.subscribed
            {
                sub.suppressed = true;
            }
            self.reposition(s);
        }
    }

    /// Resumes offers to the framework in `roles` (empty: all its roles) and
    /// clears its filters there, so it hears about everything again.
    pub fn revive(&mut self, framework_id: &str, roles: &[String]) {
        for s in self.matching_subs(framework_id, roles) {
            self.clear_filters(s);
            if let Some(sub) = self.sub_mut(s) {
                sub.suppressed = false;
            }
            self.reposition(s);
        }
    }

    // ----- resources -----

    /// Returns `resources` that the framework held in `role` on the agent
    /// (a declined or rescinded offer, unused resources of an accepted one,
    /// a finished task) to the pool. With `refuse = Some(d)`, `d > 0`, the
    /// framework is also not offered, in that role on that agent, anything
    /// contained in `resources` until `now + d` (at most [`MAX_REFUSE`]).
    ///
    /// Returns false when something did not add up: unknown agent, framework
    /// or role, or more than it held (only what it held is returned). The
    /// filter is installed whenever the framework is subscribed in the role
    /// and the agent is known, even then.
    pub fn recover(
        &mut self,
        framework_id: &str,
        role: &str,
        agent_id: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Instant,
    ) -> bool {
        let (Some(&a), Some(&f), Some(&r)) = (
            self.agent_ids.get(agent_id),
            self.framework_ids.get(framework_id),
            self.role_ids.get(role),
        ) else {
            return false;
        };
        let Some(s) = self.find_sub(f, r) else {
            return false;
        };
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return false;
        };
        let released = agent.release(s, resources);
        self.discharge(s, &released.scalars);
        let mut subscribed = false;
        if let Some(sub) = self.sub_mut(s) {
            if released.emptied {
                sub.records = sub.records.saturating_sub(1);
            }
            subscribed = sub.subscribed;
        }
        if let Some(d) = refuse
            && !d.is_zero()
            && subscribed
            && !resources.is_empty()
            && let Some(expires) = now.checked_add(d.min(MAX_REFUSE))
        {
            let id = self.filters.intern(resources);
            let filter = Filter {
                resources: id,
                expires,
            };
            match self.filter_table.set(a, s, filter) {
                Some(old) => self.filters.release(old.resources),
                None => {
                    if let Some(sub) = self.subs[s as usize].as_mut() {
                        sub.filters += 1;
                    }
                }
            }
        }
        self.settle_sub(s);
        released.exact
    }

    /// Offers every active agent's available resources, agent by agent: to
    /// the role with the lowest weighted share that has a framework that may
    /// receive them (active, not suppressed, not filtered on that agent), and
    /// within it to such a framework with the lowest share. The offer holds
    /// everything the role may use there (unreserved plus its reservation) if
    /// that reaches the minimum allocatable; what remains (other roles'
    /// reservations) goes on to other roles. An agent gives at most one
    /// allocation per role per call. Agents are visited in slot order (new
    /// agents fill the most recently freed slot, else go last).
    pub fn allocate(&mut self, now: Instant) -> Vec<Allocation> {
        let mut out = Vec::with_capacity(self.last_allocations);
        self.allocate_into(now, &mut out);
        self.last_allocations = out.len();
        out
    }

    /// [`Self::allocate`], appending to `out`: a caller that keeps one
    /// buffer across cycles saves allocating (and faulting in) a large
    /// vector every time.
    pub fn allocate_into(&mut self, now: Instant, out: &mut Vec<Allocation>) {
        if self.orders_stale {
            self.rebuild_orders();
        }
        if self.role_order.is_empty() {
            return;
        }
        for a in 0..self.agents.len() as u32 {
            self.warm_up(a as usize + WARM_AHEAD);
            self.allocate_agent(a, now, out);
        }
    }

    /// Replaces the role weights (roles not listed weigh 1.0; invalid
    /// weights count as 1.0, check with [`validate_weight`] first).
    pub fn update_weights(&mut self, weights: HashMap<String, f64>) {
        self.weights = valid_weights(weights);
        for role in &mut self.roles {
            role.weight = self.weights.get(&*role.name).copied().unwrap_or(1.0);
        }
        self.orders_stale = true;
    }

    /// Drops every filter that has expired by `now`. Filters are otherwise
    /// dropped when they are next looked at; call this from time to time so
    /// that filters of frameworks that stopped receiving offers do not pile
    /// up. Returns how many went.
    pub fn expire_filters(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        let (book, subs) = (&mut self.filters, &mut self.subs);
        self.filter_table.retain(|_, s, f| {
            let keep = now < f.expires;
            if !keep {
                book.release(f.resources);
                if let Some(Some(sub)) = subs.get_mut(s as usize) {
                    sub.filters = sub.filters.saturating_sub(1);
                }
                dropped += 1;
            }
            keep
        });
        dropped
    }

    // ----- queries -----

    /// An agent's slot and the allocator's own id for it (the same `Arc`
    /// every [`Allocation`] on that agent carries), so a caller can keep data
    /// per slot and check it with `Arc::ptr_eq` instead of hashing ids.
    pub fn agent_key(&self, agent_id: &str) -> Option<(u32, Arc<str>)> {
        let a = *self.agent_ids.get(agent_id)?;
        let agent = self.agents.get(a as usize)?.as_ref()?;
        Some((a, agent.id.clone()))
    }

    /// A framework's slot and the allocator's own id for it; see
    /// [`Allocator::agent_key`].
    pub fn framework_key(&self, framework_id: &str) -> Option<(u32, Arc<str>)> {
        let f = *self.framework_ids.get(framework_id)?;
        let fw = self.frameworks.get(f as usize)?.as_ref()?;
        Some((f, fw.id.clone()))
    }

    /// What the agent has available now, or None if unknown.
    pub fn available(&self, agent_id: &str) -> Option<Resources> {
        self.agent(agent_id).map(|a| a.available.clone())
    }

    /// The agent's total, or None if unknown.
    pub fn total(&self, agent_id: &str) -> Option<Resources> {
        self.agent(agent_id).map(|a| a.total.clone())
    }

    /// What each (framework, role) holds on the agent, sorted by framework
    /// and role; None if the agent is unknown.
    pub fn allocations_on(&self, agent_id: &str) -> Option<Vec<Allocation>> {
        let slot = *self.agent_ids.get(agent_id)?;
        let agent = self.agent(agent_id)?;
        let mut out: Vec<Allocation> = agent
            .holders()
            .into_iter()
            .filter_map(|s| {
                let sub = self.sub(s)?;
                let fw = self.frameworks[sub.framework as usize].as_ref()?;
                let resources = agent.held_resources(s)?;
                Some(Allocation {
                    framework_id: fw.id.clone(),
                    role: self.roles[sub.role as usize].name.clone(),
                    agent_id: agent.id.clone(),
                    whole_agent: resources == agent.total,
                    resources,
                    agent_slot: slot,
                    framework_slot: sub.framework,
                })
            })
            .collect();
        out.sort_by(|x, y| (&x.framework_id, &x.role).cmp(&(&y.framework_id, &y.role)));
        Some(out)
    }

    /// Weighted dominant share of every role that has frameworks or
    /// allocations, sorted by role.
    pub fn role_shares(&self) -> Vec<(String, f64)> {
        self.role_summaries()
            .into_iter()
            .map(|r| (r.role, r.share))
            .collect()
    }

    /// Every role that has frameworks or allocations, sorted by role.
    pub fn role_summaries(&self) -> Vec<RoleSummary> {
        let mut subscribed = vec![0usize; self.roles.len()];
        for sub in self.subs.iter().flatten().filter(|s| s.subscribed) {
            subscribed[sub.role as usize] += 1;
        }
        let mut out: Vec<RoleSummary> = self
            .roles
            .iter()
            .enumerate()
            .filter(|(_, role)| role.subs > 0 || role.allocated != [0; 4])
            .map(|(r, role)| RoleSummary {
                role: role.name.to_string(),
                weight: role.weight,
                share: self.role_share(r as u32),
                allocated: role.allocated.into(),
                frameworks: subscribed[r],
            })
            .collect();
        out.sort_by(|x, y| x.role.cmp(&y.role));
        out
    }

    /// The framework's dominant share over all its roles (unweighted); 0 if
    /// unknown.
    pub fn framework_share(&self, framework_id: &str) -> f64 {
        self.framework_summary(framework_id)
            .map_or(0.0, |f| f.share)
    }

    /// The framework's state, or None if unknown.
    pub fn framework_summary(&self, framework_id: &str) -> Option<FrameworkSummary> {
        let f = *self.framework_ids.get(framework_id)?;
        let fw = self.frameworks[f as usize].as_ref()?;
        let mut allocated = [0; 4];
        let mut roles = Vec::new();
        let mut suppressed_roles = Vec::new();
        let mut role_shares = Vec::new();
        for &s in &fw.subs {
            let Some(sub) = self.sub(s) else { continue };
            let name = self.roles[sub.role as usize].name.to_string();
            add4(&mut allocated, &sub.allocated);
            if sub.subscribed {
                roles.push(name.clone());
                if sub.suppressed {
                    suppressed_roles.push(name.clone());
                }
            }
            role_shares.push((name, dominant_share(&sub.allocated, &self.totals)));
        }
        roles.sort();
        suppressed_roles.sort();
        role_shares.sort_by(|x, y| x.0.cmp(&y.0));
        Some(FrameworkSummary {
            framework_id: fw.id.to_string(),
            active: fw.active,
            roles,
            suppressed_roles,
            share: dominant_share(&allocated, &self.totals),
            allocated: allocated.into(),
            role_shares,
        })
    }

    /// The ids of all known frameworks (placeholders included), sorted.
    pub fn framework_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.framework_ids.keys().map(|k| k.to_string()).collect();
        ids.sort();
        ids
    }

    /// The weight DRF applies to `role`.
    pub fn weight(&self, role: &str) -> f64 {
        self.weights.get(role).copied().unwrap_or(1.0)
    }

    /// The cluster's total of the DRF kinds, over all agents.
    pub fn cluster_total(&self) -> Quantities {
        self.totals.into()
    }

    /// What all frameworks hold, DRF kinds only.
    pub fn cluster_allocated(&self) -> Quantities {
        let mut sum = [0; 4];
        for role in &self.roles {
            add4(&mut sum, &role.allocated);
        }
        sum.into()
    }

    /// Agents known, active or not.
    pub fn agent_count(&self) -> usize {
        self.agent_ids.len()
    }

    /// Agents that may be offered.
    pub fn active_agent_count(&self) -> usize {
        self.agents.iter().flatten().filter(|a| a.active).count()
    }

    /// Known frameworks, placeholders for frameworks seen only in agents'
    /// running tasks included.
    pub fn framework_count(&self) -> usize {
        self.framework_ids.len()
    }

    /// Frameworks that may receive offers.
    pub fn active_framework_count(&self) -> usize {
        self.frameworks
            .iter()
            .flatten()
            .filter(|f| f.active)
            .count()
    }

    /// Filters held, including expired ones not yet dropped.
    pub fn filter_count(&self) -> usize {
        self.filter_table.len()
    }

    // ----- the allocation loop -----

    /// Allocates one agent's available resources (see [`Self::allocate`]).
    ///
    /// Phase A runs when the unreserved resources alone reach the minimum:
    /// then every role has something to take, so the first role in order with
    /// a framework that is not filtered wins everything it may use, which
    /// leaves only other roles' reservations. Phase B offers those to their
    /// roles, in order. A role passed over in phase A stays out of phase B:
    /// what it could take only shrank, and a filter that covered more still
    /// covers less.
    fn allocate_agent(&mut self, a: u32, now: Instant, out: &mut Vec<Allocation>) {
        let Some(agent) = self.agents[a as usize].as_ref() else {
            return;
        };
        if !agent.active {
            return;
        }
        let mut passed: Option<OrderKey> = None;
        if self.meets_min(&agent.unreserved) {
            let mut role_walk = std::mem::take(&mut self.role_walk);
            let mut sub_walk = std::mem::take(&mut self.sub_walk);
            let mut winner = None;
            let found = self.role_order.find(&mut role_walk, |rk| {
                let candidate = agent.allocatable(rk.idx());
                winner = self.pick_framework(rk.idx(), a, agent, &candidate, now, &mut sub_walk);
                winner.is_some()
            });
            self.role_walk = role_walk;
            self.sub_walk = sub_walk;
            let (Some(rk), Some(s)) = (found, winner) else {
                return;
            };
            self.grant(a, rk.idx(), s, now, out);
            passed = Some(rk);
        }
        let Some(agent) = self.agents[a as usize].as_ref() else {
            return;
        };
        if agent.reserved.is_empty() {
            return;
        }
        let mut next: Vec<OrderKey> = agent
            .reserved
            .iter()
            .filter_map(|res| {
                let key = self.role_order.key(res.role, &self.role_pos)?;
                match passed {
                    Some(p) if key.idx() == p.idx() || key < p => None,
                    _ => Some(key),
                }
            })
            .collect();
        next.sort_unstable();
        let mut sub_walk = std::mem::take(&mut self.sub_walk);
        for rk in next {
            let Some(agent) = self.agents[a as usize].as_ref() else {
                break;
            };
            let candidate = agent.allocatable(rk.idx());
            if !self.meets_min(&candidate) {
                continue;
            }
            if let Some(s) = self.pick_framework(rk.idx(), a, agent, &candidate, now, &mut sub_walk)
            {
                self.grant(a, rk.idx(), s, now, out);
            }
        }
        self.sub_walk = sub_walk;
    }

    /// The first eligible subscription of role `r` not filtered on `agent`
    /// (of index `a`).
    fn pick_framework(
        &self,
        r: u32,
        a: u32,
        agent: &Agent,
        candidate: &Milli4,
        now: Instant,
        walk: &mut Walk,
    ) -> Option<u32> {
        let role = &self.roles[r as usize];
        let found = role.frameworks.find(walk, |fk| {
            let filtered = self.filter_table.get(a, fk.idx()).is_some_and(|filter| {
                self.filters
                    .applies(filter, now, &agent.available, &role.name, candidate)
            });
            !filtered
        });
        found.map(|k| k.idx())
    }

    /// Gives subscription `s` (of role `r`) everything role `r` may use on
    /// agent `a`.
    fn grant(&mut self, a: u32, r: u32, s: u32, now: Instant, out: &mut Vec<Allocation>) {
        let (Some(agent), Some(sub)) = (
            self.agents[a as usize].as_mut(),
            self.subs[s as usize].as_mut(),
        ) else {
            return;
        };
        let role = &mut self.roles[r as usize];
        let scalars = agent.allocatable(r);
        let whole_agent = agent.is_whole_and_unreserved();
        let resources = agent.take_for(r, &role.name);
        if agent.record_add(s, &resources) {
            sub.records += 1;
        }
        if self
            .filter_table
            .get(a, s)
            .is_some_and(|f| now >= f.expires)
            && let Some(filter) = self.filter_table.remove(a, s)
        {
            self.filters.release(filter.resources);
            sub.filters = sub.filters.saturating_sub(1);
        }
        add4(&mut sub.allocated, &scalars);
        add4(&mut role.allocated, &scalars);
        let framework_id = match self.frameworks[sub.framework as usize].as_ref() {
            Some(fw) => fw.id.clone(),
            None => Arc::from(""),
        };
        out.push(Allocation {
            framework_id,
            role: role.name.clone(),
            agent_id: agent.id.clone(),
            resources,
            whole_agent,
            agent_slot: a,
            framework_slot: sub.framework,
        });
        self.reposition(s);
    }

    /// Reads agent `a`'s id a few agents ahead of the loop. Each offer bumps
    /// the reference count of its agent's id, which lives out of line and
    /// is usually not in cache; an atomic increment on a missing line stops
    /// everything until the line arrives, while a plain read issued early
    /// overlaps with the work on the agents in between.
    fn warm_up(&self, a: usize) {
        if let Some(Some(agent)) = self.agents.get(a) {
            std::hint::black_box(agent.id.as_bytes().first().copied());
            self.filter_table.warm_up(a as u32);
        }
    }

    fn meets_min(&self, q: &Milli4) -> bool {
        (q[CPUS] > 0 && q[CPUS] >= self.min_cpus) || (q[MEM] > 0 && q[MEM] >= self.min_mem)
    }

    // ----- orders -----

    fn role_share(&self, r: u32) -> f64 {
        let role = &self.roles[r as usize];
        dominant_share(&role.allocated, &self.totals) / role.weight
    }

    fn eligible(&self, s: u32) -> bool {
        self.sub(s).is_some_and(|sub| {
            sub.subscribed
                && !sub.suppressed
                && self.frameworks[sub.framework as usize]
                    .as_ref()
                    .is_some_and(|f| f.active)
        })
    }

    /// Puts subscription `s` and its role where their current shares and
    /// eligibility say. Call after any change to either.
    fn reposition(&mut self, s: u32) {
        if self.orders_stale {
            return;
        }
        let eligible = self.eligible(s);
        let Some(sub) = self.subs[s as usize].as_ref() else {
            return;
        };
        let r = sub.role;
        let present = self.sub_pos[s as usize] != ABSENT;
        let frameworks = &self.roles[r as usize].frameworks;
        // A role's only eligible framework needs no order: its key may go
        // stale (refreshed when a second one joins), which spares a heap
        // update per allocation when each framework has its own role.
        let alone = eligible && present && frameworks.len() == 1;
        if !alone {
            if eligible
                && !present
                && frameworks.len() == 1
                && let Some(other) = frameworks.first()
            {
                let key = self.sub_key(other.idx());
                self.roles[r as usize]
                    .frameworks
                    .set(key, &mut self.sub_pos);
            }
            if eligible {
                let key = self.sub_key(s);
                self.roles[r as usize]
                    .frameworks
                    .set(key, &mut self.sub_pos);
            } else {
                self.roles[r as usize]
                    .frameworks
                    .remove(s, &mut self.sub_pos);
            }
        }
        self.reposition_role(r);
    }

    /// Subscription `s`'s key in its role's order, from its current share.
    fn sub_key(&self, s: u32) -> OrderKey {
        match self.sub(s) {
            Some(sub) => OrderKey::new(dominant_share(&sub.allocated, &self.totals), sub.seq, s),
            None => OrderKey::new(0.0, 0, s),
        }
    }

    fn reposition_role(&mut self, r: u32) {
        if self.orders_stale {
            return;
        }
        if self.roles[r as usize].frameworks.is_empty() {
            self.role_order.remove(r, &mut self.role_pos);
        } else {
            let key = OrderKey::new(self.role_share(r), r, r);
            self.role_order.set(key, &mut self.role_pos);
        }
    }

    fn rebuild_orders(&mut self) {
        self.orders_stale = false;
        self.role_order.clear(&mut self.role_pos);
        for role in &mut self.roles {
            role.frameworks.clear(&mut self.sub_pos);
        }
        for s in 0..self.subs.len() as u32 {
            if self.eligible(s) {
                let key = self.sub_key(s);
                if let Some(sub) = self.subs[s as usize].as_ref() {
                    self.roles[sub.role as usize]
                        .frameworks
                        .set(key, &mut self.sub_pos);
                }
            }
        }
        for r in 0..self.roles.len() as u32 {
            self.reposition_role(r);
        }
    }

    // ----- bookkeeping -----

    fn agent(&self, agent_id: &str) -> Option<&Agent> {
        let a = *self.agent_ids.get(agent_id)?;
        self.agents[a as usize].as_ref()
    }

    fn agent_mut(&mut self, agent_id: &str) -> Option<&mut Agent> {
        let a = *self.agent_ids.get(agent_id)?;
        self.agents[a as usize].as_mut()
    }

    fn sub(&self, s: u32) -> Option<&Sub> {
        self.subs.get(s as usize).and_then(Option::as_ref)
    }

    fn sub_mut(&mut self, s: u32) -> Option<&mut Sub> {
        self.subs.get_mut(s as usize).and_then(Option::as_mut)
    }

    fn framework_subs(&self, f: u32) -> Vec<u32> {
        self.frameworks[f as usize]
            .as_ref()
            .map(|fw| fw.subs.clone())
            .unwrap_or_default()
    }

    /// The framework's subscriptions in `roles` (empty: all subscribed ones).
    fn matching_subs(&self, framework_id: &str, roles: &[String]) -> Vec<u32> {
        let Some(&f) = self.framework_ids.get(framework_id) else {
            return Vec::new();
        };
        self.framework_subs(f)
            .into_iter()
            .filter(|&s| {
                self.sub(s).is_some_and(|sub| {
                    let name = &*self.roles[sub.role as usize].name;
                    if roles.is_empty() {
                        sub.subscribed
                    } else {
                        roles.iter().any(|r| r == name)
                    }
                })
            })
            .collect()
    }

    fn role_index(&mut self, name: &str) -> u32 {
        if let Some(&r) = self.role_ids.get(name) {
            return r;
        }
        let r = self.roles.len() as u32;
        let name: Arc<str> = name.into();
        self.roles.push(Role {
            name: name.clone(),
            weight: self.weights.get(&*name).copied().unwrap_or(1.0),
            allocated: [0; 4],
            frameworks: Heap::default(),
            subs: 0,
        });
        self.role_ids.insert(name, r);
        self.role_pos.push(ABSENT);
        r
    }

    /// The framework's index, adding an inactive placeholder if unknown.
    fn framework_index(&mut self, framework_id: &str) -> u32 {
        if let Some(&f) = self.framework_ids.get(framework_id) {
            return f;
        }
        let id: Arc<str> = framework_id.into();
        let fw = Framework {
            id: id.clone(),
            active: false,
            placeholder: true,
            subs: Vec::new(),
        };
        let f = match self.free_frameworks.pop() {
            Some(f) => {
                self.frameworks[f as usize] = Some(fw);
                f
            }
            None => {
                self.frameworks.push(Some(fw));
                (self.frameworks.len() - 1) as u32
            }
        };
        self.framework_ids.insert(id, f);
        f
    }

    fn find_sub(&self, f: u32, r: u32) -> Option<u32> {
        let fw = self.frameworks[f as usize].as_ref()?;
        fw.subs
            .iter()
            .copied()
            .find(|&s| self.sub(s).is_some_and(|sub| sub.role == r))
    }

    /// The subscription of framework `f` in `role`, added (unsubscribed) if
    /// missing.
    fn sub_index(&mut self, f: u32, role: &str) -> u32 {
        let r = self.role_index(role);
        if let Some(s) = self.find_sub(f, r) {
            return s;
        }
        let sub = Sub {
            framework: f,
            role: r,
            seq: self.next_seq,
            allocated: [0; 4],
            subscribed: false,
            suppressed: false,
            records: 0,
            filters: 0,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        let s = match self.free_subs.pop() {
            Some(s) => {
                self.subs[s as usize] = Some(sub);
                s
            }
            None => {
                self.subs.push(Some(sub));
                self.sub_pos.push(ABSENT);
                (self.subs.len() - 1) as u32
            }
        };
        self.roles[r as usize].subs += 1;
        if let Some(fw) = self.frameworks[f as usize].as_mut() {
            fw.subs.push(s);
        }
        s
    }

    /// Counts `scalars` as held by subscription `s` (and its role).
    fn charge(&mut self, s: u32, scalars: &Milli4) {
        if let Some(sub) = self.subs[s as usize].as_mut() {
            add4(&mut sub.allocated, scalars);
            add4(&mut self.roles[sub.role as usize].allocated, scalars);
        }
    }

    /// Stops counting `scalars` as held by subscription `s` (and its role).
    fn discharge(&mut self, s: u32, scalars: &Milli4) {
        if let Some(sub) = self.subs[s as usize].as_mut() {
            sub4(&mut sub.allocated, scalars);
            sub4(&mut self.roles[sub.role as usize].allocated, scalars);
        }
    }

    fn clear_filters(&mut self, s: u32) {
        if let Some(sub) = self.subs[s as usize].as_mut() {
            if sub.filters == 0 {
                return;
            }
            sub.filters = 0;
            // The filters live with the agents: a revive visits them all,
            // which takes well under a millisecond for 100,000 agents.
            for a in 0..self.agents.len() as u32 {
                if let Some(f) = self.filter_table.remove(a, s) {
                    self.filters.release(f.resources);
                }
            }
        }
    }

    /// After a change to subscription `s`: drops it if it is neither
    /// subscribed nor holding anything, else repositions it.
    fn settle_sub(&mut self, s: u32) {
        match self.sub(s) {
            Some(sub) if !sub.subscribed && sub.records == 0 => self.remove_sub(s),
            Some(_) => self.reposition(s),
            None => {}
        }
    }

    /// Drops subscription `s`, and its framework if that was a placeholder's
    /// last one. The caller has released its records.
    fn remove_sub(&mut self, s: u32) {
        self.clear_filters(s);
        let Some(sub) = self.subs[s as usize].take() else {
            return;
        };
        self.free_subs.push(s);
        let role = &mut self.roles[sub.role as usize];
        role.subs = role.subs.saturating_sub(1);
        sub4(&mut role.allocated, &sub.allocated);
        role.frameworks.remove(s, &mut self.sub_pos);
        self.reposition_role(sub.role);
        let f = sub.framework;
        let Some(fw) = self.frameworks[f as usize].as_mut() else {
            return;
        };
        fw.subs.retain(|&x| x != s);
        if fw.subs.is_empty() && fw.placeholder {
            let id = fw.id.clone();
            self.framework_ids.remove(&id);
            self.frameworks[f as usize] = None;
            self.free_frameworks.push(f);
        }
    }
}

fn valid_weights(weights: HashMap<String, f64>) -> HashMap<String, f64> {
    weights
        .into_iter()
        .filter(|(role, w)| validate_weight(role, *w).is_ok())
        .collect()
}

/// Test-only views of the internals: a consistency check of every cached
/// figure against the records, and a plain snapshot for the reference model.
#[cfg(test)]
pub(crate) mod inspect {
    use super::*;

    /// One agent, in visiting order.
    #[derive(Debug, Clone)]
    pub(crate) struct AgentView {
        pub slot: u32,
        pub id: String,
        pub active: bool,
        pub available: Resources,
    }

    /// One subscription.
    #[derive(Debug, Clone)]
    pub(crate) struct SubView {
        pub idx: u32,
        pub framework: String,
        pub role: u32,
        pub seq: u32,
        /// Recomputed from the agents' records, not the cached figure.
        pub allocated: Milli4,
        pub eligible: bool,
    }

    /// One role.
    #[derive(Debug, Clone)]
    pub(crate) struct RoleView {
        pub idx: u32,
        pub name: String,
        pub weight: f64,
    }

    /// One filter.
    #[derive(Debug, Clone)]
    pub(crate) struct FilterView {
        pub slot: u32,
        pub sub: u32,
        pub resources: Resources,
        pub expires: Instant,
    }

    #[derive(Debug, Clone)]
    pub(crate) struct Snapshot {
        pub agents: Vec<AgentView>,
        pub subs: Vec<SubView>,
        pub roles: Vec<RoleView>,
        pub filters: Vec<FilterView>,
        pub totals: Milli4,
        pub min_cpus: i64,
        pub min_mem: i64,
    }

    impl Allocator {
        pub(crate) fn snapshot(&self) -> Snapshot {
            let mut allocated: HashMap<u32, Milli4> = HashMap::new();
            for agent in self.agents.iter().flatten() {
                for s in agent.holders() {
                    add4(allocated.entry(s).or_default(), &agent.held_scalars(s));
                }
            }
            let mut filters = Vec::new();
            self.filter_table.visit(|a, s, f| {
                filters.push(FilterView {
                    slot: a,
                    sub: s,
                    resources: self
                        .filters
                        .resources(f.resources)
                        .cloned()
                        .unwrap_or_default(),
                    expires: f.expires,
                })
            });
            Snapshot {
                agents: self
                    .agents
                    .iter()
                    .enumerate()
                    .filter_map(|(a, x)| {
                        let x = x.as_ref()?;
                        Some(AgentView {
                            slot: a as u32,
                            id: x.id.to_string(),
                            active: x.active,
                            available: x.available.clone(),
                        })
                    })
                    .collect(),
                subs: self
                    .subs
                    .iter()
                    .enumerate()
                    .filter_map(|(s, x)| {
                        let x = x.as_ref()?;
                        let fw = self.frameworks[x.framework as usize].as_ref()?;
                        Some(SubView {
                            idx: s as u32,
                            framework: fw.id.to_string(),
                            role: x.role,
                            seq: x.seq,
                            allocated: allocated.get(&(s as u32)).copied().unwrap_or_default(),
                            eligible: self.eligible(s as u32),
                        })
                    })
                    .collect(),
                roles: self
                    .roles
                    .iter()
                    .enumerate()
                    .map(|(r, x)| RoleView {
                        idx: r as u32,
                        name: x.name.to_string(),
                        weight: x.weight,
                    })
                    .collect(),
                filters,
                totals: self.totals,
                min_cpus: self.min_cpus,
                min_mem: self.min_mem,
            }
        }

        /// Panics if any cached figure disagrees with what it caches.
        pub(crate) fn check_invariants(&self) {
            let mut totals = [0; 4];
            let mut held: HashMap<u32, (Milli4, u32)> = HashMap::new();
            for (a, agent) in self.agents.iter().enumerate() {
                let Some(agent) = agent else { continue };
                assert_eq!(
                    self.agent_ids.get(&agent.id),
                    Some(&(a as u32)),
                    "agent index"
                );
                add4(&mut totals, &agent.total_scalars);
                let mut sum = agent.available.clone();
                for s in agent.holders() {
                    let r = agent.held_resources(s).expect("a holder holds something");
                    assert!(!r.is_empty(), "agent {} holder {s} holds nothing", agent.id);
                    sum.add(&r);
                    let e = held.entry(s).or_default();
                    add4(&mut e.0, &agent.held_scalars(s));
                    e.1 += 1;
                    assert!(
                        self.sub(s).is_some(),
                        "agent {} holder {s} is gone",
                        agent.id
                    );
                }
                assert_eq!(
                    sum, agent.total,
                    "agent {}: available + held != total",
                    agent.id
                );
            }
            assert_eq!(totals, self.totals, "cluster totals");
            assert_eq!(self.agent_ids.len(), self.agents.iter().flatten().count());
            let mut role_alloc = vec![[0i64; 4]; self.roles.len()];
            let mut role_subs = vec![0usize; self.roles.len()];
            let mut filters = HashMap::<u32, u32>::new();
            self.filter_table.visit(|a, s, _| {
                assert!(
                    self.agents[a as usize].is_some(),
                    "filter on a removed agent"
                );
                assert!(self.sub(s).is_some(), "filter of a removed subscription");
                *filters.entry(s).or_default() += 1;
            });
            for (s, sub) in self.subs.iter().enumerate() {
                let s = s as u32;
                let Some(sub) = sub else {
                    assert_eq!(self.sub_pos[s as usize], ABSENT);
                    continue;
                };
                let (alloc, records) = held.get(&s).copied().unwrap_or_default();
                assert_eq!(sub.allocated, alloc, "sub {s} allocated");
                assert_eq!(sub.records, records, "sub {s} records");
                assert_eq!(
                    sub.filters,
                    filters.get(&s).copied().unwrap_or(0),
                    "sub {s} filters"
                );
                assert!(
                    sub.subscribed || records > 0,
                    "sub {s} should have been dropped"
                );
                add4(&mut role_alloc[sub.role as usize], &sub.allocated);
                role_subs[sub.role as usize] += 1;
                let fw = self.frameworks[sub.framework as usize]
                    .as_ref()
                    .expect("framework");
                assert!(fw.subs.contains(&s));
                if !self.orders_stale {
                    let present = self.roles[sub.role as usize]
                        .frameworks
                        .key(s, &self.sub_pos)
                        .is_some();
                    assert_eq!(present, self.eligible(s), "sub {s} in its role's order");
                }
            }
            for (r, role) in self.roles.iter().enumerate() {
                assert_eq!(
                    role.allocated, role_alloc[r],
                    "role {} allocated",
                    role.name
                );
                assert_eq!(role.subs, role_subs[r], "role {} subs", role.name);
                if !self.orders_stale {
                    let present = self.role_order.key(r as u32, &self.role_pos);
                    assert_eq!(
                        present.is_some(),
                        !role.frameworks.is_empty(),
                        "role {} in order",
                        role.name
                    );
                    if let Some(k) = present {
                        assert_eq!(
                            k,
                            OrderKey::new(self.role_share(r as u32), r as u32, r as u32)
                        );
                    }
                    if role.frameworks.len() > 1 {
                        let mut walk = Walk::new();
                        role.frameworks.find(&mut walk, |k| {
                            assert_eq!(k, self.sub_key(k.idx()), "stale key in a shared role");
                            false
                        });
                    }
                }
            }
            for (f, fw) in self.frameworks.iter().enumerate() {
                let Some(fw) = fw else { continue };
                assert_eq!(self.framework_ids.get(&fw.id), Some(&(f as u32)));
                assert!(
                    !fw.placeholder || !fw.subs.is_empty(),
                    "empty placeholder {}",
                    fw.id
                );
                assert!(
                    !fw.placeholder || !fw.active,
                    "active placeholder {}",
                    fw.id
                );
            }
            assert_eq!(
                self.framework_ids.len(),
                self.frameworks.iter().flatten().count()
            );
            assert_eq!(
                self.filter_table.len(),
                filters.values().map(|&n| n as usize).sum::<usize>()
            );
        }
    }
}
