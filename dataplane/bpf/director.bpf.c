/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * The director's XDP classifier. It only decides where a frame goes: to the
 * AF_XDP socket bound to the receiving queue, or to the kernel untouched. It
 * never rewrites or drops a frame, and counts every exit in `xdp_counters`.
 *
 * Steered to the sockets (IPv4 without options, not a fragment):
 * - TCP/UDP for a (VIP, port, protocol) in `services`: client traffic;
 * - TCP/UDP from a (real server, port, protocol) in `nat_backends`: a NAT
 *   real server's reply, to be translated back to VIP:port (LVS-NAT);
 * - ICMP destination unreachable and time exceeded whose quoted packet is
 *   from a service (an error about a reply the director sent for a VIP, such
 *   as fragmentation needed from a router on the client's path) or to a NAT
 *   real server (an error about a packet the director sent to it). IPVS
 *   forwards these to the connection's real server or client (ip_vs_in_icmp,
 *   ip_vs_out_icmp); without them path MTU discovery through the director
 *   breaks, and the user-space pipeline translates them likewise.
 * Control loads one instance per interface, with its own maps: the client
 * side's has the services, the server side's the NAT real servers (one
 * interface: both). A service key matches first; a disabled entry
 * (SERVICE_F_ENABLED clear) hands its frames to the kernel.
 *
 * Not steered although from (or about a packet to) a NAT real server: frames
 * addressed to one of the director's own addresses on the interface
 * (`local_addresses`). Those answer the director's own connections -- its
 * health checks -- and belong to its kernel; a worker would drop them.
 *
 * IPv6 (RFC 8200) the same way, through the maps' IPv6 twins (`services6`,
 * `nat_backends6`, `local_addresses6`): the walk follows at most
 * DIRECTOR_MAX_IPV6_EXT_HEADERS hop-by-hop, routing and destination options
 * headers to the upper layer; a fragment header is counted and passed, as
 * Katran does (only the first fragment has ports). ICMPv6 (RFC 4443)
 * destination unreachable, packet too big and time exceeded are steered by
 * the packet they quote, which must be a 40-byte IPv6 header followed by TCP
 * or UDP directly. All other ICMPv6 -- neighbour discovery (RFC 4861), echo,
 * MLD -- is the kernel's: the director answers NDP for its VIPs itself.
 *
 * Everything else -- ARP, ping, the host's own traffic, ICMP about flows we
 * do not serve, anything malformed -- goes to the kernel.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
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

/* Keyed by (real server address, its port, protocol): see struct service_key. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DIRECTOR_MAX_NAT_BACKENDS);
	__type(key, struct service_key);
	__type(value, struct service_value);
} nat_backends SEC(".maps");

/* The director's own addresses on this interface: see struct local_address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DIRECTOR_MAX_LOCAL_ADDRESSES);
	__type(key, struct local_address);
	__type(value, __u8);
} local_addresses SEC(".maps");

/* The IPv6 twins of the three maps above (struct service_key6, local_address6). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DIRECTOR_MAX_SERVICES);
	__type(key, struct service_key6);
	__type(value, struct service_value);
} services6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DIRECTOR_MAX_NAT_BACKENDS);
	__type(key, struct service_key6);
	__type(value, struct service_value);
} nat_backends6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DIRECTOR_MAX_LOCAL_ADDRESSES);
	__type(key, struct local_address6);
	__type(value, __u8);
} local_addresses6 SEC(".maps");

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

/*
 * The ICMP header (RFC 792). Not from <linux/icmp.h>: it includes <linux/if.h>,
 * which pulls in glibc's <sys/socket.h>, and that fails for the BPF target
 * ("'gnu/stubs-32.h' file not found").
 */
struct icmp_header {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 rest;      /* identifier/sequence, next-hop MTU, ... */
};

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11

/* ICMPv6 errors about a flow (RFC 4443); ICMPv6 shares struct icmp_header's layout. */
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3

/* The first two bytes of a hop-by-hop, routing or destination options header
 * (RFC 8200 4.3-4.6); its length counts 8-octet units after the first 8. */
struct ipv6_ext_header {
	__u8 next_header;
	__u8 len;
};

/* Bytes of the offending packet's payload an ICMP error quotes at least
 * (RFC 792): the ports, and what the user-space pipeline requires. */
#define QUOTED_PAYLOAD_LEN 8

static __always_inline int count(__u32 counter, int action)
{
	__u64 *value = bpf_map_lookup_elem(&xdp_counters, &counter);

	if (value)
		*value += 1;
	return action;
}

/* The entry of `map` (services or nat_backends) for one end of a flow. */
static __always_inline struct service_value *lookup(void *map, __u32 addr_be, __u16 port_be,
						    __u8 protocol)
{
	struct service_key key = {
		.vip_be = addr_be,
		.port_be = port_be,
		.protocol = protocol,
		.pad = 0,
	};

	return bpf_map_lookup_elem(map, &key);
}

/* A frame that matched `entry`: to the queue's socket (counted in `counter`)
 * if the entry is enabled and the queue has one, else to the kernel. */
static __always_inline int steer(struct xdp_md *ctx, const struct service_value *entry,
				 __u32 counter)
{
	if (!(entry->flags & SERVICE_F_ENABLED))
		return count(XDP_CNT_SERVICE_DISABLED, XDP_PASS);
	/* The low bits of flags are the action when the queue has no socket. */
	if (bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS) == XDP_REDIRECT)
		return count(counter, XDP_REDIRECT);
	return count(XDP_CNT_NO_SOCKET, XDP_PASS);
}

/* Whether `addr_be` is one of the director's own addresses on this interface. */
static __always_inline int is_local(__u32 addr_be)
{
	struct local_address key = { .addr_be = addr_be };

	return bpf_map_lookup_elem(&local_addresses, &key) != NULL;
}

/* TCP/UDP: for a service by destination, else a NAT reply by source. */
static __always_inline int classify_transport(struct xdp_md *ctx, const struct iphdr *ip,
					      void *data_end)
{
	const __u16 *ports = (const void *)(ip + 1);
	struct service_value *entry;

	if ((const void *)(ports + 2) > data_end)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);
	entry = lookup(&services, ip->daddr, ports[1], ip->protocol);
	if (entry)
		return steer(ctx, entry, XDP_CNT_REDIRECTED);
	entry = lookup(&nat_backends, ip->saddr, ports[0], ip->protocol);
	if (entry) {
		/* The answer to the director's own connection (a health check), not to a client. */
		if (is_local(ip->daddr))
			return count(XDP_CNT_TO_DIRECTOR, XDP_PASS);
		return steer(ctx, entry, XDP_CNT_NAT_REPLY);
	}
	return count(XDP_CNT_NO_SERVICE, XDP_PASS);
}

/* ICMP: errors by the flow they quote, the way the quoted packet travelled. */
static __always_inline int classify_icmp(struct xdp_md *ctx, const struct iphdr *ip,
					 void *data_end)
{
	const struct icmp_header *icmp = (const void *)(ip + 1);
	const struct iphdr *quote = (const void *)(icmp + 1);
	const __u16 *ports = (const void *)(quote + 1);
	struct service_value *entry;

	if ((const void *)(icmp + 1) > data_end)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED)
		return count(XDP_CNT_ICMP_NOT_ERROR, XDP_PASS);
	/*
	 * The quoted header and 8 bytes after it, within the frame and within the
	 * outer total length (what follows it is Ethernet padding, not quote).
	 * Only constant offsets from the packet start: the verifier tracks them
	 * against data_end without help.
	 */
	if ((const void *)ports + QUOTED_PAYLOAD_LEN > data_end ||
	    bpf_ntohs(ip->tot_len) < sizeof(*ip) + sizeof(*icmp) + sizeof(*quote) +
					    QUOTED_PAYLOAD_LEN)
		return count(XDP_CNT_ICMP_TRUNCATED, XDP_PASS);
	/* Ports right after a 20-byte header only; a later fragment has none. */
	if (quote->version != 4 || quote->ihl != 5 || (quote->frag_off & bpf_htons(IP_OFFSET)))
		return count(XDP_CNT_ICMP_BAD_QUOTE, XDP_PASS);
	if (quote->protocol != IPPROTO_TCP && quote->protocol != IPPROTO_UDP)
		return count(XDP_CNT_ICMP_NO_SERVICE, XDP_PASS);

	/* About a reply the director sent from VIP:port (client side). */
	entry = lookup(&services, quote->saddr, ports[0], quote->protocol);
	if (entry)
		return steer(ctx, entry, XDP_CNT_ICMP_REDIRECTED);
	/* About a client's packet the director sent to a NAT real server (server side). */
	entry = lookup(&nat_backends, quote->daddr, ports[1], quote->protocol);
	if (entry) {
		/* About the director's own packet (a health check): errors go to its source. */
		if (is_local(ip->daddr))
			return count(XDP_CNT_TO_DIRECTOR, XDP_PASS);
		return steer(ctx, entry, XDP_CNT_ICMP_REDIRECTED);
	}
	return count(XDP_CNT_ICMP_NO_SERVICE, XDP_PASS);
}

/* The entry of `map` (services6 or nat_backends6) for one end of an IPv6 flow. */
static __always_inline struct service_value *lookup6(void *map, const struct in6_addr *addr,
						     __u16 port_be, __u8 protocol)
{
	struct service_key6 key = {
		.port_be = port_be,
		.protocol = protocol,
		.pad = 0,
	};

	__builtin_memcpy(key.vip, addr, sizeof(key.vip));
	return bpf_map_lookup_elem(map, &key);
}

/* Whether `addr` is one of the director's own IPv6 addresses on this interface. */
static __always_inline int is_local6(const struct in6_addr *addr)
{
	struct local_address6 key;

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	return bpf_map_lookup_elem(&local_addresses6, &key) != NULL;
}

/* IPv6 TCP/UDP whose ports start `offset` bytes into the payload: as classify_transport. */
static __always_inline int classify_transport6(struct xdp_md *ctx, const struct ipv6hdr *ip6,
					       const __u16 *ports, __u32 offset,
					       __u32 payload_len, __u8 protocol, void *data_end)
{
	struct service_value *entry;

	if ((const void *)(ports + 2) > data_end || offset + 4 > payload_len)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);
	entry = lookup6(&services6, &ip6->daddr, ports[1], protocol);
	if (entry)
		return steer(ctx, entry, XDP_CNT_REDIRECTED);
	entry = lookup6(&nat_backends6, &ip6->saddr, ports[0], protocol);
	if (entry) {
		if (is_local6(&ip6->daddr))
			return count(XDP_CNT_TO_DIRECTOR, XDP_PASS);
		return steer(ctx, entry, XDP_CNT_NAT_REPLY);
	}
	return count(XDP_CNT_NO_SERVICE, XDP_PASS);
}

/* ICMPv6 starting `offset` bytes into the payload: errors by the flow they quote, as
 * classify_icmp. */
static __always_inline int classify_icmp6(struct xdp_md *ctx, const struct ipv6hdr *ip6,
					  const struct icmp_header *icmp, __u32 offset,
					  __u32 payload_len, void *data_end)
{
	const struct ipv6hdr *quote = (const void *)(icmp + 1);
	const __u16 *ports = (const void *)(quote + 1);
	struct service_value *entry;

	if ((const void *)(icmp + 1) > data_end || offset + sizeof(*icmp) > payload_len)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);
	if (icmp->type != ICMPV6_DEST_UNREACH && icmp->type != ICMPV6_PKT_TOOBIG &&
	    icmp->type != ICMPV6_TIME_EXCEED)
		return count(XDP_CNT_ICMP_NOT_ERROR, XDP_PASS);
	/* The quoted header and 8 bytes after it, within the frame and the payload. */
	if ((const void *)ports + QUOTED_PAYLOAD_LEN > data_end ||
	    offset + sizeof(*icmp) + sizeof(*quote) + QUOTED_PAYLOAD_LEN > payload_len)
		return count(XDP_CNT_ICMP_TRUNCATED, XDP_PASS);
	if (quote->version != 6)
		return count(XDP_CNT_ICMP_BAD_QUOTE, XDP_PASS);
	switch (quote->nexthdr) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		break;
	/* Ports behind extension headers: the quote is too short to walk them reliably, and
	 * the user-space pipeline expects them right after the header. */
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_FRAGMENT:
	case IPPROTO_DSTOPTS:
		return count(XDP_CNT_ICMP_BAD_QUOTE, XDP_PASS);
	default:
		return count(XDP_CNT_ICMP_NO_SERVICE, XDP_PASS);
	}

	entry = lookup6(&services6, &quote->saddr, ports[0], quote->nexthdr);
	if (entry)
		return steer(ctx, entry, XDP_CNT_ICMP_REDIRECTED);
	entry = lookup6(&nat_backends6, &quote->daddr, ports[1], quote->nexthdr);
	if (entry) {
		if (is_local6(&ip6->daddr))
			return count(XDP_CNT_TO_DIRECTOR, XDP_PASS);
		return steer(ctx, entry, XDP_CNT_ICMP_REDIRECTED);
	}
	return count(XDP_CNT_ICMP_NO_SERVICE, XDP_PASS);
}

/* IPv6: the bounded walk over extension headers to the upper layer (RFC 8200 4.1). */
static __always_inline int classify_ipv6(struct xdp_md *ctx, const struct ipv6hdr *ip6,
					 void *data_end)
{
	const void *cursor = ip6 + 1;
	__u32 offset = 0; /* of cursor, from the end of the fixed header */
	__u32 payload_len;
	__u8 next_header;
	int i;

	if ((const void *)(ip6 + 1) > data_end)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);
	if (ip6->version != 6)
		return count(XDP_CNT_IPV6_BAD_VERSION, XDP_PASS);
	payload_len = bpf_ntohs(ip6->payload_len);
	next_header = ip6->nexthdr;
	if (payload_len == 0 && next_header == IPPROTO_HOPOPTS)
		return count(XDP_CNT_IPV6_JUMBOGRAM, XDP_PASS);
	/* Shorter than the frame is Ethernet padding; longer, a lie. */
	if (cursor + payload_len > data_end)
		return count(XDP_CNT_IPV6_BAD_PAYLOAD_LEN, XDP_PASS);

	/* Each header is checked against the frame (for the verifier) and against the payload
	 * length (what follows it is padding, not header). */
#pragma unroll
	for (i = 0; i < DIRECTOR_MAX_IPV6_EXT_HEADERS; i++) {
		const struct ipv6_ext_header *ext = cursor;
		__u32 len;

		if (next_header != IPPROTO_HOPOPTS && next_header != IPPROTO_ROUTING &&
		    next_header != IPPROTO_DSTOPTS)
			break;
		if ((const void *)(ext + 1) > data_end)
			return count(XDP_CNT_IPV6_EXT_TRUNCATED, XDP_PASS);
		len = ((__u32)ext->len + 1) * 8;
		if (offset + len > payload_len)
			return count(XDP_CNT_IPV6_EXT_TRUNCATED, XDP_PASS);
		next_header = ext->next_header;
		cursor += len;
		offset += len;
	}

	switch (next_header) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		return classify_transport6(ctx, ip6, cursor, offset, payload_len, next_header,
					   data_end);
	case IPPROTO_ICMPV6:
		return classify_icmp6(ctx, ip6, cursor, offset, payload_len, data_end);
	case IPPROTO_FRAGMENT:
		/* Only the first fragment carries ports, and reassembly is the kernel's. */
		return count(XDP_CNT_FRAGMENT, XDP_PASS);
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
		/* Still an extension header after the bound. */
		return count(XDP_CNT_IPV6_EXT_TOO_LONG, XDP_PASS);
	default: /* no next header (59), ESP, AH, ... */
		return count(XDP_CNT_OTHER_PROTOCOL, XDP_PASS);
	}
}

SEC("xdp")
int director_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD))
		return count(XDP_CNT_VLAN, XDP_PASS);
	/* IPv4 first: its path costs no more than before IPv6 came. */
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		if (eth->h_proto == bpf_htons(ETH_P_IPV6))
			return classify_ipv6(ctx, (const void *)(eth + 1), data_end);
		return count(XDP_CNT_NOT_IP, XDP_PASS);
	}

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return count(XDP_CNT_TRUNCATED, XDP_PASS);
	if (ip->version != 4 || ip->ihl < 5)
		return count(XDP_CNT_BAD_IHL, XDP_PASS);
	/* User space handles only 20-byte headers; the kernel copes with options. */
	if (ip->ihl > 5)
		return count(XDP_CNT_IP_OPTIONS, XDP_PASS);
	/* Only the first fragment carries ports (or a whole quote), so no fragment can be
	 * classified. */
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return count(XDP_CNT_FRAGMENT, XDP_PASS);

	switch (ip->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		return classify_transport(ctx, ip, data_end);
	case IPPROTO_ICMP:
		return classify_icmp(ctx, ip, data_end);
	default:
		return count(XDP_CNT_OTHER_PROTOCOL, XDP_PASS);
	}
}
