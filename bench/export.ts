// Export benchmark (not a test). Two parts, both with real processes on loopback:
//
// 1. Throughput: events/s from `wgflow export-test` (synthetic events -> spool -> stream, per-event
//    acks) into `wgflow collect` (JSON lines, fsync group commit, acks), with the default http2
//    transport and with the grpc-js one, next to a bare grpc-js stream of the same messages (same
//    generator and encoder; no spool, no acks; the server only counts). Rounds alternate; the
//    table shows medians, the ratio, and the CPU time each process spent per event.
//    Then each side alone, to show what each could do with a core of its own: the exporter
//    against an instant-ack receiver (no JSON, no disk), and the collector fed by a sender of
//    pre-encoded events (no generation, no spool).
// 2. Outage: the exporter enqueues 10,000 events/s while the collector is down for 60 s; RSS of
//    the exporter is sampled every second (it must stay flat: events go to the spool, not to
//    memory), then the collector comes back, the backlog drains, and every event must be in the
//    output exactly once. RSS of the collector is sampled while it catches up.
//
//   node build/bench/export.js [--events 300000] [--rounds 2] [--outage-s 60] [--rate 10000] [--skip-outage]
//
// Prints a table and writes bench/results/export.json.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import { initiatorMessage } from '../src/wire/codec';
import { openH2Stream } from '../src/output/grpc/h2-stream';
import { EVENTS_METHOD } from '../src/wire/proto';
import { parseCollectorUrl } from '../src/output/grpc/url';
import { syntheticEvent, syntheticEventId } from '../testkit/synthetic';
import { writeFlowEvent } from '../src/wire/writer';
import { idsOfFile, keyOfUuid } from '../src/collector/dedup';
import { listEventFiles } from '../src/output/jsonl-writer';
import { median } from '../testkit/bench-run';
import { AloneRun, children, CLI, collectorAlone, cpuSeconds, ExporterRun, exporterRun, killWait, machineProbe, REPO, rssMiB, start, startCollector, waitJson } from './grpc-path';

const { values: args } = parseArgs({
  options: {
    role: { type: 'string' },
    port: { type: 'string' },
    events: { type: 'string', default: '300000' },
    rounds: { type: 'string', default: '2' },
    'outage-s': { type: 'string', default: '60' },
    rate: { type: 'string', default: '10000' },
    'skip-outage': { type: 'boolean', default: false },
    seed: { type: 'string', default: 'bench' },
  },
});

const identity = (b: Buffer): Buffer => b;

// ---------- child roles: the bare grpc-js baseline ----------

async function bareServer(): Promise<void> {
  const server = new grpc.Server();
  const def: grpc.ServiceDefinition = {
    Events: { path: EVENTS_METHOD, requestStream: true, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity, originalName: 'Events' },
  };
  server.addService(def, {
    Events: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      let n = 0;
      call.on('data', () => {
        n++;
      });
      call.on('end', () => {
        process.stdout.write(`${JSON.stringify({ event: 'received', count: n })}\n`);
        call.end();
      });
      call.on('error', () => undefined);
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  process.stdout.write(`${JSON.stringify({ event: 'listening', port })}\n`);
}

async function bareClient(port: number, count: number, seed: string): Promise<void> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.enable_retries': 0 });
  const call = client.makeBidiStreamRequest<Buffer, Buffer>(EVENTS_METHOD, identity, identity, new grpc.Metadata());
  const t0 = Date.now();
  const done = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  call.on('error', () => undefined);
  call.on('data', () => undefined);
  for (let i = 0; i < count; i++) {
    // Same work per event as the exporter's producer: make the event, encode it.
    if (!call.write(writeFlowEvent(syntheticEvent(seed, i)))) await new Promise((r) => call.once('drain', r));
  }
  call.end();
  const st = await done;
  const ms = Date.now() - t0;
  process.stdout.write(`${JSON.stringify({ event: 'done', ok: st.code === 0, ms, eventsPerSecond: Math.round((count * 1000) / ms) })}\n`);
  client.close();
}

// ---------- child roles: each side alone ----------

/** Acks every event at once (no JSON, no disk): the exporter's cost alone. */
async function instantAckServer(): Promise<void> {
  const server = http2.createServer({ settings: { initialWindowSize: 1 << 20 } });
  server.on('session', (session) => session.setLocalWindowSize(8 << 20));
  server.on('stream', (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    let pending: Buffer | null = null;
    s.on('data', (chunk: Buffer) => {
      const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
      let off = 0, n = 0;
      const acks = Buffer.allocUnsafe(Math.ceil(buf.length / 5) * 23);
      while (buf.length - off >= 5) {
        const len = buf.readUInt32BE(off + 1);
        if (buf.length - off - 5 < len) break;
        const m = buf.subarray(off + 5, off + 5 + len);
        off += 5 + len;
        // FlowEventAck{event_id} for an event, {is_initiator} for the handshake.
        const a = n * 23;
        acks[a] = 0;
        if (m[0] === 0x0a && m[1] === 16) {
          acks.writeUInt32BE(18, a + 1);
          acks[a + 5] = 0x0a;
          acks[a + 6] = 16;
          m.copy(acks, a + 7, 2, 18);
          n++;
        } else {
          acks.writeUInt32BE(2, a + 1);
          acks[a + 5] = 0x10;
          acks[a + 6] = 1;
          s.write(acks.subarray(a, a + 7));
        }
      }
      pending = off < buf.length ? buf.subarray(off) : null;
      if (n > 0) s.write(acks.subarray(0, n * 23));
    });
    s.on('end', () => s.end());
    s.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ event: 'listening', port: (server.address() as { port: number }).port })}\n`);
  });
}

/** Sends pre-encoded events as fast as the collector acks them: the collector's cost alone. */
async function preEncodedSender(port: number, count: number, seed: string): Promise<void> {
  const msgs: Buffer[] = [];
  for (let i = 0; i < count; i++) msgs.push(writeFlowEvent(syntheticEvent(seed, i)));
  const WINDOW = 32_768, BATCH = 256;
  let acked = 0, sent = 0, open = false, blocked = false, t0 = 0;
  const done = new Promise<void>((resolve, reject) => {
    const pump = (): void => {
      while (open && !blocked && sent < count && sent - acked < WINDOW) {
        const batch = msgs.slice(sent, Math.min(count, sent + BATCH));
        sent += batch.length;
        if (!call.write(batch)) blocked = true;
      }
    };
    const call = openH2Stream({ url: parseCollectorUrl(`grpc://127.0.0.1:${port}`), keepaliveTimeMs: 30_000, keepaliveTimeoutMs: 10_000 }, {
      onAck: (ack) => {
        if (ack.isInitiator) {
          open = true;
          t0 = Date.now();
        } else if (++acked === count) {
          call.cancel();
          resolve();
          return;
        }
        pump();
      },
      onDrain: () => {
        blocked = false;
        pump();
      },
      onEnd: (st) => reject(new Error(`stream ended early: ${st.details}`)),
    });
    call.write([initiatorMessage()]);
  });
  await done;
  const ms = Date.now() - t0;
  process.stdout.write(`${JSON.stringify({ event: 'done', ok: true, ms, eventsPerSecond: Math.round((count * 1000) / ms) })}\n`);
}

// ---------- part 1: throughput ----------

/** The exporter against the instant-ack receiver. */
async function exporterAlone(work: string, tag: string, events: number): Promise<AloneRun> {
  const srv = start([__filename, '--role', 'instant-ack-server'], 'instant-ack-server');
  const { port } = (await waitJson(srv, (o) => o.event === 'listening', 10_000)) as { port: number };
  const ex = start([CLI, 'export-test', '--collector', `grpc://127.0.0.1:${port}`, '--spool', join(work, `alone-spool-${tag}`), '--count', String(events), '--seed', `alone${tag}`, '--timeout-ms', '120000'], 'exporter');
  const exDone = await waitJson(ex, (o) => o.event === 'done', 125_000);
  const cpu = cpuSeconds(ex.pid);
  await killWait(ex);
  await killWait(srv);
  if (exDone.ok !== true) throw new Error('exporter-alone round did not deliver every event');
  return { eventsPerSecond: Number(exDone.eventsPerSecond), cpuUs: Math.round((cpu * 1e7) / events) / 10 };
}

async function throughputRound(work: string, round: number, events: number): Promise<{ bare: number; exporter: ExporterRun; grpcjs: ExporterRun; exporterAlone: AloneRun; collectorAlone: AloneRun }> {
  const bs = start([__filename, '--role', 'bare-server'], 'bare-server');
  const { port: barePort } = (await waitJson(bs, (o) => o.event === 'listening', 10_000)) as { port: number };
  const bc = start([__filename, '--role', 'bare-client', '--port', String(barePort), '--events', String(events), '--seed', `bare${round}`], 'bare-client');
  const bareDone = await waitJson(bc, (o) => o.event === 'done', 120_000);
  await killWait(bs);
  await killWait(bc);

  const exporter = await exporterRun(work, `h2-${round}`, events, 'http2');
  const grpcjs = await exporterRun(work, `gj-${round}`, events, 'grpc-js');
  const exAlone = await exporterAlone(work, `${round}`, events);
  const collAlone = await collectorAlone(work, `${round}`, events);
  return { bare: Number(bareDone.eventsPerSecond), exporter, grpcjs, exporterAlone: exAlone, collectorAlone: collAlone };
}

// ---------- part 2: outage ----------

interface OutageResult {
  rate: number;
  outageSeconds: number;
  eventsSent: number;
  exporterRssMiB: { beforeOutage: number | null; maxDuringOutage: number | null; endOfOutage: number | null };
  collectorRssMiB: { beforeOutage: number | null; maxDuringCatchUp: number | null };
  spoolMiBAtEndOfOutage: number;
  catchUpSeconds: number;
  delivered: number;
  duplicatesInOutput: number;
  missing: number;
}

async function outage(work: string, rate: number, outageS: number): Promise<OutageResult> {
  const leadS = 5;
  const count = rate * (leadS + outageS);
  const out = join(work, 'outage-out');
  let { child: coll, port } = await startCollector(out);
  const ex = start([CLI, 'export-test', '--collector', `grpc://127.0.0.1:${port}`, '--spool', join(work, 'outage-spool'), '--count', String(count), '--rate', String(rate), '--seed', 'outage', '--stats-ms', '1000', '--timeout-ms', String((leadS + outageS + 120) * 1000)], 'exporter');
  let lastStats: Record<string, unknown> = {};
  ex.stdout?.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) {
      try {
        const o = JSON.parse(line) as Record<string, unknown>;
        if (o.event === 'stats') lastStats = o;
      } catch {
        // partial line
      }
    }
  });
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  await sleep(leadS * 1000);
  const exBefore = rssMiB(ex.pid);
  const collBefore = rssMiB(coll.pid);
  await killWait(coll);
  process.stdout.write(`  collector down for ${outageS} s (exporter keeps enqueueing ${rate}/s) ...\n`);
  let exMax = 0;
  for (let s = 0; s < outageS; s++) {
    await sleep(1000);
    exMax = Math.max(exMax, rssMiB(ex.pid) ?? 0);
  }
  const exEnd = rssMiB(ex.pid);
  const spoolMiB = Math.round(Number(lastStats.spoolBytes ?? 0) / 104857.6) / 10;
  const t0 = Date.now();
  ({ child: coll } = await startCollector(out, port));
  let collMax = 0;
  const sampler = setInterval(() => {
    collMax = Math.max(collMax, rssMiB(coll.pid) ?? 0);
  }, 500);
  const done = await waitJson(ex, (o) => o.event === 'done', (outageS + 120) * 1000);
  clearInterval(sampler);
  const catchUp = (Date.now() - t0) / 1000;
  await killWait(ex);
  await killWait(coll, 'SIGTERM');
  // Exactly once: every id of the run, no id twice.
  const seen = new Map<string, number>();
  for (const f of listEventFiles(out)) for (const id of idsOfFile(f)) seen.set(id, (seen.get(id) ?? 0) + 1);
  let dup = 0, missing = 0;
  for (const n of seen.values()) if (n > 1) dup += n - 1;
  for (let i = 0; i < count; i++) if (!seen.has(keyOfUuid(syntheticEventId('outage', i)))) missing++;
  if (done.ok !== true) process.stdout.write('  warning: exporter did not report every event acknowledged\n');
  return {
    rate,
    outageSeconds: outageS,
    eventsSent: count,
    exporterRssMiB: { beforeOutage: exBefore, maxDuringOutage: exMax, endOfOutage: exEnd },
    collectorRssMiB: { beforeOutage: collBefore, maxDuringCatchUp: collMax },
    spoolMiBAtEndOfOutage: spoolMiB,
    catchUpSeconds: Math.round(catchUp * 10) / 10,
    delivered: seen.size,
    duplicatesInOutput: dup,
    missing,
  };
}

async function main(): Promise<void> {
  if (args.role === 'bare-server') return bareServer();
  if (args.role === 'bare-client') return bareClient(Number(args.port), Number(args.events), String(args.seed));
  if (args.role === 'instant-ack-server') return instantAckServer();
  if (args.role === 'pre-encoded-sender') return preEncodedSender(Number(args.port), Number(args.events), String(args.seed));
  const events = Number(args.events);
  const rounds = Number(args.rounds);
  const work = mkdtempSync(join(tmpdir(), 'wgflow-bench-export-'));
  const cleanup = (): void => {
    for (const c of children) if (c.pid && c.exitCode === null) process.kill(c.pid, 'SIGKILL');
  };
  process.on('exit', cleanup);
  try {
    const probe = machineProbe(work);
    process.stdout.write(`  machine: CPU loop ${probe.cpuLoopMs} ms, fdatasync ${probe.fdatasyncMBps} MB/s (compare runs by these)\n`);
    const bare: number[] = [], exp: ExporterRun[] = [], gj: ExporterRun[] = [], exAlone: AloneRun[] = [], collAlone: AloneRun[] = [];
    for (let r = 0; r < rounds; r++) {
      const res = await throughputRound(work, r, events);
      bare.push(res.bare);
      exp.push(res.exporter);
      gj.push(res.grpcjs);
      exAlone.push(res.exporterAlone);
      collAlone.push(res.collectorAlone);
      process.stdout.write(`  round ${r + 1}: bare ${res.bare} ev/s, exporter http2 ${res.exporter.eventsPerSecond} ev/s, grpc-js ${res.grpcjs.eventsPerSecond} ev/s, exporter alone ${res.exporterAlone.eventsPerSecond} ev/s, collector alone ${res.collectorAlone.eventsPerSecond} ev/s\n`);
    }
    const med = (runs: ExporterRun[]): ExporterRun => ({
      eventsPerSecond: median(runs.map((x) => x.eventsPerSecond)),
      exporterCpuUs: median(runs.map((x) => x.exporterCpuUs)),
      collectorCpuUs: median(runs.map((x) => x.collectorCpuUs)),
    });
    const bareMed = median(bare), expMed = med(exp), gjMed = med(gj);
    const medAlone = (runs: AloneRun[]): AloneRun => ({ eventsPerSecond: median(runs.map((x) => x.eventsPerSecond)), cpuUs: median(runs.map((x) => x.cpuUs)) });
    const exAloneMed = medAlone(exAlone), collAloneMed = medAlone(collAlone);
    const ratio = Math.round((expMed.eventsPerSecond / bareMed) * 100) / 100;
    const result: Record<string, unknown> = {
      when: new Date().toISOString(),
      events,
      rounds,
      machine: probe,
      throughput: {
        bareEventsPerSecond: bareMed, exporterEventsPerSecond: expMed.eventsPerSecond, ratio, exporter: expMed, grpcjsTransport: gjMed,
        exporterAlone: exAloneMed, collectorAlone: collAloneMed, exporterAloneRounds: exAlone, collectorAloneRounds: collAlone,
        bareRounds: bare, exporterRounds: exp, grpcjsRounds: gj, targets: { eventsPerSecond: 100_000, ratio: 0.5 },
        met: { eventsPerSecond: expMed.eventsPerSecond >= 100_000, ratio: ratio >= 0.5 },
      },
    };
    const cpu = (x: ExporterRun): string => `exporter ${x.exporterCpuUs.toFixed(1)} µs + collector ${x.collectorCpuUs.toFixed(1)} µs CPU per event`;
    const rows: Array<[string, string]> = [
      ['bare grpc-js stream (no spool, no acks)', `${bareMed} ev/s`],
      ['exporter -> collector, http2 transport (default)', `${Math.round(expMed.eventsPerSecond)} ev/s  (${cpu(expMed)})`],
      ['exporter -> collector, grpc-js transport', `${Math.round(gjMed.eventsPerSecond)} ev/s  (${cpu(gjMed)})`],
      ['exporter alone (instant-ack receiver)', `${exAloneMed.eventsPerSecond} ev/s  (exporter ${exAloneMed.cpuUs.toFixed(1)} µs CPU per event)`],
      ['collector alone (pre-encoded sender)', `${collAloneMed.eventsPerSecond} ev/s  (collector ${collAloneMed.cpuUs.toFixed(1)} µs CPU per event)`],
      ['ratio exporter (default) / bare', `${ratio}  (target >= 0.5: ${ratio >= 0.5 ? 'met' : 'MISSED'})`],
      ['target >= 100,000 events/s', expMed.eventsPerSecond >= 100_000 ? 'met' : 'MISSED'],
    ];
    if (!args['skip-outage']) {
      const o = await outage(work, Number(args.rate), Number(args['outage-s']));
      result.outage = o;
      rows.push(
        [`exporter RSS before / max during / end of ${o.outageSeconds} s outage`, `${o.exporterRssMiB.beforeOutage} / ${o.exporterRssMiB.maxDuringOutage} / ${o.exporterRssMiB.endOfOutage} MiB`],
        ['spool on disk at end of outage', `${o.spoolMiBAtEndOfOutage} MiB`],
        ['collector RSS before outage / max while catching up', `${o.collectorRssMiB.beforeOutage} / ${o.collectorRssMiB.maxDuringCatchUp} MiB`],
        ['catch-up after collector restart', `${o.catchUpSeconds} s`],
        ['delivered / duplicates / missing', `${o.delivered} / ${o.duplicatesInOutput} / ${o.missing}  (of ${o.eventsSent})`],
      );
    }
    const w = Math.max(...rows.map((r) => r[0].length));
    process.stdout.write(`\n${rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n')}\n`);
    const dir = join(REPO, 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'export.json'), `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`\nwrote bench/results/export.json\n`);
  } finally {
    cleanup();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : String(err));
  process.exit(1);
});
