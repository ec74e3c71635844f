//! The kernel's neighbour tables, ARP for IPv4 and NDP for IPv6 (RFC 4861): real servers' MAC
//! addresses, and asking the kernel to resolve one (`RTM_GETNEIGH`, `RTM_NEWNEIGH` with
//! `NTF_USE`). Both families are the same requests with another `ndm_family`; the kernel sends
//! the ARP request or the neighbour solicitation.

use std::collections::HashMap;
use std::net::IpAddr;

use super::message::{
    read_u16, read_u32, Attributes, Message, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use super::socket::{refused, Netlink, NetlinkError};

// Constants from <linux/rtnetlink.h> and <linux/neighbour.h>.
const RTM_NEWNEIGH: u16 = 28;
pub(super) const RTM_GETNEIGH: u16 = 30;
pub(super) const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NTF_USE: u8 = 0x01;
const AF_UNSPEC: u8 = 0;
pub(super) const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Neighbour states whose link-layer address is usable.
const NUD_USABLE: u16 =
    NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT;
pub(super) const NUD_REACHABLE: u16 = 0x02;
const NUD_STALE: u16 = 0x04;
const NUD_DELAY: u16 = 0x08;
const NUD_PROBE: u16 = 0x10;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;

impl Netlink {
    /// The MAC address the kernel's neighbour table holds for `address` on interface `ifindex`,
    /// if the entry is in a usable state (REACHABLE, STALE, DELAY, PROBE, PERMANENT or NOARP).
    /// INCOMPLETE and FAILED entries, and no entry, give `None`. IPv4 or IPv6.
    pub fn neighbour_mac(
        &mut self,
        ifindex: u32,
        address: impl Into<IpAddr>,
    ) -> Result<Option<[u8; 6]>, NetlinkError> {
        Ok(self.neighbours(ifindex)?.get(&address.into()).copied())
    }

    /// Every usable neighbour entry on interface `ifindex`, IPv4 and IPv6, from one dump (of
    /// every family: `ndm_family` 0).
    pub fn neighbours(&mut self, ifindex: u32) -> Result<HashMap<IpAddr, [u8; 6]>, NetlinkError> {
        let operation = format!("dump neighbours on ifindex {ifindex}");
        let mut request = Message::new(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(&neighbour_header(AF_UNSPEC, 0, 0, 0));
        let mut found = HashMap::new();
        self.dump(&operation, request, |message| {
            let Some(header) = message.get(..12) else {
                return Err("short ndmsg");
            };
            let family = header[0];
            let index = read_u32(header, 4).ok_or("short ndmsg")?;
            let state = read_u16(header, 8).ok_or("short ndmsg")?;
            if !matches!(family, AF_INET | AF_INET6) || index != ifindex || state & NUD_USABLE == 0
            {
                return Ok(());
            }
            let mut destination = None;
            let mut lladdr = None;
            for (kind, data) in Attributes::new(&message[12..]) {
                match kind {
                    NDA_DST => destination = ip_address(data),
                    NDA_LLADDR => lladdr = <[u8; 6]>::try_from(data).ok(),
                    _ => {}
                }
            }
            if let (Some(destination), Some(lladdr)) = (destination, lladdr) {
                found.insert(destination, lladdr);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Makes the kernel resolve `address` on interface `ifindex` (send ARP requests, or IPv6
    /// neighbour solicitations), as `ip neigh replace ADDRESS dev DEV use` does: an
    /// `RTM_NEWNEIGH` with `NTF_USE` creates the entry if needed and kicks its state machine.
    /// Returns once the kernel accepted the request; poll [`Netlink::neighbour_mac`] for the
    /// answer.
    pub fn solicit_neighbour(
        &mut self,
        ifindex: u32,
        address: impl Into<IpAddr>,
    ) -> Result<(), NetlinkError> {
        let address = address.into();
        let operation = format!("solicit neighbour {address} on ifindex {ifindex}");
        let mut request = Message::new(
            RTM_NEWNEIGH,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        );
        // State NUD_NONE: with NTF_USE the kernel ignores the state and runs neigh_event_send;
        // unlike NUD_PERMANENT it leaves a new entry subject to garbage collection.
        let family = if address.is_ipv4() { AF_INET } else { AF_INET6 };
        request.push(&neighbour_header(family, ifindex, 0, NTF_USE));
        match address {
            IpAddr::V4(address) => request.attribute(NDA_DST, &address.octets()),
            IpAddr::V6(address) => request.attribute(NDA_DST, &address.octets()),
        }
        self.acknowledged(&operation, request)
            .map_err(|error| refused(&operation, error))
    }
}

/// An `NDA_DST` of either family, told apart by its length.
fn ip_address(data: &[u8]) -> Option<IpAddr> {
    if let Ok(octets) = <[u8; 4]>::try_from(data) {
        return Some(IpAddr::from(octets));
    }
    <[u8; 16]>::try_from(data).ok().map(IpAddr::from)
}

/// `struct ndmsg`: family, 3 bytes padding, ifindex, state, flags, type.
pub(super) fn neighbour_header(family: u8, ifindex: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0] = family;
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    header[8..10].copy_from_slice(&state.to_ne_bytes());
    header[10] = flags;
    header
}
