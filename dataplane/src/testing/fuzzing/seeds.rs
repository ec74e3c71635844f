//! Seed inputs for the `frame_pipeline` harness, in its input format, from the fixture builder:
//! every kind of frame the table serves (DR, NAT both ways, TUN 4in4/4in6/6in6, ICMP and ICMPv6
//! errors both ways) and a few multi-step flows. Test support: allocates, panics on a bad
//! fixture.

use super::super::{sync_connection, FrameBuilder, Ipv6FrameBuilder, SERVER_SIDE_MAC};
use crate::sync::MAX_RECORD_LEN;
use crate::wire::{icmp, icmpv6};

/// Seed inputs for `frame_pipeline`, by name: each fixture frame alone (config byte 0, headroom
/// 256), and a few flows in several steps (a NAT connection and its replies, a TUN flow that
/// grows too big, synced and routed variants).
pub fn frame_pipeline_seeds() -> Vec<(String, Vec<u8>)> {
    let frames = seed_frames();
    let mut seeds: Vec<(String, Vec<u8>)> = frames
        .iter()
        .map(|(name, frame)| (format!("seed-{name}"), input(0, &[frame_step(6, frame)])))
        .collect();
    let frame = |name: &str| {
        frames.iter().find(|(seed, _)| *seed == name).map_or_else(
            || panic!("no seed frame {name}"),
            |(_, frame)| frame.clone(),
        )
    };
    let nat = [
        frame_step(6, &frame("nat4-syn")),
        frame_step(6, &frame("nat4-reply-synack")),
        frame_step(6, &frame("nat4-icmp-from-server")),
        vec![2 | (4 << 2)],
        frame_step(6, &frame("nat4-reply-rst")),
    ];
    for config in [0, 1, 3, 4, 5] {
        seeds.push((
            format!("seed-nat4-flow-config{config}"),
            input(config, &nat),
        ));
    }
    let nat6 = [
        frame_step(6, &frame("nat6-syn")),
        frame_step(6, &frame("nat6-reply-synack")),
        frame_step(6, &frame("nat6-icmp6-from-server")),
        frame_step(6, &frame("nat6-udp")),
        frame_step(6, &frame("nat6-udp-reply")),
    ];
    for config in [0, 3, 4] {
        seeds.push((
            format!("seed-nat6-flow-config{config}"),
            input(config, &nat6),
        ));
    }
    let tun = [
        frame_step(6, &frame("tun4-syn")),
        frame_step(6, &frame("tun4-big-df")),
        frame_step(6, &frame("tun4-big-no-df")),
        frame_step(1, &frame("tun4-syn")),
        frame_step(6, &frame("tun4in6-syn")),
        frame_step(6, &frame("tun6-syn")),
        frame_step(6, &frame("tun6-big")),
        frame_step(6, &frame("tun4-icmp-about-reply")),
        frame_step(6, &frame("tun6-icmp6-about-reply")),
    ];
    for config in [0, 1, 4] {
        seeds.push((format!("seed-tun-flow-config{config}"), input(config, &tun)));
    }
    let mut record = [0; MAX_RECORD_LEN];
    sync_connection(1).encode(&mut record);
    let mut synced = input(4, &[frame_step(6, &frame("dr4-syn"))]);
    synced.push(3 | 4);
    synced.extend_from_slice(&record);
    seeds.push(("seed-sync-import".to_owned(), synced));
    seeds
}

/// An input of `config` and `steps`.
fn input(config: u8, steps: &[Vec<u8>]) -> Vec<u8> {
    let mut input = vec![config];
    for step in steps {
        input.extend_from_slice(step);
    }
    input
}

/// A frame step with headroom `HEADROOMS[headroom]` (see the parent module).
fn frame_step(headroom: u8, frame: &[u8]) -> Vec<u8> {
    let length = u16::try_from(frame.len()).expect("a fixture frame is short");
    let mut step = vec![headroom << 2];
    step.extend_from_slice(&length.to_be_bytes());
    step.extend_from_slice(frame);
    step
}

/// The fixture frames the seeds are made of, by name.
#[expect(
    clippy::too_many_lines,
    reason = "a table of fixture frames, one entry per kind, reads best in one place"
)]
fn seed_frames() -> Vec<(&'static str, Vec<u8>)> {
    let client6 = "[2001:db8::2]:40000";
    vec![
        (
            "dr4-syn",
            FrameBuilder::tcp().dst("192.0.2.10:80").syn().build(),
        ),
        (
            "dr4-ack-payload",
            FrameBuilder::tcp()
                .dst("192.0.2.10:80")
                .ack()
                .payload(&[0x55; 100])
                .build(),
        ),
        (
            "dr4-unresolved",
            FrameBuilder::tcp().dst("192.0.2.20:80").syn().build(),
        ),
        (
            "dr4-udp",
            FrameBuilder::udp()
                .dst("192.0.2.53:53")
                .payload(&[1, 2, 3])
                .build(),
        ),
        (
            "dr4-options",
            FrameBuilder::tcp().dst("192.0.2.10:80").ihl(6).build(),
        ),
        (
            "dr4-persistent",
            FrameBuilder::tcp().dst("192.0.2.40:443").syn().build(),
        ),
        (
            "icmp-echo",
            FrameBuilder::icmp().dst("192.0.2.10:0").build(),
        ),
        (
            "nat4-syn",
            FrameBuilder::tcp().dst("192.0.2.60:80").syn().build(),
        ),
        (
            "nat4-udp",
            FrameBuilder::udp()
                .dst("192.0.2.60:53")
                .payload(b"q")
                .build(),
        ),
        (
            "nat4-reply-synack",
            FrameBuilder::tcp()
                .src("198.51.100.21:8080")
                .dst("192.0.2.2:40000")
                .eth_dst(SERVER_SIDE_MAC)
                .syn()
                .ack()
                .build(),
        ),
        (
            "nat4-reply-rst",
            FrameBuilder::tcp()
                .src("198.51.100.21:8080")
                .dst("192.0.2.2:40000")
                .eth_dst(SERVER_SIDE_MAC)
                .rst()
                .build(),
        ),
        (
            "nat4-udp-reply",
            FrameBuilder::udp()
                .src("198.51.100.23:5353")
                .dst("192.0.2.2:40000")
                .payload(b"a")
                .build(),
        ),
        (
            "nat4-icmp-from-server",
            super::super::icmp_error(
                "198.51.100.21:0",
                "192.0.2.2:0",
                icmp::message::DEST_UNREACHABLE,
                icmp::unreachable::PORT,
                0,
                &FrameBuilder::tcp().dst("198.51.100.21:8080").build_ipv4(),
            )
            .build(),
        ),
        (
            "nat4-icmp-frag-needed-to-vip",
            super::super::icmp_error(
                "203.0.113.1:0",
                "192.0.2.60:0",
                icmp::message::DEST_UNREACHABLE,
                icmp::unreachable::FRAG_NEEDED,
                576,
                &FrameBuilder::tcp()
                    .src("192.0.2.60:80")
                    .dst("192.0.2.2:40000")
                    .build_ipv4(),
            )
            .build(),
        ),
        (
            "tun4-syn",
            FrameBuilder::tcp().dst("192.0.2.70:80").syn().build(),
        ),
        (
            "tun4-big-df",
            FrameBuilder::tcp()
                .dst("192.0.2.70:80")
                .ack()
                .payload(&[7; 600])
                .build(),
        ),
        (
            "tun4-big-no-df",
            FrameBuilder::tcp()
                .dst("192.0.2.70:80")
                .dont_fragment(false)
                .ack()
                .payload(&[7; 600])
                .build(),
        ),
        (
            "tun4-icmp-about-reply",
            super::super::icmp_error(
                "203.0.113.1:0",
                "192.0.2.70:0",
                icmp::message::DEST_UNREACHABLE,
                icmp::unreachable::FRAG_NEEDED,
                576,
                &FrameBuilder::tcp()
                    .src("192.0.2.70:80")
                    .dst("192.0.2.2:40000")
                    .build_ipv4(),
            )
            .build(),
        ),
        (
            "tun4in6-syn",
            FrameBuilder::tcp().dst("192.0.2.71:80").syn().build(),
        ),
        (
            "dr6-syn",
            Ipv6FrameBuilder::tcp()
                .dst("[2001:db8::10]:80")
                .syn()
                .build(),
        ),
        (
            "dr6-extension-headers",
            Ipv6FrameBuilder::tcp()
                .dst("[2001:db8::10]:80")
                .hop_by_hop(0)
                .routing()
                .destination_options(1)
                .ack()
                .build(),
        ),
        (
            "nat6-syn",
            Ipv6FrameBuilder::tcp()
                .dst("[2001:db8::60]:80")
                .syn()
                .build(),
        ),
        (
            "nat6-reply-synack",
            Ipv6FrameBuilder::tcp()
                .src("[2001:db8:a::1]:8080")
                .dst(client6)
                .eth_dst(SERVER_SIDE_MAC)
                .syn()
                .ack()
                .build(),
        ),
        (
            "nat6-udp",
            Ipv6FrameBuilder::udp()
                .dst("[2001:db8::60]:53")
                .payload(b"q")
                .build(),
        ),
        (
            "nat6-udp-reply",
            Ipv6FrameBuilder::udp()
                .src("[2001:db8:a::2]:53")
                .dst(client6)
                .payload(b"a")
                .build(),
        ),
        (
            "nat6-fragment",
            Ipv6FrameBuilder::tcp()
                .dst("[2001:db8::60]:80")
                .fragment(0, true)
                .build(),
        ),
        (
            "nat6-icmp6-from-server",
            icmp6_error(
                "[2001:db8:a::1]:0",
                "[2001:db8::2]:0",
                icmpv6::message::DEST_UNREACHABLE,
                &Ipv6FrameBuilder::tcp()
                    .dst("[2001:db8:a::1]:8080")
                    .build_ipv6(),
            ),
        ),
        (
            "nat6-icmp6-too-big-to-vip",
            icmp6_error(
                "[2001:db8:ff::1]:0",
                "[2001:db8::60]:0",
                icmpv6::message::PACKET_TOO_BIG,
                &Ipv6FrameBuilder::udp()
                    .src("[2001:db8::60]:53")
                    .dst(client6)
                    .payload(&[9; 30])
                    .build_ipv6(),
            ),
        ),
        (
            "tun6-syn",
            Ipv6FrameBuilder::tcp()
                .dst("[2001:db8::70]:80")
                .syn()
                .build(),
        ),
        (
            "tun6-big",
            Ipv6FrameBuilder::tcp()
                .dst("[2001:db8::70]:80")
                .ack()
                .payload(&[7; 1300])
                .build(),
        ),
        (
            "tun6-udp",
            Ipv6FrameBuilder::udp()
                .dst("[2001:db8::70]:53")
                .payload(b"q")
                .build(),
        ),
        (
            "tun6-icmp6-about-reply",
            icmp6_error(
                "[2001:db8:ff::1]:0",
                "[2001:db8::70]:0",
                icmpv6::message::TIME_EXCEEDED,
                &Ipv6FrameBuilder::tcp()
                    .src("[2001:db8::70]:80")
                    .dst(client6)
                    .build_ipv6()[..48],
            ),
        ),
    ]
}

/// An ICMPv6 error of `msg_type` (code 0, MTU 1280 for packet too big) quoting `quote`.
fn icmp6_error(src: &str, dst: &str, msg_type: u8, quote: &[u8]) -> Vec<u8> {
    Ipv6FrameBuilder::icmp6()
        .src(src)
        .dst(dst)
        .icmp6_header(msg_type, 0, 1280)
        .payload(quote)
        .build()
}
