//! Zero-copy views over the headers the director reads and rewrites, after smoltcp's `wire`.
//!
//! Each view wraps a byte buffer: `EthernetFrame<T: AsRef<[u8]>>`, [`Ipv4Packet`],
//! [`TcpSegment`], [`UdpDatagram`], [`Icmpv4Packet`] and the datagram an ICMP error quotes,
//! [`IcmpQuote`]; for IPv6 [`Ipv6Packet`], [`Icmpv6Packet`] and [`Ipv6Quote`]. Field offsets live in a private `mod field` per view; getters
//! need `AsRef<[u8]>`, setters `AsMut<[u8]>`. `new_checked` validates lengths once, after which no
//! getter, setter or payload accessor can panic (payload accessors clamp to the buffer even if a
//! setter later wrote an inconsistent length). Multi-byte fields are read with `from_be_bytes`,
//! never through pointer casts, so alignment never matters.
//!
//! [`checksum`] holds the Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! What this layer must not do: allocate, decide policy (whether IPv4 options or fragments are
//! acceptable is the pipeline's call), or know about services and connections.

pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

use std::fmt;
use std::ops::Range;

pub use ethernet::{EtherType, EthernetFrame, MacAddr};
pub use icmp::{IcmpQuote, Icmpv4Packet};
pub use icmpv6::{Icmpv6Packet, Ipv6Quote};
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::{TcpFlags, TcpSegment};
pub use udp::UdpDatagram;

/// Why a buffer is not a readable header. Deliberately coarse and `Copy`: the pipeline maps it to
/// a drop reason and counts it, nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header, a length field is shorter than the header it
    /// covers, or the buffer is shorter than a length field declares.
    Truncated,
    /// A field the format fixes has another value: IPv4 version != 4, IHL < 5, TCP data
    /// offset < 5.
    Malformed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated header",
            Error::Malformed => "malformed header",
        })
    }
}

impl std::error::Error for Error {}

/// A byte range of a header field.
type Field = Range<usize>;

/// Reads a big-endian u16 at `field.start`. Callers guarantee the bounds (checked views).
/// Always inlined: with the field a constant, it is one bounds check the view's length check
/// usually removes, and a load; as a call it costs more than it does.
#[inline(always)]
fn read_u16(data: &[u8], field: Field) -> u16 {
    let at = field.start;
    match data.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => out_of_bounds(at),
    }
}

/// Reads a big-endian u32 at `field.start`.
#[inline(always)]
fn read_u32(data: &[u8], field: Field) -> u32 {
    let at = field.start;
    match data.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => out_of_bounds(at),
    }
}

/// A read past a checked view's end: a bug in the view, never the frame's fault. Kept out of
/// line so the readers stay small.
#[cold]
#[inline(never)]
fn out_of_bounds(at: usize) -> ! {
    panic!("header field at byte {at} read outside its checked view")
}

/// Writes a big-endian u16 at `field.start`.
#[inline]
fn write_u16(data: &mut [u8], field: Field, value: u16) {
    data[field.start..field.start + 2].copy_from_slice(&value.to_be_bytes());
}

/// Writes a big-endian u32 at `field.start`.
#[inline]
fn write_u32(data: &mut [u8], field: Field, value: u32) {
    data[field.start..field.start + 4].copy_from_slice(&value.to_be_bytes());
}

/// `data[start..end]` clamped to the buffer, so a payload accessor cannot panic even if a
/// setter wrote a length field that disagrees with the buffer.
#[inline]
fn clamped(data: &[u8], start: usize, end: usize) -> &[u8] {
    let end = end.min(data.len());
    &data[start.min(end)..end]
}

/// Mutable [`clamped`].
#[inline]
fn clamped_mut(data: &mut [u8], start: usize, end: usize) -> &mut [u8] {
    let end = end.min(data.len());
    &mut data[start.min(end)..end]
}
