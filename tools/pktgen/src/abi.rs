//! The Rust mirror of `bpf/pktgen.h`: the structs and constants the XDP programs share with
//! user space. Every struct is `#[repr(C)]` with explicit padding and a size assertion, and is
//! read or written as bytes in native order (the maps' order), never by pointer cast.

/// Bytes of the template the generator copies into every frame (`PKTGEN_HEADER_COPY`).
pub const HEADER_COPY: usize = 54;
/// Offset of the IPv4 header checksum in a frame.
pub const OFF_IP_CHECK: usize = 24;
/// Offset of the IPv4 source address in a frame.
pub const OFF_IP_SADDR: usize = 26;
/// Offset of the TCP/UDP header (its source port first) in a frame.
pub const OFF_L4: usize = 34;
/// Offset of the UDP checksum in a frame.
pub const OFF_UDP_CHECK: usize = 40;
/// Offset of the TCP checksum in a frame.
pub const OFF_TCP_CHECK: usize = 50;
/// Offset of the UDP payload (the stamp) in a frame.
pub const OFF_UDP_PAYLOAD: usize = 42;
/// Offset of the TCP payload (the stamp) in a frame.
pub const OFF_TCP_PAYLOAD: usize = 54;

/// Bytes of the latency stamp at the start of the L4 payload.
pub const STAMP_LEN: usize = 8;
/// The stamp's top 16 bits (`"PG"`).
pub const STAMP_MAGIC: u64 = 0x5047;
/// Bits of `bpf_ktime_get_ns()` the stamp keeps; latencies are computed modulo 2^48.
pub const STAMP_BITS: u32 = 48;

/// Destination MACs the sink tells apart (`PKTGEN_MAX_MACS`); others are counted in the totals
/// and in [`SinkTotals::mac_overflow`].
pub const MAX_MACS: u32 = 1024;

/// One flow's fields for the generator's `flows` map (`struct pktgen_flow`). Every field is in
/// network byte order as it lies in the frame (stored as the frame's bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowAbi {
    /// IPv4 source address bytes.
    pub saddr: [u8; 4],
    /// Source port bytes.
    pub sport: [u8; 2],
    /// IPv4 header checksum bytes.
    pub ip_check: [u8; 2],
    /// TCP/UDP checksum bytes, for a zero stamp.
    pub l4_check: [u8; 2],
    /// Explicit padding.
    pub pad: [u8; 2],
}

const _: () = assert!(size_of::<FlowAbi>() == 12);

impl FlowAbi {
    /// The map value's bytes.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut bytes = [0; 12];
        bytes[0..4].copy_from_slice(&self.saddr);
        bytes[4..6].copy_from_slice(&self.sport);
        bytes[6..8].copy_from_slice(&self.ip_check);
        bytes[8..10].copy_from_slice(&self.l4_check);
        bytes[10..12].copy_from_slice(&self.pad);
        bytes
    }
}

/// The sink's counters on one CPU (`struct pktgen_sink_totals`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkTotals {
    /// Frames seen.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames with a latency stamp, histogrammed.
    pub stamped: u64,
    /// Frames whose destination MAC found no room in the per-MAC map.
    pub mac_overflow: u64,
}

const _: () = assert!(size_of::<SinkTotals>() == 32);

impl SinkTotals {
    /// Reads one CPU's value (native order); missing bytes count as zero.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        SinkTotals {
            packets: u64_at(bytes, 0),
            bytes: u64_at(bytes, 8),
            stamped: u64_at(bytes, 16),
            mac_overflow: u64_at(bytes, 24),
        }
    }
}

impl std::ops::AddAssign for SinkTotals {
    fn add_assign(&mut self, other: SinkTotals) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.stamped += other.stamped;
        self.mac_overflow += other.mac_overflow;
    }
}

/// Key of the sink's per-destination-MAC map (`struct pktgen_mac_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacKeyAbi {
    /// The destination MAC.
    pub mac: [u8; 6],
    /// Explicit padding (zero).
    pub pad: [u8; 2],
}

const _: () = assert!(size_of::<MacKeyAbi>() == 8);

impl MacKeyAbi {
    /// Reads a key; `None` if it is not 8 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; 8] = bytes.try_into().ok()?;
        let mut mac = [0; 6];
        mac.copy_from_slice(&bytes[..6]);
        Some(MacKeyAbi {
            mac,
            pad: [bytes[6], bytes[7]],
        })
    }

    /// The key's bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut bytes = [0; 8];
        bytes[..6].copy_from_slice(&self.mac);
        bytes[6..].copy_from_slice(&self.pad);
        bytes
    }
}

/// Value of the sink's per-destination-MAC map on one CPU (`struct pktgen_mac_counts`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacCountsAbi {
    /// Frames to this MAC.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

const _: () = assert!(size_of::<MacCountsAbi>() == 16);

impl MacCountsAbi {
    /// Reads one CPU's value (native order); missing bytes count as zero.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        MacCountsAbi {
            packets: u64_at(bytes, 0),
            bytes: u64_at(bytes, 8),
        }
    }
}

/// The native-order u64 at `offset`, 0 if `bytes` is too short.
pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    bytes
        .get(offset..offset + 8)
        .and_then(|slice| slice.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}
