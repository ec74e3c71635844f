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
//!   is that much longer), out of [`Egress::Ingress`] from the client side's address; or, when
//!   too big with DF set, an ICMP fragmentation-needed to the client, out of
//!   [`Egress::Ingress`] (counted in `icmp_frag_needed_sent`, no entry created).
//! - NAT inbound (client -> VIP:port): rewritten to RS:rsport, out of [`Egress::Peer`] (the
//!   server side) to the real server's MAC.
//! - NAT outbound (RS:rsport -> client, not for a VIP): found through the connection table's
//!   reply index, rewritten to VIP:port, out of [`Egress::Peer`] (the client side) to the client
//!   side's next hop ([`crate::service::Interface::next_hop_mac`]).
//! - ICMP errors: found by the flow they quote. Quoting a reply (VIP:port -> client), from the
//!   client side: forwarded to the flow's real server by its method (DR: MACs; TUN:
//!   encapsulated; NAT: translated to RS:rsport, [`crate::rewrite::icmp`], out of
//!   [`Egress::Peer`]), as IPVS does, so path MTU discovery works for all three. Quoting a
//!   client packet to a NAT real server (client -> RS:rsport), from the server side: translated
//!   to VIP:port, out of [`Egress::Peer`]. Quoting neither -> `IcmpNoConnection`.
//!
//! The pipeline does not know which interface a frame came in on: a frame for a service is
//! inbound, any other TCP/UDP frame is looked up as a NAT reply. The connection table is per
//! worker, so a NAT flow's replies must reach the worker that forwarded its client's frames (the
//! worker owns a socket on each side, and the queues of both sides must map to workers alike).
//!
//! # Classification
//!
//! In order (the first failing check names the drop reason):
//! 1. Buffer: `start..start + len` outside the buffer -> `Truncated`.
//! 2. Ethernet: shorter than 14 bytes -> `Truncated`; an 802.1Q/802.1ad tag -> `VlanTagged`;
//!    another EtherType than IPv4 -> `NotIpv4`.
//! 3. IPv4 ([`Ipv4Packet::new_checked`]): short fixed header -> `Truncated`; version != 4 or
//!    IHL < 5 -> `BadIhl`; options or total length not fitting -> `Truncated`; then IHL > 5 ->
//!    `Ipv4Options`; MF or a fragment offset -> `Fragment` (no ports to classify by); ICMP ->
//!    the ICMP path above (not an error we translate -> `UnsupportedProtocol`, a short quote
//!    -> `Truncated`/`BadIhl`); neither TCP nor UDP -> `UnsupportedProtocol`; a short TCP/UDP
//!    header -> `Truncated`.
//! 4. Service by (destination address, port, protocol); none -> the NAT reply index; neither ->
//!    `NoService`.
//! 5. Backend: the flow's connection entry if it has one, found in the current table by address
//!    when the entry is from an older generation (a backend that is gone means reschedule, and
//!    so does a SYN on a closing entry: a new connection on a reused source port);
//!    otherwise the service's scheduler over the flow hash -> `NoBackend` when it has none; a
//!    backend whose MAC is unresolved -> `NeighbourUnresolved`. A flow keeps a drained
//!    (weight 0) backend it already has, as IPVS does.
//! 6. Rewrite per the service's forwarding method: NAT or TUN without interfaces in the table
//!    -> `UnsupportedForwarding`; NAT with TTL <= 1 -> `TtlExpired`; TUN too big without DF ->
//!    `TooBig`, with too little headroom -> `NoHeadroom`; a NAT reply whose client-side next
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
//! What this module must not do: allocate, lock, log or panic per frame (`tests/no_alloc.rs`
//! and the random-frame property test hold it to that), or touch the rings.

use std::net::SocketAddrV4;
use std::time::Instant;

use crate::conntrack::{Binding, ConnId, ConnState, ConnTable, Connection, FlowHint, FlowKey};
use crate::counters::{bump, BackendCounters, DropReason, WorkerCounters};
use crate::parse::{self, Flow, Parsed, QuotedFlow, Transport};
use crate::persistence::{Template, Upsert};
use crate::rewrite::tun::{self, Encapsulated, TunnelEgress};
use crate::rewrite::{dr, icmp, nat, Link};
use crate::service::{
    Backend, Forwarding, Interfaces, Protocol, Service, ServiceKey, ServiceTable,
};
use crate::sync::{ConnectionRecord, SyncRecord, TemplateRecord, WorkerSync, IMPORT_BUDGET};
use crate::wire::{EthernetFrame, MacAddr};

/// Which interface a frame to transmit leaves by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Egress {
    /// The interface it arrived on (DR, TUN, ICMP answers to the client).
    Ingress,
    /// The director's other interface (NAT, both ways): its socket shares the UMEM, so the
    /// frame is sent from where it is, without a copy.
    Peer,
}

/// What to do with a frame after the pipeline ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit `buffer[start..start + len]`, rewritten, out of `egress`. DR and NAT keep the
    /// received start and length; TUN encapsulation starts earlier and is longer.
    Tx {
        /// Offset of the frame's first byte in the buffer passed to [`Pipeline::process`].
        start: usize,
        /// Its length.
        len: usize,
        /// The interface to send it out of.
        egress: Egress,
    },
    /// Drop it; the reason has been counted and the frame is untouched.
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
    /// Outer IPv4 identification of the next tunnelled packet.
    tunnel_ident: u16,
    /// State sync with other directors: the export and import queues, if enabled.
    sync: WorkerSync,
    /// The refresh period of `sync`, in whole seconds (at least one).
    sync_refresh: u32,
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

/// The frame being processed: where it is in the buffer.
#[derive(Clone, Copy, Debug)]
struct At {
    start: usize,
    len: usize,
}

impl At {
    #[inline]
    const fn end(self) -> usize {
        self.start + self.len
    }

    #[inline]
    const fn tx(self, egress: Egress) -> Verdict {
        Verdict::Tx {
            start: self.start,
            len: self.len,
            egress,
        }
    }
}

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
    /// `start` (at least [`tun::HEADROOM`] are needed, else `NoHeadroom`).
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
    /// the headers only; a frame that does not parse gets no hint. The hint is for
    /// [`Pipeline::prefetch_entry`], a few frames later.
    #[inline]
    pub fn prefetch(&self, frame: &[u8]) -> Option<FlowHint> {
        match parse::classify(frame).as_ref().map(Parsed::transport) {
            Ok(Transport::Flow(flow)) => Some(self.connections.prefetch(&flow.key)),
            _ => None,
        }
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

    /// Whether records from other directors wait in this pipeline's import queue.
    #[inline]
    pub fn imports_pending(&self) -> bool {
        self.sync
            .import
            .as_ref()
            .is_some_and(|queue| !queue.is_empty())
    }

    /// Applies up to [`IMPORT_BUDGET`] records from the import queue (the worker calls it between
    /// bursts); returns how many it took.
    pub fn drain_imports(
        &mut self,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> usize {
        let mut taken = 0;
        while taken < IMPORT_BUDGET {
            let Some(record) = self.sync.import.as_ref().and_then(|queue| queue.pop()) else {
                break;
            };
            self.import(&record, table, now, counters);
            taken += 1;
        }
        taken
    }

    /// Applies one record from another director: creates or refreshes the connection entry it
    /// describes, rebinding it to the record's real server if it had another, or stores the
    /// template it describes. A record for a service, real server (address and port) or
    /// forwarding method this director does not have is counted in `sync_records_unknown`.
    /// Nothing imported is exported again. Returns whether the record was applied.
    pub fn import(
        &mut self,
        record: &SyncRecord,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> bool {
        let applied = match record {
            SyncRecord::Connection(record) => self.import_connection(record, table, now, counters),
            SyncRecord::Template(record) => import_template(record, table, now, counters),
        };
        if applied {
            bump(&counters.sync_records_imported, 1);
        } else {
            bump(&counters.sync_records_unknown, 1);
        }
        applied
    }

    fn import_connection(
        &mut self,
        record: &ConnectionRecord,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> bool {
        let key = &record.key;
        let service_key = ServiceKey {
            vip: key.dst_addr,
            port: key.dst_port,
            protocol: key.protocol,
        };
        let Some((_, service)) = table.lookup(&service_key) else {
            return false;
        };
        if service.forwarding != record.forwarding {
            return false;
        }
        let Some(index) = backend_at(service, record.backend, key.dst_port) else {
            return false;
        };
        let backend = &service.backends[index];
        let nat = service.forwarding == Forwarding::Nat;
        let binding = Binding {
            backend: backend.address,
            backend_port: record.backend.port(),
            backend_index: index,
            counter_slot: backend.counter_slot,
            generation: table.generation,
            nat,
        };
        let gauges = self.gauges(table);
        let Some(id) = self
            .connections
            .lookup(key, now, &table.timeouts, counters, gauges)
        else {
            let connection = Connection {
                backend: binding.backend,
                backend_port: binding.backend_port,
                nat,
                backend_index: index as u32,
                generation: table.generation,
                counter_slot: backend.counter_slot as u32,
                state: record.state,
            };
            // None only for a capacity-0 table, counted there.
            return self
                .connections
                .insert(*key, connection, now, &table.timeouts, counters, gauges)
                .is_some();
        };
        let connection = *self.connections.connection(id);
        if connection.backend != binding.backend
            || connection.backend_port != binding.backend_port
            || connection.counter_slot as usize != binding.counter_slot
            || connection.generation != binding.generation
            || connection.nat != nat
        {
            self.connections.rebind(id, binding, gauges);
        }
        // A late SYN record (datagrams may be reordered) does not shorten an established entry,
        // as a SYN from the client would not.
        let state = match (connection.state, record.state) {
            (ConnState::TcpEstablished, ConnState::TcpSyn) => ConnState::TcpEstablished,
            (_, state) => state,
        };
        self.connections.touch(id, state, now, gauges);
        self.connections.mark_synced(id);
        true
    }

    #[inline]
    fn forward(
        &mut self,
        buffer: &mut [u8],
        at: At,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> Result<Verdict, DropReason> {
        let parsed = parse::classify(&buffer[at.start..at.end()])?;
        let flow = match *parsed.transport() {
            Transport::Flow(flow) => flow,
            Transport::IcmpError(quoted) => {
                return self.icmp(buffer, at, &parsed, quoted, table, now, counters)
            }
        };
        let key = ServiceKey {
            vip: flow.key.dst_addr,
            port: flow.key.dst_port,
            protocol: flow.key.protocol,
        };
        match table.lookup(&key) {
            Some((_, service)) => {
                self.inbound(buffer, at, &parsed, &flow, service, table, now, counters)
            }
            None => self.reply(buffer, at, &parsed, &flow, table, now, counters),
        }
    }

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
    fn inbound(
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
            None => choose(service, &flow.key, table, now)?,
        };
        // A new decision for this flow: a template's or the scheduler's.
        let scheduled = choice != Choice::Tracked;
        let backend = service.backends.get(index).ok_or(DropReason::NoBackend)?;
        let backend_mac = backend.mac.ok_or(DropReason::NeighbourUnresolved)?;
        let backend_port = backend.port_for(flow.key.dst_port);
        let nat = service.forwarding == Forwarding::Nat;

        // The frame goes out from here on, unless the rewrite refuses it untouched.
        let verdict = match service.forwarding {
            Forwarding::DirectRouting => {
                self.direct(buffer, at, backend_mac)?;
                at.tx(Egress::Ingress)
            }
            Forwarding::Nat => {
                let sides = interfaces(table)?;
                nat::rewrite_inbound_parsed(
                    &mut buffer[at.start..at.end()],
                    parsed,
                    SocketAddrV4::new(backend.address, backend_port),
                    Link {
                        src_mac: sides.server.mac,
                        dst_mac: backend_mac,
                    },
                )?;
                at.tx(Egress::Peer)
            }
            Forwarding::Tunnel => {
                match self.tunnel(buffer, at, parsed, backend, backend_mac, table)? {
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
                    };
                    // None only for a capacity-0 table, counted there; forward regardless.
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
            // The template follows its connection to the other directors.
            if exported {
                self.export(
                    SyncRecord::Template(TemplateRecord {
                        service: ServiceKey {
                            vip: flow.key.dst_addr,
                            port: flow.key.dst_port,
                            protocol: flow.key.protocol,
                        },
                        client: std::net::Ipv4Addr::from(persistence.client(flow.key.src_addr)),
                        backend: SocketAddrV4::new(backend.address, backend_port),
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

    /// A frame for no service: a NAT real server's reply, or nothing we know.
    #[inline]
    #[expect(
        clippy::too_many_arguments,
        reason = "one frame's whole context, kept flat"
    )]
    fn reply(
        &mut self,
        buffer: &mut [u8],
        at: At,
        parsed: &Parsed,
        flow: &Flow,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> Result<Verdict, DropReason> {
        let gauges = self.gauges(table);
        let id = self
            .connections
            .lookup_reply(&flow.key, now, &table.timeouts, counters, gauges)
            .ok_or(DropReason::NoService)?;
        let connection = *self.connections.connection(id);
        self.to_client(buffer, at, parsed, id, table, nat::rewrite_outbound_parsed)?;
        let state = match flow.key.protocol {
            Protocol::Tcp => connection.state.on_tcp_reply(flow.flags),
            Protocol::Udp => ConnState::Udp,
        };
        self.connections.touch(id, state, now, gauges);
        self.export_connection(id, state != connection.state, Forwarding::Nat, counters);
        count_out(gauges, &connection, at);
        Ok(at.tx(Egress::Peer))
    }

    /// An ICMP frame: an error about a tracked flow is forwarded or translated (see the module
    /// docs); anything else is dropped.
    #[inline]
    #[expect(
        clippy::too_many_arguments,
        reason = "one frame's whole context, kept flat"
    )]
    fn icmp(
        &mut self,
        buffer: &mut [u8],
        at: At,
        parsed: &Parsed,
        quoted: QuotedFlow,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> Result<Verdict, DropReason> {
        // The way the error travels: client -> VIP:port for an error about a reply, the reply
        // tuple RS:rsport -> client for one about a client's packet to a NAT real server.
        let key = quoted.reversed();
        let gauges = self.gauges(table);
        if let Some(id) = self
            .connections
            .lookup(&key, now, &table.timeouts, counters, gauges)
        {
            return self.icmp_to_server(buffer, at, parsed, id, table);
        }
        let id = self
            .connections
            .lookup_reply(&key, now, &table.timeouts, counters, gauges)
            .ok_or(DropReason::IcmpNoConnection)?;
        let connection = *self.connections.connection(id);
        self.to_client(
            buffer,
            at,
            parsed,
            id,
            table,
            icmp::translate_outbound_parsed,
        )?;
        count_out(gauges, &connection, at);
        Ok(at.tx(Egress::Peer))
    }

    /// An ICMP error about a reply of the flow `id`, sent on to its real server the way the
    /// flow's frames go. It neither refreshes the entry nor reschedules: a flow whose backend
    /// left gets its error dropped (`IcmpNoConnection`).
    fn icmp_to_server(
        &mut self,
        buffer: &mut [u8],
        at: At,
        parsed: &Parsed,
        id: ConnId,
        table: &ServiceTable,
    ) -> Result<Verdict, DropReason> {
        let key = *self.connections.key(id);
        let connection = *self.connections.connection(id);
        let service_key = ServiceKey {
            vip: key.dst_addr,
            port: key.dst_port,
            protocol: key.protocol,
        };
        let (_, service) = table
            .lookup(&service_key)
            .ok_or(DropReason::IcmpNoConnection)?;
        let backend = resolve(&connection, service, table.generation)
            .and_then(|index| service.backends.get(index))
            .ok_or(DropReason::IcmpNoConnection)?;
        let backend_mac = backend.mac.ok_or(DropReason::NeighbourUnresolved)?;
        let verdict = match service.forwarding {
            Forwarding::DirectRouting => {
                self.direct(buffer, at, backend_mac)?;
                at.tx(Egress::Ingress)
            }
            Forwarding::Nat => {
                let sides = interfaces(table)?;
                icmp::translate_inbound_parsed(
                    &mut buffer[at.start..at.end()],
                    parsed,
                    SocketAddrV4::new(connection.backend, connection.backend_port),
                    Link {
                        src_mac: sides.server.mac,
                        dst_mac: backend_mac,
                    },
                )?;
                at.tx(Egress::Peer)
            }
            Forwarding::Tunnel => {
                // Never answer an ICMP error with one (RFC 1122 3.2.2): too big is a drop.
                if tun::HEADROOM + parsed.l3_len() > usize::from(interfaces(table)?.client.mtu) {
                    return Err(DropReason::TooBig);
                }
                match self.tunnel(buffer, at, parsed, backend, backend_mac, table)? {
                    Encapsulated::Tunnelled { start, len } => Verdict::Tx {
                        start,
                        len,
                        egress: Egress::Ingress,
                    },
                    Encapsulated::FragNeeded { .. } => return Err(DropReason::TooBig),
                }
            }
        };
        if let Some(stats) = self.gauges(table).get(connection.counter_slot as usize) {
            bump(&stats.packets_in, 1);
            bump(&stats.bytes_in, at.len as u64);
        }
        Ok(verdict)
    }

    /// Rewrites a frame from the real server of the NAT flow `id` (a reply, or an ICMP error
    /// about a client packet) to come from VIP:port, toward the client side's next hop.
    #[inline]
    fn to_client(
        &self,
        buffer: &mut [u8],
        at: At,
        parsed: &Parsed,
        id: ConnId,
        table: &ServiceTable,
        rewrite: fn(&mut [u8], &Parsed, SocketAddrV4, Link) -> Result<(), DropReason>,
    ) -> Result<(), DropReason> {
        let sides = interfaces(table)?;
        let router = sides
            .client
            .next_hop_mac
            .ok_or(DropReason::NeighbourUnresolved)?;
        let key = self.connections.key(id);
        rewrite(
            &mut buffer[at.start..at.end()],
            parsed,
            SocketAddrV4::new(key.dst_addr, key.dst_port),
            Link {
                src_mac: sides.client.mac,
                dst_mac: router,
            },
        )
    }

    /// Direct routing: the frame re-addressed to the real server from this interface.
    #[inline]
    fn direct(&self, buffer: &mut [u8], at: At, backend_mac: MacAddr) -> Result<(), DropReason> {
        let mut ethernet = EthernetFrame::new_checked(&mut buffer[at.start..at.end()])
            .map_err(|_| DropReason::Truncated)?;
        dr::rewrite(&mut ethernet, backend_mac, self.interface_mac);
        Ok(())
    }

    /// LVS-TUN: the frame encapsulated toward `backend` from the client side's address.
    #[inline]
    fn tunnel(
        &mut self,
        buffer: &mut [u8],
        at: At,
        parsed: &Parsed,
        backend: &Backend,
        backend_mac: MacAddr,
        table: &ServiceTable,
    ) -> Result<Encapsulated, DropReason> {
        let side = interfaces(table)?.client;
        let egress = TunnelEgress {
            link: Link {
                src_mac: side.mac,
                dst_mac: backend_mac,
            },
            src_addr: side.address,
            mtu: side.mtu,
        };
        let result = tun::encapsulate_parsed(
            buffer,
            at.start,
            at.len,
            parsed,
            backend.address,
            &egress,
            self.tunnel_ident,
        )?;
        if let Encapsulated::Tunnelled { .. } = result {
            self.tunnel_ident = self.tunnel_ident.wrapping_add(1);
        }
        Ok(result)
    }

    /// Exports the entry `id` if export is on and the entry `changed` (new, another state or
    /// real server) or is due for a refresh; returns whether it did. The entry counts as
    /// exported even if the queue was full (counted as dropped): retrying on every packet would
    /// only press on a sender that is already behind. Always inlined: with export off (the
    /// common case) it is one test, which as a call costs more than it does.
    #[inline(always)]
    fn export_connection(
        &mut self,
        id: ConnId,
        changed: bool,
        forwarding: Forwarding,
        counters: &WorkerCounters,
    ) -> bool {
        if self.sync.export.is_none()
            || !(changed || self.connections.sync_due(id, self.sync_refresh))
        {
            return false;
        }
        let connection = self.connections.connection(id);
        let record = SyncRecord::Connection(ConnectionRecord {
            key: *self.connections.key(id),
            backend: SocketAddrV4::new(connection.backend, connection.backend_port),
            forwarding,
            state: connection.state,
        });
        self.connections.mark_synced(id);
        self.export(record, counters);
        true
    }

    /// Pushes `record` to the export queue, if there is one; a full queue counts it as dropped.
    #[inline]
    fn export(&self, record: SyncRecord, counters: &WorkerCounters) {
        if let Some(queue) = &self.sync.export {
            match queue.push(record) {
                Ok(()) => bump(&counters.sync_records_exported, 1),
                Err(_) => bump(&counters.sync_records_dropped, 1),
            }
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

/// The table's interfaces, which NAT and TUN need.
#[inline]
fn interfaces(table: &ServiceTable) -> Result<&Interfaces, DropReason> {
    table
        .interfaces
        .as_ref()
        .ok_or(DropReason::UnsupportedForwarding)
}

/// Stores a template another director exported, under this director's persistence group and
/// counter slot for the named service and real server; whether it could be resolved.
fn import_template(
    record: &TemplateRecord,
    table: &ServiceTable,
    now: Instant,
    counters: &WorkerCounters,
) -> bool {
    let Some((_, service)) = table.lookup(&record.service) else {
        return false;
    };
    let Some(persistence) = &service.persistence else {
        return false;
    };
    let Some(index) = backend_at(service, record.backend, record.service.port) else {
        return false;
    };
    // The master's choice stands: it replaces whatever this director had for the client.
    let stored = table.persistence.upsert(
        persistence.group,
        persistence.client(record.client),
        service.backends[index].counter_slot,
        now,
        persistence.timeout,
        true,
    );
    match stored {
        Upsert::Inserted => bump(&counters.persistence_inserts, 1),
        Upsert::Full => bump(&counters.persistence_table_full, 1),
        Upsert::Refreshed | Upsert::Kept => {}
    }
    true
}

/// Index of the backend at `address` that serves service port `service_port` on the real
/// server's port `address.port()`.
fn backend_at(service: &Service, address: SocketAddrV4, service_port: u16) -> Option<usize> {
    service.backends.iter().position(|backend| {
        backend.address == *address.ip() && backend.port_for(service_port) == address.port()
    })
}

/// Counts a frame from the real server of `connection` sent back toward the client.
#[inline]
fn count_out(gauges: &[BackendCounters], connection: &Connection, at: At) {
    if let Some(stats) = gauges.get(connection.counter_slot as usize) {
        bump(&stats.packets_out, 1);
        bump(&stats.bytes_out, at.len as u64);
    }
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
}

/// The state a new entry starts in, or `None` for a flow that gets none.
#[inline]
fn initial_state(flow: &Flow) -> Option<ConnState> {
    match flow.key.protocol {
        Protocol::Tcp => ConnState::tcp_initial(flow.flags),
        Protocol::Udp => Some(ConnState::Udp),
    }
}
