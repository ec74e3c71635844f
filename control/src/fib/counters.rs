//! What the FIB mirror counts, and the serialisable summary the stats reply shows: the
//! snapshot's size and age, neighbours resolved or not, notifications, overruns, rebuilds, and
//! each kind of bad input.
//!
//! What it must not do: decide anything; the mirror fills it in.

use serde::Serialize;

/// Totals since the mirror started, except where a field says "in the current snapshot".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FibCounters {
    /// Prefixes in the current snapshot, both families.
    pub prefixes: u64,
    /// IPv6 prefixes in the current snapshot (of `prefixes`).
    pub prefixes_v6: u64,
    /// Routes in the current snapshot (shared next-hop sets and refusal kinds).
    pub routes: u64,
    /// Neighbour slots held (next hops and pinned on-link destinations).
    pub next_hops: u64,
    /// Held neighbours with a usable MAC.
    pub neighbours_resolved: u64,
    /// Held neighbours without one (not yet asked, INCOMPLETE, or gone from the kernel).
    pub neighbours_unresolved: u64,
    /// Held neighbours the kernel gave up on (FAILED).
    pub neighbours_failed: u64,
    /// Snapshots built.
    pub rebuilds: u64,
    /// Netlink notifications read.
    pub notifications: u64,
    /// Notifications the mirror could not read (counted, skipped).
    pub unreadable: u64,
    /// Well-formed notifications the FIB has no use for (other tables and families, local,
    /// multicast and IPv6 link-local routes, bridge forwarding entries).
    pub ignored: u64,
    /// Notification overruns (`ENOBUFS`), each followed by a full re-dump.
    pub overruns: u64,
    /// Full dumps (the first, and one per overrun).
    pub dumps: u64,
    /// Neighbour writes to the shared array (a MAC learnt or changed, a state change).
    pub neighbour_updates: u64,
    /// Confirmations asked of the kernel for STALE/DELAY/PROBE next hops in use.
    pub neighbour_confirmations: u64,
    /// Solicitations of missing, INCOMPLETE or FAILED next hops in use.
    pub neighbour_solicitations: u64,
    /// Confirmation or solicitation requests the kernel refused or that failed.
    pub neighbour_request_errors: u64,
    /// In the current snapshot: prefixes out of interfaces the director does not serve.
    pub routes_not_served: u64,
    /// In the current snapshot: multipath legs left out for the same reason.
    pub legs_not_served: u64,
    /// In the current snapshot: `blackhole` prefixes.
    pub routes_blackhole: u64,
    /// In the current snapshot: `unreachable` prefixes.
    pub routes_unreachable: u64,
    /// In the current snapshot: `prohibit` prefixes.
    pub routes_prohibit: u64,
    /// In the current snapshot: routes naming a nexthop object not (yet) known.
    pub routes_missing_nexthop_object: u64,
    /// Next hops left out because every neighbour slot was taken (last build).
    pub neighbour_slots_full: u64,
}

/// The stats reply's view of the mirror.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FibSummary {
    /// The counters.
    #[serde(flatten)]
    pub counters: FibCounters,
    /// Bytes the current snapshot's tables hold.
    pub memory_bytes: u64,
    /// Milliseconds since the current snapshot was built.
    pub last_update_age_ms: u64,
}

/// The next hop a lookup gives, for the stats reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NextHopSummary {
    /// The destination looked up.
    pub destination: String,
    /// The next hop's address (a gateway, or the destination when on-link), when there is one.
    pub via: Option<String>,
    /// Egress interface index, when there is a next hop.
    pub ifindex: Option<u32>,
    /// The next hop's MAC when resolved.
    pub mac: Option<String>,
    /// `resolved`, `unresolved`, `failed`, or the route's refusal (`no_route`,
    /// `route_blackhole`, ...).
    pub state: String,
}
