//! The notification side of rtnetlink: [`NetlinkMonitor`] is a second, non-blocking
//! `NETLINK_ROUTE` socket joined to the multicast groups the FIB mirror follows (links, IPv4
//! and IPv6 addresses and routes, neighbours of both families, nexthop objects), and [`Netlink::dump_payloads`] the full
//! dumps the mirror starts (and restarts after an overrun) from.
//!
//! What it must not do: interpret the messages (the FIB mirror does) or block: a read returns
//! whatever is queued. Unsafe: `socket`, `setsockopt`, `recv` and `poll`, each with a SAFETY
//! comment.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::message::{
    Message, Messages, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLM_F_DUMP, NLM_F_REQUEST,
};
use super::socket::{io_error, Netlink, NetlinkError};

// Groups from <linux/rtnetlink.h> (`enum rtnetlink_groups`).
const RTNLGRP_LINK: libc::c_int = 1;
const RTNLGRP_NEIGH: libc::c_int = 3;
const RTNLGRP_IPV4_IFADDR: libc::c_int = 5;
const RTNLGRP_IPV4_ROUTE: libc::c_int = 7;
const RTNLGRP_IPV6_IFADDR: libc::c_int = 9;
const RTNLGRP_IPV6_ROUTE: libc::c_int = 11;
const RTNLGRP_NEXTHOP: libc::c_int = 32;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
/// Socket receive buffer asked for, so that a burst of notifications (a routing daemon
/// installing a full table) does not overrun at once; an overrun still only costs a re-dump.
const NOTIFICATION_BUFFER_BYTES: libc::c_int = 4 << 20;
const RECEIVE_BUFFER: usize = 64 * 1024;

/// What one [`NetlinkMonitor::drain`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Notifications handed to the callback.
    pub messages: u64,
    /// The kernel dropped notifications (`ENOBUFS`): the reader's copy is out of date and must
    /// be dumped again.
    pub overrun: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct NetlinkMonitor {
    socket: OwnedFd,
    buffer: Vec<u8>,
}

impl NetlinkMonitor {
    /// Opens a non-blocking socket in the calling thread's network namespace, joined to the
    /// link, neighbour, IPv4 and IPv6 address and route, and nexthop groups. Joining the nexthop group
    /// fails on kernels before 5.3; that alone is not an error.
    pub fn open() -> Result<Self, NetlinkError> {
        // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io_error("open netlink notification socket"));
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // Bound (port id 0: the kernel picks one) so that the socket is on the groups' lists.
        // SAFETY: sockaddr_nl is plain integers, for which all-zero is a valid value.
        let mut local: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        local.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the address is a live sockaddr_nl and its exact size is passed.
        let bound = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                std::ptr::from_ref(&local).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(io_error("bind netlink notification socket"));
        }
        // SO_RCVBUFFORCE (root) ignores rmem_max; fall back to SO_RCVBUF if refused.
        if set_int_option(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            NOTIFICATION_BUFFER_BYTES,
        )
        .is_err()
        {
            set_int_option(
                &socket,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                NOTIFICATION_BUFFER_BYTES,
            )
            .map_err(|()| io_error("set netlink notification buffer"))?;
        }
        for group in [
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV6_ROUTE,
        ] {
            set_int_option(&socket, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
                .map_err(|()| io_error(&format!("join rtnetlink group {group}")))?;
        }
        // Nexthop objects exist from Linux 5.3; without the group there are none to follow.
        let _ = set_int_option(
            &socket,
            SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            RTNLGRP_NEXTHOP,
        );
        Ok(NetlinkMonitor {
            socket,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// The descriptor, for poll(2) in another loop: readable when notifications are queued.
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Waits at most `timeout` for a notification; whether one is queued.
    pub fn wait(&self, timeout: Duration) -> Result<bool, NetlinkError> {
        let mut poll = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one live, writable pollfd and a count of 1.
        let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(NetlinkError::Io {
                operation: "poll netlink notification socket".to_owned(),
                source: error,
            });
        }
        Ok(ready > 0)
    }

    /// Reads every queued notification, calling `each(message type, payload)` for each, until
    /// the socket is empty. Never blocks.
    pub fn drain(&mut self, mut each: impl FnMut(u16, &[u8])) -> Result<Drained, NetlinkError> {
        let mut drained = Drained::default();
        loop {
            // SAFETY: the buffer is live and writable and its length is passed; MSG_TRUNC makes
            // the kernel return a datagram's full length without writing past the buffer.
            let received = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    self.buffer.as_mut_ptr().cast(),
                    self.buffer.len(),
                    libc::MSG_TRUNC,
                )
            };
            if received < 0 {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return Ok(drained),
                    Some(libc::ENOBUFS) => {
                        drained.overrun = true;
                        continue;
                    }
                    _ => {
                        return Err(NetlinkError::Io {
                            operation: "receive netlink notification".to_owned(),
                            source: error,
                        })
                    }
                }
            }
            let received = received.unsigned_abs();
            if received > self.buffer.len() {
                // Cannot happen for notifications (each is one small message); treat it as lost.
                drained.overrun = true;
                continue;
            }
            for message in Messages::new(&self.buffer[..received]) {
                let Ok((header, payload)) = message else {
                    break;
                };
                if matches!(header.kind, NLMSG_NOOP | NLMSG_DONE | NLMSG_ERROR) {
                    continue;
                }
                drained.messages += 1;
                each(header.kind, payload);
            }
        }
    }
}

impl Netlink {
    /// Dumps a table: sends request `kind` with fixed header `header` and `NLM_F_DUMP`, and
    /// calls `each` with every reply message's payload (fixed header and attributes).
    pub fn dump_payloads(
        &mut self,
        operation: &str,
        kind: u16,
        header: &[u8],
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), NetlinkError> {
        let mut request = Message::new(kind, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(header);
        self.dump(operation, request, |payload| {
            each(payload);
            Ok(())
        })
    }
}

fn set_int_option(
    socket: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> Result<(), ()> {
    // SAFETY: the option value points to a live c_int and its exact size is passed.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result < 0 {
        Err(())
    } else {
        Ok(())
    }
}
