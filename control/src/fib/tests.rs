//! Parsing crafted netlink bytes and building snapshots from them.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane::fib::{NeighbourSlots, NoRoute, NoRouteKind};

use super::build::build;
use super::model::Model;
use super::parse::{parse, Change, Event, NexthopObject, Parsed, Path, RouteAction};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_NEWNEXTHOP: u16 = 104;
const SERVED: u32 = 2;
const UNSERVED: u32 = 3;

fn attribute(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&u16::try_from(4 + data.len()).unwrap().to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(data);
    bytes.resize((bytes.len() + 3) & !3, 0);
    bytes
}

/// `rtmsg` for a main-table IPv4 route of type `kind`, then `attributes`.
fn route(prefix_len: u8, kind: u8, attributes: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = vec![2, prefix_len, 0, 0, 254, 3, 0, kind, 0, 0, 0, 0];
    for attribute in attributes {
        bytes.extend_from_slice(attribute);
    }
    bytes
}

fn destination(address: [u8; 4]) -> Vec<u8> {
    attribute(1, &address)
}

fn oif(ifindex: u32) -> Vec<u8> {
    attribute(4, &ifindex.to_ne_bytes())
}

fn gateway(address: [u8; 4]) -> Vec<u8> {
    attribute(5, &address)
}

/// One `rtnexthop` of an `RTA_MULTIPATH`.
fn leg(ifindex: u32, hops: u8, via: [u8; 4]) -> Vec<u8> {
    let gateway = gateway(via);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&u16::try_from(8 + gateway.len()).unwrap().to_ne_bytes());
    bytes.push(0);
    bytes.push(hops);
    bytes.extend_from_slice(&ifindex.to_ne_bytes());
    bytes.extend_from_slice(&gateway);
    bytes
}

fn nexthop(attributes: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = vec![2, 0, 3, 0, 0, 0, 0, 0];
    for attribute in attributes {
        bytes.extend_from_slice(attribute);
    }
    bytes
}

fn model_of(messages: &[(u16, Vec<u8>)]) -> Model {
    let mut model = Model::default();
    for (kind, payload) in messages {
        model.apply(
            parse(*kind, payload)
                .event()
                .expect("a message the mirror reads"),
        );
    }
    model
}

fn connected() -> (u16, Vec<u8>) {
    (
        RTM_NEWROUTE,
        route(24, 1, &[destination([192, 0, 2, 0]), oif(SERVED)]),
    )
}

fn served() -> HashSet<u32> {
    HashSet::from([SERVED])
}

#[test]
fn multipath_route_parses_every_leg_with_its_weight() {
    let mut multipath = leg(SERVED, 0, [192, 0, 2, 1]);
    multipath.extend(leg(SERVED, 2, [192, 0, 2, 2]));
    let payload = route(
        24,
        1,
        &[destination([203, 0, 113, 0]), attribute(9, &multipath)],
    );
    let Parsed::Event(Event::Route(Change::New, entry)) = parse(RTM_NEWROUTE, &payload) else {
        panic!("not a route");
    };
    assert_eq!(entry.destination, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)));
    assert_eq!(
        entry.action,
        RouteAction::Paths(vec![
            Path {
                gateway: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
                ifindex: SERVED,
                weight: 1
            },
            Path {
                gateway: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))),
                ifindex: SERVED,
                weight: 3
            },
        ])
    );

    let model = model_of(&[connected(), (RTM_NEWROUTE, payload)]);
    let mut slots = NeighbourSlots::new(16);
    let built = build(&model, &served(), &BTreeSet::new(), &mut slots);
    let chosen: HashSet<_> = (0..64u64)
        .map(|hash| {
            let next_hop = built
                .fib
                .lookup_v4(
                    Ipv4Addr::new(203, 0, 113, 7),
                    hash.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                )
                .unwrap();
            assert_eq!(next_hop.ifindex, SERVED);
            next_hop.neighbour
        })
        .collect();
    assert_eq!(chosen.len(), 2, "both legs carry flows");
    assert_eq!(built.referenced.len(), 2);
}

#[test]
fn nexthop_group_object_resolves_through_its_members() {
    let group_members: Vec<u8> = [(1u32, 0u8), (2, 0)]
        .iter()
        .flat_map(|&(id, weight)| {
            let mut member = id.to_ne_bytes().to_vec();
            member.extend_from_slice(&[weight, 0, 0, 0]);
            member
        })
        .collect();
    let messages = [
        connected(),
        (
            RTM_NEWNEXTHOP,
            nexthop(&[
                attribute(1, &1u32.to_ne_bytes()),
                attribute(5, &SERVED.to_ne_bytes()),
                attribute(6, &[192, 0, 2, 1]),
            ]),
        ),
        (
            RTM_NEWNEXTHOP,
            nexthop(&[
                attribute(1, &2u32.to_ne_bytes()),
                attribute(5, &SERVED.to_ne_bytes()),
                attribute(6, &[192, 0, 2, 2]),
            ]),
        ),
        (
            RTM_NEWNEXTHOP,
            nexthop(&[
                attribute(1, &10u32.to_ne_bytes()),
                attribute(2, &group_members),
            ]),
        ),
        (
            RTM_NEWROUTE,
            route(
                24,
                1,
                &[
                    destination([198, 51, 100, 0]),
                    attribute(30, &10u32.to_ne_bytes()),
                ],
            ),
        ),
    ];
    assert_eq!(
        parse(messages[3].0, &messages[3].1),
        Parsed::Event(Event::Nexthop(
            Change::New,
            10,
            NexthopObject::Group(vec![(1, 1), (2, 1)])
        ))
    );
    let model = model_of(&messages);
    let mut slots = NeighbourSlots::new(16);
    let built = build(&model, &served(), &BTreeSet::new(), &mut slots);
    let chosen: HashSet<_> = (0..64u64)
        .map(|hash| {
            built
                .fib
                .lookup_v4(
                    Ipv4Addr::new(198, 51, 100, 9),
                    hash.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                )
                .unwrap()
                .neighbour
        })
        .collect();
    assert_eq!(chosen.len(), 2);
    assert!(slots
        .get(SERVED, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)))
        .is_some());
}

#[test]
fn blackhole_and_unserved_routes_are_refused_and_counted() {
    let messages = [
        connected(),
        (RTM_NEWROUTE, route(24, 6, &[destination([203, 0, 113, 0])])),
        (
            RTM_NEWROUTE,
            route(
                24,
                1,
                &[
                    destination([198, 51, 100, 0]),
                    oif(UNSERVED),
                    gateway([10, 0, 0, 1]),
                ],
            ),
        ),
        (RTM_NEWROUTE, route(0, 7, &[])),
    ];
    let model = model_of(&messages);
    let mut slots = NeighbourSlots::new(16);
    let built = build(&model, &served(), &BTreeSet::new(), &mut slots);
    let kind = |address| match built.fib.lookup_v4(address, 0) {
        Err(NoRoute { kind }) => kind,
        Ok(next_hop) => panic!("{address} has a next hop {next_hop:?}"),
    };
    assert_eq!(kind(Ipv4Addr::new(203, 0, 113, 1)), NoRouteKind::Blackhole);
    assert_eq!(kind(Ipv4Addr::new(198, 51, 100, 1)), NoRouteKind::NotServed);
    assert_eq!(kind(Ipv4Addr::new(8, 8, 8, 8)), NoRouteKind::Unreachable);
    assert_eq!(
        kind(Ipv4Addr::new(192, 0, 2, 50)),
        NoRouteKind::OnLinkUnresolved
    );
    assert_eq!(built.counts.blackhole, 1);
    assert_eq!(built.counts.not_served, 1);
    assert_eq!(built.counts.unreachable, 1);
    assert!(slots.is_empty(), "an unserved gateway takes no slot");
}

#[test]
fn pinned_on_link_destination_gets_a_host_route_and_deletes_apply() {
    let mut model = model_of(&[connected()]);
    let pinned = BTreeSet::from([(SERVED, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)))]);
    let mut slots = NeighbourSlots::new(16);
    let built = build(&model, &served(), &pinned, &mut slots);
    let id = slots
        .get(SERVED, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)))
        .unwrap();
    assert_eq!(
        built
            .fib
            .lookup_v4(Ipv4Addr::new(192, 0, 2, 100), 0)
            .unwrap()
            .neighbour,
        id
    );

    let deleted = route(24, 1, &[destination([192, 0, 2, 0]), oif(SERVED)]);
    model.apply(parse(RTM_DELROUTE, &deleted).event().unwrap());
    let built = build(&model, &served(), &pinned, &mut slots);
    assert!(built
        .fib
        .lookup_v4(Ipv4Addr::new(192, 0, 2, 100), 0)
        .is_err());
    assert!(
        built
            .referenced
            .contains(&(SERVED, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)))),
        "a pinned destination keeps its slot without a route"
    );
}

#[test]
fn neighbour_parses_state_and_mac_and_other_tables_are_skipped() {
    let mut payload = vec![2, 0, 0, 0];
    payload.extend_from_slice(&SERVED.to_ne_bytes());
    payload.extend_from_slice(&0x04u16.to_ne_bytes());
    payload.extend_from_slice(&[0, 1]);
    payload.extend(attribute(1, &[192, 0, 2, 1]));
    payload.extend(attribute(2, &[2, 0, 0, 0, 0, 1]));
    let Parsed::Event(Event::Neighbour(Change::New, entry)) = parse(RTM_NEWNEIGH, &payload) else {
        panic!("not a neighbour");
    };
    assert_eq!(entry.state, 0x04);
    assert_eq!(entry.lladdr, Some([2, 0, 0, 0, 0, 1]));

    let mut local_table = route(32, 2, &[destination([192, 0, 2, 10]), oif(SERVED)]);
    local_table[4] = 255;
    assert_eq!(parse(RTM_NEWROUTE, &local_table), Parsed::Ignored);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut state = 0x1234_5678_u64;
    for length in 0..400 {
        let bytes: Vec<u8> = (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state & 0xff) as u8
            })
            .collect();
        for kind in [16, 17, 20, 21, 24, 25, 28, 29, 104, 105] {
            let _ = parse(kind, &bytes);
            // And as IPv4 and IPv6 messages, to reach past the family checks.
            for family in [2, 10] {
                let mut typed = bytes.clone();
                if let Some(first) = typed.first_mut() {
                    *first = family;
                }
                let _ = parse(kind, &typed);
            }
        }
    }
}

/// `rtmsg` for a main-table IPv6 route of type `kind`, then `attributes`.
fn route6(prefix_len: u8, kind: u8, attributes: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = route(prefix_len, kind, attributes);
    bytes[0] = 10;
    bytes
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

fn octets6(text: &str) -> [u8; 16] {
    v6(text).octets()
}

/// One IPv6 `rtnexthop` of an `RTA_MULTIPATH`.
fn leg6(ifindex: u32, hops: u8, via: &str) -> Vec<u8> {
    let gateway = attribute(5, &octets6(via));
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&u16::try_from(8 + gateway.len()).unwrap().to_ne_bytes());
    bytes.push(0);
    bytes.push(hops);
    bytes.extend_from_slice(&ifindex.to_ne_bytes());
    bytes.extend_from_slice(&gateway);
    bytes
}

fn ipv6_lab() -> Vec<(u16, Vec<u8>)> {
    let mut multipath = leg6(SERVED, 0, "2001:db8:1::2");
    multipath.extend(leg6(SERVED, 0, "2001:db8:1::3"));
    vec![
        // The connected /64 and the link-local noise every interface gets.
        (
            RTM_NEWROUTE,
            route6(
                64,
                1,
                &[
                    attribute(1, &octets6("2001:db8:1::")),
                    oif(SERVED),
                    attribute(6, &256u32.to_ne_bytes()),
                ],
            ),
        ),
        // Through a link-local gateway, as a router advertisement gives.
        (
            RTM_NEWROUTE,
            route6(
                48,
                1,
                &[
                    attribute(1, &octets6("2001:db8:2::")),
                    oif(SERVED),
                    attribute(5, &octets6("fe80::1")),
                ],
            ),
        ),
        (
            RTM_NEWROUTE,
            route6(
                48,
                1,
                &[
                    attribute(1, &octets6("2001:db8:3::")),
                    attribute(9, &multipath),
                ],
            ),
        ),
        (
            RTM_NEWROUTE,
            route6(48, 6, &[attribute(1, &octets6("2001:db8:4::"))]),
        ),
    ]
}

#[test]
fn ipv6_routes_parse_build_and_share_the_neighbour_slots() {
    let model = model_of(&ipv6_lab());
    let pinned = BTreeSet::from([(SERVED, IpAddr::V6(v6("2001:db8:1::50")))]);
    let mut slots = NeighbourSlots::new(16);
    let built = build(&model, &served(), &pinned, &mut slots);
    let fib = &built.fib;
    let slot = |address: &str| slots.get(SERVED, IpAddr::V6(v6(address))).unwrap();
    assert_eq!(
        fib.lookup_v6(v6("2001:db8:2::9"), 0).unwrap().neighbour,
        slot("fe80::1")
    );
    let legs: HashSet<_> = (0..64u64)
        .map(|hash| {
            fib.lookup_v6(
                v6("2001:db8:3::9"),
                hash.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            )
            .unwrap()
            .neighbour
        })
        .collect();
    assert_eq!(
        legs,
        HashSet::from([slot("2001:db8:1::2"), slot("2001:db8:1::3")])
    );
    let kind = |address: &str| fib.lookup_v6(v6(address), 0).err().map(|e| e.kind);
    assert_eq!(kind("2001:db8:4::1"), Some(NoRouteKind::Blackhole));
    assert_eq!(kind("2001:db8:1::77"), Some(NoRouteKind::OnLinkUnresolved));
    assert_eq!(kind("2001:db8:9::1"), Some(NoRouteKind::NoMatch));
    // On-link gateways and the pinned destination get /128 host routes; the link-local
    // gateway a slot but no host route (no fe80::/64 prefix is mirrored).
    assert_eq!(
        fib.lookup_v6(v6("2001:db8:1::50"), 0).unwrap().neighbour,
        slot("2001:db8:1::50")
    );
    assert_eq!(
        fib.lookup_v6(v6("2001:db8:1::2"), 0).unwrap().neighbour,
        slot("2001:db8:1::2")
    );
    assert_eq!(kind("fe80::1"), Some(NoRouteKind::NoMatch));
    assert_eq!(built.referenced.len(), 4);
    assert_eq!(built.counts.blackhole, 1);
    assert_eq!(fib.prefix_count_v4(), 0);
    assert_eq!(built.counts.prefixes_v6, fib.prefix_count_v6() as u64);
    assert_eq!(built.counts.prefixes, built.counts.prefixes_v6);
}

#[test]
fn ipv6_noise_is_ignored_and_truncations_are_unreadable() {
    let link_local = route6(64, 1, &[attribute(1, &octets6("fe80::")), oif(SERVED)]);
    assert_eq!(parse(RTM_NEWROUTE, &link_local), Parsed::Ignored);
    let multicast = route6(8, 1, &[attribute(1, &octets6("ff00::")), oif(SERVED)]);
    assert_eq!(parse(RTM_NEWROUTE, &multicast), Parsed::Ignored);
    let mut cloned = route6(
        128,
        1,
        &[attribute(1, &octets6("2001:db8::1")), oif(SERVED)],
    );
    cloned[8..12].copy_from_slice(&0x200u32.to_ne_bytes());
    assert_eq!(parse(RTM_NEWROUTE, &cloned), Parsed::Ignored);
    // A /129 or an IPv4-sized destination in an IPv6 route cannot be read.
    assert_eq!(
        parse(RTM_NEWROUTE, &route6(129, 1, &[])),
        Parsed::Unreadable
    );
    assert_eq!(
        parse(RTM_NEWROUTE, &route6(64, 1, &[destination([192, 0, 2, 0])])),
        Parsed::Unreadable
    );
    assert_eq!(parse(RTM_NEWROUTE, &[10, 64, 0]), Parsed::Unreadable);
    // A bridge's forwarding entry arrives as a neighbour of family AF_BRIDGE.
    let mut bridge = vec![7, 0, 0, 0];
    bridge.extend_from_slice(&SERVED.to_ne_bytes());
    bridge.extend_from_slice(&[0x80, 0, 0, 0]);
    assert_eq!(parse(RTM_NEWNEIGH, &bridge), Parsed::Ignored);
    assert_eq!(parse(99, &[]), Parsed::Ignored);
}

#[test]
fn ipv6_neighbour_and_address_and_an_ipv4_route_via_ipv6_parse() {
    let mut payload = vec![10, 0, 0, 0];
    payload.extend_from_slice(&SERVED.to_ne_bytes());
    payload.extend_from_slice(&0x02u16.to_ne_bytes());
    payload.extend_from_slice(&[0, 1]);
    payload.extend(attribute(1, &octets6("2001:db8:1::2")));
    payload.extend(attribute(2, &[2, 0, 0, 0, 0, 6]));
    let Parsed::Event(Event::Neighbour(Change::New, entry)) = parse(RTM_NEWNEIGH, &payload) else {
        panic!("not a neighbour");
    };
    assert_eq!(entry.address, IpAddr::V6(v6("2001:db8:1::2")));
    assert_eq!(entry.lladdr, Some([2, 0, 0, 0, 0, 6]));

    let mut address = vec![10, 64, 0, 0];
    address.extend_from_slice(&SERVED.to_ne_bytes());
    address.extend(attribute(1, &octets6("2001:db8:1::1")));
    assert_eq!(
        parse(20, &address),
        Parsed::Event(Event::Address(
            Change::New,
            SERVED,
            IpAddr::V6(v6("2001:db8:1::1")),
            64
        ))
    );

    // RFC 5549: `ip route add 203.0.113.0/24 via inet6 2001:db8:1::2` carries RTA_VIA.
    let mut via = 10u16.to_ne_bytes().to_vec();
    via.extend_from_slice(&octets6("2001:db8:1::2"));
    let payload = route(
        24,
        1,
        &[
            destination([203, 0, 113, 0]),
            oif(SERVED),
            attribute(18, &via),
        ],
    );
    let Parsed::Event(Event::Route(_, entry)) = parse(RTM_NEWROUTE, &payload) else {
        panic!("not a route");
    };
    assert_eq!(
        entry.action,
        RouteAction::Paths(vec![Path {
            gateway: Some(IpAddr::V6(v6("2001:db8:1::2"))),
            ifindex: SERVED,
            weight: 1
        }])
    );
}

#[test]
fn deleting_one_leg_of_an_ipv6_multipath_route_keeps_the_others() {
    let mut model = model_of(&ipv6_lab());
    let one_leg = route6(
        48,
        1,
        &[
            attribute(1, &octets6("2001:db8:3::")),
            oif(SERVED),
            attribute(5, &octets6("2001:db8:1::3")),
        ],
    );
    model.apply(parse(RTM_DELROUTE, &one_leg).event().unwrap());
    let key = (IpAddr::V6(v6("2001:db8:3::")), 48, 0);
    assert_eq!(
        model.routes.get(&key),
        Some(&RouteAction::Paths(vec![Path {
            gateway: Some(IpAddr::V6(v6("2001:db8:1::2"))),
            ifindex: SERVED,
            weight: 1
        }]))
    );
    let last_leg = route6(
        48,
        1,
        &[
            attribute(1, &octets6("2001:db8:3::")),
            oif(SERVED),
            attribute(5, &octets6("2001:db8:1::2")),
        ],
    );
    model.apply(parse(RTM_DELROUTE, &last_leg).event().unwrap());
    assert_eq!(model.routes.get(&key), None);
}
