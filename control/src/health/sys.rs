//! The few system calls the checker needs that std does not offer: a TCP connect that does not
//! block (to IPv4 or IPv6), poll(2) over many descriptors, a pidfd to poll for a child's exit, and SIGKILL to a
//! check's whole process group.
//!
//! Nothing else lives here: every other file of the health checker is safe code.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Why [`connect_nonblocking`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// No socket: the director's own trouble (out of descriptors or memory).
    Socket(io::Error),
    /// connect(2) failed at once: the server's (or the network's) answer.
    Connect(io::Error),
}

/// Starts a TCP connection to `address` (either family) without waiting for it. Returns the
/// stream and whether it is already connected (loopback may finish at once); otherwise it
/// becomes writable once the connection is made or has failed, and [`TcpStream::take_error`]
/// tells which. socket2 builds the `sockaddr_in`/`sockaddr_in6`, so this needs no unsafe code.
pub fn connect_nonblocking(address: SocketAddr) -> Result<(TcpStream, bool), ConnectError> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(ConnectError::Socket)?;
    let connected = match socket.connect(&address.into()) {
        Ok(()) => true,
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => false,
        Err(error) => return Err(ConnectError::Connect(error)),
    };
    Ok((socket.into(), connected))
}

/// poll(2): waits until one of `fds` is ready or `timeout` passes (rounded up to whole
/// milliseconds, so a deadline is never polled for early). Returns how many are ready; an
/// interrupted wait returns 0.
pub fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(error)
        };
    }
    Ok(ready.unsigned_abs() as usize)
}

/// A pidfd for child `pid`: readable once the child exits (Linux 5.3+).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: pidfd_open takes a pid and flags, no pointers; a negative result is an error.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SIGKILL to process group `group` (a check started with `process_group(0)` leads its own, so
/// this also ends whatever it started). A group already gone is not an error.
pub fn kill_process_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    if group <= 1 {
        return; // never signal every process (-1) or our own group (0)
    }
    // SAFETY: kill takes no pointers; the negative pid names exactly the check's group.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// A TCP listener with an accept queue of `backlog` (std always asks for a long one), so a test
/// can fill it and make further connection attempts hang.
#[cfg(test)]
pub fn listen_with_backlog(address: SocketAddr, backlog: i32) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind(address).expect("bind");
    // SAFETY: listen(2) on a descriptor the listener owns; calling it again only changes the
    // backlog.
    let result = unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), backlog) };
    assert_eq!(result, 0, "listen: {}", io::Error::last_os_error());
    listener
}
