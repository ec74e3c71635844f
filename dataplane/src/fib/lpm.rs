//! Longest-prefix match over a fixed set of prefixes: built once from `(prefix, length, value)`
//! triples, then immutable and lookup-only.
//!
//! The shape is a multibit trie with stride 8 (one level per address byte: 4 for IPv4, 16 for
//! IPv6) with leaf pushing and prefix expansion, as DPDK's `rte_lpm` expands a prefix over the
//! tbl24/tbl8 entries it covers. Each node is stored compressed the way Poptrie does it (Asai and
//! Ohara, "Poptrie: A Compressed Trie with Population Count for Fast and Scalable Software IP
//! Routing Table Lookup", SIGCOMM 2015, section 3): instead of 256 expanded entries a node holds
//! two 256-bit maps and two base indices.
//! - `children`: bit `s` says slot `s` descends to a child node. A node's children sit next to each
//!   other in one array, so child `k` (counting set bits up to `s`) is `children_base + k - 1`.
//! - `leaves`: bit `s` says a run of equal leaf values starts at slot `s` (slots with a child are
//!   skipped when runs are formed: Poptrie's leafvec). A slot's value is found the same way, by
//!   counting, from `leaves_base`. Expanding a short prefix over many slots costs one leaf, not
//!   one per slot.
//!
//! A node is [`NODE_BYTES`] (72) bytes against rte_lpm's 1 KiB per 256-entry tbl8 group; a leaf
//! is one `Option<V>`. Measured (`tests::hundred_thousand_random_prefixes_stay_small`): 100 000
//! random IPv4 prefixes of /0 to /32 take 58 769 nodes and 5.5 MB, 54 bytes per prefix. Poptrie's direct-pointing
//! top level (one array indexed by the first 16 or 18 bits) would save a level of lookups at the
//! cost of a fixed 256 KiB-1 MiB array; it is left out until a bench asks for it.
//!
//! Lookup reads at most `BITS / 8` nodes, allocates nothing, and cannot panic whatever the
//! address: every index is read with `get`, so a table that were somehow inconsistent would answer
//! "no match" rather than fault.
//!
//! Overlaps: the longest matching prefix wins regardless of the order prefixes were inserted in.
//! The same prefix inserted twice (same masked address, same length): the last insertion wins.
//! Address bits beyond a prefix's length are ignored (`10.1.2.3/16` is `10.1.0.0/16`).
//!
//! What it must not do: change after it is built (build a new one and publish it), or know what
//! its values mean (the FIB maps them to routes).

use std::fmt::Debug;

/// Bits consumed per trie level.
const STRIDE: u32 = 8;
/// Slots per node.
const FANOUT: usize = 1 << STRIDE;
/// `u64` words in a node's 256-bit maps.
const WORDS: usize = FANOUT / 64;

/// An address family's address as an unsigned integer: IPv4 is `u32`, IPv6 is `u128`.
pub trait FibAddress: Copy + Ord + Debug {
    /// Width of the address in bits (a multiple of 8).
    const BITS: u32;
    /// Trie levels: one per address byte.
    const LEVELS: u32 = Self::BITS / STRIDE;

    /// The address byte that indexes trie level `level` (0 is the most significant byte).
    /// `level` must be below [`Self::LEVELS`]; a larger one gives an unspecified byte, never a
    /// panic.
    fn byte_at(self, level: u32) -> u8;

    /// The address with every bit after the first `len` cleared (`len` >= BITS keeps them all).
    #[must_use]
    fn masked(self, len: u32) -> Self;
}

/// The two widths differ only in their type: one body serves both.
macro_rules! fib_address {
    ($width:ty) => {
        impl FibAddress for $width {
            const BITS: u32 = <$width>::BITS;

            #[inline(always)]
            fn byte_at(self, level: u32) -> u8 {
                let shift = Self::BITS.wrapping_sub(STRIDE * (level + 1));
                self.wrapping_shr(shift) as u8
            }

            #[inline]
            fn masked(self, len: u32) -> Self {
                self & <$width>::MAX
                    .checked_shl(Self::BITS.saturating_sub(len))
                    .unwrap_or(0)
            }
        }
    };
}

fib_address!(u32);
fib_address!(u128);

/// A prefix longer than the address it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("prefix length /{len} is longer than the {bits}-bit address")]
pub struct PrefixTooLong {
    /// The length given.
    pub len: u32,
    /// The address width.
    pub bits: u32,
}

/// One compressed trie node (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
struct Node {
    children: [u64; WORDS],
    leaves: [u64; WORDS],
    children_base: u32,
    leaves_base: u32,
}

/// Bytes per trie node.
pub const NODE_BYTES: usize = size_of::<Node>();
const _: () = assert!(NODE_BYTES == 72);

/// How many bits of `map` are set at positions `0..=slot`.
#[inline(always)]
fn rank(map: &[u64; WORDS], slot: u8) -> usize {
    let word = usize::from(slot >> 6);
    let through_slot = u64::MAX >> (63 - (slot & 63));
    let mut count = (map[word] & through_slot).count_ones();
    for bits in &map[..word] {
        count += bits.count_ones();
    }
    count as usize
}

#[inline(always)]
fn is_set(map: &[u64; WORDS], slot: u8) -> bool {
    map[usize::from(slot >> 6)] & (1 << (slot & 63)) != 0
}

fn set(map: &mut [u64; WORDS], slot: usize) {
    map[slot >> 6] |= 1 << (slot & 63);
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Lpm<A: FibAddress, V: Copy> {
    nodes: Vec<Node>,
    leaves: Vec<Option<V>>,
    prefixes: usize,
    _address: std::marker::PhantomData<A>,
}

impl<A: FibAddress, V: Copy> Lpm<A, V> {
    /// The value of the longest prefix that contains `address`, if any does.
    #[inline]
    pub fn lookup(&self, address: A) -> Option<V> {
        let mut node_index = 0usize;
        for level in 0..A::LEVELS {
            let node = self.nodes.get(node_index)?;
            let slot = address.byte_at(level);
            if is_set(&node.children, slot) {
                node_index =
                    (node.children_base as usize + rank(&node.children, slot)).wrapping_sub(1);
                continue;
            }
            let leaf = (node.leaves_base as usize + rank(&node.leaves, slot)).wrapping_sub(1);
            return self.leaves.get(leaf).copied().flatten();
        }
        // The last level never has children.
        None
    }

    /// How many prefixes it was built from (a duplicate counts once per insertion).
    pub fn len(&self) -> usize {
        self.prefixes
    }

    /// Whether it was built from no prefix at all.
    pub fn is_empty(&self) -> bool {
        self.prefixes == 0
    }

    /// Trie nodes, root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Bytes held by nodes and leaves (the fixed-size struct itself excluded).
    pub fn memory_bytes(&self) -> usize {
        self.nodes.len() * NODE_BYTES + self.leaves.len() * size_of::<Option<V>>()
    }
}

impl<A: FibAddress, V: Copy> Default for Lpm<A, V> {
    /// A table that matches nothing.
    fn default() -> Self {
        LpmBuilder::new().build()
    }
}

/// A prefix waiting to be built in, with its insertion order (which breaks ties between
/// duplicates).
#[derive(Clone, Copy, Debug)]
struct Pending<A> {
    address: A,
    len: u32,
    order: usize,
}

/// Collects prefixes, then [`build`](Self::build)s the immutable [`Lpm`].
#[derive(Clone, Debug)]
pub struct LpmBuilder<A: FibAddress, V: Copy> {
    pending: Vec<Pending<A>>,
    values: Vec<V>,
}

impl<A: FibAddress, V: Copy> Default for LpmBuilder<A, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: FibAddress, V: Copy> LpmBuilder<A, V> {
    /// An empty builder.
    pub fn new() -> Self {
        LpmBuilder {
            pending: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Adds `prefix/len -> value`; bits of `prefix` past `len` are ignored.
    pub fn insert(&mut self, prefix: A, len: u32, value: V) -> Result<(), PrefixTooLong> {
        if len > A::BITS {
            return Err(PrefixTooLong { len, bits: A::BITS });
        }
        self.pending.push(Pending {
            address: prefix.masked(len),
            len,
            order: self.values.len(),
        });
        self.values.push(value);
        Ok(())
    }

    /// Builds the table.
    ///
    /// # Panics
    /// Only if the trie would need more than `u32::MAX` nodes or leaves, which memory would not
    /// allow first.
    pub fn build(mut self) -> Lpm<A, V> {
        self.pending
            .sort_unstable_by_key(|p| (p.address, p.len, p.order));
        let mut built = Lpm {
            nodes: vec![Node::default()],
            leaves: Vec::new(),
            prefixes: self.pending.len(),
            _address: std::marker::PhantomData,
        };
        build_node(&mut built, &self.values, 0, 0, &self.pending, None);
        built
    }
}

/// Fills node `node_index` at `level` from `prefixes` (all longer than `8 * level` and inside the
/// node's span, sorted by address), with `inherited` pushed down from the parent slot, then
/// builds its children in a block reserved next to each other.
fn build_node<A: FibAddress, V: Copy>(
    built: &mut Lpm<A, V>,
    values: &[V],
    node_index: usize,
    level: u32,
    prefixes: &[Pending<A>],
    inherited: Option<usize>,
) {
    let level_end = STRIDE * (level + 1);

    // Prefix expansion of the prefixes that end at this level, shortest first so a longer one
    // overwrites the slots it shares with a shorter one; equal ones in insertion order.
    let mut slot_values = [inherited; FANOUT];
    let mut ending_here: Vec<&Pending<A>> =
        prefixes.iter().filter(|p| p.len <= level_end).collect();
    ending_here.sort_by_key(|p| (p.len, p.order));
    for prefix in ending_here {
        let first = usize::from(prefix.address.byte_at(level));
        let count = 1usize << (level_end - prefix.len);
        slot_values[first..first + count].fill(Some(prefix.order));
    }

    // Longer prefixes, grouped by the slot their path leaves this node through (contiguous,
    // as the input is sorted by address).
    let mut groups: Vec<(u8, &[Pending<A>])> = Vec::new();
    let deeper: Vec<Pending<A>> = prefixes
        .iter()
        .filter(|p| p.len > level_end)
        .copied()
        .collect();
    let mut start = 0;
    while start < deeper.len() {
        let slot = deeper[start].address.byte_at(level);
        let end = start
            + deeper[start..]
                .iter()
                .take_while(|p| p.address.byte_at(level) == slot)
                .count();
        groups.push((slot, &deeper[start..end]));
        start = end;
    }

    let mut node = Node {
        children_base: to_u32(built.nodes.len()),
        leaves_base: to_u32(built.leaves.len()),
        ..Node::default()
    };
    for &(slot, _) in &groups {
        set(&mut node.children, usize::from(slot));
    }
    built
        .nodes
        .resize(built.nodes.len() + groups.len(), Node::default());

    // Runs of equal values among the slots without a child.
    let mut previous: Option<Option<usize>> = None;
    for (slot, &value) in slot_values.iter().enumerate() {
        if is_set(&node.children, slot as u8) {
            continue;
        }
        if previous != Some(value) {
            set(&mut node.leaves, slot);
            built.leaves.push(value.map(|order| values[order]));
            previous = Some(value);
        }
    }
    built.nodes[node_index] = node;

    for (child, (slot, group)) in groups.into_iter().enumerate() {
        build_node(
            built,
            values,
            node.children_base as usize + child,
            level + 1,
            group,
            slot_values[usize::from(slot)],
        );
    }
}

fn to_u32(index: usize) -> u32 {
    u32::try_from(index).expect("an LPM table of more than u32::MAX nodes or leaves")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(prefixes: &[(u32, u32, u32)]) -> Lpm<u32, u32> {
        let mut builder = LpmBuilder::new();
        for &(prefix, len, value) in prefixes {
            builder.insert(prefix, len, value).unwrap();
        }
        builder.build()
    }

    fn ip(text: &str) -> u32 {
        text.parse::<std::net::Ipv4Addr>().unwrap().into()
    }

    #[test]
    fn empty_table_matches_nothing() {
        let lpm = Lpm::<u32, u32>::default();
        assert!(lpm.is_empty());
        assert_eq!(lpm.lookup(0), None);
        assert_eq!(lpm.lookup(u32::MAX), None);
        assert_eq!(Lpm::<u128, u32>::default().lookup(u128::MAX), None);
    }

    #[test]
    fn default_route_host_route_and_nesting() {
        let lpm = table(&[
            (ip("10.1.2.3"), 32, 4),
            (0, 0, 0),
            (ip("10.1.0.0"), 16, 2),
            (ip("10.0.0.0"), 8, 1),
            (ip("10.1.2.0"), 24, 3),
        ]);
        assert_eq!(lpm.lookup(ip("192.0.2.1")), Some(0));
        assert_eq!(lpm.lookup(ip("10.200.0.1")), Some(1));
        assert_eq!(lpm.lookup(ip("10.1.200.1")), Some(2));
        assert_eq!(lpm.lookup(ip("10.1.2.4")), Some(3));
        assert_eq!(lpm.lookup(ip("10.1.2.3")), Some(4));
        assert_eq!(lpm.lookup(ip("10.1.2.2")), Some(3));
    }

    #[test]
    fn prefix_bits_past_the_length_are_ignored_and_duplicates_keep_the_last() {
        let lpm = table(&[(ip("10.1.2.3"), 16, 1), (ip("10.1.0.0"), 16, 2)]);
        assert_eq!(lpm.lookup(ip("10.1.9.9")), Some(2));
        assert_eq!(lpm.lookup(ip("10.2.0.0")), None);
    }

    #[test]
    fn too_long_prefix_is_refused() {
        let mut builder = LpmBuilder::<u32, u32>::new();
        assert_eq!(
            builder.insert(0, 33, 1),
            Err(PrefixTooLong { len: 33, bits: 32 })
        );
        let mut builder = LpmBuilder::<u128, u32>::new();
        assert!(builder.insert(0, 128, 1).is_ok());
        assert!(builder.insert(0, 129, 1).is_err());
    }

    #[test]
    fn full_length_u128_prefix() {
        let mut builder = LpmBuilder::<u128, u32>::new();
        builder.insert(0x2001_0db8 << 96, 32, 1).unwrap();
        builder.insert((0x2001_0db8 << 96) | 1, 128, 2).unwrap();
        let lpm = builder.build();
        assert_eq!(lpm.lookup((0x2001_0db8 << 96) | 1), Some(2));
        assert_eq!(lpm.lookup((0x2001_0db8 << 96) | 2), Some(1));
        assert_eq!(lpm.lookup(1), None);
    }

    /// 100 000 random prefixes of uniformly random length /0-/32 (the worst case for a trie:
    /// real tables are mostly /24 and shorter, and share paths). Measured on 2026-12-05: 58 769
    /// nodes of 72 bytes plus 8-byte leaves, 5 477 832 bytes (54 per prefix).
    #[test]
    fn hundred_thousand_random_prefixes_stay_small() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut builder = LpmBuilder::<u32, u32>::new();
        for value in 0..100_000 {
            let random = next();
            builder
                .insert(random as u32, (random >> 32) as u32 % 33, value)
                .unwrap();
        }
        let lpm = builder.build();
        let bytes = lpm.memory_bytes();
        eprintln!(
            "100k random IPv4 prefixes: {} nodes, {bytes} bytes, {} bytes per prefix",
            lpm.node_count(),
            bytes / lpm.len()
        );
        assert!(bytes < 16 << 20, "{bytes} bytes");
    }
}
