//! Connection state sync between directors: the record a master's workers export and a backup's
//! workers import, its fixed 24-byte wire form, and the bounded queues between the workers and
//! control's sync daemon (`control::sync`), in the manner of the IPVS sync daemon
//! (`net/netfilter/ipvs/ip_vs_sync.c`).
//!
//! # What is exported, and when
//!
//! With export enabled ([`WorkerSync::export`]), the pipeline pushes a [`SyncRecord`] when
//! - it creates a connection entry (any state: a synced SYN entry lets the client's handshake
//!   ACK reach the same real server after a failover, which a non-consistent scheduler would
//!   not otherwise give it);
//! - an entry changes state (established, FIN, RST; a server's FIN or RST for NAT), or gets a
//!   new real server (its old one left the service);
//! - an entry that saw a packet was last exported [`WorkerSync::refresh`] or more ago, so a
//!   long-lived flow stays alive on the backups, whose entries only age (IPVS's
//!   `sync_refresh_period`). It must stay below the shortest timeout that matters (UDP's, and
//!   a persistent service's, whose templates the backups only see refreshed with their
//!   connections): control uses at most half of each at start.
//!
//! IPVS syncs TCP only from ESTABLISHED on (`ip_vs_sync_conn_needed`) and a connection once per
//! `sync_threshold`/`sync_period` packets; this data plane exports embryonic entries too (see
//! above) and a connection per state change or refresh period, never per packet. Like IPVS,
//! whenever a connection of a persistent service is exported, its client's template follows
//! it as a [`SyncRecord::Template`] (IPVS walks `cp->control` and syncs the template too), so
//! templates are created and refreshed on the backups as long as their clients are active.
//! Expiry is not exported: each director ages its own entries.
//!
//! A push never waits, allocates or logs: a full queue counts the record in
//! `sync_records_dropped` and forwarding goes on (a lost record costs, at worst, that flow on a
//! failover, as a lost datagram does).
//!
//! # Import
//!
//! A backup's worker drains its import queue between bursts, at most [`IMPORT_BUDGET`] records an
//! iteration ([`crate::Pipeline::drain_imports`]). A connection record creates or refreshes the
//! entry for its flow with the master's real server and state (the master is authoritative: an
//! entry on another real server is rebound, as `ip_vs_proc_conn` expires and recreates a
//! connection whose destination differs), resolved by address and port in the worker's current
//! [`crate::ServiceTable`]; a service or real server this director does not know, or a
//! forwarding method that differs, counts `sync_records_unknown` and is skipped. Entries move the
//! gauges and the NAT reply index like any other. A template record is stored in the shared
//! [`crate::PersistenceTable`] under this director's own persistence group and counter slot for
//! the named service and real server (groups and slots are local numbering; the service key and
//! addresses are not). Importing an entry exports nothing, so two directors that both export and
//! import cannot echo records at each other; an imported entry is exported again only when the
//! director forwards for it (after a failover, as the new master). Records carry no timeouts: a backup uses
//! its own configuration's, which must match the master's (as keepalived configurations do).
//!
//! # Memory and time
//!
//! The queues are [`crossbeam_queue::ArrayQueue`]s allocated once in [`SyncQueues::new`]: a push
//! or pop is a few atomic operations on preallocated slots (at most 32 bytes a record). The only
//! per-entry cost is 4 bytes in the connection table (the second the entry was last exported),
//! which fit in its existing padding.
//!
//! What this module must not do: allocate, lock or log per record on the data-plane side, or
//! panic on any bytes [`SyncRecord::decode`] is given.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::conntrack::{ConnState, FlowKey};
use crate::service::{Forwarding, Protocol, ServiceKey};

/// Length of one record on the wire.
pub const RECORD_LEN: usize = 24;

/// Most records a worker imports per loop iteration, so a burst of sync traffic delays its
/// frames by microseconds, not milliseconds.
pub const IMPORT_BUDGET: usize = 128;

/// Default [`WorkerSync::refresh`]: well under the shortest long timeout (UDP, 5 minutes), so an
/// active flow never ages out on a backup.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// A bounded, preallocated, lock-free queue of records between a worker and control.
pub type SyncQueue = ArrayQueue<SyncRecord>;

/// One unit of sync: a connection entry, or a persistence template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncRecord {
    /// A connection entry: its flow, real server, forwarding method and state.
    Connection(ConnectionRecord),
    /// A persistence template: a masked client of a persistent service, pinned to a real server.
    Template(TemplateRecord),
}

/// A connection entry as directors exchange it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// The flow as the client sent it (client -> VIP:port).
    pub key: FlowKey,
    /// The real server and its port (the NAT port mapping's, or the service port).
    pub backend: SocketAddrV4,
    /// The service's forwarding method on the master.
    pub forwarding: Forwarding,
    /// The entry's state on the master.
    pub state: ConnState,
}

/// A persistence template as directors exchange it. The service is named by one of its keys
/// (any port of a service group finds the group), not by the master's group number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateRecord {
    /// A key of the persistent service (VIP, the port of the connection that refreshed it,
    /// protocol).
    pub service: ServiceKey,
    /// The client address, masked with the service's persistence netmask.
    pub client: Ipv4Addr,
    /// The real server and its port.
    pub backend: SocketAddrV4,
}

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

// Records stay small in the queues: with the queue's stamp, 32 bytes a slot.
const _: () = assert!(std::mem::size_of::<SyncRecord>() <= 24);

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
                SocketAddrV4::new(record.key.src_addr, record.key.src_port),
                SocketAddrV4::new(record.key.dst_addr, record.key.dst_port),
                record.backend,
            ),
            SyncRecord::Template(record) => (
                KIND_TEMPLATE,
                record.service.protocol,
                0,
                0,
                SocketAddrV4::new(record.client, 0),
                SocketAddrV4::new(record.service.vip, record.service.port),
                record.backend,
            ),
        };
        out[field::KIND] = kind;
        out[field::PROTOCOL] = protocol.number();
        out[field::FORWARDING] = forwarding;
        out[field::STATE] = state;
        out[field::CLIENT_ADDR].copy_from_slice(&client.ip().octets());
        out[field::VIP].copy_from_slice(&vip.ip().octets());
        out[field::BACKEND_ADDR].copy_from_slice(&backend.ip().octets());
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
            Ipv4Addr::from(octets)
        };
        let port = |range: std::ops::Range<usize>| {
            let mut pair = [0; 2];
            pair.copy_from_slice(&bytes[range]);
            u16::from_be_bytes(pair)
        };
        let protocol = Protocol::from_number(bytes[field::PROTOCOL])
            .ok_or(RecordError::Protocol(bytes[field::PROTOCOL]))?;
        let backend = SocketAddrV4::new(addr(field::BACKEND_ADDR), port(field::BACKEND_PORT));
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

/// One worker's ends of the sync queues, given to its pipeline with
/// [`crate::Pipeline::with_sync`]. The default has neither: no sync, no cost.
#[derive(Clone, Debug, Default)]
pub struct WorkerSync {
    /// Where the worker pushes what it exports; `None`: it exports nothing.
    pub export: Option<Arc<SyncQueue>>,
    /// Where control pushes what the worker imports; `None`: it imports nothing.
    pub import: Option<Arc<SyncQueue>>,
    /// How long after its last export an entry that still sees packets is exported again
    /// (rounded up to whole seconds, at least one).
    pub refresh: Duration,
}

/// Every worker's export and import queue, allocated once when control starts the workers.
#[derive(Debug)]
pub struct SyncQueues {
    exports: Vec<Arc<SyncQueue>>,
    imports: Vec<Arc<SyncQueue>>,
}

impl SyncQueues {
    /// Queues of `capacity` records each (at least one), an export and an import queue per
    /// worker. Size the export queues for the records a worker makes between two drains by the
    /// sender (about 10 ms: at 1 M new flows a second per worker, two or three per flow, 30 000);
    /// import queues likewise for a receiver's burst.
    pub fn new(workers: usize, capacity: usize) -> Self {
        let queue = || Arc::new(ArrayQueue::new(capacity.max(1)));
        SyncQueues {
            exports: (0..workers).map(|_| queue()).collect(),
            imports: (0..workers).map(|_| queue()).collect(),
        }
    }

    /// Worker `index`'s ends, exporting and importing as asked, with `refresh` as the refresh
    /// period. Panics if `index` is not a worker of these queues (a start-up bug).
    pub fn worker(
        &self,
        index: usize,
        export: bool,
        import: bool,
        refresh: Duration,
    ) -> WorkerSync {
        WorkerSync {
            export: export.then(|| Arc::clone(&self.exports[index])),
            import: import.then(|| Arc::clone(&self.imports[index])),
            refresh,
        }
    }

    /// Every worker's export queue, indexed by worker: the sender drains them.
    pub fn exports(&self) -> &[Arc<SyncQueue>] {
        &self.exports
    }

    /// Every worker's import queue, indexed by worker: the receiver fills them.
    pub fn imports(&self) -> &[Arc<SyncQueue>] {
        &self.imports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn connection() -> SyncRecord {
        SyncRecord::Connection(ConnectionRecord {
            key: FlowKey {
                src_addr: Ipv4Addr::new(198, 51, 100, 7),
                dst_addr: Ipv4Addr::new(192, 0, 2, 60),
                src_port: 40000,
                dst_port: 80,
                protocol: Protocol::Tcp,
            },
            backend: "10.0.1.1:8080".parse().unwrap(),
            forwarding: Forwarding::Nat,
            state: ConnState::TcpEstablished,
        })
    }

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
                vip: Ipv4Addr::new(192, 0, 2, 62),
                port: 443,
                protocol: Protocol::Tcp,
            },
            client: Ipv4Addr::new(198, 51, 100, 0),
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
            .prop_map(|(addr, port)| SocketAddrV4::new(Ipv4Addr::from(addr), port));
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
                        src_addr: *client.ip(),
                        dst_addr: *vip.ip(),
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
                        vip: *vip.ip(),
                        port: vip.port(),
                        protocol,
                    },
                    client,
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

    #[test]
    fn queues_are_bounded_and_per_worker() {
        let queues = SyncQueues::new(2, 2);
        let worker = queues.worker(1, true, false, DEFAULT_REFRESH);
        assert!(worker.import.is_none());
        let export = worker.export.unwrap();
        assert!(export.push(connection()).is_ok());
        assert!(export.push(connection()).is_ok());
        assert!(export.push(connection()).is_err(), "a full queue refuses");
        assert_eq!(queues.exports()[1].len(), 2);
        assert!(queues.exports()[0].is_empty());
    }
}
