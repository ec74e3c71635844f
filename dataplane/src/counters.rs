//! Counters the hot path bumps and control reads.
//!
//! Every counter has exactly one writer (its worker), so a bump is a relaxed load and store, not
//! a locked read-modify-write; readers on other cores see a value at most one batch old. Blocks
//! are cache-line aligned so two workers never write the same line.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds `amount` to a counter this thread alone writes.
#[inline]
pub fn bump(counter: &AtomicU64, amount: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(amount),
        Ordering::Relaxed,
    );
}

/// Declares [`DropReason`] and everything listed per reason (`COUNT`, `ALL`, `name()`) from
/// one list, so a new reason is one line (with its doc) and no list can miss it.
macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])+ $variant:ident => $name:literal, )+) => {
        /// Why the data plane dropped a frame. Each reason has its own counter in
        /// [`WorkerCounters`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum DropReason {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl DropReason {
            /// Number of reasons.
            pub const COUNT: usize = [$($name),+].len();
            /// All reasons, in counter order.
            pub const ALL: [DropReason; Self::COUNT] = [$(DropReason::$variant),+];

            /// Stable snake_case name, as the stats socket and lbstat show it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)+
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the headers it claims (Ethernet, IPv4 total length, TCP/UDP header).
    Truncated => "truncated",
    /// Neither IPv4 nor IPv6 (the XDP classifier passes these to the kernel; seen here only if
    /// it did not).
    NotIp => "not_ip",
    /// Carries an 802.1Q/802.1ad tag.
    VlanTagged => "vlan_tagged",
    /// IPv4 header length below 5 words.
    BadIhl => "bad_ihl",
    /// IPv4 options present (header longer than 20 bytes).
    Ipv4Options => "ipv4_options",
    /// A fragment: no ports to classify by.
    Fragment => "fragment",
    /// Neither TCP nor UDP.
    UnsupportedProtocol => "unsupported_protocol",
    /// No service for its (VIP, port, protocol), e.g. one removed while frames were in flight;
    /// nor is it a real server's reply of a known NAT connection (one that expired, or a stray
    /// frame from the server side).
    NoService => "no_service",
    /// The service has no real server with weight > 0.
    NoBackend => "no_backend",
    /// The chosen real server's MAC address is not yet known.
    NeighbourUnresolved => "neighbour_unresolved",
    /// The TX ring had no room.
    TxRingFull => "tx_ring_full",
    /// A NAT-forwarded packet arrived with TTL (IPv6: hop limit) <= 1: a router must not forward
    /// it (RFC 1812 5.3.1, RFC 8200 3). Counted and dropped; no ICMP time exceeded is sent.
    TtlExpired => "ttl_expired",
    /// Encapsulated for LVS-TUN it would exceed the egress MTU, and the inner packet allows
    /// fragmentation (IPv4, DF clear), or is IPv6 no bigger than the 1280-byte minimum a packet
    /// too big may ask for. IPVS would fragment the outer packet; this data plane works one
    /// frame in, one frame out, so it counts and drops it. (Otherwise the client gets an ICMP
    /// fragmentation-needed or ICMPv6 packet too big instead and nothing is dropped.)
    TooBig => "too_big",
    /// The frame had less headroom in front of it than LVS-TUN encapsulation needs
    /// ([`crate::rewrite::tun::HEADROOM`] for IPv4, [`crate::rewrite::tun::HEADROOM6`] for
    /// IPv6): a worker set-up bug, never the sender's doing.
    NoHeadroom => "no_headroom",
    /// The service forwards by NAT or TUN but the service table has no
    /// [`crate::service::Interfaces`] to do it with (control did not set them), or by NAT to a
    /// real server of the other address family (configuration refuses such a service).
    UnsupportedForwarding => "unsupported_forwarding",
    /// An ICMP error (destination unreachable, time exceeded) quoting a flow the connection
    /// table does not know, in either direction: nothing to translate or forward it for.
    IcmpNoConnection => "icmp_no_connection",
    /// No route covers the next hop's destination (the client of a NAT reply in route mode, or
    /// a TUN real server): [`crate::fib::NoRouteKind::NoMatch`].
    NoRoute => "no_route",
    /// The route to the destination is a blackhole.
    RouteBlackhole => "route_blackhole",
    /// The route to the destination is unreachable.
    RouteUnreachable => "route_unreachable",
    /// The route to the destination is prohibit.
    RouteProhibit => "route_prohibit",
    /// The route to the destination leaves by an interface other than the one the frame would
    /// leave by (the client side).
    RouteNotServed => "route_not_served",
    /// The destination is on a connected prefix but control has no neighbour slot for it yet.
    RouteOnlinkUnresolved => "route_onlink_unresolved",
    /// The IP version disagrees with the EtherType: an IPv6 header under 0x0800, or anything
    /// but version 6 under 0x86DD (or such a header quoted by an ICMPv6 error).
    IpVersionMismatch => "ip_version_mismatch",
    /// An IPv6 extension header runs past the packet.
    Ipv6ExtensionTruncated => "ipv6_extension_truncated",
    /// More IPv6 extension headers than the parser walks (`IPV6_MAX_EXTENSION_HEADERS`).
    Ipv6ExtensionChain => "ipv6_extension_chain",
    /// An IPv6 jumbogram (payload length 0 with hop-by-hop options, RFC 2675).
    Ipv6Jumbogram => "ipv6_jumbogram",
    /// The IPv6 payload length claims more than the frame holds.
    Ipv6PayloadLength => "ipv6_payload_length",
    /// An ICMPv6 error quotes less than a whole IPv6 header and 8 bytes.
    IcmpQuoteTruncated => "icmp_quote_truncated",
    /// An IPv6 header with an IPv4-mapped source or destination (`::ffff:0:0/96`), which
    /// RFC 4942 2.2 advises dropping on the wire: it would pose as an IPv4 flow.
    Ipv6MappedAddress => "ipv6_mapped_address",
    /// A new flow's SYN (or a segment that would get a provisional embryonic entry) refused:
    /// the connection table is full of established, closing and UDP flows, none past its
    /// deadline, and a SYN-only entry may not evict them (issue 16). The client retransmits.
    ConnTableFullSyn => "conn_table_full_syn",
    /// A new flow refused because every real server with weight > 0 is above its
    /// `max_connections` threshold (and not yet back below `min_connections`).
    AllServersOverloaded => "all_servers_overloaded",
    /// A client frame too big to tunnel whose ICMP fragmentation-needed or ICMPv6 packet too
    /// big the director did not send, its client's token bucket empty (one a second, a burst
    /// of six, as Linux's `icmp_ratelimit`); dropped without an answer.
    IcmpErrorsRateLimited => "icmp_errors_rate_limited",
}

/// Declares [`WorkerCounters`] with its named event counters (those lbstat lists under a
/// worker, by field name) from one list, and the visitor that reads them all out, so a new
/// counter is one field here and shows up on the stats socket, in lbstat and in Prometheus
/// without another list to keep.
macro_rules! worker_counters {
    ($( $(#[doc = $doc:literal])+ $field:ident, )+) => {
        /// One worker's counters.
        #[derive(Debug, Default)]
        #[repr(align(64))]
        pub struct WorkerCounters {
            /// Frames taken from the RX ring.
            pub rx_packets: AtomicU64,
            /// Bytes taken from the RX ring.
            pub rx_bytes: AtomicU64,
            /// Frames put on the TX ring.
            pub tx_packets: AtomicU64,
            /// Bytes put on the TX ring.
            pub tx_bytes: AtomicU64,
            /// Drops, indexed by `DropReason as usize`.
            pub drops: [AtomicU64; DropReason::COUNT],
            $( $(#[doc = $doc])+ pub $field: AtomicU64, )+
            /// Generation of the service table this worker is using: control waits for every
            /// worker to reach a published generation before it changes what the classifier
            /// sends them.
            pub table_generation: AtomicU64,
            /// The kernel's XDP_STATISTICS for this worker's socket, copied once a second.
            pub kernel: KernelXskCounters,
        }

        impl WorkerCounters {
            /// Calls `visit` with each named counter (every one but packets, bytes, drops and
            /// the table generation) and its name as the stats socket and lbstat show it: the
            /// field's name, then the kernel's socket counters ([`KernelXskCounters`]).
            pub fn for_each_named(&self, mut visit: impl FnMut(&'static str, &AtomicU64)) {
                $( visit(stringify!($field), &self.$field); )+
                self.kernel.for_each_named(visit);
            }
        }
    };
}

worker_counters! {
    /// IPv6 frames the pipeline parsed (a malformed one is counted under its drop reason
    /// instead): the IPv6 share of `rx_packets`. One relaxed add on the IPv6 path only; a
    /// per-family TX count cost the IPv4 path about 60 instructions a frame (callgrind), so
    /// there is none.
    ipv6_rx,
    /// Connection entries created.
    connections_created,
    /// Connection entries removed after their idle timeout.
    connections_expired,
    /// Live entries evicted to make room in a full table.
    connections_evicted,
    /// Frames forwarded without an entry because the table was full and nothing could be evicted.
    conn_table_full,
    /// Embryonic (SYN-only) entries that replaced the oldest embryonic entry because the
    /// embryonic quota (`[director] embryonic_share` of the table) was reached: the mark of a
    /// SYN flood (each is also counted in `connections_evicted` or `connections_expired`).
    conn_embryonic_quota,
    /// SYNs that found a closing entry for their flow (the client reused a source port) and
    /// were scheduled as new connections, the entry rebound to the scheduler's pick.
    connections_reopened,
    /// Live entries in this worker's connection table (a gauge, set by housekeeping).
    connections_active,
    /// New flows of persistent services sent where a live template said.
    persistence_hits,
    /// Persistence templates stored: new clients, expired ones renewed, stale ones replaced.
    persistence_inserts,
    /// Times a template could not be stored because its neighbourhood in the shared table was
    /// full of live templates (or the table has capacity 0); the frame was forwarded regardless,
    /// its client unpinned. Counted per attempt: a new flow, or a frame of a tracked flow whose
    /// template expired and could not be re-created.
    persistence_table_full,
    /// Connection and template records pushed to this worker's sync export queue (state sync
    /// enabled, see [`crate::sync`]).
    sync_records_exported,
    /// Records that found the export queue full and were not exported (the sender fell behind).
    sync_records_dropped,
    /// Records from other directors applied to this worker's connection table or to the shared
    /// persistence templates.
    sync_records_imported,
    /// Records from other directors skipped because this director has no such service, real
    /// server (address and port) or forwarding method for them.
    sync_records_unknown,
    /// Loop iterations that found the fill ring with no room to give frames back.
    fill_ring_starved,
    /// TX wake-up syscalls made.
    tx_wakeups,
    /// Bursts a port's RX ring was left alone because a TX ring the frames could leave by had
    /// no room (back-pressure: the frames wait on the RX ring, or the kernel drops them there and
    /// counts them in `xsk_rx_ring_full`, instead of being processed and then dropped here).
    rx_deferred,
    /// Times an adaptive worker slept in poll(2) for lack of traffic.
    idle_sleeps,
    /// ICMP fragmentation-needed errors sent back to clients whose packet was too big to tunnel
    /// (LVS-TUN, DF set); each one is a client frame answered instead of forwarded.
    icmp_frag_needed_sent,
    /// ICMPv6 packet too big errors sent back to IPv6 clients whose packet was too big to tunnel
    /// (LVS-TUN); each one is a client frame answered instead of forwarded.
    icmp6_packet_too_big_sent,
    /// Frames the worker could not read because a descriptor pointed outside the UMEM.
    bad_descriptors,
    /// UMEM frames on the worker's free list (a gauge, set by housekeeping, as the four
    /// `frames_*` below: [`crate::xsk::FrameAccounting`]). At idle, `frames_free` +
    /// `frames_in_fill` is every frame; a smaller sum after a load than before is a leak.
    frames_free,
    /// UMEM frames lent to the kernel on the fill rings (a gauge).
    frames_in_fill,
    /// UMEM frames on the TX rings, not yet completed (a gauge).
    frames_in_tx,
    /// UMEM frames received and not yet transmitted or recycled (a gauge; 0 between batches).
    frames_in_hand,
}

/// Declares [`KernelXskCounters`] and its visitor from one list of fields.
macro_rules! kernel_xsk_counters {
    ($( $(#[doc = $doc:literal])+ $field:ident, )+) => {
        /// The kernel's `XDP_STATISTICS` for one socket, as last read by its worker.
        #[derive(Debug, Default)]
        pub struct KernelXskCounters {
            $( $(#[doc = $doc])+ pub $field: AtomicU64, )+
        }

        impl KernelXskCounters {
            /// Calls `visit` with each counter and its name as the stats socket shows it: `xsk_`
            /// and the field's name.
            pub fn for_each_named(&self, mut visit: impl FnMut(&'static str, &AtomicU64)) {
                $( visit(concat!("xsk_", stringify!($field)), &self.$field); )+
            }
        }
    };
}

kernel_xsk_counters! {
    /// Frames the kernel dropped (e.g. no fill-ring frame).
    rx_dropped,
    /// Invalid RX descriptors.
    rx_invalid_descs,
    /// Invalid TX descriptors.
    tx_invalid_descs,
    /// Frames dropped because the RX ring was full.
    rx_ring_full,
    /// Times the fill ring was empty when the kernel needed a frame.
    rx_fill_ring_empty,
    /// Times the TX ring was empty when the kernel looked.
    tx_ring_empty,
}

impl WorkerCounters {
    /// Counts one dropped frame.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        bump(&self.drops[reason as usize], 1);
    }

    /// Drops so far for this reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }
}

/// One worker's counters for one real server.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct BackendCounters {
    /// New flows scheduled to it.
    pub connections_total: AtomicU64,
    /// Frames forwarded to it.
    pub packets_in: AtomicU64,
    /// Bytes forwarded to it.
    pub bytes_in: AtomicU64,
    /// Frames from it forwarded back to clients (NAT replies and the ICMP errors it sends about
    /// them; other methods never see replies).
    pub packets_out: AtomicU64,
    /// Bytes of those frames.
    pub bytes_out: AtomicU64,
    /// This worker's connection entries to it in an active state (TCP established, UDP), as
    /// IPVS counts `ActiveConn`. A gauge the conntrack keeps.
    pub active_connections: AtomicU64,
    /// This worker's connection entries to it in any other TCP state (SYN, FIN-wait, close), as
    /// IPVS counts `InActConn`. A gauge the conntrack keeps.
    pub inactive_connections: AtomicU64,
    /// 1 while this worker sees the real server over its connection threshold
    /// ([`crate::service::Thresholds`]), else 0: the hysteresis' memory, kept per worker so
    /// that it has one writer like every other counter here, and across reloads with the block.
    pub over_threshold: AtomicU64,
}

/// Allocates one block of `backends` counters, for one worker.
pub fn backend_counter_block(backends: usize) -> std::sync::Arc<[BackendCounters]> {
    (0..backends).map(|_| BackendCounters::default()).collect()
}

const _: () = assert!(std::mem::size_of::<BackendCounters>() == 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_unique_and_snake_case() {
        let counters = WorkerCounters::default();
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|reason| reason.name()).collect();
        counters.for_each_named(|name, _| names.push(name));
        for name in &names {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name twice");
    }

    #[test]
    fn the_visitor_reads_each_field() {
        let counters = WorkerCounters::default();
        bump(&counters.tx_wakeups, 3);
        bump(&counters.kernel.rx_fill_ring_empty, 5);
        let mut seen = Vec::new();
        counters.for_each_named(|name, counter| {
            seen.push((name, counter.load(Ordering::Relaxed)));
        });
        assert!(seen.contains(&("tx_wakeups", 3)), "{seen:?}");
        assert!(seen.contains(&("xsk_rx_fill_ring_empty", 5)), "{seen:?}");
        assert_eq!(seen.len(), 26 + 6);
    }
}
