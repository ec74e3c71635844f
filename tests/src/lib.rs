//! The director's namespace test lab, its end-to-end tests and the demo.
//!
//! A [`Lab`] builds an LVS direct-routing topology out of network namespaces: a `switch`
//! namespace holding a Linux bridge, and one namespace per host (`client`, `director`,
//! `rs1..rsN`), each with an `eth0` veth whose peer is a bridge port. Real servers hold the VIP on
//! `lo`, never answer ARP for it, run a real HTTP server (`scripts/lab-http-server.py`) and reply
//! to the client directly. [`DirectorProcess`] runs the `director` binary in the `director`
//! namespace, waits for it to be ready and stops it; [`stats`] reads `lbstat --json`.
//!
//! [`Lab::nat`] builds the LVS-NAT variant: a second bridge for the server-side segment
//! (198.51.100.0/24, TEST-NET-2), the director on both (`eth0` client side, `eth1` server side)
//! and the real servers on the second only, routing through the director.
//!
//! The routed labs ([`Topology::RoutedNat`], [`Topology::RoutedTun`],
//! [`Topology::RoutedTunEcmp`]) put one or two routers ([`Host::Router`]) between the client
//! segment and a far segment (203.0.113.0/24, TEST-NET-3) holding a far client or the TUN real
//! servers; the director reaches it by a specific route, never a default one.
//!
//! With [`LabOptions::ipv6`] every lab is dual stack (`lab/ipv6.rs`): each host also gets an
//! address in 2001:db8::/64 (the documentation prefix) ending like its IPv4 one, real servers hold
//! the IPv6 VIP [`VIP6`] on `lo` too (DR), and the NAT lab's server side is 2001:db8:1::/64.
//!
//! For high availability a DR lab can hold two or three directors on its segment
//! ([`LabOptions::directors`]); [`Lab::in_namespace`] runs code (a VRRP router of the `control`
//! crate) inside one of them, and [`Keepalived`] runs keepalived there as a VRRP peer.
//!
//! What it must not do: touch anything outside the namespaces it creates, use addresses outside
//! TEST-NET-1, -2 and -3 (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and 2001:db8::/32
//! besides VRRP's multicast groups 224.0.0.18 and ff02::12 on its own segment, leave a namespace or a process behind (even when a test
//! panics), wait without a deadline, or sleep in place of checking a condition.

#![deny(unsafe_code)]

mod client;
mod cmd;
pub mod config;
mod director;
mod http;
mod keepalived;
mod lab;
mod root;
pub mod stats;
#[expect(
    unsafe_code,
    reason = "the three libc calls (geteuid, kill, setns) the lab needs live here"
)]
mod sys;

pub use client::{GetOptions, KeepAliveClient, LoadHandle, LoadOptions, REQUEST_TIMEOUT};
pub use cmd::{poll_check, poll_until, run_with_timeout, Check, ChildGuard};
pub use config::{BackendConfig, DirectorConfig, HealthCheck, ServiceConfig};
pub use director::{
    director_bin, lbstat_bin, pktgen_bin, rs_decap_bin, workspace_dir, ControlOutput,
    DirectorProcess, Stopped,
};
pub use http::{assert_all_ok, failures, tally, HttpResponse};
pub use keepalived::{Keepalived, KeepalivedOptions, KeepalivedState};
pub use lab::ipv6::{
    director_ip6, nat_rs_ip6, rs_ip6, url_of, vip6_url, vip6_url_port, CLIENT_IP6, DIRECTOR_IP6,
    PREFIX6_LEN, SERVER_SIDE_IP6, VIP6,
};
pub use lab::{
    far_rs_ip, lab_namespaces, router_far_ip, router_ip, Host, Lab, LabOptions, Topology,
    EXTRA_CLIENT_IPS, FAR_CLIENT_IP, FAR_SUBNET,
};
pub use root::{root_test, run_root_test, RootTest, SKIP_ROOT_TESTS};
pub use sys::is_root;

/// Network prefix length of the lab's one L2 segment.
pub const PREFIX_LEN: u8 = 24;
/// The client's address.
pub const CLIENT_IP: &str = "192.0.2.2";
/// The director's own address.
pub const DIRECTOR_IP: &str = "192.0.2.3";
/// Most directors a lab holds ([`LabOptions::directors`]).
pub const MAX_DIRECTORS: usize = 3;

/// Address of director `n` (1-based): 192.0.2.3 for the first, 192.0.2.251 and 192.0.2.252 for
/// the second and third (outside the client, VIP and real-server ranges).
pub fn director_ip(n: usize) -> String {
    assert!(
        (1..=MAX_DIRECTORS).contains(&n),
        "director index {n} out of range"
    );
    if n == 1 {
        DIRECTOR_IP.to_owned()
    } else {
        format!("192.0.2.{}", 249 + n)
    }
}
/// The virtual IP the director serves (and the real servers hold on `lo`).
pub const VIP: &str = "192.0.2.10";
/// The service port.
pub const VIP_PORT: u16 = 80;
/// Host part of the first real server's address (`rs1` is 192.0.2.11).
pub const FIRST_RS_HOST: usize = 11;

/// Address of real server `i` (1-based: `rs_ip(1)` is 192.0.2.11).
pub fn rs_ip(i: usize) -> String {
    assert!(
        i >= 1 && FIRST_RS_HOST + i - 1 < 255,
        "real server index {i} out of range"
    );
    format!("192.0.2.{}", FIRST_RS_HOST + i - 1)
}

/// The director's address on the NAT lab's server-side segment (the real servers' gateway).
pub const SERVER_SIDE_IP: &str = "198.51.100.1";

/// Address of real server `i` in the NAT lab's server-side segment (`nat_rs_ip(1)` is
/// 198.51.100.11).
pub fn nat_rs_ip(i: usize) -> String {
    assert!(
        i >= 1 && FIRST_RS_HOST + i - 1 < 255,
        "real server index {i} out of range"
    );
    format!("198.51.100.{}", FIRST_RS_HOST + i - 1)
}

/// Name of real server `i` (1-based), as it reports itself in its HTTP answers.
pub fn rs_name(i: usize) -> String {
    format!("rs{i}")
}

/// The VIP's URL.
pub fn vip_url() -> String {
    vip_url_port(VIP_PORT)
}

/// The VIP's URL on `port`.
pub fn vip_url_port(port: u16) -> String {
    format!("http://{VIP}:{port}/")
}

/// The first line of every test that needs root: without root it panics ("needs root: run as
/// root, or set DIRECTOR_SKIP_ROOT_TESTS=1 to skip"), or with `DIRECTOR_SKIP_ROOT_TESTS=1`
/// returns early after printing `SKIPPED` ([`run_root_test`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::run_root_test() {
            return;
        }
    };
}
