//! The frame rewrites whose result depends on this worker: direct routing from this interface,
//! and LVS-TUN encapsulation with this worker's outer IPv4 identification. (NAT's rewrites are
//! one call each to [`crate::rewrite::nat`] and [`crate::rewrite::icmp`].)
//!
//! What this module must not do: choose a backend or touch the connection table.

use super::shared::{interfaces, At, Pipeline};
use crate::counters::DropReason;
use crate::parse::Parsed;
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

    /// LVS-TUN: the frame encapsulated toward `backend` from the client side's address.
    #[inline]
    pub(super) fn tunnel(
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
}
