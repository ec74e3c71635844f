/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * pktgen send: the generator, run by user space with BPF_PROG_RUN in
 * live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES), as xdp-trafficgen does. The
 * kernel hands it a page-pool copy of the frame template `repeat` times; it
 * writes the template's headers, the next flow's source address and port with
 * their precomputed checksums, optionally a latency stamp, and redirects the
 * frame out of `ifindex`. The kernel flushes the redirected frames once per
 * batch (batch_size, at most 256).
 *
 * Pacing happens here, not in user space: the sending thread busy-waits in
 * BPF_PROG_RUN rather than sleeping between short calls (late wake-ups on a
 * busy machine, and a page pool set up per call). With `interval_fp` set, a
 * run whose frame is not due yet drops it (XDP_DROP, not counted) and the next
 * run tries again: frames leave evenly spaced, about one run (~0.1-0.2 us)
 * late at most. A sender that falls behind (preempted, or flushing a batch)
 * catches up on at most `max_lag_fp` of backlog, back to back, and forgives
 * the rest. `send_limit` ends a count-bounded run exactly.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "pktgen.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set by user space before load; the verifier sees them as constants. */
const volatile __u32 ifindex = 0;
const volatile __u32 flow_count = 1;
/* 1: TCP (checksum at 50, payload at 54); 0: UDP (checksum at 40, payload at 42). */
const volatile __u8 is_tcp = 0;
const volatile __u8 stamp = 0;
/* Nanoseconds between frames, in 48.16 fixed point; 0: as fast as possible. */
const volatile __u64 interval_fp = 0;
/* The most backlog a paced sender catches up on, same unit. */
const volatile __u64 max_lag_fp = 0;

/* The template's first PKTGEN_HEADER_COPY bytes, set by user space before
 * load. Not const: the compiler could otherwise copy the initializer (zeros)
 * instead of reading the map. */
__u8 header[PKTGEN_HEADER_COPY] = {};

/* Next flow to send; frames sent. BPF_PROG_RUN runs on one CPU at a time
 * here (one sending thread), so plain increments are exact. */
__u32 next_flow = 0;
__u64 sent = 0;
/* Frames to send in all (sent stops there); set by user space before a run. */
__u64 send_limit = 0;
/* Pacing, set by user space before a run: its start (bpf_ktime_get_ns) and
 * when the next frame is due, in ns since the start in 48.16 fixed point. */
__u64 pace_start_ns = 0;
__u64 pace_next_fp = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* resized by user space to flow_count */
	__type(key, __u32);
	__type(value, struct pktgen_flow);
} flows SEC(".maps");

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

SEC("xdp")
int pktgen_send(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 index = next_flow;
	struct pktgen_flow *flow;
	__u16 check;

	if (sent >= send_limit)
		return XDP_DROP;
	if (interval_fp) {
		__u64 elapsed_fp = (bpf_ktime_get_ns() - pace_start_ns) << 16;

		if (elapsed_fp < pace_next_fp)
			return XDP_DROP;
		if (elapsed_fp - pace_next_fp > max_lag_fp)
			pace_next_fp = elapsed_fp;
		pace_next_fp += interval_fp;
	}

	next_flow = index + 1 >= flow_count ? 0 : index + 1;
	flow = bpf_map_lookup_elem(&flows, &index);
	if (!flow)
		return XDP_ABORTED;
	/* User space refuses frames shorter than the header copy plus a stamp. */
	if (data + PKTGEN_HEADER_COPY + PKTGEN_STAMP_LEN > data_end)
		return XDP_ABORTED;

	__builtin_memcpy(data, header, PKTGEN_HEADER_COPY);
	*(__u32 *)(data + PKTGEN_OFF_IP_SADDR) = flow->saddr;
	*(__u16 *)(data + PKTGEN_OFF_IP_CHECK) = flow->ip_check;
	*(__u16 *)(data + PKTGEN_OFF_L4) = flow->sport;
	check = flow->l4_check;

	if (stamp) {
		__u64 now = bpf_ktime_get_ns() & ((1ULL << PKTGEN_STAMP_BITS) - 1);
		__u64 value = bpf_cpu_to_be64((PKTGEN_STAMP_MAGIC << PKTGEN_STAMP_BITS) | now);
		__u16 *words = data + (is_tcp ? PKTGEN_OFF_TCP_PAYLOAD : PKTGEN_OFF_UDP_PAYLOAD);
		/* The stamp starts at an even offset from the L4 header, so its
		 * 16-bit words are checksum words; the template's checksum covers
		 * zeros there (RFC 1624: add the new words to the complemented sum).
		 * One's complement sums do not depend on byte order, so the words
		 * are added as they lie in memory. */
		__u32 sum = (__u16)~check;

		*(__u64 *)words = value;
		sum += words[0];
		sum += words[1];
		sum += words[2];
		sum += words[3];
		check = ~csum_fold(sum);
		/* UDP: a computed 0 is sent as 0xffff (0 means "no checksum"). */
		if (!is_tcp && check == 0)
			check = 0xffff;
	}
	*(__u16 *)(data + (is_tcp ? PKTGEN_OFF_TCP_CHECK : PKTGEN_OFF_UDP_CHECK)) = check;

	sent++;
	return bpf_redirect(ifindex, 0);
}
