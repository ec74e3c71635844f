//! The decapsulation program through BPF_PROG_TEST_RUN (loaded, never attached), with one
//! golden table for outer IPv4 that also drives the Rust reference
//! (`dataplane::rewrite::tun::decapsulate`): for every frame both must agree on the verdict and,
//! when decapsulated, on every output byte. A second table covers outer IPv6 (6in6, 4in6), whose
//! expected frames are built independently of the program. Needs root (CAP_BPF); skipped with a
//! message otherwise.

mod frames;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};

use dataplane::rewrite::tun::{self, Decapsulated};
use dataplane::testing::{self, FrameBuilder};
use dataplane::wire::EtherType;
use dataplane::DropReason;
use frames::{
    ethernet, ipv6, next_header, udp6, with_payload_len, with_version, ETHERTYPE_IPV4,
    ETHERTYPE_IPV6, IPV6_HEADER_LEN,
};
use rs_decap::{action, Decap, DecapError, MAX_LOCAL_ADDRS};

/// The real server's own address: the outer destination.
const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const LOCAL_STR: &str = "192.0.2.11:0";
const DIRECTOR: &str = "192.0.2.3:0";
const CLIENT: &str = "192.0.2.2:40000";
const VIP: &str = "192.0.2.10:9000";

/// The real server's own IPv6 address: the outer destination of 6in6 and 4in6.
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 3);
const CLIENT6: SocketAddrV6 =
    SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 40000, 0, 0);
const VIP6: SocketAddrV6 = SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10),
    9000,
    0,
    0,
);

/// What should become of a frame.
#[derive(Debug)]
enum Expect {
    /// Decapsulated into exactly these bytes (XDP_PASS), counted under this counter.
    Inner(&'static str, Vec<u8>),
    /// Passed untouched, counted under this counter.
    Untouched(&'static str),
}

struct Case {
    description: &'static str,
    frame: Vec<u8>,
    expect: Expect,
}

/// IP-in-IP from the director to the real server carrying `inner`.
fn tunnelled(inner: &FrameBuilder) -> FrameBuilder {
    FrameBuilder::ipip()
        .src(DIRECTOR)
        .dst(LOCAL_STR)
        .payload(&inner.build_ipv4())
}

fn udp_to_vip() -> FrameBuilder {
    FrameBuilder::udp()
        .src(CLIENT)
        .dst(VIP)
        .payload(b"hello, real server")
}

#[expect(clippy::too_many_lines, reason = "a table")]
fn cases() -> Vec<Case> {
    let udp = udp_to_vip();
    let syn = FrameBuilder::tcp().src(CLIENT).dst("192.0.2.10:80").syn();
    // A bare 20-byte inner header: the outer frame (54 bytes) gets Ethernet padding.
    let tiny = FrameBuilder::udp().src(CLIENT).dst(VIP).l4_len(0);
    // The decapsulated frame keeps the outer frame's Ethernet header, which the builders'
    // defaults make the same as the inner one's; padding is not carried over.
    let inner_frame = |inner: &FrameBuilder| inner.clone().unpadded().build();
    vec![
        Case {
            description: "UDP to the VIP, tunnelled to us",
            frame: tunnelled(&udp).build(),
            expect: Expect::Inner("decapsulated_4in4", inner_frame(&udp)),
        },
        Case {
            description: "TCP SYN, tunnelled to us",
            frame: tunnelled(&syn).build(),
            expect: Expect::Inner("decapsulated_4in4", inner_frame(&syn)),
        },
        Case {
            description: "padded frame: padding dropped",
            frame: tunnelled(&tiny).build(),
            expect: Expect::Inner("decapsulated_4in4", inner_frame(&tiny)),
        },
        Case {
            description: "outer header with options",
            frame: tunnelled(&udp).ihl(7).build(),
            expect: Expect::Inner("decapsulated_4in4", inner_frame(&udp)),
        },
        Case {
            description: "inner header with options",
            frame: tunnelled(&udp.clone().ihl(6)).build(),
            expect: Expect::Inner("decapsulated_4in4", inner_frame(&udp.clone().ihl(6))),
        },
        Case {
            description: "IP-in-IP to another host",
            frame: tunnelled(&udp).dst("192.0.2.12:0").build(),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "plain UDP to us",
            frame: FrameBuilder::udp().dst("192.0.2.11:9000").build(),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "ARP",
            frame: FrameBuilder::arp().build(),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "VLAN-tagged IP-in-IP",
            frame: tunnelled(&udp).vlan(7).build(),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "IPv6 ethertype",
            frame: tunnelled(&udp).ethertype(EtherType(0x86dd)).build(),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "outer bad IHL",
            frame: tunnelled(&udp).ihl(4).build(),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "outer total length past the frame",
            frame: tunnelled(&udp).truncate(50).build(),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "outer fragment (more fragments)",
            frame: tunnelled(&udp).more_fragments().build(),
            expect: Expect::Untouched("outer_fragment"),
        },
        Case {
            description: "outer fragment (offset)",
            frame: tunnelled(&udp).fragment_offset(64).build(),
            expect: Expect::Untouched("outer_fragment"),
        },
        Case {
            description: "inner cut short",
            frame: FrameBuilder::ipip()
                .src(DIRECTOR)
                .dst(LOCAL_STR)
                .payload(&udp.build_ipv4()[..30])
                .build(),
            expect: Expect::Untouched("malformed_4in4"),
        },
        Case {
            description: "inner shorter than an IPv4 header",
            frame: FrameBuilder::ipip()
                .src(DIRECTOR)
                .dst(LOCAL_STR)
                .payload(&udp.build_ipv4()[..12])
                .build(),
            expect: Expect::Untouched("malformed_4in4"),
        },
        Case {
            description: "inner not IPv4",
            frame: FrameBuilder::ipip()
                .src(DIRECTOR)
                .dst(LOCAL_STR)
                .payload(&[0x60; 40])
                .build(),
            expect: Expect::Untouched("malformed_4in4"),
        },
        Case {
            description: "inner IHL 4",
            frame: tunnelled(&udp.clone().ihl(4)).build(),
            expect: Expect::Untouched("malformed_4in4"),
        },
        Case {
            description: "inner total length past the outer payload",
            frame: tunnelled(&udp.clone().total_len(200)).build(),
            expect: Expect::Untouched("malformed_4in4"),
        },
        Case {
            description: "inner total length below its header",
            frame: tunnelled(&udp.clone().total_len(12)).build(),
            expect: Expect::Untouched("malformed_4in4"),
        },
    ]
}

/// 6in6 from the director to the real server carrying `inner` (an IPv6 packet).
fn six_in_six(inner: &[u8]) -> Vec<u8> {
    ipv6(DIRECTOR6, LOCAL6, next_header::IPV6, inner)
}

/// 4in6 from the director to the real server carrying `inner` (an IPv4 packet).
fn four_in_six(inner: &[u8]) -> Vec<u8> {
    ipv6(DIRECTOR6, LOCAL6, next_header::IPV4, inner)
}

/// An outer IPv6 packet to us whose first extension header (`kind`, 8 bytes) names `next`.
fn behind_extension_header(kind: u8, next: u8, inner: &[u8]) -> Vec<u8> {
    let mut payload = match kind {
        // Fragment header: offset 0, more fragments, identification 1.
        next_header::FRAGMENT => vec![next, 0, 0, 1, 0, 0, 0, 1],
        // Options or routing: length 0 (8 bytes), RFC 2473 4.1.1 tunnel encapsulation limit
        // (type 4, length 1, limit 4), then PadN to fill the 8 bytes.
        _ => vec![next, 0, 4, 1, 4, 1, 1, 0],
    };
    payload.extend_from_slice(inner);
    ipv6(DIRECTOR6, LOCAL6, kind, &payload)
}

/// A 6in6 or 4in6 frame.
fn outer6(packet: &[u8]) -> Vec<u8> {
    ethernet(ETHERTYPE_IPV6, packet)
}

#[expect(clippy::too_many_lines, reason = "a table")]
fn ipv6_cases() -> Vec<Case> {
    let udp6_packet = udp6(CLIENT6, VIP6, b"hello, IPv6 real server");
    let udp6_frame = ethernet(ETHERTYPE_IPV6, &udp6_packet);
    let udp4 = udp_to_vip();
    let udp4_packet = udp4.build_ipv4();
    // FrameBuilder's own frame: the 4in6 output must be exactly what an IPv4 client sends.
    let udp4_frame = udp4.clone().unpadded().build();
    let syn4 = FrameBuilder::tcp().src(CLIENT).dst("192.0.2.10:80").syn();
    let with_options = udp4.clone().ihl(6);
    let mut padded_inner = udp6_packet.clone();
    padded_inner.extend_from_slice(&[0xee; 6]);
    let mut trailer = six_in_six(&udp6_packet);
    trailer.extend_from_slice(&[0xee; 8]);
    vec![
        Case {
            description: "6in6: UDP to the IPv6 VIP",
            frame: outer6(&six_in_six(&udp6_packet)),
            expect: Expect::Inner("decapsulated_6in6", udp6_frame.clone()),
        },
        Case {
            description: "4in6: UDP to the IPv4 VIP, Ethernet type rewritten to IPv4",
            frame: outer6(&four_in_six(&udp4_packet)),
            expect: Expect::Inner("decapsulated_4in6", udp4_frame.clone()),
        },
        Case {
            description: "4in6: TCP SYN",
            frame: outer6(&four_in_six(&syn4.build_ipv4())),
            expect: Expect::Inner("decapsulated_4in6", syn4.clone().unpadded().build()),
        },
        Case {
            description: "4in6: inner header with options",
            frame: outer6(&four_in_six(&with_options.build_ipv4())),
            expect: Expect::Inner("decapsulated_4in6", with_options.clone().unpadded().build()),
        },
        Case {
            description: "6in6: bytes after the outer payload trimmed",
            frame: ethernet(ETHERTYPE_IPV6, &trailer),
            expect: Expect::Inner("decapsulated_6in6", udp6_frame.clone()),
        },
        Case {
            description: "6in6: outer payload longer than the inner packet, the rest trimmed",
            frame: outer6(&six_in_six(&padded_inner)),
            expect: Expect::Inner("decapsulated_6in6", udp6_frame.clone()),
        },
        Case {
            description: "6in6 to another host",
            frame: outer6(&ipv6(
                DIRECTOR6,
                "2001:db8::12".parse().unwrap(),
                next_header::IPV6,
                &udp6_packet,
            )),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "6in6 to a multicast group",
            frame: outer6(&ipv6(
                DIRECTOR6,
                "ff02::1".parse().unwrap(),
                next_header::IPV6,
                &udp6_packet,
            )),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "plain UDP over IPv6 to us",
            frame: outer6(&udp6(
                SocketAddrV6::new(DIRECTOR6, 5000, 0, 0),
                SocketAddrV6::new(LOCAL6, 9000, 0, 0),
                b"not tunnelled",
            )),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "ICMPv6 neighbour solicitation for us",
            frame: outer6(&ipv6(
                DIRECTOR6,
                "ff02::1:ff00:11".parse().unwrap(),
                next_header::ICMPV6,
                &[135, 0, 0, 0, 0, 0, 0, 0],
            )),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "outer IPv6 header cut short",
            frame: outer6(&six_in_six(&udp6_packet)[..30]),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "IPv6 header under the IPv4 Ethernet type",
            frame: ethernet(ETHERTYPE_IPV4, &six_in_six(&udp6_packet)),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "VLAN-tagged 6in6",
            frame: ethernet(
                0x8100,
                &[&[0, 7, 0x86, 0xdd][..], &six_in_six(&udp6_packet)].concat(),
            ),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "outer version 5 under the IPv6 Ethernet type",
            frame: outer6(&with_version(six_in_six(&udp6_packet), 5)),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "fragment header before 6in6",
            frame: outer6(&behind_extension_header(
                next_header::FRAGMENT,
                next_header::IPV6,
                &udp6_packet,
            )),
            expect: Expect::Untouched("outer_fragment"),
        },
        Case {
            description: "fragment header before 4in6",
            frame: outer6(&behind_extension_header(
                next_header::FRAGMENT,
                next_header::IPV4,
                &udp4_packet,
            )),
            expect: Expect::Untouched("outer_fragment"),
        },
        Case {
            description: "fragment of plain UDP to us",
            frame: outer6(&behind_extension_header(
                next_header::FRAGMENT,
                next_header::UDP,
                &udp6_packet[IPV6_HEADER_LEN..],
            )),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "tunnel encapsulation limit (destination options) before 6in6",
            frame: outer6(&behind_extension_header(
                next_header::DESTINATION_OPTIONS,
                next_header::IPV6,
                &udp6_packet,
            )),
            expect: Expect::Untouched("outer_ext_headers"),
        },
        Case {
            description: "hop-by-hop options before 4in6",
            frame: outer6(&behind_extension_header(
                next_header::HOP_BY_HOP,
                next_header::IPV4,
                &udp4_packet,
            )),
            expect: Expect::Untouched("outer_ext_headers"),
        },
        Case {
            description: "routing header before 6in6",
            frame: outer6(&behind_extension_header(
                next_header::ROUTING,
                next_header::IPV6,
                &udp6_packet,
            )),
            expect: Expect::Untouched("outer_ext_headers"),
        },
        Case {
            description: "extension header cut off by the end of the frame",
            frame: outer6(&ipv6(
                DIRECTOR6,
                LOCAL6,
                next_header::DESTINATION_OPTIONS,
                &[],
            )),
            expect: Expect::Untouched("not_for_us"),
        },
        Case {
            description: "6in6: outer payload length past the frame",
            frame: outer6(&with_payload_len(six_in_six(&udp6_packet), 1000)),
            expect: Expect::Untouched("malformed_6in6"),
        },
        Case {
            description: "6in6: empty (payload length 0)",
            frame: outer6(&six_in_six(&[])),
            expect: Expect::Untouched("malformed_6in6"),
        },
        Case {
            description: "6in6: inner cut short",
            frame: outer6(&six_in_six(&udp6_packet[..30])),
            expect: Expect::Untouched("malformed_6in6"),
        },
        Case {
            description: "6in6: inner is IPv4 (next header says IPv6)",
            frame: outer6(&six_in_six(&[&udp4_packet[..], &[0; 20]].concat())),
            expect: Expect::Untouched("malformed_6in6"),
        },
        Case {
            description: "6in6: inner payload length past the outer payload",
            frame: outer6(&six_in_six(&with_payload_len(udp6_packet.clone(), 200))),
            expect: Expect::Untouched("malformed_6in6"),
        },
        Case {
            description: "4in6: outer payload length past the frame",
            frame: outer6(&with_payload_len(four_in_six(&udp4_packet), 1000)),
            expect: Expect::Untouched("malformed_4in6"),
        },
        Case {
            description: "4in6: inner shorter than an IPv4 header",
            frame: outer6(&four_in_six(&udp4_packet[..12])),
            expect: Expect::Untouched("malformed_4in6"),
        },
        Case {
            description: "4in6: inner cut short",
            frame: outer6(&four_in_six(&udp4_packet[..30])),
            expect: Expect::Untouched("malformed_4in6"),
        },
        Case {
            description: "4in6: inner is IPv6 (next header says IPv4)",
            frame: outer6(&four_in_six(&udp6_packet)),
            expect: Expect::Untouched("malformed_4in6"),
        },
        Case {
            description: "4in6: inner IHL 4",
            frame: outer6(&four_in_six(&udp4.clone().ihl(4).build_ipv4())),
            expect: Expect::Untouched("malformed_4in6"),
        },
        Case {
            description: "4in6: inner total length past the outer payload",
            frame: outer6(&four_in_six(&udp4.clone().total_len(200).build_ipv4())),
            expect: Expect::Untouched("malformed_4in6"),
        },
        Case {
            description: "4in6: inner total length below its header",
            frame: outer6(&four_in_six(&udp4.clone().total_len(12).build_ipv4())),
            expect: Expect::Untouched("malformed_4in6"),
        },
    ]
}

/// The reference's verdict, in the program's counter names, and its output when decapsulated.
fn reference(frame: &[u8]) -> (&'static str, Option<Vec<u8>>) {
    let mut buffer = frame.to_vec();
    match tun::decapsulate(&mut buffer, 0, frame.len(), LOCAL) {
        Ok(Decapsulated::Inner { start, len }) => (
            "decapsulated_4in4",
            Some(buffer[start..start + len].to_vec()),
        ),
        Ok(Decapsulated::NotForUs) => ("not_for_us", None),
        Err(DropReason::Fragment) => ("outer_fragment", None),
        Err(DropReason::Truncated | DropReason::BadIhl) => ("malformed_4in4", None),
        Err(other) => panic!("reference gave an unexpected drop reason {other:?}"),
    }
}

#[test]
fn reference_agrees_with_the_golden_table() {
    for case in cases() {
        let (counter, output) = reference(&case.frame);
        match &case.expect {
            Expect::Inner(expected_counter, expected) => {
                assert_eq!(counter, *expected_counter, "{}", case.description);
                testing::assert_frame_eq(expected, output.as_deref().unwrap(), case.description);
            }
            Expect::Untouched(expected) => assert_eq!(counter, *expected, "{}", case.description),
        }
    }
}

fn counters(decap: &Decap) -> BTreeMap<&'static str, u64> {
    decap.counters().unwrap().into_iter().collect()
}

#[test]
fn program_matches_the_golden_table_and_counts_every_exit() {
    if !dataplane::testing::require_root() {
        return;
    }
    let decap = Decap::load().unwrap();
    decap
        .add_local_addrs(&[IpAddr::V4(LOCAL), IpAddr::V6(LOCAL6)])
        .unwrap();
    // integrator: the IPv6 table drives only the program until the dataplane has an IPv6
    // decapsulation reference to run it through as well.
    for case in cases().into_iter().chain(ipv6_cases()) {
        let before = counters(&decap);
        let run = decap.test_run(&case.frame).unwrap();
        let after = counters(&decap);
        let moved: Vec<(&str, u64)> = after
            .iter()
            .filter(|(name, value)| before[*name] != **value)
            .map(|(name, value)| (*name, value - before[name]))
            .collect();
        assert_eq!(run.action, action::PASS, "{}: action", case.description);
        let (expected_bytes, expected_counter) = match &case.expect {
            Expect::Inner(counter, bytes) => (bytes, *counter),
            Expect::Untouched(counter) => (&case.frame, *counter),
        };
        testing::assert_frame_eq(expected_bytes, &run.output, case.description);
        assert_eq!(
            moved,
            vec![(expected_counter, 1)],
            "{}: counters that moved",
            case.description
        );
    }
}

/// Each family's outer destinations come from its own map: with only the IPv4 address loaded
/// nothing over IPv6 is ours, and the reverse.
#[test]
fn program_decapsulates_only_for_the_loaded_family() {
    if !dataplane::testing::require_root() {
        return;
    }
    let four_in_four = tunnelled(&udp_to_vip()).build();
    let six_in_six_frame = outer6(&six_in_six(&udp6(CLIENT6, VIP6, b"x")));
    let four_in_six_frame = outer6(&four_in_six(&udp_to_vip().build_ipv4()));
    for (loaded, frames, decapsulated) in [
        (
            vec![],
            vec![&four_in_four, &six_in_six_frame, &four_in_six_frame],
            0,
        ),
        (
            vec![IpAddr::V4(LOCAL)],
            vec![&six_in_six_frame, &four_in_six_frame],
            0,
        ),
        // The IPv6 address of the same host (LOCAL6) does not admit IPv4-in-IPv4 to LOCAL.
        (vec![IpAddr::V6(LOCAL6)], vec![&four_in_four], 0),
        (
            vec![IpAddr::V6(LOCAL6)],
            vec![&six_in_six_frame, &four_in_six_frame],
            2,
        ),
    ] {
        let decap = Decap::load().unwrap();
        decap.add_local_addrs(&loaded).unwrap();
        for frame in &frames {
            let run = decap.test_run(frame).unwrap();
            assert_eq!(run.action, action::PASS);
            if decapsulated == 0 {
                testing::assert_frame_eq(frame, &run.output, "not ours");
            }
        }
        let counters = counters(&decap);
        let total = counters["decapsulated_4in4"]
            + counters["decapsulated_6in6"]
            + counters["decapsulated_4in6"];
        assert_eq!(total, decapsulated, "loaded {loaded:?}: {counters:?}");
        assert_eq!(
            counters["not_for_us"],
            frames.len() as u64 - decapsulated,
            "loaded {loaded:?}: {counters:?}"
        );
    }
}

/// Too many addresses of one family are refused before anything is written.
#[test]
fn too_many_local_addresses_are_refused_per_family() {
    if !dataplane::testing::require_root() {
        return;
    }
    let decap = Decap::load().unwrap();
    let mut addrs: Vec<IpAddr> = (0..=MAX_LOCAL_ADDRS)
        .map(|n| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n as u16)))
        .collect();
    addrs.push(IpAddr::V4(LOCAL));
    match decap.add_local_addrs(&addrs) {
        Err(DecapError::TooManyAddrs { family, count }) => {
            assert_eq!((family, count), ("IPv6", MAX_LOCAL_ADDRS + 1));
        }
        other => panic!("expected TooManyAddrs, got {other:?}"),
    }
    // Nothing was written: not even the IPv4 address, which alone would fit.
    let run = decap.test_run(&tunnelled(&udp_to_vip()).build()).unwrap();
    assert_eq!(counters(&decap)["not_for_us"], 1, "{run:?}");
    // The full allowance of each family fits.
    addrs.remove(0);
    decap.add_local_addrs(&addrs).unwrap();
}
