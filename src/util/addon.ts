// Typed view of the C++ addon (native/src/addon.cc). src/datapath/ talks to it, and the collector
// for its JSON fast path (native/src/json_line.cc, src/collector/native-json.ts).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface NativeOptions {
  objectPath: string;
  maxFlows: number;
  maxFlowsV6: number;
  ringBytes: number;
  pinDir?: string;
}

export interface NativeAttachment {
  name?: string;
  ifindex: number;
  mode: 'tcx' | 'clsact';
  l3Offset: number;
}

export interface NativeMapRead {
  count: number;
  keys: ArrayBuffer;
  values: ArrayBuffer;
  /** A limited read stopped before the end of the map: go on with token. */
  more: boolean;
  token: number;
}

export interface NativeMapInfo {
  name: string;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

export interface NativeDatapath {
  attach(ifname: string, mode?: 'auto' | 'tcx' | 'clsact'): NativeAttachment;
  detach(ifname: string): void;
  attachments(): Required<NativeAttachment>[];
  setConfig(cfg: { counting?: boolean; wakeupBatch?: number }): void;
  getConfig(): { counting: boolean; wakeupBatch: number };
  poll(timeoutMs: number, maxRecords: number): Promise<ArrayBuffer>;
  /** Into a buffer the caller reuses: resolves to the bytes written (whole records). */
  poll(timeoutMs: number, maxRecords: number, into: ArrayBuffer): Promise<number>;
  /** limit: about this many entries (whole batches), then `more` and the `token` to go on with. */
  /** keys, values: read into these (as many whole batches as they hold) and hand them back. */
  readFlows(family: 4 | 6, drain: boolean, limit?: number, token?: number, keys?: ArrayBuffer, values?: ArrayBuffer): Promise<NativeMapRead>;
  deleteFlows(family: 4 | 6, keys: Uint8Array): Promise<{ values: ArrayBuffer; found: Uint8Array }>;
  stats(): ArrayBuffer;
  mapInfo(): NativeMapInfo[];
  testRun(program: string, packet: Buffer, opts?: TestRunOptions): { retval: number; durationNs: number };
  close(): void;
}

export interface TestRunOptions {
  repeat?: number;
  gsoSegs?: number;
  gsoSize?: number;
}

/** A prefix as the kernel gives it: address bytes (4 or 16) and length. */
export interface NativePrefix {
  family: 4 | 6;
  addr: Buffer;
  cidr: number;
}

/** One peer of a kernel WireGuard device (WG_CMD_GET_DEVICE, native/src/wg_netlink.cc). */
export interface NativeWgPeer {
  /** 32 bytes. */
  publicKey: Buffer;
  endpoint: { family: 4 | 6; addr: Buffer; port: number } | null;
  lastHandshakeSec: number;
  lastHandshakeNsec: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepalive: number;
  allowedIps: NativePrefix[];
}

export interface NativeWgDevice {
  ifindex: number;
  listenPort: number;
  publicKey: Buffer | null;
  peers: NativeWgPeer[];
}

/** One address of an interface (RTM_GETADDR): local = this end, address = the prefix's. */
export interface NativeIfAddress {
  family: 4 | 6;
  local: Buffer;
  address: Buffer;
  prefixLen: number;
  /** RT_SCOPE_*: 0 universe, 253 link, 254 host. */
  scope: number;
  flags: number;
}

/** The drop probe (native/src/drops.cc, bpf/wgflow_drops.bpf.c). */
export interface NativeDropProbe {
  /** Attach to skb:kfree_skb (idempotent); throws with errno when the kernel refuses. */
  attach(): void;
  detach(): void;
  isAttached(): boolean;
  /** The watched interfaces (at most DROP_WATCH_MAX) of the namespace whose /proc/self/ns/net inode is netns. */
  setWatch(ifindexes: number[], netns: number): void;
  /** Switch the probe to its other map and read and empty the one it wrote. */
  drain(): Promise<{ count: number; keys: ArrayBuffer; values: ArrayBuffer }>;
  /** WGF_DROP_REASONS x struct wgf_drop_count, summed over CPUs. */
  reasons(): ArrayBuffer;
  /** struct wgf_drop_stats, summed over CPUs. */
  stats(): ArrayBuffer;
  close(): void;
}

/** Any other BPF object (benchmark baselines), test-run through the same harness. */
export interface NativeProgramSet {
  testRun(program: string, packet: Buffer, opts?: TestRunOptions): { retval: number; durationNs: number };
  close(): void;
}

export interface NativeModule {
  Datapath: new (opts: NativeOptions) => NativeDatapath;
  ProgramSet: new (objectPath: string) => NativeProgramSet;
  DropProbe: new (opts: { objectPath: string; maxKeys: number }) => NativeDropProbe;
  /** The running kernel's enum skb_drop_reason from its BTF: value -> name without SKB_DROP_REASON_ ({} without BTF). */
  dropReasonNames(): Record<number, string>;
  sizes: { key4: number; key6: number; flow: number; record: number; stats: number };
  /** sizeof and offsetof of bpf/wgflow.h's structs, by struct and field name as in C. */
  layout: Record<string, Record<string, number>>;
  /** The symbolic name of an errno ("ENOSYS"). */
  errnoName(errno: number): string;
  /** malloc_trim(0): give memory the allocator keeps after a burst back to the kernel. */
  trimMemory(): boolean;
  /** mallopt(M_MMAP_THRESHOLD): blocks of at least bytes get their own mapping (and a fixed threshold). */
  setMmapThreshold(bytes: number): boolean;
  /**
   * A kernel WireGuard device of this thread's network namespace over generic netlink; throws an
   * Error with code ENODEV (no such interface), EOPNOTSUPP (not WireGuard), EPERM, ...
   */
  wgGetDevice(ifname: string): NativeWgDevice;
  /** An interface's addresses over rtnetlink; throws with code ENODEV when there is no such interface. */
  netlinkAddresses(ifname: string): { ifindex: number; addresses: NativeIfAddress[] };
  /** See src/collector/native-json.ts. */
  flowEventJson(src: Uint8Array, start: number, end: number, out: Uint8Array, at: number, receiveMs: number, meta: Uint32Array): number;
}

/** The checkout this code runs from (src/ under vitest, dist/ or build/ when compiled). */
function findRoot(start: string): string {
  for (let d = start; dirname(d) !== d; d = dirname(d)) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'bpf', 'wgflow.h'))) return d;
  }
  return join(start, '..', '..');
}

export const REPO_ROOT = findRoot(__dirname);

let cached: NativeModule | undefined;

export function loadNative(): NativeModule {
  if (cached) return cached;
  const path = join(REPO_ROOT, 'native', 'build', 'Release', 'wgflow_native.node');
  if (!existsSync(path)) {
    throw new Error(`the native addon is not built (${path} is missing): run "make build" first`);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  cached = require(path) as NativeModule;
  return cached;
}

export function defaultObjectPath(): string {
  return join(REPO_ROOT, 'bpf', 'wgflow.bpf.o');
}

export function defaultDropObjectPath(): string {
  return join(REPO_ROOT, 'bpf', 'wgflow_drops.bpf.o');
}
