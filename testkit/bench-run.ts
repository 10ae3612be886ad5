// What the benchmarks share: medians and percentiles, and for the daemon benchmarks (bench/churn.ts,
// latency.ts, scale.ts) cleanup that also runs on Ctrl-C, the results file and the daemon's own counters.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/util/addon';
import { DaemonProc, WGFLOW } from './daemon';
import { killBackground, run } from './procs';
import type { Testbed } from './testbed';

/**
 * Run main, then cleanup; on SIGINT/SIGTERM run cleanup first and exit. Exit code 1 when main
 * throws or returns false (a failed correctness check), so `make bench` shows the part failed.
 */
export function runBench(main: () => Promise<boolean>, cleanup: () => Promise<void>): void {
  let cleaning: Promise<void> | undefined;
  const clean = (): Promise<void> => (cleaning ??= cleanup().catch((err: unknown) => console.error('cleanup failed:', err)));
  const onSignal = (sig: NodeJS.Signals): void => {
    console.error(`\n${sig}: cleaning up`);
    void clean().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // A stray rejection must not end the process before the namespaces and mounts are removed.
  process.on('unhandledRejection', (err) => {
    console.error('unhandled rejection:', err);
    void clean().then(() => process.exit(1));
  });
  main().then(
    async (ok) => {
      await clean();
      process.exit(ok ? 0 : 1);
    },
    async (err: unknown) => {
      console.error(err);
      await clean();
      process.exit(1);
    },
  );
}

/** The usual cleanup of a daemon benchmark: stop the daemon, the background traffic, the testbed, the work dir. */
export async function stopDaemonBench(daemon: DaemonProc | undefined, tb: Testbed, work: string): Promise<void> {
  if (daemon) {
    await daemon.stop();
    daemon.cleanup();
  }
  await killBackground();
  await tb.destroy();
  rmSync(work, { recursive: true, force: true });
}

/** The median of xs (the mean of the two middle values for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The q-quantile (0..1) of xs by the nearest-rank method. */
export function percentile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

export function writeResult(part: string, result: object): void {
  const dir = join(REPO_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${part}.json`), JSON.stringify({ when: new Date().toISOString(), ...result }, null, 2));
}

/** The daemon's counters that say whether it lost anything, from `wgflow ctl status --json`. */
export interface DaemonCounters {
  flowsActive: number;
  events: Record<string, number>;
  ringbufFull: number;
  mapFullPackets: number;
  discoveredWithoutStart: number;
  eventsDropped: number;
  flowsCreated: number;
}

export async function daemonCounters(d: DaemonProc): Promise<DaemonCounters> {
  // Not d.ctl(): that blocks this process while the daemon is busy, and with it any sampling.
  const out = await run(null, process.execPath, [WGFLOW, 'ctl', '--socket', d.socket, 'status', '--json'], 60_000);
  const s = JSON.parse(out) as {
    flowsActive: number; events: Record<string, number>; kernel: { flowsCreated: number };
    drops: { ringbufFull: number; mapFullPackets: number; discoveredWithoutStart: number; eventsDropped: number };
  };
  return { flowsActive: s.flowsActive, events: s.events, flowsCreated: s.kernel.flowsCreated, ...s.drops };
}

/** Memory of a process from /proc/PID/status, in MiB: resident now and its peak. */
export function rssMiB(pid: number): { rss: number; hwm: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}
