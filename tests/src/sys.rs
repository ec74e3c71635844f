//! The only libc calls of the lab.

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
