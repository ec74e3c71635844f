//! The data plane's fuzzing harnesses: the bodies of the cargo-fuzz targets in `fuzz/`
//! (`frame_pipeline`), kept here so the stable test suite replays every committed corpus input
//! through the very same code (`dataplane/tests/fuzz_corpus.rs`) and CI needs no nightly.
//!
//! A harness takes arbitrary bytes and panics only when an invariant breaks: that panic is the
//! finding. It allocates and builds fixtures freely (it is test support, never on a worker's
//! path) but keeps its tables across calls, since building Maglev tables per input would cost
//! more than the pipeline it exercises.
//!
//! # `frame_pipeline` input
//!
//! The first byte picks the table and the pipeline: bit 0 next hops from a FIB (a default route
//! through two gateways, one unresolved, a blackhole, a route out of an interface not served),
//! bit 1 NAT replies by route instead of by last hop, bit 2 state sync on (exports into a queue
//! of 4, imports). The rest is a list of steps, each opening with an operation byte `op`:
//! - `op % 4` 0 or 1: a frame, `op >> 2 & 7` picking its headroom in the chunk (0 to 300
//!   bytes, so TUN meets too little), then a big-endian `u16` length and that many bytes (fewer
//!   if the input ends first);
//! - `op % 4` 2: the clock moves `2^(op >> 2 & 15)` seconds and housekeeping runs;
//! - `op % 4` 3: a sync record: the next [`MAX_RECORD_LEN`] bytes are decoded and, if valid,
//!   imported; with `op & 4`, the export queue is drained first, every record checked to
//!   survive its own wire form.
//!
//! The pipeline does not take the interface a frame came in on (it tells a client's frame from
//! a NAT reply by its addresses), so there is no port to choose: the table holds a service of
//! every forwarding mode and the seeds ([`frame_pipeline_seeds`]) hold frames of each, replies
//! and ICMP errors included, for the fuzzer to start from.
//!
//! Checked on every frame: the pipeline returns; a transmitted frame lies inside the chunk, starts
//! at most an IPv6 header's length before the received one, is at least an Ethernet header and
//! at most that much longer; a frame sent in place or tunnelled keeps every checksum that was
//! right when it came in (IPv4 header, TCP, UDP, ICMP, ICMPv6), and a tunnel's new outer IPv4
//! header is right; a dropped frame leaves the chunk untouched and is counted under exactly one
//! reason, a sent one under none. After the steps: the backend gauges equal a recount of the
//! connection table, and once every entry has expired, the table is empty and every gauge 0.

mod seeds;
mod table;

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{assert_gauges_match, counter_blocks, DIRECTOR_MAC};
use crate::service::{NatReply, ServiceTable};
use crate::sync::{SyncQueues, SyncRecord, MAX_RECORD_LEN};
use crate::wire::ethernet::EtherType;
use crate::wire::{checksum, icmp, EthernetFrame, Ipv4Packet, Ipv6Packet};
use crate::{DropReason, Egress, PersistenceTable, Pipeline, Verdict, WorkerCounters};

/// Backend counter slots the fuzzing table uses.
const SLOTS: usize = 24;

pub use seeds::frame_pipeline_seeds;
pub use table::fuzzing_table;
use table::routed;
/// Headrooms a frame step can pick: none, less than a tunnel header, exactly one, AF_XDP's.
const HEADROOMS: [usize; 8] = [0, 14, 20, 39, 40, 64, 256, 300];
/// Connection table size: small, so a few frames fill it and reach eviction.
const MAX_CONNECTIONS: usize = 8;
/// Bytes after a frame in its chunk.
const TAILROOM: usize = 16;
/// The longest a tunnel makes a frame (an outer IPv6 header).
const MAX_GROWTH: usize = crate::rewrite::tun::HEADROOM6;

thread_local! {
    /// The three table variants ([`table_variant`]), built on first use.
    static TABLES: RefCell<Option<[ServiceTable; 3]>> = const { RefCell::new(None) };
}

/// Runs one `frame_pipeline` input (see the module docs); panics if an invariant breaks.
pub fn frame_pipeline(data: &[u8]) {
    let Some((&config, mut steps)) = data.split_first() else {
        return;
    };
    let variant = table_variant(config);
    TABLES.with(|tables| {
        let mut tables = tables.borrow_mut();
        let table = &mut tables.get_or_insert_with(|| {
            [
                fuzzing_table(),
                routed(fuzzing_table(), NatReply::LastHop),
                routed(fuzzing_table(), NatReply::Route),
            ]
        })[variant];
        // Fresh shared state per input, so every input runs alike whatever ran before it.
        table.persistence = Arc::new(PersistenceTable::new(8));
        table.backend_counters = counter_blocks(1, SLOTS);
        let table = &*table;

        let counters = WorkerCounters::default();
        let queues = SyncQueues::new(1, 4);
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, MAX_CONNECTIONS);
        if config & 4 != 0 {
            pipeline = pipeline.with_sync(queues.worker(0, true, true, Duration::ZERO));
        }
        let mut now = Instant::now();
        while let Some((&op, rest)) = steps.split_first() {
            steps = rest;
            match op % 4 {
                2 => {
                    now += Duration::from_secs(1 << ((op >> 2) & 15));
                    pipeline.housekeeping(table, now, &counters);
                }
                3 => {
                    let (record, rest) = steps.split_at(steps.len().min(MAX_RECORD_LEN));
                    steps = rest;
                    if op & 4 != 0 {
                        check_exports(&queues);
                    }
                    if let Ok(record) = SyncRecord::decode(record) {
                        let _ = queues.imports()[0].push(record);
                    }
                    pipeline.drain_imports(table, now, &counters);
                }
                _ => {
                    let headroom = HEADROOMS[usize::from((op >> 2) & 7)];
                    let (len, rest) = match steps {
                        [high, low, rest @ ..] => {
                            (usize::from(u16::from_be_bytes([*high, *low])), rest)
                        }
                        _ => (0, &[][..]),
                    };
                    let (frame, rest) = rest.split_at(rest.len().min(len));
                    steps = rest;
                    process(&mut pipeline, table, &counters, frame, headroom, now);
                }
            }
        }
        check_exports(&queues);
        assert_gauges_match(pipeline.connections(), table, 0);
        // Everything expires within a day (the longest timeout is TCP established's 15 min).
        pipeline.housekeeping(table, now + Duration::from_secs(2 * 86_400), &counters);
        assert!(
            pipeline.connections().is_empty(),
            "{} connection entries outlived every timeout",
            pipeline.connections().len()
        );
        assert_gauges_match(pipeline.connections(), table, 0);
    });
}

/// Which of the three tables `config` asks for: plain, routed with NAT replies by last hop,
/// routed with NAT replies by route.
fn table_variant(config: u8) -> usize {
    match (config & 1 != 0, config & 2 != 0) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => 2,
    }
}

/// One frame through the pipeline at `headroom` in a chunk, with the per-frame checks.
fn process(
    pipeline: &mut Pipeline,
    table: &ServiceTable,
    counters: &WorkerCounters,
    frame: &[u8],
    headroom: usize,
    now: Instant,
) {
    let len = frame.len();
    let mut chunk = vec![0xee; headroom + len + TAILROOM];
    chunk[headroom..headroom + len].copy_from_slice(frame);
    let drops_before = drop_counts(counters);
    let verdict = pipeline.process(&mut chunk, headroom, len, table, now, counters);
    let drops_after = drop_counts(counters);
    let counted: Vec<DropReason> = DropReason::ALL
        .into_iter()
        .filter(|&reason| drops_after[reason as usize] != drops_before[reason as usize])
        .collect();
    match verdict {
        Verdict::Tx {
            start,
            len: sent,
            egress,
        } => {
            assert!(
                counted.is_empty(),
                "sent, yet counted as dropped: {counted:?}"
            );
            assert!(
                start
                    .checked_add(sent)
                    .is_some_and(|end| end <= chunk.len()),
                "sent {start}..+{sent} outside a chunk of {}",
                chunk.len()
            );
            assert!(
                start + MAX_GROWTH >= headroom && sent >= 14 && sent <= len + MAX_GROWTH,
                "sent {start}..+{sent} ({egress:?}) for a frame at {headroom}..+{len}"
            );
            check_sent_checksums(frame, &chunk[start..start + sent], start < headroom, egress);
        }
        Verdict::Drop(reason) => {
            assert_eq!(
                counted,
                [reason],
                "dropped as {reason:?}, counted under {counted:?}"
            );
            assert_eq!(
                drops_after[reason as usize],
                drops_before[reason as usize] + 1,
                "{reason:?} counted more than once"
            );
            assert!(
                chunk[headroom..headroom + len] == *frame
                    && chunk[..headroom].iter().all(|&byte| byte == 0xee)
                    && chunk[headroom + len..].iter().all(|&byte| byte == 0xee),
                "dropped as {reason:?} but changed the chunk"
            );
        }
    }
}

fn drop_counts(counters: &WorkerCounters) -> Vec<u64> {
    counters
        .drops
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect()
}

/// A sent frame keeps the checksums that were right in the received one; a tunnel's outer
/// IPv4 header is always right.
fn check_sent_checksums(received: &[u8], sent: &[u8], tunnelled: bool, egress: Egress) {
    let after = checksums(sent);
    if tunnelled {
        assert_ne!(
            after.ip,
            Some(false),
            "a tunnel's outer IPv4 header checksum is wrong ({egress:?})"
        );
        return;
    }
    let before = checksums(received);
    // An ICMP error the director answers with is a new packet: its own checksums must be right.
    let answered = before.protocol != after.protocol;
    for (name, before, after) in [
        ("IP header", before.ip, after.ip),
        ("L4", before.l4, after.l4),
    ] {
        if answered || before == Some(true) {
            assert_ne!(
                after,
                Some(false),
                "the {name} checksum was right when received and is wrong as sent ({egress:?})"
            );
        }
    }
}

/// What [`checksums`] found in a frame.
#[derive(Debug)]
struct Checksums {
    /// The protocol after the network header (`None`: not IPv4/IPv6, or IPv6 with extension
    /// headers).
    protocol: Option<u8>,
    /// Whether the IPv4 header checksum is right (`None`: not IPv4).
    ip: Option<bool>,
    /// Whether the TCP, UDP, ICMP or ICMPv6 checksum is right (`None`: none of them, a
    /// fragment, or a UDP datagram over IPv4 without a checksum).
    l4: Option<bool>,
}

/// The checksums of an Ethernet frame carrying IPv4 or IPv6 (without extension headers).
fn checksums(frame: &[u8]) -> Checksums {
    let mut found = Checksums {
        protocol: None,
        ip: None,
        l4: None,
    };
    let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
        return found;
    };
    let payload = ethernet.payload();
    match ethernet.ethertype() {
        EtherType::IPV4 => {
            let Ok(ip) = Ipv4Packet::new_checked(payload) else {
                return found;
            };
            found.protocol = Some(ip.protocol());
            found.ip = Some(ip.verify_checksum());
            if ip.is_fragment() {
                return found;
            }
            let l4 = ip.payload();
            let Ok(length) = u16::try_from(l4.len()) else {
                return found;
            };
            let pseudo =
                checksum::pseudo_header(ip.src_addr(), ip.dst_addr(), ip.protocol(), length);
            found.l4 = match ip.protocol() {
                6 if l4.len() >= 20 => {
                    Some(checksum::combine(&[pseudo, checksum::data(l4)]) == 0xffff)
                }
                17 if l4.len() >= 8 && l4[6..8] != [0, 0] => {
                    Some(checksum::combine(&[pseudo, checksum::data(l4)]) == 0xffff)
                }
                1 if l4.len() >= 8 => Some(
                    icmp::Icmpv4Packet::new_checked(l4).is_ok_and(|icmp| icmp.verify_checksum()),
                ),
                _ => None,
            };
        }
        EtherType::IPV6 => {
            let Ok(ip) = Ipv6Packet::new_checked(payload) else {
                return found;
            };
            let l4 = ip.payload();
            let minimum = match ip.next_header() {
                6 => 20,
                17 | 58 => 8,
                _ => return found,
            };
            found.protocol = Some(ip.next_header());
            if l4.len() < minimum {
                return found;
            }
            let Ok(length) = u32::try_from(l4.len()) else {
                return found;
            };
            let pseudo =
                checksum::pseudo_header6(ip.src_addr(), ip.dst_addr(), ip.next_header(), length);
            found.l4 = Some(checksum::combine(&[pseudo, checksum::data(l4)]) == 0xffff);
        }
        _ => {}
    }
    found
}

/// Pops every exported record and checks that it decodes from its own wire form unchanged.
fn check_exports(queues: &SyncQueues) {
    while let Some(record) = queues.exports()[0].pop() {
        let mut bytes = [0; MAX_RECORD_LEN];
        let length = record.encode(&mut bytes);
        assert_eq!(
            SyncRecord::decode(&bytes[..length]),
            Ok(record),
            "an exported record does not survive its wire form"
        );
    }
}
