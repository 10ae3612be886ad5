// collector.profile: netbird-aggregated. The receiver here is built only from NetBird's published
// flow contract (test/fixtures/netbird-proto/flow.proto, loaded with proto-loader): it must
// accept the aggregated stream, and the sums over the aggregates must equal the plain profile's
// for the same traffic, with NetBird's grouping, contiguous windows, and nothing lost or counted
// twice across a kill -9.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FlowEvent } from '../../src/model/event';
import { aggregateId, WindowAggregator } from '../../src/output/aggregator';
import { Exporter } from '../../src/output/grpc/exporter';
import { writeFlowEvent } from '../../src/wire/writer';
import { checkScanned, scanFlowEvent, ScannedEvent } from '../../src/wire/reader';
import { validateRecord } from '../../src/output/spooled-sink';
import { aggregateTraffic, plainTotals } from '../../testkit/aggregate-traffic';
import { conn, icmpConn, TCP } from '../flow/builders';
import { harness, sum } from '../flow/harness';
import { cleanup, ensureBuilt, REPO, startCollector, tmpDir } from './helpers';
import { fromJsonLine, toJsonLine } from '../../src/model/json';

const NETBIRD_PROTO = join(REPO, 'test', 'fixtures', 'netbird-proto', 'flow.proto');
const def = protoLoader.loadSync(NETBIRD_PROTO, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
const flowPkg = grpc.loadPackageDefinition(def).flow as unknown as { FlowService: { service: grpc.ServiceDefinition } };

interface Ts { seconds: number; nanos: number }
interface NbFields {
  flow_id: Buffer; type: string; direction: string; protocol: number; source_ip: Buffer; dest_ip: Buffer;
  port_info?: { source_port: number; dest_port: number } | null; icmp_info?: { icmp_type: number; icmp_code: number } | null;
  rx_packets: number; tx_packets: number; rx_bytes: number; tx_bytes: number;
  num_of_starts: number; num_of_ends: number; num_of_drops: number;
}
interface NbEvent { event_id: Buffer; isInitiator: boolean; timestamp?: Ts | null; window_start?: Ts | null; window_end?: Ts | null; flow_fields?: NbFields | null }
type Call = grpc.ServerDuplexStream<NbEvent, { event_id?: Buffer; isInitiator?: boolean }>;

const ms = (t: Ts | null | undefined): number => (t ? t.seconds * 1000 + Math.floor(t.nanos / 1e6) : -1);

/** NetBird's receiver: acks the initiator and every event by id; keeps every message it got. */
interface Receiver { port: number; got: NbEvent[]; byId: Map<string, NbEvent> }
const servers: grpc.Server[] = [];
const dirs: string[] = [];
const closers: Array<() => Promise<void>> = [];

async function netbirdReceiver(): Promise<Receiver> {
  const r: Receiver = { port: 0, got: [], byId: new Map() };
  const server = new grpc.Server();
  server.addService(flowPkg.FlowService.service, {
    Events: (call: Call) => {
      call.on('data', (ev: NbEvent) => {
        if (ev.isInitiator) {
          call.write({ isInitiator: true });
          return;
        }
        r.got.push(ev);
        r.byId.set(ev.event_id.toString('hex'), ev); // receivers de-duplicate by event_id
        call.write({ event_id: ev.event_id });
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  });
  r.port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  servers.push(server);
  return r;
}

afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  for (const s of servers.splice(0)) s.forceShutdown();
  cleanup(...dirs.splice(0));
});

const log = pino({ level: 'silent' });
const W = 10_000;

/** The aggregator over an in-memory target, on a clock that follows the events. */
function aggregateInMemory(events: readonly FlowEvent[], windowMs = W): FlowEvent[] {
  const dir = tmpDir('agg-mem');
  dirs.push(dir);
  const out: FlowEvent[] = [];
  let now = events[0].timestampMs;
  const a = new WindowAggregator({ dir, windowMs, target: { enqueueBatch: (r) => (out.push(...r), r.length) }, logger: log, now: () => now, timer: false });
  for (const ev of events) {
    now = ev.timestampMs;
    a.emit([ev]);
  }
  now = events[events.length - 1].timestampMs + 2 * windowMs;
  a.tick();
  void a.close(0);
  return out;
}

/** NetBird's grouping key, written here from its description (not from the implementation). */
function netbirdKey(e: FlowEvent): string | null {
  if (![1, 6, 17, 58].includes(e.protocol)) return null; // not aggregated: one record each
  const icmp = e.protocol === 1 || e.protocol === 58;
  return [e.source.ip, e.destination.ip, icmp ? 0 : e.destination.port, e.direction, e.protocol, icmp ? e.icmpType : 0].join(' ');
}

type Sums = ReturnType<typeof plainTotals>;
function aggSums(rs: readonly FlowEvent[]): Sums {
  const s: Sums = { starts: 0, ends: 0, drops: 0, rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 };
  for (const r of rs) {
    s.starts += r.aggregate!.starts; s.ends += r.aggregate!.ends; s.drops += r.aggregate!.drops;
    s.rxBytes += r.rxBytes; s.txBytes += r.txBytes; s.rxPackets += r.rxPackets; s.txPackets += r.txPackets;
  }
  return s;
}
function wireSums(evs: Iterable<NbEvent>): Sums {
  const s: Sums = { starts: 0, ends: 0, drops: 0, rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 };
  for (const e of evs) {
    const f = e.flow_fields!;
    s.starts += f.num_of_starts; s.ends += f.num_of_ends; s.drops += f.num_of_drops;
    s.rxBytes += f.rx_bytes; s.txBytes += f.tx_bytes; s.rxPackets += f.rx_packets; s.txPackets += f.tx_packets;
  }
  return s;
}

describe('window aggregation (NetBird v0.75 semantics)', () => {
  const events = aggregateTraffic('groups', 80);

  it('counters over the aggregates add up to the flows\' totals; num_of_* count the events', () => {
    const recs = aggregateInMemory(events);
    expect(recs.length).toBeGreaterThan(0);
    expect(recs.length).toBeLessThan(events.length); // grouping happened
    expect(aggSums(recs)).toEqual(plainTotals(events));
    expect(plainTotals(events).ends).toBe(80);
  });

  it('groups by source, destination, destination port, direction, protocol and ICMP type, per window', () => {
    const recs = aggregateInMemory(events);
    const byWindow = new Map<number, FlowEvent[]>();
    for (const r of recs) {
      expect(r.windowEndMs! - r.windowStartMs!).toBe(W);
      expect(r.windowStartMs! % W).toBe(0);
      byWindow.set(r.windowStartMs!, [...(byWindow.get(r.windowStartMs!) ?? []), r]);
    }
    for (const [ws, rs] of byWindow) {
      const inWindow = events.filter((e) => e.timestampMs >= ws && e.timestampMs < ws + W);
      const expected = new Map<string, FlowEvent[]>();
      for (const e of inWindow) {
        const k = netbirdKey(e) ?? `single ${e.eventId}`;
        expected.set(k, [...(expected.get(k) ?? []), e]);
      }
      expect(rs.length).toBe(expected.size);
      for (const r of rs) {
        const k = netbirdKey(r);
        const members = k === null ? [...expected.values()].find((m) => m.length === 1 && m[0].flowId === r.flowId && m[0].timestampMs === r.timestampMs)! : expected.get(k)!;
        expect(members, `window ${ws} record ${k}`).toBeDefined();
        expect(r.aggregate).toEqual({
          starts: members.filter((e) => e.type === 'START').length,
          ends: members.filter((e) => e.type === 'END').length,
          drops: members.filter((e) => e.type === 'DROP').length,
        });
        const d = members.reduce((s, e) => s + (e.delta?.rxBytes ?? 0), 0);
        expect(r.rxBytes).toBe(d);
        // NetBird: the earliest event's time and source port; the first rule id seen.
        const first = [...members].sort((a, b) => a.timestampMs - b.timestampMs || a.eventId.localeCompare(b.eventId))[0];
        expect(r.timestampMs).toBe(first.timestampMs);
        expect(r.source.port).toBe(first.source.port);
        expect(r.ruleId).toBe(members.find((e) => e.ruleId !== '')?.ruleId ?? '');
      }
    }
  });

  it('a window that reaches the group cap closes early: sums still add up, bounds contiguous, ids distinct, the journal holds only the new window', () => {
    const dir = tmpDir('agg-cap');
    dirs.push(dir);
    const out: FlowEvent[] = [];
    let now = events[0].timestampMs;
    const target = { enqueueBatch: (r: readonly FlowEvent[]) => (out.push(...r), r.length) };
    const a = new WindowAggregator({ dir, windowMs: W, maxGroups: 5, target, logger: log, now: () => now, timer: false });
    // All of it in one batch at one moment: the cap, not the clock, closes the windows.
    a.emit(events);
    const st = a.stats();
    expect(st.earlyCloses).toBeGreaterThan(1);
    expect(st.openGroups).toBeLessThan(5);
    // A crash now: a new aggregator on the same journal restores only the open window.
    const b = new WindowAggregator({ dir, windowMs: W, maxGroups: 5, target, logger: log, now: () => now, timer: false });
    expect(b.stats().openGroups).toBe(st.openGroups);
    now += 2 * W;
    b.tick();
    void b.close(0);
    expect(aggSums(out)).toEqual(plainTotals(events));
    expect(new Set(out.map((r) => r.eventId)).size).toBe(out.length);
    const bounds = [...new Map(out.map((r) => [r.windowStartMs!, r.windowEndMs!])).entries()].sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < bounds.length; i++) expect(bounds[i][0]).toBe(bounds[i - 1][1]);
    for (const [start, end] of bounds) expect(end).toBeGreaterThan(start);
  });

  it('window bounds are aligned and contiguous', () => {
    const starts = [...new Set(aggregateInMemory(events).map((r) => r.windowStartMs!))].sort((a, b) => a - b);
    expect(starts.length).toBeGreaterThan(5);
    for (let i = 1; i < starts.length; i++) expect(starts[i]).toBe(starts[i - 1] + W);
  });

  it('ids: the same traffic gives the same ids, all distinct (derived from reporter, window and key)', () => {
    const a = aggregateInMemory(events).map((r) => r.eventId);
    const b = aggregateInMemory(events).map((r) => r.eventId);
    expect(a).toEqual(b);
    expect(new Set(a).size).toBe(a.length);
    expect(aggregateId('k', 0, 'x')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(aggregateId('k', 0, 'x')).not.toBe(aggregateId('k', W, 'x'));
  });

  it('encodes as TYPE_UNKNOWN with num_of_* and the window, as NetBird\'s proto reads it', () => {
    const rec = aggregateInMemory(events).find((r) => r.aggregate!.starts > 1)!;
    const m = (def['flow.FlowService'] as unknown as { Events: { requestDeserialize(b: Buffer): NbEvent } }).Events.requestDeserialize(writeFlowEvent(rec));
    expect(m.flow_fields!.type).toBe('TYPE_UNKNOWN');
    expect(m.flow_fields!.num_of_starts).toBe(rec.aggregate!.starts);
    expect(m.flow_fields!.num_of_ends).toBe(rec.aggregate!.ends);
    expect(ms(m.window_start)).toBe(rec.windowStartMs);
    expect(ms(m.window_end)).toBe(rec.windowEndMs);
    expect(m.flow_fields!.rx_bytes).toBe(rec.rxBytes);
  });

  it('a spooled aggregate is a valid spool record (read back after a restart); readers take it only where aggregates are allowed', () => {
    const rec = aggregateInMemory(events)[0];
    const bytes = writeFlowEvent(rec);
    const id = Buffer.from(rec.eventId.replace(/-/g, ''), 'hex');
    expect(validateRecord(id, bytes)).toBeNull();
    const s = new ScannedEvent();
    scanFlowEvent(bytes, s);
    expect([s.numStarts, s.numEnds, s.numDrops]).toEqual([rec.aggregate!.starts, rec.aggregate!.ends, rec.aggregate!.drops]);
    expect(checkScanned(s)).toMatch(/flow_fields\.type: 0 is not/);
    expect(checkScanned(s, { aggregates: true })).toBeNull();
  });

  it('flow tracker traffic: the aggregates add up to the plain profile\'s END totals and START count', () => {
    const h = harness({ updateIntervalMs: 10_000, udpIdleMs: 15_000 });
    const dir = tmpDir('agg-harness');
    dirs.push(dir);
    const recs: FlowEvent[] = [];
    const a = new WindowAggregator({ dir, windowMs: W, target: { enqueueBatch: (r) => (recs.push(...r), r.length) }, logger: log, now: () => h.clock.wallMs(), timer: false });
    const feed = (evs: FlowEvent[]): void => {
      if (evs.length) a.emit(evs);
      else a.tick();
    };
    const tcp = [0, 1, 2, 3].map((k) => conn({ src: '100.64.0.1', sport: 41000 + k, dst: '100.64.0.2', dport: 443, local: true }));
    const udp = conn({ src: '100.64.0.3', sport: 40123, dst: '100.64.0.2', dport: 5000, proto: 17 });
    const ping = icmpConn({ src: '100.64.0.1', dst: '100.64.0.9', id: 7, local: true });
    for (let s = 0; s < 60; s++) {
      for (const [k, c] of tcp.entries()) {
        if (s === k * 3) h.kernel.packet(c, true, { tcpFlags: TCP.SYN, bytes: 60 });
        if (s > k * 3 && s < 40 + k) h.kernel.packet(c, s % 2 === 0, { tcpFlags: TCP.ACK, bytes: 100 + s + k });
        if (s === 40 + k) {
          h.kernel.packet(c, true, { tcpFlags: TCP.FIN | TCP.ACK, bytes: 52 });
          h.kernel.packet(c, false, { tcpFlags: TCP.FIN | TCP.ACK, bytes: 52 });
        }
      }
      if (s < 30) h.kernel.packet(udp, s % 3 !== 1, { bytes: 80 + s });
      if (s < 25) {
        h.kernel.packet(ping, true, { bytes: 84 });
        h.kernel.packet(ping, false, { bytes: 84 });
      }
      feed(h.run(1000, { stepMs: 250, drainMs: 1000 }));
    }
    feed(h.run(60_000, { stepMs: 1000, drainMs: 1000 }));
    h.clock.advanceMs(2 * W);
    a.tick();
    void a.close(0);
    const ends = h.of('END');
    expect(ends.map((e) => e.protocol).sort()).toEqual([1, 17, 6, 6, 6, 6].sort());
    expect(h.of('UPDATE').length).toBeGreaterThan(0);
    const plain = { starts: h.of('START').length, ends: ends.length, drops: 0, ...sum(ends) };
    expect(aggSums(recs)).toEqual(plain);
    // The four TCP flows to 100.64.0.2:443 are one group: one record per window at most.
    const tcpRecs = recs.filter((r) => r.protocol === 6);
    expect(new Set(tcpRecs.map((r) => r.windowStartMs)).size).toBe(tcpRecs.length);
    expect(tcpRecs.reduce((s, r) => s + r.aggregate!.starts, 0)).toBe(4);
  });
});

/**
 * events through the aggregated profile to url: a window aggregator (clock driven by the events'
 * times) in front of an exporter with its spool in spoolDir; resolves once every record is acked.
 */
async function sendAggregated(events: readonly FlowEvent[], url: string, spoolDir: string): Promise<{ exp: Exporter; agg: WindowAggregator }> {
  const exp = new Exporter({ url, spool: { dir: spoolDir, fsync: 'never' }, logger: log });
  closers.push(() => exp.stop({ deadlineMs: 0 }).then(() => undefined));
  exp.start();
  let now = events[0].timestampMs;
  const agg = new WindowAggregator({ dir: join(spoolDir, 'aggregate'), windowMs: W, target: exp, logger: log, now: () => now, timer: false });
  for (const ev of events) {
    now = ev.timestampMs;
    agg.emit([ev]);
  }
  now += 2 * W;
  agg.tick();
  await agg.close(0);
  await exp.whenIdle();
  return { exp, agg };
}

describe('the aggregated stream against a receiver built from NetBird\'s proto', () => {
  beforeAll(() => ensureBuilt());

  it('wgflow collect stores NetBird v0.75 aggregates as TYPE_UNKNOWN lines with num_of_*: their sums equal the events\' totals', async () => {
    const events = aggregateTraffic('collect', 40);
    const outDir = tmpDir('agg-collect-out');
    const spoolDir = tmpDir('agg-collect-spool');
    dirs.push(outDir, spoolDir);
    const col = await startCollector(outDir);
    closers.push(() => col.proc.kill('SIGKILL'));
    const { exp, agg } = await sendAggregated(events, col.url, spoolDir);
    expect(exp.stats()).toMatchObject({ acked: agg.stats().records, queued: 0 });
    await col.proc.kill('SIGTERM');
    const lines = readFileSync(join(outDir, 'events.jsonl'), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(agg.stats().records);
    const got = lines.map((l) => fromJsonLine(l).event);
    for (const [l, e] of lines.map((l, i) => [l, got[i]] as const)) {
      expect(JSON.parse(l)).toMatchObject({ type: 'TYPE_UNKNOWN' });
      expect(e.aggregate).toBeDefined();
      // The collector's line is the model's own JSON form of the event it decodes.
      expect(l).toBe(toJsonLine(e, fromJsonLine(l).receiveTimeMs));
    }
    const sums = got.reduce((s, e) => ({
      starts: s.starts + e.aggregate!.starts, ends: s.ends + e.aggregate!.ends, drops: s.drops + e.aggregate!.drops,
      rxBytes: s.rxBytes + e.rxBytes, txBytes: s.txBytes + e.txBytes, rxPackets: s.rxPackets + e.rxPackets, txPackets: s.txPackets + e.txPackets,
    }), { starts: 0, ends: 0, drops: 0, rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 });
    expect(sums).toEqual(plainTotals(events));
  });

  it('accepts it; its sums equal the plain profile\'s (received by the same kind of receiver)', async () => {
    const events = aggregateTraffic('wire', 50);
    // Plain profile.
    const plainRx = await netbirdReceiver();
    const plainDir = tmpDir('agg-plain');
    dirs.push(plainDir);
    const plain = new Exporter({ url: `grpc://127.0.0.1:${plainRx.port}`, spool: { dir: plainDir, fsync: 'never' }, logger: log });
    closers.push(() => plain.stop({ deadlineMs: 0 }).then(() => undefined));
    plain.start();
    plain.emit(events);
    await plain.whenIdle();
    // Aggregated profile.
    const aggRx = await netbirdReceiver();
    const aggDir = tmpDir('agg-wire');
    dirs.push(aggDir);
    const { agg } = await sendAggregated(events, `grpc://127.0.0.1:${aggRx.port}`, aggDir);

    const plainGot = [...plainRx.byId.values()];
    expect(plainGot.length).toBe(events.length);
    const plainSums: Sums = { starts: 0, ends: 0, drops: 0, rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 };
    for (const e of plainGot) {
      const f = e.flow_fields!;
      if (f.type === 'TYPE_START') plainSums.starts++;
      if (f.type === 'TYPE_DROP') plainSums.drops++;
      if (f.type !== 'TYPE_END') continue;
      plainSums.ends++;
      plainSums.rxBytes += f.rx_bytes; plainSums.txBytes += f.tx_bytes; plainSums.rxPackets += f.rx_packets; plainSums.txPackets += f.tx_packets;
    }
    const aggGot = [...aggRx.byId.values()];
    expect(aggGot.length).toBe(agg.stats().records);
    expect(aggGot.length).toBeLessThan(events.length);
    for (const e of aggGot) {
      expect(e.flow_fields!.type).toBe('TYPE_UNKNOWN');
      expect(ms(e.window_end) - ms(e.window_start)).toBe(W);
      // A window where a long flow only moved bytes has no START/END: counters only.
      const f = e.flow_fields!;
      expect(f.num_of_starts + f.num_of_ends + f.num_of_drops + f.rx_packets + f.tx_packets).toBeGreaterThan(0);
    }
    expect(wireSums(aggGot)).toEqual(plainSums);
    expect(plainSums).toEqual(plainTotals(events));
  });
});

describe('kill -9 mid-window and restart', () => {
  const CHILD = join(REPO, 'build', 'testkit', 'aggregate-child.js');
  const procs: Array<ReturnType<typeof spawn>> = [];
  beforeAll(() => ensureBuilt());
  afterAll(() => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  });

  function child(args: string[]): { proc: ReturnType<typeof spawn>; line: (ev: string) => Promise<Record<string, unknown>>; exited: Promise<number | null> } {
    const proc = spawn(process.execPath, [CHILD, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(proc);
    let out = '', err = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
    const line = (ev: string): Promise<Record<string, unknown>> => new Promise((resolve, reject) => {
      const t0 = Date.now();
      const poll = (): void => {
        const found = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((o) => o.event === ev);
        if (found) return resolve(found);
        if (proc.exitCode !== null || Date.now() - t0 > 60_000) return reject(new Error(`aggregate-child: no "${ev}" line\nstdout: ${out}\nstderr: ${err.slice(-2000)}`));
        setTimeout(poll, 20);
      };
      poll();
    });
    return { proc, line, exited };
  }

  it('loses nothing and counts nothing twice (same ids as an uninterrupted run)', async () => {
    expect(existsSync(CHILD)).toBe(true);
    const seed = 'crash', flows = 60;
    const events = aggregateTraffic(seed, flows);
    const cut = Math.floor(events.length * 0.6);
    const rx = await netbirdReceiver();
    const spool = tmpDir('agg-crash');
    dirs.push(spool);
    const common = ['--collector', `grpc://127.0.0.1:${rx.port}`, '--spool', spool, '--seed', seed, '--flows', String(flows), '--window-ms', String(W)];

    const first = child([...common, '--from', '0', '--to', String(cut), '--hold']);
    const held = await first.line('held');
    expect(held.openGroups).toBeGreaterThan(0); // killed with a window open
    // Some closed windows reached the receiver before the kill.
    const t0 = Date.now();
    while (rx.byId.size < (held.records as number) && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 20));
    expect(rx.byId.size).toBeGreaterThan(0);
    first.proc.kill('SIGKILL');
    await first.exited;
    const journal = readFileSync(join(spool, 'aggregate', 'window.journal'), 'utf8').trim().split('\n');
    expect(journal.length).toBeGreaterThan(1); // header + the open window's events

    const second = child([...common, '--from', String(cut), '--to', String(events.length), '--finish']);
    await second.line('done');
    expect(await second.exited).toBe(0);

    const expected = aggregateInMemory(events);
    const got = rx.byId;
    expect([...got.keys()].sort()).toEqual(expected.map((r) => Buffer.from(r.eventId.replace(/-/g, ''), 'hex').toString('hex')).sort());
    // A record received twice (an ack lost to the kill) is the same record both times.
    for (const e of rx.got) expect(wireSums([e])).toEqual(wireSums([got.get(e.event_id.toString('hex'))!]));
    expect(wireSums(got.values())).toEqual(plainTotals(events));
  });
});

describe('stop and restart', () => {
  it('a stop closes the open window early; the next run starts its window there (contiguous, new ids)', async () => {
    const events = aggregateTraffic('stop', 30);
    const dir = tmpDir('agg-stop');
    dirs.push(dir);
    const out: FlowEvent[] = [];
    const target = { enqueueBatch: (r: readonly FlowEvent[]): number => (out.push(...r), r.length) };
    const half = 40;
    let now = events[0].timestampMs;
    const a = new WindowAggregator({ dir, windowMs: W, target, logger: log, now: () => now, timer: false });
    for (const ev of events.slice(0, half)) {
      now = ev.timestampMs;
      a.emit([ev]);
    }
    const stopAt = now + 1;
    now = stopAt;
    await a.close(0);
    const last = out[out.length - 1];
    expect(last.windowEndMs).toBe(stopAt);
    const b = new WindowAggregator({ dir, windowMs: W, target, logger: log, now: () => now, timer: false });
    expect(b.stats().windowStartMs).toBe(stopAt);
    for (const ev of events.slice(half)) {
      now = ev.timestampMs;
      b.emit([ev]);
    }
    now += 2 * W;
    b.tick();
    await b.close(0);
    const bounds = [...new Map(out.map((r) => [r.windowStartMs!, r.windowEndMs!])).entries()].sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < bounds.length; i++) expect(bounds[i][0]).toBe(bounds[i - 1][1]);
    expect(new Set(out.map((r) => r.eventId)).size).toBe(out.length);
    expect(aggSums(out)).toEqual(plainTotals(events));
  });
});

describe('configuration', () => {
  it('collector.profile and collector.aggregate_window_s: defaults, and bad values named by key', async () => {
    const { resolveConfig } = await import('../../src/config/config');
    const base = { interfaces: ['wt0'] };
    const { writeFileSync } = await import('node:fs');
    const dir = tmpDir('agg-cfg');
    dirs.push(dir);
    const file = (o: object): string => {
      const p = join(dir, `c${Math.random().toString(36).slice(2)}.json`);
      writeFileSync(p, JSON.stringify({ ...base, ...o }));
      return p;
    };
    const d = resolveConfig({ file: file({}) });
    expect(d.collector.profile).toBe('events');
    expect(d.collector.aggregate_window_s).toBe(30);
    const ok = resolveConfig({ file: file({ collector: { url: 'grpc://127.0.0.1:1', profile: 'netbird-aggregated', aggregate_window_s: 60 } }) });
    expect(ok.collector).toMatchObject({ profile: 'netbird-aggregated', aggregate_window_s: 60 });
    expect(() => resolveConfig({ file: file({ collector: { url: 'grpc://127.0.0.1:1', profile: 'netbird' } }) })).toThrow(/collector\.profile.*expected one of "events", "netbird-aggregated"/);
    expect(() => resolveConfig({ file: file({ collector: { url: 'grpc://127.0.0.1:1', aggregate_window_s: 0 } }) })).toThrow(/collector\.aggregate_window_s/);
    expect(() => resolveConfig({ file: file({ collector: { profile: 'netbird-aggregated' } }) })).toThrow(/collector\.profile.*set collector\.url/);
  });
});

describe('closing a window', () => {
  it('a crash after the records were spooled but before the journal was reset re-makes the same records (same ids)', async () => {
    const { copyFileSync } = await import('node:fs');
    const events = aggregateTraffic('redo', 20);
    const dir = tmpDir('agg-redo');
    dirs.push(dir);
    const out: FlowEvent[] = [];
    const target = { enqueueBatch: (r: readonly FlowEvent[]): number => (out.push(...r), r.length) };
    let now = events[0].timestampMs;
    const a = new WindowAggregator({ dir, windowMs: W, target, logger: log, now: () => now, timer: false });
    const firstEnd = Math.floor(now / W) * W + W;
    for (const ev of events.filter((e) => e.timestampMs < firstEnd)) {
      now = ev.timestampMs;
      a.emit([ev]);
    }
    const journal = join(dir, 'window.journal');
    copyFileSync(journal, `${journal}.before`);
    now = firstEnd;
    a.tick(); // spools the window's records, then resets the journal
    const first = out.splice(0);
    expect(first.length).toBeGreaterThan(0);
    // The journal as it was before the reset: what a crash between the two steps leaves.
    copyFileSync(`${journal}.before`, journal);
    const b = new WindowAggregator({ dir, windowMs: W, target, logger: log, now: () => now, timer: false });
    const again = out.splice(0);
    const view = (rs: FlowEvent[]): string[] => rs.map((r) => JSON.stringify([r.eventId, r.windowStartMs, r.windowEndMs, r.aggregate, r.rxBytes, r.txBytes, r.rxPackets, r.txPackets])).sort();
    expect(view(again)).toEqual(view(first));
    expect(b.stats().windowStartMs).toBe(firstEnd);
    await b.close(0);
    await a.close(0);
  });

  it('the timer closes a window at its end without further events (real clock)', async () => {
    const dir = tmpDir('agg-timer');
    dirs.push(dir);
    const out: FlowEvent[] = [];
    const a = new WindowAggregator({ dir, windowMs: 1000, target: { enqueueBatch: (r) => (out.push(...r), r.length) }, logger: log });
    closers.push(() => a.close(0));
    const [ev] = aggregateTraffic('timer', 1);
    a.emit([{ ...ev, timestampMs: Date.now() }]);
    for (let i = 0; i < 400 && out.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(out).toHaveLength(1);
    expect(out[0].aggregate).toEqual({ starts: 1, ends: 0, drops: 0 });
    expect(out[0].windowEndMs! - out[0].windowStartMs!).toBe(1000);
  });
});

describe('the daemon\'s outputs', () => {
  it('netbird-aggregated puts the aggregator before the exporter (journal beside the spool); events keeps the exporter', async () => {
    const { buildSinks, closeSinks, emitAll } = await import('../../src/daemon/sinks');
    const { Metrics } = await import('../../src/metrics/metrics');
    const { resolveConfig } = await import('../../src/config/config');
    const { writeFileSync } = await import('node:fs');
    const rx = await netbirdReceiver();
    const dir = tmpDir('agg-sinks');
    dirs.push(dir);
    const cfgFor = (profile: string, spool = profile): ReturnType<typeof resolveConfig> => {
      const p = join(dir, `${profile}.json`);
      writeFileSync(p, JSON.stringify({ interfaces: ['wt0'], collector: { url: `grpc://127.0.0.1:${rx.port}`, profile, aggregate_window_s: 5 }, spool: { dir: join(dir, spool) } }));
      return resolveConfig({ file: p });
    };
    const agg = buildSinks(cfgFor('netbird-aggregated'), new Metrics(), log);
    expect(agg.aggregator?.windowMs).toBe(5000);
    expect(agg.all).toContain(agg.aggregator);
    expect(agg.all).not.toContain(agg.exporter);
    const events = aggregateTraffic('sinks', 3).map((e) => ({ ...e, timestampMs: Date.now() }));
    await emitAll(agg.all, events);
    expect(existsSync(join(dir, 'netbird-aggregated', 'aggregate', 'window.journal'))).toBe(true);
    await closeSinks(agg, 10_000); // a stop closes the open window: its records are sent and acked
    const got = [...rx.byId.values()];
    expect(got.length).toBeGreaterThan(0);
    expect(got.every((e) => e.flow_fields!.type === 'TYPE_UNKNOWN')).toBe(true);
    expect(wireSums(got)).toEqual(plainTotals(events));
    const plain = buildSinks(cfgFor('events'), new Metrics(), log);
    expect(plain.aggregator).toBeUndefined();
    expect(plain.all).toContain(plain.exporter);
    await closeSinks(plain, 0);
  });

  it('back to the events profile after a kill mid-window: the window left in the journal is sent, then the journal removed', async () => {
    const { buildSinks, closeSinks, emitAll } = await import('../../src/daemon/sinks');
    const { Metrics } = await import('../../src/metrics/metrics');
    const { resolveConfig } = await import('../../src/config/config');
    const { writeFileSync } = await import('node:fs');
    const rx = await netbirdReceiver();
    const dir = tmpDir('agg-switch');
    dirs.push(dir);
    const cfgFor = (profile: string): ReturnType<typeof resolveConfig> => {
      const p = join(dir, `${profile}.json`);
      writeFileSync(p, JSON.stringify({ interfaces: ['wt0'], collector: { url: `grpc://127.0.0.1:${rx.port}`, profile, aggregate_window_s: 3600 }, spool: { dir: join(dir, 'spool') } }));
      return resolveConfig({ file: p });
    };
    const agg = buildSinks(cfgFor('netbird-aggregated'), new Metrics(), log);
    const events = aggregateTraffic('switch', 4).map((e) => ({ ...e, timestampMs: Date.now() }));
    await emitAll(agg.all, events);
    expect(agg.aggregator!.stats().openGroups).toBeGreaterThan(0);
    await agg.exporter!.stop({ deadlineMs: 0 }); // the aggregator is never closed: its window stays in the journal
    const plain = buildSinks(cfgFor('events'), new Metrics(), log);
    expect(existsSync(join(dir, 'spool', 'aggregate'))).toBe(false);
    await plain.exporter!.whenIdle();
    await closeSinks(plain, 5_000);
    const got = [...rx.byId.values()];
    expect(got.length).toBeGreaterThan(0);
    expect(wireSums(got)).toEqual(plainTotals(events));
  });
});

describe('the window journal', () => {
  it('stays bounded by the groups (compaction), and a restart from a compacted journal gives the same records', async () => {
    const { statSync } = await import('node:fs');
    // Many events in few groups: long flows with an UPDATE every 4 s, in one 10-minute window.
    const events = aggregateTraffic('compact', 300);
    const windowMs = 3_600_000;
    const expected = aggregateInMemory(events, windowMs);
    const dir = tmpDir('agg-compact');
    dirs.push(dir);
    const out: FlowEvent[] = [];
    const target = { enqueueBatch: (r: readonly FlowEvent[]): number => (out.push(...r), r.length) };
    let now = events[0].timestampMs;
    const a = new WindowAggregator({ dir, windowMs, target, logger: log, now: () => now, timer: false, compactBytes: 4096 });
    const cut = Math.floor(events.length / 2);
    let biggest = 0;
    for (const ev of events.slice(0, cut)) {
      now = ev.timestampMs;
      a.emit([ev]);
      biggest = Math.max(biggest, statSync(join(dir, 'window.journal')).size);
    }
    const groups = a.stats().openGroups;
    const lines = readFileSync(join(dir, 'window.journal'), 'utf8').trim().split('\n');
    expect(lines.some((l) => l.startsWith('{"s":'))).toBe(true); // compacted at least once
    // A few hundred bytes per group plus the threshold, whatever the number of events.
    expect(biggest).toBeLessThan(2 * (4096 + groups * 2048) + 4096);
    // "kill -9": a new aggregator on the same directory, a without close.
    const b = new WindowAggregator({ dir, windowMs, target, logger: log, now: () => now, timer: false, compactBytes: 4096 });
    expect(b.stats().openGroups).toBe(groups);
    for (const ev of events.slice(cut)) {
      now = ev.timestampMs;
      b.emit([ev]);
    }
    now += 2 * windowMs;
    b.tick();
    await b.close(0);
    const view = (rs: FlowEvent[]): string[] => rs.map((r) => JSON.stringify({ ...r, delta: undefined })).sort();
    expect(view(out)).toEqual(view(expected));
  });
});

describe('DROP events', () => {
  it('count in num_of_drops, and their own counters (what was dropped) in the group\'s counters', () => {
    const [start] = aggregateTraffic('drops', 1);
    const drop = (i: number): FlowEvent => ({ ...start, eventId: `00000000-0000-4000-8000-00000000000${i}`, type: 'DROP', timestampMs: start.timestampMs + i, rxPackets: 2, rxBytes: 120, txPackets: 0, txBytes: 0, delta: undefined });
    const recs = aggregateInMemory([drop(1), drop(2), drop(3)]);
    expect(recs).toHaveLength(1);
    expect(recs[0].aggregate).toEqual({ starts: 0, ends: 0, drops: 3 });
    expect([recs[0].rxPackets, recs[0].rxBytes]).toEqual([6, 360]);
  });
});
