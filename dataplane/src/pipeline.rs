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
//! 5. Rewrite per the service's forwarding method (NAT and TUN -> `UnsupportedForwarding`, the
//!    frame untouched: they change the frame's length or its egress interface, which
//!    [`Verdict::Tx`] cannot express; see [`crate::rewrite::nat`] and [`crate::rewrite::tun`]);
//!    then, and only then, record the flow: a
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
//!
//! Which TCP segments create entries and how states move is documented in [`crate::conntrack`].
//!
//! What this module must not do: allocate, lock, log or panic per frame (`tests/no_alloc.rs`
//! and the random-frame property test hold it to that), or touch the rings.

use std::time::Instant;

use crate::conntrack::{ConnState, ConnTable, Connection, FlowKey};
use crate::counters::{bump, BackendCounters, DropReason, WorkerCounters};
use crate::persistence::{Template, Upsert};
use crate::rewrite::dr;
use crate::service::{Forwarding, Protocol, Service, ServiceKey, ServiceTable};
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

/// How a flow's backend was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    /// Its connection entry named it.
    Tracked,
    /// A live persistence template named it.
    Template,
    /// The scheduler picked it. `stale_template`: a template named a backend that can no longer
    /// be used, so storing this choice replaces it.
    Scheduled { stale_template: bool },
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
        let gauges = self.gauges(table);
        self.connections
            .expire(now, &table.timeouts, counters, gauges, EXPIRE_BUDGET);
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
        let gauges = self.gauges(table);

        let existing = self
            .connections
            .lookup(&flow.key, now, &table.timeouts, counters, gauges);
        let (index, choice) = match existing
            .and_then(|id| resolve(self.connections.connection(id), service, table.generation))
        {
            Some(index) => (index, Choice::Tracked),
            None => choose(service, &flow.key, table, now)?,
        };
        // A new decision for this flow: a template's or the scheduler's.
        let scheduled = choice != Choice::Tracked;
        let backend = service.backends.get(index).ok_or(DropReason::NoBackend)?;
        let backend_mac = backend.mac.ok_or(DropReason::NeighbourUnresolved)?;

        // The frame goes out from here on.
        let mut ethernet =
            EthernetFrame::new_checked(&mut *frame).map_err(|_| DropReason::Truncated)?;
        let Forwarding::DirectRouting = service.forwarding else {
            return Err(DropReason::UnsupportedForwarding);
        };
        dr::rewrite(&mut ethernet, backend_mac, self.interface_mac);

        let tracked = match existing {
            Some(id) => {
                let connection = *self.connections.connection(id);
                if scheduled || connection.generation != table.generation {
                    self.connections.rebind(
                        id,
                        backend.address,
                        index,
                        backend.counter_slot,
                        table.generation,
                        gauges,
                    );
                }
                let state = match flow.key.protocol {
                    Protocol::Tcp => connection.state.on_tcp(flow.flags),
                    Protocol::Udp => ConnState::Udp,
                };
                self.connections.touch(id, state, now, gauges);
                true
            }
            None => match initial_state(&flow) {
                Some(state) => {
                    let connection = Connection {
                        backend: backend.address,
                        backend_index: index as u32,
                        generation: table.generation,
                        counter_slot: backend.counter_slot as u32,
                        state,
                    };
                    // None only for a capacity-0 table, counted there; forward regardless.
                    self.connections.insert(
                        flow.key,
                        connection,
                        now,
                        &table.timeouts,
                        counters,
                        gauges,
                    );
                    true
                }
                None => false,
            },
        };

        if let Some(persistence) = &service.persistence {
            if choice == Choice::Template {
                bump(&counters.persistence_hits, 1);
            }
            // An untracked frame (a RST without an entry) follows a template but stores none.
            if tracked {
                let stored = table.persistence.upsert(
                    persistence.group,
                    persistence.client(flow.key.src_addr),
                    backend.counter_slot,
                    now,
                    persistence.timeout,
                    choice
                        == Choice::Scheduled {
                            stale_template: true,
                        },
                );
                match stored {
                    Upsert::Inserted => bump(&counters.persistence_inserts, 1),
                    Upsert::Full => bump(&counters.persistence_table_full, 1),
                    Upsert::Refreshed | Upsert::Kept => {}
                }
            }
        }

        if let Some(stats) = gauges.get(backend.counter_slot) {
            if scheduled && tracked {
                bump(&stats.connections_total, 1);
            }
            bump(&stats.packets_in, 1);
            bump(&stats.bytes_in, frame.len() as u64);
        }
        Ok(())
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

/// A backend for a flow without a usable entry: its client's persistence template if the service
/// has one and it is usable, else the scheduler's pick.
#[inline]
fn choose(
    service: &Service,
    key: &FlowKey,
    table: &ServiceTable,
    now: Instant,
) -> Result<(usize, Choice), DropReason> {
    let mut stale_template = false;
    if let Some(persistence) = &service.persistence {
        let client = persistence.client(key.src_addr);
        match table.persistence.lookup(persistence.group, client, now) {
            Template::Live { counter_slot } => {
                // Weight 0 is fine (a drained server keeps its persistent clients); a backend
                // that left the service or has no MAC is not.
                match service
                    .backend_by_slot(counter_slot)
                    .filter(|&index| service.backends[index].mac.is_some())
                {
                    Some(index) => return Ok((index, Choice::Template)),
                    None => stale_template = true,
                }
            }
            Template::Pending | Template::Absent => {}
        }
    }
    let index = schedule(service, key, table)?;
    Ok((index, Choice::Scheduled { stale_template }))
}

/// The scheduler's backend for a flow.
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
    fn sum(&self, server: usize, gauge: impl Fn(&BackendCounters) -> u64) -> u64 {
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
