/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * rs-decap: the real-server side of LVS-TUN on kernels without the ipip
 * module. An IPv4 frame carrying IP-in-IP (protocol 4) addressed to one of
 * this host's addresses (`local_addrs`, filled by the loader) loses its outer
 * header: the Ethernet header moves forward onto the inner packet and the
 * frame goes to the kernel stack (XDP_PASS), which delivers the inner packet
 * to the VIP held on `lo`. Every other frame is passed untouched, and so is a
 * tunnelled frame that cannot be decapsulated (outer fragment, inner packet
 * not a whole IPv4 packet), counted.
 *
 * Mirrors dataplane/src/rewrite/tun.rs `decapsulate` check for check; the
 * crate's tests run one golden table through both.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Keep in step with COUNTER_NAMES in src/lib.rs. */
enum rs_decap_counter {
	RSD_DECAPSULATED = 0,
	/* Not IPv4, not protocol 4, or not addressed to a local address. */
	RSD_NOT_FOR_US = 1,
	/* Ours, but the outer packet is a fragment (no reassembly here). */
	RSD_OUTER_FRAGMENT = 2,
	/* Ours, but the inner packet is not a whole IPv4 packet. */
	RSD_MALFORMED = 3,
	RSD_COUNTER_MAX = 4,
};

#define RSD_MAX_LOCAL_ADDRS 256

/* Key: IPv4 address in network byte order. Value unused (1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RSD_MAX_LOCAL_ADDRS);
	__type(key, __u32);
	__type(value, __u8);
} local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RSD_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

static __always_inline int count(__u32 counter, int action)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &counter);

	if (value)
		*value += 1;
	return action;
}

SEC("xdp")
int rs_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ethhdr saved;
	struct iphdr *outer, *inner;
	__u32 outer_len, outer_total, inner_len, inner_total, frame_len, daddr;
	int excess;

	if ((void *)(eth + 1) > data_end)
		return count(RSD_NOT_FOR_US, XDP_PASS);
	/* A VLAN-tagged frame is passed untouched (with rx-vlan-offload the NIC strips
	 * the tag before XDP sees the frame, so the usual case still works). */
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return count(RSD_NOT_FOR_US, XDP_PASS);

	outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end)
		return count(RSD_NOT_FOR_US, XDP_PASS);
	if (outer->version != 4 || outer->ihl < 5)
		return count(RSD_NOT_FOR_US, XDP_PASS);
	outer_len = outer->ihl * 4;
	outer_total = bpf_ntohs(outer->tot_len);
	frame_len = data_end - data;
	if (outer_total < outer_len || outer_total > frame_len - ETH_HLEN)
		return count(RSD_NOT_FOR_US, XDP_PASS);
	if (outer->protocol != IPPROTO_IPIP)
		return count(RSD_NOT_FOR_US, XDP_PASS);
	/* Copied to the stack: a map key read straight from packet memory is legal but
	 * depends on the kernel's packet-pointer rules for helper arguments; a stack
	 * key works on every kernel with XDP. */
	daddr = outer->daddr;
	if (!bpf_map_lookup_elem(&local_addrs, &daddr))
		return count(RSD_NOT_FOR_US, XDP_PASS);
	/* The outer header checksum is not verified (nor by the Rust reference): the
	 * kernel still verifies the inner one, which is what gets delivered. */
	if (outer->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return count(RSD_OUTER_FRAGMENT, XDP_PASS);

	/* outer_len comes from the 4-bit IHL, so the verifier knows it is at most 60
	 * and accepts the variable offset; the bounds check below is still needed
	 * before any inner byte is read. */
	inner = (void *)outer + outer_len;
	if ((void *)(inner + 1) > data_end)
		return count(RSD_MALFORMED, XDP_PASS);
	if (outer_total - outer_len < sizeof(*inner))
		return count(RSD_MALFORMED, XDP_PASS);
	if (inner->version != 4 || inner->ihl < 5)
		return count(RSD_MALFORMED, XDP_PASS);
	inner_len = inner->ihl * 4;
	inner_total = bpf_ntohs(inner->tot_len);
	if (inner_total < inner_len || inner_total > outer_total - outer_len)
		return count(RSD_MALFORMED, XDP_PASS);

	/* Nothing has been written yet; from here the frame is changed. The Ethernet
	 * header goes through the stack because adjust_head invalidates every packet
	 * pointer the verifier knows (all of them must be reloaded and rechecked). */
	__builtin_memcpy(&saved, eth, sizeof(saved));
	if (bpf_xdp_adjust_head(ctx, outer_len))
		/* Only fails if fewer than ETH_HLEN bytes would remain, which the
		 * checks above rule out; the frame is still untouched. */
		return count(RSD_MALFORMED, XDP_PASS);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		/* Unreachable (the inner header follows), but the verifier needs the
		 * check after adjust_head. The outer header is already gone, so the
		 * frame could not be handed to the kernel intact. */
		return XDP_DROP;
	__builtin_memcpy(eth, &saved, sizeof(saved));

	/* Drop Ethernet padding and anything past the inner packet, as the Rust
	 * reference does (the kernel would trim it too; this keeps them identical). */
	excess = (int)((long)data_end - (long)data) - (int)(ETH_HLEN + inner_total);
	if (excess > 0)
		/* A failure leaves a longer but valid frame: ip_rcv trims to tot_len. */
		bpf_xdp_adjust_tail(ctx, -excess);

	return count(RSD_DECAPSULATED, XDP_PASS);
}
