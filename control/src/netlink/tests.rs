//! Tests of the message format on crafted bytes, and of the queries on the loopback interface.

use std::net::{IpAddr, Ipv4Addr};

use super::address::{
    address_header, parse_address, IFA_ADDRESS, IFA_LOCAL, IFA_PROTO, RTM_NEWADDR,
};
use super::message::{read_u16, read_u32, Attributes, Message, Messages, NLM_F_ACK, NLM_F_REQUEST};
use super::neighbour::{neighbour_header, AF_INET, NDA_DST, NUD_REACHABLE, RTM_GETNEIGH};
use super::*;

#[test]
fn builds_aligned_messages() {
    let mut message = Message::new(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK);
    message.push(&address_header(2, 7, 32, 0));
    message.attribute(IFA_LOCAL, &[192, 0, 2, 10]);
    message.attribute(99, &[1]);
    let bytes = message.finish(42).to_vec();
    assert_eq!(bytes.len(), 16 + 8 + 8 + 8);
    assert_eq!(read_u32(&bytes, 0), Some(40));
    assert_eq!(read_u16(&bytes, 4), Some(RTM_NEWADDR));
    assert_eq!(read_u32(&bytes, 8), Some(42));
    assert_eq!(read_u32(&bytes, 20), Some(7));
    let attributes: Vec<(u16, &[u8])> = Attributes::new(&bytes[24..]).collect();
    assert_eq!(
        attributes,
        [(IFA_LOCAL, &[192u8, 0, 2, 10][..]), (99, &[1u8][..])]
    );
}

/// The payload of an `RTM_NEWADDR` dump message: `ifaddrmsg` and attributes.
fn address_payload(ifindex: u32, attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut message = Message::new(RTM_NEWADDR, 0);
    message.push(&address_header(2, ifindex, 32, 0));
    for &(kind, data) in attributes {
        message.attribute(kind, data);
    }
    message.finish(1)[16..].to_vec()
}

#[test]
fn address_dumps_read_the_protocol_mark() {
    let vip = [192, 0, 2, 10];
    let marked = address_payload(
        7,
        &[
            (IFA_ADDRESS, &vip),
            (IFA_LOCAL, &vip),
            (IFA_PROTO, &[DIRECTOR_ADDRESS_PROTOCOL]),
        ],
    );
    let listed = parse_address(&marked, 2, 7).unwrap().unwrap();
    assert_eq!(listed.address, IpAddr::from(vip));
    assert_eq!(listed.prefix_len, 32);
    assert!(listed.is_directors());
    // Without IFA_PROTO (the operator's, or a kernel before 5.18): protocol 0.
    let plain = address_payload(7, &[(IFA_LOCAL, &vip)]);
    let listed = parse_address(&plain, 2, 7).unwrap().unwrap();
    assert_eq!(listed.protocol, 0);
    assert!(!listed.is_directors());
    // Another interface or family: skipped.
    assert_eq!(parse_address(&marked, 2, 8), Ok(None));
    assert_eq!(parse_address(&marked, 10, 7), Ok(None));
    // An empty IFA_PROTO reads as unset; a short header is an error; no prefix panics.
    let empty = address_payload(7, &[(IFA_LOCAL, &vip), (IFA_PROTO, &[])]);
    assert_eq!(parse_address(&empty, 2, 7).unwrap().unwrap().protocol, 0);
    assert!(parse_address(&marked[..7], 2, 7).is_err());
    for end in 0..marked.len() {
        let _ = parse_address(&marked[..end], 2, 7);
    }
}

#[test]
fn malformed_input_stops_parsing_without_panicking() {
    // Attribute claiming more bytes than there are.
    let mut bytes = vec![0u8; 8];
    bytes[0..2].copy_from_slice(&200u16.to_ne_bytes());
    assert_eq!(Attributes::new(&bytes).count(), 0);
    // Attribute length below its own header.
    bytes[0..2].copy_from_slice(&2u16.to_ne_bytes());
    assert_eq!(Attributes::new(&bytes).count(), 0);
    assert_eq!(Attributes::new(&bytes[..3]).count(), 0);
    // Message length out of bounds.
    let mut message = vec![0u8; 20];
    message[0..4].copy_from_slice(&64u32.to_ne_bytes());
    assert!(matches!(Messages::new(&message).next(), Some(Err(_))));
    message[0..4].copy_from_slice(&4u32.to_ne_bytes());
    assert!(matches!(Messages::new(&message).next(), Some(Err(_))));
    assert!(matches!(Messages::new(&message[..3]).next(), Some(Err(_))));
    // Every prefix of a good message parses or errors, never panics.
    let mut good = Message::new(RTM_GETNEIGH, NLM_F_REQUEST);
    good.push(&neighbour_header(AF_INET, 1, NUD_REACHABLE, 0));
    good.attribute(NDA_DST, &[198, 51, 100, 1]);
    let good = good.finish(1).to_vec();
    for end in 0..good.len() {
        for item in Messages::new(&good[..end]).flatten() {
            let _ = Attributes::new(item.1.get(12..).unwrap_or(&[])).count();
        }
    }
}

#[test]
fn loopback_queries() {
    assert_eq!(interface_index("lo").unwrap(), 1);
    assert!(interface_rx_queues("lo").unwrap() >= 1);
    assert!(matches!(
        interface_mac("lo"),
        Err(NetlinkError::NotEthernet(_))
    ));
    assert!(matches!(
        interface_index("nosuchif0"),
        Err(NetlinkError::NoSuchInterface(_))
    ));
    assert!(matches!(
        interface_mac("nosuchif0"),
        Err(NetlinkError::NoSuchInterface(_))
    ));
    assert!(matches!(
        interface_rx_queues("nosuchif0"),
        Err(NetlinkError::NoSuchInterface(_))
    ));
    assert!(matches!(
        interface_index("a-name-far-too-long"),
        Err(NetlinkError::InvalidInterfaceName(_))
    ));
    assert!(matches!(
        interface_index(""),
        Err(NetlinkError::InvalidInterfaceName(_))
    ));
    // A dump on a fresh socket completes (whatever the table holds).
    let mut netlink = Netlink::open().unwrap();
    assert_eq!(netlink.default_gateway(1).unwrap(), None);
    assert_eq!(
        netlink
            .neighbour_mac(1, Ipv4Addr::new(192, 0, 2, 1))
            .unwrap(),
        None
    );
}
