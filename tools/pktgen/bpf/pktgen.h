/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * The ABI pktgen's XDP programs share with user space (src/abi.rs mirrors
 * every struct and constant here, with size assertions).
 *
 * Frames are untagged Ethernet + IPv4 without options + UDP or TCP without
 * options, so every field the generator writes sits at a fixed offset.
 */
#ifndef PKTGEN_H
#define PKTGEN_H

#include <linux/types.h>

/* Bytes of the frame template the generator copies into every frame: the
 * Ethernet, IPv4 and TCP headers (UDP: the headers and the first 12 bytes of
 * payload). Downstream XDP programs may rewrite a live frame in place (the
 * hairpin swaps its MACs) and live-frames mode recycles pages without
 * restoring their contents, so the whole header is written every time. */
#define PKTGEN_HEADER_COPY 54

/* Offsets in the frame. */
#define PKTGEN_OFF_IP_CHECK 24
#define PKTGEN_OFF_IP_SADDR 26
#define PKTGEN_OFF_L4 34
#define PKTGEN_OFF_UDP_CHECK 40
#define PKTGEN_OFF_TCP_CHECK 50
#define PKTGEN_OFF_UDP_PAYLOAD 42
#define PKTGEN_OFF_TCP_PAYLOAD 54

/* The latency stamp: 8 bytes at the start of the L4 payload, big endian:
 * PKTGEN_STAMP_MAGIC in the top 16 bits, bpf_ktime_get_ns() (CLOCK_MONOTONIC)
 * modulo 2^48 below. The sink subtracts modulo 2^48 (78 hours). */
#define PKTGEN_STAMP_LEN 8
#define PKTGEN_STAMP_MAGIC 0x5047ULL /* "PG" */
#define PKTGEN_STAMP_BITS 48

/* One flow's fields, precomputed by user space for the frame template
 * (checksums as they appear on the wire, for a zero stamp). All fields are
 * in network byte order as stored in the frame. */
struct pktgen_flow {
	__u32 saddr;
	__u16 sport;
	__u16 ip_check;
	__u16 l4_check;
	__u16 pad;
};

/* The sink's counters (one per CPU). */
struct pktgen_sink_totals {
	__u64 packets;
	__u64 bytes;
	/* Frames carrying a stamp, histogrammed. */
	__u64 stamped;
	/* Frames whose destination MAC found no room in dst_macs (still counted
	 * in packets and bytes). */
	__u64 mac_overflow;
};

/* Key of the sink's per-destination-MAC map. */
struct pktgen_mac_key {
	__u8 mac[6];
	__u16 pad;
};

/* Value of the sink's per-destination-MAC map (one per CPU). */
struct pktgen_mac_counts {
	__u64 packets;
	__u64 bytes;
};

#define PKTGEN_MAX_MACS 1024

/* Latency histogram: log-linear buckets, PKTGEN_SUB_BUCKETS per power of two
 * (precision 1/16, about 6%). Value v (ns) -> bucket:
 *   v < 16:  v
 *   else:    e = floor(log2 v) (clamped to PKTGEN_MAX_EXP),
 *            16 + (e - 4) * 16 + ((v >> (e - 4)) & 15)
 * src/histogram.rs holds the same function and the inverse. */
#define PKTGEN_SUB_BITS 4
#define PKTGEN_SUB_BUCKETS 16
#define PKTGEN_MAX_EXP 47
#define PKTGEN_LATENCY_BUCKETS \
	(PKTGEN_SUB_BUCKETS + (PKTGEN_MAX_EXP - PKTGEN_SUB_BITS + 1) * PKTGEN_SUB_BUCKETS)

#endif
