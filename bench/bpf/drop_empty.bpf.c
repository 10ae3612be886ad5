// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The drop benchmark's baseline: a tp_btf/kfree_skb program that does nothing, with the drop
 * probe's maps and program name so that the same DropProbe wrapper loads and attaches it
 * (objectPath). Its cost is the tracepoint's and the bpf_stats clock reads', none of the probe's.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "wgflow.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct wgf_drop_key);
	__type(value, struct wgf_drop);
	__uint(max_entries, 16384);
} wgf_drops0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct wgf_drop_key);
	__type(value, struct wgf_drop);
	__uint(max_entries, 16384);
} wgf_drops1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct wgf_drop_config);
	__uint(max_entries, 1);
} wgf_drop_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct wgf_drop_count);
	__uint(max_entries, WGF_DROP_REASONS);
} wgf_drop_reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct wgf_drop_stats);
	__uint(max_entries, 1);
} wgf_drop_stats SEC(".maps");

SEC("tp_btf/kfree_skb")
int wgflow_drop(unsigned long long *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
