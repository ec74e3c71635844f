//! ICMPv6 errors (RFC 4443) about NATed IPv6 flows, translated both ways as [`super::icmp`] does
//! for ICMPv4: destination unreachable, packet too big and time exceeded.
//!
//! - **Outbound** (server side -> client): outer RS -> client, quote client:cport -> RS:rsport
//!   becomes outer VIP -> client, quote client:cport -> VIP:port.
//! - **Inbound** (client side -> real server): outer X -> VIP, quote VIP:port -> client:cport
//!   becomes outer X -> RS, quote RS:rsport -> client:cport. A packet too big about a reply
//!   (path MTU discovery, RFC 8201) reaches the real server this way, its MTU unchanged.
//!
//! Changed: the outer address and hop limit (decremented: the director forwards as a router;
//! <= 1 is [`DropReason::TtlExpired`]); the quoted address and port; the quoted TCP/UDP checksum
//! when the quote reaches it (a quoted UDP checksum 0 stays 0); the ICMPv6 checksum. Unlike
//! ICMPv4's, the ICMPv6 checksum covers a pseudo header (RFC 4443 2.3) holding the outer
//! addresses, so it follows the outer address change as well as every changed word of the
//! quote. No IPv6 header has a checksum. All incrementally (RFC 1624): every changed word sits
//! at an even offset of the message (the quote starts 8 bytes in, its addresses and ports at
//! even offsets of it), and the result equals a full recomputation (tested).
//!
//! Only the parsed form exists: classification ([`crate::parse::classify`]) has walked the outer
//! extension headers and checked the quote (a whole IPv6 header and 8 bytes, next header TCP or
//! UDP), so only the hop limit is left to check.
//!
//! What this module must not do: generate ICMPv6 (a packet too big of our own is the TUN path's),
//! or translate between families.

use std::net::{Ipv6Addr, SocketAddrV6};

use super::Link;
use crate::counters::DropReason;
use crate::parse::{Parsed, Transport};
use crate::wire::checksum::{udp_update128, udp_update16, update128, update16};
use crate::wire::{icmpv6, ipv6, Icmpv6Packet, Ipv6Packet, Ipv6Quote};

/// Which end of the outer packet, and the opposite end of the quote, a translation changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// Outer source and quoted destination -> VIP:port.
    Outbound,
    /// Outer destination and quoted source -> RS:rsport.
    Inbound,
}

/// Translates the ICMPv6 error `parsed` describes in `frame` toward `to` (the VIP outbound, the
/// real server inbound), sent over `link`. Checks the hop limit before writing anything.
#[inline]
pub(super) fn translate(
    frame: &mut [u8],
    parsed: &Parsed,
    direction: Direction,
    to: SocketAddrV6,
    link: Link,
) -> Result<(), DropReason> {
    if !matches!(parsed.transport(), Transport::IcmpError(_)) {
        return Err(DropReason::UnsupportedProtocol);
    }
    let l3_at = parsed.l3_at();
    let packet = frame
        .get_mut(l3_at..l3_at + parsed.l3_len())
        .ok_or(DropReason::Truncated)?;
    let (header, message) = packet.split_at_mut(parsed.l3_header_len());
    if message.len() < icmpv6::HEADER_LEN + ipv6::HEADER_LEN + icmpv6::QUOTED_PAYLOAD_LEN {
        return Err(DropReason::IcmpQuoteTruncated);
    }
    let mut ip = Ipv6Packet::new_unchecked(header);
    let hop_limit = ip.hop_limit();
    if hop_limit <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let new_addr = *to.ip();
    let new = u128::from(new_addr);

    // Outer header: one address (in the ICMPv6 pseudo header) and the hop limit (in none).
    let old_outer = match direction {
        Direction::Outbound => ip.src_addr(),
        Direction::Inbound => ip.dst_addr(),
    };
    ip.set_hop_limit(hop_limit - 1);
    match direction {
        Direction::Outbound => ip.set_src_addr(new_addr),
        Direction::Inbound => ip.set_dst_addr(new_addr),
    }

    let (icmp_header, quoted) = message.split_at_mut(icmpv6::HEADER_LEN);
    let mut icmp_sum = update128(
        Icmpv6Packet::new_unchecked(&*icmp_header).checksum(),
        u128::from(old_outer),
        new,
    );

    // The quote: address and port, then its own TCP/UDP checksum.
    let mut quote = Ipv6Quote::new_unchecked(&mut *quoted);
    let protocol = quote.next_header();
    let (old_addr, old_port): (Ipv6Addr, u16) = match direction {
        Direction::Outbound => (quote.dst_addr(), quote.dst_port()),
        Direction::Inbound => (quote.src_addr(), quote.src_port()),
    };
    match direction {
        Direction::Outbound => {
            quote.set_dst_addr(new_addr);
            quote.set_dst_port(to.port());
        }
        Direction::Inbound => {
            quote.set_src_addr(new_addr);
            quote.set_src_port(to.port());
        }
    }
    let old = u128::from(old_addr);
    icmp_sum = update16(update128(icmp_sum, old, new), old_port, to.port());

    if let Some(at) = quote.l4_checksum_at() {
        let field = &quoted[at..at + 2];
        let old_l4_sum = u16::from_be_bytes([field[0], field[1]]);
        let new_l4_sum = match protocol {
            ipv6::next_header::UDP => {
                udp_update16(udp_update128(old_l4_sum, old, new), old_port, to.port())
            }
            _ => update16(update128(old_l4_sum, old, new), old_port, to.port()),
        };
        quoted[at..at + 2].copy_from_slice(&new_l4_sum.to_be_bytes());
        icmp_sum = update16(icmp_sum, old_l4_sum, new_l4_sum);
    }
    Icmpv6Packet::new_unchecked(icmp_header).set_checksum(icmp_sum);

    link.apply(frame);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr};

    use proptest::prelude::*;

    use super::super::icmp;
    use super::*;
    use crate::parse::classify;
    use crate::testing::{Ipv6FrameBuilder, DIRECTOR_MAC};
    use crate::wire::checksum;
    use crate::wire::icmpv6::message;

    const LINK: Link = Link {
        src_mac: DIRECTOR_MAC,
        dst_mac: [2, 0, 0, 0, 1, 1],
    };

    /// The ones' complement sum over the pseudo header and the upper layer of the IPv6 packet
    /// at `frame[14..]` (no extension headers): 0xFFFF when its checksum is right.
    fn upper_sum(packet: &[u8]) -> u16 {
        let ip = Ipv6Packet::new_checked(packet).unwrap();
        let upper = ip.payload();
        checksum::combine(&[
            checksum::pseudo_header6(
                ip.src_addr(),
                ip.dst_addr(),
                ip.next_header(),
                u32::try_from(upper.len()).unwrap(),
            ),
            checksum::data(upper),
        ])
    }

    fn socket(address: u128, port: u16) -> String {
        format!("[{}]:{port}", Ipv6Addr::from(address))
    }

    proptest! {
        /// Translated both ways, an ICMPv6 error about a TCP or UDP packet (whole or cut to as
        /// little as 48 bytes) has the checksums a full recomputation gives: the ICMPv6 one
        /// always, the quoted one when the quote is whole.
        #[test]
        fn icmpv6_translation_equals_full_recomputation(
            addresses in any::<[u128; 4]>(),
            ports in any::<[u16; 3]>(),
            udp in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            cut in any::<usize>(),
            outbound in any::<bool>(),
            msg_type in prop_oneof![
                Just(message::DEST_UNREACHABLE),
                Just(message::PACKET_TOO_BIG),
                Just(message::TIME_EXCEEDED),
            ],
        ) {
            let [outer, quoted_src, quoted_dst, to] = addresses;
            let builder = if udp { Ipv6FrameBuilder::udp() } else { Ipv6FrameBuilder::tcp() };
            let quote = builder
                .src(&socket(quoted_src, ports[0]))
                .dst(&socket(quoted_dst, ports[1]))
                .payload(&payload)
                .build_ipv6();
            let whole = quote.len();
            let quote = &quote[..48 + cut % (whole - 47)];
            let frame = Ipv6FrameBuilder::icmp6()
                .src(&socket(outer, 0))
                .dst(&socket(quoted_src, 0))
                .icmp6_header(msg_type, 0, 1280)
                .payload(quote)
                .unpadded()
                .build();
            let parsed = classify(&frame).unwrap();
            let mut translated = frame.clone();
            let to = SocketAddr::new(Ipv6Addr::from(to).into(), ports[2]);
            let result = if outbound {
                icmp::translate_outbound_parsed(&mut translated, &parsed, to, LINK)
            } else {
                icmp::translate_inbound_parsed(&mut translated, &parsed, to, LINK)
            };
            prop_assert_eq!(result, Ok(()));
            prop_assert_eq!(upper_sum(&translated[14..]), 0xffff);
            let quoted = &translated[14 + 40 + 8..];
            if quote.len() == whole {
                prop_assert_eq!(upper_sum(quoted), 0xffff);
            }
            let quoted = Ipv6Quote::new_checked(quoted).unwrap();
            if outbound {
                prop_assert_eq!((quoted.dst_addr(), quoted.dst_port()), (Ipv6Addr::from(addresses[3]), ports[2]));
            } else {
                prop_assert_eq!((quoted.src_addr(), quoted.src_port()), (Ipv6Addr::from(addresses[3]), ports[2]));
            }
        }
    }
}
