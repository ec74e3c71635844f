//! State sync's bytes on the wire, all of them: the datagram directors exchange and the
//! 24-byte records it carries.
//!
//! The workers push and pop [`SyncRecord`]s, plain in-memory structs, through the lock-free
//! queues ([`super`]); they never see bytes. Control's sync daemon (`control::ha::sync`) turns
//! records into datagrams and back with this module, and nothing else in the workspace encodes
//! or decodes them. The format lives here, in the data plane, rather than in control because
//! control depends on the data plane and not the other way round: the data plane's own tests
//! feed imports from record bytes (`tests/never_panic.rs`), and both crates can reach this
//! module, so one copy serves both.
//!
//! # Datagram format (version 1, big-endian)
//!
//! ```text
//!  0      4        5        6          8         10         12          16
//!  | magic | version | sync id | records | length | reserved | sequence |
//!  | "DSYN"|    1    |  0-255  |  count  | total  |    0     |  u32     |  records x 24 bytes
//! ```
//!
//! `length` is the whole datagram's and must equal 16 + 24 x `records`; `sequence` counts a
//! sender's datagrams, so a receiver can count the ones lost between two it got
//! (`datagrams_lost`). Each record is [`RECORD_LEN`] bytes, laid out below. The sync
//! traffic is not authenticated (nor is IPVS's): keep it on a link only the directors share.
//!
//! # Record format (24 bytes, big-endian)
//!
//! ```text
//!  0      1          2            3       4        8     12        16
//!  | kind | protocol | forwarding | state | client | VIP | backend |
//!  16            18         20             22         24
//!  | client port | VIP port | backend port | reserved |
//! ```
//!
//! `kind` is 1 for a connection, 2 for a persistence template (masked client, no client port,
//! forwarding and state 0); the byte ranges are the private `field` module's. Codes are
//! validated on receipt; the reserved bytes are sent as 0 and ignored.
//!
//! What this module must not do: panic on any bytes [`Datagram::parse`] or
//! [`SyncRecord::decode`] is given, or read a record before the datagram's lengths are checked.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{ConnectionRecord, SyncRecord, TemplateRecord};
use crate::conntrack::{ConnState, FlowKey};
use crate::service::{Forwarding, Protocol, ServiceKey};

/// Length of one record on the wire.
pub const RECORD_LEN: usize = 24;

/// First bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"DSYN";
/// The format version this module writes and reads.
pub const VERSION: u8 = 1;
/// Length of the datagram header.
pub const HEADER_LEN: usize = 16;
/// Most records in one datagram (a UDP payload is at most 65 507 bytes).
pub const MAX_RECORDS: usize = (65_507 - HEADER_LEN) / RECORD_LEN;
/// IPv4 and UDP headers, taken from the MTU to size datagrams.
const IP_UDP_HEADERS: usize = 20 + 8;

/// Why 24 bytes are not a record. Small and `Copy`, as the `wire` errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer than [`RECORD_LEN`] bytes.
    #[error("a sync record needs {RECORD_LEN} bytes")]
    Truncated,
    /// Neither a connection (1) nor a template (2).
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
}

/// Byte ranges of a record (big-endian, as on every wire).
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

const KIND_CONNECTION: u8 = 1;
const KIND_TEMPLATE: u8 = 2;

impl SyncRecord {
    /// Writes the record's wire form into `out`.
    pub fn encode(&self, out: &mut [u8; RECORD_LEN]) {
        let (kind, protocol, forwarding, state, client, vip, backend) = match self {
            SyncRecord::Connection(record) => (
                KIND_CONNECTION,
                record.key.protocol,
                forwarding_code(record.forwarding),
                record.state as u8,
                SocketAddr::new(record.key.src_addr, record.key.src_port),
                SocketAddr::new(record.key.dst_addr, record.key.dst_port),
                record.backend,
            ),
            SyncRecord::Template(record) => (
                KIND_TEMPLATE,
                record.service.protocol,
                0,
                0,
                SocketAddr::new(record.client, 0),
                SocketAddr::new(record.service.vip, record.service.port),
                record.backend,
            ),
        };
        out[field::KIND] = kind;
        out[field::PROTOCOL] = protocol.number();
        out[field::FORWARDING] = forwarding;
        out[field::STATE] = state;
        out[field::CLIENT_ADDR].copy_from_slice(&v4_octets(client.ip()));
        out[field::VIP].copy_from_slice(&v4_octets(vip.ip()));
        out[field::BACKEND_ADDR].copy_from_slice(&v4_octets(backend.ip()));
        out[field::CLIENT_PORT].copy_from_slice(&client.port().to_be_bytes());
        out[field::VIP_PORT].copy_from_slice(&vip.port().to_be_bytes());
        out[field::BACKEND_PORT].copy_from_slice(&backend.port().to_be_bytes());
        out[field::RESERVED].fill(0);
    }

    /// Reads a record from the first [`RECORD_LEN`] bytes of `bytes`, validating every code.
    pub fn decode(bytes: &[u8]) -> Result<SyncRecord, RecordError> {
        let bytes: &[u8; RECORD_LEN] = bytes
            .get(..RECORD_LEN)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(RecordError::Truncated)?;
        let addr = |range: std::ops::Range<usize>| {
            let mut octets = [0; 4];
            octets.copy_from_slice(&bytes[range]);
            IpAddr::V4(Ipv4Addr::from(octets))
        };
        let port = |range: std::ops::Range<usize>| {
            let mut pair = [0; 2];
            pair.copy_from_slice(&bytes[range]);
            u16::from_be_bytes(pair)
        };
        let protocol = Protocol::from_number(bytes[field::PROTOCOL])
            .ok_or(RecordError::Protocol(bytes[field::PROTOCOL]))?;
        let backend = SocketAddr::new(addr(field::BACKEND_ADDR), port(field::BACKEND_PORT));
        match bytes[field::KIND] {
            KIND_CONNECTION => {
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
                        src_addr: addr(field::CLIENT_ADDR),
                        dst_addr: addr(field::VIP),
                        src_port: port(field::CLIENT_PORT),
                        dst_port: port(field::VIP_PORT),
                        protocol,
                    },
                    backend,
                    forwarding,
                    state,
                }))
            }
            KIND_TEMPLATE => Ok(SyncRecord::Template(TemplateRecord {
                service: ServiceKey {
                    vip: addr(field::VIP),
                    port: port(field::VIP_PORT),
                    protocol,
                },
                client: addr(field::CLIENT_ADDR),
                backend,
            })),
            other => Err(RecordError::Kind(other)),
        }
    }
}

/// integrator: sync6 — IPv6 records need their own format; until then they encode as 0.0.0.0.
fn v4_octets(address: IpAddr) -> [u8; 4] {
    match address {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => [0; 4],
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
        if header[4] != VERSION {
            return Err(DatagramError::Version(header[4]));
        }
        let records = u16::from_be_bytes([header[6], header[7]]);
        let claimed = u16::from_be_bytes([header[8], header[9]]);
        let expected = HEADER_LEN + usize::from(records) * RECORD_LEN;
        if usize::from(claimed) != expected || bytes.len() != expected {
            return Err(DatagramError::Length {
                claimed,
                records,
                received: bytes.len(),
            });
        }
        if header[5] != sync_id {
            return Err(DatagramError::ForeignSyncId(header[5]));
        }
        Ok(Datagram {
            sync_id: header[5],
            sequence: u32::from_be_bytes([header[12], header[13], header[14], header[15]]),
            records: &bytes[HEADER_LEN..],
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len() / RECORD_LEN
    }

    /// Whether it carries no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Its records, each decoded on its own: a bad one does not spoil the others.
    pub fn records(&self) -> impl Iterator<Item = Result<SyncRecord, RecordError>> + 'a {
        self.records
            .chunks_exact(RECORD_LEN)
            .map(SyncRecord::decode)
    }
}

/// Writes a datagram of `records` (at most [`MAX_RECORDS`]) into `out`, replacing its contents.
pub fn encode_datagram(sync_id: u8, sequence: u32, records: &[SyncRecord], out: &mut Vec<u8>) {
    let records = &records[..records.len().min(MAX_RECORDS)];
    let length = HEADER_LEN + records.len() * RECORD_LEN;
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(sync_id);
    // Both fit: MAX_RECORDS keeps the length under 65 507.
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&(length as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&sequence.to_be_bytes());
    let mut bytes = [0; RECORD_LEN];
    for record in records {
        record.encode(&mut bytes);
        out.extend_from_slice(&bytes);
    }
}

/// Records that fit a datagram on a link of `mtu` bytes (at least one, at most [`MAX_RECORDS`]).
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
        let mut out = [0xff; RECORD_LEN];
        connection().encode(&mut out);
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
        assert_eq!(out, expected);
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
        let mut out = [0xff; RECORD_LEN];
        template.encode(&mut out);
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
        assert_eq!(out, expected);
        assert_eq!(SyncRecord::decode(&expected), Ok(template));
    }

    #[test]
    fn invalid_codes_are_named() {
        let mut bytes = [0; RECORD_LEN];
        connection().encode(&mut bytes);
        let with = |at: usize, value: u8| {
            let mut bytes = bytes;
            bytes[at] = value;
            SyncRecord::decode(&bytes)
        };
        assert_eq!(with(field::KIND, 0), Err(RecordError::Kind(0)));
        assert_eq!(with(field::KIND, 3), Err(RecordError::Kind(3)));
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

    fn any_record() -> impl Strategy<Value = SyncRecord> {
        let addr = any::<u32>().prop_map(Ipv4Addr::from);
        let socket = (any::<u32>(), any::<u16>())
            .prop_map(|(addr, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(addr)), port));
        let protocol = prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)];
        let forwarding = prop_oneof![
            Just(Forwarding::DirectRouting),
            Just(Forwarding::Nat),
            Just(Forwarding::Tunnel)
        ];
        let connection = (
            socket.clone(),
            socket.clone(),
            socket.clone(),
            protocol.clone(),
            forwarding,
            0..4usize,
        )
            .prop_map(|(client, vip, backend, protocol, forwarding, state)| {
                SyncRecord::Connection(ConnectionRecord {
                    key: FlowKey {
                        src_addr: client.ip(),
                        dst_addr: vip.ip(),
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
        let template = (socket.clone(), addr, socket, protocol).prop_map(
            |(vip, client, backend, protocol)| {
                SyncRecord::Template(TemplateRecord {
                    service: ServiceKey {
                        vip: vip.ip(),
                        port: vip.port(),
                        protocol,
                    },
                    client: IpAddr::V4(client),
                    backend,
                })
            },
        );
        prop_oneof![connection, template]
    }

    proptest! {
        #[test]
        fn records_round_trip(record in any_record()) {
            let mut bytes = [0; RECORD_LEN];
            record.encode(&mut bytes);
            prop_assert_eq!(SyncRecord::decode(&bytes), Ok(record));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(record) = SyncRecord::decode(&bytes) {
                // Whatever decodes encodes back to the same bytes, less what is ignored.
                let mut again = [0; RECORD_LEN];
                record.encode(&mut again);
                prop_assert_eq!(SyncRecord::decode(&again), Ok(record));
            }
        }
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
            assert_eq!(with(4, 2).unwrap_err(), DatagramError::Version(2));
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
        }
    }
}
