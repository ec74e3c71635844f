//! VRRPv3 (RFC 5798) for IPv4: the director as one router of a virtual router, with other
//! directors or keepalived, so that the VIPs move to a backup director when the master fails.
//!
//! - [`wire`]: the advertisement's bytes, RFC 5798 7.1's packet checks, the gratuitous ARP frame.
//! - [`machine`]: the state machine of section 6, pure, driven by an explicit clock.
//! - this module: [`Vrrp`], a thread that owns a raw IPv4 socket for protocol 112 and runs the
//!   state machine, and the handle control keeps: events on a channel ([`HaEvent`]), a status
//!   snapshot for stats ([`VrrpStatus`]), reload ([`Vrrp::update`]) and a clean stop that hands
//!   over at once ([`Vrrp::shutdown`]).
//!
//! The thread advertises to 224.0.0.18 (or to `unicast_peers`) out of `ha.interface` with TTL
//! 255, from that interface's primary address, carrying every VIP (all move together). It
//! sleeps in `poll` until a datagram, a command or its next timer; nothing spins. It also
//! watches the links of the VRRP interface and of the interface the VIPs live on, every
//! [`LINK_CHECK_INTERVAL`], and goes to [`VrrpState::Fault`] while either is down.
//!
//! What this module does not do: add or remove the VIPs, or steer them in the XDP classifier.
//! Those are control's, on the events; the thread only announces the VIPs with gratuitous ARP
//! when control says they are in place ([`Vrrp::announce_vips`]), so that no client is pointed
//! at a director before it can serve. Like keepalived without `use_vmac`, the director answers
//! for the VIPs with its own MAC, not the virtual router MAC 00-00-5E-00-01-{VRID}: the
//! gratuitous ARPs are what move clients' caches. Accept_Mode (6.1) has no meaning here: the
//! VIPs are service addresses, served by the data plane.

pub mod machine;
#[expect(
    unsafe_code,
    reason = "raw IP and AF_PACKET sockets, poll and SIOCGIFFLAGS; every block has a SAFETY comment"
)]
mod socket;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::{debug, info, warn};

use crate::config::{HaConfig, MAX_ADVERT_INTERVAL, MIN_ADVERT_INTERVAL};
use crate::netlink::{self, Netlink, NetlinkError};
pub use machine::State as VrrpState;
use machine::{Action, Heard, Router, Settings};
use socket::{FrameSocket, VrrpSocket};
use wire::Discard;

/// How often the thread checks that its interfaces are up and have a carrier.
pub const LINK_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// When the gratuitous ARP rounds go out after [`Vrrp::announce_vips`]: at once, then again
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
/// Receive buffer: an IPv4 header with options and 255 addresses fit several times over.
const RECEIVE_BUFFER: usize = 4096;
/// Pause after an unexpected `poll` failure, so that a persistent one cannot spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// What the VRRP thread tells control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaEvent {
    /// This director is the master: add the VIPs, steer them in the XDP classifier, then call
    /// [`Vrrp::announce_vips`].
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

    fn count_discard(&mut self, discard: Discard) -> u64 {
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

/// Sends one gratuitous ARP for each of `addresses` out of `interface`, from its MAC: for
/// addresses that move with mastership but are not advertised (the NAT real servers' gateway
/// on the server side). Returns how many frames went out.
pub fn announce_addresses(interface: &str, addresses: &[Ipv4Addr]) -> Result<usize, VrrpError> {
    let ifindex = netlink::interface_index(interface)?;
    let mac = netlink::interface_mac(interface)?;
    let frames = FrameSocket::open(ifindex).map_err(|source| VrrpError::Io {
        operation: format!("open the gratuitous ARP socket on {interface:?}"),
        source,
    })?;
    for &address in addresses {
        frames
            .send(&wire::gratuitous_arp(mac, address))
            .map_err(|source| VrrpError::Io {
                operation: format!("send a gratuitous ARP for {address} on {interface:?}"),
                source,
            })?;
    }
    Ok(addresses.len())
}

/// The VRRP interface, then the VIPs' and the others, each once.
fn watched_links(vrrp_interface: &str, vip_interface: &str, links: &[String]) -> Vec<String> {
    let mut watched = vec![vrrp_interface.to_owned()];
    for link in std::iter::once(vip_interface).chain(links.iter().map(String::as_str)) {
        if !watched.iter().any(|known| known == link) {
            watched.push(link.to_owned());
        }
    }
    watched
}

/// Reads a running router's [`VrrpStatus`] from any thread.
#[derive(Clone, Debug)]
pub struct VrrpStatusSource(Arc<Mutex<VrrpStatus>>);

impl VrrpStatusSource {
    /// A snapshot of state, master and counters.
    pub fn get(&self) -> VrrpStatus {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Why VRRP could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    /// Looking up an interface failed.
    #[error(transparent)]
    Interface(#[from] NetlinkError),
    /// The VRRP interface has no IPv4 address of its own to advertise from.
    #[error(
        "interface {interface:?} has no IPv4 address besides the VIPs to send VRRP \
         advertisements from"
    )]
    NoAddress {
        /// The interface.
        interface: String,
    },
    /// A socket could not be set up.
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// An advertisement carries 1 to 255 addresses.
    #[error("an advertisement carries 1 to 255 VIPs, got {0}")]
    VipCount(usize),
    /// A setting the state machine cannot run with.
    #[error("ha.{key} = {value}: {expected}")]
    InvalidSetting {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A reload changed a setting that makes it another router.
    #[error("ha.{key} changed from {old} to {new}: that takes a restart")]
    NeedsRestart {
        /// The key.
        key: &'static str,
        /// The running value.
        old: String,
        /// The new value.
        new: String,
    },
    /// The VRRP thread is gone (it panicked).
    #[error("the VRRP thread has stopped")]
    Stopped,
}

/// The running VRRP router: a thread and the handle control keeps. Dropping it shuts it down
/// as [`Vrrp::shutdown`] does.
#[derive(Debug)]
pub struct Vrrp {
    config: HaConfig,
    primary_address: Ipv4Addr,
    commands: Sender<Command>,
    wake: UnixDatagram,
    events: Receiver<HaEvent>,
    status: Arc<Mutex<VrrpStatus>>,
    thread: Option<JoinHandle<()>>,
}

/// What the handle asks of the thread.
#[derive(Debug)]
enum Command {
    Update {
        settings: Settings,
        vips: Vec<Ipv4Addr>,
    },
    Announce,
    Shutdown,
}

impl Vrrp {
    /// Starts the router for `config`, advertising `vips`, which live on `vip_interface` (where
    /// the gratuitous ARPs go; usually `ha.interface` itself). Opens its sockets in the calling
    /// thread's network namespace, then starts the thread, which goes from Initialize to
    /// Backup (or to Fault if a link is down) and sends [`HaEvent::BecameBackup`].
    pub fn start(
        config: &HaConfig,
        vip_interface: &str,
        vips: &[Ipv4Addr],
    ) -> Result<Vrrp, VrrpError> {
        Self::start_watching(config, vip_interface, vips, &[])
    }

    /// [`Vrrp::start`], also going to Fault while any of `links` has no link (a NAT director's
    /// server side: a master that cannot reach its real servers must hand over).
    pub fn start_watching(
        config: &HaConfig,
        vip_interface: &str,
        vips: &[Ipv4Addr],
        links: &[String],
    ) -> Result<Vrrp, VrrpError> {
        let vips = normalize_vips(vips)?;
        check_settings(config)?;
        let ifindex = netlink::interface_index(&config.interface)?;
        let primary_address = primary_address(&config.interface, ifindex, &vips)?;
        let vip_ifindex = netlink::interface_index(vip_interface)?;
        let vip_mac = netlink::interface_mac(vip_interface)?;
        let multicast = config.unicast_peers.is_empty();
        let socket = VrrpSocket::open(&config.interface, ifindex, multicast).map_err(|source| {
            VrrpError::Io {
                operation: format!("open the VRRP socket on {:?}", config.interface),
                source,
            }
        })?;
        let frames = FrameSocket::open(vip_ifindex).map_err(|source| VrrpError::Io {
            operation: format!("open the gratuitous ARP socket on {vip_interface:?}"),
            source,
        })?;
        let (wake, wake_receiver) = UnixDatagram::pair()
            .and_then(|(a, b)| {
                a.set_nonblocking(true)?;
                b.set_nonblocking(true)?;
                Ok((a, b))
            })
            .map_err(|source| VrrpError::Io {
                operation: "create the VRRP wake-up socket pair".into(),
                source,
            })?;
        let settings = settings(config, primary_address);
        let router = Router::new(settings);
        let status = VrrpStatus {
            state: VrrpState::Initialize,
            interface: config.interface.clone(),
            vrid: config.vrid,
            priority: config.priority,
            primary_address,
            master_address: None,
            master_priority: None,
            master_advert_interval: router.master_advert_interval(),
            master_down_interval: router.master_down_interval(),
            vips: vips.clone(),
            counters: VrrpCounters::default(),
        };
        let shared = Arc::new(Mutex::new(status.clone()));
        let (commands, command_receiver) = crossbeam_channel::unbounded();
        let (event_sender, events) = crossbeam_channel::unbounded();
        let destinations = if multicast {
            vec![wire::MULTICAST_GROUP]
        } else {
            config.unicast_peers.clone()
        };
        let worker = Worker {
            router,
            socket,
            frames,
            wake: wake_receiver,
            commands: command_receiver,
            events: event_sender,
            shared: Arc::clone(&shared),
            status,
            interfaces: watched_links(&config.interface, vip_interface, links),
            vip_mac,
            vips,
            destinations,
            peers: HashMap::new(),
            gratuitous_arps: VecDeque::new(),
            warned_mismatch: None,
            warned_link: false,
        };
        let thread = thread::Builder::new()
            .name(format!("vrrp-{}", config.vrid))
            .spawn(move || worker.run())
            .map_err(|source| VrrpError::Io {
                operation: "start the VRRP thread".into(),
                source,
            })?;
        info!(
            vrid = config.vrid,
            priority = config.priority,
            interface = %config.interface,
            source = %primary_address,
            advert_interval = ?config.advert_interval,
            preempt = config.preempt,
            multicast,
            "VRRP started"
        );
        Ok(Vrrp {
            config: config.clone(),
            primary_address,
            commands,
            wake,
            events,
            status: shared,
            thread: Some(thread),
        })
    }

    /// The events, in order. Control selects on this next to its other channels.
    pub fn events(&self) -> &Receiver<HaEvent> {
        &self.events
    }

    /// A snapshot of state, master and counters.
    pub fn status(&self) -> VrrpStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A handle that reads the status from another thread (the stats socket's).
    pub fn status_source(&self) -> VrrpStatusSource {
        VrrpStatusSource(Arc::clone(&self.status))
    }

    /// The address advertisements come from.
    pub fn primary_address(&self) -> Ipv4Addr {
        self.primary_address
    }

    /// Announces the VIPs with gratuitous ARP, in the rounds of [`GRATUITOUS_ARP_ROUNDS`], as
    /// long as the router stays master. Call it once the VIPs are added and steered after
    /// [`HaEvent::BecameMaster`]. Returns at once.
    pub fn announce_vips(&self) -> Result<(), VrrpError> {
        self.send(Command::Announce)
    }

    /// Applies a reload: new VIPs, priority, advertisement interval and preemption, without
    /// leaving the current state (a reload never hands over by itself; a lower priority or a
    /// changed preemption takes effect through the next advertisements, as the RFC's rules
    /// say). A changed interface, VRID or unicast peer list is another router: that is
    /// [`VrrpError::NeedsRestart`], and nothing changes.
    pub fn update(&mut self, config: &HaConfig, vips: &[Ipv4Addr]) -> Result<(), VrrpError> {
        let vips = normalize_vips(vips)?;
        check_settings(config)?;
        let running = &self.config;
        if config.interface != running.interface {
            return Err(needs_restart(
                "interface",
                &running.interface,
                &config.interface,
            ));
        }
        if config.vrid != running.vrid {
            return Err(needs_restart("vrid", &running.vrid, &config.vrid));
        }
        if config.unicast_peers != running.unicast_peers {
            return Err(needs_restart(
                "unicast_peers",
                &format!("{:?}", running.unicast_peers),
                &format!("{:?}", config.unicast_peers),
            ));
        }
        self.send(Command::Update {
            settings: settings(config, self.primary_address),
            vips,
        })?;
        self.config = config.clone();
        Ok(())
    }

    /// [`Vrrp::update`] with the running settings and new VIPs.
    pub fn update_vips(&mut self, vips: &[Ipv4Addr]) -> Result<(), VrrpError> {
        let config = self.config.clone();
        self.update(&config, vips)
    }

    /// Stops the router: a master sends a priority-0 advertisement first, so a backup takes over
    /// after its Skew_Time rather than a whole Master_Down_Interval. Waits for the thread and
    /// returns the last status. The caller removes the VIPs it holds.
    pub fn shutdown(mut self) -> VrrpStatus {
        self.stop();
        self.status()
    }

    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.send(Command::Shutdown);
        if thread.join().is_err() {
            warn!("the VRRP thread panicked");
        }
    }

    fn send(&self, command: Command) -> Result<(), VrrpError> {
        self.commands
            .send(command)
            .map_err(|_| VrrpError::Stopped)?;
        // A full wake-up buffer already has a byte waiting, which is all the thread needs.
        let _ = self.wake.send(&[1]);
        Ok(())
    }
}

impl Drop for Vrrp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sorted, without repeats, 1 to 255 of them.
fn normalize_vips(vips: &[Ipv4Addr]) -> Result<Vec<Ipv4Addr>, VrrpError> {
    let mut vips = vips.to_vec();
    vips.sort_unstable();
    vips.dedup();
    if vips.is_empty() || vips.len() > wire::MAX_ADDRESSES {
        return Err(VrrpError::VipCount(vips.len()));
    }
    Ok(vips)
}

/// What the state machine needs to be sound; the configuration checks the same and more.
fn check_settings(config: &HaConfig) -> Result<(), VrrpError> {
    if config.vrid == 0 {
        return Err(VrrpError::InvalidSetting {
            key: "vrid",
            value: "0".into(),
            expected: "expected 1..=255",
        });
    }
    if config.priority == 0 {
        return Err(VrrpError::InvalidSetting {
            key: "priority",
            value: "0".into(),
            expected: "expected 1..=255 (0 is a master resigning)",
        });
    }
    let interval = config.advert_interval;
    if !(MIN_ADVERT_INTERVAL..=MAX_ADVERT_INTERVAL).contains(&interval)
        || !interval.as_nanos().is_multiple_of(10_000_000)
    {
        return Err(VrrpError::InvalidSetting {
            key: "advert_interval",
            value: format!("{interval:?}"),
            expected: "expected a multiple of 10ms from 10ms to 40.95s",
        });
    }
    Ok(())
}

fn settings(config: &HaConfig, primary_address: Ipv4Addr) -> Settings {
    Settings {
        vrid: config.vrid,
        priority: config.priority,
        advert_interval: config.advert_interval,
        preempt: config.preempt,
        primary_address,
    }
}

fn needs_restart(key: &'static str, old: &dyn ToString, new: &dyn ToString) -> VrrpError {
    VrrpError::NeedsRestart {
        key,
        old: old.to_string(),
        new: new.to_string(),
    }
}

/// The interface's primary address: the first (in the kernel's order, which lists a subnet's
/// primary first) that is not a VIP and not a /32, else the first that is not a VIP.
fn primary_address(
    interface: &str,
    ifindex: u32,
    vips: &[Ipv4Addr],
) -> Result<Ipv4Addr, VrrpError> {
    let addresses = Netlink::open()?.addresses(ifindex)?;
    let own: Vec<(Ipv4Addr, u8)> = addresses
        .into_iter()
        .filter(|(address, _)| !vips.contains(address))
        .collect();
    own.iter()
        .find(|(_, prefix)| *prefix < 32)
        .or(own.first())
        .map(|(address, _)| *address)
        .ok_or_else(|| VrrpError::NoAddress {
            interface: interface.to_owned(),
        })
}

/// Centiseconds for the Max Adver Int field.
fn centiseconds(interval: Duration) -> u16 {
    let centiseconds = interval.as_millis() / 10;
    u16::try_from(centiseconds)
        .unwrap_or(wire::MAX_ADVERT_INTERVAL)
        .clamp(1, wire::MAX_ADVERT_INTERVAL)
}

/// The VRRP thread.
struct Worker {
    router: Router,
    socket: VrrpSocket,
    frames: FrameSocket,
    wake: UnixDatagram,
    commands: Receiver<Command>,
    events: Sender<HaEvent>,
    shared: Arc<Mutex<VrrpStatus>>,
    /// The thread's own copy, published after every wake-up.
    status: VrrpStatus,
    /// Interfaces whose links must be up: the VRRP interface, then the VIPs' and any others
    /// asked for, each once.
    interfaces: Vec<String>,
    vip_mac: [u8; 6],
    vips: Vec<Ipv4Addr>,
    /// 224.0.0.18, or the unicast peers.
    destinations: Vec<Ipv4Addr>,
    /// Priority last heard from each peer, for [`HaEvent::PeerSeen`].
    peers: HashMap<Ipv4Addr, u8>,
    /// When the pending gratuitous ARP rounds are due.
    gratuitous_arps: VecDeque<Instant>,
    /// The last mismatching address list warned about, so it is told once.
    warned_mismatch: Option<(Ipv4Addr, Vec<Ipv4Addr>)>,
    /// Whether a failure to read a link's state was told, so it is told once per outage.
    warned_link: bool,
}

impl Worker {
    fn run(mut self) {
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
            let len = match self.socket.receive(buffer) {
                Ok(Some(len)) => len,
                Ok(None) => return,
                Err(error) => {
                    warn!(%error, "VRRP receive failed");
                    return;
                }
            };
            self.handle_datagram(&buffer[..len], Instant::now());
        }
    }

    fn handle_datagram(&mut self, datagram: &[u8], now: Instant) {
        let received = match wire::parse_datagram(datagram) {
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
    fn check_addresses(&mut self, source: Ipv4Addr, addresses: &[Ipv4Addr]) {
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

    fn note_peer(&mut self, address: Ipv4Addr, priority: u8) {
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

    fn update(&mut self, settings: Settings, vips: Vec<Ipv4Addr>) {
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
            let datagram = advert.to_datagram(self.status.primary_address, destination);
            match self.socket.send(&datagram, destination) {
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
            from = from.name(),
            to = to.name(),
            master = ?master.map(|(address, _)| address),
            "VRRP state changed"
        );
        let event = match to {
            VrrpState::Master => {
                self.status.counters.became_master += 1;
                Some(HaEvent::BecameMaster)
            }
            VrrpState::Backup => Some(HaEvent::BecameBackup),
            VrrpState::Fault => Some(HaEvent::Fault),
            VrrpState::Initialize => None,
        };
        if to != VrrpState::Master {
            self.gratuitous_arps.clear();
        }
        if let Some(event) = event {
            let _ = self.events.send(event);
        }
    }

    fn schedule_gratuitous_arps(&mut self, now: Instant) {
        if self.router.state() != VrrpState::Master {
            debug!("gratuitous ARP asked for while not master: ignored");
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
                let frame = wire::gratuitous_arp(self.vip_mac, self.vips[index]);
                match self.frames.send(&frame) {
                    Ok(()) => self.status.counters.gratuitous_arps_sent += 1,
                    Err(error) => warn!(%error, vip = %self.vips[index], "gratuitous ARP not sent"),
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
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.clone_from(&self.status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HaConfig {
        HaConfig {
            interface: "eth0".into(),
            vrid: 51,
            priority: 150,
            advert_interval: Duration::from_millis(100),
            preempt: true,
            unicast_peers: Vec::new(),
            sync: false,
            sync_id: 51,
            sync_port: 8848,
            server_address: None,
        }
    }

    #[test]
    fn vips_are_sorted_deduplicated_and_bounded() {
        let a = Ipv4Addr::new(192, 0, 2, 10);
        let b = Ipv4Addr::new(192, 0, 2, 9);
        assert_eq!(normalize_vips(&[a, b, a]).unwrap(), [b, a]);
        assert!(matches!(normalize_vips(&[]), Err(VrrpError::VipCount(0))));
        let many: Vec<Ipv4Addr> = (0..256u32)
            .map(|i| Ipv4Addr::from(0xc633_6400 + i))
            .collect();
        assert!(matches!(
            normalize_vips(&many),
            Err(VrrpError::VipCount(256))
        ));
        assert_eq!(normalize_vips(&many[..255]).unwrap().len(), 255);
    }

    #[test]
    fn settings_the_machine_cannot_run_are_refused() {
        assert!(check_settings(&config()).is_ok());
        for bad in [
            HaConfig {
                vrid: 0,
                ..config()
            },
            HaConfig {
                priority: 0,
                ..config()
            },
            HaConfig {
                advert_interval: Duration::from_millis(15),
                ..config()
            },
            HaConfig {
                advert_interval: Duration::ZERO,
                ..config()
            },
            HaConfig {
                advert_interval: Duration::from_secs(41),
                ..config()
            },
        ] {
            let error = check_settings(&bad).unwrap_err();
            assert!(matches!(error, VrrpError::InvalidSetting { .. }), "{error}");
        }
    }

    #[test]
    fn advert_interval_in_centiseconds() {
        assert_eq!(centiseconds(Duration::from_millis(10)), 1);
        assert_eq!(centiseconds(Duration::from_millis(100)), 10);
        assert_eq!(centiseconds(Duration::from_secs(1)), 100);
        assert_eq!(centiseconds(MAX_ADVERT_INTERVAL), 4095);
        assert_eq!(centiseconds(Duration::from_secs(100)), 4095);
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
