//! The few calls into libc and libbpf that libbpf-rs does not wrap the way rs-decap needs.
//!
//! `libbpf_rs::Xdp` wraps libbpf's netlink XDP calls but cannot pass the expected old program
//! (`old_prog_fd`) together with a mode flag, which a safe replace or detach of a generic-mode
//! program needs, so those go to `libbpf_sys` directly.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

use libbpf_rs::libbpf_sys;

use crate::Mode;

/// The index of interface `name` in the current network namespace.
pub(crate) fn if_index(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// Every address of the host in the current network namespace, sorted (IPv4 first) and without
/// duplicates, except loopback (127/8, ::1) and IPv6 link-local (fe80::/10) addresses: a
/// link-local address names a host only together with an interface, which an outer destination
/// (and the director's real-server address) cannot say.
pub fn host_addrs() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs writes a list head, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addrs = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points to a sockaddr, whose family says its real
            // type; read unaligned to make no assumption about its alignment.
            let family = unsafe { (*entry.ifa_addr).sa_family };
            let addr = match i32::from(family) {
                libc::AF_INET => {
                    // SAFETY: AF_INET: the sockaddr is a sockaddr_in.
                    let sin =
                        unsafe { ptr::read_unaligned(entry.ifa_addr.cast::<libc::sockaddr_in>()) };
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))))
                }
                libc::AF_INET6 => {
                    // SAFETY: AF_INET6: the sockaddr is a sockaddr_in6.
                    let sin6 =
                        unsafe { ptr::read_unaligned(entry.ifa_addr.cast::<libc::sockaddr_in6>()) };
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                }
                _ => None,
            };
            if let Some(addr) = addr.filter(|addr| is_host_addr(*addr)) {
                addrs.push(addr);
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once, no reference into it remains.
    unsafe { libc::freeifaddrs(head) };
    addrs.sort_unstable();
    addrs.dedup();
    Ok(addrs)
}

/// Whether `addr` may be an outer destination (see [`host_addrs`]).
fn is_host_addr(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => !v4.is_loopback(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
    }
}

fn check(ret: i32) -> io::Result<()> {
    // libbpf returns -errno.
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(())
    }
}

/// The XDP program attached to `ifindex` and its mode (`None` mode: offloaded or several).
pub(crate) fn xdp_query(ifindex: u32) -> io::Result<Option<(u32, Option<Mode>)>> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: opts is a properly sized, initialised bpf_xdp_query_opts that outlives the call.
    check(unsafe { libbpf_sys::bpf_xdp_query(ifindex.cast_signed(), 0, &raw mut opts) })?;
    let found = match u32::from(opts.attach_mode) {
        libbpf_sys::XDP_ATTACHED_NONE => None,
        libbpf_sys::XDP_ATTACHED_DRV => Some((opts.drv_prog_id, Some(Mode::Native))),
        libbpf_sys::XDP_ATTACHED_SKB => Some((opts.skb_prog_id, Some(Mode::Generic))),
        _ => Some((
            [
                opts.prog_id,
                opts.drv_prog_id,
                opts.skb_prog_id,
                opts.hw_prog_id,
            ]
            .into_iter()
            .find(|id| *id != 0)
            .unwrap_or(0),
            None,
        )),
    };
    Ok(found)
}

/// Attaches `new` (`None`: detaches) on `ifindex` in `mode` through netlink. With `expected`,
/// the kernel changes nothing unless `expected` is the program attached (XDP_FLAGS_REPLACE);
/// without it, nothing unless no program is attached (XDP_FLAGS_UPDATE_IF_NOEXIST).
pub(crate) fn xdp_set(
    ifindex: u32,
    new: Option<BorrowedFd<'_>>,
    expected: Option<BorrowedFd<'_>>,
    mode: Mode,
) -> io::Result<()> {
    let mut flags = match mode {
        Mode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
        Mode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
    };
    let mut opts = libbpf_sys::bpf_xdp_attach_opts {
        sz: size_of::<libbpf_sys::bpf_xdp_attach_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    match expected {
        Some(fd) => {
            flags |= libbpf_sys::XDP_FLAGS_REPLACE;
            opts.old_prog_fd = fd.as_raw_fd();
        }
        None => flags |= libbpf_sys::XDP_FLAGS_UPDATE_IF_NOEXIST,
    }
    let new_fd = new.map_or(-1, |fd| fd.as_raw_fd());
    // SAFETY: plain integers and a properly sized, initialised opts that outlives the call; the
    // descriptors are borrowed, so they stay open during it.
    check(unsafe {
        libbpf_sys::bpf_xdp_attach(ifindex.cast_signed(), new_fd, flags, &raw const opts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_ipv6_link_local_are_not_outer_destinations() {
        for excluded in ["127.0.0.1", "127.1.2.3", "::1", "fe80::1", "febf::1"] {
            assert!(!is_host_addr(excluded.parse().unwrap()), "{excluded}");
        }
        // fec0::1 is just past fe80::/10; 169.254/16 has no such exclusion (the IPv4 path never had one).
        for kept in ["192.0.2.11", "169.254.0.1", "2001:db8::11", "fec0::1"] {
            assert!(is_host_addr(kept.parse().unwrap()), "{kept}");
        }
    }

    #[test]
    fn host_addrs_are_sorted_ipv4_first_without_loopback() {
        let addrs = host_addrs().unwrap();
        assert!(addrs.windows(2).all(|pair| pair[0] < pair[1]), "{addrs:?}");
        assert!(addrs.iter().all(|addr| is_host_addr(*addr)), "{addrs:?}");
    }
}
