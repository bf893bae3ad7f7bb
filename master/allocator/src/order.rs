//! The incrementally maintained DRF orders.
//!
//! Roles (by weighted share) and, within each role, frameworks (by their own
//! share) sit in indexed binary min-heaps. When one entry's allocation
//! changes, it is moved to its new place in O(log n) without any memory
//! allocation, so an allocation never re-sorts anything (Mesos's sorter
//! re-sorts per agent). The allocation loop usually needs only the first
//! entry; when that one is filtered on an agent it walks on in order with a
//! small side heap of candidates. (A `BTreeSet` does the same job but, under
//! the allocation pattern "take the first, reinsert it further on", spends
//! most of its time merging and splitting nodes.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Position in a DRF order: ascending share, then ascending `seq` (creation
/// order, for deterministic ties), carrying the dense index of the entry.
/// Packed into one `u128` (share bits, seq, index from high to low) so that
/// comparing two keys is one wide integer comparison.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct OrderKey(u128);

impl OrderKey {
    pub(crate) fn new(share: f64, seq: u32, idx: u32) -> OrderKey {
        OrderKey(u128::from(share_bits(share)) << 64 | u128::from(seq) << 32 | u128::from(idx))
    }

    /// The dense index of the entry.
    pub(crate) fn idx(self) -> u32 {
        self.0 as u32
    }
}

/// For non-negative floats the IEEE-754 bit pattern orders like the number,
/// so shares compare as plain integers.
fn share_bits(share: f64) -> u64 {
    if share.is_nan() || share <= 0.0 {
        0
    } else {
        share.to_bits()
    }
}

/// Marks an index that is in no heap.
pub(crate) const ABSENT: u32 = u32::MAX;

/// Candidates of an in-order walk over a heap: (key, position in the heap).
pub(crate) type Walk = BinaryHeap<Reverse<(OrderKey, u32)>>;

/// Children per node: a 4-ary heap has half the levels of a binary one, and
/// the four children of a node sit in one cache line.
const ARITY: usize = 4;

/// An indexed 4-ary min-heap of [`OrderKey`]s. Where each index sits is kept
/// in a `pos` table owned by the caller (so that all the per-role heaps of
/// frameworks can share one table indexed by subscription).
#[derive(Debug, Default)]
pub(crate) struct Heap {
    items: Vec<OrderKey>,
}

impl Heap {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn first(&self) -> Option<OrderKey> {
        self.items.first().copied()
    }

    /// The key of `idx`, if it is in this heap.
    pub(crate) fn key(&self, idx: u32, pos: &[u32]) -> Option<OrderKey> {
        let p = *pos.get(idx as usize)?;
        self.items
            .get(p as usize)
            .copied()
            .filter(|k| k.idx() == idx)
    }

    /// Puts `key.idx()` in the heap at `key`, or moves it there.
    pub(crate) fn set(&mut self, key: OrderKey, pos: &mut [u32]) {
        let p = pos[key.idx() as usize];
        if p == ABSENT {
            self.items.push(key);
            let p = self.items.len() - 1;
            pos[key.idx() as usize] = p as u32;
            self.sift_up(p, pos);
        } else {
            let p = p as usize;
            let old = std::mem::replace(&mut self.items[p], key);
            if key < old {
                self.sift_up(p, pos);
            } else {
                self.sift_down(p, pos);
            }
        }
    }

    /// Takes `idx` out of the heap, if there.
    pub(crate) fn remove(&mut self, idx: u32, pos: &mut [u32]) {
        let p = pos[idx as usize];
        if p == ABSENT {
            return;
        }
        let p = p as usize;
        pos[idx as usize] = ABSENT;
        let last = self.items.len() - 1;
        if p != last {
            self.items.swap(p, last);
            self.items.pop();
            pos[self.items[p].idx() as usize] = p as u32;
            self.sift_down(p, pos);
            self.sift_up(p, pos);
        } else {
            self.items.pop();
        }
    }

    /// Empties the heap, marking its indices absent.
    pub(crate) fn clear(&mut self, pos: &mut [u32]) {
        for k in self.items.drain(..) {
            pos[k.idx() as usize] = ABSENT;
        }
    }

    /// The first key, in order, that `accept`s, walking with `walk` as
    /// scratch space (only needed when the first key is refused).
    pub(crate) fn find(
        &self,
        walk: &mut Walk,
        mut accept: impl FnMut(OrderKey) -> bool,
    ) -> Option<OrderKey> {
        let first = self.first()?;
        if accept(first) {
            return Some(first);
        }
        walk.clear();
        self.push_children(0, walk);
        while let Some(Reverse((key, p))) = walk.pop() {
            if accept(key) {
                return Some(key);
            }
            self.push_children(p as usize, walk);
        }
        None
    }

    fn push_children(&self, p: usize, walk: &mut Walk) {
        for c in ARITY * p + 1..=ARITY * p + ARITY {
            if let Some(&k) = self.items.get(c) {
                walk.push(Reverse((k, c as u32)));
            }
        }
    }

    /// Moves the entry at `p` up to its place. The entries it passes move
    /// down one level each into the hole it leaves, and it is written once
    /// at the end, which halves the writes of swapping.
    fn sift_up(&mut self, mut p: usize, pos: &mut [u32]) {
        let key = self.items[p];
        while p > 0 {
            let parent = (p - 1) / ARITY;
            let above = self.items[parent];
            if key >= above {
                break;
            }
            self.items[p] = above;
            pos[above.idx() as usize] = p as u32;
            p = parent;
        }
        self.items[p] = key;
        pos[key.idx() as usize] = p as u32;
    }

    /// Moves the entry at `p` down to its place, the same way.
    fn sift_down(&mut self, mut p: usize, pos: &mut [u32]) {
        let key = self.items[p];
        let n = self.items.len();
        loop {
            let first = ARITY * p + 1;
            if first >= n {
                break;
            }
            let mut c = first;
            for x in first + 1..(first + ARITY).min(n) {
                if self.items[x] < self.items[c] {
                    c = x;
                }
            }
            let below = self.items[c];
            if below >= key {
                break;
            }
            self.items[p] = below;
            pos[below.idx() as usize] = p as u32;
            p = c;
        }
        self.items[p] = key;
        pos[key.idx() as usize] = p as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn orders_by_share_then_seq() {
        let a = OrderKey::new(0.25, 9, 0);
        let b = OrderKey::new(0.5, 1, 1);
        let c = OrderKey::new(0.5, 2, 2);
        let z = OrderKey::new(-0.0, 5, 3);
        assert!(z < a && a < b && b < c);
        assert_eq!(c.idx(), 2);
        assert!(OrderKey::new(0.5, 1, 9) < OrderKey::new(0.5, 2, 0));
        assert!(OrderKey::new(1e-300, 0, 0) > OrderKey::new(0.0, 1, 0));
        assert!(OrderKey::new(f64::NAN, 0, 0) == OrderKey::new(0.0, 0, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u32, u8),
        Remove(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..40, any::<u8>()).prop_map(|(i, s)| Op::Set(i, s)),
            (0u32..40).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// The heap walks its keys in the same order as a sorted model, under
        /// any mix of inserts, moves and removals.
        #[test]
        fn walks_in_sorted_order(ops in prop::collection::vec(op(), 0..80), skip in 0usize..30) {
            let mut heap = Heap::default();
            let mut pos = vec![ABSENT; 40];
            let mut model = std::collections::BTreeMap::new();
            for op in ops {
                match op {
                    Op::Set(i, s) => {
                        let key = OrderKey::new(f64::from(s) / 7.0, i, i);
                        heap.set(key, &mut pos);
                        model.insert(i, key);
                    }
                    Op::Remove(i) => {
                        heap.remove(i, &mut pos);
                        model.remove(&i);
                    }
                }
                let mut sorted: Vec<OrderKey> = model.values().copied().collect();
                sorted.sort();
                prop_assert_eq!(heap.len(), sorted.len());
                prop_assert_eq!(heap.first(), sorted.first().copied());
                for (&i, &k) in &model {
                    prop_assert_eq!(heap.key(i, &pos), Some(k));
                }
                // Walk, refusing the first `skip` keys: must see them in order.
                let mut seen = Vec::new();
                let mut walk = Walk::new();
                let found = heap.find(&mut walk, |k| {
                    seen.push(k);
                    seen.len() > skip
                });
                prop_assert_eq!(found, sorted.get(skip).copied());
                prop_assert_eq!(&seen[..], &sorted[..seen.len()]);
            }
            heap.clear(&mut pos);
            prop_assert!(heap.is_empty());
            prop_assert!(pos.iter().all(|&p| p == ABSENT));
        }
    }
}
