// JetStream benchmark (not a test), real processes on loopback: nats-server (one server for R1, a
// three-server cluster for R3), the real JetStreamExporter with its spool in a child process, the
// real `wgflow consume`, and, measured in the same run as the baseline, the gRPC path of
// bench/export.ts (`wgflow export-test` -> `wgflow collect`, and `collect` fed pre-encoded events).
//
// 1. Publish: acked events/s, exporter -> stream (R1, R3), against exporter -> collector.
// 2. Consume: `wgflow consume` draining a stream that holds N events, against `collect` alone.
// 3. End to end: exporter -> stream -> `wgflow consume` concurrently, from the first publish (and the CPU of each process, and their share of the machine)
//    until the consumer has written all N (target >= 100,000 events/s with R1).
// 4. Lag recovery (R1): publishing at --rate events/s, the consumer stopped for --outage-s, then
//    restarted: the backlog, the time until its lag is 0 and the catch-up rate; then publishing
//    stops and every event of the stream must be in the output once.
// Rounds of parts 1-3 alternate; the tables show medians. Nothing asserts a time.
//
//   node build/bench/jetstream.js [--events 200000] [--rounds 3] [--outage-s 60] [--rate 10000] [--skip-lag]
//
// Prints a table and writes bench/results/jetstream.json.
import { ChildProcess, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { jetstreamManager } from '@nats-io/jetstream';
import type { FlowEvent } from '../src/model/event';
import { JetStreamExporter } from '../src/output/jetstream/exporter';
import { connectNats, JETSTREAM_DEFAULTS } from '../src/wire/jetstream';
import { median, runBench, writeResult } from '../testkit/bench-run';
// Loaded by the orchestrator only (main): the publisher's CPU per event should not include
// testkit/slow's start-up probe (a spawnSync of node).
import type { NatsCluster } from '../testkit/nats';
import { syntheticEvent } from '../testkit/synthetic';
import { children, CLI, collectorAlone, cpuSeconds, exporterRun, killWait, machineProbe, start } from './grpc-path';

const { values: args } = parseArgs({
  options: {
    role: { type: 'string' },
    servers: { type: 'string' },
    spool: { type: 'string' },
    replicas: { type: 'string', default: '1' },
    count: { type: 'string' },
    events: { type: 'string', default: '200000' },
    rounds: { type: 'string', default: '3' },
    'outage-s': { type: 'string', default: '60' },
    rate: { type: 'string', default: '10000' },
    'skip-lag': { type: 'boolean', default: false },
    seed: { type: 'string', default: 'js' },
  },
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const out = (o: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

// ---------- child role: the publisher ----------

/**
 * N synthetic events through the real JetStreamExporter and its spool, generated as
 * `wgflow export-test` generates them for the gRPC exporter (64 per tick, at most 20,000 queued;
 * or rate/100 every 10 ms), so the two exporters see the same producer. The clock starts before
 * the exporter connects, as export-test's does.
 */
async function publisher(): Promise<void> {
  const count = Number(args.count);
  const rate = Number(args.rate ?? 0);
  const seed = String(args.seed);
  const exp = new JetStreamExporter({
    connection: { servers: String(args.servers) },
    stream: { replicas: Number(args.replicas) },
    createStream: false, // made beforehand with `wgflow jetstream init`: not part of the timing
    spool: { dir: String(args.spool) },
    logger: pino({ level: 'warn' }, pino.destination({ fd: 2, sync: true })),
  });
  const t0 = Date.now();
  out({ event: 'start', t: t0 });
  exp.start();
  const statsTimer = setInterval(() => out({ event: 'stats', t: Date.now(), enqueued: next, acked: exp.stats().acked }), 250);
  const perTick = rate > 0 ? Math.max(1, Math.round(rate / 100)) : 64;
  let next = 0;
  let tNext = t0;
  while (next < count) {
    const n = Math.min(perTick, count - next);
    const events: FlowEvent[] = [];
    for (let k = 0; k < n; k++) events.push(syntheticEvent(seed, next + k));
    exp.enqueueBatch(events);
    next += n;
    if (rate > 0) {
      tNext += 10;
      const wait = tNext - Date.now();
      await (wait > 0 ? sleep(wait) : new Promise((r) => setImmediate(r)));
    } else {
      await new Promise((r) => setImmediate(r));
      while (exp.stats().queued > 20_000) await sleep(1);
    }
  }
  await exp.whenIdle();
  const ms = Date.now() - t0;
  clearInterval(statsTimer);
  const s = await exp.stop();
  const u = process.cpuUsage();
  out({ event: 'done', ok: s.acked >= count, t: Date.now(), ms, eventsPerSecond: Math.round((count * 1000) / ms), acked: s.acked, duplicates: s.duplicates, published: s.published, cpuS: (u.user + u.system) / 1e6 });
}

// ---------- orchestration ----------

/** Every JSON line a child writes on one stream, kept in order, with a wait for the first match. */
class JsonLines {
  readonly all: Array<Record<string, unknown>> = [];
  private waiters: Array<{ pred: (o: Record<string, unknown>) => boolean; resolve: (o: Record<string, unknown>) => void }> = [];

  constructor(readonly child: ChildProcess, stream: 'stdout' | 'stderr') {
    let buf = '';
    (stream === 'stdout' ? child.stdout : child.stderr)?.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let o: Record<string, unknown>;
        try {
          o = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        this.all.push(o);
        this.waiters = this.waiters.filter((w) => (w.pred(o) ? (w.resolve(o), false) : true));
      }
    });
  }

  /** The first line (already seen or to come) matching pred; rejects on timeout or exit. */
  wait(pred: (o: Record<string, unknown>) => boolean, timeoutMs: number, what: string): Promise<Record<string, unknown>> {
    const seen = this.all.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
      const onExit = (code: number | null): void => {
        clearTimeout(timer);
        reject(new Error(`exited (${code}) while waiting for ${what}`));
      };
      this.child.once('exit', onExit);
      this.waiters.push({
        pred,
        resolve: (o) => {
          clearTimeout(timer);
          this.child.off('exit', onExit);
          resolve(o);
        },
      });
    });
  }

  last(pred: (o: Record<string, unknown>) => boolean): Record<string, unknown> | undefined {
    for (let i = this.all.length - 1; i >= 0; i--) if (pred(this.all[i])) return this.all[i];
    return undefined;
  }
}

const clusters: NatsCluster[] = [];
let work = '';
let runNo = 0;
/** Set by cleanup (a signal): main must start nothing more, cleanup may be past its kill loop. */
let aborted = false;

function spawnChild(cmd: string[], name: string): ChildProcess {
  if (aborted) throw new Error('stopping: no new processes');
  return start(cmd, name);
}

function natsCpu(c: NatsCluster): number {
  return c.servers.reduce((s, x) => s + cpuSeconds(x.pid), 0);
}

const usPerEvent = (cpuS: number, events: number): number => Math.round((cpuS * 1e7) / events) / 10;
const eps = (events: number, ms: number): number => Math.round((events * 1000) / Math.max(1, ms));

/** A fresh stream: delete the last run's (its messages would be counted), create it with `wgflow jetstream init`. */
async function resetStream(c: NatsCluster, replicas: number): Promise<void> {
  const nc = await connectNats({ servers: c.urls, timeoutMs: 5000 });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(JETSTREAM_DEFAULTS.stream).catch(() => false); // missing the first time
  } finally {
    await nc.close();
  }
  const init = spawnChild([CLI, 'jetstream', 'init', '--jetstream', c.urls, '--replicas', String(replicas)], 'jetstream init');
  const code = await new Promise<number | null>((r) => init.once('exit', r));
  if (code !== 0) throw new Error(`wgflow jetstream init --replicas ${replicas} exited ${code}`);
}

async function streamMessages(c: NatsCluster): Promise<number> {
  const nc = await connectNats({ servers: c.urls, timeoutMs: 5000 });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(JETSTREAM_DEFAULTS.stream)).state.messages;
  } finally {
    await nc.close();
  }
}

interface Publisher {
  child: ChildProcess;
  lines: JsonLines;
  startT: number;
  spool: string;
}

async function startPublisher(c: NatsCluster, replicas: number, count: number, seed: string, rate = 0): Promise<Publisher> {
  const spool = join(work, `spool-${++runNo}`);
  const child = spawnChild([__filename, '--role', 'publish', '--servers', c.urls, '--replicas', String(replicas), '--spool', spool, '--count', String(count), '--seed', seed, '--rate', String(rate)], 'publisher');
  const lines = new JsonLines(child, 'stdout');
  const s = await lines.wait((o) => o.event === 'start', 15_000, 'the publisher to start');
  return { child, lines, startT: Number(s.t), spool };
}

async function endPublisher(p: Publisher, sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  await killWait(p.child, sig);
  rmSync(p.spool, { recursive: true, force: true });
}

interface ConsumerMetrics {
  written: number;
  acked: number;
  duplicates: number;
  pending: number;
}

interface Consumer {
  child: ChildProcess;
  log: JsonLines;
  port: number;
  /** From the 'consuming' log line: connected, durable ready; its lag then. */
  readyT: number;
  pendingAtStart: number;
  spawnT: number;
}

async function startConsumer(c: NatsCluster, outDir: string, durable: string): Promise<Consumer> {
  const port = await (await import('../testkit/nats')).freePort();
  const spawnT = Date.now();
  const child = spawnChild([CLI, 'consume', '--jetstream', c.urls, '--durable', durable, '--out', outDir, '--metrics-listen', `127.0.0.1:${port}`], 'consumer');
  const log = new JsonLines(child, 'stderr');
  const ready = await log.wait((o) => o.msg === 'consuming', 30_000, 'the consumer to start');
  await log.wait((o) => o.msg === 'serving metrics', 10_000, 'the consumer metrics endpoint');
  return { child, log, port, readyT: Number(ready.time), pendingAtStart: Number(ready.pending), spawnT };
}

async function scrape(port: number): Promise<ConsumerMetrics> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await r.text();
  const v = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { written: v('wgflow_consumer_events_written_total'), acked: v('wgflow_consumer_acked_total'), duplicates: v('wgflow_consumer_duplicates_total'), pending: v('wgflow_consumer_pending_messages') };
}

/** Polls the consumer's metrics until done(m); returns the time it first held and the metrics then. */
async function pollUntil(con: Consumer, done: (m: ConsumerMetrics) => boolean, timeoutMs: number, everyMs = 50): Promise<{ t: number; m: ConsumerMetrics }> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const m = await scrape(con.port);
    const t = Date.now();
    if (done(m)) return { t, m };
    if (t > until) throw new Error(`consumer not done in ${timeoutMs} ms: ${JSON.stringify(m)}`);
    if (con.child.exitCode !== null) throw new Error(`consumer exited (${con.child.exitCode})`);
    await sleep(everyMs);
  }
}

/** SIGTERM (a clean stop: acks what it wrote); returns its final stats line. */
async function stopConsumer(con: Consumer): Promise<Record<string, unknown> | undefined> {
  await killWait(con.child, 'SIGTERM');
  return con.log.last((o) => o.msg === 'stopped');
}

interface PublishRun {
  eventsPerSecond: number;
  publisherCpuUs: number;
  natsCpuUs: number;
}

/** Part 1: N events exporter -> a fresh stream, nothing reading it. */
async function publishRun(c: NatsCluster, replicas: number, events: number, seed: string): Promise<PublishRun> {
  await resetStream(c, replicas);
  const nats0 = natsCpu(c);
  const p = await startPublisher(c, replicas, events, seed);
  const done = await p.lines.wait((o) => o.event === 'done', 180_000, 'the publisher to finish');
  const pubCpu = cpuSeconds(p.child.pid), natsUsed = natsCpu(c) - nats0;
  await endPublisher(p);
  if (done.ok !== true) throw new Error(`R${replicas} publisher did not get every PubAck: ${JSON.stringify(done)}`);
  return { eventsPerSecond: Number(done.eventsPerSecond), publisherCpuUs: usPerEvent(pubCpu, events), natsCpuUs: usPerEvent(natsUsed, events) };
}

interface DrainRun {
  /** From the consumer's 'consuming' line (connected, durable made) to all N written and acked. */
  eventsPerSecond: number;
  /** The same from the process's spawn (start-up included). */
  eventsPerSecondFromSpawn: number;
  consumerCpuUs: number;
  natsCpuUs: number;
}

/** Part 2: `wgflow consume` drains the stream part 1 filled (N events). */
async function drainRun(c: NatsCluster, events: number, tag: string): Promise<DrainRun> {
  const dir = join(work, `drain-${tag}`);
  const nats0 = natsCpu(c);
  const con = await startConsumer(c, dir, `drain${tag}`);
  try {
    const cpu0 = cpuSeconds(con.child.pid);
    const { t, m } = await pollUntil(con, (x) => x.written >= events && x.acked >= events, 180_000);
    const cpu = cpuSeconds(con.child.pid) - cpu0, natsUsed = natsCpu(c) - nats0;
    if (m.written !== events || m.duplicates !== 0) throw new Error(`drain wrote ${m.written} lines (${m.duplicates} duplicates) of ${events}`);
    return { eventsPerSecond: eps(events, t - con.readyT), eventsPerSecondFromSpawn: eps(events, t - con.spawnT), consumerCpuUs: usPerEvent(cpu, events), natsCpuUs: usPerEvent(natsUsed, events) };
  } finally {
    await stopConsumer(con);
    rmSync(dir, { recursive: true, force: true });
  }
}

interface EndToEndRun {
  /** From the publisher's first moment to the consumer's last line written. */
  eventsPerSecond: number;
  /** The publisher's own acked rate while the consumer ran beside it. */
  publishEventsPerSecond: number;
  /** CPU per event of each process over the run (the publisher from its start). */
  publisherCpuUs: number;
  consumerCpuUs: number;
  natsCpuUs: number;
  /** The CPU the three used over the run, as a share of all the machine's cores (1 = all of them). */
  cpuShare: number;
}

/** Part 3: the consumer runs first; then N events are published; until all N are written. */
async function endToEndRun(c: NatsCluster, replicas: number, events: number, seed: string): Promise<EndToEndRun> {
  await resetStream(c, replicas);
  const dir = join(work, `e2e-${seed}`);
  const con = await startConsumer(c, dir, 'e2e');
  let p: Publisher | undefined;
  try {
    const nats0 = natsCpu(c), con0 = cpuSeconds(con.child.pid);
    p = await startPublisher(c, replicas, events, seed);
    const { t, m } = await pollUntil(con, (x) => x.written >= events && x.acked >= events, 180_000);
    const conCpu = cpuSeconds(con.child.pid) - con0, natsUsed = natsCpu(c) - nats0;
    const done = await p.lines.wait((o) => o.event === 'done', 60_000, 'the publisher to finish');
    // Its own count (user + system since its start): it may have exited before /proc is read.
    const pubCpu = Number(done.cpuS);
    if (m.written !== events || m.duplicates !== 0) throw new Error(`end to end wrote ${m.written} lines (${m.duplicates} duplicates) of ${events}`);
    const wallS = Math.max(1, t - p.startT) / 1000;
    return {
      eventsPerSecond: eps(events, t - p.startT), publishEventsPerSecond: Number(done.eventsPerSecond),
      publisherCpuUs: usPerEvent(pubCpu, events), consumerCpuUs: usPerEvent(conCpu, events), natsCpuUs: usPerEvent(natsUsed, events),
      cpuShare: Math.round(((pubCpu + conCpu + natsUsed) / (wallS * cpus().length)) * 100) / 100,
    };
  } finally {
    if (p) await endPublisher(p);
    await stopConsumer(con);
    rmSync(dir, { recursive: true, force: true });
  }
}

interface LagResult {
  rate: number;
  outageSeconds: number;
  /** The publisher's acked rate over the outage and over the catch-up (it must stay at `rate`). */
  publishRateDuringOutage: number;
  publishRateDuringCatchUp: number;
  /** The durable's pending messages when the consumer came back. */
  backlog: number;
  /** From the restarted consumer's spawn, and from its 'consuming' line, to lag 0. */
  catchUpSeconds: number;
  catchUpSecondsFromReady: number;
  /** Lines the restarted consumer wrote until lag 0, per second of catch-up; and the backlog alone per second. */
  catchUpEventsPerSecond: number;
  backlogDrainedPerSecond: number;
  /** After publishing stopped: messages in the stream, lines written by both consumer processes, duplicates. */
  streamMessages: number;
  written: number;
  duplicates: number;
}

/** Part 4 on R1: the consumer down for outageS while publishing goes on at rate; the time to lag 0. */
async function lagRun(c: NatsCluster, rate: number, outageS: number): Promise<LagResult> {
  await resetStream(c, 1);
  const leadS = 5, maxCatchUpS = 240;
  const dir = join(work, 'lag-out');
  let con = await startConsumer(c, dir, 'lag');
  let p: Publisher | undefined;
  try {
    p = await startPublisher(c, 1, rate * (leadS + outageS + maxCatchUpS), 'lag', rate);
    await sleep(leadS * 1000);
    const first = await stopConsumer(con);
    const ackedAt = (): number => Number(p?.lines.last((o) => o.event === 'stats')?.acked ?? 0);
    const a0 = ackedAt(), t0 = Date.now();
    process.stdout.write(`  consumer down for ${outageS} s (publishing ${rate} events/s) ...\n`);
    await sleep(outageS * 1000);
    const a1 = ackedAt(), t1 = Date.now();
    con = await startConsumer(c, dir, 'lag');
    // Lag 0: the server has handed every message of the stream to the durable, and the backlog is written.
    const caught = await pollUntil(con, (m) => m.pending === 0 && m.written >= con.pendingAtStart, maxCatchUpS * 1000);
    const a2 = ackedAt(), t2 = Date.now();
    // Publishing stops; the rest drains; then stream and output must agree exactly.
    await endPublisher(p);
    p = undefined;
    const firstWritten = Number(first?.written ?? NaN);
    const total = await streamMessages(c);
    const fin = await pollUntil(con, (m) => m.pending === 0 && firstWritten + m.written >= total, 60_000);
    const catchUpS = (caught.t - con.spawnT) / 1000;
    return {
      rate,
      outageSeconds: outageS,
      publishRateDuringOutage: eps(a1 - a0, t1 - t0),
      publishRateDuringCatchUp: eps(a2 - a1, t2 - t1),
      backlog: con.pendingAtStart,
      catchUpSeconds: Math.round(catchUpS * 10) / 10,
      catchUpSecondsFromReady: Math.round((caught.t - con.readyT) / 100) / 10,
      catchUpEventsPerSecond: eps(caught.m.written, caught.t - con.spawnT),
      backlogDrainedPerSecond: eps(con.pendingAtStart, caught.t - con.spawnT),
      streamMessages: total,
      written: firstWritten + fin.m.written,
      duplicates: Number(first?.duplicates ?? 0) + fin.m.duplicates,
    };
  } finally {
    if (p) await endPublisher(p);
    await stopConsumer(con);
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------- main ----------

interface Round {
  grpc: { eventsPerSecond: number; exporterCpuUs: number; collectorCpuUs: number };
  collectorAlone: { eventsPerSecond: number; cpuUs: number };
  r1: PublishRun;
  r3: PublishRun;
  drainR1: DrainRun;
  drainR3: DrainRun;
  e2eR1: EndToEndRun;
  e2eR3: EndToEndRun;
}

async function main(): Promise<boolean> {
  const events = Number(args.events), rounds = Number(args.rounds);
  work = mkdtempSync(join(tmpdir(), 'wgflow-bench-js-'));
  const probe = machineProbe(work);
  process.stdout.write(`  machine: CPU loop ${probe.cpuLoopMs} ms, fdatasync ${probe.fdatasyncMBps} MB/s (compare runs by these)\n`);
  const { NATS_SERVER, startNatsCluster, startNatsServer } = await import('../testkit/nats');
  const v = spawnSync(NATS_SERVER, ['--version'], { encoding: 'utf8' });
  if (v.status !== 0) throw new Error(`${NATS_SERVER} cannot be run (${v.error?.message ?? v.stderr}): scripts/install-deps.sh installs it, or set NATS_SERVER`);
  const r1 = await startNatsServer();
  clusters.push(r1);
  const r3 = await startNatsCluster();
  clusters.push(r3);
  const rs: Round[] = [];
  for (let r = 0; r < rounds; r++) {
    const grpc = await exporterRun(work, `js-h2-${r}`, events, 'http2');
    const alone = await collectorAlone(work, `js-${r}`, events);
    const p1 = await publishRun(r1, 1, events, `r1-${r}`);
    const d1 = await drainRun(r1, events, `r1x${r}`);
    const p3 = await publishRun(r3, 3, events, `r3-${r}`);
    const d3 = await drainRun(r3, events, `r3x${r}`);
    const e1 = await endToEndRun(r1, 1, events, `e1-${r}`);
    const e3 = await endToEndRun(r3, 3, events, `e3-${r}`);
    rs.push({ grpc, collectorAlone: alone, r1: p1, r3: p3, drainR1: d1, drainR3: d3, e2eR1: e1, e2eR3: e3 });
    process.stdout.write(`  round ${r + 1}: gRPC ${grpc.eventsPerSecond}, R1 ${p1.eventsPerSecond}, R3 ${p3.eventsPerSecond} acked ev/s; collect alone ${alone.eventsPerSecond}, consume R1 ${d1.eventsPerSecond}, R3 ${d3.eventsPerSecond} ev/s; end to end R1 ${e1.eventsPerSecond}, R3 ${e3.eventsPerSecond} ev/s\n`);
  }
  const med = (f: (x: Round) => number): number => Math.round(median(rs.map(f)));
  const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100;
  const m = {
    grpc: med((x) => x.grpc.eventsPerSecond), grpcExporterCpuUs: med((x) => x.grpc.exporterCpuUs * 10) / 10, grpcCollectorCpuUs: med((x) => x.grpc.collectorCpuUs * 10) / 10,
    collectorAlone: med((x) => x.collectorAlone.eventsPerSecond), collectorAloneCpuUs: med((x) => x.collectorAlone.cpuUs * 10) / 10,
    r1: med((x) => x.r1.eventsPerSecond), r1PubCpuUs: med((x) => x.r1.publisherCpuUs * 10) / 10, r1NatsCpuUs: med((x) => x.r1.natsCpuUs * 10) / 10,
    r3: med((x) => x.r3.eventsPerSecond), r3PubCpuUs: med((x) => x.r3.publisherCpuUs * 10) / 10, r3NatsCpuUs: med((x) => x.r3.natsCpuUs * 10) / 10,
    drainR1: med((x) => x.drainR1.eventsPerSecond), drainR1FromSpawn: med((x) => x.drainR1.eventsPerSecondFromSpawn), drainR1CpuUs: med((x) => x.drainR1.consumerCpuUs * 10) / 10, drainR1NatsCpuUs: med((x) => x.drainR1.natsCpuUs * 10) / 10,
    drainR3: med((x) => x.drainR3.eventsPerSecond), drainR3FromSpawn: med((x) => x.drainR3.eventsPerSecondFromSpawn), drainR3CpuUs: med((x) => x.drainR3.consumerCpuUs * 10) / 10, drainR3NatsCpuUs: med((x) => x.drainR3.natsCpuUs * 10) / 10,
    e2eR1: med((x) => x.e2eR1.eventsPerSecond), e2eR1Publish: med((x) => x.e2eR1.publishEventsPerSecond),
    e2eR1PubCpuUs: med((x) => x.e2eR1.publisherCpuUs * 10) / 10, e2eR1ConCpuUs: med((x) => x.e2eR1.consumerCpuUs * 10) / 10, e2eR1NatsCpuUs: med((x) => x.e2eR1.natsCpuUs * 10) / 10,
    e2eR1CpuShare: med((x) => x.e2eR1.cpuShare * 100) / 100,
    e2eR3: med((x) => x.e2eR3.eventsPerSecond), e2eR3Publish: med((x) => x.e2eR3.publishEventsPerSecond),
  };
  const met = m.e2eR1 >= 100_000;
  const result: Record<string, unknown> = {
    events, rounds, machine: probe, natsServer: v.stdout.trim(),
    medians: m,
    ratios: {
      publishR1ToGrpc: ratio(m.r1, m.grpc), publishR3ToGrpc: ratio(m.r3, m.grpc),
      consumeR1ToCollectorAlone: ratio(m.drainR1, m.collectorAlone), consumeR3ToCollectorAlone: ratio(m.drainR3, m.collectorAlone),
      consumeR1ToGrpcPath: ratio(m.drainR1, m.grpc),
      endToEndR1ToGrpc: ratio(m.e2eR1, m.grpc), endToEndR3ToGrpc: ratio(m.e2eR3, m.grpc),
    },
    targets: { endToEndR1EventsPerSecond: 100_000 },
    met: { endToEndR1EventsPerSecond: met },
    perRound: rs,
  };
  const cpu = (pub: number, nats: number, who = 'publisher'): string => `(${who} ${pub} µs + nats-server ${nats} µs CPU per event)`;
  const rows: Array<[string, string]> = [
    ['1. gRPC: export-test -> collect (baseline)', `${m.grpc} ev/s  (exporter ${m.grpcExporterCpuUs} µs + collector ${m.grpcCollectorCpuUs} µs CPU per event)`],
    ['1. JetStream R1: exporter -> stream, acked', `${m.r1} ev/s  ${cpu(m.r1PubCpuUs, m.r1NatsCpuUs)}  ratio to gRPC ${ratio(m.r1, m.grpc)}`],
    ['1. JetStream R3: exporter -> stream, acked', `${m.r3} ev/s  ${cpu(m.r3PubCpuUs, m.r3NatsCpuUs)}  ratio to gRPC ${ratio(m.r3, m.grpc)}`],
    ['2. collect alone (pre-encoded sender, baseline)', `${m.collectorAlone} ev/s  (collector ${m.collectorAloneCpuUs} µs CPU per event)`],
    ['2. consume R1: drain N from the stream', `${m.drainR1} ev/s (${m.drainR1FromSpawn} from spawn)  ${cpu(m.drainR1CpuUs, m.drainR1NatsCpuUs, 'consumer')}  ratio to collect alone ${ratio(m.drainR1, m.collectorAlone)}, to the gRPC path ${ratio(m.drainR1, m.grpc)}`],
    ['2. consume R3: drain N from the stream', `${m.drainR3} ev/s (${m.drainR3FromSpawn} from spawn)  ${cpu(m.drainR3CpuUs, m.drainR3NatsCpuUs, 'consumer')}  ratio to collect alone ${ratio(m.drainR3, m.collectorAlone)}`],
    ['3. end to end R1: exporter -> stream -> consume', `${m.e2eR1} ev/s (publisher acked ${m.e2eR1Publish} ev/s)  ratio to gRPC ${ratio(m.e2eR1, m.grpc)}`],
    ['3. end to end R1: CPU per event', `publisher ${m.e2eR1PubCpuUs} µs + nats-server ${m.e2eR1NatsCpuUs} µs + consumer ${m.e2eR1ConCpuUs} µs = ${Math.round((m.e2eR1PubCpuUs + m.e2eR1NatsCpuUs + m.e2eR1ConCpuUs) * 10) / 10} µs; the three used ${Math.round(m.e2eR1CpuShare * 100)}% of the ${cpus().length} CPUs`],
    ['3. end to end R3', `${m.e2eR3} ev/s (publisher acked ${m.e2eR3Publish} ev/s)  ratio to gRPC ${ratio(m.e2eR3, m.grpc)}`],
    ['3. target >= 100,000 events/s end to end with R1', met ? 'met' : 'MISSED'],
  ];
  let ok = true;
  if (!args['skip-lag']) {
    const l = await lagRun(r1, Number(args.rate), Number(args['outage-s']));
    result.lag = l;
    ok = l.written === l.streamMessages && l.duplicates === 0;
    rows.push(
      [`4. R1, consumer down ${l.outageSeconds} s at ${l.rate} ev/s: backlog`, `${l.backlog} messages (published at ${l.publishRateDuringOutage} ev/s during the outage)`],
      ['4. catch-up to lag 0, publishing going on', `${l.catchUpSeconds} s from restart (${l.catchUpSecondsFromReady} s from its first pull); ${l.catchUpEventsPerSecond} ev/s written, backlog drained at ${l.backlogDrainedPerSecond} ev/s net; published meanwhile at ${l.publishRateDuringCatchUp} ev/s`],
      ['4. after publishing stopped: stream / written / duplicates', `${l.streamMessages} / ${l.written} / ${l.duplicates}  (${ok ? 'every event once' : 'MISMATCH'})`],
    );
  }
  const w = Math.max(...rows.map((x) => x[0].length));
  process.stdout.write(`\n${rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n')}\n`);
  writeResult('jetstream', result);
  process.stdout.write('\nwrote bench/results/jetstream.json\n');
  return ok;
}

async function cleanup(): Promise<void> {
  aborted = true;
  const killAll = (): void => {
    for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
  };
  killAll();
  for (const c of clusters) await c.stop();
  killAll(); // the gRPC helpers (bench/grpc-path.ts) may have started one while the servers stopped
  if (work) rmSync(work, { recursive: true, force: true });
}

if (args.role === 'publish') {
  publisher().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err instanceof Error ? err.stack : String(err));
      process.exit(1);
    },
  );
} else {
  runBench(main, cleanup);
}
