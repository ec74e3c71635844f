//! ICMPv6 message view (RFC 4443), with the packet an error message quotes.
//!
//! An ICMPv6 message has the ICMPv4 layout (type, code, checksum, four more header bytes), but
//! its checksum also covers an IPv6 pseudo-header (RFC 4443 section 2.3), and its errors
//! quote "as much of the invoking packet as possible without the ICMPv6 packet exceeding the
//! minimum IPv6 MTU" (section 2.4). Types below 128 are errors; the director translates
//! destination unreachable, packet too big and time exceeded, and leaves every informational
//! message (echo, neighbour discovery, MLD) to the kernel.
//!
//! [`Ipv6Quote::new_checked`] validates a quote the director can translate: a fixed IPv6
//! header (no extension headers: the offending packet was one the director or a real server
//! sent, and neither adds any) and the 8 bytes after it that hold the ports.

use std::net::Ipv6Addr;

use super::{ipv6, read_u16, read_u32, write_u16, Error};

mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Packet too big: the MTU of the next hop; parameter problem: the pointer.
    pub const MTU: Field = 4..8;
    pub const DATA: usize = 8;
}

/// Length of the ICMPv6 header.
pub const HEADER_LEN: usize = field::DATA;

/// Bytes of the quoted packet's payload the director needs: enough for TCP or UDP ports.
pub const QUOTED_PAYLOAD_LEN: usize = 8;

/// ICMPv6 message types the director reads or writes (RFC 4443, RFC 4861).
pub mod message {
    /// Destination unreachable (an error).
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (an error); carries the next hop's MTU.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded (an error).
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem (an error, not translated).
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Neighbour solicitation (RFC 4861).
    pub const NEIGHBOR_SOLICITATION: u8 = 135;
    /// Neighbour advertisement (RFC 4861).
    pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
}

/// A view of an ICMPv6 message (the payload after the IPv6 header chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checking it; getters panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer holding at least the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum (over the pseudo-header and the message).
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Packet too big's MTU.
    #[inline]
    pub fn mtu(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MTU)
    }

    /// Whether this is an error the director translates: destination unreachable, packet too
    /// big or time exceeded.
    #[inline]
    pub fn is_translated_error(&self) -> bool {
        matches!(
            self.msg_type(),
            message::DEST_UNREACHABLE | message::PACKET_TOO_BIG | message::TIME_EXCEEDED
        )
    }

    /// Everything after the header: an error's quote.
    #[inline]
    pub fn data(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), HEADER_LEN, usize::MAX)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[field::TYPE] = msg_type;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets packet too big's MTU.
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        self.buffer.as_mut()[field::MTU].copy_from_slice(&mtu.to_be_bytes());
    }

    /// The quote, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        super::clamped_mut(self.buffer.as_mut(), HEADER_LEN, usize::MAX)
    }
}

/// Offset of the checksum in a TCP header.
const TCP_CHECKSUM_AT: usize = 16;
/// Offset of the checksum in a UDP header.
const UDP_CHECKSUM_AT: usize = 6;

/// A view of the packet an ICMPv6 error quotes: a fixed IPv6 header and at least
/// [`QUOTED_PAYLOAD_LEN`] bytes after it. Setters touch no checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Quote<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Quote<T> {
    /// Wraps a buffer without checking it; getters panic if it is too short.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Quote { buffer }
    }

    /// Wraps an error's [`Icmpv6Packet::data`] holding a version-6 header
    /// ([`Error::Malformed`] otherwise) and 8 bytes after it ([`Error::Truncated`] otherwise).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let data = buffer.as_ref();
        if data.len() < ipv6::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if data[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        if data.len() < ipv6::HEADER_LEN + QUOTED_PAYLOAD_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// The quoted header's view.
    #[inline]
    fn header(&self) -> ipv6::Ipv6Packet<&[u8]> {
        ipv6::Ipv6Packet::new_unchecked(self.buffer.as_ref())
    }

    /// The quoted packet's first next header (its transport protocol when it has no extension
    /// headers).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.header().next_header()
    }

    /// Source address of the quoted packet.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        self.header().src_addr()
    }

    /// Destination address of the quoted packet.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.header().dst_addr()
    }

    /// Source port of a quoted TCP or UDP packet.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), ipv6::HEADER_LEN..ipv6::HEADER_LEN + 2)
    }

    /// Destination port of a quoted TCP or UDP packet.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(
            self.buffer.as_ref(),
            ipv6::HEADER_LEN + 2..ipv6::HEADER_LEN + 4,
        )
    }

    /// Offset in the buffer of the quoted TCP/UDP checksum, if the quote reaches it.
    #[inline]
    pub fn l4_checksum_at(&self) -> Option<usize> {
        let at = ipv6::HEADER_LEN
            + match self.next_header() {
                ipv6::next_header::TCP => TCP_CHECKSUM_AT,
                ipv6::next_header::UDP => UDP_CHECKSUM_AT,
                _ => return None,
            };
        (at + 2 <= self.buffer.as_ref().len()).then_some(at)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Quote<T> {
    /// Sets the quoted source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        ipv6::Ipv6Packet::new_unchecked(self.buffer.as_mut()).set_src_addr(addr);
    }

    /// Sets the quoted destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        ipv6::Ipv6Packet::new_unchecked(self.buffer.as_mut()).set_dst_addr(addr);
    }

    /// Sets the quoted source port.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(
            self.buffer.as_mut(),
            ipv6::HEADER_LEN..ipv6::HEADER_LEN + 2,
            port,
        );
    }

    /// Sets the quoted destination port.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(
            self.buffer.as_mut(),
            ipv6::HEADER_LEN + 2..ipv6::HEADER_LEN + 4,
            port,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(version: u8, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        data[0] = version << 4;
        data[6] = ipv6::next_header::UDP;
        data[8..24].copy_from_slice(&"2001:db8::10".parse::<Ipv6Addr>().unwrap().octets());
        data[24..40].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        if len >= 44 {
            data[40..44].copy_from_slice(&[0, 80, 0xc3, 0x50]);
        }
        data
    }

    #[test]
    fn a_quote_gives_its_flow() {
        let data = quote(6, 48);
        let quote = Ipv6Quote::new_checked(&data[..]).unwrap();
        assert_eq!(quote.next_header(), ipv6::next_header::UDP);
        assert_eq!(
            quote.src_addr(),
            "2001:db8::10".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(quote.dst_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!((quote.src_port(), quote.dst_port()), (80, 50000));
        assert_eq!(quote.l4_checksum_at(), Some(46));
    }

    #[test]
    fn short_or_foreign_quotes_are_refused() {
        assert_eq!(
            Ipv6Quote::new_checked(&quote(6, 47)[..]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv6Quote::new_checked(&quote(6, 48)[..39]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv6Quote::new_checked(&quote(4, 48)[..]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            Icmpv6Packet::new_checked(&[1u8; 7][..]).unwrap_err(),
            Error::Truncated
        );
    }
}
