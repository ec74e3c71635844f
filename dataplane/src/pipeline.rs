//! The per-frame pipeline: parse -> connection lookup or schedule -> rewrite -> verdict.
//!
//! [`Pipeline::process`] takes one received frame and either rewrites it in place for
//! transmission ([`Verdict::Tx`]) or names why not ([`Verdict::Drop`]), having counted the drop:
//! every exit path has a counter, as in Katran.
//!
//! Classification, in order (the first failing check names the drop reason):
//! 1. Ethernet: shorter than 14 bytes -> `Truncated`; an 802.1Q/802.1ad tag -> `VlanTagged`;
//!    another EtherType than IPv4 -> `NotIpv4`.
//! 2. IPv4 ([`Ipv4Packet::new_checked`]): short fixed header -> `Truncated`; version != 4 or
//!    IHL < 5 -> `BadIhl`; options or total length not fitting -> `Truncated`; then IHL > 5 ->
//!    `Ipv4Options`; MF or a fragment offset -> `Fragment` (no ports to classify by); neither
//!    TCP nor UDP -> `UnsupportedProtocol`; a short TCP/UDP header -> `Truncated`.
//! 3. Service by (destination address, port, protocol) -> `NoService`.
//! 4. Backend: the flow's connection entry if it has one, found in the current table by address
//!    when the entry is from an older generation (a backend that is gone means reschedule);
//!    otherwise the service's scheduler over the flow hash -> `NoBackend` when it has none; a
//!    backend whose MAC is unresolved -> `NeighbourUnresolved`. A flow keeps a drained
//!    (weight 0) backend it already has, as IPVS does.
//! 5. Rewrite per the service's forwarding method; then, and only then, record the flow: a
//!    dropped frame never creates or refreshes an entry (so a SYN whose backend is unresolved is
//!    rescheduled on retransmission rather than pinned to it).
//!
//! Which TCP segments create entries and how states move is documented in [`crate::conntrack`].
//!
//! What this module must not do: allocate, lock, log or panic per frame (`tests/no_alloc.rs`
//! and the random-frame property test hold it to that), or touch the rings.

use std::time::Instant;

use crate::conntrack::{ConnState, ConnTable, Connection, FlowKey};
use crate::counters::{bump, DropReason, WorkerCounters};
use crate::rewrite::dr;
use crate::service::{Backend, Forwarding, Protocol, Service, ServiceKey, ServiceTable};
use crate::wire::{
    self, EtherType, EthernetFrame, Ipv4Packet, MacAddr, TcpFlags, TcpSegment, UdpDatagram,
};

/// What to do with a frame after the pipeline ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame, same length, out of the interface it arrived on.
    Tx,
    /// Drop it; the reason has been counted.
    Drop(DropReason),
}

/// Most entries one [`Pipeline::housekeeping`] call expires, so a mass expiry (every client of a
/// failed link timing out together) is spread over several calls instead of stalling the loop.
/// Expired entries left over are still reclaimed on lookup and when the table is full.
pub const EXPIRE_BUDGET: usize = 1 << 16;

/// One worker's pipeline state: its connection table and identity.
pub struct Pipeline {
    worker: usize,
    interface_mac: MacAddr,
    connections: ConnTable,
}

/// What classification extracts from a frame.
#[derive(Clone, Copy, Debug)]
struct Flow {
    key: FlowKey,
    /// TCP control bits; empty for UDP.
    flags: TcpFlags,
}

impl Pipeline {
    /// A pipeline for worker `worker` on an interface whose MAC is `interface_mac`, with a
    /// connection table of at most `max_connections` entries (allocated here, never grown).
    pub fn new(worker: usize, interface_mac: [u8; 6], max_connections: usize) -> Self {
        Pipeline {
            worker,
            interface_mac,
            connections: ConnTable::new(max_connections),
        }
    }

    /// The worker index this pipeline counts backend traffic under.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The connection table, for inspection (stats, tests).
    pub fn connections(&self) -> &ConnTable {
        &self.connections
    }

    /// Runs one frame through the pipeline, rewriting it in place.
    pub fn process(
        &mut self,
        frame: &mut [u8],
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> Verdict {
        match self.forward(frame, table, now, counters) {
            Ok(()) => Verdict::Tx,
            Err(reason) => {
                counters.count_drop(reason);
                Verdict::Drop(reason)
            }
        }
    }

    /// Expires idle connections; called by the worker about once a second, not per packet.
    pub fn housekeeping(&mut self, table: &ServiceTable, now: Instant, counters: &WorkerCounters) {
        self.connections
            .expire(now, &table.timeouts, counters, EXPIRE_BUDGET);
        self.connections.publish(counters);
    }

    fn forward(
        &mut self,
        frame: &mut [u8],
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> Result<(), DropReason> {
        let flow = classify(frame)?;
        let key = ServiceKey {
            vip: flow.key.dst_addr,
            port: flow.key.dst_port,
            protocol: flow.key.protocol,
        };
        let (_, service) = table.lookup(&key).ok_or(DropReason::NoService)?;

        let existing = self
            .connections
            .lookup(&flow.key, now, &table.timeouts, counters);
        // (backend index, whether this is a new scheduling decision)
        let (index, scheduled) = match existing
            .and_then(|id| resolve(self.connections.connection(id), service, table.generation))
        {
            Some(index) => (index, false),
            None => (schedule(service, &flow.key, table)?, true),
        };
        let backend = service.backends.get(index).ok_or(DropReason::NoBackend)?;
        let backend_mac = backend.mac.ok_or(DropReason::NeighbourUnresolved)?;

        // The frame goes out from here on.
        let mut ethernet =
            EthernetFrame::new_checked(&mut *frame).map_err(|_| DropReason::Truncated)?;
        match service.forwarding {
            Forwarding::DirectRouting => {
                dr::rewrite(&mut ethernet, backend_mac, self.interface_mac);
            }
        }

        let tracked = match existing {
            Some(id) => {
                let connection = *self.connections.connection(id);
                if scheduled || connection.generation != table.generation {
                    self.connections
                        .rebind(id, backend.address, index, table.generation);
                }
                let state = match flow.key.protocol {
                    Protocol::Tcp => connection.state.on_tcp(flow.flags),
                    Protocol::Udp => ConnState::Udp,
                };
                self.connections.touch(id, state, now);
                true
            }
            None => match initial_state(&flow) {
                Some(state) => {
                    let connection = Connection {
                        backend: backend.address,
                        backend_index: index as u32,
                        generation: table.generation,
                        state,
                    };
                    // None only for a capacity-0 table, counted there; forward regardless.
                    self.connections
                        .insert(flow.key, connection, now, &table.timeouts, counters);
                    true
                }
                None => false,
            },
        };

        if let Some(stats) = self.backend_counters(table, backend) {
            if scheduled && tracked {
                bump(&stats.connections_total, 1);
            }
            bump(&stats.packets_in, 1);
            bump(&stats.bytes_in, frame.len() as u64);
        }
        Ok(())
    }

    fn backend_counters<'t>(
        &self,
        table: &'t ServiceTable,
        backend: &Backend,
    ) -> Option<&'t crate::counters::BackendCounters> {
        table
            .backend_counters
            .get(self.worker)?
            .get(backend.counter_slot)
    }
}

/// Parses the headers the pipeline needs, or names why the frame cannot be served.
#[inline]
fn classify(frame: &[u8]) -> Result<Flow, DropReason> {
    let ethernet = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Truncated)?;
    let ethertype = ethernet.ethertype();
    if ethertype.is_vlan_tag() {
        return Err(DropReason::VlanTagged);
    }
    if ethertype != EtherType::IPV4 {
        return Err(DropReason::NotIpv4);
    }

    let ip = Ipv4Packet::new_checked(ethernet.payload()).map_err(|error| match error {
        wire::Error::Truncated => DropReason::Truncated,
        wire::Error::Malformed => DropReason::BadIhl,
    })?;
    if usize::from(ip.header_len()) > wire::ipv4::HEADER_LEN {
        return Err(DropReason::Ipv4Options);
    }
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let protocol = Protocol::from_number(ip.protocol()).ok_or(DropReason::UnsupportedProtocol)?;

    // A TCP data offset below 5 claims a header shorter than TCP's: truncated as well.
    let (src_port, dst_port, flags) = match protocol {
        Protocol::Tcp => {
            let tcp = TcpSegment::new_checked(ip.payload()).map_err(|_| DropReason::Truncated)?;
            (tcp.src_port(), tcp.dst_port(), tcp.flags())
        }
        Protocol::Udp => {
            let udp = UdpDatagram::new_checked(ip.payload()).map_err(|_| DropReason::Truncated)?;
            (udp.src_port(), udp.dst_port(), TcpFlags::default())
        }
    };
    Ok(Flow {
        key: FlowKey {
            src_addr: ip.src_addr(),
            dst_addr: ip.dst_addr(),
            src_port,
            dst_port,
            protocol,
        },
        flags,
    })
}

/// The current index of a connection's backend, or `None` if it left the service.
#[inline]
fn resolve(connection: &Connection, service: &Service, generation: u64) -> Option<usize> {
    if connection.generation == generation {
        let index = connection.backend_index as usize;
        // The address check makes a stale index harmless even if generations were reused.
        if service
            .backends
            .get(index)
            .is_some_and(|backend| backend.address == connection.backend)
        {
            return Some(index);
        }
    }
    service.backend_index(connection.backend)
}

/// A backend for a flow without a usable entry.
#[inline]
fn schedule(service: &Service, key: &FlowKey, table: &ServiceTable) -> Result<usize, DropReason> {
    let flow = scheduler::Flow {
        hash: key.flow_hash(),
        src_addr: u32::from(key.src_addr),
        dst_addr: u32::from(key.dst_addr),
    };
    let loads = ServiceLoads { service, table };
    service
        .scheduler
        .pick(&flow, &loads)
        .ok_or(DropReason::NoBackend)
}

/// A service's connection counts summed over every worker's counter block, for the
/// least-connection schedulers. Reads are relaxed: another worker's newest connections may be
/// missing for a moment, which only makes the choice slightly less even.
struct ServiceLoads<'a> {
    service: &'a Service,
    table: &'a ServiceTable,
}

impl ServiceLoads<'_> {
    fn sum(&self, server: usize, gauge: impl Fn(&crate::counters::BackendCounters) -> u64) -> u64 {
        let Some(backend) = self.service.backends.get(server) else {
            return 0;
        };
        self.table
            .backend_counters
            .iter()
            .filter_map(|block| block.get(backend.counter_slot))
            .map(gauge)
            .fold(0, u64::wrapping_add)
    }
}

impl scheduler::Loads for ServiceLoads<'_> {
    fn active(&self, server: usize) -> u64 {
        self.sum(server, |counters| {
            counters
                .active_connections
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    fn inactive(&self, server: usize) -> u64 {
        self.sum(server, |counters| {
            counters
                .inactive_connections
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }
}

/// The state a new entry starts in, or `None` for a flow that gets none.
#[inline]
fn initial_state(flow: &Flow) -> Option<ConnState> {
    match flow.key.protocol {
        Protocol::Tcp => ConnState::tcp_initial(flow.flags),
        Protocol::Udp => Some(ConnState::Udp),
    }
}
