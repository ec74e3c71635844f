//! A client's frame for a service: find its backend (its connection entry, its client's
//! persistence template, or the scheduler), rewrite it per the service's forwarding method, then
//! record the flow, refresh the template and count it (classification steps 5 and 6 and the
//! persistence rules in [`crate::pipeline`]'s docs).
//!
//! What this module must not do: parse headers (the frame arrives classified) or touch frames
//! that are not a service's.

use std::net::SocketAddr;
use std::time::Instant;

use super::next_hop;
use super::shared::{interfaces, At, Egress, Pipeline, Verdict};
use crate::conntrack::{Binding, ConnId, ConnNextHop, ConnState, ConnTable, Connection, FlowKey};
use crate::counters::{bump, BackendCounters, DropReason, WorkerCounters};
use crate::parse::{Flow, Parsed};
use crate::persistence::{Template, Upsert};
use crate::rewrite::tun::Encapsulated;
use crate::rewrite::{nat, Link};
use crate::service::{Forwarding, NatReply, Protocol, Routing, Service, ServiceKey, ServiceTable};
use crate::sync::{SyncRecord, TemplateRecord};
use crate::wire::MacAddr;

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

impl Pipeline {
    /// A client's frame for a service.
    #[expect(
        clippy::too_many_arguments,
        reason = "one frame's whole context, kept flat"
    )]
    #[expect(
        clippy::too_many_lines,
        reason = "schedule, rewrite, record: read top to bottom"
    )]
    #[inline]
    pub(super) fn inbound(
        &mut self,
        buffer: &mut [u8],
        at: At,
        parsed: &Parsed,
        flow: &Flow,
        service: &Service,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> Result<Verdict, DropReason> {
        let gauges = self.gauges(table);
        let existing = self
            .connections
            .lookup(&flow.key, now, &table.timeouts, counters, gauges);
        // A SYN on a closing entry is a new connection on a reused source port: it is scheduled
        // like one and the entry rebound below (see `ConnState::reopened_by`).
        let reopened = existing.is_some_and(|id| {
            self.connections
                .connection(id)
                .state
                .reopened_by(flow.flags)
        });
        let (index, choice) = match existing
            .filter(|_| !reopened)
            .and_then(|id| resolve(self.connections.connection(id), service, table.generation))
        {
            Some(index) => (index, Choice::Tracked),
            None => choose(service, &flow.key, table, gauges, now)?,
        };
        // A new flow's entry needs a slot before its first frame goes out: a SYN the table
        // refuses (full of flows a SYN may not evict) is dropped and retransmitted by its
        // client, not forwarded without the entry that keeps its handshake on one server. (A
        // table built with capacity 0 forwards everything without state, as before.)
        if existing.is_none()
            && self.connections.capacity() > 0
            && initial_state(flow) == Some(ConnState::TcpSyn)
            && !self.connections.make_room(
                ConnState::TcpSyn,
                now,
                &table.timeouts,
                counters,
                gauges,
            )
        {
            return Err(DropReason::ConnTableFullSyn);
        }
        // A new decision for this flow: a template's or the scheduler's.
        let scheduled = choice != Choice::Tracked;
        let backend = service.backends.get(index).ok_or(DropReason::NoBackend)?;
        let backend_port = backend.port_for(flow.key.dst_port);
        let nat = service.forwarding == Forwarding::Nat;
        // What the entry will remember once the frame is forwarded, if routing found one.
        let mut next_hop = None;

        // The frame goes out from here on, unless the rewrite refuses it untouched.
        let verdict = match service.forwarding {
            Forwarding::DirectRouting => {
                let backend_mac = backend.mac.ok_or(DropReason::NeighbourUnresolved)?;
                self.direct(buffer, at, backend_mac)?;
                at.tx(Egress::Ingress)
            }
            Forwarding::Nat => {
                let backend_mac = backend.mac.ok_or(DropReason::NeighbourUnresolved)?;
                let sides = interfaces(table)?;
                if let Some(routing) = &table.routing {
                    let last_hop = buffer
                        .get(at.start + 6..at.start + 12)
                        .and_then(|bytes| MacAddr::try_from(bytes).ok());
                    next_hop = Some(client_next_hop(
                        routing,
                        remembered(&self.connections, existing, scheduled),
                        last_hop,
                        &flow.key,
                    ));
                }
                nat::rewrite_inbound_parsed(
                    &mut buffer[at.start..at.end()],
                    parsed,
                    SocketAddr::new(backend.address, backend_port),
                    Link {
                        src_mac: sides.server.mac,
                        dst_mac: backend_mac,
                    },
                )?;
                at.tx(Egress::Peer)
            }
            Forwarding::Tunnel => {
                // A MAC in the table is a configured one (control leaves TUN servers' MACs to
                // the routes when it publishes routing): it overrides the route.
                let backend_mac = match (backend.mac, &table.routing) {
                    (Some(mac), _) => mac,
                    (None, Some(routing)) => {
                        let (hop, mac) = next_hop::resolve(
                            routing,
                            remembered(&self.connections, existing, scheduled),
                            backend.address,
                            || flow.key.flow_hash(),
                        )?;
                        next_hop = Some(hop);
                        mac
                    }
                    (None, None) => return Err(DropReason::NeighbourUnresolved),
                };
                let answer_to = Some((flow.key.src_addr, now));
                match self.tunnel(buffer, at, parsed, backend, backend_mac, table, answer_to)? {
                    Encapsulated::Tunnelled { start, len } => Verdict::Tx {
                        start,
                        len,
                        egress: Egress::Ingress,
                    },
                    // Answered, not forwarded: nothing to record or count for the backend.
                    Encapsulated::FragNeeded { start, len } => {
                        bump(&counters.icmp_frag_needed_sent, 1);
                        return Ok(Verdict::Tx {
                            start,
                            len,
                            egress: Egress::Ingress,
                        });
                    }
                    Encapsulated::PacketTooBig { start, len } => {
                        bump(&counters.icmp6_packet_too_big_sent, 1);
                        return Ok(Verdict::Tx {
                            start,
                            len,
                            egress: Egress::Ingress,
                        });
                    }
                }
            }
        };

        // The entry this frame created or touched, and whether that changed it (state or backend).
        let entry = match existing {
            Some(id) => {
                let connection = *self.connections.connection(id);
                if scheduled || connection.generation != table.generation {
                    let binding = Binding {
                        backend: backend.address,
                        backend_port,
                        backend_index: index,
                        counter_slot: backend.counter_slot,
                        generation: table.generation,
                        nat,
                    };
                    self.connections.rebind(id, binding, gauges);
                }
                if let Some(hop) = next_hop {
                    if self.connections.connection(id).next_hop != hop {
                        self.connections.set_next_hop(id, hop);
                    }
                }
                let state = match flow.key.protocol {
                    Protocol::Tcp => connection.state.on_tcp(flow.flags),
                    Protocol::Udp => ConnState::Udp,
                };
                self.connections.touch(id, state, now, gauges);
                if reopened {
                    bump(&counters.connections_reopened, 1);
                }
                Some((Some(id), scheduled || state != connection.state))
            }
            None => match initial_state(flow) {
                Some(state) => {
                    let connection = Connection {
                        backend: backend.address,
                        backend_port,
                        nat,
                        backend_index: index as u32,
                        generation: table.generation,
                        counter_slot: backend.counter_slot as u32,
                        state,
                        next_hop: next_hop.unwrap_or_default(),
                    };
                    // None only for a capacity-0 table (room for a SYN was made above),
                    // counted there; forward regardless.
                    let id = self.connections.insert(
                        flow.key,
                        connection,
                        now,
                        &table.timeouts,
                        counters,
                        gauges,
                    );
                    Some((id, true))
                }
                None => None,
            },
        };
        let tracked = entry.is_some();
        let exported = match entry {
            Some((Some(id), changed)) => {
                self.export_connection(id, changed, service.forwarding, counters)
            }
            _ => false,
        };

        if let Some(persistence) = &service.persistence {
            if choice == Choice::Template {
                bump(&counters.persistence_hits, 1);
            }
            // An untracked frame (a RST without an entry) follows a template but stores none.
            if tracked {
                let stored = table.persistence.upsert(
                    persistence.group,
                    persistence.client(flow.key.src_addr.ip()),
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
            // The template follows its connection to the other directors.
            if exported {
                self.export(
                    SyncRecord::Template(TemplateRecord {
                        service: ServiceKey {
                            vip: flow.key.dst_addr.ip(),
                            port: flow.key.dst_port,
                            protocol: flow.key.protocol,
                        },
                        client: persistence.client(flow.key.src_addr.ip()),
                        backend: SocketAddr::new(backend.address, backend_port),
                    }),
                    counters,
                );
            }
        }

        if let Some(stats) = gauges.get(backend.counter_slot) {
            if scheduled && tracked {
                bump(&stats.connections_total, 1);
            }
            bump(&stats.packets_in, 1);
            bump(&stats.bytes_in, at.len as u64);
        }
        Ok(verdict)
    }
}

/// The current index of a connection's backend, or `None` if it left the service.
#[inline]
pub(super) fn resolve(
    connection: &Connection,
    service: &Service,
    generation: u64,
) -> Option<usize> {
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
    own_block: &[BackendCounters],
    now: Instant,
) -> Result<(usize, Choice), DropReason> {
    let mut stale_template = false;
    if let Some(persistence) = &service.persistence {
        let client = persistence.client(key.src_addr.ip());
        match table.persistence.lookup(persistence.group, client, now) {
            Template::Live { counter_slot } => {
                // Weight 0 is fine (a drained server keeps its persistent clients); a backend
                // that left the service or has no MAC is not.
                match service
                    .backend_by_slot(counter_slot)
                    .filter(|&index| reachable(service, index, table))
                {
                    Some(index) => return Ok((index, Choice::Template)),
                    None => stale_template = true,
                }
            }
            Template::Pending | Template::Absent => {}
        }
    }
    let index = schedule(service, key, table, own_block)?;
    Ok((index, Choice::Scheduled { stale_template }))
}

/// Whether frames can be sent to backend `index` as far as the snapshot knows: it has a MAC,
/// or (TUN with routing) its next hop comes from the route to it, checked per flow.
#[inline]
fn reachable(service: &Service, index: usize, table: &ServiceTable) -> bool {
    service.backends[index].mac.is_some()
        || (service.forwarding == Forwarding::Tunnel && table.routing.is_some())
}

/// The next hop the entry remembers, unless this is a new decision for the flow. Read only with
/// routing, so DR and routeless tables pay nothing; a function, not a closure, so that DR does
/// not pay for the closure's captures either.
#[inline]
fn remembered(connections: &ConnTable, existing: Option<ConnId>, scheduled: bool) -> ConnNextHop {
    match existing {
        Some(id) if !scheduled => connections.connection(id).next_hop,
        _ => ConnNextHop::Unknown,
    }
}

/// The next hop a NAT flow's replies will go to, as a client frame from `last_hop` (its
/// source MAC) leaves it. Auto last hop follows the newest client frame's source MAC, so
/// replies move with the client's path (another router after a failover) at the cost of a
/// 6-byte compare per frame. Route mode looks the client up once per connection; a client on
/// a connected prefix without a host route of its own (`route_onlink_unresolved`) is its own
/// next hop, and its frames come from its own MAC: that one is kept. Another failed lookup is
/// left to the reply, which looks up again and counts why it found nothing. Out of line for the
/// reason [`next_hop::resolve`] is.
#[inline(never)]
fn client_next_hop(
    routing: &Routing,
    remembered: ConnNextHop,
    last_hop: Option<MacAddr>,
    key: &FlowKey,
) -> ConnNextHop {
    match (routing.nat_reply, remembered) {
        (NatReply::LastHop, _) => last_hop.map_or(remembered, ConnNextHop::LastHop),
        (NatReply::Route, ConnNextHop::LastHop(_)) => remembered,
        (NatReply::Route, ConnNextHop::Neighbour { epoch, .. }) if epoch == routing.epoch => {
            remembered
        }
        (NatReply::Route, ConnNextHop::Neighbour { .. } | ConnNextHop::Unknown) => {
            match next_hop::route(routing, key.src_addr.ip(), key.flow_hash()) {
                Ok(id) => ConnNextHop::Neighbour {
                    id,
                    epoch: routing.epoch,
                },
                Err(DropReason::RouteOnlinkUnresolved) => {
                    last_hop.map_or(ConnNextHop::Unknown, ConnNextHop::LastHop)
                }
                Err(_) => ConnNextHop::Unknown,
            }
        }
    }
}

/// The scheduler's backend for a flow.
#[inline]
fn schedule(
    service: &Service,
    key: &FlowKey,
    table: &ServiceTable,
    own_block: &[BackendCounters],
) -> Result<usize, DropReason> {
    let flow = scheduler::Flow {
        hash: key.flow_hash(),
        src_addr: key.src_addr.fold32(),
        dst_addr: key.dst_addr.fold32(),
    };
    let loads = ServiceLoads {
        service,
        table,
        own: own_block,
    };
    service.scheduler.pick(&flow, &loads).ok_or_else(|| {
        // Out of servers: drained or down, or every one left over its threshold.
        if service.backends.iter().any(|backend| backend.weight > 0) {
            DropReason::AllServersOverloaded
        } else {
            DropReason::NoBackend
        }
    })
}

/// A service's connection counts summed over every worker's counter block, for the
/// least-connection schedulers and the connection thresholds. Reads are relaxed: another
/// worker's newest connections may be missing for a moment, which only makes the choice
/// slightly less even (or a threshold a few connections late).
struct ServiceLoads<'a> {
    service: &'a Service,
    table: &'a ServiceTable,
    /// This worker's block, where it keeps its view of who is over its threshold.
    own: &'a [BackendCounters],
}

impl ServiceLoads<'_> {
    /// Every worker's counters for `server`, one cache line each.
    fn blocks(&self, server: usize) -> impl Iterator<Item = &BackendCounters> + '_ {
        let slot = self
            .service
            .backends
            .get(server)
            .map(|backend| backend.counter_slot);
        self.table
            .backend_counters
            .iter()
            .filter_map(move |block| block.get(slot?))
    }
}

impl scheduler::Loads for ServiceLoads<'_> {
    fn active(&self, server: usize) -> u64 {
        self.counts(server).0
    }

    fn inactive(&self, server: usize) -> u64 {
        self.counts(server).1
    }

    fn counts(&self, server: usize) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.blocks(server)
            .fold((0u64, 0u64), |(active, inactive), counters| {
                (
                    active.wrapping_add(counters.active_connections.load(Relaxed)),
                    inactive.wrapping_add(counters.inactive_connections.load(Relaxed)),
                )
            })
    }

    /// Costs a field test for a server without thresholds; with them, a sum over the workers
    /// and, when the verdict changes, a store to this worker's flag.
    #[inline]
    fn over_threshold(&self, server: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(backend) = self.service.backends.get(server) else {
            return false;
        };
        if backend.thresholds.max == 0 {
            return false;
        }
        let Some(flag) = self.own.get(backend.counter_slot) else {
            return false;
        };
        let was_over = flag.over_threshold.load(Relaxed) != 0;
        let (active, inactive) = self.counts(server);
        let over = backend
            .thresholds
            .over(active.wrapping_add(inactive), was_over);
        if over != was_over {
            flag.over_threshold.store(u64::from(over), Relaxed);
        }
        over
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
