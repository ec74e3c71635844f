//! Test support: a readable frame builder (`builder.rs`), service-table helpers (`fixtures.rs`),
//! a field-level frame diff (`diff.rs`), the gate of tests that need root (`root.rs`) and the
//! fuzzing harnesses (`fuzzing/`), plus the fixture addresses and a way to run a frame through
//! the pipeline as a worker does.
//!
//! Shared by unit tests, `tests/`, benches and fuzz seeds so they all speak the same fixtures.
//! Not part of the data plane: it allocates and panics on bad input (it is for tests). Compiled
//! only for the crate's own unit tests and with the `testing` feature, which only dev-dependencies
//! turn on, so the `director` binary does not contain it. Hidden from the docs; nothing in the hot
//! path uses it.
//!
//! ```
//! use dataplane::testing::FrameBuilder;
//! let syn = FrameBuilder::tcp().src("192.0.2.2:40000").dst("192.0.2.10:80").syn().build();
//! assert_eq!(syn.len(), 60); // padded to the Ethernet minimum
//! ```

mod builder;
mod diff;
mod fixtures;
pub mod fuzzing;
mod root;

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::pipeline::{Pipeline, Verdict};
use crate::service::{Interface, Interfaces, ServiceTable};
use crate::wire::MacAddr;
use crate::WorkerCounters;

pub use builder::{FrameBuilder, Ipv6FrameBuilder};
pub use diff::{assert_frame_eq, diff};
pub use fixtures::{
    assert_gauges_match, backend, counter_blocks, service, service_with_ports, sync_connection,
    sync_template, table, with_forwarding, with_persistence, with_port,
};
pub use root::{is_root, require_root, root_test, RootTest, SKIP_ROOT_TESTS};

/// The director's interface MAC in fixtures.
pub const DIRECTOR_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x0a];
/// The upstream router's MAC: the source of client frames in fixtures.
pub const ROUTER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];

/// The director's server-side interface MAC in fixtures (NAT: frames to real servers leave
/// from it).
pub const SERVER_SIDE_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x0b];
/// The director's client-side address in fixtures (the outer source of tunnelled frames).
pub const CLIENT_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The director's server-side address in fixtures (the NAT real servers' gateway).
pub const SERVER_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
/// The director's client-side IPv6 address in fixtures (the outer source of IPv6 tunnels).
pub const CLIENT_SIDE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1);
/// The director's server-side IPv6 address in fixtures.
pub const SERVER_SIDE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0xa, 0, 0, 0, 0xfe);
/// Headroom in front of received frames in fixtures, as AF_XDP leaves it (at least 256).
pub const UMEM_HEADROOM: usize = 256;
/// Size of a fixture UMEM chunk.
pub const CHUNK_SIZE: usize = 4096;

/// The fixture interfaces: client side [`DIRECTOR_MAC`], [`CLIENT_SIDE_ADDR`], next hop
/// [`ROUTER_MAC`]; server side [`SERVER_SIDE_MAC`], [`SERVER_SIDE_ADDR`]; MTU `mtu` on both.
pub fn interfaces(mtu: u16) -> Interfaces {
    Interfaces {
        client: Interface {
            mac: DIRECTOR_MAC,
            address: CLIENT_SIDE_ADDR,
            address6: Some(CLIENT_SIDE_ADDR6),
            mtu,
            next_hop_mac: Some(ROUTER_MAC),
        },
        server: Interface {
            mac: SERVER_SIDE_MAC,
            address: SERVER_SIDE_ADDR,
            address6: Some(SERVER_SIDE_ADDR6),
            mtu,
            next_hop_mac: None,
        },
    }
}

/// `frame` at [`UMEM_HEADROOM`] in a [`CHUNK_SIZE`]-byte chunk filled with `0xee`.
pub fn in_chunk(frame: &[u8]) -> Vec<u8> {
    let mut chunk = vec![0xee; CHUNK_SIZE.max(UMEM_HEADROOM + frame.len())];
    chunk[UMEM_HEADROOM..UMEM_HEADROOM + frame.len()].copy_from_slice(frame);
    chunk
}

/// An ICMP error from `src` to `dst` (addresses as `"a.b.c.d:0"`) of `msg_type`/`code`, with
/// `rest` as the header's last four bytes (e.g. the next-hop MTU), quoting `quote`.
pub fn icmp_error(
    src: &str,
    dst: &str,
    msg_type: u8,
    code: u8,
    rest: u32,
    quote: &[u8],
) -> FrameBuilder {
    FrameBuilder::icmp()
        .src(src)
        .dst(dst)
        .icmp_header(msg_type, code, rest)
        .payload(quote)
}

/// Runs `frame` through `pipeline` as a worker does: in a UMEM-like chunk ([`in_chunk`]).
/// Returns the verdict and the frame to transmit, or for a drop the frame where it was, having
/// checked that the drop left the chunk untouched.
#[track_caller]
pub fn run(
    pipeline: &mut Pipeline,
    frame: &[u8],
    table: &ServiceTable,
    now: std::time::Instant,
    counters: &WorkerCounters,
) -> (Verdict, Vec<u8>) {
    let before = in_chunk(frame);
    let mut chunk = before.clone();
    let verdict = pipeline.process(&mut chunk, UMEM_HEADROOM, frame.len(), table, now, counters);
    match verdict {
        Verdict::Tx { start, len, .. } => (verdict, chunk[start..start + len].to_vec()),
        Verdict::Drop(reason) => {
            assert!(
                chunk == before,
                "dropped ({reason:?}) but changed the chunk"
            );
            (verdict, frame.to_vec())
        }
    }
}

/// The MAC fixtures give real server `n` (`02:00:00:00:01:nn`).
pub const fn backend_mac(n: u8) -> MacAddr {
    [0x02, 0, 0, 0, 0x01, n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EthernetFrame, Ipv4Packet, TcpSegment, UdpDatagram};

    #[test]
    fn builder_round_trips_through_views() {
        let frame = FrameBuilder::tcp()
            .src("192.0.2.7:1234")
            .dst("192.0.2.10:443")
            .syn()
            .payload(b"hi")
            .build();
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.src_addr(), ROUTER_MAC);
        assert_eq!(eth.dst_addr(), DIRECTOR_MAC);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 42);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(192, 0, 2, 7));
        let tcp = TcpSegment::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (1234, 443));
        assert!(tcp.syn() && !tcp.ack());
        assert_eq!(tcp.payload(), b"hi");
        assert!(tcp.verify_checksum(ip.src_addr(), ip.dst_addr()));

        let frame = FrameBuilder::udp()
            .dst("192.0.2.53:53")
            .payload(&[7; 100])
            .build();
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        let udp = UdpDatagram::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.len(), 108);
        assert!(udp.verify_checksum(ip.src_addr(), ip.dst_addr()));
    }

    #[test]
    fn malformed_knobs() {
        assert_eq!(FrameBuilder::tcp().truncate(13).build().len(), 13);
        let tagged = FrameBuilder::tcp().vlan(100).build();
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 0x64]);
        let options = FrameBuilder::tcp().ihl(6).build();
        let ip = Ipv4Packet::new_checked(&options[14..]).unwrap();
        assert_eq!(ip.options(), &[1, 1, 1, 0]);
        assert!(ip.verify_checksum());
        let short_l4 = FrameBuilder::tcp().l4_len(10).unpadded().build();
        assert_eq!(short_l4.len(), 14 + 20 + 10);
        assert_eq!(
            Ipv4Packet::new_checked(&short_l4[14..])
                .unwrap()
                .payload()
                .len(),
            10
        );
    }

    #[test]
    fn diff_names_fields() {
        let a = FrameBuilder::tcp().syn().build();
        let b = FrameBuilder::tcp()
            .syn()
            .eth_dst(backend_mac(1))
            .dst("192.0.2.11:80")
            .build();
        let diff = diff(&a, &b).unwrap();
        assert!(diff.contains("eth.dst [0..6]"), "{diff}");
        assert!(diff.contains("ipv4.dst [30..34]"), "{diff}");
        assert!(diff.contains("tcp.checksum"), "{diff}");
        assert!(!diff.contains("eth.src"), "{diff}");
        assert!(super::diff(&a, &a).is_none());
    }
}
