//! The VRRP thread of one address family: owns the raw VRRP socket (IPv4 or IPv6) and the frame
//! socket for its announcements (gratuitous ARP, unsolicited neighbour advertisements), runs
//! the state machine ([`super::machine`]) on its timers, on advertisements heard and on the
//! handle's [`Command`]s, and reports through [`HaEvent`]s and its [`VrrpStatus`] on the shared
//! [`Board`], where the two families' states combine into the one control follows.
//!
//! It sleeps in `poll` until a datagram, a command or its next timer; nothing spins. It must
//! not add or remove VIPs (control does, on the events) and never blocks on control.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::{debug, info, warn};

use super::machine::{Action, Heard, Router, Settings, State as VrrpState};
use super::socket::{self, AdvertSocket, FrameSocket};
use super::status::{Board, Family, HaEvent, VrrpStatus};
use super::{wire, wire6};

/// How often the thread checks that its interfaces are up and have a carrier.
pub const LINK_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// When the gratuitous ARP (and, for IPv6 VIPs, unsolicited neighbour advertisement) rounds go
/// out after [`super::Vrrp::announce_vips`]: at once, then again
/// after 1 s and 5 s. Spaced rounds survive what back-to-back copies do not: a frame lost to a
/// busy or still-learning switch port (keepalived sends its `garp_master_repeat` burst at once
/// and again after `garp_master_delay`, 5 s).
pub const GRATUITOUS_ARP_ROUNDS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(5),
];
/// Most datagrams read per wake-up, so that a flood cannot starve the timers.
const MAX_DATAGRAMS_PER_WAKE: usize = 64;
/// Most distinct peers remembered for [`HaEvent::PeerSeen`].
const MAX_TRACKED_PEERS: usize = 64;
/// Receive buffer: an IPv4 header with options and 255 addresses fit several times over, an
/// IPv6 message with 255 addresses (4088 bytes) once.
const RECEIVE_BUFFER: usize = 4096;
/// Pause after an unexpected `poll` failure, so that a persistent one cannot spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// What the handle asks of the thread.
#[derive(Debug)]
pub(super) enum Command {
    Update {
        settings: Settings,
        vips: Vec<IpAddr>,
    },
    Announce,
    Shutdown,
}

/// Centiseconds for the Max Adver Int field.
fn centiseconds(interval: Duration) -> u16 {
    let centiseconds = interval.as_millis() / 10;
    u16::try_from(centiseconds)
        .unwrap_or(wire::MAX_ADVERT_INTERVAL)
        .clamp(1, wire::MAX_ADVERT_INTERVAL)
}

/// The VRRP thread's state: the router, its sockets and what it reports.
pub(super) struct RouterThread {
    /// Which router of the two this is: every address below is of this family.
    pub(super) family: Family,
    pub(super) router: Router,
    pub(super) socket: AdvertSocket,
    pub(super) frames: FrameSocket,
    pub(super) wake: UnixDatagram,
    pub(super) commands: Receiver<Command>,
    pub(super) events: Sender<HaEvent>,
    pub(super) board: Arc<Mutex<Board>>,
    /// The thread's own copy, published after every wake-up.
    pub(super) status: VrrpStatus,
    /// Interfaces whose links must be up: the VRRP interface, then the VIPs' and any others
    /// asked for, each once.
    pub(super) interfaces: Vec<String>,
    pub(super) vip_mac: [u8; 6],
    pub(super) vips: Vec<IpAddr>,
    /// 224.0.0.18 or the unicast peers; ff02::12.
    pub(super) destinations: Vec<IpAddr>,
    /// Priority last heard from each peer, for [`HaEvent::PeerSeen`].
    pub(super) peers: HashMap<IpAddr, u8>,
    /// When the pending announcement rounds are due.
    pub(super) gratuitous_arps: VecDeque<Instant>,
    /// The last mismatching address list warned about, so it is told once.
    pub(super) warned_mismatch: Option<(IpAddr, Vec<IpAddr>)>,
    /// Whether a failure to read a link's state was told, so it is told once per outage.
    pub(super) warned_link: bool,
}

impl RouterThread {
    /// Runs the router until [`Command::Shutdown`].
    pub(super) fn run(mut self) {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        let start = Instant::now();
        let actions = if self.links_up() {
            self.router.startup(start)
        } else {
            self.router.link_down()
        };
        self.perform(&actions);
        let mut next_link_check = start + LINK_CHECK_INTERVAL;
        self.publish();
        loop {
            let now = Instant::now();
            let mut wake_at = next_link_check;
            if let Some(deadline) = self.router.next_deadline() {
                wake_at = wake_at.min(deadline);
            }
            if let Some(&round) = self.gratuitous_arps.front() {
                wake_at = wake_at.min(round);
            }
            let readable = match socket::wait(
                self.socket.as_fd(),
                self.wake.as_fd(),
                wake_at.saturating_duration_since(now),
            ) {
                Ok(readable) => readable,
                Err(error) => {
                    warn!(%error, "VRRP poll failed");
                    thread::sleep(ERROR_BACKOFF);
                    socket::Readable::default()
                }
            };
            if readable.wake {
                let mut byte = [0u8; 64];
                while self.wake.recv(&mut byte).is_ok() {}
            }
            // Commands are read on every wake-up: the byte that woke us may have been consumed
            // by an earlier iteration's drain.
            while let Ok(command) = self.commands.try_recv() {
                match command {
                    Command::Shutdown => {
                        let actions = self.router.shutdown();
                        self.perform(&actions);
                        self.publish();
                        info!(vrid = self.status.vrid, "VRRP stopped");
                        return;
                    }
                    Command::Update { settings, vips } => self.update(settings, vips),
                    Command::Announce => self.schedule_gratuitous_arps(Instant::now()),
                }
            }
            if readable.socket {
                self.receive_all(&mut buffer);
            }
            let now = Instant::now();
            if now >= next_link_check {
                let actions = if self.links_up() {
                    self.router.link_up(now)
                } else {
                    self.router.link_down()
                };
                self.perform(&actions);
                next_link_check = now + LINK_CHECK_INTERVAL;
            }
            let actions = self.router.poll(now);
            self.perform(&actions);
            self.send_due_gratuitous_arps(now);
            self.publish();
        }
    }

    fn receive_all(&mut self, buffer: &mut [u8]) {
        for _ in 0..MAX_DATAGRAMS_PER_WAKE {
            let parsed = match receive_one(&self.socket, buffer) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return,
                Err(error) => {
                    warn!(%error, "VRRP receive failed");
                    return;
                }
            };
            self.handle_datagram(parsed, Instant::now());
        }
    }

    fn handle_datagram(
        &mut self,
        parsed: Result<wire::Received<IpAddr>, wire::Discard>,
        now: Instant,
    ) {
        let received = match parsed {
            Ok(received) => received,
            Err(discard) => {
                let count = self.status.counters.count_discard(discard);
                if count.is_power_of_two() {
                    warn!(
                        reason = discard.name(),
                        ?discard,
                        count,
                        "VRRP packet discarded"
                    );
                }
                return;
            }
        };
        if received.source == self.status.primary_address {
            return; // our own, looped back by some other path
        }
        let advert = &received.advert;
        if advert.vrid != self.status.vrid {
            self.status.counters.other_vrid += 1;
            if self.status.counters.other_vrid.is_power_of_two() {
                debug!(vrid = advert.vrid, source = %received.source, "advertisement for another VRID");
            }
            return;
        }
        self.status.counters.adverts_received += 1;
        if advert.priority == 0 {
            self.status.counters.priority_zero_received += 1;
        }
        self.check_addresses(received.source, &advert.addresses);
        self.note_peer(received.source, advert.priority);
        let heard = Heard {
            source: received.source,
            priority: advert.priority,
            advert_interval: Duration::from_millis(10 * u64::from(advert.max_advert_interval)),
        };
        let actions = self.router.receive(now, heard);
        self.perform(&actions);
    }

    /// RFC 5798 7.1 lets a router drop advertisements whose addresses differ from its own; we
    /// count and tell instead, because two directors reloading a new service at different times
    /// differ for a moment, and dropping would make both masters.
    fn check_addresses(&mut self, source: IpAddr, addresses: &[IpAddr]) {
        let mut theirs = addresses.to_vec();
        theirs.sort_unstable();
        theirs.dedup();
        if theirs == self.vips {
            self.warned_mismatch = None;
            return;
        }
        self.status.counters.address_list_mismatch += 1;
        let key = (source, theirs);
        if self.warned_mismatch.as_ref() != Some(&key) {
            warn!(
                %source,
                theirs = ?key.1,
                ours = ?self.vips,
                "VRRP peer advertises other addresses (keepalived drops such advertisements)"
            );
            self.warned_mismatch = Some(key);
        }
    }

    fn note_peer(&mut self, address: IpAddr, priority: u8) {
        let known = self.peers.get(&address);
        if known == Some(&priority) {
            return;
        }
        if known.is_none() && self.peers.len() >= MAX_TRACKED_PEERS {
            return;
        }
        self.peers.insert(address, priority);
        info!(peer = %address, priority, "VRRP peer heard");
        let _ = self.events.send(HaEvent::PeerSeen { address, priority });
    }

    fn update(&mut self, settings: Settings, vips: Vec<IpAddr>) {
        self.router.reconfigure(settings);
        self.status.priority = settings.priority;
        if vips != self.vips {
            info!(?vips, "VRRP addresses changed");
            self.vips.clone_from(&vips);
            self.status.vips = vips;
        }
    }

    fn perform(&mut self, actions: &[Action]) {
        for &action in actions {
            match action {
                Action::SendAdvert { priority } => self.advertise(priority),
                Action::Transition { from, to } => self.transitioned(from, to),
            }
        }
    }

    fn advertise(&mut self, priority: u8) {
        let advert = wire::Advertisement {
            vrid: self.status.vrid,
            priority,
            max_advert_interval: centiseconds(self.router.settings().advert_interval),
            addresses: self.vips.clone(),
        };
        for index in 0..self.destinations.len() {
            let destination = self.destinations[index];
            match send_advert(
                &self.socket,
                &advert,
                self.status.primary_address,
                destination,
            ) {
                Ok(()) => {
                    self.status.counters.adverts_sent += 1;
                    if priority == 0 {
                        self.status.counters.priority_zero_sent += 1;
                    }
                }
                Err(error) => {
                    self.status.counters.send_errors += 1;
                    if self.status.counters.send_errors.is_power_of_two() {
                        warn!(%error, %destination, count = self.status.counters.send_errors, "VRRP advertisement not sent");
                    }
                }
            }
        }
    }

    fn transitioned(&mut self, from: VrrpState, to: VrrpState) {
        self.status.counters.transitions += 1;
        let master = self.router.master();
        info!(
            vrid = self.status.vrid,
            family = ?self.family,
            from = from.name(),
            to = to.name(),
            master = ?master.map(|(address, _)| address),
            "VRRP state changed"
        );
        if to == VrrpState::Master {
            self.status.counters.became_master += 1;
        } else {
            self.gratuitous_arps.clear();
        }
        self.status.state = to;
        // The event is sent under the board's lock, so that events from the two routers'
        // threads leave in the order their combined states were computed.
        let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
        board.set(self.family, &self.status);
        if let Some(event) = board.report() {
            let _ = self.events.send(event);
        }
    }

    fn schedule_gratuitous_arps(&mut self, now: Instant) {
        if self.router.state() != VrrpState::Master {
            debug!(family = ?self.family, "announcement asked for while not master: ignored");
            return;
        }
        self.gratuitous_arps = GRATUITOUS_ARP_ROUNDS
            .iter()
            .map(|&after| now + after)
            .collect();
    }

    fn send_due_gratuitous_arps(&mut self, now: Instant) {
        while self.gratuitous_arps.front().is_some_and(|&at| at <= now) {
            self.gratuitous_arps.pop_front();
            for index in 0..self.vips.len() {
                let vip = self.vips[index];
                match announce(&self.frames, self.vip_mac, vip) {
                    Ok(()) if vip.is_ipv4() => self.status.counters.gratuitous_arps_sent += 1,
                    Ok(()) => self.status.counters.neighbour_advertisements_sent += 1,
                    Err(error) => warn!(%error, %vip, "VIP announcement not sent"),
                }
            }
        }
    }

    /// Whether every interface is up with a carrier. An interface whose state cannot be read
    /// (it was deleted) counts as down.
    fn links_up(&mut self) -> bool {
        for interface in &self.interfaces {
            match socket::link_is_up(self.socket.as_fd(), interface) {
                Ok(true) => {}
                Ok(false) => return false,
                Err(error) => {
                    if !self.warned_link {
                        warn!(%error, "cannot read the link state; counting it down");
                        self.warned_link = true;
                    }
                    return false;
                }
            }
        }
        self.warned_link = false;
        true
    }

    fn publish(&mut self) {
        self.status.state = self.router.state();
        let master = self.router.master();
        self.status.master_address = master.map(|(address, _)| address);
        self.status.master_priority = master.map(|(_, priority)| priority);
        self.status.master_advert_interval = self.router.master_advert_interval();
        self.status.master_down_interval = self.router.master_down_interval();
        let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
        board.set(self.family, &self.status);
    }
}

/// One datagram from `socket`, parsed in its family's format; `None` when nothing waits.
fn receive_one(
    socket: &AdvertSocket,
    buffer: &mut [u8],
) -> std::io::Result<Option<Result<wire::Received<IpAddr>, wire::Discard>>> {
    Ok(match socket {
        AdvertSocket::V4(socket) => socket
            .receive(buffer)?
            .map(|len| wire::parse_datagram(&buffer[..len]).map(wire::Received::into_ip)),
        AdvertSocket::V6(socket) => socket.receive(buffer)?.map(|got| {
            wire6::parse_message(
                &buffer[..got.len],
                got.source,
                got.destination,
                got.hop_limit,
            )
            .map(wire::Received::into_ip)
        }),
    })
}

/// Sends `advert` from `source` to `destination` through `socket`, in its family's format
/// (only `socket`'s family's VIPs go in).
fn send_advert(
    socket: &AdvertSocket,
    advert: &wire::Advertisement<IpAddr>,
    source: IpAddr,
    destination: IpAddr,
) -> std::io::Result<()> {
    fn with<A>(advert: &wire::Advertisement<IpAddr>, addresses: Vec<A>) -> wire::Advertisement<A> {
        wire::Advertisement {
            vrid: advert.vrid,
            priority: advert.priority,
            max_advert_interval: advert.max_advert_interval,
            addresses,
        }
    }
    match (socket, source, destination) {
        (AdvertSocket::V4(socket), IpAddr::V4(source), IpAddr::V4(destination)) => {
            let advert = with(advert, ipv4_only(&advert.addresses));
            socket.send(&advert.to_datagram(source, destination), destination)
        }
        (AdvertSocket::V6(socket), IpAddr::V6(source), IpAddr::V6(destination)) => {
            let advert = with(advert, ipv6_only(&advert.addresses));
            socket.send(&advert.to_message(source, destination), destination)
        }
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "advertisement addresses of another family than the socket's",
        )),
    }
}

/// Announces `vip` at `mac`: a gratuitous ARP for IPv4, an unsolicited NA for IPv6.
pub(super) fn announce(frames: &FrameSocket, mac: [u8; 6], vip: IpAddr) -> std::io::Result<()> {
    match vip {
        IpAddr::V4(vip) => frames.send(&wire::gratuitous_arp(mac, vip)),
        IpAddr::V6(vip) => frames.send(&wire6::unsolicited_neighbour_advertisement(mac, vip)),
    }
}

fn ipv4_only(addresses: &[IpAddr]) -> Vec<Ipv4Addr> {
    addresses
        .iter()
        .filter_map(|address| match address {
            IpAddr::V4(address) => Some(*address),
            IpAddr::V6(_) => None,
        })
        .collect()
}

fn ipv6_only(addresses: &[IpAddr]) -> Vec<Ipv6Addr> {
    addresses
        .iter()
        .filter_map(|address| match address {
            IpAddr::V6(address) => Some(*address),
            IpAddr::V4(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_ADVERT_INTERVAL;

    #[test]
    fn advert_interval_in_centiseconds() {
        assert_eq!(centiseconds(Duration::from_millis(10)), 1);
        assert_eq!(centiseconds(Duration::from_millis(100)), 10);
        assert_eq!(centiseconds(Duration::from_secs(1)), 100);
        assert_eq!(centiseconds(MAX_ADVERT_INTERVAL), 4095);
        assert_eq!(centiseconds(Duration::from_secs(100)), 4095);
    }
}
