//! The outstanding offers, by number.
//!
//! Offer numbers only grow, so the book is a vector sorted by number: a
//! cycle's offers are appended at its end (sequential writes, no hashing,
//! no tree to descend), lookups are binary searches, and a removed offer
//! leaves a hole that is squeezed out once holes outnumber offers.
//!
//! The offers of one agent and of one framework are found through indexes
//! by the allocator's slot of each ([`Offer::agent_slot`],
//! [`Offer::framework_slot`]): plain vectors of numbers, appended to with
//! no hashing, and squeezed lazily (a removal only counts down), so that an
//! agent that comes or goes costs its own offers, not every offer
//! outstanding.

use super::Offer;

#[derive(Debug, Default)]
pub(crate) struct OfferBook {
    /// By ascending number; `None` where an offer was removed.
    entries: Vec<(u64, Option<Offer>)>,
    live: usize,
    by_agent: SlotIndex,
    by_framework: SlotIndex,
}

/// Offer numbers by slot: each slot's list holds its live offers' numbers
/// (ascending) and possibly numbers of removed ones, squeezed out once
/// they are the majority.
#[derive(Debug, Default)]
struct SlotIndex {
    slots: Vec<(Vec<u64>, usize)>,
}

impl SlotIndex {
    fn add(&mut self, slot: u32, seq: u64) {
        let slot = slot as usize;
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, Default::default);
        }
        let (seqs, live) = &mut self.slots[slot];
        seqs.push(seq);
        *live += 1;
    }

    /// Counts one offer of `slot` removed; returns whether the slot's list
    /// should be squeezed.
    fn removed(&mut self, slot: u32) -> bool {
        let Some((seqs, live)) = self.slots.get_mut(slot as usize) else {
            return false;
        };
        *live = live.saturating_sub(1);
        if *live == 0 {
            seqs.clear();
            return false;
        }
        seqs.len() > 16 && seqs.len() > 2 * *live
    }

    fn list(&self, slot: u32) -> &[u64] {
        self.slots
            .get(slot as usize)
            .map(|(s, _)| s.as_slice())
            .unwrap_or_default()
    }
}

impl OfferBook {
    /// Adds an offer numbered above every offer added before.
    ///
    /// # Panics
    /// If `seq` is not above the last number added.
    pub fn insert(&mut self, seq: u64, offer: Offer) {
        if let Some((last, _)) = self.entries.last() {
            assert!(seq > *last, "offer {seq} added after offer {last}");
        }
        self.by_agent.add(offer.agent_slot, seq);
        self.by_framework.add(offer.framework_slot, seq);
        self.entries.push((seq, Some(offer)));
        self.live += 1;
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&seq, |(s, _)| *s).ok()
    }

    pub fn get(&self, seq: &u64) -> Option<&Offer> {
        self.position(*seq).and_then(|i| self.entries[i].1.as_ref())
    }

    pub fn remove(&mut self, seq: &u64) -> Option<Offer> {
        let i = self.position(*seq)?;
        let offer = self.entries[i].1.take()?;
        self.live -= 1;
        if self.by_agent.removed(offer.agent_slot) {
            let slot = offer.agent_slot;
            let mut seqs = std::mem::take(&mut self.by_agent.slots[slot as usize].0);
            seqs.retain(|s| self.get(s).is_some_and(|o| o.agent_slot == slot));
            self.by_agent.slots[slot as usize].0 = seqs;
        }
        if self.by_framework.removed(offer.framework_slot) {
            let slot = offer.framework_slot;
            let mut seqs = std::mem::take(&mut self.by_framework.slots[slot as usize].0);
            seqs.retain(|s| self.get(s).is_some_and(|o| o.framework_slot == slot));
            self.by_framework.slots[slot as usize].0 = seqs;
        }
        let holes = self.entries.len() - self.live;
        if self.live == 0 {
            self.entries.clear();
        } else if holes > 1024 && holes > self.live {
            self.entries.retain(|(_, o)| o.is_some());
        }
        Some(offer)
    }

    /// The outstanding offers on the agent of allocator slot `slot` whose id
    /// is `agent_id`, ascending.
    pub fn on_agent(&self, slot: u32, agent_id: &str) -> Vec<u64> {
        self.by_agent
            .list(slot)
            .iter()
            .copied()
            .filter(|s| self.get(s).is_some_and(|o| &*o.agent_id == agent_id))
            .collect()
    }

    /// The outstanding offers to the framework of allocator slot `slot`
    /// whose id is `framework_id`, ascending.
    pub fn of_framework(&self, slot: u32, framework_id: &str) -> Vec<u64> {
        self.by_framework
            .list(slot)
            .iter()
            .copied()
            .filter(|s| {
                self.get(s)
                    .is_some_and(|o| &*o.framework_id == framework_id)
            })
            .collect()
    }

    pub fn values(&self) -> impl Iterator<Item = &Offer> {
        self.entries.iter().filter_map(|(_, o)| o.as_ref())
    }

    pub fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    fn offer(seq: u64) -> Offer {
        Offer {
            seq,
            framework_id: Arc::from("f"),
            agent_id: Arc::from("a"),
            agent_slot: 0,
            framework_slot: 0,
            role: Arc::from("*"),
            resources: Default::default(),
            created: Instant::now(),
        }
    }

    #[test]
    fn offers_come_and_go_in_any_order() {
        let mut book = OfferBook::default();
        let mut model = std::collections::BTreeMap::new();
        let mut seq = 0;
        // Add in rounds, remove every other one and some stragglers, so the
        // book squeezes out its holes several times.
        for round in 0..20u64 {
            for _ in 0..500 {
                seq += 1;
                book.insert(seq, offer(seq));
                model.insert(seq, ());
            }
            let doomed: Vec<u64> = model
                .keys()
                .copied()
                .filter(|s| (s + round) % 3 != 0)
                .collect();
            for s in doomed {
                assert_eq!(book.remove(&s).map(|o| o.seq), Some(s));
                model.remove(&s);
                assert!(book.get(&s).is_none());
                assert!(book.remove(&s).is_none(), "removed twice");
            }
            assert_eq!(book.len(), model.len());
            let seqs: Vec<u64> = book.values().map(|o| o.seq).collect();
            assert_eq!(seqs, model.keys().copied().collect::<Vec<_>>());
            assert!(book.entries.len() <= 2 * book.live + 1025);
        }
        assert!(book.get(&(seq + 1)).is_none());
        for s in model.keys() {
            assert_eq!(book.get(s).map(|o| o.seq), Some(*s));
        }
        for s in model.keys().copied().collect::<Vec<_>>() {
            book.remove(&s);
        }
        assert_eq!(book.len(), 0);
        assert!(book.entries.is_empty());
    }

    #[test]
    fn offers_are_found_by_agent_and_by_framework() {
        let mut book = OfferBook::default();
        let mut model: std::collections::BTreeMap<u64, (u32, u32)> = Default::default();
        let mut seq = 0;
        let mut rng = 7u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..5000 {
            if next() % 3 != 0 || model.is_empty() {
                seq += 1;
                let (a, f) = ((next() % 7) as u32, (next() % 3) as u32);
                let mut o = offer(seq);
                o.agent_slot = a;
                o.framework_slot = f;
                o.agent_id = Arc::from(format!("a{a}"));
                o.framework_id = Arc::from(format!("f{f}"));
                book.insert(seq, o);
                model.insert(seq, (a, f));
            } else {
                let keys: Vec<u64> = model.keys().copied().collect();
                let s = keys[(next() % keys.len() as u64) as usize];
                book.remove(&s).unwrap();
                model.remove(&s);
            }
            for a in 0..7u32 {
                let want: Vec<u64> = model
                    .iter()
                    .filter(|(_, (x, _))| *x == a)
                    .map(|(s, _)| *s)
                    .collect();
                assert_eq!(book.on_agent(a, &format!("a{a}")), want);
                assert!(book.by_agent.list(a).len() <= 2 * want.len() + 17);
            }
            for f in 0..3u32 {
                let want: Vec<u64> = model
                    .iter()
                    .filter(|(_, (_, x))| *x == f)
                    .map(|(s, _)| *s)
                    .collect();
                assert_eq!(book.of_framework(f, &format!("f{f}")), want);
            }
        }
        // A slot taken over by another agent shows none of the old one's.
        assert!(book.on_agent(0, "someone-else").is_empty());
    }

    #[test]
    #[should_panic(expected = "added after")]
    fn numbers_must_grow() {
        let mut book = OfferBook::default();
        book.insert(5, offer(5));
        book.insert(5, offer(5));
    }
}
