//! Locality-based least connection (IPVS `lblc`, `ip_vs_lblc.c`) and its replicated variant
//! (IPVS `lblcr`, `ip_vs_lblcr.c`), for cache clusters: flows to one destination address keep going
//! to the same server, so its cache stays warm, until that server is overloaded.
//!
//! IPVS semantics we follow:
//! - A destination with no remembered server gets the `wlc` choice (`__ip_vs_lblc_schedule()`),
//!   which is then remembered.
//! - `lblc`: the remembered server is used unless it is drained or overloaded; then the `wlc`
//!   choice replaces it. Overloaded is IPVS's `is_overloaded()`: `active > weight` *and* some
//!   server has `active * 2 < weight` (less than half its capacity in use), so a busy server keeps
//!   its destinations when every server is busy.
//! - `lblcr`: a destination maps to a set of servers. A flow goes to the set's `wlc` choice
//!   (`ip_vs_dest_set_min()`); when that one is overloaded, the cluster-wide `wlc` choice is added
//!   to the set and used. When a set of more than one server has not changed for a while, its most
//!   loaded member (`ip_vs_dest_set_max()`) is dropped.
//!
//! How the state differs from IPVS, so that `pick` takes no lock and allocates nothing (IPVS keeps
//! chained hash tables of entries under `svc->sched_lock`, expiring unused entries by timer):
//! - State is a fixed array of [`SLOTS`] atomic slots allocated in `new`, direct-mapped by a hash
//!   of the destination address. Two destinations hashing to the same slot overwrite each other:
//!   the loser is treated as new and gets a fresh `wlc` choice, which costs locality, never
//!   correctness. With 16384 slots (IPVS's own entry limit for `lblc` is 16 * 1024) collisions
//!   are rare until tens of thousands of destinations are active at once.
//! - `lblc` packs `(destination, server + 1)` into one `AtomicU64`, so a slot is always read whole.
//! - `lblcr` sets hold at most [`MAX_SET`] servers, packed as four `u16` indices into one
//!   `AtomicU64` (a set of `k < 4` repeats its first member in the free lanes). IPVS sets are
//!   unbounded; when a full set must grow, its most loaded member is replaced. The destination,
//!   a 16-bit check of the set word and the set's age sit in a second `AtomicU64`; a reader that
//!   sees the two words from different writes fails the check (with probability 1 - 2^-16) and
//!   treats the slot as empty. Concurrent updates of one slot are last-writer-wins.
//! - This crate has no clock, so "the set has not changed for a while" (IPVS:
//!   `lblcr_expiration`, 24 hours by default) is counted in new flows to that destination: after
//!   [`SET_EXPIRY_PICKS`] picks without a change, the most loaded member is dropped.
//! - State lives in the `Scheduler`, so it starts empty when `control` builds a new one after a
//!   configuration change; IPVS keeps its entries across server edits.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::hash::{addr_hash, mix64};
use crate::lc::{costlier, least_loaded, overhead, weighted_least_connection};
use crate::{Candidate, Loads};

/// Slots in the destination table: 2^14, 128 KiB for `lblc`, 256 KiB for `lblcr`.
pub(crate) const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_BITS: u32 = 14;
/// Most servers in one `lblcr` destination set.
pub(crate) const MAX_SET: usize = 4;
/// New flows to one `lblcr` destination, without a change to its set, after which the set drops
/// its most loaded member (IPVS's `lblcr_expiration`, counted in picks instead of time).
pub(crate) const SET_EXPIRY_PICKS: u64 = 1 << 12;

/// The slot for a destination address; the high hash bits, so they are independent of the low
/// bits `sh`/`dh` use.
#[inline]
fn slot_index(dst_addr: u32) -> usize {
    (addr_hash(dst_addr) >> (64 - SLOT_BITS)) as usize
}

/// IPVS's `is_overloaded()`: more active connections than its weight, while some server is
/// below half of its weight.
#[inline]
fn is_overloaded<L: Loads + ?Sized>(weights: &[u32], loads: &L, server: usize) -> bool {
    let weight = weights.get(server).copied().unwrap_or(0);
    loads.active(server) > u64::from(weight)
        && weights.iter().enumerate().any(|(other, &other_weight)| {
            loads.active(other).saturating_mul(2) < u64::from(other_weight)
        })
}

/// `lblc`: one remembered server per destination.
#[derive(Debug)]
pub(crate) struct Lblc {
    weights: Box<[u32]>,
    /// `destination << 32 | (server + 1)`, or 0 for an empty slot.
    slots: Box<[AtomicU64]>,
}

impl Lblc {
    pub(crate) fn new(servers: &[Candidate]) -> Self {
        Self {
            weights: servers.iter().map(|server| server.weight).collect(),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    pub(crate) fn pick<L: Loads + ?Sized>(&self, dst_addr: u32, loads: &L) -> Option<usize> {
        let slot = self.slots.get(slot_index(dst_addr))?;
        let entry = slot.load(Ordering::Relaxed);
        let remembered = (entry as u32)
            .checked_sub(1)
            .filter(|_| (entry >> 32) as u32 == dst_addr)
            .map(|server| server as usize)
            .filter(|&server| {
                self.weights.get(server).is_some_and(|&weight| weight > 0)
                    && !is_overloaded(&self.weights, loads, server)
            });
        if remembered.is_some() {
            return remembered;
        }
        let server = weighted_least_connection(&self.weights, loads)?;
        // `server < MAX_SERVERS`, so `server + 1` fits in the low 32 bits.
        slot.store(
            u64::from(dst_addr) << 32 | (server as u64 + 1),
            Ordering::Relaxed,
        );
        Some(server)
    }
}

/// A destination's server set, decoded from its packed word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ServerSet {
    members: [u16; MAX_SET],
    len: usize,
}

impl ServerSet {
    fn single(server: u16) -> Self {
        Self {
            members: [server; MAX_SET],
            len: 1,
        }
    }

    /// The distinct lanes of a packed set, in lane order.
    fn unpack(word: u64) -> Self {
        let mut set = Self::single(word as u16);
        for lane in 1..MAX_SET {
            let server = (word >> (16 * lane)) as u16;
            if !set.contains(server) {
                set.members[set.len] = server;
                set.len += 1;
            }
        }
        set
    }

    /// Four lanes, the free ones repeating the first member.
    fn pack(self) -> u64 {
        (0..MAX_SET).fold(0, |word, lane| {
            let server = if lane < self.len {
                self.members[lane]
            } else {
                self.members[0]
            };
            word | u64::from(server) << (16 * lane)
        })
    }

    fn servers(&self) -> impl Iterator<Item = usize> + '_ {
        self.members[..self.len]
            .iter()
            .map(|&index| usize::from(index))
    }

    fn contains(&self, server: u16) -> bool {
        self.members[..self.len].contains(&server)
    }

    /// Removes the member at `position`, keeping at least one member.
    fn remove(&mut self, position: usize) {
        if self.len > 1 && position < self.len {
            self.members.copy_within(position + 1..self.len, position);
            self.len -= 1;
        }
    }
}

/// One `lblcr` slot: the set word, and `destination << 32 | check << 16 | age`.
#[derive(Debug, Default)]
struct SetSlot {
    set: AtomicU64,
    tag: AtomicU64,
}

/// 16 bits binding a set word to a destination; never 0, so a zeroed slot never validates.
#[inline]
fn check(dst_addr: u32, set: u64) -> u64 {
    (mix64(set ^ u64::from(dst_addr)) >> 48) | 1
}

const AGE_MASK: u64 = 0xffff;

/// `lblcr`: a small server set per destination.
#[derive(Debug)]
pub(crate) struct Lblcr {
    weights: Box<[u32]>,
    slots: Box<[SetSlot]>,
}

impl Lblcr {
    pub(crate) fn new(servers: &[Candidate]) -> Self {
        Self {
            weights: servers.iter().map(|server| server.weight).collect(),
            slots: (0..SLOTS).map(|_| SetSlot::default()).collect(),
        }
    }

    #[inline]
    pub(crate) fn pick<L: Loads + ?Sized>(&self, dst_addr: u32, loads: &L) -> Option<usize> {
        let slot = self.slots.get(slot_index(dst_addr))?;
        let Some(mut set) = self.load(slot, dst_addr) else {
            let server = weighted_least_connection(&self.weights, loads)?;
            Self::store(slot, dst_addr, ServerSet::single(server as u16));
            return Some(server);
        };
        let least = self.set_min(&set, loads);
        if set.len > 1 {
            let age = (slot.tag.fetch_add(1, Ordering::Relaxed) & AGE_MASK) + 1;
            if age >= SET_EXPIRY_PICKS {
                if let Some(most) = self.set_max(&set, loads) {
                    set.remove(most);
                }
                Self::store(slot, dst_addr, set);
            }
        }
        if let Some(least) = least {
            if !is_overloaded(&self.weights, loads, least) {
                return Some(least);
            }
        }
        let server = weighted_least_connection(&self.weights, loads)?;
        if !set.contains(server as u16) {
            if set.len == MAX_SET {
                let most = self.set_max(&set, loads).unwrap_or(0);
                set.members[most] = server as u16;
            } else {
                set.members[set.len] = server as u16;
                set.len += 1;
            }
            Self::store(slot, dst_addr, set);
        }
        Some(server)
    }

    /// The destination's set, if the slot holds one for it (whole, and with valid indices).
    #[inline]
    fn load(&self, slot: &SetSlot, dst_addr: u32) -> Option<ServerSet> {
        let tag = slot.tag.load(Ordering::Relaxed);
        let word = slot.set.load(Ordering::Relaxed);
        let valid = (tag >> 32) as u32 == dst_addr && (tag >> 16) & 0xffff == check(dst_addr, word);
        let set = ServerSet::unpack(word);
        (valid && set.servers().all(|server| server < self.weights.len())).then_some(set)
    }

    /// Publishes a set with age 0. The two stores are not one atomic step; see the module docs.
    #[inline]
    fn store(slot: &SetSlot, dst_addr: u32, set: ServerSet) {
        let word = set.pack();
        slot.set.store(word, Ordering::Relaxed);
        slot.tag.store(
            u64::from(dst_addr) << 32 | check(dst_addr, word) << 16,
            Ordering::Relaxed,
        );
    }

    /// IPVS's `ip_vs_dest_set_min()`: the member with weight > 0 and the least
    /// `overhead / weight`.
    #[inline]
    fn set_min<L: Loads + ?Sized>(&self, set: &ServerSet, loads: &L) -> Option<usize> {
        let members = set
            .servers()
            .map(|server| (server, self.weights.get(server).copied().unwrap_or(0)));
        least_loaded(members, loads)
    }

    /// IPVS's `ip_vs_dest_set_max()`, as a position in the set: the member with the greatest
    /// `overhead / weight`; a drained member counts as the most loaded.
    #[inline]
    fn set_max<L: Loads + ?Sized>(&self, set: &ServerSet, loads: &L) -> Option<usize> {
        let mut most: Option<(usize, u64, u32)> = None;
        for (position, server) in set.servers().enumerate() {
            let weight = self.weights.get(server).copied().unwrap_or(0);
            if weight == 0 {
                return Some(position);
            }
            let load = overhead(loads, server);
            match most {
                Some((_, most_load, most_weight))
                    if !costlier(load, weight, most_load, most_weight) => {}
                _ => most = Some((position, load, weight)),
            }
        }
        most.map(|(position, _, _)| position)
    }

    /// The servers currently remembered for a destination, for tests.
    #[cfg(test)]
    fn remembered(&self, dst_addr: u32) -> Vec<usize> {
        self.slots
            .get(slot_index(dst_addr))
            .and_then(|slot| self.load(slot, dst_addr))
            .map(|set| set.servers().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Active(Vec<u64>);

    impl Loads for Active {
        fn active(&self, server: usize) -> u64 {
            self.0[server]
        }
        fn inactive(&self, _server: usize) -> u64 {
            0
        }
    }

    fn servers(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .map(|&weight| Candidate { key: 0, weight })
            .collect()
    }

    #[test]
    fn sets_pack_and_unpack() {
        let mut set = ServerSet::single(7);
        assert_eq!(ServerSet::unpack(set.pack()), set);
        set.members[1] = 65_535;
        set.members[2] = 0;
        set.len = 3;
        assert_eq!(ServerSet::unpack(set.pack()), set);
        set.remove(0);
        assert_eq!(&set.members[..set.len], &[65_535, 0]);
        set.remove(0);
        set.remove(0);
        assert_eq!(set.len, 1, "a set keeps one member");
    }

    #[test]
    fn mixed_words_fail_the_check() {
        let set = ServerSet::single(1).pack();
        let other = ServerSet::single(2).pack();
        assert_ne!(check(10, set), check(10, other));
        assert_ne!(check(10, set), check(11, set));
        assert_ne!(check(0, 0), 0);
    }

    #[test]
    fn lblcr_set_shrinks_after_expiry() {
        let lblcr = Lblcr::new(&servers(&[1, 1]));
        let dst = 0xc000_0201;
        // Server 0 overloaded while server 1 is idle: the set grows to both.
        assert_eq!(lblcr.pick(dst, &Active(vec![0, 0])), Some(0));
        assert_eq!(lblcr.pick(dst, &Active(vec![2, 0])), Some(1));
        assert_eq!(lblcr.remembered(dst), vec![0, 1]);
        // No change for SET_EXPIRY_PICKS picks: the most loaded member goes.
        let loads = Active(vec![1, 0]);
        for _ in 0..SET_EXPIRY_PICKS {
            lblcr.pick(dst, &loads);
        }
        assert_eq!(lblcr.remembered(dst), vec![1]);
    }

    #[test]
    fn lblcr_full_set_replaces_its_most_loaded_member() {
        let lblcr = Lblcr::new(&servers(&[1; 6]));
        let dst = 0x0a00_0001;
        let mut active = vec![0; 6];
        for expected in 0..5 {
            // Everyone already in the set is overloaded; the next idle server joins.
            assert_eq!(lblcr.pick(dst, &Active(active.clone())), Some(expected));
            active[expected] = 2 + expected as u64;
        }
        // Server 3 (active 5) was the most loaded of {0, 1, 2, 3} and made room for 4.
        assert_eq!(lblcr.remembered(dst), vec![0, 1, 2, 4]);
    }
}
