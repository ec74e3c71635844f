//! The system calls VRRP needs: a raw IPv4 socket for protocol 112, its IPv6 twin
//! ([`Vrrp6Socket`], set up through socket2, read with `recvmsg` for the source, destination and
//! hop limit the kernel keeps out of the payload), a wake-up-aware `poll`, interface flags and
//! link-local addresses, and an `AF_PACKET` socket for gratuitous ARP and unsolicited neighbour
//! advertisements. The only unsafe code of [`super`]; every block says why it is sound.
//!
//! Sockets belong to the network namespace of the thread that opens them, so [`super::Vrrp`]
//! opens all of them in the caller's thread before starting its own.

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{wire, wire6};

/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

/// A raw IPv4 socket for VRRP: sends whole datagrams (`IP_HDRINCL`, so the TTL, TOS and source
/// address are ours), receives every protocol-112 datagram arriving on one interface.
#[derive(Debug)]
pub(super) struct VrrpSocket {
    fd: OwnedFd,
}

impl VrrpSocket {
    /// Opens the socket on `interface` (index `ifindex`): bound to the device, multicast out of
    /// it with TTL 255 and without looping our own advertisements back, and, if `join_group`,
    /// a member of 224.0.0.18 there. Non-blocking: [`wait`] says when to read.
    pub(super) fn open(interface: &str, ifindex: u32, join_group: bool) -> io::Result<Self> {
        // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor we own.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(wire::PROTOCOL),
            )
        };
        if raw < 0 {
            return Err(context(&io::Error::last_os_error(), "open raw VRRP socket"));
        }
        // SAFETY: `raw` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let socket = VrrpSocket { fd };
        let name = CString::new(interface).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name with a NUL byte",
            )
        })?;
        set_option_bytes(
            socket.fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_bytes_with_nul(),
            "SO_BINDTODEVICE",
        )?;
        set_option(&socket, libc::IPPROTO_IP, libc::IP_HDRINCL, 1, "IP_HDRINCL")?;
        // With IP_HDRINCL our header's TTL is what goes out; these keep it 255 should the
        // header ever be left to the kernel.
        set_option(&socket, libc::IPPROTO_IP, libc::IP_TTL, 255, "IP_TTL")?;
        set_option(
            &socket,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_TTL,
            255,
            "IP_MULTICAST_TTL",
        )?;
        set_option(
            &socket,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_LOOP,
            0,
            "IP_MULTICAST_LOOP",
        )?;
        // Only the groups this socket joined, not every group any socket of the host joined.
        set_option(
            &socket,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_ALL,
            0,
            "IP_MULTICAST_ALL",
        )?;
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index too large")
        })?;
        let request = libc::ip_mreqn {
            imr_multiaddr: in_addr(wire::MULTICAST_GROUP),
            imr_address: in_addr(Ipv4Addr::UNSPECIFIED),
            imr_ifindex: ifindex,
        };
        set_option_struct(&socket, libc::IP_MULTICAST_IF, &request, "IP_MULTICAST_IF")?;
        if join_group {
            set_option_struct(
                &socket,
                libc::IP_ADD_MEMBERSHIP,
                &request,
                "IP_ADD_MEMBERSHIP",
            )?;
        }
        Ok(socket)
    }

    /// Sends one whole IPv4 datagram to `destination` (which must match its header's).
    pub(super) fn send(&self, datagram: &[u8], destination: Ipv4Addr) -> io::Result<()> {
        let address = sockaddr_in(destination);
        // SAFETY: `datagram` and `address` are live for the call and their exact sizes are
        // passed; the kernel only reads them.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                datagram.as_ptr().cast(),
                datagram.len(),
                0,
                std::ptr::from_ref(&address).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram (IP header included) into `buffer`: its length, or `None` when
    /// nothing is waiting. A datagram longer than `buffer` is cut short, and fails to parse.
    pub(super) fn receive(&self, buffer: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buffer` is live and writable for its whole length, which is passed.
        let received = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(error),
            };
        }
        Ok(Some(received.unsigned_abs()))
    }
}

impl AsFd for VrrpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What [`wait`] found readable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Readable {
    /// The VRRP socket has a datagram.
    pub socket: bool,
    /// The wake-up socket has a byte (a command is queued).
    pub wake: bool,
}

/// Waits until `socket` or `wake` is readable, at most `timeout` (rounded up to whole
/// milliseconds, so that a wait never ends before a timer it was computed from).
pub(super) fn wait(
    socket: BorrowedFd<'_>,
    wake: BorrowedFd<'_>,
    timeout: Duration,
) -> io::Result<Readable> {
    let mut fds = [
        libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    let millis = libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a live, writable array of two pollfd, and its length is passed.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(Readable::default());
        }
        return Err(error);
    }
    let readable = |revents: libc::c_short| revents & (libc::POLLIN | libc::POLLERR) != 0;
    Ok(Readable {
        socket: readable(fds[0].revents),
        wake: readable(fds[1].revents),
    })
}

/// Whether `interface` is up and has a carrier (`IFF_UP` and `IFF_RUNNING`), asked through
/// `socket` (any socket of the namespace will do).
pub(super) fn link_is_up(socket: BorrowedFd<'_>, interface: &str) -> io::Result<bool> {
    let mut request = IfReq::new(interface)?;
    // SAFETY: `request` is a live, writable `struct ifreq` of the size the kernel expects for
    // SIOCGIFFLAGS, which writes the flags into its union.
    let result = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            std::ptr::from_mut(&mut request),
        )
    };
    if result < 0 {
        return Err(context(
            &io::Error::last_os_error(),
            &format!("read the flags of {interface:?}"),
        ));
    }
    // ifr_flags is a short at the start of the union.
    let flags = libc::c_int::from(i16::from_ne_bytes([request.ifru[0], request.ifru[1]]));
    Ok(flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
}

/// An `AF_PACKET` socket that sends whole Ethernet frames out of one interface and receives
/// nothing (protocol 0).
#[derive(Debug)]
pub(super) struct FrameSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl FrameSocket {
    /// Opens the socket for interface `ifindex`.
    pub(super) fn open(ifindex: u32) -> io::Result<Self> {
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index too large")
        })?;
        // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor we own.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(context(
                &io::Error::last_os_error(),
                "open AF_PACKET socket",
            ));
        }
        // SAFETY: `raw` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(FrameSocket { fd, ifindex })
    }

    /// Sends one whole Ethernet frame as is (a gratuitous ARP or a neighbour advertisement):
    /// its destination MAC and EtherType say where and what.
    pub(super) fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shorter than an Ethernet header",
            ));
        }
        // SAFETY: sockaddr_ll is plain integers and byte arrays, for which all-zero is valid.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as libc::c_ushort;
        // Both already in network byte order, as the frame carries them.
        address.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        address.sll_ifindex = self.ifindex;
        address.sll_halen = 6;
        address.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `address` are live for the call and their exact sizes are passed;
        // the kernel only reads them.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&address).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Either family's advertisement socket: what the VRRP thread polls and sends through.
#[derive(Debug)]
pub(super) enum AdvertSocket {
    /// Raw IPv4, whole datagrams.
    V4(VrrpSocket),
    /// Raw IPv6, VRRP messages only.
    V6(Vrrp6Socket),
}

impl AsFd for AdvertSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            AdvertSocket::V4(socket) => socket.as_fd(),
            AdvertSocket::V6(socket) => socket.as_fd(),
        }
    }
}

/// A VRRP message received over IPv6, with what `recvmsg` said about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Received6 {
    /// Bytes of the message in the buffer.
    pub len: usize,
    /// The sender's (link-local) address.
    pub source: Ipv6Addr,
    /// Where it was sent: ff02::12 or our address. Unspecified if the kernel did not say.
    pub destination: Ipv6Addr,
    /// Its hop limit; 0 if the kernel did not say (and so fails the check for 255).
    pub hop_limit: u8,
}

/// A raw IPv6 socket for VRRP (RFC 5798 5.1.2): bound to one interface and to its link-local
/// address (the advertisements' source), hop limit 255 for multicast and unicast alike, our own
/// multicast not looped back, a member of ff02::12 there. The kernel builds the IPv6 header; we
/// compute the VRRP checksum ourselves (no `IPV6_CHECKSUM`), so the kernel neither fills nor
/// checks it and [`wire6::parse_message`] counts bad ones.
#[derive(Debug)]
pub(super) struct Vrrp6Socket {
    socket: Socket,
    ifindex: u32,
}

impl Vrrp6Socket {
    /// Opens the socket on `interface` (index `ifindex`), sending from `source`.
    pub(super) fn open(interface: &str, ifindex: u32, source: Ipv6Addr) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::IPV6,
            Type::RAW.nonblocking().cloexec(),
            Some(Protocol::from(i32::from(wire::PROTOCOL))),
        )
        .map_err(|error| context(&error, "open raw IPv6 VRRP socket"))?;
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(|error| context(&error, "SO_BINDTODEVICE"))?;
        socket
            .bind(&SockAddr::from(SocketAddrV6::new(source, 0, 0, ifindex)))
            .map_err(|error| context(&error, &format!("bind to {source}%{interface}")))?;
        socket
            .set_multicast_hops_v6(u32::from(wire6::HOP_LIMIT))
            .map_err(|error| context(&error, "IPV6_MULTICAST_HOPS"))?;
        socket
            .set_unicast_hops_v6(u32::from(wire6::HOP_LIMIT))
            .map_err(|error| context(&error, "IPV6_UNICAST_HOPS"))?;
        socket
            .set_multicast_loop_v6(false)
            .map_err(|error| context(&error, "IPV6_MULTICAST_LOOP"))?;
        // Only the groups this socket joined, not every group any socket of the host joined.
        socket
            .set_multicast_all_v6(false)
            .map_err(|error| context(&error, "IPV6_MULTICAST_ALL"))?;
        socket
            .set_multicast_if_v6(ifindex)
            .map_err(|error| context(&error, "IPV6_MULTICAST_IF"))?;
        socket
            .set_recv_hoplimit_v6(true)
            .map_err(|error| context(&error, "IPV6_RECVHOPLIMIT"))?;
        set_option_bytes(
            socket.as_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            &1i32.to_ne_bytes(),
            "IPV6_RECVPKTINFO",
        )?;
        socket
            .join_multicast_v6(&wire6::MULTICAST_GROUP, ifindex)
            .map_err(|error| context(&error, "IPV6_ADD_MEMBERSHIP ff02::12"))?;
        Ok(Vrrp6Socket { socket, ifindex })
    }

    /// Sends one VRRP message to `destination` (scoped to the socket's interface).
    pub(super) fn send(&self, message: &[u8], destination: Ipv6Addr) -> io::Result<()> {
        let address = SockAddr::from(SocketAddrV6::new(destination, 0, 0, self.ifindex));
        self.socket.send_to(message, &address).map(|_| ())
    }

    /// Receives one message into `buffer`, or `None` when nothing is waiting.
    pub(super) fn receive(&self, buffer: &mut [u8]) -> io::Result<Option<Received6>> {
        // SAFETY: sockaddr_in6 is plain integers and byte arrays, for which all-zero is valid.
        let mut source: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        // u64s so that the control buffer is aligned for cmsghdr.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: msghdr is plain integers and pointers, for which all-zero (null) is valid.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_name = std::ptr::from_mut(&mut source).cast();
        header.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        header.msg_iov = &raw mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = size_of_val(&control);
        // SAFETY: every pointer in `header` points to a live, writable buffer of the length
        // given beside it (`buffer` through `iov`, `source`, `control`), all outliving the call.
        let received = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &raw mut header, 0) };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(error),
            };
        }
        let mut destination = Ipv6Addr::UNSPECIFIED;
        let mut hop_limit = 0u8;
        // SAFETY: `header` was filled by recvmsg: msg_control and msg_controllen describe the
        // control messages it wrote into `control`, which the CMSG macros walk within bounds.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const header);
            while !cmsg.is_null() {
                let level = (*cmsg).cmsg_level;
                let kind = (*cmsg).cmsg_type;
                let data = libc::CMSG_DATA(cmsg);
                if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT {
                    let value = data.cast::<libc::c_int>().read_unaligned();
                    hop_limit = u8::try_from(value).unwrap_or(0);
                } else if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    destination = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                }
                cmsg = libc::CMSG_NXTHDR(&raw const header, cmsg);
            }
        }
        Ok(Some(Received6 {
            len: received.unsigned_abs(),
            source: Ipv6Addr::from(source.sin6_addr.s6_addr),
            destination,
            hop_limit,
        }))
    }
}

impl AsFd for Vrrp6Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// `IFA_F_TENTATIVE`: still in duplicate address detection, not usable as a source.
const IFA_F_TENTATIVE: u32 = 0x40;
/// `IFA_F_DADFAILED`.
const IFA_F_DADFAILED: u32 = 0x08;

/// `interface`'s IPv6 link-local address, ready for use (not tentative), from the calling
/// thread's namespace's `/proc/thread-self/net/if_inet6` (`/proc/net` is the process's main
/// thread's namespace). `None` if it has none: IPv6 disabled, or DAD still running.
pub(super) fn link_local_address(interface: &str) -> io::Result<Option<Ipv6Addr>> {
    let table = std::fs::read_to_string("/proc/thread-self/net/if_inet6")
        .map_err(|error| context(&error, "read /proc/thread-self/net/if_inet6"))?;
    Ok(parse_if_inet6(&table, interface))
}

/// The first usable link-local address of `interface` in an `if_inet6` table: lines of
/// address (32 hex digits), ifindex, prefix length, scope, flags (hex) and name.
fn parse_if_inet6(table: &str, interface: &str) -> Option<Ipv6Addr> {
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [address, _, _, scope, flags, name] = fields[..] else {
            return None;
        };
        let flags = u32::from_str_radix(flags, 16).ok()?;
        let usable =
            name == interface && scope == "20" && flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0;
        if !usable {
            return None;
        }
        u128::from_str_radix(address, 16).ok().map(Ipv6Addr::from)
    })
}

/// `struct ifreq`: the name, then a 24-byte union.
#[repr(C, align(8))]
struct IfReq {
    name: [u8; IFNAMSIZ],
    ifru: [u8; 24],
}

const _: () = assert!(size_of::<IfReq>() == 40);

impl IfReq {
    fn new(interface: &str) -> io::Result<Self> {
        if interface.is_empty() || interface.len() >= IFNAMSIZ || interface.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid interface name {interface:?}"),
            ));
        }
        let mut request = IfReq {
            name: [0; IFNAMSIZ],
            ifru: [0; 24],
        };
        request.name[..interface.len()].copy_from_slice(interface.as_bytes());
        Ok(request)
    }
}

fn in_addr(address: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        // s_addr holds the address in network byte order.
        s_addr: u32::from_ne_bytes(address.octets()),
    }
}

fn sockaddr_in(address: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: in_addr(address),
        sin_zero: [0; 8],
    }
}

fn set_option(
    socket: &VrrpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    what: &str,
) -> io::Result<()> {
    set_option_bytes(socket.fd.as_fd(), level, name, &value.to_ne_bytes(), what)
}

fn set_option_struct(
    socket: &VrrpSocket,
    name: libc::c_int,
    value: &libc::ip_mreqn,
    what: &str,
) -> io::Result<()> {
    // SAFETY: the option value points to a live `ip_mreqn` and its exact size is passed.
    let result = unsafe {
        libc::setsockopt(
            socket.fd.as_raw_fd(),
            libc::IPPROTO_IP,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(context(&io::Error::last_os_error(), what));
    }
    Ok(())
}

fn set_option_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
    what: &str,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option value too long"))?;
    // SAFETY: the option value points to `value`, live for the call, and its exact size is
    // passed; the kernel only reads it.
    let result =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if result < 0 {
        return Err(context(&io::Error::last_os_error(), what));
    }
    Ok(())
}

/// `error` with what was being done in front of it.
fn context(error: &io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_address_from_if_inet6() {
        let table = "\
00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000010 02 80 00 80     eth0
fe800000000000000000000000000002 03 40 20 c0     eth1
fe8000000000000000000000000000aa 02 40 20 80     eth0
";
        assert_eq!(
            parse_if_inet6(table, "eth0"),
            Some("fe80::aa".parse().unwrap())
        );
        // eth1's is tentative (0x40): still in DAD.
        assert_eq!(parse_if_inet6(table, "eth1"), None);
        assert_eq!(parse_if_inet6(table, "lo"), None);
        assert_eq!(parse_if_inet6("garbage\n", "eth0"), None);
    }
}
