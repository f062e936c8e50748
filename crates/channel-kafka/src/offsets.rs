//! Which offset of a partition may be committed.
//!
//! Records of one partition are handed out in offset order but settled in
//! any order (unordered subscriptions deliver many at once; ordered ones run
//! one lane per key). Kafka commits a single position per partition — "every
//! record below this one is done" — so the tracker remembers the records
//! handed out and not yet finished, and the committable position is the
//! lowest of them (or one past the highest handed out when all are done).
//!
//! Offsets need not be contiguous (compacted topics, transaction markers):
//! only offsets actually handed out count, so a gap never blocks the commit.

use std::collections::BTreeMap;

/// The settlement state of one partition's records.
#[derive(Debug, Default, Clone)]
pub struct PartitionOffsets {
    /// Offsets handed out and not yet forgotten: `true` once finished.
    outstanding: BTreeMap<i64, bool>,
    /// One past the highest offset handed out, once anything was.
    next: Option<i64>,
    /// Finished entries in `outstanding`, to answer [`Self::unfinished`] in O(1).
    finished: usize,
}

impl PartitionOffsets {
    /// A tracker with nothing handed out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that `offset` was handed out. Offsets must increase; a repeat or
    /// an older offset is refused (returns `false`) and must not be delivered
    /// under this tracker.
    pub fn handed(&mut self, offset: i64) -> bool {
        if offset < 0 || self.next.is_some_and(|next| offset < next) {
            return false;
        }
        self.outstanding.insert(offset, false);
        self.next = Some(offset.saturating_add(1));
        true
    }

    /// Record that `offset` reached a final outcome. Unknown or already
    /// finished offsets are ignored (returns `false`).
    pub fn finish(&mut self, offset: i64) -> bool {
        match self.outstanding.get_mut(&offset) {
            Some(done) if !*done => {
                *done = true;
                self.finished += 1;
            }
            _ => return false,
        }
        // Forget the finished prefix: only the committable position matters.
        while let Some(entry) = self.outstanding.first_entry() {
            if !*entry.get() {
                break;
            }
            entry.remove();
            self.finished -= 1;
        }
        true
    }

    /// The position to commit (Kafka semantics: the next offset to consume):
    /// the lowest unfinished offset, or one past the highest handed out when
    /// every record is finished. `None` when nothing was handed out.
    pub fn committable(&self) -> Option<i64> {
        match self.outstanding.first_key_value() {
            Some((&offset, _)) => Some(offset),
            None => self.next,
        }
    }

    /// Records handed out and not finished.
    pub fn unfinished(&self) -> usize {
        self.outstanding.len() - self.finished
    }

    /// Whether `offset` is handed out and not finished.
    pub fn is_unfinished(&self, offset: i64) -> bool {
        self.outstanding.get(&offset) == Some(&false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_only_the_finished_prefix() {
        let mut t = PartitionOffsets::new();
        assert_eq!(t.committable(), None);
        for o in [10, 11, 12, 15] {
            assert!(t.handed(o));
        }
        assert_eq!(t.committable(), Some(10));
        t.finish(11);
        t.finish(15);
        assert_eq!(t.committable(), Some(10));
        assert_eq!(t.unfinished(), 2);
        t.finish(10);
        assert_eq!(t.committable(), Some(12));
        t.finish(12);
        // The gap 13..15 never blocks: those offsets were never handed out.
        assert_eq!(t.committable(), Some(16));
        assert_eq!(t.unfinished(), 0);
    }

    #[test]
    fn refuses_repeats_and_unknown_offsets() {
        let mut t = PartitionOffsets::new();
        assert!(t.handed(5));
        assert!(!t.handed(5));
        assert!(!t.handed(4));
        assert!(!t.finish(7));
        assert!(t.finish(5));
        assert!(!t.finish(5));
        assert!(!t.handed(-1));
    }

    proptest! {
        /// Whatever the order of settlement, the committable position never
        /// passes an unfinished record, never moves back, and reaches one past
        /// the last record once all are finished.
        #[test]
        fn never_passes_an_unfinished_record(
            gaps in proptest::collection::vec(1i64..4, 1..200),
            seed in any::<u64>(),
        ) {
            let mut offsets = Vec::with_capacity(gaps.len());
            let mut o = i64::from(u32::try_from(seed % 1000).unwrap_or(0));
            for g in &gaps {
                o += g;
                offsets.push(o);
            }
            let mut t = PartitionOffsets::new();
            for &o in &offsets {
                prop_assert!(t.handed(o));
            }
            // A deterministic shuffle driven by the seed.
            let mut settle = offsets.clone();
            let mut x = seed | 1;
            for i in (1..settle.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let j = usize::try_from(x % (i as u64 + 1)).unwrap_or(0);
                settle.swap(i, j);
            }
            let mut finished = std::collections::BTreeSet::new();
            let mut last = t.committable();
            for &s in &settle {
                prop_assert!(t.finish(s));
                finished.insert(s);
                let c = t.committable();
                prop_assert!(c >= last, "moved back");
                last = c;
                let c = c.unwrap_or(i64::MIN);
                // Every handed offset below the committable position is finished.
                for &h in offsets.iter().take_while(|&&h| h < c) {
                    prop_assert!(finished.contains(&h));
                }
                // The lowest unfinished offset is exactly the position.
                if let Some(&lowest) = offsets.iter().find(|h| !finished.contains(h)) {
                    prop_assert_eq!(c, lowest);
                }
                prop_assert_eq!(t.unfinished(), offsets.len() - finished.len());
            }
            prop_assert_eq!(t.committable(), offsets.last().map(|o| o + 1));
        }

        /// Interleaving hand-outs and settlements (a live stream) keeps the
        /// same guarantee.
        #[test]
        fn interleaved_hand_out_and_settle(ops in proptest::collection::vec((any::<bool>(), 0usize..16), 1..300)) {
            let mut t = PartitionOffsets::new();
            let mut next = 0i64;
            let mut open: Vec<i64> = Vec::new();
            for (hand, pick) in ops {
                if hand || open.is_empty() {
                    prop_assert!(t.handed(next));
                    open.push(next);
                    next += 1;
                } else {
                    let o = open.remove(pick % open.len());
                    prop_assert!(t.finish(o));
                }
                let expected = open.iter().min().copied().unwrap_or(next);
                prop_assert_eq!(t.committable(), Some(expected));
                prop_assert_eq!(t.unfinished(), open.len());
            }
        }
    }
}
