//! The real thing, minus control: veth pairs in a fresh network namespace, the XDP classifier
//! on the director's ends, AF_XDP sockets and a worker behind them, and raw frames injected from
//! the other ends. Proves that frames for a service reach the worker, come back out rewritten,
//! that every drop is counted, and that no UMEM frame leaks however the frames ended.
//!
//! With one veth pair the worker has one port (DR). With two, a client side and a server side,
//! it has a socket on each sharing one UMEM ([`Xsk::open_pair`]) and forwards LVS-NAT both ways:
//! a frame received on one interface leaves by the other from the same UMEM chunk.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::counters::backend_counter_block;
use dataplane::testing::{self, FrameBuilder};
use dataplane::wire::{EthernetFrame, Ipv4Packet, TcpFlags, TcpSegment};
use dataplane::worker::{self, WorkerContext};
use dataplane::xdp::{NatBackendKey, XdpClassifier};
use dataplane::xsk::{FrameAccounting, Frames, Xsk, XskConfig, XskError, CLIENT, SERVER};
use dataplane::{
    Backend, DropReason, Forwarding, Interface, Interfaces, Pipeline, Protocol, Service,
    ServiceKey, ServiceTable, Timeouts, WorkerCounters,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];

/// One veth pair: the director's end (where the classifier and a socket sit) and the wire's end
/// (where the test injects and captures frames).
struct Veth {
    director: &'static str,
    wire: &'static str,
    director_mac: [u8; 6],
    wire_mac: [u8; 6],
}

/// The one-port tests' veth pair `xa` (director side) / `xb` (wire side).
const SINGLE: Veth = Veth {
    director: "xa",
    wire: "xb",
    director_mac: [0x02, 0, 0, 0, 0, 0x0a],
    wire_mac: [0x02, 0, 0, 0, 0, 0x0b],
};

fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// A namespace with veth pairs in it; deleted on drop (also when a test fails).
struct Namespace {
    name: String,
}

impl Namespace {
    /// A fresh namespace, unique to this process and `tag`, holding `links`, all up.
    fn new(tag: &str, links: &[&Veth]) -> Self {
        let name = format!("dpt{}{tag}", std::process::id());
        // A namespace left by an earlier run of this process id, if any.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        Namespace::ip(&["netns", "add", &name]);
        let namespace = Namespace { name };
        for link in links {
            namespace.exec(&[
                "ip",
                "link",
                "add",
                link.director,
                "type",
                "veth",
                "peer",
                "name",
                link.wire,
            ]);
            for (end, mac) in [
                (link.director, link.director_mac),
                (link.wire, link.wire_mac),
            ] {
                namespace.exec(&["ip", "link", "set", end, "address", &mac_string(mac)]);
                namespace.exec(&["ip", "link", "set", end, "up"]);
            }
        }
        namespace
    }

    fn ip(args: &[&str]) {
        let status = Command::new("ip").args(args).status().expect("running ip");
        assert!(status.success(), "ip {args:?} failed");
    }

    fn exec(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        Namespace::ip(&full);
    }

    /// Moves the calling thread into the namespace (threads it spawns follow).
    fn enter(&self) {
        let file = File::open(format!("/var/run/netns/{}", self.name)).expect("namespace file");
        // SAFETY: setns on a valid namespace fd affects only the calling thread.
        let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A fresh namespace holding `links`, entered by the calling thread; `None`, after saying so,
/// when the test is to be skipped (not root, and `DIRECTOR_SKIP_ROOT_TESTS=1`); without root
/// otherwise it panics.
fn enter_namespace(tag: &str, links: &[&Veth]) -> Option<Namespace> {
    if !dataplane::testing::require_root() {
        return None;
    }
    let namespace = Namespace::new(tag, links);
    namespace.enter();
    Some(namespace)
}

fn ifindex(name: &str) -> u32 {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "no interface {name:?}");
    index
}

/// An AF_PACKET socket on one interface, for injecting and catching raw frames.
struct RawSocket {
    fd: i32,
    ifindex: u32,
}

impl RawSocket {
    fn new(interface: &str) -> Self {
        let ifindex = ifindex(interface);
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation; the fd is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from(protocol),
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol;
        address.sll_ifindex = ifindex.cast_signed();
        // SAFETY: address is a valid sockaddr_ll of the size passed.
        let bound = unsafe {
            libc::bind(
                fd,
                std::ptr::addr_of!(address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        RawSocket { fd, ifindex }
    }

    fn send(&self, frame: &[u8]) {
        let _ = self.ifindex;
        // SAFETY: frame is a valid buffer of the given length.
        let sent = unsafe { libc::send(self.fd, frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            sent,
            frame.len().cast_signed(),
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Frames received so far whose destination MAC is `mac` (drains the socket).
    fn count_to(&self, mac: [u8; 6]) -> usize {
        let mut buffer = [0u8; 2048];
        let mut count = 0;
        loop {
            // SAFETY: buffer is valid for its length.
            let received =
                unsafe { libc::recv(self.fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
            if received <= 0 {
                return count;
            }
            if buffer[..6] == mac {
                count += 1;
            }
        }
    }
}

impl RawSocket {
    /// Frames that arrived on the interface since the last call (drains the socket), leaving
    /// out those sent from it.
    fn arrived(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buffer = [0u8; 2048];
        loop {
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buffer and from are valid for the lengths passed.
            let received = unsafe {
                libc::recvfrom(
                    self.fd,
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                    std::ptr::addr_of_mut!(from).cast(),
                    &raw mut from_len,
                )
            };
            let Ok(len) = usize::try_from(received) else {
                return frames;
            };
            if len == 0 {
                return frames;
            }
            if from.sll_pkttype != PACKET_OUTGOING {
                frames.push(buffer[..len].to_vec());
            }
        }
    }
}

/// `sll_pkttype` of a frame the socket's interface sent (linux/if_packet.h).
const PACKET_OUTGOING: u8 = 4;

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
    }
}

/// An Ethernet/IPv4/UDP frame from the client to `dst:port`, with a valid IPv4 checksum and
/// UDP checksum 0 ("none").
fn udp_frame(dst_mac: [u8; 6], src_port: u16, dst: Ipv4Addr, dst_port: u16) -> Vec<u8> {
    let payload = b"director";
    let total = 20 + 8 + payload.len();
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&SINGLE.wire_mac);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&CLIENT_ADDR.octets());
    ip.extend_from_slice(&dst.octets());
    let mut sum = 0u32;
    for pair in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&src_port.to_be_bytes());
    frame.extend_from_slice(&dst_port.to_be_bytes());
    frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// The UDP service VIP:`port`.
fn udp_key(port: u16) -> ServiceKey {
    ServiceKey {
        vip: IpAddr::V4(VIP),
        port,
        protocol: Protocol::Udp,
    }
}

fn service(port: u16, mac: Option<[u8; 6]>, slot: usize) -> Service {
    let scheduler = scheduler::Scheduler::new(
        scheduler::Algorithm::RoundRobin,
        &[scheduler::Candidate { key: 1, weight: 1 }],
        7,
    )
    .unwrap();
    Service {
        name: format!("udp{port}"),
        key: udp_key(port),
        ports: vec![port],
        persistence: None,
        forwarding: Forwarding::DirectRouting,
        scheduler,
        backends: vec![Backend {
            address: Ipv4Addr::new(192, 0, 2, 11).into(),
            mac,
            weight: 1,
            counter_slot: slot,
            port: 0,
            thresholds: dataplane::Thresholds::default(),
        }],
    }
}

/// How long the worker, or the wire, may take to catch up with the frames sent.
const CATCH_UP: Duration = Duration::from_secs(10);
/// How long a single frame may take to come through.
const PATIENCE: Duration = Duration::from_secs(5);

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits at most [`CATCH_UP`] until the worker's received frame count satisfies `done`.
fn wait_for_rx(what: &str, counters: &WorkerCounters, done: impl Fn(u64) -> bool) {
    wait_until(what, CATCH_UP, || {
        done(counters.rx_packets.load(Ordering::Relaxed))
    });
}

/// The one-port tests' director: the classifier on `xa` steering to one socket there.
fn single_port() -> (XdpClassifier, Xsk) {
    let director_index = ifindex(SINGLE.director);
    let classifier = XdpClassifier::attach(director_index).unwrap();
    let xsk = Xsk::open(director_index, 0, XskConfig::default()).unwrap();
    classifier.register_socket(0, xsk.fd(CLIENT)).unwrap();
    (classifier, xsk)
}

/// Every drop counter, by name.
fn drops(counters: &WorkerCounters) -> impl std::fmt::Debug {
    DropReason::ALL.map(|reason| (reason.name(), counters.drops(reason)))
}

/// Panics unless every UMEM frame is accounted for and back (none in TX or in hand), each on
/// the free list at most once; returns the accounting for more checks.
#[track_caller]
fn assert_no_frame_leaked(xsk: &Xsk) -> FrameAccounting {
    let frames = xsk.accounting();
    assert!(frames.is_balanced(), "frames unaccounted for: {frames:?}");
    assert_eq!(frames.in_tx, 0, "TX not drained: {frames:?}");
    assert_eq!(frames.in_hand, 0, "frames still held: {frames:?}");
    assert!(
        xsk.free_list_is_unique(),
        "a frame is on the free list twice"
    );
    frames
}

/// A worker thread running an `Xsk`; stopped when dropped, so a failing test does not leave it
/// spinning.
struct RunningWorker {
    thread: Option<std::thread::JoinHandle<Xsk>>,
    stop_flag: Arc<AtomicBool>,
}

impl RunningWorker {
    /// Stops the worker and takes its `Xsk` back.
    fn stop(mut self) -> Xsk {
        self.stop_flag.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("the worker runs until stopped");
        thread.join().unwrap()
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.stop_flag.store(true, Ordering::Relaxed);
    }
}

/// A worker running `xsk` over `table`, with its counters.
fn start_worker(
    xsk: Xsk,
    table: &Arc<ServiceTable>,
    interface_mac: [u8; 6],
) -> (RunningWorker, Arc<WorkerCounters>) {
    let counters = Arc::new(WorkerCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (_sender, receiver) = crossbeam_channel::bounded(1);
    let context = WorkerContext {
        index: 0,
        pipeline: Pipeline::new(0, interface_mac, 1024),
        counters: Arc::clone(&counters),
        tables: receiver,
        initial_table: Arc::clone(table),
        retired_tables: crossbeam_channel::bounded(1).0,
        stop: Arc::clone(&stop),
        poll: worker::PollMode::Busy,
    };
    let thread = std::thread::spawn(move || worker::run(xsk, context));
    let worker = RunningWorker {
        thread: Some(thread),
        stop_flag: stop,
    };
    (worker, counters)
}

#[test]
fn worker_forwards_counts_drops_and_leaks_no_frame() {
    let Some(_namespace) = enter_namespace("w", &[&SINGLE]) else {
        return;
    };
    let (classifier, xsk) = single_port();
    assert_eq!(xsk.port_count(), 1);
    let start = xsk.accounting();
    assert!(start.is_balanced(), "{start:?}");

    // Port 7000 forwards, 7001 has a backend without a MAC, 7002 is in the classifier's map but
    // not in the worker's table (as after a service is removed with frames in flight).
    let table = Arc::new(ServiceTable::new(
        1,
        vec![service(7000, Some(BACKEND_MAC), 0), service(7001, None, 1)],
        Timeouts::default(),
        vec![backend_counter_block(2)],
    ));
    for port in [7000, 7001, 7002] {
        classifier.set_service(&udp_key(port), true).unwrap();
    }
    let (worker, counters) = start_worker(xsk, &table, SINGLE.director_mac);

    let wire = RawSocket::new(SINGLE.wire);
    let director_mac = SINGLE.director_mac;
    // More frames than the UMEM has, so frames must be recycled many times over.
    let rounds = 3_000u16;
    let mut forwarded_seen = 0;
    for round in 0..rounds {
        let source_port = 10_000 + (round % 500);
        wire.send(&udp_frame(director_mac, source_port, VIP, 7000));
        wire.send(&udp_frame(director_mac, source_port, VIP, 7001));
        wire.send(&udp_frame(director_mac, source_port, VIP, 7002));
        // Not a service: the classifier passes it to the kernel.
        wire.send(&udp_frame(director_mac, source_port, VIP, 9));
        if round % 16 == 0 {
            // Pace the sender: veth holds only 256 frames for its NAPI poll, and this test is
            // about correctness, not about how deep the rings are.
            let expected = u64::from(round) * 3;
            wait_for_rx("the worker to catch up", &counters, |rx| rx >= expected);
            forwarded_seen += wire.count_to(BACKEND_MAC);
        }
    }
    let sent_to_services = u64::from(rounds) * 3;
    wait_for_rx("every service frame to reach the worker", &counters, |rx| {
        rx == sent_to_services
    });
    let forwarded_by_worker = || counters.tx_packets.load(Ordering::Relaxed);
    let deadline = Instant::now() + CATCH_UP;
    while forwarded_seen < usize::from(rounds) && Instant::now() < deadline {
        forwarded_seen += wire.count_to(BACKEND_MAC);
        std::thread::sleep(Duration::from_millis(10));
    }
    let veth = Command::new("ip")
        .args(["-s", "link", "show", SINGLE.wire])
        .output()
        .unwrap();
    assert_eq!(
        forwarded_seen,
        usize::from(rounds),
        "frames seen on the wire; the worker transmitted {}; drops {:?}; {}",
        forwarded_by_worker(),
        drops(&counters),
        String::from_utf8_lossy(&veth.stdout)
    );

    let xsk = worker.stop();
    assert_no_frame_leaked(&xsk);

    assert_eq!(
        forwarded_seen,
        usize::from(rounds),
        "each forwarded frame leaves exactly once"
    );
    assert_eq!(
        counters.tx_packets.load(Ordering::Relaxed),
        u64::from(rounds)
    );
    assert_eq!(
        counters.drops(DropReason::NeighbourUnresolved),
        u64::from(rounds)
    );
    assert_eq!(counters.drops(DropReason::NoService), u64::from(rounds));
    assert_eq!(counters.drops(DropReason::TxRingFull), 0);
    let backend = &table.backend_counters[0][0];
    assert_eq!(
        backend.packets_in.load(Ordering::Relaxed),
        u64::from(rounds)
    );

    let xdp: std::collections::HashMap<_, _> = classifier.counters().unwrap().into_iter().collect();
    assert_eq!(xdp["redirected"], sent_to_services);
    assert!(
        xdp["no_service"] >= u64::from(rounds),
        "port 9 frames pass to the kernel: {xdp:?}"
    );
}

// --- Two ports on one UMEM: LVS-NAT between a client side and a server side ---

/// The director's client side `ca`, with the clients' next hop (a router) at `cb`.
const NAT_CLIENT_SIDE: Veth = Veth {
    director: "ca",
    wire: "cb",
    director_mac: [0x02, 0, 0, 0, 0x01, 0x0a],
    wire_mac: [0x02, 0, 0, 0, 0x01, 0x0b],
};

/// The director's server side `sa`, with the real server at `sb`.
const NAT_SERVER_SIDE: Veth = Veth {
    director: "sa",
    wire: "sb",
    director_mac: [0x02, 0, 0, 0, 0x02, 0x0a],
    wire_mac: [0x02, 0, 0, 0, 0x02, 0x0b],
};

const NAT_CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 40_000);
const NAT_VIP: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const REAL_SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 11), 8080);

/// VIP:80/tcp by NAT to the real server's port 8080, with the two sides as interfaces.
fn nat_table() -> ServiceTable {
    let real_server = testing::with_port(
        testing::backend(
            &REAL_SERVER.ip().to_string(),
            Some(NAT_SERVER_SIDE.wire_mac),
            1,
            0,
        ),
        REAL_SERVER.port(),
    );
    let service = testing::with_forwarding(
        testing::service(
            &NAT_VIP.to_string(),
            Protocol::Tcp,
            scheduler::Algorithm::RoundRobin,
            vec![real_server],
        ),
        Forwarding::Nat,
    );
    testing::table(1, vec![service], testing::counter_blocks(1, 1)).with_interfaces(Interfaces {
        client: Interface {
            mac: NAT_CLIENT_SIDE.director_mac,
            address: Ipv4Addr::new(192, 0, 2, 1),
            address6: None,
            mtu: 1500,
            next_hop_mac: Some(NAT_CLIENT_SIDE.wire_mac),
        },
        server: Interface {
            mac: NAT_SERVER_SIDE.director_mac,
            address: Ipv4Addr::new(198, 51, 100, 1),
            address6: None,
            mtu: 1500,
            next_hop_mac: None,
        },
    })
}

/// The NAT service, VIP:80/tcp, as the client side's classifier knows it.
const NAT_SERVICE: ServiceKey = ServiceKey {
    vip: IpAddr::V4(*NAT_VIP.ip()),
    port: NAT_VIP.port(),
    protocol: Protocol::Tcp,
};

/// The director's ends of the two NAT sides: (client, server) interface indices.
fn nat_sides() -> (u32, u32) {
    (
        ifindex(NAT_CLIENT_SIDE.director),
        ifindex(NAT_SERVER_SIDE.director),
    )
}

/// A client segment to the VIP, as the router at `cb` delivers it to the director.
fn from_client(builder: FrameBuilder) -> Vec<u8> {
    to_director(&NAT_CLIENT_SIDE, NAT_CLIENT, NAT_VIP, builder)
}

/// A real server's segment to the client, sent to the director (its gateway).
fn from_real_server(builder: FrameBuilder) -> Vec<u8> {
    to_director(&NAT_SERVER_SIDE, REAL_SERVER, NAT_CLIENT, builder)
}

/// A segment `src` -> `dst`, from the wire's end of `link` to the director's.
fn to_director(
    link: &Veth,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    builder: FrameBuilder,
) -> Vec<u8> {
    builder
        .src(&src.to_string())
        .dst(&dst.to_string())
        .eth_src(link.wire_mac)
        .eth_dst(link.director_mac)
        .build()
}

/// A way through the NAT director: the side a segment leaves by, and its addresses then.
struct Direction {
    side: &'static Veth,
    src: SocketAddrV4,
    dst: SocketAddrV4,
}

/// What the director sends the real server on the client's behalf.
const TO_REAL_SERVER: Direction = Direction {
    side: &NAT_SERVER_SIDE,
    src: NAT_CLIENT,
    dst: REAL_SERVER,
};

/// What the director sends the client from the VIP.
const TO_CLIENT: Direction = Direction {
    side: &NAT_CLIENT_SIDE,
    src: NAT_VIP,
    dst: NAT_CLIENT,
};

/// Panics unless `frame` is a TCP segment going `direction` (from the director's end of its side
/// to the wire's end), with TTL 63 (one hop through the director), valid IPv4 and TCP checksums
/// and `flags`.
#[track_caller]
fn assert_segment(frame: &[u8], direction: &Direction, flags: TcpFlags) {
    let Direction { side, src, dst } = direction;
    let (eth_src, eth_dst) = (side.director_mac, side.wire_mac);
    let ethernet = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(
        ethernet.src_addr(),
        eth_src,
        "Ethernet source of {frame:02x?}"
    );
    assert_eq!(
        ethernet.dst_addr(),
        eth_dst,
        "Ethernet destination of {frame:02x?}"
    );
    let ip = Ipv4Packet::new_checked(ethernet.payload()).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum of {frame:02x?}");
    assert_eq!(ip.ttl(), 63, "TTL of {frame:02x?}");
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (*src.ip(), *dst.ip()),
        "addresses of {frame:02x?}"
    );
    let tcp = TcpSegment::new_checked(ip.payload()).unwrap();
    assert!(
        tcp.verify_checksum(ip.src_addr(), ip.dst_addr()),
        "TCP checksum of {frame:02x?}"
    );
    assert_eq!(
        (tcp.src_port(), tcp.dst_port()),
        (src.port(), dst.port()),
        "ports of {frame:02x?}"
    );
    assert_eq!(tcp.flags(), flags, "TCP flags of {frame:02x?}");
}

/// The test's end of a veth: a raw socket on the wire end, catching the frames addressed to it.
struct Wire {
    socket: RawSocket,
    mac: [u8; 6],
}

impl Wire {
    fn new(link: &Veth) -> Self {
        Wire {
            socket: RawSocket::new(link.wire),
            mac: link.wire_mac,
        }
    }

    fn send(&self, frame: &[u8]) {
        self.socket.send(frame);
    }

    /// Frames that arrived for this end: what is there now, and more until there are `count`
    /// or `timeout` has passed.
    fn collect(&self, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let deadline = Instant::now() + timeout;
        loop {
            frames.extend(
                self.socket
                    .arrived()
                    .into_iter()
                    .filter(|frame| frame.len() >= 6 && frame[..6] == self.mac),
            );
            if frames.len() >= count || Instant::now() >= deadline {
                return frames;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Frames that have arrived for this end since the last look.
    fn arrived(&self) -> Vec<Vec<u8>> {
        self.collect(0, Duration::ZERO)
    }

    /// Adds to `frames` what has arrived for this end, and more until `frames` holds `total` or
    /// `timeout` has passed.
    fn collect_into(&self, frames: &mut Vec<Vec<u8>>, total: usize, timeout: Duration) {
        let left = total.saturating_sub(frames.len());
        frames.extend(self.collect(left, timeout));
    }

    /// The one frame that arrives for this end within [`PATIENCE`]; panics with `what` unless
    /// there is exactly one.
    #[track_caller]
    fn only_frame(&self, what: &str) -> Vec<u8> {
        let mut frames = self.collect(1, PATIENCE);
        assert_eq!(frames.len(), 1, "{what}");
        frames.remove(0)
    }
}

#[test]
fn pair_config_is_checked() {
    assert_eq!(XskConfig::for_ports(1), XskConfig::default());
    let two = XskConfig::for_ports(2);
    assert_eq!(
        (two.frame_size, two.frame_count, two.ring_size),
        (4096, 8192, 2048)
    );

    let too_few_frames = Xsk::open_pair((1, 0), (2, 0), XskConfig::default())
        .err()
        .expect("4096 frames cannot fill two ports' rings");
    assert!(
        matches!(too_few_frames, XskError::Config(message) if message.contains("frame_count")),
        "{too_few_frames}"
    );
    let same_side = Xsk::open_pair((1, 0), (1, 0), two)
        .err()
        .expect("one queue cannot be both sides");
    assert!(
        matches!(same_side, XskError::Config(message) if message.contains("same interface queue")),
        "{same_side}"
    );
}

#[test]
fn pair_shares_one_umem_across_two_interfaces() {
    let Some(_namespace) = enter_namespace("p", &[&NAT_CLIENT_SIDE, &NAT_SERVER_SIDE]) else {
        return;
    };
    let (client_index, server_index) = nat_sides();

    let config = XskConfig::for_ports(2);
    let mut xsk = Xsk::open_pair((client_index, 0), (server_index, 0), config).unwrap();
    assert_eq!(xsk.port_count(), 2);
    assert_ne!(xsk.fd(CLIENT), xsk.fd(SERVER));
    let frames = xsk.accounting();
    assert!(frames.is_balanced(), "{frames:?}");
    assert_eq!(frames.total, config.frame_count);
    assert_eq!(xsk.in_fill(CLIENT), config.ring_size, "{frames:?}");
    assert_eq!(xsk.in_fill(SERVER), config.ring_size, "{frames:?}");
    assert_eq!(frames.free, config.frame_count - 2 * config.ring_size);
    assert!(xsk.free_list_is_unique());
    for port in [CLIENT, SERVER] {
        assert!(
            xsk.kernel_stats(port).is_some(),
            "statistics of port {port}"
        );
    }

    // By hand, without a worker: a frame received on the client side leaves by the server side
    // from the very UMEM chunk it arrived in, and completes on the server side's ring.
    let classifier = XdpClassifier::attach(client_index).unwrap();
    classifier.set_service(&udp_key(7000), true).unwrap();
    classifier.register_socket(0, xsk.fd(CLIENT)).unwrap();
    let client_wire = Wire::new(&NAT_CLIENT_SIDE);
    let server_wire = Wire::new(&NAT_SERVER_SIDE);
    let frame = udp_frame(NAT_CLIENT_SIDE.director_mac, 10_000, VIP, 7000);
    client_wire.send(&frame);

    let mut frames = Frames::<4>::new();
    let mut received = 0;
    wait_until("the frame on the client port", PATIENCE, || {
        received = xsk.receive(CLIENT, &mut frames, 4);
        received > 0
    });
    assert_eq!(received, 1);
    assert_eq!(xsk.receive(SERVER, &mut frames, 3), 0);
    let (chunk, start) = xsk.chunk_mut(frames.iter().next().unwrap()).unwrap();
    assert_eq!(&chunk[start..start + frame.len()], &frame[..]);
    chunk[start..start + 6].copy_from_slice(&NAT_SERVER_SIDE.wire_mac);
    // A handle cannot be pointed outside its chunk (it would name another frame's chunk when
    // recycled): refused, and the frame stays where it was.
    let mut held = frames.drain().next().unwrap();
    let chunk_size = config.frame_size as usize;
    assert!(!xsk.reframe(&mut held, chunk_size, 60));
    assert!(!xsk.reframe(&mut held, start, chunk_size));
    assert!(!xsk.reframe(&mut held, usize::MAX, 2));
    assert_eq!(held.len(), frame.len());
    assert_eq!(xsk.frame(&held).unwrap()[6..], frame[6..]);
    assert!(xsk.reframe(&mut held, start, frame.len()));
    assert!(frames.push(held).is_ok());
    assert_eq!(xsk.transmit(SERVER, &mut frames), 1);
    assert!(frames.is_empty(), "the TX ring has the frame now");
    assert_eq!((xsk.in_tx(CLIENT), xsk.in_tx(SERVER)), (0, 1));
    assert!(xsk.accounting().is_balanced(), "{:?}", xsk.accounting());

    let mut seen = Vec::new();
    let mut kicks = 0;
    wait_until(
        "the frame on the server wire and its completion",
        PATIENCE,
        || {
            kicks += xsk.kick_tx();
            xsk.reap_completions();
            seen.extend(server_wire.arrived());
            !seen.is_empty() && xsk.tx_in_flight() == 0
        },
    );
    assert!(kicks >= 1, "copy mode sends only when kicked");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0][6..], frame[6..], "the frame, as received");
    assert_no_frame_leaked(&xsk);
    xsk.refill();
    assert_eq!(xsk.in_fill(CLIENT), config.ring_size);
    assert_eq!(xsk.kick_tx(), 0, "nothing pending, no kick");
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn worker_forwards_nat_both_ways_between_two_interfaces() {
    let Some(_namespace) = enter_namespace("n", &[&NAT_CLIENT_SIDE, &NAT_SERVER_SIDE]) else {
        return;
    };
    let (client_index, server_index) = nat_sides();

    let xsk = Xsk::open_pair(
        (client_index, 0),
        (server_index, 0),
        XskConfig::for_ports(2),
    )
    .unwrap();
    let total_frames = xsk.accounting().total;

    let client_classifier = XdpClassifier::attach(client_index).unwrap();
    client_classifier.set_service(&NAT_SERVICE, true).unwrap();
    client_classifier
        .register_socket(0, xsk.fd(CLIENT))
        .unwrap();
    let server_classifier = XdpClassifier::attach(server_index).unwrap();
    // The real server's replies (from 198.51.100.11:8080/tcp) are what the server side's
    // classifier steers to the worker.
    server_classifier
        .set_nat_backend(
            &NatBackendKey {
                address: (*REAL_SERVER.ip()).into(),
                port: REAL_SERVER.port(),
                protocol: Protocol::Tcp,
            },
            true,
        )
        .unwrap();
    server_classifier
        .register_socket(0, xsk.fd(SERVER))
        .unwrap();

    let table = Arc::new(nat_table());
    let (worker, counters) = start_worker(xsk, &table, NAT_CLIENT_SIDE.director_mac);
    let client_wire = Wire::new(&NAT_CLIENT_SIDE);
    let server_wire = Wire::new(&NAT_SERVER_SIDE);

    // The handshake, one frame at a time.
    client_wire.send(&from_client(FrameBuilder::tcp().syn()));
    let syn = server_wire.only_frame("the SYN leaves by the server side");
    assert_segment(&syn, &TO_REAL_SERVER, TcpFlags::SYN);

    server_wire.send(&from_real_server(FrameBuilder::tcp().syn().ack()));
    let syn_ack = client_wire.only_frame("the SYN-ACK leaves by the client side");
    assert_segment(&syn_ack, &TO_CLIENT, TcpFlags::SYN | TcpFlags::ACK);

    client_wire.send(&from_client(FrameBuilder::tcp().ack()));
    let ack = server_wire.only_frame("the ACK leaves by the server side");
    assert_segment(&ack, &TO_REAL_SERVER, TcpFlags::ACK);

    // Then data both ways: more frames than the UMEM has, so every chunk crosses many times.
    let rounds = 5_000u32;
    let data = TcpFlags::ACK | TcpFlags::PSH;
    let handshake = 3u64;
    let mut to_server = Vec::new();
    let mut to_clients = Vec::new();
    for round in 0..rounds {
        client_wire.send(&from_client(
            FrameBuilder::tcp()
                .ack()
                .psh()
                .seq(round)
                .payload(b"request"),
        ));
        server_wire.send(&from_real_server(
            FrameBuilder::tcp()
                .ack()
                .psh()
                .seq(round)
                .payload(b"response"),
        ));
        if round % 16 == 15 {
            // Pace the senders: veth holds only 256 frames for its NAPI poll.
            let expected = handshake + 2 * u64::from(round + 1);
            wait_for_rx("the worker to catch up", &counters, |rx| rx >= expected);
            to_server.extend(server_wire.arrived());
            to_clients.extend(client_wire.arrived());
        }
    }
    let expected = rounds as usize;
    server_wire.collect_into(&mut to_server, expected, CATCH_UP);
    client_wire.collect_into(&mut to_clients, expected, CATCH_UP);
    let drops = drops(&counters);
    assert_eq!(
        (to_server.len(), to_clients.len()),
        (expected, expected),
        "data frames seen (to the real server, to the client); worker sent {}, drops {drops:?}",
        counters.tx_packets.load(Ordering::Relaxed),
    );
    for frame in &to_server {
        assert_segment(frame, &TO_REAL_SERVER, data);
    }
    for frame in &to_clients {
        assert_segment(frame, &TO_CLIENT, data);
    }

    let xsk = worker.stop();
    let frames = assert_no_frame_leaked(&xsk);
    assert_eq!(frames.free + frames.in_fill, total_frames, "{frames:?}");

    let forwarded = handshake + 2 * u64::from(rounds);
    assert_eq!(counters.rx_packets.load(Ordering::Relaxed), forwarded);
    assert_eq!(counters.tx_packets.load(Ordering::Relaxed), forwarded);
    assert!(
        DropReason::ALL
            .iter()
            .all(|&reason| counters.drops(reason) == 0),
        "no drops expected: {drops:?}"
    );
    let backend = &table.backend_counters[0][0];
    assert_eq!(
        backend.packets_in.load(Ordering::Relaxed),
        2 + u64::from(rounds)
    );
    assert_eq!(
        backend.packets_out.load(Ordering::Relaxed),
        1 + u64::from(rounds)
    );
}

#[test]
fn one_port_worker_counts_nat_as_unsupported() {
    let Some(_namespace) = enter_namespace("o", &[&SINGLE]) else {
        return;
    };
    let (classifier, xsk) = single_port();
    assert_eq!(xsk.peer(CLIENT), None, "one port has no peer");
    classifier.set_service(&NAT_SERVICE, true).unwrap();

    let table = Arc::new(nat_table());
    let (worker, counters) = start_worker(xsk, &table, SINGLE.director_mac);
    let wire = RawSocket::new(SINGLE.wire);
    let frames = 100u64;
    for round in 0..frames {
        let syn = FrameBuilder::tcp().syn().seq(round as u32);
        wire.send(&to_director(&SINGLE, NAT_CLIENT, NAT_VIP, syn));
    }
    wait_for_rx("the worker to take every frame", &counters, |rx| {
        rx == frames
    });
    let xsk = worker.stop();

    assert_eq!(counters.drops(DropReason::UnsupportedForwarding), frames);
    assert_eq!(counters.tx_packets.load(Ordering::Relaxed), 0);
    assert_no_frame_leaked(&xsk);
}
