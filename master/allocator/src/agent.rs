//! The allocator's book of one agent: its total, what is available, and what
//! each (framework, role) holds there.
//!
//! What is available is kept twice: as the general `Resources` bag (moved
//! whole into an offer when the agent has no reservations, so the common
//! offer costs no copy) and as fixed arrays of the DRF scalars (unreserved,
//! and per reserving role), which is all the allocation loop reads.
//!
//! What each (framework, role) holds is a compact record: one value per entry
//! of the agent's total, in the total's order. One holder per agent needs no
//! record at all: its holding is the remainder, `total - available - the
//! other records`. The first framework offered a free agent becomes that
//! holder, so the common allocation (a whole free agent to one framework)
//! moves the available bag into the offer and writes nothing else.

use std::sync::Arc;

use agora_proto::resources::Value;
use agora_proto::{Resource, Resources, UNRESERVED};

use crate::quantities::{Milli4, add_value, add4, scalars_of};
use crate::value;

/// One agent as the allocator sees it.
#[derive(Debug)]
pub(crate) struct Agent {
    pub id: Arc<str>,
    /// Inactive agents keep their bookkeeping but get no offers.
    pub active: bool,
    pub total: Resources,
    /// The DRF scalars of `total`, subtracted from the cluster's when the
    /// agent goes.
    pub total_scalars: Milli4,
    /// The entries of `total`, sorted by (name, role) as `Resources` keeps
    /// them: position `i` is the key of slot `i` of every record.
    items: Vec<Resource>,
    /// A record of zeros, cloned to start a new one.
    empty: Vec<Value>,
    pub available: Resources,
    /// Available unreserved cpus, mem, disk, gpus.
    pub unreserved: Milli4,
    /// One entry per role that holds a reservation in `total`.
    pub reserved: Vec<Reservation>,
    /// What each (framework, role) other than `remainder` holds here.
    records: Vec<Record>,
    /// The subscription that holds whatever is neither available nor in
    /// `records`, if any.
    remainder: Option<u32>,
}

/// The available reserved scalars of one role on one agent.
#[derive(Debug)]
pub(crate) struct Reservation {
    /// Role index in the allocator.
    pub role: u32,
    name: String,
    pub available: Milli4,
}

/// What one subscription (framework, role) holds on one agent.
#[derive(Debug)]
struct Record {
    sub: u32,
    /// One value per entry of the agent's total.
    values: Vec<Value>,
}

/// The outcome of returning resources to an agent.
pub(crate) struct Released {
    /// The DRF scalars that really went back to available.
    pub scalars: Milli4,
    /// False when part of what was returned was not held (clamped).
    pub exact: bool,
    /// True when the subscription no longer holds anything here.
    pub emptied: bool,
}

impl Agent {
    /// A new, fully available agent; `role_index` gives the allocator's index
    /// of each reserving role.
    pub(crate) fn new(
        id: Arc<str>,
        total: Resources,
        mut role_index: impl FnMut(&str) -> u32,
    ) -> Agent {
        let items: Vec<Resource> = total.iter().cloned().collect();
        let empty = items.iter().map(|r| value::empty_like(&r.value)).collect();
        let mut reserved: Vec<Reservation> = Vec::new();
        for r in items.iter().filter(|r| r.role != UNRESERVED) {
            if !reserved.iter().any(|x| x.name == r.role) {
                reserved.push(Reservation {
                    role: role_index(&r.role),
                    name: r.role.clone(),
                    available: [0; 4],
                });
            }
        }
        let mut agent = Agent {
            id,
            active: true,
            total_scalars: scalars_of(&total),
            available: total.clone(),
            total,
            items,
            empty,
            unreserved: [0; 4],
            reserved,
            records: Vec::new(),
            remainder: None,
        };
        agent.refresh_scalars();
        agent
    }

    fn key(&self, name: &str, role: &str) -> Option<usize> {
        self.items
            .binary_search_by(|r| (r.name.as_str(), r.role.as_str()).cmp(&(name, role)))
            .ok()
    }

    /// Recomputes the scalar arrays from `available`.
    fn refresh_scalars(&mut self) {
        self.unreserved = [0; 4];
        for r in &mut self.reserved {
            r.available = [0; 4];
        }
        for item in self.available.iter() {
            if item.role == UNRESERVED {
                add_value(&mut self.unreserved, &item.name, &item.value);
            } else if let Some(res) = self.reserved.iter_mut().find(|x| x.name == item.role) {
                add_value(&mut res.available, &item.name, &item.value);
            }
        }
    }

    /// The DRF scalars of what `role` may use here: unreserved plus its
    /// reservation.
    /// Whether nothing on this agent is held by anyone and it has no
    /// reservations: what a role may take here is then exactly `total`.
    pub(crate) fn is_whole_and_unreserved(&self) -> bool {
        self.remainder.is_none() && self.records.is_empty() && self.reserved.is_empty()
    }

    pub(crate) fn allocatable(&self, role: u32) -> Milli4 {
        let mut out = self.unreserved;
        if let Some(r) = self.reserved.iter().find(|r| r.role == role) {
            add4(&mut out, &r.available);
        }
        out
    }

    /// Takes out everything `role` may use.
    pub(crate) fn take_for(&mut self, role: u32, role_name: &str) -> Resources {
        self.unreserved = [0; 4];
        if self.reserved.is_empty() {
            return std::mem::take(&mut self.available);
        }
        let offer = self.available.allocatable_to(role_name);
        self.available.subtract(&offer);
        if let Some(r) = self.reserved.iter_mut().find(|r| r.role == role) {
            r.available = [0; 4];
        }
        offer
    }

    /// Adds `resources` (taken from this agent's available) to what `sub`
    /// holds; true when `sub` held nothing here before.
    pub(crate) fn record_add(&mut self, sub: u32, resources: &Resources) -> bool {
        if self.remainder == Some(sub) {
            return false;
        }
        if let Some(i) = self.records.iter().position(|r| r.sub == sub) {
            let values = &mut self.records[i].values;
            add_by_key(&self.items, values, resources);
            return false;
        }
        if self.remainder.is_none() {
            self.remainder = Some(sub);
            return true;
        }
        let mut values = self.empty.clone();
        add_by_key(&self.items, &mut values, resources);
        self.records.push(Record { sub, values });
        true
    }

    /// Declares `wanted` as already held by `sub` (tasks found running when
    /// the agent registers), clamped to what is available. Returns the DRF
    /// scalars taken, whether `sub` held nothing here before, and whether
    /// nothing was clamped.
    pub(crate) fn claim(&mut self, sub: u32, wanted: &Resources) -> (Milli4, bool, bool) {
        let mut got = Resources::new();
        let mut exact = true;
        for w in wanted.iter() {
            let have = self
                .available
                .iter()
                .find(|a| a.name == w.name && a.role == w.role);
            let take = match have {
                Some(a) => value::intersect(&a.value, &w.value),
                None => value::empty_like(&w.value),
            };
            if take != w.value {
                exact = false;
            }
            if !value::is_empty(&take) {
                let _ = got.try_add_resource(Resource {
                    name: w.name.clone(),
                    role: w.role.clone(),
                    value: take,
                });
            }
        }
        if got.is_empty() {
            return ([0; 4], false, exact);
        }
        self.available.subtract(&got);
        let created = self.record_add(sub, &got);
        self.refresh_scalars();
        (scalars_of(&got), created, exact)
    }

    /// The subscriptions holding something here.
    pub(crate) fn holders(&self) -> Vec<u32> {
        self.records
            .iter()
            .map(|r| r.sub)
            .chain(self.remainder)
            .collect()
    }

    /// What `sub` holds here, one value per entry of the total; None if
    /// nothing.
    fn held_values(&self, sub: u32) -> Option<Vec<Value>> {
        if let Some(r) = self.records.iter().find(|r| r.sub == sub) {
            return Some(r.values.clone());
        }
        if self.remainder != Some(sub) {
            return None;
        }
        let mut values: Vec<Value> = self.items.iter().map(|r| r.value.clone()).collect();
        let mut available = self.empty.clone();
        add_by_key(&self.items, &mut available, &self.available);
        for (v, a) in values.iter_mut().zip(&available) {
            value::subtract(v, a);
        }
        for r in &self.records {
            for (v, x) in values.iter_mut().zip(&r.values) {
                value::subtract(v, x);
            }
        }
        Some(values)
    }

    /// What `sub` holds here, as a bag; None if nothing.
    pub(crate) fn held_resources(&self, sub: u32) -> Option<Resources> {
        self.held_values(sub).map(|v| self.to_resources(&v))
    }

    /// The DRF scalars of what `sub` holds here.
    pub(crate) fn held_scalars(&self, sub: u32) -> Milli4 {
        let mut out = [0; 4];
        if let Some(values) = self.held_values(sub) {
            for (item, v) in self.items.iter().zip(&values) {
                add_value(&mut out, &item.name, v);
            }
        }
        out
    }

    /// Returns `resources` held by `sub` to available, clamped to what `sub`
    /// holds.
    pub(crate) fn release(&mut self, sub: u32, resources: &Resources) -> Released {
        let Some(mut values) = self.held_values(sub) else {
            return Released {
                scalars: [0; 4],
                exact: resources.is_empty(),
                emptied: false,
            };
        };
        let mut back = Resources::new();
        let mut exact = true;
        for r in resources.iter() {
            let Some(k) = self.key(&r.name, &r.role) else {
                exact = false;
                continue;
            };
            let take = value::intersect(&values[k], &r.value);
            if take != r.value {
                exact = false;
            }
            if value::is_empty(&take) {
                continue;
            }
            value::subtract(&mut values[k], &take);
            let _ = back.try_add_resource(Resource {
                name: r.name.clone(),
                role: r.role.clone(),
                value: take,
            });
        }
        let emptied = values.iter().all(value::is_empty);
        self.store(sub, values, emptied);
        self.available.add(&back);
        self.refresh_scalars();
        Released {
            scalars: scalars_of(&back),
            exact,
            emptied,
        }
    }

    /// Returns everything `sub` holds here to available; gives its DRF
    /// scalars, or None if it held nothing.
    pub(crate) fn release_all(&mut self, sub: u32) -> Option<Milli4> {
        let back = self.held_resources(sub)?;
        self.store(sub, Vec::new(), true);
        self.available.add(&back);
        self.refresh_scalars();
        Some(scalars_of(&back))
    }

    /// Writes back what `sub` now holds, once `available` is about to get
    /// the difference.
    fn store(&mut self, sub: u32, values: Vec<Value>, emptied: bool) {
        if self.remainder == Some(sub) {
            // The remainder follows from `available` by itself.
            if emptied {
                self.remainder = None;
            }
            return;
        }
        if let Some(i) = self.records.iter().position(|r| r.sub == sub) {
            if emptied {
                self.records.swap_remove(i);
            } else {
                self.records[i].values = values;
            }
        }
    }

    fn to_resources(&self, values: &[Value]) -> Resources {
        let mut out = Resources::new();
        for (item, v) in self.items.iter().zip(values) {
            if !value::is_empty(v) {
                let _ = out.try_add_resource(Resource {
                    name: item.name.clone(),
                    role: item.role.clone(),
                    value: v.clone(),
                });
            }
        }
        out
    }
}

/// Adds each entry of `resources` into the slot of `values` for its (name,
/// role) in `items`. Both are sorted by (name, role), so one walk does it.
fn add_by_key(items: &[Resource], values: &mut [Value], resources: &Resources) {
    let mut k = 0;
    for r in resources.iter() {
        let want = (r.name.as_str(), r.role.as_str());
        while k < items.len() && (items[k].name.as_str(), items[k].role.as_str()) < want {
            k += 1;
        }
        if k < items.len() && (items[k].name.as_str(), items[k].role.as_str()) == want {
            value::add(&mut values[k], &r.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    fn agent(total: &str) -> Agent {
        let mut roles = Vec::<String>::new();
        Agent::new("a".into(), res(total), |r| {
            roles.push(r.to_string());
            roles.len() as u32 - 1
        })
    }

    #[test]
    fn scalars_split_by_reservation() {
        let a = agent("cpus:4;mem:100;cpus(web):2;mem(web):50;ports(db):[1-2]");
        assert_eq!(a.unreserved, [4_000, 100_000, 0, 0]);
        assert_eq!(a.reserved.len(), 2);
        assert_eq!(a.allocatable(0), [6_000, 150_000, 0, 0]);
        assert_eq!(a.allocatable(1), [4_000, 100_000, 0, 0]);
        assert_eq!(a.allocatable(7), [4_000, 100_000, 0, 0]);
    }

    #[test]
    fn take_record_release_round_trip() {
        let mut a = agent("cpus:4;mem:100;ports:[1-10];cpus(web):2");
        let offer = a.take_for(1, "batch");
        assert_eq!(offer, res("cpus:4;mem:100;ports:[1-10]"));
        assert_eq!(a.available, res("cpus(web):2"));
        assert!(a.record_add(3, &offer));
        assert!(!a.record_add(3, &res("")));
        assert_eq!(a.holders(), vec![3]);
        let r = a.release(3, &res("cpus:1;ports:[2-3]"));
        assert!(r.exact && !r.emptied);
        assert_eq!(r.scalars, [1_000, 0, 0, 0]);
        assert_eq!(a.available, res("cpus:1;cpus(web):2;ports:[2-3]"));
        let r = a.release(3, &res("cpus:9;ports:[2-3]"));
        assert!(!r.exact, "more than held is clamped");
        assert_eq!(r.scalars, [3_000, 0, 0, 0]);
        assert_eq!(a.release_all(3), Some([0, 100_000, 0, 0]));
        assert_eq!(a.release_all(3), None);
        assert_eq!(a.available, a.total);
        assert!(a.holders().is_empty());
    }

    #[test]
    fn explicit_records_and_the_remainder_add_up() {
        let mut a = agent("cpus:4;mem:100;ports:[1-10]");
        let first = a.take_for(0, "batch");
        assert!(a.record_add(7, &first));
        assert!(a.records.is_empty(), "the first holder needs no record");
        // 7 gives some back, then 8 is offered it.
        a.release(7, &res("cpus:1;ports:[4-5]"));
        let second = a.take_for(0, "batch");
        assert_eq!(second, res("cpus:1;ports:[4-5]"));
        assert!(a.record_add(8, &second));
        assert_eq!(a.records.len(), 1);
        assert_eq!(
            a.held_resources(7),
            Some(res("cpus:3;mem:100;ports:[1-3,6-10]"))
        );
        assert_eq!(a.held_resources(8), Some(second.clone()));
        // 7 leaves: 8 stays explicit and the remainder is free again.
        assert_eq!(a.release_all(7), Some([3_000, 100_000, 0, 0]));
        assert_eq!(a.holders(), vec![8]);
        assert_eq!(a.held_resources(8), Some(second));
        let third = a.take_for(0, "batch");
        assert!(a.record_add(9, &third));
        assert_eq!(
            a.held_resources(9),
            Some(res("cpus:3;mem:100;ports:[1-3,6-10]"))
        );
        let r = a.release(8, &res("cpus:1;ports:[4-5]"));
        assert!(r.exact && r.emptied);
        assert_eq!(a.holders(), vec![9]);
    }

    #[test]
    fn claim_clamps_to_available() {
        let mut a = agent("cpus:4;mem:100");
        let (s, created, exact) = a.claim(0, &res("cpus:3;gpus:1"));
        assert_eq!((s, created, exact), ([3_000, 0, 0, 0], true, false));
        let (s, created, exact) = a.claim(0, &res("cpus:3"));
        assert_eq!((s, created, exact), ([1_000, 0, 0, 0], false, false));
        assert_eq!(a.available, res("mem:100"));
        assert_eq!(a.held_resources(0), Some(res("cpus:4")));
        assert_eq!(a.held_scalars(0), [4_000, 0, 0, 0]);
    }
}
