/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * pktgen sink: counts every frame arriving on the interface (per CPU, and per
 * destination MAC so the spread over real servers shows) and drops it. With
 * `latency` set, a frame whose L4 payload starts with pktgen's stamp (under an
 * IP-in-IP outer header too, as LVS-TUN sends it) adds its one-way latency,
 * bpf_ktime_get_ns() now minus the stamp, to a log-linear histogram.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "pktgen.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

const volatile __u8 latency = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pktgen_sink_totals);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, PKTGEN_MAX_MACS);
	__type(key, struct pktgen_mac_key);
	__type(value, struct pktgen_mac_counts);
} dst_macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PKTGEN_LATENCY_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} latency_hist SEC(".maps");

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* floor(log2(v)) for v > 0, by halving (no loop for the verifier). */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

static __always_inline __u32 latency_bucket(__u64 v)
{
	__u32 e;

	if (v < PKTGEN_SUB_BUCKETS)
		return (__u32)v;
	e = log2_u64(v);
	if (e > PKTGEN_MAX_EXP)
		return PKTGEN_LATENCY_BUCKETS - 1;
	return PKTGEN_SUB_BUCKETS + (e - PKTGEN_SUB_BITS) * PKTGEN_SUB_BUCKETS +
	       ((v >> (e - PKTGEN_SUB_BITS)) & (PKTGEN_SUB_BUCKETS - 1));
}

/* Whether `ip` (whole, in the frame) is an IPv4 header without a fragment
 * offset (a later fragment has no L4 header). */
static __always_inline int is_first_ipv4(struct iphdr *ip)
{
	return ip->version == 4 && ip->ihl >= 5 && !(ip->frag_off & bpf_htons(IP_OFFSET));
}

/* Where pktgen's stamp would be: the start of the L4 payload of the (inner)
 * IPv4 packet, or 0 if there is none. Each header's fields are read right
 * after its bounds check: the verifier tracks the checked pointer, not a
 * recomputed data + offset. */
static __always_inline __u32 stamp_offset(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct tcphdr *tcp;
	__u32 offset;
	__u8 protocol;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	if (!is_first_ipv4(ip))
		return 0;
	protocol = ip->protocol;
	offset = sizeof(*eth) + ip->ihl * 4;
	if (protocol == IPPROTO_IPIP) {
		/* offset <= 14 + 60: the mask tells the verifier. */
		struct iphdr *inner = data + (offset & 0x7f);

		if ((void *)(inner + 1) > data_end || !is_first_ipv4(inner))
			return 0;
		protocol = inner->protocol;
		offset += inner->ihl * 4;
	}
	if (protocol == IPPROTO_UDP)
		return offset + sizeof(struct udphdr);
	if (protocol != IPPROTO_TCP)
		return 0;
	/* offset <= 14 + 60 + 60. */
	tcp = data + (offset & 0xff);
	if ((void *)(tcp + 1) > data_end)
		return 0;
	return offset + tcp->doff * 4;
}

static __always_inline void record_latency(void *data, void *data_end,
					   struct pktgen_sink_totals *sums)
{
	__u32 offset = stamp_offset(data, data_end);
	__u64 *slot, stamp, now, delta;
	__u32 bucket;
	__u8 *bytes;

	/* offset < 256 for any frame stamp_offset accepts; the mask tells the
	 * verifier so. */
	if (!offset)
		return;
	bytes = data + (offset & 0x1ff);
	if ((void *)(bytes + PKTGEN_STAMP_LEN) > data_end)
		return;
	stamp = bpf_be64_to_cpu(*(__u64 *)bytes);
	if ((stamp >> PKTGEN_STAMP_BITS) != PKTGEN_STAMP_MAGIC)
		return;
	now = bpf_ktime_get_ns();
	delta = (now - stamp) & ((1ULL << PKTGEN_STAMP_BITS) - 1);
	bucket = latency_bucket(delta);
	slot = bpf_map_lookup_elem(&latency_hist, &bucket);
	if (slot)
		*slot += 1;
	sums->stamped++;
}

SEC("xdp")
int pktgen_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct pktgen_sink_totals *sums;
	struct pktgen_mac_counts *counts;
	struct pktgen_mac_key key = {};
	__u32 zero = 0;

	sums = bpf_map_lookup_elem(&totals, &zero);
	if (!sums)
		return XDP_DROP;
	sums->packets++;
	sums->bytes += len;

	if (data + ETH_ALEN <= data_end) {
		__builtin_memcpy(key.mac, data, ETH_ALEN);
		counts = bpf_map_lookup_elem(&dst_macs, &key);
		if (counts) {
			counts->packets++;
			counts->bytes += len;
		} else {
			struct pktgen_mac_counts first = { .packets = 1, .bytes = len };

			if (bpf_map_update_elem(&dst_macs, &key, &first, BPF_NOEXIST))
				sums->mac_overflow++;
		}
	}

	if (latency)
		record_latency(data, data_end, sums);
	return XDP_DROP;
}
