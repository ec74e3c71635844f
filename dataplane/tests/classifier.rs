//! The XDP classifier itself, driven through BPF_PROG_TEST_RUN with the same crafted frames as
//! the pipeline's golden tests: each frame gets the expected action and bumps exactly the
//! expected counter. Needs root (CAP_BPF); skipped with a message otherwise.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dataplane::testing::FrameBuilder;
use dataplane::xdp::XdpClassifier;
use dataplane::{Protocol, ServiceKey};

const XDP_PASS: u32 = 2;

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn counters(classifier: &XdpClassifier) -> BTreeMap<&'static str, u64> {
    classifier.counters().unwrap().into_iter().collect()
}

/// Runs `frame` and asserts the action and that `counter`, and only it, went up by one.
fn expect(classifier: &XdpClassifier, description: &str, frame: &[u8], action: u32, counter: &str) {
    let before = counters(classifier);
    let got = classifier.test_run(frame).unwrap();
    let after = counters(classifier);
    assert_eq!(got, action, "{description}: action");
    let changed: Vec<(&str, u64)> = after
        .iter()
        .filter(|(name, value)| before[*name] != **value)
        .map(|(name, value)| (*name, value - before[name]))
        .collect();
    assert_eq!(
        changed,
        vec![(counter, 1)],
        "{description}: counters that moved"
    );
}

#[test]
fn classifier_passes_everything_it_cannot_serve_and_counts_why() {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let classifier = XdpClassifier::load().unwrap();
    let web = ServiceKey {
        vip: Ipv4Addr::new(192, 0, 2, 10),
        port: 80,
        protocol: Protocol::Tcp,
    };
    let dns = ServiceKey {
        vip: Ipv4Addr::new(192, 0, 2, 10),
        port: 53,
        protocol: Protocol::Udp,
    };
    classifier.set_service(&web, true).unwrap();
    classifier.set_service(&dns, false).unwrap();

    for (description, frame, counter) in &cases() {
        expect(&classifier, description, frame, XDP_PASS, counter);
    }

    // Removing the service hands its frames to the kernel as anybody else's.
    classifier.remove_service(&web).unwrap();
    classifier.remove_service(&web).unwrap();
    expect(
        &classifier,
        "removed service",
        &FrameBuilder::tcp()
            .src("198.51.100.7:40000")
            .dst("192.0.2.10:80")
            .syn()
            .build(),
        XDP_PASS,
        "no_service",
    );
    assert!(!classifier.is_attached());
}

/// `(description, frame, the counter it must bump)`: every one is passed to the kernel.
fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let syn = || {
        FrameBuilder::tcp()
            .src("198.51.100.7:40000")
            .dst("192.0.2.10:80")
            .syn()
    };
    vec![
        // With no socket on the queue, a served frame falls back to the kernel, counted.
        ("service, no socket on queue 0", syn().build(), "no_socket"),
        (
            "disabled service (a standby's VIP)",
            FrameBuilder::udp()
                .src("198.51.100.7:40000")
                .dst("192.0.2.10:53")
                .build(),
            "service_disabled",
        ),
        (
            "right VIP, other port",
            FrameBuilder::tcp()
                .src("198.51.100.7:40000")
                .dst("192.0.2.10:81")
                .syn()
                .build(),
            "no_service",
        ),
        (
            "right port, other protocol",
            FrameBuilder::udp()
                .src("198.51.100.7:40000")
                .dst("192.0.2.10:80")
                .build(),
            "no_service",
        ),
        (
            "other address",
            FrameBuilder::tcp()
                .src("198.51.100.7:40000")
                .dst("192.0.2.99:80")
                .syn()
                .build(),
            "no_service",
        ),
        ("ARP", FrameBuilder::arp().build(), "not_ipv4"),
        ("802.1Q tag", syn().vlan(7).build(), "vlan"),
        ("802.1ad tags", syn().qinq(7).build(), "vlan"),
        (
            "IPv4 header cut short",
            syn().truncate(14 + 12).build(),
            "truncated",
        ),
        (
            "TCP ports cut short",
            syn().truncate(14 + 20 + 2).build(),
            "truncated",
        ),
        ("IHL 4", syn().ihl(4).build(), "bad_ihl"),
        (
            "version 6 under an IPv4 EtherType",
            syn().version(6).build(),
            "bad_ihl",
        ),
        ("IPv4 options", syn().ihl(6).build(), "ip_options"),
        ("more fragments", syn().more_fragments().build(), "fragment"),
        (
            "fragment offset",
            syn().fragment_offset(185).build(),
            "fragment",
        ),
        (
            "ICMP to the VIP",
            FrameBuilder::icmp()
                .src("198.51.100.7:0")
                .dst("192.0.2.10:0")
                .build(),
            "other_protocol",
        ),
    ]
}
