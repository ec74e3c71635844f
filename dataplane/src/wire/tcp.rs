//! TCP header view (RFC 9293): ports, sequence numbers, flags, checksum.
//!
//! The buffer is the IP payload (header and data); the checksum needs the pseudo header's
//! addresses, which the caller passes in.

use std::net::Ipv4Addr;

use super::{checksum, ipv4, read_u16, read_u32, write_u16, write_u32, Error};

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const FLAGS: Field = 12..14;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// The TCP control bits, as in the low 9 bits of header bytes 12-13.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x001);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x002);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x004);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x008);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x010);
    /// Urgent pointer is significant.
    pub const URG: TcpFlags = TcpFlags(0x020);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x040);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x080);

    /// Whether every bit of `other` is set.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of bits.
    #[inline]
    #[must_use]
    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }

    /// SYN.
    #[inline]
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }

    /// ACK.
    #[inline]
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }

    /// FIN.
    #[inline]
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }

    /// RST.
    #[inline]
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;

    fn bitor(self, other: TcpFlags) -> TcpFlags {
        self.union(other)
    }
}

/// A view of a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Wraps a buffer without checking it; getters panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpSegment { buffer }
    }

    /// Wraps a buffer holding a whole TCP header, options included.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let segment = Self::new_unchecked(buffer);
        segment.check_len()?;
        Ok(segment)
    }

    /// Checks that the fixed header fits, the data offset is at least 5 words
    /// ([`Error::Malformed`]) and the options fit.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len < header_len {
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::FLAGS.start] >> 4) * 4
    }

    /// Control bits.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(read_u16(self.buffer.as_ref(), field::FLAGS) & 0x01ff)
    }

    /// SYN is set.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().syn()
    }

    /// ACK is set.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags().ack()
    }

    /// FIN is set.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags().fin()
    }

    /// RST is set.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags().rst()
    }

    /// Window size.
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options.
    #[inline]
    pub fn options(&self) -> &[u8] {
        super::clamped(
            self.buffer.as_ref(),
            HEADER_LEN,
            usize::from(self.header_len()),
        )
    }

    /// Data after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        super::clamped(
            self.buffer.as_ref(),
            usize::from(self.header_len()),
            usize::MAX,
        )
    }

    /// Whether the checksum over the pseudo header and the whole buffer is correct.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = self.buffer.as_ref();
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        let pseudo = checksum::pseudo_header(src, dst, ipv4::protocol::TCP, len);
        checksum::combine(&[pseudo, checksum::data(data)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, seq);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, ack);
    }

    /// Sets the header length in bytes (a multiple of 4 from 20 to 60), keeping the flags.
    #[inline]
    pub fn set_header_len(&mut self, header_len: u8) {
        let data = self.buffer.as_mut();
        data[field::FLAGS.start] = ((header_len / 4) << 4) | (data[field::FLAGS.start] & 0x0f);
    }

    /// Sets the control bits, keeping the header length.
    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        let data = self.buffer.as_mut();
        let value = (read_u16(data, field::FLAGS) & 0xfe00) | (flags.0 & 0x01ff);
        write_u16(data, field::FLAGS, value);
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window_len(&mut self, window: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, window);
    }

    /// Sets the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, urgent: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, urgent);
    }

    /// Computes the checksum over the pseudo header and the whole buffer and stores it.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        // Segments longer than 65535 bytes do not fit an IPv4 packet; saturate rather than panic.
        let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
        let pseudo = checksum::pseudo_header(src, dst, ipv4::protocol::TCP, len);
        let sum = checksum::combine(&[pseudo, checksum::data(data)]);
        self.set_checksum(!sum);
    }

    /// Options, mutably.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        super::clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }

    /// Data after the header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        super::clamped_mut(self.buffer.as_mut(), start, usize::MAX)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpSegment<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AsMut<[u8]> for TcpSegment<T> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    #[test]
    fn round_trip() {
        let mut bytes = [0u8; 27];
        let mut segment = TcpSegment::new_unchecked(&mut bytes[..]);
        segment.set_header_len(24);
        segment.set_src_port(40000);
        segment.set_dst_port(80);
        segment.set_seq_number(0x0102_0304);
        segment.set_ack_number(0x0a0b_0c0d);
        segment.set_flags(TcpFlags::SYN | TcpFlags::ACK);
        segment.set_window_len(29200);
        segment.set_urgent_at(7);
        segment.options_mut().copy_from_slice(&[2, 4, 5, 0xb4]);
        segment.payload_mut().copy_from_slice(b"abc");
        segment.fill_checksum(SRC, DST);

        let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
        assert_eq!(segment.src_port(), 40000);
        assert_eq!(segment.dst_port(), 80);
        assert_eq!(segment.seq_number(), 0x0102_0304);
        assert_eq!(segment.ack_number(), 0x0a0b_0c0d);
        assert_eq!(segment.header_len(), 24);
        assert!(segment.syn() && segment.ack() && !segment.fin() && !segment.rst());
        assert_eq!(segment.flags(), TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(segment.window_len(), 29200);
        assert_eq!(segment.urgent_at(), 7);
        assert_eq!(segment.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(segment.payload(), b"abc");
        assert!(segment.verify_checksum(SRC, DST));
        assert!(!segment.verify_checksum(SRC, Ipv4Addr::new(192, 0, 2, 11)));
    }

    #[test]
    fn flags_keep_header_len() {
        let mut bytes = [0u8; 20];
        let mut segment = TcpSegment::new_unchecked(&mut bytes[..]);
        segment.set_header_len(20);
        segment.set_flags(TcpFlags::FIN | TcpFlags::RST | TcpFlags::PSH);
        assert_eq!(segment.header_len(), 20);
        assert!(segment.fin() && segment.rst() && !segment.syn());
        segment.set_header_len(20);
        assert!(segment.fin() && segment.rst());
    }

    #[test]
    fn checked_errors() {
        let mut bytes = [0u8; 24];
        assert_eq!(
            TcpSegment::new_checked(&bytes[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            TcpSegment::new_checked(&bytes[..]).unwrap_err(),
            Error::Malformed
        ); // offset 0
        TcpSegment::new_unchecked(&mut bytes[..]).set_header_len(28);
        assert_eq!(
            TcpSegment::new_checked(&bytes[..]).unwrap_err(),
            Error::Truncated
        );
        TcpSegment::new_unchecked(&mut bytes[..]).set_header_len(24);
        assert!(TcpSegment::new_checked(&bytes[..])
            .unwrap()
            .payload()
            .is_empty());
    }
}
