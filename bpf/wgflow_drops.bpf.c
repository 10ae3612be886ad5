// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * wgflow drop probe: packets the kernel dropped that came in through, or were headed out to, a
 * watched WireGuard interface (docs/events.md, DROP events).
 *
 * A BTF tracepoint on skb:kfree_skb, which fires only for drops (consumed packets go through
 * consume_skb) and carries the reason (kernels >= 5.17). It runs for every drop of the machine,
 * so the first tests are the cheapest ones: is the packet's device in the watched namespace, and
 * is any interface of the packet a watched one (compared in registers)? Only then
 * is the IP header read and the drop aggregated per (direction, addresses, ports, protocol) in
 * one of two hash maps; user space switches the probe to the other map at the end of a window
 * and drains the first (no drop counted while it is read is lost).
 *
 * A separate object from the TC programs: a kernel without this tracepoint or without BTF then
 * only loses DROP events, never flows.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "wgflow.h"

#define EEXIST 17

/*
 * The kernel structures read here, only the fields used. CO-RE relocates every access to the
 * running kernel's layout (its BTF), so no vmlinux.h is needed and one object runs on 5.17 to
 * 6.18. Fields that moved into anonymous unions (sk_buff's headers, dst_entry's dev) still match.
 */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct dst_entry {
	struct net_device *dev;
} __attribute__((preserve_access_index));

struct skb_shared_info {
	unsigned short gso_size;
	unsigned short gso_segs;
} __attribute__((preserve_access_index));

struct sock_common {
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

/* tail and end are offsets from head on 64-bit kernels (NET_SKBUFF_DATA_USES_OFFSET). */
struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned long _skb_refdst;
	unsigned int len;
	int skb_iif;
	__be16 protocol;
	__u16 network_header;
	unsigned int tail;
	unsigned int end;
	unsigned char *head;
	unsigned char *data;
} __attribute__((preserve_access_index));

#include "wgflow_drops_maps.h"

#define IPPROTO_ICMPV6_ 58
#define IPV6_EXT_MAX 4
/* Ports are read only this deep into the packet (a longer IPv6 extension chain: none). */
#define L4_OFF_MAX 1023

static __always_inline int watched(const struct wgf_drop_config *cfg, int ifindex)
{
	if (ifindex <= 0)
		return 0;
#pragma unroll
	for (int i = 0; i < WGF_DROP_WATCH_MAX; i++)
		if (cfg->watch[i] == (__u32)ifindex)
			return 1;
	return 0;
}

static __always_inline struct wgf_drop_stats *drop_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&wgf_drop_stats, &zero);
}

/* Ports (or ICMP type/code) of the L4 header at h, as the flow keys hold them. */
static __always_inline void l4_ports(struct wgf_drop_key *k, const __u8 *h, int v6)
{
	switch (k->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		k->sport = *(__u16 *)&h[0];
		k->dport = *(__u16 *)&h[2];
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		k->kind = WGF_KIND_ICMP;
		if (h[0] == (v6 ? 128 : 8) || h[0] == (v6 ? 129 : 0))
			k->sport = *(__u16 *)&h[4];
		k->dport = bpf_htons(((__u16)h[0] << 8) | h[1]);
		break;
	default:
		k->kind = WGF_KIND_OTHER;
	}
}

/*
 * Key and sizes of the packet whose IP header is at ip (kernel memory), with avail bytes of it in
 * the skb's linear data (nothing past the tail is read: a truncated packet's buffer holds stale
 * bytes of earlier packets there). Returns 0, or -1 when the header cannot be read or is not IP.
 */
static __always_inline int parse(struct wgf_drop_key *k, const __u8 *ip, __u32 avail, __u32 *hdrlen)
{
	__u8 h[40];
	__u8 l4[8] = {};
	__u32 off;

	if (avail < 20 || bpf_probe_read_kernel(h, 20, ip))
		return -1;
	if ((h[0] >> 4) == 4) {
		off = (h[0] & 15) * 4;
		if (off < 20)
			return -1;
		k->family = 4;
		k->proto = h[9];
		__builtin_memcpy(k->saddr, &h[12], 4);
		__builtin_memcpy(k->daddr, &h[16], 4);
		if (h[6] & 0x1f || h[7]) {	/* fragment offset: no L4 header here */
			k->kind = WGF_KIND_FRAGMENT;
			*hdrlen = off;
			return 0;
		}
	} else if ((h[0] >> 4) == 6) {
		__u8 nh;

		if (avail < 40 || bpf_probe_read_kernel(h, 40, ip))
			return -1;
		k->family = 6;
		__builtin_memcpy(k->saddr, &h[8], 16);
		__builtin_memcpy(k->daddr, &h[24], 16);
		nh = h[6];
		off = 40;
#pragma unroll
		for (int i = 0; i < IPV6_EXT_MAX; i++) {
			__u8 e[4];

			if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
			    nh != IPPROTO_FRAGMENT)
				break;
			if (off + 4 > avail || bpf_probe_read_kernel(e, 4, ip + off))
				return -1;
			if (nh == IPPROTO_FRAGMENT) {
				if ((((__u16)e[2] << 8) | e[3]) & 0xfff8) {
					k->proto = e[0];
					k->kind = WGF_KIND_FRAGMENT;
					*hdrlen = off + 8;
					return 0;
				}
				off += 8;
			} else {
				off += ((__u32)e[1] + 1) * 8;
			}
			nh = e[0];
		}
		k->proto = nh;
	} else {
		return -1;
	}
	*hdrlen = off;
	if (k->proto != IPPROTO_TCP && k->proto != IPPROTO_UDP && k->proto != IPPROTO_ICMP &&
	    k->proto != IPPROTO_ICMPV6_) {
		k->kind = WGF_KIND_OTHER;
		return 0;
	}
	/*
	 * A drop before the L4 header was pulled into the linear data (or a truncated packet) keeps
	 * its addresses, with ports 0.
	 */
	if (off <= L4_OFF_MAX && off + sizeof(l4) <= avail &&
	    bpf_probe_read_kernel(l4, sizeof(l4), ip + off) == 0)
		l4_ports(k, l4, k->family == 6);
	return 0;
}

static __always_inline void aggregate(void *map, struct wgf_drop_key *k, __u64 segs, __u64 bytes,
				      __u32 reason)
{
	struct wgf_drop *d = bpf_map_lookup_elem(map, k);
	struct wgf_drop_stats *st;
	__u64 now = bpf_ktime_get_ns();	/* the coarse clock is not for tracing programs */

	if (!d) {
		struct wgf_drop nd = {
			.first_ns = now, .last_ns = now, .packets = segs, .bytes = bytes, .reason = reason,
		};
		long err = bpf_map_update_elem(map, k, &nd, BPF_NOEXIST);

		if (err == 0)
			return;
		if (err == -EEXIST)
			d = bpf_map_lookup_elem(map, k);	/* another CPU inserted it first */
		if (!d) {
			if ((st = drop_stats())) {
				st->map_full += segs;
				st->map_full_bytes += bytes;
			}
			return;
		}
	}
	__sync_fetch_and_add(&d->packets, segs);
	__sync_fetch_and_add(&d->bytes, bytes);
	d->last_ns = now;
	if (d->reason != reason && !(d->flags & WGF_DROP_F_MIXED))
		__sync_fetch_and_or(&d->flags, WGF_DROP_F_MIXED);
}

/*
 * For a packet without a device (the TCP layer clears skb->dev before it handles a segment):
 * is it of the watched namespace? Its socket's namespace tells, else its route device's; with
 * neither, it cannot be told, and skb_iif (an ifindex of some namespace) must not be trusted.
 */
static __always_inline int nodev_in_netns(struct sk_buff *skb, unsigned long refdst,
					  const struct wgf_drop_config *cfg)
{
	struct sock *sk = BPF_CORE_READ(skb, sk);

	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) == cfg->netns;
	if (refdst)
		return BPF_CORE_READ((struct dst_entry *)refdst, dev, nd_net.net, ns.inum) == cfg->netns;
	return 0;
}

SEC("tp_btf/kfree_skb")
int wgflow_drop(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u32 reason = (__u32)ctx[2];
	struct net_device *dev;
	struct wgf_drop_key k = {};
	const struct wgf_drop_config *cfg;
	struct wgf_drop_count *rc;
	struct wgf_drop_stats *st;
	unsigned long refdst;
	__u32 zero = 0, slot, hdrlen = 0, segs;
	int iif, devidx, l3;
	struct skb_shared_info *shinfo;
	unsigned char *head;
	unsigned long data;
	long long iplen;
	__u32 tail, gso_size;
	__u64 bytes;
	__u16 nh;

	cfg = bpf_map_lookup_elem(&wgf_drop_config, &zero);
	if (!cfg)
		return 0;
	/*
	 * Cheapest tests first (direct loads, compares in registers): the device's namespace, then
	 * the input interface and the device. Only then the route's device, which takes two probe
	 * reads. ifindexes are per network namespace: a drop of another namespace never matches.
	 */
	iif = skb->skb_iif;
	dev = skb->dev;
	devidx = 0;
	if (dev) {
		devidx = dev->ifindex;
		if (dev->nd_net.net->ns.inum != cfg->netns)
			return 0;
	}
	refdst = skb->_skb_refdst & ~1UL;
	if (watched(cfg, iif)) {
		if (!dev && !nodev_in_netns(skb, refdst, cfg))
			return 0;
		k.dir = WGF_DIR_INGRESS;	/* came in through it */
		k.ifindex = iif;
	} else if (devidx != iif && watched(cfg, devidx)) {
		/*
		 * On the interface itself, not (yet) received by the stack (skb_iif unset): a packet
		 * the interface was handing in (no route attached yet) or was sending (routed).
		 */
		k.dir = refdst ? WGF_DIR_EGRESS : WGF_DIR_INGRESS;
		k.ifindex = devidx;
	} else if (refdst) {
		struct net_device *dst_dev = BPF_CORE_READ((struct dst_entry *)refdst, dev);
		int oif = BPF_CORE_READ(dst_dev, ifindex);

		if (!watched(cfg, oif))
			return 0;
		/* Without a device, the route's tells the namespace. */
		if (!dev && BPF_CORE_READ(dst_dev, nd_net.net, ns.inum) != cfg->netns)
			return 0;
		k.dir = WGF_DIR_EGRESS;		/* routed out to it */
		k.ifindex = oif;
	} else {
		return 0;
	}

	st = drop_stats();
	if (st)
		st->matched++;
	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		goto unparsed;
	/* Read as numbers (probe reads), not as the verifier's untrusted-memory pointers. */
	head = (unsigned char *)BPF_CORE_READ(skb, head);
	data = (unsigned long)BPF_CORE_READ(skb, data);
	nh = skb->network_header;
	tail = skb->tail;
	/* Unset: ~0 on some paths, 0 (the buffer's start, never an IP header) on others. */
	if (nh == (__u16)~0U || nh == 0 || tail <= nh)
		goto unparsed;
	if (parse(&k, head + nh, tail - nh, &hdrlen))
		goto unparsed;

	/*
	 * IP bytes: skb->len counts from skb->data, which may already be past the IP header (a drop
	 * in L4) or before it (a drop before the stack pulled the link header).
	 */
	l3 = (int)(data - (unsigned long)head) - (int)nh;
	iplen = (long long)skb->len + l3;
	if (iplen < 20)
		goto unparsed;	/* the header offset and the length disagree: nothing sane to count */
	bytes = (__u64)iplen;
	shinfo = (struct skb_shared_info *)(head + skb->end);
	segs = BPF_CORE_READ(shinfo, gso_segs);
	gso_size = segs == 0 ? BPF_CORE_READ(shinfo, gso_size) : 0;	/* read only where needed */
	if (segs > 1 || gso_size) {
		/*
		 * A GSO/GRO super-packet: count every segment and its headers, like the flow counters.
		 * A packet from an untrusted source (SKB_GSO_DODGY: a tap or packet socket with a vnet
		 * header) has gso_segs 0 until it is segmented: derived from gso_size then.
		 */
		__u8 doff = 0;

		if (k.proto == IPPROTO_TCP && k.kind == WGF_KIND_PORTS && hdrlen <= L4_OFF_MAX &&
		    nh + hdrlen + 13 <= tail) {
			bpf_probe_read_kernel(&doff, 1, head + nh + hdrlen + 12);
			hdrlen += (doff >> 4) * 4;
		} else if (k.proto == IPPROTO_UDP) {
			hdrlen += 8;
		}
		if (segs == 0) {
			__u64 payload = bytes > hdrlen ? bytes - hdrlen : 0;

			segs = (payload + gso_size - 1) / gso_size;
		}
		if (segs > 1)
			bytes += (__u64)(segs - 1) * hdrlen;
		else
			segs = 1;
	} else {
		segs = 1;
	}

	slot = reason < WGF_DROP_REASONS ? reason : WGF_DROP_REASONS - 1;
	rc = bpf_map_lookup_elem(&wgf_drop_reasons, &slot);
	if (rc) {
		rc->packets += segs;
		rc->bytes += bytes;
	}
	if (cfg->active)
		aggregate(&wgf_drops1, &k, segs, bytes, reason);
	else
		aggregate(&wgf_drops0, &k, segs, bytes, reason);
	return 0;
unparsed:
	if (st)
		st->unparsed++;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
