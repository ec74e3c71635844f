/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * The ABI shared by the XDP classifier (director.bpf.c) and user space
 * (dataplane/src/xdp/abi.rs mirrors every type here; keep the two in step).
 * All integers are host order unless the field name says otherwise.
 */
#ifndef DIRECTOR_H
#define DIRECTOR_H

/*
 * Key of the `services` map: one (VIP, port, protocol) the director owns.
 *
 * Also the key of the `nat_backends` map, naming one NAT real server as its
 * replies leave it: vip_be is then the real server's address and port_be the
 * port it listens on (its source port in replies).
 */
struct service_key {
	__u32 vip_be;   /* IPv4 address, network order */
	__u16 port_be;  /* TCP/UDP port, network order */
	__u8 protocol;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;       /* always 0: hash keys compare every byte */
};

/*
 * Key of the `services6` map, and of `nat_backends6`: struct service_key for
 * an IPv6 VIP (or NAT real server). A map of its own, so the IPv4 maps, their
 * keys and the IPv4 path's cost stay as they were.
 */
struct service_key6 {
	__u8 vip[16];   /* IPv6 address, network order */
	__u16 port_be;  /* TCP/UDP port, network order */
	__u8 protocol;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;       /* always 0: hash keys compare every byte */
};

/* Value of the `services`, `nat_backends` maps and their IPv6 twins. */
struct service_value {
	__u32 flags;    /* SERVICE_F_* */
};

/* Frames for this service (or from this NAT real server) go to the AF_XDP
 * sockets; clear it to hand them back to the kernel (a standby director)
 * without deleting the entry. An entry without it counts service_disabled. */
#define SERVICE_F_ENABLED 1u

/*
 * Index of each per-CPU counter in the `xdp_counters` array. Every frame
 * bumps exactly one. User space prints them by name (XDP_COUNTER_NAMES in
 * abi.rs, in this order): only ever append, before XDP_CNT_MAX.
 */
enum xdp_counter {
	XDP_CNT_REDIRECTED = 0,   /* for a service, sent to a socket */
	XDP_CNT_NO_SOCKET,        /* steered, but no socket on this queue: passed */
	XDP_CNT_SERVICE_DISABLED, /* for/from/about a disabled entry: passed */
	XDP_CNT_NO_SERVICE,       /* TCP/UDP for nobody we serve: passed */
	XDP_CNT_NOT_IP,           /* neither IPv4 nor IPv6 (ARP, ...): passed */
	XDP_CNT_VLAN,             /* 802.1Q/802.1ad tagged: passed */
	XDP_CNT_TRUNCATED,        /* shorter than its headers claim: passed */
	XDP_CNT_BAD_IHL,          /* version != 4 or IHL < 5: passed */
	XDP_CNT_IP_OPTIONS,       /* IHL > 5: passed */
	XDP_CNT_FRAGMENT,         /* MF set or offset != 0; IPv6: a fragment header: passed */
	XDP_CNT_OTHER_PROTOCOL,   /* neither TCP, UDP nor ICMP(v6); IPv6 no next header,
				   * ESP, AH, ...: passed */
	XDP_CNT_NAT_REPLY,        /* from a NAT real server, sent to a socket */
	XDP_CNT_ICMP_REDIRECTED,  /* ICMP error about a served flow, sent to a socket */
	XDP_CNT_ICMP_NOT_ERROR,   /* ICMP other than dest. unreachable/time exceeded; ICMPv6
				   * other than those and packet too big (NDP, echo, MLD): passed */
	XDP_CNT_ICMP_NO_SERVICE,  /* ICMP error quoting nobody we serve: passed */
	XDP_CNT_ICMP_TRUNCATED,   /* ICMP error quoting less than a header + 8 bytes: passed */
	XDP_CNT_ICMP_BAD_QUOTE,   /* quote not a 20-byte IPv4 header, or a later fragment; or
				   * not an IPv6 header followed by TCP/UDP directly: passed */
	XDP_CNT_TO_DIRECTOR,      /* from a NAT real server (or an ICMP error) to one of the
				   * director's own addresses, e.g. a health check's answer: passed */
	XDP_CNT_IPV6_EXT_TRUNCATED, /* IPv6 extension header beyond the frame or payload: passed */
	XDP_CNT_IPV6_EXT_TOO_LONG,  /* more extension headers than the walk's bound: passed */
	XDP_CNT_IPV6_JUMBOGRAM,     /* payload length 0 with a hop-by-hop header (RFC 2675): passed */
	XDP_CNT_IPV6_BAD_PAYLOAD_LEN, /* payload length beyond the frame's end: passed */
	XDP_CNT_IPV6_BAD_VERSION,   /* IPv6 EtherType, version != 6: passed */
	XDP_CNT_MAX,
};

/*
 * Key of the `local_addresses` map: one of the director's own addresses on
 * the interface (network order). Frames to it are the director's own traffic
 * (a health check's answer from a NAT real server), never a reply to
 * translate. The value is unused (always 1).
 */
struct local_address {
	__u32 addr_be;
};

/* Key of the `local_addresses6` map: the same for an IPv6 address. */
struct local_address6 {
	__u8 addr[16];  /* network order */
};

#define DIRECTOR_MAX_SERVICES 4096
#define DIRECTOR_MAX_NAT_BACKENDS 65536
#define DIRECTOR_MAX_LOCAL_ADDRESSES 256
#define DIRECTOR_MAX_QUEUES 256

/* Extension headers the IPv6 walk follows before it gives up (counted
 * ipv6_ext_too_long). Real traffic carries 0-2; Katran's bound is similar. */
#define DIRECTOR_MAX_IPV6_EXT_HEADERS 6

#endif
