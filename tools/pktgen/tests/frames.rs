//! The frame builder: golden bytes, checksums verified by the data plane's wire views, the same
//! frames as the data plane's own fixture builder (`dataplane::testing::FrameBuilder`, written
//! independently), per-flow fields derived incrementally equal to whole frames built from
//! scratch, flow addressing, and the validation errors. No privileges needed.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use dataplane::testing::{assert_frame_eq, FrameBuilder};
use dataplane::wire::{Ipv4Packet, TcpSegment, UdpDatagram};
use pktgen::abi;
use pktgen::frame::{
    format_mac, parse_mac, FrameError, FrameKind, FrameSpec, Ipv4Net, MAX_FLOWS, MIN_FRAME,
};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

fn spec(kind: FrameKind, size: usize, flows: u32) -> FrameSpec {
    FrameSpec {
        kind,
        size,
        src_mac: CLIENT_MAC,
        dst_mac: DIRECTOR_MAC,
        src_net: "198.51.100.0/24".parse().unwrap(),
        src_port: 1024,
        dst: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 80),
        flows,
    }
}

#[test]
fn udp_golden_bytes() {
    // The smallest UDP frame, byte by byte (checksums computed by hand with RFC 1071).
    let mut expected = Vec::new();
    expected.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0a]); // eth.dst
    expected.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // eth.src
    expected.extend_from_slice(&[0x08, 0x00]); // eth.type IPv4
    expected.extend_from_slice(&[0x45, 0x00]); // version 4, IHL 5, TOS 0
    expected.extend_from_slice(&[0x00, 0x30]); // total length 48
    expected.extend_from_slice(&[0x00, 0x00, 0x40, 0x00]); // ident 0, DF
    expected.extend_from_slice(&[0x40, 0x11]); // TTL 64, UDP
    expected.extend_from_slice(&[0x4e, 0x7e]); // header checksum
    expected.extend_from_slice(&[198, 51, 100, 1]); // source: the first host of the network
    expected.extend_from_slice(&[192, 0, 2, 10]); // destination
    expected.extend_from_slice(&[0x04, 0x00, 0x00, 0x50]); // ports 1024 -> 80
    expected.extend_from_slice(&[0x00, 0x1c]); // UDP length 28
    expected.extend_from_slice(&[0x0f, 0x27]); // UDP checksum
    expected.extend_from_slice(&[0; 20]); // payload: the stamp's 8 bytes and 12 more
    let frame = spec(FrameKind::Udp, MIN_FRAME, 1).frame(0);
    assert_frame_eq(&expected, &frame, "UDP template, 62 bytes");
}

#[test]
fn frames_match_the_data_planes_fixture_builder() {
    for size in [MIN_FRAME, 64, 128, 1514] {
        let udp = spec(FrameKind::Udp, size, 1).frame(0);
        let reference = FrameBuilder::udp()
            .eth_src(CLIENT_MAC)
            .eth_dst(DIRECTOR_MAC)
            .src("198.51.100.1:1024")
            .dst("192.0.2.10:80")
            .ident(0)
            .payload(&vec![0; size - abi::OFF_UDP_PAYLOAD])
            .build();
        assert_frame_eq(&reference, &udp, &format!("UDP, {size} bytes"));

        let syn = spec(FrameKind::TcpSyn, size, 1).frame(0);
        let reference = FrameBuilder::tcp()
            .eth_src(CLIENT_MAC)
            .eth_dst(DIRECTOR_MAC)
            .src("198.51.100.1:1024")
            .dst("192.0.2.10:80")
            .ident(0)
            .syn()
            .seq(1_000_000)
            .payload(&vec![0; size - abi::OFF_TCP_PAYLOAD])
            .build();
        assert_frame_eq(&reference, &syn, &format!("TCP SYN, {size} bytes"));

        // The fixture builder has no acknowledgment number: set it and recompute.
        let ack = spec(FrameKind::TcpAck, size, 1).frame(0);
        let mut reference = FrameBuilder::tcp()
            .eth_src(CLIENT_MAC)
            .eth_dst(DIRECTOR_MAC)
            .src("198.51.100.1:1024")
            .dst("192.0.2.10:80")
            .ident(0)
            .ack()
            .seq(1_000_001)
            .payload(&vec![0; size - abi::OFF_TCP_PAYLOAD])
            .build();
        let mut segment = TcpSegment::new_unchecked(&mut reference[abi::OFF_L4..]);
        segment.set_ack_number(2_000_001);
        segment.fill_checksum(Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(192, 0, 2, 10));
        assert_frame_eq(&reference, &ack, &format!("TCP ACK, {size} bytes"));
    }
}

/// Checks every checksum of `frame` with the wire views.
#[track_caller]
fn assert_checksums(frame: &[u8], kind: FrameKind) {
    let ip = Ipv4Packet::new_checked(&frame[14..]).expect("a whole IPv4 packet");
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if kind.is_tcp() {
        let segment = TcpSegment::new_checked(&frame[abi::OFF_L4..]).expect("a TCP segment");
        assert!(segment.verify_checksum(src, dst), "TCP checksum");
    } else {
        let datagram = UdpDatagram::new_checked(&frame[abi::OFF_L4..]).expect("a UDP datagram");
        assert!(datagram.verify_checksum(src, dst), "UDP checksum");
    }
}

#[test]
fn every_flows_fields_equal_its_frame_built_from_scratch() {
    for kind in [FrameKind::Udp, FrameKind::TcpSyn, FrameKind::TcpAck] {
        for size in [MIN_FRAME, 64, 1514] {
            // 65536 flows over a /16 and its ports: every checksum value shows up, the UDP
            // "computed 0 is sent as 0xffff" edge among them.
            let mut spec = spec(kind, size, 65_536);
            spec.src_net = "198.18.0.0/15".parse().unwrap();
            let template = spec.template();
            let step = if size == 64 { 1 } else { 97 };
            let mut udp_minus_zero = false;
            for flow in (0..spec.flows).step_by(step) {
                let frame = spec.frame(flow);
                let fields = spec.flow_fields(&template, flow);
                let at = |offset: usize, len: usize| &frame[offset..offset + len];
                assert_eq!(
                    fields.saddr,
                    at(abi::OFF_IP_SADDR, 4),
                    "{kind:?} flow {flow}"
                );
                assert_eq!(fields.sport, at(abi::OFF_L4, 2), "{kind:?} flow {flow}");
                assert_eq!(
                    fields.ip_check,
                    at(abi::OFF_IP_CHECK, 2),
                    "{kind:?} flow {flow}"
                );
                assert_eq!(
                    fields.l4_check,
                    at(kind.l4_check_offset(), 2),
                    "{kind:?} flow {flow}"
                );
                // Outside those fields every frame is the template.
                let mut patched = template.clone();
                patched[abi::OFF_IP_SADDR..abi::OFF_IP_SADDR + 4].copy_from_slice(&fields.saddr);
                patched[abi::OFF_L4..abi::OFF_L4 + 2].copy_from_slice(&fields.sport);
                patched[abi::OFF_IP_CHECK..abi::OFF_IP_CHECK + 2].copy_from_slice(&fields.ip_check);
                let l4 = kind.l4_check_offset();
                patched[l4..l4 + 2].copy_from_slice(&fields.l4_check);
                assert_eq!(patched, frame, "{kind:?} flow {flow}");
                if flow % 4099 == 0 || fields.l4_check == [0xff, 0xff] {
                    assert_checksums(&frame, kind);
                }
                udp_minus_zero |= kind == FrameKind::Udp && fields.l4_check == [0xff, 0xff];
            }
            if kind == FrameKind::Udp && step == 1 {
                assert!(
                    udp_minus_zero,
                    "no flow hit the UDP checksum 0 -> 0xffff edge"
                );
            }
        }
    }
}

#[test]
fn flows_are_distinct_and_spread_over_addresses_then_ports() {
    let mut spec = spec(FrameKind::Udp, 64, 1000);
    spec.src_net = "203.0.113.0/24".parse().unwrap();
    let sources: Vec<SocketAddrV4> = (0..spec.flows).map(|flow| spec.flow_source(flow)).collect();
    assert_eq!(sources.iter().collect::<HashSet<_>>().len(), 1000);
    assert_eq!(sources[0], "203.0.113.1:1024".parse().unwrap());
    assert_eq!(sources[253], "203.0.113.254:1024".parse().unwrap());
    assert_eq!(sources[254], "203.0.113.1:1025".parse().unwrap());
    for source in &sources {
        assert!(
            (1..=254).contains(&source.ip().octets()[3]),
            "{source}: network or broadcast address"
        );
    }
    let single: Ipv4Net = "192.0.2.7/32".parse().unwrap();
    assert_eq!(
        (single.hosts(), single.host(5)),
        (1, Ipv4Addr::new(192, 0, 2, 7))
    );
    let pair: Ipv4Net = "192.0.2.6/31".parse().unwrap();
    assert_eq!(
        (pair.hosts(), pair.host(1)),
        (2, Ipv4Addr::new(192, 0, 2, 7))
    );
}

#[test]
fn invalid_specs_are_refused() {
    assert_eq!(
        spec(FrameKind::Udp, MIN_FRAME - 1, 1).validate(),
        Err(FrameError::Size(61))
    );
    assert_eq!(
        spec(FrameKind::Udp, 1515, 1).validate(),
        Err(FrameError::Size(1515))
    );
    assert_eq!(
        spec(FrameKind::Udp, 64, 0).validate(),
        Err(FrameError::Flows(0))
    );
    assert_eq!(
        spec(FrameKind::Udp, 64, MAX_FLOWS + 1).validate(),
        Err(FrameError::Flows(MAX_FLOWS + 1))
    );
    let mut narrow = spec(FrameKind::Udp, 64, 70_000);
    narrow.src_net = "192.0.2.1/32".parse().unwrap();
    assert!(matches!(narrow.validate(), Err(FrameError::Ports { .. })));
    assert!(spec(FrameKind::TcpAck, 64, MAX_FLOWS).validate().is_ok());
    assert!("192.0.2.1/24".parse::<Ipv4Net>().is_err(), "host bits set");
    assert!("192.0.2.0/33".parse::<Ipv4Net>().is_err());
    assert!("192.0.2/24".parse::<Ipv4Net>().is_err());
}

#[test]
fn macs_round_trip() {
    let mac = parse_mac("02:00:5e:10:ab:FF").unwrap();
    assert_eq!(mac, [0x02, 0x00, 0x5e, 0x10, 0xab, 0xff]);
    assert_eq!(format_mac(mac), "02:00:5e:10:ab:ff");
    for bad in [
        "",
        "02:00:5e:10:ab",
        "02:00:5e:10:ab:ff:00",
        "02:00:5e:10:ab:fff",
        "zz:00:00:00:00:00",
    ] {
        assert!(parse_mac(bad).is_err(), "{bad:?} accepted");
    }
}
