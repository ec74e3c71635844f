//! Authenticated sync's tests: the trailer and the replay window on their own ([`Signer`],
//! [`Verifier`], [`ReplayWindow`]), then through a receiver's counters and a sender's bytes on
//! the loopback interface (no root), a key replaced at run time, and arbitrary bytes.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::sync::{SyncQueues, SyncRecord, RECORD_LEN};
use dataplane::testing::sync_connection as record;
use proptest::prelude::*;

use super::*;
use crate::config::SyncKey;

const SYNC_ID: u8 = 7;

fn key(text: &str) -> SyncKey {
    SyncKey::new(format!("{text:-<32}")).unwrap()
}

fn from() -> SocketAddr {
    "127.0.0.1:8848".parse().unwrap()
}

/// The datagram of `records` numbered `sequence` signed by `signer`.
fn signed(signer: &mut Signer, sequence: u32, records: &[SyncRecord]) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_datagram(SYNC_ID, sequence, records, &mut bytes);
    signer.sign(&mut bytes);
    bytes
}

#[test]
fn a_good_tag_is_accepted_and_the_datagram_comes_back_unkeyed() {
    let mut signer = Signer::new(&key("a"), 1000);
    let mut verifier = Verifier::new(&key("a"));
    let records = [record(1), record(2)];
    let bytes = signed(&mut signer, 3, &records);
    let mut unkeyed = Vec::new();
    encode_datagram(SYNC_ID, 3, &records, &mut unkeyed);
    assert_eq!(bytes.len(), unkeyed.len() + TRAILER_LEN);
    assert_eq!(bytes[4], unkeyed[4] | KEYED);
    assert_eq!(
        bytes[unkeyed.len()..][..SEQUENCE_LEN],
        1000u64.to_be_bytes()
    );
    // Every record goes through the one format; nothing but the version bit and trailer.
    assert_eq!(bytes[..4], unkeyed[..4]);
    assert_eq!(bytes[5..unkeyed.len()], unkeyed[5..]);

    let mut plain = Vec::new();
    assert_eq!(verifier.verify(&bytes, from(), &mut plain), Ok(()));
    assert_eq!(plain, unkeyed);
    let datagram = Datagram::parse(&plain, SYNC_ID).unwrap();
    let got: Vec<_> = datagram.records().map(Result::unwrap).collect();
    assert_eq!(got, records);
    assert_eq!(signer.next_sequence(), 1001);
}

#[test]
fn one_flipped_bit_anywhere_is_refused() {
    let mut signer = Signer::new(&key("a"), 1 << 40);
    let bytes = signed(&mut signer, 9, &[record(1)]);
    let mut plain = Vec::new();
    for bit in 0..bytes.len() * 8 {
        let mut altered = bytes.clone();
        altered[bit / 8] ^= 1 << (bit % 8);
        // A fresh verifier: no window, so only the tag can refuse it.
        let verdict = Verifier::new(&key("a")).verify(&altered, from(), &mut plain);
        // The magic and the keyed bit make it look unkeyed; every other bit breaks the tag.
        let marker = bit < 32 || bit == 4 * 8 + 7;
        let expected = if marker {
            AuthError::Missing
        } else {
            AuthError::BadTag
        };
        assert_eq!(verdict, Err(expected), "bit {bit} flipped");
    }
    // Cut short anywhere: refused too.
    for length in 0..bytes.len() {
        let verdict = Verifier::new(&key("a")).verify(&bytes[..length], from(), &mut plain);
        assert!(verdict.is_err(), "{length} bytes accepted");
    }
}

#[test]
fn a_wrong_key_is_refused() {
    let mut signer = Signer::new(&key("a"), 5);
    let bytes = signed(&mut signer, 0, &[record(1)]);
    let mut plain = Vec::new();
    let mut verifier = Verifier::new(&key("b"));
    assert_eq!(
        verifier.verify(&bytes, from(), &mut plain),
        Err(AuthError::BadTag)
    );
    // Nothing was learnt from it: the right key then accepts the same number.
    verifier.rekey(&key("a"));
    assert_eq!(verifier.verify(&bytes, from(), &mut plain), Ok(()));
}

#[test]
fn replays_and_numbers_below_the_window_are_refused_reordering_within_it_is_not() {
    let mut signer = Signer::new(&key("a"), 100);
    let datagrams: Vec<Vec<u8>> = (0..200)
        .map(|n| signed(&mut signer, n, &[record(1)]))
        .collect();
    let mut verifier = Verifier::new(&key("a"));
    let mut plain = Vec::new();
    let mut verify = |sequence: u64| {
        let index = usize::try_from(sequence - 100).unwrap();
        verifier.verify(&datagrams[index], from(), &mut plain)
    };
    assert_eq!(verify(110), Ok(()));
    assert_eq!(verify(110), Err(AuthError::Replayed), "the same one again");
    // Reordered within the window: 108 and 109 arrive after 110, 112 before 111.
    assert_eq!(verify(108), Ok(()));
    assert_eq!(verify(112), Ok(()));
    assert_eq!(verify(109), Ok(()));
    assert_eq!(verify(111), Ok(()));
    assert_eq!(verify(108), Err(AuthError::Replayed));
    // 63 behind the highest is still in the window, 64 behind is not.
    assert_eq!(verify(112 + 63), Ok(()));
    assert_eq!(verify(112), Err(AuthError::Replayed));
    assert_eq!(verify(175 - 63), Err(AuthError::Replayed), "seen");
    assert_eq!(verify(175 - 62), Ok(()), "in the window, not seen");
    assert_eq!(verify(175 - 64), Err(AuthError::Replayed), "too old");
    assert_eq!(verify(100), Err(AuthError::Replayed), "too old");
    // A jump past the window forgets the old map.
    assert_eq!(verify(299), Ok(()));
    assert_eq!(verify(299 - 64), Err(AuthError::Replayed));
    assert_eq!(verify(299 - 63), Ok(()));
}

#[test]
fn each_sender_has_its_own_window() {
    let mut first = Signer::new(&key("a"), 50);
    let mut second = Signer::new(&key("a"), 50);
    let one = signed(&mut first, 0, &[record(1)]);
    let other = signed(&mut second, 0, &[record(1)]);
    let mut verifier = Verifier::new(&key("a"));
    let mut plain = Vec::new();
    let elsewhere: SocketAddr = "127.0.0.2:8848".parse().unwrap();
    assert_eq!(verifier.verify(&one, from(), &mut plain), Ok(()));
    assert_eq!(verifier.verify(&other, elsewhere, &mut plain), Ok(()));
    assert_eq!(
        verifier.verify(&other, from(), &mut plain),
        Err(AuthError::Replayed)
    );
}

#[test]
fn only_authenticated_senders_get_a_window_and_their_number_is_bounded() {
    let mut verifier = Verifier::new(&key("a"));
    let mut plain = Vec::new();
    let forged = signed(&mut Signer::new(&key("b"), 1), 0, &[record(1)]);
    for n in 0..100u16 {
        let address = SocketAddr::from((Ipv4Addr::new(192, 0, 2, (n % 250) as u8), 1000 + n));
        assert!(verifier.verify(&forged, address, &mut plain).is_err());
    }
    assert_eq!(verifier.senders(), 0, "forgeries left state behind");
    let mut signer = Signer::new(&key("a"), 1);
    let first = signed(&mut signer, 0, &[record(1)]);
    for n in 0..=MAX_SENDERS as u16 {
        let address = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 2000 + n));
        assert_eq!(verifier.verify(&first, address, &mut plain), Ok(()));
    }
    assert_eq!(verifier.senders(), MAX_SENDERS);
    // The least recently heard (the first) was forgotten: its window is gone.
    let oldest = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 2000));
    assert_eq!(verifier.verify(&first, oldest, &mut plain), Ok(()));
    let newest = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 2000 + MAX_SENDERS as u16));
    assert_eq!(
        verifier.verify(&first, newest, &mut plain),
        Err(AuthError::Replayed)
    );
}

#[test]
fn a_restarted_sender_numbers_above_its_previous_run() {
    let mut before = Signer::from_clock(&key("a"));
    let mut verifier = Verifier::new(&key("a"));
    let mut plain = Vec::new();
    for n in 0..1000 {
        let bytes = signed(&mut before, n, &[record(1)]);
        assert_eq!(verifier.verify(&bytes, from(), &mut plain), Ok(()));
    }
    // Started again (from 0 in the unkeyed header, as a restarted process does).
    let mut after = Signer::from_clock(&key("a"));
    assert!(after.next_sequence() > before.next_sequence());
    let bytes = signed(&mut after, 0, &[record(2)]);
    assert_eq!(verifier.verify(&bytes, from(), &mut plain), Ok(()));
}

#[test]
fn the_replay_window_is_rfc_4303s() {
    let mut window = ReplayWindow::starting_at(1000);
    assert!(!window.accepts(1000));
    assert!(window.accepts(1001) && window.accepts(999) && window.accepts(1000 - 63));
    assert!(!window.accepts(1000 - 64) && !window.accepts(0));
    window.record(1002);
    assert!(!window.accepts(1002) && !window.accepts(1000) && window.accepts(1001));
    window.record(u64::MAX);
    assert!(!window.accepts(u64::MAX) && window.accepts(u64::MAX - 1));
    assert!(!window.accepts(1002));
}

/// A keyless or keyed receiver (peers: localhost) on a kernel-chosen port, with its queues.
fn receiver(key: Option<SyncKey>) -> (SyncReceiver, SyncQueues, Arc<SyncCounters>) {
    let queues = SyncQueues::new(1, 4096);
    let counters = Arc::new(SyncCounters::default());
    let receiver = SyncReceiver::new(
        &SyncConfig {
            interface: "lo".to_owned(),
            sync_id: SYNC_ID,
            peers: Some(vec![Ipv4Addr::LOCALHOST]),
            port: 0,
            key,
        },
        queues.imports().to_vec(),
        Routing::Broadcast,
        Arc::clone(&counters),
    )
    .unwrap();
    (receiver, queues, counters)
}

#[test]
fn a_keyed_receiver_counts_each_refusal_and_imports_nothing_refused() {
    let (mut receiver, queues, counters) = receiver(Some(key("a")));
    let mut signer = Signer::new(&key("a"), 1);
    let good = signed(&mut signer, 0, &[record(1)]);
    assert_eq!(receiver.handle(&good, from(), Role::Backup), 1);
    assert_eq!(receiver.handle(&good, from(), Role::Backup), 0);
    let mut keyless = Vec::new();
    encode_datagram(SYNC_ID, 1, &[record(2)], &mut keyless);
    assert_eq!(receiver.handle(&keyless, from(), Role::Backup), 0);
    let forged = signed(&mut Signer::new(&key("b"), 9), 2, &[record(3)]);
    assert_eq!(receiver.handle(&forged, from(), Role::Backup), 0);
    // Another cluster's, with its own key: foreign, not a forgery.
    let mut other = Vec::new();
    encode_datagram(SYNC_ID + 1, 0, &[record(4)], &mut other);
    Signer::new(&key("c"), 1).sign(&mut other);
    assert_eq!(receiver.handle(&other, from(), Role::Backup), 0);
    let stats = counters.snapshot();
    assert_eq!(
        (
            stats.auth_replayed,
            stats.auth_missing,
            stats.auth_bad_tag,
            stats.datagrams_foreign
        ),
        (1, 1, 1, 1)
    );
    assert_eq!((stats.datagrams_received, stats.records_received), (1, 1));
    assert_eq!(queues.imports()[0].pop(), Some(record(1)));
    assert!(queues.imports()[0].is_empty());
}

#[test]
fn a_keyless_receiver_ignores_keyed_datagrams() {
    let (mut receiver, queues, counters) = receiver(None);
    let keyed = signed(&mut Signer::new(&key("a"), 1), 0, &[record(1)]);
    assert_eq!(receiver.handle(&keyed, from(), Role::Backup), 0);
    let stats = counters.snapshot();
    assert_eq!((stats.auth_unexpected, stats.datagrams_malformed), (1, 0));
    assert!(queues.imports()[0].is_empty());
    // The unkeyed datagram is still read as before.
    let mut keyless = Vec::new();
    encode_datagram(SYNC_ID, 1, &[record(2)], &mut keyless);
    assert_eq!(receiver.handle(&keyless, from(), Role::Backup), 1);
}

/// A sender (with `key`) to a plain socket on localhost, to see its bytes.
fn sender_to_socket(key: Option<SyncKey>) -> (SyncSender, UdpSocket, SyncQueues) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let queues = SyncQueues::new(1, 4096);
    let sender = SyncSender::new(
        &SyncConfig {
            interface: "lo".to_owned(),
            sync_id: SYNC_ID,
            peers: Some(vec![Ipv4Addr::LOCALHOST]),
            port: socket.local_addr().unwrap().port(),
            key,
        },
        queues.exports().to_vec(),
        Arc::new(SyncCounters::default()),
    )
    .unwrap();
    (sender, socket, queues)
}

/// Exports `records`, lets the sender send them all, and returns the datagrams received.
fn send(
    sender: &mut SyncSender,
    socket: &UdpSocket,
    queues: &SyncQueues,
    records: &[SyncRecord],
) -> Vec<Vec<u8>> {
    for &record in records {
        queues.exports()[0].push(record).unwrap();
    }
    let start = Instant::now();
    sender.poll(Role::Master, start);
    sender.poll(Role::Master, start + FLUSH_INTERVAL);
    let mut datagrams = Vec::new();
    let mut buffer = vec![0; 1 << 16];
    let mut records_seen = 0;
    while records_seen < records.len() {
        let (length, _) = socket.recv_from(&mut buffer).unwrap();
        let bytes = buffer[..length].to_vec();
        records_seen += usize::from(u16::from_be_bytes([bytes[6], bytes[7]]));
        datagrams.push(bytes);
    }
    datagrams
}

#[test]
fn without_a_key_the_sender_writes_the_unkeyed_bytes() {
    let (mut sender, socket, queues) = sender_to_socket(None);
    assert_eq!(sender.auth_sequence(), None);
    let records = [record(1), record(2), record(3)];
    let got = send(&mut sender, &socket, &queues, &records);
    let mut want = Vec::new();
    encode_datagram(SYNC_ID, 0, &records, &mut want);
    assert_eq!(got, [want]);
}

#[test]
fn with_a_key_full_datagrams_still_fit_the_mtu() {
    let (mut sender, socket, queues) = sender_to_socket(Some(key("a")));
    let max = sender.max_datagram_len();
    // More than one datagram's worth, so the first is as full as the trailer lets it be.
    let count = max / RECORD_LEN + 10;
    let records: Vec<_> = (0..count).map(|n| record(n as u16)).collect();
    let got = send(&mut sender, &socket, &queues, &records);
    assert_eq!(got.len(), 2);
    let mut verifier = Verifier::new(&key("a"));
    let mut plain = Vec::new();
    let mut received = Vec::new();
    for bytes in &got {
        assert!(bytes.len() <= max, "{} > {max}", bytes.len());
        verifier.verify(bytes, from(), &mut plain).unwrap();
        let datagram = Datagram::parse(&plain, SYNC_ID).unwrap();
        received.extend(datagram.records().map(Result::unwrap));
    }
    assert!(got[0].len() + RECORD_LEN > max, "the first was not full");
    assert_eq!(received, records);
}

#[test]
fn a_new_key_applies_at_run_time_on_both_sides() {
    // The sender's key changes: its next datagram is signed with the new one, numbered on.
    let (mut sender, socket, queues) = sender_to_socket(Some(key("a")));
    let keys = Arc::new(KeyCell::new(Some(key("a"))));
    sender.share_keys(Arc::clone(&keys));
    let first = send(&mut sender, &socket, &queues, &[record(1)]);
    keys.set(Some(key("b")));
    let second = send(&mut sender, &socket, &queues, &[record(2)]);
    let mut plain = Vec::new();
    let mut old = Verifier::new(&key("a"));
    let mut new = Verifier::new(&key("b"));
    assert_eq!(old.verify(&first[0], from(), &mut plain), Ok(()));
    assert_eq!(
        old.verify(&second[0], from(), &mut plain),
        Err(AuthError::BadTag)
    );
    assert_eq!(new.verify(&second[0], from(), &mut plain), Ok(()));
    let sequence = |bytes: &[u8]| {
        let at = bytes.len() - TRAILER_LEN;
        u64::from_be_bytes(bytes[at..at + SEQUENCE_LEN].try_into().unwrap())
    };
    assert_eq!(sequence(&second[0]), sequence(&first[0]) + 1);
    // No key any more: unkeyed bytes again.
    keys.set(None);
    let third = send(&mut sender, &socket, &queues, &[record(3)]);
    assert!(!is_keyed(&third[0]));

    // The receiving daemon's key changes: refused before, applied after.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let queues = SyncQueues::new(1, 64);
    let daemon = SyncDaemon::start(
        &SyncConfig {
            interface: "lo".to_owned(),
            sync_id: SYNC_ID,
            peers: Some(vec![Ipv4Addr::LOCALHOST]),
            port,
            key: Some(key("a")),
        },
        &queues,
        Routing::Broadcast,
        Role::Backup,
    )
    .unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut signer = Signer::new(&key("b"), 1);
    peer.send_to(&signed(&mut signer, 0, &[record(4)]), ("127.0.0.1", port))
        .unwrap();
    let stats = || daemon.counters().snapshot();
    assert!(eventually(|| stats().auth_bad_tag == 1), "{:?}", stats());
    daemon.set_key(Some(key("b")));
    // The receiver picks the key up with the next datagram it handles.
    let retry = signed(&mut signer, 1, &[record(5)]);
    peer.send_to(&retry, ("127.0.0.1", port)).unwrap();
    assert!(
        eventually(|| queues.imports()[0].len() == 1),
        "{:?}",
        stats()
    );
    assert_eq!(queues.imports()[0].pop(), Some(record(5)));
    daemon.stop();
}

/// Waits (at most 2 s) until `done` holds.
fn eventually(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    done()
}

proptest! {
    /// Any bytes: no panic, and nothing authenticates without the key (tag forgery by chance
    /// is 2^-256).
    #[test]
    fn arbitrary_bytes_never_panic_nor_authenticate(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        keyed_prefix in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if keyed_prefix && bytes.len() > HEADER_LEN {
            bytes[..4].copy_from_slice(&MAGIC);
            bytes[4] |= KEYED;
        }
        let mut verifier = Verifier::new(&key("a"));
        let mut plain = Vec::new();
        prop_assert!(verifier.verify(&bytes, from(), &mut plain).is_err());
        let (mut keyed, queues, _) = receiver(Some(key("a")));
        prop_assert_eq!(keyed.handle(&bytes, from(), Role::Backup), 0);
        prop_assert!(queues.imports()[0].is_empty());
        let (mut keyless, _, _) = receiver(None);
        keyless.handle(&bytes, from(), Role::Backup);
    }

    /// A signed datagram with any one byte changed to any other value is refused.
    #[test]
    fn any_altered_byte_is_refused(
        position in any::<prop::sample::Index>(),
        change in 1u8..=255,
        sequence in any::<u64>(),
    ) {
        let mut signer = Signer::new(&key("a"), sequence);
        let mut bytes = signed(&mut signer, 0, &[record(1), record(2)]);
        let at = position.index(bytes.len());
        bytes[at] ^= change;
        let mut plain = Vec::new();
        prop_assert!(Verifier::new(&key("a")).verify(&bytes, from(), &mut plain).is_err());
    }
}
