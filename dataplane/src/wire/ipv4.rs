//! IPv4 header view (RFC 791).
//!
//! [`Ipv4Packet::new_checked`] accepts any well-formed header, options included; refusing
//! options or fragments is the pipeline's policy, not this view's.

use std::net::Ipv4Addr;

use super::{checksum, read_u16, read_u32, write_u16, Error};

mod field {
    use crate::wire::Field;

    pub const VERSION_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLAGS_FRAG: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// IP protocol numbers the director cares about.
pub mod protocol {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IPv4 in IPv4 (RFC 2003), as LVS-TUN sends.
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

const DONT_FRAG: u16 = 0x4000;
const MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; getters panic if it is shorter than [`HEADER_LEN`].
    /// For buffers being filled in; use [`Ipv4Packet::new_checked`] for received ones.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer holding a whole IPv4 header and at least `total_len` bytes (it may hold
    /// more: Ethernet pads short frames).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks, in this order: the fixed header fits; version is 4 and IHL >= 5 (else
    /// [`Error::Malformed`]); the options fit; total length covers the header and fits.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        if self.version() != 4 || header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        let total_len = usize::from(self.total_len());
        if len < header_len || total_len < header_len || len < total_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4): 20 without options, up to 60.
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VERSION_IHL] & 0x0f) * 4
    }

    /// Type of service byte (DSCP and ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Total length of header and payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & DONT_FRAG != 0
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & MORE_FRAGS != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FRAG_OFFSET) << 3
    }

    /// Whether this is a fragment of a larger datagram (MF set or a non-zero offset): only the
    /// first fragment carries the ports.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & (MORE_FRAGS | FRAG_OFFSET) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// IP protocol number of the payload (see [`protocol`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.header()) == 0xffff
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), 0, usize::from(self.header_len()))
    }

    /// Options (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        super::clamped(
            self.buffer.as_ref(),
            HEADER_LEN,
            usize::from(self.header_len()),
        )
    }

    /// The payload: from the end of the header to `total_len`, excluding Ethernet padding.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        super::clamped(
            self.buffer.as_ref(),
            usize::from(self.header_len()),
            usize::from(self.total_len()),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version and header length (bytes, a multiple of 4 from 20 to 60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, version: u8, header_len: u8) {
        self.buffer.as_mut()[field::VERSION_IHL] = (version << 4) | ((header_len / 4) & 0x0f);
    }

    /// Sets the type of service byte.
    #[inline]
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, total_len: u16) {
        write_u16(self.buffer.as_mut(), field::TOTAL_LEN, total_len);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    /// Sets flags and fragment offset together (offset in bytes, a multiple of 8).
    #[inline]
    pub fn set_fragment(&mut self, dont_frag: bool, more_frags: bool, frag_offset: u16) {
        let mut value = (frag_offset >> 3) & FRAG_OFFSET;
        if dont_frag {
            value |= DONT_FRAG;
        }
        if more_frags {
            value |= MORE_FRAGS;
        }
        write_u16(self.buffer.as_mut(), field::FLAGS_FRAG, value);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol number.
    #[inline]
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the source address (the checksum is not updated).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (the checksum is not updated).
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum from scratch and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.header());
        self.set_checksum(!sum);
    }

    /// Options, mutably.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        super::clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }

    /// The payload, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (
            usize::from(self.header_len()),
            usize::from(self.total_len()),
        );
        super::clamped_mut(self.buffer.as_mut(), start, end)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AsMut<[u8]> for Ipv4Packet<T> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(bytes: &mut [u8]) {
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_version_and_header_len(4, 20);
        packet.set_tos(0x10);
        packet.set_total_len(24);
        packet.set_ident(0xbeef);
        packet.set_fragment(true, false, 0);
        packet.set_ttl(64);
        packet.set_protocol(protocol::TCP);
        packet.set_src_addr(Ipv4Addr::new(192, 0, 2, 2));
        packet.set_dst_addr(Ipv4Addr::new(192, 0, 2, 10));
        packet.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        packet.fill_checksum();
    }

    #[test]
    fn round_trip() {
        let mut bytes = [0u8; 30]; // 6 bytes of Ethernet padding after the packet
        filled(&mut bytes);
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.tos(), 0x10);
        assert_eq!(packet.total_len(), 24);
        assert_eq!(packet.ident(), 0xbeef);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), protocol::TCP);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(packet.payload(), &[1, 2, 3, 4]);
        assert!(packet.options().is_empty());
        assert!(packet.verify_checksum());
    }

    #[test]
    fn fragments() {
        let mut bytes = [0u8; 24];
        filled(&mut bytes);
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_fragment(false, true, 0);
        assert!(packet.more_frags() && packet.is_fragment());
        packet.set_fragment(false, false, 1480);
        assert_eq!(packet.frag_offset(), 1480);
        assert!(!packet.more_frags() && packet.is_fragment());
    }

    #[test]
    fn options() {
        let mut bytes = [0u8; 28];
        filled(&mut bytes);
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_version_and_header_len(4, 24);
        packet.set_total_len(28);
        packet.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[1, 1, 1, 0]);
        assert_eq!(packet.payload().len(), 4);
    }

    #[test]
    fn checked_errors() {
        let mut bytes = [0u8; 24];
        filled(&mut bytes);
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..19]).unwrap_err(),
            Error::Truncated
        );
        // Total length beyond the buffer.
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..23]).unwrap_err(),
            Error::Truncated
        );

        let mut bad = bytes;
        Ipv4Packet::new_unchecked(&mut bad[..]).set_version_and_header_len(6, 20);
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
        Ipv4Packet::new_unchecked(&mut bad[..]).set_version_and_header_len(4, 16);
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
        // Options longer than the buffer.
        Ipv4Packet::new_unchecked(&mut bad[..]).set_version_and_header_len(4, 60);
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Error::Truncated
        );

        // Total length shorter than the header.
        let mut bad = bytes;
        Ipv4Packet::new_unchecked(&mut bad[..]).set_total_len(19);
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn inconsistent_setters_do_not_panic_accessors() {
        let mut bytes = [0u8; 24];
        filled(&mut bytes);
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_total_len(0xffff);
        packet.set_version_and_header_len(4, 60);
        assert!(packet.payload().is_empty());
        assert_eq!(packet.options().len(), 4);
        assert!(packet.payload_mut().is_empty());
        let _ = packet.verify_checksum();
    }
}
