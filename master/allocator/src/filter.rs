//! Refuse filters: "do not offer framework F, in role R, what agent A has
//! now, until time T", set when F declines an offer or returns unused
//! resources. As in Mesos a filter applies only while what would be offered
//! is contained in what was refused: if more becomes available on the agent,
//! the framework hears about it at once.
//!
//! Large clusters hold millions of filters (10% of 50,000 agents x 2,000
//! frameworks is ten million), so a filter is 24 bytes: the refused resources
//! are interned in a [`FilterBook`] shared by all filters, and each filter
//! keeps an index into it. Declines of identical offers, the common case,
//! share one entry.
//!
//! The allocation loop asks "has subscription S a filter on agent A?" once
//! per candidate, walking the agents in order. A [`FilterTable`] answers from
//! one flat bitset (a row of bits per agent, a bit per subscription), which
//! the loop reads front to back so the hardware prefetcher keeps it in
//! cache; only when the bit is set does it read the filter itself, found by
//! counting the bits before it rather than by hashing.

use std::collections::HashMap;
use std::time::Instant;

use agora_proto::{Resources, UNRESERVED};

use crate::quantities::{Milli4, scalars_of};
use crate::value;

/// One filter of one (framework, role) on one agent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filter {
    /// Index of the refused resources in the [`FilterBook`].
    pub resources: u32,
    /// The filter applies strictly before this instant.
    pub expires: Instant,
}

/// Every filter, by agent and subscription index.
#[derive(Debug, Default)]
pub(crate) struct FilterTable {
    /// `u64` words per agent row.
    words: usize,
    /// Row `a` is `bits[a * words..(a + 1) * words]`.
    bits: Vec<u64>,
    /// The filters of each agent, in subscription order (one per set bit).
    lists: Vec<Vec<Filter>>,
    count: usize,
}

impl FilterTable {
    /// How many filters are held (expired ones not yet dropped included).
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Reads agent `a`'s row of bits and the head of its list, ahead of
    /// the allocation loop (see `Allocator::warm_up`).
    pub(crate) fn warm_up(&self, a: u32) {
        let row = self.row(a);
        std::hint::black_box((row.first().copied(), row.last().copied()));
        std::hint::black_box(self.lists.get(a as usize).map(|l| l.as_ptr()));
    }

    fn row(&self, a: u32) -> &[u64] {
        let start = a as usize * self.words;
        self.bits.get(start..start + self.words).unwrap_or(&[])
    }

    /// Where `s`'s filter is (or would go) in agent `a`'s list, and whether
    /// it is there.
    fn slot(&self, a: u32, s: u32) -> (usize, bool) {
        let row = self.row(a);
        let (w, m) = bit(s);
        let Some(&word) = row.get(w) else {
            let len = self.lists.get(a as usize).map_or(0, Vec::len);
            return (len, false);
        };
        let before: u32 = row[..w].iter().map(|b| b.count_ones()).sum();
        (
            (before + (word & (m - 1)).count_ones()) as usize,
            word & m != 0,
        )
    }

    /// The filter subscription `s` has on agent `a`, if any (expired or not).
    pub(crate) fn get(&self, a: u32, s: u32) -> Option<&Filter> {
        let (w, m) = bit(s);
        if self.row(a).get(w).is_some_and(|b| b & m != 0) {
            self.lists.get(a as usize)?.get(self.slot(a, s).0)
        } else {
            None
        }
    }

    /// Sets `s`'s filter on agent `a`, giving back the one it replaces.
    pub(crate) fn set(&mut self, a: u32, s: u32, filter: Filter) -> Option<Filter> {
        self.make_room(a, s);
        let (rank, present) = self.slot(a, s);
        let list = &mut self.lists[a as usize];
        if present {
            return Some(std::mem::replace(&mut list[rank], filter));
        }
        list.insert(rank, filter);
        let (w, m) = bit(s);
        self.bits[a as usize * self.words + w] |= m;
        self.count += 1;
        None
    }

    /// Removes `s`'s filter on agent `a`, if any.
    pub(crate) fn remove(&mut self, a: u32, s: u32) -> Option<Filter> {
        let (rank, present) = self.slot(a, s);
        if !present {
            return None;
        }
        let (w, m) = bit(s);
        self.bits[a as usize * self.words + w] &= !m;
        self.count -= 1;
        Some(self.lists[a as usize].remove(rank))
    }

    /// Removes every filter on agent `a`, giving them with their
    /// subscriptions.
    pub(crate) fn take_agent(&mut self, a: u32) -> Vec<(u32, Filter)> {
        let subs = self.subs_on(a);
        let list = self
            .lists
            .get_mut(a as usize)
            .map(std::mem::take)
            .unwrap_or_default();
        let start = a as usize * self.words;
        if let Some(row) = self.bits.get_mut(start..start + self.words) {
            row.fill(0);
        }
        self.count -= list.len();
        subs.into_iter().zip(list).collect()
    }

    /// Keeps the filters `keep` accepts (called once per filter with agent
    /// and subscription).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u32, u32, &Filter) -> bool) {
        for a in 0..self.lists.len() as u32 {
            let subs = self.subs_on(a);
            let mut i = 0;
            for s in subs {
                if keep(a, s, &self.lists[a as usize][i]) {
                    i += 1;
                } else {
                    self.lists[a as usize].remove(i);
                    let (w, m) = bit(s);
                    self.bits[a as usize * self.words + w] &= !m;
                    self.count -= 1;
                }
            }
        }
    }

    /// Calls `f` with every filter and its agent and subscription.
    #[cfg(test)]
    pub(crate) fn visit(&self, mut f: impl FnMut(u32, u32, &Filter)) {
        for a in 0..self.lists.len() as u32 {
            for (s, filter) in self.subs_on(a).into_iter().zip(&self.lists[a as usize]) {
                f(a, s, filter);
            }
        }
    }

    /// The subscriptions with a filter on agent `a`, ascending.
    fn subs_on(&self, a: u32) -> Vec<u32> {
        let mut out = Vec::new();
        for (w, &word) in self.row(a).iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                out.push(w as u32 * 64 + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        out
    }

    /// Grows the table to hold agent `a` and subscription `s`. Rows widen by
    /// a quarter more than needed, so that adding frameworks one by one
    /// re-lays the bitset only a logarithmic number of times.
    fn make_room(&mut self, a: u32, s: u32) {
        let need = bit(s).0 + 1;
        if need > self.words {
            let words = need + need / 4;
            let rows = self.lists.len();
            let mut bits = vec![0u64; rows * words];
            for r in 0..rows {
                let old = &self.bits[r * self.words..(r + 1) * self.words];
                bits[r * words..r * words + self.words].copy_from_slice(old);
            }
            self.bits = bits;
            self.words = words;
        }
        if a as usize >= self.lists.len() {
            self.lists.resize_with(a as usize + 1, Vec::new);
            self.bits.resize(self.lists.len() * self.words, 0);
        }
    }
}

fn bit(s: u32) -> (usize, u64) {
    ((s / 64) as usize, 1u64 << (s % 64))
}

/// The interned refused resources, reference-counted by their filters.
#[derive(Debug, Default)]
pub(crate) struct FilterBook {
    entries: Vec<Option<Entry>>,
    index: HashMap<Resources, u32>,
    free: Vec<u32>,
}

#[derive(Debug)]
struct Entry {
    resources: Resources,
    /// The DRF scalars of `resources`, for a quick "more is available" test
    /// before the exact containment check.
    scalars: Milli4,
    refs: u32,
}

impl FilterBook {
    /// Takes one reference to `resources`, adding it if new.
    pub(crate) fn intern(&mut self, resources: &Resources) -> u32 {
        if let Some(&id) = self.index.get(resources)
            && let Some(entry) = self.entries[id as usize].as_mut()
        {
            entry.refs += 1;
            return id;
        }
        let entry = Entry {
            resources: resources.clone(),
            scalars: scalars_of(resources),
            refs: 1,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = Some(entry);
                id
            }
            None => {
                self.entries.push(Some(entry));
                (self.entries.len() - 1) as u32
            }
        };
        self.index.insert(resources.clone(), id);
        id
    }

    /// Drops one reference, forgetting the resources with the last one.
    pub(crate) fn release(&mut self, id: u32) {
        let Some(slot) = self.entries.get_mut(id as usize) else {
            return;
        };
        let Some(entry) = slot.as_mut() else {
            return;
        };
        entry.refs -= 1;
        if entry.refs == 0 {
            if let Some(entry) = slot.take() {
                self.index.remove(&entry.resources);
            }
            self.free.push(id);
        }
    }

    /// How many distinct refused bags are held.
    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn distinct(&self) -> usize {
        self.index.len()
    }

    /// The refused resources of a filter.
    #[cfg(test)]
    pub(crate) fn resources(&self, id: u32) -> Option<&Resources> {
        self.entries
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|e| &e.resources)
    }

    /// Whether `filter` keeps `role`'s candidate on an agent from being
    /// offered: it has not expired and the candidate (the agent's `available`
    /// resources that `role` may use, whose DRF scalars are `candidate`) is
    /// contained in what was refused.
    pub(crate) fn applies(
        &self,
        filter: &Filter,
        now: Instant,
        available: &Resources,
        role: &str,
        candidate: &Milli4,
    ) -> bool {
        if now >= filter.expires {
            return false;
        }
        let Some(entry) = self
            .entries
            .get(filter.resources as usize)
            .and_then(Option::as_ref)
        else {
            return false;
        };
        if (0..4).any(|k| candidate[k] > entry.scalars[k]) {
            return false;
        }
        allocatable_within(&entry.resources, available, role)
    }
}

/// Whether `available.allocatable_to(role)` is contained in `refused`,
/// without building the candidate bag.
fn allocatable_within(refused: &Resources, available: &Resources, role: &str) -> bool {
    available
        .iter()
        .filter(|r| r.role == UNRESERVED || r.role == role)
        .all(|r| {
            refused
                .iter()
                .find(|f| f.name == r.name && f.role == r.role)
                .map_or_else(
                    || value::is_empty(&r.value),
                    |f| value::contains(&f.value, &r.value),
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn res(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    #[test]
    fn interning_shares_and_frees_entries() {
        let mut book = FilterBook::default();
        let a = book.intern(&res("cpus:1"));
        let b = book.intern(&res("cpus:1"));
        let c = book.intern(&res("cpus:2"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(book.distinct(), 2);
        book.release(a);
        assert_eq!(book.distinct(), 2);
        book.release(b);
        assert_eq!(book.distinct(), 1);
        assert!(book.resources(a).is_none());
        let d = book.intern(&res("mem:5"));
        assert_eq!(d, a, "freed slots are reused");
        assert_eq!(book.resources(d), Some(&res("mem:5")));
    }

    #[test]
    fn table_keeps_filters_by_agent_and_subscription() {
        let t = Instant::now();
        let f = |res| Filter {
            resources: res,
            expires: t,
        };
        let mut table = FilterTable::default();
        assert!(table.get(0, 0).is_none() && table.get(9, 900).is_none());
        assert!(table.set(2, 130, f(1)).is_none());
        assert!(table.set(2, 3, f(2)).is_none());
        assert!(table.set(0, 64, f(3)).is_none());
        // Widening the rows for a high subscription keeps what was there.
        assert!(table.set(2, 700, f(5)).is_none());
        assert_eq!(table.set(2, 3, f(4)).map(|x| x.resources), Some(2));
        let get = |table: &FilterTable, a, s| table.get(a, s).map(|x| x.resources);
        assert_eq!(get(&table, 2, 3), Some(4));
        assert_eq!(get(&table, 2, 130), Some(1));
        assert_eq!(get(&table, 2, 700), Some(5));
        assert_eq!(get(&table, 0, 64), Some(3));
        assert_eq!(get(&table, 1, 64), None);
        assert_eq!(table.len(), 4);
        assert_eq!(table.remove(2, 130).map(|x| x.resources), Some(1));
        assert!(table.remove(2, 130).is_none());
        table.retain(|a, s, _| !(a == 2 && s == 3));
        assert_eq!(get(&table, 2, 700), Some(5));
        assert_eq!(get(&table, 2, 3), None);
        let taken: Vec<(u32, u32)> = table
            .take_agent(2)
            .into_iter()
            .map(|(s, x)| (s, x.resources))
            .collect();
        assert_eq!(taken, vec![(700, 5)]);
        assert_eq!(table.len(), 1);
        assert_eq!(get(&table, 0, 64), Some(3));
    }

    #[test]
    fn applies_while_contained_and_unexpired() {
        let mut book = FilterBook::default();
        let now = Instant::now();
        let refused = res("cpus:4;mem:100;ports:[1-10]");
        let filter = Filter {
            resources: book.intern(&refused),
            expires: now + Duration::from_secs(5),
        };
        let check = |avail: &str, role: &str, at: Instant| {
            let avail = res(avail);
            let cand = scalars_of(&avail.allocatable_to(role));
            book.applies(&filter, at, &avail, role, &cand)
        };
        assert!(check("cpus:4;mem:100;ports:[1-10]", "web", now));
        assert!(check("cpus:2;ports:[3-4]", "web", now));
        assert!(!check("cpus:5;mem:100", "web", now), "more cpus");
        assert!(!check("cpus:4;ports:[10-11]", "web", now), "a new port");
        assert!(!check("cpus:4;disk:1", "web", now), "a new kind");
        assert!(
            !check("cpus:4;cpus(web):1", "web", now),
            "the role's reservation"
        );
        assert!(
            check("cpus:4;cpus(batch):1", "web", now),
            "another role's reservation"
        );
        assert!(check("cpus:4", "web", now + Duration::from_millis(4999)));
        assert!(!check("cpus:4", "web", now + Duration::from_secs(5)));
    }
}
