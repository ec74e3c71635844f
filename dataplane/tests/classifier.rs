//! The XDP classifier itself, driven through BPF_PROG_TEST_RUN with the same crafted frames as
//! the pipeline's golden tests: each frame gets the expected action and bumps exactly the
//! expected counter. Needs root (CAP_BPF); skipped with a message otherwise.
//!
//! BPF_PROG_TEST_RUN runs the program on queue 0 and does not carry out a redirect: it returns
//! the action. With no socket registered on queue 0 a steered frame is passed and counts
//! `no_socket`, which is how most cases here tell "steered" from "passed for a reason"; one test
//! registers a real AF_XDP socket (in a private network namespace) to see `XDP_REDIRECT` and the
//! counters that only move then.
//!
//! The IPv6 cases mirror the IPv4 ones on the same classifier (2001:db8::/32 addresses), plus
//! the extension-header walk, NDP/echo/MLD staying with the kernel, and each malformed-IPv6
//! counter.

use std::collections::BTreeMap;

use dataplane::testing::{icmp_error, FrameBuilder};
use dataplane::wire::icmp::{message, unreachable};
use dataplane::wire::EtherType;
use dataplane::xdp::{NatBackendKey, XdpClassifier};
use dataplane::{Protocol, ServiceKey};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// A client on the Internet.
const CLIENT: &str = "198.51.100.7:40000";
/// The web service (TCP, enabled) and, on port 53, the DNS one (UDP, disabled).
const VIP: &str = "192.0.2.10:80";
/// A NAT real server of the web service (TCP, enabled) and, on port 5353, of another (UDP,
/// disabled).
const RS: &str = "10.0.0.1:8080";
/// A router on the client's path.
const ROUTER: &str = "203.0.113.1:0";
/// The director's own address on the server side, where its health checks come from.
const DIRECTOR: &str = "10.0.0.254";
/// ICMP destination unreachable code 1 (RFC 792).
const HOST_UNREACHABLE: u8 = 1;

/// Bytes before the ICMP quote: Ethernet, outer IPv4, ICMP header.
const QUOTE_AT: usize = 14 + 20 + 8;

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

fn key(addr: &str, protocol: Protocol) -> ServiceKey {
    let addr: std::net::SocketAddrV4 = addr.parse().unwrap();
    ServiceKey {
        vip: std::net::IpAddr::V4(*addr.ip()),
        port: addr.port(),
        protocol,
    }
}

fn nat_key(addr: &str, protocol: Protocol) -> NatBackendKey {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    NatBackendKey {
        address: addr.ip(),
        port: addr.port(),
        protocol,
    }
}

/// A classifier serving `VIP` (TCP, enabled), VIP:53 (UDP, disabled), NAT real server `RS`
/// (TCP, enabled) and RS:5353 (UDP, disabled), with `DIRECTOR` as one of its own addresses;
/// and the same in IPv6 ([`ipv6::serve`]).
fn classifier() -> XdpClassifier {
    let classifier = XdpClassifier::load().unwrap();
    ipv6::serve(&classifier);
    classifier
        .set_service(&key(VIP, Protocol::Tcp), true)
        .unwrap();
    classifier
        .set_service(&key("192.0.2.10:53", Protocol::Udp), false)
        .unwrap();
    classifier
        .set_nat_backend(&nat_key(RS, Protocol::Tcp), true)
        .unwrap();
    classifier
        .set_nat_backend(&nat_key("10.0.0.1:5353", Protocol::Udp), false)
        .unwrap();
    classifier
        .set_local_address(DIRECTOR.parse().unwrap())
        .unwrap();
    classifier
}

/// The NAT real server's answer to the director's own health check.
fn check_answer() -> FrameBuilder {
    FrameBuilder::tcp()
        .src(RS)
        .dst(&format!("{DIRECTOR}:40000"))
        .syn()
        .ack()
}

/// An ICMP error from a router behind the director about the director's own health check.
fn check_error() -> FrameBuilder {
    let check = FrameBuilder::tcp()
        .src(&format!("{DIRECTOR}:40000"))
        .dst(RS)
        .syn()
        .build_ipv4();
    icmp_error(
        "10.0.0.253:0",
        &format!("{DIRECTOR}:0"),
        message::DEST_UNREACHABLE,
        HOST_UNREACHABLE,
        0,
        &check,
    )
}

fn syn() -> FrameBuilder {
    FrameBuilder::tcp().src(CLIENT).dst(VIP).syn()
}

/// The web server's reply, as it leaves the real server (NAT, before translation).
fn nat_reply() -> FrameBuilder {
    FrameBuilder::tcp().src(RS).dst(CLIENT).syn().ack()
}

/// A large reply from the VIP to the client, as an ICMP error quotes it.
fn vip_reply() -> Vec<u8> {
    FrameBuilder::tcp()
        .src(VIP)
        .dst(CLIENT)
        .ack()
        .payload(&[0; 1400])
        .build_ipv4()
}

/// A client packet the director sent on to the NAT real server, as an ICMP error quotes it.
fn to_rs() -> Vec<u8> {
    FrameBuilder::tcp()
        .src(CLIENT)
        .dst(RS)
        .syn()
        .ttl(1)
        .build_ipv4()
}

/// Fragmentation needed from a router on the client's path, about a reply from the VIP.
fn frag_needed(quote: &[u8]) -> FrameBuilder {
    icmp_error(
        ROUTER,
        "192.0.2.10:0",
        message::DEST_UNREACHABLE,
        unreachable::FRAG_NEEDED,
        1400,
        &quote[..quote.len().min(28)],
    )
}

/// An ICMP error from the server side (a router behind the director) to the client.
fn from_server_side(msg_type: u8, code: u8, quote: &[u8]) -> FrameBuilder {
    icmp_error("10.0.0.253:0", "198.51.100.7:0", msg_type, code, 0, quote)
}

/// `(description, frame, the counter it must bump)`: every one is passed to the kernel; those
/// counting `no_socket` were steered and found no socket on queue 0.
type Case = (&'static str, Vec<u8>, &'static str);

fn cases() -> Vec<Case> {
    [
        transport_cases(),
        icmp_cases(),
        icmp_stranger_cases(),
        icmp_quote_cases(),
        other_cases(),
        ipv6::transport_cases(),
        ipv6::walk_cases(),
        ipv6::icmp_cases(),
        ipv6::icmp_informational_cases(),
        ipv6::icmp_quote_cases(),
        ipv6::malformed_cases(),
    ]
    .concat()
}

/// TCP/UDP: services by destination, NAT real servers by source.
fn transport_cases() -> Vec<Case> {
    vec![
        // Services, by destination.
        ("service, no socket on queue 0", syn().build(), "no_socket"),
        (
            "disabled service (a standby's VIP)",
            FrameBuilder::udp().src(CLIENT).dst("192.0.2.10:53").build(),
            "service_disabled",
        ),
        (
            "right VIP, other port",
            syn().dst("192.0.2.10:81").build(),
            "no_service",
        ),
        (
            "right port, other protocol",
            FrameBuilder::udp().src(CLIENT).dst(VIP).build(),
            "no_service",
        ),
        (
            "other address",
            syn().dst("192.0.2.99:80").build(),
            "no_service",
        ),
        // NAT real servers' replies, by source.
        ("NAT reply", nat_reply().build(), "no_socket"),
        (
            "NAT reply over UDP from a disabled real server",
            FrameBuilder::udp().src("10.0.0.1:5353").dst(CLIENT).build(),
            "service_disabled",
        ),
        (
            "NAT real server's address, other port",
            nat_reply().src("10.0.0.1:22").build(),
            "no_service",
        ),
        (
            "NAT real server's port, other protocol",
            FrameBuilder::udp().src(RS).dst(CLIENT).build(),
            "no_service",
        ),
        (
            "to a NAT real server's port (not from it)",
            FrameBuilder::tcp().src(CLIENT).dst(RS).syn().build(),
            "no_service",
        ),
        // The director's own traffic with NAT real servers belongs to its kernel.
        (
            "NAT real server answering the director's health check",
            check_answer().build(),
            "to_director",
        ),
        (
            "NAT real server's UDP to the director's address",
            FrameBuilder::udp()
                .src("10.0.0.1:5353")
                .dst(&format!("{DIRECTOR}:40000"))
                .build(),
            "to_director",
        ),
        (
            "to the director's address, not from a NAT real server",
            FrameBuilder::tcp()
                .src("10.0.0.9:22")
                .dst(&format!("{DIRECTOR}:40000"))
                .build(),
            "no_service",
        ),
    ]
}

/// ICMP errors about flows we serve (steered, or passed if disabled).
fn icmp_cases() -> Vec<Case> {
    let udp_from_vip = FrameBuilder::udp()
        .src("192.0.2.10:53")
        .dst(CLIENT)
        .payload(&[1; 40])
        .build_ipv4();
    let udp_to_rs = FrameBuilder::udp()
        .src(CLIENT)
        .dst("10.0.0.1:5353")
        .build_ipv4();
    vec![
        // ICMP errors, by the flow they quote.
        (
            "frag needed quoting a reply from VIP:port",
            frag_needed(&vip_reply()).build(),
            "no_socket",
        ),
        (
            "frag needed quoting the whole reply",
            frag_needed(&vip_reply()[..576 - 28]).build(),
            "no_socket",
        ),
        (
            "frag needed quoting the first fragment of a reply",
            frag_needed(
                &FrameBuilder::tcp()
                    .src(VIP)
                    .dst(CLIENT)
                    .more_fragments()
                    .payload(&[0; 100])
                    .build_ipv4(),
            )
            .build(),
            "no_socket",
        ),
        (
            "port unreachable quoting a packet to a NAT real server",
            from_server_side(message::DEST_UNREACHABLE, unreachable::PORT, &to_rs()).build(),
            "no_socket",
        ),
        (
            "time exceeded quoting a packet to a NAT real server",
            from_server_side(message::TIME_EXCEEDED, 0, &to_rs()).build(),
            "no_socket",
        ),
        (
            "frag needed quoting a reply from a disabled service",
            frag_needed(&udp_from_vip).build(),
            "service_disabled",
        ),
        (
            "port unreachable quoting a packet to a disabled NAT real server",
            from_server_side(message::DEST_UNREACHABLE, unreachable::PORT, &udp_to_rs).build(),
            "service_disabled",
        ),
        (
            "host unreachable about the director's own health check",
            check_error().build(),
            "to_director",
        ),
    ]
}

/// ICMP errors about flows nobody here serves, and ICMP that is no error.
fn icmp_stranger_cases() -> Vec<Case> {
    let echo_quote = FrameBuilder::icmp()
        .src("192.0.2.10:0")
        .dst(CLIENT)
        .build_ipv4();
    vec![
        (
            "frag needed quoting an unknown flow",
            frag_needed(
                &FrameBuilder::tcp()
                    .src("192.0.2.99:80")
                    .dst(CLIENT)
                    .build_ipv4(),
            )
            .build(),
            "icmp_no_service",
        ),
        (
            "frag needed quoting the VIP's address, other port",
            frag_needed(
                &FrameBuilder::tcp()
                    .src("192.0.2.10:81")
                    .dst(CLIENT)
                    .build_ipv4(),
            )
            .build(),
            "icmp_no_service",
        ),
        (
            "error quoting a packet *to* VIP:port (the wrong direction)",
            frag_needed(&syn().build_ipv4()).build(),
            "icmp_no_service",
        ),
        (
            "error quoting a packet *from* a NAT real server (the wrong direction)",
            from_server_side(
                message::DEST_UNREACHABLE,
                unreachable::PORT,
                &nat_reply().build_ipv4(),
            )
            .build(),
            "icmp_no_service",
        ),
        (
            "error quoting an ICMP echo from the VIP",
            frag_needed(&echo_quote).build(),
            "icmp_no_service",
        ),
        (
            "echo request to the VIP",
            FrameBuilder::icmp()
                .src("198.51.100.7:0")
                .dst("192.0.2.10:0")
                .build(),
            "icmp_not_error",
        ),
        (
            "echo reply to the VIP",
            FrameBuilder::icmp()
                .src("198.51.100.7:0")
                .dst("192.0.2.10:0")
                .icmp_header(message::ECHO_REPLY, 0, 0x1234_0001)
                .build(),
            "icmp_not_error",
        ),
        (
            "redirect (type 5) quoting a reply from VIP:port",
            icmp_error(ROUTER, "192.0.2.10:0", 5, 1, 0, &vip_reply()[..28]).build(),
            "icmp_not_error",
        ),
    ]
}

/// ICMP errors whose quote, or outer header, cannot be classified.
fn icmp_quote_cases() -> Vec<Case> {
    vec![
        // Quotes too short or not what a port lookup can use.
        (
            "quote: the header and 4 bytes of TCP",
            frag_needed(&vip_reply()[..24]).build(),
            "icmp_truncated",
        ),
        (
            "quote: a partial header",
            frag_needed(&vip_reply()[..19]).build(),
            "icmp_truncated",
        ),
        ("quote: nothing", frag_needed(&[]).build(), "icmp_truncated"),
        (
            "quote cut by the outer total length, Ethernet padding after it",
            {
                let mut frame = frag_needed(&vip_reply()[..24]).unpadded().build();
                frame.extend_from_slice(&[0; 8]);
                frame
            },
            "icmp_truncated",
        ),
        (
            "ICMP header cut short",
            FrameBuilder::icmp()
                .src("198.51.100.7:0")
                .dst("192.0.2.10:0")
                .truncate(14 + 20 + 4)
                .build(),
            "truncated",
        ),
        (
            "quote with IPv4 options",
            frag_needed(&FrameBuilder::tcp().src(VIP).dst(CLIENT).ihl(6).build_ipv4()[..32])
                .build(),
            "icmp_bad_quote",
        ),
        (
            "quote of version 6",
            frag_needed(
                &FrameBuilder::tcp()
                    .src(VIP)
                    .dst(CLIENT)
                    .version(6)
                    .build_ipv4(),
            )
            .build(),
            "icmp_bad_quote",
        ),
        (
            "quote with IHL 4",
            frag_needed(&FrameBuilder::tcp().src(VIP).dst(CLIENT).ihl(4).build_ipv4()).build(),
            "icmp_bad_quote",
        ),
        (
            "quote of a later fragment (no ports)",
            frag_needed(
                &FrameBuilder::tcp()
                    .src(VIP)
                    .dst(CLIENT)
                    .fragment_offset(1480)
                    .build_ipv4(),
            )
            .build(),
            "icmp_bad_quote",
        ),
        (
            "ICMP error with IPv4 options",
            frag_needed(&vip_reply()).ihl(6).build(),
            "ip_options",
        ),
        (
            "ICMP error in a fragment",
            frag_needed(&vip_reply()).more_fragments().build(),
            "fragment",
        ),
    ]
}

/// Everything else.
fn other_cases() -> Vec<Case> {
    vec![
        (
            "IP-in-IP",
            FrameBuilder::ipip().payload(&syn().build_ipv4()).build(),
            "other_protocol",
        ),
        ("ARP", FrameBuilder::arp().build(), "not_ip"),
        (
            "other EtherType (LLDP)",
            syn().ethertype(EtherType(0x88cc)).build(),
            "not_ip",
        ),
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
        (
            "NAT reply's ports cut short",
            nat_reply().truncate(14 + 20 + 2).build(),
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
    ]
}

#[test]
fn classifier_passes_everything_it_cannot_serve_and_counts_why() {
    if !dataplane::testing::require_root() {
        return;
    }
    let classifier = classifier();
    for (description, frame, counter) in &cases() {
        expect(&classifier, description, frame, XDP_PASS, counter);
    }

    // Removing an entry hands its frames to the kernel as anybody else's; twice is harmless.
    let web = key(VIP, Protocol::Tcp);
    classifier.remove_service(&web).unwrap();
    classifier.remove_service(&web).unwrap();
    expect(
        &classifier,
        "removed service",
        &syn().build(),
        XDP_PASS,
        "no_service",
    );
    expect(
        &classifier,
        "frag needed about a removed service",
        &frag_needed(&vip_reply()).build(),
        XDP_PASS,
        "icmp_no_service",
    );
    let rs = nat_key(RS, Protocol::Tcp);
    classifier.remove_nat_backend(&rs).unwrap();
    classifier.remove_nat_backend(&rs).unwrap();
    expect(
        &classifier,
        "reply from a removed NAT real server",
        &nat_reply().build(),
        XDP_PASS,
        "no_service",
    );
    expect(
        &classifier,
        "error about a packet to a removed NAT real server",
        &from_server_side(message::DEST_UNREACHABLE, unreachable::PORT, &to_rs()).build(),
        XDP_PASS,
        "icmp_no_service",
    );

    // Disabling and enabling in place, as a standby director does.
    classifier.set_nat_backend(&rs, false).unwrap();
    expect(
        &classifier,
        "disabled NAT real server",
        &nat_reply().build(),
        XDP_PASS,
        "service_disabled",
    );
    classifier.set_nat_backend(&rs, true).unwrap();
    expect(
        &classifier,
        "re-enabled NAT real server",
        &nat_reply().build(),
        XDP_PASS,
        "no_socket",
    );

    // Without the director's address in the map, its health checks' answers would be steered
    // to the workers (which have no flow for them); twice removed is harmless.
    let director: std::net::IpAddr = DIRECTOR.parse().unwrap();
    classifier.remove_local_address(director).unwrap();
    classifier.remove_local_address(director).unwrap();
    expect(
        &classifier,
        "health check answer, address forgotten",
        &check_answer().build(),
        XDP_PASS,
        "no_socket",
    );
    expect(
        &classifier,
        "error about a health check, address forgotten",
        &check_error().build(),
        XDP_PASS,
        "no_socket",
    );
    ipv6::removal_and_disabling(&classifier);
    assert!(!classifier.is_attached());
}

/// An ICMP error cut at every length is passed and counted, never read beyond its end (the
/// verifier guarantees the latter; this shows the counters agree on where each header ends).
#[test]
fn icmp_error_cut_anywhere_is_passed_and_counted() {
    if !dataplane::testing::require_root() {
        return;
    }
    let classifier = classifier();
    let frame = frag_needed(&vip_reply()).unpadded().build();
    assert_eq!(frame.len(), QUOTE_AT + 28);
    // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
    for len in 14..frame.len() {
        let counter = if len < QUOTE_AT {
            "truncated"
        } else {
            "icmp_truncated"
        };
        expect(
            &classifier,
            &format!("cut to {len} bytes"),
            &frame[..len],
            XDP_PASS,
            counter,
        );
    }
    expect(&classifier, "whole", &frame, XDP_PASS, "no_socket");
}

/// With an AF_XDP socket on queue 0, steered frames are redirected and counted by kind.
#[test]
fn classifier_redirects_to_the_socket_on_the_receiving_queue() {
    if !dataplane::testing::require_root() {
        return;
    }
    // A private network namespace for this thread alone, so binding to its loopback disturbs
    // nobody; it goes away with the thread and the socket.
    std::thread::spawn(|| {
        // SAFETY: unshare affects only the calling thread, which is ours.
        let result = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(result, 0, "unshare: {}", std::io::Error::last_os_error());
        let socket = xsk::Socket::on_loopback_queue_0();
        let classifier = classifier();
        classifier.register_socket(0, socket.fd()).unwrap();

        expect(
            &classifier,
            "service",
            &syn().build(),
            XDP_REDIRECT,
            "redirected",
        );
        expect(
            &classifier,
            "NAT reply",
            &nat_reply().build(),
            XDP_REDIRECT,
            "nat_reply",
        );
        expect(
            &classifier,
            "frag needed about a reply from the VIP",
            &frag_needed(&vip_reply()).build(),
            XDP_REDIRECT,
            "icmp_redirected",
        );
        expect(
            &classifier,
            "port unreachable about a packet to a NAT real server",
            &from_server_side(message::DEST_UNREACHABLE, unreachable::PORT, &to_rs()).build(),
            XDP_REDIRECT,
            "icmp_redirected",
        );
        ipv6::expect_redirects(&classifier);
        // Disabled entries, other ICMP and strangers still go to the kernel.
        for (description, frame, counter) in cases()
            .into_iter()
            .filter(|(_, _, counter)| *counter != "no_socket")
        {
            expect(&classifier, description, &frame, XDP_PASS, counter);
        }

        classifier.unregister_socket(0).unwrap();
        classifier.unregister_socket(0).unwrap();
        expect(
            &classifier,
            "NAT reply, socket gone",
            &nat_reply().build(),
            XDP_PASS,
            "no_socket",
        );
        drop(socket);
    })
    .join()
    .unwrap();
}

/// A bare AF_XDP socket, bound and never polled: enough for the XSKMAP to accept it.
mod xsk {
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use std::num::NonZeroU32;
    use std::os::fd::RawFd;
    use std::ptr::NonNull;

    use xdpilone::{DeviceQueue, IfInfo, RingRx, Umem, UmemConfig, User};

    const FRAME_SIZE: u32 = 4096;
    const FRAMES: u32 = 16;
    const RING: u32 = 8;

    pub struct Socket {
        // Field order is drop order: rings and sockets before the UMEM, the memory last.
        rx: RingRx,
        _device: DeviceQueue,
        _user: User,
        _umem: Umem,
        _area: Area,
    }

    /// Page-aligned, zeroed UMEM memory, freed on drop.
    struct Area {
        base: NonNull<u8>,
        layout: Layout,
    }

    impl Drop for Area {
        fn drop(&mut self) {
            // SAFETY: allocated in `on_loopback_queue_0` with this layout; the kernel keeps its
            // own references to the pages it pinned until it releases the UMEM.
            unsafe { dealloc(self.base.as_ptr(), self.layout) };
        }
    }

    impl Socket {
        /// Binds a socket to queue 0 of `lo` in the calling thread's network namespace.
        pub fn on_loopback_queue_0() -> Self {
            let layout = Layout::from_size_align((FRAME_SIZE * FRAMES) as usize, 4096).unwrap();
            // SAFETY: the layout has a non-zero size.
            let base = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("allocating a UMEM");
            let area = Area { base, layout };
            let config = UmemConfig {
                fill_size: RING,
                complete_size: RING,
                frame_size: FRAME_SIZE,
                headroom: 0,
                flags: 0,
            };
            // SAFETY: `area` is page aligned, `layout.size()` bytes long, and outlives the UMEM
            // (see the field order); nothing else uses it.
            let umem = unsafe {
                Umem::new(
                    config,
                    NonNull::slice_from_raw_parts(area.base, layout.size()),
                )
            }
            .expect("UMEM registration");
            let mut info = IfInfo::invalid();
            info.from_name(c"lo").expect("lo");
            info.set_queue(0);
            let socket = xdpilone::Socket::with_shared(&info, &umem).expect("AF_XDP socket");
            let device = umem.fq_cq(&socket).expect("fill/completion rings");
            let user = umem
                .rx_tx(
                    &socket,
                    &xdpilone::SocketConfig {
                        rx_size: NonZeroU32::new(RING),
                        tx_size: None,
                        bind_flags: 0,
                    },
                )
                .expect("RX ring");
            let rx = user.map_rx().expect("mapping the RX ring");
            umem.bind(&user).expect("binding to lo queue 0");
            Socket {
                rx,
                _device: device,
                _user: user,
                _umem: umem,
                _area: area,
            }
        }

        pub fn fd(&self) -> RawFd {
            self.rx.as_raw_fd()
        }
    }
}

/// The IPv6 half: the same services, real servers and director address in 2001:db8::/32, and
/// what only IPv6 has (extension headers, NDP, its malformations).
mod ipv6 {
    use super::{expect, Case, XdpClassifier, XDP_PASS, XDP_REDIRECT};
    use dataplane::testing::{FrameBuilder, Ipv6FrameBuilder};
    use dataplane::wire::EtherType;
    use dataplane::Protocol;

    /// A client on the Internet.
    const CLIENT: &str = "[2001:db8:ffff::7]:40000";
    /// The web service (TCP, enabled) and, on port 53, the DNS one (UDP, disabled).
    const VIP: &str = "[2001:db8::10]:80";
    /// A NAT real server (TCP, enabled) and, on port 5353, of another (UDP, disabled).
    const RS: &str = "[2001:db8:1::1]:8080";
    /// A router on the client's path.
    const ROUTER: &str = "[2001:db8:ff::1]:0";
    /// A router behind the director, on the server side.
    const SERVER_ROUTER: &str = "[2001:db8:1::fd]:0";
    /// The director's own address on the server side.
    const DIRECTOR: &str = "2001:db8:1::fe";

    /// ICMPv6 message types (RFC 4443, RFC 4861, RFC 2710/3810).
    mod icmp6 {
        pub const DEST_UNREACHABLE: u8 = 1;
        pub const PACKET_TOO_BIG: u8 = 2;
        pub const TIME_EXCEEDED: u8 = 3;
        pub const PARAMETER_PROBLEM: u8 = 4;
        pub const ECHO_REQUEST: u8 = 128;
        pub const ECHO_REPLY: u8 = 129;
        pub const MLD_QUERY: u8 = 130;
        pub const MLD_V2_REPORT: u8 = 143;
        pub const ROUTER_SOLICITATION: u8 = 133;
        pub const ROUTER_ADVERTISEMENT: u8 = 134;
        pub const NEIGHBOR_SOLICITATION: u8 = 135;
        pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
        pub const REDIRECT: u8 = 137;
        /// Destination unreachable code 4.
        pub const PORT_UNREACHABLE: u8 = 4;
    }

    /// Bytes before an ICMPv6 quote without extension headers: Ethernet, IPv6, ICMPv6.
    const QUOTE_AT: usize = 14 + 40 + 8;

    fn at(addr: &str) -> (std::net::IpAddr, u16) {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        (addr.ip(), addr.port())
    }

    fn nat_key(addr: &str, protocol: Protocol) -> dataplane::xdp::NatBackendKey {
        super::nat_key(addr, protocol)
    }

    /// Adds the IPv6 twins of the IPv4 fixtures to `classifier`.
    pub fn serve(classifier: &XdpClassifier) {
        let (vip, port) = at(VIP);
        classifier
            .set_service_address(vip, port, Protocol::Tcp, true)
            .unwrap();
        classifier
            .set_service_address(vip, 53, Protocol::Udp, false)
            .unwrap();
        classifier
            .set_nat_backend(&nat_key(RS, Protocol::Tcp), true)
            .unwrap();
        classifier
            .set_nat_backend(&nat_key("[2001:db8:1::1]:5353", Protocol::Udp), false)
            .unwrap();
        classifier
            .set_local_address(DIRECTOR.parse().unwrap())
            .unwrap();
    }

    fn syn() -> Ipv6FrameBuilder {
        Ipv6FrameBuilder::tcp().src(CLIENT).dst(VIP).syn()
    }

    fn nat_reply() -> Ipv6FrameBuilder {
        Ipv6FrameBuilder::tcp().src(RS).dst(CLIENT).syn().ack()
    }

    fn check_answer() -> Ipv6FrameBuilder {
        Ipv6FrameBuilder::tcp()
            .src(RS)
            .dst(&format!("[{DIRECTOR}]:40000"))
            .syn()
            .ack()
    }

    /// A large reply from the VIP to the client, as an ICMPv6 error quotes it.
    fn vip_reply() -> Vec<u8> {
        Ipv6FrameBuilder::tcp()
            .src(VIP)
            .dst(CLIENT)
            .ack()
            .payload(&[0; 1400])
            .build_ipv6()
    }

    /// A client packet the director sent on to the NAT real server.
    fn to_rs() -> Vec<u8> {
        Ipv6FrameBuilder::tcp()
            .src(CLIENT)
            .dst(RS)
            .syn()
            .hop_limit(1)
            .build_ipv6()
    }

    fn icmp6_error(
        src: &str,
        dst: &str,
        msg_type: u8,
        code: u8,
        rest: u32,
        quote: &[u8],
    ) -> Ipv6FrameBuilder {
        Ipv6FrameBuilder::icmp6()
            .src(src)
            .dst(dst)
            .icmp6_header(msg_type, code, rest)
            .payload(quote)
    }

    /// Packet too big (MTU 1280) from a router on the client's path, about a reply from the VIP,
    /// quoting as much as an ICMPv6 error may (RFC 4443 2.4(c): the error fits 1280 bytes).
    fn too_big(quote: &[u8]) -> Ipv6FrameBuilder {
        icmp6_error(
            ROUTER,
            "[2001:db8::10]:0",
            icmp6::PACKET_TOO_BIG,
            0,
            1280,
            &quote[..quote.len().min(1280 - 48)],
        )
    }

    /// An ICMPv6 error from the server side to the client.
    fn from_server_side(msg_type: u8, code: u8, quote: &[u8]) -> Ipv6FrameBuilder {
        icmp6_error(
            SERVER_ROUTER,
            "[2001:db8:ffff::7]:0",
            msg_type,
            code,
            0,
            quote,
        )
    }

    /// Address unreachable from a router behind the director about its own health check.
    fn check_error() -> Ipv6FrameBuilder {
        let check = Ipv6FrameBuilder::tcp()
            .src(&format!("[{DIRECTOR}]:40000"))
            .dst(RS)
            .syn()
            .build_ipv6();
        icmp6_error(
            SERVER_ROUTER,
            &format!("[{DIRECTOR}]:0"),
            icmp6::DEST_UNREACHABLE,
            3,
            0,
            &check,
        )
    }

    /// An NDP or other informational ICMPv6 message from the client's router.
    fn informational(dst: &str, msg_type: u8, body: &[u8]) -> Ipv6FrameBuilder {
        Ipv6FrameBuilder::icmp6()
            .src(ROUTER)
            .dst(dst)
            .hop_limit(255)
            .icmp6_header(msg_type, 0, 0)
            .payload(body)
    }

    /// The VIP's address, as an NDP target.
    fn vip_target() -> [u8; 16] {
        "2001:db8::10"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
    }

    /// TCP/UDP: services by destination, NAT real servers by source.
    pub fn transport_cases() -> Vec<Case> {
        vec![
            (
                "v6: service, no socket on queue 0",
                syn().build(),
                "no_socket",
            ),
            (
                "v6: disabled service",
                Ipv6FrameBuilder::udp()
                    .src(CLIENT)
                    .dst("[2001:db8::10]:53")
                    .build(),
                "service_disabled",
            ),
            (
                "v6: right VIP, other port",
                syn().dst("[2001:db8::10]:81").build(),
                "no_service",
            ),
            (
                "v6: right port, other protocol",
                Ipv6FrameBuilder::udp().src(CLIENT).dst(VIP).build(),
                "no_service",
            ),
            (
                "v6: other address",
                syn().dst("[2001:db8::99]:80").build(),
                "no_service",
            ),
            (
                "v6: the IPv4 VIP's address, mapped into IPv6",
                syn().dst("[::ffff:192.0.2.10]:80").build(),
                "no_service",
            ),
            (
                "v6: padded after a short payload length",
                Ipv6FrameBuilder::udp()
                    .src(CLIENT)
                    .dst("[2001:db8::10]:53")
                    .unpadded()
                    .truncate(14 + 40 + 8)
                    .build()
                    .into_iter()
                    .chain([0; 16])
                    .collect(),
                "service_disabled",
            ),
            ("v6: NAT reply", nat_reply().build(), "no_socket"),
            (
                "v6: NAT reply over UDP from a disabled real server",
                Ipv6FrameBuilder::udp()
                    .src("[2001:db8:1::1]:5353")
                    .dst(CLIENT)
                    .build(),
                "service_disabled",
            ),
            (
                "v6: NAT real server's address, other port",
                nat_reply().src("[2001:db8:1::1]:22").build(),
                "no_service",
            ),
            (
                "v6: to a NAT real server's port (not from it)",
                Ipv6FrameBuilder::tcp().src(CLIENT).dst(RS).syn().build(),
                "no_service",
            ),
            (
                "v6: NAT real server answering the director's health check",
                check_answer().build(),
                "to_director",
            ),
            (
                "v6: to the director's address, not from a NAT real server",
                Ipv6FrameBuilder::tcp()
                    .src("[2001:db8:1::9]:22")
                    .dst(&format!("[{DIRECTOR}]:40000"))
                    .build(),
                "no_service",
            ),
        ]
    }

    /// The extension-header walk: up to the bound to TCP/UDP/ICMPv6, fragments and other
    /// protocols passed.
    pub fn walk_cases() -> Vec<Case> {
        vec![
            (
                "v6: hop-by-hop before TCP",
                syn().hop_by_hop(0).build(),
                "no_socket",
            ),
            (
                "v6: hop-by-hop, routing, destination options (2 units) before TCP",
                syn().hop_by_hop(0).routing().destination_options(2).build(),
                "no_socket",
            ),
            (
                "v6: a 2 KiB hop-by-hop header (the largest) before TCP",
                syn().hop_by_hop(255).build(),
                "no_socket",
            ),
            (
                "v6: NAT reply behind a destination options header",
                nat_reply().destination_options(0).build(),
                "no_socket",
            ),
            (
                "v6: the health check's answer behind a routing header",
                check_answer().routing().build(),
                "to_director",
            ),
            (
                "v6: fragment header (first fragment)",
                syn().fragment(0, true).build(),
                "fragment",
            ),
            (
                "v6: fragment header (later fragment)",
                syn().fragment(1448, false).build(),
                "fragment",
            ),
            (
                "v6: atomic fragment after hop-by-hop",
                syn().hop_by_hop(0).fragment(0, false).build(),
                "fragment",
            ),
            (
                "v6: no next header",
                Ipv6FrameBuilder::no_next_header().dst(VIP).build(),
                "other_protocol",
            ),
            (
                "v6: no next header after destination options",
                Ipv6FrameBuilder::no_next_header()
                    .dst(VIP)
                    .destination_options(0)
                    .build(),
                "other_protocol",
            ),
            (
                "v6: ESP to the VIP",
                Ipv6FrameBuilder::udp()
                    .src(CLIENT)
                    .dst(VIP)
                    .next_header(50)
                    .build(),
                "other_protocol",
            ),
            (
                "v6: AH after hop-by-hop",
                syn().hop_by_hop(0).next_header(51).build(),
                "other_protocol",
            ),
            (
                "v6: IPv4 in IPv6 (next header 4)",
                Ipv6FrameBuilder::udp()
                    .dst(VIP)
                    .next_header(4)
                    .payload(&FrameBuilder::udp().build_ipv4())
                    .build(),
                "other_protocol",
            ),
        ]
    }

    /// ICMPv6 errors: about served flows steered, about others passed.
    pub fn icmp_cases() -> Vec<Case> {
        let udp_from_vip = Ipv6FrameBuilder::udp()
            .src("[2001:db8::10]:53")
            .dst(CLIENT)
            .payload(&[1; 40])
            .build_ipv6();
        let udp_to_rs = Ipv6FrameBuilder::udp()
            .src(CLIENT)
            .dst("[2001:db8:1::1]:5353")
            .build_ipv6();
        vec![
            (
                "v6: packet too big quoting a reply from VIP:port",
                too_big(&vip_reply()).build(),
                "no_socket",
            ),
            (
                "v6: packet too big quoting the header and 8 bytes",
                too_big(&vip_reply()[..48]).build(),
                "no_socket",
            ),
            (
                "v6: packet too big behind a destination options header",
                too_big(&vip_reply()).destination_options(0).build(),
                "no_socket",
            ),
            (
                "v6: port unreachable quoting a packet to a NAT real server",
                from_server_side(icmp6::DEST_UNREACHABLE, icmp6::PORT_UNREACHABLE, &to_rs())
                    .build(),
                "no_socket",
            ),
            (
                "v6: time exceeded quoting a packet to a NAT real server",
                from_server_side(icmp6::TIME_EXCEEDED, 0, &to_rs()).build(),
                "no_socket",
            ),
            (
                "v6: packet too big quoting a reply from a disabled service",
                too_big(&udp_from_vip).build(),
                "service_disabled",
            ),
            (
                "v6: port unreachable quoting a packet to a disabled NAT real server",
                from_server_side(icmp6::DEST_UNREACHABLE, icmp6::PORT_UNREACHABLE, &udp_to_rs)
                    .build(),
                "service_disabled",
            ),
            (
                "v6: address unreachable about the director's own health check",
                check_error().build(),
                "to_director",
            ),
            (
                "v6: packet too big quoting an unknown flow",
                too_big(
                    &Ipv6FrameBuilder::tcp()
                        .src("[2001:db8::99]:80")
                        .dst(CLIENT)
                        .build_ipv6(),
                )
                .build(),
                "icmp_no_service",
            ),
            (
                "v6: error quoting a packet *to* VIP:port (the wrong direction)",
                too_big(&syn().build_ipv6()).build(),
                "icmp_no_service",
            ),
            (
                "v6: error quoting a packet *from* a NAT real server (the wrong direction)",
                from_server_side(
                    icmp6::DEST_UNREACHABLE,
                    icmp6::PORT_UNREACHABLE,
                    &nat_reply().build_ipv6(),
                )
                .build(),
                "icmp_no_service",
            ),
            (
                "v6: error quoting an ICMPv6 echo from the VIP",
                too_big(
                    &Ipv6FrameBuilder::icmp6()
                        .src("[2001:db8::10]:0")
                        .dst(CLIENT)
                        .build_ipv6(),
                )
                .build(),
                "icmp_no_service",
            ),
        ]
    }

    /// ICMPv6 that is no error about a flow -- NDP, echo, MLD, parameter problem -- is the
    /// kernel's.
    pub fn icmp_informational_cases() -> Vec<Case> {
        let solicited_node = "[ff02::1:ff00:10]:0";
        let mld_report = Ipv6FrameBuilder::icmp6()
            .src("[fe80::1]:0")
            .dst("[ff02::16]:0")
            .hop_limit(1)
            .hop_by_hop(0)
            .icmp6_header(icmp6::MLD_V2_REPORT, 0, 0)
            .build();
        vec![
            (
                "v6: neighbour solicitation for the VIP (solicited-node multicast)",
                informational(solicited_node, icmp6::NEIGHBOR_SOLICITATION, &vip_target()).build(),
                "icmp_not_error",
            ),
            (
                "v6: neighbour solicitation to the VIP (unicast, reachability)",
                informational(
                    "[2001:db8::10]:0",
                    icmp6::NEIGHBOR_SOLICITATION,
                    &vip_target(),
                )
                .build(),
                "icmp_not_error",
            ),
            (
                "v6: neighbour advertisement to the VIP",
                informational(
                    "[2001:db8::10]:0",
                    icmp6::NEIGHBOR_ADVERTISEMENT,
                    &vip_target(),
                )
                .build(),
                "icmp_not_error",
            ),
            (
                "v6: router solicitation",
                informational("[ff02::2]:0", icmp6::ROUTER_SOLICITATION, &[]).build(),
                "icmp_not_error",
            ),
            (
                "v6: router advertisement",
                informational("[ff02::1]:0", icmp6::ROUTER_ADVERTISEMENT, &[0; 8]).build(),
                "icmp_not_error",
            ),
            (
                "v6: redirect",
                informational("[2001:db8::10]:0", icmp6::REDIRECT, &[0; 32]).build(),
                "icmp_not_error",
            ),
            (
                "v6: echo request to the VIP",
                Ipv6FrameBuilder::icmp6().src(CLIENT).dst(VIP).build(),
                "icmp_not_error",
            ),
            (
                "v6: echo reply to the VIP",
                Ipv6FrameBuilder::icmp6()
                    .src(CLIENT)
                    .dst(VIP)
                    .icmp6_header(icmp6::ECHO_REPLY, 0, 0x1234_0001)
                    .build(),
                "icmp_not_error",
            ),
            (
                "v6: echo request (explicit type)",
                Ipv6FrameBuilder::icmp6()
                    .dst(VIP)
                    .icmp6_header(icmp6::ECHO_REQUEST, 0, 1)
                    .build(),
                "icmp_not_error",
            ),
            (
                "v6: MLD query",
                informational("[ff02::1]:0", icmp6::MLD_QUERY, &[0; 16])
                    .hop_by_hop(0)
                    .build(),
                "icmp_not_error",
            ),
            (
                "v6: MLDv2 report behind hop-by-hop (router alert)",
                mld_report,
                "icmp_not_error",
            ),
            (
                "v6: parameter problem quoting a reply from VIP:port",
                icmp6_error(
                    ROUTER,
                    "[2001:db8::10]:0",
                    icmp6::PARAMETER_PROBLEM,
                    0,
                    40,
                    &vip_reply()[..48],
                )
                .build(),
                "icmp_not_error",
            ),
        ]
    }

    /// ICMPv6 errors whose quote cannot be classified.
    pub fn icmp_quote_cases() -> Vec<Case> {
        vec![
            (
                "v6 quote: the header and 4 bytes of TCP",
                too_big(&vip_reply()[..44]).build(),
                "icmp_truncated",
            ),
            (
                "v6 quote: a partial header",
                too_big(&vip_reply()[..39]).build(),
                "icmp_truncated",
            ),
            ("v6 quote: nothing", too_big(&[]).build(), "icmp_truncated"),
            (
                "v6 quote cut by the payload length, Ethernet padding after it",
                {
                    let mut frame = too_big(&vip_reply()[..44]).unpadded().build();
                    frame.extend_from_slice(&[0; 8]);
                    frame
                },
                "icmp_truncated",
            ),
            (
                "v6 ICMPv6 header cut by the payload length",
                Ipv6FrameBuilder::icmp6().dst(VIP).payload_len(4).build(),
                "truncated",
            ),
            (
                "v6 quote: an IPv4 packet",
                too_big(
                    &FrameBuilder::tcp()
                        .src("192.0.2.10:80")
                        .payload(&[0; 100])
                        .build_ipv4(),
                )
                .build(),
                "icmp_bad_quote",
            ),
            (
                "v6 quote: a hop-by-hop header before TCP",
                too_big(
                    &Ipv6FrameBuilder::tcp()
                        .src(VIP)
                        .dst(CLIENT)
                        .hop_by_hop(0)
                        .build_ipv6(),
                )
                .build(),
                "icmp_bad_quote",
            ),
            (
                "v6 quote: a fragment of a reply from VIP:port",
                too_big(
                    &Ipv6FrameBuilder::tcp()
                        .src(VIP)
                        .dst(CLIENT)
                        .fragment(0, true)
                        .payload(&[0; 100])
                        .build_ipv6(),
                )
                .build(),
                "icmp_bad_quote",
            ),
        ]
    }

    /// Malformed IPv6: a counter each, never a steer.
    pub fn malformed_cases() -> Vec<Case> {
        vec![
            (
                "v6: IPv6 header cut short",
                syn().truncate(14 + 39).build(),
                "truncated",
            ),
            (
                "v6: TCP ports cut by the payload length",
                syn().payload_len(2).build(),
                "truncated",
            ),
            (
                "v6: payload length 0 without hop-by-hop (not a jumbogram)",
                syn().payload_len(0).build(),
                "truncated",
            ),
            (
                "v6: NAT reply's ports cut short",
                nat_reply().payload_len(3).truncate(14 + 40 + 3).build(),
                "truncated",
            ),
            (
                "v6: jumbogram (payload length 0, hop-by-hop)",
                syn().hop_by_hop(0).payload_len(0).build(),
                "ipv6_jumbogram",
            ),
            (
                "v6: payload length beyond the frame",
                syn().payload_len(1000).build(),
                "ipv6_bad_payload_len",
            ),
            (
                "v6: frame cut inside TCP, payload length as built",
                syn().truncate(14 + 40 + 10).build(),
                "ipv6_bad_payload_len",
            ),
            (
                "v6: routing header beyond the frame",
                Ipv6FrameBuilder::no_next_header()
                    .routing()
                    .payload_len(0)
                    .truncate(14 + 40)
                    .build(),
                "ipv6_ext_truncated",
            ),
            (
                "v6: routing header in the Ethernet padding",
                Ipv6FrameBuilder::no_next_header()
                    .routing()
                    .payload_len(0)
                    .truncate(14 + 40)
                    .unpadded()
                    .build()
                    .into_iter()
                    .chain([0; 6])
                    .collect(),
                "ipv6_ext_truncated",
            ),
            (
                "v6: hop-by-hop longer than the payload length",
                syn().hop_by_hop(1).payload_len(8).build(),
                "ipv6_ext_truncated",
            ),
            (
                "v6: chain cut by the payload length after the first header",
                syn().hop_by_hop(0).routing().payload_len(8).build(),
                "ipv6_ext_truncated",
            ),
            (
                "v6: a 2 KiB hop-by-hop header beyond the frame",
                syn().hop_by_hop(255).payload_len(100).build(),
                "ipv6_ext_truncated",
            ),
            (
                "v6: IPv4 header under the IPv6 EtherType",
                FrameBuilder::tcp()
                    .dst("192.0.2.10:80")
                    .ethertype(EtherType::IPV6)
                    .build(),
                "ipv6_bad_version",
            ),
            (
                "v6: version 5 under the IPv6 EtherType",
                syn().version(5).build(),
                "ipv6_bad_version",
            ),
            (
                "v6: IPv6 header under the IPv4 EtherType",
                syn().ethertype(EtherType::IPV4).build(),
                "bad_ihl",
            ),
        ]
    }

    /// A chain of `count` options headers of alternating kinds, then TCP.
    fn chain(count: usize) -> Ipv6FrameBuilder {
        (0..count).fold(syn(), |frame, index| match index % 3 {
            0 => frame.destination_options(0),
            1 => frame.routing(),
            _ => frame.hop_by_hop(1),
        })
    }

    /// Chains up to the walk's bound reach the service; one more header is counted and passed.
    #[test]
    fn extension_header_walk_stops_at_its_bound() {
        if !dataplane::testing::require_root() {
            return;
        }
        let classifier = super::classifier();
        let bound = dataplane::xdp::abi::MAX_IPV6_EXT_HEADERS;
        for count in 0..=bound {
            let description = format!("{count} extension headers");
            expect(
                &classifier,
                &description,
                &chain(count).build(),
                XDP_PASS,
                "no_socket",
            );
        }
        expect(
            &classifier,
            "one header over the bound",
            &chain(bound + 1).build(),
            XDP_PASS,
            "ipv6_ext_too_long",
        );
        expect(
            &classifier,
            "a fragment header after the bound's worth",
            &chain(bound).fragment(0, true).build(),
            XDP_PASS,
            "fragment",
        );
        expect(
            &classifier,
            "no next header after the bound's worth",
            &chain(bound).next_header(59).build(),
            XDP_PASS,
            "other_protocol",
        );
    }

    /// An ICMPv6 error cut at every length, its payload length cut to match, is passed and
    /// counted where the cut falls.
    #[test]
    fn icmp6_error_cut_anywhere_is_passed_and_counted() {
        if !dataplane::testing::require_root() {
            return;
        }
        let classifier = super::classifier();
        let frame = too_big(&vip_reply()[..48]).unpadded().build();
        assert_eq!(frame.len(), QUOTE_AT + 48);
        for len in 14..frame.len() {
            let mut cut = frame[..len].to_vec();
            if len >= 14 + 40 {
                let payload_len = u16::try_from(len - 14 - 40).unwrap();
                cut[18..20].copy_from_slice(&payload_len.to_be_bytes());
            }
            let counter = if len < QUOTE_AT {
                "truncated"
            } else {
                "icmp_truncated"
            };
            expect(
                &classifier,
                &format!("cut to {len} bytes"),
                &cut,
                XDP_PASS,
                counter,
            );
        }
        expect(&classifier, "whole", &frame, XDP_PASS, "no_socket");
    }

    /// Removing, disabling and re-enabling IPv6 entries, as for IPv4.
    pub fn removal_and_disabling(classifier: &XdpClassifier) {
        let (vip, port) = at(VIP);
        classifier
            .remove_service_address(vip, port, Protocol::Tcp)
            .unwrap();
        classifier
            .remove_service_address(vip, port, Protocol::Tcp)
            .unwrap();
        expect(
            classifier,
            "v6: removed service",
            &syn().build(),
            XDP_PASS,
            "no_service",
        );
        expect(
            classifier,
            "v6: packet too big about a removed service",
            &too_big(&vip_reply()).build(),
            XDP_PASS,
            "icmp_no_service",
        );
        let rs = nat_key(RS, Protocol::Tcp);
        classifier.set_nat_backend(&rs, false).unwrap();
        expect(
            classifier,
            "v6: disabled NAT real server",
            &nat_reply().build(),
            XDP_PASS,
            "service_disabled",
        );
        classifier.set_nat_backend(&rs, true).unwrap();
        expect(
            classifier,
            "v6: re-enabled NAT real server",
            &nat_reply().build(),
            XDP_PASS,
            "no_socket",
        );
        let director: std::net::IpAddr = DIRECTOR.parse().unwrap();
        classifier.remove_local_address(director).unwrap();
        classifier.remove_local_address(director).unwrap();
        expect(
            classifier,
            "v6: health check answer, address forgotten",
            &check_answer().build(),
            XDP_PASS,
            "no_socket",
        );
        expect(
            classifier,
            "v6: error about a health check, address forgotten",
            &check_error().build(),
            XDP_PASS,
            "no_socket",
        );
        classifier.remove_nat_backend(&rs).unwrap();
        classifier.remove_nat_backend(&rs).unwrap();
        expect(
            classifier,
            "v6: reply from a removed NAT real server",
            &nat_reply().build(),
            XDP_PASS,
            "no_service",
        );
        expect(
            classifier,
            "v6: error about a packet to a removed NAT real server",
            &from_server_side(icmp6::DEST_UNREACHABLE, icmp6::PORT_UNREACHABLE, &to_rs()).build(),
            XDP_PASS,
            "icmp_no_service",
        );
    }

    /// With a socket on queue 0: what the IPv6 cases count `no_socket` is redirected, by kind.
    pub fn expect_redirects(classifier: &XdpClassifier) {
        expect(
            classifier,
            "v6: service",
            &syn().build(),
            XDP_REDIRECT,
            "redirected",
        );
        expect(
            classifier,
            "v6: service behind extension headers",
            &syn().hop_by_hop(0).routing().build(),
            XDP_REDIRECT,
            "redirected",
        );
        expect(
            classifier,
            "v6: NAT reply",
            &nat_reply().build(),
            XDP_REDIRECT,
            "nat_reply",
        );
        expect(
            classifier,
            "v6: packet too big about a reply from the VIP",
            &too_big(&vip_reply()).build(),
            XDP_REDIRECT,
            "icmp_redirected",
        );
        expect(
            classifier,
            "v6: port unreachable about a packet to a NAT real server",
            &from_server_side(icmp6::DEST_UNREACHABLE, icmp6::PORT_UNREACHABLE, &to_rs()).build(),
            XDP_REDIRECT,
            "icmp_redirected",
        );
    }
}
