//! Golden-packet tests for the NAT, ICMP-translation and TUN rewrites (`rewrite::{nat, icmp,
//! tun}`): `{description, input, expected result, expected output bytes}` built with the readable
//! `testing::FrameBuilder`, whose checksums are computed from scratch, so every incremental
//! update is checked against a full recomputation. A mismatch prints which header fields differ.
//! Then property tests: incremental == full on random packets and rewrites, and random or
//! mangled frames never make these functions panic.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use dataplane::rewrite::icmp::{self, QuotedFlow};
use dataplane::rewrite::tun::{self, Decapsulated, Encapsulated, TunnelEgress, HEADROOM};
use dataplane::rewrite::{nat, Link};
use dataplane::testing::{self, backend_mac, icmp_error, FrameBuilder, DIRECTOR_MAC, ROUTER_MAC};
use dataplane::wire::icmp::{message, unreachable};
use dataplane::wire::{ethernet, IcmpQuote, Icmpv4Packet, Ipv4Packet, TcpSegment, UdpDatagram};
use dataplane::{DropReason, Protocol};
use proptest::prelude::*;

/// The director's server-side interface MAC (NAT: frames to real servers leave from it).
const SERVER_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const CLIENT: &str = "198.51.100.7:40000";
const VIP: &str = "192.0.2.10:80";
const RS: &str = "10.0.0.1:8080";
/// A router on the client's path that reports fragmentation needed.
const ROUTER: &str = "203.0.113.1:0";
/// The director's address on the tunnel's egress interface.
const DIRECTOR_TUN: &str = "10.0.0.254:0";

fn addr(text: &str) -> SocketAddrV4 {
    text.parse().unwrap()
}

/// Frames toward the real server: from the server-side interface to RS 1.
const TO_SERVER: Link = Link {
    src_mac: SERVER_SIDE_MAC,
    dst_mac: backend_mac(1),
};
/// Frames toward the client: from the client-side interface to the router.
const TO_CLIENT: Link = Link {
    src_mac: DIRECTOR_MAC,
    dst_mac: ROUTER_MAC,
};

/// A frame arriving from the client side.
fn from_client(frame: FrameBuilder) -> FrameBuilder {
    frame.eth_src(ROUTER_MAC).eth_dst(DIRECTOR_MAC)
}

/// A frame arriving from the real server.
fn from_server(frame: FrameBuilder) -> FrameBuilder {
    frame.eth_src(backend_mac(1)).eth_dst(SERVER_SIDE_MAC)
}

/// Leaving toward the real server.
fn to_server(frame: FrameBuilder) -> FrameBuilder {
    frame.eth_src(SERVER_SIDE_MAC).eth_dst(backend_mac(1))
}

/// Leaving toward the client.
fn to_client(frame: FrameBuilder) -> FrameBuilder {
    frame.eth_src(DIRECTOR_MAC).eth_dst(ROUTER_MAC)
}

type Rewrite = fn(&mut [u8]) -> Result<(), DropReason>;

struct Case {
    description: &'static str,
    rewrite: Rewrite,
    input: Vec<u8>,
    result: Result<(), DropReason>,
    /// The rewritten frame; for errors, the input (an error must not touch the frame).
    output: Vec<u8>,
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the golden table passes builders inline, one case per line"
)]
fn ok(
    description: &'static str,
    rewrite: Rewrite,
    input: FrameBuilder,
    output: FrameBuilder,
) -> Case {
    Case {
        description,
        rewrite,
        input: input.build(),
        result: Ok(()),
        output: output.build(),
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the golden table passes builders inline, one case per line"
)]
fn refused(
    description: &'static str,
    rewrite: Rewrite,
    input: FrameBuilder,
    reason: DropReason,
) -> Case {
    let input = input.build();
    Case {
        description,
        rewrite,
        output: input.clone(),
        input,
        result: Err(reason),
    }
}

fn nat_in(frame: &mut [u8]) -> Result<(), DropReason> {
    nat::rewrite_inbound(frame, addr(RS), TO_SERVER)
}

fn nat_out(frame: &mut [u8]) -> Result<(), DropReason> {
    nat::rewrite_outbound(frame, addr(VIP), TO_CLIENT)
}

fn icmp_out(frame: &mut [u8]) -> Result<(), DropReason> {
    icmp::translate_outbound(frame, addr(VIP), TO_CLIENT)
}

fn icmp_in(frame: &mut [u8]) -> Result<(), DropReason> {
    icmp::translate_inbound(frame, addr(RS), TO_SERVER)
}

/// A large TCP reply from VIP:80 to the client, as it left the director (1500 bytes).
fn big_reply(src: &str) -> FrameBuilder {
    FrameBuilder::tcp()
        .src(src)
        .dst(CLIENT)
        .ack()
        .psh()
        .ttl(63)
        .payload(&[0x5a; 1460])
}

/// A UDP query from the client to `dst`, as the real server received it.
fn query(dst: &str) -> FrameBuilder {
    FrameBuilder::udp()
        .src(CLIENT)
        .dst(dst)
        .ttl(63)
        .payload(b"ping?")
}

// One case per line reads as a table.
#[rustfmt::skip]
fn golden_cases() -> Vec<Case> {
    use DropReason::*;
    let syn = |dst: &str, ttl: u8| FrameBuilder::tcp().src(CLIENT).dst(dst).syn().ttl(ttl);
    let syn_ack = |src: &str, ttl: u8| FrameBuilder::tcp().src(src).dst(CLIENT).syn().ack().ttl(ttl);
    let get = |dst: &str, ttl: u8| FrameBuilder::tcp().src(CLIENT).dst(dst).ack().psh().ttl(ttl).payload(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let dns = |src: &str, dst: &str, ttl: u8| FrameBuilder::udp().src(src).dst(dst).ttl(ttl).payload(b"\x12\x34\x01\x00\x00\x01");
    let dns0 = |src: &str, dst: &str, ttl: u8| dns(src, dst, ttl).udp_checksum(0);

    // ICMP: the quoted packets before and after translation.
    let q_udp_rs = query(RS).build_ipv4();
    let q_udp_vip = query(VIP).build_ipv4();
    let q_nosum_rs = query(RS).udp_checksum(0).build_ipv4();
    let q_nosum_vip = query(VIP).udp_checksum(0).build_ipv4();
    let q_big_vip = big_reply(VIP).build_ipv4();
    let q_big_rs = big_reply(RS).build_ipv4();
    let q_syn_rs = FrameBuilder::tcp().src(CLIENT).dst(RS).syn().ttl(1).build_ipv4();
    let q_syn_vip = FrameBuilder::tcp().src(CLIENT).dst(VIP).syn().ttl(1).build_ipv4();
    let frag = |src: &str, dst: &str, quote: &[u8]| icmp_error(src, dst, message::DEST_UNREACHABLE, unreachable::FRAG_NEEDED, 1400, quote);
    let port = |src: &str, dst: &str, quote: &[u8]| icmp_error(src, dst, message::DEST_UNREACHABLE, unreachable::PORT, 0, quote);
    let expired = |src: &str, dst: &str, quote: &[u8]| icmp_error(src, dst, message::TIME_EXCEEDED, 0, 0, quote);
    vec![
        // NAT inbound: client -> VIP:80 becomes client -> RS:8080, TTL - 1, server-side MACs.
        ok("NAT in: TCP SYN, port 80 -> 8080", nat_in, from_client(syn(VIP, 64)), to_server(syn(RS, 63))),
        ok("NAT in: TCP with data", nat_in, from_client(get(VIP, 50)), to_server(get(RS, 49))),
        ok("NAT in: UDP with a checksum", nat_in, from_client(dns(CLIENT, VIP, 64)), to_server(dns(CLIENT, RS, 63))),
        ok("NAT in: UDP checksum 0 stays 0", nat_in, from_client(dns0(CLIENT, VIP, 64)), to_server(dns0(CLIENT, RS, 63))),
        ok("NAT in: TTL 2 still forwarded", nat_in, from_client(syn(VIP, 2)), to_server(syn(RS, 1))),
        ok("NAT in: padding after the packet kept", nat_in, from_client(syn(VIP, 64).payload(&[7])), to_server(syn(RS, 63).payload(&[7]))),
        refused("NAT in: TTL 1", nat_in, from_client(syn(VIP, 1)), TtlExpired),
        refused("NAT in: TTL 0", nat_in, from_client(syn(VIP, 0)), TtlExpired),
        refused("NAT in: a fragment has no ports", nat_in, from_client(syn(VIP, 64).more_fragments()), Fragment),
        refused("NAT in: TCP header cut", nat_in, from_client(syn(VIP, 64).l4_len(12).unpadded()), Truncated),
        refused("NAT in: ICMP echo", nat_in, from_client(FrameBuilder::icmp().dst(VIP)), UnsupportedProtocol),
        // NAT outbound: RS:8080 -> client becomes VIP:80 -> client, client-side MACs.
        ok("NAT out: TCP SYN-ACK, port 8080 -> 80", nat_out, from_server(syn_ack(RS, 64)), to_client(syn_ack(VIP, 63))),
        ok("NAT out: UDP with a checksum", nat_out, from_server(dns(RS, CLIENT, 64)), to_client(dns(VIP, CLIENT, 63))),
        ok("NAT out: UDP checksum 0 stays 0", nat_out, from_server(dns0(RS, CLIENT, 64)), to_client(dns0(VIP, CLIENT, 63))),
        refused("NAT out: TTL 1", nat_out, from_server(syn_ack(RS, 1)), TtlExpired),
        // ICMP from the server side to the client: the quote is client -> RS:8080.
        ok("ICMP out: UDP port unreachable from the RS", icmp_out,
            from_server(port(RS, CLIENT, &q_udp_rs)), to_client(port(VIP, CLIENT, &q_udp_vip).ttl(63))),
        ok("ICMP out: port unreachable quoting UDP checksum 0", icmp_out,
            from_server(port(RS, CLIENT, &q_nosum_rs)), to_client(port(VIP, CLIENT, &q_nosum_vip).ttl(63))),
        ok("ICMP out: port unreachable quoting only header + 8 bytes", icmp_out,
            from_server(port(RS, CLIENT, &q_udp_rs[..28])), to_client(port(VIP, CLIENT, &q_udp_vip[..28]).ttl(63))),
        ok("ICMP out: time exceeded quoting a TCP SYN (with its checksum)", icmp_out,
            from_server(expired("10.0.0.77:0", CLIENT, &q_syn_rs)), to_client(expired(VIP, CLIENT, &q_syn_vip).ttl(63))),
        // ICMP from the client side to the RS: the quote is VIP:80 -> client.
        ok("ICMP in: fragmentation needed quoting header + 8 bytes (no TCP checksum)", icmp_in,
            from_client(frag(ROUTER, VIP, &q_big_vip[..28])), to_server(frag(ROUTER, RS, &q_big_rs[..28]).ttl(63))),
        ok("ICMP in: fragmentation needed quoting 40 bytes (TCP checksum included)", icmp_in,
            from_client(frag(ROUTER, VIP, &q_big_vip[..40])), to_server(frag(ROUTER, RS, &q_big_rs[..40]).ttl(63))),
        ok("ICMP in: fragmentation needed quoting 576 bytes, as Linux does", icmp_in,
            from_client(frag(ROUTER, VIP, &q_big_vip[..548])), to_server(frag(ROUTER, RS, &q_big_rs[..548]).ttl(63))),
        refused("ICMP: quote cut inside the TCP ports", icmp_out, from_server(port(RS, CLIENT, &q_udp_rs[..27])), Truncated),
        refused("ICMP: quote cut inside the IPv4 header", icmp_out, from_server(port(RS, CLIENT, &q_udp_rs[..12])), Truncated),
        refused("ICMP: empty quote", icmp_in, from_client(frag(ROUTER, VIP, &[])), Truncated),
        refused("ICMP: quoted version 6", icmp_out, from_server(port(RS, CLIENT, &[&[0x65], &q_udp_rs[1..]].concat())), BadIhl),
        refused("ICMP: quote of an ICMP echo", icmp_out,
            from_server(port(RS, CLIENT, &FrameBuilder::icmp().src(CLIENT).dst("10.0.0.1:0").build_ipv4())), UnsupportedProtocol),
        refused("ICMP: echo request is not an error", icmp_in, from_client(FrameBuilder::icmp().src(CLIENT).dst(VIP)), UnsupportedProtocol),
        refused("ICMP: outer TTL 1", icmp_out, from_server(port(RS, CLIENT, &q_udp_rs).ttl(1)), TtlExpired),
        refused("ICMP: ICMP header cut", icmp_out, from_server(FrameBuilder::icmp().src(RS).dst(CLIENT).l4_len(6).unpadded()), Truncated),
    ]
}

#[test]
fn golden_rewrites() {
    let mut failures = Vec::new();
    for case in golden_cases() {
        let mut frame = case.input.clone();
        let result = (case.rewrite)(&mut frame);
        let mut problems = Vec::new();
        if result != case.result {
            problems.push(format!(
                "result: expected {:?}, got {result:?}",
                case.result
            ));
        }
        if let Some(diff) = testing::diff(&case.output, &frame) {
            problems.push(format!("output frame:\n{diff}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}:\n  {}",
                case.description,
                problems.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn nat_inbound_bytes_are_exact() {
    // The first golden case spelled out byte by byte, so the builder cannot hide a mistake.
    let mut frame = from_client(FrameBuilder::tcp().src(CLIENT).dst(VIP).syn()).build();
    nat_in(&mut frame).unwrap();
    #[rustfmt::skip]
    let expected: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x01, 0x01, // eth dst: RS 1
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, // eth src: server-side interface
        0x08, 0x00,
        0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00,
        0x3f, 0x06, // TTL 63, TCP
        0x00, 0x00, // checksum, filled below
        198, 51, 100, 7, 10, 0, 0, 1,
        0x9c, 0x40, 0x1f, 0x90, // 40000 -> 8080
        0x00, 0x0f, 0x42, 0x40, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xfa, 0xf0,
        0x00, 0x00, // checksum, filled below
        0x00, 0x00,
        0, 0, 0, 0, 0, 0,
    ];
    let mut expected = expected.to_vec();
    // Full recomputation, independent of the rewrite's incremental arithmetic.
    let ip_sum = !dataplane::wire::checksum::data(&expected[14..34]);
    expected[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    let pseudo = dataplane::wire::checksum::pseudo_header(
        Ipv4Addr::new(198, 51, 100, 7),
        Ipv4Addr::new(10, 0, 0, 1),
        6,
        20,
    );
    let tcp_sum = !dataplane::wire::checksum::combine(&[
        pseudo,
        dataplane::wire::checksum::data(&expected[34..54]),
    ]);
    expected[50..52].copy_from_slice(&tcp_sum.to_be_bytes());
    testing::assert_frame_eq(&expected, &frame, "NAT inbound SYN");
}

#[test]
fn quoted_flow_finds_the_connection() {
    let quote = query(RS).build_ipv4();
    let frame = from_server(icmp_error(
        RS,
        CLIENT,
        message::DEST_UNREACHABLE,
        unreachable::PORT,
        0,
        &quote,
    ))
    .build();
    let flow = icmp::quoted_flow(&frame).unwrap();
    assert_eq!(
        flow,
        QuotedFlow {
            src_addr: Ipv4Addr::new(198, 51, 100, 7).into(),
            dst_addr: Ipv4Addr::new(10, 0, 0, 1).into(),
            src_port: 40000,
            dst_port: 8080,
            protocol: Protocol::Udp,
        }
    );
    // The RS's reply tuple, the way the error travels.
    let reply = flow.reversed();
    assert_eq!(
        (reply.src_addr.ip(), reply.src_port),
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8080)
    );
    assert_eq!(
        (reply.dst_addr.ip(), reply.dst_port),
        (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000)
    );

    // Inbound: the quote is VIP:80 -> client; reversed, the client -> VIP connection key.
    let quote = big_reply(VIP).build_ipv4();
    let frame = from_client(icmp_error(
        ROUTER,
        VIP,
        message::DEST_UNREACHABLE,
        unreachable::FRAG_NEEDED,
        1400,
        &quote[..28],
    ))
    .build();
    let key = icmp::quoted_flow(&frame).unwrap().reversed();
    assert_eq!(
        (key.src_addr.ip(), key.src_port),
        (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000)
    );
    assert_eq!(
        (key.dst_addr.ip(), key.dst_port, key.protocol),
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 80, Protocol::Tcp)
    );

    let truncated = from_server(icmp_error(RS, CLIENT, 3, 3, 0, &quote[..27])).build();
    assert_eq!(icmp::quoted_flow(&truncated), Err(DropReason::Truncated));
    let echo = FrameBuilder::icmp().build();
    assert_eq!(
        icmp::quoted_flow(&echo),
        Err(DropReason::UnsupportedProtocol)
    );
}

/// UMEM-like headroom in front of received frames in these tests.
const UMEM_HEADROOM: usize = 256;

fn egress(mtu: u16) -> TunnelEgress {
    TunnelEgress {
        link: Link {
            src_mac: DIRECTOR_MAC,
            dst_mac: backend_mac(1),
        },
        src_addr: *addr(DIRECTOR_TUN).ip(),
        mtu,
    }
}

/// `frame` in a 4096-byte buffer at `headroom`, as a UMEM chunk holds it.
fn in_chunk(frame: &[u8], headroom: usize) -> Vec<u8> {
    let mut chunk = vec![0xee; 4096];
    chunk[headroom..headroom + frame.len()].copy_from_slice(frame);
    chunk
}

/// The IP-in-IP frame the director should send for `inner`.
fn tunnelled(inner: &FrameBuilder, dont_fragment: bool, tos: u8) -> Vec<u8> {
    FrameBuilder::ipip()
        .src(DIRECTOR_TUN)
        .dst("10.0.0.1:0")
        .eth_src(DIRECTOR_MAC)
        .eth_dst(backend_mac(1))
        .ident(0)
        .ttl(64)
        .tos(tos)
        .dont_fragment(dont_fragment)
        .payload(&inner.build_ipv4())
        .build()
}

#[test]
fn tun_encapsulation_is_exact() {
    let cases = [
        (
            "TCP SYN (padded to 60 bytes on arrival)",
            FrameBuilder::tcp().src(CLIENT).dst(VIP).syn(),
            true,
            0,
        ),
        (
            "TCP with data and TOS 0x28",
            FrameBuilder::tcp()
                .src(CLIENT)
                .dst(VIP)
                .ack()
                .tos(0x28)
                .payload(b"GET /"),
            true,
            0x28,
        ),
        (
            "UDP without DF: outer DF clear too",
            FrameBuilder::udp()
                .src(CLIENT)
                .dst("192.0.2.53:53")
                .dont_fragment(false)
                .payload(b"q"),
            false,
            0,
        ),
        (
            "exactly the MTU once encapsulated",
            FrameBuilder::tcp()
                .src(CLIENT)
                .dst(VIP)
                .ack()
                .payload(&[1; 1440]),
            true,
            0,
        ),
    ];
    for (description, inner, df, tos) in cases {
        let input = from_client(inner.clone()).build();
        let mut chunk = in_chunk(&input, UMEM_HEADROOM);
        let result = tun::encapsulate(
            &mut chunk,
            UMEM_HEADROOM,
            input.len(),
            *addr("10.0.0.1:0").ip(),
            &egress(1500),
            0,
        );
        let expected = tunnelled(&inner, df, tos);
        let Ok(Encapsulated::Tunnelled { start, len }) = result else {
            panic!("{description}: expected Tunnelled, got {result:?}");
        };
        assert_eq!(start, UMEM_HEADROOM - HEADROOM, "{description}");
        testing::assert_frame_eq(&expected, &chunk[start..start + len], description);
        // Nothing before the new start was touched.
        assert!(
            chunk[..start].iter().all(|&byte| byte == 0xee),
            "{description}"
        );
    }
}

#[test]
fn tun_outer_ident_is_the_callers() {
    let input = from_client(FrameBuilder::tcp().src(CLIENT).dst(VIP).syn()).build();
    let mut chunk = in_chunk(&input, HEADROOM);
    let result = tun::encapsulate(
        &mut chunk,
        HEADROOM,
        input.len(),
        *addr("10.0.0.1:0").ip(),
        &egress(1500),
        0xbeef,
    );
    assert_eq!(
        result,
        Ok(Encapsulated::Tunnelled {
            start: 0,
            len: 14 + 20 + 40
        })
    );
    let outer = Ipv4Packet::new_checked(&chunk[14..74]).unwrap();
    assert_eq!(outer.ident(), 0xbeef);
    assert!(outer.verify_checksum());
}

#[test]
fn tun_too_big_with_df_answers_frag_needed() {
    // 1500-byte packet, egress MTU 1500: 1520 bytes encapsulated.
    let inner = FrameBuilder::tcp()
        .src(CLIENT)
        .dst(VIP)
        .ack()
        .tos(0x10)
        .payload(&[9; 1460]);
    let input = from_client(inner.clone()).build();
    let mut chunk = in_chunk(&input, UMEM_HEADROOM);
    let result = tun::encapsulate(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        *addr("10.0.0.1:0").ip(),
        &egress(1500),
        0,
    );
    let Ok(Encapsulated::FragNeeded { start, len }) = result else {
        panic!("expected FragNeeded, got {result:?}");
    };
    assert_eq!(start, UMEM_HEADROOM);
    let expected = FrameBuilder::icmp()
        .src(VIP)
        .dst(CLIENT)
        .eth_src(DIRECTOR_MAC)
        .eth_dst(ROUTER_MAC)
        .tos(0xc0 | 0x10)
        .ident(0)
        .dont_fragment(false)
        .ttl(64)
        .icmp_header(message::DEST_UNREACHABLE, unreachable::FRAG_NEEDED, 1480)
        .payload(&inner.build_ipv4()[..28])
        .build();
    testing::assert_frame_eq(&expected, &chunk[start..start + len], "frag-needed reply");
    let icmp = Icmpv4Packet::new_checked(&chunk[start + 34..start + len]).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.next_hop_mtu(), 1480);
}

#[test]
fn tun_too_big_without_df_is_counted_not_sent() {
    let input = from_client(
        FrameBuilder::udp()
            .src(CLIENT)
            .dst(VIP)
            .dont_fragment(false)
            .payload(&[3; 1472]),
    )
    .build();
    let chunk = in_chunk(&input, UMEM_HEADROOM);
    let mut after = chunk.clone();
    let result = tun::encapsulate(
        &mut after,
        UMEM_HEADROOM,
        input.len(),
        *addr("10.0.0.1:0").ip(),
        &egress(1500),
        0,
    );
    assert_eq!(result, Err(DropReason::TooBig));
    assert_eq!(after, chunk);
}

#[test]
fn tun_without_headroom_is_refused_untouched() {
    let input = from_client(FrameBuilder::tcp().src(CLIENT).dst(VIP).syn()).build();
    for headroom in [0, 1, HEADROOM - 1] {
        let chunk = in_chunk(&input, headroom);
        let mut after = chunk.clone();
        let result = tun::encapsulate(
            &mut after,
            headroom,
            input.len(),
            *addr("10.0.0.1:0").ip(),
            &egress(1500),
            0,
        );
        assert_eq!(result, Err(DropReason::NoHeadroom), "headroom {headroom}");
        assert_eq!(after, chunk);
    }
    // Out of the buffer altogether.
    let mut chunk = vec![0; 64];
    assert_eq!(
        tun::encapsulate(&mut chunk, 40, 60, Ipv4Addr::LOCALHOST, &egress(1500), 0),
        Err(DropReason::Truncated)
    );
    assert_eq!(
        tun::encapsulate(
            &mut chunk,
            usize::MAX,
            2,
            Ipv4Addr::LOCALHOST,
            &egress(1500),
            0
        ),
        Err(DropReason::Truncated)
    );
}

#[test]
fn decapsulation_restores_the_inner_frame() {
    let inner = FrameBuilder::tcp().src(CLIENT).dst(VIP).syn().payload(b"x");
    let outer = tunnelled(&inner, true, 0);
    let mut chunk = in_chunk(&outer, UMEM_HEADROOM);
    let result = tun::decapsulate(
        &mut chunk,
        UMEM_HEADROOM,
        outer.len(),
        Ipv4Addr::new(10, 0, 0, 1),
    );
    let Ok(Decapsulated::Inner { start, len }) = result else {
        panic!("expected Inner, got {result:?}");
    };
    assert_eq!(start, UMEM_HEADROOM + 20);
    let expected = inner
        .eth_src(DIRECTOR_MAC)
        .eth_dst(backend_mac(1))
        .unpadded()
        .build();
    testing::assert_frame_eq(&expected, &chunk[start..start + len], "decapsulated");

    // Round trip: encapsulate then decapsulate gives back the client's packet.
    let syn = from_client(FrameBuilder::tcp().src(CLIENT).dst(VIP).syn()).build();
    let mut chunk = in_chunk(&syn, UMEM_HEADROOM);
    let Ok(Encapsulated::Tunnelled { start, len }) = tun::encapsulate(
        &mut chunk,
        UMEM_HEADROOM,
        syn.len(),
        Ipv4Addr::new(10, 0, 0, 1),
        &egress(1500),
        7,
    ) else {
        panic!("not tunnelled");
    };
    let Ok(Decapsulated::Inner { start, len }) =
        tun::decapsulate(&mut chunk, start, len, Ipv4Addr::new(10, 0, 0, 1))
    else {
        panic!("not decapsulated");
    };
    assert_eq!(start, UMEM_HEADROOM);
    assert_eq!(&chunk[start + 14..start + len], &syn[14..54]);
}

#[test]
fn decapsulation_leaves_other_frames_alone() {
    let local = Ipv4Addr::new(10, 0, 0, 1);
    let inner = FrameBuilder::tcp().src(CLIENT).dst(VIP).syn();
    let cases = [
        (
            "IP-in-IP to another host",
            FrameBuilder::ipip()
                .dst("10.0.0.2:0")
                .payload(&inner.build_ipv4())
                .build(),
            Ok(Decapsulated::NotForUs),
        ),
        (
            "plain TCP to us",
            FrameBuilder::tcp().dst("10.0.0.1:22").syn().build(),
            Ok(Decapsulated::NotForUs),
        ),
        (
            "ARP",
            FrameBuilder::arp().build(),
            Ok(Decapsulated::NotForUs),
        ),
        ("runt", vec![0; 10], Ok(Decapsulated::NotForUs)),
        (
            "outer fragment",
            FrameBuilder::ipip()
                .dst("10.0.0.1:0")
                .more_fragments()
                .payload(&inner.build_ipv4())
                .build(),
            Err(DropReason::Fragment),
        ),
        (
            "inner cut",
            FrameBuilder::ipip()
                .dst("10.0.0.1:0")
                .payload(&inner.build_ipv4()[..30])
                .build(),
            Err(DropReason::Truncated),
        ),
        (
            "inner not IPv4",
            FrameBuilder::ipip()
                .dst("10.0.0.1:0")
                .payload(&[0x60; 40])
                .build(),
            Err(DropReason::BadIhl),
        ),
    ];
    for (description, frame, expected) in cases {
        let mut chunk = in_chunk(&frame, 64);
        let before = chunk.clone();
        assert_eq!(
            tun::decapsulate(&mut chunk, 64, frame.len(), local),
            expected,
            "{description}"
        );
        assert_eq!(chunk, before, "{description}: touched");
    }
}

/// Verifies every checksum of a NAT-rewritten TCP/UDP frame by full recomputation.
fn assert_checksums_full(frame: &[u8], udp_had_none: bool) -> Result<(), TestCaseError> {
    let ip = Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..]).unwrap();
    prop_assert!(ip.verify_checksum(), "IPv4 checksum");
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut l4 = ip.payload().to_vec();
    if ip.protocol() == 6 {
        let stored = TcpSegment::new_checked(&l4[..]).unwrap().checksum();
        let mut tcp = TcpSegment::new_checked(&mut l4[..]).unwrap();
        tcp.fill_checksum(src, dst);
        prop_assert_eq!(stored, tcp.checksum(), "TCP checksum");
    } else {
        let stored = UdpDatagram::new_checked(&l4[..]).unwrap().checksum();
        if udp_had_none {
            prop_assert_eq!(stored, 0, "UDP checksum 0 must stay 0");
        } else {
            let mut udp = UdpDatagram::new_checked(&mut l4[..]).unwrap();
            udp.fill_checksum(src, dst);
            prop_assert_eq!(stored, udp.checksum(), "UDP checksum");
        }
    }
    Ok(())
}

fn socket() -> impl Strategy<Value = SocketAddrV4> {
    (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(ip.into(), port))
}

/// Every quoted checksum of a translated ICMP frame, recomputed in full.
fn assert_icmp_checksums_full(frame: &[u8], udp_none: bool) -> Result<(), TestCaseError> {
    let ip = Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..]).unwrap();
    prop_assert!(ip.verify_checksum(), "outer IPv4 checksum");
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    prop_assert!(icmp.verify_checksum(), "ICMP checksum");
    let quote = IcmpQuote::new_checked(icmp.data()).unwrap();
    prop_assert!(
        Ipv4Packet::new_unchecked(quote.header()).verify_checksum(),
        "quoted IPv4 checksum"
    );
    // The quote holds the whole original datagram here, so its L4 checksum can be recomputed.
    {
        let (src, dst) = (quote.src_addr(), quote.dst_addr());
        let mut l4 = quote.payload().to_vec();
        if quote.protocol() == 6 {
            let stored = TcpSegment::new_checked(&l4[..]).unwrap().checksum();
            let mut tcp = TcpSegment::new_checked(&mut l4[..]).unwrap();
            tcp.fill_checksum(src, dst);
            prop_assert_eq!(stored, tcp.checksum(), "quoted TCP checksum");
        } else if udp_none {
            prop_assert_eq!(quote.l4_checksum(), Some(0));
        } else {
            let stored = UdpDatagram::new_checked(&l4[..]).unwrap().checksum();
            let mut udp = UdpDatagram::new_checked(&mut l4[..]).unwrap();
            udp.fill_checksum(src, dst);
            prop_assert_eq!(stored, udp.checksum(), "quoted UDP checksum");
        }
    }
    Ok(())
}

fn transport_packet(
    tcp: bool,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ttl: u8,
    ident: u16,
    payload: &[u8],
    udp_none: bool,
) -> FrameBuilder {
    let builder = if tcp {
        FrameBuilder::tcp().ack()
    } else {
        FrameBuilder::udp()
    };
    let builder = builder
        .src(&src.to_string())
        .dst(&dst.to_string())
        .ttl(ttl)
        .ident(ident)
        .payload(payload);
    if udp_none && !tcp {
        builder.udp_checksum(0)
    } else {
        builder
    }
}

proptest! {
    #[test]
    fn nat_incremental_equals_full(
        tcp in any::<bool>(),
        client in socket(),
        vip in socket(),
        backend in socket(),
        ttl in 2u8..=255,
        ident in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        udp_none in any::<bool>(),
        outbound in any::<bool>(),
    ) {
        let link = Link { src_mac: [2, 0, 0, 0, 0, 1], dst_mac: [2, 0, 0, 0, 0, 2] };
        let (input, result) = if outbound {
            let mut frame = transport_packet(tcp, backend, client, ttl, ident, &payload, udp_none).build();
            let result = nat::rewrite_outbound(&mut frame, vip, link);
            (frame, result)
        } else {
            let mut frame = transport_packet(tcp, client, vip, ttl, ident, &payload, udp_none).build();
            let result = nat::rewrite_inbound(&mut frame, backend, link);
            (frame, result)
        };
        prop_assert_eq!(result, Ok(()));
        assert_checksums_full(&input, udp_none && !tcp)?;
        // And the exact bytes a builder makes from scratch.
        let expected = if outbound {
            transport_packet(tcp, vip, client, ttl - 1, ident, &payload, udp_none)
        } else {
            transport_packet(tcp, client, backend, ttl - 1, ident, &payload, udp_none)
        };
        let expected = expected.eth_src(link.src_mac).eth_dst(link.dst_mac).build();
        if let Some(diff) = testing::diff(&expected, &input) {
            return Err(TestCaseError::fail(diff));
        }
    }

    #[test]
    fn icmp_translation_incremental_equals_full(
        tcp in any::<bool>(),
        client in socket(),
        vip in socket(),
        backend in socket(),
        reporter in any::<u32>(),
        ttl in 2u8..=255,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        udp_none in any::<bool>(),
        outbound in any::<bool>(),
        time_exceeded in any::<bool>(),
        rest in any::<u32>(),
    ) {
        let link = Link { src_mac: [2, 0, 0, 0, 0, 1], dst_mac: [2, 0, 0, 0, 0, 2] };
        let (msg_type, code) = if time_exceeded { (message::TIME_EXCEEDED, 0) } else { (message::DEST_UNREACHABLE, unreachable::FRAG_NEEDED) };
        let reporter = SocketAddrV4::new(reporter.into(), 0);
        let mut frame;
        let result;
        if outbound {
            // Quote client -> backend; outer reporter -> client.
            let quote = transport_packet(tcp, client, backend, 9, 1, &payload, udp_none).build_ipv4();
            frame = icmp_error(&reporter.to_string(), &client.to_string(), msg_type, code, rest, &quote).ttl(ttl).build();
            result = icmp::translate_outbound(&mut frame, vip, link);
        } else {
            // Quote vip -> client; outer reporter -> vip.
            let quote = transport_packet(tcp, vip, client, 9, 1, &payload, udp_none).build_ipv4();
            frame = icmp_error(&reporter.to_string(), &vip.to_string(), msg_type, code, rest, &quote).ttl(ttl).build();
            result = icmp::translate_inbound(&mut frame, backend, link);
        }
        prop_assert_eq!(result, Ok(()));
        assert_icmp_checksums_full(&frame, udp_none && !tcp)?;
        let expected = if outbound {
            let quote = transport_packet(tcp, client, vip, 9, 1, &payload, udp_none).build_ipv4();
            icmp_error(&SocketAddrV4::new(*vip.ip(), 0).to_string(), &client.to_string(), msg_type, code, rest, &quote)
        } else {
            let quote = transport_packet(tcp, backend, client, 9, 1, &payload, udp_none).build_ipv4();
            icmp_error(&reporter.to_string(), &SocketAddrV4::new(*backend.ip(), 0).to_string(), msg_type, code, rest, &quote)
        };
        let expected = expected.ttl(ttl - 1).eth_src(link.src_mac).eth_dst(link.dst_mac).build();
        if let Some(diff) = testing::diff(&expected, &frame) {
            return Err(TestCaseError::fail(diff));
        }
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        start in 0usize..64,
        mtu in any::<u16>(),
    ) {
        let link = Link { src_mac: [2; 6], dst_mac: [3; 6] };
        let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 8080);
        let mut frame = bytes.clone();
        let _ = nat::rewrite_inbound(&mut frame, to, link);
        let mut frame = bytes.clone();
        let _ = nat::rewrite_outbound(&mut frame, to, link);
        let _ = icmp::quoted_flow(&bytes);
        let mut frame = bytes.clone();
        let _ = icmp::translate_inbound(&mut frame, to, link);
        let mut frame = bytes.clone();
        let _ = icmp::translate_outbound(&mut frame, to, link);
        let egress = TunnelEgress { link, src_addr: Ipv4Addr::new(10, 0, 0, 254), mtu };
        let mut chunk = vec![0; start];
        chunk.extend_from_slice(&bytes);
        let mut copy = chunk.clone();
        let _ = tun::encapsulate(&mut copy, start, bytes.len(), *to.ip(), &egress, 0);
        let mut copy = chunk.clone();
        let _ = tun::decapsulate(&mut copy, start, bytes.len(), *to.ip());
    }

    #[test]
    fn mangled_icmp_and_tunnel_frames_never_panic(
        which in 0usize..4,
        cut in 0usize..700,
        flips in proptest::collection::vec((0usize..700, any::<u8>()), 0..6),
        mtu in any::<u16>(),
    ) {
        let quote = big_reply(VIP).build_ipv4();
        let link = Link { src_mac: [2; 6], dst_mac: [3; 6] };
        let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 8080);
        let mut frame = match which {
            0 => from_client(icmp_error(ROUTER, VIP, 3, 4, 1400, &quote[..548])).build(),
            1 => from_server(icmp_error(RS, CLIENT, 3, 3, 0, &query(RS).build_ipv4())).build(),
            2 => tunnelled(&FrameBuilder::tcp().syn(), true, 0),
            _ => from_client(big_reply(VIP).dst(VIP)).build(),
        };
        for (at, value) in flips {
            if let Some(byte) = frame.get_mut(at) {
                *byte = value;
            }
        }
        frame.truncate(cut.max(1));
        let mut copy = frame.clone();
        if icmp::translate_inbound(&mut copy, to, link).is_ok() {
            prop_assert!(icmp::quoted_flow(&copy).is_ok());
        }
        let mut copy = frame.clone();
        let _ = icmp::translate_outbound(&mut copy, to, link);
        let egress = TunnelEgress { link, src_addr: Ipv4Addr::new(10, 0, 0, 254), mtu };
        let mut chunk = in_chunk(&frame[..frame.len().min(4096 - 64)], 64);
        let len = frame.len().min(4096 - 64);
        if let Ok(Encapsulated::Tunnelled { start, len } | Encapsulated::FragNeeded { start, len }) =
            tun::encapsulate(&mut chunk, 64, len, *to.ip(), &egress, 0)
        {
            prop_assert!(start + len <= chunk.len());
            prop_assert!(Ipv4Packet::new_checked(&chunk[start + 14..start + len]).is_ok());
        }
        let mut chunk = in_chunk(&frame[..len], 64);
        let _ = tun::decapsulate(&mut chunk, 64, len, *to.ip());
    }
}
