//! VRRPv3 over IPv6 (RFC 5798 5.1.2) and the unsolicited neighbour advertisements a new IPv6
//! master sends (RFC 4861 7.2.6): the advertisement's bytes with the checksum over the IPv6
//! pseudo-header (RFC 8200 8.1), the packet-only checks of RFC 5798 7.1, and the NA frame.
//!
//! The message is [`super::wire`]'s layout with 16-byte addresses. Unlike IPv4 the raw socket
//! neither sends nor receives the IPv6 header: the kernel builds it (hop limit 255 from the
//! socket options, source the link-local address the socket is bound to), and the receive path
//! learns the source, destination and hop limit from `recvmsg` ([`super::socket`]). So this
//! module works on the VRRP message alone plus those three values. It must not decide anything
//! about the state machine.
//!
//! The address list (RFC 5798 5.2.9 says the first IPv6 address "MUST be the IPv6 link-local
//! address associated with the virtual router") carries exactly the VIPs, sorted, and no
//! virtual link-local address: the director answers with its own MAC and link-local address
//! (no virtual MAC), and keepalived without `use_vmac` does the same and checks that the count
//! and every one of its own VIPs match; a link-local first entry would make it drop our
//! advertisements unless its configuration listed that address too.
//!
//! Checksums use `dataplane::wire::checksum`'s sums; only the IPv6 pseudo-header's layout is
//! written here (dataplane has no IPv6 helper yet).

use std::net::Ipv6Addr;

use dataplane::wire::{checksum, EtherType};

use super::wire::{
    Advertisement, Discard, Received, Truncated, VrrpPacket, HEADER_LEN, MAX_ADDRESSES, PROTOCOL,
    TYPE_ADVERTISEMENT, VERSION,
};

/// The IPv6 multicast group advertisements are sent to (RFC 5798 5.1.2.2).
pub const MULTICAST_GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// All-nodes, where unsolicited neighbour advertisements go (RFC 4861 7.2.6).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The only hop limit an advertisement (5.1.2.3) or a neighbour advertisement (RFC 4861 7.1.2)
/// may carry.
pub const HOP_LIMIT: u8 = 255;
/// Length of one address in the message.
const ADDRESS_LEN: usize = 16;
/// IPv6 next header of ICMPv6.
const ICMPV6: u8 = 58;
/// ICMPv6 type of a neighbour advertisement.
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// The NA's Override flag (RFC 4861 4.4): replace a cached link-layer address.
const OVERRIDE_FLAG: u8 = 0x20;
/// NDP option type: target link-layer address.
const TARGET_LINK_LAYER_ADDRESS: u8 = 2;

/// The checksum field's value for `message` (its checksum field zero) from `src` to `dst`.
fn message_checksum(message: &[u8], src: Ipv6Addr, dst: Ipv6Addr, next_header: u8) -> u16 {
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    !checksum::combine(&[
        checksum::pseudo_header6(src, dst, next_header, length),
        checksum::data(message),
    ])
}

impl Advertisement<Ipv6Addr> {
    /// Length of the VRRP message.
    pub fn message_len(&self) -> usize {
        HEADER_LEN + ADDRESS_LEN * self.addresses.len().min(MAX_ADDRESSES)
    }

    /// The VRRP message (the IPv6 payload) with the checksum for a datagram from `src` (our
    /// link-local address) to `dst`. Addresses past [`MAX_ADDRESSES`] are left out; callers
    /// refuse such lists before they get here.
    pub fn to_message(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let count = self.addresses.len().min(MAX_ADDRESSES);
        let mut message = vec![0u8; self.message_len()];
        let mut packet = VrrpPacket::new_unchecked(&mut message[..]);
        packet.set_version_and_kind(VERSION, TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_address_count(count as u8);
        packet.set_max_advert_interval(self.max_advert_interval);
        for (index, address) in self.addresses.iter().take(count).enumerate() {
            let start = HEADER_LEN + ADDRESS_LEN * index;
            message[start..start + ADDRESS_LEN].copy_from_slice(&address.octets());
        }
        let sum = message_checksum(&message, src, dst, PROTOCOL);
        VrrpPacket::new_unchecked(&mut message[..]).set_checksum(sum);
        message
    }
}

/// Whether `message`'s checksum over the IPv6 pseudo-header is right (5.2.8).
pub fn verify_checksum(message: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> bool {
    let Ok(length) = u32::try_from(message.len()) else {
        return false;
    };
    checksum::combine(&[
        checksum::pseudo_header6(src, dst, PROTOCOL, length),
        checksum::data(message),
    ]) == 0xffff
}

/// Parses a VRRP message a raw IPv6 socket delivered (no IP header) from `source` to
/// `destination` with `hop_limit`, applying RFC 5798 7.1's packet-only checks in its order:
/// hop limit, version, length, checksum, type, interval. Bytes after the announced addresses
/// are covered by the checksum and otherwise ignored.
pub fn parse_message(
    message: &[u8],
    source: Ipv6Addr,
    destination: Ipv6Addr,
    hop_limit: u8,
) -> Result<Received<Ipv6Addr>, Discard> {
    if hop_limit != HOP_LIMIT {
        return Err(Discard::BadTtl(hop_limit));
    }
    let Some(&first) = message.first() else {
        return Err(Discard::Truncated);
    };
    if first >> 4 != VERSION {
        return Err(Discard::BadVersion(first >> 4));
    }
    let packet = VrrpPacket::new_checked_with(message, ADDRESS_LEN)
        .map_err(|Truncated| Discard::Truncated)?;
    if !verify_checksum(message, source, destination) {
        return Err(Discard::BadChecksum);
    }
    if packet.kind() != TYPE_ADVERTISEMENT {
        return Err(Discard::BadType(packet.kind()));
    }
    if packet.max_advert_interval() == 0 {
        return Err(Discard::ZeroInterval);
    }
    let count = usize::from(packet.address_count());
    let addresses = packet.address_bytes()[..ADDRESS_LEN * count]
        .chunks_exact(ADDRESS_LEN)
        .map(|octets| {
            let mut address = [0u8; ADDRESS_LEN];
            address.copy_from_slice(octets);
            Ipv6Addr::from(address)
        })
        .collect();
    Ok(Received {
        source,
        destination,
        advert: Advertisement {
            vrid: packet.vrid(),
            priority: packet.priority(),
            max_advert_interval: packet.max_advert_interval(),
            addresses,
        },
    })
}

/// Length of an unsolicited neighbour advertisement frame: Ethernet, IPv6, the 24-byte NA and
/// one 8-byte target link-layer address option.
pub const NEIGHBOUR_ADVERTISEMENT_LEN: usize = 14 + 40 + 24 + 8;

/// An unsolicited neighbour advertisement (RFC 4861 7.2.6) announcing that `address` is at
/// `mac`: from `address` to all-nodes (Ethernet 33:33:00:00:00:01), hop limit 255, Override
/// set, Solicited and Router clear (a VIP is no router's address), with the target link-layer
/// address option. Hosts that have `address` in their neighbour cache replace its MAC.
pub fn unsolicited_neighbour_advertisement(
    mac: [u8; 6],
    address: Ipv6Addr,
) -> [u8; NEIGHBOUR_ADVERTISEMENT_LEN] {
    let mut frame = [0u8; NEIGHBOUR_ADVERTISEMENT_LEN];
    // Ethernet: IPv6 multicast MAC 33:33 + the group's low 32 bits (RFC 2464 7).
    frame[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&EtherType::IPV6.0.to_be_bytes());
    let (ip, icmp) = frame[14..].split_at_mut(40);
    // IPv6: version 6, traffic class and flow label 0.
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&32u16.to_be_bytes()); // payload length: NA + option
    ip[6] = ICMPV6;
    ip[7] = HOP_LIMIT;
    ip[8..24].copy_from_slice(&address.octets());
    ip[24..40].copy_from_slice(&ALL_NODES.octets());
    // ICMPv6 NA: type, code 0, checksum, flags, reserved, target, option.
    icmp[0] = NEIGHBOUR_ADVERTISEMENT;
    icmp[4] = OVERRIDE_FLAG;
    icmp[8..24].copy_from_slice(&address.octets());
    icmp[24] = TARGET_LINK_LAYER_ADDRESS;
    icmp[25] = 1; // option length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let sum = message_checksum(icmp, address, ALL_NODES, ICMPV6);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

    fn advert(priority: u8, addresses: &[Ipv6Addr]) -> Advertisement<Ipv6Addr> {
        Advertisement {
            vrid: 51,
            priority,
            max_advert_interval: 10,
            addresses: addresses.to_vec(),
        }
    }

    /// The RFC 5798 5.1 layout with one IPv6 address: VRID 51, priority 150, 10 centiseconds,
    /// from fe80::1 to ff02::12, as a capture would show the IPv6 payload.
    const GOLDEN: [u8; 24] = [
        0x31, 51, 150, 1, // version 3, type 1, VRID, priority, one address
        0x00, 0x0a, 0x0c, 0xd9, // max advert int 10 cs, checksum
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // 2001:db8::10
    ];

    /// The Internet checksum written out independently of `dataplane::wire::checksum`: the
    /// 16-bit big-endian words of pseudo-header and message summed with end-around carry.
    fn independent_checksum(src: Ipv6Addr, dst: Ipv6Addr, next: u8, message: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, next]);
        bytes.extend_from_slice(message);
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        let mut sum: u32 = bytes
            .chunks_exact(2)
            .map(|word| u32::from(u16::from_be_bytes([word[0], word[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn emits_the_rfc_layout_with_the_pseudo_header_checksum() {
        let message = advert(150, &[VIP]).to_message(LINK_LOCAL, MULTICAST_GROUP);
        assert_eq!(message, GOLDEN);
        let mut zeroed = GOLDEN;
        zeroed[6..8].fill(0);
        assert_eq!(
            independent_checksum(LINK_LOCAL, MULTICAST_GROUP, PROTOCOL, &zeroed),
            0x0cd9
        );
    }

    #[test]
    fn parses_the_golden_message() {
        let received = parse_message(&GOLDEN, LINK_LOCAL, MULTICAST_GROUP, 255).unwrap();
        assert_eq!(received.source, LINK_LOCAL);
        assert_eq!(received.destination, MULTICAST_GROUP);
        assert_eq!(received.advert, advert(150, &[VIP]));
    }

    #[test]
    fn round_trips_many_addresses_and_unicast_destinations() {
        let vips: Vec<Ipv6Addr> = (0..255u16)
            .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i))
            .collect();
        let to = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
        let sent = advert(0, &vips);
        let message = sent.to_message(LINK_LOCAL, to);
        assert_eq!(message.len(), 8 + 16 * 255);
        assert_eq!(
            parse_message(&message, LINK_LOCAL, to, 255).unwrap().advert,
            sent
        );
        // The checksum covers the destination: the same bytes to the group do not pass.
        assert_eq!(
            parse_message(&message, LINK_LOCAL, MULTICAST_GROUP, 255),
            Err(Discard::BadChecksum)
        );
    }

    #[test]
    fn bad_messages_are_discarded_by_reason() {
        let with = |change: fn(&mut [u8; 24])| {
            let mut message = GOLDEN;
            change(&mut message);
            message
        };
        let parse = |message: &[u8]| parse_message(message, LINK_LOCAL, MULTICAST_GROUP, 255);
        assert_eq!(
            parse_message(&GOLDEN, LINK_LOCAL, MULTICAST_GROUP, 64),
            Err(Discard::BadTtl(64))
        );
        assert_eq!(parse(&with(|m| m[0] = 0x21)), Err(Discard::BadVersion(2)));
        assert_eq!(parse(&with(|m| m[7] ^= 1)), Err(Discard::BadChecksum));
        assert_eq!(parse(&with(|m| m[3] = 2)), Err(Discard::Truncated));
        for len in 0..GOLDEN.len() {
            let result = parse(&GOLDEN[..len]);
            assert!(
                matches!(result, Err(Discard::Truncated | Discard::BadChecksum)),
                "{len} bytes: {result:?}"
            );
        }
        // A message with IPv4-sized addresses is too short for its count.
        let v4 = [0x31, 51, 150, 1, 0, 10, 0, 0, 192, 0, 2, 10];
        assert_eq!(parse(&v4), Err(Discard::Truncated));
        // Type and interval are checked after the checksum, so fix it up for each.
        let refilled = |change: fn(&mut [u8; 24])| {
            let mut message = with(change);
            message[6..8].fill(0);
            let sum = message_checksum(&message, LINK_LOCAL, MULTICAST_GROUP, PROTOCOL);
            message[6..8].copy_from_slice(&sum.to_be_bytes());
            message
        };
        assert_eq!(parse(&refilled(|m| m[0] = 0x32)), Err(Discard::BadType(2)));
        assert_eq!(
            parse(&refilled(|m| m[4..6].fill(0))),
            Err(Discard::ZeroInterval)
        );
    }

    #[test]
    fn unsolicited_neighbour_advertisement_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x03];
        let frame = unsolicited_neighbour_advertisement(mac, VIP);
        let mut expected = Vec::new();
        expected.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]); // to all-nodes' MAC
        expected.extend_from_slice(&mac);
        expected.extend_from_slice(&[0x86, 0xdd]);
        expected.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]); // IPv6, 32 bytes, ICMPv6
        expected.extend_from_slice(&VIP.octets());
        expected.extend_from_slice(&ALL_NODES.octets());
        expected.extend_from_slice(&[136, 0, 0xf9, 0x0a, 0x20, 0, 0, 0]); // NA, checksum, O
        expected.extend_from_slice(&VIP.octets()); // target
        expected.extend_from_slice(&[2, 1, 0x02, 0, 0, 0, 0, 0x03]); // target link-layer address
        assert_eq!(frame[..], expected[..]);
        let icmp = &frame[54..];
        let mut zeroed = icmp.to_vec();
        zeroed[2..4].fill(0);
        assert_eq!(
            independent_checksum(VIP, ALL_NODES, ICMPV6, &zeroed),
            u16::from_be_bytes([icmp[2], icmp[3]])
        );
    }
}
