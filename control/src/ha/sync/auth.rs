//! Authenticated sync (`ha.sync_key`): the trailer a keyed sender appends to every datagram and
//! the checks a keyed receiver makes before it reads one.
//!
//! # Format
//!
//! A keyed datagram is the ordinary one ([`dataplane::sync::wire`], versions 1 and 2) with the
//! [`KEYED`] bit set in its version byte, followed by a trailer:
//!
//! ```text
//!  | header (version | 0x80) | records | sequence (u64, big-endian) | HMAC-SHA256 tag (32) |
//! ```
//!
//! The tag covers every byte before it, header, records and sequence. The header's `length`
//! stays the unkeyed datagram's, trailer excluded. A receiver without a key (or IPVS-era
//! director) refuses the version 0x81 or 0x82 (counted as `auth_unexpected` by ours), and even a
//! reader that ignored the version would find the length disagree: it never misreads one. A
//! keyed receiver calls a datagram without the bit `auth_missing`. Without a key nothing
//! changes: the sender writes the version 1 or 2 datagram byte for byte as before.
//!
//! # Sequence numbers and replay (RFC 4303 3.4.3)
//!
//! Each sender numbers its datagrams with a u64 that only goes up, and each receiver keeps, per
//! sender address, the highest number it accepted and a 64-bit map of the 64 numbers below
//! it: a number seen before, or 64 or more below the highest, is a replay (`auth_replayed`); a
//! datagram reordered within the window is accepted once. The window moves only after the
//! tag checked out, so forged datagrams cannot push it.
//!
//! The first number is the wall clock in nanoseconds since 1970 when the sender starts, then
//! one more per datagram. A restarted master must not be refused as a replay by a backup that
//! remembers its old numbers: its new start is the clock at restart, and the old run's last
//! number was its own start plus its datagram count, which stays below the clock as long as it
//! sent fewer than 10^9 datagrams a second (sync sends at most a few thousand). A clock set back
//! by more than the old run lasted defeats this: the backup then counts the new run's datagrams
//! as replays until it restarts too (its windows live in memory) or the numbers catch up. A
//! reload that changes the key keeps the sender's numbers and the receiver's windows. Nothing is
//! kept on disk, so a restarted receiver accepts any number first: someone who recorded the
//! master's datagrams can replay them to a freshly started backup, once, and only as stale
//! copies of the master's own entries, which its next updates overwrite.
//!
//! # Why these crates
//!
//! RustCrypto's `hmac` and `sha2`: no hand-written cryptography. The tag is checked with
//! `Mac::verify_slice` (constant time), so the time a refusal takes says nothing of the tag.
//! Sync runs on control's threads, never on a worker's, so a MAC per datagram costs no frame.
//!
//! What it must not do: read a record of a datagram whose tag has not checked out, panic on any
//! bytes, or keep state for a sender whose datagram did not authenticate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use dataplane::sync::wire::{HEADER_LEN, MAGIC};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::SyncKey;

/// The version bit that marks a keyed datagram.
pub const KEYED: u8 = 0x80;
/// Bytes of the trailer's sequence number.
pub const SEQUENCE_LEN: usize = 8;
/// Bytes of the trailer's HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Bytes a key adds to each datagram.
pub const TRAILER_LEN: usize = SEQUENCE_LEN + TAG_LEN;
/// Sequence numbers a receiver remembers below the highest it accepted.
pub const REPLAY_WINDOW: u64 = 64;
/// Senders a receiver keeps a replay window for (a pair has one, three directors two); past
/// that the least recently heard is forgotten.
pub const MAX_SENDERS: usize = 16;

/// Offset of the version byte in the header.
const VERSION_OFFSET: usize = 4;

type HmacSha256 = Hmac<Sha256>;

/// A MAC keyed with `key`, ready to be cloned for each datagram.
fn keyed_mac(key: &SyncKey) -> HmacSha256 {
    // HMAC takes a key of any length (RFC 2104 hashes a long one): this cannot fail.
    HmacSha256::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!())
}

/// Whether `bytes` start like a sync datagram with the [`KEYED`] bit.
pub fn is_keyed(bytes: &[u8]) -> bool {
    bytes.len() > VERSION_OFFSET
        && bytes[..MAGIC.len()] == MAGIC
        && bytes[VERSION_OFFSET] & KEYED != 0
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No trailer: a datagram from a sender without the key (`auth_missing`).
    #[error("no authentication trailer")]
    Missing,
    /// Too short for a trailer, or a tag that does not match (`auth_bad_tag`).
    #[error("bad authentication tag")]
    BadTag,
    /// A sequence number seen before or below the window (`auth_replayed`).
    #[error("replayed or too old")]
    Replayed,
}

/// The sending side: appends the trailer with the next sequence number.
pub struct Signer {
    mac: HmacSha256,
    next_sequence: u64,
}

impl Signer {
    /// A signer whose first sequence number is `first_sequence`.
    pub fn new(key: &SyncKey, first_sequence: u64) -> Signer {
        Signer {
            mac: keyed_mac(key),
            next_sequence: first_sequence,
        }
    }

    /// A signer numbering from the wall clock (see the module docs).
    pub fn from_clock(key: &SyncKey) -> Signer {
        Signer::new(key, clock_sequence())
    }

    /// The same numbering under another key (a reload).
    pub fn rekey(&mut self, key: &SyncKey) {
        self.mac = keyed_mac(key);
    }

    /// The number the next datagram gets.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Marks the encoded `datagram` keyed and appends its sequence number and tag.
    pub fn sign(&mut self, datagram: &mut Vec<u8>) {
        if let Some(version) = datagram.get_mut(VERSION_OFFSET) {
            *version |= KEYED;
        }
        datagram.extend_from_slice(&self.next_sequence.to_be_bytes());
        self.next_sequence = self.next_sequence.wrapping_add(1);
        let mut mac = self.mac.clone();
        mac.update(datagram);
        datagram.extend_from_slice(&mac.finalize().into_bytes());
    }
}

/// Nanoseconds since 1970 now (0 before it).
fn clock_sequence() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// One sender's anti-replay state (RFC 4303 3.4.3): the highest number accepted, and bit `i`
/// set for each number `highest - i` accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    seen: u64,
}

impl ReplayWindow {
    /// A window that has accepted `sequence` only.
    pub fn starting_at(sequence: u64) -> ReplayWindow {
        ReplayWindow {
            highest: sequence,
            seen: 1,
        }
    }

    /// Whether `sequence` is new: above the highest, or within the window and not seen.
    pub fn accepts(&self, sequence: u64) -> bool {
        if sequence > self.highest {
            return true;
        }
        let behind = self.highest - sequence;
        behind < REPLAY_WINDOW && self.seen & (1 << behind) == 0
    }

    /// Records `sequence` as accepted (after [`ReplayWindow::accepts`] and the tag).
    pub fn record(&mut self, sequence: u64) {
        if sequence > self.highest {
            let ahead = sequence - self.highest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = sequence;
        } else {
            let behind = self.highest - sequence;
            if behind < REPLAY_WINDOW {
                self.seen |= 1 << behind;
            }
        }
    }
}

/// The receiving side: checks the trailer and the replay window of the sender.
pub struct Verifier {
    mac: HmacSha256,
    /// Per sender: its window and when it was last accepted (a count of accepted datagrams).
    windows: Vec<(SocketAddr, ReplayWindow, u64)>,
    accepted: u64,
}

impl Verifier {
    /// A verifier for `key`, knowing no sender yet.
    pub fn new(key: &SyncKey) -> Verifier {
        Verifier {
            mac: keyed_mac(key),
            windows: Vec::with_capacity(MAX_SENDERS),
            accepted: 0,
        }
    }

    /// Senders it keeps a replay window for (only those that authenticated).
    pub fn senders(&self) -> usize {
        self.windows.len()
    }

    /// Another key (a reload); the senders' windows stay.
    pub fn rekey(&mut self, key: &SyncKey) {
        self.mac = keyed_mac(key);
    }

    /// Checks the keyed datagram `bytes` from `from` and, if it authenticates, copies it into
    /// `plain` as the unkeyed datagram (bit cleared, trailer gone) for
    /// [`dataplane::sync::wire::Datagram::parse`], and moves the sender's window.
    pub fn verify(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        plain: &mut Vec<u8>,
    ) -> Result<(), AuthError> {
        if !is_keyed(bytes) {
            return Err(AuthError::Missing);
        }
        let Some(tagged_len) = bytes.len().checked_sub(TAG_LEN) else {
            return Err(AuthError::BadTag);
        };
        if tagged_len < HEADER_LEN + SEQUENCE_LEN {
            return Err(AuthError::BadTag);
        }
        let (tagged, tag) = bytes.split_at(tagged_len);
        let (datagram, sequence) = tagged.split_at(tagged_len - SEQUENCE_LEN);
        let mut sequence_bytes = [0; SEQUENCE_LEN];
        sequence_bytes.copy_from_slice(sequence);
        let sequence = u64::from_be_bytes(sequence_bytes);
        // The cheap refusal first; the window moves only once the tag checked out.
        let known = self.windows.iter().position(|(sender, ..)| *sender == from);
        if let Some(index) = known {
            if !self.windows[index].1.accepts(sequence) {
                return Err(AuthError::Replayed);
            }
        }
        let mut mac = self.mac.clone();
        mac.update(tagged);
        mac.verify_slice(tag).map_err(|_| AuthError::BadTag)?;
        self.accepted += 1;
        if let Some(index) = known {
            let (_, window, heard) = &mut self.windows[index];
            window.record(sequence);
            *heard = self.accepted;
        } else {
            if self.windows.len() >= MAX_SENDERS {
                let stalest = self
                    .windows
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (.., heard))| *heard)
                    .map_or(0, |(index, _)| index);
                self.windows.swap_remove(stalest);
            }
            self.windows
                .push((from, ReplayWindow::starting_at(sequence), self.accepted));
        }
        plain.clear();
        plain.extend_from_slice(datagram);
        plain[VERSION_OFFSET] &= !KEYED;
        Ok(())
    }
}

/// The key a daemon's sender and receiver use, which a reload may change while they run: one
/// generation number they compare once per datagram (an atomic load), the key itself behind a
/// lock taken only when the generation moved.
#[derive(Debug, Default)]
pub struct KeyCell {
    generation: AtomicU64,
    key: Mutex<Option<SyncKey>>,
}

impl KeyCell {
    /// A cell holding `key`.
    pub fn new(key: Option<SyncKey>) -> KeyCell {
        KeyCell {
            generation: AtomicU64::new(0),
            key: Mutex::new(key),
        }
    }

    /// Replaces the key (or removes it) for the next datagrams.
    pub fn set(&self, key: Option<SyncKey>) {
        *self.key.lock().unwrap_or_else(PoisonError::into_inner) = key;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The key now.
    pub fn get(&self) -> Option<SyncKey> {
        self.key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes each time the key is set.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
