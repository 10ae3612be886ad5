// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * wgflow TC programs: count every flow crossing a WireGuard interface.
 *
 * Four entry points share one body: ingress/egress x L3 offset 0 (WireGuard, tun: the packet
 * starts at the IP header) or 14 (Ethernet, veth, BPF_PROG_TEST_RUN). The offset is a
 * compile-time constant per program so the hot path has no branch on it; user space picks the
 * program per interface at attach time (ARPHRD of the device).
 *
 * Hot path (known flow): parse, one hash lookup, two atomic adds, a jiffies store.
 * New flows are inserted with BPF_NOEXIST so that two CPUs racing on the same new flow
 * produce exactly one entry and one START record.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "wgflow.h"

#define EEXIST 17

/* Sizes are defaults: user space sets max_entries before load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct wgf_key4);
	__type(value, struct wgf_flow);
	__uint(max_entries, 65536);
} wgf_flows4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct wgf_key6);
	__type(value, struct wgf_flow);
	__uint(max_entries, 65536);
} wgf_flows6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} wgf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct wgf_config);
	__uint(max_entries, 1);
} wgf_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct wgf_stats);
	__uint(max_entries, 1);
} wgf_stats SEC(".maps");

#define IPPROTO_ICMPV6_ 58
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define IPV6_EXT_MAX 6		/* bounded walk over extension headers */
#define WGF_RINGBUF_SLOT (sizeof(struct wgf_record) + 8)	/* record + ring header */

/* What the parser learned about one packet. */
struct pkt {
	__u64 bytes;		/* GSO-corrected IP bytes */
	__u32 segs;		/* GSO-corrected packets */
	__u16 sport;		/* network order */
	__u16 dport;
	__u8 proto;
	__u8 kind;
	__u8 tcp_flags;
	__u8 flip;		/* first packet is a reply (SYN+ACK, echo reply): initiator is dst */
};

static __always_inline struct wgf_stats *stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&wgf_stats, &zero);
}

/* Read the L4 fields from h (checked: 16 bytes, or the bytes this protocol needs). */
static __always_inline int l4_fields(const __u8 *h, struct pkt *p, int v6)
{
	switch (p->proto) {
	case IPPROTO_TCP:
		p->sport = *(__u16 *)&h[0];
		p->dport = *(__u16 *)&h[2];
		p->tcp_flags = h[13];
		p->flip = (h[13] & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK);
		return (h[12] >> 4) * 4;
	case IPPROTO_UDP:
		p->sport = *(__u16 *)&h[0];
		p->dport = *(__u16 *)&h[2];
		return 8;
	default: {
		/* ICMP / ICMPv6 */
		__u8 req = v6 ? 128 : 8, rep = v6 ? 129 : 0;

		p->kind = WGF_KIND_ICMP;
		if (h[0] == req || h[0] == rep) {
			/* Request and reply share a flow: keyed by identifier, type folded to the request. */
			p->sport = *(__u16 *)&h[4];
			p->dport = bpf_htons((__u16)req << 8);
			p->flip = h[0] == rep;
		} else {
			p->sport = 0;
			p->dport = bpf_htons(((__u16)h[0] << 8) | h[1]);
		}
		return 8;
	}
	}
}

/*
 * Parse the L4 header at off (bounded). Returns the L4 header length used for GSO correction,
 * or -1 if the header is truncated (the packet is then counted as malformed).
 */
static __always_inline int parse_l4(struct __sk_buff *skb, void *data, void *data_end, __u32 off,
				    struct pkt *p, int v6)
{
	__u8 buf[16] __attribute__((aligned(4)));
	__u8 *h = data + off;
	__u32 need;

	if (p->kind == WGF_KIND_FRAGMENT)
		return 0;
	switch (p->proto) {
	case IPPROTO_TCP:
		need = 14;
		break;
	case IPPROTO_UDP:
		need = 4;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		need = 8;
		break;
	default:
		p->kind = WGF_KIND_OTHER;
		return 0;
	}
	/*
	 * Common case: the header is in the linear area. The empty asm stops clang from rewriting
	 * h + 16 as data + (off + 16), a different pointer the verifier would not link to h.
	 */
	asm volatile("" : "+r"(h));
	if ((void *)(h + 16) <= data_end)
		return l4_fields(h, p, v6);
	if (bpf_skb_load_bytes(skb, off, buf, need))
		return -1;
	return l4_fields(buf, p, v6);
}

/* Packets and bytes that really crossed the interface: a GSO super-packet counts per segment. */
static __always_inline void gso_correct(struct __sk_buff *skb, struct pkt *p, __u32 l3off, __u32 hdrlen)
{
	__u32 segs = skb->gso_segs;

	p->bytes = skb->len - l3off;
	p->segs = 1;
	if (segs > 1) {
		p->segs = segs;
		p->bytes += (__u64)(segs - 1) * hdrlen;
	}
}

static __always_inline void submit(struct wgf_record *r, void *key, __u32 keylen, __u8 family,
				   __u8 type, __u32 dir, __u8 tcp_flags, __u32 flags, __u64 ts,
				   const struct wgf_config *cfg)
{
	__u64 wake = BPF_RB_NO_WAKEUP, avail;

	r->type = type;
	r->family = family;
	r->dir = dir;
	r->tcp_flags = tcp_flags;
	r->flags = flags;
	r->ts_ns = ts;
	if (keylen == sizeof(struct wgf_key4))
		__builtin_memcpy(&r->k4, key, sizeof(struct wgf_key4));
	else
		__builtin_memcpy(&r->k6, key, sizeof(struct wgf_key6));
	/*
	 * Batch wake-ups: wake the consumer only when the waiting data crosses the threshold (every
	 * record past it would cost an irq_work each). Its poll timeout bounds the latency of the rest.
	 */
	avail = bpf_ringbuf_query(&wgf_events, BPF_RB_AVAIL_DATA);
	if (avail >= cfg->wakeup_batch && avail < (__u64)cfg->wakeup_batch + WGF_RINGBUF_SLOT)
		wake = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(r, wake);
}

/*
 * Count one packet in its flow. src_is_b: the packet was sent by endpoint b of the key.
 * map/key/keylen/family are constants after inlining.
 */
static __always_inline void track(void *map, void *key, __u32 keylen, __u8 family, struct pkt *p,
				  __u32 dir, int src_is_b)
{
	__u32 zero = 0;
	const struct wgf_config *cfg = bpf_map_lookup_elem(&wgf_config, &zero);
	struct wgf_flow *f;
	struct wgf_stats *st;
	__u32 want, old;

	if (!cfg)
		return;
	/*
	 * A bare SYN almost always opens a new flow: insert straight away and skip the lookup miss
	 * (~50 ns of the new-flow path). A retransmitted SYN finds the entry through -EEXIST below.
	 */
	if ((p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		f = NULL;
	else
		f = bpf_map_lookup_elem(map, key);
	if (!f) {
		struct wgf_flow nf = {};
		struct wgf_record *r;
		/*
		 * The coarse clock (last tick, like last_seen) instead of the precise one: the
		 * precise read costs ~50 ns in a VM, 10% of the new-flow path. first_ns also names
		 * the flow (its id); a key can only be re-created after user space deleted it, which
		 * never happens within the tick of its first packet (docs/datapath.md, Clocks).
		 */
		__u64 now = bpf_ktime_get_coarse_ns();
		int init_b = src_is_b ^ p->flip;
		int init_egress = (dir == WGF_DIR_EGRESS) ^ p->flip;
		long err;

		nf.first_ns = now;
		nf.last_seen = bpf_jiffies64();
		nf.flags = ((__u32)p->tcp_flags << WGF_TCP_FLAGS_SHIFT(dir)) |
			   (init_b ? WGF_F_INIT_B : 0) | (init_egress ? WGF_F_INIT_EGRESS : 0);
		if (cfg->counting) {
			nf.packets[dir & 1] = p->segs;
			nf.bytes[dir & 1] = p->bytes;
		} else {
			nf.flags |= WGF_F_UNCOUNTED;
		}
		/* Reserve first so a full ring is recorded in the flow itself (the drain finds it). */
		r = bpf_ringbuf_reserve(&wgf_events, sizeof(*r), 0);
		if (!r)
			nf.flags |= WGF_F_START_LOST;
		err = bpf_map_update_elem(map, key, &nf, BPF_NOEXIST);
		st = stats();
		if (err == 0) {
			if (st) {
				st->flows_created++;
				if (!r)
					st->ringbuf_full++;
			}
			if (r)
				submit(r, key, keylen, family, WGF_REC_START, dir, p->tcp_flags, nf.flags,
				       now, cfg);
			return;
		}
		if (r)
			bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
		if (err == -EEXIST)
			f = bpf_map_lookup_elem(map, key);	/* another CPU created it first */
		if (!f) {
			if (st) {
				st->map_full += p->segs;
				st->map_full_bytes += p->bytes;
			}
			return;
		}
	}

	if (cfg->counting) {
		__sync_fetch_and_add(&f->packets[dir & 1], p->segs);
		__sync_fetch_and_add(&f->bytes[dir & 1], p->bytes);
	}
	f->last_seen = bpf_jiffies64();	/* inlined by the verifier: a load, not a call */

	want = (__u32)p->tcp_flags << WGF_TCP_FLAGS_SHIFT(dir);
	if (!cfg->counting)
		want |= WGF_F_UNCOUNTED;
	if (p->tcp_flags & TCP_RST)
		want |= WGF_F_RST_SENT;
	else if (p->tcp_flags & TCP_FIN)
		want |= dir == WGF_DIR_EGRESS ? WGF_F_FIN_EGR_SENT : WGF_F_FIN_ING_SENT;
	if ((f->flags & want) == want)
		return;
	old = __sync_fetch_and_or(&f->flags, want);
	/* Only the CPU that set a hint bit announces it: one FIN per direction, one RST. */
	want &= ~old & (WGF_F_RST_SENT | WGF_F_FIN_EGR_SENT | WGF_F_FIN_ING_SENT);
	if (want) {
		struct wgf_record *r = bpf_ringbuf_reserve(&wgf_events, sizeof(*r), 0);

		if (!r) {
			__sync_fetch_and_or(&f->flags, WGF_F_HINT_LOST);
			if ((st = stats()))
				st->ringbuf_full++;
			return;
		}
		submit(r, key, keylen, family, want & WGF_F_RST_SENT ? WGF_REC_RST : WGF_REC_FIN, dir,
		       p->tcp_flags, old | want, bpf_ktime_get_ns(), cfg);
	}
}

static __always_inline void handle_v4(struct __sk_buff *skb, __u32 l3off, __u32 dir)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + l3off;
	struct wgf_key4 k = {};
	struct pkt p = {};
	struct wgf_stats *st;
	__u32 ihl, swap;
	int l4len;

	if ((void *)(ip + 1) > data_end) {
		/* Header outside the linear area (rare): pull it in; L4 is read with load_bytes. */
		if (skb->len < l3off + sizeof(*ip) || bpf_skb_pull_data(skb, l3off + sizeof(*ip)))
			goto bad;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip = data + l3off;
		if ((void *)(ip + 1) > data_end)
			goto bad;
	}
	if (ip->version != 4 || ip->ihl < 5 || ip->ihl * 4 > skb->len - l3off)
		goto bad;
	ihl = ip->ihl * 4;
	p.proto = ip->protocol;
	if (ip->frag_off & bpf_htons(0x1fff))
		p.kind = WGF_KIND_FRAGMENT;	/* no L4 header: counted per address pair */
	l4len = parse_l4(skb, data, data_end, l3off + ihl, &p, 0);
	if (l4len < 0)
		goto bad;
	gso_correct(skb, &p, l3off, ihl + l4len);

	swap = ip->saddr > ip->daddr || (ip->saddr == ip->daddr && p.sport > p.dport);
	k.addr_a = swap ? ip->daddr : ip->saddr;
	k.addr_b = swap ? ip->saddr : ip->daddr;
	if (p.kind == WGF_KIND_PORTS && swap) {
		k.port_a = p.dport;
		k.port_b = p.sport;
	} else {
		/* ICMP fields describe the exchange, not a side: never swapped. */
		k.port_a = p.sport;
		k.port_b = p.dport;
	}
	k.proto = p.proto;
	k.kind = p.kind;
	k.ifindex = skb->ifindex;
	if (p.kind == WGF_KIND_FRAGMENT && (st = stats()))
		st->fragments += p.segs;
	track(&wgf_flows4, &k, sizeof(k), 4, &p, dir, swap);
	return;
bad:
	if ((st = stats())) {
		st->malformed++;
		st->malformed_bytes += skb->len - l3off;
	}
}

/* Any total order will do for canonical keys: compare as four 32-bit words. */
static __always_inline int v6_cmp(const __u8 *x, const __u8 *y)
{
	const __u32 *a = (const __u32 *)x, *b = (const __u32 *)y;

#pragma unroll
	for (int i = 0; i < 4; i++)
		if (a[i] != b[i])
			return a[i] < b[i] ? -1 : 1;
	return 0;
}

static __always_inline void handle_v6(struct __sk_buff *skb, __u32 l3off, __u32 dir)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + l3off;
	struct wgf_key6 k = {};
	struct pkt p = {};
	struct wgf_stats *st;
	__u32 off, swap;
	int cmp;
	__u8 nh;
	int l4len;

	if ((void *)(ip6 + 1) > data_end) {
		if (skb->len < l3off + sizeof(*ip6) || bpf_skb_pull_data(skb, l3off + sizeof(*ip6)))
			goto bad;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip6 = data + l3off;
		if ((void *)(ip6 + 1) > data_end)
			goto bad;
	}
	if (ip6->version != 6)
		goto bad;
	nh = ip6->nexthdr;
	off = l3off + sizeof(*ip6);
#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		__u8 h[4];

		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
		    nh != IPPROTO_FRAGMENT && nh != IPPROTO_AH && nh != 135 /* mobility */)
			break;
		if (bpf_skb_load_bytes(skb, off, h, 4))
			goto bad;
		if (nh == IPPROTO_FRAGMENT) {
			if ((((__u16)h[2] << 8) | h[3]) & 0xfff8)
				p.kind = WGF_KIND_FRAGMENT;
			off += 8;
		} else if (nh == IPPROTO_AH) {
			off += ((__u32)h[1] + 2) * 4;
		} else {
			off += ((__u32)h[1] + 1) * 8;
		}
		nh = h[0];
		if (p.kind == WGF_KIND_FRAGMENT)
			break;
	}
	p.proto = nh;
	switch (nh) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
	case IPPROTO_FRAGMENT:
	case IPPROTO_AH:
	case 135:
		/* Chain longer than the bounded walk: keep the bytes, keyed by addresses. */
		if (p.kind != WGF_KIND_FRAGMENT)
			p.kind = WGF_KIND_OTHER;
		break;
	}
	l4len = 0;
	if (p.kind != WGF_KIND_OTHER) {
		l4len = parse_l4(skb, data, data_end, off, &p, 1);
		if (l4len < 0)
			goto bad;
	}
	gso_correct(skb, &p, l3off, off - l3off + l4len);

	cmp = v6_cmp(ip6->saddr.in6_u.u6_addr8, ip6->daddr.in6_u.u6_addr8);
	swap = cmp > 0 || (cmp == 0 && p.sport > p.dport);
	if (swap) {
		__builtin_memcpy(k.addr_a, &ip6->daddr, 16);
		__builtin_memcpy(k.addr_b, &ip6->saddr, 16);
	} else {
		__builtin_memcpy(k.addr_a, &ip6->saddr, 16);
		__builtin_memcpy(k.addr_b, &ip6->daddr, 16);
	}
	if (p.kind == WGF_KIND_PORTS && swap) {
		k.port_a = p.dport;
		k.port_b = p.sport;
	} else {
		k.port_a = p.sport;
		k.port_b = p.dport;
	}
	k.proto = p.proto;
	k.kind = p.kind;
	k.ifindex = skb->ifindex;
	if (p.kind == WGF_KIND_FRAGMENT && (st = stats()))
		st->fragments += p.segs;
	track(&wgf_flows6, &k, sizeof(k), 6, &p, dir, swap);
	return;
bad:
	if ((st = stats())) {
		st->malformed++;
		st->malformed_bytes += skb->len - l3off;
	}
}

static __always_inline int handle(struct __sk_buff *skb, const __u32 l3off, const __u32 dir)
{
	struct wgf_stats *st;

	if (skb->protocol == bpf_htons(ETH_P_IP))
		handle_v4(skb, l3off, dir);
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		handle_v6(skb, l3off, dir);
	else if ((st = stats()))
		st->non_ip++;
	/* Observe only: let the packet continue (TC_ACT_UNSPEC == TCX_NEXT). */
	return TC_ACT_UNSPEC;
}

SEC("tc")
int wgflow_ingress(struct __sk_buff *skb)
{
	return handle(skb, 0, WGF_DIR_INGRESS);
}

SEC("tc")
int wgflow_egress(struct __sk_buff *skb)
{
	return handle(skb, 0, WGF_DIR_EGRESS);
}

SEC("tc")
int wgflow_ingress_eth(struct __sk_buff *skb)
{
	return handle(skb, ETH_HLEN, WGF_DIR_INGRESS);
}

SEC("tc")
int wgflow_egress_eth(struct __sk_buff *skb)
{
	return handle(skb, ETH_HLEN, WGF_DIR_EGRESS);
}

/* Clock calibration for user space: BPF_PROG_TEST_RUN returns the low 32 bits of jiffies. */
SEC("tc")
int wgflow_clock(struct __sk_buff *skb)
{
	return (__u32)bpf_jiffies64();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
