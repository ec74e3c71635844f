//! The XDP programs through plain BPF_PROG_TEST_RUN (loaded, never attached): the generator
//! produces, flow after flow, exactly the frames the Rust builder makes from scratch, and with
//! a stamp still valid checksums; the sink counts per destination MAC and finds stamps under
//! UDP, TCP and IP-in-IP. Needs root (CAP_BPF); skipped with a message otherwise.

use std::net::{Ipv4Addr, SocketAddrV4};

use dataplane::testing::{assert_frame_eq, FrameBuilder};
use dataplane::wire::{Ipv4Packet, TcpSegment, UdpDatagram};
use pktgen::abi;
use pktgen::frame::{FrameKind, FrameSpec};
use pktgen::histogram;
use pktgen::send::Generator;
use pktgen::sink::Sink;

const XDP_DROP: u32 = 1;
const XDP_REDIRECT: u32 = 4;

fn spec(kind: FrameKind, size: usize, flows: u32) -> FrameSpec {
    FrameSpec {
        kind,
        size,
        src_mac: [0x02, 0, 0, 0, 0, 0x01],
        dst_mac: [0x02, 0, 0, 0, 0, 0x0a],
        src_net: "198.51.100.0/30".parse().unwrap(),
        src_port: 40_000,
        dst: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 80),
        flows,
    }
}

/// CLOCK_MONOTONIC now, in ns: what bpf_ktime_get_ns() reads.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) },
        0
    );
    now.tv_sec.cast_unsigned() * 1_000_000_000 + now.tv_nsec.cast_unsigned()
}

/// `frame` with a stamp taken `age_ns` ago at `offset` (the checksum left stale: the sink does
/// not check it).
fn stamped(mut frame: Vec<u8>, offset: usize, age_ns: u64) -> Vec<u8> {
    let stamp = (abi::STAMP_MAGIC << abi::STAMP_BITS)
        | ((monotonic_ns() - age_ns) & ((1 << abi::STAMP_BITS) - 1));
    frame[offset..offset + 8].copy_from_slice(&stamp.to_be_bytes());
    frame
}

#[test]
fn generator_makes_each_flows_frame_in_turn() {
    if !dataplane::testing::require_root() {
        return;
    }
    for kind in [FrameKind::Udp, FrameKind::TcpSyn, FrameKind::TcpAck] {
        for size in [62, 64, 1514] {
            let spec = spec(kind, size, 5);
            let generator = Generator::load(&spec, 1, false, None).unwrap();
            // Twice round the flows: the program wraps to flow 0.
            for run in 0..10u32 {
                let (action, frame) = generator.test_run().unwrap();
                assert_eq!(action, XDP_REDIRECT, "{kind:?} run {run}");
                let expected = spec.frame(run % spec.flows);
                assert_frame_eq(
                    &expected,
                    &frame,
                    &format!("{kind:?} {size} bytes, run {run}"),
                );
            }
            assert_eq!(generator.sent().unwrap(), 10);
        }
    }
}

#[test]
fn generator_rewrites_a_frame_changed_in_place() {
    if !dataplane::testing::require_root() {
        return;
    }
    // Live frames are recycled without being restored; a hairpin may have swapped the MACs.
    // The program writes every header byte, so the next frame is whole again. Here the input is
    // garbage where the headers go.
    let spec = spec(FrameKind::TcpAck, 64, 3);
    let generator = Generator::load(&spec, 1, false, None).unwrap();
    let mut out = vec![0; 64];
    let input = vec![0xa5; 64];
    let output = generator
        .test_run_on(&input, &mut out)
        .expect("test run on a scribbled frame");
    assert_eq!(output, XDP_REDIRECT);
    // Every header byte is the flow's; the L4 checksum is the template's (for a zero payload,
    // not this scribbled one), and the payload stays what it was.
    let expected = spec.frame(0);
    let check = abi::OFF_TCP_CHECK;
    assert_frame_eq(
        &expected[..check],
        &out[..check],
        "headers before the checksum",
    );
    assert_eq!(
        &expected[check..abi::HEADER_COPY],
        &out[check..abi::HEADER_COPY]
    );
    assert_eq!(&input[abi::HEADER_COPY..], &out[abi::HEADER_COPY..]);
}

#[test]
fn generator_stamps_keep_checksums_valid() {
    if !dataplane::testing::require_root() {
        return;
    }
    for kind in [FrameKind::Udp, FrameKind::TcpSyn, FrameKind::TcpAck] {
        let spec = spec(kind, 64, 4);
        let generator = Generator::load(&spec, 1, true, None).unwrap();
        for run in 0..8u32 {
            let before = monotonic_ns();
            let (action, frame) = generator.test_run().unwrap();
            let after = monotonic_ns();
            assert_eq!(action, XDP_REDIRECT);
            let at = kind.payload_offset();
            let stamp = u64::from_be_bytes(frame[at..at + 8].try_into().unwrap());
            assert_eq!(
                stamp >> abi::STAMP_BITS,
                abi::STAMP_MAGIC,
                "{kind:?}: magic"
            );
            let mask = (1 << abi::STAMP_BITS) - 1;
            let time = stamp & mask;
            assert!(
                (before & mask..=after & mask).contains(&time),
                "{kind:?}: stamp {time} outside {before}..{after}"
            );
            // Apart from the stamp and the L4 checksum, the frame is the flow's.
            let mut expected = spec.frame(run % spec.flows);
            expected[at..at + 8].copy_from_slice(&frame[at..at + 8]);
            let check = kind.l4_check_offset();
            expected[check..check + 2].copy_from_slice(&frame[check..check + 2]);
            assert_frame_eq(&expected, &frame, &format!("{kind:?} run {run}"));
            let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
            assert!(ip.verify_checksum());
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let valid = if kind.is_tcp() {
                TcpSegment::new_checked(&frame[abi::OFF_L4..])
                    .unwrap()
                    .verify_checksum(src, dst)
            } else {
                UdpDatagram::new_checked(&frame[abi::OFF_L4..])
                    .unwrap()
                    .verify_checksum(src, dst)
            };
            assert!(valid, "{kind:?} run {run}: L4 checksum after the stamp");
        }
    }
}

#[test]
fn sink_counts_per_destination_mac_and_finds_stamps() {
    if !dataplane::testing::require_root() {
        return;
    }
    let sink = Sink::load(true).unwrap();
    let real_server = |n: u8| [0x02, 0, 0, 0, 0x01, n];
    let mut expected_macs = Vec::new();
    // Server 1: 3 stamped UDP frames 1 ms old. Server 2: 2 stamped TCP ACKs 50 us old.
    // Server 3: 1 IP-in-IP frame (LVS-TUN) with a stamped inner TCP segment 2 ms old.
    // Server 4: 1 unstamped UDP frame and one ARP request (counted, no latency).
    let udp = spec(FrameKind::Udp, 64, 1);
    for _ in 0..3 {
        let mut frame = stamped(udp.frame(0), abi::OFF_UDP_PAYLOAD, 1_000_000);
        frame[..6].copy_from_slice(&real_server(1));
        assert_eq!(sink.test_run(&frame).unwrap(), XDP_DROP);
    }
    expected_macs.push((real_server(1), 3));
    let ack = spec(FrameKind::TcpAck, 64, 1);
    for _ in 0..2 {
        let mut frame = stamped(ack.frame(0), abi::OFF_TCP_PAYLOAD, 50_000);
        frame[..6].copy_from_slice(&real_server(2));
        assert_eq!(sink.test_run(&frame).unwrap(), XDP_DROP);
    }
    expected_macs.push((real_server(2), 2));
    let inner = stamped(ack.frame(0), abi::OFF_TCP_PAYLOAD, 2_000_000);
    let tunnelled = FrameBuilder::ipip()
        .src("192.0.2.1:0")
        .dst("192.0.2.13:0")
        .eth_dst(real_server(3))
        .payload(&inner[14..])
        .build();
    assert_eq!(sink.test_run(&tunnelled).unwrap(), XDP_DROP);
    expected_macs.push((real_server(3), 1));
    let mut plain = udp.frame(0);
    plain[..6].copy_from_slice(&real_server(4));
    assert_eq!(sink.test_run(&plain).unwrap(), XDP_DROP);
    let arp = FrameBuilder::arp().eth_dst(real_server(4)).build();
    assert_eq!(sink.test_run(&arp).unwrap(), XDP_DROP);
    expected_macs.push((real_server(4), 2));

    let totals = sink.totals().unwrap();
    assert_eq!(totals.packets, 8);
    assert_eq!(totals.stamped, 6);
    assert_eq!(totals.mac_overflow, 0);
    let by_mac: Vec<([u8; 6], u64)> = sink
        .by_mac()
        .unwrap()
        .into_iter()
        .map(|(mac, counts)| (mac, counts.packets))
        .collect();
    let mut expected_sorted = expected_macs.clone();
    expected_sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(by_mac, expected_sorted);

    // Lower bounds only: a preempted test run may add any delay, never remove one.
    let counts = sink.latency_counts().unwrap();
    assert_eq!(counts.iter().sum::<u64>(), 6);
    let at_least = |age_ns: u64| -> u64 {
        counts
            .iter()
            .enumerate()
            .filter(|&(index, _)| histogram::bucket_range(index).1 > age_ns)
            .map(|(_, &count)| count)
            .sum()
    };
    assert_eq!(at_least(50_000), 6, "{counts:?}");
    assert_eq!(
        at_least(1_000_000),
        4,
        "3 UDP at 1 ms and the tunnelled one at 2 ms"
    );
    assert_eq!(at_least(2_000_000), 1, "the tunnelled one at 2 ms");
    let percentiles = histogram::percentiles(&counts).unwrap();
    assert_eq!(percentiles.samples, 6);
    assert!(percentiles.p50_ns >= 900_000, "{percentiles:?}");
}
