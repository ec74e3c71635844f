//! What the VRRP thread reports: the events control acts on ([`HaEvent`]), the router's
//! counters and status snapshot for stats ([`VrrpStatus`]), and the handle that reads the
//! snapshot from another thread ([`VrrpStatusSource`]).
//!
//! A leaf shared by the thread that writes these and the handle that reads them, so neither
//! imports the other. It does no I/O.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::machine::State as VrrpState;
use super::wire::Discard;

/// What the VRRP thread tells control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaEvent {
    /// This director is the master: add the VIPs, steer them in the XDP classifier, then call
    /// [`super::Vrrp::announce_vips`].
    BecameMaster,
    /// This director is a backup (also the first event after start): stop steering the VIPs
    /// and remove them, if held.
    BecameBackup,
    /// A link is down: the router is silent and must hold nothing, as for
    /// [`HaEvent::BecameBackup`]; it starts again as backup when the link returns.
    Fault,
    /// An advertisement from a router not heard before, or with a new priority.
    PeerSeen {
        /// Its primary address.
        address: Ipv4Addr,
        /// The priority it advertised.
        priority: u8,
    },
}

/// Counters of one VRRP router, since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VrrpCounters {
    /// Advertisements sent (one per destination), priority-0 ones included.
    pub adverts_sent: u64,
    /// Valid advertisements for our VRID.
    pub adverts_received: u64,
    /// Priority-0 advertisements sent (resigning on shutdown).
    pub priority_zero_sent: u64,
    /// Priority-0 advertisements received.
    pub priority_zero_received: u64,
    /// State changes.
    pub transitions: u64,
    /// Times this router became master.
    pub became_master: u64,
    /// Advertisements the kernel refused (say, while the link is down).
    pub send_errors: u64,
    /// Valid advertisements of other virtual routers on the segment, ignored.
    pub other_vrid: u64,
    /// Advertisements for our VRID whose address list differs from ours: accepted (two
    /// directors reload at different times), but keepalived would drop them.
    pub address_list_mismatch: u64,
    /// Gratuitous ARP frames sent.
    pub gratuitous_arps_sent: u64,
    /// Discarded: shorter than the header or the addresses it announces.
    pub invalid_truncated: u64,
    /// Discarded: TTL other than 255.
    pub invalid_ttl: u64,
    /// Discarded: VRRP version other than 3.
    pub invalid_version: u64,
    /// Discarded: a type other than ADVERTISEMENT.
    pub invalid_type: u64,
    /// Discarded: bad checksum.
    pub invalid_checksum: u64,
    /// Discarded: advertisement interval 0.
    pub invalid_interval: u64,
    /// Discarded: not an IPv4 VRRP datagram at all.
    pub invalid_other: u64,
}

impl VrrpCounters {
    /// Every discarded datagram.
    pub fn invalid(&self) -> u64 {
        self.invalid_truncated
            + self.invalid_ttl
            + self.invalid_version
            + self.invalid_type
            + self.invalid_checksum
            + self.invalid_interval
            + self.invalid_other
    }

    pub(super) fn count_discard(&mut self, discard: Discard) -> u64 {
        let counter = match discard {
            Discard::Truncated => &mut self.invalid_truncated,
            Discard::NotVrrp => &mut self.invalid_other,
            Discard::BadTtl(_) => &mut self.invalid_ttl,
            Discard::BadVersion(_) => &mut self.invalid_version,
            Discard::BadType(_) => &mut self.invalid_type,
            Discard::BadChecksum => &mut self.invalid_checksum,
            Discard::ZeroInterval => &mut self.invalid_interval,
        };
        *counter += 1;
        *counter
    }
}

/// A snapshot of the router, for stats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpStatus {
    /// Where the router is.
    pub state: VrrpState,
    /// The interface advertisements use.
    pub interface: String,
    /// VRID.
    pub vrid: u8,
    /// Our priority.
    pub priority: u8,
    /// Our primary address (the advertisements' source).
    pub primary_address: Ipv4Addr,
    /// The master as last heard (ourselves while master); `None` when unknown.
    pub master_address: Option<Ipv4Addr>,
    /// The master's priority.
    pub master_priority: Option<u8>,
    /// Master_Adver_Interval: the master's advertisement interval as last heard.
    pub master_advert_interval: Duration,
    /// Master_Down_Interval: how long a backup waits for the master before taking over.
    pub master_down_interval: Duration,
    /// The VIPs advertised.
    pub vips: Vec<Ipv4Addr>,
    /// Counters.
    pub counters: VrrpCounters,
}

/// Reads a running router's [`VrrpStatus`] from any thread.
#[derive(Clone, Debug)]
pub struct VrrpStatusSource(pub(super) Arc<Mutex<VrrpStatus>>);

impl VrrpStatusSource {
    /// A snapshot of state, master and counters.
    pub fn get(&self) -> VrrpStatus {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discards_are_counted_by_reason() {
        let mut counters = VrrpCounters::default();
        for discard in [
            Discard::Truncated,
            Discard::NotVrrp,
            Discard::BadTtl(64),
            Discard::BadVersion(2),
            Discard::BadType(2),
            Discard::BadChecksum,
            Discard::ZeroInterval,
            Discard::BadChecksum,
        ] {
            counters.count_discard(discard);
        }
        assert_eq!(counters.invalid(), 8);
        assert_eq!(counters.invalid_checksum, 2);
        assert_eq!(counters.invalid_ttl, 1);
        assert_eq!(counters.invalid_version, 1);
    }
}
