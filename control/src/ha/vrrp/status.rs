//! What the VRRP threads report: the events control acts on ([`HaEvent`]), each router's
//! counters and status snapshot for stats ([`VrrpStatus`]), the board where the IPv4 and IPv6
//! routers' states combine into the one state control follows ([`Board`]), and the handle that
//! reads the snapshots from another thread ([`VrrpStatusSource`]).
//!
//! A leaf shared by the threads that write these and the handle that reads them, so neither
//! imports the other. It does no I/O.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::machine::State as VrrpState;
use super::wire::Discard;

/// What the VRRP threads tell control. The first three are the routers' combined state (see
/// [`Board`]), sent when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaEvent {
    /// This director is the master (of every family with VIPs): add the VIPs, steer them in the
    /// XDP classifier, then call [`super::Vrrp::announce_vips`].
    BecameMaster,
    /// This director is a backup (also the first event after start): stop steering the VIPs
    /// and remove them, if held.
    BecameBackup,
    /// A link is down: the routers are silent and must hold nothing, as for
    /// [`HaEvent::BecameBackup`]; they start again as backup when the link returns.
    Fault,
    /// An advertisement from a router not heard before, or with a new priority.
    PeerSeen {
        /// Its primary address (IPv6: its link-local address).
        address: IpAddr,
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
    /// Gratuitous ARP frames sent (the IPv4 router).
    pub gratuitous_arps_sent: u64,
    /// Unsolicited neighbour advertisements sent (the IPv6 router).
    pub neighbour_advertisements_sent: u64,
    /// Discarded: shorter than the header or the addresses it announces.
    pub invalid_truncated: u64,
    /// Discarded: TTL (IPv6: hop limit) other than 255.
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
    /// Our primary address (the advertisements' source): IPv4, or the interface's link-local
    /// address for the IPv6 router.
    pub primary_address: IpAddr,
    /// The master as last heard (ourselves while master); `None` when unknown.
    pub master_address: Option<IpAddr>,
    /// The master's priority.
    pub master_priority: Option<u8>,
    /// Master_Adver_Interval: the master's advertisement interval as last heard.
    pub master_advert_interval: Duration,
    /// Master_Down_Interval: how long a backup waits for the master before taking over.
    pub master_down_interval: Duration,
    /// The VIPs advertised (all of this router's family).
    pub vips: Vec<IpAddr>,
    /// Counters.
    pub counters: VrrpCounters,
}

/// An address family, naming one of the two routers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// The IPv4 router: the IPv4 VIPs, to 224.0.0.18.
    Ipv4,
    /// The IPv6 router: the IPv6 VIPs, to ff02::12.
    Ipv6,
}

impl Family {
    /// Both, IPv4 first.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The family of `address`.
    pub fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// Its slot in per-family arrays: IPv4 0, IPv6 1.
    pub(super) const fn index(self) -> usize {
        match self {
            Family::Ipv4 => 0,
            Family::Ipv6 => 1,
        }
    }
}

/// The running routers' statuses, and the state they add up to for control.
///
/// Control follows one state per director (it holds all VIPs or none), while each family has
/// its own router, as keepalived runs one `vrrp_instance` per family. They combine so:
///
/// - [`VrrpState::Fault`] if any router is at fault (a link is down: both are, in practice);
/// - [`VrrpState::Master`] once every running router is master;
/// - [`VrrpState::Backup`] otherwise.
///
/// Both routers share priority, preemption, interval and VRID, so they are elected together
/// and the master of one is normally the master of the other. Requiring both means that if
/// one family's advertisements are lost (say, IPv6 multicast filtered), the director that
/// wins the other family's election serves, instead of two directors holding the VIPs at once.
/// It also means two directors of equal priority must not rely on the tie-breaker (the primary
/// address, whose order may differ between the families): give them different priorities.
#[derive(Debug, Default)]
pub struct Board {
    instances: [Option<VrrpStatus>; 2],
    /// The combined state last reported as an event.
    reported: Option<VrrpState>,
    /// When it was decided: what control measures its transition latency from.
    reported_at: Option<Instant>,
}

impl Board {
    /// `family`'s router's status, if it runs.
    pub fn get(&self, family: Family) -> Option<&VrrpStatus> {
        self.instances[family.index()].as_ref()
    }

    /// Records `family`'s router's status (it runs).
    pub(super) fn set(&mut self, family: Family, status: &VrrpStatus) {
        match &mut self.instances[family.index()] {
            Some(known) => known.clone_from(status),
            slot @ None => *slot = Some(status.clone()),
        }
    }

    /// Forgets `family`'s router (it stopped).
    pub(super) fn remove(&mut self, family: Family) {
        self.instances[family.index()] = None;
    }

    /// The running routers' statuses, IPv4 first.
    pub fn statuses(&self) -> impl Iterator<Item = &VrrpStatus> {
        self.instances.iter().flatten()
    }

    /// The state the running routers add up to (see [`Board`]); `None` when none runs (or
    /// every one is in Initialize).
    pub fn combined(&self) -> Option<VrrpState> {
        // A router in Initialize is stopping (or not started): it has no say.
        let states: Vec<VrrpState> = self
            .statuses()
            .map(|status| status.state)
            .filter(|&state| state != VrrpState::Initialize)
            .collect();
        if states.is_empty() {
            None
        } else if states.contains(&VrrpState::Fault) {
            Some(VrrpState::Fault)
        } else if states.iter().all(|&state| state == VrrpState::Master) {
            Some(VrrpState::Master)
        } else {
            Some(VrrpState::Backup)
        }
    }

    /// The event to send control if the combined state changed since the last one reported
    /// (a router's Initialize, which only a stopping router enters, tells control nothing).
    pub(super) fn report(&mut self) -> Option<HaEvent> {
        let combined = self.combined()?;
        if self.reported == Some(combined) {
            return None;
        }
        let event = match combined {
            VrrpState::Master => HaEvent::BecameMaster,
            VrrpState::Backup => HaEvent::BecameBackup,
            VrrpState::Fault => HaEvent::Fault,
            VrrpState::Initialize => return None,
        };
        self.reported = Some(combined);
        self.reported_at = Some(Instant::now());
        Some(event)
    }
}

/// Reads the running routers' [`VrrpStatus`] from any thread.
#[derive(Clone, Debug)]
pub struct VrrpStatusSource(pub(super) Arc<Mutex<Board>>);

impl VrrpStatusSource {
    /// A snapshot of state, master and counters of the IPv4 router, or of the IPv6 router when
    /// only it runs (see [`VrrpStatusSource::all`]).
    pub fn get(&self) -> VrrpStatus {
        let board = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        first_status(&board)
    }

    /// Every running router's snapshot, IPv4 first.
    pub fn all(&self) -> Vec<VrrpStatus> {
        let board = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        board.statuses().cloned().collect()
    }

    /// The state control follows (see [`Board`]).
    pub fn combined_state(&self) -> VrrpState {
        let board = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        board.combined().unwrap_or(VrrpState::Initialize)
    }

    /// When the routers last decided a new combined state (the moment its [`HaEvent`] was
    /// sent), if they have: what control measures a transition's latency from.
    pub fn decided_at(&self) -> Option<Instant> {
        let board = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        board.reported_at
    }
}

/// The IPv4 router's status, else the IPv6 router's. One always runs while a handle exists.
pub(super) fn first_status(board: &Board) -> VrrpStatus {
    board
        .statuses()
        .next()
        .cloned()
        .expect("a VRRP handle always has a router running")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(address: &str, state: VrrpState) -> VrrpStatus {
        VrrpStatus {
            state,
            interface: "eth0".into(),
            vrid: 51,
            priority: 100,
            primary_address: address.parse().unwrap(),
            master_address: None,
            master_priority: None,
            master_advert_interval: Duration::from_secs(1),
            master_down_interval: Duration::from_secs(3),
            vips: Vec::new(),
            counters: VrrpCounters::default(),
        }
    }

    #[test]
    fn the_decision_time_is_that_of_the_last_state_reported() {
        let mut board = Board::default();
        board.set(Family::Ipv4, &status("192.0.2.3", VrrpState::Backup));
        assert_eq!(board.reported_at, None);
        let before = Instant::now();
        assert_eq!(board.report(), Some(HaEvent::BecameBackup));
        let decided = board.reported_at.expect("a decision time");
        assert!(decided >= before);
        // No new state, no new decision.
        assert_eq!(board.report(), None);
        assert_eq!(board.reported_at, Some(decided));
        board.set(Family::Ipv4, &status("192.0.2.3", VrrpState::Master));
        assert_eq!(board.report(), Some(HaEvent::BecameMaster));
        assert!(board.reported_at.expect("a decision time") >= decided);
    }

    #[test]
    fn the_families_combine_into_one_state_reported_on_change() {
        let mut board = Board::default();
        assert_eq!(board.report(), None);
        board.set(Family::Ipv4, &status("192.0.2.3", VrrpState::Backup));
        assert_eq!(board.report(), Some(HaEvent::BecameBackup));
        board.set(Family::Ipv6, &status("fe80::3", VrrpState::Backup));
        assert_eq!(board.report(), None);
        // One family master is not enough: control would take the other's VIPs too.
        board.set(Family::Ipv4, &status("192.0.2.3", VrrpState::Master));
        assert_eq!(board.report(), None);
        board.set(Family::Ipv6, &status("fe80::3", VrrpState::Master));
        assert_eq!(board.report(), Some(HaEvent::BecameMaster));
        assert_eq!(board.report(), None);
        // A fault of either is a fault.
        board.set(Family::Ipv6, &status("fe80::3", VrrpState::Fault));
        assert_eq!(board.report(), Some(HaEvent::Fault));
        // The IPv6 router stops (its VIPs went): the IPv4 one alone decides.
        board.remove(Family::Ipv6);
        assert_eq!(board.report(), Some(HaEvent::BecameMaster));
        assert_eq!(
            board
                .statuses()
                .map(|s| s.primary_address)
                .collect::<Vec<_>>(),
            ["192.0.2.3".parse::<IpAddr>().unwrap()]
        );
        // A stopping router's Initialize tells control nothing.
        board.set(Family::Ipv4, &status("192.0.2.3", VrrpState::Initialize));
        assert_eq!(board.report(), None);
    }

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
