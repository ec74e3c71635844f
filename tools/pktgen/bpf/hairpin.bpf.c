/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * pktgen hairpin: the most an interface can forward here. Every frame has its
 * Ethernet source and destination swapped and goes back out of the interface
 * it came in on (XDP_TX); frames too short for an Ethernet header are passed.
 * On veth the peer needs an XDP program (the sink) for XDP_TX to deliver.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hairpinned SEC(".maps");

SEC("xdp")
int pktgen_hairpin(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 mac[ETH_ALEN];
	__u32 zero = 0;
	__u64 *count;

	if (data + 2 * ETH_ALEN > data_end)
		return XDP_PASS;
	__builtin_memcpy(mac, data, ETH_ALEN);
	__builtin_memcpy(data, data + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(data + ETH_ALEN, mac, ETH_ALEN);
	count = bpf_map_lookup_elem(&hairpinned, &zero);
	if (count)
		*count += 1;
	return XDP_TX;
}
