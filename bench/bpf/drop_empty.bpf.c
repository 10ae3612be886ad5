// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The drop benchmark's baseline: a tp_btf/kfree_skb program that does nothing, with the drop
 * probe's maps and program name so that the same DropProbe wrapper loads and attaches it
 * (objectPath). Its cost is the tracepoint's and the bpf_stats clock reads', none of the probe's.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "wgflow_drops_maps.h"

SEC("tp_btf/kfree_skb")
int wgflow_drop(unsigned long long *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
