/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The drop probe's maps, by the names native/src/drops.cc looks up. Included by the probe
 * (bpf/wgflow_drops.bpf.c) and by the benchmark's empty baseline (bench/bpf/drop_empty.bpf.c),
 * so the same DropProbe wrapper loads either. Sizes are defaults: user space sets max_entries.
 */
#ifndef WGFLOW_DROPS_MAPS_H
#define WGFLOW_DROPS_MAPS_H

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

#endif /* WGFLOW_DROPS_MAPS_H */
