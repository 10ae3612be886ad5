// The drop probe: packets the kernel dropped that came in through, or were headed out to, a
// watched interface (bpf/wgflow_drops.bpf.c). Typed wrapper over native/src/drops.cc.
import { statSync } from 'node:fs';
import { defaultDropObjectPath, loadNative, NativeDropProbe } from '../util/addon';
import { DatapathError, toDatapathError, wrap } from './datapath';
import { decodeDropReasons, decodeDrops, decodeDropStats, DropEntry, DropProbeStats, DROP_REASON_SLOTS } from './records';

export interface DropProbeOptions {
  /** Entries of each of the two drop maps: distinct drop keys one window can hold (default 16,384). */
  maxKeys?: number;
  objectPath?: string;
}

export const DEFAULT_DROP_KEYS = 16_384;
/** CPUs the per-CPU reason counters are budgeted for: a bound, so the budget (and its docs) do not depend on the machine. */
const BUDGET_CPUS = 64;

/**
 * Kernel memory of the drop probe's maps as the kernel charges it (bpftool's bytes_memlock), an
 * upper bound: two preallocated hash maps of maxKeys entries (48 B element header + 48 B key + 40 B
 * value, a 16 B bucket per power-of-two slot), the per-CPU reason counters (4 KiB per CPU, up to
 * 64 CPUs), and ~32 KiB for the small maps (the config, the statistics, the switch barrier's two
 * one-entry maps). Checked against bpftool in test/datapath/drops.test.ts.
 */
export function dropMapBytes(maxKeys: number): number {
  const cpus = BUDGET_CPUS;
  const pow2 = 2 ** Math.ceil(Math.log2(Math.max(1, maxKeys)));
  return 2 * (maxKeys * (48 + 48 + 40) + pow2 * 16 + 4096) + DROP_REASON_SLOTS * 16 * cpus + 4096 + 32 * 1024;
}

/** Drops of one reason since the probe was loaded. */
export interface DropReasonCount {
  reason: string;
  packets: number;
  bytes: number;
}

let reasonNames: Record<number, string> | undefined;

/**
 * The name of a kernel drop reason (enum skb_drop_reason, without SKB_DROP_REASON_), from the
 * running kernel's BTF: the numbers differ from kernel to kernel. "REASON_<n>" when unknown.
 */
export function dropReasonName(reason: number): string {
  reasonNames ??= wrap(() => loadNative().dropReasonNames());
  return reasonNames[reason] ?? `REASON_${reason}`;
}

/** The inode of this process's network namespace: the probe runs for every namespace's drops. */
export function ownNetns(): number {
  return statSync('/proc/self/ns/net').ino;
}

export class DropProbe {
  private closed = false;

  private constructor(private readonly native: NativeDropProbe) {}

  /**
   * Load the probe (not attached yet). Throws a DatapathError when this kernel cannot run it: no
   * BTF, no skb:kfree_skb tracepoint with a drop reason (Linux < 5.17), or no privileges.
   */
  static open(opts: DropProbeOptions = {}): DropProbe {
    const maxKeys = opts.maxKeys ?? DEFAULT_DROP_KEYS;
    if (!Number.isInteger(maxKeys) || maxKeys < 1 || maxKeys > 1 << 24) throw new DatapathError(`maxKeys must be an integer from 1 to ${1 << 24}, got ${maxKeys}`, 'EINVAL');
    const mod = wrap(() => loadNative());
    return new DropProbe(wrap(() => new mod.DropProbe({ objectPath: opts.objectPath ?? defaultDropObjectPath(), maxKeys })));
  }

  get attached(): boolean {
    return !this.closed && this.native.isAttached();
  }

  attach(): void {
    this.check();
    wrap(() => this.native.attach());
  }

  detach(): void {
    if (!this.closed) this.native.detach();
  }

  /** Report drops of these interfaces (ifindexes of this process's network namespace). */
  watch(ifindexes: number[], netns = ownNetns()): void {
    this.check();
    wrap(() => this.native.setWatch(ifindexes, netns));
  }

  /** The drops aggregated since the last drain (the probe goes on in its other map meanwhile). */
  async drain(): Promise<DropEntry[]> {
    this.check();
    try {
      const r = await this.native.drain();
      return decodeDrops(r.keys, r.values, r.count);
    } catch (err) {
      throw toDatapathError(err);
    }
  }

  /** Totals per reason since the probe was loaded (the last slot also holds every higher reason number). */
  reasons(): DropReasonCount[] {
    this.check();
    const out: DropReasonCount[] = [];
    for (const [slot, c] of decodeDropReasons(wrap(() => this.native.reasons()))) {
      out.push({ reason: slot === DROP_REASON_SLOTS - 1 ? 'OTHER' : dropReasonName(slot), packets: c.packets, bytes: c.bytes });
    }
    return out;
  }

  stats(): DropProbeStats {
    this.check();
    return decodeDropStats(wrap(() => this.native.stats()));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.close();
  }

  private check(): void {
    if (this.closed) throw new DatapathError('the drop probe is closed', 'ECLOSED');
  }
}
