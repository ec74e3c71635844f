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

/// Why the data plane dropped a frame. Each reason has its own counter in [`WorkerCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than the headers it claims (Ethernet, IPv4 total length, TCP/UDP header).
    Truncated,
    /// Not IPv4 (the XDP classifier passes these to the kernel; seen here only if it did not).
    NotIpv4,
    /// Carries an 802.1Q/802.1ad tag.
    VlanTagged,
    /// IPv4 header length below 5 words.
    BadIhl,
    /// IPv4 options present (header longer than 20 bytes).
    Ipv4Options,
    /// A fragment: no ports to classify by.
    Fragment,
    /// Neither TCP nor UDP.
    UnsupportedProtocol,
    /// No service for its (VIP, port, protocol), e.g. one removed while frames were in flight;
    /// nor is it a real server's reply of a known NAT connection (one that expired, or a stray
    /// frame from the server side).
    NoService,
    /// The service has no real server with weight > 0.
    NoBackend,
    /// The chosen real server's MAC address is not yet known.
    NeighbourUnresolved,
    /// The TX ring had no room.
    TxRingFull,
    /// A NAT-forwarded packet arrived with TTL <= 1: a router must not forward it (RFC 1812
    /// 5.3.1). Counted and dropped; no ICMP time exceeded is sent.
    TtlExpired,
    /// Encapsulated for LVS-TUN it would exceed the egress MTU, and the inner packet allows
    /// fragmentation (DF clear). IPVS would fragment the outer packet; this data plane works one
    /// frame in, one frame out, so it counts and drops it. (With DF set the client gets an ICMP
    /// fragmentation-needed instead and nothing is dropped.)
    TooBig,
    /// The frame had less headroom in front of it than LVS-TUN encapsulation needs
    /// ([`crate::rewrite::tun::HEADROOM`]): a worker set-up bug, never the sender's doing.
    NoHeadroom,
    /// The service forwards by NAT or TUN but the service table has no
    /// [`crate::service::Interfaces`] to do it with (control did not set them).
    UnsupportedForwarding,
    /// An ICMP error (destination unreachable, time exceeded) quoting a flow the connection
    /// table does not know, in either direction: nothing to translate or forward it for.
    IcmpNoConnection,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 16;
    /// All reasons, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Truncated,
        DropReason::NotIpv4,
        DropReason::VlanTagged,
        DropReason::BadIhl,
        DropReason::Ipv4Options,
        DropReason::Fragment,
        DropReason::UnsupportedProtocol,
        DropReason::NoService,
        DropReason::NoBackend,
        DropReason::NeighbourUnresolved,
        DropReason::TxRingFull,
        DropReason::TtlExpired,
        DropReason::TooBig,
        DropReason::NoHeadroom,
        DropReason::UnsupportedForwarding,
        DropReason::IcmpNoConnection,
    ];

    /// Stable snake_case name, as the stats socket and lbstat show it.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::BadIhl => "bad_ihl",
            DropReason::Ipv4Options => "ipv4_options",
            DropReason::Fragment => "fragment",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::NoService => "no_service",
            DropReason::NoBackend => "no_backend",
            DropReason::NeighbourUnresolved => "neighbour_unresolved",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::TooBig => "too_big",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::UnsupportedForwarding => "unsupported_forwarding",
            DropReason::IcmpNoConnection => "icmp_no_connection",
        }
    }
}

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
    /// Connection entries created.
    pub connections_created: AtomicU64,
    /// Connection entries removed after their idle timeout.
    pub connections_expired: AtomicU64,
    /// Live entries evicted to make room in a full table.
    pub connections_evicted: AtomicU64,
    /// Frames forwarded without an entry because the table was full and nothing could be evicted.
    pub conn_table_full: AtomicU64,
    /// SYNs that found a closing entry for their flow (the client reused a source port) and
    /// were scheduled as new connections, the entry rebound to the scheduler's pick.
    pub connections_reopened: AtomicU64,
    /// Live entries in this worker's connection table (a gauge, set by housekeeping).
    pub connections_active: AtomicU64,
    /// New flows of persistent services sent where a live template said.
    pub persistence_hits: AtomicU64,
    /// Persistence templates stored: new clients, expired ones renewed, stale ones replaced.
    pub persistence_inserts: AtomicU64,
    /// Times a template could not be stored because its neighbourhood in the shared table was
    /// full of live templates (or the table has capacity 0); the frame was forwarded regardless,
    /// its client unpinned. Counted per attempt: a new flow, or a frame of a tracked flow whose
    /// template expired and could not be re-created.
    pub persistence_table_full: AtomicU64,
    /// Connection and template records pushed to this worker's sync export queue (state sync
    /// enabled, see [`crate::sync`]).
    pub sync_records_exported: AtomicU64,
    /// Records that found the export queue full and were not exported (the sender fell behind).
    pub sync_records_dropped: AtomicU64,
    /// Records from other directors applied to this worker's connection table or to the shared
    /// persistence templates.
    pub sync_records_imported: AtomicU64,
    /// Records from other directors skipped because this director has no such service, real
    /// server (address and port) or forwarding method for them.
    pub sync_records_unknown: AtomicU64,
    /// Loop iterations that found the fill ring with no room to give frames back.
    pub fill_ring_starved: AtomicU64,
    /// TX wake-up syscalls made.
    pub tx_wakeups: AtomicU64,
    /// Bursts a port's RX ring was left alone because a TX ring the frames could leave by had
    /// no room (back-pressure: the frames wait on the RX ring, or the kernel drops them there and
    /// counts them in `xsk_rx_ring_full`, instead of being processed and then dropped here).
    pub rx_deferred: AtomicU64,
    /// Times an adaptive worker slept in poll(2) for lack of traffic.
    pub idle_sleeps: AtomicU64,
    /// ICMP fragmentation-needed errors sent back to clients whose packet was too big to tunnel
    /// (LVS-TUN, DF set); each one is a client frame answered instead of forwarded.
    pub icmp_frag_needed_sent: AtomicU64,
    /// Frames the worker could not read because a descriptor pointed outside the UMEM.
    pub bad_descriptors: AtomicU64,
    /// Generation of the service table this worker is using: control waits for every worker to
    /// reach a published generation before it changes what the classifier sends them.
    pub table_generation: AtomicU64,
    /// The kernel's XDP_STATISTICS for this worker's socket, copied once a second.
    pub kernel: KernelXskCounters,
}

/// The kernel's `XDP_STATISTICS` for one socket, as last read by its worker.
#[derive(Debug, Default)]
pub struct KernelXskCounters {
    /// Frames the kernel dropped (e.g. no fill-ring frame).
    pub rx_dropped: AtomicU64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: AtomicU64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: AtomicU64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: AtomicU64,
    /// Times the fill ring was empty when the kernel needed a frame.
    pub rx_fill_ring_empty: AtomicU64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty: AtomicU64,
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
}

/// Allocates one block of `backends` counters, for one worker.
pub fn backend_counter_block(backends: usize) -> std::sync::Arc<[BackendCounters]> {
    (0..backends).map(|_| BackendCounters::default()).collect()
}

const _: () = assert!(std::mem::size_of::<BackendCounters>() == 64);
const _: () = assert!(DropReason::ALL.len() == DropReason::COUNT);
