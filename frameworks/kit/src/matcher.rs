//! The offer matcher: which of a framework's task requests go on which
//! offers. Pure: offers and requests in, launches out.
//!
//! * Offers of one agent allocated to one role are pooled (the master
//!   accepts several offers of one agent and role in one call).
//! * Requests are placed in order, each on the first pool that fits (first
//!   fit), so several tasks are packed into one offer before the next offer
//!   is touched.
//! * Scalars (`cpus`, `mem`, `disk`, `gpus`, any other) are taken from the
//!   resources whose role the request accepts, those reserved for the
//!   offer's role first, then unreserved ones (`*`). Host ports are taken
//!   from the offer's `ports` ranges: the ports asked for by number, and
//!   the lowest free ones for the rest.
//! * Constraints are checked against where the group's instances already
//!   run ([`PlacedIndex`]) plus what this call placed before.
//!
//! Speed: 10,000 requests against 1,000 offers must take milliseconds, not
//! seconds. Requests that look alike (same resources, ports, roles, group
//! and constraints) share a cursor: the pools before it cannot take such a
//! request any more (pools only shrink during a call, and a refusal by any
//! constraint but `GROUP_BY` stays a refusal as instances are added), so the
//! next such request starts there. Constraint checks read per-value counts
//! ([`ValueCounts`]) instead of scanning the instances. A call does about
//! `requests + pools` fit checks for uniform requests, see
//! [`MatchStats`].

use std::collections::HashMap;

use agora_proto::resources::Value;
use agora_proto::{Ranges, Resources, UNRESERVED, v1};

use crate::constraints::{AgentFacts, Constraint, ValueCounts};

/// The host ports a task needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum PortRequest {
    #[default]
    None,
    /// This many ports, any free ones.
    Any(usize),
    /// These ports, by number; a `0` stands for any free port (Marathon's
    /// `hostPort: 0`). Placements list the ports in this order.
    Exact(Vec<u64>),
}

impl PortRequest {
    fn len(&self) -> usize {
        match self {
            PortRequest::None => 0,
            PortRequest::Any(n) => *n,
            PortRequest::Exact(ports) => ports.len(),
        }
    }
}

/// One task the framework wants placed.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    /// The caller's id for this request (e.g. the instance id).
    pub key: String,
    /// The constraint scope: the app or job its instances belong to.
    pub group: String,
    /// Scalar resources (cpus, mem, disk, gpus, ...), unreserved in form;
    /// roles come from the offer. Other kinds are ignored: ports go in
    /// `ports`.
    pub resources: Resources,
    pub ports: PortRequest,
    /// Roles whose resources may be used (`*` = unreserved); empty: any
    /// resource the offer holds.
    pub accepted_roles: Vec<String>,
    pub constraints: Vec<Constraint>,
}

/// Where a request goes, with the exact resources to launch it with.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub key: String,
    /// The first offer of the pool the task goes on (all of them are in
    /// the launch's offer ids).
    pub offer_id: String,
    pub agent_id: String,
    pub hostname: String,
    /// What the task uses, role by role, ports included.
    pub resources: Vec<v1::Resource>,
    /// The host ports, in the order asked for.
    pub ports: Vec<u64>,
}

/// What one call decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchResult {
    /// One accept each: the offers (one agent, one role) and what goes on
    /// them.
    pub launches: Vec<(Vec<String>, Vec<Placement>)>,
    /// Requests that fit no offer, with the first reason (for a queue's
    /// "waiting: ..." message).
    pub unplaced: Vec<(String, String)>,
    /// Offers nothing went on: decline them.
    pub unused_offers: Vec<String>,
    /// What the call cost.
    pub stats: MatchStats,
}

/// Work done by one call, to measure the matcher without clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatchStats {
    /// Request-against-pool checks made.
    pub fit_checks: u64,
    /// Pools (offers of one agent and role).
    pub pools: usize,
}

/// Where the instances of each group run (running or launching), for the
/// constraints.
#[derive(Debug, Clone, Default)]
pub struct PlacedIndex {
    /// group -> agent id -> (the agent, instances there).
    groups: HashMap<String, HashMap<String, (AgentFacts, usize)>>,
}

impl PlacedIndex {
    pub fn new() -> PlacedIndex {
        PlacedIndex::default()
    }

    /// One more instance of `group` on `agent`.
    pub fn add(&mut self, group: &str, agent: AgentFacts) {
        let agents = self.groups.entry(group.to_string()).or_default();
        match agents.get_mut(&agent.agent_id) {
            Some((facts, n)) => {
                *facts = agent;
                *n += 1;
            }
            None => {
                agents.insert(agent.agent_id.clone(), (agent, 1));
            }
        }
    }

    /// One instance of `group` fewer on agent `agent_id`.
    pub fn remove(&mut self, group: &str, agent_id: &str) {
        let Some(agents) = self.groups.get_mut(group) else {
            return;
        };
        if let Some((_, n)) = agents.get_mut(agent_id) {
            *n -= 1;
            if *n == 0 {
                agents.remove(agent_id);
            }
        }
        if agents.is_empty() {
            self.groups.remove(group);
        }
    }

    /// Forgets every instance of `group`.
    pub fn clear_group(&mut self, group: &str) {
        self.groups.remove(group);
    }

    /// Instances of `group`.
    pub fn count(&self, group: &str) -> usize {
        self.groups
            .get(group)
            .map_or(0, |agents| agents.values().map(|(_, n)| n).sum())
    }

    /// The agents of `group`'s instances, one entry per instance.
    pub fn placed(&self, group: &str) -> Vec<&AgentFacts> {
        let mut out = Vec::new();
        if let Some(agents) = self.groups.get(group) {
            for (facts, n) in agents.values() {
                out.extend(std::iter::repeat_n(facts, *n));
            }
        }
        out
    }

    /// `group`'s instances counted by value of `field`.
    pub fn counts(&self, group: &str, field: &str) -> ValueCounts {
        let mut counts = ValueCounts::default();
        if let Some(agents) = self.groups.get(group) {
            for (facts, n) in agents.values() {
                let value = facts.value_of(field);
                for _ in 0..*n {
                    counts.add(value.as_deref());
                }
            }
        }
        counts
    }
}

/// The offers of one agent allocated to one role, and what is left of them.
struct Pool {
    offer_ids: Vec<String>,
    facts: AgentFacts,
    /// (name, role, thousandths left).
    scalars: Vec<(String, String, i64)>,
    /// (role, free ports).
    ports: Vec<(String, Ranges)>,
    placements: Vec<Placement>,
}

impl Pool {
    fn new(offer: &v1::Offer, resources: &Resources) -> Pool {
        let mut pool = Pool {
            offer_ids: Vec::new(),
            facts: AgentFacts::from_offer(offer),
            scalars: Vec::new(),
            ports: Vec::new(),
            placements: Vec::new(),
        };
        pool.absorb(offer, resources);
        pool
    }

    fn absorb(&mut self, offer: &v1::Offer, resources: &Resources) {
        self.offer_ids.push(offer.id.clone());
        for r in resources.iter() {
            match &r.value {
                Value::Scalar(s) => {
                    match self
                        .scalars
                        .iter_mut()
                        .find(|(n, role, _)| *n == r.name && *role == r.role)
                    {
                        Some((_, _, left)) => *left += s.milli(),
                        None => self
                            .scalars
                            .push((r.name.clone(), r.role.clone(), s.milli())),
                    }
                }
                Value::Ranges(ranges) if r.name == "ports" => {
                    match self.ports.iter_mut().find(|(role, _)| *role == r.role) {
                        Some((_, free)) => free.add(ranges),
                        None => self.ports.push((r.role.clone(), ranges.clone())),
                    }
                }
                _ => {}
            }
        }
        // Reserved resources first, so that they are used before unreserved
        // ones.
        self.scalars.sort_by_key(|(_, role, _)| role == UNRESERVED);
        self.ports.sort_by_key(|(role, _)| role == UNRESERVED);
    }
}

fn role_ok(accepted: &[String], role: &str) -> bool {
    accepted.is_empty() || accepted.iter().any(|a| a == role)
}

/// How far a request got on a pool before it was refused; the furthest
/// stage over all pools gives the reason it was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    NoPool,
    Resources,
    Ports,
    /// Refused by the constraint at this index.
    Constraint(usize),
}

/// Whether `req` fits what is left of `pool`, resources and ports only.
fn fits(req: &TaskRequest, pool: &Pool) -> Result<(), Stage> {
    for r in req.resources.iter() {
        let Value::Scalar(need) = &r.value else {
            continue;
        };
        let have: i64 = pool
            .scalars
            .iter()
            .filter(|(n, role, _)| *n == r.name && role_ok(&req.accepted_roles, role))
            .map(|(_, _, left)| *left)
            .sum();
        if have < need.milli() {
            return Err(Stage::Resources);
        }
    }
    if req.ports.len() > 0 {
        let usable = || {
            pool.ports
                .iter()
                .filter(|(role, _)| role_ok(&req.accepted_roles, role))
        };
        let free: u64 = usable().map(|(_, r)| r.count()).sum();
        if free < req.ports.len() as u64 {
            return Err(Stage::Ports);
        }
        if let PortRequest::Exact(ports) = &req.ports {
            for (i, &p) in ports.iter().enumerate() {
                if p != 0
                    && (ports[..i].contains(&p) || !usable().any(|(_, r)| r.contains_value(p)))
                {
                    return Err(Stage::Ports);
                }
            }
        }
    }
    Ok(())
}

/// Takes `req`'s resources and ports from `pool` (which [`fits`] it).
fn take(req: &TaskRequest, pool: &mut Pool) -> (Vec<v1::Resource>, Vec<u64>) {
    let mut used = Resources::new();
    for r in req.resources.iter() {
        let Value::Scalar(need) = &r.value else {
            continue;
        };
        let mut need = need.milli();
        for (name, role, left) in pool.scalars.iter_mut() {
            if need == 0 {
                break;
            }
            if *name != r.name || !role_ok(&req.accepted_roles, role) || *left == 0 {
                continue;
            }
            let took = need.min(*left);
            *left -= took;
            need -= took;
            let _ = used.try_add_resource(agora_proto::Resource {
                name: name.clone(),
                role: role.clone(),
                value: Value::Scalar(agora_proto::Scalar::from_milli(took)),
            });
        }
    }
    let mut ports = Vec::with_capacity(req.ports.len());
    let mut take_port = |pool: &mut Pool, wanted: Option<u64>| {
        for (role, free) in pool.ports.iter_mut() {
            if !role_ok(&req.accepted_roles, role) {
                continue;
            }
            let port = match wanted {
                Some(p) if free.contains_value(p) => p,
                Some(_) => continue,
                None => match free.ranges().first() {
                    Some(&(begin, _)) => begin,
                    None => continue,
                },
            };
            free.subtract(&Ranges::new([(port, port)]));
            let _ = used.try_add_resource(
                agora_proto::Resource::ranges("ports", Ranges::new([(port, port)]))
                    .with_role(role.as_str()),
            );
            return port;
        }
        0
    };
    match &req.ports {
        PortRequest::None => {}
        PortRequest::Any(n) => {
            for _ in 0..*n {
                ports.push(take_port(pool, None));
            }
        }
        PortRequest::Exact(wanted) => {
            // Numbered ports first, so that a free pick cannot take one of
            // them.
            let mut chosen = wanted.clone();
            for p in chosen.iter_mut().filter(|p| **p != 0) {
                *p = take_port(pool, Some(*p));
            }
            for p in chosen.iter_mut().filter(|p| **p == 0) {
                *p = take_port(pool, None);
            }
            ports = chosen;
        }
    }
    (used.to_proto(), ports)
}

/// Requests that look alike: they share a cursor.
#[derive(PartialEq, Eq, Hash)]
struct Shape<'a> {
    resources: &'a Resources,
    ports: &'a PortRequest,
    roles: &'a [String],
    group: &'a str,
    constraints: &'a [Constraint],
}

struct ShapeState {
    /// Pools before this index cannot take such a request any more.
    cursor: usize,
    /// The furthest a request of this shape got on any pool.
    stage: Stage,
}

/// Matches `requests` (in order) against `offers`. See the module docs.
pub fn match_offers(
    offers: &[v1::Offer],
    requests: &[TaskRequest],
    placed: &PlacedIndex,
) -> MatchResult {
    let mut result = MatchResult::default();
    let mut pools: Vec<Pool> = Vec::new();
    let mut pool_of: HashMap<(&str, &str), usize> = HashMap::new();
    for offer in offers {
        let resources = match Resources::from_proto(&offer.resources) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(offer_id = %offer.id, agent_id = %offer.agent_id, "offer with unusable resources: {e}");
                result.unused_offers.push(offer.id.clone());
                continue;
            }
        };
        match pool_of.get(&(offer.agent_id.as_str(), offer.role.as_str())) {
            Some(&i) => pools[i].absorb(offer, &resources),
            None => {
                pool_of.insert((&offer.agent_id, &offer.role), pools.len());
                pools.push(Pool::new(offer, &resources));
            }
        }
    }
    result.stats.pools = pools.len();

    // group -> field -> instances per value, from the index plus this call.
    let mut counts: HashMap<&str, HashMap<&str, ValueCounts>> = HashMap::new();
    // A constraint's regex caches inside, but its hash and equality read
    // only the field, operator and value.
    #[allow(clippy::mutable_key_type)]
    let mut shapes: HashMap<Shape<'_>, ShapeState> = HashMap::new();
    // group -> the pools this call placed its instances on.
    let mut placed_now: HashMap<&str, Vec<usize>> = HashMap::new();

    for req in requests {
        let shape = Shape {
            resources: &req.resources,
            ports: &req.ports,
            roles: &req.accepted_roles,
            // The group only matters to constraints: requests of many
            // groups without constraints (10,000 cron jobs of one size)
            // share one cursor.
            group: if req.constraints.is_empty() {
                ""
            } else {
                &req.group
            },
            constraints: &req.constraints,
        };
        let state = shapes.entry(shape).or_insert(ShapeState {
            cursor: 0,
            stage: Stage::NoPool,
        });
        let group_counts = counts.entry(&req.group).or_default();
        for c in &req.constraints {
            if !group_counts.contains_key(c.field()) {
                let mut field_counts = placed.counts(&req.group, c.field());
                for &p in placed_now.get(req.group.as_str()).into_iter().flatten() {
                    field_counts.add(pools[p].facts.value_of(c.field()).as_deref());
                }
                group_counts.insert(c.field(), field_counts);
            }
        }
        let final_refusals = req.constraints.iter().all(|c| c.op().refusal_is_final());

        let mut chosen = None;
        let mut contiguous = true;
        for (i, pool) in pools.iter().enumerate().skip(state.cursor) {
            result.stats.fit_checks += 1;
            let verdict = fits(req, pool).and_then(|()| {
                match req
                    .constraints
                    .iter()
                    .position(|c| !c.allows_counted(&pool.facts, &group_counts[c.field()]))
                {
                    Some(at) => Err(Stage::Constraint(at)),
                    None => Ok(()),
                }
            });
            match verdict {
                Ok(()) => {
                    chosen = Some(i);
                    break;
                }
                Err(stage) => {
                    state.stage = state.stage.max(stage);
                    let final_refusal = !matches!(stage, Stage::Constraint(_)) || final_refusals;
                    if contiguous && final_refusal {
                        state.cursor = i + 1;
                    } else {
                        contiguous = false;
                    }
                }
            }
        }
        let Some(i) = chosen else {
            result
                .unplaced
                .push((req.key.clone(), reason(req, state.stage)));
            continue;
        };
        let pool = &mut pools[i];
        let (resources, ports) = take(req, pool);
        // Every count kept for the group sees the new instance.
        for (field, field_counts) in group_counts.iter_mut() {
            field_counts.add(pool.facts.value_of(field).as_deref());
        }
        placed_now.entry(&req.group).or_default().push(i);
        pool.placements.push(Placement {
            key: req.key.clone(),
            offer_id: pool.offer_ids[0].clone(),
            agent_id: pool.facts.agent_id.clone(),
            hostname: pool.facts.hostname.clone(),
            resources,
            ports,
        });
    }

    for pool in pools {
        if pool.placements.is_empty() {
            result.unused_offers.extend(pool.offer_ids);
        } else {
            result.launches.push((pool.offer_ids, pool.placements));
        }
    }
    result
}

/// Why `req` was not placed, from the furthest stage it reached.
fn reason(req: &TaskRequest, stage: Stage) -> String {
    let roles = if req.accepted_roles.is_empty() {
        String::new()
    } else {
        format!(" in roles [{}]", req.accepted_roles.join(", "))
    };
    match stage {
        Stage::NoPool => "no offers".to_string(),
        Stage::Resources => {
            let scalars = req
                .resources
                .filter(|r| matches!(r.value, Value::Scalar(_)));
            format!("no offer has enough resources for {scalars}{roles}")
        }
        Stage::Ports => match &req.ports {
            PortRequest::Exact(ports) if ports.iter().any(|p| *p != 0) => {
                let numbered: Vec<String> = ports
                    .iter()
                    .filter(|p| **p != 0)
                    .map(u64::to_string)
                    .collect();
                format!(
                    "no offer with enough resources has the host ports [{}] free{roles}",
                    numbered.join(", ")
                )
            }
            other => format!(
                "no offer with enough resources has {} free host ports{roles}",
                other.len()
            ),
        },
        Stage::Constraint(at) => format!(
            "constraint {} not satisfied by any offer",
            req.constraints[at].explain()
        ),
    }
}

#[cfg(test)]
mod tests;
