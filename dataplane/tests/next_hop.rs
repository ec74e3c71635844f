//! Next hops from the routing view (issue 14) through `Pipeline::process`: NAT replies to the
//! client's last hop or to the route's next hop, TUN packets to the route's next hop toward the
//! real server, a neighbour's MAC change followed by established flows, and every drop reason a
//! lookup can end in. Frames are built with `testing::FrameBuilder`; the Ethernet destination
//! of what leaves is the fact under test (the rest of the rewrite is `nat_tun_pipeline.rs`'s).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::conntrack::{ConnNextHop, ConnState, FlowKey};
use dataplane::fib::{FibBuilder, Neighbour, NeighbourId, Neighbours, NextHop, Route};
use dataplane::sync::{ConnectionRecord, SyncQueues, SyncRecord};
use dataplane::testing::{
    self, backend, backend_mac, service, FrameBuilder, DIRECTOR_MAC, ROUTER_MAC, SERVER_SIDE_MAC,
};
use dataplane::wire::MacAddr;
use dataplane::{
    DropReason, Egress, Forwarding, NatReply, Pipeline, Protocol, Routing, ServiceTable, Verdict,
    WorkerCounters,
};
use scheduler::Algorithm;

const CLIENT_IF: u32 = 2;
const OTHER_IF: u32 = 9;
const NAT_VIP: &str = "192.0.2.60:80";
const NAT_RS: &str = "10.0.1.1:8080";
const TUN_VIP: &str = "192.0.2.70:80";
const TUN_ONLINK_VIP: &str = "192.0.2.71:80";

/// Neighbour slots of the fixture FIB.
const GATEWAY: NeighbourId = NeighbourId::new(0, 0);
const GATEWAY_2: NeighbourId = NeighbourId::new(1, 0);
const ONLINK_CLIENT: NeighbourId = NeighbourId::new(2, 0);
const ONLINK_SERVER: NeighbourId = NeighbourId::new(3, 0);
const UNRESOLVED: NeighbourId = NeighbourId::new(4, 0);
const OTHER_GATEWAY: NeighbourId = NeighbourId::new(5, 0);

fn mac(n: u8) -> MacAddr {
    [0x02, 0xaa, 0, 0, 0, n]
}

fn via(address: [u8; 4], neighbour: NeighbourId, ifindex: u32) -> NextHop {
    NextHop {
        address: IpAddr::V4(Ipv4Addr::from(address)),
        neighbour,
        ifindex,
        weight: 1,
    }
}

/// The fixture routes, on the client side (interface [`CLIENT_IF`]) unless said otherwise:
/// - 192.0.2.0/24 connected, with host routes to 192.0.2.100 (a client) and 192.0.2.50 (a TUN
///   real server); any other address on it has no neighbour yet;
/// - 198.51.100.0/24 and 10.0.0.0/24 via the gateway 192.0.2.254;
/// - 203.0.113.0/24 via two gateways (ECMP); 10.9.0.0/16 via a gateway out of another
///   interface; 100.68.0.0/16 via an unresolved neighbour;
/// - 100.64/16 blackhole, 100.65/16 unreachable, 100.66/16 prohibit; nothing else.
fn routing(neighbours: &Arc<Neighbours>, gateway: NeighbourId, nat_reply: NatReply) -> Routing {
    let mut fib = FibBuilder::new();
    let mut add = |prefix: [u8; 4], len: u32, route: Route| {
        let id = fib.add_route(&route).unwrap();
        fib.add_v4(Ipv4Addr::from(prefix), len, id).unwrap();
    };
    add([192, 0, 2, 0], 24, Route::OnLink);
    let client = via([192, 0, 2, 100], ONLINK_CLIENT, CLIENT_IF);
    add([192, 0, 2, 100], 32, Route::Forward(vec![client]));
    let server = via([192, 0, 2, 50], ONLINK_SERVER, CLIENT_IF);
    add([192, 0, 2, 50], 32, Route::Forward(vec![server]));
    let gateway = via([192, 0, 2, 254], gateway, CLIENT_IF);
    add([198, 51, 100, 0], 24, Route::Forward(vec![gateway]));
    add([10, 0, 0, 0], 24, Route::Forward(vec![gateway]));
    let second = via([192, 0, 2, 253], GATEWAY_2, CLIENT_IF);
    add([203, 0, 113, 0], 24, Route::Forward(vec![gateway, second]));
    let other = via([10, 9, 255, 254], OTHER_GATEWAY, OTHER_IF);
    add([10, 9, 0, 0], 16, Route::Forward(vec![other]));
    let unresolved = via([100, 68, 0, 1], UNRESOLVED, CLIENT_IF);
    add([100, 68, 0, 0], 16, Route::Forward(vec![unresolved]));
    add([100, 64, 0, 0], 16, Route::Blackhole);
    add([100, 65, 0, 0], 16, Route::Unreachable);
    add([100, 66, 0, 0], 16, Route::Prohibit);
    Routing {
        fib: Arc::new(fib.build()),
        neighbours: Arc::clone(neighbours),
        client_ifindex: CLIENT_IF,
        nat_reply,
        epoch: 0,
    }
}

/// The neighbour array: every fixture neighbour resolved to `mac(slot + 1)` but
/// [`UNRESOLVED`].
fn neighbours() -> Arc<Neighbours> {
    let neighbours = Neighbours::with_capacity(8);
    for id in [
        GATEWAY,
        GATEWAY_2,
        ONLINK_CLIENT,
        ONLINK_SERVER,
        OTHER_GATEWAY,
    ] {
        neighbours.publish(id, Neighbour::Resolved(mac(id.index() as u8 + 1)));
    }
    neighbours.publish(UNRESOLVED, Neighbour::Unresolved);
    Arc::new(neighbours)
}

/// NAT 192.0.2.60:80 -> 10.0.1.1:8080; TUN 192.0.2.70:80 -> 10.0.0.3 (routed) and
/// 192.0.2.71:80 -> 192.0.2.50 (on-link); TUN real servers without a MAC of their own.
fn table(generation: u64, routing: Option<Routing>) -> ServiceTable {
    let tun = |vip, rs, slot| {
        testing::with_forwarding(
            service(
                vip,
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![backend(rs, None, 1, slot)],
            ),
            Forwarding::Tunnel,
        )
    };
    let nat = testing::with_forwarding(
        service(
            NAT_VIP,
            Protocol::Tcp,
            Algorithm::Maglev,
            vec![testing::with_port(
                backend("10.0.1.1", Some(backend_mac(1)), 1, 0),
                8080,
            )],
        ),
        Forwarding::Nat,
    );
    let table = testing::table(
        generation,
        vec![
            nat,
            tun(TUN_VIP, "10.0.0.3", 1),
            tun(TUN_ONLINK_VIP, "192.0.2.50", 2),
        ],
        testing::counter_blocks(1, 4),
    )
    .with_interfaces(testing::interfaces(1500));
    match routing {
        Some(routing) => table.with_routing(routing),
        None => table,
    }
}

fn request(client: &str, vip: &str, from: MacAddr) -> Vec<u8> {
    FrameBuilder::tcp()
        .src(client)
        .dst(vip)
        .syn()
        .eth_src(from)
        .eth_dst(DIRECTOR_MAC)
        .build()
}

fn reply(client: &str) -> Vec<u8> {
    FrameBuilder::tcp()
        .src(NAT_RS)
        .dst(client)
        .ack()
        .eth_src(backend_mac(1))
        .eth_dst(SERVER_SIDE_MAC)
        .build()
}

struct Rig {
    pipeline: Pipeline,
    counters: WorkerCounters,
    now: Instant,
}

impl Rig {
    fn new() -> Self {
        Rig {
            pipeline: Pipeline::new(0, DIRECTOR_MAC, 256),
            counters: WorkerCounters::default(),
            now: Instant::now(),
        }
    }

    fn run(&mut self, frame: &[u8], table: &ServiceTable) -> (Verdict, Vec<u8>) {
        testing::run(&mut self.pipeline, frame, table, self.now, &self.counters)
    }

    /// The Ethernet destination `frame` leaves with (it must leave by `egress`).
    #[track_caller]
    fn sent_to(&mut self, frame: &[u8], table: &ServiceTable, egress: Egress) -> MacAddr {
        let (verdict, out) = self.run(frame, table);
        match verdict {
            Verdict::Tx { egress: sent, .. } => assert_eq!(sent, egress),
            Verdict::Drop(reason) => panic!("dropped as {reason:?}"),
        }
        out[0..6].try_into().unwrap()
    }

    #[track_caller]
    fn dropped(&mut self, frame: &[u8], table: &ServiceTable) -> DropReason {
        match self.run(frame, table).0 {
            Verdict::Drop(reason) => reason,
            verdict @ Verdict::Tx { .. } => panic!("sent: {verdict:?}"),
        }
    }
}

fn nat_key(client: &str) -> FlowKey {
    let client: std::net::SocketAddrV4 = client.parse().unwrap();
    FlowKey {
        src_addr: IpAddr::V4(*client.ip()).into(),
        dst_addr: Ipv4Addr::new(192, 0, 2, 60).into(),
        src_port: client.port(),
        dst_port: 80,
        protocol: Protocol::Tcp,
    }
}

#[test]
fn without_routing_nat_replies_go_to_the_client_side_gateway() {
    let table = table(1, None);
    let mut rig = Rig::new();
    let client = "198.51.100.7:40000";
    rig.sent_to(&request(client, NAT_VIP, mac(0x41)), &table, Egress::Peer);
    assert_eq!(
        rig.sent_to(&reply(client), &table, Egress::Peer),
        ROUTER_MAC
    );
}

#[test]
fn nat_replies_go_to_the_mac_each_clients_requests_came_from() {
    let table = table(1, Some(routing(&neighbours(), GATEWAY, NatReply::LastHop)));
    let mut rig = Rig::new();
    // Two clients behind two routers; one on-link client; none needs a route in this mode.
    let clients = [
        ("198.51.100.7:40000", mac(0x41)),
        ("203.0.113.9:40001", mac(0x42)),
        ("192.0.2.100:40002", mac(0x43)),
        ("233.252.0.1:40003", mac(0x44)),
    ];
    for (client, from) in clients {
        rig.sent_to(&request(client, NAT_VIP, from), &table, Egress::Peer);
    }
    for (client, from) in clients {
        assert_eq!(rig.sent_to(&reply(client), &table, Egress::Peer), from);
    }
    // A later client frame from another router moves the flow's replies to it.
    let (client, _) = clients[0];
    rig.sent_to(&request(client, NAT_VIP, mac(0x51)), &table, Egress::Peer);
    assert_eq!(rig.sent_to(&reply(client), &table, Egress::Peer), mac(0x51));
}

#[test]
fn nat_route_mode_replies_go_to_the_routes_next_hop() {
    let table = table(1, Some(routing(&neighbours(), GATEWAY, NatReply::Route)));
    let mut rig = Rig::new();
    let cases = [
        // On-link client: its own MAC, not the gateway's.
        ("192.0.2.100:40000", mac(ONLINK_CLIENT.index() as u8 + 1)),
        // Behind a gateway route (no default route anywhere).
        ("198.51.100.7:40001", mac(GATEWAY.index() as u8 + 1)),
    ];
    for (client, next_hop) in cases {
        rig.sent_to(&request(client, NAT_VIP, mac(0x41)), &table, Egress::Peer);
        assert_eq!(rig.sent_to(&reply(client), &table, Egress::Peer), next_hop);
    }
}

#[test]
fn ecmp_next_hops_are_stable_per_flow_and_spread_over_flows() {
    let neighbours = neighbours();
    let table = table(1, Some(routing(&neighbours, GATEWAY, NatReply::Route)));
    let mut rig = Rig::new();
    let gateways = [
        mac(GATEWAY.index() as u8 + 1),
        mac(GATEWAY_2.index() as u8 + 1),
    ];
    let mut used = [0usize; 2];
    for port in 0..64u16 {
        let client = format!("203.0.113.9:{}", 41000 + port);
        rig.sent_to(&request(&client, NAT_VIP, mac(0x41)), &table, Egress::Peer);
        let first = rig.sent_to(&reply(&client), &table, Egress::Peer);
        for _ in 0..3 {
            assert_eq!(rig.sent_to(&reply(&client), &table, Egress::Peer), first);
        }
        used[gateways.iter().position(|&g| g == first).unwrap()] += 1;
    }
    assert!(
        used[0] > 0 && used[1] > 0,
        "one gateway took every flow: {used:?}"
    );

    // TUN through the same ECMP route: the outer destination is stable per flow too.
    let table = self::table(2, Some(routing(&neighbours, GATEWAY, NatReply::Route)));
    let mut fib = FibBuilder::new();
    let group = fib
        .add_route(&Route::Forward(vec![
            via([192, 0, 2, 254], GATEWAY, CLIENT_IF),
            via([192, 0, 2, 253], GATEWAY_2, CLIENT_IF),
        ]))
        .unwrap();
    fib.add_v4(Ipv4Addr::new(10, 0, 0, 0), 24, group).unwrap();
    let ecmp = table.with_routing(Routing {
        fib: Arc::new(fib.build()),
        neighbours: Arc::clone(&neighbours),
        client_ifindex: CLIENT_IF,
        nat_reply: NatReply::LastHop,
        epoch: 0,
    });
    let mut used = [0usize; 2];
    for port in 0..64u16 {
        let client = format!("198.51.100.7:{}", 42000 + port);
        let frame = request(&client, TUN_VIP, ROUTER_MAC);
        let first = rig.sent_to(&frame, &ecmp, Egress::Ingress);
        assert_eq!(rig.sent_to(&frame, &ecmp, Egress::Ingress), first);
        used[gateways.iter().position(|&g| g == first).unwrap()] += 1;
    }
    assert!(
        used[0] > 0 && used[1] > 0,
        "one gateway took every flow: {used:?}"
    );
}

#[test]
fn a_neighbours_new_mac_reaches_established_flows_without_touching_them() {
    let neighbours = neighbours();
    let table = table(1, Some(routing(&neighbours, GATEWAY, NatReply::Route)));
    let mut rig = Rig::new();
    let client = "198.51.100.7:40000";
    rig.sent_to(&request(client, NAT_VIP, mac(0x41)), &table, Egress::Peer);
    rig.sent_to(&reply(client), &table, Egress::Peer);
    let entry = *rig.pipeline.connections().get(&nat_key(client)).unwrap();
    assert_eq!(
        entry.next_hop,
        ConnNextHop::Neighbour {
            id: GATEWAY,
            epoch: 0
        }
    );

    neighbours.publish(GATEWAY, Neighbour::Resolved(mac(0x77)));
    assert_eq!(rig.sent_to(&reply(client), &table, Egress::Peer), mac(0x77));
    assert_eq!(
        rig.pipeline
            .connections()
            .get(&nat_key(client))
            .unwrap()
            .next_hop,
        entry.next_hop
    );

    // Unresolved or failed: dropped and counted until it resolves again.
    for state in [Neighbour::Unresolved, Neighbour::Failed] {
        neighbours.publish(GATEWAY, state);
        assert_eq!(
            rig.dropped(&reply(client), &table),
            DropReason::NeighbourUnresolved
        );
    }

    // The slot released and the route now via another neighbour: the flow looks it up again.
    neighbours.publish(GATEWAY, Neighbour::Gone);
    let rerouted = self::table(2, Some(routing(&neighbours, GATEWAY_2, NatReply::Route)));
    assert_eq!(
        rig.sent_to(&reply(client), &rerouted, Egress::Peer),
        mac(GATEWAY_2.index() as u8 + 1)
    );
    assert_eq!(
        rig.pipeline
            .connections()
            .get(&nat_key(client))
            .unwrap()
            .next_hop,
        ConnNextHop::Neighbour {
            id: GATEWAY_2,
            epoch: 0
        }
    );
    assert_eq!(rig.counters.drops(DropReason::NeighbourUnresolved), 2);
}

#[test]
fn entries_without_a_next_hop_look_it_up_on_their_first_reply() {
    // As an entry imported by state sync has: made here while the table had no routing.
    let neighbours = neighbours();
    let mut rig = Rig::new();
    let client = "198.51.100.7:40000";
    rig.sent_to(
        &request(client, NAT_VIP, mac(0x41)),
        &table(1, None),
        Egress::Peer,
    );
    assert_eq!(
        rig.pipeline
            .connections()
            .get(&nat_key(client))
            .unwrap()
            .next_hop,
        ConnNextHop::Unknown
    );
    // Even in last hop mode, until the client's next frame says where it is.
    let routed = table(2, Some(routing(&neighbours, GATEWAY, NatReply::LastHop)));
    let gateway = mac(GATEWAY.index() as u8 + 1);
    assert_eq!(rig.sent_to(&reply(client), &routed, Egress::Peer), gateway);
    rig.sent_to(&request(client, NAT_VIP, mac(0x41)), &routed, Egress::Peer);
    assert_eq!(
        rig.sent_to(&reply(client), &routed, Egress::Peer),
        mac(0x41)
    );
}

#[test]
fn next_hop_cases_cover_the_route_drop_reasons() {
    let table = table(1, Some(routing(&neighbours(), GATEWAY, NatReply::Route)));
    let mut rig = Rig::new();
    let cases = [
        ("233.252.0.1:40000", DropReason::NoRoute),
        ("100.64.0.1:40000", DropReason::RouteBlackhole),
        ("100.65.0.1:40000", DropReason::RouteUnreachable),
        ("100.66.0.1:40000", DropReason::RouteProhibit),
        ("10.9.0.1:40000", DropReason::RouteNotServed),
        ("100.68.0.1:40000", DropReason::NeighbourUnresolved),
    ];
    for (client, reason) in cases {
        // The request is forwarded (the reply counts what is missing), the reply dropped.
        rig.sent_to(&request(client, NAT_VIP, mac(0x41)), &table, Egress::Peer);
        assert_eq!(rig.dropped(&reply(client), &table), reason, "{client}");
        assert_eq!(rig.counters.drops(reason), 1, "{reason:?}");
    }
    // TUN toward a real server the routes refuse: the client's frame is dropped.
    let mut fib = FibBuilder::new();
    let blackhole = fib.add_route(&Route::Blackhole).unwrap();
    fib.add_v4(Ipv4Addr::new(10, 0, 0, 0), 8, blackhole)
        .unwrap();
    let refused = self::table(2, None).with_routing(Routing {
        fib: Arc::new(fib.build()),
        neighbours: neighbours(),
        client_ifindex: CLIENT_IF,
        nat_reply: NatReply::LastHop,
        epoch: 0,
    });
    let frame = request("198.51.100.7:40000", TUN_VIP, ROUTER_MAC);
    assert_eq!(rig.dropped(&frame, &refused), DropReason::RouteBlackhole);
    // TUN toward a real server on a connected prefix that has no host route (control pins
    // the on-link real servers it serves; this one it did not).
    let mut fib = FibBuilder::new();
    let on_link = fib.add_route(&Route::OnLink).unwrap();
    fib.add_v4(Ipv4Addr::new(10, 0, 0, 0), 8, on_link).unwrap();
    let unpinned = self::table(3, None).with_routing(Routing {
        fib: Arc::new(fib.build()),
        neighbours: neighbours(),
        client_ifindex: CLIENT_IF,
        nat_reply: NatReply::Route,
        epoch: 0,
    });
    let frame = request("198.51.100.8:40000", TUN_VIP, ROUTER_MAC);
    assert_eq!(
        rig.dropped(&frame, &unpinned),
        DropReason::RouteOnlinkUnresolved
    );
}

#[test]
fn nat_route_mode_an_on_link_client_without_a_host_route_is_its_own_next_hop() {
    // 192.0.2.77 is on the connected 192.0.2.0/24 with no host route (no neighbour slot): its
    // frames come from its own MAC, and the replies go back to it rather than being dropped.
    let table = table(1, Some(routing(&neighbours(), GATEWAY, NatReply::Route)));
    let mut rig = Rig::new();
    let own_mac = mac(0x77);
    rig.sent_to(
        &request("192.0.2.77:40000", NAT_VIP, own_mac),
        &table,
        Egress::Peer,
    );
    assert_eq!(
        rig.sent_to(&reply("192.0.2.77:40000"), &table, Egress::Peer),
        own_mac
    );
    // A client behind a gateway still goes by the route, whatever MAC its frames came from.
    rig.sent_to(
        &request("198.51.100.9:40000", NAT_VIP, own_mac),
        &table,
        Egress::Peer,
    );
    assert_eq!(
        rig.sent_to(&reply("198.51.100.9:40000"), &table, Egress::Peer),
        mac(GATEWAY.index() as u8 + 1)
    );
}

#[test]
fn tun_outer_destination_is_the_routes_next_hop() {
    let table = table(1, Some(routing(&neighbours(), GATEWAY, NatReply::LastHop)));
    let mut rig = Rig::new();
    let client = "198.51.100.7:40000";
    // A real server behind the gateway: the gateway's MAC.
    let routed = rig.sent_to(
        &request(client, TUN_VIP, ROUTER_MAC),
        &table,
        Egress::Ingress,
    );
    assert_eq!(routed, mac(GATEWAY.index() as u8 + 1));
    // An on-link one (connected /24 plus its host route): its own.
    let frame = request(client, TUN_ONLINK_VIP, ROUTER_MAC);
    let onlink = rig.sent_to(&frame, &table, Egress::Ingress);
    assert_eq!(onlink, mac(ONLINK_SERVER.index() as u8 + 1));
    // Established frames read the remembered neighbour.
    assert_eq!(rig.sent_to(&frame, &table, Egress::Ingress), onlink);
    // Without routing, a TUN real server without a MAC is unresolved, as before.
    assert_eq!(
        rig.dropped(&frame, &self::table(2, None)),
        DropReason::NeighbourUnresolved
    );
}

#[test]
fn imported_entries_find_their_next_hop_on_their_first_frame() {
    // Another director's NAT and TUN flows, imported by state sync: no next hop comes with them.
    let neighbours = neighbours();
    let table = table(1, Some(routing(&neighbours, GATEWAY, NatReply::Route)));
    let queues = SyncQueues::new(1, 16);
    let mut rig = Rig::new();
    rig.pipeline = Pipeline::new(0, DIRECTOR_MAC, 256).with_sync(queues.worker(
        0,
        false,
        true,
        Duration::from_secs(1),
    ));
    let nat_client = "198.51.100.7:40000";
    let tun_client = "198.51.100.8:40000";
    let mut tun_key = nat_key(tun_client);
    tun_key.dst_addr = Ipv4Addr::new(192, 0, 2, 70).into();
    for (key, backend, forwarding) in [
        (nat_key(nat_client), NAT_RS, Forwarding::Nat),
        (tun_key, "10.0.0.3:80", Forwarding::Tunnel),
    ] {
        let record = SyncRecord::Connection(ConnectionRecord {
            key,
            backend: backend.parse().unwrap(),
            forwarding,
            state: ConnState::TcpEstablished,
        });
        assert!(queues.imports()[0].push(record).is_ok());
    }
    rig.pipeline.drain_imports(&table, rig.now, &rig.counters);
    for key in [nat_key(nat_client), tun_key] {
        let entry = rig.pipeline.connections().get(&key).unwrap();
        assert_eq!(entry.next_hop, ConnNextHop::Unknown, "{key:?}");
    }

    let gateway = mac(GATEWAY.index() as u8 + 1);
    assert_eq!(
        rig.sent_to(&reply(nat_client), &table, Egress::Peer),
        gateway
    );
    let frame = FrameBuilder::tcp()
        .src(tun_client)
        .dst(TUN_VIP)
        .ack()
        .eth_src(ROUTER_MAC)
        .eth_dst(DIRECTOR_MAC)
        .build();
    assert_eq!(rig.sent_to(&frame, &table, Egress::Ingress), gateway);
    for key in [nat_key(nat_client), tun_key] {
        let entry = rig.pipeline.connections().get(&key).unwrap();
        assert_eq!(
            entry.next_hop,
            ConnNextHop::Neighbour {
                id: GATEWAY,
                epoch: 0
            },
            "{key:?}"
        );
    }
}

#[test]
fn a_configured_tun_server_mac_overrides_the_route() {
    // Control puts a TUN real server's MAC in the table only when the configuration names one
    // (`mac = ...`): the outer frame goes there, whatever the route says.
    let configured = backend_mac(9);
    let service = testing::with_forwarding(
        service(
            TUN_VIP,
            Protocol::Tcp,
            Algorithm::Maglev,
            vec![backend("10.0.0.3", Some(configured), 1, 0)],
        ),
        Forwarding::Tunnel,
    );
    let table = testing::table(1, vec![service], testing::counter_blocks(1, 1))
        .with_interfaces(testing::interfaces(1500))
        .with_routing(routing(&neighbours(), GATEWAY, NatReply::LastHop));
    let mut rig = Rig::new();
    let frame = request("198.51.100.7:40000", TUN_VIP, ROUTER_MAC);
    assert_eq!(rig.sent_to(&frame, &table, Egress::Ingress), configured);
}

#[test]
fn a_route_change_moves_established_flows_in_the_next_snapshot() {
    // 10.0.0.0/24 (the TUN real server 10.0.0.3) moves from GATEWAY to GATEWAY_2 while GATEWAY
    // stays resolved (it still serves other routes): the flow follows once the snapshot's epoch
    // says its remembered next hop is from an older one.
    let neighbours = neighbours();
    let before = routing(&neighbours, GATEWAY, NatReply::LastHop);
    let moved = |epoch| {
        let mut fib = FibBuilder::new();
        let second = fib
            .add_route(&Route::Forward(vec![via(
                [192, 0, 2, 253],
                GATEWAY_2,
                CLIENT_IF,
            )]))
            .unwrap();
        fib.add_v4(Ipv4Addr::new(10, 0, 0, 0), 24, second).unwrap();
        Routing {
            fib: Arc::new(fib.build()),
            neighbours: Arc::clone(&neighbours),
            client_ifindex: CLIENT_IF,
            nat_reply: NatReply::LastHop,
            epoch,
        }
    };
    let mut rig = Rig::new();
    let frame = request("198.51.100.7:40000", TUN_VIP, ROUTER_MAC);
    let first = table(1, Some(before));
    assert_eq!(
        rig.sent_to(&frame, &first, Egress::Ingress),
        mac(GATEWAY.index() as u8 + 1)
    );
    // The same snapshot epoch: the entry's next hop stands (a MAC change would still apply).
    assert_eq!(
        rig.sent_to(&frame, &table(1, Some(moved(0))), Egress::Ingress),
        mac(GATEWAY.index() as u8 + 1)
    );
    // A newer snapshot: looked up again, and kept.
    let newer = table(1, Some(moved(1)));
    for _ in 0..2 {
        assert_eq!(
            rig.sent_to(&frame, &newer, Egress::Ingress),
            mac(GATEWAY_2.index() as u8 + 1)
        );
    }
}

/// A slot of the neighbour array is family-free: an IPv4 route may leave through an IPv6
/// gateway (RFC 5549, `ip route add ... via inet6 fe80::1`), an IPv6 route may share that
/// gateway's slot, and IPv6 prefixes in the same snapshot leave IPv4 forwarding alone.
#[test]
fn an_ipv4_route_through_an_ipv6_gateway_shares_its_slot_with_ipv6_routes() {
    let neighbours = neighbours();
    let link_local = |last: u16| NextHop {
        address: IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last)),
        neighbour: if last == 1 { GATEWAY_2 } else { OTHER_GATEWAY },
        ifindex: CLIENT_IF,
        weight: 1,
    };
    let mut fib = FibBuilder::new();
    let through_v6 = fib.add_route(&Route::Forward(vec![link_local(1)])).unwrap();
    let other = fib.add_route(&Route::Forward(vec![link_local(2)])).unwrap();
    // The TUN real server's IPv4 prefix and an IPv6 prefix, both through fe80::1.
    fib.add_v4(Ipv4Addr::new(10, 0, 0, 0), 24, through_v6)
        .unwrap();
    fib.add_v6("2001:db8:10::".parse().unwrap(), 48, through_v6)
        .unwrap();
    // An IPv6 prefix whose bits would cover 10.0.0.3 were the families mixed up.
    fib.add_v6("::".parse().unwrap(), 64, other).unwrap();
    let fib = Arc::new(fib.build());
    let v6_hop = fib.lookup_v6("2001:db8:10::3".parse().unwrap(), 7).unwrap();
    assert_eq!(v6_hop.neighbour, GATEWAY_2);
    assert_eq!(
        fib.lookup(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)), 7),
        Ok(v6_hop)
    );

    let table = table(1, None).with_routing(Routing {
        fib,
        neighbours: Arc::clone(&neighbours),
        client_ifindex: CLIENT_IF,
        nat_reply: NatReply::LastHop,
        epoch: 0,
    });
    let mut rig = Rig::new();
    let frame = request("198.51.100.7:42000", TUN_VIP, ROUTER_MAC);
    assert_eq!(
        rig.sent_to(&frame, &table, Egress::Ingress),
        mac(GATEWAY_2.index() as u8 + 1)
    );
    // The IPv6 router's new MAC reaches the IPv4 flow through the shared slot.
    neighbours.publish(GATEWAY_2, Neighbour::Resolved(mac(0x66)));
    assert_eq!(rig.sent_to(&frame, &table, Egress::Ingress), mac(0x66));
}
