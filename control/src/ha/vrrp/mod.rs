//! VRRPv3 (RFC 5798) for IPv4: the director as one router of a virtual router, with other
//! directors or keepalived, so that the VIPs move to a backup director when the master fails.
//!
//! - [`wire`]: the advertisement's bytes, RFC 5798 7.1's packet checks, the gratuitous ARP frame.
//! - [`machine`]: the state machine of section 6, pure, driven by an explicit clock.
//! - `thread`: the VRRP thread, which owns a raw IPv4 socket for protocol 112 and runs the state
//!   machine.
//! - `status`: what the thread reports: events ([`HaEvent`]) and a status snapshot for stats
//!   ([`VrrpStatus`]).
//! - this module: [`Vrrp`], the handle control keeps: start-up (sockets, primary address),
//!   events on a channel, the status, reload ([`Vrrp::update`]) and a clean stop that hands
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
mod status;
mod thread;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use tracing::{info, warn};

use crate::config::{HaConfig, MAX_ADVERT_INTERVAL, MIN_ADVERT_INTERVAL};
use crate::netlink::{self, Netlink, NetlinkError};
pub use machine::State as VrrpState;
use machine::{Router, Settings};
use socket::{FrameSocket, VrrpSocket};
pub use status::{HaEvent, VrrpCounters, VrrpStatus, VrrpStatusSource};
use thread::{Command, RouterThread};
pub use thread::{GRATUITOUS_ARP_ROUNDS, LINK_CHECK_INTERVAL};

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
        let router_thread = RouterThread {
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
        let thread = std::thread::Builder::new()
            .name(format!("vrrp-{}", config.vrid))
            .spawn(move || router_thread.run())
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
}
