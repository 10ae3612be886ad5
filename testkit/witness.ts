// Witnesses for tests and benchmarks: a datapath driven inside a namespace (the probe) and tcpdump
// captures; with the background-process helpers of procs.ts. No vitest here: benchmarks use it too.
import { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/util/addon';
import { killBackground, run, sleep, spawnIn, waitForLine } from './procs';
import { CapturedPacket, readPcap, readWgUnderlay, WgMessage } from './pcap';

export { killBackground, run, sleep, spawnIn, waitForLine };

/** A Datapath driven inside a namespace by testkit/dp-probe.cjs. */
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
    const child = spawnIn(ns, 'node', [join(REPO_ROOT, 'testkit', 'dp-probe.cjs'), JSON.stringify(opts)]);
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
    await waitForLine(child, /listening on/, 10_000, 'stderr'); // scaled by waitForLine
    return cap;
  }

  /** Stop and read the capture; throws if tcpdump says the kernel dropped packets. */
  async stop(): Promise<CapturedPacket[]> {
    return this.finish(readPcap);
  }

  /** Stop and read a capture of the underlay as WireGuard messages (UDP payloads). */
  async stopUnderlay(): Promise<WgMessage[]> {
    return this.finish(readWgUnderlay);
  }

  private async finish<T>(read: (path: string) => T[]): Promise<T[]> {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGINT');
    await exited;
    const num = (re: RegExp): number => Number(re.exec(this.stderr)?.[1] ?? NaN);
    const captured = num(/(\d+) packets? captured/), received = num(/(\d+) packets? received by filter/);
    if (num(/(\d+) packets? dropped by kernel/) > 0 || captured !== received) {
      rmSync(this.dir, { recursive: true, force: true });
      throw new Error(`tcpdump's capture is incomplete: ${this.stderr.trim()}`);
    }
    const pkts = read(join(this.dir, 'cap.pcap'));
    rmSync(this.dir, { recursive: true, force: true });
    return pkts;
  }
}
