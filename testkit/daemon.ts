// A real `wgflow run` inside a network namespace, for integration tests and benchmarks: config
// written to a temp dir, events to a JSON-lines file there, ctl over its control socket, /metrics
// from inside the ns.
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { REPO_ROOT } from '../src/util/addon';
import type { FlowEvent } from '../src/model/event';
import { fromJsonLine } from '../src/model/json';
import { killBackground, sleep } from './procs';
import { budget } from './slow';

export const WGFLOW = join(REPO_ROOT, 'bin', 'wgflow');
/** The node flags of bin/wgflow's #! line: the daemon runs with them in tests as it does installed. */
export const WGFLOW_NODE_FLAGS = readFileSync(WGFLOW, 'utf8').split('\n')[0].split(/\s+/).filter((a) => a.startsWith('--'));
export const TRAFFIC = join(REPO_ROOT, 'build', 'testkit', 'traffic.js');

let seq = 0;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the wgflow CLI (optionally inside a namespace) to completion. */
export function wgflow(args: string[], opts: { ns?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): CliResult {
  const cmd = opts.ns ? 'ip' : process.execPath;
  const full = opts.ns ? ['netns', 'exec', opts.ns, process.execPath, WGFLOW, ...args] : [WGFLOW, ...args];
  const r = spawnSync(cmd, full, { encoding: 'utf8', env: opts.env ?? process.env, timeout: budget(opts.timeoutMs ?? 30_000) });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export class DaemonProc {
  readonly dir: string;
  readonly socket: string;
  readonly outDir: string;
  readonly configFile: string;
  readonly metricsAddr: string;
  private stderr = '';

  private constructor(readonly ns: string, readonly child: ChildProcess, dir: string, metricsAddr: string) {
    this.dir = dir;
    this.socket = join(dir, 'ctl.sock');
    this.outDir = join(dir, 'events');
    this.configFile = join(dir, 'wgflow.yaml');
    this.metricsAddr = metricsAddr;
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  /**
   * Start with a config (merged over test defaults) and wait until every interface is attached.
   * reuse: the directory (config, spool, pinned maps) of an earlier daemon, to restart it.
   * nodeOptions: NODE_OPTIONS for the daemon's node (e.g. to take heap snapshots).
   * args: more `wgflow run` flags (e.g. --interface), after --config.
   */
  static async start(ns: string, config: Record<string, unknown>, reuse?: DaemonProc, nodeOptions?: string, args: string[] = []): Promise<DaemonProc> {
    const spawnDaemon = (configFile: string): ChildProcess => spawn('ip', ['netns', 'exec', ns, process.execPath, ...WGFLOW_NODE_FLAGS, WGFLOW, 'run', '--config', configFile, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: nodeOptions ? { ...process.env, NODE_OPTIONS: nodeOptions } : process.env,
    });
    if (reuse) {
      const child = spawnDaemon(reuse.configFile);
      const d = new DaemonProc(ns, child, reuse.dir, reuse.metricsAddr);
      await d.waitAttached();
      return d;
    }
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-daemon-'));
    // A bpffs of its own, mounted in the root mount namespace so that every `ip netns exec` (which
    // remounts /sys) sees the same one: pinned maps then survive a restart, as on a real host.
    mkdirSync(join(dir, 'bpf'));
    execFileSync('mount', ['-t', 'bpf', 'bpf', join(dir, 'bpf')]);
    seq += 1;
    const metricsAddr = `127.0.0.1:${9700 + ((process.pid + seq) % 200)}`;
    const cfg = {
      reporter_id: `test-${ns}`,
      spool: { dir: join(dir, 'spool') },
      control_socket: join(dir, 'ctl.sock'),
      metrics_listen: metricsAddr,
      log_level: 'info',
      ...config,
      // Merged, not replaced: a caller setting map sizes or rotation keeps the private directories.
      output: { dir: join(dir, 'events'), ...(config.output as Record<string, unknown> | undefined) },
      datapath: { pin_dir: join(dir, 'bpf', 'wgflow'), max_flows: 4096, max_flows_v6: 4096, ...(config.datapath as Record<string, unknown> | undefined) },
    };
    writeFileSync(join(dir, 'wgflow.yaml'), stringify(cfg));
    const child = spawnDaemon(join(dir, 'wgflow.yaml'));
    const d = new DaemonProc(ns, child, dir, metricsAddr);
    try {
      await d.waitAttached();
    } catch (err) {
      // Nothing to hand back to the caller, so nothing of this start may outlive the failure.
      await d.stop('SIGKILL');
      d.cleanup();
      throw err;
    }
    return d;
  }

  private async waitAttached(): Promise<void> {
    const deadline = Date.now() + budget(15_000);
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`wgflow run exited ${this.child.exitCode}: ${this.stderr}`);
      if (existsSync(this.socket)) {
        const st = this.ctl(['status', '--json']);
        if (st.code === 0) {
          const s = JSON.parse(st.stdout) as { interfaces: Array<{ attached: boolean }> };
          if (s.interfaces.every((i) => i.attached)) return;
        }
      }
      if (Date.now() > deadline) throw new Error(`wgflow run did not attach in time: ${this.stderr}`);
      await sleep(100);
    }
  }

  /** The daemon's own PID (`ip netns exec` execs it), e.g. for /proc/PID/status. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Where it writes events when no collector is configured. */
  get eventsFile(): string {
    return join(this.outDir, 'events.jsonl');
  }

  ctl(args: string[]): CliResult {
    return wgflow(['ctl', '--socket', this.socket, ...args]);
  }

  /** Every event written so far, in order. */
  events(): FlowEvent[] {
    const f = this.eventsFile;
    if (!existsSync(f)) return [];
    return readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => fromJsonLine(l).event);
  }

  /** Wait until pred holds for the events written so far. */
  async waitEvents(pred: (evs: FlowEvent[]) => boolean, timeoutMs = 15_000): Promise<FlowEvent[]> {
    const deadline = Date.now() + budget(timeoutMs);
    for (;;) {
      const evs = this.events();
      if (pred(evs)) return evs;
      if (Date.now() > deadline) throw new Error(`timed out waiting for events; have ${evs.length}: ${evs.map((e) => `${e.type} ${e.source.ip}->${e.destination.ip}:${e.destination.port}`).join('; ')}`);
      await sleep(100);
    }
  }

  /** GET /metrics from inside the daemon's namespace. */
  metrics(): string {
    const script = `fetch('http://${this.metricsAddr}/metrics').then(r => r.text()).then(t => process.stdout.write(t), e => { console.error(e.message); process.exit(1); })`;
    const r = spawnSync('ip', ['netns', 'exec', this.ns, process.execPath, '-e', script], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`metrics fetch failed: ${r.stderr}`);
    return r.stdout;
  }

  get log(): string {
    return this.stderr;
  }

  /** Signal and wait for the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<number> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    if (this.child.signalCode !== null) return 128;
    const exited = new Promise<number>((r) => this.child.once('exit', (code, sig) => r(code ?? (sig ? 128 : -1))));
    this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), budget(timeoutMs));
    const code = await exited;
    clearTimeout(t);
    return code;
  }

  /** Unmount its bpffs (the pinned maps go with it) and remove the temp dir (after stop). */
  cleanup(): void {
    spawnSync('umount', [join(this.dir, 'bpf')]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A test's teardown: stop the daemon (and remove its directory), background processes, the testbed. */
export async function teardown(d: DaemonProc | undefined, tb: { destroy(): Promise<void> } | undefined): Promise<void> {
  if (d) {
    await d.stop();
    d.cleanup();
  }
  await killBackground();
  await tb?.destroy();
}
