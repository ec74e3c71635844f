//! Routes: the main table's default gateway out of an interface, IPv4 or IPv6
//! (`RTM_GETROUTE` dump).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::message::{read_u32, Attributes, Message, NLM_F_DUMP, NLM_F_REQUEST};
use super::socket::{Netlink, NetlinkError};

// Constants from <linux/rtnetlink.h>.
const RTM_GETROUTE: u16 = 26;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

impl Netlink {
    /// The gateway of the main table's IPv4 default route out of interface `ifindex` (the one
    /// with the lowest metric if there are several), as `ip route show default dev DEV` lists
    /// it; `None` when there is no such route.
    pub fn default_gateway(&mut self, ifindex: u32) -> Result<Option<Ipv4Addr>, NetlinkError> {
        Ok(match self.default_gateway_of(AF_INET, ifindex)? {
            Some(IpAddr::V4(gateway)) => Some(gateway),
            _ => None,
        })
    }

    /// The same for the IPv6 default route (`ip -6 route show default dev DEV`): often a
    /// link-local router address learnt from router advertisements.
    pub fn default_gateway_v6(&mut self, ifindex: u32) -> Result<Option<Ipv6Addr>, NetlinkError> {
        Ok(match self.default_gateway_of(AF_INET6, ifindex)? {
            Some(IpAddr::V6(gateway)) => Some(gateway),
            _ => None,
        })
    }

    fn default_gateway_of(
        &mut self,
        family: u8,
        ifindex: u32,
    ) -> Result<Option<IpAddr>, NetlinkError> {
        let name = if family == AF_INET6 { "IPv6" } else { "IPv4" };
        let operation = format!("dump {name} routes for the default gateway of ifindex {ifindex}");
        let mut request = Message::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP);
        request.push(&route_header(family));
        let mut best: Option<(u32, IpAddr)> = None;
        self.dump(&operation, request, |message| {
            let Some(header) = message.get(..12) else {
                return Err("short rtmsg");
            };
            // family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
            if header[0] != family || header[1] != 0 {
                return Ok(());
            }
            let mut table = u32::from(header[4]);
            let (mut oif, mut gateway, mut metric) = (None, None, 0);
            for (kind, data) in Attributes::new(&message[12..]) {
                match kind {
                    RTA_OIF => oif = read_u32(data, 0),
                    RTA_GATEWAY => {
                        gateway = match family {
                            AF_INET6 => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
                            _ => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
                        }
                    }
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

/// `struct rtmsg` for a dump of `family`: the family, then zeros (every table, every type).
fn route_header(family: u8) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0] = family;
    header
}
