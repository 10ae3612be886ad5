// Processes for tests and benchmarks: background commands in namespaces (killed by PID),
// the datapath probe, and tcpdump captures. No vitest here, so benchmarks can use it too.
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/datapath/native';
import { CapturedPacket, readPcap } from './pcap';

/** Processes a test started; killBackground() ends them by PID. */
const background = new Set<ChildProcess>();

export function spawnIn(ns: string | null, cmd: string, args: string[]): ChildProcess {
  const full = ns ? ['netns', 'exec', ns, cmd, ...args] : args;
  const child = spawn(ns ? 'ip' : cmd, full, { stdio: ['pipe', 'pipe', 'pipe'] });
  background.add(child);
  child.on('exit', () => background.delete(child));
  return child;
}

export async function killBackground(): Promise<void> {
  const procs = [...background];
  for (const p of procs) if (p.pid && p.exitCode === null) p.kill('SIGKILL');
  await Promise.all(procs.map((p) => (p.exitCode !== null || p.signalCode !== null ? null : new Promise((r) => p.once('exit', r)))));
}

/** Resolve with the first line of child's stdout (or stderr) that matches re. */
export function waitForLine(child: ChildProcess, re: RegExp, timeoutMs = 10_000, stream: 'stdout' | 'stderr' = 'stdout'): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const src = stream === 'stdout' ? child.stdout : child.stderr;
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re} (got: ${buf.slice(-500)})`)), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const lines = buf.split('\n');
      for (const l of lines) {
        if (re.test(l)) {
          clearTimeout(timer);
          src?.off('data', onData);
          resolve(l);
          return;
        }
      }
    };
    src?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`process exited (${code}) before ${re}: ${buf.slice(-500)}`));
    });
  });
}

/** Run a command to completion (inside ns if given); reject with its stderr on failure. */
export function run(ns: string | null, cmd: string, args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnIn(ns, cmd, args);
    let out = '', err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.trim()}`));
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A Datapath driven inside a namespace by test/helpers/dp-probe.cjs. */
export class Probe {
  private pending: Array<(v: { ok: boolean; result?: unknown; error?: string; code?: string }) => void> = [];

  private constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.pending.shift()?.(JSON.parse(line));
      }
    });
  }

  static async start(ns: string, opts: object = {}): Promise<Probe> {
    const child = spawnIn(ns, 'node', [join(REPO_ROOT, 'test', 'helpers', 'dp-probe.cjs'), JSON.stringify(opts)]);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const p = new Probe(child);
    const first = await new Promise<{ ok: boolean; error?: string }>((resolve) => {
      p.pending.push(resolve);
      child.once('exit', (code) => resolve({ ok: false, error: `probe exited ${code}: ${stderr}` }));
    });
    if (!first.ok) throw new Error(`datapath probe failed to start: ${first.error}`);
    return p;
  }

  async call<T>(cmd: string, args: object = {}): Promise<T> {
    const answer = new Promise<{ ok: boolean; result?: unknown; error?: string; code?: string }>((r) => this.pending.push(r));
    this.child.stdin?.write(JSON.stringify({ cmd, ...args }) + '\n');
    const a = await answer;
    if (!a.ok) throw Object.assign(new Error(a.error), { code: a.code });
    return a.result as T;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin?.write(JSON.stringify({ cmd: 'exit' }) + '\n');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  }
}

/** tcpdump on an interface of a namespace, written to a temp pcap. */
export class Capture {
  private stderr = '';

  private constructor(private readonly child: ChildProcess, private readonly dir: string) {
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  static async start(ns: string, ifname: string): Promise<Capture> {
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-cap-'));
    // Immediate mode: otherwise packets still in an unretired TPACKET_V3 block are lost on SIGINT.
    // A large buffer (-B, KiB): a witness that drops packets is no witness.
    const child = spawnIn(ns, 'tcpdump', ['--immediate-mode', '-U', '-n', '-B', '65536', '-s', '128', '-i', ifname, '-w', join(dir, 'cap.pcap')]);
    const cap = new Capture(child, dir);
    await waitForLine(child, /listening on/, 10_000, 'stderr');
    return cap;
  }

  /** Stop and read the capture; throws if tcpdump says the kernel dropped packets. */
  async stop(): Promise<CapturedPacket[]> {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGINT');
    await exited;
    const num = (re: RegExp): number => Number(re.exec(this.stderr)?.[1] ?? NaN);
    const captured = num(/(\d+) packets? captured/), received = num(/(\d+) packets? received by filter/);
    if (num(/(\d+) packets? dropped by kernel/) > 0 || captured !== received) {
      rmSync(this.dir, { recursive: true, force: true });
      throw new Error(`tcpdump's capture is incomplete: ${this.stderr.trim()}`);
    }
    const pkts = readPcap(join(this.dir, 'cap.pcap'));
    rmSync(this.dir, { recursive: true, force: true });
    return pkts;
  }
}
