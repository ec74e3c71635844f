//! What every stage of the pipeline shares: the [`Pipeline`]'s state (the struct; its methods
//! live with the stage they serve), where the frame being processed is in its buffer, where a
//! frame leaves ([`Egress`]) and the [`Verdict`]; and two helpers of the NAT and TUN paths. A
//! leaf: every other file of the pipeline imports from here, and this imports none of them.
//!
//! What this module must not do: process frames.

use crate::conntrack::{ConnTable, Connection};
use crate::counters::{bump, BackendCounters, DropReason};
use crate::service::{Interfaces, ServiceTable};
use crate::sync::WorkerSync;
use crate::wire::MacAddr;

use super::icmp_limit::IcmpErrorLimit;

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

/// One worker's pipeline state: its connection table and identity.
pub struct Pipeline {
    pub(super) worker: usize,
    pub(super) interface_mac: MacAddr,
    pub(super) connections: ConnTable,
    /// Outer IPv4 identification of the next tunnelled packet.
    pub(super) tunnel_ident: u16,
    /// State sync with other directors: the export and import queues, if enabled.
    pub(super) sync: WorkerSync,
    /// The refresh period of `sync`, in whole seconds (at least one).
    pub(super) sync_refresh: u32,
    /// The per-client rate limit of the ICMP errors this worker sends (LVS-TUN too big).
    pub(super) icmp_limit: IcmpErrorLimit,
}

/// The frame being processed: where it is in the buffer.
#[derive(Clone, Copy, Debug)]
pub(super) struct At {
    pub(super) start: usize,
    pub(super) len: usize,
}

impl At {
    #[inline]
    pub(super) const fn end(self) -> usize {
        self.start + self.len
    }

    #[inline]
    pub(super) const fn tx(self, egress: Egress) -> Verdict {
        Verdict::Tx {
            start: self.start,
            len: self.len,
            egress,
        }
    }
}

/// The table's interfaces, which NAT and TUN need.
#[inline]
pub(super) fn interfaces(table: &ServiceTable) -> Result<&Interfaces, DropReason> {
    table
        .interfaces
        .as_ref()
        .ok_or(DropReason::UnsupportedForwarding)
}

/// Counts a frame from the real server of `connection` sent back toward the client.
#[inline]
pub(super) fn count_out(gauges: &[BackendCounters], connection: &Connection, at: At) {
    if let Some(stats) = gauges.get(connection.counter_slot as usize) {
        bump(&stats.packets_out, 1);
        bump(&stats.bytes_out, at.len as u64);
    }
}
