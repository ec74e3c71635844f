//! The per-worker connection table: which real server each flow was given, so it keeps it.
//!
//! Each worker owns one [`ConnTable`] (RSS/ECMP steer a flow to one queue, so no sharing and no
//! locks). Entries are keyed by the client -> VIP 5-tuple ([`FlowKey`]) and remember the backend
//! by address, plus the index it had under the service-table generation it was resolved in, so
//! the common case (same generation) costs no search.
//!
//! # TCP states
//!
//! With direct routing the director sees only client -> server packets, so it tracks TCP the
//! way IPVS does for DR (its "input only" state table, reduced to the states that set a timeout):
//! SYN -> [`ConnState::TcpSyn`] (`tcp_syn` timeout), ACK -> [`ConnState::TcpEstablished`],
//! FIN -> [`ConnState::TcpFinWait`], RST -> [`ConnState::TcpClose`]; UDP flows are
//! [`ConnState::Udp`]. A spoofed SYN does not shorten an established entry.
//!
//! A SYN on a closing entry (FIN or RST seen) is a client reusing its source port for a new
//! connection ([`ConnState::reopened_by`]): the pipeline schedules it afresh and rebinds the
//! entry, which starts over in `TcpSyn`, instead of sending it to the old connection's server.
//! This is IPVS's `conn_reuse_mode` with both bits set (rescheduling on TIME_WAIT/CLOSE, and on
//! FIN_WAIT as seen with direct routing): without it, clients that cycle through source ports
//! keep landing on the servers their earlier connections had, and a server added by a reload
//! gets fewer new connections than the scheduler gives it. The client cannot send that SYN while
//! its old socket lives, so a real client moves nothing alive; a spoofed SYN can cut short a
//! half-closed flow (client FIN sent, server still sending), the trade IPVS makes with the same
//! setting. Persistence still applies: a rescheduled SYN asks its client's template first.
//!
//! A TCP segment without SYN that finds no entry (mid-flow pickup after a restart or failover,
//! or a flow ECMP moved here) is still scheduled, as Katran does; with Maglev it lands on the
//! server it had. It gets a *provisional* `TcpSyn` entry, which its next ACK confirms as
//! established, so a flood of spoofed ACKs costs what a SYN flood costs (60 s entries), not
//! 15-minute ones, while a real flow is pinned even if the scheduler changes. A RST with no entry
//! gets none (there is nothing left to track).
//!
//! # NAT: both directions
//!
//! With NAT the real server's replies come back through the director, so a NAT entry
//! ([`Connection::nat`]) is also indexed by its reply tuple RS:rsport -> client
//! ([`Connection::reply_key`]), and [`ConnTable::lookup_reply`] finds it from a reply. The reply
//! index is added with the entry, moved when [`ConnTable::rebind`] changes the real server or its
//! port, and removed with the entry, whatever removes it. Replies refresh the entry and move
//! its state only toward closing ([`ConnState::on_tcp_reply`]: RST, FIN); the client's segments
//! drive it as for DR. Two live entries with one reply tuple (a client using one source port
//! toward two VIPs mapped onto the same RS:rsport) cannot both get replies: the newer takes the
//! tuple over, and the older stays without replies until it ends.
//!
//! # Entries from other directors
//!
//! With state sync ([`crate::sync`]) an entry may also be created, refreshed or rebound by a
//! record another director exported: it goes through the same [`ConnTable::insert`],
//! [`ConnTable::touch`] and [`ConnTable::rebind`], so gauges and the reply index follow as for
//! any other. Each entry remembers when it was last exported ([`ConnTable::sync_due`]).
//!
//! # Memory and time
//!
//! Everything is allocated in [`ConnTable::new`] and nothing after; the counting-allocator test
//! (`tests/no_alloc.rs`) holds us to that.
//! - Entries live in a fixed slab of `max_connections` 56-byte slots with an intrusive free list.
//! - A [`SlotIndex`](crate::slot_index) finds a slot by 5-tuple hash: 8-byte buckets holding the
//!   slot number and 32 bits of the hash side by side, linear probing, at least 2 x
//!   `max_connections` buckets (a power of two), removal by backward shift (no tombstones, no
//!   rehash). A lookup of a flow not in cache reads one line of the index and then the entry:
//!   two cache misses where hashbrown's split control bytes and values made three, which on the
//!   pktgen benchmark (4096 flows in the default 262,144-slot table) cost the director about a
//!   tenth of its forwarding rate. The key is compared in the slab.
//! - The reply index is a second `SlotIndex` of the same size (slot numbers only, the reply
//!   tuple recomputed from the slab).
//! - The slab and both indexes live in 2 MiB-aligned mappings backed by transparent huge pages
//!   and populated up front ([`crate::memory`]): a few TLB entries cover the table, and no page
//!   is first touched on the packet path. Cost: 56 bytes per slot plus 16 to 32 per slot for
//!   each index, e.g. ~120 MB for a million.
//! - Each state has a doubly linked list of its entries in last-seen order (a packet moves its
//!   entry to the tail, at most once per second). All entries of a list share a timeout, so the
//!   heads are the next to expire: expiry pops heads, O(expired), and finding the entry nearest
//!   to its deadline when the table is full looks at 5 heads, O(1). Hence no O(n) sweep anywhere,
//!   and no need to rate-limit reclaiming under a flood. The price is two neighbour writes per
//!   relink.
//! - Times are whole seconds since the table's epoch (`u32`, 136 years); an entry expires when
//!   idle for *more* than its timeout in whole seconds, so never early and at most ~1 s late.
//!
//! # A full table, and SYN floods
//!
//! Inserting into a full table first removes an entry to make room: if it has expired, that is
//! ordinary expiry (`connections_expired`); if not, it is evicted (`connections_evicted`). Which
//! one depends on the newcomer (issue 16, IPVS's `drop_entry` defence in spirit):
//! - An *embryonic* entry (`TcpSyn`: a SYN, or a provisional mid-flow pickup) has a quota,
//!   [`ConnTable::set_embryonic_limit`] (`[director] embryonic_share` of the table, half by
//!   default). Past it, the new entry replaces the oldest embryonic one (`conn_embryonic_quota`),
//!   so a flood of spoofed SYNs cycles its own share of the table and leaves the rest free for
//!   everything else. A real client's SYN always gets in and keeps its entry until as many
//!   SYNs as the quota arrive after it, which at the default 131,072 entries is longer than any
//!   round trip at the rate a worker forwards; its ACK then makes it established.
//! - In a full table an embryonic entry may only take the place of an expired entry, an
//!   embryonic one or a closing or closed one (a FIN or RST seen), nearest its deadline first,
//!   never that of an established or UDP flow with time left: with none of those, it is refused ([`ConnTable::make_room`] false;
//!   the pipeline drops the SYN as `conn_table_full_syn` and its client retransmits). Hence an
//!   established flow's entry survives any SYN flood.
//! - Any other entry (UDP, a FIN seen first, a state-sync import) takes the place of the entry
//!   nearest its deadline, as before.
//!
//! Each choice looks at the 5 list heads only (each list is in deadline order), and the
//! embryonic count is the length of the `TcpSyn` list, kept by the list operations: no scan and
//! no extra cost per packet. The slot index is sized for every slot, so there is no probe window
//! to fill: room is a question of slots only. Forwarding never stops for other entries: only a
//! table built with capacity 0 forwards without state (`conn_table_full`).
//!
//! # Connection gauges
//!
//! The table keeps each backend's `active_connections` / `inactive_connections` gauges in this
//! worker's [`BackendCounters`] block exact, as IPVS keeps `ActiveConn` / `InActConn` for the
//! least-connection schedulers: an entry counts as active when TCP established or UDP, inactive
//! in any other TCP state. Every method that creates, removes or changes an entry takes the block
//! and moves the gauges with it: +1 on insert, a move between the two on a state change, a move to
//! another slot on rebind, -1 on expiry, eviction and removal. An entry remembers the
//! `counter_slot` it incremented, so its decrement lands on the same gauge whatever tables came
//! between (control keeps a backend's slot stable and reuses a slot only once its gauges are zero;
//! see [`crate::Backend::counter_slot`]). A slot beyond the block is not counted, consistently.
//!
//! # Where the code is
//!
//! - `key.rs`: [`FlowKey`] and its [`FlowAddr`] addresses, and the table's seeded hash.
//! - `state.rs`: [`ConnState`], the TCP/UDP state machine, and the timeouts in whole seconds.
//! - `connection.rs`: what an entry holds ([`Connection`], [`ConnNextHop`]) and what a rebind
//!   changes ([`Binding`]).
//! - `table.rs`: [`ConnTable`] (slab, lists, indexes, clock, gauges).
//!
//! What this module must not do: allocate after `new`, scan the table per packet, or know about
//! frames and services (the pipeline decides which backend; this remembers it).

mod connection;
mod key;
mod state;
mod table;

pub use connection::{Binding, ConnNextHop, Connection};
pub use key::{FlowAddr, FlowKey};
pub use state::ConnState;
pub use table::{ConnId, ConnTable, FlowHint};
