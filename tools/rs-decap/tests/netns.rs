//! The real-server set-up end to end, with the built `rs-decap` binary: two network namespaces
//! joined by a veth, a "real server" holding the VIP on `lo` with the LVS-TUN sysctls and a UDP
//! listener on VIP:9000, and a "director" that sends it IP-in-IP from a raw socket. Proves the
//! attachment outlives `rs-decap attach`, that the inner packet reaches the listener with the
//! client's source, and that `detach` removes the program. The same with an outer IPv6 header
//! (6in6 to an IPv6 VIP, 4in6 to the IPv4 one) sent from a raw IPv6 socket, the real server's
//! IPv6 addresses found by `attach` itself. Needs root; skipped otherwise.

mod frames;

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dataplane::testing::FrameBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_rs-decap");
const DIRECTOR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const REAL_SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 40000);
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 9000);
/// The real server's interface, the one `rs-decap` attaches to.
const RS_IFACE: &str = "rsd0";
const DIRECTOR_IFACE: &str = "dir0";
const PAYLOAD: &[u8] = b"through the tunnel";
const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 3);
const REAL_SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
const CLIENT6: SocketAddrV6 =
    SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 40000, 0, 0);
const VIP6: SocketAddrV6 = SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10),
    9000,
    0,
    0,
);

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A network namespace, deleted on drop (panics included); its interfaces, and any XDP program
/// attached to them, go with it.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new(tag: &str) -> Self {
        let name = format!("rsd{}{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        Namespace { name }
    }

    /// Runs `args` inside the namespace; panics on failure.
    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `args` inside the namespace, whatever its outcome.
    fn try_exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.name.as_str()])
            .args(args)
            .output()
            .expect("running ip netns exec")
    }

    /// Moves the calling thread (only) into the namespace.
    fn enter(&self) {
        let file = File::open(format!("/var/run/netns/{}", self.name)).expect("namespace file");
        // SAFETY: setns on a valid namespace fd affects only the calling thread.
        let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
    }

    /// `ip -d link show` of `iface` in this namespace.
    fn link_details(&self, iface: &str) -> String {
        let output = run(
            "ip",
            &["-n", self.name.as_str(), "-d", "link", "show", iface],
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Sends raw IPv4 packets (IP_HDRINCL) from inside `namespace`, in a thread of its own.
fn send_raw(namespace: &Namespace, packet: &[u8], to: Ipv4Addr) {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                namespace.enter();
                // SAFETY: plain socket creation; the result is checked before use.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
                assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
                // SAFETY: a fresh descriptor this thread owns from here on.
                let socket = unsafe { OwnedFd::from_raw_fd(fd) };
                let address = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(to).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: the buffer and the sockaddr_in are valid for the lengths passed.
                let sent = unsafe {
                    libc::sendto(
                        socket.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&raw const address).cast(),
                        size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
                assert_eq!(
                    usize::try_from(sent).ok(),
                    Some(packet.len()),
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            })
            .join()
            .expect("sender thread");
    });
}

/// Sends raw IPv6 packets from inside `namespace`, in a thread of its own. An IPv6 raw socket
/// of protocol IPPROTO_RAW sends the packet as given, header included (Linux sets
/// IPV6_HDRINCL for it); the kernel still routes it and resolves the neighbour (NDP).
fn send_raw6(namespace: &Namespace, packet: &[u8], to: Ipv6Addr) {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                namespace.enter();
                // SAFETY: plain socket creation; the result is checked before use.
                let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW) };
                assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
                // SAFETY: a fresh descriptor this thread owns from here on.
                let socket = unsafe { OwnedFd::from_raw_fd(fd) };
                let address = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: 0,
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: to.octets(),
                    },
                    sin6_scope_id: 0,
                };
                // SAFETY: the buffer and the sockaddr_in6 are valid for the lengths passed.
                let sent = unsafe {
                    libc::sendto(
                        socket.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&raw const address).cast(),
                        size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                };
                assert_eq!(
                    usize::try_from(sent).ok(),
                    Some(packet.len()),
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            })
            .join()
            .expect("sender thread");
    });
}

/// Binds a UDP listener on `listen` inside `server`, then calls `send` until the listener has
/// received a datagram (the first sends may wait on neighbour resolution), for at most 10
/// seconds; returns the datagram and its source. `describe` says what to show on timeout.
fn send_until_received(
    server: &Namespace,
    listen: SocketAddr,
    send: &dyn Fn(),
    describe: &dyn Fn() -> String,
) -> (Vec<u8>, SocketAddr) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (got_tx, got_rx) = mpsc::channel::<(Vec<u8>, SocketAddr)>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    thread::scope(|scope| {
        scope.spawn(move || {
            server.enter();
            let socket =
                UdpSocket::bind(listen).unwrap_or_else(|error| panic!("binding {listen}: {error}"));
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buffer = [0; 2048];
            while stop_rx.try_recv().is_err() {
                if let Ok((len, from)) = socket.recv_from(&mut buffer) {
                    let _ = got_tx.send((buffer[..len].to_vec(), from));
                }
            }
        });
        // Stops the listener however this closure ends, so the scope can join it.
        let _stop = StopOnDrop(stop_tx);
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("listener ready");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            send();
            if let Ok(got) = got_rx.recv_timeout(Duration::from_millis(200)) {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "the listener on {listen} never received the inner packet; {}",
                describe()
            );
        }
    })
}

/// The value of counter `name` in `rs-decap status` output.
fn counter(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|line| {
            let (line_name, value) = line.split_once(' ')?;
            (line_name == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} counter in status:\n{status}"))
}

/// The link has an XDP program named rs_decap attached.
fn has_rs_decap(details: &str) -> bool {
    details.contains("prog/xdp") && details.contains("name rs_decap")
}

/// The director and real-server namespaces, joined by a veth, the real server set up for
/// LVS-TUN.
/// `tag` keeps the namespace names of tests running at once apart.
fn lab(tag: &str) -> (Namespace, Namespace) {
    let director = Namespace::new(&format!("d{tag}"));
    let server = Namespace::new(&format!("s{tag}"));

    director.exec(&[
        "ip",
        "link",
        "add",
        DIRECTOR_IFACE,
        "type",
        "veth",
        "peer",
        "name",
        RS_IFACE,
    ]);
    director.exec(&["ip", "link", "set", RS_IFACE, "netns", server.name.as_str()]);
    director.exec(&["ip", "addr", "add", "192.0.2.3/24", "dev", DIRECTOR_IFACE]);
    director.exec(&["ip", "link", "set", DIRECTOR_IFACE, "up"]);

    // The LVS-TUN real server: VIP on lo, not answered in ARP, no reverse-path filtering.
    server.exec(&["ip", "link", "set", "lo", "up"]);
    server.exec(&["ip", "addr", "add", "192.0.2.10/32", "dev", "lo"]);
    server.exec(&["ip", "addr", "add", "192.0.2.11/24", "dev", RS_IFACE]);
    server.exec(&["ip", "link", "set", RS_IFACE, "up"]);
    let rp_filter_iface = format!("net.ipv4.conf.{RS_IFACE}.rp_filter=0");
    for setting in [
        "net.ipv4.conf.all.arp_ignore=1",
        "net.ipv4.conf.all.arp_announce=2",
        "net.ipv4.conf.all.rp_filter=0",
        rp_filter_iface.as_str(),
    ] {
        server.exec(&["sysctl", "-q", "-w", setting]);
    }

    (director, server)
}

#[test]
fn real_server_receives_the_inner_packet_and_attach_outlives_the_process() {
    if !dataplane::testing::require_root() {
        return;
    }
    let (director, server) = lab("");

    // The listener on VIP:9000, bound before the first packet is sent.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (got_tx, got_rx) = mpsc::channel::<(Vec<u8>, SocketAddr)>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (payload, from) = thread::scope(|scope| {
        let server = &server;
        scope.spawn(move || {
            server.enter();
            let socket = UdpSocket::bind(VIP).expect("binding VIP:9000");
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buffer = [0; 2048];
            while stop_rx.try_recv().is_err() {
                if let Ok((len, from)) = socket.recv_from(&mut buffer) {
                    let _ = got_tx.send((buffer[..len].to_vec(), from));
                }
            }
        });
        // Stops the listener however this closure ends, so the scope can join it.
        let _stop = StopOnDrop(stop_tx);
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("listener ready");

        // Attach, and let the process exit: the program must still be there.
        let attach = server.exec(&[BIN, "attach", RS_IFACE]);
        let message = String::from_utf8_lossy(&attach.stdout).into_owned();
        assert!(
            message.contains("192.0.2.11") && message.contains(RS_IFACE),
            "attach said: {message}"
        );
        let details = server.link_details(RS_IFACE);
        assert!(
            has_rs_decap(&details),
            "rs_decap not attached after `rs-decap attach` exited:\n{details}"
        );

        // outer 192.0.2.3 -> 192.0.2.11 protocol 4, inner 192.0.2.2:40000 -> 192.0.2.10:9000.
        let inner = FrameBuilder::udp()
            .src(&CLIENT.to_string())
            .dst(&VIP.to_string())
            .payload(PAYLOAD)
            .build_ipv4();
        let packet = FrameBuilder::ipip()
            .src(&format!("{DIRECTOR}:0"))
            .dst(&format!("{REAL_SERVER}:0"))
            .payload(&inner)
            .build_ipv4();

        // Resend until it arrives (the first may wait on ARP), bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            send_raw(&director, &packet, REAL_SERVER);
            if let Ok(got) = got_rx.recv_timeout(Duration::from_millis(200)) {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "the listener on VIP:9000 never received the inner packet; status: {}",
                String::from_utf8_lossy(&server.try_exec(&[BIN, "status", RS_IFACE]).stdout)
            );
        }
    });
    assert_eq!(payload, PAYLOAD);
    assert_eq!(from, SocketAddr::V4(CLIENT), "source seen by the listener");

    // The program did it, and says so.
    let status = server.exec(&[BIN, "status", RS_IFACE]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        counter(&status, "decapsulated_4in4") >= 1,
        "status:\n{status}"
    );
    // Every address of the host: the real server's own, and the VIP on lo.
    assert!(
        status.contains("local addresses: 192.0.2.10, 192.0.2.11"),
        "status:\n{status}"
    );

    // Still attached until detach, which removes it.
    assert!(has_rs_decap(&server.link_details(RS_IFACE)));
    server.exec(&[BIN, "detach", RS_IFACE]);
    let details = server.link_details(RS_IFACE);
    assert!(
        !details.contains("xdp"),
        "an XDP program is still attached after detach:\n{details}"
    );
    let status = server.try_exec(&[BIN, "status", RS_IFACE]);
    assert_eq!(
        status.status.code(),
        Some(1),
        "status exit code when not attached"
    );
}

/// 6in6 and 4in6 from the director's raw IPv6 socket to the real server's IPv6 address: with
/// `rs-decap attach` run after the IPv6 addresses exist (it finds them itself), the inner IPv6
/// datagram reaches the listener on the IPv6 VIP (held on `lo`, nodad) and the inner IPv4 one
/// the listener on the IPv4 VIP, each with the client's source, and the status counts each
/// kind.
#[test]
fn real_server_receives_6in6_and_4in6() {
    if !dataplane::testing::require_root() {
        return;
    }
    let (director, server) = lab("6");
    director.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8::3/64",
        "dev",
        DIRECTOR_IFACE,
        "nodad",
    ]);
    server.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8::11/64",
        "dev",
        RS_IFACE,
        "nodad",
    ]);
    server.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8::10/128",
        "dev",
        "lo",
        "nodad",
    ]);

    let attach = server.exec(&[BIN, "attach", RS_IFACE]);
    let message = String::from_utf8_lossy(&attach.stdout).into_owned();
    assert!(message.contains("2001:db8::11"), "attach said: {message}");
    let status = || {
        String::from_utf8_lossy(&server.try_exec(&[BIN, "status", RS_IFACE]).stdout).into_owned()
    };

    // 6in6: outer 2001:db8::3 -> 2001:db8::11 next header 41, inner [2001:db8::2]:40000 ->
    // [2001:db8::10]:9000.
    let inner6 = frames::udp6(CLIENT6, VIP6, PAYLOAD);
    let six_in_six = frames::ipv6(DIRECTOR6, REAL_SERVER6, frames::next_header::IPV6, &inner6);
    let (payload, from) = send_until_received(
        &server,
        SocketAddr::V6(VIP6),
        &|| send_raw6(&director, &six_in_six, REAL_SERVER6),
        &|| format!("status:\n{}", status()),
    );
    assert_eq!(payload, PAYLOAD);
    assert_eq!(
        from,
        SocketAddr::V6(CLIENT6),
        "source seen by the IPv6 listener"
    );

    // 4in6: the same outer header with next header 4, inner 192.0.2.2:40000 -> 192.0.2.10:9000.
    let inner4 = FrameBuilder::udp()
        .src(&CLIENT.to_string())
        .dst(&VIP.to_string())
        .payload(PAYLOAD)
        .build_ipv4();
    let four_in_six = frames::ipv6(DIRECTOR6, REAL_SERVER6, frames::next_header::IPV4, &inner4);
    let (payload, from) = send_until_received(
        &server,
        SocketAddr::V4(VIP),
        &|| send_raw6(&director, &four_in_six, REAL_SERVER6),
        &|| format!("status:\n{}", status()),
    );
    assert_eq!(payload, PAYLOAD);
    assert_eq!(
        from,
        SocketAddr::V4(CLIENT),
        "source seen by the IPv4 listener"
    );

    let status = status();
    assert!(
        counter(&status, "decapsulated_6in6") >= 1,
        "status:\n{status}"
    );
    assert!(
        counter(&status, "decapsulated_4in6") >= 1,
        "status:\n{status}"
    );
    assert_eq!(
        counter(&status, "decapsulated_4in4"),
        0,
        "status:\n{status}"
    );
    assert_eq!(counter(&status, "malformed_6in6"), 0, "status:\n{status}");
    assert_eq!(counter(&status, "malformed_4in6"), 0, "status:\n{status}");
    // Both families of the host, without loopback or link-local addresses.
    assert!(
        status.contains("local addresses: 192.0.2.10, 192.0.2.11, 2001:db8::10, 2001:db8::11\n"),
        "status:\n{status}"
    );
}

/// Sends on drop: tells the listener thread to stop.
struct StopOnDrop(mpsc::Sender<()>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// `rs-decap` on an interface that already has someone else's XDP program (the director's
/// classifier, on a bpf_link this test holds): attach and detach refuse, exit 1, name the
/// interface, and leave it attached. Then, once it is gone, generic mode attaches and detaches.
#[test]
fn foreign_program_is_left_alone_and_generic_mode_works() {
    if !dataplane::testing::require_root() {
        return;
    }
    let server = Namespace::new("f");
    server.exec(&[
        "ip",
        "link",
        "add",
        RS_IFACE,
        "type",
        "veth",
        "peer",
        "name",
        DIRECTOR_IFACE,
    ]);
    server.exec(&["ip", "addr", "add", "192.0.2.11/24", "dev", RS_IFACE]);
    server.exec(&["ip", "link", "set", RS_IFACE, "up"]);
    server.exec(&["ip", "link", "set", DIRECTOR_IFACE, "up"]);

    let (attached_tx, attached_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    thread::scope(|scope| {
        let server = &server;
        scope.spawn(move || {
            server.enter();
            let ifindex = rs_decap::Interface::by_name(RS_IFACE).unwrap().index;
            let classifier = dataplane::xdp::XdpClassifier::attach(ifindex).unwrap();
            attached_tx.send(()).unwrap();
            let _ = stop_rx.recv_timeout(Duration::from_secs(30));
            drop(classifier);
        });
        let _stop = StopOnDrop(stop_tx);
        attached_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("classifier attached");

        for command in ["attach", "detach"] {
            let output = server.try_exec(&[BIN, command, RS_IFACE]);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
            assert!(
                stderr.contains(&format!("interface {RS_IFACE}"))
                    && stderr.contains("director_xdp")
                    && stderr.contains("refusing"),
                "{command} said: {stderr}"
            );
            let details = server.link_details(RS_IFACE);
            assert!(
                details.contains("name director_xdp"),
                "{command} touched the foreign program:\n{details}"
            );
        }
        let status = server.try_exec(&[BIN, "status", RS_IFACE]);
        assert_eq!(status.status.code(), Some(1));
    });

    // The classifier's link went with its thread.
    server.exec(&[BIN, "attach", RS_IFACE, "--mode", "generic"]);
    let details = server.link_details(RS_IFACE);
    assert!(
        details.contains("xdpgeneric") && has_rs_decap(&details),
        "{details}"
    );
    // Asking for native while it is generic is refused; plain attach replaces in place.
    let native = server.try_exec(&[BIN, "attach", RS_IFACE, "--mode", "native"]);
    assert_eq!(native.status.code(), Some(1));
    server.exec(&[BIN, "attach", RS_IFACE]);
    assert!(server.link_details(RS_IFACE).contains("xdpgeneric"));
    server.exec(&[BIN, "detach", RS_IFACE]);
    let details = server.link_details(RS_IFACE);
    assert!(!details.contains("xdp"), "{details}");

    let missing = server.try_exec(&[BIN, "attach", "nosuch0"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("interface nosuch0"));
}
