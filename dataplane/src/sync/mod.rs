//! Connection state sync between directors: the record a master's workers export and a backup's
//! workers import, and the bounded queues between the workers and control's sync daemon
//! (`control::ha::sync`), in the manner of the IPVS sync daemon
//! (`net/netfilter/ipvs/ip_vs_sync.c`).
//!
//! Records cross these queues as in-memory structs; the workers never see their bytes. Their
//! wire form, the 24- and 64-byte records and the datagram that carries them, is all in [`wire`]:
//! control's daemon uses it, and no other code encodes or decodes sync traffic.
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
//! What this module must not do: allocate, lock or log per record on the data-plane side.

pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::conntrack::{ConnState, FlowKey};
use crate::service::{Forwarding, ServiceKey};
pub use wire::{RecordError, MAX_RECORD_LEN, RECORD6_LEN, RECORD_LEN};

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
    pub backend: SocketAddr,
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
    pub client: IpAddr,
    /// The real server and its port.
    pub backend: SocketAddr,
}

// Records stay small in the queues (IPv6 addresses made them grow from 24 bytes).
const _: () = assert!(std::mem::size_of::<SyncRecord>() <= 96);

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
    use crate::service::Protocol;

    /// A NAT connection record, shared with `wire`'s tests.
    pub(super) fn connection() -> SyncRecord {
        SyncRecord::Connection(ConnectionRecord {
            key: FlowKey {
                src_addr: IpAddr::from([198, 51, 100, 7]).into(),
                dst_addr: IpAddr::from([192, 0, 2, 60]).into(),
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
