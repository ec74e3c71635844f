//! The neighbour array the workers read a next hop's MAC from, and the slot allocator control
//! uses to keep a neighbour's index stable.
//!
//! A connection keeps the [`NeighbourId`] its route lookup gave, not a MAC, so that a neighbour
//! whose MAC changes (a router replaced, a real server's NIC swapped) is followed by established
//! flows without touching their entries. Two ways to do that were weighed:
//! - an immutable array republished with each FIB snapshot: every MAC change would rebuild and
//!   republish a snapshot, and a neighbour flapping would churn the routes' snapshot with it;
//! - one `AtomicU64` per slot, in an array allocated once at its full capacity and shared through
//!   an `Arc`: control stores a new word, the next frame of every flow sees it.
//!
//! [`Neighbours`] is the second. A slot's word packs the 48-bit MAC, a 2-bit state and the slot's
//! 12-bit generation, so a reader always gets all three from one load: no lock, no syscall, no
//! allocation, no torn read. Nothing else is published through the word, so loads and stores
//! are `Relaxed`. There is one writer, control's FIB task.
//!
//! A [`NeighbourId`] carries the generation of its slot as well as the index. [`NeighbourSlots`]
//! (control's allocator, keyed by interface and address) bumps a slot's generation when its
//! neighbour is released, so an id held by an old connection no longer matches once the slot is
//! given to another neighbour: the reader gets [`Neighbour::Gone`] (look the route up again)
//! instead of another host's MAC. Freed slots are reused oldest first, so the 12-bit generation
//! could only wrap for a connection that outlives 4096 reuses of its own slot.
//!
//! Slots are family-free: an IPv4 gateway (ARP) and an IPv6 one (NDP, RFC 4861) hold slots of
//! the same array, keyed in [`NeighbourSlots`] by interface and [`IpAddr`]; only control knows
//! which address a slot is for.
//!
//! What it must not do: resolve neighbours (control does, through the kernel), or block a reader.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::ethernet::MacAddr;

/// Bits of a [`NeighbourId`] that hold the slot index.
const INDEX_BITS: u32 = 20;
/// Most slots a neighbour array can have (about a million).
pub const MAX_NEIGHBOURS: usize = 1 << INDEX_BITS;
/// Bits of a slot generation.
const GENERATION_BITS: u32 = 12;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

/// Where a neighbour's state sits in a slot word; its MAC is the low 48 bits.
const STATE_SHIFT: u32 = 48;
const GENERATION_SHIFT: u32 = 52;
const MAC_MASK: u64 = (1 << 48) - 1;

const VACANT: u64 = 0;
const UNRESOLVED: u64 = 1;
const RESOLVED: u64 = 2;
const FAILED: u64 = 3;

/// A neighbour's slot in [`Neighbours`]: its index and the slot's generation when it was
/// handed out, packed in a `u32` (a connection entry keeps one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighbourId(u32);

impl NeighbourId {
    /// The id of slot `index` (below [`MAX_NEIGHBOURS`]; higher bits are dropped) at
    /// `generation` (modulo 4096).
    pub const fn new(index: u32, generation: u32) -> Self {
        NeighbourId(
            ((generation & GENERATION_MASK) << INDEX_BITS) | (index & (MAX_NEIGHBOURS as u32 - 1)),
        )
    }

    /// Index into the neighbour array.
    pub const fn index(self) -> usize {
        (self.0 & (MAX_NEIGHBOURS as u32 - 1)) as usize
    }

    /// The slot's generation when this id was handed out.
    pub const fn generation(self) -> u32 {
        self.0 >> INDEX_BITS
    }

    /// The packed form, for a connection entry. Ids are local to a director: a synced connection
    /// looks its next hop up again.
    pub const fn to_bits(self) -> u32 {
        self.0
    }

    /// Back from [`to_bits`](Self::to_bits).
    pub const fn from_bits(bits: u32) -> Self {
        NeighbourId(bits)
    }
}

/// What a worker learns about a next hop's neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Neighbour {
    /// Its MAC is known (the kernel's REACHABLE, STALE, DELAY or PROBE: a stale entry is still
    /// used while control asks the kernel to confirm it).
    Resolved(MacAddr),
    /// Being resolved (INCOMPLETE, or not yet asked): drop the frame and count it.
    Unresolved,
    /// Resolution failed (FAILED): drop the frame and count it.
    Failed,
    /// The id no longer names a neighbour (released, or its slot given to another): look the
    /// route up again.
    Gone,
}

/// See the module docs.
#[derive(Debug)]
pub struct Neighbours {
    slots: Box<[AtomicU64]>,
}

fn mac_bits(mac: MacAddr) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[2..].copy_from_slice(&mac);
    u64::from_be_bytes(bytes)
}

fn mac_of(word: u64) -> MacAddr {
    let bytes = (word & MAC_MASK).to_be_bytes();
    [bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]
}

impl Neighbours {
    /// An array of `capacity` vacant slots (at most [`MAX_NEIGHBOURS`]), allocated once.
    pub fn with_capacity(capacity: usize) -> Self {
        let slots = (0..capacity.min(MAX_NEIGHBOURS))
            .map(|_| AtomicU64::new(VACANT))
            .collect();
        Neighbours { slots }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The neighbour `id` names now. Never panics: an id out of range is [`Neighbour::Gone`].
    #[inline]
    pub fn get(&self, id: NeighbourId) -> Neighbour {
        let Some(slot) = self.slots.get(id.index()) else {
            return Neighbour::Gone;
        };
        let word = slot.load(Ordering::Relaxed);
        if (word >> GENERATION_SHIFT) as u32 != id.generation() {
            return Neighbour::Gone;
        }
        match (word >> STATE_SHIFT) & 0b11 {
            RESOLVED => Neighbour::Resolved(mac_of(word)),
            UNRESOLVED => Neighbour::Unresolved,
            FAILED => Neighbour::Failed,
            _ => Neighbour::Gone,
        }
    }

    /// Control: the neighbour of `id` is now `neighbour` ([`Neighbour::Gone`] vacates the slot).
    /// An id out of range is ignored (`NeighbourSlots` never hands one out for a smaller array).
    pub fn publish(&self, id: NeighbourId, neighbour: Neighbour) {
        let (state, mac) = match neighbour {
            Neighbour::Resolved(mac) => (RESOLVED, mac_bits(mac)),
            Neighbour::Unresolved => (UNRESOLVED, 0),
            Neighbour::Failed => (FAILED, 0),
            Neighbour::Gone => (VACANT, 0),
        };
        if let Some(slot) = self.slots.get(id.index()) {
            let word =
                (u64::from(id.generation()) << GENERATION_SHIFT) | (state << STATE_SHIFT) | mac;
            slot.store(word, Ordering::Relaxed);
        }
    }
}

/// Every slot of a [`NeighbourSlots`] is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("all {capacity} neighbour slots are in use")]
pub struct NeighbourSlotsFull {
    /// The allocator's capacity.
    pub capacity: usize,
}

/// Control's allocator of [`NeighbourId`]s, keyed by (interface index, address): the same
/// neighbour keeps its id for as long as it is held, whatever else changes; a released slot is
/// reused, oldest first, only under a new generation. Pure: it does not touch [`Neighbours`].
#[derive(Clone, Debug)]
pub struct NeighbourSlots {
    by_key: HashMap<(u32, IpAddr), NeighbourId>,
    /// Current generation of each slot handed out so far.
    generations: Vec<u32>,
    /// Released slot indices, oldest first.
    free: VecDeque<u32>,
    capacity: usize,
}

impl NeighbourSlots {
    /// An allocator of up to `capacity` slots (at most [`MAX_NEIGHBOURS`]).
    pub fn new(capacity: usize) -> Self {
        NeighbourSlots {
            by_key: HashMap::new(),
            generations: Vec::new(),
            free: VecDeque::new(),
            capacity: capacity.min(MAX_NEIGHBOURS),
        }
    }

    /// Most slots it hands out at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Neighbours holding a slot.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no neighbour holds a slot.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The id held by the neighbour `address` on interface `ifindex`, if any.
    pub fn get(&self, ifindex: u32, address: IpAddr) -> Option<NeighbourId> {
        self.by_key.get(&(ifindex, address)).copied()
    }

    /// The neighbour's id: the one it already holds, else a new one.
    pub fn acquire(
        &mut self,
        ifindex: u32,
        address: IpAddr,
    ) -> Result<NeighbourId, NeighbourSlotsFull> {
        if let Some(&id) = self.by_key.get(&(ifindex, address)) {
            return Ok(id);
        }
        let id = if let Some(index) = self.free.pop_front() {
            NeighbourId::new(index, self.generations[index as usize])
        } else if self.generations.len() < self.capacity {
            self.generations.push(0);
            NeighbourId::new((self.generations.len() - 1) as u32, 0)
        } else {
            return Err(NeighbourSlotsFull {
                capacity: self.capacity,
            });
        };
        self.by_key.insert((ifindex, address), id);
        Ok(id)
    }

    /// Gives the neighbour's slot back, returning the id it held (to vacate in
    /// [`Neighbours`]). The slot's generation moves on, so that id never names the slot again
    /// (until the generation wraps: see the module docs).
    pub fn release(&mut self, ifindex: u32, address: IpAddr) -> Option<NeighbourId> {
        let id = self.by_key.remove(&(ifindex, address))?;
        let generation = &mut self.generations[id.index()];
        *generation = (*generation + 1) & GENERATION_MASK;
        self.free.push_back(id.index() as u32);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;

    fn address(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn mac_state_and_generation_round_trip_through_a_slot() {
        let neighbours = Neighbours::with_capacity(4);
        let id = NeighbourId::new(2, 7);
        assert_eq!(neighbours.get(id), Neighbour::Gone);
        neighbours.publish(id, Neighbour::Unresolved);
        assert_eq!(neighbours.get(id), Neighbour::Unresolved);
        let mac = [0x02, 0xff, 0x00, 0x12, 0x34, 0xfe];
        neighbours.publish(id, Neighbour::Resolved(mac));
        assert_eq!(neighbours.get(id), Neighbour::Resolved(mac));
        assert_eq!(neighbours.get(NeighbourId::new(2, 8)), Neighbour::Gone);
        neighbours.publish(id, Neighbour::Failed);
        assert_eq!(neighbours.get(id), Neighbour::Failed);
        neighbours.publish(id, Neighbour::Gone);
        assert_eq!(neighbours.get(id), Neighbour::Gone);
        assert_eq!(neighbours.get(NeighbourId::new(4, 0)), Neighbour::Gone);
        assert_eq!(NeighbourId::from_bits(id.to_bits()), id);
        assert_eq!((id.index(), id.generation()), (2, 7));
    }

    #[test]
    fn a_released_slot_is_reused_under_a_new_generation() {
        let mut slots = NeighbourSlots::new(2);
        let neighbours = Neighbours::with_capacity(slots.capacity());
        let first = slots.acquire(1, address(1)).unwrap();
        neighbours.publish(first, Neighbour::Resolved([2, 0, 0, 0, 0, 1]));
        let second = slots.acquire(1, address(2)).unwrap();
        assert_eq!(slots.acquire(1, address(1)), Ok(first));
        assert_eq!(
            slots.acquire(2, address(1)),
            Err(NeighbourSlotsFull { capacity: 2 })
        );
        assert_eq!(slots.release(1, address(1)), Some(first));
        neighbours.publish(first, Neighbour::Gone);
        let third = slots.acquire(2, address(1)).unwrap();
        assert_eq!(third.index(), first.index());
        assert_ne!(third, first);
        neighbours.publish(third, Neighbour::Resolved([2, 0, 0, 0, 0, 3]));
        // A connection still holding `first` must not get the new neighbour's MAC.
        assert_eq!(neighbours.get(first), Neighbour::Gone);
        assert_ne!(second.index(), third.index());
        assert_eq!(slots.release(9, address(9)), None);
    }

    #[derive(Clone, Copy, Debug)]
    enum Step {
        Acquire(u32, u8),
        Release(u32, u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3u32, 0..6u8).prop_map(|(i, a)| Step::Acquire(i, a)),
            (0..3u32, 0..6u8).prop_map(|(i, a)| Step::Release(i, a)),
        ]
    }

    proptest! {
        /// Ids are stable while held, two live neighbours never share a slot, a released id is
        /// never handed out again (the run is far shorter than a generation wrap), and the
        /// allocator is full only when `capacity` neighbours hold slots.
        #[test]
        fn slot_allocator_properties(capacity in 1usize..6, steps in proptest::collection::vec(step(), 0..200)) {
            let mut slots = NeighbourSlots::new(capacity);
            let mut live: HashMap<(u32, IpAddr), NeighbourId> = HashMap::new();
            let mut released: HashSet<NeighbourId> = HashSet::new();
            for step in steps {
                match step {
                    Step::Acquire(ifindex, n) => match slots.acquire(ifindex, address(n)) {
                        Ok(id) => {
                            if let Some(&held) = live.get(&(ifindex, address(n))) {
                                prop_assert_eq!(id, held);
                            }
                            prop_assert!(!released.contains(&id));
                            prop_assert!(id.index() < capacity);
                            live.insert((ifindex, address(n)), id);
                        }
                        Err(full) => {
                            prop_assert_eq!(full.capacity, capacity);
                            prop_assert_eq!(live.len(), capacity);
                        }
                    },
                    Step::Release(ifindex, n) => {
                        let id = slots.release(ifindex, address(n));
                        prop_assert_eq!(id, live.remove(&(ifindex, address(n))));
                        released.extend(id);
                    }
                }
                let indices: HashSet<usize> = live.values().map(|id| id.index()).collect();
                prop_assert_eq!(indices.len(), live.len());
                prop_assert_eq!(slots.len(), live.len());
            }
        }
    }
}
