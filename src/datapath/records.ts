// The one TypeScript mirror of bpf/wgflow.h. Every byte offset used in user space is here.
import { ipv4FromBytes, ipv6FromBytes } from '../net/ip';
// test/datapath/records.test.ts checks these sizes against the compiled addon.

/**
 * Sizes and byte offsets of bpf/wgflow.h's structs, field names as in C. The decoders below read
 * through these names only; test/datapath/layout.test.ts checks every one against offsetof() and
 * sizeof() compiled from the header itself (the native addon exports them).
 */
export const LAYOUT = {
  wgf_key4: { size: 16, addr_a: 0, addr_b: 4, port_a: 8, port_b: 10, proto: 12, kind: 13, ifindex: 14 },
  wgf_key6: { size: 40, addr_a: 0, addr_b: 16, port_a: 32, port_b: 34, proto: 36, kind: 37, ifindex: 38 },
  wgf_flow: { size: 40, first_ns: 0, bytes: 8, packets: 24, last_seen: 32, flags: 36 },
  wgf_record: { size: 56, type: 0, family: 1, dir: 2, tcp_flags: 3, flags: 4, ts_ns: 8, k4: 16, k6: 16 },
  wgf_stats: { size: 64, flows_created: 0, map_full: 8, map_full_bytes: 16, ringbuf_full: 24, non_ip: 32, malformed: 40, malformed_bytes: 48, fragments: 56 },
  wgf_drop_key: { size: 44, saddr: 0, daddr: 16, sport: 32, dport: 34, proto: 36, kind: 37, family: 38, dir: 39, ifindex: 40 },
  wgf_drop: { size: 40, first_ns: 0, last_ns: 8, packets: 16, bytes: 24, reason: 32, flags: 36 },
  wgf_drop_count: { size: 16, packets: 0, bytes: 8 },
  wgf_drop_config: { size: 72, netns: 0, active: 4, watch: 8 },
  wgf_drop_stats: { size: 32, matched: 0, map_full: 8, map_full_bytes: 16, unparsed: 24 },
} as const;

const K4 = LAYOUT.wgf_key4, K6 = LAYOUT.wgf_key6, F = LAYOUT.wgf_flow, R = LAYOUT.wgf_record, S = LAYOUT.wgf_stats;
export const KEY4_SIZE = K4.size;
export const KEY6_SIZE = K6.size;
export const FLOW_SIZE = F.size;
export const RECORD_SIZE = R.size;
export const STATS_SIZE = S.size;
const DK = LAYOUT.wgf_drop_key, DV = LAYOUT.wgf_drop, DC = LAYOUT.wgf_drop_count, DS = LAYOUT.wgf_drop_stats;
export const DROP_KEY_SIZE = DK.size;
export const DROP_SIZE = DV.size;
/** WGF_DROP_REASONS: slots of the per-reason counters (the last one also holds every higher reason). */
export const DROP_REASON_SLOTS = 256;
/** WGF_DROP_WATCH_MAX: interfaces the drop probe can watch at once. */
export const DROP_WATCH_MAX = 16;
/** WGF_DROP_F_MIXED: later drops of the window had another reason than the one reported. */
export const DROP_FLAG_MIXED = 1 << 0;

/** enum wgf_kind: what the key's port fields mean. */
export enum FlowKind {
  Ports = 0,
  Icmp = 1,
  Other = 2,
  Fragment = 3,
}

/** enum wgf_dir. Ingress = arrived over the interface (rx); egress = sent through it (tx). */
export const DIR_INGRESS = 0;
export const DIR_EGRESS = 1;

/** enum wgf_record_type */
export enum RecordType {
  Start = 1,
  Fin = 2,
  Rst = 3,
}

/** WGF_F_* bits of wgf_flow.flags (bits 0-15 hold TCP flags: 0-7 ingress, 8-15 egress). */
export const FLAG_INIT_EGRESS = 1 << 16;
export const FLAG_INIT_B = 1 << 17;
export const FLAG_START_LOST = 1 << 18;
export const FLAG_UNCOUNTED = 1 << 19;
export const FLAG_FIN_INGRESS_SENT = 1 << 20;
export const FLAG_FIN_EGRESS_SENT = 1 << 21;
export const FLAG_RST_SENT = 1 << 22;
export const FLAG_HINT_LOST = 1 << 23;

export interface FlowKey {
  family: 4 | 6;
  /** Canonical endpoints: a is the lower address (or port when the addresses are equal). */
  addrA: string;
  addrB: string;
  /** TCP/UDP: the ports of a and b. ICMP: portA = echo identifier, portB = type << 8 | code. */
  portA: number;
  portB: number;
  proto: number;
  kind: FlowKind;
  ifindex: number;
  /**
   * Identity of the flow in user space: the raw key bytes as a latin1 string (a fast Map key;
   * IPv4 and IPv6 keys differ in length, so they never collide).
   */
  id: string;
  /** The raw key bytes, as the kernel map wants them back (deleteFlows). */
  raw: Uint8Array;
}

export interface FlowCounters {
  /** CLOCK_MONOTONIC ns of the first packet. */
  firstNs: number;
  /** Raw 32-bit jiffies stamp of the last packet; see lastSeenNs(). */
  lastSeen: number;
  rxBytes: number;
  txBytes: number;
  /** 32-bit in the kernel: wrap-around is widened by the flow tracker. */
  rxPackets: number;
  txPackets: number;
  flags: number;
}

export interface FlowEntry {
  key: FlowKey;
  value: FlowCounters;
}

export interface RingRecord {
  type: RecordType;
  /** DIR_INGRESS or DIR_EGRESS of the packet that caused the record. */
  dir: number;
  tcpFlags: number;
  flags: number;
  tsNs: number;
  key: FlowKey;
}

export interface KernelStats {
  flowsCreated: number;
  mapFull: number;
  mapFullBytes: number;
  ringbufFull: number;
  nonIp: number;
  malformed: number;
  malformedBytes: number;
  fragments: number;
}

function u64(v: DataView, o: number): number {
  // Counters and monotonic ns stay exact below 2^53 (9 PB, or 104 days of uptime in ns; beyond
  // that a timestamp loses at most a few ns).
  return v.getUint32(o, true) + v.getUint32(o + 4, true) * 0x1_0000_0000;
}

/**
 * A flow key decoded on demand from its id (the raw key bytes as a latin1 string). Batches carry
 * many keys whose addresses are never looked at (known flows, FIN hints): building the id is one
 * substring, everything else waits until a field is read.
 */
class KeyView implements FlowKey {
  constructor(readonly id: string, readonly family: 4 | 6) {}

  private bytes(o: number, n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.id.charCodeAt(o + i);
    return b;
  }
  /** The layout of this key's family. */
  private get k(): typeof K4 | typeof K6 {
    return this.family === 4 ? K4 : K6;
  }
  get addrA(): string {
    return this.family === 4 ? ipv4FromBytes(this.bytes(K4.addr_a, 4)) : ipv6FromBytes(this.bytes(K6.addr_a, 16));
  }
  get addrB(): string {
    return this.family === 4 ? ipv4FromBytes(this.bytes(K4.addr_b, 4)) : ipv6FromBytes(this.bytes(K6.addr_b, 16));
  }
  get portA(): number {
    const o = this.k.port_a;
    return (this.id.charCodeAt(o) << 8) | this.id.charCodeAt(o + 1);
  }
  get portB(): number {
    const o = this.k.port_b;
    return (this.id.charCodeAt(o) << 8) | this.id.charCodeAt(o + 1);
  }
  get proto(): number {
    return this.id.charCodeAt(this.k.proto);
  }
  get kind(): FlowKind {
    return this.id.charCodeAt(this.k.kind) as FlowKind;
  }
  get ifindex(): number {
    const o = this.k.ifindex;
    return this.id.charCodeAt(o) | (this.id.charCodeAt(o + 1) << 8);
  }
  get raw(): Uint8Array {
    return this.bytes(0, this.id.length);
  }
  /** Plain object with every field (JSON, logs, tests). */
  toJSON(): Omit<FlowKey, 'raw' | 'id'> {
    const { family, addrA, addrB, portA, portB, proto, kind, ifindex } = this;
    return { family, addrA, addrB, portA, portB, proto, kind, ifindex };
  }
}

/** The flow key whose id (raw bytes as latin1) is given; fields decode on demand. */
export function keyFromId(id: string): FlowKey {
  if (id.length !== KEY4_SIZE && id.length !== KEY6_SIZE) throw new RangeError(`not a flow key id (length ${id.length})`);
  return new KeyView(id, id.length === KEY4_SIZE ? 4 : 6);
}

/** Decode a key of the given family at byte offset o of buf. */
export function decodeKey(buf: Uint8Array, o: number, family: 4 | 6): FlowKey {
  const size = family === 4 ? KEY4_SIZE : KEY6_SIZE;
  return new KeyView(Buffer.from(buf.buffer, buf.byteOffset + o, size).toString('latin1'), family);
}

/** The user-space identity of a flow key: its raw bytes as a latin1 string. */
export function keyId(raw: Uint8Array, family: 4 | 6): string {
  const size = family === 4 ? KEY4_SIZE : KEY6_SIZE;
  if (raw.byteLength !== size) throw new RangeError(`an IPv${family} key has ${size} bytes, got ${raw.byteLength}`);
  return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('latin1');
}

/** One latin1 string of a whole batch (or of len bytes from byte from): key ids are then substrings, not one Buffer each. */
function latin1(buf: ArrayBuffer, from = 0, len = buf.byteLength - from): string {
  return Buffer.from(buf, from, len).toString('latin1');
}

export function decodeCounters(view: DataView, o: number): FlowCounters {
  return {
    firstNs: u64(view, o + F.first_ns),
    rxBytes: u64(view, o + F.bytes), // bytes[WGF_DIR_INGRESS]
    txBytes: u64(view, o + F.bytes + 8),
    rxPackets: view.getUint32(o + F.packets, true),
    txPackets: view.getUint32(o + F.packets + 4, true),
    lastSeen: view.getUint32(o + F.last_seen, true),
    flags: view.getUint32(o + F.flags, true),
  };
}

/** Decode the parallel key/value buffers of a batched map read. */
export function decodeFlows(family: 4 | 6, keys: ArrayBuffer, values: ArrayBuffer, count: number): FlowEntry[] {
  return decodeFlowRange(family, keys, values, 0, count);
}

/** Entries [from, to) of a batched map read. */
function decodeFlowRange(family: 4 | 6, keys: ArrayBuffer, values: ArrayBuffer, from: number, to: number): FlowEntry[] {
  const size = family === 4 ? KEY4_SIZE : KEY6_SIZE;
  const ks = latin1(keys, from * size, (to - from) * size);
  const vv = new DataView(values);
  const out: FlowEntry[] = new Array(to - from);
  for (let i = from; i < to; i++) {
    const k = (i - from) * size;
    out[i - from] = { key: new KeyView(ks.substring(k, k + size), family), value: decodeCounters(vv, i * FLOW_SIZE) };
  }
  return out;
}

/**
 * The entries of one read of the flow maps, decoded a slice at a time. The tracker walks a
 * drain of a million flows in slices whose objects die young, instead of one array of them all
 * that outlives several garbage collections (and kept the heap hundreds of MB larger). A plain
 * FlowEntry[] is one too.
 */
export interface FlowEntryList {
  readonly length: number;
  /** Entries [from, to) as fresh objects; all of them without arguments. */
  slice(from?: number, to?: number): FlowEntry[];
}

/** A FlowEntryList over batched map reads (key and value buffers as the kernel returned them), in order. */
export class FlowMapRead implements FlowEntryList {
  private readonly parts: { family: 4 | 6; keys: ArrayBuffer; values: ArrayBuffer; start: number; count: number }[] = [];
  private total = 0;

  get length(): number {
    return this.total;
  }

  add(family: 4 | 6, keys: ArrayBuffer, values: ArrayBuffer, count: number): void {
    const size = family === 4 ? KEY4_SIZE : KEY6_SIZE;
    if (keys.byteLength < count * size || values.byteLength < count * FLOW_SIZE) {
      throw new RangeError(`a map read of ${count} entries needs ${count * size} key and ${count * FLOW_SIZE} value bytes`);
    }
    if (count > 0) this.parts.push({ family, keys, values, start: this.total, count });
    this.total += count;
  }

  /**
   * The raw bytes of entries [from, to), part by part: fn(family, keys, values, a, b) for the
   * entries [a, b) of each part's buffers (keys: KEY4_SIZE or KEY6_SIZE bytes each, values
   * FLOW_SIZE). For readers that take the kernel's bytes in place (the tracker's drain).
   */
  forEachPart(from: number, to: number, fn: (family: 4 | 6, keys: Uint8Array, values: Uint8Array, a: number, b: number) => void): void {
    for (const p of this.parts) {
      const a = Math.max(from, p.start) - p.start, b = Math.min(to, p.start + p.count) - p.start;
      if (a < b) fn(p.family, new Uint8Array(p.keys), new Uint8Array(p.values), a, b);
    }
  }

  /** Entries [from, to), clamped to 0..length (no negative indexes). */
  slice(from = 0, to = this.total): FlowEntry[] {
    let out: FlowEntry[] = [];
    for (const p of this.parts) {
      const a = Math.max(from, p.start) - p.start, b = Math.min(to, p.start + p.count) - p.start;
      if (a >= b) continue;
      const part = decodeFlowRange(p.family, p.keys, p.values, a, b);
      if (out.length === 0) out = part;
      else for (const e of part) out.push(e);
    }
    return out;
  }
}

/** Decode one batch from the ring buffer. Records with an unknown family are skipped. */
export function decodeRecords(buf: ArrayBuffer): RingRecord[] {
  const b = new Uint8Array(buf);
  const v = new DataView(buf);
  const s = latin1(buf);
  const n = Math.floor(b.byteLength / RECORD_SIZE);
  const out: RingRecord[] = [];
  for (let i = 0; i < n; i++) {
    const o = i * RECORD_SIZE;
    const family = b[o + R.family];
    if (family !== 4 && family !== 6) continue;
    const k = o + (family === 4 ? R.k4 : R.k6);
    out.push({
      type: b[o + R.type] as RecordType,
      dir: b[o + R.dir],
      tcpFlags: b[o + R.tcp_flags],
      flags: v.getUint32(o + R.flags, true),
      tsNs: u64(v, o + R.ts_ns),
      key: new KeyView(s.substring(k, k + (family === 4 ? KEY4_SIZE : KEY6_SIZE)), family),
    });
  }
  return out;
}

export function decodeStats(buf: ArrayBuffer): KernelStats {
  const v = new DataView(buf);
  return {
    flowsCreated: u64(v, S.flows_created),
    mapFull: u64(v, S.map_full),
    mapFullBytes: u64(v, S.map_full_bytes),
    ringbufFull: u64(v, S.ringbuf_full),
    nonIp: u64(v, S.non_ip),
    malformed: u64(v, S.malformed),
    malformedBytes: u64(v, S.malformed_bytes),
    fragments: u64(v, S.fragments),
  };
}

/** One aggregate of the drop probe (struct wgf_drop_key + struct wgf_drop). */
export interface DropEntry {
  family: 4 | 6;
  /** The dropped packets' source and destination: 4 or 16 bytes each (views into the read buffer). */
  saddr: Uint8Array;
  daddr: Uint8Array;
  /** TCP/UDP ports; ICMP: sport = echo identifier (or 0), dport = type << 8 | code. */
  sport: number;
  dport: number;
  proto: number;
  kind: FlowKind;
  /** DIR_INGRESS: came in through the interface; DIR_EGRESS: was headed out to it. */
  dir: number;
  ifindex: number;
  /** CLOCK_MONOTONIC ns of the window's first and last drop. */
  firstNs: number;
  lastNs: number;
  packets: number;
  bytes: number;
  /** enum skb_drop_reason of the first drop (the running kernel's numbering). */
  reason: number;
  flags: number;
  /** The key's 44 bytes: the same drop in the next window has the same ones. */
  key: Uint8Array;
}

/** Entries of a drain of the drop map (drops.cc's drain()). */
export function decodeDrops(keys: ArrayBuffer, values: ArrayBuffer, count: number): DropEntry[] {
  if (keys.byteLength < count * DK.size || values.byteLength < count * DV.size) throw new RangeError('decodeDrops: buffers shorter than count entries');
  const kb = new Uint8Array(keys), v = new DataView(values);
  const out: DropEntry[] = [];
  for (let i = 0; i < count; i++) {
    const k = i * DK.size, o = i * DV.size;
    const family = kb[k + DK.family] === 6 ? 6 : 4;
    const n = family === 6 ? 16 : 4;
    out.push({
      family,
      saddr: kb.subarray(k + DK.saddr, k + DK.saddr + n),
      daddr: kb.subarray(k + DK.daddr, k + DK.daddr + n),
      sport: (kb[k + DK.sport] << 8) | kb[k + DK.sport + 1],
      dport: (kb[k + DK.dport] << 8) | kb[k + DK.dport + 1],
      proto: kb[k + DK.proto],
      kind: kb[k + DK.kind] as FlowKind,
      dir: kb[k + DK.dir],
      ifindex: kb[k + DK.ifindex] | (kb[k + DK.ifindex + 1] << 8),
      firstNs: u64(v, o + DV.first_ns),
      lastNs: u64(v, o + DV.last_ns),
      packets: u64(v, o + DV.packets),
      bytes: u64(v, o + DV.bytes),
      reason: v.getUint32(o + DV.reason, true),
      flags: v.getUint32(o + DV.flags, true),
      key: kb.subarray(k, k + DK.size),
    });
  }
  return out;
}

/** The drop probe's per-reason totals: slot -> packets and bytes (only slots that saw drops). */
export function decodeDropReasons(buf: ArrayBuffer): Map<number, { packets: number; bytes: number }> {
  const v = new DataView(buf);
  const out = new Map<number, { packets: number; bytes: number }>();
  for (let slot = 0; slot < DROP_REASON_SLOTS && (slot + 1) * DC.size <= buf.byteLength; slot++) {
    const packets = u64(v, slot * DC.size + DC.packets);
    if (packets > 0) out.set(slot, { packets, bytes: u64(v, slot * DC.size + DC.bytes) });
  }
  return out;
}

/** struct wgf_drop_stats, summed over CPUs. */
export interface DropProbeStats {
  /** Drops of watched interfaces (skbs). */
  matched: number;
  /** Packets of those not aggregated: the drop map was full. */
  mapFull: number;
  mapFullBytes: number;
  /** Watched, but no IP header could be read. */
  unparsed: number;
}

export function decodeDropStats(buf: ArrayBuffer): DropProbeStats {
  const v = new DataView(buf);
  return { matched: u64(v, DS.matched), mapFull: u64(v, DS.map_full), mapFullBytes: u64(v, DS.map_full_bytes), unparsed: u64(v, DS.unparsed) };
}

/**
 * How kernel jiffies relate to CLOCK_MONOTONIC: one sample of both, and the tick rate.
 * Datapath.open() measures it once per process (setJiffiesClock); the default suits tests that
 * build last-seen stamps with lastSeenStamp().
 */
export interface JiffiesClock {
  hz: number;
  jiffies: number;
  monoNs: number;
}

let jiffiesClock: JiffiesClock = { hz: 1000, jiffies: 0, monoNs: 0 };

export function setJiffiesClock(c: JiffiesClock): void {
  jiffiesClock = c;
}

export function getJiffiesClock(): JiffiesClock {
  return jiffiesClock;
}

/** Jiffies at a CLOCK_MONOTONIC time, by the calibrated clock (not wrapped). */
function jiffiesAt(monoNs: number): number {
  const c = jiffiesClock;
  return c.jiffies + Math.floor(((monoNs - c.monoNs) * c.hz) / 1e9);
}

/** The 32-bit stamp the kernel would store for a packet at monoNs (for tests and tools). */
export function lastSeenStamp(monoNs: number): number {
  return jiffiesAt(monoNs) >>> 0;
}

/**
 * Widen the kernel's 32-bit jiffies stamp to CLOCK_MONOTONIC ns, given the current monotonic
 * time: the stamp is in the past, less than 2^32 ticks ago. Precision: one tick (1-10 ms).
 */
export function lastSeenNs(lastSeen: number, nowNs: number): number {
  const age = (jiffiesAt(nowNs) - lastSeen) >>> 0; // ticks, modulo 2^32
  return nowNs - (age * 1e9) / jiffiesClock.hz;
}

/** TCP flags the kernel saw in one direction (DIR_INGRESS/DIR_EGRESS). */
export function tcpFlagsOf(flags: number, dir: number): number {
  return (flags >>> (dir * 8)) & 0xff;
}
