//! The per-frame pipeline: parse -> connection lookup or schedule -> rewrite -> verdict.
//!
//! [`Pipeline::process`] takes one received frame, in place in its buffer (an AF_XDP UMEM chunk,
//! with headroom in front of the frame), and either rewrites it for transmission
//! ([`Verdict::Tx`]: where the result starts, how long it is, which interface it leaves by) or
//! names why not ([`Verdict::Drop`]), having counted the drop: every exit path has a counter, as
//! in Katran. A dropped frame is left untouched.
//!
//! # Which frames arrive where
//!
//! The director has a client side and a server side ([`crate::service::Interfaces`]); with one
//! interface (DR, TUN, one-armed NAT) they are the same. The XDP classifier sends a worker:
//! - on the client side, frames for a service's (VIP, port, protocol), and ICMP errors
//!   addressed to a VIP (about replies the director forwarded, e.g. fragmentation needed);
//! - on the server side (NAT only), the real servers' TCP/UDP replies (source a NAT real
//!   server's address) and ICMP errors from the server side addressed to clients.
//!
//! What leaves where ([`Egress`]):
//! - DR: the frame re-addressed to the real server's MAC, out of [`Egress::Ingress`].
//! - TUN: the frame encapsulated (it starts [`crate::rewrite::tun::HEADROOM`] bytes earlier and
//!   is that much longer; [`crate::rewrite::tun::HEADROOM6`] toward an IPv6 real server), out of
//!   [`Egress::Ingress`] from the client side's address; or, when too big, an ICMP
//!   fragmentation-needed (IPv4 with DF set) or ICMPv6 packet too big to the client, out of
//!   [`Egress::Ingress`] (counted in `icmp_frag_needed_sent` or `icmp6_packet_too_big_sent`, no
//!   entry created).
//! - NAT inbound (client -> VIP:port): rewritten to RS:rsport, out of [`Egress::Peer`] (the
//!   server side) to the real server's MAC.
//! - NAT outbound (RS:rsport -> client, not for a VIP): found through the connection table's
//!   reply index, rewritten to VIP:port, out of [`Egress::Peer`] (the client side) to the client
//!   side's next hop (below).
//!
//! # Next hops
//!
//! Without [`crate::service::Routing`] in the table, NAT replies (and translated ICMP errors)
//! go to the client side's [`crate::service::Interface::next_hop_mac`] and TUN packets to the
//! real server's [`crate::service::Backend::mac`]. With it, the connection entry remembers a
//! next hop ([`crate::conntrack::ConnNextHop`]), found once per new connection:
//! - NAT, [`crate::service::NatReply::LastHop`] (the default): the source MAC of the client's
//!   frames, updated when a later client frame of the flow comes from another MAC;
//! - NAT, [`crate::service::NatReply::Route`]: the neighbour the route to the client gives;
//! - TUN: the neighbour the route to the real server gives.
//!
//! Lookups pick among ECMP next hops by the flow hash (the client's 5-tuple, both ways), so a
//! flow keeps its next hop. Per frame, a remembered neighbour costs one atomic load from the
//! neighbour array: a MAC change reaches established flows without touching their entries. An
//! unresolved or failed neighbour drops the frame as `NeighbourUnresolved`; a neighbour slot
//! released since ([`crate::fib::Neighbour::Gone`]), or an entry without a next hop (imported
//! by state sync: neighbour ids are local), looks the route up again; no route, or a route out
//! of another interface than the client side, drops the frame under the route's own reason
//! (`no_route`, `route_blackhole`, `route_unreachable`, `route_prohibit`, `route_not_served`,
//! `route_onlink_unresolved`). DR is unchanged: its real servers are on-link.
//! - ICMP errors: found by the flow they quote. Quoting a reply (VIP:port -> client), from the
//!   client side: forwarded to the flow's real server by its method (DR: MACs; TUN:
//!   encapsulated; NAT: translated to RS:rsport, [`crate::rewrite::icmp`], out of
//!   [`Egress::Peer`]), as IPVS does, so path MTU discovery works for all three. Quoting a
//!   client packet to a NAT real server (client -> RS:rsport), from the server side: translated
//!   to VIP:port, out of [`Egress::Peer`]. Quoting neither -> `IcmpNoConnection`. ICMPv6
//!   alike (destination unreachable, packet too big, time exceeded; NAT translation in
//!   [`crate::rewrite::icmpv6`]): a packet too big about a reply reaches the real server.
//!
//! IPv6 takes the same paths as IPv4 (the connection table, persistence with the service's
//! `netmask6` prefix, the rewrites choose by the parsed family); NAT never crosses families.
//!
//! The pipeline does not know which interface a frame came in on: a frame for a service is
//! inbound, any other TCP/UDP frame is looked up as a NAT reply. The connection table is per
//! worker, so a NAT flow's replies must reach the worker that forwarded its client's frames (the
//! worker owns a socket on each side, and the queues of both sides must map to workers alike).
//!
//! # Classification
//!
//! In order (the first failing check names the drop reason); steps 2 and 3 are
//! [`crate::parse::classify`]'s, which keeps what it learned in a [`crate::parse::Parsed`] view
//! that the later steps and the rewrites read instead of parsing the frame again:
//! 1. Buffer: `start..start + len` outside the buffer -> `Truncated`.
//! 2. Ethernet: shorter than 14 bytes -> `Truncated`; an 802.1Q/802.1ad tag -> `VlanTagged`;
//!    another EtherType than IPv4 or IPv6 -> `NotIp`; a version nibble other than the
//!    EtherType's -> `IpVersionMismatch`.
//! 3. IPv4 ([`Ipv4Packet::new_checked`]): short fixed header -> `Truncated`; IHL < 5 ->
//!    `BadIhl`; options or total length not fitting -> `Truncated`; then IHL > 5 ->
//!    `Ipv4Options`; MF or a fragment offset -> `Fragment` (no ports to classify by); ICMP ->
//!    the ICMP path above (not an error we translate -> `UnsupportedProtocol`, a short quote
//!    -> `Truncated`/`BadIhl`); neither TCP nor UDP -> `UnsupportedProtocol`; a short TCP/UDP
//!    header -> `Truncated`.
//!    IPv6 (RFC 8200): a payload length beyond the frame -> `Ipv6PayloadLength`; a jumbogram
//!    -> `Ipv6Jumbogram`; an IPv4-mapped source or destination (here or in an ICMPv6 error's
//!    quote) -> `Ipv6MappedAddress`; the extension headers walked (at most
//!    [`crate::parse::IPV6_MAX_EXTENSION_HEADERS`]): one running past the packet ->
//!    `Ipv6ExtensionTruncated`, more -> `Ipv6ExtensionChain`, a fragment header -> `Fragment`;
//!    ICMPv6 destination unreachable, packet too big and time exceeded -> the ICMP path (a
//!    quote shorter than an IPv6 header and 8 bytes -> `IcmpQuoteTruncated`; other ICMPv6,
//!    NDP included, -> `UnsupportedProtocol`: the classifier leaves it to the kernel); then
//!    TCP/UDP as for IPv4. Counted in `ipv6_rx` once parsed.
//! 4. Service by (destination address, port, protocol); none -> the NAT reply index; neither ->
//!    `NoService`.
//! 5. Backend: the flow's connection entry if it has one, found in the current table by address
//!    when the entry is from an older generation (a backend that is gone means reschedule, and
//!    so does a SYN on a closing entry: a new connection on a reused source port);
//!    otherwise the service's scheduler over the flow hash -> `NoBackend` when it has none; a
//!    backend whose MAC is unresolved -> `NeighbourUnresolved`. A flow keeps a drained
//!    (weight 0) backend it already has, as IPVS does.
//! 6. Rewrite per the service's forwarding method: NAT or TUN without interfaces in the table
//!    -> `UnsupportedForwarding` (also NAT to a real server of the other family); NAT with TTL
//!    (IPv6: hop limit) <= 1 -> `TtlExpired`; TUN too big without DF -> `TooBig`, with too
//!    little headroom -> `NoHeadroom`; a NAT reply whose client-side next
//!    hop is unresolved -> `NeighbourUnresolved`. Then, and only then, record the flow: a
//!    dropped frame never creates or refreshes an entry (so a SYN whose backend is unresolved is
//!    rescheduled on retransmission rather than pinned to it).
//!
//! # Persistence
//!
//! For a service with [`crate::service::Persistence`], a flow that needs a backend (no entry, or
//! its backend left the service) first asks the shared [`crate::persistence::PersistenceTable`]
//! for its client's template, keyed by (group, client address & netmask), so every port of a
//! service group and every worker agree. A live template whose backend (found by
//! `counter_slot`) is still in the service with a resolved MAC is followed, *even at weight 0*:
//! IPVS's default (`expire_quiescent_template = 0`) keeps persistent clients on a drained server
//! until their template expires. Otherwise (no template, one being written by another worker, or
//! one naming a backend that left the service or has no MAC) the scheduler picks, and the
//! template is stored, replacing a stale one. Every forwarded frame of a tracked flow of a
//! persistent service refreshes its client's template to `now + timeout` (a shared write at most
//! once a second per template) or re-creates it if it expired while the connection idled; a
//! template naming another backend is left alone. A dropped frame stores or refreshes nothing.
//! The same holds for all three forwarding methods.
//!
//! Which TCP segments create entries and how states move is documented in [`crate::conntrack`].
//! Counted per backend: client frames forwarded (`packets_in`, `bytes_in`, the received length;
//! ICMP errors forwarded to it included), NAT replies and ICMP errors from it sent back
//! (`packets_out`, `bytes_out`).
//!
//! # State sync
//!
//! With [`Pipeline::with_sync`], a forwarded frame that creates an entry, changes its state or
//! real server, or finds it due for a refresh pushes a [`crate::sync::SyncRecord`] to the
//! worker's export queue (for a persistent service, its client's template follows), and
//! [`Pipeline::drain_imports`] applies other directors' records between bursts: see
//! [`crate::sync`] for what is exported when and how an import resolves its service and real
//! server. A dropped frame exports nothing; an imported record is never exported again.
//!
//! # Where the code is
//!
//! - `shared.rs`: [`Pipeline`]'s state, [`Verdict`], [`Egress`], what every stage uses.
//! - `mod.rs` (here): processing a frame up to the service lookup (steps 1-4), prefetch hints
//!   and housekeeping.
//! - `inbound.rs`: a client's frame for a service: backend choice (entry, template, scheduler),
//!   rewrite, recording the flow (steps 5 and 6, persistence).
//! - `reply.rs`: a NAT real server's reply, back to the client.
//! - `next_hop.rs`: next hops from the routing view, for NAT replies and TUN.
//! - `icmp.rs`: ICMP errors about tracked flows, both ways.
//! - `forwarding.rs`: the DR and TUN rewrites as this worker does them.
//! - `sync.rs`: exporting entries and templates, importing other directors' records.
//!
//! What this module must not do: allocate, lock, log or panic per frame (`tests/no_alloc.rs`
//! and the random-frame property test hold it to that), or touch the rings.

mod forwarding;
mod icmp;
mod icmp_limit;
mod inbound;
mod next_hop;
mod reply;
mod shared;
mod sync;

pub use shared::{Egress, Pipeline, Verdict};

use std::time::Instant;

use crate::conntrack::{ConnTable, FlowHint};
use crate::counters::{bump, BackendCounters, DropReason, WorkerCounters};
use crate::parse::{self, Family};
use crate::service::ServiceTable;
use crate::sync::WorkerSync;
use shared::At;

/// Most entries one [`Pipeline::housekeeping`] call expires, so a mass expiry (every client of a
/// failed link timing out together) is spread over several calls instead of stalling the loop.
/// Expired entries left over are still reclaimed on lookup and when the table is full.
pub const EXPIRE_BUDGET: usize = 1 << 16;

impl Pipeline {
    /// A pipeline for worker `worker` on an interface whose MAC is `interface_mac` (the client
    /// side: DR frames leave from it), with a connection table of at most `max_connections`
    /// entries (allocated here, never grown).
    pub fn new(worker: usize, interface_mac: [u8; 6], max_connections: usize) -> Self {
        Pipeline {
            worker,
            interface_mac,
            connections: ConnTable::new(max_connections),
            // Workers start far apart in the identification space (RFC 6864: unique per source,
            // destination and protocol while fragments may be in flight).
            tunnel_ident: (worker as u16).wrapping_mul(0x2001),
            sync: WorkerSync::default(),
            sync_refresh: u32::MAX,
            icmp_limit: icmp_limit::IcmpErrorLimit::new(),
        }
    }

    /// This pipeline exporting to and importing from the given queues (see [`crate::sync`]).
    /// Without it (the default) the pipeline neither exports nor imports, at no cost.
    #[must_use]
    pub fn with_sync(mut self, sync: WorkerSync) -> Self {
        let refresh = sync.refresh;
        let seconds = refresh.as_secs() + u64::from(refresh.subsec_nanos() > 0);
        self.sync_refresh = u32::try_from(seconds).unwrap_or(u32::MAX).max(1);
        self.sync = sync;
        self
    }

    /// This pipeline with an embryonic quota of `limit` entries in its connection table
    /// (`[director] embryonic_share` of `max_connections`; see
    /// [`ConnTable::set_embryonic_limit`]). Without it, half the table.
    #[must_use]
    pub fn with_embryonic_limit(mut self, limit: usize) -> Self {
        self.connections.set_embryonic_limit(limit);
        self
    }

    /// The worker index this pipeline counts backend traffic under.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The connection table, for inspection (stats, tests).
    pub fn connections(&self) -> &ConnTable {
        &self.connections
    }

    /// Runs the frame at `buffer[start..start + len]` through the pipeline, rewriting it in
    /// place. `buffer` is the whole UMEM chunk: TUN encapsulation writes into the bytes before
    /// `start` (at least [`crate::rewrite::tun::HEADROOM6`] are needed, else `NoHeadroom`).
    pub fn process(
        &mut self,
        buffer: &mut [u8],
        start: usize,
        len: usize,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> Verdict {
        let at = At { start, len };
        let result = match start.checked_add(len) {
            Some(end) if end <= buffer.len() => self.forward(buffer, at, table, now, counters),
            _ => Err(DropReason::Truncated),
        };
        result.unwrap_or_else(|reason| {
            counters.count_drop(reason);
            Verdict::Drop(reason)
        })
    }

    /// Starts loading what processing `frame` will look up first (its connection's index
    /// buckets), so the worker can overlap those cache misses with the frames before it. Reads
    /// only the flow key ([`parse::flow_key_hint`]); a frame without one gets no hint. The hint
    /// is for [`Pipeline::prefetch_entry`], a few frames later.
    #[inline]
    pub fn prefetch(&self, frame: &[u8]) -> Option<FlowHint> {
        parse::flow_key_hint(frame).map(|key| self.connections.prefetch(&key))
    }

    /// Starts loading the connection entry the buckets [`Pipeline::prefetch`] asked for point
    /// at.
    #[inline]
    pub fn prefetch_entry(&self, hint: FlowHint) {
        self.connections.prefetch_entry(hint);
    }

    /// Expires idle connections; called by the worker about once a second, not per packet.
    pub fn housekeeping(&mut self, table: &ServiceTable, now: Instant, counters: &WorkerCounters) {
        let gauges = self.gauges(table);
        self.connections
            .expire(now, &table.timeouts, counters, gauges, EXPIRE_BUDGET);
        self.connections.publish(counters);
    }

    // Always: left to itself LLVM keeps it out of line since IPv6 grew it, and the call (the
    // `Result` through memory, the spills) cost an IPv4 frame about 30 instructions.
    #[inline(always)]
    fn forward(
        &mut self,
        buffer: &mut [u8],
        at: At,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> Result<Verdict, DropReason> {
        let parsed = parse::classify(&buffer[at.start..at.end()])?;
        if parsed.family() == Family::Ipv6 {
            bump(&counters.ipv6_rx, 1);
        }
        // By reference: a copy of the flow out of `parsed` was a 48-byte move per frame.
        let Some(flow) = parsed.flow() else {
            return self.icmp(buffer, at, &parsed, parsed.quoted(), table, now, counters);
        };
        match table.lookup_flow(flow.key.dst_addr, flow.key.dst_port, flow.key.protocol) {
            Some((_, service)) => {
                self.inbound(buffer, at, &parsed, flow, service, table, now, counters)
            }
            None => self.reply(buffer, at, &parsed, flow, table, now, counters),
        }
    }

    /// This worker's backend counter block in `table` (empty if it has none).
    #[inline]
    fn gauges<'t>(&self, table: &'t ServiceTable) -> &'t [BackendCounters] {
        table
            .backend_counters
            .get(self.worker)
            .map_or(&[], |block| &block[..])
    }
}
