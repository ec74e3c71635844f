//! The kernel's neighbour (ARP) table: real servers' MAC addresses, and asking the kernel to
//! resolve one (`RTM_GETNEIGH`, `RTM_NEWNEIGH` with `NTF_USE`).

use std::collections::HashMap;
use std::net::Ipv4Addr;

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
    /// INCOMPLETE and FAILED entries, and no entry, give `None`.
    pub fn neighbour_mac(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
    ) -> Result<Option<[u8; 6]>, NetlinkError> {
        Ok(self.neighbours(ifindex)?.get(&address).copied())
    }

    /// Every usable IPv4 neighbour entry on interface `ifindex`, from one dump.
    pub fn neighbours(&mut self, ifindex: u32) -> Result<HashMap<Ipv4Addr, [u8; 6]>, NetlinkError> {
        let operation = format!("dump neighbours on ifindex {ifindex}");
        let mut request = Message::new(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(&neighbour_header(0, 0, 0));
        let mut found = HashMap::new();
        self.dump(&operation, request, |message| {
            let Some(header) = message.get(..12) else {
                return Err("short ndmsg");
            };
            let family = header[0];
            let index = read_u32(header, 4).ok_or("short ndmsg")?;
            let state = read_u16(header, 8).ok_or("short ndmsg")?;
            if u16::from(family) != libc::AF_INET as u16
                || index != ifindex
                || state & NUD_USABLE == 0
            {
                return Ok(());
            }
            let mut destination = None;
            let mut lladdr = None;
            for (kind, data) in Attributes::new(&message[12..]) {
                match kind {
                    NDA_DST => destination = <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from),
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

    /// Makes the kernel resolve `address` on interface `ifindex` (send ARP requests), as
    /// `ip neigh replace ADDRESS dev DEV use` does: an `RTM_NEWNEIGH` with `NTF_USE` creates the
    /// entry if needed and kicks its state machine. Returns once the kernel accepted the request;
    /// poll [`Netlink::neighbour_mac`] for the answer.
    pub fn solicit_neighbour(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let operation = format!("solicit neighbour {address} on ifindex {ifindex}");
        let mut request = Message::new(
            RTM_NEWNEIGH,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        );
        // State NUD_NONE: with NTF_USE the kernel ignores the state and runs neigh_event_send;
        // unlike NUD_PERMANENT it leaves a new entry subject to garbage collection.
        request.push(&neighbour_header(ifindex, 0, NTF_USE));
        request.attribute(NDA_DST, &address.octets());
        self.acknowledged(&operation, request)
            .map_err(|error| refused(&operation, error))
    }
}

/// `struct ndmsg`: family, 3 bytes padding, ifindex, state, flags, type.
pub(super) fn neighbour_header(ifindex: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0] = libc::AF_INET as u8;
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    header[8..10].copy_from_slice(&state.to_ne_bytes());
    header[10] = flags;
    header
}
