//! ICMP errors about tracked flows, found by the flow they quote: about a reply, forwarded to the
//! flow's real server the way its frames go (DR, TUN, or NAT-translated); about a client's packet
//! to a NAT real server, translated back toward the client. Anything else is dropped.
//!
//! What this module must not do: create or refresh connection entries, or answer an ICMP error
//! with another (RFC 1122 3.2.2).

use std::net::SocketAddr;
use std::time::Instant;

use super::inbound::resolve;
use super::next_hop;
use super::shared::{count_out, interfaces, At, Egress, Pipeline, Verdict};
use crate::conntrack::ConnId;
use crate::counters::{bump, DropReason, WorkerCounters};
use crate::parse::{Parsed, QuotedFlow};
use crate::rewrite::tun::{self, Encapsulated};
use crate::rewrite::{icmp, Link};
use crate::service::{Forwarding, ServiceKey, ServiceTable};

impl Pipeline {
    /// An ICMP frame: an error about a tracked flow is forwarded or translated (see the module
    /// docs); anything else is dropped.
    #[inline]
    #[expect(
        clippy::too_many_arguments,
        reason = "one frame's whole context, kept flat"
    )]
    pub(super) fn icmp(
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
        self.rewrite_to_client(
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
            vip: key.dst_addr.ip(),
            port: key.dst_port,
            protocol: key.protocol,
        };
        let (_, service) = table
            .lookup(&service_key)
            .ok_or(DropReason::IcmpNoConnection)?;
        let backend = resolve(&connection, service, table.generation)
            .and_then(|index| service.backends.get(index))
            .ok_or(DropReason::IcmpNoConnection)?;
        // TUN with routing: the flow's next hop toward its real server, not stored back (an
        // ICMP error does not touch the entry).
        let backend_mac = match (&table.routing, service.forwarding) {
            (Some(routing), Forwarding::Tunnel) if backend.mac.is_none() => {
                next_hop::resolve(routing, connection.next_hop, backend.address, || {
                    key.flow_hash()
                })?
                .1
            }
            _ => backend.mac.ok_or(DropReason::NeighbourUnresolved)?,
        };
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
                    SocketAddr::new(connection.backend, connection.backend_port),
                    Link {
                        src_mac: sides.server.mac,
                        dst_mac: backend_mac,
                    },
                )?;
                at.tx(Egress::Peer)
            }
            Forwarding::Tunnel => {
                // Never answer an ICMP error with one (RFC 1122 3.2.2): too big is a drop.
                let outer_len = tun::outer_header_len(backend.address);
                if outer_len + parsed.l3_len() > usize::from(interfaces(table)?.client.mtu) {
                    return Err(DropReason::TooBig);
                }
                match self.tunnel(buffer, at, parsed, backend, backend_mac, table, None)? {
                    Encapsulated::Tunnelled { start, len } => Verdict::Tx {
                        start,
                        len,
                        egress: Egress::Ingress,
                    },
                    Encapsulated::FragNeeded { .. } | Encapsulated::PacketTooBig { .. } => {
                        return Err(DropReason::TooBig)
                    }
                }
            }
        };
        if let Some(stats) = self.gauges(table).get(connection.counter_slot as usize) {
            bump(&stats.packets_in, 1);
            bump(&stats.bytes_in, at.len as u64);
        }
        Ok(verdict)
    }
}
