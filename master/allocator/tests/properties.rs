//! Properties of the allocator through its public API, as the master uses it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use agora_allocator::{Allocation, Allocator, AllocatorConfig};
use agora_proto::Resources;
use proptest::prelude::*;

fn res(s: &str) -> Resources {
    Resources::parse(s).unwrap()
}

fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const TOTALS: [&str; 4] = [
    "cpus:4;mem:4096;ports:[31000-31009]",
    "cpus:2;mem:2048;cpus(web):2;mem(web):1024;ports(web):[80-81]",
    "cpus(batch):3;mem(batch):3072;disk:100",
    "cpus:1;mem:512;gpus:1;cpus(web):1;cpus(batch):1",
];
const ROLES: [&str; 3] = ["web", "batch", "*"];

#[derive(Debug, Clone)]
enum Op {
    AddAgent(usize, usize),
    RemoveAgent(usize),
    AgentActive(usize, bool),
    AddFramework(usize, Vec<usize>),
    RemoveFramework(usize),
    FrameworkActive(usize, bool),
    Suppress(usize, Vec<usize>),
    Revive(usize, Vec<usize>),
    Allocate,
    /// Recover part (`half`) or all of the `n`th outstanding holding, with
    /// an optional refuse filter.
    Recover(usize, bool, Option<u64>),
    /// Recover something made up, for ids that may not even exist.
    RecoverJunk(usize, usize, usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let rs = prop::collection::vec(0..ROLES.len(), 0..3);
    prop_oneof![
        2 => (0..5usize, 0..TOTALS.len()).prop_map(|(a, t)| Op::AddAgent(a, t)),
        1 => (0..5usize).prop_map(Op::RemoveAgent),
        1 => (0..5usize, any::<bool>()).prop_map(|(a, b)| Op::AgentActive(a, b)),
        2 => (0..4usize, rs.clone()).prop_map(|(f, r)| Op::AddFramework(f, r)),
        1 => (0..4usize).prop_map(Op::RemoveFramework),
        1 => (0..4usize, any::<bool>()).prop_map(|(f, b)| Op::FrameworkActive(f, b)),
        1 => (0..4usize, rs.clone()).prop_map(|(f, r)| Op::Suppress(f, r)),
        1 => (0..4usize, rs).prop_map(|(f, r)| Op::Revive(f, r)),
        4 => Just(Op::Allocate),
        4 => (any::<usize>(), any::<bool>(), prop::option::of(1..30u64)).prop_map(|(n, h, d)| Op::Recover(n, h, d)),
        1 => (0..5usize, 0..4usize, 0..ROLES.len()).prop_map(|(a, f, r)| Op::RecoverJunk(a, f, r)),
        2 => (1..20u64).prop_map(Op::Advance),
    ]
}

/// A model of what the master knows, to check each allocation against.
struct World {
    alloc: Allocator,
    now: Instant,
    agents: HashMap<String, Resources>,
    inactive_agents: HashSet<String>,
    /// Framework -> (roles, active).
    frameworks: HashMap<String, (Vec<String>, bool)>,
    suppressed: HashSet<(String, String)>,
    /// (framework, role, agent) -> (refused, until).
    filters: HashMap<(String, String, String), (Resources, Instant)>,
}

impl World {
    fn new() -> World {
        World {
            alloc: Allocator::new(AllocatorConfig::default()),
            now: Instant::now(),
            agents: HashMap::new(),
            inactive_agents: HashSet::new(),
            frameworks: HashMap::new(),
            suppressed: HashSet::new(),
            filters: HashMap::new(),
        }
    }

    fn holdings(&self) -> Vec<Allocation> {
        let mut ids: Vec<&String> = self.agents.keys().collect();
        ids.sort();
        ids.into_iter()
            .flat_map(|a| self.alloc.allocations_on(a).unwrap_or_default())
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        let fw = |f: usize| format!("f{f}");
        let ag = |a: usize| format!("a{a}");
        let names = |rs: &[usize]| {
            let mut v: Vec<String> = rs.iter().map(|&r| ROLES[r].to_string()).collect();
            v.dedup();
            v
        };
        match op {
            Op::AddAgent(a, t) => {
                self.alloc.add_agent(&ag(*a), res(TOTALS[*t]), &[]);
                self.agents.insert(ag(*a), res(TOTALS[*t]));
                self.inactive_agents.remove(&ag(*a));
                self.filters.retain(|k, _| k.2 != ag(*a));
            }
            Op::RemoveAgent(a) => {
                self.alloc.remove_agent(&ag(*a));
                self.agents.remove(&ag(*a));
                self.filters.retain(|k, _| k.2 != ag(*a));
            }
            Op::AgentActive(a, b) => {
                self.alloc.set_agent_active(&ag(*a), *b);
                if *b {
                    self.inactive_agents.remove(&ag(*a));
                } else {
                    self.inactive_agents.insert(ag(*a));
                }
            }
            Op::AddFramework(f, rs) => {
                let rs = names(rs);
                self.alloc.add_framework(&fw(*f), &rs, true);
                self.suppressed
                    .retain(|(x, r)| *x != fw(*f) || rs.contains(r));
                self.filters
                    .retain(|k, _| k.0 != fw(*f) || rs.contains(&k.1));
                self.frameworks.insert(fw(*f), (rs, true));
            }
            Op::RemoveFramework(f) => {
                self.alloc.remove_framework(&fw(*f));
                self.frameworks.remove(&fw(*f));
                self.suppressed.retain(|(x, _)| *x != fw(*f));
                self.filters.retain(|k, _| k.0 != fw(*f));
            }
            Op::FrameworkActive(f, b) => {
                self.alloc.set_framework_active(&fw(*f), *b);
                if let Some(x) = self.frameworks.get_mut(&fw(*f)) {
                    x.1 = *b;
                }
            }
            Op::Suppress(f, rs) => {
                self.alloc.suppress(&fw(*f), &names(rs));
                if let Some((subscribed, _)) = self.frameworks.get(&fw(*f)) {
                    let targets = if rs.is_empty() {
                        subscribed.clone()
                    } else {
                        names(rs)
                    };
                    for r in targets.into_iter().filter(|r| subscribed.contains(r)) {
                        self.suppressed.insert((fw(*f), r));
                    }
                }
            }
            Op::Revive(f, rs) => {
                self.alloc.revive(&fw(*f), &names(rs));
                let targets = names(rs);
                let hit = |r: &String| rs.is_empty() || targets.contains(r);
                self.suppressed.retain(|(x, r)| *x != fw(*f) || !hit(r));
                self.filters.retain(|k, _| k.0 != fw(*f) || !hit(&k.1));
            }
            Op::Allocate => self.allocate_and_check(),
            Op::Recover(n, half, refuse) => {
                let holdings = self.holdings();
                if holdings.is_empty() {
                    return;
                }
                let h = &holdings[n % holdings.len()];
                let what = if *half {
                    // Half of each scalar, none of the rest.
                    let mut out = Resources::new();
                    for r in h.resources.iter() {
                        if let agora_proto::resources::Value::Scalar(s) = r.value {
                            let half = agora_proto::Scalar::from_milli(s.milli() / 2);
                            let mut x = r.clone();
                            x.value = agora_proto::resources::Value::Scalar(half);
                            out.try_add_resource(x).unwrap();
                        }
                    }
                    out
                } else {
                    h.resources.clone()
                };
                let before = self.alloc.available(&h.agent_id).unwrap();
                let refuse = refuse.map(Duration::from_secs);
                assert!(self.alloc.recover(
                    &h.framework_id,
                    &h.role,
                    &h.agent_id,
                    &what,
                    refuse,
                    self.now
                ));
                // Recovered resources are available again, on top of what was.
                let mut expected = before;
                expected.add(&what);
                assert_eq!(self.alloc.available(&h.agent_id).unwrap(), expected);
                let subscribed = self
                    .frameworks
                    .get(&*h.framework_id)
                    .is_some_and(|(rs, _)| rs.iter().any(|r| *r == *h.role));
                if let Some(d) = refuse
                    && subscribed
                    && !what.is_empty()
                {
                    let key = (
                        h.framework_id.to_string(),
                        h.role.to_string(),
                        h.agent_id.to_string(),
                    );
                    self.filters.insert(key, (what, self.now + d));
                }
            }
            Op::RecoverJunk(a, f, r) => {
                // Whatever it returns, it must not panic or break the books.
                self.alloc.recover(
                    &fw(*f),
                    ROLES[*r],
                    &ag(*a),
                    &res("cpus:1000;ports:[1-5]"),
                    None,
                    self.now,
                );
            }
            Op::Advance(s) => self.now += Duration::from_secs(*s),
        }
        self.check_conservation();
    }

    /// No resource is ever allocated twice: on every agent, what is
    /// available plus what every framework holds is exactly the total.
    fn check_conservation(&self) {
        for (id, total) in &self.agents {
            let mut sum = self.alloc.available(id).unwrap();
            for h in self.alloc.allocations_on(id).unwrap() {
                assert!(!h.resources.is_empty());
                sum.add(&h.resources);
            }
            assert_eq!(&sum, total, "agent {id}");
        }
    }

    fn allocate_and_check(&mut self) {
        let mut before: HashMap<String, Resources> = self
            .agents
            .keys()
            .map(|a| (a.clone(), self.alloc.available(a).unwrap()))
            .collect();
        let out = self.alloc.allocate(self.now);
        let mut seen = HashSet::new();
        for a in &out {
            let (fw, role, agent) = (
                a.framework_id.to_string(),
                a.role.to_string(),
                a.agent_id.to_string(),
            );
            assert!(
                seen.insert((agent.clone(), role.clone())),
                "two offers for one role on one agent"
            );
            assert!(
                !self.inactive_agents.contains(&agent),
                "offer on an inactive agent"
            );
            let (subscribed, active) = self
                .frameworks
                .get(&fw)
                .expect("offer to an unknown framework");
            assert!(*active, "offer to an inactive framework");
            assert!(subscribed.contains(&role), "offer in a role it is not in");
            assert!(
                !self.suppressed.contains(&(fw.clone(), role.clone())),
                "offer to a suppressed role"
            );
            // Reservations only go to their role.
            for r in a.resources.iter() {
                assert!(
                    r.is_unreserved() || r.role == role,
                    "{} offered to {role}",
                    r.role
                );
            }
            // A whole-agent offer is the agent's total, and the slots name
            // the agent and framework the ids do.
            if a.whole_agent {
                assert_eq!(
                    a.resources, self.agents[&agent],
                    "whole_agent but not the total"
                );
            }
            assert_eq!(
                self.alloc.agent_key(&agent).map(|k| k.0),
                Some(a.agent_slot)
            );
            assert_eq!(
                self.alloc.framework_key(&fw).map(|k| k.0),
                Some(a.framework_slot)
            );
            // Everything the role may use, out of what was still available.
            let left = before.get_mut(&agent).unwrap();
            assert_eq!(a.resources, left.allocatable_to(&role));
            left.subtract(&a.resources);
            // Filters hold while they apply.
            if let Some((refused, until)) =
                self.filters.get(&(fw.clone(), role.clone(), agent.clone()))
            {
                assert!(
                    self.now >= *until || !refused.contains(&a.resources),
                    "offer to {fw} on {agent} despite its filter"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random operations: nothing is allocated twice, recovered resources
    /// come back, and no offer breaks activity, suppression, reservation or
    /// filter rules.
    #[test]
    fn random_operations_keep_the_rules(ops in prop::collection::vec(op(), 1..80)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op);
        }
        w.apply(&Op::Allocate);
    }

    /// A filter keeps the refused resources from the framework until it
    /// expires, and not a moment longer.
    #[test]
    fn filters_hold_until_they_expire(refuse_ms in 1u64..100_000, probe_ms in 0u64..200_000) {
        let t0 = Instant::now();
        let mut a = Allocator::new(AllocatorConfig::default());
        a.add_agent("a", res("cpus:2;mem:256;ports:[1-4]"), &[]);
        a.add_framework("f", &roles(&["r"]), true);
        let offer = a.allocate(t0).remove(0);
        a.recover("f", "r", "a", &offer.resources, Some(Duration::from_millis(refuse_ms)), t0);
        let out = a.allocate(t0 + Duration::from_millis(probe_ms));
        prop_assert_eq!(out.len(), usize::from(probe_ms >= refuse_ms));
    }

    /// A suppressed framework gets nothing, however long, until it revives;
    /// then it gets offers at once.
    #[test]
    fn suppressed_frameworks_wait_for_revive(steps in prop::collection::vec(0u64..3600, 1..10)) {
        let mut now = Instant::now();
        let mut a = Allocator::new(AllocatorConfig::default());
        a.add_framework("f", &roles(&["r"]), true);
        a.suppress("f", &[]);
        for (i, s) in steps.iter().enumerate() {
            a.add_agent(&format!("a{i}"), res("cpus:1;mem:64"), &[]);
            now += Duration::from_secs(*s);
            prop_assert!(a.allocate(now).is_empty());
        }
        a.revive("f", &roles(&["r"]));
        prop_assert_eq!(a.allocate(now).len(), steps.len());
    }

    /// Within a role, whichever framework holds the least is offered first.
    #[test]
    fn lower_share_framework_first(held in prop::collection::vec(0u32..8, 2..5)) {
        let now = Instant::now();
        let mut a = Allocator::new(AllocatorConfig::default());
        let ids: Vec<String> = (0..held.len()).map(|i| format!("f{i}")).collect();
        for id in &ids {
            a.add_framework(id, &roles(&["r"]), true);
        }
        // Each framework already runs `held[i]` cpus on a big agent.
        let used: Vec<(String, String, Resources)> = held
            .iter()
            .zip(&ids)
            .filter(|(h, _)| **h > 0)
            .map(|(h, id)| (id.clone(), "r".to_string(), res(&format!("cpus:{h};mem:{h}"))))
            .collect();
        // The free agent comes first, so it is offered before what is left
        // on the big one changes anyone's share.
        a.add_agent("free", res("cpus:1;mem:1"), &[]);
        a.add_agent("big", res("cpus:40;mem:40"), &used);
        let shares: Vec<f64> = ids.iter().map(|id| a.framework_share(id)).collect();
        let out = a.allocate(now);
        let got = out.iter().find(|x| &*x.agent_id == "free").unwrap();
        let min = held.iter().min().unwrap();
        let first_min = held.iter().position(|h| h == min).unwrap();
        prop_assert_eq!(&*got.framework_id, ids[first_min].as_str(), "shares {:?}", shares);
    }

}

proptest! {
    // Each case runs 1,500 allocation cycles.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Two roles weighted 1 and 3 on many small identical agents: however
    /// tasks finish, freed resources go to the role below its weighted
    /// share, and the split converges to 1:3 from any start.
    #[test]
    fn weighted_drf_converges_to_the_weights(picks in prop::collection::vec(any::<u32>(), 1500), start in 0usize..=200) {
        let now = Instant::now();
        let config = AllocatorConfig {
            weights: agora_allocator::parse_weights("light=1,heavy=3").unwrap(),
            ..AllocatorConfig::default()
        };
        let mut a = Allocator::new(config);
        a.add_framework("l", &roles(&["light"]), true);
        a.add_framework("h", &roles(&["heavy"]), true);
        // 50 agents of 4 task slots; `start` of the 200 tasks run in light at
        // first, the rest in heavy.
        let task = res("cpus:1;mem:1024");
        let mut tasks: Vec<(String, &str, String)> = Vec::new();
        for i in 0..50 {
            let mut used = Vec::new();
            for k in 0..4 {
                let (fw, role) = if i * 4 + k < start { ("l", "light") } else { ("h", "heavy") };
                used.push((fw.to_string(), role.to_string(), task.clone()));
                tasks.push((fw.to_string(), role, format!("a{i}")));
            }
            a.add_agent(&format!("a{i}"), res("cpus:4;mem:4096"), &used);
        }
        for pick in picks {
            // A random task finishes; the freed slot is offered and taken.
            let (fw, role, agent) = tasks.swap_remove(pick as usize % tasks.len());
            prop_assert!(a.recover(&fw, role, &agent, &task, None, now));
            let out = a.allocate(now);
            prop_assert_eq!(out.len(), 1);
            let o = &out[0];
            prop_assert_eq!(&o.resources, &task);
            let role: &str = if &*o.role == "light" { "light" } else { "heavy" };
            tasks.push((o.framework_id.to_string(), role, o.agent_id.to_string()));
        }
        let light = tasks.iter().filter(|t| t.1 == "light").count();
        let heavy = tasks.len() - light;
        // 1:3 of 200 is 50:150; DRF keeps it within a task of that.
        prop_assert!((49..=51).contains(&light), "light {} heavy {}", light, heavy);
        let shares = a.role_shares();
        prop_assert!((shares[0].1 - shares[1].1).abs() <= 1.0 / 200.0 + 1e-9, "{:?}", shares);
    }
}

#[test]
fn reservations_never_leave_their_role() {
    // Many agents with reservations for several roles and frameworks in
    // other roles: nothing reserved for web ever reaches batch or "*".
    let now = Instant::now();
    let mut a = Allocator::new(AllocatorConfig::default());
    for i in 0..20 {
        a.add_agent(
            &format!("a{i}"),
            res("cpus:2;mem:512;cpus(web):2;mem(web):512;ports(web):[80-80]"),
            &[],
        );
    }
    a.add_framework("b", &roles(&["batch"]), true);
    a.add_framework("s", &roles(&["*"]), true);
    let out = a.allocate(now);
    assert_eq!(out.len(), 20);
    for o in &out {
        assert!(o.resources.iter().all(|r| r.is_unreserved()), "{o:?}");
    }
    for i in 0..20 {
        assert_eq!(
            a.available(&format!("a{i}")),
            Some(res("cpus(web):2;mem(web):512;ports(web):[80-80]"))
        );
    }
    a.add_framework("w", &roles(&["web"]), true);
    let out = a.allocate(now);
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|o| &*o.framework_id == "w"));
}
