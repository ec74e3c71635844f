//! The only libc calls of the lab.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Whether the process runs as root (the lab needs namespaces and XDP).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `signal` to process `pid`; false if the process no longer exists.
pub(crate) fn kill(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false; // never signal a process group or every process
    }
    // SAFETY: kill takes plain integers; a positive pid addresses exactly one process.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Moves the calling thread (only it) into the network namespace at `path` (`/run/netns/NAME`).
/// Sockets it opens from then on, and threads it starts, belong to that namespace.
pub(crate) fn enter_network_namespace(path: &Path) -> io::Result<()> {
    let namespace = File::open(path)?;
    // SAFETY: setns takes a descriptor, live for the call, and a flag; it changes only the
    // calling thread's namespace.
    let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
