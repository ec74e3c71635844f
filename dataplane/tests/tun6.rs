//! LVS-TUN toward IPv6 real servers: IPv6-in-IPv6 and IPv4-in-IPv6 (RFC 2473), and the answers
//! to packets too big to tunnel (ICMPv6 packet too big, RFC 4443 3.2, never below 1280; ICMP
//! fragmentation needed for IPv4 clients). Frames are built with the readable builders and the
//! results checked independently of the code under test: the outer header field by field from
//! its RFC layout, the inner packet byte for byte against the input, the ICMPv6 checksum summed
//! here from scratch; where root allows, `rs-decap`'s XDP program (an independent
//! decapsulator) strips the tunnel again and must give back the client's packet.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use dataplane::conntrack::FlowKey;
use dataplane::rewrite::tun::{self, Encapsulated, TunnelEgress, HEADROOM6};
use dataplane::rewrite::Link;
use dataplane::testing::{
    self, backend, backend_mac, service, FrameBuilder, Ipv6FrameBuilder, CLIENT_SIDE_ADDR6,
    DIRECTOR_MAC, ROUTER_MAC, UMEM_HEADROOM,
};
use dataplane::{DropReason, Egress, Forwarding, Pipeline, Protocol, Verdict, WorkerCounters};
use scheduler::Algorithm;

const CLIENT6: &str = "[2001:db8:1::7]:40000";
const VIP6: &str = "[2001:db8::10]:80";
const RS6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0xa, 0, 0, 0, 3);
const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0xa, 0, 0, 0, 0xfe);
const CLIENT4: &str = "198.51.100.7:40000";
const VIP4: &str = "192.0.2.70:80";

fn egress6(mtu: u16) -> TunnelEgress<Ipv6Addr> {
    TunnelEgress {
        link: Link {
            src_mac: DIRECTOR_MAC,
            dst_mac: backend_mac(3),
        },
        src_addr: DIRECTOR6,
        mtu,
    }
}

/// `frame` at `headroom` in a 4096-byte chunk filled with 0xee.
fn in_chunk(frame: &[u8], headroom: usize) -> Vec<u8> {
    let mut chunk = vec![0xee; 4096];
    chunk[headroom..headroom + frame.len()].copy_from_slice(frame);
    chunk
}

/// An IPv6 frame from the client to the VIP with `payload` and traffic class `class`.
fn client6(payload: &[u8], class: u8) -> Vec<u8> {
    let mut frame = Ipv6FrameBuilder::tcp()
        .src(CLIENT6)
        .dst(VIP6)
        .ack()
        .payload(payload)
        .build();
    // Version 6, then the traffic class across the next two nibbles (RFC 8200 3).
    frame[14] = 0x60 | (class >> 4);
    frame[15] = (class << 4) | (frame[15] & 0x0f);
    frame
}

/// The inner packet's length: what the frame's IP header says, padding excluded.
fn packet_len(frame: &[u8]) -> usize {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => usize::from(u16::from_be_bytes([frame[16], frame[17]])),
        0x86dd => 40 + usize::from(u16::from_be_bytes([frame[18], frame[19]])),
        other => panic!("not IP: {other:#06x}"),
    }
}

/// Checks a tunnelled frame against the RFC 2473 layout, field by field, and that it carries
/// `input`'s packet unchanged.
#[track_caller]
fn assert_tunnelled6(out: &[u8], input: &[u8], next_header: u8, class: u8, flow_label: u32) {
    let inner_len = packet_len(input);
    assert_eq!(out.len(), 14 + 40 + inner_len, "length");
    assert_eq!(&out[0..6], &backend_mac(3), "destination MAC");
    assert_eq!(&out[6..12], &DIRECTOR_MAC, "source MAC");
    assert_eq!(&out[12..14], &[0x86, 0xdd], "EtherType");
    let outer = &out[14..54];
    let word = u32::from_be_bytes([outer[0], outer[1], outer[2], outer[3]]);
    assert_eq!(word >> 28, 6, "version");
    assert_eq!((word >> 20) as u8, class, "traffic class");
    assert_eq!(word & 0xf_ffff, flow_label, "flow label");
    assert_eq!(
        usize::from(u16::from_be_bytes([outer[4], outer[5]])),
        inner_len,
        "payload length"
    );
    assert_eq!(outer[6], next_header, "next header");
    assert_eq!(outer[7], 64, "hop limit");
    assert_eq!(&outer[8..24], &DIRECTOR6.octets(), "source");
    assert_eq!(&outer[24..40], &RS6.octets(), "destination");
    assert_eq!(&out[54..], &input[14..14 + inner_len], "inner packet");
}

#[test]
fn ipv6_in_ipv6_wraps_the_packet_unchanged() {
    let input = client6(b"GET / HTTP/1.1\r\n\r\n", 0x2e);
    let mut chunk = in_chunk(&input, UMEM_HEADROOM);
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        RS6,
        &egress6(1500),
        0xabcde,
    );
    let Ok(Encapsulated::Tunnelled { start, len }) = result else {
        panic!("expected Tunnelled, got {result:?}");
    };
    assert_eq!(start, UMEM_HEADROOM - HEADROOM6);
    assert_tunnelled6(&chunk[start..start + len], &input, 41, 0x2e, 0xabcde);
    assert!(chunk[..start].iter().all(|&byte| byte == 0xee), "before");
}

#[test]
fn ipv4_in_ipv6_wraps_the_packet_unchanged() {
    // Padded to 60 bytes by the builder: the padding is not carried over.
    let inner = FrameBuilder::udp()
        .src(CLIENT4)
        .dst(VIP4)
        .tos(0x28)
        .payload(b"q");
    let input = inner.build();
    let mut chunk = in_chunk(&input, UMEM_HEADROOM);
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        RS6,
        &egress6(1500),
        7,
    );
    let Ok(Encapsulated::Tunnelled { start, len }) = result else {
        panic!("expected Tunnelled, got {result:?}");
    };
    assert_eq!(start, UMEM_HEADROOM - HEADROOM6);
    assert_tunnelled6(&chunk[start..start + len], &input, 4, 0x28, 7);
    assert_eq!(len, 14 + 40 + 29);
}

#[test]
fn exactly_the_mtu_once_encapsulated_is_tunnelled() {
    let input = client6(&[5; 1500 - 40 - 40 - 20], 0);
    assert_eq!(packet_len(&input), 1460);
    let mut chunk = in_chunk(&input, UMEM_HEADROOM);
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        RS6,
        &egress6(1500),
        1,
    );
    assert!(
        matches!(result, Ok(Encapsulated::Tunnelled { len: 1514, .. })),
        "{result:?}"
    );
}

/// Ones' complement sum of `bytes` (RFC 1071), written here rather than borrowed from the
/// crate, so the checksum is checked independently.
fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Checks an ICMPv6 packet too big from the VIP to the client with `mtu`, quoting `input`'s
/// packet as far as 1280 bytes allow.
#[track_caller]
fn assert_packet_too_big(out: &[u8], input: &[u8], mtu: u32) {
    let quoted = packet_len(input).min(1280 - 48);
    assert_eq!(out.len(), 14 + 48 + quoted, "length");
    assert_eq!(&out[0..6], &ROUTER_MAC, "back to the client's last hop");
    assert_eq!(&out[6..12], &DIRECTOR_MAC, "from the director");
    assert_eq!(&out[12..14], &[0x86, 0xdd], "EtherType");
    let ip = &out[14..54];
    assert_eq!(&ip[0..4], &[0x60, 0, 0, 0], "version, class 0, label 0");
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[4], ip[5]])),
        8 + quoted,
        "payload length"
    );
    assert_eq!(ip[6], 58, "next header ICMPv6");
    assert_eq!(ip[7], 64, "hop limit");
    assert_eq!(&ip[8..24], &input[38..54], "from the VIP");
    assert_eq!(&ip[24..40], &input[22..38], "to the client");
    let icmp = &out[54..];
    assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
    assert_eq!(
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        mtu,
        "MTU"
    );
    assert_eq!(&icmp[8..], &input[14..14 + quoted], "quote");
    // RFC 4443 2.3: over the pseudo-header (source, destination, length, next header) and the
    // message, the checksum included, the sum is 0xffff.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[8..40]);
    pseudo.extend_from_slice(&u32::try_from(icmp.len()).unwrap().to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp);
    assert_eq!(ones_complement_sum(&pseudo), 0xffff, "checksum");
}

#[test]
fn too_big_ipv6_answers_packet_too_big_with_mtu_minus_40() {
    let input = client6(&[9; 1500 - 60], 0x10);
    assert_eq!(packet_len(&input), 1500);
    let mut chunk = in_chunk(&input, UMEM_HEADROOM);
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        RS6,
        &egress6(1500),
        1,
    );
    let Ok(Encapsulated::PacketTooBig { start, len }) = result else {
        panic!("expected PacketTooBig, got {result:?}");
    };
    assert_eq!(start, UMEM_HEADROOM);
    assert_eq!(len, 14 + 1280, "the quote fills the minimum MTU exactly");
    assert_packet_too_big(&chunk[start..start + len], &input, 1460);
}

#[test]
fn packet_too_big_never_asks_for_less_than_1280() {
    // A 1300-byte egress MTU would give 1260: 1280 is announced instead.
    let input = client6(&[9; 1300 - 60], 0);
    let mut chunk = in_chunk(&input, UMEM_HEADROOM);
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        RS6,
        &egress6(1300),
        1,
    );
    let Ok(Encapsulated::PacketTooBig { start, len }) = result else {
        panic!("expected PacketTooBig, got {result:?}");
    };
    assert_packet_too_big(&chunk[start..start + len], &input, 1280);

    // (Every packet too big quotes 1232 bytes: a packet no longer than that is never answered,
    // as the next case shows.)

    // At 1280 bytes already, another packet too big could not help: counted, untouched.
    let input = client6(&[9; 1280 - 60], 0);
    let before = in_chunk(&input, UMEM_HEADROOM);
    let mut chunk = before.clone();
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        RS6,
        &egress6(1300),
        1,
    );
    assert_eq!(result, Err(DropReason::TooBig));
    assert!(chunk == before, "untouched");
}

#[test]
fn too_big_ipv4_over_ipv6_answers_frag_needed_with_mtu_minus_40() {
    let inner = FrameBuilder::tcp()
        .src(CLIENT4)
        .dst(VIP4)
        .ack()
        .tos(0x10)
        .payload(&[9; 1470 - 40]);
    let input = inner.build();
    let mut chunk = in_chunk(&input, UMEM_HEADROOM);
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        RS6,
        &egress6(1500),
        1,
    );
    let Ok(Encapsulated::FragNeeded { start, len }) = result else {
        panic!("expected FragNeeded, got {result:?}");
    };
    let expected = FrameBuilder::icmp()
        .src(VIP4)
        .dst(CLIENT4)
        .eth_src(DIRECTOR_MAC)
        .eth_dst(ROUTER_MAC)
        .tos(0xc0 | 0x10)
        .ident(0)
        .dont_fragment(false)
        .ttl(64)
        .icmp_header(3, 4, 1460)
        .payload(&inner.build_ipv4()[..28])
        .build();
    testing::assert_frame_eq(&expected, &chunk[start..start + len], "frag needed");

    // 1460 bytes fit over IPv6 at 1500 (so 1470 was too big only by the 40-byte header).
    let fits = FrameBuilder::tcp()
        .src(CLIENT4)
        .dst(VIP4)
        .ack()
        .payload(&[9; 1460 - 40])
        .build();
    let mut chunk = in_chunk(&fits, UMEM_HEADROOM);
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        fits.len(),
        RS6,
        &egress6(1500),
        1,
    );
    assert!(
        matches!(result, Ok(Encapsulated::Tunnelled { .. })),
        "{result:?}"
    );

    // Without DF: counted, untouched.
    let input = FrameBuilder::udp()
        .src(CLIENT4)
        .dst(VIP4)
        .dont_fragment(false)
        .payload(&[3; 1470 - 28])
        .build();
    let before = in_chunk(&input, UMEM_HEADROOM);
    let mut chunk = before.clone();
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        RS6,
        &egress6(1500),
        1,
    );
    assert_eq!(result, Err(DropReason::TooBig));
    assert!(chunk == before, "untouched");
}

#[test]
fn less_than_40_bytes_of_headroom_is_refused_untouched() {
    for input in [
        client6(b"x", 0),
        FrameBuilder::tcp().src(CLIENT4).dst(VIP4).syn().build(),
    ] {
        for headroom in [0, 20, HEADROOM6 - 1] {
            let before = in_chunk(&input, headroom);
            let mut chunk = before.clone();
            let result =
                tun::encapsulate6(&mut chunk, headroom, input.len(), RS6, &egress6(1500), 1);
            assert_eq!(result, Err(DropReason::NoHeadroom), "headroom {headroom}");
            assert!(chunk == before, "untouched");
        }
        let mut chunk = in_chunk(&input, HEADROOM6);
        let result = tun::encapsulate6(&mut chunk, HEADROOM6, input.len(), RS6, &egress6(1500), 1);
        assert!(
            matches!(result, Ok(Encapsulated::Tunnelled { start: 0, .. })),
            "{result:?}"
        );
    }
}

#[test]
fn the_flow_label_is_20_bits_never_zero_and_spreads() {
    let mut labels: Vec<u32> = (0..1000u64)
        .map(|n| tun::flow_label(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    assert!(labels.iter().all(|&label| label != 0 && label < 1 << 20));
    assert_eq!(tun::flow_label(0), 1);
    labels.sort_unstable();
    labels.dedup();
    assert!(labels.len() > 990, "{} distinct of 1000", labels.len());
}

// Through the pipeline.

const SLOTS: usize = 4;

/// TUN tcp [2001:db8::10]:80 -> RS6 (slot 0); TUN tcp 192.0.2.70:80 -> RS6 (4in6, slot 1); TUN
/// tcp [2001:db8::11]:80 -> 10.0.0.3 (an IPv6 service with an IPv4 real server, which
/// configuration refuses, slot 2).
fn table(
    blocks: &[std::sync::Arc<[dataplane::counters::BackendCounters]>],
    mtu: u16,
) -> dataplane::ServiceTable {
    let tun = |vip: &str, rs: &str, slot: usize| {
        testing::with_forwarding(
            service(
                vip,
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![backend(rs, Some(backend_mac(3)), 1, slot)],
            ),
            Forwarding::Tunnel,
        )
    };
    testing::table(
        1,
        vec![
            tun(VIP6, "2001:db8:0:a::3", 0),
            tun(VIP4, "2001:db8:0:a::3", 1),
            tun("[2001:db8::11]:80", "10.0.0.3", 2),
        ],
        blocks.to_vec(),
    )
    .with_interfaces(testing::interfaces(mtu))
}

#[test]
fn pipeline_tunnels_ipv6_and_ipv4_services_to_an_ipv6_real_server() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let table = table(&blocks, 1500);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 64);
    let now = Instant::now();

    let syn = Ipv6FrameBuilder::tcp().src(CLIENT6).dst(VIP6).syn().build();
    let ack = client6(b"GET /", 0);
    let mut labels = Vec::new();
    for input in [&syn, &ack] {
        let (verdict, out) = testing::run(&mut pipeline, input, &table, now, &counters);
        assert_eq!(
            verdict,
            Verdict::Tx {
                start: UMEM_HEADROOM - 40,
                len: 14 + 40 + packet_len(input),
                egress: Egress::Ingress
            }
        );
        // The fixture interfaces' client-side IPv6 address is the outer source.
        assert_eq!(&out[22..38], &CLIENT_SIDE_ADDR6.octets());
        assert_eq!(&out[38..54], &RS6.octets());
        assert_eq!(out[20], 41);
        assert_eq!(&out[54..], &input[14..14 + packet_len(input)]);
        labels.push(u32::from_be_bytes([0, out[15] & 0x0f, out[16], out[17]]));
    }
    assert_ne!(labels[0], 0, "labelled");
    assert_eq!(labels[0], labels[1], "one flow, one label");

    let syn4 = FrameBuilder::tcp().src(CLIENT4).dst(VIP4).syn().build();
    let (verdict, out) = testing::run(&mut pipeline, &syn4, &table, now, &counters);
    assert!(
        matches!(
            verdict,
            Verdict::Tx {
                egress: Egress::Ingress,
                ..
            }
        ),
        "{verdict:?}"
    );
    assert_eq!(&out[12..14], &[0x86, 0xdd]);
    assert_eq!(out[20], 4, "IPv4-in-IPv6");
    assert_eq!(&out[54..], &syn4[14..54]);

    // Both flows are tracked, on the IPv6 real server.
    let key = FlowKey {
        src_addr: "2001:db8:1::7".parse().unwrap(),
        dst_addr: "2001:db8::10".parse().unwrap(),
        src_port: 40000,
        dst_port: 80,
        protocol: Protocol::Tcp,
    };
    assert_eq!(pipeline.connections().get(&key).unwrap().backend, RS6);
    assert_eq!(pipeline.connections().len(), 2);
    let packets_in = |slot: usize| blocks[0][slot].packets_in.load(Ordering::Relaxed);
    assert_eq!((packets_in(0), packets_in(1)), (2, 1));
    testing::assert_gauges_match(pipeline.connections(), &table, 0);
}

#[test]
fn pipeline_answers_too_big_ipv6_with_packet_too_big_and_counts_it() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let table = table(&blocks, 1500);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 64);
    let input = client6(&[9; 1500 - 60], 0);
    let (verdict, out) = testing::run(&mut pipeline, &input, &table, Instant::now(), &counters);
    assert_eq!(
        verdict,
        Verdict::Tx {
            start: UMEM_HEADROOM,
            len: 14 + 1280,
            egress: Egress::Ingress
        }
    );
    assert_packet_too_big(&out, &input, 1460);
    assert_eq!(
        counters.icmp6_packet_too_big_sent.load(Ordering::Relaxed),
        1
    );
    assert_eq!(counters.icmp_frag_needed_sent.load(Ordering::Relaxed), 0);
    // Answered, not forwarded: no entry, nothing counted for the real server.
    assert_eq!(pipeline.connections().len(), 0);
    assert_eq!(blocks[0][0].packets_in.load(Ordering::Relaxed), 0);
}

#[test]
fn pipeline_refuses_what_it_cannot_tunnel_untouched() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 64);
    let now = Instant::now();

    // No IPv6 address on the client side: no outer source.
    let mut without = table(&blocks, 1500);
    let mut sides = testing::interfaces(1500);
    sides.client.address6 = None;
    without = without.with_interfaces(sides);
    for input in [
        Ipv6FrameBuilder::tcp().src(CLIENT6).dst(VIP6).syn().build(),
        FrameBuilder::tcp().src(CLIENT4).dst(VIP4).syn().build(),
    ] {
        let (verdict, _) = testing::run(&mut pipeline, &input, &without, now, &counters);
        assert_eq!(verdict, Verdict::Drop(DropReason::UnsupportedForwarding));
    }

    // An IPv6 service with an IPv4 real server.
    let table = table(&blocks, 1500);
    let input = Ipv6FrameBuilder::tcp()
        .src(CLIENT6)
        .dst("[2001:db8::11]:80")
        .syn()
        .build();
    let (verdict, _) = testing::run(&mut pipeline, &input, &table, now, &counters);
    assert_eq!(verdict, Verdict::Drop(DropReason::UnsupportedForwarding));

    // Too little headroom in front of the frame.
    let input = Ipv6FrameBuilder::tcp().src(CLIENT6).dst(VIP6).syn().build();
    let before = in_chunk(&input, 39);
    let mut chunk = before.clone();
    let verdict = pipeline.process(&mut chunk, 39, input.len(), &table, now, &counters);
    assert_eq!(verdict, Verdict::Drop(DropReason::NoHeadroom));
    assert!(chunk == before, "untouched");

    assert_eq!(counters.drops(DropReason::UnsupportedForwarding), 3);
    assert_eq!(counters.drops(DropReason::NoHeadroom), 1);
    assert_eq!(
        pipeline.connections().len(),
        0,
        "a dropped frame records nothing"
    );
}

/// `rs-decap`'s XDP program, run through BPF_PROG_TEST_RUN, decapsulates what the director
/// tunnels back into the client's packet (needs root; skipped otherwise).
#[test]
fn rs_decap_gives_back_the_clients_packet() {
    if !dataplane::testing::require_root() {
        return;
    }
    let decap = rs_decap::Decap::load().unwrap();
    decap.add_local_addrs(&[RS6.into()]).unwrap();
    let frames = [
        (
            client6(b"GET / HTTP/1.1\r\n\r\n", 0x2e),
            "decapsulated_6in6",
        ),
        (
            FrameBuilder::udp()
                .src(CLIENT4)
                .dst(VIP4)
                .payload(b"query")
                .build(),
            "decapsulated_4in6",
        ),
    ];
    for (input, counter) in frames {
        let mut chunk = in_chunk(&input, UMEM_HEADROOM);
        let result = tun::encapsulate6(
            &mut chunk,
            UMEM_HEADROOM,
            input.len(),
            RS6,
            &egress6(1500),
            9,
        );
        let Ok(Encapsulated::Tunnelled { start, len }) = result else {
            panic!("expected Tunnelled, got {result:?}");
        };
        let before: u64 = count(&decap, counter);
        let run = decap.test_run(&chunk[start..start + len]).unwrap();
        assert_eq!(run.action, rs_decap::action::PASS);
        assert_eq!(count(&decap, counter), before + 1, "{counter}");
        let inner_len = packet_len(&input);
        // The tunnel's Ethernet addresses, the inner packet's EtherType, the client's packet.
        assert_eq!(&run.output[..12], &chunk[start..start + 12]);
        assert_eq!(&run.output[12..14], &input[12..14], "EtherType");
        assert_eq!(&run.output[14..14 + inner_len], &input[14..14 + inner_len]);
    }
}

fn count(decap: &rs_decap::Decap, name: &str) -> u64 {
    decap
        .counters()
        .unwrap()
        .into_iter()
        .find_map(|(counter, value)| (counter == name).then_some(value))
        .unwrap_or_else(|| panic!("no counter {name}"))
}

#[test]
fn outer_header_lengths_follow_the_real_servers_family() {
    assert_eq!(tun::outer_header_len(Ipv4Addr::LOCALHOST.into()), 20);
    assert_eq!(tun::outer_header_len(RS6.into()), 40);
}

/// An ICMPv6 packet too big from a router on the client's path, about a reply of a 6in6 flow,
/// goes to the flow's real server in the flow's tunnel: same outer flow label, so the same path.
#[test]
fn icmpv6_error_about_a_reply_follows_its_flow_into_the_tunnel() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let table = table(&blocks, 1500);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 64);
    let now = Instant::now();
    let syn = Ipv6FrameBuilder::tcp().src(CLIENT6).dst(VIP6).syn().build();
    let (_, tunnelled_syn) = testing::run(&mut pipeline, &syn, &table, now, &counters);

    let reply = Ipv6FrameBuilder::tcp()
        .src(VIP6)
        .dst(CLIENT6)
        .ack()
        .payload(&[1; 1400])
        .build_ipv6();
    let error = Ipv6FrameBuilder::icmp6()
        .src("[2001:db8:ff::1]:0")
        .dst(VIP6)
        .icmp6_header(2, 0, 1400)
        .payload(&reply[..1232])
        .build();
    let (verdict, out) = testing::run(&mut pipeline, &error, &table, now, &counters);
    assert_eq!(
        verdict,
        Verdict::Tx {
            start: UMEM_HEADROOM - 40,
            len: 14 + 40 + 1280,
            egress: Egress::Ingress
        }
    );
    assert_eq!(out[20], 41);
    assert_eq!(&out[38..54], &RS6.octets());
    assert_eq!(&out[54..], &error[14..]);
    assert_eq!(&out[15..18], &tunnelled_syn[15..18], "the flow's label");
    assert_eq!(
        counters.icmp6_packet_too_big_sent.load(Ordering::Relaxed),
        0
    );
}

/// An ICMPv6 error too big to tunnel is never answered with another error (RFC 4443 2.4(e)).
#[test]
fn a_too_big_icmpv6_error_is_dropped_not_answered() {
    let reply = Ipv6FrameBuilder::tcp()
        .src(VIP6)
        .dst(CLIENT6)
        .ack()
        .payload(&[1; 1400])
        .build_ipv6();
    let error = Ipv6FrameBuilder::icmp6()
        .src("[2001:db8:ff::1]:0")
        .dst(VIP6)
        .icmp6_header(2, 0, 1400)
        // Longer than RFC 4443 lets an error be, so that even the 1280 floor would not stop an
        // answer.
        .payload(&reply)
        .build();
    let before = in_chunk(&error, UMEM_HEADROOM);
    let mut chunk = before.clone();
    let result = tun::encapsulate6(
        &mut chunk,
        UMEM_HEADROOM,
        error.len(),
        RS6,
        &egress6(1500),
        1,
    );
    assert_eq!(result, Err(DropReason::TooBig));
    assert!(chunk == before, "untouched");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn frames() -> impl Strategy<Value = Vec<u8>> {
        let seeds = vec![
            client6(b"GET /", 0x2e),
            client6(&[9; 1440], 0),
            FrameBuilder::udp()
                .src(CLIENT4)
                .dst(VIP4)
                .payload(b"q")
                .build(),
            FrameBuilder::tcp()
                .src(CLIENT4)
                .dst(VIP4)
                .ack()
                .payload(&[9; 1430])
                .build(),
        ];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            (
                proptest::sample::select(seeds),
                proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                any::<usize>(),
            )
                .prop_map(|(mut frame, flips, cut)| {
                    for (at, byte) in flips {
                        let at = at % frame.len();
                        frame[at] = byte;
                    }
                    frame.truncate(cut % (frame.len() + 1));
                    frame
                }),
        ]
    }

    proptest! {
        /// Random and mutated frames, any headroom, any MTU: a verdict, never a panic, and a
        /// refused frame left untouched.
        #[test]
        fn encapsulate6_never_panics_and_refuses_untouched(
            frame in frames(),
            headroom in 0usize..64,
            mtu in 0u16..2000,
        ) {
            let before = in_chunk(&frame, headroom);
            let mut chunk = before.clone();
            let result = tun::encapsulate6(&mut chunk, headroom, frame.len(), RS6, &egress6(mtu), 5);
            match result {
                Ok(Encapsulated::Tunnelled { start, len }) => {
                    prop_assert_eq!(start, headroom - 40);
                    prop_assert!(len <= 14 + usize::from(mtu));
                }
                Ok(Encapsulated::PacketTooBig { len, .. }) => prop_assert!(len <= 14 + 1280),
                Ok(Encapsulated::FragNeeded { .. }) => {}
                Err(_) => prop_assert!(chunk == before),
            }
        }
    }
}

/// The IPv6 tunnel paths allocate nothing per frame (encapsulation and the packet too big).
#[test]
fn the_ipv6_tunnel_paths_allocate_nothing() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let table = table(&blocks, 1500);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 64);
    let now = Instant::now();
    let frames = [
        client6(b"GET /", 0),
        client6(&[9; 1440], 0),
        FrameBuilder::tcp().src(CLIENT4).dst(VIP4).syn().build(),
    ];
    let mut chunks: Vec<Vec<u8>> = frames.iter().map(|f| in_chunk(f, UMEM_HEADROOM)).collect();
    // Warm up: the flows are tracked before counting.
    for (chunk, frame) in chunks.iter_mut().zip(&frames) {
        pipeline.process(chunk, UMEM_HEADROOM, frame.len(), &table, now, &counters);
    }
    let allocations = alloc_count::allocations_during(|| {
        for second in 0..100 {
            // A second apart: the packet too big's rate limit lets one through per client.
            let now = now + std::time::Duration::from_secs(second);
            for (chunk, frame) in chunks.iter_mut().zip(&frames) {
                chunk[UMEM_HEADROOM..UMEM_HEADROOM + frame.len()].copy_from_slice(frame);
                let verdict =
                    pipeline.process(chunk, UMEM_HEADROOM, frame.len(), &table, now, &counters);
                assert!(matches!(verdict, Verdict::Tx { .. }), "{verdict:?}");
            }
        }
    });
    assert_eq!(allocations, 0);
    assert_eq!(
        counters.icmp6_packet_too_big_sent.load(Ordering::Relaxed),
        101
    );
}

#[global_allocator]
static ALLOCATOR: alloc_count::CountingAllocator = alloc_count::CountingAllocator;
