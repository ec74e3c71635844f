//! A small synchronous rtnetlink client over a raw `NETLINK_ROUTE` socket, plus the interface
//! queries control needs at start-up (index, MAC, RX queue count).
//!
//! Control uses it to learn real servers' MAC addresses from the kernel's neighbour table (and to
//! make the kernel ARP for them), and to put VIPs on interfaces. It is deliberately tiny: one
//! request at a time, replies matched by sequence number, attributes parsed with bounds-checked
//! `from_ne_bytes` reads, never pointer casts.
//!
//! This is the only module of `control` with `unsafe` code: the socket, ioctl and
//! `if_nametoindex` calls. Each block says why it is sound.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// Constants from <linux/netlink.h>, <linux/rtnetlink.h>, <linux/neighbour.h>, <linux/if_addr.h>
// and <linux/ethtool.h>. Kept here, typed as the wire uses them, rather than taken from libc
// whose integer types vary between targets.
const NLMSG_HEADER_LEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_MULTI: u16 = 0x02;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTM_GETROUTE: u16 = 26;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NTF_USE: u8 = 0x01;
const RT_SCOPE_UNIVERSE: u8 = 0;
/// Neighbour states whose link-layer address is usable.
const NUD_USABLE: u16 =
    NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT;
const NUD_REACHABLE: u16 = 0x02;
const NUD_STALE: u16 = 0x04;
const NUD_DELAY: u16 = 0x08;
const NUD_PROBE: u16 = 0x10;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
const ARPHRD_ETHER: u16 = 1;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const IFNAMSIZ: usize = 16;

/// How long (seconds) a netlink request may wait for its reply before it fails with a timeout.
const REPLY_TIMEOUT_SECONDS: libc::time_t = 5;
/// Receive buffer: larger than any dump datagram the kernel sends (it caps them at 32 KiB).
const RECEIVE_BUFFER: usize = 64 * 1024;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A system call on the netlink or ioctl socket failed (including a reply timeout).
    #[error("{operation}: {source}")]
    Io {
        /// What was being done, e.g. "receive netlink reply".
        operation: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request.
    #[error("{operation}: kernel refused: {source}")]
    Refused {
        /// The request, e.g. "add address 192.0.2.10/32 on ifindex 3".
        operation: String,
        /// The errno the kernel returned.
        #[source]
        source: io::Error,
    },
    /// A reply that does not parse.
    #[error("{operation}: malformed netlink reply: {detail}")]
    Malformed {
        /// The request being answered.
        operation: String,
        /// What was wrong with it.
        detail: &'static str,
    },
    /// No interface has this name.
    #[error("no interface named {0:?}")]
    NoSuchInterface(String),
    /// Not a possible interface name (empty, too long, or with a NUL byte).
    #[error("invalid interface name {0:?}, expected 1 to 15 bytes")]
    InvalidInterfaceName(String),
    /// The interface's hardware address is not a 6-byte Ethernet address.
    #[error("interface {0:?} is not an Ethernet interface")]
    NotEthernet(String),
}

/// Result of [`Netlink::add_address`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressChange {
    /// The address was added; remove it on shutdown.
    Added,
    /// The interface already had it (someone else owns it: leave it on shutdown).
    AlreadyPresent,
}

/// A rtnetlink socket. Requests are synchronous: each waits for its reply (at most 5 s).
#[derive(Debug)]
pub struct Netlink {
    socket: OwnedFd,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io_error("open netlink socket"));
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: REPLY_TIMEOUT_SECONDS,
            tv_usec: 0,
        };
        // SAFETY: the option value points to a live `timeval` and its exact size is passed.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if result < 0 {
            return Err(io_error("set netlink receive timeout"));
        }
        Ok(Netlink {
            socket,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// The MAC address the kernel's neighbour table holds for `address` on interface `ifindex`,
    /// if the entry is in a usable state (REACHABLE, STALE, DELAY, PROBE, PERMANENT or NOARP).
    /// INCOMPLETE and FAILED entries, and no entry, give `None`.
    pub fn neighbour_mac(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
    ) -> Result<Option<[u8; 6]>, NetlinkError> {
        Ok(self.neighbours(ifindex)?.get(&address).copied())
    }

    /// Every usable IPv4 neighbour entry on interface `ifindex`, from one dump.
    pub fn neighbours(&mut self, ifindex: u32) -> Result<HashMap<Ipv4Addr, [u8; 6]>, NetlinkError> {
        let operation = format!("dump neighbours on ifindex {ifindex}");
        let mut request = Message::new(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(&neighbour_header(0, 0, 0));
        let mut found = HashMap::new();
        self.dump(&operation, request, |message| {
            let Some(header) = message.get(..12) else {
                return Err("short ndmsg");
            };
            let family = header[0];
            let index = read_u32(header, 4).ok_or("short ndmsg")?;
            let state = read_u16(header, 8).ok_or("short ndmsg")?;
            if u16::from(family) != libc::AF_INET as u16
                || index != ifindex
                || state & NUD_USABLE == 0
            {
                return Ok(());
            }
            let mut destination = None;
            let mut lladdr = None;
            for (kind, data) in Attributes::new(&message[12..]) {
                match kind {
                    NDA_DST => destination = <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from),
                    NDA_LLADDR => lladdr = <[u8; 6]>::try_from(data).ok(),
                    _ => {}
                }
            }
            if let (Some(destination), Some(lladdr)) = (destination, lladdr) {
                found.insert(destination, lladdr);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Makes the kernel resolve `address` on interface `ifindex` (send ARP requests), as
    /// `ip neigh replace ADDRESS dev DEV use` does: an `RTM_NEWNEIGH` with `NTF_USE` creates the
    /// entry if needed and kicks its state machine. Returns once the kernel accepted the request;
    /// poll [`Netlink::neighbour_mac`] for the answer.
    pub fn solicit_neighbour(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let operation = format!("solicit neighbour {address} on ifindex {ifindex}");
        let mut request = Message::new(
            RTM_NEWNEIGH,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        );
        // State NUD_NONE: with NTF_USE the kernel ignores the state and runs neigh_event_send;
        // unlike NUD_PERMANENT it leaves a new entry subject to garbage collection.
        request.push(&neighbour_header(ifindex, 0, NTF_USE));
        request.attribute(NDA_DST, &address.octets());
        self.acknowledged(&operation, request)
            .map_err(|error| refused(&operation, error))
    }

    /// Adds `address/prefix_len` to interface `ifindex`. An address the interface already has is
    /// not an error: it gives [`AddressChange::AlreadyPresent`].
    pub fn add_address(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<AddressChange, NetlinkError> {
        let operation = format!("add address {address}/{prefix_len} on ifindex {ifindex}");
        let mut request = Message::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        request.push(&address_header(ifindex, prefix_len));
        request.attribute(IFA_LOCAL, &address.octets());
        request.attribute(IFA_ADDRESS, &address.octets());
        match self.acknowledged(&operation, request) {
            Ok(()) => Ok(AddressChange::Added),
            Err(Reply::Errno(libc::EEXIST)) => Ok(AddressChange::AlreadyPresent),
            Err(error) => Err(refused(&operation, error)),
        }
    }

    /// The IPv4 addresses on interface `ifindex` with their prefix lengths, in the kernel's
    /// order (the primary address of each subnet first).
    pub fn addresses(&mut self, ifindex: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let operation = format!("dump addresses on ifindex {ifindex}");
        let mut request = Message::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(&address_header(0, 0));
        let mut found = Vec::new();
        self.dump(&operation, request, |message| {
            let Some(header) = message.get(..8) else {
                return Err("short ifaddrmsg");
            };
            let index = read_u32(header, 4).ok_or("short ifaddrmsg")?;
            if u16::from(header[0]) != libc::AF_INET as u16 || index != ifindex {
                return Ok(());
            }
            let prefix_len = header[1];
            for (kind, data) in Attributes::new(&message[8..]) {
                if kind == IFA_LOCAL {
                    if let Ok(octets) = <[u8; 4]>::try_from(data) {
                        found.push((Ipv4Addr::from(octets), prefix_len));
                    }
                }
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The gateway of the main table's IPv4 default route out of interface `ifindex` (the one
    /// with the lowest metric if there are several), as `ip route show default dev DEV` lists
    /// it; `None` when there is no such route.
    pub fn default_gateway(&mut self, ifindex: u32) -> Result<Option<Ipv4Addr>, NetlinkError> {
        let operation = format!("dump IPv4 routes for the default gateway of ifindex {ifindex}");
        let mut request = Message::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(&route_header());
        let mut best: Option<(u32, Ipv4Addr)> = None;
        self.dump(&operation, request, |message| {
            let Some(header) = message.get(..12) else {
                return Err("short rtmsg");
            };
            // family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
            if u16::from(header[0]) != libc::AF_INET as u16 || header[1] != 0 {
                return Ok(());
            }
            let mut table = u32::from(header[4]);
            let (mut oif, mut gateway, mut metric) = (None, None, 0);
            for (kind, data) in Attributes::new(&message[12..]) {
                match kind {
                    RTA_OIF => oif = read_u32(data, 0),
                    RTA_GATEWAY => gateway = <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from),
                    RTA_PRIORITY => metric = read_u32(data, 0).unwrap_or(0),
                    RTA_TABLE => table = read_u32(data, 0).unwrap_or(table),
                    _ => {}
                }
            }
            if let (Some(index), Some(gateway), RT_TABLE_MAIN) = (oif, gateway, table) {
                if index == ifindex && best.is_none_or(|(lowest, _)| metric < lowest) {
                    best = Some((metric, gateway));
                }
            }
            Ok(())
        })?;
        Ok(best.map(|(_, gateway)| gateway))
    }

    /// Removes `address/prefix_len` from interface `ifindex`. Removing an address the interface
    /// does not have succeeds, so shutdown can be repeated.
    pub fn remove_address(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let operation = format!("remove address {address}/{prefix_len} from ifindex {ifindex}");
        let mut request = Message::new(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK);
        request.push(&address_header(ifindex, prefix_len));
        request.attribute(IFA_LOCAL, &address.octets());
        request.attribute(IFA_ADDRESS, &address.octets());
        match self.acknowledged(&operation, request) {
            Ok(()) | Err(Reply::Errno(libc::EADDRNOTAVAIL)) => Ok(()),
            Err(error) => Err(refused(&operation, error)),
        }
    }

    /// Sends a request with `NLM_F_ACK` and waits for its acknowledgement.
    fn acknowledged(&mut self, operation: &str, request: Message) -> Result<(), Reply> {
        let sequence = self.send(operation, request).map_err(Reply::Failed)?;
        loop {
            let length = self.receive(operation).map_err(Reply::Failed)?;
            for message in Messages::new(&self.buffer[..length]) {
                let Ok((header, payload)) = message else {
                    return Err(Reply::Failed(malformed(operation, "bad message header")));
                };
                if header.sequence != sequence {
                    continue;
                }
                if header.kind == NLMSG_ERROR {
                    let errno = read_i32(payload, 0)
                        .ok_or_else(|| Reply::Failed(malformed(operation, "short error")))?;
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(Reply::Errno(-errno))
                    };
                }
            }
        }
    }

    /// Sends a dump request and calls `each` with the payload of every reply message.
    fn dump(
        &mut self,
        operation: &str,
        request: Message,
        mut each: impl FnMut(&[u8]) -> Result<(), &'static str>,
    ) -> Result<(), NetlinkError> {
        let sequence = self.send(operation, request)?;
        loop {
            let length = self.receive(operation)?;
            for message in Messages::new(&self.buffer[..length]) {
                let (header, payload) = message.map_err(|detail| malformed(operation, detail))?;
                if header.sequence != sequence {
                    continue;
                }
                match header.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = read_i32(payload, 0)
                            .ok_or_else(|| malformed(operation, "short error"))?;
                        if errno == 0 {
                            return Ok(());
                        }
                        return Err(refused(operation, Reply::Errno(-errno)));
                    }
                    NLMSG_OVERRUN => return Err(malformed(operation, "overrun")),
                    NLMSG_NOOP => {}
                    _ => each(payload).map_err(|detail| malformed(operation, detail))?,
                }
                if header.flags & NLM_F_MULTI == 0 {
                    return Ok(());
                }
            }
        }
    }

    fn send(&mut self, operation: &str, mut request: Message) -> Result<u32, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let bytes = request.finish(self.sequence);
        let kernel = kernel_address();
        // SAFETY: `bytes` and `kernel` are live for the call and their exact sizes are passed.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                std::ptr::from_ref(&kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io_error(&format!("{operation}: send netlink request")));
        }
        Ok(self.sequence)
    }

    /// Receives one datagram from the kernel into `self.buffer`; returns its length.
    fn receive(&mut self, operation: &str) -> Result<usize, NetlinkError> {
        loop {
            let mut source = kernel_address();
            let mut source_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: the buffer and address are live, writable and their sizes are passed;
            // MSG_TRUNC makes the kernel return the datagram's full length without writing more.
            let received = unsafe {
                libc::recvfrom(
                    self.socket.as_raw_fd(),
                    self.buffer.as_mut_ptr().cast(),
                    self.buffer.len(),
                    libc::MSG_TRUNC,
                    std::ptr::from_mut(&mut source).cast(),
                    &raw mut source_len,
                )
            };
            if received < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Io {
                    operation: format!("{operation}: receive netlink reply"),
                    source: error,
                });
            }
            let received = received.unsigned_abs();
            if received > self.buffer.len() {
                return Err(malformed(operation, "reply larger than the receive buffer"));
            }
            // Only the kernel (port 0) may answer; ignore anything else.
            if source.nl_pid == 0 {
                return Ok(received);
            }
        }
    }
}

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

// ---------------------------------------------------------------------------------------------
// Requests and replies.

/// Why an acknowledged request failed, before it is turned into a [`NetlinkError`].
enum Reply {
    /// The kernel answered with this (positive) errno.
    Errno(i32),
    /// Sending or receiving failed.
    Failed(NetlinkError),
}

fn refused(operation: &str, reply: Reply) -> NetlinkError {
    match reply {
        Reply::Errno(errno) => NetlinkError::Refused {
            operation: operation.to_owned(),
            source: io::Error::from_raw_os_error(errno),
        },
        Reply::Failed(error) => error,
    }
}

fn io_error(operation: &str) -> NetlinkError {
    NetlinkError::Io {
        operation: operation.to_owned(),
        source: io::Error::last_os_error(),
    }
}

fn malformed(operation: &str, detail: &'static str) -> NetlinkError {
    NetlinkError::Malformed {
        operation: operation.to_owned(),
        detail,
    }
}

fn kernel_address() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain integers, for which all-zero is a valid value.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    address
}

/// `struct ndmsg`: family, 3 bytes padding, ifindex, state, flags, type.
fn neighbour_header(ifindex: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0] = libc::AF_INET as u8;
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    header[8..10].copy_from_slice(&state.to_ne_bytes());
    header[10] = flags;
    header
}

/// `struct ifaddrmsg`: family, prefix length, flags, scope, ifindex.
fn address_header(ifindex: u32, prefix_len: u8) -> [u8; 8] {
    let mut header = [0u8; 8];
    header[0] = libc::AF_INET as u8;
    header[1] = prefix_len;
    header[3] = RT_SCOPE_UNIVERSE;
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    header
}

/// `struct rtmsg` for an IPv4 dump: family, then zeros (every table, every type).
fn route_header() -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0] = libc::AF_INET as u8;
    header
}

/// A request being built: `nlmsghdr`, a fixed header, then attributes, each 4-byte aligned.
struct Message {
    bytes: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Self {
        let mut bytes = vec![0u8; NLMSG_HEADER_LEN];
        bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
        bytes[6..8].copy_from_slice(&flags.to_ne_bytes());
        Message { bytes }
    }

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.bytes.resize(align4(self.bytes.len()), 0);
    }

    fn attribute(&mut self, kind: u16, data: &[u8]) {
        let length = (4 + data.len()) as u16;
        self.bytes.extend_from_slice(&length.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.push(data);
    }

    fn finish(&mut self, sequence: u32) -> &[u8] {
        let length = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&length.to_ne_bytes());
        self.bytes[8..12].copy_from_slice(&sequence.to_ne_bytes());
        &self.bytes
    }
}

/// The parts of a `nlmsghdr` we look at.
struct Header {
    kind: u16,
    flags: u16,
    sequence: u32,
}

/// The netlink messages in one datagram; yields an error (then stops) on a bad header.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Messages { rest: bytes }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<(Header, &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let length = read_u32(self.rest, 0).ok_or("short message header")? as usize;
            if length < NLMSG_HEADER_LEN || length > self.rest.len() {
                return Err("message length out of bounds");
            }
            let header = Header {
                kind: read_u16(self.rest, 4).ok_or("short message header")?,
                flags: read_u16(self.rest, 6).ok_or("short message header")?,
                sequence: read_u32(self.rest, 8).ok_or("short message header")?,
            };
            Ok((header, length))
        })();
        match parsed {
            Ok((header, length)) => {
                let payload = &self.rest[NLMSG_HEADER_LEN..length];
                self.rest = &self.rest[align4(length).min(self.rest.len())..];
                Some(Ok((header, payload)))
            }
            Err(detail) => {
                self.rest = &[];
                Some(Err(detail))
            }
        }
    }
}

/// `(type, data)` of each route attribute; stops at the first malformed one.
struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Attributes { rest: bytes }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let length = read_u16(self.rest, 0)? as usize;
        let kind = read_u16(self.rest, 2)? & NLA_TYPE_MASK;
        if length < 4 || length > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let data = &self.rest[4..length];
        self.rest = &self.rest[align4(length).min(self.rest.len())..];
        Some((kind, data))
    }
}

const fn align4(length: usize) -> usize {
    (length + 3) & !3
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn read_i32(bytes: &[u8], offset: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Interface ioctls.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_aligned_messages() {
        let mut message = Message::new(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK);
        message.push(&address_header(7, 32));
        message.attribute(IFA_LOCAL, &[192, 0, 2, 10]);
        message.attribute(99, &[1]);
        let bytes = message.finish(42).to_vec();
        assert_eq!(bytes.len(), 16 + 8 + 8 + 8);
        assert_eq!(read_u32(&bytes, 0), Some(40));
        assert_eq!(read_u16(&bytes, 4), Some(RTM_NEWADDR));
        assert_eq!(read_u32(&bytes, 8), Some(42));
        assert_eq!(read_u32(&bytes, 20), Some(7));
        let attributes: Vec<(u16, &[u8])> = Attributes::new(&bytes[24..]).collect();
        assert_eq!(
            attributes,
            [(IFA_LOCAL, &[192u8, 0, 2, 10][..]), (99, &[1u8][..])]
        );
    }

    #[test]
    fn malformed_input_stops_parsing_without_panicking() {
        // Attribute claiming more bytes than there are.
        let mut bytes = vec![0u8; 8];
        bytes[0..2].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(Attributes::new(&bytes).count(), 0);
        // Attribute length below its own header.
        bytes[0..2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(Attributes::new(&bytes).count(), 0);
        assert_eq!(Attributes::new(&bytes[..3]).count(), 0);
        // Message length out of bounds.
        let mut message = vec![0u8; 20];
        message[0..4].copy_from_slice(&64u32.to_ne_bytes());
        assert!(matches!(Messages::new(&message).next(), Some(Err(_))));
        message[0..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(matches!(Messages::new(&message).next(), Some(Err(_))));
        assert!(matches!(Messages::new(&message[..3]).next(), Some(Err(_))));
        // Every prefix of a good message parses or errors, never panics.
        let mut good = Message::new(RTM_GETNEIGH, NLM_F_REQUEST);
        good.push(&neighbour_header(1, NUD_REACHABLE, 0));
        good.attribute(NDA_DST, &[198, 51, 100, 1]);
        let good = good.finish(1).to_vec();
        for end in 0..good.len() {
            for item in Messages::new(&good[..end]).flatten() {
                let _ = Attributes::new(item.1.get(12..).unwrap_or(&[])).count();
            }
        }
    }

    #[test]
    fn loopback_queries() {
        assert_eq!(interface_index("lo").unwrap(), 1);
        assert!(interface_rx_queues("lo").unwrap() >= 1);
        assert!(matches!(
            interface_mac("lo"),
            Err(NetlinkError::NotEthernet(_))
        ));
        assert!(matches!(
            interface_index("nosuchif0"),
            Err(NetlinkError::NoSuchInterface(_))
        ));
        assert!(matches!(
            interface_mac("nosuchif0"),
            Err(NetlinkError::NoSuchInterface(_))
        ));
        assert!(matches!(
            interface_rx_queues("nosuchif0"),
            Err(NetlinkError::NoSuchInterface(_))
        ));
        assert!(matches!(
            interface_index("a-name-far-too-long"),
            Err(NetlinkError::InvalidInterfaceName(_))
        ));
        assert!(matches!(
            interface_index(""),
            Err(NetlinkError::InvalidInterfaceName(_))
        ));
        // A dump on a fresh socket completes (whatever the table holds).
        let mut netlink = Netlink::open().unwrap();
        assert_eq!(netlink.default_gateway(1).unwrap(), None);
        assert_eq!(
            netlink
                .neighbour_mac(1, Ipv4Addr::new(192, 0, 2, 1))
                .unwrap(),
            None
        );
    }
}
