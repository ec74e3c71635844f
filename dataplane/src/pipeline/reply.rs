//! A frame for no service: looked up as a NAT real server's reply and rewritten to come from
//! VIP:port toward the client side's next hop; and that last rewrite, shared with the ICMP errors
//! about a client's packet (`icmp.rs`).
//!
//! What this module must not do: schedule or create connections: a reply only follows an entry.

use std::net::SocketAddr;
use std::time::Instant;

use super::next_hop;
use super::shared::{count_out, interfaces, At, Egress, Pipeline, Verdict};
use crate::conntrack::{ConnId, ConnState};
use crate::counters::{DropReason, WorkerCounters};
use crate::parse::{Flow, Parsed};
use crate::rewrite::{nat, Link};
use crate::service::{Forwarding, Protocol, ServiceTable};

impl Pipeline {
    /// A frame for no service: a NAT real server's reply, or nothing we know.
    #[inline]
    #[expect(
        clippy::too_many_arguments,
        reason = "one frame's whole context, kept flat"
    )]
    pub(super) fn reply(
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
        self.rewrite_to_client(buffer, at, parsed, id, table, nat::rewrite_outbound_parsed)?;
        let state = match flow.key.protocol {
            Protocol::Tcp => connection.state.on_tcp_reply(flow.flags),
            Protocol::Udp => ConnState::Udp,
        };
        self.connections.touch(id, state, now, gauges);
        self.export_connection(id, state != connection.state, Forwarding::Nat, counters);
        count_out(gauges, &connection, at);
        Ok(at.tx(Egress::Peer))
    }

    /// Rewrites a frame from the real server of the NAT flow `id` (a reply, or an ICMP error
    /// about a client packet) to come from VIP:port, toward the client side's next hop.
    #[inline]
    pub(super) fn rewrite_to_client(
        &mut self,
        buffer: &mut [u8],
        at: At,
        parsed: &Parsed,
        id: ConnId,
        table: &ServiceTable,
        rewrite: fn(&mut [u8], &Parsed, SocketAddr, Link) -> Result<(), DropReason>,
    ) -> Result<(), DropReason> {
        let sides = interfaces(table)?;
        let key = *self.connections.key(id);
        let router = match &table.routing {
            // The client side's gateway, as before routing.
            None => sides
                .client
                .next_hop_mac
                .ok_or(DropReason::NeighbourUnresolved)?,
            Some(routing) => {
                let remembered = self.connections.connection(id).next_hop;
                let (next_hop, mac) =
                    next_hop::resolve(routing, remembered, key.src_addr.ip(), || key.flow_hash())?;
                if next_hop != remembered {
                    self.connections.set_next_hop(id, next_hop);
                }
                mac
            }
        };
        rewrite(
            &mut buffer[at.start..at.end()],
            parsed,
            SocketAddr::new(key.dst_addr.ip(), key.dst_port),
            Link {
                src_mac: sides.client.mac,
                dst_mac: router,
            },
        )
    }
}
