/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * The director's XDP classifier. It only decides where a frame goes:
 * frames for a (VIP, port, protocol) in `services` are redirected to the
 * AF_XDP socket bound to the receiving queue; everything else -- ARP, ping,
 * the host's own traffic, and anything malformed -- goes to the kernel
 * untouched. It never rewrites or drops a frame.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "director.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DIRECTOR_MAX_SERVICES);
	__type(key, struct service_key);
	__type(value, struct service_value);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, DIRECTOR_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDP_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} xdp_counters SEC(".maps");

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

static __always_inline int count(__u32 counter, int action)
{
	__u64 *value = bpf_map_lookup_elem(&xdp_counters, &counter);

	if (value)
		*value += 1;
	return action;
}

SEC("xdp")
int director_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u16 *ports;
	struct service_key key = {};
	struct service_value *service;
	long action;

	if ((void *)(eth + 1) > data_end)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD))
		return count(XDP_CNT_VLAN, XDP_PASS);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return count(XDP_CNT_NOT_IPV4, XDP_PASS);

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);
	if (ip->version != 4 || ip->ihl < 5)
		return count(XDP_CNT_BAD_IHL, XDP_PASS);
	/* User space handles only 20-byte headers; the kernel copes with options. */
	if (ip->ihl > 5)
		return count(XDP_CNT_IP_OPTIONS, XDP_PASS);
	/* Only the first fragment carries ports, so no fragment can be classified. */
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return count(XDP_CNT_FRAGMENT, XDP_PASS);
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return count(XDP_CNT_OTHER_PROTOCOL, XDP_PASS);

	ports = (void *)(ip + 1);
	if ((void *)(ports + 2) > data_end)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);

	key.vip_be = ip->daddr;
	key.port_be = ports[1];
	key.protocol = ip->protocol;
	service = bpf_map_lookup_elem(&services, &key);
	if (!service)
		return count(XDP_CNT_NO_SERVICE, XDP_PASS);
	if (!(service->flags & SERVICE_F_ENABLED))
		return count(XDP_CNT_SERVICE_DISABLED, XDP_PASS);

	/* The low bits of flags are the action when the queue has no socket. */
	action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	if (action == XDP_REDIRECT)
		return count(XDP_CNT_REDIRECTED, XDP_REDIRECT);
	return count(XDP_CNT_NO_SOCKET, XDP_PASS);
}
