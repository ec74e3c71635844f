//! Rust mirror of `bpf/director.h`, the ABI between the XDP classifier and user space.
//!
//! Types are `#[repr(C)]` with explicit padding and size checks, and convert to the exact bytes
//! the maps hold without any pointer casts.

use std::net::Ipv4Addr;

use crate::service::ServiceKey;

use super::NatBackendKey;

/// `struct service_key`: the key of the `services` map, and of the `nat_backends` map (where
/// `vip_be` holds the real server's address and `port_be` the port it listens on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ServiceKeyAbi {
    /// VIP (or NAT real server) address, network order.
    pub vip_be: [u8; 4],
    /// Port, network order.
    pub port_be: [u8; 2],
    /// IP protocol number.
    pub protocol: u8,
    /// Always zero: the kernel hashes every key byte.
    pub pad: u8,
}

impl ServiceKeyAbi {
    /// The key for a service (`services`).
    pub fn new(key: &ServiceKey) -> Self {
        ServiceKeyAbi {
            vip_be: match key.vip {
                std::net::IpAddr::V4(vip) => vip.octets(),
                // integrator: bpf6
                std::net::IpAddr::V6(_) => [0; 4],
            },
            port_be: key.port.to_be_bytes(),
            protocol: key.protocol.number(),
            pad: 0,
        }
    }

    /// The key for a NAT real server (`nat_backends`).
    pub fn from_nat_backend(key: &NatBackendKey) -> Self {
        ServiceKeyAbi {
            vip_be: key.address.octets(),
            port_be: key.port.to_be_bytes(),
            protocol: key.protocol.number(),
            pad: 0,
        }
    }

    /// The bytes as the map stores them.
    pub fn to_bytes(self) -> [u8; 8] {
        let [a, b, c, d] = self.vip_be;
        let [p0, p1] = self.port_be;
        [a, b, c, d, p0, p1, self.protocol, self.pad]
    }

    /// The VIP.
    pub fn vip(self) -> Ipv4Addr {
        Ipv4Addr::from(self.vip_be)
    }
}

/// `struct local_address`: the key of the `local_addresses` map, one of the director's own
/// addresses on the interface. The map's value is one unused byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct LocalAddressAbi {
    /// The address, network order.
    pub addr_be: [u8; 4],
}

impl LocalAddressAbi {
    /// The key for `address`.
    pub fn new(address: Ipv4Addr) -> Self {
        LocalAddressAbi {
            addr_be: address.octets(),
        }
    }

    /// The bytes as the map stores them.
    pub fn to_bytes(self) -> [u8; 4] {
        self.addr_be
    }
}

/// `struct service_value`: the value of the `services` and `nat_backends` maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ServiceValueAbi {
    /// `SERVICE_F_*` bits.
    pub flags: u32,
}

impl ServiceValueAbi {
    /// `SERVICE_F_ENABLED`: frames go to the AF_XDP sockets (without it: to the kernel, counted
    /// as `service_disabled`).
    pub const ENABLED: u32 = 1;

    /// The bytes as the map stores them (host order, as the BPF program reads them).
    pub fn to_bytes(self) -> [u8; 4] {
        self.flags.to_ne_bytes()
    }
}

/// `enum xdp_counter`, with the names the stats socket uses, in index order. Every frame bumps
/// exactly one. Only ever appended to: the indices are the ABI.
///
/// `redirected`, `nat_reply` and `icmp_redirected` count frames sent to a socket; every other
/// one counts frames passed to the kernel, and why.
pub const XDP_COUNTER_NAMES: [&str; 18] = [
    "redirected",
    "no_socket",
    "service_disabled",
    "no_service",
    "not_ipv4",
    "vlan",
    "truncated",
    "bad_ihl",
    "ip_options",
    "fragment",
    "other_protocol",
    "nat_reply",
    "icmp_redirected",
    "icmp_not_error",
    "icmp_no_service",
    "icmp_truncated",
    "icmp_bad_quote",
    "to_director",
];

/// `DIRECTOR_MAX_SERVICES`: size of the `services` map.
pub const MAX_SERVICES: u32 = 4096;

/// `DIRECTOR_MAX_NAT_BACKENDS`: size of the `nat_backends` map.
pub const MAX_NAT_BACKENDS: u32 = 65536;

/// `DIRECTOR_MAX_LOCAL_ADDRESSES`: size of the `local_addresses` map.
pub const MAX_LOCAL_ADDRESSES: u32 = 256;

/// `DIRECTOR_MAX_QUEUES`: size of the XSKMAP.
pub const MAX_QUEUES: u32 = 256;

const _: () = assert!(std::mem::size_of::<ServiceKeyAbi>() == 8);
const _: () = assert!(std::mem::size_of::<ServiceValueAbi>() == 4);
const _: () = assert!(std::mem::size_of::<LocalAddressAbi>() == 4);
