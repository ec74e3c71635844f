/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * rs-decap: the real-server side of LVS-TUN on kernels without the ipip and
 * ip6_tunnel modules. A frame carrying a tunnelled packet addressed to one of
 * this host's addresses (`local_addrs` for IPv4, `local_addrs6` for IPv6,
 * filled by the loader) loses its outer header: the Ethernet header moves
 * forward onto the inner packet, its type rewritten when the inner family
 * differs, and the frame goes to the kernel stack (XDP_PASS), which delivers
 * the inner packet to the VIP held on `lo`. Three kinds:
 *   4in4: outer IPv4, protocol 4 (RFC 2003);
 *   6in6: outer IPv6, next header 41 (RFC 2473);
 *   4in6: outer IPv6, next header 4 (RFC 2473 section 3).
 * Every other frame is passed untouched, and so is a tunnelled frame that
 * cannot be decapsulated (outer fragment, outer IPv6 extension headers, inner
 * packet not a whole packet of the family the outer header names), counted.
 * Nothing is ever dropped.
 *
 * The 4in4 path mirrors dataplane/src/rewrite/tun.rs `decapsulate` check for
 * check; the crate's tests run one golden table through both.
 *
 * Outer IPv6 is decapsulated only as a bare 40-byte header, which is what the
 * director sends. A tunnelled packet behind extension headers (Linux's
 * ip6_tunnel adds a destination options header with the RFC 2473 4.1.1
 * tunnel encapsulation limit, for instance) is counted, not decapsulated:
 * only the first extension header's next header is looked at, so one behind
 * a longer chain counts as not_for_us.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Keep in step with COUNTER_NAMES in src/lib.rs; append only. */
enum rs_decap_counter {
	RSD_DECAPSULATED_4IN4 = 0,
	/* Not a tunnelled packet, or not addressed to a local address. */
	RSD_NOT_FOR_US = 1,
	/* Ours, but the outer packet is a fragment (no reassembly here). */
	RSD_OUTER_FRAGMENT = 2,
	/* Ours (4in4), but the inner packet is not a whole IPv4 packet. */
	RSD_MALFORMED_4IN4 = 3,
	RSD_DECAPSULATED_6IN6 = 4,
	RSD_DECAPSULATED_4IN6 = 5,
	/* Ours (outer IPv6, next header 41), but the outer payload or the inner
	 * packet is not a whole IPv6 packet. */
	RSD_MALFORMED_6IN6 = 6,
	/* Ours (outer IPv6, next header 4), but the outer payload or the inner
	 * packet is not a whole IPv4 packet. */
	RSD_MALFORMED_4IN6 = 7,
	/* Ours, outer IPv6 whose first extension header (hop-by-hop, routing,
	 * destination options) is followed by a tunnelled packet. */
	RSD_OUTER_EXT_HEADERS = 8,
	RSD_COUNTER_MAX = 9,
};

#define RSD_MAX_LOCAL_ADDRS 256

/* Key: IPv4 address in network byte order. Value unused (1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RSD_MAX_LOCAL_ADDRS);
	__type(key, __u32);
	__type(value, __u8);
} local_addrs SEC(".maps");

/* Key: IPv6 address in network byte order. Value unused (1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RSD_MAX_LOCAL_ADDRS);
	__type(key, struct in6_addr);
	__type(value, __u8);
} local_addrs6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RSD_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define IPV6_HLEN 40

static __always_inline int count(__u32 counter, int action)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &counter);

	if (value)
		*value += 1;
	return action;
}

/*
 * Removes the outer_len bytes between the Ethernet header and the inner
 * packet (checked by the caller to be a whole inner_total-byte packet of the
 * family inner_proto names), sets the Ethernet type to inner_proto and trims
 * whatever follows the inner packet. Counts `done`, or `malformed` if the
 * frame could not be changed (it is then untouched).
 */
static __always_inline int strip_outer(struct xdp_md *ctx, __u32 outer_len,
				       __u32 inner_total, __be16 inner_proto,
				       __u32 done, __u32 malformed)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ethhdr saved;
	int excess;

	if ((void *)(eth + 1) > data_end)
		return count(malformed, XDP_PASS);
	/* Nothing has been written yet; from here the frame is changed. The Ethernet
	 * header goes through the stack because adjust_head invalidates every packet
	 * pointer the verifier knows (all of them must be reloaded and rechecked). */
	__builtin_memcpy(&saved, eth, sizeof(saved));
	saved.h_proto = inner_proto;
	if (bpf_xdp_adjust_head(ctx, outer_len))
		/* Only fails if fewer than ETH_HLEN bytes would remain, which the
		 * callers' checks rule out; the frame is still untouched. */
		return count(malformed, XDP_PASS);

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
		/* A failure leaves a longer but valid frame: ip_rcv and ipv6_rcv trim
		 * to the header's length. */
		bpf_xdp_adjust_tail(ctx, -excess);

	return count(done, XDP_PASS);
}

/* The outer IPv4 path (4in4), unchanged from before IPv6. */
static __always_inline int decap_ipv4(struct xdp_md *ctx, void *data, void *data_end)
{
	struct iphdr *outer = data + ETH_HLEN, *inner;
	__u32 outer_len, outer_total, inner_len, inner_total, frame_len, daddr;

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
		return count(RSD_MALFORMED_4IN4, XDP_PASS);
	if (outer_total - outer_len < sizeof(*inner))
		return count(RSD_MALFORMED_4IN4, XDP_PASS);
	if (inner->version != 4 || inner->ihl < 5)
		return count(RSD_MALFORMED_4IN4, XDP_PASS);
	inner_len = inner->ihl * 4;
	inner_total = bpf_ntohs(inner->tot_len);
	if (inner_total < inner_len || inner_total > outer_total - outer_len)
		return count(RSD_MALFORMED_4IN4, XDP_PASS);

	return strip_outer(ctx, outer_len, inner_total, bpf_htons(ETH_P_IP),
			   RSD_DECAPSULATED_4IN4, RSD_MALFORMED_4IN4);
}

/* 6in6 and 4in6: a bare 40-byte outer IPv6 header (RFC 8200) addressed to us. */
static __always_inline int decap_ipv6(struct xdp_md *ctx, void *data, void *data_end)
{
	struct ipv6hdr *outer = data + ETH_HLEN;
	struct in6_addr daddr;
	__u32 payload_len, inner_total, frame_len, malformed;
	__u8 next, *ext_next;

	if ((void *)(outer + 1) > data_end)
		return count(RSD_NOT_FOR_US, XDP_PASS);
	if (outer->version != 6)
		return count(RSD_NOT_FOR_US, XDP_PASS);
	next = outer->nexthdr;
	/* Cheap test first: most IPv6 traffic (TCP, UDP, ICMPv6 and NDP) costs no
	 * map lookup. */
	switch (next) {
	case IPPROTO_IPV6:
	case IPPROTO_IPIP:
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
	case IPPROTO_FRAGMENT:
		break;
	default:
		return count(RSD_NOT_FOR_US, XDP_PASS);
	}
	/* On the stack, as for IPv4. */
	__builtin_memcpy(&daddr, &outer->daddr, sizeof(daddr));
	if (!bpf_map_lookup_elem(&local_addrs6, &daddr))
		return count(RSD_NOT_FOR_US, XDP_PASS);

	if (next != IPPROTO_IPV6 && next != IPPROTO_IPIP) {
		/* An extension header: every kind this switch lets through starts
		 * with its next header (RFC 8200 4.3-4.6). One level only; a chain
		 * walk would buy nothing, as nothing behind it is decapsulated. */
		ext_next = (void *)(outer + 1);
		if ((void *)(ext_next + 1) > data_end)
			return count(RSD_NOT_FOR_US, XDP_PASS);
		if (*ext_next != IPPROTO_IPV6 && *ext_next != IPPROTO_IPIP)
			return count(RSD_NOT_FOR_US, XDP_PASS);
		if (next == IPPROTO_FRAGMENT)
			return count(RSD_OUTER_FRAGMENT, XDP_PASS);
		return count(RSD_OUTER_EXT_HEADERS, XDP_PASS);
	}

	malformed = next == IPPROTO_IPV6 ? RSD_MALFORMED_6IN6 : RSD_MALFORMED_4IN6;
	payload_len = bpf_ntohs(outer->payload_len);
	frame_len = data_end - data;
	/* Payload length 0 would be a jumbogram (RFC 2675), which needs a hop-by-hop
	 * header and so never gets here: it is an empty, hence malformed, tunnel. */
	if (payload_len > frame_len - ETH_HLEN - IPV6_HLEN)
		return count(malformed, XDP_PASS);

	if (next == IPPROTO_IPV6) {
		struct ipv6hdr *inner = (void *)(outer + 1);

		if ((void *)(inner + 1) > data_end || payload_len < IPV6_HLEN)
			return count(RSD_MALFORMED_6IN6, XDP_PASS);
		if (inner->version != 6)
			return count(RSD_MALFORMED_6IN6, XDP_PASS);
		inner_total = IPV6_HLEN + bpf_ntohs(inner->payload_len);
		if (inner_total > payload_len)
			return count(RSD_MALFORMED_6IN6, XDP_PASS);
		return strip_outer(ctx, IPV6_HLEN, inner_total, bpf_htons(ETH_P_IPV6),
				   RSD_DECAPSULATED_6IN6, RSD_MALFORMED_6IN6);
	}

	{
		struct iphdr *inner = (void *)(outer + 1);

		if ((void *)(inner + 1) > data_end || payload_len < sizeof(*inner))
			return count(RSD_MALFORMED_4IN6, XDP_PASS);
		if (inner->version != 4 || inner->ihl < 5)
			return count(RSD_MALFORMED_4IN6, XDP_PASS);
		inner_total = bpf_ntohs(inner->tot_len);
		if (inner_total < inner->ihl * 4U || inner_total > payload_len)
			return count(RSD_MALFORMED_4IN6, XDP_PASS);
		/* The Ethernet type changes with the family (0x86DD -> 0x0800). */
		return strip_outer(ctx, IPV6_HLEN, inner_total, bpf_htons(ETH_P_IP),
				   RSD_DECAPSULATED_4IN6, RSD_MALFORMED_4IN6);
	}
}

SEC("xdp")
int rs_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return count(RSD_NOT_FOR_US, XDP_PASS);
	/* A VLAN-tagged frame is passed untouched (with rx-vlan-offload the NIC strips
	 * the tag before XDP sees the frame, so the usual case still works). */
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return decap_ipv4(ctx, data, data_end);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return decap_ipv6(ctx, data, data_end);
	return count(RSD_NOT_FOR_US, XDP_PASS);
}
