//! The netlink client against a real kernel, inside throwaway network namespaces (needs root).
//!
//! Layout: namespace `dirtest-nl-<pid>-<n>` holds `va` (198.51.100.1/24); its veth peer `vb`
//! lives in `dirtest-nl-<pid>-<n>-peer` with 198.51.100.2/24 and 198.51.100.3/24. Both
//! namespaces are deleted by a Drop guard, also when a test fails.

use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use control::config::parse_mac;
use control::netlink::{
    interface_index, interface_mac, interface_rx_queues, AddressChange, Netlink,
};

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const PEER_SECOND: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const NOBODY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A pair of namespaces joined by a veth, deleted on drop.
struct Lab {
    name: String,
    peer: String,
}

impl Lab {
    fn new() -> Lab {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "dirtest-nl-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let peer = format!("{name}-peer");
        ip(&["netns", "add", &name]);
        // From here on the guard cleans up, whatever fails next.
        let lab = Lab { name, peer };
        ip(&["netns", "add", &lab.peer]);
        ip(&[
            "-n", &lab.name, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &lab.peer,
        ]);
        ip(&["-n", &lab.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &lab.name,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "va",
        ]);
        ip(&["-n", &lab.name, "link", "set", "va", "up"]);
        ip(&["-n", &lab.peer, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &lab.peer,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "vb",
        ]);
        ip(&[
            "-n",
            &lab.peer,
            "addr",
            "add",
            "198.51.100.3/24",
            "dev",
            "vb",
        ]);
        ip(&["-n", &lab.peer, "link", "set", "vb", "up"]);
        lab
    }

    /// Runs `body` on a thread that has entered the lab's main namespace (setns affects only
    /// the calling thread), re-raising its panic here.
    fn enter<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        let namespace = File::open(format!("/run/netns/{}", self.name)).expect("open namespace");
        let thread = std::thread::spawn(move || {
            // SAFETY: setns(2) on a valid namespace descriptor; it only changes this thread's
            // network namespace, and this thread is ours and ends with `body`.
            #[expect(unsafe_code, reason = "setns has no safe wrapper in std")]
            let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
            body()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in [&self.name, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Polls `probe` every 10 ms until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The MAC `ip link` shows for an interface.
fn ip_link_mac(namespace: &str, interface: &str) -> [u8; 6] {
    let output = ip(&["-n", namespace, "link", "show", interface]);
    let text = output
        .split("link/ether ")
        .nth(1)
        .expect("link/ether in ip link output");
    parse_mac(text.split_whitespace().next().unwrap()).expect("MAC in ip link output")
}

#[test]
fn interface_queries_match_ip_link() {
    let lab = Lab::new();
    let expected = ip_link_mac(&lab.name, "va");
    let (index, mac, queues) = lab.enter(|| {
        (
            interface_index("va").unwrap(),
            interface_mac("va").unwrap(),
            interface_rx_queues("va").unwrap(),
        )
    });
    assert_eq!(mac, expected);
    let shown = ip(&["-n", &lab.name, "-o", "link", "show", "va"]);
    assert!(
        shown.starts_with(&format!("{index}: va@")),
        "ifindex {index} vs {shown:?}"
    );
    assert_eq!(queues, 1);
}

#[test]
fn add_and_remove_address_twice() {
    let lab = Lab::new();
    let vip = Ipv4Addr::new(203, 0, 113, 10);
    let (first, second) = lab.enter(move || {
        let index = interface_index("va").unwrap();
        let mut netlink = Netlink::open().unwrap();
        let added = (
            netlink.add_address(index, vip, 32).unwrap(),
            netlink.add_address(index, vip, 32).unwrap(),
        );
        // The dump lists the interface's own address first and the new one with its prefix.
        let addresses = netlink.addresses(index).unwrap();
        assert_eq!(
            addresses.first(),
            Some(&(Ipv4Addr::new(198, 51, 100, 1), 24)),
            "{addresses:?}"
        );
        assert!(addresses.contains(&(vip, 32)), "{addresses:?}");
        assert_eq!(control::netlink::interface_mtu("va").unwrap(), 1500);
        added
    });
    assert_eq!(
        (first, second),
        (AddressChange::Added, AddressChange::AlreadyPresent)
    );
    assert!(ip(&["-n", &lab.name, "-4", "addr", "show", "dev", "va"]).contains("203.0.113.10/32"));
    lab.enter(move || {
        let index = interface_index("va").unwrap();
        let mut netlink = Netlink::open().unwrap();
        netlink.remove_address(index, vip, 32).unwrap();
        // Gone already: still fine.
        netlink.remove_address(index, vip, 32).unwrap();
    });
    let shown = ip(&["-n", &lab.name, "-4", "addr", "show", "dev", "va"]);
    assert!(!shown.contains("203.0.113.10"), "{shown}");
    assert!(shown.contains("198.51.100.1/24"), "{shown}");
    // A missing interface is refused with the operation named.
    let error = lab.enter(move || {
        Netlink::open()
            .unwrap()
            .add_address(9999, vip, 32)
            .unwrap_err()
            .to_string()
    });
    assert!(
        error.contains("add address 203.0.113.10/32 on ifindex 9999"),
        "{error}"
    );
}

#[test]
fn neighbour_learned_from_traffic() {
    let lab = Lab::new();
    let peer_mac = ip_link_mac(&lab.peer, "vb");
    let found = lab.enter(|| {
        let index = interface_index("va").unwrap();
        let mut netlink = Netlink::open().unwrap();
        assert_eq!(netlink.neighbour_mac(index, PEER).unwrap(), None);
        // Any datagram to the peer makes the kernel ARP for it (ping is not installed here).
        let socket = UdpSocket::bind((LOCAL, 0)).unwrap();
        socket.send_to(b"hello", (PEER, 9)).unwrap();
        poll(Duration::from_secs(3), || {
            netlink.neighbour_mac(index, PEER).unwrap()
        })
    });
    assert_eq!(found, Some(peer_mac));
}

#[test]
fn solicit_neighbour_triggers_arp() {
    let lab = Lab::new();
    let peer_mac = ip_link_mac(&lab.peer, "vb");
    let (found, nobody) = lab.enter(|| {
        let index = interface_index("va").unwrap();
        let mut netlink = Netlink::open().unwrap();
        assert_eq!(netlink.neighbour_mac(index, PEER_SECOND).unwrap(), None);
        netlink.solicit_neighbour(index, PEER_SECOND).unwrap();
        let found = poll(Duration::from_secs(3), || {
            netlink.neighbour_mac(index, PEER_SECOND).unwrap()
        });
        // Nobody answers for this one: the entry exists but never becomes usable.
        netlink.solicit_neighbour(index, NOBODY).unwrap();
        (found, netlink.neighbour_mac(index, NOBODY).unwrap())
    });
    assert_eq!(found, Some(peer_mac));
    assert_eq!(nobody, None);
    let table = ip(&["-n", &lab.name, "neigh", "show", "dev", "va"]);
    assert!(table.contains("198.51.100.3"), "{table}");
    assert!(table.contains("198.51.100.99"), "{table}");
}
