//! A field-level diff of two frames, so a failing golden test names the header field that
//! differs instead of dumping bytes: IPv4 and IPv6 alike, into IP-in-IP (4in4, 4in6, 6in6)
//! inner packets and ICMP and ICMPv6 quotes. IPv6 extension headers are not walked (the rest
//! of such a packet is one `ipv6.payload` field).
//!
//! Test support only: it allocates.

use std::fmt::Write as _;

use crate::wire::{ethernet, icmpv6, ipv4, ipv6, EtherType, EthernetFrame, IcmpQuote, Ipv4Packet};

/// A named byte range of a frame.
struct FieldSpan {
    name: String,
    start: usize,
    end: usize,
}

/// The header fields of `frame` (untagged Ethernet, IPv4 or IPv6, TCP/UDP, ICMP or ICMPv6 with
/// its quote, IP-in-IP with its inner packet), as far as it parses.
fn fields(frame: &[u8]) -> Vec<FieldSpan> {
    let mut spans = Vec::new();
    for (name, start, end) in [("eth.dst", 0, 6), ("eth.src", 6, 12), ("eth.type", 12, 14)] {
        spans.push(FieldSpan {
            name: name.to_owned(),
            start,
            end,
        });
    }
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return spans;
    };
    let end = match eth.ethertype() {
        EtherType::IPV4 => ipv4_fields(&mut spans, "", frame, ethernet::HEADER_LEN, false),
        EtherType::IPV6 => ipv6_fields(&mut spans, "", frame, ethernet::HEADER_LEN),
        _ => {
            spans.push(FieldSpan {
                name: "eth.payload".to_owned(),
                start: ethernet::HEADER_LEN,
                end: usize::MAX,
            });
            return spans;
        }
    };
    spans.push(FieldSpan {
        name: "eth.padding".to_owned(),
        start: end,
        end: usize::MAX,
    });
    spans
}

/// The header fields of a transport (or ICMP) header: (name, start, end) from its start.
fn l4_fields(protocol: u8) -> &'static [(&'static str, usize, usize)] {
    match protocol {
        ipv4::protocol::TCP => &[
            ("tcp.src_port", 0, 2),
            ("tcp.dst_port", 2, 4),
            ("tcp.seq", 4, 8),
            ("tcp.ack", 8, 12),
            ("tcp.offset_flags", 12, 14),
            ("tcp.window", 14, 16),
            ("tcp.checksum", 16, 18),
            ("tcp.urgent", 18, 20),
        ],
        ipv4::protocol::UDP => &[
            ("udp.src_port", 0, 2),
            ("udp.dst_port", 2, 4),
            ("udp.len", 4, 6),
            ("udp.checksum", 6, 8),
        ],
        ipv4::protocol::ICMP => &[
            ("icmp.type", 0, 1),
            ("icmp.code", 1, 2),
            ("icmp.checksum", 2, 4),
            ("icmp.rest", 4, 8),
        ],
        _ => &[],
    }
}

/// Adds the fields of the IPv4 packet at `frame[at..]`, names prefixed with `prefix`; returns
/// where the packet ends. `quoted`: an ICMP quote (its total length describes the original).
fn ipv4_fields(
    spans: &mut Vec<FieldSpan>,
    prefix: &str,
    frame: &[u8],
    at: usize,
    quoted: bool,
) -> usize {
    let mut push = |name: &str, start: usize, end: usize| {
        spans.push(FieldSpan {
            name: format!("{prefix}{name}"),
            start,
            end,
        });
    };
    for (name, start, end) in [
        ("ipv4.version_ihl", 0, 1),
        ("ipv4.tos", 1, 2),
        ("ipv4.total_len", 2, 4),
        ("ipv4.ident", 4, 6),
        ("ipv4.flags_frag", 6, 8),
        ("ipv4.ttl", 8, 9),
        ("ipv4.protocol", 9, 10),
        ("ipv4.checksum", 10, 12),
        ("ipv4.src", 12, 16),
        ("ipv4.dst", 16, 20),
    ] {
        push(name, at + start, at + end);
    }
    let bytes = frame.get(at..).unwrap_or(&[]);
    let parsed = if quoted {
        IcmpQuote::new_checked(bytes)
            .ok()
            .map(|quote| (quote.header_len(), bytes.len(), quote.protocol()))
    } else {
        Ipv4Packet::new_checked(bytes).ok().map(|ip| {
            (
                usize::from(ip.header_len()),
                usize::from(ip.total_len()),
                ip.protocol(),
            )
        })
    };
    let Some((header_len, total_len, protocol)) = parsed else {
        push("ipv4.rest", at + ipv4::HEADER_LEN, usize::MAX);
        return frame.len();
    };
    let l4_at = at + header_len;
    let packet_end = at + total_len;
    push("ipv4.options", at + ipv4::HEADER_LEN, l4_at);
    let mut end = l4_at;
    for &(name, start, stop) in l4_fields(protocol) {
        let stop = (l4_at + stop).min(packet_end);
        push(name, l4_at + start, stop);
        end = stop;
    }
    let within = &frame[..packet_end.min(frame.len())];
    match protocol {
        ipv4::protocol::ICMP if !quoted && packet_end.saturating_sub(end) >= ipv4::HEADER_LEN => {
            ipv4_fields(spans, &format!("{prefix}icmp.quote."), within, end, true);
        }
        ipv4::protocol::IPIP if !quoted => {
            ipv4_fields(spans, &format!("{prefix}inner."), within, l4_at, false);
        }
        _ => spans.push(FieldSpan {
            name: format!("{prefix}payload"),
            start: end,
            end: packet_end,
        }),
    }
    packet_end
}

/// Adds the fields of the IPv6 packet at `frame[at..]` (an ICMPv6 quote may be cut short: the
/// packet ends with the frame), names prefixed with `prefix`; returns where the packet ends.
fn ipv6_fields(spans: &mut Vec<FieldSpan>, prefix: &str, frame: &[u8], at: usize) -> usize {
    let mut push = |name: &str, start: usize, end: usize| {
        spans.push(FieldSpan {
            name: format!("{prefix}{name}"),
            start,
            end,
        });
    };
    for (name, start, end) in [
        ("ipv6.version_class_flow", 0, 4),
        ("ipv6.payload_len", 4, 6),
        ("ipv6.next_header", 6, 7),
        ("ipv6.hop_limit", 7, 8),
        ("ipv6.src", 8, 24),
        ("ipv6.dst", 24, 40),
    ] {
        push(name, at + start, at + end);
    }
    let l4_at = at + ipv6::HEADER_LEN;
    let Some(&[len_high, len_low, next_header, _]) = frame.get(at + 4..at + 8) else {
        return frame.len();
    };
    let packet_end =
        (l4_at + usize::from(u16::from_be_bytes([len_high, len_low]))).min(frame.len());
    let l4: &[(&str, usize, usize)] = match next_header {
        ipv6::next_header::ICMPV6 => &[
            ("icmpv6.type", 0, 1),
            ("icmpv6.code", 1, 2),
            ("icmpv6.checksum", 2, 4),
            ("icmpv6.rest", 4, 8),
        ],
        ipv6::next_header::TCP | ipv6::next_header::UDP => l4_fields(next_header),
        _ => &[],
    };
    let mut end = l4_at;
    for &(name, start, stop) in l4 {
        let stop = (l4_at + stop).min(packet_end);
        push(name, l4_at + start, stop);
        end = stop;
    }
    let within = &frame[..packet_end];
    match next_header {
        ipv6::next_header::ICMPV6
            if end == l4_at + icmpv6::HEADER_LEN
                && packet_end.saturating_sub(end) >= ipv6::HEADER_LEN =>
        {
            ipv6_fields(spans, &format!("{prefix}icmpv6.quote."), within, end);
        }
        ipv6::next_header::IPV4 => {
            ipv4_fields(spans, &format!("{prefix}inner."), within, l4_at, false);
        }
        ipv6::next_header::IPV6 => {
            ipv6_fields(spans, &format!("{prefix}inner."), within, l4_at);
        }
        _ => spans.push(FieldSpan {
            name: format!("{prefix}payload"),
            start: end,
            end: packet_end,
        }),
    }
    packet_end
}

/// `None` if the frames are equal, else one line per differing header field (laid out by
/// `expected`), e.g. `eth.dst [0..6]: expected 02 00 00 00 01 01, got 02 00 00 00 01 02`.
pub fn diff(expected: &[u8], actual: &[u8]) -> Option<String> {
    if expected == actual {
        return None;
    }
    let hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    if expected.len() != actual.len() {
        let _ = writeln!(
            out,
            "length: expected {}, got {}",
            expected.len(),
            actual.len()
        );
    }
    let longest = expected.len().max(actual.len());
    for field in fields(expected) {
        let end = field.end.min(longest);
        if field.start >= end {
            continue;
        }
        let want = expected
            .get(field.start..end.min(expected.len()))
            .unwrap_or(&[]);
        let got = actual
            .get(field.start..end.min(actual.len()))
            .unwrap_or(&[]);
        if want != got {
            let _ = writeln!(
                out,
                "{} [{}..{}]: expected {}, got {}",
                &field.name,
                field.start,
                end,
                hex(want),
                hex(got)
            );
        }
    }
    Some(out)
}

/// Panics with a field-level diff unless the frames are equal.
#[track_caller]
pub fn assert_frame_eq(expected: &[u8], actual: &[u8], description: &str) {
    if let Some(diff) = diff(expected, actual) {
        panic!("{description}: frames differ\n{diff}");
    }
}

#[cfg(test)]
mod tests {
    use super::diff;
    use crate::testing::{FrameBuilder, Ipv6FrameBuilder};

    /// A 4in6 frame: `inner` (an IPv4 frame) behind an IPv6 header, next header 4.
    fn four_in_six(inner: &[u8]) -> Vec<u8> {
        let mut frame = inner[..12].to_vec();
        frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        frame.extend_from_slice(&u16::try_from(inner.len() - 14).unwrap().to_be_bytes());
        frame.extend_from_slice(&[4, 64]);
        frame.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8].repeat(8));
        frame.extend_from_slice(&inner[14..]);
        frame
    }

    #[test]
    fn names_ipv6_fields_into_tunnels_and_quotes() {
        let syn = Ipv6FrameBuilder::tcp().syn().build();
        let other = Ipv6FrameBuilder::tcp().syn().hop_limit(63).build();
        let lines = diff(&syn, &other).unwrap();
        assert!(lines.contains("ipv6.hop_limit [21..22]"), "{lines}");
        assert!(!lines.contains("tcp."), "{lines}");

        let inner = FrameBuilder::tcp().syn().unpadded().build();
        let mut moved = four_in_six(&inner);
        moved[14 + 40 + 1] = 0x28;
        let lines = diff(&four_in_six(&inner), &moved).unwrap();
        assert!(lines.contains("inner.ipv4.tos [55..56]"), "{lines}");

        let quote = Ipv6FrameBuilder::tcp().ack().build_ipv6();
        let too_big = |quote: &[u8]| {
            Ipv6FrameBuilder::icmp6()
                .icmp6_header(2, 0, 1280)
                .payload(quote)
                .build()
        };
        let mut other_quote = quote.clone();
        other_quote[7] = 1;
        let lines = diff(&too_big(&quote), &too_big(&other_quote)).unwrap();
        assert!(
            lines.contains("icmpv6.quote.ipv6.hop_limit [69..70]"),
            "{lines}"
        );
        assert!(lines.contains("icmpv6.checksum [56..58]"), "{lines}");
    }
}
