//! The real thing, minus control: a veth pair in a fresh network namespace, the XDP classifier
//! on one end, an AF_XDP socket and a worker behind it, and raw frames injected from the other
//! end. Proves that frames for a service reach the worker, come back out rewritten, that every
//! drop is counted, and that no UMEM frame leaks however the frames ended.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::counters::backend_counter_block;
use dataplane::worker::{self, WorkerContext};
use dataplane::xdp::XdpClassifier;
use dataplane::xsk::{Xsk, XskConfig};
use dataplane::{
    Backend, DropReason, Forwarding, Pipeline, Protocol, Service, ServiceKey, ServiceTable,
    Timeouts, WorkerCounters,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];

/// A namespace with a veth pair `xa` (director side) / `xb` (wire side); deleted on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new(tag: &str) -> Self {
        let name = format!("dpt{}{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let namespace = Namespace { name };
        Namespace::ip(&["netns", "add", &namespace.name]);
        namespace.exec(&[
            "ip", "link", "add", "xa", "type", "veth", "peer", "name", "xb",
        ]);
        namespace.exec(&["ip", "link", "set", "xa", "address", "02:00:00:00:00:0a"]);
        namespace.exec(&["ip", "link", "set", "xb", "address", "02:00:00:00:00:0b"]);
        namespace.exec(&["ip", "link", "set", "xa", "up"]);
        namespace.exec(&["ip", "link", "set", "xb", "up"]);
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

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
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
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0b]);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&CLIENT.octets());
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

fn service(port: u16, mac: Option<[u8; 6]>, slot: usize) -> Service {
    let scheduler = scheduler::Scheduler::new(
        scheduler::Algorithm::RoundRobin,
        &[scheduler::Candidate { key: 1, weight: 1 }],
        7,
    )
    .unwrap();
    Service {
        name: format!("udp{port}"),
        key: ServiceKey {
            vip: VIP,
            port,
            protocol: Protocol::Udp,
        },
        ports: vec![port],
        persistence: None,
        forwarding: Forwarding::DirectRouting,
        scheduler,
        backends: vec![Backend {
            address: Ipv4Addr::new(192, 0, 2, 11),
            mac,
            weight: 1,
            counter_slot: slot,
            port: 0,
        }],
    }
}

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn worker_forwards_counts_drops_and_leaks_no_frame() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces and XDP");
        return;
    }
    let namespace = Namespace::new("w");
    namespace.enter();

    let director_index = ifindex("xa");
    let classifier = XdpClassifier::attach(director_index).unwrap();
    let xsk = Xsk::open(director_index, 0, XskConfig::default()).unwrap();
    classifier.register_socket(0, xsk.fd()).unwrap();
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
        classifier
            .set_service(
                &ServiceKey {
                    vip: VIP,
                    port,
                    protocol: Protocol::Udp,
                },
                true,
            )
            .unwrap();
    }

    let counters = Arc::new(WorkerCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (_sender, receiver) = crossbeam_channel::bounded(1);
    let context = WorkerContext {
        index: 0,
        pipeline: Pipeline::new(0, [0x02, 0, 0, 0, 0, 0x0a], 1024),
        counters: Arc::clone(&counters),
        tables: receiver,
        initial_table: Arc::clone(&table),
        retired_tables: crossbeam_channel::bounded(1).0,
        stop: Arc::clone(&stop),
    };
    let worker = std::thread::spawn(move || worker::run(xsk, context));

    let wire = RawSocket::new("xb");
    let director_mac = [0x02, 0, 0, 0, 0, 0x0a];
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
            wait_until("the worker to catch up", Duration::from_secs(10), || {
                counters.rx_packets.load(Ordering::Relaxed) >= expected
            });
            forwarded_seen += wire.count_to(BACKEND_MAC);
        }
    }
    let sent_to_services = u64::from(rounds) * 3;
    wait_until(
        "every service frame to reach the worker",
        Duration::from_secs(10),
        || counters.rx_packets.load(Ordering::Relaxed) == sent_to_services,
    );
    let forwarded_by_worker = || counters.tx_packets.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while forwarded_seen < usize::from(rounds) && Instant::now() < deadline {
        forwarded_seen += wire.count_to(BACKEND_MAC);
        std::thread::sleep(Duration::from_millis(10));
    }
    let veth = Command::new("ip")
        .args(["-s", "link", "show", "xb"])
        .output()
        .unwrap();
    assert_eq!(
        forwarded_seen,
        usize::from(rounds),
        "frames seen on the wire; the worker transmitted {}; drops {:?}; {}",
        forwarded_by_worker(),
        DropReason::ALL.map(|reason| (reason.name(), counters.drops(reason))),
        String::from_utf8_lossy(&veth.stdout)
    );

    stop.store(true, Ordering::Relaxed);
    let xsk = worker.join().unwrap();

    let frames = xsk.accounting();
    assert!(frames.is_balanced(), "frames unaccounted for: {frames:?}");
    assert_eq!(frames.in_tx, 0, "TX not drained: {frames:?}");
    assert_eq!(frames.in_hand, 0, "frames held after stop: {frames:?}");
    assert!(
        xsk.free_list_is_unique(),
        "a frame is on the free list twice"
    );

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
