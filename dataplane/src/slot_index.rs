//! The connection table's hash index: slot numbers in one flat array of 8-byte buckets, found by
//! hash with linear probing.
//!
//! Each bucket holds a slot number and 32 bits of the key's hash, side by side, so a lookup reads
//! one cache line of the index (eight buckets; at most half of them are used, so a probe seldom
//! leaves the line) and then the entry itself: two cache misses for a flow not in cache, where
//! an index keeping its control bytes and its values apart (as hashbrown's does) costs three.
//! The entry's key is compared only when the stored hash bits match.
//!
//! Removal shifts later buckets of the probe sequence back into the hole (backward-shift
//! deletion, Knuth vol. 3, 6.4, Algorithm R), so there are no tombstones, no rehash, and nothing
//! to allocate after construction: the array is sized once for twice the most slots it can hold.

use allocator_api2::vec::Vec as TableVec;

use crate::memory::HugePages;

/// A bucket with nothing in it (no slot number is `u32::MAX`: it is the table's NIL).
const EMPTY: u64 = u64::MAX;

/// See the module docs.
pub(crate) struct SlotIndex {
    buckets: TableVec<u64, HugePages>,
    mask: usize,
    len: usize,
}

/// The 32 bits of a 64-bit hash the index keeps; its low bits pick the home bucket.
#[inline]
fn short_hash(hash: u64) -> u32 {
    // The high half: the low half of a multiplicative hash is its weaker part.
    (hash >> 32) as u32
}

#[inline]
fn bucket(short: u32, slot: u32) -> u64 {
    (u64::from(short) << 32) | u64::from(slot)
}

#[inline]
fn short_of(bucket: u64) -> u32 {
    (bucket >> 32) as u32
}

#[inline]
fn slot_of(bucket: u64) -> u32 {
    bucket as u32
}

/// Buckets of an index for up to `slots` entries: at least twice as many, a power of two.
fn bucket_count(slots: usize) -> usize {
    slots.saturating_mul(2).max(8).next_power_of_two()
}

impl SlotIndex {
    /// An index for up to `slots` entries: at least twice as many buckets, a power of two.
    pub(crate) fn with_capacity(slots: usize) -> Self {
        let count = bucket_count(slots);
        let mut buckets = TableVec::with_capacity_in(count, HugePages);
        buckets.resize(count, EMPTY);
        SlotIndex {
            buckets,
            mask: count - 1,
            len: 0,
        }
    }

    /// Bytes [`SlotIndex::with_capacity`]`(slots)` allocates.
    pub(crate) fn memory_for(slots: usize) -> usize {
        bucket_count(slots).saturating_mul(std::mem::size_of::<u64>())
    }

    /// Slots indexed.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every slot indexed, in bucket order (a walk of the whole array: not for the packet path).
    #[cfg(test)]
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets
            .iter()
            .filter(|&&found| found != EMPTY)
            .map(|&found| slot_of(found))
    }

    #[inline]
    fn home(&self, short: u32) -> usize {
        short as usize & self.mask
    }

    /// Hints the CPU to load the bucket a lookup of `hash` starts at.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if let Some(bucket) = self.buckets.get(self.home(short_hash(hash))) {
            crate::memory::prefetch(bucket);
        }
    }

    /// The slot in the first bucket of `hash`'s probe run if its hash bits match (the likely
    /// answer of [`SlotIndex::find`], read without comparing keys), for prefetching the entry.
    #[inline]
    pub(crate) fn likely_slot(&self, hash: u64) -> Option<u32> {
        let short = short_hash(hash);
        let found = *self.buckets.get(self.home(short))?;
        (found != EMPTY && short_of(found) == short).then_some(slot_of(found))
    }

    /// The slot of the entry with this `hash` for which `is_it` says yes.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        let short = short_hash(hash);
        let mut at = self.home(short);
        loop {
            let found = self.buckets[at];
            if found == EMPTY {
                return None;
            }
            if short_of(found) == short && is_it(slot_of(found)) {
                return Some(slot_of(found));
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Adds `slot` under `hash`; the caller knows no bucket holds an equal key. Returns false
    /// (and adds nothing) only if the index is full, which its sizing rules out for callers
    /// that index at most the `slots` of [`SlotIndex::with_capacity`].
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) -> bool {
        if self.len >= self.buckets.len() - 1 {
            return false;
        }
        let short = short_hash(hash);
        let mut at = self.home(short);
        while self.buckets[at] != EMPTY {
            at = (at + 1) & self.mask;
        }
        self.buckets[at] = bucket(short, slot);
        self.len += 1;
        true
    }

    /// Points the bucket whose slot `is_it` accepts at `slot` instead, or adds `slot` if there
    /// is none.
    pub(crate) fn upsert(&mut self, hash: u64, slot: u32, mut is_it: impl FnMut(u32) -> bool) {
        let short = short_hash(hash);
        let mut at = self.home(short);
        loop {
            let found = self.buckets[at];
            if found == EMPTY {
                break;
            }
            if short_of(found) == short && is_it(slot_of(found)) {
                self.buckets[at] = bucket(short, slot);
                return;
            }
            at = (at + 1) & self.mask;
        }
        self.insert(hash, slot);
    }

    /// Removes the bucket holding `slot` under `hash`; whether there was one.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let wanted = bucket(short_hash(hash), slot);
        let mut hole = self.home(short_hash(hash));
        loop {
            let found = self.buckets[hole];
            if found == EMPTY {
                return false;
            }
            if found == wanted {
                break;
            }
            hole = (hole + 1) & self.mask;
        }
        // Backward shift: a later bucket of the run moves into the hole unless its home lies
        // cyclically after the hole (then a lookup for it would start past the hole).
        let mut next = hole;
        loop {
            next = (next + 1) & self.mask;
            let moving = self.buckets[next];
            if moving == EMPTY {
                break;
            }
            let origin = self.home(short_of(moving));
            let displaced = next.wrapping_sub(origin) & self.mask;
            let gap = next.wrapping_sub(hole) & self.mask;
            if displaced >= gap {
                self.buckets[hole] = moving;
                hole = next;
            }
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hashes that put every key in the last three home buckets (of 16 or 64), so probe runs
    /// are long and wrap around the end of the array.
    fn crowded(key: u32) -> u64 {
        (u64::from(key % 3 + 61) << 32) | u64::from(key)
    }

    #[test]
    fn memory_for_is_what_with_capacity_allocates() {
        for slots in [0, 1, 5, 8, 1000, 1 << 16] {
            let index = SlotIndex::with_capacity(slots);
            assert_eq!(
                SlotIndex::memory_for(slots),
                index.buckets.capacity() * std::mem::size_of::<u64>(),
                "{slots} slots"
            );
        }
    }

    #[test]
    fn finds_what_it_holds_and_nothing_else() {
        let mut index = SlotIndex::with_capacity(8);
        for slot in 0..8 {
            assert!(index.insert(crowded(slot), slot));
        }
        assert_eq!(index.len(), 8);
        for slot in 0..8 {
            assert_eq!(index.find(crowded(slot), |found| found == slot), Some(slot));
        }
        assert_eq!(index.find(crowded(9), |found| found == 9), None);
    }

    #[test]
    fn upsert_replaces_the_matching_slot() {
        let mut index = SlotIndex::with_capacity(4);
        index.insert(crowded(1), 1);
        index.upsert(crowded(1), 7, |found| found == 1);
        assert_eq!(index.len(), 1);
        assert_eq!(index.find(crowded(1), |found| found == 7), Some(7));
        index.upsert(crowded(2), 2, |found| found == 2);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn likely_slot_is_the_home_bucket_when_its_hash_bits_match() {
        let mut index = SlotIndex::with_capacity(8);
        index.insert(crowded(1), 1);
        index.insert(crowded(4), 4); // same home as 1 (4 % 3 == 1), one bucket later
        assert_eq!(index.likely_slot(crowded(1)), Some(1));
        // Another key with the same home bucket but other hash bits: no guess.
        assert_eq!(index.likely_slot(crowded(4) ^ (1 << 40)), None);
        assert_eq!(SlotIndex::with_capacity(8).likely_slot(crowded(1)), None);
    }

    proptest! {
        /// Any sequence of inserts and removes leaves exactly the live slots findable, however
        /// crowded the hashes (the backward shift keeps every probe run unbroken).
        #[test]
        fn matches_a_set_under_inserts_and_removes(
            operations in proptest::collection::vec((any::<bool>(), 0u32..24), 0..400)
        ) {
            let mut index = SlotIndex::with_capacity(24);
            let mut live = std::collections::BTreeSet::new();
            for (insert, slot) in operations {
                if insert {
                    if live.insert(slot) {
                        prop_assert!(index.insert(crowded(slot), slot));
                    }
                } else {
                    prop_assert_eq!(index.remove(crowded(slot), slot), live.remove(&slot));
                }
                prop_assert_eq!(index.len(), live.len());
            }
            for slot in 0..24 {
                let expected = live.contains(&slot).then_some(slot);
                prop_assert_eq!(index.find(crowded(slot), |found| found == slot), expected);
            }
        }
    }
}
