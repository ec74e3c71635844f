//! The few calls into libc and libbpf that nothing else here wraps: interface lookups, the stop
//! flag set by SIGINT/SIGTERM, and BPF_PROG_RUN in live-frames mode (libbpf-rs's `test_run`
//! cannot pass `batch_size`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use dataplane::wire::MacAddr;
use libbpf_rs::libbpf_sys;

/// The index of interface `name` in the current network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// The hardware address of interface `name` (SIOCGIFHWADDR; needs no sysfs, which `ip netns
/// exec` remounts).
pub fn if_mac(name: &str) -> io::Result<MacAddr> {
    // SAFETY: ifreq is plain old data; all zeros is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= request.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (slot, &byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = byte.cast_signed();
    }
    // SAFETY: plain socket creation; the result is checked before use and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR reads the name from and writes the address into `request`, which
    // is a valid ifreq for the whole call.
    let result = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &raw mut request) };
    let error = io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    if result < 0 {
        return Err(error);
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds ifru_hwaddr.
    let address = unsafe { request.ifr_ifru.ifru_hwaddr };
    let mut mac = [0; 6];
    for (byte, &raw) in mac.iter_mut().zip(&address.sa_data) {
        *byte = raw.cast_unsigned();
    }
    Ok(mac)
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock `bpf_ktime_get_ns()` reads.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to write; CLOCK_MONOTONIC always
    // exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Set by SIGINT or SIGTERM once [`install_stop_signals`] ran.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    // An atomic store is async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the stop flag instead of killing the process, without
/// SA_RESTART: a sleep or a BPF_PROG_RUN in progress returns early (EINTR) so the command
/// stops within one step and still detaches and reports.
pub fn install_stop_signals() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain old data; all zeros is a valid value to fill in.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
        action.sa_flags = 0;
        // SAFETY: `sa_mask` is a valid sigset_t to initialise; the handler only stores an atomic.
        let result = unsafe {
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(signal, &raw const action, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Runs the XDP program `program` on `frame` `repeat` times with BPF_PROG_RUN in live-frames
/// mode (BPF_F_TEST_XDP_LIVE_FRAMES): each run gets a fresh page-pool frame, initialised from
/// `frame` when the page is first used, and what the program redirects is transmitted, flushed
/// every `batch_size` frames (1..=256). Runs on the calling CPU. A pending signal ends it early
/// (EINTR).
pub fn run_live(
    program: BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
    batch_size: u32,
) -> io::Result<()> {
    // SAFETY: bpf_test_run_opts is plain old data; all zeros is its documented default.
    let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    opts.sz = size_of::<libbpf_sys::bpf_test_run_opts>() as libbpf_sys::size_t;
    opts.data_in = frame.as_ptr().cast();
    opts.data_size_in = frame.len() as u32;
    opts.repeat = repeat.min(i32::MAX as u32).cast_signed();
    opts.flags = libbpf_sys::BPF_F_TEST_XDP_LIVE_FRAMES;
    opts.batch_size = batch_size;
    // SAFETY: `opts` is a valid, sized bpf_test_run_opts whose data_in points at `frame`, which
    // outlives the call; no output buffers are given (live mode refuses them).
    let result = unsafe { libbpf_sys::bpf_prog_test_run_opts(program.as_raw_fd(), &raw mut opts) };
    if result < 0 {
        return Err(io::Error::from_raw_os_error(-result));
    }
    Ok(())
}
