// Typed wrapper over the native addon: load, attach, configure, and read kernel records in batches.
import { execFileSync } from 'node:child_process';
import { statfsSync } from 'node:fs';
import { ensureDir } from '../util/fs';
import { dirname } from 'node:path';
import { defaultObjectPath, loadNative, NativeAttachment, NativeDatapath, NativeMapInfo } from '../util/addon';
import {
  decodeCounters,
  decodeRecords,
  decodeStats,
  FLOW_SIZE,
  KEY4_SIZE,
  KEY6_SIZE,
  RECORD_SIZE,
  FlowCounters,
  FlowKey,
  FlowMapRead,
  KernelStats,
  RingRecord,
  setJiffiesClock,
} from './records';

export interface DatapathOptions {
  /** IPv4 flow map size (default 65,536). */
  maxFlows?: number;
  /** IPv6 flow map size (default: maxFlows). */
  maxFlowsV6?: number;
  /** Ring buffer size in bytes: a power of two, at least 4096 (default 1 MiB = 16,384 records). */
  ringBytes?: number;
  /** bpffs directory to pin the flow maps in, so a restarted daemon adopts live flows. */
  pinDir?: string;
  /** The compiled BPF object (default: bpf/wgflow.bpf.o of this checkout). */
  objectPath?: string;
}

export type AttachMode = 'auto' | 'tcx' | 'clsact';
export type Attachment = NativeAttachment;

export const DEFAULT_MAX_FLOWS = 65_536;
export const DEFAULT_RING_BYTES = 1 << 20;
/** Where the flow maps are pinned so that a restart adopts live flows. */
export const DEFAULT_PIN_DIR = '/sys/fs/bpf/wgflow';
/**
 * Records per poll() batch. Small enough that a batch's objects die young (65,536-record batches
 * get promoted by the GC and decode 2.5x slower), large enough to amortise the threadpool hop.
 */
export const DEFAULT_BATCH_RECORDS = 4096;
const MAX_FLOWS_LIMIT = 1 << 26;

/** The kernel's hash map element header (struct htab_elem), and one bucket (struct bucket). */
const HTAB_ELEM_BYTES = 48;
const HTAB_BUCKET_BYTES = 16;
/** Per map: struct bpf_htab, the per-CPU spare elements and lock counters; a ring's header pages. */
const MAP_OVERHEAD_BYTES = 4096;
const RING_OVERHEAD_BYTES = 5 * 4096;

/**
 * Kernel memory of the flow maps and the ring buffer, as the kernel accounts it (bpftool's
 * bytes_memlock): the hash maps are preallocated, every element (header, key and value, each
 * rounded to 8 bytes) plus a power-of-two bucket array, all of it taken when the maps are created.
 * Not part of the daemon's RSS, but charged to the memory cgroup of the process that creates the
 * maps (kernels >= 5.11), so a cgroup's memory.max must hold it too. Checked against bpftool in
 * test/integration/memory-budget.test.ts.
 */
export function kernelMapBytes(maxFlows: number, maxFlowsV6: number, ringBytes: number): number {
  const round8 = (n: number): number => Math.ceil(n / 8) * 8;
  const pow2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
  const htab = (entries: number, keySize: number): number =>
    entries * (HTAB_ELEM_BYTES + round8(keySize) + round8(FLOW_SIZE)) + pow2(entries) * HTAB_BUCKET_BYTES + MAP_OVERHEAD_BYTES;
  return htab(maxFlows, KEY4_SIZE) + htab(maxFlowsV6, KEY6_SIZE) + ringBytes + RING_OVERHEAD_BYTES;
}
const BPF_FS_MAGIC = 0xcafe4a11;

/** An error from the datapath, with the kernel errno where there is one. */
export class DatapathError extends Error {
  constructor(message: string, readonly code: string, readonly errno?: number) {
    super(message);
    this.name = 'DatapathError';
  }
}

/** Runs a native call; its errors become DatapathErrors (with the errno code). */
export function wrap<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw toDatapathError(err);
  }
}

export function toDatapathError(err: unknown): DatapathError {
  if (err instanceof DatapathError) return err;
  const e = err as { message?: string; code?: string; errno?: number };
  return new DatapathError(e.message ?? String(err), e.code ?? 'EDATAPATH', e.errno);
}

/** The ring buffer size the kernel accepts (a power of two); the configuration check uses it too. */
export function checkRingBytes(v: number): number {
  const n = checkCount('ringBytes', v, 4096, 1 << 30);
  if ((n & (n - 1)) !== 0) throw new DatapathError(`ringBytes must be a power of two, got ${n}`, 'EINVAL');
  return n;
}

function checkCount(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new DatapathError(`${name} must be an integer from ${min} to ${max}, got ${v}`, 'EINVAL');
  }
  return v;
}

/**
 * Make sure dir is on a mounted bpffs; mount /sys/fs/bpf if nothing is there yet. Returns true when
 * it had to mount it: that bpffs lives only as long as this mount namespace (under `ip netns exec`
 * every run gets a new one, so pinned state would not survive a restart).
 */
export function ensureBpffs(dir: string): boolean {
  const isBpffs = (p: string): boolean => {
    try {
      return statfsSync(p).type === BPF_FS_MAGIC;
    } catch {
      return false;
    }
  };
  let mounted = false;
  if (dir.startsWith('/sys/fs/bpf') && !isBpffs('/sys/fs/bpf')) {
    try {
      execFileSync('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf'], { stdio: 'pipe' });
      mounted = true;
    } catch (err) {
      throw new DatapathError(
        `bpffs is not mounted at /sys/fs/bpf and mounting it failed (${(err as Error).message.trim()}); ` +
          'run "mount -t bpf bpf /sys/fs/bpf" as root',
        'ENOBPFFS',
      );
    }
  }
  ensureDir(dir);
  if (!isBpffs(dir)) {
    throw new DatapathError(`${dir} is not on a bpffs mount (mount -t bpf bpf ${dirname(dir)})`, 'ENOBPFFS');
  }
  return mounted;
}

let clockCalibrated = false;

/**
 * Learn how jiffies (the kernel's last-seen stamps) map to CLOCK_MONOTONIC: two samples taken at
 * tick edges ~100 ms apart give HZ (rounded to a kernel value) and the offset. Once per process.
 */
function calibrateJiffies(native: NativeDatapath): void {
  if (clockCalibrated) return;
  const frame = Buffer.alloc(60);
  frame.writeUInt16BE(0x88b5, 12); // local experimental ethertype: the clock program ignores it
  const mono = (): number => Number(process.hrtime.bigint());
  const jiffies = (): number => native.testRun('wgflow_clock', frame).retval >>> 0;
  const edge = (): { j: number; t: number } => {
    const start = jiffies();
    for (;;) {
      const j = jiffies();
      if (j !== start) return { j, t: mono() };
    }
  };
  const a = edge();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  const b = edge();
  const measured = ((b.j - a.j) >>> 0) / ((b.t - a.t) / 1e9);
  const hz = [100, 250, 300, 1000].reduce((best, h) => (Math.abs(h - measured) < Math.abs(best - measured) ? h : best));
  setJiffiesClock({ hz, jiffies: b.j, monoNs: b.t });
  clockCalibrated = true;
}

/** Entries per chunk of readFlowChunks: 3.6 MB of IPv4 keys and values, 5.2 MB of IPv6. */
export const READ_CHUNK_ENTRIES = 65536;

/**
 * Bytes user space holds for reading the flow maps: a drain walks them a chunk at a time
 * (readFlowChunks) into buffers it keeps and reuses, IPv4 keys, IPv6 keys and one values buffer
 * for both; only the entries a chunk fills are ever touched. Worst case: both maps full, so a
 * chunk of each family is full (maxFlows * (16 + 40) + maxFlowsV6 * (40 + 40) for maps no
 * larger than a chunk).
 */
export function mapReadBytes(maxFlows: number, maxFlowsV6: number, chunkEntries = READ_CHUNK_ENTRIES): number {
  const c4 = Math.min(maxFlows, chunkEntries), c6 = Math.min(maxFlowsV6, chunkEntries);
  return c4 * KEY4_SIZE + c6 * KEY6_SIZE + Math.max(c4, c6) * FLOW_SIZE;
}

/** Entries per kernel batch read (kBatchEntries in native/src/addon.cc): a chunk holds whole batches. */
const READ_BATCH_ENTRIES = 4096;

export class Datapath {
  private closed = false;
  /** readFlowChunks' buffers (kept between drains) and whether a walk is using them. */
  private chunkBufs: { entries: number; keys4: ArrayBuffer; keys6: ArrayBuffer; values: ArrayBuffer } | null = null;
  private chunkBusy = false;
  /** pollShared's buffer. */
  private pollBuf: ArrayBuffer | null = null;

  private constructor(private readonly native: NativeDatapath, readonly options: Required<Omit<DatapathOptions, 'pinDir'>> & { pinDir?: string }) {}

  /** Load the BPF programs and maps. Needs root or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN. */
  static open(opts: DatapathOptions = {}): Datapath {
    const maxFlows = checkCount('maxFlows', opts.maxFlows ?? DEFAULT_MAX_FLOWS, 1, MAX_FLOWS_LIMIT);
    const maxFlowsV6 = checkCount('maxFlowsV6', opts.maxFlowsV6 ?? maxFlows, 1, MAX_FLOWS_LIMIT);
    const ringBytes = checkRingBytes(opts.ringBytes ?? DEFAULT_RING_BYTES);
    const objectPath = opts.objectPath ?? defaultObjectPath();
    const mountedBpffs = opts.pinDir ? ensureBpffs(opts.pinDir) : false;
    const mod = wrap(() => loadNative());
    const native = wrap(() => new mod.Datapath({ objectPath, maxFlows, maxFlowsV6, ringBytes, pinDir: opts.pinDir }));
    try {
      wrap(() => calibrateJiffies(native));
    } catch (err) {
      native.close();
      throw err;
    }
    const dp = new Datapath(native, { maxFlows, maxFlowsV6, ringBytes, objectPath, pinDir: opts.pinDir });
    dp.mountedBpffs = mountedBpffs;
    return dp;
  }

  /** True when open() mounted /sys/fs/bpf itself (pinned state then ends with this mount namespace). */
  mountedBpffs = false;

  /**
   * Attach the ingress and egress programs to an interface of this network namespace.
   * 'auto' prefers TCX links (gone when the process exits, even by a crash) and falls back to
   * clsact filters (which outlive the process; a later attach replaces them). Attaching twice
   * to the same interface from one Datapath is refused with EEXIST.
   */
  attach(ifname: string, mode: AttachMode = 'auto'): Attachment {
    this.check();
    return wrap(() => this.native.attach(ifname, mode));
  }

  detach(ifname: string): void {
    this.check();
    wrap(() => this.native.detach(ifname));
  }

  attachments(): Required<Attachment>[] {
    this.check();
    return this.native.attachments();
  }

  /** Kernel byte/packet counting on or off, at once, without detaching or losing flows. */
  setCounting(on: boolean): void {
    this.check();
    wrap(() => this.native.setConfig({ counting: on }));
  }

  counting(): boolean {
    this.check();
    return wrap(() => this.native.getConfig().counting);
  }

  /** Wake the consumer once this many bytes of records wait (the poll timeout bounds latency anyway). */
  setWakeupBatch(bytes: number): void {
    this.check();
    wrap(() => this.native.setConfig({ wakeupBatch: checkCount('wakeupBatch', bytes, 0, this.options.ringBytes) }));
  }

  /** One raw batch of ring records (56 bytes each), waiting at most timeoutMs when the ring is empty. */
  pollRaw(timeoutMs = 100, maxRecords = DEFAULT_BATCH_RECORDS): Promise<ArrayBuffer> {
    this.check();
    return this.native.poll(timeoutMs, maxRecords).catch((err: unknown) => {
      throw toDatapathError(err);
    });
  }

  /**
   * One raw batch read into a buffer the datapath keeps: a view valid until the next poll (the
   * flow loop reads each batch before it polls again, and no batch leaves garbage behind).
   */
  async pollShared(timeoutMs = 100, maxRecords = DEFAULT_BATCH_RECORDS): Promise<Uint8Array> {
    this.check();
    if (this.pollBuf === null || this.pollBuf.byteLength < maxRecords * RECORD_SIZE) this.pollBuf = new ArrayBuffer(maxRecords * RECORD_SIZE);
    const buf = this.pollBuf;
    const n = await this.native.poll(timeoutMs, maxRecords, buf).catch((err: unknown) => {
      throw toDatapathError(err);
    });
    return new Uint8Array(buf, 0, n);
  }

  /** One decoded batch of ring records. */
  async poll(timeoutMs = 100, maxRecords = DEFAULT_BATCH_RECORDS): Promise<RingRecord[]> {
    return decodeRecords(await this.pollRaw(timeoutMs, maxRecords));
  }

  /** Decoded batches until close(); each iteration waits at most timeoutMs. */
  async *batches(timeoutMs = 100, maxRecords = DEFAULT_BATCH_RECORDS): AsyncGenerator<RingRecord[]> {
    while (!this.closed) {
      const batch = await this.poll(timeoutMs, maxRecords);
      if (batch.length > 0) yield batch;
    }
  }

  /** Every flow entry of both maps (batched syscalls, off the event loop), decoded on demand. */
  async readFlows(): Promise<FlowMapRead> {
    return this.readBoth(false);
  }

  /**
   * Every flow entry, a chunk of about chunkEntries at a time (IPv4 first, then IPv6): the drain
   * then holds one chunk of the kernel's bytes rather than the whole map's (56 MB for a million
   * IPv4 flows). Entries created or moved during the walk may be missed or listed twice, as
   * with readFlows.
   */
  async *readFlowChunks(chunkEntries = READ_CHUNK_ENTRIES): AsyncGenerator<FlowMapRead> {
    if (!Number.isInteger(chunkEntries) || chunkEntries < READ_BATCH_ENTRIES) {
      throw new RangeError(`chunkEntries must be an integer >= ${READ_BATCH_ENTRIES}, got ${chunkEntries}`);
    }
    // Buffers reused for every chunk and every walk: a chunk is handed on before the next read
    // overwrites it, so a drain leaves no garbage buffers behind (fresh ones for a second walk
    // running at the same time).
    const owner = !this.chunkBusy;
    const bufs = owner && this.chunkBufs?.entries === chunkEntries ? this.chunkBufs : {
      entries: chunkEntries, keys4: new ArrayBuffer(chunkEntries * KEY4_SIZE), keys6: new ArrayBuffer(chunkEntries * KEY6_SIZE),
      values: new ArrayBuffer(chunkEntries * FLOW_SIZE),
    };
    if (owner) {
      this.chunkBufs = bufs;
      this.chunkBusy = true;
    }
    try {
      for (const family of [4, 6] as const) {
        const keys = family === 4 ? bufs.keys4 : bufs.keys6;
        let token: number | undefined;
        for (;;) {
          this.check();
          const r = await this.native.readFlows(family, false, 0, token, keys, bufs.values).catch((err: unknown) => {
            throw toDatapathError(err);
          });
          const out = new FlowMapRead();
          out.add(family, r.keys, r.values, r.count);
          if (r.count > 0) yield out;
          if (!r.more) break;
          token = r.token;
        }
      }
    } finally {
      if (owner) this.chunkBusy = false;
    }
  }

  /** Every flow entry, deleting them as they are read (shutdown, benchmarks). */
  async drainFlows(): Promise<FlowMapRead> {
    return this.readBoth(true);
  }

  /**
   * Delete these flows and return their final counters, read atomically with the delete so no
   * packet counted in between is lost. undefined where the flow was already gone.
   */
  async deleteFlows(keys: FlowKey[]): Promise<(FlowCounters | undefined)[]> {
    this.check();
    const out: (FlowCounters | undefined)[] = new Array(keys.length);
    for (const family of [4, 6] as const) {
      const idx: number[] = [];
      keys.forEach((k, i) => k.family === family && idx.push(i));
      if (idx.length === 0) continue;
      const size = keys[idx[0]].raw.byteLength;
      const buf = new Uint8Array(idx.length * size);
      idx.forEach((i, j) => buf.set(keys[i].raw, j * size));
      const r = await this.native.deleteFlows(family, buf).catch((err: unknown) => {
        throw toDatapathError(err);
      });
      const view = new DataView(r.values);
      idx.forEach((i, j) => {
        out[i] = r.found[j] ? decodeCounters(view, j * FLOW_SIZE) : undefined;
      });
    }
    return out;
  }

  /** Drop/overflow statistics summed over CPUs. */
  stats(): KernelStats {
    this.check();
    return decodeStats(wrap(() => this.native.stats()));
  }

  mapInfo(): NativeMapInfo[] {
    this.check();
    return wrap(() => this.native.mapInfo());
  }

  /** BPF_PROG_TEST_RUN: the *_eth programs take the Ethernet frame the kernel supplies. */
  testRun(program: string, packet: Buffer, opts: { repeat?: number; gsoSegs?: number; gsoSize?: number } = {}): { retval: number; durationNs: number } {
    this.check();
    return wrap(() => this.native.testRun(program, packet, opts));
  }

  /** Detach from every interface and free the programs (pinned maps stay for the next run). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private async readBoth(drain: boolean): Promise<FlowMapRead> {
    this.check();
    const out = new FlowMapRead();
    for (const family of [4, 6] as const) {
      const r = await this.native.readFlows(family, drain).catch((err: unknown) => {
        throw toDatapathError(err);
      });
      out.add(family, r.keys, r.values, r.count);
    }
    return out;
  }

  private check(): void {
    if (this.closed) throw new DatapathError('the datapath is closed', 'ECLOSED');
  }
}
