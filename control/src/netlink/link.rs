//! Interface facts control needs at start-up: index (`if_nametoindex`), MTU, Ethernet address
//! and RX queue count (interface ioctls on a throwaway socket, sysfs as a fallback).
//!
//! Unsafe: `if_nametoindex`, `socket` and `ioctl`, each with a SAFETY comment.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::message::{read_u16, read_u32};
use super::socket::{io_error, NetlinkError};

// Constants from <linux/if_arp.h>, <linux/ethtool.h> and <linux/if.h>.
const ARPHRD_ETHER: u16 = 1;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const IFNAMSIZ: usize = 16;

/// The interface index of `name` (`if_nametoindex`).
pub fn interface_index(name: &str) -> Result<u32, NetlinkError> {
    let c_name = interface_c_name(name)?;
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        let error = io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::ENODEV) {
            NetlinkError::NoSuchInterface(name.to_owned())
        } else {
            NetlinkError::Io {
                operation: format!("look up interface {name:?}"),
                source: error,
            }
        });
    }
    Ok(index)
}

/// The interface's MTU (`SIOCGIFMTU`).
pub fn interface_mtu(name: &str) -> Result<u16, NetlinkError> {
    let mut request = IfReq::new(name)?;
    ioctl(name, libc::SIOCGIFMTU, &mut request, "read MTU")?;
    // ifr_mtu is an int at the start of the union.
    let mtu = read_u32(&request.ifru, 0).unwrap_or(0);
    Ok(u16::try_from(mtu).unwrap_or(u16::MAX))
}

/// The Ethernet address of interface `name` (`SIOCGIFHWADDR`).
pub fn interface_mac(name: &str) -> Result<[u8; 6], NetlinkError> {
    let mut request = IfReq::new(name)?;
    ioctl(
        name,
        libc::SIOCGIFHWADDR,
        &mut request,
        "read hardware address",
    )?;
    // ifr_hwaddr is a `struct sockaddr`: a 2-byte family, then the address bytes.
    let family = read_u16(&request.ifru, 0).unwrap_or(0);
    if family != ARPHRD_ETHER {
        return Err(NetlinkError::NotEthernet(name.to_owned()));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&request.ifru[2..8]);
    Ok(mac)
}

/// How many RX queues interface `name` uses: combined + rx channels from `ETHTOOL_GCHANNELS`,
/// else the `rx-*` entries under `/sys/class/net/NAME/queues/`; at least 1.
pub fn interface_rx_queues(name: &str) -> Result<u32, NetlinkError> {
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolChannels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    let mut request = IfReq::new(name)?;
    // ifr_data: a pointer to the ethtool command block.
    let pointer = std::ptr::from_mut(&mut channels) as usize as u64;
    request.ifru[..8].copy_from_slice(&pointer.to_ne_bytes());
    match ioctl(
        name,
        libc::SIOCETHTOOL,
        &mut request,
        "read ethtool channels",
    ) {
        Ok(()) => {
            let queues = channels.combined_count.saturating_add(channels.rx_count);
            if queues > 0 {
                return Ok(queues);
            }
        }
        Err(NetlinkError::NoSuchInterface(name)) => {
            return Err(NetlinkError::NoSuchInterface(name))
        }
        // Drivers without get_channels (EOPNOTSUPP) fall back to sysfs.
        Err(_) => {}
    }
    let directory = format!("/sys/class/net/{name}/queues");
    let queues = std::fs::read_dir(&directory).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("rx-"))
            .count()
    });
    Ok(u32::try_from(queues).unwrap_or(u32::MAX).max(1))
}

/// `struct ifreq`: the name, then a 24-byte union (`ifr_hwaddr`, `ifr_data`, ...).
#[repr(C, align(8))]
struct IfReq {
    name: [u8; IFNAMSIZ],
    ifru: [u8; 24],
}

const _: () = assert!(size_of::<IfReq>() == 40);

impl IfReq {
    fn new(name: &str) -> Result<Self, NetlinkError> {
        interface_c_name(name)?;
        let mut request = IfReq {
            name: [0; IFNAMSIZ],
            ifru: [0; 24],
        };
        request.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(request)
    }
}

fn interface_c_name(name: &str) -> Result<CString, NetlinkError> {
    if name.is_empty() || name.len() >= IFNAMSIZ {
        return Err(NetlinkError::InvalidInterfaceName(name.to_owned()));
    }
    CString::new(name).map_err(|_| NetlinkError::InvalidInterfaceName(name.to_owned()))
}

/// Runs an interface ioctl on a throwaway `AF_INET` datagram socket.
fn ioctl(
    name: &str,
    request_code: libc::Ioctl,
    request: &mut IfReq,
    what: &str,
) -> Result<(), NetlinkError> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io_error("open ioctl socket"));
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `request` is a live, writable `struct ifreq` of the size the kernel expects for
    // these requests; for SIOCETHTOOL its data pointer refers to a live command block that the
    // caller keeps alive across this call.
    let result = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            request_code,
            std::ptr::from_mut(request),
        )
    };
    if result < 0 {
        let error = io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::ENODEV) {
            NetlinkError::NoSuchInterface(name.to_owned())
        } else {
            NetlinkError::Io {
                operation: format!("{what} of {name:?}"),
                source: error,
            }
        });
    }
    Ok(())
}
