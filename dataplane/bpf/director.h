/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * The ABI shared by the XDP classifier (director.bpf.c) and user space
 * (dataplane/src/xdp/abi.rs mirrors every type here; keep the two in step).
 * All integers are host order unless the field name says otherwise.
 */
#ifndef DIRECTOR_H
#define DIRECTOR_H

/* Key of the `services` map: one (VIP, port, protocol) the director owns. */
struct service_key {
	__u32 vip_be;   /* IPv4 destination address, network order */
	__u16 port_be;  /* TCP/UDP destination port, network order */
	__u8 protocol;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;       /* always 0: hash keys compare every byte */
};

/* Value of the `services` map. */
struct service_value {
	__u32 flags;    /* SERVICE_F_* */
};

/* Frames for this service go to the AF_XDP sockets; clear it to hand the
 * VIP back to the kernel (a standby director) without deleting the entry. */
#define SERVICE_F_ENABLED 1u

/* Index of each per-CPU counter in the `xdp_counters` array. */
enum xdp_counter {
	XDP_CNT_REDIRECTED = 0,   /* matched a service, sent to a socket */
	XDP_CNT_NO_SOCKET,        /* matched, but no socket on this queue: passed */
	XDP_CNT_SERVICE_DISABLED, /* matched a disabled service: passed */
	XDP_CNT_NO_SERVICE,       /* IPv4 TCP/UDP for nobody we serve: passed */
	XDP_CNT_NOT_IPV4,         /* ARP, IPv6, ...: passed */
	XDP_CNT_VLAN,             /* 802.1Q/802.1ad tagged: passed */
	XDP_CNT_TRUNCATED,        /* shorter than its headers claim: passed */
	XDP_CNT_BAD_IHL,          /* version != 4 or IHL < 5: passed */
	XDP_CNT_IP_OPTIONS,       /* IHL > 5: passed */
	XDP_CNT_FRAGMENT,         /* MF set or offset != 0: passed */
	XDP_CNT_OTHER_PROTOCOL,   /* ICMP and other non-TCP/UDP: passed */
	XDP_CNT_MAX,
};

#define DIRECTOR_MAX_SERVICES 4096
#define DIRECTOR_MAX_QUEUES 256

#endif
