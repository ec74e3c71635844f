//! The rtnetlink socket and its request plumbing: [`Netlink`] opens a `NETLINK_ROUTE` socket,
//! sends one request at a time and matches replies by sequence number (acknowledged requests
//! and dumps); [`NetlinkError`] is what any netlink or interface query can fail with.
//!
//! The requests themselves (addresses, neighbours, routes) are in their own modules. Unsafe:
//! the socket, `setsockopt`, `sendto` and `recvfrom` calls, each with a SAFETY comment.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::message::{
    read_i32, Message, Messages, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_MULTI,
};

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

    /// Sends a request with `NLM_F_ACK` and waits for its acknowledgement.
    pub(super) fn acknowledged(&mut self, operation: &str, request: Message) -> Result<(), Reply> {
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
    pub(super) fn dump(
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

/// Why an acknowledged request failed, before it is turned into a [`NetlinkError`].
pub(super) enum Reply {
    /// The kernel answered with this (positive) errno.
    Errno(i32),
    /// Sending or receiving failed.
    Failed(NetlinkError),
}

pub(super) fn refused(operation: &str, reply: Reply) -> NetlinkError {
    match reply {
        Reply::Errno(errno) => NetlinkError::Refused {
            operation: operation.to_owned(),
            source: io::Error::from_raw_os_error(errno),
        },
        Reply::Failed(error) => error,
    }
}

pub(super) fn io_error(operation: &str) -> NetlinkError {
    NetlinkError::Io {
        operation: operation.to_owned(),
        source: io::Error::last_os_error(),
    }
}

pub(super) fn malformed(operation: &str, detail: &'static str) -> NetlinkError {
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
