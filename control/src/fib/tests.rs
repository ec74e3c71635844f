//! Parsing crafted netlink bytes and building snapshots from them.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use dataplane::fib::{NeighbourSlots, NoRoute, NoRouteKind};

use super::build::build;
use super::model::Model;
use super::parse::{parse, Change, Event, NexthopObject, Path, RouteAction};

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
        model.apply(parse(*kind, payload).expect("a message the mirror reads"));
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
    let Some(Event::Route(Change::New, entry)) = parse(RTM_NEWROUTE, &payload) else {
        panic!("not a route");
    };
    assert_eq!(entry.destination, Ipv4Addr::new(203, 0, 113, 0));
    assert_eq!(
        entry.action,
        RouteAction::Paths(vec![
            Path {
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
                ifindex: SERVED,
                weight: 1
            },
            Path {
                gateway: Some(Ipv4Addr::new(192, 0, 2, 2)),
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
        Some(Event::Nexthop(
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
    let pinned = BTreeSet::from([(SERVED, Ipv4Addr::new(192, 0, 2, 100))]);
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
    model.apply(parse(RTM_DELROUTE, &deleted).unwrap());
    let built = build(&model, &served(), &pinned, &mut slots);
    assert!(built
        .fib
        .lookup_v4(Ipv4Addr::new(192, 0, 2, 100), 0)
        .is_err());
    assert!(
        built
            .referenced
            .contains(&(SERVED, Ipv4Addr::new(192, 0, 2, 100))),
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
    let Some(Event::Neighbour(Change::New, entry)) = parse(RTM_NEWNEIGH, &payload) else {
        panic!("not a neighbour");
    };
    assert_eq!(entry.state, 0x04);
    assert_eq!(entry.lladdr, Some([2, 0, 0, 0, 0, 1]));

    let mut local_table = route(32, 2, &[destination([192, 0, 2, 10]), oif(SERVED)]);
    local_table[4] = 255;
    assert_eq!(parse(RTM_NEWROUTE, &local_table), None);
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
        }
    }
}
