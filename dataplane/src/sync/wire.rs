//! State sync's bytes on the wire, all of them: the datagram directors exchange and the
//! records it carries, 24 bytes for an all-IPv4 entry and 64 for one with an IPv6 address.
//!
//! The workers push and pop [`SyncRecord`]s, plain in-memory structs, through the lock-free
//! queues ([`super`]); they never see bytes. Control's sync daemon (`control::ha::sync`) turns
//! records into datagrams and back with this module, and nothing else in the workspace encodes
//! or decodes them. The format lives here, in the data plane, rather than in control because
//! control depends on the data plane and not the other way round: the data plane's own tests
//! feed imports from record bytes (`tests/never_panic.rs`), and both crates can reach this
//! module, so one copy serves both.
//!
//! # Datagram format (versions 1 and 2, big-endian)
//!
//! ```text
//!  0      4        5        6          8         10         12          16
//!  | magic | version | sync id | records | length | reserved | sequence |
//!  | "DSYN"|  1 or 2 |  0-255  |  count  | total  |    0     |  u32     |  records
//! ```
//!
//! `length` is the whole datagram's: 16 plus the lengths of its records. `sequence` counts a
//! sender's datagrams, so a receiver can count the ones lost between two it got
//! (`datagrams_lost`). These datagrams are not authenticated (nor are IPVS's). With
//! `[ha] sync_key`, control's `ha::sync::auth` sets bit 0x80 of the version (so this parser
//! refuses the datagram by its version) and appends a sequence number and an HMAC-SHA256 tag;
//! a receiver with the key checks them, clears the bit and hands this parser the datagram as
//! above.
//!
//! - **Version 1** carries only 24-byte records ([`RECORD_LEN`], kinds 1 and 2): `length` must
//!   be 16 + 24 x `records`, and a record of an unknown kind spoils only itself. A datagram of
//!   IPv4 entries alone is still sent as version 1, byte for byte what directors without IPv6
//!   sent, so they keep understanding an IPv4-only cluster during an upgrade.
//! - **Version 2** mixes 24-byte records with 64-byte ones ([`RECORD6_LEN`], kinds 3 and 4),
//!   each record's length given by its kind. Before any record is decoded, the receiver walks
//!   the kinds: an unknown kind (whose length it cannot know), a walk that does not end exactly
//!   at `length`, or a count that disagrees rejects the whole datagram. A director that reads
//!   only version 1 rejects it by its version (counted, never misread), as IPVS's sync v0
//!   readers refuse v1. IPVS's own v1 format likewise gives IPv6 entries longer records in the
//!   same message (`struct ip_vs_sync_v6`).
//!
//! # Record formats (big-endian)
//!
//! An entry whose addresses are all IPv4 (kinds 1 and 2, 24 bytes):
//!
//! ```text
//!  0      1          2            3       4        8     12        16
//!  | kind | protocol | forwarding | state | client | VIP | backend |
//!  16            18         20             22         24
//!  | client port | VIP port | backend port | reserved |
//! ```
//!
//! An entry with any IPv6 address (kinds 3 and 4, 64 bytes): an IPv6 service, or an IPv4
//! service tunnelled to an IPv6 real server (IPv4-in-IPv6 TUN, RFC 2473):
//!
//! ```text
//!  0      1          2            3       4          5          8
//!  | kind | protocol | forwarding | state | families | reserved |
//!  8        24    40        56            58         60             62         64
//!  | client | VIP | backend | client port | VIP port | backend port | reserved |
//! ```
//!
//! `kind` is 1 (or 3) for a connection, 2 (or 4) for a persistence template (masked client, no
//! client port, forwarding and state 0). `families` says which 16-byte fields hold IPv6
//! addresses: bit 0 the client and the VIP (one flow, one family), bit 1 the backend; a field
//! holding IPv4 carries it IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 section 2.5.5.2). The byte
//! ranges are the private `field` and `field6` modules'. Codes, family bits and mapped
//! addresses are validated on receipt; the reserved bytes are sent as 0 and ignored.
//!
//! What this module must not do: panic on any bytes [`Datagram::parse`] or
//! [`SyncRecord::decode`] is given, or read a record before the datagram's lengths are checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use super::{ConnectionRecord, SyncRecord, TemplateRecord};
use crate::conntrack::{ConnState, FlowKey};
use crate::service::{Forwarding, Protocol, ServiceKey};

/// Length of an all-IPv4 record (kinds 1 and 2) on the wire.
pub const RECORD_LEN: usize = 24;
/// Length of a record with an IPv6 address (kinds 3 and 4) on the wire.
pub const RECORD6_LEN: usize = 64;
/// The longest record: the buffer [`SyncRecord::encode`] writes into.
pub const MAX_RECORD_LEN: usize = RECORD6_LEN;

/// First bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"DSYN";
/// The version of a datagram of 24-byte records only; still written for IPv4-only batches.
pub const VERSION: u8 = 1;
/// The version of a datagram that mixes record lengths.
pub const VERSION_MIXED: u8 = 2;
/// Length of the datagram header.
pub const HEADER_LEN: usize = 16;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM_LEN: usize = 65_507;
/// Most 24-byte records in one datagram.
pub const MAX_RECORDS: usize = (MAX_DATAGRAM_LEN - HEADER_LEN) / RECORD_LEN;
/// IPv4 and UDP headers, taken from the MTU to size datagrams.
const IP_UDP_HEADERS: usize = 20 + 8;

/// Why bytes are not a record. Small and `Copy`, as the `wire` errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the record's kind needs (24 or 64).
    #[error("a sync record of this kind needs more bytes")]
    Truncated,
    /// Not a connection (1, 3) nor a template (2, 4).
    #[error("unknown sync record kind {0}")]
    Kind(u8),
    /// Neither TCP (6) nor UDP (17).
    #[error("unsupported protocol {0} in a sync record")]
    Protocol(u8),
    /// Not a forwarding method code (0 DR, 1 NAT, 2 TUN).
    #[error("unknown forwarding method {0} in a sync record")]
    Forwarding(u8),
    /// Not a state code, or a state the protocol cannot be in (UDP is only ever `Udp`).
    #[error("invalid connection state {0} in a sync record")]
    State(u8),
    /// A `families` byte with bits other than 0 and 1 set.
    #[error("invalid address families {0:#04x} in a sync record")]
    Families(u8),
    /// A 16-byte field the `families` byte calls IPv4 that is not IPv4-mapped.
    #[error("an IPv4 address in a 64-byte sync record is not IPv4-mapped")]
    Unmapped,
}

/// Byte ranges of a 24-byte record (big-endian, as on every wire).
mod field {
    use std::ops::Range;

    /// 1 connection, 2 template.
    pub const KIND: usize = 0;
    /// IP protocol number.
    pub const PROTOCOL: usize = 1;
    /// 0 DR, 1 NAT, 2 TUN (connections; 0 in templates).
    pub const FORWARDING: usize = 2;
    /// [`crate::conntrack::ConnState`] in list order (connections; 0 in templates).
    pub const STATE: usize = 3;
    /// Client address (templates: masked).
    pub const CLIENT_ADDR: Range<usize> = 4..8;
    pub const VIP: Range<usize> = 8..12;
    pub const BACKEND_ADDR: Range<usize> = 12..16;
    /// Client port (templates: 0).
    pub const CLIENT_PORT: Range<usize> = 16..18;
    pub const VIP_PORT: Range<usize> = 18..20;
    pub const BACKEND_PORT: Range<usize> = 20..22;
    /// Reserved: sent as 0, ignored on receipt (room for flags without a new version).
    pub const RESERVED: Range<usize> = 22..24;
}

/// Byte ranges of a 64-byte record: the 24-byte one's first four bytes, then the families and
/// 16-byte addresses.
mod field6 {
    use std::ops::Range;

    /// Bit 0: client and VIP are IPv6; bit 1: the backend is.
    pub const FAMILIES: usize = 4;
    /// Reserved: sent as 0, ignored on receipt.
    pub const RESERVED: Range<usize> = 5..8;
    pub const CLIENT_ADDR: Range<usize> = 8..24;
    pub const VIP: Range<usize> = 24..40;
    pub const BACKEND_ADDR: Range<usize> = 40..56;
    pub const CLIENT_PORT: Range<usize> = 56..58;
    pub const VIP_PORT: Range<usize> = 58..60;
    pub const BACKEND_PORT: Range<usize> = 60..62;
    /// Reserved: sent as 0, ignored on receipt.
    pub const TAIL: Range<usize> = 62..64;
}

const KIND_CONNECTION: u8 = 1;
const KIND_TEMPLATE: u8 = 2;
const KIND_CONNECTION6: u8 = 3;
const KIND_TEMPLATE6: u8 = 4;

/// `families` bit: the client and the VIP are IPv6.
const FLOW_IPV6: u8 = 0b01;
/// `families` bit: the backend is IPv6.
const BACKEND_IPV6: u8 = 0b10;

/// The length of a record of `kind`, if it is one.
const fn kind_len(kind: u8) -> Option<usize> {
    match kind {
        KIND_CONNECTION | KIND_TEMPLATE => Some(RECORD_LEN),
        KIND_CONNECTION6 | KIND_TEMPLATE6 => Some(RECORD6_LEN),
        _ => None,
    }
}

/// A record's fields before they are laid out: one shape for both lengths.
struct Fields {
    connection: bool,
    protocol: Protocol,
    forwarding: u8,
    state: u8,
    client: SocketAddr,
    vip: SocketAddr,
    backend: SocketAddr,
}

impl SyncRecord {
    /// Bytes this record takes on the wire: [`RECORD_LEN`] if all its addresses are IPv4,
    /// else [`RECORD6_LEN`].
    pub fn wire_len(&self) -> usize {
        let fields = self.fields();
        if [fields.client, fields.vip, fields.backend]
            .iter()
            .all(SocketAddr::is_ipv4)
        {
            RECORD_LEN
        } else {
            RECORD6_LEN
        }
    }

    fn fields(&self) -> Fields {
        match self {
            SyncRecord::Connection(record) => Fields {
                connection: true,
                protocol: record.key.protocol,
                forwarding: forwarding_code(record.forwarding),
                state: record.state as u8,
                client: SocketAddr::new(record.key.src_addr.ip(), record.key.src_port),
                vip: SocketAddr::new(record.key.dst_addr.ip(), record.key.dst_port),
                backend: record.backend,
            },
            SyncRecord::Template(record) => Fields {
                connection: false,
                protocol: record.service.protocol,
                forwarding: 0,
                state: 0,
                client: SocketAddr::new(record.client, 0),
                vip: SocketAddr::new(record.service.vip, record.service.port),
                backend: record.backend,
            },
        }
    }

    /// Writes the record's wire form at the start of `out` and returns its length
    /// ([`Self::wire_len`]): the bytes to send are `out[..length]`.
    pub fn encode(&self, out: &mut [u8; MAX_RECORD_LEN]) -> usize {
        let fields = self.fields();
        let length = self.wire_len();
        let wide = length == RECORD6_LEN;
        out[field::KIND] = match (fields.connection, wide) {
            (true, false) => KIND_CONNECTION,
            (false, false) => KIND_TEMPLATE,
            (true, true) => KIND_CONNECTION6,
            (false, true) => KIND_TEMPLATE6,
        };
        out[field::PROTOCOL] = fields.protocol.number();
        out[field::FORWARDING] = fields.forwarding;
        out[field::STATE] = fields.state;
        let (client, vip, backend) = (fields.client, fields.vip, fields.backend);
        let ports = |out: &mut [u8; MAX_RECORD_LEN], at: [Range<usize>; 3]| {
            let [client_at, vip_at, backend_at] = at;
            out[client_at].copy_from_slice(&client.port().to_be_bytes());
            out[vip_at].copy_from_slice(&vip.port().to_be_bytes());
            out[backend_at].copy_from_slice(&backend.port().to_be_bytes());
        };
        if wide {
            let mut families = 0;
            // A flow's two ends share a family; the VIP's is the flow's.
            if vip.is_ipv6() {
                families |= FLOW_IPV6;
            }
            if backend.is_ipv6() {
                families |= BACKEND_IPV6;
            }
            out[field6::FAMILIES] = families;
            out[field6::RESERVED].fill(0);
            out[field6::CLIENT_ADDR].copy_from_slice(&v6_octets(client.ip()));
            out[field6::VIP].copy_from_slice(&v6_octets(vip.ip()));
            out[field6::BACKEND_ADDR].copy_from_slice(&v6_octets(backend.ip()));
            ports(
                out,
                [field6::CLIENT_PORT, field6::VIP_PORT, field6::BACKEND_PORT],
            );
            out[field6::TAIL].fill(0);
        } else {
            out[field::CLIENT_ADDR].copy_from_slice(&v4_octets(client.ip()));
            out[field::VIP].copy_from_slice(&v4_octets(vip.ip()));
            out[field::BACKEND_ADDR].copy_from_slice(&v4_octets(backend.ip()));
            ports(
                out,
                [field::CLIENT_PORT, field::VIP_PORT, field::BACKEND_PORT],
            );
            out[field::RESERVED].fill(0);
        }
        length
    }

    /// Reads a record from the start of `bytes` (its kind says how many bytes it takes),
    /// validating every code.
    pub fn decode(bytes: &[u8]) -> Result<SyncRecord, RecordError> {
        let kind = *bytes.first().ok_or(RecordError::Truncated)?;
        let length = kind_len(kind).ok_or(RecordError::Kind(kind))?;
        let bytes = bytes.get(..length).ok_or(RecordError::Truncated)?;
        let port =
            |range: Range<usize>| u16::from_be_bytes([bytes[range.start], bytes[range.start + 1]]);
        let protocol = Protocol::from_number(bytes[field::PROTOCOL])
            .ok_or(RecordError::Protocol(bytes[field::PROTOCOL]))?;
        let (client, vip, backend) = if length == RECORD_LEN {
            let addr = |range: Range<usize>| {
                let mut octets = [0; 4];
                octets.copy_from_slice(&bytes[range]);
                IpAddr::V4(Ipv4Addr::from(octets))
            };
            (
                SocketAddr::new(addr(field::CLIENT_ADDR), port(field::CLIENT_PORT)),
                SocketAddr::new(addr(field::VIP), port(field::VIP_PORT)),
                SocketAddr::new(addr(field::BACKEND_ADDR), port(field::BACKEND_PORT)),
            )
        } else {
            let families = bytes[field6::FAMILIES];
            if families & !(FLOW_IPV6 | BACKEND_IPV6) != 0 {
                return Err(RecordError::Families(families));
            }
            let addr = |range: Range<usize>, ipv6: bool| {
                let mut octets = [0; 16];
                octets.copy_from_slice(&bytes[range]);
                let address = Ipv6Addr::from(octets);
                if ipv6 {
                    Ok(IpAddr::V6(address))
                } else {
                    address
                        .to_ipv4_mapped()
                        .map(IpAddr::V4)
                        .ok_or(RecordError::Unmapped)
                }
            };
            let flow_ipv6 = families & FLOW_IPV6 != 0;
            (
                SocketAddr::new(
                    addr(field6::CLIENT_ADDR, flow_ipv6)?,
                    port(field6::CLIENT_PORT),
                ),
                SocketAddr::new(addr(field6::VIP, flow_ipv6)?, port(field6::VIP_PORT)),
                SocketAddr::new(
                    addr(field6::BACKEND_ADDR, families & BACKEND_IPV6 != 0)?,
                    port(field6::BACKEND_PORT),
                ),
            )
        };
        match kind {
            KIND_CONNECTION | KIND_CONNECTION6 => {
                let code = bytes[field::FORWARDING];
                let forwarding = forwarding_from_code(code).ok_or(RecordError::Forwarding(code))?;
                let code = bytes[field::STATE];
                let state = ConnState::ALL
                    .get(usize::from(code))
                    .copied()
                    .filter(|&state| (state == ConnState::Udp) == (protocol == Protocol::Udp))
                    .ok_or(RecordError::State(code))?;
                Ok(SyncRecord::Connection(ConnectionRecord {
                    key: FlowKey {
                        src_addr: client.ip().into(),
                        dst_addr: vip.ip().into(),
                        src_port: client.port(),
                        dst_port: vip.port(),
                        protocol,
                    },
                    backend,
                    forwarding,
                    state,
                }))
            }
            _ => Ok(SyncRecord::Template(TemplateRecord {
                service: ServiceKey {
                    vip: vip.ip(),
                    port: vip.port(),
                    protocol,
                },
                client: client.ip(),
                backend,
            })),
        }
    }
}

/// Only called for a record [`SyncRecord::wire_len`] found all IPv4.
fn v4_octets(address: IpAddr) -> [u8; 4] {
    match address {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

/// An address in a 16-byte field: IPv6 as it is, IPv4 mapped.
fn v6_octets(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

const fn forwarding_code(forwarding: Forwarding) -> u8 {
    match forwarding {
        Forwarding::DirectRouting => 0,
        Forwarding::Nat => 1,
        Forwarding::Tunnel => 2,
    }
}

const fn forwarding_from_code(code: u8) -> Option<Forwarding> {
    match code {
        0 => Some(Forwarding::DirectRouting),
        1 => Some(Forwarding::Nat),
        2 => Some(Forwarding::Tunnel),
        _ => None,
    }
}

/// Why bytes are not a datagram of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Shorter than the header.
    #[error("shorter than the {HEADER_LEN}-byte header")]
    Truncated,
    /// Not our magic.
    #[error("bad magic")]
    Magic,
    /// A version this director does not read.
    #[error("unsupported version {0}")]
    Version(u8),
    /// The length field, the record count and the bytes received disagree.
    #[error("length {claimed} for {records} records, {received} bytes received")]
    Length {
        /// The header's length field.
        claimed: u16,
        /// The header's record count.
        records: u16,
        /// Bytes actually received.
        received: usize,
    },
    /// In a version 2 datagram, a record of a kind whose length is unknown, so the records
    /// after it cannot be found.
    #[error("record {index} has unknown kind {kind}")]
    RecordKind {
        /// The record's position in the datagram, from 0.
        index: u16,
        /// Its kind byte.
        kind: u8,
    },
    /// Another cluster's datagram.
    #[error("sync id {0} is another cluster's")]
    ForeignSyncId(u8),
}

/// A validated datagram: its header fields and its records, still encoded.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// The sender's sync id.
    pub sync_id: u8,
    /// The sender's datagram number.
    pub sequence: u32,
    /// The header's version: 1 (24-byte records only) or 2 (mixed).
    pub version: u8,
    count: usize,
    records: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Validates `bytes` as a datagram of cluster `sync_id`. Every length is checked before any
    /// record is read, so no input can make a later read go out of bounds.
    pub fn parse(bytes: &'a [u8], sync_id: u8) -> Result<Self, DatagramError> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|header| header.try_into().ok())
            .ok_or(DatagramError::Truncated)?;
        if header[0..4] != MAGIC {
            return Err(DatagramError::Magic);
        }
        let version = header[4];
        if version != VERSION && version != VERSION_MIXED {
            return Err(DatagramError::Version(version));
        }
        let records = u16::from_be_bytes([header[6], header[7]]);
        let claimed = u16::from_be_bytes([header[8], header[9]]);
        let length_error = DatagramError::Length {
            claimed,
            records,
            received: bytes.len(),
        };
        if usize::from(claimed) != bytes.len() {
            return Err(length_error);
        }
        let body = &bytes[HEADER_LEN..];
        if version == VERSION {
            if body.len() != usize::from(records) * RECORD_LEN {
                return Err(length_error);
            }
        } else {
            // Walk the kinds: the records must end exactly where the datagram does.
            let mut at = 0;
            for index in 0..records {
                let Some(&kind) = body.get(at) else {
                    return Err(length_error);
                };
                at += kind_len(kind).ok_or(DatagramError::RecordKind { index, kind })?;
            }
            if at != body.len() {
                return Err(length_error);
            }
        }
        if header[5] != sync_id {
            return Err(DatagramError::ForeignSyncId(header[5]));
        }
        Ok(Datagram {
            sync_id: header[5],
            sequence: u32::from_be_bytes([header[12], header[13], header[14], header[15]]),
            version,
            count: usize::from(records),
            records: body,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it carries no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Its records, each decoded on its own: a bad one does not spoil the others.
    pub fn records(&self) -> impl Iterator<Item = Result<SyncRecord, RecordError>> + 'a {
        let version = self.version;
        let mut rest = self.records;
        std::iter::from_fn(move || {
            let &kind = rest.first()?;
            let length = match (version, kind_len(kind)) {
                // Version 1: every record is 24 bytes, whatever its kind says.
                (VERSION, _) => RECORD_LEN,
                (_, Some(length)) => length,
                // Not reached: `parse` checked every kind of a version 2 datagram.
                (_, None) => rest.len(),
            };
            let (record, after) = rest.split_at(length.min(rest.len()));
            rest = after;
            Some(
                if version == VERSION && kind_len(kind) == Some(RECORD6_LEN) {
                    // A 64-byte kind in 24 bytes: a bad record, not a reason to read on.
                    Err(RecordError::Kind(kind))
                } else {
                    SyncRecord::decode(record)
                },
            )
        })
    }
}

/// Writes a datagram of as many of `records` as fit [`MAX_DATAGRAM_LEN`] into `out`,
/// replacing its contents, and returns how many it took. Version 1 if all are 24-byte records,
/// else version 2.
pub fn encode_datagram(
    sync_id: u8,
    sequence: u32,
    records: &[SyncRecord],
    out: &mut Vec<u8>,
) -> usize {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(sync_id);
    // Count and length, filled in below.
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&sequence.to_be_bytes());
    let mut bytes = [0; MAX_RECORD_LEN];
    let mut taken = 0;
    let mut mixed = false;
    for record in records {
        if out.len() + record.wire_len() > MAX_DATAGRAM_LEN {
            break;
        }
        let length = record.encode(&mut bytes);
        mixed |= length != RECORD_LEN;
        out.extend_from_slice(&bytes[..length]);
        taken += 1;
    }
    if mixed {
        out[4] = VERSION_MIXED;
    }
    // Both fit: the datagram is at most 65 507 bytes, so it holds fewer than 65 536 records.
    out[6..8].copy_from_slice(&(taken as u16).to_be_bytes());
    let length = out.len() as u16;
    out[8..10].copy_from_slice(&length.to_be_bytes());
    taken
}

/// The longest datagram payload a link of `mtu` bytes carries in one IPv4 packet (at least
/// one 64-byte record's worth, at most [`MAX_DATAGRAM_LEN`]).
pub fn datagram_len(mtu: usize) -> usize {
    mtu.saturating_sub(IP_UDP_HEADERS)
        .clamp(HEADER_LEN + MAX_RECORD_LEN, MAX_DATAGRAM_LEN)
}

/// 24-byte records that fit a datagram on a link of `mtu` bytes (at least one, at most
/// [`MAX_RECORDS`]); 64-byte records take their share of [`datagram_len`] likewise.
pub fn records_per_datagram(mtu: usize) -> usize {
    (mtu.saturating_sub(IP_UDP_HEADERS + HEADER_LEN) / RECORD_LEN).clamp(1, MAX_RECORDS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::tests::connection;
    use crate::testing::{sync_connection as record, sync_template as template};
    use proptest::prelude::*;

    #[test]
    fn connection_golden_bytes() {
        let mut out = [0xff; MAX_RECORD_LEN];
        assert_eq!(connection().encode(&mut out), RECORD_LEN);
        let out = &out[..RECORD_LEN];
        #[rustfmt::skip]
        let expected = [
            1, 6, 1, 1,             // connection, TCP, NAT, established
            198, 51, 100, 7,        // client
            192, 0, 2, 60,          // VIP
            10, 0, 1, 1,            // real server
            0x9c, 0x40,             // client port 40000
            0x00, 0x50,             // VIP port 80
            0x1f, 0x90,             // real server port 8080
            0, 0,                   // reserved
        ];
        assert_eq!(out, &expected);
        assert_eq!(SyncRecord::decode(&expected), Ok(connection()));
    }

    #[test]
    fn template_golden_bytes() {
        let template = SyncRecord::Template(TemplateRecord {
            service: ServiceKey {
                vip: Ipv4Addr::new(192, 0, 2, 62).into(),
                port: 443,
                protocol: Protocol::Tcp,
            },
            client: Ipv4Addr::new(198, 51, 100, 0).into(),
            backend: "10.0.1.6:443".parse().unwrap(),
        });
        let mut out = [0xff; MAX_RECORD_LEN];
        assert_eq!(template.encode(&mut out), RECORD_LEN);
        let out = &out[..RECORD_LEN];
        #[rustfmt::skip]
        let expected = [
            2, 6, 0, 0,             // template, TCP
            198, 51, 100, 0,        // masked client
            192, 0, 2, 62,          // VIP
            10, 0, 1, 6,            // real server
            0, 0,                   // no client port
            0x01, 0xbb,             // VIP port 443
            0x01, 0xbb,             // real server port 443
            0, 0,
        ];
        assert_eq!(out, &expected);
        assert_eq!(SyncRecord::decode(&expected), Ok(template));
    }

    #[test]
    fn invalid_codes_are_named() {
        let mut bytes = [0; MAX_RECORD_LEN];
        connection().encode(&mut bytes);
        let bytes: [u8; RECORD_LEN] = bytes[..RECORD_LEN].try_into().unwrap();
        let with = |at: usize, value: u8| {
            let mut bytes = bytes;
            bytes[at] = value;
            SyncRecord::decode(&bytes)
        };
        assert_eq!(with(field::KIND, 0), Err(RecordError::Kind(0)));
        assert_eq!(with(field::KIND, 5), Err(RecordError::Kind(5)));
        // A 64-byte kind needs 64 bytes.
        assert_eq!(with(field::KIND, 3), Err(RecordError::Truncated));
        assert_eq!(with(field::PROTOCOL, 1), Err(RecordError::Protocol(1)));
        assert_eq!(with(field::FORWARDING, 3), Err(RecordError::Forwarding(3)));
        assert_eq!(with(field::STATE, 5), Err(RecordError::State(5)));
        // TCP cannot be in the UDP state, nor UDP in a TCP one.
        assert_eq!(
            with(field::STATE, ConnState::Udp as u8),
            Err(RecordError::State(4))
        );
        assert_eq!(with(field::PROTOCOL, 17), Err(RecordError::State(1)));
        // Reserved bytes are ignored.
        assert_eq!(with(22, 0xff), Ok(connection()));
        assert_eq!(
            SyncRecord::decode(&bytes[..RECORD_LEN - 1]),
            Err(RecordError::Truncated)
        );
    }

    /// Any address of `family`-ness: IPv4 (`false`) or IPv6 (`true`).
    fn any_addr(ipv6: bool) -> BoxedStrategy<IpAddr> {
        if ipv6 {
            any::<u128>()
                .prop_map(|bits| IpAddr::V6(Ipv6Addr::from(bits)))
                .boxed()
        } else {
            any::<u32>()
                .prop_map(|bits| IpAddr::V4(Ipv4Addr::from(bits)))
                .boxed()
        }
    }

    /// Records of every family mix a director makes: an IPv4 or IPv6 flow, and a backend of
    /// the flow's family or (TUN, RFC 2473) of the other.
    fn any_record() -> impl Strategy<Value = SyncRecord> {
        (any::<bool>(), any::<bool>()).prop_flat_map(|(flow_ipv6, backend_ipv6)| {
            let socket = move |ipv6: bool| {
                (any_addr(ipv6), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
            };
            let protocol = prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)];
            let forwarding = prop_oneof![
                Just(Forwarding::DirectRouting),
                Just(Forwarding::Nat),
                Just(Forwarding::Tunnel)
            ];
            let connection = (
                socket(flow_ipv6),
                socket(flow_ipv6),
                socket(backend_ipv6),
                protocol.clone(),
                forwarding,
                0..4usize,
            )
                .prop_map(|(client, vip, backend, protocol, forwarding, state)| {
                    SyncRecord::Connection(ConnectionRecord {
                        key: FlowKey {
                            src_addr: client.ip().into(),
                            dst_addr: vip.ip().into(),
                            src_port: client.port(),
                            dst_port: vip.port(),
                            protocol,
                        },
                        backend,
                        forwarding,
                        state: match protocol {
                            Protocol::Udp => ConnState::Udp,
                            Protocol::Tcp => ConnState::ALL[state],
                        },
                    })
                });
            let template = (
                socket(flow_ipv6),
                any_addr(flow_ipv6),
                socket(backend_ipv6),
                protocol,
            )
                .prop_map(|(vip, client, backend, protocol)| {
                    SyncRecord::Template(TemplateRecord {
                        service: ServiceKey {
                            vip: vip.ip(),
                            port: vip.port(),
                            protocol,
                        },
                        client,
                        backend,
                    })
                });
            prop_oneof![connection, template]
        })
    }

    proptest! {
        #[test]
        fn records_round_trip(record in any_record()) {
            let mut bytes = [0; MAX_RECORD_LEN];
            let length = record.encode(&mut bytes);
            prop_assert_eq!(length, record.wire_len());
            let all_ipv4 = matches!(
                record,
                SyncRecord::Connection(ConnectionRecord { key, backend: SocketAddr::V4(_), .. }) if key.dst_addr.is_ipv4()
            ) || matches!(
                record,
                SyncRecord::Template(TemplateRecord { client: IpAddr::V4(_), backend: SocketAddr::V4(_), .. })
            );
            prop_assert_eq!(length == RECORD_LEN, all_ipv4);
            prop_assert_eq!(SyncRecord::decode(&bytes[..length]), Ok(record));
            // One byte short is never a record.
            prop_assert_eq!(SyncRecord::decode(&bytes[..length - 1]), Err(RecordError::Truncated));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(record) = SyncRecord::decode(&bytes) {
                // Whatever decodes encodes back to the same record, less what is ignored.
                let mut again = [0; MAX_RECORD_LEN];
                record.encode(&mut again);
                prop_assert_eq!(SyncRecord::decode(&again), Ok(record));
            }
        }

        #[test]
        fn random_wide_records_never_panic(mut bytes in any::<[u8; RECORD6_LEN]>(),
                                           kind in 3..=4u8) {
            bytes[field::KIND] = kind;
            if let Ok(record) = SyncRecord::decode(&bytes) {
                let mut again = [0; MAX_RECORD_LEN];
                let length = record.encode(&mut again);
                prop_assert_eq!(SyncRecord::decode(&again[..length]), Ok(record));
            }
        }
    }

    fn ipv6_connection() -> SyncRecord {
        SyncRecord::Connection(ConnectionRecord {
            key: FlowKey {
                src_addr: "2001:db8:1::7".parse().unwrap(),
                dst_addr: "2001:db8::10".parse().unwrap(),
                src_port: 40_000,
                dst_port: 80,
                protocol: Protocol::Tcp,
            },
            backend: "[2001:db8::11]:8080".parse().unwrap(),
            forwarding: Forwarding::Nat,
            state: ConnState::TcpEstablished,
        })
    }

    /// An IPv4 service tunnelled to an IPv6 real server (IPv4-in-IPv6, RFC 2473).
    fn four_in_six_template() -> SyncRecord {
        SyncRecord::Template(TemplateRecord {
            service: ServiceKey {
                vip: Ipv4Addr::new(192, 0, 2, 62).into(),
                port: 443,
                protocol: Protocol::Udp,
            },
            client: Ipv4Addr::new(198, 51, 100, 0).into(),
            backend: "[2001:db8::16]:443".parse().unwrap(),
        })
    }

    #[test]
    fn ipv6_connection_golden_bytes() {
        let mut out = [0xff; MAX_RECORD_LEN];
        assert_eq!(ipv6_connection().encode(&mut out), RECORD6_LEN);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[3, 6, 1, 1][..],          // 64-byte connection, TCP, NAT, established
            &[0b11, 0, 0, 0],           // flow and backend IPv6; reserved
            &[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],      // client
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],   // VIP
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11],   // real server
            &[0x9c, 0x40, 0x00, 0x50, 0x1f, 0x90],                              // ports
            &[0, 0],                                                            // reserved
        ]
        .concat();
        assert_eq!(&out[..], &expected[..]);
        assert_eq!(SyncRecord::decode(&expected), Ok(ipv6_connection()));
    }

    #[test]
    fn four_in_six_template_golden_bytes() {
        let mut out = [0xff; MAX_RECORD_LEN];
        assert_eq!(four_in_six_template().encode(&mut out), RECORD6_LEN);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[4, 17, 0, 0][..],         // 64-byte template, UDP
            &[0b10, 0, 0, 0],           // only the backend is IPv6
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 0],       // client, mapped
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 62],         // VIP, mapped
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16],   // real server
            &[0, 0, 0x01, 0xbb, 0x01, 0xbb],                                    // ports
            &[0, 0],
        ]
        .concat();
        assert_eq!(&out[..], &expected[..]);
        assert_eq!(SyncRecord::decode(&expected), Ok(four_in_six_template()));
    }

    #[test]
    fn invalid_wide_records_are_named() {
        let mut bytes = [0; MAX_RECORD_LEN];
        four_in_six_template().encode(&mut bytes);
        let with = |at: usize, value: u8| {
            let mut bytes = bytes;
            bytes[at] = value;
            SyncRecord::decode(&bytes)
        };
        assert_eq!(with(field6::FAMILIES, 0b100), Err(RecordError::Families(4)));
        // The client field says IPv4 but holds no IPv4-mapped address.
        assert_eq!(
            with(field6::CLIENT_ADDR.start, 1),
            Err(RecordError::Unmapped)
        );
        // Flow flagged IPv6: the mapped addresses read as IPv6, a valid (if odd) record.
        assert!(matches!(
            with(field6::FAMILIES, 0b11),
            Ok(SyncRecord::Template(TemplateRecord {
                client: IpAddr::V6(_),
                ..
            }))
        ));
        assert_eq!(
            with(field6::RESERVED.start, 0xff),
            Ok(four_in_six_template())
        );
        assert_eq!(with(field6::TAIL.start, 0xff), Ok(four_in_six_template()));
        assert_eq!(
            SyncRecord::decode(&bytes[..RECORD6_LEN - 1]),
            Err(RecordError::Truncated)
        );
    }

    /// The datagram around the records.
    mod datagram {
        use super::*;

        #[test]
        fn datagram_golden_bytes() {
            let mut out = Vec::new();
            encode_datagram(7, 0x0102_0304, &[record(0)], &mut out);
            #[rustfmt::skip]
            let expected: Vec<u8> = [
                &b"DSYN"[..],
                &[1, 7],                // version, sync id
                &[0, 1],                // one record
                &[0, 40],               // 16 + 24 bytes
                &[0, 0],                // reserved
                &[1, 2, 3, 4],          // sequence
                &[1, 6, 0, 1],          // connection, TCP, DR, established
                &[198, 51, 100, 7, 192, 0, 2, 10, 192, 0, 2, 11],
                &[0x9c, 0x40, 0, 80, 0, 80, 0, 0],
            ]
            .concat();
            assert_eq!(out, expected);
            let datagram = Datagram::parse(&out, 7).unwrap();
            assert_eq!((datagram.sync_id, datagram.sequence), (7, 0x0102_0304));
            assert_eq!(datagram.records().collect::<Vec<_>>(), vec![Ok(record(0))]);
        }

        #[test]
        fn malformed_datagrams_are_named() {
            let mut good = Vec::new();
            encode_datagram(3, 0, &[record(0), template()], &mut good);
            assert_eq!(Datagram::parse(&good, 3).unwrap().len(), 2);
            let with = |at: usize, value: u8| {
                let mut bytes = good.clone();
                bytes[at] = value;
                Datagram::parse(&bytes, 3).map(|datagram| datagram.len())
            };
            assert_eq!(with(0, b'X').unwrap_err(), DatagramError::Magic);
            assert_eq!(with(4, 3).unwrap_err(), DatagramError::Version(3));
            assert!(matches!(
                with(7, 3).unwrap_err(),
                DatagramError::Length { records: 3, .. }
            ));
            assert!(matches!(
                with(9, 0).unwrap_err(),
                DatagramError::Length { claimed: 0, .. }
            ));
            assert_eq!(with(5, 4).unwrap_err(), DatagramError::ForeignSyncId(4));
            assert_eq!(
                Datagram::parse(&good[..good.len() - 1], 3).unwrap_err(),
                DatagramError::Length {
                    claimed: 64,
                    records: 2,
                    received: 63
                }
            );
            assert_eq!(
                Datagram::parse(&good[..10], 3).unwrap_err(),
                DatagramError::Truncated
            );
            // One bad record does not spoil the other.
            let mut bytes = good.clone();
            bytes[HEADER_LEN] = 9;
            let datagram = Datagram::parse(&bytes, 3).unwrap();
            let records: Vec<_> = datagram.records().collect();
            assert_eq!(records[0], Err(RecordError::Kind(9)));
            assert_eq!(records[1], Ok(template()));
            // In version 1 a 64-byte kind is a bad record, not a reason to read 64 bytes.
            bytes[HEADER_LEN] = KIND_CONNECTION6;
            let datagram = Datagram::parse(&bytes, 3).unwrap();
            let records: Vec<_> = datagram.records().collect();
            assert_eq!(records, vec![Err(RecordError::Kind(3)), Ok(template())]);
        }

        #[test]
        fn mixed_datagrams_are_version_2() {
            let records = [
                record(0),
                ipv6_connection(),
                template(),
                four_in_six_template(),
            ];
            let mut out = Vec::new();
            assert_eq!(encode_datagram(5, 77, &records, &mut out), 4);
            assert_eq!(out[4], VERSION_MIXED);
            assert_eq!(out.len(), HEADER_LEN + 2 * RECORD_LEN + 2 * RECORD6_LEN);
            assert_eq!(&out[8..10], &(out.len() as u16).to_be_bytes());
            let datagram = Datagram::parse(&out, 5).unwrap();
            assert_eq!((datagram.len(), datagram.version), (4, VERSION_MIXED));
            let decoded: Vec<_> = datagram.records().map(Result::unwrap).collect();
            assert_eq!(decoded, records);

            // IPv4 alone stays version 1, readable by directors without IPv6.
            encode_datagram(5, 78, &records[..1], &mut out);
            assert_eq!(out[4], VERSION);
        }

        #[test]
        fn malformed_mixed_datagrams_are_named() {
            let mut good = Vec::new();
            encode_datagram(3, 0, &[ipv6_connection(), record(0)], &mut good);
            let with = |at: usize, value: u8| {
                let mut bytes = good.clone();
                bytes[at] = value;
                Datagram::parse(&bytes, 3).map(|datagram| datagram.len())
            };
            assert_eq!(with(0, 0).unwrap_err(), DatagramError::Magic);
            // The second record's kind is unknown: where it ends cannot be known.
            assert_eq!(
                with(HEADER_LEN + RECORD6_LEN, 9).unwrap_err(),
                DatagramError::RecordKind { index: 1, kind: 9 }
            );
            // A 24-byte kind where a 64-byte record is: the walk lands inside the record, on the
            // VIP's first byte.
            assert!(matches!(
                with(HEADER_LEN, KIND_CONNECTION).unwrap_err(),
                DatagramError::RecordKind {
                    index: 1,
                    kind: 0x20
                }
            ));
            // Counts that disagree with the records.
            assert!(matches!(
                with(7, 1).unwrap_err(),
                DatagramError::Length { .. }
            ));
            assert!(matches!(
                with(7, 3).unwrap_err(),
                DatagramError::Length { .. }
            ));
            // A bad code inside a record spoils that record only.
            let mut bytes = good.clone();
            bytes[HEADER_LEN + 1] = 1;
            let datagram = Datagram::parse(&bytes, 3).unwrap();
            let records: Vec<_> = datagram.records().collect();
            assert_eq!(records, vec![Err(RecordError::Protocol(1)), Ok(record(0))]);
        }

        proptest! {
            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                        sync_id in any::<u8>()) {
                if let Ok(datagram) = Datagram::parse(&bytes, sync_id) {
                    prop_assert_eq!(datagram.records().count(), datagram.len());
                }
            }

            #[test]
            fn random_bytes_after_a_mixed_header_never_panic(
                body in proptest::collection::vec(any::<u8>(), 0..400),
                count in 0..12u16,
            ) {
                let mut bytes = Vec::new();
                encode_datagram(1, 9, &[], &mut bytes);
                bytes[4] = VERSION_MIXED;
                bytes[6..8].copy_from_slice(&count.to_be_bytes());
                bytes[8..10].copy_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
                bytes.extend_from_slice(&body);
                if let Ok(datagram) = Datagram::parse(&bytes, 1) {
                    prop_assert_eq!(datagram.records().count(), datagram.len());
                }
            }

            #[test]
            fn mixed_datagrams_round_trip(records in proptest::collection::vec(any_record(), 0..40)) {
                let mut bytes = Vec::new();
                prop_assert_eq!(encode_datagram(2, 3, &records, &mut bytes), records.len());
                let datagram = Datagram::parse(&bytes, 2).unwrap();
                let decoded: Vec<_> = datagram.records().collect::<Result<_, _>>().unwrap();
                prop_assert_eq!(decoded, records);
            }

            #[test]
            fn random_records_after_a_valid_header_never_panic(
                body in proptest::collection::vec(any::<u8>(), 0..10).prop_flat_map(|counts| {
                    proptest::collection::vec(any::<u8>(), counts.len() * RECORD_LEN)
                }),
            ) {
                let count = body.len() / RECORD_LEN;
                let mut bytes = Vec::new();
                encode_datagram(1, 9, &[], &mut bytes);
                bytes[6..8].copy_from_slice(&(count as u16).to_be_bytes());
                bytes[8..10].copy_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
                bytes.extend_from_slice(&body);
                let datagram = Datagram::parse(&bytes, 1).unwrap();
                prop_assert_eq!(datagram.records().count(), count);
            }
        }

        #[test]
        fn datagrams_fit_the_mtu() {
            assert_eq!(records_per_datagram(1500), (1500 - 44) / 24);
            assert_eq!(records_per_datagram(0), 1);
            assert_eq!(records_per_datagram(usize::from(u16::MAX)), MAX_RECORDS);
            let mut out = Vec::new();
            let many: Vec<_> = (0..MAX_RECORDS as u16 + 5).map(record).collect();
            encode_datagram(0, 0, &many, &mut out);
            assert!(out.len() <= 65_507);
            assert_eq!(Datagram::parse(&out, 0).unwrap().len(), MAX_RECORDS);

            // 64-byte records fill by bytes, not by count.
            let wide = vec![ipv6_connection(); 2000];
            let taken = encode_datagram(0, 0, &wide, &mut out);
            assert_eq!(taken, (MAX_DATAGRAM_LEN - HEADER_LEN) / RECORD6_LEN);
            assert!(out.len() <= MAX_DATAGRAM_LEN);
            assert_eq!(Datagram::parse(&out, 0).unwrap().len(), taken);
            assert_eq!(datagram_len(1500), 1472);
            assert_eq!(datagram_len(0), HEADER_LEN + RECORD6_LEN);
        }
    }
}
