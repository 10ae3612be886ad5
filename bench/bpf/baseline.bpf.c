// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Baselines for the datapath benchmark, run through the same BPF_PROG_TEST_RUN harness.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64[2]);
	__uint(max_entries, 1);
} counts SEC(".maps");

/* Nothing at all: the harness's own cost. */
SEC("tc")
int empty(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

/* The cheapest useful program: packets and bytes in a per-CPU array. */
SEC("tc")
int counter(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&counts, &zero);

	if (c) {
		c[0]++;
		c[1] += skb->len;
	}
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
