//! The table itself: a fixed slab of entries with per-state last-seen lists, the flow and reply
//! indexes, the clock, and the connection gauges it keeps exact (see [`crate::conntrack`]'s
//! docs for the layout, the costs and the rules).
//!
//! What this module must not do: allocate after [`ConnTable::new`], scan the table per packet,
//! or decide states (that is [`super::state`]'s).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use allocator_api2::vec::Vec as TableVec;

use super::connection::{Binding, ConnNextHop, Connection};
use super::key::{FlowAddr, FlowHasher, FlowKey};
use super::state::{is_expired, timeout_secs, ConnState};
use crate::counters::{bump, BackendCounters, WorkerCounters};
use crate::memory::HugePages;
use crate::service::{Protocol, Timeouts};
use crate::slot_index::SlotIndex;

/// What [`ConnTable::prefetch`] learnt of a flow (its hash), for [`ConnTable::prefetch_entry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHint(u64);

/// A handle to a live entry, valid until the table is next changed by insert, expiry or removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnId(u32);

/// Sentinel slot number: end of a list.
const NIL: u32 = u32::MAX;

/// Aligned to a cache line, so an entry spans exactly two and its key is in the first.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Entry {
    key: FlowKey,
    connection: Connection,
    /// Seconds since the table's epoch.
    last_seen: u32,
    /// When it was last exported to other directors (or created or imported), in the same
    /// seconds: what [`ConnTable::sync_due`] measures the refresh period from.
    synced: u32,
    /// Neighbours in its state's list, or in the free list (`next` only).
    prev: u32,
    next: u32,
}

impl Entry {
    const VACANT: Entry = Entry {
        key: FlowKey {
            src_addr: FlowAddr::v4(Ipv4Addr::UNSPECIFIED),
            dst_addr: FlowAddr::v4(Ipv4Addr::UNSPECIFIED),
            src_port: 0,
            dst_port: 0,
            protocol: Protocol::Tcp,
        },
        connection: Connection {
            backend: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            backend_port: 0,
            nat: false,
            backend_index: 0,
            generation: 0,
            counter_slot: 0,
            state: ConnState::TcpSyn,
            next_hop: ConnNextHop::Unknown,
        },
        last_seen: 0,
        synced: 0,
        prev: NIL,
        next: NIL,
    };
}

// Two cache lines since IPv6 addresses joined the key (one, 64 bytes, before).
const _: () = assert!(std::mem::size_of::<ConnNextHop>() == 8);
const _: () = assert!(std::mem::size_of::<Entry>() <= 128);

/// One worker's connection table, bounded at construction. See the module docs.
pub struct ConnTable {
    /// Slot numbers, found by the hash of the slot's key.
    index: SlotIndex,
    /// Slot numbers of NAT entries, found by the hash of their reply key. See the module docs.
    replies: SlotIndex,
    hasher: FlowHasher,
    entries: TableVec<Entry, HugePages>,
    /// Head of the free list through `Entry::next`.
    free: u32,
    len: usize,
    /// Per-state lists, oldest first.
    heads: [u32; ConnState::COUNT],
    tails: [u32; ConnState::COUNT],
    /// Entries on each state's list: kept by `push_back` and `unlink`, so the embryonic count
    /// (`TcpSyn`'s) costs an increment and a decrement, never a walk.
    lengths: [u32; ConnState::COUNT],
    /// Most entries a new embryonic (SYN-only) entry may join without replacing the oldest
    /// of them: the quota of [`ConnTable::set_embryonic_limit`].
    embryonic_limit: usize,
    epoch: Instant,
    /// Latest time seen, in seconds since `epoch`; never goes back, which keeps lists sorted.
    clock: u32,
    /// The instant `clock` was last computed from. A worker passes the same batch time for
    /// every frame of a burst, so the conversion (a `Timespec` subtraction and a division,
    /// about a hundred instructions) is done once a burst instead of twice a frame.
    ticked_at: Instant,
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl ConnTable {
    /// A table for at most `max_connections` entries (capped at `u32::MAX - 1`), with times
    /// counted from now. All memory is allocated here.
    pub fn new(max_connections: usize) -> Self {
        Self::with_epoch(max_connections, Instant::now())
    }

    /// A table whose clock starts at `epoch`; instants before it count as `epoch`.
    pub fn with_epoch(max_connections: usize, epoch: Instant) -> Self {
        let capacity = max_connections.min(NIL as usize - 1);
        let mut entries = TableVec::with_capacity_in(capacity, HugePages);
        entries.resize(capacity, Entry::VACANT);
        for (slot, entry) in entries.iter_mut().enumerate() {
            entry.next = if slot + 1 < capacity {
                slot as u32 + 1
            } else {
                NIL
            };
        }
        ConnTable {
            // Twice the entries, so tombstones are always cleared by an in-place rehash.
            index: SlotIndex::with_capacity(capacity),
            replies: SlotIndex::with_capacity(capacity),
            hasher: FlowHasher::random(),
            entries,
            free: if capacity > 0 { 0 } else { NIL },
            len: 0,
            heads: [NIL; ConnState::COUNT],
            tails: [NIL; ConnState::COUNT],
            lengths: [0; ConnState::COUNT],
            // Half the table, as `[director] embryonic_share = 0.5`.
            embryonic_limit: (capacity / 2).max(1),
            epoch,
            clock: 0,
            ticked_at: epoch,
        }
    }

    /// Bytes a table for `max_connections` entries allocates in [`ConnTable::new`] (its
    /// entries and both indexes, from the sizes of the real types), so that a configuration
    /// can be checked against the machine's memory before anything is allocated.
    pub fn memory_for(max_connections: usize) -> usize {
        let capacity = max_connections.min(NIL as usize - 1);
        capacity
            .saturating_mul(std::mem::size_of::<Entry>())
            .saturating_add(SlotIndex::memory_for(capacity).saturating_mul(2))
    }

    /// Sets the embryonic quota: at most `limit` entries in `TcpSyn` before a new one replaces
    /// the oldest of them (see the module docs). Clamped to 1..=capacity; default: half.
    pub fn set_embryonic_limit(&mut self, limit: usize) {
        self.embryonic_limit = limit.clamp(1, self.capacity().max(1));
    }

    /// Live entries in `TcpSyn`, the embryonic ones.
    pub fn embryonic(&self) -> usize {
        self.lengths[ConnState::TcpSyn as usize] as usize
    }

    /// Most entries it holds.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Live entries (some may be past their timeout until expiry or a lookup finds them).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry for `key`, expired or not, without touching it. For inspection and tests.
    pub fn get(&self, key: &FlowKey) -> Option<&Connection> {
        let slot = self.find(key)?;
        Some(&self.entries[slot as usize].connection)
    }

    /// Hints the CPU to load the index buckets a lookup of `key` (or of the reply tuple `key`)
    /// will read, so that a worker can start the cache misses of a frame it will process later;
    /// the returned hint lets [`ConnTable::prefetch_entry`] take the next step without hashing
    /// again.
    #[inline]
    pub fn prefetch(&self, key: &FlowKey) -> FlowHint {
        let hash = self.hasher.hash(key);
        self.index.prefetch(hash);
        if !self.replies.is_empty() {
            self.replies.prefetch(hash);
        }
        FlowHint(hash)
    }

    /// The second step after [`ConnTable::prefetch`], once its buckets have arrived: hints the
    /// CPU to load the entry they most likely point at (by either index).
    #[inline]
    pub fn prefetch_entry(&self, hint: FlowHint) {
        let slot = self.index.likely_slot(hint.0).or_else(|| {
            if self.replies.is_empty() {
                None
            } else {
                self.replies.likely_slot(hint.0)
            }
        });
        if let Some(entry) = slot.and_then(|slot| self.entries.get(slot as usize)) {
            crate::memory::prefetch(entry);
        }
    }

    /// The live entry for `key`. An entry past its timeout is removed (counted as expired) and
    /// not returned: the flow is new again, as after housekeeping.
    #[inline(always)]
    pub fn lookup(
        &mut self,
        key: &FlowKey,
        now: Instant,
        timeouts: &Timeouts,
        counters: &WorkerCounters,
        gauges: &[BackendCounters],
    ) -> Option<ConnId> {
        let slot = self.find(key)?;
        let now = self.tick(now);
        let entry = &self.entries[slot as usize];
        if is_expired(entry.last_seen, entry.connection.state, now, timeouts) {
            self.remove_slot(slot, gauges);
            bump(&counters.connections_expired, 1);
            return None;
        }
        Some(ConnId(slot))
    }

    /// The live NAT entry whose real server's replies have the 5-tuple `reply` (RS:rsport ->
    /// client), expiring it as [`ConnTable::lookup`] does.
    #[inline]
    pub fn lookup_reply(
        &mut self,
        reply: &FlowKey,
        now: Instant,
        timeouts: &Timeouts,
        counters: &WorkerCounters,
        gauges: &[BackendCounters],
    ) -> Option<ConnId> {
        if self.replies.is_empty() {
            return None;
        }
        let slot = self.find_reply(reply)?;
        let now = self.tick(now);
        let entry = &self.entries[slot as usize];
        if is_expired(entry.last_seen, entry.connection.state, now, timeouts) {
            self.remove_slot(slot, gauges);
            bump(&counters.connections_expired, 1);
            return None;
        }
        Some(ConnId(slot))
    }

    /// The NAT entry for the reply tuple `reply`, expired or not, without touching it, with its
    /// client -> VIP key. For inspection and tests.
    pub fn get_reply(&self, reply: &FlowKey) -> Option<(&FlowKey, &Connection)> {
        let entry = &self.entries[self.find_reply(reply)? as usize];
        Some((&entry.key, &entry.connection))
    }

    /// Entries reachable by their reply tuple (NAT entries, less any whose reply tuple a newer
    /// entry took over).
    pub fn reply_len(&self) -> usize {
        self.replies.len()
    }

    /// The entry behind a handle from [`ConnTable::lookup`] or [`ConnTable::insert`].
    #[inline]
    pub fn connection(&self, id: ConnId) -> &Connection {
        &self.entries[id.0 as usize].connection
    }

    /// The client -> VIP key of the entry behind a handle.
    #[inline]
    pub fn key(&self, id: ConnId) -> &FlowKey {
        &self.entries[id.0 as usize].key
    }

    /// Points an entry at another backend, or records where its backend is in a newer table.
    /// A changed `counter_slot` moves the entry's count from the old slot's gauge to the new's;
    /// a changed reply tuple (another backend or port, NAT switched on or off) moves its place in
    /// the reply index.
    #[inline]
    pub fn rebind(&mut self, id: ConnId, to: Binding, gauges: &[BackendCounters]) {
        let slot = id.0;
        let Entry {
            key,
            connection: old,
            ..
        } = self.entries[slot as usize];
        let connection = &mut self.entries[slot as usize].connection;
        // A tunnel's next hop is the route to its real server: another server needs another.
        // A service switched between NAT and TUN by a reload: the other kind of next hop (the
        // client side's for NAT, the server's route for TUN).
        if (!to.nat && to.backend != old.backend) || to.nat != old.nat {
            connection.next_hop = ConnNextHop::Unknown;
        }
        connection.backend = to.backend;
        connection.backend_port = to.backend_port;
        connection.nat = to.nat;
        connection.backend_index = to.backend_index as u32;
        connection.generation = to.generation;
        let new = *connection;
        if old.nat != new.nat || old.reply_key(&key) != new.reply_key(&key) {
            if old.nat {
                self.unindex_reply(slot, &old.reply_key(&key));
            }
            if new.nat {
                self.index_reply(slot);
            }
        }
        let connection = &mut self.entries[slot as usize].connection;
        let counter_slot = to.counter_slot as u32;
        if connection.counter_slot != counter_slot {
            let (old, state) = (connection.counter_slot, connection.state);
            connection.counter_slot = counter_slot;
            gauge_remove(gauges, old, state);
            gauge_add(gauges, counter_slot, state);
        }
    }

    /// Remembers the flow's next hop (see [`ConnNextHop`]).
    #[inline]
    pub fn set_next_hop(&mut self, id: ConnId, next_hop: ConnNextHop) {
        self.entries[id.0 as usize].connection.next_hop = next_hop;
    }

    /// Records a packet of the flow at `now`, moving it to `state` (and its count between the
    /// active and inactive gauges if that changes which one it is in).
    #[inline(always)]
    pub fn touch(
        &mut self,
        id: ConnId,
        state: ConnState,
        now: Instant,
        gauges: &[BackendCounters],
    ) {
        let now = self.tick(now);
        let slot = id.0;
        let entry = &self.entries[slot as usize];
        let (old, counter_slot) = (entry.connection.state, entry.connection.counter_slot);
        // Most packets: same state, same second, nothing to move.
        if old == state && entry.last_seen == now {
            return;
        }
        if old.is_active() != state.is_active() {
            gauge_remove(gauges, counter_slot, old);
            gauge_add(gauges, counter_slot, state);
        }
        // Lists are kept in last-seen order.
        self.unlink(slot);
        let entry = &mut self.entries[slot as usize];
        entry.connection.state = state;
        entry.last_seen = now;
        self.push_back(slot, state);
    }

    /// Whether the entry behind `id` was last exported (or created) at least `period` seconds
    /// before it was last seen: a flow still active on this director is due to be exported
    /// again, so the other directors' copies do not age out (see [`crate::sync`]).
    #[inline]
    pub fn sync_due(&self, id: ConnId, period: u32) -> bool {
        let entry = &self.entries[id.0 as usize];
        entry.last_seen.saturating_sub(entry.synced) >= period
    }

    /// Records that the entry behind `id` was exported as of its last packet.
    #[inline]
    pub fn mark_synced(&mut self, id: ConnId) {
        let entry = &mut self.entries[id.0 as usize];
        entry.synced = entry.last_seen;
    }

    /// Makes room for a new entry in `state` as [`ConnTable::insert`] would (see the module
    /// docs' SYN floods); whether there is room. The pipeline asks before it forwards a SYN, so
    /// that one the table refuses is dropped (its client retransmits), not forwarded untracked.
    #[inline]
    pub fn make_room(
        &mut self,
        state: ConnState,
        now: Instant,
        timeouts: &Timeouts,
        counters: &WorkerCounters,
        gauges: &[BackendCounters],
    ) -> bool {
        let embryonic = state == ConnState::TcpSyn;
        // Most new flows: a free slot and the quota not reached.
        if self.free != NIL && (!embryonic || self.embryonic() < self.embryonic_limit) {
            return true;
        }
        let now = self.tick(now);
        if embryonic {
            let oldest = self.heads[ConnState::TcpSyn as usize];
            if self.embryonic() >= self.embryonic_limit && oldest != NIL {
                bump(&counters.conn_embryonic_quota, 1);
                self.reclaim_slot(oldest, ConnState::TcpSyn, now, timeouts, counters, gauges);
                return true;
            }
            self.free != NIL || self.reclaim_one(now, timeouts, counters, gauges, true)
        } else {
            self.free != NIL || self.reclaim_one(now, timeouts, counters, gauges, false)
        }
    }

    /// Adds an entry for `key`, which must have none, making room as [`ConnTable::make_room`]
    /// does. Returns `None` when there is none (counted as `conn_table_full`): a capacity-0
    /// table, or an embryonic entry in a table full of entries it may not replace.
    pub fn insert(
        &mut self,
        key: FlowKey,
        connection: Connection,
        now: Instant,
        timeouts: &Timeouts,
        counters: &WorkerCounters,
        gauges: &[BackendCounters],
    ) -> Option<ConnId> {
        debug_assert!(self.find(&key).is_none(), "duplicate connection {key:?}");
        if !self.make_room(connection.state, now, timeouts, counters, gauges) {
            bump(&counters.conn_table_full, 1);
            return None;
        }
        let now = self.tick(now);
        let slot = self.free;
        let entry = &mut self.entries[slot as usize];
        self.free = entry.next;
        *entry = Entry {
            key,
            connection,
            last_seen: now,
            synced: now,
            prev: NIL,
            next: NIL,
        };
        self.push_back(slot, connection.state);
        self.len += 1;
        gauge_add(gauges, connection.counter_slot, connection.state);

        let hash = self.hasher.hash(&key);
        // Sized for every slot: cannot be full.
        self.index.insert(hash, slot);
        if connection.nat {
            self.index_reply(slot);
        }
        bump(&counters.connections_created, 1);
        Some(ConnId(slot))
    }

    /// Removes the entry for `key`; whether there was one.
    pub fn remove(&mut self, key: &FlowKey, gauges: &[BackendCounters]) -> bool {
        match self.find(key) {
            Some(slot) => {
                self.remove_slot(slot, gauges);
                true
            }
            None => false,
        }
    }

    /// Removes up to `budget` entries idle past their timeout, counting them; returns how many.
    /// Costs O(removed + states): only list heads are looked at.
    pub fn expire(
        &mut self,
        now: Instant,
        timeouts: &Timeouts,
        counters: &WorkerCounters,
        gauges: &[BackendCounters],
        budget: usize,
    ) -> usize {
        let now = self.tick(now);
        let mut removed = 0;
        for state in ConnState::ALL {
            while removed < budget {
                let head = self.heads[state as usize];
                if head == NIL
                    || !is_expired(self.entries[head as usize].last_seen, state, now, timeouts)
                {
                    break;
                }
                self.remove_slot(head, gauges);
                removed += 1;
            }
        }
        bump(&counters.connections_expired, removed as u64);
        removed
    }

    /// Every live entry, list by list (state by state), oldest first within a state. A walk over
    /// the whole table: for stats and tests, not the hot path.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &Connection)> + '_ {
        ConnState::ALL.into_iter().flat_map(move |state| {
            std::iter::successors(
                Some(self.heads[state as usize]).filter(|&slot| slot != NIL),
                move |&slot| Some(self.entries[slot as usize].next).filter(|&next| next != NIL),
            )
            .map(move |slot| {
                let entry = &self.entries[slot as usize];
                (&entry.key, &entry.connection)
            })
        })
    }

    /// Publishes the live entry count to the `connections_active` gauge.
    pub fn publish(&self, counters: &WorkerCounters) {
        counters
            .connections_active
            .store(self.len as u64, Ordering::Relaxed);
    }

    /// Frees the slot of the entry nearest its deadline; for an embryonic newcomer
    /// (`for_embryonic`) only among entries past their deadline, embryonic ones and closing or
    /// closed ones (a FIN or RST seen), so that no established or UDP flow with time left makes
    /// room for a SYN. False if there is no such entry. Looks at the 5 list heads only: each list is in
    /// deadline order.
    fn reclaim_one(
        &mut self,
        now: u32,
        timeouts: &Timeouts,
        counters: &WorkerCounters,
        gauges: &[BackendCounters],
        for_embryonic: bool,
    ) -> bool {
        let mut victim = None;
        let mut earliest = u64::MAX;
        for state in ConnState::ALL {
            let head = self.heads[state as usize];
            if head == NIL {
                continue;
            }
            let last_seen = self.entries[head as usize].last_seen;
            let replaceable = !for_embryonic
                || matches!(
                    state,
                    ConnState::TcpSyn | ConnState::TcpFinWait | ConnState::TcpClose
                )
                || is_expired(last_seen, state, now, timeouts);
            let deadline = u64::from(last_seen) + u64::from(timeout_secs(state, timeouts));
            if replaceable && deadline < earliest {
                earliest = deadline;
                victim = Some((head, state));
            }
        }
        let Some((slot, state)) = victim else {
            return false;
        };
        self.reclaim_slot(slot, state, now, timeouts, counters, gauges);
        true
    }

    /// Removes the entry in `slot` (in `state`) to make room, counted as expired or evicted.
    fn reclaim_slot(
        &mut self,
        slot: u32,
        state: ConnState,
        now: u32,
        timeouts: &Timeouts,
        counters: &WorkerCounters,
        gauges: &[BackendCounters],
    ) {
        if is_expired(self.entries[slot as usize].last_seen, state, now, timeouts) {
            bump(&counters.connections_expired, 1);
        } else {
            bump(&counters.connections_evicted, 1);
        }
        self.remove_slot(slot, gauges);
    }

    #[inline]
    fn find_reply(&self, reply: &FlowKey) -> Option<u32> {
        let hash = self.hasher.hash(reply);
        self.replies.find(hash, |slot| {
            let entry = &self.entries[slot as usize];
            entry.connection.reply_key(&entry.key) == *reply
        })
    }

    /// Makes the NAT entry in `slot` findable by its reply tuple. Should another live entry have
    /// the same one (the same client port to two VIPs mapped onto the same RS:rsport), the newer
    /// entry takes it over: replies can go to one of them only, and the newer flow is the one
    /// sending. The older one stays in the table, without replies, until it ends.
    fn index_reply(&mut self, slot: u32) {
        let entry = &self.entries[slot as usize];
        let reply = entry.connection.reply_key(&entry.key);
        let hash = self.hasher.hash(&reply);
        let entries = &self.entries;
        self.replies.upsert(hash, slot, |other| {
            let entry = &entries[other as usize];
            entry.connection.reply_key(&entry.key) == reply
        });
    }

    /// Removes `slot` from the reply index under its (old) reply tuple `reply`, unless a newer
    /// entry took that tuple over.
    fn unindex_reply(&mut self, slot: u32, reply: &FlowKey) {
        let hash = self.hasher.hash(reply);
        self.replies.remove(hash, slot);
    }

    #[inline]
    fn find(&self, key: &FlowKey) -> Option<u32> {
        let hash = self.hasher.hash(key);
        self.index
            .find(hash, |slot| self.entries[slot as usize].key == *key)
    }

    fn remove_slot(&mut self, slot: u32, gauges: &[BackendCounters]) {
        let Entry {
            key, connection, ..
        } = self.entries[slot as usize];
        gauge_remove(gauges, connection.counter_slot, connection.state);
        let hash = self.hasher.hash(&key);
        self.index.remove(hash, slot);
        if connection.nat {
            self.unindex_reply(slot, &connection.reply_key(&key));
        }
        self.unlink(slot);
        self.entries[slot as usize].next = self.free;
        self.free = slot;
        self.len -= 1;
    }

    /// Seconds since the epoch, never less than the last call's.
    #[inline]
    fn tick(&mut self, now: Instant) -> u32 {
        if now == self.ticked_at {
            return self.clock;
        }
        self.ticked_at = now;
        let seconds =
            u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX);
        self.clock = self.clock.max(seconds);
        self.clock
    }

    fn unlink(&mut self, slot: u32) {
        let Entry {
            prev,
            next,
            connection,
            ..
        } = self.entries[slot as usize];
        let list = connection.state as usize;
        self.lengths[list] -= 1;
        if prev == NIL {
            self.heads[list] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[list] = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }

    fn push_back(&mut self, slot: u32, state: ConnState) {
        let list = state as usize;
        self.lengths[list] += 1;
        let tail = self.tails[list];
        let entry = &mut self.entries[slot as usize];
        entry.prev = tail;
        entry.next = NIL;
        if tail == NIL {
            self.heads[list] = slot;
        } else {
            self.entries[tail as usize].next = slot;
        }
        self.tails[list] = slot;
    }
}

/// The gauge an entry in `state` is counted in.
#[inline]
fn gauge(counters: &BackendCounters, state: ConnState) -> &std::sync::atomic::AtomicU64 {
    if state.is_active() {
        &counters.active_connections
    } else {
        &counters.inactive_connections
    }
}

/// Counts one more entry in `state` for the backend with `counter_slot`.
#[inline]
fn gauge_add(gauges: &[BackendCounters], counter_slot: u32, state: ConnState) {
    if let Some(counters) = gauges.get(counter_slot as usize) {
        bump(gauge(counters, state), 1);
    }
}

/// Counts one entry in `state` fewer for the backend with `counter_slot`. The gauges are exact,
/// so this never underflows; debug builds check it.
#[inline]
fn gauge_remove(gauges: &[BackendCounters], counter_slot: u32, state: ConnState) {
    if let Some(counters) = gauges.get(counter_slot as usize) {
        let gauge = gauge(counters, state);
        let value = gauge.load(Ordering::Relaxed);
        debug_assert!(
            value.checked_sub(1).is_some(),
            "{} gauge of slot {counter_slot} underflows",
            if state.is_active() {
                "active"
            } else {
                "inactive"
            }
        );
        gauge.store(value.saturating_sub(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(n: u16) -> FlowKey {
        FlowKey {
            src_addr: Ipv4Addr::new(192, 0, 2, 2).into(),
            dst_addr: Ipv4Addr::new(192, 0, 2, 10).into(),
            src_port: n,
            dst_port: 80,
            protocol: Protocol::Tcp,
        }
    }

    fn connection(state: ConnState) -> Connection {
        Connection {
            backend: Ipv4Addr::new(10, 0, 0, 1).into(),
            backend_port: 80,
            nat: false,
            backend_index: 0,
            generation: 1,
            counter_slot: 0,
            state,
            next_hop: ConnNextHop::Unknown,
        }
    }

    /// (active, inactive) per counter slot.
    type Counts = Vec<(u64, u64)>;

    /// The counts as the gauges say and as a recount of the table says.
    fn gauges_and_recount(table: &ConnTable, gauges: &[BackendCounters]) -> (Counts, Counts) {
        let read = gauges
            .iter()
            .map(|counters| {
                (
                    counters.active_connections.load(Ordering::Relaxed),
                    counters.inactive_connections.load(Ordering::Relaxed),
                )
            })
            .collect();
        let mut recount = vec![(0, 0); gauges.len()];
        for (_, connection) in table.iter() {
            let counts = &mut recount[connection.counter_slot as usize];
            if connection.state.is_active() {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        (read, recount)
    }

    fn binding(
        backend: Ipv4Addr,
        backend_index: usize,
        counter_slot: usize,
        generation: u64,
    ) -> Binding {
        Binding {
            backend: std::net::IpAddr::V4(backend),
            backend_port: 80,
            backend_index,
            counter_slot,
            generation,
            nat: false,
        }
    }

    /// Every reply-index entry is a live NAT entry found under its reply tuple, and every live
    /// NAT entry's reply tuple finds a NAT entry with that tuple (itself or the newer one that
    /// took it over).
    fn assert_replies_consistent(table: &ConnTable) {
        let mut indexed = 0;
        for slot in table.replies.slots() {
            let entry = &table.entries[slot as usize];
            assert!(
                entry.connection.nat,
                "non-NAT slot {slot} in the reply index"
            );
            assert_eq!(
                table.find(&entry.key),
                Some(slot),
                "dead slot {slot} indexed"
            );
            let reply = entry.connection.reply_key(&entry.key);
            assert_eq!(table.find_reply(&reply), Some(slot));
            indexed += 1;
        }
        assert_eq!(indexed, table.reply_len());
        for (key, connection) in table.iter() {
            if connection.nat {
                let reply = connection.reply_key(key);
                let (_, owner) = table
                    .get_reply(&reply)
                    .expect("a NAT entry lost its replies");
                assert!(owner.nat);
                assert_eq!(owner.reply_key(key), reply);
            }
        }
    }

    #[test]
    fn reply_index_follows_nat_entries() {
        let start = Instant::now();
        let timeouts = Timeouts::default();
        let counters = WorkerCounters::default();
        let gauges = crate::counters::backend_counter_block(2);
        let mut table = ConnTable::with_epoch(4, start);
        let nat = Connection {
            nat: true,
            backend_port: 8080,
            ..connection(ConnState::TcpSyn)
        };
        let reply = |n: u16| FlowKey {
            src_addr: Ipv4Addr::new(10, 0, 0, 1).into(),
            dst_addr: Ipv4Addr::new(192, 0, 2, 2).into(),
            src_port: 8080,
            dst_port: n,
            protocol: Protocol::Tcp,
        };
        let id = table
            .insert(key(1), nat, start, &timeouts, &counters, &gauges)
            .unwrap();
        assert_eq!(nat.reply_key(&key(1)), reply(1));
        let found = table
            .lookup_reply(&reply(1), start, &timeouts, &counters, &gauges)
            .unwrap();
        assert_eq!(found, id);
        assert_eq!(table.key(found), &key(1));
        // Not NAT: not indexed.
        table
            .insert(
                key(2),
                connection(ConnState::TcpSyn),
                start,
                &timeouts,
                &counters,
                &gauges,
            )
            .unwrap();
        assert_eq!(table.reply_len(), 1);
        assert!(table.get_reply(&reply(2)).is_none());

        // Rebound to another port: found under the new tuple only.
        table.rebind(
            id,
            Binding {
                backend: Ipv4Addr::new(10, 0, 0, 1).into(),
                backend_port: 9090,
                backend_index: 0,
                counter_slot: 1,
                generation: 2,
                nat: true,
            },
            &gauges,
        );
        assert!(table.get_reply(&reply(1)).is_none());
        let moved = FlowKey {
            src_port: 9090,
            ..reply(1)
        };
        assert_eq!(table.get_reply(&moved).unwrap().0, &key(1));
        assert_replies_consistent(&table);

        // Expired: a reply finds nothing and the entry is gone.
        let later = secs(start, 1000);
        assert!(table
            .lookup_reply(&moved, later, &timeouts, &counters, &gauges)
            .is_none());
        assert!(table.get(&key(1)).is_none());
        assert_eq!(table.reply_len(), 0);

        // The same reply tuple from two flows (one client port to two VIPs onto one RS:rsport):
        // the newer takes it over; removing the older leaves the newer's in place.
        let other_vip = FlowKey {
            dst_addr: Ipv4Addr::new(192, 0, 2, 11).into(),
            ..key(1)
        };
        table
            .insert(key(1), nat, later, &timeouts, &counters, &gauges)
            .unwrap();
        table
            .insert(other_vip, nat, later, &timeouts, &counters, &gauges)
            .unwrap();
        assert_eq!(table.get_reply(&reply(1)).unwrap().0, &other_vip);
        assert_replies_consistent(&table);
        assert!(table.remove(&key(1), &gauges));
        assert_eq!(table.get_reply(&reply(1)).unwrap().0, &other_vip);
        assert!(table.remove(&other_vip, &gauges));
        assert_eq!(table.reply_len(), 0);
    }

    fn secs(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn lists_stay_consistent_through_churn() {
        let start = Instant::now();
        let timeouts = Timeouts::default();
        let counters = WorkerCounters::default();
        let gauges = crate::counters::backend_counter_block(4);
        let mut table = ConnTable::with_epoch(64, start);
        for round in 0..2000u64 {
            let n = (round * 7919 % 200) as u16;
            let now = secs(start, round / 10);
            if let Some(id) = table.lookup(&key(n), now, &timeouts, &counters, &gauges) {
                if round % 11 == 0 {
                    // Its backend left: rebound to another slot.
                    table.rebind(
                        id,
                        Binding {
                            backend: Ipv4Addr::new(10, 0, 0, 9).into(),
                            backend_port: 8080 + (round % 3) as u16,
                            backend_index: 0,
                            counter_slot: (round % 4) as usize,
                            generation: 2,
                            nat: round % 3 != 0,
                        },
                        &gauges,
                    );
                }
                let state = ConnState::ALL[(round % 5) as usize];
                table.touch(id, state, now, &gauges);
            } else {
                let connection = Connection {
                    counter_slot: (round % 3) as u32,
                    nat: round % 2 == 0,
                    // Few distinct reply tuples, so newer entries take some over.
                    backend_port: 8080 + (round % 2) as u16,
                    ..connection(ConnState::ALL[(round % 5) as usize])
                };
                let id = table.insert(key(n), connection, now, &timeouts, &counters, &gauges);
                assert!(
                    id.is_some() || connection.state == ConnState::TcpSyn,
                    "only a SYN-only entry may be refused"
                );
            }
            if round % 97 == 0 {
                table.expire(now, &timeouts, &counters, &gauges, usize::MAX);
            }
            if round % 131 == 0 {
                table.remove(&key(n), &gauges);
            }
            let (read, recount) = gauges_and_recount(&table, &gauges);
            assert_eq!(read, recount, "gauges drifted at round {round}");
            // Every live entry is on exactly one list, in last-seen order.
            let mut seen = 0;
            for state in ConnState::ALL {
                let mut slot = table.heads[state as usize];
                let mut prev = NIL;
                let mut listed = 0;
                let mut last = 0;
                while slot != NIL {
                    let entry = &table.entries[slot as usize];
                    assert_eq!(entry.prev, prev);
                    assert_eq!(entry.connection.state, state);
                    assert!(entry.last_seen >= last);
                    assert_eq!(table.find(&entry.key), Some(slot));
                    last = entry.last_seen;
                    prev = slot;
                    slot = entry.next;
                    seen += 1;
                    listed += 1;
                }
                assert_eq!(table.tails[state as usize], prev);
                assert_eq!(table.lengths[state as usize], listed);
            }
            assert_eq!(seen, table.len());
            assert!(table.len() <= 64);
            assert_replies_consistent(&table);
        }
    }

    #[test]
    fn zero_capacity_forwards_without_state() {
        let counters = WorkerCounters::default();
        let gauges = crate::counters::backend_counter_block(1);
        let mut table = ConnTable::new(0);
        let id = table.insert(
            key(1),
            connection(ConnState::Udp),
            Instant::now(),
            &Timeouts::default(),
            &counters,
            &gauges,
        );
        assert!(id.is_none());
        assert_eq!(counters.conn_table_full.load(Ordering::Relaxed), 1);
        assert_eq!(gauges_and_recount(&table, &gauges).0, vec![(0, 0)]);
    }

    #[test]
    fn gauges_follow_entries_exactly() {
        let start = Instant::now();
        let timeouts = Timeouts::default();
        let counters = WorkerCounters::default();
        let gauges = crate::counters::backend_counter_block(3);
        let mut table = ConnTable::with_epoch(2, start);
        let check = |table: &ConnTable, expected: &[(u64, u64)]| {
            let (read, recount) = gauges_and_recount(table, &gauges);
            assert_eq!(read, recount);
            assert_eq!(read, expected);
        };
        let syn = |slot| Connection {
            counter_slot: slot,
            ..connection(ConnState::TcpSyn)
        };

        // Create: inactive (SYN) on slot 0.
        let id = table
            .insert(key(1), syn(0), start, &timeouts, &counters, &gauges)
            .unwrap();
        check(&table, &[(0, 1), (0, 0), (0, 0)]);
        // Established: moves to active; FIN: back to inactive.
        table.touch(id, ConnState::TcpEstablished, start, &gauges);
        check(&table, &[(1, 0), (0, 0), (0, 0)]);
        table.touch(id, ConnState::TcpFinWait, start, &gauges);
        check(&table, &[(0, 1), (0, 0), (0, 0)]);
        table.touch(id, ConnState::TcpEstablished, start, &gauges);
        // Rebound to slot 1: leaves slot 0.
        table.rebind(id, binding(Ipv4Addr::new(10, 0, 0, 2), 1, 1, 2), &gauges);
        check(&table, &[(0, 0), (1, 0), (0, 0)]);
        // Same slot, new generation: nothing moves.
        table.rebind(id, binding(Ipv4Addr::new(10, 0, 0, 2), 0, 1, 3), &gauges);
        check(&table, &[(0, 0), (1, 0), (0, 0)]);
        // UDP counts active.
        table
            .insert(
                key(2),
                Connection {
                    counter_slot: 2,
                    ..connection(ConnState::Udp)
                },
                start,
                &timeouts,
                &counters,
                &gauges,
            )
            .unwrap();
        check(&table, &[(0, 0), (1, 0), (1, 0)]);
        // Full: a SYN may not evict either (established, UDP)...
        assert!(table
            .insert(
                key(3),
                syn(0),
                secs(start, 1),
                &timeouts,
                &counters,
                &gauges,
            )
            .is_none());
        assert_eq!(counters.conn_table_full.load(Ordering::Relaxed), 1);
        check(&table, &[(0, 0), (1, 0), (1, 0)]);
        // ... a third UDP flow evicts the one nearest its deadline (UDP, 300 s).
        table
            .insert(
                key(3),
                Connection {
                    counter_slot: 0,
                    ..connection(ConnState::Udp)
                },
                secs(start, 1),
                &timeouts,
                &counters,
                &gauges,
            )
            .unwrap();
        assert_eq!(counters.connections_evicted.load(Ordering::Relaxed), 1);
        check(&table, &[(1, 0), (1, 0), (0, 0)]);
        // Expiry on lookup, then by housekeeping.
        assert!(table
            .lookup(&key(3), secs(start, 400), &timeouts, &counters, &gauges)
            .is_none());
        check(&table, &[(0, 0), (1, 0), (0, 0)]);
        table.expire(secs(start, 10_000), &timeouts, &counters, &gauges, 10);
        check(&table, &[(0, 0), (0, 0), (0, 0)]);
        assert!(table.is_empty());
        // Removal.
        table
            .insert(
                key(4),
                syn(2),
                secs(start, 10_000),
                &timeouts,
                &counters,
                &gauges,
            )
            .unwrap();
        check(&table, &[(0, 0), (0, 0), (0, 1)]);
        assert!(table.remove(&key(4), &gauges));
        check(&table, &[(0, 0), (0, 0), (0, 0)]);
    }

    /// A flood source: spoofed, one per `n`, from TEST-NET-2.
    fn spoofed(n: u32) -> FlowKey {
        let [_, _, high, low] = n.to_be_bytes();
        FlowKey {
            src_addr: Ipv4Addr::new(198, 51, 100, high).into(),
            src_port: 1024 + u16::from(low) * 61 + (n >> 16) as u16,
            ..key(0)
        }
    }

    #[test]
    fn a_syn_flood_never_evicts_an_established_flow() {
        let start = Instant::now();
        let timeouts = Timeouts::default();
        let counters = WorkerCounters::default();
        let gauges = crate::counters::backend_counter_block(1);
        let mut table = ConnTable::with_epoch(64, start);
        for n in 0..64 {
            table
                .insert(
                    key(n),
                    connection(ConnState::TcpEstablished),
                    start,
                    &timeouts,
                    &counters,
                    &gauges,
                )
                .unwrap();
        }
        // Ten minutes of flood, the established flows idle and nearer their deadline than
        // any new SYN: every SYN is refused.
        for n in 0..10_000u32 {
            let now = secs(start, u64::from(n) * 600 / 10_000);
            let id = table.insert(
                spoofed(n),
                connection(ConnState::TcpSyn),
                now,
                &timeouts,
                &counters,
                &gauges,
            );
            assert!(id.is_none(), "SYN {n} took an established flow's place");
        }
        assert_eq!(counters.conn_table_full.load(Ordering::Relaxed), 10_000);
        assert_eq!(counters.connections_evicted.load(Ordering::Relaxed), 0);
        for n in 0..64 {
            assert_eq!(
                table.get(&key(n)).map(|c| c.state),
                Some(ConnState::TcpEstablished)
            );
        }
        // Past their timeout they are fair game: a SYN takes an expired flow's slot.
        let later = secs(start, 15 * 60 + 2);
        assert!(table
            .insert(
                spoofed(1),
                connection(ConnState::TcpSyn),
                later,
                &timeouts,
                &counters,
                &gauges
            )
            .is_some());
        assert_eq!(counters.connections_expired.load(Ordering::Relaxed), 1);
        assert_eq!(table.len(), 64);
    }

    #[test]
    fn the_embryonic_quota_replaces_the_oldest_syn_and_keeps_room_for_the_rest() {
        let start = Instant::now();
        let timeouts = Timeouts::default();
        let counters = WorkerCounters::default();
        let gauges = crate::counters::backend_counter_block(1);
        let mut table = ConnTable::with_epoch(64, start);
        assert_eq!(table.embryonic_limit, 32);
        table.set_embryonic_limit(16);
        let syn = connection(ConnState::TcpSyn);
        for n in 0..20 {
            table
                .insert(
                    key(n),
                    connection(ConnState::TcpEstablished),
                    start,
                    &timeouts,
                    &counters,
                    &gauges,
                )
                .unwrap();
        }
        let mut flood = 0u32;
        let mut flood_some = |table: &mut ConnTable, count: u32| {
            for _ in 0..count {
                let id = table.insert(spoofed(flood), syn, start, &timeouts, &counters, &gauges);
                assert!(id.is_some(), "a flood SYN refused while the quota allows");
                flood += 1;
                assert!(table.embryonic() <= 16);
            }
        };
        flood_some(&mut table, 1000);
        assert_eq!(table.embryonic(), 16);
        assert_eq!(
            table.len(),
            36,
            "the quota keeps 28 slots free of the flood"
        );
        // A real client's SYN mid-flood gets in, replacing the oldest spoofed one...
        let client = FlowKey {
            src_addr: Ipv4Addr::new(203, 0, 113, 7).into(),
            ..key(40_000)
        };
        let id = table
            .insert(client, syn, start, &timeouts, &counters, &gauges)
            .unwrap();
        // ... survives the flood for as long as fewer SYNs than the quota follow it, and its
        // ACK makes it established: then it survives any flood.
        flood_some(&mut table, 15);
        assert_eq!(table.get(&client).map(|c| c.state), Some(ConnState::TcpSyn));
        table.touch(id, ConnState::TcpEstablished, start, &gauges);
        flood_some(&mut table, 1000);
        assert_eq!(
            table.get(&client).map(|c| c.state),
            Some(ConnState::TcpEstablished)
        );
        for n in 0..20 {
            assert!(table.get(&key(n)).is_some(), "established flow {n} lost");
        }
        let quota = counters.conn_embryonic_quota.load(Ordering::Relaxed);
        assert_eq!(quota, 1000 - 16 + 1 + 15 + 1000 - 1);
        assert_eq!(counters.connections_evicted.load(Ordering::Relaxed), quota);
        let (read, recount) = gauges_and_recount(&table, &gauges);
        assert_eq!(read, recount);
    }

    #[test]
    fn in_a_full_table_a_syn_replaces_embryonic_or_closing_entries_only() {
        let start = Instant::now();
        let timeouts = Timeouts::default();
        let counters = WorkerCounters::default();
        let gauges = crate::counters::backend_counter_block(1);
        let mut table = ConnTable::with_epoch(4, start);
        table.set_embryonic_limit(4);
        let states = [
            ConnState::TcpEstablished,
            ConnState::TcpFinWait,
            ConnState::Udp,
            ConnState::TcpClose,
        ];
        for (n, state) in (0..).zip(states) {
            table
                .insert(
                    key(n),
                    connection(state),
                    start,
                    &timeouts,
                    &counters,
                    &gauges,
                )
                .unwrap();
        }
        let syn = connection(ConnState::TcpSyn);
        let at = secs(start, 1);
        // The closed one (a RST seen, 10 s) goes first, then the closing one (a FIN, 120 s):
        // nearest deadline first.
        table
            .insert(key(10), syn, at, &timeouts, &counters, &gauges)
            .unwrap();
        assert!(table.get(&key(3)).is_none());
        table
            .insert(key(11), syn, at, &timeouts, &counters, &gauges)
            .unwrap();
        assert!(table.get(&key(10)).is_none(), "the SYN's 60 s were nearest");
        let id = table
            .lookup(&key(11), at, &timeouts, &counters, &gauges)
            .unwrap();
        table.touch(id, ConnState::TcpEstablished, at, &gauges);
        table
            .insert(key(12), syn, at, &timeouts, &counters, &gauges)
            .unwrap();
        assert!(table.get(&key(1)).is_none(), "the FIN-wait entry was next");
        // Then only the embryonic one.
        table
            .insert(key(13), syn, at, &timeouts, &counters, &gauges)
            .unwrap();
        assert!(table.get(&key(12)).is_none());
        for n in [0, 2, 11] {
            assert!(table.get(&key(n)).is_some());
        }
        // A UDP flow still takes the place nearest its deadline, as before.
        table
            .insert(
                key(14),
                connection(ConnState::Udp),
                at,
                &timeouts,
                &counters,
                &gauges,
            )
            .unwrap();
        assert!(table.get(&key(13)).is_none(), "the SYN's 60 s were nearest");
        assert!(table
            .insert(key(15), syn, at, &timeouts, &counters, &gauges)
            .is_none());
        assert_eq!(counters.connections_evicted.load(Ordering::Relaxed), 5);
        assert_eq!(counters.conn_table_full.load(Ordering::Relaxed), 1);
    }
}
