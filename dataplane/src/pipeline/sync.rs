//! State sync on the pipeline's side: exporting an entry (and its persistence template) when a
//! forwarded frame created or changed it or it is due for a refresh, and applying the records of
//! other directors between bursts (see [`crate::sync`]).
//!
//! What this module must not do: export a dropped frame's flow or an imported record, or block:
//! a full export queue counts the record as dropped.

use std::net::SocketAddr;
use std::time::Instant;

use super::shared::Pipeline;
use crate::conntrack::{Binding, ConnId, ConnNextHop, ConnState, Connection};
use crate::counters::{bump, WorkerCounters};
use crate::persistence::Upsert;
use crate::service::{Forwarding, Service, ServiceKey, ServiceTable};
use crate::sync::{ConnectionRecord, SyncRecord, TemplateRecord, IMPORT_BUDGET};

impl Pipeline {
    /// Whether records from other directors wait in this pipeline's import queue.
    #[inline]
    pub fn imports_pending(&self) -> bool {
        self.sync
            .import
            .as_ref()
            .is_some_and(|queue| !queue.is_empty())
    }

    /// Applies up to [`IMPORT_BUDGET`] records from the import queue (the worker calls it between
    /// bursts); returns how many it took.
    pub fn drain_imports(
        &mut self,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> usize {
        let mut taken = 0;
        while taken < IMPORT_BUDGET {
            let Some(record) = self.sync.import.as_ref().and_then(|queue| queue.pop()) else {
                break;
            };
            self.import(&record, table, now, counters);
            taken += 1;
        }
        taken
    }

    /// Applies one record from another director: creates or refreshes the connection entry it
    /// describes, rebinding it to the record's real server if it had another, or stores the
    /// template it describes. A record for a service, real server (address and port) or
    /// forwarding method this director does not have is counted in `sync_records_unknown`.
    /// Nothing imported is exported again. Returns whether the record was applied.
    pub fn import(
        &mut self,
        record: &SyncRecord,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> bool {
        let applied = match record {
            SyncRecord::Connection(record) => self.import_connection(record, table, now, counters),
            SyncRecord::Template(record) => import_template(record, table, now, counters),
        };
        if applied {
            bump(&counters.sync_records_imported, 1);
        } else {
            bump(&counters.sync_records_unknown, 1);
        }
        applied
    }

    fn import_connection(
        &mut self,
        record: &ConnectionRecord,
        table: &ServiceTable,
        now: Instant,
        counters: &WorkerCounters,
    ) -> bool {
        let key = &record.key;
        let service_key = ServiceKey {
            vip: key.dst_addr.ip(),
            port: key.dst_port,
            protocol: key.protocol,
        };
        let Some((_, service)) = table.lookup(&service_key) else {
            return false;
        };
        if service.forwarding != record.forwarding {
            return false;
        }
        let Some(index) = backend_at(service, record.backend, key.dst_port) else {
            return false;
        };
        let backend = &service.backends[index];
        let nat = service.forwarding == Forwarding::Nat;
        let binding = Binding {
            backend: backend.address,
            backend_port: record.backend.port(),
            backend_index: index,
            counter_slot: backend.counter_slot,
            generation: table.generation,
            nat,
        };
        let gauges = self.gauges(table);
        let Some(id) = self
            .connections
            .lookup(key, now, &table.timeouts, counters, gauges)
        else {
            let connection = Connection {
                backend: binding.backend,
                backend_port: binding.backend_port,
                nat,
                backend_index: index as u32,
                generation: table.generation,
                counter_slot: backend.counter_slot as u32,
                state: record.state,
                // Neighbour ids are local: the first frame that needs a next hop looks it up.
                next_hop: ConnNextHop::Unknown,
            };
            // None only for a capacity-0 table, counted there.
            return self
                .connections
                .insert(*key, connection, now, &table.timeouts, counters, gauges)
                .is_some();
        };
        let connection = *self.connections.connection(id);
        if connection.backend != binding.backend
            || connection.backend_port != binding.backend_port
            || connection.counter_slot as usize != binding.counter_slot
            || connection.generation != binding.generation
            || connection.nat != nat
        {
            self.connections.rebind(id, binding, gauges);
        }
        // A late SYN record (datagrams may be reordered) does not shorten an established entry,
        // as a SYN from the client would not.
        let state = match (connection.state, record.state) {
            (ConnState::TcpEstablished, ConnState::TcpSyn) => ConnState::TcpEstablished,
            (_, state) => state,
        };
        self.connections.touch(id, state, now, gauges);
        self.connections.mark_synced(id);
        true
    }

    /// Exports the entry `id` if export is on and the entry `changed` (new, another state or
    /// real server) or is due for a refresh; returns whether it did. The entry counts as
    /// exported even if the queue was full (counted as dropped): retrying on every packet would
    /// only press on a sender that is already behind. Always inlined: with export off (the
    /// common case) it is one test, which as a call costs more than it does.
    #[inline(always)]
    pub(super) fn export_connection(
        &mut self,
        id: ConnId,
        changed: bool,
        forwarding: Forwarding,
        counters: &WorkerCounters,
    ) -> bool {
        if self.sync.export.is_none()
            || !(changed || self.connections.sync_due(id, self.sync_refresh))
        {
            return false;
        }
        let connection = self.connections.connection(id);
        let record = SyncRecord::Connection(ConnectionRecord {
            key: *self.connections.key(id),
            backend: SocketAddr::new(connection.backend, connection.backend_port),
            forwarding,
            state: connection.state,
        });
        self.connections.mark_synced(id);
        self.export(record, counters);
        true
    }

    /// Pushes `record` to the export queue, if there is one; a full queue counts it as dropped.
    #[inline]
    pub(super) fn export(&self, record: SyncRecord, counters: &WorkerCounters) {
        if let Some(queue) = &self.sync.export {
            match queue.push(record) {
                Ok(()) => bump(&counters.sync_records_exported, 1),
                Err(_) => bump(&counters.sync_records_dropped, 1),
            }
        }
    }
}

/// Stores a template another director exported, under this director's persistence group and
/// counter slot for the named service and real server; whether it could be resolved.
fn import_template(
    record: &TemplateRecord,
    table: &ServiceTable,
    now: Instant,
    counters: &WorkerCounters,
) -> bool {
    let Some((_, service)) = table.lookup(&record.service) else {
        return false;
    };
    let Some(persistence) = &service.persistence else {
        return false;
    };
    let Some(index) = backend_at(service, record.backend, record.service.port) else {
        return false;
    };
    // The master's choice stands: it replaces whatever this director had for the client.
    let stored = table.persistence.upsert(
        persistence.group,
        persistence.client(record.client),
        service.backends[index].counter_slot,
        now,
        persistence.timeout,
        true,
    );
    match stored {
        Upsert::Inserted => bump(&counters.persistence_inserts, 1),
        Upsert::Full => bump(&counters.persistence_table_full, 1),
        Upsert::Refreshed | Upsert::Kept => {}
    }
    true
}

/// Index of the backend at `address` that serves service port `service_port` on the real
/// server's port `address.port()`.
fn backend_at(service: &Service, address: SocketAddr, service_port: u16) -> Option<usize> {
    service.backends.iter().position(|backend| {
        backend.address == address.ip() && backend.port_for(service_port) == address.port()
    })
}
