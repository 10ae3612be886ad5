/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * wgflow: every layout shared between the BPF programs and user space.
 * src/datapath/records.ts is the one TypeScript mirror of this file; change both together
 * (test/datapath/layout.test.ts checks every size and offset against src/datapath/records.ts).
 *
 * Flows are stored once per connection: the key holds the two endpoints in canonical order
 * ("a" is the lower address, or the lower port when the addresses are equal), so both
 * directions hit the same entry with one lookup. The value says which endpoint initiated.
 */
#ifndef WGFLOW_H
#define WGFLOW_H

#ifdef __BPF__
#include <linux/types.h>
#else
#include <linux/types.h>
#endif

/* Map memory is the scale limit (128 B/flow at 1M flows): keep keys and values tight. */

/* IPv4 flow key: 16 bytes. Addresses and ports in network byte order, as on the wire. */
struct wgf_key4 {
	__u32 addr_a;
	__u32 addr_b;
	__u16 port_a;		/* TCP/UDP port; ICMP: echo identifier, else 0 */
	__u16 port_b;		/* TCP/UDP port; ICMP: type << 8 | code (echo reply folded to request) */
	__u8 proto;
	__u8 kind;		/* WGF_KIND_* */
	__u16 ifindex;		/* host byte order */
};

/* IPv6 flow key: 40 bytes, same meaning. */
struct wgf_key6 {
	__u8 addr_a[16];
	__u8 addr_b[16];
	__u16 port_a;
	__u16 port_b;
	__u8 proto;
	__u8 kind;
	__u16 ifindex;
};

/* What the key's port fields mean. */
enum wgf_kind {
	WGF_KIND_PORTS = 0,	/* TCP/UDP: port_a/port_b belong to addr_a/addr_b */
	WGF_KIND_ICMP = 1,	/* ICMP/ICMPv6: port_a = echo id, port_b = type<<8|code (direction-free) */
	WGF_KIND_OTHER = 2,	/* other protocol: ports 0 */
	WGF_KIND_FRAGMENT = 3,	/* non-first fragment: no L4 header, ports 0 (see docs/datapath.md) */
};

/* Direction indexes into the per-direction counters. */
enum wgf_dir {
	WGF_DIR_INGRESS = 0,	/* arrived over the interface: received by this peer (rx) */
	WGF_DIR_EGRESS = 1,	/* left through the interface: sent by this peer (tx) */
};

/* Flow value: 40 bytes, identical for both families. */
struct wgf_flow {
	__u64 first_ns;		/* CLOCK_MONOTONIC, coarse (last tick), of the first packet */
	__u64 bytes[2];		/* [WGF_DIR_*]: IP bytes, GSO-corrected */
	__u32 packets[2];	/* [WGF_DIR_*]: wrap at 2^32, user space widens them */
	__u32 last_seen;	/* jiffies (low 32 bits) of the last packet: cheapest clock there is */
	__u32 flags;		/* TCP flags per direction (bits 0-7 ingress, 8-15 egress), WGF_F_* */
};

#define WGF_TCP_FLAGS_SHIFT(dir) ((dir) * 8)
#define WGF_F_INIT_EGRESS	(1u << 16)	/* the initiator's first packet left through the interface */
#define WGF_F_INIT_B		(1u << 17)	/* the initiator is endpoint b of the key */
#define WGF_F_START_LOST	(1u << 18)	/* the ring buffer was full: no START record was sent */
#define WGF_F_UNCOUNTED		(1u << 19)	/* packets arrived while byte counting was off */
#define WGF_F_FIN_ING_SENT	(1u << 20)	/* a FIN hint for the ingress direction was announced */
#define WGF_F_FIN_EGR_SENT	(1u << 21)
#define WGF_F_RST_SENT		(1u << 22)
#define WGF_F_HINT_LOST		(1u << 23)	/* a FIN/RST hint could not be announced (ring full) */

/* Ring-buffer record: 56 bytes. Sent on flow start and on the first FIN per direction / RST. */
struct wgf_record {
	__u8 type;		/* WGF_REC_* */
	__u8 family;		/* 4 or 6 */
	__u8 dir;		/* WGF_DIR_* of the packet that caused it */
	__u8 tcp_flags;		/* of that packet */
	__u32 flags;		/* the flow's flags after this packet */
	__u64 ts_ns;		/* CLOCK_MONOTONIC of that packet (START: = first_ns, coarse) */
	union {
		struct wgf_key4 k4;
		struct wgf_key6 k6;
	};
};

enum wgf_record_type {
	WGF_REC_START = 1,
	WGF_REC_FIN = 2,
	WGF_REC_RST = 3,
};

/* Run-time settings: array map "wgf_config", one entry. Written by user space, read per packet. */
struct wgf_config {
	__u32 counting;		/* 1: count packets and bytes; 0: only track flows */
	__u32 wakeup_batch;	/* wake the consumer once this many bytes are waiting (0: every record) */
};

/* Per-CPU statistics: array map "wgf_stats", one entry. User space sums over CPUs. */
struct wgf_stats {
	__u64 flows_created;	/* flow entries inserted */
	__u64 map_full;		/* packets not counted because the flow map was full */
	__u64 map_full_bytes;
	__u64 ringbuf_full;	/* records dropped: START or FIN/RST hints */
	__u64 non_ip;		/* not IPv4/IPv6 (ignored, e.g. ARP on Ethernet) */
	__u64 malformed;	/* truncated or invalid IP header: counted here, not in a flow */
	__u64 malformed_bytes;
	__u64 fragments;	/* non-first fragments (counted in a WGF_KIND_FRAGMENT flow) */
};

#define WGF_STATS_FIELDS 8

/*
 * DROP events (bpf/wgflow_drops.bpf.c): packets the kernel dropped that came in through, or were
 * headed out to, a watched interface. Keyed per packet direction (not canonical: a drop is one
 * way), aggregated per key until user space drains the map at the end of a window.
 */
struct wgf_drop_key {
	__u8 saddr[16];		/* the dropped packet's source; IPv4 in the first 4 bytes, rest 0 */
	__u8 daddr[16];
	__u16 sport;		/* network order; ICMP: echo id or 0 */
	__u16 dport;		/* network order; ICMP: type << 8 | code */
	__u8 proto;
	__u8 kind;		/* WGF_KIND_* */
	__u8 family;		/* 4 or 6 */
	__u8 dir;		/* WGF_DIR_*: INGRESS came in through ifindex, EGRESS was headed out to it */
	__u16 ifindex;		/* the watched interface, host byte order */
	__u16 pad;
};

/* Drop value: 40 bytes. */
struct wgf_drop {
	__u64 first_ns;		/* CLOCK_MONOTONIC of the first drop in the window */
	__u64 last_ns;
	__u64 packets;		/* GSO-corrected, like flows */
	__u64 bytes;		/* IP bytes */
	__u32 reason;		/* enum skb_drop_reason of the first drop (the kernel's numbering) */
	__u32 flags;		/* WGF_DROP_F_* */
};

#define WGF_DROP_F_MIXED	(1u << 0)	/* later drops of the window had another reason */

/* Per-reason totals: per-CPU array "wgf_drop_reasons", index min(reason, WGF_DROP_REASONS - 1). */
#define WGF_DROP_REASONS 256
struct wgf_drop_count {
	__u64 packets;
	__u64 bytes;
};

/*
 * Run-time settings of the drop probe: array map "wgf_drop_config", one entry. The watched
 * ifindexes are in the entry itself: compared in registers, the probe's first test costs no map
 * lookup (three hash lookups were ~140 ns of the ~200 ns it spent per unrelated drop).
 */
#define WGF_DROP_WATCH_MAX 16
struct wgf_drop_config {
	__u32 netns;		/* inode of the watched network namespace (ifindexes are per namespace) */
	__u32 active;		/* which of the two drop maps the probe writes (0 or 1); user space drains the other */
	__u32 watch[WGF_DROP_WATCH_MAX];	/* watched ifindexes; 0: unused slot */
};

/* Per-CPU statistics of the drop probe: array map "wgf_drop_stats", one entry. */
struct wgf_drop_stats {
	__u64 matched;		/* drops of watched interfaces (skbs) */
	__u64 map_full;		/* of those, packets not aggregated: the drop map was full */
	__u64 map_full_bytes;
	__u64 unparsed;		/* watched, but no IPv4/IPv6 header could be read */
};

#define WGF_DROP_STATS_FIELDS 4

#endif /* WGFLOW_H */
