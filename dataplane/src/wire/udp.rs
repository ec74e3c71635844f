//! UDP header view (RFC 768).
//!
//! A checksum field of 0 means the sender computed none; [`UdpDatagram::fill_checksum`] never
//! writes 0 (a computed 0 goes out as 0xFFFF) and [`UdpDatagram::verify_checksum`] accepts 0.

use std::net::Ipv4Addr;

use super::{checksum, ipv4, read_u16, write_u16, Error};

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A view of a UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    /// Wraps a buffer without checking it; getters panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpDatagram { buffer }
    }

    /// Wraps a buffer holding the header and at least `len` bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let datagram = Self::new_unchecked(buffer);
        datagram.check_len()?;
        Ok(datagram)
    }

    /// Checks that the header fits, and that the length field covers the header and fits.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN || len < field_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length of header and data, from the length field.
    #[inline]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum; 0 means none was computed.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Data after the header, up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), HEADER_LEN, usize::from(self.len()))
    }

    /// Whether the checksum is correct or absent (0).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let data = super::clamped(self.buffer.as_ref(), 0, usize::from(self.len()));
        let pseudo = checksum::pseudo_header(src, dst, ipv4::protocol::UDP, self.len());
        checksum::combine(&[pseudo, checksum::data(data)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    /// Sets the source port (the checksum is not updated).
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port (the checksum is not updated).
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the checksum field as is (0 disables it).
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Computes the checksum over the pseudo header and `len` bytes and stores it (0 -> 0xFFFF).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let data = super::clamped(self.buffer.as_ref(), 0, usize::from(len));
        let pseudo = checksum::pseudo_header(src, dst, ipv4::protocol::UDP, len);
        let sum = checksum::combine(&[pseudo, checksum::data(data)]);
        self.set_checksum(checksum::udp_transmitted(!sum));
    }

    /// Data after the header, up to the length field, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        super::clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpDatagram<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AsMut<[u8]> for UdpDatagram<T> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

    #[test]
    fn round_trip() {
        let mut bytes = [0u8; 14]; // 2 bytes beyond the length field
        let mut datagram = UdpDatagram::new_unchecked(&mut bytes[..]);
        datagram.set_src_port(5353);
        datagram.set_dst_port(53);
        datagram.set_len(12);
        datagram.payload_mut().copy_from_slice(b"dns?");
        datagram.fill_checksum(SRC, DST);

        let datagram = UdpDatagram::new_checked(&bytes[..]).unwrap();
        assert_eq!(datagram.src_port(), 5353);
        assert_eq!(datagram.dst_port(), 53);
        assert_eq!(datagram.len(), 12);
        assert!(!datagram.is_empty());
        assert_eq!(datagram.payload(), b"dns?");
        assert_ne!(datagram.checksum(), 0);
        assert!(datagram.verify_checksum(SRC, DST));
        assert!(!datagram.verify_checksum(SRC, Ipv4Addr::new(192, 0, 2, 54)));
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut bytes = [0u8; 8];
        let mut datagram = UdpDatagram::new_unchecked(&mut bytes[..]);
        datagram.set_len(8);
        datagram.set_checksum(0);
        assert!(datagram.verify_checksum(SRC, DST));
    }

    #[test]
    fn checked_errors() {
        let mut bytes = [0u8; 10];
        assert_eq!(
            UdpDatagram::new_checked(&bytes[..7]).unwrap_err(),
            Error::Truncated
        );
        UdpDatagram::new_unchecked(&mut bytes[..]).set_len(7);
        assert_eq!(
            UdpDatagram::new_checked(&bytes[..]).unwrap_err(),
            Error::Truncated
        );
        UdpDatagram::new_unchecked(&mut bytes[..]).set_len(11);
        assert_eq!(
            UdpDatagram::new_checked(&bytes[..]).unwrap_err(),
            Error::Truncated
        );
        UdpDatagram::new_unchecked(&mut bytes[..]).set_len(10);
        assert_eq!(
            UdpDatagram::new_checked(&bytes[..]).unwrap().payload(),
            &[0, 0]
        );
    }
}
