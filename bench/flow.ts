// Flow engine throughput: ring records and drained entries per second through decode + tracker +
// attribution, with 10,000 resource prefixes, 1,000 peers and 1,000 policies, next to a baseline
// measured in the same run that only decodes the same buffers (decodeRecords / FlowMapRead slices).
// Drains run as the pipeline runs them: DRAIN_SLICE entries at a time, the tracker reading the
// key and value bytes in place (drainRead); the baseline decodes the same slices into objects.
// Rounds alternate between baseline and measured; the table shows medians and ratios.
//
// Workloads:
//   tcp lifecycle  START + FIN + FIN per connection, then the due deletes and ENDs
//                  (3 records per flow; 75% INGRESS, so policies are matched)
//   new UDP flows  one START record per flow (ids, attribution and an event for every record)
//   drain          100,000 known flows re-read (counter widening, idle and UPDATE checks)
//
//   node build/bench/flow.js [--rounds 5] [--flows 100000] [--only tcp,udp,drain,steady]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Attributor } from '../src/attribution/attributor';
import type { AttributionConfig, PolicyConfig, ResourceConfig, PeerConfig } from '../src/attribution/config';
import { REPO_ROOT } from '../src/util/addon';
import {
  decodeFlows, decodeRecords, FLAG_INIT_B, FLAG_INIT_EGRESS, FLOW_SIZE, FlowMapRead, KEY4_SIZE, lastSeenStamp, RECORD_SIZE, RecordType,
} from '../src/datapath/records';
import { ManualClock } from '../src/model/clock';
import { DRAIN_SLICE } from '../src/flow/pipeline';
import { FlowTracker } from '../src/flow/tracker';
import { median } from '../testkit/bench-run';

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, flows: { type: 'string', default: '100000' }, only: { type: 'string', default: 'tcp,udp,drain,steady' } } });
const ONLY = new Set(args.only.split(','));
const ROUNDS = Number(args.rounds);
const FLOWS = Number(args.flows);
const BATCH = 4096; // records per poll batch, as the datapath delivers them

let seed = 7;
const rnd = (): number => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return ((seed >>> 8) ^ (seed << 13)) >>> 0;
};

// ---------------------------------------------------------------- tables
const PEERS = 1000, RESOURCES = 10_000, POLICIES = 1000;
const peerIp = (i: number): number => ((100 << 24) | (64 << 16) | ((i >> 8) << 8) | (i & 255)) + 1;
const ip4 = (a: number): string => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
const peers: PeerConfig[] = [];
for (let i = 0; i < PEERS; i++) {
  peers.push({ id: `peer-${i}`, name: `host-${i}`, ip: ip4(peerIp(i)), os: 'linux', dnsLabel: `host-${i}.wg`, publicKey: `key${i}`, groups: [`g${i % 50}`, 'all'], user: { id: `u${i % 200}`, name: `User ${i % 200}`, email: `u${i % 200}@example.com` } });
}
// 10,000 resource prefixes: /24 subnets in 10/8, /32 hosts inside them, some /16 and /20 covering them.
const resources: ResourceConfig[] = [];
for (let i = 0; i < RESOURCES; i++) {
  const net = (10 << 24) | ((i % 8000) << 8);
  if (i < 8000) resources.push({ id: `r${i}`, name: `subnet-${i}`, type: 'SUBNET', prefixes: [`${ip4(net)}/24`], groups: [`rg${i % 100}`] });
  else if (i < 9800) resources.push({ id: `r${i}`, name: `host-${i}`, type: 'HOST', prefixes: [`${ip4(net | 10)}/32`], groups: [`rg${i % 100}`] });
  else resources.push({ id: `r${i}`, name: `wide-${i}`, type: 'SUBNET', prefixes: [`${ip4((10 << 24) | ((i - 9800) << 12))}/20`] });
}
const policies: PolicyConfig[] = [];
for (let i = 0; i < POLICIES - 1; i++) {
  const kind = i % 4;
  policies.push({
    id: `pol-${i}`, name: `policy ${i}`, action: i % 10 === 0 ? 'drop' : 'accept', enabled: i % 17 !== 0,
    protocol: kind === 3 ? 'udp' : 'tcp',
    ports: kind === 0 ? [22, 443] : kind === 1 ? ['8000-8100'] : [],
    sources: [{ group: `g${i % 50}` }],
    destinations: kind === 2 ? [{ prefix: `10.${i % 32}.0.0/16` }] : [{ group: `rg${i % 100}` }],
  });
}
policies.push({ id: 'default', name: 'Default', action: 'accept', sources: [{ group: 'all' }], destinations: [{ prefix: '0.0.0.0/0' }] });
const tables: AttributionConfig = { overlay: ['100.64.0.0/10'], peers, resources, policies };

// ---------------------------------------------------------------- synthetic kernel output
interface Conn { a: number; b: number; pa: number; pb: number; proto: number; initB: boolean; egress: boolean; first?: number }

function makeConns(n: number, proto: number): Conn[] {
  const out: Conn[] = [];
  const ports = [22, 443, 8080, 5432, 3000];
  for (let i = 0; i < n; i++) {
    const peer = peerIp(rnd() % PEERS);
    const dst = rnd() % 4 === 0 ? peerIp(rnd() % PEERS) : ((10 << 24) | ((rnd() % 8000) << 8) | (rnd() & 255)) >>> 0;
    const sport = 1024 + (i % 60000), dport = ports[rnd() % ports.length];
    const egress = rnd() % 4 === 0;
    const peerIsA = peer < dst || (peer === dst && sport < dport);
    out.push(peerIsA
      ? { a: peer, b: dst, pa: sport, pb: dport, proto, initB: false, egress }
      : { a: dst, b: peer, pa: dport, pb: sport, proto, initB: true, egress });
  }
  return out;
}

function writeKey(v: DataView, o: number, c: Conn, salt: number): void {
  v.setUint32(o, c.a);
  v.setUint32(o + 4, c.b);
  v.setUint16(o + 8, c.pa);
  v.setUint16(o + 10, c.pb ^ salt); // salt: distinct keys per round
  v.setUint8(o + 12, c.proto);
  v.setUint8(o + 13, 0);
  v.setUint16(o + 14, 3, true);
}

/** Ring batches: per connection a START, and for TCP a FIN from each side 1 ms later. */
function ringBatches(conns: Conn[], t0: number, salt: number): ArrayBuffer[] {
  const perConn = conns[0].proto === 6 ? 3 : 1;
  const total = conns.length * perConn;
  const out: ArrayBuffer[] = [];
  for (let start = 0; start < total; start += BATCH) {
    const n = Math.min(BATCH, total - start);
    const buf = new ArrayBuffer(n * RECORD_SIZE);
    const v = new DataView(buf);
    for (let j = 0; j < n; j++) {
      const r = start + j;
      const c = conns[Math.floor(r / perConn)];
      const which = r % perConn; // 0 START, 1 FIN from initiator, 2 FIN from responder
      const o = j * RECORD_SIZE;
      const initDir = c.egress ? 1 : 0;
      const dir = which === 2 ? 1 - initDir : initDir;
      const flags = (c.initB ? FLAG_INIT_B : 0) | (c.egress ? FLAG_INIT_EGRESS : 0);
      const tcp = c.proto !== 6 ? 0 : which === 0 ? 0x02 : 0x11;
      v.setUint8(o, which === 0 ? RecordType.Start : RecordType.Fin);
      v.setUint8(o + 1, 4);
      v.setUint8(o + 2, dir);
      v.setUint8(o + 3, tcp);
      v.setUint32(o + 4, flags | (tcp << (8 * dir)), true);
      const ts = t0 + Math.floor(r / perConn) * 1000 + which * 1_000_000;
      v.setUint32(o + 8, ts % 0x1_0000_0000, true);
      v.setUint32(o + 12, Math.floor(ts / 0x1_0000_0000), true);
      writeKey(v, o + 16, c, salt);
    }
    out.push(buf);
  }
  return out;
}

/** A batched map read of these connections (keys + values buffers). */
function drainBuffers(conns: readonly Conn[], t0: number, now: number, salt: number): { keys: ArrayBuffer; values: ArrayBuffer } {
  const keys = new ArrayBuffer(conns.length * KEY4_SIZE);
  const values = new ArrayBuffer(conns.length * FLOW_SIZE);
  const kv = new DataView(keys), vv = new DataView(values);
  const seen = lastSeenStamp(now);
  conns.forEach((c, i) => {
    writeKey(kv, i * KEY4_SIZE, c, salt);
    const o = i * FLOW_SIZE;
    const first = c.first ?? t0 + i * 1000;
    vv.setUint32(o, first % 0x1_0000_0000, true);
    vv.setUint32(o + 4, Math.floor(first / 0x1_0000_0000), true);
    vv.setUint32(o + 8, 1000 + i, true); // rx bytes
    vv.setUint32(o + 16, 2000 + i, true); // tx bytes
    vv.setUint32(o + 24, 10, true);
    vv.setUint32(o + 28, 20, true);
    vv.setUint32(o + 32, seen, true);
    vv.setUint32(o + 36, (c.initB ? FLAG_INIT_B : 0) | (c.egress ? FLAG_INIT_EGRESS : 0) | 0x1212, true);
  });
  return { keys, values };
}

/** One second of churn: a START for each opening connection, a FIN each way for each closing one. */
function churnBatches(opening: readonly Conn[], closing: readonly Conn[], finNs: number, salt: number): ArrayBuffer[] {
  const recs: [Conn, number][] = []; // [conn, 0 START | 1 FIN initiator | 2 FIN responder]
  for (const c of opening) recs.push([c, 0]);
  for (const c of closing) recs.push([c, 1], [c, 2]);
  const out: ArrayBuffer[] = [];
  for (let start = 0; start < recs.length; start += BATCH) {
    const n = Math.min(BATCH, recs.length - start);
    const buf = new ArrayBuffer(n * RECORD_SIZE);
    const v = new DataView(buf);
    for (let j = 0; j < n; j++) {
      const [c, which] = recs[start + j];
      const o = j * RECORD_SIZE;
      const initDir = c.egress ? 1 : 0;
      const dir = which === 2 ? 1 - initDir : initDir;
      const tcp = which === 0 ? 0x02 : 0x11;
      const ts = which === 0 ? c.first! : finNs;
      v.setUint8(o, which === 0 ? RecordType.Start : RecordType.Fin);
      v.setUint8(o + 1, 4);
      v.setUint8(o + 2, dir);
      v.setUint8(o + 3, tcp);
      v.setUint32(o + 4, (c.initB ? FLAG_INIT_B : 0) | (c.egress ? FLAG_INIT_EGRESS : 0) | (tcp << (8 * dir)), true);
      v.setUint32(o + 8, ts % 0x1_0000_0000, true);
      v.setUint32(o + 12, Math.floor(ts / 0x1_0000_0000), true);
      writeKey(v, o + 16, c, salt);
    }
    out.push(buf);
  }
  return out;
}

// ---------------------------------------------------------------- runs
const attributor = new Attributor(tables);
const newTracker = (clock: ManualClock): FlowTracker =>
  new FlowTracker({ clock, bootId: '3d7c1f0a-5b2e-4c8d-9a61-7f0e2b4c6d81', attributor, interfaceName: () => 'wg0', reporterId: 'bench', updateIntervalMs: 60_000 });

const tcpConns = makeConns(FLOWS, 6);
const udpConns = makeConns(FLOWS, 17);
let salt = 0;
let events = 0;

/** A drain as the pipeline runs it: decoded and tracked a slice of DRAIN_SLICE entries at a time. */
function drainSliced(tracker: FlowTracker, keys: ArrayBuffer, values: ArrayBuffer, n: number): number {
  const read = new FlowMapRead();
  read.add(4, keys, values, n);
  tracker.beginDrain();
  let out = 0;
  for (let i = 0; i < n; i += DRAIN_SLICE) out += tracker.drainRead(read, i, i + DRAIN_SLICE).length;
  return out + tracker.endDrain().length;
}

/** The baseline of drainSliced: the same slices decoded, nothing tracked. */
function decodeSliced(keys: ArrayBuffer, values: ArrayBuffer, n: number): number {
  const read = new FlowMapRead();
  read.add(4, keys, values, n);
  let out = 0;
  for (let i = 0; i < n; i += DRAIN_SLICE) out += read.slice(i, i + DRAIN_SLICE).length;
  return out;
}

function timeIt(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** Ring workload: returns [baseline records/s, measured records/s]. */
function ringRound(conns: Conn[]): [number, number] {
  const clock = new ManualClock();
  const batches = ringBatches(conns, clock.nowNs, ++salt);
  const records = batches.reduce((n, b) => n + b.byteLength / RECORD_SIZE, 0);
  let check = 0;
  const base = timeIt(() => {
    for (const b of batches) check += decodeRecords(b).length;
  });
  const tracker = newTracker(clock);
  const measured = timeIt(() => {
    for (const b of batches) {
      events += tracker.onRingBatch(b).length; // as the pipeline: records read in place
      clock.advanceMs(600);
      const keys = tracker.dueDeletes();
      if (keys.length > 0) events += tracker.onDeleted(keys, []).length;
    }
  });
  if (check !== records) throw new Error('decode mismatch');
  return [records / base, records / measured];
}

function drainRound(): [number, number, number] {
  const conns = tcpConns;
  const clock = new ManualClock();
  const t0 = clock.nowNs;
  const tracker = newTracker(clock);
  const s = ++salt;
  clock.advanceMs(1000);
  // The tracker learns the flows from a first drain (not timed), then re-reads them.
  const first = drainBuffers(conns, t0, clock.nowNs, s);
  tracker.onDrain(decodeFlows(4, first.keys, first.values, conns.length));
  clock.advanceMs(1000);
  const again = drainBuffers(conns, t0, clock.nowNs, s);
  let check = 0;
  const base = timeIt(() => {
    check += decodeSliced(again.keys, again.values, conns.length);
  });
  const measured = timeIt(() => {
    events += drainSliced(tracker, again.keys, again.values, conns.length);
  });
  if (tracker.activeFlows !== conns.length) throw new Error(`drain lost flows: ${tracker.activeFlows}`);
  return [conns.length / base, conns.length / measured, check];
}

/**
 * Steady state: FLOWS active TCP flows; every second 10% of them close (FIN both ways, END) and as
 * many new ones open (START), then the drain re-reads all of them. Records = ring records + drained entries.
 */
const churnConns = makeConns(FLOWS * 2, 6);
function steadyRound(): [number, number] {
  const clock = new ManualClock();
  const t0 = clock.nowNs;
  churnConns.forEach((c, i) => (c.first = t0 + i * 1000));
  const tracker = newTracker(clock);
  const s = ++salt;
  const churn = Math.floor(FLOWS / 10);
  clock.advanceMs(1000);
  const init = drainBuffers(churnConns.slice(0, FLOWS), t0, clock.nowNs, s);
  tracker.onDrain(decodeFlows(4, init.keys, init.values, FLOWS)); // establish (not timed)
  let records = 0, base = 0, measured = 0;
  for (let j = 0; j < 5; j++) {
    const opening = churnConns.slice(FLOWS + j * churn, FLOWS + (j + 1) * churn);
    const closing = churnConns.slice(j * churn, (j + 1) * churn);
    clock.advanceMs(1000);
    const ring = churnBatches(opening, closing, clock.nowNs - 600e6, s);
    const active = churnConns.slice(j * churn, FLOWS + (j + 1) * churn);
    const drain = drainBuffers(active, t0, clock.nowNs, s);
    records += opening.length + 2 * closing.length + active.length;
    base += timeIt(() => {
      for (const b of ring) decodeRecords(b);
      decodeSliced(drain.keys, drain.values, active.length);
    });
    measured += timeIt(() => {
      for (const b of ring) events += tracker.onRingBatch(b).length;
      events += drainSliced(tracker, drain.keys, drain.values, active.length);
      const keys = tracker.dueDeletes();
      events += tracker.onDeleted(keys, []).length;
    });
  }
  if (tracker.activeFlows !== FLOWS) throw new Error(`steady state drifted: ${tracker.activeFlows} flows`);
  return [records / base, records / measured];
}

// Warm-up (JIT) with a smaller set, then alternating rounds.
ringRound(tcpConns.slice(0, 20_000));
ringRound(udpConns.slice(0, 20_000));
drainRound();
steadyRound();
const samples = {
  tcpBase: [] as number[], tcp: [] as number[], udpBase: [] as number[], udp: [] as number[], drainBase: [] as number[], drain: [] as number[],
  steadyBase: [] as number[], steady: [] as number[],
};
for (let r = 0; r < ROUNDS; r++) {
  if (ONLY.has('steady')) {
    const [sb, st] = steadyRound();
    samples.steadyBase.push(sb); samples.steady.push(st);
  }
  if (ONLY.has('tcp')) {
    const [tb, t] = ringRound(tcpConns);
    samples.tcpBase.push(tb); samples.tcp.push(t);
  }
  if (ONLY.has('udp')) {
    const [ub, u] = ringRound(udpConns);
    samples.udpBase.push(ub); samples.udp.push(u);
  }
  if (ONLY.has('drain')) {
    const [db, d] = drainRound();
    samples.drainBase.push(db); samples.drain.push(d);
  }
}
const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)])) as Record<keyof typeof samples, number>;
const fmt = (x: number): string => Math.round(x).toLocaleString('en');
console.log(`flow: ${ROUNDS} alternating rounds, medians; ${FLOWS} flows per workload; ${RESOURCES} resource prefixes, ${PEERS} peers, ${POLICIES} policies; ${BATCH}-record batches`);
console.log('| workload | decode only (baseline)/s | decode + tracker + attribution/s | x baseline |');
console.log('|---|---:|---:|---:|');
console.log(`| tcp lifecycle (START+FIN+FIN, END), records | ${fmt(m.tcpBase)} | ${fmt(m.tcp)} | ${(m.tcp / m.tcpBase).toFixed(2)} |`);
console.log(`| new UDP flows (START only), records | ${fmt(m.udpBase)} | ${fmt(m.udp)} | ${(m.udp / m.udpBase).toFixed(2)} |`);
console.log(`| drain of ${FLOWS} known flows, entries | ${fmt(m.drainBase)} | ${fmt(m.drain)} | ${(m.drain / m.drainBase).toFixed(2)} |`);
console.log(`| steady state: ${FLOWS} flows, 10%/s churn (drain + START + FIN x2 + END), records | ${fmt(m.steadyBase)} | ${fmt(m.steady)} | ${(m.steady / m.steadyBase).toFixed(2)} |`);
const met = { steadyState: m.steady >= 1e6, drain: m.drain >= 1e6, tcpLifecycle: m.tcp >= 1e6, newFlowsOnly: m.udp >= 1e6 };
const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED');
console.log(`target >= 1,000,000 records/s through tracker+attribution: steady state ${fmt(m.steady)} ${verdict(met.steadyState)}; ` +
  `drain ${fmt(m.drain)} ${verdict(met.drain)}; ring-only tcp lifecycle ${fmt(m.tcp)} ${verdict(met.tcpLifecycle)}; new flows only ${fmt(m.udp)} ${verdict(met.newFlowsOnly)}`);
console.log(`(${events} events produced)`);
if (ONLY.size === 4) { // a partial run (--only) does not replace the recorded figures
  mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(REPO_ROOT, 'bench', 'results', 'flow.json'), JSON.stringify({ when: new Date().toISOString(), rounds: ROUNDS, flows: FLOWS, medians: m, samples, target: { recordsPerSec: 1e6, met } }, null, 2));
}
