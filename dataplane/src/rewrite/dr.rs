//! Direct routing (LVS-DR): re-address the Ethernet frame to the real server, nothing else.
//!
//! The real server holds the VIP on a non-ARPing interface (loopback), accepts the unchanged IP
//! packet and answers the client directly, so the director sees only client -> server traffic.
//! Because no IP or transport field changes, no checksum changes, and the TTL is left alone as
//! LVS does (to the client the director is not a hop).

use crate::wire::{EthernetFrame, MacAddr};

/// Sends `frame` to `backend_mac` from `interface_mac`, the interface it goes out of.
#[inline]
pub fn rewrite<T: AsRef<[u8]> + AsMut<[u8]>>(
    frame: &mut EthernetFrame<T>,
    backend_mac: MacAddr,
    interface_mac: MacAddr,
) {
    frame.set_dst_addr(backend_mac);
    frame.set_src_addr(interface_mac);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_macs_change() {
        let mut bytes: Vec<u8> = (0..60).collect();
        let before = bytes.clone();
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        rewrite(&mut frame, [2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 0, 0x0a]);
        assert_eq!(&bytes[..6], &[2, 0, 0, 0, 1, 1]);
        assert_eq!(&bytes[6..12], &[2, 0, 0, 0, 0, 0x0a]);
        assert_eq!(&bytes[12..], &before[12..]);
    }
}
