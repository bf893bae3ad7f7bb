//! The outstanding offers, by number.
//!
//! Offer numbers only grow, so the book is a vector sorted by number: a
//! cycle's offers are appended at its end (sequential writes, no hashing,
//! no tree to descend), lookups are binary searches, and a removed offer
//! leaves a hole that is squeezed out once holes outnumber offers.

use super::Offer;

#[derive(Debug, Default)]
pub(crate) struct OfferBook {
    /// By ascending number; `None` where an offer was removed.
    entries: Vec<(u64, Option<Offer>)>,
    live: usize,
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
        let holes = self.entries.len() - self.live;
        if self.live == 0 {
            self.entries.clear();
        } else if holes > 1024 && holes > self.live {
            self.entries.retain(|(_, o)| o.is_some());
        }
        Some(offer)
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
    #[should_panic(expected = "added after")]
    fn numbers_must_grow() {
        let mut book = OfferBook::default();
        book.insert(5, offer(5));
        book.insert(5, offer(5));
    }
}
