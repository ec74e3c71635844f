//! The sync daemon's counters, both directions ([`SyncCounters`]), written by the sync threads
//! with relaxed atomics and read as a [`SyncStats`] snapshot by the stats socket.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of both directions, for the stats socket. Written by the sync threads only.
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Datagrams sent (to each destination counted once per destination).
    pub datagrams_sent: AtomicU64,
    /// Records sent (once per record, whatever the number of destinations).
    pub records_sent: AtomicU64,
    /// Datagrams the kernel refused to send.
    pub send_errors: AtomicU64,
    /// Exported records drained and thrown away because this director was a backup.
    pub records_discarded: AtomicU64,
    /// Valid datagrams of this cluster received (applied or ignored).
    pub datagrams_received: AtomicU64,
    /// Valid records received and queued for the workers.
    pub records_received: AtomicU64,
    /// Datagrams dropped as malformed (bad magic, version, length or record count, or in a
    /// version 2 datagram a record kind whose length is unknown).
    pub datagrams_malformed: AtomicU64,
    /// Records dropped as malformed (unknown kind, protocol, forwarding method or state; in a
    /// 64-byte record, unknown family bits or an IPv4 field not IPv4-mapped).
    pub records_malformed: AtomicU64,
    /// Datagrams of another cluster (sync id) or, with unicast peers, from a stranger.
    pub datagrams_foreign: AtomicU64,
    /// Valid datagrams ignored because this director was the master.
    pub datagrams_ignored: AtomicU64,
    /// Datagrams a sender numbered but this receiver never got (gaps in the sequence).
    pub datagrams_lost: AtomicU64,
    /// Records a full worker import queue could not take (one per worker that refused it).
    pub records_dropped: AtomicU64,
    /// With a key: datagrams without an authentication trailer (a sender without the key).
    pub auth_missing: AtomicU64,
    /// With a key: datagrams whose tag did not match (another key, or altered on the way).
    pub auth_bad_tag: AtomicU64,
    /// With a key: datagrams whose sequence number was seen before or is below the window.
    pub auth_replayed: AtomicU64,
    /// Without a key: keyed datagrams, which a receiver without the key cannot check.
    pub auth_unexpected: AtomicU64,
    /// Whether the daemon has a key now (set by [`super::SyncDaemon`], which a reload may
    /// change): a state, not a count.
    pub authenticated: AtomicBool,
}

/// A copy of [`SyncCounters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[expect(
    missing_docs,
    reason = "the fields mirror SyncCounters, documented there"
)]
pub struct SyncStats {
    pub datagrams_sent: u64,
    pub records_sent: u64,
    pub send_errors: u64,
    pub records_discarded: u64,
    pub datagrams_received: u64,
    pub records_received: u64,
    pub datagrams_malformed: u64,
    pub records_malformed: u64,
    pub datagrams_foreign: u64,
    pub datagrams_ignored: u64,
    pub datagrams_lost: u64,
    pub records_dropped: u64,
    pub auth_missing: u64,
    pub auth_bad_tag: u64,
    pub auth_replayed: u64,
    pub auth_unexpected: u64,
    pub authenticated: bool,
}

impl SyncCounters {
    /// The counters now.
    pub fn snapshot(&self) -> SyncStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SyncStats {
            datagrams_sent: load(&self.datagrams_sent),
            records_sent: load(&self.records_sent),
            send_errors: load(&self.send_errors),
            records_discarded: load(&self.records_discarded),
            datagrams_received: load(&self.datagrams_received),
            records_received: load(&self.records_received),
            datagrams_malformed: load(&self.datagrams_malformed),
            records_malformed: load(&self.records_malformed),
            datagrams_foreign: load(&self.datagrams_foreign),
            datagrams_ignored: load(&self.datagrams_ignored),
            datagrams_lost: load(&self.datagrams_lost),
            records_dropped: load(&self.records_dropped),
            auth_missing: load(&self.auth_missing),
            auth_bad_tag: load(&self.auth_bad_tag),
            auth_replayed: load(&self.auth_replayed),
            auth_unexpected: load(&self.auth_unexpected),
            authenticated: self.authenticated.load(Ordering::Relaxed),
        }
    }
}

pub(super) fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}
