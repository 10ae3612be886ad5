// The daemon's memory as a budget: what it needs at worst, computed at start from the settings
// that bound it (the flow maps' sizes, the exporter's window), and checked against the limit it
// runs under (memory_limit, or its control group's). A configuration that cannot fit is refused
// with what would fit, instead of being killed by the kernel once the flows arrive.
import { DEFAULT_DROP_KEYS, dropMapBytes } from '../datapath/drops';
import { Check, ConfigError } from '../util/check';
import { flowStateBytes } from '../flow/budget';
import { kernelMapBytes, mapReadBytes } from '../datapath/datapath';
import { SPOOL_DEFAULTS } from '../output/spool';
import { CgroupLimit } from './cgroup';
import { formatBytes } from '../util/bytes';

export { formatBytes };

const KiB = 1024, MiB = 1024 ** 2, GiB = 1024 ** 3, TiB = 1024 ** 4;

/**
 * The daemon's fixed cost: everything but the per-flow state, the map reads and the export
 * buffers (code, the V8 heap's own objects and the garbage between collections, libbpf, the
 * attribution tables of a small network). Idle, `wgflow run` with default settings takes
 * 67-79 MiB (VmRSS; Node 20, 2 vCPUs, 2026-12-05). What decides it is a burst: under the SYN
 * flood of test/hostile/flood.test.ts (~70,000 new-flow packets/s reaching a 32,768-flow map, all
 * their STARTs and ENDs written) the peak was 177-184 MiB in three runs, with the memory governor
 * collecting (src/daemon/memory-governor.ts): ~52 MiB of it the mapped program files, up to
 * ~80 MiB the V8 heap (its young generation alone grows to 32 MiB), ~25 MiB output buffers. Less
 * the ~10 MiB of flow state and map reads counted on their own: ~175 MiB, rounded up to 192 MiB.
 */
export const DAEMON_BASE_BYTES = 192 * MiB;

/**
 * Resident bytes per event in flight to the collector (written, not yet acked): the in-flight
 * entry, the spool record and its share of the spool's chunk. Measured with the real exporter and
 * a collector that opens the stream and never acks, synthetic events of every shape (NetBird
 * fields, names, users): 32,768 in flight cost 1,184 bytes of RSS each (live: 260 heap + 522
 * ArrayBuffer), 100,000 cost 1,267 (311 + 447). Rounded up.
 */
export const IN_FLIGHT_EVENT_BYTES = 1536;

/**
 * One group of the NetBird aggregated profile's open window (src/output/aggregator.ts): its sums
 * and the copy of its earliest event. Measured: 16,384 groups of synthetic events of every shape
 * kept 872 bytes of heap each (after a full collection); doubled for the garbage between
 * collections, like the other parts.
 */
export const AGGREGATE_GROUP_BYTES = 2048;

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: KiB, kib: KiB, m: MiB, mib: MiB, g: GiB, gib: GiB, t: TiB, tib: TiB,
  kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
};

/** The smallest memory_limit taken: a bare number is bytes, and "512" almost always meant 512M. */
export const MIN_MEMORY_LIMIT = MiB;

/**
 * A size in bytes: a number, or a number with a unit. K, M, G, T and KiB, MiB, GiB, TiB are powers
 * of 1024 (as systemd's MemoryMax= reads them); KB, MB, GB, TB are powers of 1000. Undefined when
 * the text is not a size.
 */
export function parseByteSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(text);
  if (!m) return undefined;
  const unit = UNITS[m[2].toLowerCase()];
  if (unit === undefined) return undefined;
  const n = Math.floor(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** A size for the configuration: bytes as a number, or a string with a unit. */
export const byteSize: Check<number> = (v, path) => {
  const hint = 'expected a size in bytes, e.g. 536870912, 512M, 512MiB or 1G (K/M/G/T and KiB/MiB/GiB/TiB: powers of 1024; KB/MB/GB/TB: of 1000)';
  const got = typeof v === 'string' ? JSON.stringify(v) : Array.isArray(v) ? 'a list' : v !== null && typeof v === 'object' ? 'a mapping' : `${typeof v} ${String(v)}`;
  const n = typeof v === 'number' ? (Number.isSafeInteger(v) ? v : undefined) : typeof v === 'string' ? parseByteSize(v) : undefined;
  if (n === undefined) throw new ConfigError(path, `${hint}, got ${got}`);
  if (n < MIN_MEMORY_LIMIT) throw new ConfigError(path, `${got} is ${n} bytes, below the minimum of 1M (a bare number is bytes: write 512M for 512 MiB)`);
  return n;
};

const count = (n: number): string => n.toLocaleString('en-US');

/** The settings the budget depends on (from the resolved configuration). */
export interface BudgetSettings {
  maxFlows: number;
  /** Unset: the same as maxFlows (the datapath's rule). */
  maxFlowsV6?: number;
  ringBytes: number;
  /** collector.max_in_flight plus jetstream.max_in_flight of the outputs configured; undefined with neither. */
  maxInFlight?: number;
  /** collector.aggregate_max_groups with collector.profile netbird-aggregated; undefined otherwise. */
  aggregateGroups?: number;
  /** datapath.drop_keys (default DEFAULT_DROP_KEYS): the drop maps are budgeted even with drops off, since ctl can switch them on. */
  dropKeys?: number;
}

export interface MemoryBudget {
  maxFlows: number;
  maxFlowsV6: number;
  /** Flow-state bytes per flow (the tracker's slot and its share of the index), each family. */
  flowStateBytesPerFlowV4: number;
  flowStateBytesPerFlowV6: number;
  /** The tracker's per-flow state with both maps full (flowStateBytes of src/flow/budget.ts). */
  flowStateBytes: number;
  /** One full read of both kernel flow maps, held while the drain decodes it. */
  mapReadBytes: number;
  baseBytes: number;
  /** The exporter's bounded buffers: max_in_flight events and the spool's memory cap (0 without a collector), and the aggregated profile's groups. */
  exportBytes: number;
  /** base + flow state + map read + export: what the daemon's resident memory stays within. */
  residentBytes: number;
  /** The drop probe's maps (two of datapath.drop_keys entries and the per-reason counters), part of kernelBytes. */
  dropMapBytes: number;
  /** The kernel's flow maps, ring buffer and drop maps: not resident in the process, charged to its cgroup. */
  kernelBytes: number;
  /** resident + kernel: what must fit in the memory limit. */
  totalBytes: number;
}

export function memoryBudget(s: BudgetSettings): MemoryBudget {
  const v4 = s.maxFlows, v6 = s.maxFlowsV6 ?? s.maxFlows;
  const flowState = flowStateBytes(v4, v6);
  const mapRead = mapReadBytes(v4, v6);
  const exportBytes = (s.maxInFlight === undefined ? 0 : s.maxInFlight * IN_FLIGHT_EVENT_BYTES + SPOOL_DEFAULTS.memoryBytes) +
    (s.aggregateGroups ?? 0) * AGGREGATE_GROUP_BYTES;
  const resident = DAEMON_BASE_BYTES + flowState + mapRead + exportBytes;
  const dropMaps = dropMapBytes(s.dropKeys ?? DEFAULT_DROP_KEYS);
  const kernel = kernelMapBytes(v4, v6, s.ringBytes) + dropMaps;
  return {
    maxFlows: v4,
    maxFlowsV6: v6,
    flowStateBytesPerFlowV4: Math.ceil(flowStateBytes(v4, 0) / v4),
    flowStateBytesPerFlowV6: Math.ceil(flowStateBytes(0, v6) / v6),
    flowStateBytes: flowState,
    mapReadBytes: mapRead,
    baseBytes: DAEMON_BASE_BYTES,
    exportBytes,
    residentBytes: resident,
    dropMapBytes: dropMaps,
    kernelBytes: kernel,
    totalBytes: resident + kernel,
  };
}

/** The limit the budget is checked against, and where it came from. */
export interface MemoryLimit {
  bytes: number;
  /** "memory_limit (in FILE)", "memory_limit (from --memory-limit)" or "cgroup /system.slice/wgflow.service". */
  source: string;
}

export interface MemoryPlan {
  budget: MemoryBudget;
  limit?: MemoryLimit;
}

/**
 * The limit that applies: the lower of memory_limit and the control group's (the kernel enforces
 * the group's whatever the file says); undefined when neither is set.
 */
export function effectiveLimit(configured: MemoryLimit | undefined, cgroup: CgroupLimit | undefined): MemoryLimit | undefined {
  const fromGroup = cgroup ? { bytes: cgroup.bytes, source: `cgroup ${cgroup.group}` } : undefined;
  if (configured && fromGroup) return fromGroup.bytes < configured.bytes ? fromGroup : configured;
  return configured ?? fromGroup;
}

/**
 * The most flows that fit in limitBytes: max_flows (and max_flows_v6 with it when that is unset;
 * an explicit max_flows_v6 stays as set). 0 when not even one does.
 */
export function maxFlowsThatFit(s: BudgetSettings, limitBytes: number): number {
  const fits = (n: number): boolean => memoryBudget({ ...s, maxFlows: n, maxFlowsV6: s.maxFlowsV6 === undefined ? n : s.maxFlowsV6 }).totalBytes <= limitBytes;
  let lo = 0, hi = 1 << 26; // the largest max_flows the configuration takes
  if (fits(hi)) return hi;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** The one line the daemon logs at start (and --check-config prints). */
export function describePlan(p: MemoryPlan): string {
  const b = p.budget;
  return `memory budget: flow state ${b.flowStateBytesPerFlowV4} bytes per IPv4 flow and ${b.flowStateBytesPerFlowV6} per IPv6 flow, ` +
    `${formatBytes(b.flowStateBytes)} for ${count(b.maxFlows)} + ${count(b.maxFlowsV6)} flows; ` +
    `resident ${formatBytes(b.residentBytes)} (base ${formatBytes(b.baseBytes)}, flow state, map read ${formatBytes(b.mapReadBytes)}, export ${formatBytes(b.exportBytes)}); ` +
    `kernel maps ${formatBytes(b.kernelBytes)}; total ${formatBytes(b.totalBytes)}; ` +
    (p.limit ? `limit ${formatBytes(p.limit.bytes)} (${p.limit.source})` : 'no limit (memory_limit unset, no cgroup memory limit)');
}

/** Refuse a budget over the limit, naming the keys and what would fit. */
export function checkMemoryPlan(p: MemoryPlan, s: BudgetSettings): void {
  const { budget: b, limit } = p;
  if (!limit || b.totalBytes <= limit.bytes) return;
  const v6Set = s.maxFlowsV6 !== undefined;
  const flows = `${count(b.maxFlows)} IPv4 and ${count(b.maxFlowsV6)} IPv6 flows (datapath.max_flows_v6${v6Set ? '' : ' unset: the same'})`;
  const parts = `${formatBytes(b.flowStateBytes)} of flow state and ${formatBytes(b.mapReadBytes)} for a read of the flow maps; ` +
    `with the daemon's base of ${formatBytes(b.baseBytes)}${b.exportBytes ? `, export buffers of ${formatBytes(b.exportBytes)} (collector.max_in_flight ${count(s.maxInFlight ?? 0)})` : ''} ` +
    `and ${formatBytes(b.kernelBytes)} of kernel maps (charged to the same cgroup) that is a budget of ${formatBytes(b.totalBytes)}`;
  const over = `over the memory limit of ${formatBytes(limit.bytes)} (${limit.source})`;
  const fit = maxFlowsThatFit(s, limit.bytes);
  let advice: string;
  if (fit >= 1) {
    advice = `at most ${count(fit)} flows fit (datapath.max_flows${v6Set ? `, with datapath.max_flows_v6 ${count(b.maxFlowsV6)}` : ' and max_flows_v6'}): ` +
      `lower datapath.max_flows${v6Set ? ' or datapath.max_flows_v6' : ''} or raise the limit`;
  } else if (v6Set && maxFlowsThatFit({ ...s, maxFlowsV6: undefined }, limit.bytes) >= 1) {
    advice = `not even 1 IPv4 flow fits next to ${count(b.maxFlowsV6)} IPv6 flows: lower datapath.max_flows_v6 or raise the limit`;
  } else {
    advice = `not even 1 flow fits (the budget with one flow is ${formatBytes(memoryBudget({ ...s, maxFlows: 1, maxFlowsV6: 1 }).totalBytes)}): raise the limit` +
      (b.exportBytes ? ' or lower collector.max_in_flight' : '');
  }
  throw new ConfigError('datapath.max_flows', `${flows} need ${parts}, ${over}; ${advice}`);
}
