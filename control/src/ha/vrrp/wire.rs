//! VRRPv3 advertisements for IPv4 (RFC 5798 section 5) and the gratuitous ARP announcements a
//! new master sends: a zero-copy view of the VRRP message, its parsed form, and the whole IPv4
//! datagram as the raw socket sends and receives it.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IPv4 Address(es)                        |
//! ```
//!
//! [`parse_datagram`] applies RFC 5798 section 7.1's checks that need nothing but the packet
//! (TTL 255, version 3, a whole message, the checksum over the IPv4 pseudo-header); whether the
//! VRID is ours is the caller's business. It must not decide anything about the state machine.

use std::net::{IpAddr, Ipv4Addr};

use dataplane::wire::{checksum, ipv4, EtherType, Ipv4Packet};

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The IPv4 multicast group advertisements are sent to (RFC 5798 5.1.1.2).
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only TTL an advertisement may carry, so that it cannot have crossed a router (5.1.1.3).
pub const TTL: u8 = 255;
/// The VRRP version this module speaks.
pub const VERSION: u8 = 3;
/// The only VRRPv3 message type: ADVERTISEMENT (5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of the fixed part of the message.
pub const HEADER_LEN: usize = field::ADDRESSES;
/// Most addresses one advertisement carries (the count is 8 bits).
pub const MAX_ADDRESSES: usize = 255;
/// Largest Max Adver Int, in centiseconds (12 bits).
pub const MAX_ADVERT_INTERVAL: u16 = 0x0fff;
/// IPv4 TOS of our advertisements: precedence 6, "internetwork control", as keepalived sends.
pub const TOS: u8 = 0xc0;

mod field {
    use std::ops::Range;

    pub const VERSION_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const MAX_ADVERT_INTERVAL: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const ADDRESSES: usize = 8;
}

/// Why a buffer is not a VRRP message the view can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

/// A view of a VRRP message (the IP payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VrrpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VrrpPacket<T> {
    /// Wraps a buffer without checking it; getters panic if it is shorter than the fixed part
    /// plus the addresses its count announces. For buffers being filled in.
    pub const fn new_unchecked(buffer: T) -> Self {
        VrrpPacket { buffer }
    }

    /// Wraps a buffer holding the fixed part and every IPv4 address the count announces.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        Self::new_checked_with(buffer, 4)
    }

    /// Wraps a buffer holding the fixed part and every address the count announces, each
    /// `address_len` bytes (4 for IPv4, 16 for IPv6).
    pub fn new_checked_with(buffer: T, address_len: usize) -> Result<Self, Truncated> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + address_len * usize::from(packet.address_count())
        {
            return Err(Truncated);
        }
        Ok(packet)
    }

    /// The bytes after the fixed part: the addresses, then anything a sender padded with.
    pub fn address_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRESSES..]
    }

    /// Version (the high nibble of the first byte).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TYPE] >> 4
    }

    /// Message type (the low nibble of the first byte).
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TYPE] & 0x0f
    }

    /// Virtual router ID.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// The sender's priority: 255 owns the addresses, 0 is a master resigning.
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// How many IPv4 addresses follow the fixed part.
    pub fn address_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// Max Adver Int in centiseconds (the low 12 bits; the reserved high 4 are ignored, 5.2.6).
    pub fn max_advert_interval(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::MAX_ADVERT_INTERVAL.start) & MAX_ADVERT_INTERVAL
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The addresses, in packet order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let count = usize::from(self.address_count());
        self.buffer.as_ref()[field::ADDRESSES..field::ADDRESSES + 4 * count]
            .chunks_exact(4)
            .map(|octets| Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
    }

    /// Whether the checksum over the IPv4 pseudo-header (`src`, `dst`, protocol 112, the
    /// message's length) and the whole message is right (5.2.8).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let message = self.buffer.as_ref();
        let Ok(length) = u16::try_from(message.len()) else {
            return false;
        };
        let sum = checksum::combine(&[
            checksum::pseudo_header(src, dst, PROTOCOL, length),
            checksum::data(message),
        ]);
        sum == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VrrpPacket<T> {
    /// Sets version and type.
    pub fn set_version_and_kind(&mut self, version: u8, kind: u8) {
        self.buffer.as_mut()[field::VERSION_TYPE] = (version << 4) | (kind & 0x0f);
    }

    /// Sets the virtual router ID.
    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    /// Sets the priority.
    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    /// Sets the address count.
    pub fn set_address_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    /// Sets Max Adver Int (centiseconds, 12 bits) with the reserved bits zero.
    pub fn set_max_advert_interval(&mut self, centiseconds: u16) {
        write_u16(
            self.buffer.as_mut(),
            field::MAX_ADVERT_INTERVAL.start,
            centiseconds & MAX_ADVERT_INTERVAL,
        );
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets address `index` (0-based).
    pub fn set_address(&mut self, index: usize, address: Ipv4Addr) {
        let start = field::ADDRESSES + 4 * index;
        self.buffer.as_mut()[start..start + 4].copy_from_slice(&address.octets());
    }

    /// Computes and writes the checksum for a datagram from `src` to `dst`.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let message = self.buffer.as_ref();
        let length = u16::try_from(message.len()).unwrap_or(u16::MAX);
        let sum = checksum::combine(&[
            checksum::pseudo_header(src, dst, PROTOCOL, length),
            checksum::data(message),
        ]);
        self.set_checksum(!sum);
    }
}

/// An advertisement's content: IPv4 addresses by default, `Ipv6Addr` for IPv6 ([`super::wire6`]),
/// `IpAddr` where either family's is handled alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement<A = Ipv4Addr> {
    /// Virtual router ID.
    pub vrid: u8,
    /// The sender's priority.
    pub priority: u8,
    /// Max Adver Int in centiseconds, 1..=4095.
    pub max_advert_interval: u16,
    /// The virtual router's addresses (at most [`MAX_ADDRESSES`]).
    pub addresses: Vec<A>,
}

impl<A: Into<IpAddr>> Advertisement<A> {
    /// The same advertisement with its addresses as `IpAddr`.
    pub fn into_ip(self) -> Advertisement<IpAddr> {
        Advertisement {
            vrid: self.vrid,
            priority: self.priority,
            max_advert_interval: self.max_advert_interval,
            addresses: self.addresses.into_iter().map(Into::into).collect(),
        }
    }
}

impl Advertisement<Ipv4Addr> {
    /// Length of the VRRP message.
    pub fn message_len(&self) -> usize {
        HEADER_LEN + 4 * self.addresses.len().min(MAX_ADDRESSES)
    }

    /// Writes the message into `buffer` (exactly [`Advertisement::message_len`] bytes) with the
    /// checksum for a datagram from `src` to `dst`. Addresses past [`MAX_ADDRESSES`] are left
    /// out; callers refuse such lists before they get here.
    pub fn emit(&self, buffer: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
        let count = self.addresses.len().min(MAX_ADDRESSES);
        let mut packet = VrrpPacket::new_unchecked(buffer);
        packet.set_version_and_kind(VERSION, TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_address_count(count as u8);
        packet.set_max_advert_interval(self.max_advert_interval);
        for (index, &address) in self.addresses.iter().take(count).enumerate() {
            packet.set_address(index, address);
        }
        packet.fill_checksum(src, dst);
    }

    /// The whole IPv4 datagram for a raw socket with `IP_HDRINCL`: TOS 0xc0, TTL 255, protocol
    /// 112, no options, identification 0 (the kernel picks one) and the header checksum filled
    /// (the kernel rewrites it anyway).
    pub fn to_datagram(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let total = ipv4::HEADER_LEN + self.message_len();
        let mut datagram = vec![0u8; total];
        let mut ip = Ipv4Packet::new_unchecked(&mut datagram[..]);
        ip.set_version_and_header_len(4, ipv4::HEADER_LEN as u8);
        ip.set_tos(TOS);
        ip.set_total_len(total as u16);
        ip.set_ident(0);
        ip.set_fragment(false, false, 0);
        ip.set_ttl(TTL);
        ip.set_protocol(PROTOCOL);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
        self.emit(&mut datagram[ipv4::HEADER_LEN..], src, dst);
        datagram
    }
}

/// Why a received datagram was discarded (RFC 5798 7.1). Each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Discard {
    /// Not a whole IPv4 header, or a VRRP message shorter than its fixed part plus the
    /// addresses its count announces.
    Truncated,
    /// The IPv4 header is not one, or the protocol is not 112.
    NotVrrp,
    /// TTL other than 255: it may have come from beyond this segment.
    BadTtl(u8),
    /// Version other than 3 (keepalived's default `vrrp_version 2` sends 2).
    BadVersion(u8),
    /// Type other than ADVERTISEMENT.
    BadType(u8),
    /// The checksum does not match.
    BadChecksum,
    /// Max Adver Int of 0, which would make the master-down interval 0.
    ZeroInterval,
}

impl Discard {
    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Discard::Truncated => "truncated",
            Discard::NotVrrp => "not VRRP",
            Discard::BadTtl(_) => "TTL is not 255",
            Discard::BadVersion(_) => "version is not 3",
            Discard::BadType(_) => "type is not ADVERTISEMENT",
            Discard::BadChecksum => "bad checksum",
            Discard::ZeroInterval => "advertisement interval 0",
        }
    }
}

/// A valid advertisement and who sent it to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received<A = Ipv4Addr> {
    /// IP source: the sender's primary address (IPv6: its link-local one), its tie-breaker.
    pub source: A,
    /// IP destination: the multicast group or our address.
    pub destination: A,
    /// The advertisement.
    pub advert: Advertisement<A>,
}

impl<A: Into<IpAddr>> Received<A> {
    /// The same datagram with its addresses as `IpAddr`.
    pub fn into_ip(self) -> Received<IpAddr> {
        Received {
            source: self.source.into(),
            destination: self.destination.into(),
            advert: self.advert.into_ip(),
        }
    }
}

/// Parses a datagram as a raw IPv4 socket delivers it (IP header included) and applies the
/// packet-only checks of RFC 5798 7.1, in its order: TTL, version, length, checksum. The VRRP
/// message is the IP payload; bytes after the announced addresses are covered by the checksum
/// and otherwise ignored.
pub fn parse_datagram(bytes: &[u8]) -> Result<Received, Discard> {
    let ip = Ipv4Packet::new_checked(bytes).map_err(|error| match error {
        dataplane::wire::Error::Truncated => Discard::Truncated,
        dataplane::wire::Error::Malformed => Discard::NotVrrp,
    })?;
    if ip.protocol() != PROTOCOL {
        return Err(Discard::NotVrrp);
    }
    if ip.ttl() != TTL {
        return Err(Discard::BadTtl(ip.ttl()));
    }
    let message = ip.payload();
    let Some(&first) = message.first() else {
        return Err(Discard::Truncated);
    };
    if first >> 4 != VERSION {
        return Err(Discard::BadVersion(first >> 4));
    }
    let packet = VrrpPacket::new_checked(message).map_err(|Truncated| Discard::Truncated)?;
    if !packet.verify_checksum(ip.src_addr(), ip.dst_addr()) {
        return Err(Discard::BadChecksum);
    }
    if packet.kind() != TYPE_ADVERTISEMENT {
        return Err(Discard::BadType(packet.kind()));
    }
    if packet.max_advert_interval() == 0 {
        return Err(Discard::ZeroInterval);
    }
    Ok(Received {
        source: ip.src_addr(),
        destination: ip.dst_addr(),
        advert: Advertisement {
            vrid: packet.vrid(),
            priority: packet.priority(),
            max_advert_interval: packet.max_advert_interval(),
            addresses: packet.addresses().collect(),
        },
    })
}

/// Length of a gratuitous ARP frame (Ethernet header and ARP payload, no padding).
pub const GRATUITOUS_ARP_LEN: usize = 42;

/// A gratuitous ARP request announcing that `address` is at `mac`: broadcast, sender and target
/// protocol address both `address`, target hardware address zero, as RFC 5227 2.3's ARP
/// Announcement (RFC 5798 6.4.2 asks a new master for "a gratuitous ARP request"). Hosts that
/// have `address` in their cache replace its MAC.
pub fn gratuitous_arp(mac: [u8; 6], address: Ipv4Addr) -> [u8; GRATUITOUS_ARP_LEN] {
    let mut frame = [0u8; GRATUITOUS_ARP_LEN];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&EtherType::ARP.0.to_be_bytes());
    let arp = &mut frame[14..];
    arp[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    arp[2..4].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
    arp[4] = 6; // hardware address length
    arp[5] = 4; // protocol address length
    arp[6..8].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    arp[8..14].copy_from_slice(&mac);
    arp[14..18].copy_from_slice(&address.octets());
    // Target hardware address stays zero.
    arp[24..28].copy_from_slice(&address.octets());
    frame
}

fn read_u16(data: &[u8], start: usize) -> u16 {
    u16::from_be_bytes([data[start], data[start + 1]])
}

fn write_u16(data: &mut [u8], start: usize, value: u16) {
    data[start..start + 2].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    fn advert(priority: u8, addresses: &[Ipv4Addr]) -> Advertisement {
        Advertisement {
            vrid: 51,
            priority,
            max_advert_interval: 10,
            addresses: addresses.to_vec(),
        }
    }

    /// The RFC 5798 5.1 layout written out by hand: VRID 51, priority 150, one address,
    /// 10 centiseconds, from 192.0.2.3 to 224.0.0.18. The checksum was worked out on paper:
    /// pseudo-header words c000 0203 e000 0012 0070 000c, message words 3133 9601 000a 0000
    /// c000 020a; their ones' complement sum is 0x2bdc (0x32bd9 with the carry folded back), so
    /// the checksum is its complement, 0xd423.
    const GOLDEN: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, // version 4, IHL 5, TOS 0xc0, total length 32
        0x00, 0x00, 0x00, 0x00, // identification 0 (the kernel fills it), no flags
        0xff, 0x70, 0x00, 0x00, // TTL 255, protocol 112, header checksum (below)
        0xc0, 0x00, 0x02, 0x03, // 192.0.2.3
        0xe0, 0x00, 0x00, 0x12, // 224.0.0.18
        0x31, 0x33, 0x96, 0x01, // version 3, type 1, VRID 51, priority 150, 1 address
        0x00, 0x0a, 0xd4, 0x23, // Max Adver Int 10 cs, checksum
        0xc0, 0x00, 0x02, 0x0a, // 192.0.2.10
    ];

    #[test]
    fn emits_the_rfc_layout() {
        let datagram = advert(150, &[VIP]).to_datagram(SOURCE, MULTICAST_GROUP);
        let mut expected = GOLDEN;
        let mut header = Ipv4Packet::new_unchecked(&mut expected[..]);
        header.fill_checksum();
        assert_eq!(datagram, expected);
    }

    #[test]
    fn parses_the_rfc_layout() {
        let received = parse_datagram(&GOLDEN).unwrap();
        assert_eq!(received.source, SOURCE);
        assert_eq!(received.destination, MULTICAST_GROUP);
        assert_eq!(received.advert, advert(150, &[VIP]));
    }

    /// An advertisement keepalived 2.2.7 sent in a namespace (`vrrp_version 3`, VRID 51,
    /// priority 100, `advert_int 0.1`, virtual addresses 192.0.2.10 and 192.0.2.20, from
    /// 192.0.2.252), captured with `tcpdump -xx`; the Ethernet header is left out.
    const KEEPALIVED: [u8; 36] = [
        0x45, 0xc0, 0x00, 0x24, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x17, 0x9a, 0xc0, 0x00, 0x02,
        0xfc, 0xe0, 0x00, 0x00, 0x12, 0x31, 0x33, 0x64, 0x02, 0x00, 0x0a, 0x43, 0x11, 0xc0, 0x00,
        0x02, 0x0a, 0xc0, 0x00, 0x02, 0x14,
    ];

    #[test]
    fn parses_keepalived_and_emits_the_same_message() {
        let received = parse_datagram(&KEEPALIVED).unwrap();
        let vips = [VIP, Ipv4Addr::new(192, 0, 2, 20)];
        assert_eq!(received.source, Ipv4Addr::new(192, 0, 2, 252));
        assert_eq!(received.advert, advert(100, &vips));
        let ours = advert(100, &vips).to_datagram(received.source, MULTICAST_GROUP);
        // Only the identification (keepalived counts, we leave it to the kernel) and so the
        // header checksum differ; the VRRP message, checksum included, is keepalived's byte
        // for byte.
        assert_eq!(ours[20..], KEEPALIVED[20..]);
        assert_eq!(ours[..4], KEEPALIVED[..4]);
        assert_eq!(ours[6..10], KEEPALIVED[6..10]);
        assert_eq!(ours[12..20], KEEPALIVED[12..20]);
    }

    #[test]
    fn checksum_covers_the_pseudo_header() {
        let message = &GOLDEN[20..];
        let packet = VrrpPacket::new_checked(message).unwrap();
        assert!(packet.verify_checksum(SOURCE, MULTICAST_GROUP));
        // A unicast advertisement's checksum is over its own destination (RFC 5798 5.2.8).
        assert!(!packet.verify_checksum(SOURCE, Ipv4Addr::new(192, 0, 2, 4)));
        assert!(!packet.verify_checksum(Ipv4Addr::new(192, 0, 2, 4), MULTICAST_GROUP));
        let unicast = advert(150, &[VIP]).to_datagram(SOURCE, Ipv4Addr::new(192, 0, 2, 4));
        assert_eq!(
            parse_datagram(&unicast).unwrap().advert,
            advert(150, &[VIP])
        );
    }

    #[test]
    fn round_trips_any_address_count() {
        for count in [1usize, 2, 17, MAX_ADDRESSES] {
            let addresses: Vec<Ipv4Addr> = (0..count)
                .map(|i| Ipv4Addr::from(0xc633_6400 + i as u32))
                .collect();
            let sent = Advertisement {
                vrid: 255,
                priority: 0,
                max_advert_interval: MAX_ADVERT_INTERVAL,
                addresses,
            };
            let datagram = sent.to_datagram(SOURCE, MULTICAST_GROUP);
            assert_eq!(datagram.len(), 20 + 8 + 4 * count);
            assert_eq!(parse_datagram(&datagram).unwrap().advert, sent);
        }
    }

    #[test]
    fn reserved_interval_bits_are_ignored() {
        let mut datagram = GOLDEN;
        datagram[24] |= 0xf0;
        let mut vrrp = VrrpPacket::new_unchecked(&mut datagram[20..]);
        vrrp.fill_checksum(SOURCE, MULTICAST_GROUP);
        assert_eq!(
            parse_datagram(&datagram)
                .unwrap()
                .advert
                .max_advert_interval,
            10
        );
    }

    /// GOLDEN with `change` applied to the VRRP message and the checksum made right again, so
    /// that only the changed field is wrong.
    fn golden_with(change: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut datagram = GOLDEN.to_vec();
        change(&mut datagram[20..]);
        VrrpPacket::new_unchecked(&mut datagram[20..]).fill_checksum(SOURCE, MULTICAST_GROUP);
        datagram
    }

    #[test]
    fn rejects_what_rfc_5798_7_1_rejects() {
        let mut bad_ttl = GOLDEN;
        bad_ttl[8] = 254;
        assert_eq!(parse_datagram(&bad_ttl), Err(Discard::BadTtl(254)));
        let mut bad_checksum = GOLDEN;
        bad_checksum[27] ^= 1;
        assert_eq!(parse_datagram(&bad_checksum), Err(Discard::BadChecksum));
        // A flipped address bit is caught by the checksum too.
        let mut bad_address = GOLDEN;
        bad_address[31] ^= 1;
        assert_eq!(parse_datagram(&bad_address), Err(Discard::BadChecksum));
        let version2 = golden_with(|vrrp| vrrp[0] = 0x21);
        assert_eq!(parse_datagram(&version2), Err(Discard::BadVersion(2)));
        let other_type = golden_with(|vrrp| vrrp[0] = 0x32);
        assert_eq!(parse_datagram(&other_type), Err(Discard::BadType(2)));
        let zero_interval = golden_with(|vrrp| vrrp[5] = 0);
        assert_eq!(parse_datagram(&zero_interval), Err(Discard::ZeroInterval));
    }

    #[test]
    fn rejects_short_and_foreign_packets() {
        for len in 0..GOLDEN.len() {
            let mut short = GOLDEN[..len].to_vec();
            if len >= 20 {
                // Keep the IP header consistent so the VRRP length check is what fails.
                let total = len as u16;
                Ipv4Packet::new_unchecked(&mut short[..]).set_total_len(total);
            }
            assert_eq!(
                parse_datagram(&short),
                Err(Discard::Truncated),
                "{len} bytes"
            );
        }
        // The count announces two addresses, the packet holds one.
        let overcounted = golden_with(|vrrp| vrrp[3] = 2);
        assert_eq!(parse_datagram(&overcounted), Err(Discard::Truncated));
        let mut udp = GOLDEN;
        udp[9] = 17;
        assert_eq!(parse_datagram(&udp), Err(Discard::NotVrrp));
        let mut ipv6ish = GOLDEN;
        ipv6ish[0] = 0x65;
        assert_eq!(parse_datagram(&ipv6ish), Err(Discard::NotVrrp));
    }

    #[test]
    fn trailing_bytes_are_covered_by_the_checksum() {
        // A sender that pads its message sums the padding too; the padding is not an address.
        let mut datagram = GOLDEN.to_vec();
        datagram.extend_from_slice(&[0, 0, 0, 0]);
        Ipv4Packet::new_unchecked(&mut datagram[..]).set_total_len(36);
        VrrpPacket::new_unchecked(&mut datagram[20..]).fill_checksum(SOURCE, MULTICAST_GROUP);
        assert_eq!(parse_datagram(&datagram).unwrap().advert.addresses, [VIP]);
    }

    #[test]
    fn gratuitous_arp_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x03];
        let frame = gratuitous_arp(mac, VIP);
        let expected: [u8; GRATUITOUS_ARP_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
            0x02, 0x00, 0x00, 0x00, 0x00, 0x03, // from our MAC
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
            0x00, 0x01, // request
            0x02, 0x00, 0x00, 0x00, 0x00, 0x03, 0xc0, 0x00, 0x02, 0x0a, // sender: MAC, VIP
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x0a, // target: zero, VIP
        ];
        assert_eq!(frame, expected);
    }
}
