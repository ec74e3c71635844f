//! Interface addresses: adding and removing the VIPs, listing an interface's IPv4 addresses
//! (`RTM_NEWADDR`, `RTM_DELADDR`, `RTM_GETADDR`).

use std::net::Ipv4Addr;

use super::message::{
    read_u32, Attributes, Message, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use super::socket::{refused, Netlink, NetlinkError, Reply};

// Constants from <linux/rtnetlink.h> and <linux/if_addr.h>.
pub(super) const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
pub(super) const IFA_LOCAL: u16 = 2;
const IFA_ADDRESS: u16 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;

/// Result of [`Netlink::add_address`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressChange {
    /// The address was added; remove it on shutdown.
    Added,
    /// The interface already had it (someone else owns it: leave it on shutdown).
    AlreadyPresent,
}

impl Netlink {
    /// Adds `address/prefix_len` to interface `ifindex`. An address the interface already has is
    /// not an error: it gives [`AddressChange::AlreadyPresent`].
    pub fn add_address(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<AddressChange, NetlinkError> {
        let operation = format!("add address {address}/{prefix_len} on ifindex {ifindex}");
        let mut request = Message::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        request.push(&address_header(ifindex, prefix_len));
        request.attribute(IFA_LOCAL, &address.octets());
        request.attribute(IFA_ADDRESS, &address.octets());
        match self.acknowledged(&operation, request) {
            Ok(()) => Ok(AddressChange::Added),
            Err(Reply::Errno(libc::EEXIST)) => Ok(AddressChange::AlreadyPresent),
            Err(error) => Err(refused(&operation, error)),
        }
    }

    /// The IPv4 addresses on interface `ifindex` with their prefix lengths, in the kernel's
    /// order (the primary address of each subnet first).
    pub fn addresses(&mut self, ifindex: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let operation = format!("dump addresses on ifindex {ifindex}");
        let mut request = Message::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(&address_header(0, 0));
        let mut found = Vec::new();
        self.dump(&operation, request, |message| {
            let Some(header) = message.get(..8) else {
                return Err("short ifaddrmsg");
            };
            let index = read_u32(header, 4).ok_or("short ifaddrmsg")?;
            if u16::from(header[0]) != libc::AF_INET as u16 || index != ifindex {
                return Ok(());
            }
            let prefix_len = header[1];
            for (kind, data) in Attributes::new(&message[8..]) {
                if kind == IFA_LOCAL {
                    if let Ok(octets) = <[u8; 4]>::try_from(data) {
                        found.push((Ipv4Addr::from(octets), prefix_len));
                    }
                }
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
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let operation = format!("remove address {address}/{prefix_len} from ifindex {ifindex}");
        let mut request = Message::new(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK);
        request.push(&address_header(ifindex, prefix_len));
        request.attribute(IFA_LOCAL, &address.octets());
        request.attribute(IFA_ADDRESS, &address.octets());
        match self.acknowledged(&operation, request) {
            Ok(()) | Err(Reply::Errno(libc::EADDRNOTAVAIL)) => Ok(()),
            Err(error) => Err(refused(&operation, error)),
        }
    }
}

/// `struct ifaddrmsg`: family, prefix length, flags, scope, ifindex.
pub(super) fn address_header(ifindex: u32, prefix_len: u8) -> [u8; 8] {
    let mut header = [0u8; 8];
    header[0] = libc::AF_INET as u8;
    header[1] = prefix_len;
    header[3] = RT_SCOPE_UNIVERSE;
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    header
}
