//! MAC addresses as text: six colon-separated hex bytes, parsed from a backend's `mac` and
//! formatted for summaries and stats. No validation of what kind of address it is (unicast or
//! not): that is the backend check's business.

use std::fmt::Write as _;

/// Parses a MAC address written as six colon-separated hex bytes, e.g. `02:00:00:00:00:11`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC address as six lower-case colon-separated hex bytes.
pub fn format_mac(mac: [u8; 6]) -> String {
    let mut text = String::with_capacity(17);
    for (position, byte) in mac.iter().enumerate() {
        let separator = if position == 0 { "" } else { ":" };
        let _ = write!(text, "{separator}{byte:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        assert_eq!(parse_mac("02:00:00:00:00:11"), Some([2, 0, 0, 0, 0, 0x11]));
        assert_eq!(
            parse_mac("0A:bC:00:00:00:11"),
            Some([10, 0xbc, 0, 0, 0, 0x11])
        );
        assert_eq!(parse_mac("02:00:00:00:00:11:22"), None);
        assert_eq!(parse_mac("2:0:0:0:0:11"), None);
        assert_eq!(parse_mac("02-00-00-00-00-11"), None);
        assert_eq!(format_mac([2, 0, 0, 0xab, 0, 0x11]), "02:00:00:ab:00:11");
    }
}
