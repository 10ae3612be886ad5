// Test plumbing for the export tests: real `wgflow collect` and `wgflow export-test` processes on
// loopback, JSON-line readers, and an exactly-once check of the collector's output. Every process
// started here is remembered and killed by PID in killAll() (call it in afterAll).
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { idsOfFile, keyOfUuid } from '../../src/collector/dedup';
import { listEventFiles } from '../../src/output/jsonl-writer';
import { syntheticEventId } from '../../testkit/synthetic';
import { afterAll, beforeAll } from 'vitest';

export const REPO = join(__dirname, '..', '..');
export const CLI = join(REPO, 'dist', 'cli', 'main.js');
/** wgflow export-test, from the test kit. */
const TESTKIT_SENDER = join(REPO, 'build', 'testkit', 'export-test.js');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const name of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, name.name);
    if (name.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (name.name.endsWith('.ts') || name.name.endsWith('.proto')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * The processes run dist/ and the test kit in build/testkit (what `make build` produces). When a
 * source file is newer than the build (a developer edited and ran vitest directly), compile first
 * so tests never run stale code.
 */
export function ensureBuilt(): void {
  const newest = (dirs: string[]): number => Math.max(...dirs.map((d) => (existsSync(join(REPO, d)) ? newestMtime(join(REPO, d)) : 0)));
  const builds = [
    { out: CLI, sources: ['src', 'proto'], tsconfig: 'tsconfig.json' },
    { out: TESTKIT_SENDER, sources: ['src', 'testkit'], tsconfig: 'tsconfig.bench.json' },
  ];
  for (const b of builds) {
    const built = existsSync(b.out) ? statSync(b.out).mtimeMs : 0;
    if (built >= newest(b.sources)) continue;
    try {
      execFileSync(process.execPath, [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(REPO, b.tsconfig)], { cwd: REPO, stdio: 'pipe' });
    } catch (err) {
      // tsc still emits when another module has type errors; only a missing output is fatal.
      if (!existsSync(b.out)) throw new Error(`cannot build ${b.out}: ${(err as { stdout?: Buffer }).stdout?.toString() ?? String(err)}`);
    }
  }
}

export function tmpDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `wgflow-${prefix}-`));
}

const running = new Set<Proc>();

/** A child process with its stdout/stderr kept and split into lines. */
export class Proc {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly watchers: Array<() => void> = [];

  constructor(args: string[], readonly name: string, env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [CLI, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    running.add(this);
    this.child.stdout?.on('data', (d: Buffer) => {
      this.stdout += d.toString();
      this.notify();
    });
    this.child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      this.notify();
    });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        running.delete(this);
        resolve({ code, signal });
        this.notify();
      });
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private notify(): void {
    for (const w of [...this.watchers]) w();
  }

  /** JSON objects printed on a stream, one per line. */
  json(stream: 'stdout' | 'stderr' = 'stdout'): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = [];
    for (const line of (stream === 'stdout' ? this.stdout : this.stderr).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // A line still being written.
      }
    }
    return out;
  }

  /** Waits until pred holds (checked on every output and on exit). */
  waitFor<T>(pred: () => T | undefined | null | false, what: string, timeoutMs = 20_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const v = pred();
        if (v) {
          done();
          resolve(v);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}\nstdout: ${this.stdout.slice(-1500)}\nstderr: ${this.stderr.slice(-1500)}`));
      }, timeoutMs);
      const watcher = (): void => {
        check();
      };
      const done = (): void => {
        clearTimeout(timer);
        const i = this.watchers.indexOf(watcher);
        if (i >= 0) this.watchers.splice(i, 1);
      };
      this.watchers.push(watcher);
      check();
    });
  }

  /** Waits for a JSON line on stdout (or a pino log line on stderr) matching pred. */
  waitJson(pred: (o: Record<string, unknown>) => boolean, what: string, timeoutMs = 20_000, stream: 'stdout' | 'stderr' = 'stdout'): Promise<Record<string, unknown>> {
    return this.waitFor(() => this.json(stream).find(pred), what, timeoutMs);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.alive) process.kill(this.pid, sig);
  }

  async kill(sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.alive) return;
    try {
      process.kill(this.pid, sig);
    } catch (err) {
      // It exited between the check and the signal: nothing left to kill.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
    await this.exited;
  }
}

/** Kills every process the tests started (by PID) and waits for them. */
export async function killAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.kill('SIGKILL')));
}

export interface CollectorProc {
  proc: Proc;
  port: number;
  url: string;
}

/** Starts `wgflow collect` (port 0 = a free port, read back from its "listening" log line). */
export async function startCollector(out: string, port = 0, extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<CollectorProc> {
  const proc = new Proc(['collect', '--listen', `127.0.0.1:${port}`, '--out', out, ...extra], 'collector', env);
  const line = await proc.waitJson((o) => o.msg === 'listening', 'the "listening" log line', 15_000, 'stderr');
  const p = Number(String(line.address).split(':').pop());
  return { proc, port: p, url: `grpc://127.0.0.1:${p}` };
}

export interface SenderOptions {
  collector: string;
  spool: string;
  count?: number;
  start?: number;
  seed?: string;
  extra?: string[];
}

/** Starts `wgflow export-test`. */
export function startSender(o: SenderOptions): Proc {
  const args = ['export-test', '--collector', o.collector, '--spool', o.spool, '--count', String(o.count ?? 0), '--seed', o.seed ?? 'test', '--stats-ms', '100', ...(o.extra ?? [])];
  if (o.start !== undefined) args.push('--start', String(o.start));
  return new Proc(args, 'export-test');
}

/** The sender's final {"event":"done"} line (waits for it). */
export function senderDone(p: Proc, timeoutMs = 40_000): Promise<Record<string, unknown>> {
  return p.waitJson((o) => o.event === 'done', '{"event":"done"}', timeoutMs);
}

/** How often each event id occurs in the collector's output files. */
export function collectedIds(out: string): Map<string, number> {
  const seen = new Map<string, number>();
  if (!existsSync(out)) return seen;
  for (const f of listEventFiles(out)) for (const id of idsOfFile(f)) seen.set(id, (seen.get(id) ?? 0) + 1);
  return seen;
}

/** Lines in the output (duplicates included). */
export function collectedCount(out: string): number {
  let n = 0;
  for (const c of collectedIds(out).values()) n += c;
  return n;
}

/** Asserts-by-return: ids expected exactly once, and anything else found. */
export function exactlyOnce(out: string, expectedUuids: string[]): { missing: string[]; duplicated: string[]; unexpected: string[] } {
  const seen = collectedIds(out);
  const expected = new Set(expectedUuids.map(keyOfUuid));
  const missing = [...expected].filter((k) => !seen.has(k));
  const duplicated = [...seen.entries()].filter(([, n]) => n > 1).map(([k]) => k);
  const unexpected = [...seen.keys()].filter((k) => !expected.has(k));
  return { missing, duplicated, unexpected };
}

export function cleanup(...dirs: string[]): void {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

/**
 * The setup every process-level export suite shares: build dist/ first, kill every process and
 * remove every temp dir afterwards. Returns the maker of temp dirs removed at the end.
 */
export function processSuite(): (prefix: string) => string {
  const dirs: string[] = [];
  beforeAll(() => ensureBuilt(), 120_000);
  afterAll(async () => {
    await killAll();
    cleanup(...dirs);
  });
  return (prefix: string): string => {
    const d = tmpDir(prefix);
    dirs.push(d);
    return d;
  };
}

/** The ids of n synthetic events of a run, starting at event from. */
export function eventIds(seed: string, n: number, from = 0): string[] {
  return Array.from({ length: n }, (_, i) => syntheticEventId(seed, from + i));
}
