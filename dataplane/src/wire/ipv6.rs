//! IPv6 header view (RFC 8200 section 3), and the generic extension header every walk over a
//! chain reads (RFC 8200 section 4: next header, then length in 8-octet units past the first 8).
//!
//! [`Ipv6Packet::new_checked`] accepts any fixed header whose payload length fits the buffer.
//! Walking the extension headers, and refusing fragments or jumbograms, is the parser's policy
//! (`crate::parse`), not this view's.

use std::net::Ipv6Addr;

use super::{read_u16, write_u16, Error};

mod field {
    use crate::wire::Field;

    pub const VERSION_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The smallest link MTU IPv6 allows (RFC 8200 section 5): no packet-too-big below it.
pub const MIN_MTU: u16 = 1280;

/// Next-header values the director reads or writes.
pub mod next_header {
    /// Hop-by-hop options (an extension header; only right after the fixed header).
    pub const HOP_BY_HOP: u8 = 0;
    /// IPv4 encapsulated (RFC 2473: IPv4-in-IPv6).
    pub const IPV4: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 encapsulated (RFC 2473: IPv6-in-IPv6).
    pub const IPV6: u8 = 41;
    /// Routing header (an extension header).
    pub const ROUTING: u8 = 43;
    /// Fragment header (an extension header).
    pub const FRAGMENT: u8 = 44;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// No next header.
    pub const NO_NEXT_HEADER: u8 = 59;
    /// Destination options (an extension header).
    pub const DESTINATION_OPTIONS: u8 = 60;
}

/// A view of an IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it; getters panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer holding the fixed header and the whole payload its length declares (it
    /// may hold more: Ethernet pads short frames).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks, in this order: the fixed header fits; the version is 6 (else
    /// [`Error::Malformed`]); the payload length fits the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        if len < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (6 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        let data = self.buffer.as_ref();
        (data[0] << 4) | (data[1] >> 4)
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        super::read_u32(self.buffer.as_ref(), field::VERSION_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length: everything after the fixed header, extension headers included; 0 in a
    /// jumbogram (RFC 2675).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// The first next-header value.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        address(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        address(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// The payload (extension headers included), excluding Ethernet padding.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        super::clamped(
            self.buffer.as_ref(),
            HEADER_LEN,
            HEADER_LEN + usize::from(self.payload_len()),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, the traffic class and the flow label (its low 20 bits).
    #[inline]
    pub fn set_version_class_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VERSION_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, len);
    }

    /// Sets the first next-header value.
    #[inline]
    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }
}

/// The 16-byte address at `at` (the caller's view guarantees the bounds).
#[inline]
fn address(data: &[u8], at: usize) -> Ipv6Addr {
    match data
        .get(at..at + 16)
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
    {
        Some(octets) => Ipv6Addr::from(octets),
        None => super::out_of_bounds(at),
    }
}

/// Whether `next_header` names an extension header the parser walks over (hop-by-hop,
/// routing, destination options); the fragment header is told apart, as its own verdict.
#[inline]
pub const fn is_walkable_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DESTINATION_OPTIONS
    )
}

/// The generic extension header's (next header, length in bytes) at the start of `data`, or
/// `Truncated` when `data` is shorter than the two bytes or than the length they give.
#[inline]
pub fn extension_header(data: &[u8]) -> Result<(u8, usize), Error> {
    let [next, units, ..] = *data else {
        return Err(Error::Truncated);
    };
    let len = (usize::from(units) + 1) * 8;
    if data.len() < len {
        return Err(Error::Truncated);
    }
    Ok((next, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: u16, next: u8) -> Vec<u8> {
        let mut buffer = vec![0u8; HEADER_LEN + usize::from(payload_len)];
        let mut packet = Ipv6Packet::new_unchecked(&mut buffer[..]);
        packet.set_version_class_flow(0x2e, 0xabcde);
        packet.set_payload_len(payload_len);
        packet.set_next_header(next);
        packet.set_hop_limit(64);
        packet.set_src_addr("2001:db8::1".parse().unwrap());
        packet.set_dst_addr("2001:db8::10".parse().unwrap());
        buffer
    }

    #[test]
    fn fields_read_back_what_was_written() {
        let buffer = header(8, next_header::UDP);
        let packet = Ipv6Packet::new_checked(&buffer[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0x2e);
        assert_eq!(packet.flow_label(), 0xabcde);
        assert_eq!(packet.payload_len(), 8);
        assert_eq!(packet.next_header(), next_header::UDP);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(
            packet.src_addr(),
            "2001:db8::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            packet.dst_addr(),
            "2001:db8::10".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(packet.payload().len(), 8);
    }

    #[test]
    fn short_buffers_and_other_versions_are_refused() {
        let buffer = header(8, next_header::UDP);
        assert_eq!(
            Ipv6Packet::new_checked(&buffer[..HEADER_LEN - 1]).unwrap_err(),
            Error::Truncated
        );
        // The payload length claims more than the buffer holds.
        assert_eq!(
            Ipv6Packet::new_checked(&buffer[..HEADER_LEN + 7]).unwrap_err(),
            Error::Truncated
        );
        let mut ipv4 = buffer.clone();
        ipv4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&ipv4[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn extension_headers_give_their_length_or_truncated() {
        assert_eq!(extension_header(&[6, 0, 0, 0, 0, 0, 0, 0]), Ok((6, 8)));
        assert_eq!(
            extension_header(&[17, 1, 0, 0, 0, 0, 0, 0]),
            Err(Error::Truncated)
        );
        assert_eq!(extension_header(&[17]), Err(Error::Truncated));
        assert_eq!(extension_header(&[17, 1].repeat(8)), Ok((17, 16)));
    }
}
