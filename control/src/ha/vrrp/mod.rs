//! VRRPv3 (RFC 5798) for IPv4 and IPv6: the director as one router of a virtual router, with
//! other directors or keepalived, so that the VIPs move to a backup director when the master
//! fails.
//!
//! - [`wire`]: the advertisement's bytes, RFC 5798 7.1's packet checks, the gratuitous ARP frame.
//! - [`wire6`]: the same over IPv6 (5.1.2), and the unsolicited neighbour advertisement frame.
//! - [`machine`]: the state machine of section 6, pure, driven by an explicit clock.
//! - `thread`: a VRRP thread, which owns a raw socket for protocol 112 of one family and runs
//!   the state machine.
//! - `status`: what the threads report: events ([`HaEvent`]), a status snapshot per router for
//!   stats ([`VrrpStatus`]), and the [`Board`] where the two families' states combine.
//! - this module: [`Vrrp`], the handle control keeps: start-up (sockets, primary addresses),
//!   events on a channel, the status, reload ([`Vrrp::update`]) and a clean stop that hands
//!   over at once ([`Vrrp::shutdown`]).
//!
//! The VIPs are split by family, and each family with VIPs gets its own router, as keepalived
//! runs one `vrrp_instance` per family: the IPv4 one advertises to 224.0.0.18 (or to
//! `unicast_peers`) with TTL 255 from `ha.interface`'s primary IPv4 address; the IPv6 one to
//! ff02::12 with hop limit 255 from that interface's link-local address. Both share the VRID,
//! priority, preemption and interval, and each carries all of its family's VIPs (they move
//! together). Control follows one state: the routers' states combine as [`Board`] says
//! (master once every running router is master). Each thread sleeps in `poll` until a
//! datagram, a command or its next timer; nothing spins. Each also watches the links of the
//! VRRP interface and of the interface the VIPs live on, every [`LINK_CHECK_INTERVAL`], and
//! goes to [`VrrpState::Fault`] while either is down.
//!
//! What this module does not do: add or remove the VIPs, or steer them in the XDP classifier.
//! Those are control's, on the events; the threads only announce the VIPs (gratuitous ARP for
//! IPv4, unsolicited neighbour advertisements for IPv6) when control says they are in place
//! ([`Vrrp::announce_vips`]), so that no client is pointed at a director before it can serve.
//! Like keepalived without `use_vmac`, the director answers for the VIPs with its own MAC, not
//! the virtual router MAC 00-00-5E-00-01-{VRID}: the announcements are what move clients'
//! caches. Accept_Mode (6.1) has no meaning here: the VIPs are service addresses, served by
//! the data plane.

pub mod machine;
#[expect(
    unsafe_code,
    reason = "raw IP and AF_PACKET sockets, poll and SIOCGIFFLAGS; every block has a SAFETY comment"
)]
mod socket;
mod status;
mod thread;
pub mod wire;
pub mod wire6;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::{info, warn};

use crate::config::{HaConfig, MAX_ADVERT_INTERVAL, MIN_ADVERT_INTERVAL};
use crate::netlink::{self, Netlink, NetlinkError};
pub use machine::State as VrrpState;
use machine::{Router, Settings};
use socket::{AdvertSocket, FrameSocket, Vrrp6Socket, VrrpSocket};
pub use status::{Board, Family, HaEvent, VrrpCounters, VrrpStatus, VrrpStatusSource};
use thread::{Command, RouterThread};
pub use thread::{GRATUITOUS_ARP_ROUNDS, LINK_CHECK_INTERVAL};

/// How long the IPv6 router's start waits for `ha.interface`'s link-local address to leave
/// duplicate address detection (RFC 4862 5.4; Linux takes about a second by default).
const LINK_LOCAL_WAIT: Duration = Duration::from_secs(3);
/// How often it looks meanwhile.
const LINK_LOCAL_POLL: Duration = Duration::from_millis(50);

/// Announces each of `addresses` once out of `interface`, from its MAC: a gratuitous ARP for
/// an IPv4 address, an unsolicited neighbour advertisement for an IPv6 one. For addresses that
/// move with mastership but are not advertised (the NAT real servers' gateway on the server
/// side). Returns how many frames went out.
pub fn announce_addresses(interface: &str, addresses: &[IpAddr]) -> Result<usize, VrrpError> {
    let ifindex = netlink::interface_index(interface)?;
    let mac = netlink::interface_mac(interface)?;
    let frames = FrameSocket::open(ifindex).map_err(|source| VrrpError::Io {
        operation: format!("open the announcement socket on {interface:?}"),
        source,
    })?;
    for &address in addresses {
        thread::announce(&frames, mac, address).map_err(|source| VrrpError::Io {
            operation: format!("announce {address} on {interface:?}"),
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
    /// The VRRP interface has no usable IPv6 link-local address for the IPv6 VIPs' router.
    #[error(
        "interface {interface:?} has no IPv6 link-local address to send VRRP advertisements \
         for the IPv6 VIPs from (is IPv6 disabled there, or is the address still in DAD?)"
    )]
    NoLinkLocalAddress {
        /// The interface.
        interface: String,
    },
    /// `unicast_peers` are IPv4 addresses: the IPv6 router can only advertise by multicast.
    #[error(
        "ha.unicast_peers lists IPv4 peers: IPv6 VIPs need multicast VRRP (ff02::12); remove \
         unicast_peers or the IPv6 VIPs"
    )]
    UnicastIpv6,
    /// A socket could not be set up.
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// An advertisement carries 1 to 255 addresses: at least one VIP in all, at most 255 of
    /// each family.
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

/// One family's running router: its thread and how to reach it.
#[derive(Debug)]
struct Instance {
    primary_address: IpAddr,
    commands: Sender<Command>,
    wake: UnixDatagram,
    thread: Option<JoinHandle<()>>,
}

impl Instance {
    fn send(&self, command: Command) -> Result<(), VrrpError> {
        self.commands
            .send(command)
            .map_err(|_| VrrpError::Stopped)?;
        // A full wake-up buffer already has a byte waiting, which is all the thread needs.
        let _ = self.wake.send(&[1]);
        Ok(())
    }

    /// Stops the thread (a master resigns with priority 0 first) and waits for it.
    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.send(Command::Shutdown);
        if thread.join().is_err() {
            warn!("a VRRP thread panicked");
        }
    }
}

/// Asks the routers to announce the VIPs ([`Vrrp::announcer`]); cheap to clone and send to
/// another thread.
#[derive(Clone, Debug, Default)]
pub struct VipAnnouncer(Vec<(Sender<Command>, Arc<UnixDatagram>)>);

impl VipAnnouncer {
    /// [`Vrrp::announce_vips`]: each router announces its VIPs in the rounds of
    /// [`GRATUITOUS_ARP_ROUNDS`] as long as it stays master. Returns at once.
    pub fn announce(&self) -> Result<(), VrrpError> {
        for (commands, wake) in &self.0 {
            commands
                .send(Command::Announce)
                .map_err(|_| VrrpError::Stopped)?;
            // A full wake-up buffer already has a byte waiting, which is all the thread needs.
            let _ = wake.send(&[1]);
        }
        Ok(())
    }
}

/// The running VRRP routers (one per family with VIPs) and the handle control keeps. Dropping
/// it shuts them down as [`Vrrp::shutdown`] does.
#[derive(Debug)]
pub struct Vrrp {
    config: HaConfig,
    vip_interface: String,
    links: Vec<String>,
    /// The IPv4 router, the IPv6 router (indexed as [`Family::ALL`]).
    instances: [Option<Instance>; 2],
    event_sender: Sender<HaEvent>,
    events: Receiver<HaEvent>,
    board: Arc<Mutex<Board>>,
}

impl Vrrp {
    /// Starts the routers for `config`, advertising `vips` (IPv4 ones by the IPv4 router, IPv6
    /// ones by the IPv6 router; a family without VIPs has no router), which live on
    /// `vip_interface` (where the announcements go; usually `ha.interface` itself). Opens the
    /// sockets in the calling thread's network namespace, then starts the threads, which go
    /// from Initialize to Backup (or to Fault if a link is down): control hears
    /// [`HaEvent::BecameBackup`].
    pub fn start(
        config: &HaConfig,
        vip_interface: &str,
        vips: &[IpAddr],
    ) -> Result<Vrrp, VrrpError> {
        Self::start_watching(config, vip_interface, vips, &[])
    }

    /// [`Vrrp::start`], also going to Fault while any of `links` has no link (a NAT director's
    /// server side: a master that cannot reach its real servers must hand over).
    pub fn start_watching(
        config: &HaConfig,
        vip_interface: &str,
        vips: &[IpAddr],
        links: &[String],
    ) -> Result<Vrrp, VrrpError> {
        let by_family = split_vips(vips)?;
        check_settings(config)?;
        let (event_sender, events) = crossbeam_channel::unbounded();
        let mut vrrp = Vrrp {
            config: config.clone(),
            vip_interface: vip_interface.to_owned(),
            links: links.to_vec(),
            instances: [None, None],
            event_sender,
            events,
            board: Arc::new(Mutex::new(Board::default())),
        };
        // A family that cannot start fails the whole start; dropping `vrrp` stops the other.
        for (family, vips) in Family::ALL.into_iter().zip(by_family) {
            if !vips.is_empty() {
                vrrp.start_instance(family, vips)?;
            }
        }
        Ok(vrrp)
    }

    /// Starts `family`'s router with `vips` (all of that family).
    fn start_instance(&mut self, family: Family, vips: Vec<IpAddr>) -> Result<(), VrrpError> {
        let config = &self.config;
        let vip_interface = self.vip_interface.as_str();
        let ifindex = netlink::interface_index(&config.interface)?;
        let vip_ifindex = netlink::interface_index(vip_interface)?;
        let vip_mac = netlink::interface_mac(vip_interface)?;
        let io_error = |operation: String| move |source| VrrpError::Io { operation, source };
        let (primary_address, socket, destinations) =
            open_advert_socket(config, family, ifindex, &vips)?;
        let frames = FrameSocket::open(vip_ifindex).map_err(io_error(format!(
            "open the announcement socket on {vip_interface:?}"
        )))?;
        let (wake, wake_receiver) = UnixDatagram::pair()
            .and_then(|(a, b)| {
                a.set_nonblocking(true)?;
                b.set_nonblocking(true)?;
                Ok((a, b))
            })
            .map_err(io_error("create the VRRP wake-up socket pair".into()))?;
        let router = Router::new(settings(config, primary_address));
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
        // On the board before the thread runs, so that a status is there to read at once (in
        // Initialize, which has no say in the combined state).
        self.board
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(family, &status);
        let (commands, command_receiver) = crossbeam_channel::unbounded();
        let router_thread = RouterThread {
            family,
            router,
            socket,
            frames,
            wake: wake_receiver,
            commands: command_receiver,
            events: self.event_sender.clone(),
            board: Arc::clone(&self.board),
            status,
            interfaces: watched_links(&config.interface, vip_interface, &self.links),
            vip_mac,
            vips,
            destinations,
            peers: HashMap::new(),
            gratuitous_arps: VecDeque::new(),
            warned_mismatch: None,
            warned_link: false,
        };
        let suffix = match family {
            Family::Ipv4 => "",
            Family::Ipv6 => "-v6",
        };
        let thread = std::thread::Builder::new()
            .name(format!("vrrp-{}{suffix}", config.vrid))
            .spawn(move || router_thread.run())
            .map_err(|source| {
                let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
                board.remove(family);
                VrrpError::Io {
                    operation: "start the VRRP thread".into(),
                    source,
                }
            })?;
        info!(
            vrid = config.vrid,
            ?family,
            priority = config.priority,
            interface = %config.interface,
            source = %primary_address,
            advert_interval = ?config.advert_interval,
            preempt = config.preempt,
            "VRRP started"
        );
        self.instances[family.index()] = Some(Instance {
            primary_address,
            commands,
            wake,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Stops `family`'s router, if it runs, and takes it off the board; control hears the new
    /// combined state if it changed.
    fn stop_instance(&mut self, family: Family) {
        let Some(mut instance) = self.instances[family.index()].take() else {
            return;
        };
        instance.stop();
        let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
        board.remove(family);
        if let Some(event) = board.report() {
            let _ = self.event_sender.send(event);
        }
        info!(?family, "VRRP router stopped: no VIPs of its family left");
    }

    /// The events, in order: the routers' combined state (see [`Board`]) and the peers heard.
    /// Control's HA actions thread follows them, off its main loop.
    pub fn events(&self) -> &Receiver<HaEvent> {
        &self.events
    }

    /// A snapshot of state, master and counters of the IPv4 router, or of the IPv6 router when
    /// there are only IPv6 VIPs ([`Vrrp::statuses`] has both).
    pub fn status(&self) -> VrrpStatus {
        status::first_status(&self.board.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `family`'s router's snapshot, if it runs.
    pub fn status_of(&self, family: Family) -> Option<VrrpStatus> {
        let board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
        board.get(family).cloned()
    }

    /// Every running router's snapshot, IPv4 first.
    pub fn statuses(&self) -> Vec<VrrpStatus> {
        self.status_source().all()
    }

    /// A handle that reads the statuses from another thread (the stats socket's).
    pub fn status_source(&self) -> VrrpStatusSource {
        VrrpStatusSource(Arc::clone(&self.board))
    }

    /// The address advertisements come from: the IPv4 router's, or the IPv6 router's
    /// link-local address when there are only IPv6 VIPs.
    pub fn primary_address(&self) -> IpAddr {
        self.instances
            .iter()
            .flatten()
            .map(|instance| instance.primary_address)
            .next()
            .expect("a VRRP handle always has a router running")
    }

    /// `family`'s router's source address, if it runs.
    pub fn primary_address_of(&self, family: Family) -> Option<IpAddr> {
        self.instances[family.index()]
            .as_ref()
            .map(|instance| instance.primary_address)
    }

    /// Announces the VIPs (gratuitous ARP for IPv4, unsolicited neighbour advertisements for
    /// IPv6), in the rounds of [`GRATUITOUS_ARP_ROUNDS`], as long as each family's router stays
    /// master. Call it once the VIPs are added and steered after [`HaEvent::BecameMaster`].
    /// Returns at once.
    pub fn announce_vips(&self) -> Result<(), VrrpError> {
        for instance in self.instances.iter().flatten() {
            instance.send(Command::Announce)?;
        }
        Ok(())
    }

    /// A handle that asks the running routers to announce the VIPs, as
    /// [`Vrrp::announce_vips`] does, from another thread. It reaches the routers running now:
    /// take a new one after [`Vrrp::update`], which may start or stop a family's router.
    pub fn announcer(&self) -> VipAnnouncer {
        VipAnnouncer(
            self.instances
                .iter()
                .flatten()
                .filter_map(|instance| {
                    let wake = instance.wake.try_clone().ok()?;
                    Some((instance.commands.clone(), Arc::new(wake)))
                })
                .collect(),
        )
    }

    /// Applies a reload: new VIPs, priority, advertisement interval and preemption, without
    /// leaving the current state (a reload never hands over by itself; a lower priority or a
    /// changed preemption takes effect through the next advertisements, as the RFC's rules
    /// say). A changed interface, VRID or unicast peer list is another router: that is
    /// [`VrrpError::NeedsRestart`], and nothing changes.
    ///
    /// A family whose VIPs all went stops its router (resigning with priority 0 if master); a
    /// family gaining its first VIPs starts one, opening its sockets in the calling thread's
    /// namespace. That new router starts as backup, so the combined state is backup until it
    /// too is elected (about a Master_Down_Interval): the first IPv6 service added to a running
    /// IPv4 master makes it give up and retake its VIPs.
    pub fn update(&mut self, config: &HaConfig, vips: &[IpAddr]) -> Result<(), VrrpError> {
        let by_family = split_vips(vips)?;
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
        if !by_family[1].is_empty() && !config.unicast_peers.is_empty() {
            return Err(VrrpError::UnicastIpv6);
        }
        self.config = config.clone();
        for (family, vips) in Family::ALL.into_iter().zip(by_family) {
            let index = family.index();
            match (&self.instances[index], vips.is_empty()) {
                (Some(instance), false) => instance.send(Command::Update {
                    settings: settings(config, instance.primary_address),
                    vips,
                })?,
                (Some(_), true) => self.stop_instance(family),
                (None, false) => self.start_instance(family, vips)?,
                (None, true) => {}
            }
        }
        Ok(())
    }

    /// [`Vrrp::update`] with the running settings and new VIPs.
    pub fn update_vips(&mut self, vips: &[IpAddr]) -> Result<(), VrrpError> {
        let config = self.config.clone();
        self.update(&config, vips)
    }

    /// Stops the routers: a master sends a priority-0 advertisement first, so a backup takes
    /// over after its Skew_Time rather than a whole Master_Down_Interval. Waits for the threads
    /// and returns the last status of the IPv4 router (of the IPv6 one when only it ran). The
    /// caller removes the VIPs it holds.
    pub fn shutdown(mut self) -> VrrpStatus {
        self.stop();
        self.status()
    }

    fn stop(&mut self) {
        for instance in self.instances.iter_mut().flatten() {
            instance.stop();
        }
    }
}

impl Drop for Vrrp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens `family`'s advertisement socket on `ha.interface` (index `ifindex`): the router's
/// source address, the socket, and where its advertisements go.
fn open_advert_socket(
    config: &HaConfig,
    family: Family,
    ifindex: u32,
    vips: &[IpAddr],
) -> Result<(IpAddr, AdvertSocket, Vec<IpAddr>), VrrpError> {
    let io_error = |operation: String| move |source| VrrpError::Io { operation, source };
    Ok(match family {
        Family::Ipv4 => {
            let primary = IpAddr::V4(primary_address(&config.interface, ifindex, vips)?);
            let multicast = config.unicast_peers.is_empty();
            let socket = VrrpSocket::open(&config.interface, ifindex, multicast).map_err(
                io_error(format!("open the VRRP socket on {:?}", config.interface)),
            )?;
            let destinations = if multicast {
                vec![IpAddr::V4(wire::MULTICAST_GROUP)]
            } else {
                config
                    .unicast_peers
                    .iter()
                    .copied()
                    .map(IpAddr::V4)
                    .collect()
            };
            (primary, AdvertSocket::V4(socket), destinations)
        }
        Family::Ipv6 => {
            if !config.unicast_peers.is_empty() {
                return Err(VrrpError::UnicastIpv6);
            }
            let link_local = wait_for_link_local(&config.interface)?;
            let socket =
                Vrrp6Socket::open(&config.interface, ifindex, link_local).map_err(io_error(
                    format!("open the IPv6 VRRP socket on {:?}", config.interface),
                ))?;
            let destinations = vec![IpAddr::V6(wire6::MULTICAST_GROUP)];
            (
                IpAddr::V6(link_local),
                AdvertSocket::V6(socket),
                destinations,
            )
        }
    })
}

/// `interface`'s usable link-local address, waiting up to [`LINK_LOCAL_WAIT`] for one still in
/// DAD (an interface just brought up: 1 s by default).
fn wait_for_link_local(interface: &str) -> Result<Ipv6Addr, VrrpError> {
    let deadline = Instant::now() + LINK_LOCAL_WAIT;
    loop {
        let found = socket::link_local_address(interface).map_err(|source| VrrpError::Io {
            operation: format!("find the link-local address of {interface:?}"),
            source,
        })?;
        if let Some(address) = found {
            return Ok(address);
        }
        if Instant::now() >= deadline {
            return Err(VrrpError::NoLinkLocalAddress {
                interface: interface.to_owned(),
            });
        }
        std::thread::sleep(LINK_LOCAL_POLL);
    }
}

/// The VIPs by family (IPv4, IPv6), each sorted, without repeats, at most 255; at least one in
/// all.
fn split_vips(vips: &[IpAddr]) -> Result<[Vec<IpAddr>; 2], VrrpError> {
    let mut by_family = [Vec::new(), Vec::new()];
    for &vip in vips {
        by_family[Family::of(vip).index()].push(vip);
    }
    for family in &mut by_family {
        family.sort_unstable();
        family.dedup();
        if family.len() > wire::MAX_ADDRESSES {
            return Err(VrrpError::VipCount(family.len()));
        }
    }
    if by_family.iter().all(Vec::is_empty) {
        return Err(VrrpError::VipCount(0));
    }
    Ok(by_family)
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

fn settings(config: &HaConfig, primary_address: IpAddr) -> Settings {
    Settings {
        vrid: config.vrid,
        priority: config.priority,
        advert_interval: config.advert_interval,
        preempt: config.preempt,
        preempt_delay: config.preempt_delay,
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
fn primary_address(interface: &str, ifindex: u32, vips: &[IpAddr]) -> Result<Ipv4Addr, VrrpError> {
    // `Netlink::addresses` lists IPv4 only (IPv6 is `addresses_v6`).
    let addresses = Netlink::open()?.addresses(ifindex)?;
    let own: Vec<(Ipv4Addr, u8)> = addresses
        .into_iter()
        .filter(|(address, _)| !vips.contains(&IpAddr::V4(*address)))
        .collect();
    own.iter()
        .find(|(_, prefix)| *prefix < 32)
        .or(own.first())
        .map(|(address, _)| *address)
        .ok_or_else(|| VrrpError::NoAddress {
            interface: interface.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> HaConfig {
        HaConfig {
            interface: "eth0".into(),
            vrid: 51,
            priority: 150,
            advert_interval: Duration::from_millis(100),
            preempt: true,
            preempt_delay: Duration::ZERO,
            unicast_peers: Vec::new(),
            sync: false,
            sync_id: 51,
            sync_port: 8848,
            sync_key: None,
            server_address: None,
            server_address6: None,
        }
    }

    #[test]
    fn vips_are_split_by_family_sorted_deduplicated_and_bounded() {
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "192.0.2.9".parse().unwrap();
        let c: IpAddr = "2001:db8::10".parse().unwrap();
        let d: IpAddr = "2001:db8::9".parse().unwrap();
        assert_eq!(split_vips(&[a, b, a]).unwrap(), [vec![b, a], vec![]]);
        assert_eq!(split_vips(&[c, a, d, c]).unwrap(), [vec![a], vec![d, c]]);
        assert_eq!(split_vips(&[c]).unwrap(), [vec![], vec![c]]);
        assert!(matches!(split_vips(&[]), Err(VrrpError::VipCount(0))));
        let many: Vec<IpAddr> = (0..256u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i)))
            .collect();
        assert!(matches!(split_vips(&many), Err(VrrpError::VipCount(256))));
        assert_eq!(split_vips(&many[..255]).unwrap()[0].len(), 255);
        // 255 of each family fit: each router carries its own.
        let many6: Vec<IpAddr> = (0..255u16)
            .map(|i| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)))
            .collect();
        let both: Vec<IpAddr> = many[..255].iter().chain(&many6).copied().collect();
        assert_eq!(split_vips(&both).unwrap()[1].len(), 255);
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
}
