//! The frame rewrites whose result depends on this worker: direct routing from this interface,
//! and LVS-TUN encapsulation from the client side's address, with this worker's outer IPv4
//! identification or, toward an IPv6 real server, an outer flow label from the flow's hash.
//! (NAT's rewrites are one call each to [`crate::rewrite::nat`] and [`crate::rewrite::icmp`].)
//!
//! What this module must not do: choose a backend or touch the connection table.

use std::net::IpAddr;
use std::time::Instant;

use super::shared::{interfaces, At, Pipeline};
use crate::conntrack::FlowAddr;
use crate::counters::DropReason;
use crate::parse::{Parsed, Transport};
use crate::rewrite::tun::{self, Encapsulated, TunnelEgress};
use crate::rewrite::{dr, Link};
use crate::service::{Backend, ServiceTable};
use crate::wire::{EthernetFrame, MacAddr};

impl Pipeline {
    /// Direct routing: the frame re-addressed to the real server from this interface.
    #[inline]
    pub(super) fn direct(
        &self,
        buffer: &mut [u8],
        at: At,
        backend_mac: MacAddr,
    ) -> Result<(), DropReason> {
        let mut ethernet = EthernetFrame::new_checked(&mut buffer[at.start..at.end()])
            .map_err(|_| DropReason::Truncated)?;
        dr::rewrite(&mut ethernet, backend_mac, self.interface_mac);
        Ok(())
    }

    /// LVS-TUN: the frame encapsulated toward `backend` from the client side's address of the
    /// real server's family (IPv4-in-IPv4, or IPv6- and IPv4-in-IPv6). An IPv6 real server
    /// without an IPv6 address on the client side is `UnsupportedForwarding`. A frame too big
    /// to tunnel is answered with an ICMP error to `answer_to` (the client, at that instant)
    /// within the worker's rate limit ([`super::icmp_limit`]); `None`: never answered.
    #[expect(
        clippy::too_many_arguments,
        reason = "the frame, where it goes, and whom a too-big answer goes to"
    )]
    #[inline]
    pub(super) fn tunnel(
        &mut self,
        buffer: &mut [u8],
        at: At,
        parsed: &Parsed,
        backend: &Backend,
        backend_mac: MacAddr,
        table: &ServiceTable,
        answer_to: Option<(FlowAddr, Instant)>,
    ) -> Result<Encapsulated, DropReason> {
        let limit = &mut self.icmp_limit;
        let may_answer = move || answer_to.is_some_and(|(client, now)| limit.allow(client, now));
        let side = interfaces(table)?.client;
        let link = Link {
            src_mac: side.mac,
            dst_mac: backend_mac,
        };
        match backend.address {
            IpAddr::V4(address) => {
                let egress = TunnelEgress {
                    link,
                    src_addr: side.address,
                    mtu: side.mtu,
                };
                let result = tun::encapsulate_parsed(
                    buffer,
                    at.start,
                    at.len,
                    parsed,
                    address,
                    &egress,
                    self.tunnel_ident,
                    may_answer,
                )?;
                if let Encapsulated::Tunnelled { .. } = result {
                    self.tunnel_ident = self.tunnel_ident.wrapping_add(1);
                }
                Ok(result)
            }
            IpAddr::V6(address) => {
                let egress = TunnelEgress {
                    link,
                    src_addr: side.address6.ok_or(DropReason::UnsupportedForwarding)?,
                    mtu: side.mtu,
                };
                tun::encapsulate6_parsed(
                    buffer,
                    at.start,
                    at.len,
                    parsed,
                    address,
                    &egress,
                    flow_label(parsed),
                    may_answer,
                )
            }
        }
    }
}

/// The outer flow label of a frame's flow: from the hash of the client -> VIP flow, the one an
/// ICMP error about the flow's replies quotes reversed, so the error takes the flow's path.
#[inline]
fn flow_label(parsed: &Parsed) -> u32 {
    let key = match parsed.transport() {
        Transport::Flow(flow) => flow.key,
        Transport::IcmpError(quoted) => quoted.reversed(),
    };
    tun::flow_label(key.flow_hash())
}
