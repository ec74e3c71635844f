//! The control side's fuzzing harnesses: the bodies of the cargo-fuzz targets in `fuzz/`
//! (`vrrp_parser`, `sync_parser`, `control_request`, `config_parser`, `health_response`), kept
//! in the library so the stable test suite replays every committed corpus input through the
//! very same code (`control/tests/fuzz_corpus.rs`) and CI needs no nightly. The data plane's
//! `frame_pipeline` is in `dataplane::testing::fuzzing`.
//!
//! Each harness takes arbitrary bytes and panics only when an invariant breaks (that panic is
//! the finding); each calls the parser the director runs on untrusted input, not a copy of it.
//! Where a checksum or a length field would stop the fuzzer at the first check, a mode bit of
//! the first byte has the harness fix it up first, so the later checks are reached too.
//!
//! Built only with the `fuzzing` feature (the fuzz crate and this crate's own tests turn it on),
//! so the `director` binary does not contain it. Never used by the running director.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use dataplane::sync::wire::{encode_datagram, Datagram, DatagramError};
use dataplane::sync::{SyncRecord, MAX_RECORD_LEN};
use dataplane::wire::{checksum, Ipv4Packet};

use crate::config::{check_dr_on_link, CheckKind, Config, InterfacePrefixes};
use crate::ha::vrrp::wire::{self, Advertisement};
use crate::ha::vrrp::wire6;
use crate::health::{judge_of, Verdict};
use crate::stats_server::parse_request;

/// A VRRP datagram or message: the first byte's bit 0 picks IPv6 (a message as the raw IPv6
/// socket delivers it, from a fixed link-local source to the VRRP group, with the second byte as
/// its hop limit) over IPv4 (a datagram with its IPv4 header); bit 1 has the harness fill in the
/// VRRP checksum first. A valid advertisement must survive being sent again: emitted from the
/// same source to the same destination, it parses to itself.
pub fn vrrp_parser(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fix_checksum = mode & 2 != 0;
    if mode & 1 == 0 {
        let mut datagram = rest.to_vec();
        if fix_checksum {
            fill_vrrp4_checksum(&mut datagram);
        }
        if let Ok(received) = wire::parse_datagram(&datagram) {
            let again = received
                .advert
                .to_datagram(received.source, received.destination);
            assert_eq!(
                wire::parse_datagram(&again).as_ref(),
                Ok(&received),
                "an IPv4 advertisement does not survive being sent again"
            );
        }
    } else {
        let Some((&hop_limit, message)) = rest.split_first() else {
            return;
        };
        let source = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let mut message = message.to_vec();
        if fix_checksum && message.len() >= 8 {
            message[6..8].fill(0);
            let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
            let sum = !checksum::combine(&[
                checksum::pseudo_header6(source, wire6::MULTICAST_GROUP, wire::PROTOCOL, length),
                checksum::data(&message),
            ]);
            message[6..8].copy_from_slice(&sum.to_be_bytes());
        }
        if let Ok(received) =
            wire6::parse_message(&message, source, wire6::MULTICAST_GROUP, hop_limit)
        {
            let again = received
                .advert
                .to_message(received.source, received.destination);
            assert_eq!(
                wire6::parse_message(&again, source, wire6::MULTICAST_GROUP, wire6::HOP_LIMIT)
                    .as_ref(),
                Ok(&received),
                "an IPv6 advertisement does not survive being sent again"
            );
        }
    }
}

/// Fills in the VRRP checksum of an IPv4 datagram, if it has a whole IPv4 header and at least a
/// VRRP header after it.
fn fill_vrrp4_checksum(datagram: &mut [u8]) {
    let Ok(ip) = Ipv4Packet::new_checked(&datagram[..]) else {
        return;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let start = usize::from(ip.header_len());
    let end = start + ip.payload().len();
    let message = &mut datagram[start..end];
    if message.len() < 8 {
        return;
    }
    message[6..8].fill(0);
    let length = u16::try_from(message.len()).unwrap_or(u16::MAX);
    let sum = !checksum::combine(&[
        checksum::pseudo_header(src, dst, wire::PROTOCOL, length),
        checksum::data(message),
    ]);
    message[6..8].copy_from_slice(&sum.to_be_bytes());
}

/// A state-sync datagram as the receiver decodes it (`Datagram::parse`, then each record): the
/// first byte's bit 0 has the harness write the datagram's real length into its length field
/// first. Parsed as its own cluster's (the sync id it carries), a valid datagram must be refused
/// as another cluster's under any other id, hold as many records as it says, and each valid
/// record must survive its wire form; the valid records encoded again parse to themselves.
pub fn sync_parser(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 != 0 && bytes.len() >= 10 {
        let length = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        bytes[8..10].copy_from_slice(&length.to_be_bytes());
    }
    let sync_id = bytes.get(5).copied().unwrap_or(0);
    let Ok(datagram) = Datagram::parse(&bytes, sync_id) else {
        return;
    };
    assert_eq!(
        Datagram::parse(&bytes, sync_id.wrapping_add(1)).err(),
        Some(DatagramError::ForeignSyncId(sync_id)),
        "a valid datagram was not refused under another sync id"
    );
    let records: Vec<_> = datagram.records().collect();
    assert_eq!(records.len(), datagram.len(), "record count");
    let valid: Vec<SyncRecord> = records.into_iter().filter_map(Result::ok).collect();
    for record in &valid {
        let mut wire_form = [0; MAX_RECORD_LEN];
        let length = record.encode(&mut wire_form);
        assert_eq!(
            SyncRecord::decode(&wire_form[..length]).as_ref(),
            Ok(record),
            "a record does not survive its wire form"
        );
    }
    let mut again = Vec::new();
    let taken = encode_datagram(sync_id, datagram.sequence, &valid, &mut again);
    assert_eq!(taken, valid.len(), "valid records of one datagram fit one");
    let reparsed = Datagram::parse(&again, sync_id).expect("an encoded datagram parses");
    let decoded: Vec<SyncRecord> = reparsed.records().map(Result::unwrap).collect();
    assert_eq!(decoded, valid, "the valid records encoded again");
    assert_eq!(reparsed.sequence, datagram.sequence);
}

/// Bytes a client writes to the stats socket, split into request lines as the server splits
/// them (a last line without its newline answered at the end). A request that parses must
/// survive being written again as JSON; every other non-blank line gets an error message.
pub fn control_request(data: &[u8]) {
    for line in data.split(|&byte| byte == b'\n') {
        match parse_request(line) {
            None => assert!(
                line.strip_suffix(b"\r")
                    .unwrap_or(line)
                    .iter()
                    .all(u8::is_ascii_whitespace),
                "a line that is not blank was ignored"
            ),
            Some(Ok(request)) => {
                let json = serde_json::to_vec(&request).expect("a request serializes");
                assert_eq!(
                    parse_request(&json),
                    Some(Ok(request)),
                    "a request does not survive being written again"
                );
            }
            Some(Err(message)) => assert!(!message.is_empty(), "an empty error message"),
        }
    }
}

/// Configuration text as `director check` reads it: parsed and validated, and if valid,
/// checked against connected prefixes (a client side on 192.0.2.0/24 and 2001:db8::/64) and
/// summarised as the check prints it. Input that is not UTF-8 is no configuration file and is
/// skipped. An error must render to a message.
pub fn config_parser(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => {
            let connected: Vec<InterfacePrefixes> = config
                .director
                .interfaces
                .iter()
                .take(1)
                .map(|interface| InterfacePrefixes {
                    interface: interface.clone(),
                    prefixes: vec![
                        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 24),
                        (
                            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                            64,
                        ),
                    ],
                })
                .collect();
            if let Err(error) = check_dr_on_link(&config, &connected) {
                assert!(!error.to_string().is_empty(), "an empty on-link error");
            }
            for service in &config.services {
                assert!(!service.summary().is_empty(), "an empty service summary");
            }
            if let Some(ha) = &config.ha {
                assert!(!ha.summary().is_empty(), "an empty HA summary");
            }
        }
        Err(error) => assert!(
            !error.to_string().is_empty(),
            "an empty configuration error"
        ),
    }
}

/// A real server's answer to an `http` or `send_expect` check (first byte: bit 0 picks
/// `send_expect`), judged as the probe judges it: after each read, the reads being `chunk`
/// bytes (the second byte, at least 1), until a verdict, and once more when the server closes.
/// The third and fourth bytes are the expected status, the fifth the length of the expected
/// text (`http`: 0 for none) that follows; the rest is the answer. However the answer is cut
/// into reads, the outcome must be the one judging it whole gives, and a closed answer never
/// leaves the verdict open.
pub fn health_response(data: &[u8]) {
    let [mode, chunk, status_high, status_low, expected_len, rest @ ..] = data else {
        return;
    };
    let (expected, answer) = rest.split_at(rest.len().min(usize::from(*expected_len)));
    let expected = String::from_utf8_lossy(expected).into_owned();
    let kind = if mode & 1 == 0 {
        CheckKind::Http {
            path: "/".to_owned(),
            expect_status: u16::from_be_bytes([*status_high, *status_low]),
            expect_body: (!expected.is_empty()).then_some(expected),
        }
    } else {
        CheckKind::SendExpect {
            send: String::new(),
            expect: expected,
        }
    };
    let judge = judge_of(&kind, SocketAddr::from(([192, 0, 2, 11], 80)))
        .expect("http and send_expect checks judge an answer");
    let whole = judge.judge(answer, true);
    assert!(
        !matches!(whole, Verdict::NeedMore),
        "a closed answer left the verdict open"
    );
    let chunk = usize::from(*chunk).max(1);
    let mut read = 0;
    let in_reads = loop {
        read = (read + chunk).min(answer.len());
        let closed = read == answer.len();
        match judge.judge(&answer[..read], closed) {
            Verdict::NeedMore if !closed => {}
            verdict => break verdict,
        }
    };
    assert_eq!(
        matches!(in_reads, Verdict::Pass),
        matches!(whole, Verdict::Pass),
        "judged in reads of {chunk} bytes: {in_reads:?}; judged whole: {whole:?}"
    );
}

/// Seed inputs by target, from the director's own fixtures: real advertisements, real sync
/// datagrams, real request lines, the configurations under `configs/` (read by the caller) and
/// real answers.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "vrrp_parser" => vrrp_seeds(),
        "sync_parser" => sync_seeds(),
        "control_request" => control_request_seeds(),
        "health_response" => health_seeds(),
        _ => Vec::new(),
    }
}

fn vrrp_seeds() -> Vec<(String, Vec<u8>)> {
    let advert = Advertisement {
        vrid: 51,
        priority: 100,
        max_advert_interval: 100,
        addresses: vec![Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)],
    };
    let source = Ipv4Addr::new(192, 0, 2, 2);
    let mut ipv4 = vec![0];
    ipv4.extend(advert.to_datagram(source, Ipv4Addr::new(224, 0, 0, 18)));
    let mut unicast = vec![0];
    unicast.extend(advert.to_datagram(source, Ipv4Addr::new(192, 0, 2, 3)));
    let advert6 = Advertisement {
        vrid: 51,
        priority: 254,
        max_advert_interval: 100,
        addresses: vec![Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)],
    };
    let mut ipv6 = vec![1, wire6::HOP_LIMIT];
    ipv6.extend(advert6.to_message(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
        wire6::MULTICAST_GROUP,
    ));
    vec![
        ("seed-advert4".to_owned(), ipv4),
        ("seed-advert4-unicast".to_owned(), unicast),
        ("seed-advert6".to_owned(), ipv6),
    ]
}

fn sync_seeds() -> Vec<(String, Vec<u8>)> {
    use dataplane::testing::{sync_connection, sync_template};
    let mut seeds = Vec::new();
    let mut push = |name: &str, records: &[SyncRecord]| {
        let mut datagram = Vec::new();
        encode_datagram(7, 42, records, &mut datagram);
        let mut input = vec![0];
        input.extend(datagram);
        seeds.push((format!("seed-{name}"), input));
    };
    push("connections", &[sync_connection(1), sync_connection(2)]);
    push("template", &[sync_template()]);
    let mut connection6 = sync_connection(3);
    if let SyncRecord::Connection(connection) = &mut connection6 {
        connection.key.src_addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)).into();
        connection.key.dst_addr =
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)).into();
        connection.backend =
            SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11), 80));
    }
    push("mixed", &[sync_connection(4), connection6, sync_template()]);
    seeds
}

fn control_request_seeds() -> Vec<(String, Vec<u8>)> {
    [
        ("stats", r#"{"request":"stats"}"#),
        ("reload", "{\"request\":\"reload\"}\r\n"),
        (
            "set-weight",
            r#"{"request":"set_weight","service":"web","backend":"192.0.2.11","weight":3}"#,
        ),
        (
            "drain-and-enable",
            "{\"request\":\"drain\",\"service\":\"web\",\"backend\":\"2001:db8::11\"}\n\n\
             {\"request\":\"enable\",\"service\":\"web\",\"backend\":\"192.0.2.11\"}\n",
        ),
        (
            "disable",
            r#"{"request":"disable","service":"web","backend":"192.0.2.12"}"#,
        ),
    ]
    .into_iter()
    .map(|(name, text)| (format!("seed-{name}"), text.as_bytes().to_vec()))
    .collect()
}

fn health_seeds() -> Vec<(String, Vec<u8>)> {
    let input = |mode: u8, chunk: u8, status: u16, expected: &str, answer: &str| {
        let mut input = vec![mode, chunk];
        input.extend_from_slice(&status.to_be_bytes());
        input.push(u8::try_from(expected.len()).expect("a short expectation"));
        input.extend_from_slice(expected.as_bytes());
        input.extend_from_slice(answer.as_bytes());
        input
    };
    let ok = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n";
    vec![
        ("http-ok".to_owned(), input(0, 7, 200, "", ok)),
        ("http-body".to_owned(), input(0, 3, 200, "ok", ok)),
        (
            "http-503".to_owned(),
            input(0, 255, 200, "", "HTTP/1.1 503 Service Unavailable\r\n\r\n"),
        ),
        (
            "http-bare-lf".to_owned(),
            input(0, 1, 204, "up", "HTTP/1.0 204 No Content\n\nup"),
        ),
        (
            "send-expect-smtp".to_owned(),
            input(1, 5, 0, "220 ", "220 mail.example ESMTP\r\n"),
        ),
    ]
    .into_iter()
    .map(|(name, input)| (format!("seed-{name}"), input))
    .collect()
}
