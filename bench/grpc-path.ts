// The gRPC path as the benchmarks run it, shared by bench/export.ts and bench/jetstream.ts (which
// measures JetStream against it in the same run): child processes on loopback (started, read and
// killed by PID), `wgflow export-test` -> `wgflow collect`, the collector fed pre-encoded events,
// and the machine probe.
import { ChildProcess, spawn } from 'node:child_process';
import { closeSync, fdatasyncSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const REPO = join(__dirname, '..', '..');
/** The CLI compiled next to this script (tsconfig.bench.json builds src/ into build/src/). */
export const CLI = join(__dirname, '..', 'src', 'cli', 'main.js');
/** bench/export.ts compiled: its child roles (pre-encoded-sender ...) serve the other benchmarks too. */
export const EXPORT_BENCH = join(__dirname, 'export.js');

// ---------- child processes ----------
export const children = new Set<ChildProcess>();

export function start(cmd: string[], name: string): ChildProcess {
  const child = spawn(process.execPath, cmd, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO });
  children.add(child);
  child.on('exit', () => children.delete(child));
  child.stderr?.on('data', () => undefined); // drained; logs are not needed here
  child.on('error', (err) => console.error(`${name}: ${err.message}`));
  return child;
}

/** Resolves with the first JSON line (stdout, or stderr for pino logs) matching pred. */
export function waitJson(child: ChildProcess, pred: (o: Record<string, unknown>) => boolean, timeoutMs: number, stream: 'stdout' | 'stderr' = 'stdout'): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const src = stream === 'stdout' ? child.stdout : child.stderr;
    const timer = setTimeout(() => {
      src?.off('data', onData);
      reject(new Error(`timed out after ${timeoutMs} ms waiting on ${stream}`));
    }, timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const o = JSON.parse(line) as Record<string, unknown>;
          if (pred(o)) {
            clearTimeout(timer);
            src?.off('data', onData);
            resolve(o);
            return;
          }
        } catch {
          // Not JSON.
        }
      }
    };
    src?.on('data', onData);
  });
}

export function killWait(child: ChildProcess, sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    if (child.pid) process.kill(child.pid, sig);
  });
}

/** CPU time (user + system, all threads) a live process has used so far, in seconds. */
export function cpuSeconds(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in USER_HZ (100)
  } catch {
    return NaN;
  }
}

export function rssMiB(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 102.4) / 10 : null;
  } catch {
    return null;
  }
}

export async function startCollector(out: string, port = 0): Promise<{ child: ChildProcess; port: number }> {
  const child = start([CLI, 'collect', '--listen', `127.0.0.1:${port}`, '--out', out], 'collector');
  const line = await waitJson(child, (o) => o.msg === 'listening', 15_000, 'stderr');
  return { child, port: Number(String(line.address).split(':').pop()) };
}

// ---------- machine probe ----------

/**
 * How fast this VM is right now: a fixed CPU loop and fdatasync throughput. Shared VMs drift
 * (the same build measured 25% apart an hour later); these let two runs be compared.
 */
export function machineProbe(dir: string): { cpuLoopMs: number; fdatasyncMBps: number } {
  const t0 = process.hrtime.bigint();
  let x = 0;
  for (let i = 0; i < 300_000_000; i++) x += i & 7;
  const cpuLoopMs = Math.round(Number(process.hrtime.bigint() - t0) / 1e6 + (x < 0 ? 1 : 0));
  const path = join(dir, 'probe');
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(8 << 20, 1);
  const t1 = Date.now();
  for (let i = 0; i < 8; i++) {
    writeSync(fd, chunk);
    fdatasyncSync(fd);
  }
  const fdatasyncMBps = Math.round((64 * 1000) / Math.max(1, Date.now() - t1));
  closeSync(fd);
  rmSync(path);
  return { cpuLoopMs, fdatasyncMBps };
}


// ---------- the gRPC path ----------

export interface ExporterRun {
  eventsPerSecond: number;
  /** CPU µs per event of the exporter and of the collector (user + system, all threads). */
  exporterCpuUs: number;
  collectorCpuUs: number;
}

export async function exporterRun(work: string, tag: string, events: number, transport: string): Promise<ExporterRun> {
  const out = join(work, `tp-out-${tag}`);
  const { child: coll, port } = await startCollector(out);
  const coll0 = cpuSeconds(coll.pid);
  const ex = start([CLI, 'export-test', '--collector', `grpc://127.0.0.1:${port}`, '--spool', join(work, `tp-spool-${tag}`), '--count', String(events), '--seed', `exp${tag}`, '--timeout-ms', '120000', '--transport', transport], 'exporter');
  const exDone = await waitJson(ex, (o) => o.event === 'done', 125_000);
  const exCpu = cpuSeconds(ex.pid), collCpu = cpuSeconds(coll.pid) - coll0;
  await killWait(ex);
  await killWait(coll, 'SIGTERM');
  rmSync(out, { recursive: true, force: true });
  if (exDone.ok !== true) throw new Error(`exporter round (${transport}) did not deliver every event`);
  const us = (s: number): number => Math.round((s * 1e7) / events) / 10;
  return { eventsPerSecond: Number(exDone.eventsPerSecond), exporterCpuUs: us(exCpu), collectorCpuUs: us(collCpu) };
}

export interface AloneRun {
  eventsPerSecond: number;
  cpuUs: number;
}

/** The collector fed pre-encoded events; its CPU is counted from the first event on. */
export async function collectorAlone(work: string, tag: string, events: number): Promise<AloneRun> {
  const out = join(work, `alone-out-${tag}`);
  const { child: coll, port } = await startCollector(out);
  const coll0 = cpuSeconds(coll.pid);
  const sender = start([EXPORT_BENCH, '--role', 'pre-encoded-sender', '--port', String(port), '--events', String(events), '--seed', `calone${tag}`], 'pre-encoded-sender');
  const done = await waitJson(sender, (o) => o.event === 'done', 125_000);
  const cpu = cpuSeconds(coll.pid) - coll0;
  await killWait(sender);
  await killWait(coll, 'SIGTERM');
  rmSync(out, { recursive: true, force: true });
  return { eventsPerSecond: Number(done.eventsPerSecond), cpuUs: Math.round((cpu * 1e7) / events) / 10 };
}
