//! Interface addresses: adding and removing the VIPs, listing an interface's IPv4 or IPv6
//! addresses (`RTM_NEWADDR`, `RTM_DELADDR`, `RTM_GETADDR`).
//!
//! An IPv6 address is added with `IFA_F_NODAD`: a VIP (a /128) must answer at once, not after
//! duplicate address detection's second or more (RFC 4862 5.4); making sure no other host holds
//! it is the operator's, as for an IPv4 VIP (and VRRP's, under HA).
//!
//! Every address added here carries the director's mark, [`DIRECTOR_ADDRESS_PROTOCOL`], in
//! its `IFA_PROTO` attribute, and listings read it back ([`ListedAddress`]): that is how the
//! next run tells a VIP a killed director left behind from one the operator configured.
//! This module only marks and reports; deciding what to remove is `crate::director`'s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::message::{
    read_u32, Attributes, Message, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use super::socket::{refused, Netlink, NetlinkError, Reply};

// Constants from <linux/rtnetlink.h> and <linux/if_addr.h>.
pub(super) const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
pub(super) const IFA_LOCAL: u16 = 2;
pub(super) const IFA_ADDRESS: u16 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `ifa_flags`: no duplicate address detection.
const IFA_F_NODAD: u8 = 0x02;
/// The address's originator, a u8 (Linux 5.18 and later; older kernels ignore it).
pub(super) const IFA_PROTO: u16 = 11;

/// The `IFA_PROTO` value on every address the director adds: 0x4c ('L', load balancer).
/// Values 0 to 3 are the kernel's (`IFAPROT_UNSPEC`, `IFAPROT_KERNEL_LO`, `_RA`, `_LL`);
/// iproute2's `/etc/iproute2/rt_addrprotos` names none above them, and nothing else is known
/// to use 0x4c. iproute2 releases that know the attribute show it as `proto 0x4c` (or a name
/// given in `rt_addrprotos`) and add such an address with `ip addr add ... proto 0x4c`;
/// iproute2 6.1 neither shows nor sets it.
pub const DIRECTOR_ADDRESS_PROTOCOL: u8 = 0x4c;

/// One address of an interface, as a dump lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedAddress {
    /// The address (`IFA_LOCAL`, else `IFA_ADDRESS`).
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Who added it (`IFA_PROTO`): 0 when unset, as for any address added without it.
    pub protocol: u8,
}

impl ListedAddress {
    /// Whether a director added it ([`DIRECTOR_ADDRESS_PROTOCOL`]).
    pub fn is_directors(&self) -> bool {
        self.protocol == DIRECTOR_ADDRESS_PROTOCOL
    }
}

/// Result of [`Netlink::add_address`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressChange {
    /// The address was added; remove it on shutdown.
    Added,
    /// The interface already had it (someone else owns it: leave it on shutdown).
    AlreadyPresent,
}

impl Netlink {
    /// Adds `address/prefix_len` (IPv4, or IPv6 without DAD) to interface `ifindex`, marked as
    /// the director's ([`DIRECTOR_ADDRESS_PROTOCOL`]). An address the interface already has
    /// is not an error: it gives [`AddressChange::AlreadyPresent`] (and keeps its own mark).
    pub fn add_address(
        &mut self,
        ifindex: u32,
        address: impl Into<IpAddr>,
        prefix_len: u8,
    ) -> Result<AddressChange, NetlinkError> {
        let address = address.into();
        let operation = format!("add address {address}/{prefix_len} on ifindex {ifindex}");
        let mut request = Message::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        push_address(&mut request, ifindex, address, prefix_len);
        request.attribute(IFA_PROTO, &[DIRECTOR_ADDRESS_PROTOCOL]);
        match self.acknowledged(&operation, request) {
            Ok(()) => Ok(AddressChange::Added),
            Err(Reply::Errno(libc::EEXIST)) => Ok(AddressChange::AlreadyPresent),
            Err(error) => Err(refused(&operation, error)),
        }
    }

    /// The IPv4 addresses on interface `ifindex` with their prefix lengths, in the kernel's
    /// order (the primary address of each subnet first).
    pub fn addresses(&mut self, ifindex: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let found = self.addresses_of(AF_INET, ifindex)?;
        Ok(found
            .into_iter()
            .filter_map(|listed| match listed.address {
                IpAddr::V4(address) => Some((address, listed.prefix_len)),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// The IPv6 addresses on interface `ifindex` (link-local included) with their prefix
    /// lengths.
    pub fn addresses_v6(&mut self, ifindex: u32) -> Result<Vec<(Ipv6Addr, u8)>, NetlinkError> {
        let found = self.addresses_of(AF_INET6, ifindex)?;
        Ok(found
            .into_iter()
            .filter_map(|listed| match listed.address {
                IpAddr::V6(address) => Some((address, listed.prefix_len)),
                IpAddr::V4(_) => None,
            })
            .collect())
    }

    /// Every address of both families on interface `ifindex`, IPv4 first, each with who added
    /// it (`IFA_PROTO`).
    pub fn listed_addresses(&mut self, ifindex: u32) -> Result<Vec<ListedAddress>, NetlinkError> {
        let mut found = self.addresses_of(AF_INET, ifindex)?;
        found.extend(self.addresses_of(AF_INET6, ifindex)?);
        Ok(found)
    }

    /// The addresses of `family` on `ifindex`: `IFA_LOCAL` where given (with a peer,
    /// `IFA_ADDRESS` is the peer's), else `IFA_ADDRESS` (IPv6 sends only that without a peer).
    fn addresses_of(
        &mut self,
        family: u8,
        ifindex: u32,
    ) -> Result<Vec<ListedAddress>, NetlinkError> {
        let operation = format!("dump addresses on ifindex {ifindex}");
        let mut request = Message::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(&address_header(family, 0, 0, 0));
        let mut found = Vec::new();
        self.dump(&operation, request, |message| {
            if let Some(listed) = parse_address(message, family, ifindex)? {
                found.push(listed);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Removes `address/prefix_len` from interface `ifindex`. Removing an address the interface
    /// does not have succeeds, so shutdown can be repeated.
    pub fn remove_address(
        &mut self,
        ifindex: u32,
        address: impl Into<IpAddr>,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let address = address.into();
        let operation = format!("remove address {address}/{prefix_len} from ifindex {ifindex}");
        let mut request = Message::new(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK);
        push_address(&mut request, ifindex, address, prefix_len);
        match self.acknowledged(&operation, request) {
            Ok(()) | Err(Reply::Errno(libc::EADDRNOTAVAIL)) => Ok(()),
            Err(error) => Err(refused(&operation, error)),
        }
    }
}

/// One `RTM_NEWADDR` message of a dump: `None` when it is of another family or interface,
/// or names no address.
pub(super) fn parse_address(
    message: &[u8],
    family: u8,
    ifindex: u32,
) -> Result<Option<ListedAddress>, &'static str> {
    let Some(header) = message.get(..8) else {
        return Err("short ifaddrmsg");
    };
    let index = read_u32(header, 4).ok_or("short ifaddrmsg")?;
    if header[0] != family || index != ifindex {
        return Ok(None);
    }
    let prefix_len = header[1];
    let (mut local, mut address, mut protocol) = (None, None, 0);
    for (kind, data) in Attributes::new(&message[8..]) {
        let value = if let Ok(octets) = <[u8; 4]>::try_from(data) {
            Some(IpAddr::from(octets))
        } else {
            <[u8; 16]>::try_from(data).ok().map(IpAddr::from)
        };
        match kind {
            IFA_LOCAL => local = value,
            IFA_ADDRESS => address = value,
            IFA_PROTO => protocol = data.first().copied().unwrap_or(0),
            _ => {}
        }
    }
    Ok(local.or(address).map(|address| ListedAddress {
        address,
        prefix_len,
        protocol,
    }))
}

/// The header and address attributes of an add or remove request for `address/prefix_len`.
fn push_address(request: &mut Message, ifindex: u32, address: IpAddr, prefix_len: u8) {
    match address {
        IpAddr::V4(address) => {
            request.push(&address_header(AF_INET, ifindex, prefix_len, 0));
            request.attribute(IFA_LOCAL, &address.octets());
            request.attribute(IFA_ADDRESS, &address.octets());
        }
        IpAddr::V6(address) => {
            request.push(&address_header(AF_INET6, ifindex, prefix_len, IFA_F_NODAD));
            request.attribute(IFA_LOCAL, &address.octets());
            request.attribute(IFA_ADDRESS, &address.octets());
        }
    }
}

/// `struct ifaddrmsg`: family, prefix length, flags, scope, ifindex.
pub(super) fn address_header(family: u8, ifindex: u32, prefix_len: u8, flags: u8) -> [u8; 8] {
    let mut header = [0u8; 8];
    header[0] = family;
    header[1] = prefix_len;
    header[2] = flags;
    header[3] = RT_SCOPE_UNIVERSE;
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    header
}
