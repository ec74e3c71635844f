//! The decapsulation program through BPF_PROG_TEST_RUN (loaded, never attached), with one
//! golden table that also drives the Rust reference (`dataplane::rewrite::tun::decapsulate`):
//! for every frame both must agree on the verdict and, when decapsulated, on every output byte.
//! Needs root (CAP_BPF); skipped with a message otherwise.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dataplane::rewrite::tun::{self, Decapsulated};
use dataplane::testing::{self, FrameBuilder};
use dataplane::wire::EtherType;
use dataplane::DropReason;
use rs_decap::{action, Decap};

/// The real server's own address: the outer destination.
const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const LOCAL_STR: &str = "192.0.2.11:0";
const DIRECTOR: &str = "192.0.2.3:0";
const CLIENT: &str = "192.0.2.2:40000";
const VIP: &str = "192.0.2.10:9000";

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// What should become of a frame.
#[derive(Debug)]
enum Expect {
    /// Decapsulated into exactly these bytes (XDP_PASS).
    Inner(Vec<u8>),
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
            expect: Expect::Inner(inner_frame(&udp)),
        },
        Case {
            description: "TCP SYN, tunnelled to us",
            frame: tunnelled(&syn).build(),
            expect: Expect::Inner(inner_frame(&syn)),
        },
        Case {
            description: "padded frame: padding dropped",
            frame: tunnelled(&tiny).build(),
            expect: Expect::Inner(inner_frame(&tiny)),
        },
        Case {
            description: "outer header with options",
            frame: tunnelled(&udp).ihl(7).build(),
            expect: Expect::Inner(inner_frame(&udp)),
        },
        Case {
            description: "inner header with options",
            frame: tunnelled(&udp.clone().ihl(6)).build(),
            expect: Expect::Inner(inner_frame(&udp.clone().ihl(6))),
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
            expect: Expect::Untouched("malformed"),
        },
        Case {
            description: "inner shorter than an IPv4 header",
            frame: FrameBuilder::ipip()
                .src(DIRECTOR)
                .dst(LOCAL_STR)
                .payload(&udp.build_ipv4()[..12])
                .build(),
            expect: Expect::Untouched("malformed"),
        },
        Case {
            description: "inner not IPv4",
            frame: FrameBuilder::ipip()
                .src(DIRECTOR)
                .dst(LOCAL_STR)
                .payload(&[0x60; 40])
                .build(),
            expect: Expect::Untouched("malformed"),
        },
        Case {
            description: "inner IHL 4",
            frame: tunnelled(&udp.clone().ihl(4)).build(),
            expect: Expect::Untouched("malformed"),
        },
        Case {
            description: "inner total length past the outer payload",
            frame: tunnelled(&udp.clone().total_len(200)).build(),
            expect: Expect::Untouched("malformed"),
        },
        Case {
            description: "inner total length below its header",
            frame: tunnelled(&udp.clone().total_len(12)).build(),
            expect: Expect::Untouched("malformed"),
        },
    ]
}

/// The reference's verdict, in the program's counter names, and its output when decapsulated.
fn reference(frame: &[u8]) -> (&'static str, Option<Vec<u8>>) {
    let mut buffer = frame.to_vec();
    match tun::decapsulate(&mut buffer, 0, frame.len(), LOCAL) {
        Ok(Decapsulated::Inner { start, len }) => {
            ("decapsulated", Some(buffer[start..start + len].to_vec()))
        }
        Ok(Decapsulated::NotForUs) => ("not_for_us", None),
        Err(DropReason::Fragment) => ("outer_fragment", None),
        Err(DropReason::Truncated | DropReason::BadIhl) => ("malformed", None),
        Err(other) => panic!("reference gave an unexpected drop reason {other:?}"),
    }
}

#[test]
fn reference_agrees_with_the_golden_table() {
    for case in cases() {
        let (counter, output) = reference(&case.frame);
        match &case.expect {
            Expect::Inner(expected) => {
                assert_eq!(counter, "decapsulated", "{}", case.description);
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
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let decap = Decap::load().unwrap();
    decap.add_local_addrs(&[LOCAL]).unwrap();
    for case in cases() {
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
            Expect::Inner(bytes) => (bytes, "decapsulated"),
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

#[test]
fn program_decapsulates_nothing_without_local_addresses() {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let decap = Decap::load().unwrap();
    let frame = tunnelled(&udp_to_vip()).build();
    let run = decap.test_run(&frame).unwrap();
    assert_eq!(run.action, action::PASS);
    testing::assert_frame_eq(&frame, &run.output, "no local addresses");
    assert_eq!(counters(&decap)["not_for_us"], 1);
}
