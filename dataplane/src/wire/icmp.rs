//! ICMPv4 message view (RFC 792), with the quoted datagram of error messages (RFC 1812 4.3.2.3).
//!
//! Every ICMP message starts with type, code, checksum and four "rest of header" bytes; error
//! messages (destination unreachable, time exceeded) then quote the offending datagram: its IPv4
//! header and at least the first 8 bytes of its payload, which hold the TCP/UDP ports (RFC 792;
//! RFC 1812 lets routers quote more, and Linux quotes up to 576 bytes in all).
//!
//! [`Icmpv4Packet::new_checked`] validates the 8-byte header. [`IcmpQuote::new_checked`]
//! validates a quote: a version-4 header with IHL >= 5, the whole header and 8 bytes after it.
//! The quote's `total_len` describes the original datagram, not the quote, so the quote is
//! deliberately not an [`super::Ipv4Packet`] (whose `new_checked` would refuse it).

use std::net::Ipv4Addr;

use super::{checksum, ipv4, read_u16, write_u16, Error};

mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Destination unreachable, code 4: the next-hop MTU (RFC 1191), after 2 unused bytes.
    pub const NEXT_HOP_MTU: Field = 6..8;
    pub const DATA: usize = 8;
}

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = field::DATA;

/// Bytes of the offending datagram's payload every error quotes (RFC 792): enough for ports.
pub const QUOTED_PAYLOAD_LEN: usize = 8;

/// ICMP message types the director reads or writes.
pub mod message {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (an error).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (an error).
    pub const TIME_EXCEEDED: u8 = 11;
}

/// Codes of destination unreachable the director reads or writes.
pub mod unreachable {
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set; carries the next-hop MTU (RFC 1191).
    pub const FRAG_NEEDED: u8 = 4;
}

/// A view of an ICMPv4 message (the IPv4 payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it; getters panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }

    /// Wraps a buffer holding at least the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the header fits.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type (see [`message`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Next-hop MTU of a fragmentation-needed message (0 from pre-RFC 1191 routers).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// Whether this is an error that quotes a datagram and that the director translates:
    /// destination unreachable or time exceeded (the types IPVS translates, less the deprecated
    /// source quench, RFC 6633).
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            message::DEST_UNREACHABLE | message::TIME_EXCEEDED
        )
    }

    /// Everything after the 8-byte header (for an error, the quote).
    #[inline]
    pub fn data(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), field::DATA, usize::MAX)
    }

    /// Whether the checksum over the whole buffer is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[field::TYPE] = msg_type;
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Sets the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the 4 "rest of header" bytes to 2 unused zero bytes and a next-hop MTU.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        let data = self.buffer.as_mut();
        data[4..6].copy_from_slice(&[0, 0]);
        write_u16(data, field::NEXT_HOP_MTU, mtu);
    }

    /// Computes the checksum over the whole buffer and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.buffer.as_ref());
        self.set_checksum(!sum);
    }

    /// Everything after the 8-byte header, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        super::clamped_mut(self.buffer.as_mut(), field::DATA, usize::MAX)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Icmpv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AsMut<[u8]> for Icmpv4Packet<T> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
}

mod quote_field {
    use crate::wire::Field;

    pub const VERSION_IHL: usize = 0;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Offset of the checksum in a TCP header.
const TCP_CHECKSUM_AT: usize = 16;
/// Offset of the checksum in a UDP header.
const UDP_CHECKSUM_AT: usize = 6;

/// A view of the datagram an ICMP error quotes: an IPv4 header (options included) and at least
/// [`QUOTED_PAYLOAD_LEN`] bytes of its payload, possibly more.
///
/// Setters do not touch any checksum; the translation in `rewrite::icmp` updates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpQuote<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpQuote<T> {
    /// Wraps a buffer without checking it; getters panic if it is too short.
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpQuote { buffer }
    }

    /// Wraps a quote (an error's [`Icmpv4Packet::data`]) that holds a version-4 header with
    /// IHL >= 5 ([`Error::Malformed`] otherwise), all of it, and 8 bytes after it
    /// ([`Error::Truncated`] otherwise).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let quote = Self::new_unchecked(buffer);
        quote.check_len()?;
        Ok(quote)
    }

    /// See [`IcmpQuote::new_checked`].
    pub fn check_len(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        if data.len() < ipv4::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if data[quote_field::VERSION_IHL] >> 4 != 4 || self.header_len() < ipv4::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if data.len() < self.header_len() + QUOTED_PAYLOAD_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the quoted IPv4 header in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[quote_field::VERSION_IHL] & 0x0f) * 4
    }

    /// The quoted IPv4 header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), 0, self.header_len())
    }

    /// IP protocol of the quoted datagram.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[quote_field::PROTOCOL]
    }

    /// The quoted header's checksum.
    #[inline]
    pub fn header_checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), quote_field::CHECKSUM)
    }

    /// Source address of the quoted datagram.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let data = self.buffer.as_ref();
        Ipv4Addr::new(data[12], data[13], data[14], data[15])
    }

    /// Destination address of the quoted datagram.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let data = self.buffer.as_ref();
        Ipv4Addr::new(data[16], data[17], data[18], data[19])
    }

    /// The quoted payload: at least 8 bytes (ports of TCP and UDP, all of a UDP header).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), self.header_len(), usize::MAX)
    }

    /// Source port, if the quoted datagram is TCP or UDP (the first 2 payload bytes).
    #[inline]
    pub fn src_port(&self) -> u16 {
        let at = self.header_len();
        read_u16(self.buffer.as_ref(), at..at + 2)
    }

    /// Destination port, if the quoted datagram is TCP or UDP (payload bytes 2..4).
    #[inline]
    pub fn dst_port(&self) -> u16 {
        let at = self.header_len() + 2;
        read_u16(self.buffer.as_ref(), at..at + 2)
    }

    /// Offset in the buffer of the quoted TCP/UDP checksum, if the quote reaches it (always for
    /// UDP; for TCP only when at least 18 payload bytes are quoted) and the protocol has one.
    #[inline]
    pub fn l4_checksum_at(&self) -> Option<usize> {
        let at = self.header_len()
            + match self.protocol() {
                ipv4::protocol::TCP => TCP_CHECKSUM_AT,
                ipv4::protocol::UDP => UDP_CHECKSUM_AT,
                _ => return None,
            };
        (at + 2 <= self.buffer.as_ref().len()).then_some(at)
    }

    /// The quoted TCP/UDP checksum, if [`IcmpQuote::l4_checksum_at`] finds it.
    #[inline]
    pub fn l4_checksum(&self) -> Option<u16> {
        let at = self.l4_checksum_at()?;
        Some(read_u16(self.buffer.as_ref(), at..at + 2))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpQuote<T> {
    /// Sets the quoted source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[quote_field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the quoted destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[quote_field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the quoted header's checksum field as is.
    #[inline]
    pub fn set_header_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), quote_field::CHECKSUM, checksum);
    }

    /// Sets the quoted source port.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        let at = self.header_len();
        write_u16(self.buffer.as_mut(), at..at + 2, port);
    }

    /// Sets the quoted destination port.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        let at = self.header_len() + 2;
        write_u16(self.buffer.as_mut(), at..at + 2, port);
    }

    /// Sets the quoted TCP/UDP checksum, if the quote reaches it; otherwise does nothing.
    #[inline]
    pub fn set_l4_checksum(&mut self, checksum: u16) {
        if let Some(at) = self.l4_checksum_at() {
            write_u16(self.buffer.as_mut(), at..at + 2, checksum);
        }
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IcmpQuote<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Ipv4Packet;

    /// An ICMP port unreachable quoting a UDP header from 192.0.2.2:40000 to 10.0.0.1:8080.
    fn port_unreachable() -> Vec<u8> {
        let mut bytes = vec![0u8; 8 + 20 + 8];
        bytes[0] = message::DEST_UNREACHABLE;
        bytes[1] = unreachable::PORT;
        let mut inner = Ipv4Packet::new_unchecked(&mut bytes[8..28]);
        inner.set_version_and_header_len(4, 20);
        inner.set_total_len(36);
        inner.set_ttl(63);
        inner.set_protocol(ipv4::protocol::UDP);
        inner.set_src_addr(Ipv4Addr::new(192, 0, 2, 2));
        inner.set_dst_addr(Ipv4Addr::new(10, 0, 0, 1));
        inner.fill_checksum();
        bytes[28..36].copy_from_slice(&[0x9c, 0x40, 0x1f, 0x90, 0, 16, 0x12, 0x34]);
        Icmpv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        bytes
    }

    #[test]
    fn round_trip() {
        let bytes = port_unreachable();
        let icmp = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(icmp.msg_type(), message::DEST_UNREACHABLE);
        assert_eq!(icmp.code(), unreachable::PORT);
        assert!(icmp.is_error());
        assert!(icmp.verify_checksum());
        let quote = IcmpQuote::new_checked(icmp.data()).unwrap();
        assert_eq!(quote.header_len(), 20);
        assert_eq!(quote.protocol(), ipv4::protocol::UDP);
        assert_eq!(quote.src_addr(), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(quote.dst_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!((quote.src_port(), quote.dst_port()), (40000, 8080));
        assert_eq!(quote.l4_checksum(), Some(0x1234));
        assert_eq!(quote.payload().len(), 8);
        assert!(Ipv4Packet::new_unchecked(quote.header()).verify_checksum());
    }

    #[test]
    fn frag_needed_mtu() {
        let mut bytes = port_unreachable();
        let mut icmp = Icmpv4Packet::new_checked(&mut bytes[..]).unwrap();
        icmp.set_code(unreachable::FRAG_NEEDED);
        icmp.set_next_hop_mtu(1480);
        icmp.fill_checksum();
        assert_eq!(icmp.next_hop_mtu(), 1480);
        assert_eq!(&bytes[4..8], &[0, 0, 0x05, 0xc8]);
        assert!(Icmpv4Packet::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn tcp_checksum_only_when_quoted() {
        let mut bytes = port_unreachable();
        bytes[8 + 9] = ipv4::protocol::TCP;
        // 8 bytes of TCP: ports and sequence number, no checksum.
        let quote = IcmpQuote::new_checked(&bytes[8..]).unwrap();
        assert_eq!(quote.l4_checksum(), None);
        bytes.extend_from_slice(&[0; 12]);
        bytes[8 + 20 + 16..8 + 20 + 18].copy_from_slice(&[0xab, 0xcd]);
        let quote = IcmpQuote::new_checked(&bytes[8..]).unwrap();
        assert_eq!(quote.l4_checksum(), Some(0xabcd));
    }

    #[test]
    fn checked_errors() {
        let bytes = port_unreachable();
        assert_eq!(
            Icmpv4Packet::new_checked(&bytes[..7]).unwrap_err(),
            Error::Truncated
        );
        assert!(Icmpv4Packet::new_checked(&bytes[..8])
            .unwrap()
            .data()
            .is_empty());
        assert_eq!(
            IcmpQuote::new_checked(&bytes[8..27]).unwrap_err(),
            Error::Truncated
        );
        // Header whole, fewer than 8 payload bytes.
        assert_eq!(
            IcmpQuote::new_checked(&bytes[8..35]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = bytes.clone();
        bad[8] = 0x65;
        assert_eq!(
            IcmpQuote::new_checked(&bad[8..]).unwrap_err(),
            Error::Malformed
        );
        bad[8] = 0x44;
        assert_eq!(
            IcmpQuote::new_checked(&bad[8..]).unwrap_err(),
            Error::Malformed
        );
        // IHL 6: the quote would need 24 + 8 bytes.
        bad[8] = 0x46;
        assert_eq!(
            IcmpQuote::new_checked(&bad[8..]).unwrap_err(),
            Error::Truncated
        );
    }
}
