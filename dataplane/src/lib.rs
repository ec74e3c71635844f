//! The director's data plane: everything a frame touches between the NIC and the wire.
//!
//! Layers, from the wire up (each depends only on those before it):
//! - [`wire`]: zero-copy views over Ethernet, IPv4, TCP and UDP headers, and checksums.
//! - [`conntrack`]: the per-worker connection table that keeps a flow on its real server.
//! - [`persistence`]: client affinity templates shared by all workers, lock-free.
//! - [`fib`]: the routing snapshot (longest-prefix match, multipath next-hop groups) and the
//!   lock-free neighbour array that next hops' MACs are read from.
//! - [`parse`]: a frame's headers validated once, into the [`parse::Parsed`] view every later
//!   stage reads instead of parsing again.
//! - [`rewrite`]: frame rewrites per forwarding method (DR, NAT with ICMP translation, TUN).
//! - [`pipeline`]: classify -> look up or schedule -> rewrite, returning a typed [`Verdict`].
//! - [`sync`]: connection and persistence records exchanged with other directors (as the IPVS
//!   sync daemon does), and the bounded lock-free queues between the workers and control.
//! - [`xdp`]: the XDP classifier (C source in `bpf/`), its maps and the bpf_link that attaches it.
//! - [`xsk`]: AF_XDP sockets: UMEM, fill/completion/rx/tx rings.
//! - [`memory`]: huge-page mappings for the UMEM and the connection table, and the prefetch hint.
//! - [`worker`]: the per-queue busy-polling loop that drives the pipeline over the rings.
//! - [`affinity`]: which CPUs the workers and the rest of the process run on.
//!
//! The data plane takes its instructions as an immutable [`service::ServiceTable`] snapshot that
//! control builds and publishes; workers pick up a new one between batches, never waiting for it.
//!
//! What it must not do: parse configuration, resolve neighbours, log or allocate per packet, take
//! a lock or make a syscall per packet (a TX wake-up per socket per batch is the exception), or panic on
//! any frame.

#![deny(unsafe_code)]

#[allow(
    unsafe_code,
    reason = "reads and sets thread CPU masks (sched_getaffinity/setaffinity)"
)]
pub mod affinity;
pub mod conntrack;
pub mod counters;
pub mod fib;
#[allow(
    unsafe_code,
    reason = "maps the large tables' memory (mmap, madvise), hands it out as an allocator, and \
              wraps the prefetch instruction"
)]
pub mod memory;
pub mod parse;
pub mod persistence;
pub mod pipeline;
pub mod rewrite;
pub mod service;
mod slot_index;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod wire;
pub mod worker;
#[allow(unsafe_code, reason = "loads BPF objects through libbpf")]
pub mod xdp;
#[allow(
    unsafe_code,
    reason = "UMEM and ring memory are shared with the kernel"
)]
pub mod xsk;

pub use counters::{DropReason, WorkerCounters};
pub use persistence::PersistenceTable;
pub use pipeline::{Egress, Pipeline, Verdict};
pub use service::{
    scheduler_key, Backend, Forwarding, Interface, Interfaces, NatReply, Persistence, Protocol,
    Routing, Service, ServiceKey, ServiceTable, Thresholds, Timeouts,
};
