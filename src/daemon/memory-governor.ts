// Keeps the daemon's resident memory within its budget when garbage, not live state, would take it
// past: V8 collects when its heap heuristics say so, not when the process nears its budget, and a
// burst (a flood of new flows, a drain that ends thousands) leaves tens of MB of dead events and
// buffers behind for seconds. Measured on the SYN flood test (32,768-flow map, 2 vCPUs): RSS up
// to 250-290 MiB with ~26-70 MiB of it live heap; after a full collection V8 returns the freed
// pages within ~2 s. So: sample the RSS a few times a second and, when it crosses a share of the
// budget, collect (at most once per minGapMs) and hand the allocator's free memory back.
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from 'pino';
import { loadNative } from '../util/addon';

/** The governor's defaults. */
export const GOVERNOR_DEFAULTS = {
  /** Collect when the RSS passes this share of the resident budget. */
  threshold: 0.75,
  intervalMs: 200,
  /** At most one forced collection this often (a full collection pauses the loop ~5-50 ms). */
  minGapMs: 500,
  /** Blocks from this size on are mapped on their own (returned when freed). */
  mmapThresholdBytes: 256 * 1024,
} as const;

export interface GovernorStats {
  /** Forced full collections. */
  collections: number;
  /** Samples with the RSS over the whole budget (live memory past it, or garbage not yet returned). */
  overBudget: number;
  /** The highest RSS sampled. */
  peakRssBytes: number;
}

/** V8's full collection, made callable at run time (the same as node --expose-gc). */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

const PAGE = 4096;

function rssBytes(): number {
  // /proc/self/statm: size resident shared ... in pages; cheaper than process.memoryUsage().
  const f = readFileSync('/proc/self/statm', 'latin1');
  const sp = f.indexOf(' ');
  return Number(f.slice(sp + 1, f.indexOf(' ', sp + 1))) * PAGE;
}

export class MemoryGovernor {
  private timer: NodeJS.Timeout | null = null;
  private readonly gc: () => void;
  private lastGc = -Infinity;
  private lastWarn = -Infinity;
  /** A collection ran last sample: trim now (V8 frees array buffers on a background sweep after it). */
  private trimPending = false;
  private readonly st: GovernorStats = { collections: 0, overBudget: 0, peakRssBytes: 0 };

  constructor(
    private readonly budgetBytes: number,
    private readonly log: Logger,
    private readonly opts: { threshold?: number; intervalMs?: number; minGapMs?: number } = {},
  ) {
    if (!(budgetBytes > 0)) throw new RangeError(`the resident budget must be > 0 bytes, got ${budgetBytes}`);
    this.gc = exposeGc();
    loadNative().setMmapThreshold(GOVERNOR_DEFAULTS.mmapThresholdBytes);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.check(), this.opts.intervalMs ?? GOVERNOR_DEFAULTS.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  stats(): GovernorStats {
    return { ...this.st };
  }

  /** One sample (exposed for tests). */
  check(now = Date.now()): void {
    if (this.trimPending) {
      this.trimPending = false;
      loadNative().trimMemory();
    }
    const rss = rssBytes();
    if (rss > this.st.peakRssBytes) this.st.peakRssBytes = rss;
    if (rss > this.budgetBytes) this.st.overBudget++;
    const threshold = (this.opts.threshold ?? GOVERNOR_DEFAULTS.threshold) * this.budgetBytes;
    if (rss < threshold || now - this.lastGc < (this.opts.minGapMs ?? GOVERNOR_DEFAULTS.minGapMs)) return;
    this.lastGc = now;
    this.gc();
    this.trimPending = true;
    this.st.collections++;
    if (rss > this.budgetBytes && now - this.lastWarn >= 60_000) {
      this.lastWarn = now;
      this.log.warn({ rssBytes: rss, residentBudgetBytes: this.budgetBytes, collections: this.st.collections },
        'resident memory over its budget: collected; if this repeats, raise memory_limit or lower datapath.max_flows');
    }
  }
}
