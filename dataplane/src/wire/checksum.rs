//! The Internet checksum: full computation (RFC 1071) and incremental update (RFC 1624).
//!
//! Sums are ones' complement sums of big-endian 16-bit words, folded with end-around carry. A
//! folded sum is 0x0000 only when every word summed was zero; otherwise "zero" shows as 0xFFFF
//! (-0). Because of that, [`update16`]/[`update32`] (RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`)
//! give bit-for-bit the checksum a full recomputation would, for any header with a non-zero word
//! (every IPv4 header and every TCP/UDP pseudo header); eqn. 2 of RFC 1071's era
//! (`HC' = HC - ~m - m'`) does not, at the -0 edge.
//!
//! UDP differs in one way (RFC 768): a transmitted checksum of 0 means "none", so a computed 0 is
//! sent as 0xFFFF, and a 0 on the wire must stay 0 across rewrites; the `udp_` functions do that.
//!
//! IPv6 (RFC 8200 8.1) has no header checksum, but its upper layers' pseudo header holds both
//! 128-bit addresses ([`pseudo_header6`]); an address change is eqn. 3 over its eight 16-bit
//! words ([`update128`]). Over IPv6 a UDP checksum of 0 is invalid rather than "none"; the
//! `udp_` forms still keep it 0, so a rewrite passes such a datagram on as it came and the
//! receiving host discards it (RFC 8200 8.1), as it would have without the director.
//!
//! DR rewrites only MAC addresses and needs none of this; NAT rewrites addresses and ports and
//! must use the incremental forms, which cost O(1) instead of O(payload).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds a wide sum into 16 bits with end-around carry.
#[inline]
const fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Ones' complement sum of `bytes` as big-endian 16-bit words, an odd last byte padded with a
/// zero (RFC 1071 section 4.1). Not complemented: complement the combined sum to get a checksum.
pub fn data(bytes: &[u8]) -> u16 {
    // Sum 32-bit words into a 64-bit accumulator: carries collect in the high half and fold once
    // at the end (RFC 1071 section 2(B), "deferred carries").
    let mut sum: u64 = 0;
    let mut words = bytes.chunks_exact(4);
    for word in &mut words {
        sum += u64::from(u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for pair in &mut pairs {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    fold(sum)
}

/// Ones' complement sum of partial sums (e.g. a pseudo header and a segment).
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&sum| u64::from(sum)).sum())
}

/// Ones' complement sum of the TCP/UDP pseudo header (RFC 793 section 3.1, RFC 768).
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let src = u32::from(src);
    let dst = u32::from(dst);
    fold(
        u64::from(src >> 16)
            + u64::from(src & 0xffff)
            + u64::from(dst >> 16)
            + u64::from(dst & 0xffff)
            + u64::from(protocol)
            + u64::from(length),
    )
}

/// Ones' complement sum of the IPv6 upper-layer pseudo header (RFC 8200 8.1): both addresses,
/// the upper-layer packet length (32 bits), three zero bytes and the next header.
pub fn pseudo_header6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let words = |address: Ipv6Addr| -> u64 {
        let value = u128::from(address);
        (0..4)
            .map(|at| (value >> (32 * at)) as u32)
            .map(u64::from)
            .sum()
    };
    fold(words(src) + words(dst) + u64::from(length) + u64::from(next_header))
}

/// The checksum after a 16-bit word covered by it changes from `old` to `new`:
/// RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`.
#[inline]
pub const fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(!checksum as u64 + !old as u64 + new as u64)
}

/// The checksum after a 32-bit field (an IPv4 address, a sequence number) changes: eqn. 3 applied
/// to both halves at once.
#[inline]
pub const fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    let old_hi = (old >> 16) as u16;
    let old_lo = old as u16;
    let new_hi = (new >> 16) as u16;
    let new_lo = new as u16;
    !fold(!checksum as u64 + !old_hi as u64 + !old_lo as u64 + new_hi as u64 + new_lo as u64)
}

/// The checksum after a 128-bit field (an IPv6 address in a pseudo header or a quoted header)
/// changes: eqn. 3 over its eight 16-bit words, summed as four 32-bit ones (deferred carries,
/// RFC 1071 2(B)), which fold to the same ones' complement sum.
#[inline]
pub const fn update128(checksum: u16, old: u128, new: u128) -> u16 {
    let (old, new) = (!old, new);
    let sum = !checksum as u64
        + (old as u32) as u64
        + ((old >> 32) as u32) as u64
        + ((old >> 64) as u32) as u64
        + ((old >> 96) as u32) as u64
        + (new as u32) as u64
        + ((new >> 32) as u32) as u64
        + ((new >> 64) as u32) as u64
        + ((new >> 96) as u32) as u64;
    !fold(sum)
}

/// A UDP checksum as transmitted: a computed 0 goes out as 0xFFFF, since 0 means "none" (RFC 768).
#[inline]
pub const fn udp_transmitted(checksum: u16) -> u16 {
    if checksum == 0 {
        0xffff
    } else {
        checksum
    }
}

/// [`update16`] for a UDP checksum field: 0 ("no checksum") stays 0, a result of 0 becomes 0xFFFF.
#[inline]
pub const fn udp_update16(checksum: u16, old: u16, new: u16) -> u16 {
    if checksum == 0 {
        0
    } else {
        udp_transmitted(update16(checksum, old, new))
    }
}

/// [`update32`] for a UDP checksum field: 0 ("no checksum") stays 0, a result of 0 becomes 0xFFFF.
#[inline]
pub const fn udp_update32(checksum: u16, old: u32, new: u32) -> u16 {
    if checksum == 0 {
        0
    } else {
        udp_transmitted(update32(checksum, old, new))
    }
}

/// [`update128`] for a UDP checksum field: 0 stays 0 (see the module docs for IPv6), a result of
/// 0 becomes 0xFFFF.
#[inline]
pub const fn udp_update128(checksum: u16, old: u128, new: u128) -> u16 {
    if checksum == 0 {
        0
    } else {
        udp_transmitted(update128(checksum, old, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Packet, TcpSegment, UdpDatagram};
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        // Odd length pads with a zero byte.
        assert_eq!(data(&[0x00, 0x01, 0xf2]), 0xf201);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn known_ipv4_header() {
        // The classic example header (Wikipedia, "IPv4 header checksum"): checksum b861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(!data(&header), 0xb861);
    }

    #[test]
    fn rfc1624_minus_zero_example() {
        // RFC 1624 section 3: the other header words sum to 0xCD7A and m = 0x5555, so
        // HC = ~(0xCD7A + 0x5555) = 0xDD2F. m changes to 0x3285: the new sum is -0 and the
        // checksum must be 0x0000, which eqn. 3 gives and eqn. 2 (0xFFFF) does not.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        assert_eq!(!combine(&[0xcd7a, 0x3285]), 0x0000);
    }

    #[test]
    fn udp_zero_means_none() {
        assert_eq!(udp_update16(0, 0x1234, 0x4321), 0);
        assert_eq!(udp_update32(0, 0x0a00_0001, 0x0a00_0002), 0);
        assert_eq!(udp_transmitted(0), 0xffff);
        // A change that makes the checksum 0 transmits it as 0xFFFF.
        assert_eq!(udp_update16(0xdd2f, 0x5555, 0x3285), 0xffff);
    }

    /// Sets the 16-bit word at `at` so that `bytes` (checksum field zeroed) sums to -0, i.e. the
    /// full checksum is 0x0000: the edge RFC 1624 is about.
    fn force_zero_checksum(bytes: &mut [u8], at: usize, extra: u16) {
        bytes[at..at + 2].copy_from_slice(&[0, 0]);
        let rest = combine(&[data(bytes), extra]);
        bytes[at..at + 2].copy_from_slice(&(!rest).to_be_bytes());
        assert_eq!(!combine(&[data(bytes), extra]), 0);
    }

    /// A random IPv4 header with a correct checksum.
    fn ipv4_header() -> impl Strategy<Value = [u8; 20]> {
        any::<[u8; 20]>().prop_map(|mut bytes| {
            bytes[0] = 0x45;
            let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
            packet.fill_checksum();
            bytes
        })
    }

    proptest! {
        #[test]
        fn ipv4_incremental_equals_full(
            mut header in ipv4_header(),
            word in (0usize..10).prop_filter("not the checksum", |&w| w != 5),
            new_word in any::<u16>(),
            new_dst in any::<u32>(),
            zero_before in any::<bool>(),
            zero_after in any::<bool>(),
        ) {
            if zero_before {
                // Make the original checksum 0x0000 via the identification field.
                header[10..12].copy_from_slice(&[0, 0]);
                force_zero_checksum(&mut header[..], 4, 0);
                Ipv4Packet::new_unchecked(&mut header[..]).fill_checksum();
                prop_assert_eq!(Ipv4Packet::new_unchecked(&header[..]).checksum(), 0);
            }
            let mut packet = Ipv4Packet::new_unchecked(&mut header[..]);
            let before = packet.checksum();

            // A 16-bit word change (version/IHL byte kept so the header stays "non-zero").
            let at = word * 2;
            let old = u16::from_be_bytes([packet.as_ref()[at], packet.as_ref()[at + 1]]);
            let mut new = if word == 0 { 0x4500 | (new_word & 0xff) } else { new_word };
            if zero_after && word != 0 {
                // Choose the new word so that the new full checksum is 0x0000.
                let mut probe = packet.as_ref().to_vec();
                probe[10..12].copy_from_slice(&[0, 0]);
                probe[at..at + 2].copy_from_slice(&[0, 0]);
                new = !data(&probe);
            }
            packet.as_mut()[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let incremental = update16(before, old, new);
            packet.fill_checksum();
            prop_assert_eq!(incremental, packet.checksum());

            // A 32-bit address change.
            let before = packet.checksum();
            let old = u32::from(packet.dst_addr());
            packet.set_dst_addr(new_dst.into());
            let incremental = update32(before, old, new_dst);
            packet.fill_checksum();
            prop_assert_eq!(incremental, packet.checksum());
        }

        #[test]
        fn tcp_incremental_equals_full(
            mut segment in proptest::collection::vec(any::<u8>(), 20..80),
            src in any::<u32>(),
            dst in any::<u32>(),
            new_dst in any::<u32>(),
            new_port in any::<u16>(),
            zero_before in any::<bool>(),
        ) {
            segment[12] = 0x50; // data offset 5
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            if zero_before {
                let pseudo = pseudo_header(src, dst, 6, segment.len() as u16);
                segment[16..18].copy_from_slice(&[0, 0]);
                force_zero_checksum(&mut segment[..], 14, pseudo); // via the window field
            }
            let mut tcp = TcpSegment::new_checked(&mut segment[..]).unwrap();
            tcp.fill_checksum(src, dst);
            if zero_before {
                prop_assert_eq!(tcp.checksum(), 0);
            }

            // Rewrite the destination address (pseudo header) and port, as NAT will.
            let before = tcp.checksum();
            let after_addr = update32(before, u32::from(dst), new_dst);
            let old_port = tcp.dst_port();
            tcp.set_dst_port(new_port);
            let incremental = update16(after_addr, old_port, new_port);
            tcp.fill_checksum(src, new_dst.into());
            prop_assert_eq!(incremental, tcp.checksum());
            prop_assert!(tcp.verify_checksum(src, new_dst.into()));
        }

        #[test]
        fn udp_incremental_equals_full(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<u32>(),
            dst in any::<u32>(),
            ports in any::<(u16, u16)>(),
            new_dst in any::<u32>(),
            new_port in any::<u16>(),
            no_checksum in any::<bool>(),
            zero_after in any::<bool>(),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let mut bytes = vec![0u8; 8 + payload.len()];
            let len = bytes.len() as u16;
            let mut udp = UdpDatagram::new_unchecked(&mut bytes[..]);
            udp.set_src_port(ports.0);
            udp.set_dst_port(ports.1);
            udp.set_len(len);
            udp.payload_mut().copy_from_slice(&payload);
            udp.fill_checksum(src, dst);
            if no_checksum {
                udp.set_checksum(0);
            }

            let before = udp.checksum();
            let mut new_port = new_port;
            if zero_after {
                // Pick the port that makes the full checksum compute to 0 (sent as 0xFFFF).
                let mut probe = udp.as_ref().to_vec();
                probe[2..4].copy_from_slice(&[0, 0]);
                probe[6..8].copy_from_slice(&[0, 0]);
                new_port = !combine(&[pseudo_header(src, new_dst.into(), 17, len), data(&probe)]);
            }
            let after_addr = udp_update32(before, u32::from(dst), new_dst);
            let old_port = udp.dst_port();
            udp.set_dst_port(new_port);
            let incremental = udp_update16(after_addr, old_port, new_port);

            if no_checksum {
                prop_assert_eq!(incremental, 0);
            } else {
                udp.fill_checksum(src, new_dst.into());
                prop_assert_eq!(incremental, udp.checksum());
                if zero_after {
                    prop_assert_eq!(incremental, 0xffff);
                }
                prop_assert!(udp.verify_checksum(src, new_dst.into()));
            }
        }

        /// An IPv6 address change in the pseudo header and a port change, as NAT does them,
        /// equal a full recomputation, from and to the -0 edge; a UDP 0 stays 0.
        #[test]
        fn ipv6_incremental_equals_full(
            mut segment in proptest::collection::vec(any::<u8>(), 8..80),
            src in any::<u128>(),
            dst in any::<u128>(),
            new_dst in any::<u128>(),
            new_port in any::<u16>(),
            udp in any::<bool>(),
            zero_before in any::<bool>(),
        ) {
            let (src, dst, new_dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst), Ipv6Addr::from(new_dst));
            let (number, checksum_at, spare_at) = if udp { (17, 6, 4) } else { (6, 16, 14) };
            if !udp && segment.len() < 20 {
                segment.resize(20, 0);
            }
            let length = u32::try_from(segment.len()).unwrap();
            let full = |bytes: &[u8], dst: Ipv6Addr| {
                let mut probe = bytes.to_vec();
                probe[checksum_at..checksum_at + 2].copy_from_slice(&[0, 0]);
                !combine(&[pseudo_header6(src, dst, number, length), data(&probe)])
            };
            if zero_before {
                // A word not NAT touches makes the full checksum 0x0000 (UDP sends 0xFFFF).
                segment[checksum_at..checksum_at + 2].copy_from_slice(&[0, 0]);
                force_zero_checksum(&mut segment[..], spare_at, pseudo_header6(src, dst, number, length));
            }
            let mut before = full(&segment, dst);
            if udp {
                before = udp_transmitted(before);
            }
            segment[checksum_at..checksum_at + 2].copy_from_slice(&before.to_be_bytes());
            let old_port = u16::from_be_bytes([segment[2], segment[3]]);
            segment[2..4].copy_from_slice(&new_port.to_be_bytes());
            let (old, new) = (u128::from(dst), u128::from(new_dst));
            let mut expected = full(&segment, new_dst);
            let incremental = if udp {
                expected = udp_transmitted(expected);
                udp_update16(udp_update128(before, old, new), old_port, new_port)
            } else {
                update16(update128(before, old, new), old_port, new_port)
            };
            prop_assert_eq!(incremental, expected);
            prop_assert_eq!(udp_update128(0, old, new), 0);
        }
    }
}
