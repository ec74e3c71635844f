//! Routes: the main table's IPv4 default gateway out of an interface (`RTM_GETROUTE` dump).

use std::net::Ipv4Addr;

use super::message::{read_u32, Attributes, Message, NLM_F_DUMP, NLM_F_REQUEST};
use super::socket::{Netlink, NetlinkError};

// Constants from <linux/rtnetlink.h>.
const RTM_GETROUTE: u16 = 26;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;

impl Netlink {
    /// The gateway of the main table's IPv4 default route out of interface `ifindex` (the one
    /// with the lowest metric if there are several), as `ip route show default dev DEV` lists
    /// it; `None` when there is no such route.
    pub fn default_gateway(&mut self, ifindex: u32) -> Result<Option<Ipv4Addr>, NetlinkError> {
        let operation = format!("dump IPv4 routes for the default gateway of ifindex {ifindex}");
        let mut request = Message::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(&route_header());
        let mut best: Option<(u32, Ipv4Addr)> = None;
        self.dump(&operation, request, |message| {
            let Some(header) = message.get(..12) else {
                return Err("short rtmsg");
            };
            // family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
            if u16::from(header[0]) != libc::AF_INET as u16 || header[1] != 0 {
                return Ok(());
            }
            let mut table = u32::from(header[4]);
            let (mut oif, mut gateway, mut metric) = (None, None, 0);
            for (kind, data) in Attributes::new(&message[12..]) {
                match kind {
                    RTA_OIF => oif = read_u32(data, 0),
                    RTA_GATEWAY => gateway = <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from),
                    RTA_PRIORITY => metric = read_u32(data, 0).unwrap_or(0),
                    RTA_TABLE => table = read_u32(data, 0).unwrap_or(table),
                    _ => {}
                }
            }
            if let (Some(index), Some(gateway), RT_TABLE_MAIN) = (oif, gateway, table) {
                if index == ifindex && best.is_none_or(|(lowest, _)| metric < lowest) {
                    best = Some((metric, gateway));
                }
            }
            Ok(())
        })?;
        Ok(best.map(|(_, gateway)| gateway))
    }
}

/// `struct rtmsg` for an IPv4 dump: family, then zeros (every table, every type).
fn route_header() -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0] = libc::AF_INET as u8;
    header
}
