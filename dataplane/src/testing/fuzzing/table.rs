//! The table the `frame_pipeline` harness runs frames against: a service of every forwarding
//! mode and family, plainly or with next hops from a FIB. Test support: allocates, panics on a
//! bad fixture.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use scheduler::Algorithm;

use super::super::{
    backend, backend_mac, counter_blocks, service, service_with_ports, with_forwarding,
    with_persistence, with_port,
};
use super::SLOTS;
use crate::fib::{FibBuilder, Neighbour, NeighbourId, Neighbours, NextHop, Route};
use crate::service::{Forwarding, NatReply, Protocol, Routing, Service, ServiceTable};
use crate::PersistenceTable;

/// A table with a service of every forwarding mode and family: DR (resolved, unresolved,
/// persistent service group, a drained server), NAT with and without port mapping, TUN 4in4,
/// 4in6 and 6in6, IPv4 and IPv6, on interfaces of MTU 576 so that TUN meets frames too big.
#[expect(
    clippy::too_many_lines,
    reason = "a list of fixture services, one entry per forwarding mode and family"
)]
pub fn fuzzing_table() -> ServiceTable {
    let tcp = Protocol::Tcp;
    let udp = Protocol::Udp;
    let services: Vec<Service> = vec![
        service(
            "192.0.2.10:80",
            tcp,
            Algorithm::Maglev,
            vec![
                backend("198.51.100.1", Some(backend_mac(1)), 1, 0),
                backend("198.51.100.2", Some(backend_mac(2)), 1, 1),
            ],
        ),
        service(
            "192.0.2.53:53",
            udp,
            Algorithm::RoundRobin,
            vec![backend("198.51.100.3", Some(backend_mac(3)), 1, 2)],
        ),
        service(
            "192.0.2.20:80",
            tcp,
            Algorithm::RoundRobin,
            vec![backend("198.51.100.4", None, 1, 3)],
        ),
        with_persistence(
            service_with_ports(
                "192.0.2.40",
                &[80, 443],
                tcp,
                Algorithm::Maglev,
                vec![
                    backend("198.51.100.5", Some(backend_mac(5)), 1, 4),
                    backend("198.51.100.6", Some(backend_mac(6)), 0, 5),
                    backend("198.51.100.7", None, 1, 6),
                ],
            ),
            300,
            "255.255.255.0",
            1,
        ),
        with_forwarding(
            service(
                "192.0.2.60:80",
                tcp,
                Algorithm::Maglev,
                vec![
                    with_port(backend("198.51.100.21", Some(backend_mac(8)), 1, 7), 8080),
                    backend("198.51.100.22", Some(backend_mac(9)), 1, 8),
                ],
            ),
            Forwarding::Nat,
        ),
        with_forwarding(
            service(
                "192.0.2.60:53",
                udp,
                Algorithm::RoundRobin,
                vec![with_port(
                    backend("198.51.100.23", Some(backend_mac(10)), 1, 9),
                    5353,
                )],
            ),
            Forwarding::Nat,
        ),
        with_persistence(
            with_forwarding(
                service(
                    "192.0.2.70:80",
                    tcp,
                    Algorithm::Maglev,
                    vec![
                        backend("198.51.100.31", Some(backend_mac(11)), 1, 10),
                        backend("198.51.100.32", None, 1, 11),
                    ],
                ),
                Forwarding::Tunnel,
            ),
            300,
            "255.255.255.255",
            2,
        ),
        with_forwarding(
            service(
                "192.0.2.71:80",
                tcp,
                Algorithm::Maglev,
                vec![backend("2001:db8:0:a::3", Some(backend_mac(16)), 1, 16)],
            ),
            Forwarding::Tunnel,
        ),
        service(
            "[2001:db8::10]:80",
            tcp,
            Algorithm::Maglev,
            vec![
                backend("2001:db8::11", Some(backend_mac(12)), 1, 12),
                backend("2001:db8::12", None, 1, 13),
            ],
        ),
        with_forwarding(
            service(
                "[2001:db8::60]:80",
                tcp,
                Algorithm::Maglev,
                vec![with_port(
                    backend("2001:db8:a::1", Some(backend_mac(14)), 1, 14),
                    8080,
                )],
            ),
            Forwarding::Nat,
        ),
        with_forwarding(
            service(
                "[2001:db8::60]:53",
                udp,
                Algorithm::RoundRobin,
                vec![backend("2001:db8:a::2", Some(backend_mac(15)), 1, 15)],
            ),
            Forwarding::Nat,
        ),
        with_forwarding(
            service(
                "[2001:db8::70]:80",
                tcp,
                Algorithm::Maglev,
                vec![
                    backend("2001:db8:0:a::4", Some(backend_mac(17)), 1, 17),
                    backend("2001:db8:0:a::5", None, 1, 18),
                ],
            ),
            Forwarding::Tunnel,
        ),
        with_forwarding(
            service(
                "[2001:db8::70]:53",
                udp,
                Algorithm::RoundRobin,
                vec![backend("2001:db8:0:a::4", Some(backend_mac(17)), 1, 19)],
            ),
            Forwarding::Tunnel,
        ),
    ];
    super::super::table(1, services, counter_blocks(1, SLOTS))
        .with_persistence(Arc::new(PersistenceTable::new(8)))
        .with_interfaces(super::super::interfaces(576))
}

/// `table` with next hops from a FIB: default routes (IPv4 and IPv6) through two gateways, one
/// unresolved; a blackhole over half the IPv4 real servers; a route out of another interface.
pub(super) fn routed(table: ServiceTable, nat_reply: NatReply) -> ServiceTable {
    let neighbours = Neighbours::with_capacity(2);
    neighbours.publish(
        NeighbourId::new(0, 0),
        Neighbour::Resolved([2, 0xaa, 0, 0, 0, 1]),
    );
    neighbours.publish(NeighbourId::new(1, 0), Neighbour::Unresolved);
    let via = |slot: u32, ifindex| NextHop {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 250 + slot as u8)),
        neighbour: NeighbourId::new(slot, 0),
        ifindex,
        weight: 1,
    };
    let mut fib = FibBuilder::new();
    let default = fib
        .add_route(&Route::Forward(vec![via(0, 1), via(1, 1)]))
        .expect("a fixture route");
    let blackhole = fib.add_route(&Route::Blackhole).expect("a fixture route");
    let elsewhere = fib
        .add_route(&Route::Forward(vec![via(0, 7)]))
        .expect("a fixture route");
    let prefixes = [
        fib.add_v4(Ipv4Addr::UNSPECIFIED, 0, default),
        fib.add_v4(Ipv4Addr::new(198, 51, 100, 0), 27, blackhole),
        fib.add_v4(Ipv4Addr::new(203, 0, 113, 0), 25, elsewhere),
        fib.add_v6(Ipv6Addr::UNSPECIFIED, 0, default),
        fib.add_v6(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0xa, 0, 0, 0, 4),
            127,
            blackhole,
        ),
    ];
    for prefix in prefixes {
        prefix.expect("a fixture prefix");
    }
    table.with_routing(Routing {
        fib: Arc::new(fib.build()),
        neighbours: Arc::new(neighbours),
        client_ifindex: 1,
        nat_reply,
        epoch: 0,
    })
}
