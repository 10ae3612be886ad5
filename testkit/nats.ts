// Real nats-server processes for tests and benchmarks (not shipped): one server with JetStream, or
// a three-server cluster on loopback for R3 streams. Each server gets free loopback ports, its own
// config file and store directory under one temp dir; it is stopped or killed by PID, and
// stop() removes the temp dir. No vitest here, so benchmarks can use it too.
import { ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { budget } from './slow';

export const NATS_SERVER = process.env.NATS_SERVER ?? 'nats-server';

/** A free TCP port on 127.0.0.1 (bound, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function getJson(url: string): Promise<Record<string, unknown> | null> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
    if (!r.ok) return null;
    return (await r.json()) as Record<string, unknown>;
  } catch {
    return null;
  }
}

export interface NatsServerOptions {
  /** Extra nats-server config text (authorization, accounts, tls ...), appended to the file. */
  extraConfig?: string;
  /**
   * A network namespace to run in (`ip netns exec`, which execs: the PID is the server's). Its
   * loopback is not the test's, so readiness is read from the server's log ("Server is ready").
   */
  ns?: string;
}

/** One nats-server process; restartable on the same ports and store dir. */
export class NatsServer {
  proc: ChildProcess | null = null;
  private log = '';

  constructor(
    readonly name: string,
    readonly dir: string,
    readonly port: number,
    readonly monitorPort: number,
    readonly configFile: string,
    readonly ns?: string,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The server's own log (stderr), for failure messages. */
  get output(): string {
    return this.log;
  }

  /** Starts the process (does not wait for it: see waitReady). */
  start(): void {
    if (this.running) return;
    this.log = '';
    const args = ['-c', this.configFile];
    const p = this.ns ? spawn('ip', ['netns', 'exec', this.ns, NATS_SERVER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(NATS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d: Buffer): void => {
      this.log = (this.log + d.toString()).slice(-20_000);
    };
    p.stdout?.on('data', keep);
    p.stderr?.on('data', keep);
    this.proc = p;
  }

  /**
   * Waits until the server's JetStream is ready (/healthz says ok; in a cluster that includes a
   * meta leader and current streams). Throws with the server's log when it exits or times out.
   */
  async waitReady(timeoutMs = 20_000): Promise<void> {
    const until = Date.now() + budget(timeoutMs);
    while (Date.now() < until) {
      if (!this.running) throw new Error(`nats-server ${this.name} exited: ${this.log.slice(-2000)}`);
      if (this.ns) {
        if (this.log.includes('Server is ready')) return;
        await sleep(50);
        continue;
      }
      const h = await getJson(`http://127.0.0.1:${this.monitorPort}/healthz`);
      if (h && h.status === 'ok') return;
      await sleep(50);
    }
    throw new Error(`nats-server ${this.name} not ready in time: ${this.log.slice(-2000)}`);
  }

  /** /jsz of this server (meta_cluster.leader names the meta leader in a cluster). */
  jsz(query = ''): Promise<Record<string, unknown> | null> {
    return getJson(`http://127.0.0.1:${this.monitorPort}/jsz${query}`);
  }

  private async exit(signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
    const p = this.proc;
    if (!p || !this.running) return;
    const done = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill(signal);
    const timer = setTimeout(() => p.kill('SIGKILL'), budget(timeoutMs));
    await done;
    clearTimeout(timer);
  }

  /** SIGTERM by PID (SIGKILL if it has not exited in time). */
  stop(): Promise<void> {
    return this.exit('SIGTERM', 10_000);
  }

  /** kill -9 by PID: a crash. */
  kill(): Promise<void> {
    return this.exit('SIGKILL', 10_000);
  }
}

function serverConfig(o: { name: string; port: number; monitorPort: number; storeDir: string; cluster?: { port: number; routes: number[] }; extra?: string }): string {
  const lines = [
    `server_name: ${o.name}`,
    `listen: 127.0.0.1:${o.port}`,
    `http: 127.0.0.1:${o.monitorPort}`,
    'jetstream {',
    `  store_dir: "${o.storeDir}"`,
    '  max_memory_store: 256MB',
    '  max_file_store: 1TB', // streams reserve their max_bytes (10 GiB by default) against it
    '}',
  ];
  if (o.cluster) {
    lines.push(
      'cluster {',
      '  name: wgflow-test',
      `  listen: 127.0.0.1:${o.cluster.port}`,
      `  routes: [${o.cluster.routes.map((p) => `nats-route://127.0.0.1:${p}`).join(', ')}]`,
      '}',
    );
  }
  if (o.extra) lines.push(o.extra);
  return lines.join('\n') + '\n';
}

/** One server or a cluster; stop() ends every process by PID and removes the temp dir. */
export class NatsCluster {
  private removed = false;
  constructor(readonly dir: string, readonly servers: NatsServer[]) {}

  /** "nats://127.0.0.1:p1,nats://127.0.0.1:p2,...": the --jetstream value. */
  get urls(): string {
    return this.servers.map((s) => s.url).join(',');
  }

  /**
   * Waits until every running server is ready and, in a cluster, a meta leader is elected that
   * has every other running server as a current peer: only then can an R3 stream be placed at
   * once (a fresh cluster's healthz says ok before its peers have caught up).
   */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    for (const s of this.servers) if (s.running) await s.waitReady(timeoutMs);
    if (this.servers.length === 1) return;
    const until = Date.now() + budget(timeoutMs);
    while (Date.now() < until) {
      if (await this.metaGroupCurrent()) return;
      await sleep(100);
    }
    throw new Error(`no JetStream meta leader with every running server current in time: ${this.servers.map((s) => s.output.slice(-1000)).join('\n---\n')}`);
  }

  /** A meta leader is elected, running, and reports every other running server as current. */
  private async metaGroupCurrent(): Promise<boolean> {
    const name = await this.metaLeader();
    const leader = this.servers.find((s) => s.name === name && s.running);
    if (!leader) return false;
    const meta = (await leader.jsz())?.meta_cluster as { leader?: string; replicas?: Array<{ name: string; current?: boolean }> } | undefined;
    if (meta?.leader !== leader.name) return false;
    const current = new Set((meta.replicas ?? []).filter((r) => r.current).map((r) => r.name));
    return this.servers.every((s) => s === leader || !s.running || current.has(s.name));
  }

  /** The name of the JetStream meta leader, as a running server reports it, or null. */
  async metaLeader(): Promise<string | null> {
    for (const s of this.servers) {
      if (!s.running) continue;
      const j = await s.jsz();
      const meta = j?.meta_cluster as { leader?: string } | undefined;
      if (meta?.leader) return meta.leader;
    }
    return null;
  }

  /** The server leading a stream (from /jsz?streams=true), or null. */
  async streamLeader(stream: string): Promise<NatsServer | null> {
    for (const s of this.servers) {
      if (!s.running) continue;
      const j = await s.jsz('?accounts=true&streams=true');
      const accounts = (j?.account_details ?? []) as Array<{ stream_detail?: Array<{ name: string; cluster?: { leader?: string } }> }>;
      for (const a of accounts) {
        for (const d of a.stream_detail ?? []) {
          if (d.name === stream && d.cluster?.leader) return this.servers.find((x) => x.name === d.cluster?.leader) ?? null;
        }
      }
    }
    return null;
  }

  /** Stops every server by PID and removes the temp dir (store dirs included). */
  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.stop()));
    if (!this.removed) {
      this.removed = true;
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/** Starts one nats-server with JetStream on free loopback ports and waits until it is ready. */
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'wgflow-nats-'));
  const port = await freePort();
  const monitorPort = await freePort();
  const storeDir = join(dir, 'n1', 'store');
  mkdirSync(storeDir, { recursive: true });
  const configFile = join(dir, 'n1', 'nats.conf');
  writeFileSync(configFile, serverConfig({ name: 'n1', port, monitorPort, storeDir, extra: opts.extraConfig }));
  const c = new NatsCluster(dir, [new NatsServer('n1', join(dir, 'n1'), port, monitorPort, configFile, opts.ns)]);
  try {
    c.servers[0].start();
    await c.waitReady();
  } catch (err) {
    await c.stop();
    throw err;
  }
  return c;
}

/**
 * Starts a three-server JetStream cluster on loopback (routes between all, distinct server names
 * n1..n3 and store dirs) and waits until a meta leader is elected.
 */
export async function startNatsCluster(opts: NatsServerOptions & { size?: number } = {}): Promise<NatsCluster> {
  const size = opts.size ?? 3;
  const dir = mkdtempSync(join(tmpdir(), 'wgflow-nats-cluster-'));
  const ports: Array<{ port: number; monitorPort: number; clusterPort: number }> = [];
  for (let i = 0; i < size; i++) ports.push({ port: await freePort(), monitorPort: await freePort(), clusterPort: await freePort() });
  const servers = ports.map((p, i) => {
    const name = `n${i + 1}`;
    const sdir = join(dir, name);
    const storeDir = join(sdir, 'store');
    mkdirSync(storeDir, { recursive: true });
    const configFile = join(sdir, 'nats.conf');
    const routes = ports.filter((_, j) => j !== i).map((q) => q.clusterPort);
    writeFileSync(configFile, serverConfig({ name, port: p.port, monitorPort: p.monitorPort, storeDir, cluster: { port: p.clusterPort, routes }, extra: opts.extraConfig }));
    return new NatsServer(name, sdir, p.port, p.monitorPort, configFile);
  });
  const c = new NatsCluster(dir, servers);
  try {
    for (const s of servers) s.start();
    await c.waitReady(60_000);
  } catch (err) {
    await c.stop();
    throw err;
  }
  return c;
}
