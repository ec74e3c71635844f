//! Rust mirror of `bpf/director.h`, the ABI between the XDP classifier and user space.
//!
//! Types are `#[repr(C)]` with explicit padding and size checks, and convert to the exact bytes
//! the maps hold without any pointer casts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::service::Protocol;

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
    /// The key for a service's `vip:port` (`services`), or a NAT real server's `address:port`
    /// (`nat_backends`).
    pub fn new(vip: Ipv4Addr, port: u16, protocol: Protocol) -> Self {
        ServiceKeyAbi {
            vip_be: vip.octets(),
            port_be: port.to_be_bytes(),
            protocol: protocol.number(),
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

/// `struct service_key6`: [`ServiceKeyAbi`] for IPv6, the key of `services6` and
/// `nat_backends6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ServiceKey6Abi {
    /// VIP (or NAT real server) address, network order.
    pub vip: [u8; 16],
    /// Port, network order.
    pub port_be: [u8; 2],
    /// IP protocol number.
    pub protocol: u8,
    /// Always zero: the kernel hashes every key byte.
    pub pad: u8,
}

impl ServiceKey6Abi {
    /// The key for a service's `vip:port` (`services6`), or a NAT real server's `address:port`
    /// (`nat_backends6`).
    pub fn new(vip: Ipv6Addr, port: u16, protocol: Protocol) -> Self {
        ServiceKey6Abi {
            vip: vip.octets(),
            port_be: port.to_be_bytes(),
            protocol: protocol.number(),
            pad: 0,
        }
    }

    /// The bytes as the map stores them.
    pub fn to_bytes(self) -> [u8; 20] {
        let mut bytes = [0; 20];
        bytes[..16].copy_from_slice(&self.vip);
        bytes[16..18].copy_from_slice(&self.port_be);
        bytes[18] = self.protocol;
        bytes[19] = self.pad;
        bytes
    }

    /// The VIP.
    pub fn vip(self) -> Ipv6Addr {
        Ipv6Addr::from(self.vip)
    }
}

/// The key bytes of a `services`/`nat_backends` entry of either family: the map of the
/// address's family stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointKeyBytes {
    /// For `services` or `nat_backends`.
    V4([u8; 8]),
    /// For `services6` or `nat_backends6`.
    V6([u8; 20]),
}

impl EndpointKeyBytes {
    /// The key for `address:port` over `protocol`, in its family's map.
    pub fn new(address: IpAddr, port: u16, protocol: Protocol) -> Self {
        match address {
            IpAddr::V4(address) => {
                EndpointKeyBytes::V4(ServiceKeyAbi::new(address, port, protocol).to_bytes())
            }
            IpAddr::V6(address) => {
                EndpointKeyBytes::V6(ServiceKey6Abi::new(address, port, protocol).to_bytes())
            }
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            EndpointKeyBytes::V4(bytes) => bytes,
            EndpointKeyBytes::V6(bytes) => bytes,
        }
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

/// `struct local_address6`: [`LocalAddressAbi`] for IPv6, the key of `local_addresses6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct LocalAddress6Abi {
    /// The address, network order.
    pub addr: [u8; 16],
}

impl LocalAddress6Abi {
    /// The key for `address`.
    pub fn new(address: Ipv6Addr) -> Self {
        LocalAddress6Abi {
            addr: address.octets(),
        }
    }

    /// The bytes as the map stores them.
    pub fn to_bytes(self) -> [u8; 16] {
        self.addr
    }
}

/// `struct service_value`: the value of the `services` and `nat_backends` maps and their IPv6
/// twins.
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
/// one counts frames passed to the kernel, and why. Both families share them except the
/// `ipv6_*` ones; the `icmp_*` ones count ICMPv6 too.
pub const XDP_COUNTER_NAMES: [&str; 23] = [
    "redirected",
    "no_socket",
    "service_disabled",
    "no_service",
    "not_ip",
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
    "ipv6_ext_truncated",
    "ipv6_ext_too_long",
    "ipv6_jumbogram",
    "ipv6_bad_payload_len",
    "ipv6_bad_version",
];

/// `DIRECTOR_MAX_SERVICES`: size of the `services` map (and of `services6`).
pub const MAX_SERVICES: u32 = 4096;

/// `DIRECTOR_MAX_NAT_BACKENDS`: size of the `nat_backends` map (and of `nat_backends6`).
pub const MAX_NAT_BACKENDS: u32 = 65536;

/// `DIRECTOR_MAX_LOCAL_ADDRESSES`: size of the `local_addresses` map (and of
/// `local_addresses6`).
pub const MAX_LOCAL_ADDRESSES: u32 = 256;

/// `DIRECTOR_MAX_QUEUES`: size of the XSKMAP.
pub const MAX_QUEUES: u32 = 256;

/// `DIRECTOR_MAX_IPV6_EXT_HEADERS`: extension headers the IPv6 walk follows; one more counts
/// `ipv6_ext_too_long`.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

const _: () = assert!(std::mem::size_of::<ServiceKeyAbi>() == 8);
const _: () = assert!(std::mem::size_of::<ServiceValueAbi>() == 4);
const _: () = assert!(std::mem::size_of::<LocalAddressAbi>() == 4);
const _: () = assert!(std::mem::size_of::<ServiceKey6Abi>() == 20);
const _: () = assert!(std::mem::size_of::<LocalAddress6Abi>() == 16);
