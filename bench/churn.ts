// Flow churn: many short flows per second through a wireguard-go tunnel, the real daemon attached
// on the receiving peer writing JSON lines. Half the flows are UDP (one datagram and its echo, each
// from its own source port/destination port pair, ended by a 1 s idle timeout), half TCP
// connect/close. Every flow the generators confirm (echo received, connection closed cleanly) must
// appear in the daemon's output with exactly one START and one END; a step where any is missing
// or doubled is a lossy step. The offered rate steps up (short steps) until a step loses flows or
// the generators cannot reach it; the highest zero-loss rate is then held for the full duration.
//
//   node build/bench/churn.js [--step-seconds 8] [--seconds 30] [--rates 500,1000,2000,3000,4000,6000,8000,12000,16000]
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../src/util/addon';
import { daemonCounters, DaemonCounters, runBench, stopDaemonBench, writeResult } from '../testkit/bench-run';
import { DaemonProc } from '../testkit/daemon';
import { JsonlTail } from '../testkit/jsonl-tail';
import { run, sleep, spawnIn, waitForLine } from '../testkit/procs';
import { nsExec, Testbed, WgEndpoint } from '../testkit/testbed';

const { values: args } = parseArgs({
  options: { 'step-seconds': { type: 'string', default: '8' }, seconds: { type: 'string', default: '30' }, rates: { type: 'string', default: '500,1000,2000,3000,4000,6000,8000,12000,16000' } },
});
const STEP_SECONDS = Number(args['step-seconds']);
const HOLD_SECONDS = Number(args.seconds);
const RATES = args.rates!.split(',').map(Number);
const CHURN = join(REPO_ROOT, 'build', 'testkit', 'churn-traffic.js');
const UDP_TIMEOUT_S = 1;
// Each step (slot) gets its own port ranges, so a late event of one step cannot count for another.
const SLOTS = RATES.length + 1;
// Source ports 20000-29215 (below the kernel's ephemeral range) for UDP and TCP alike.
const SRC = (slot: number): number => 20000 + slot * 1024;
const SRC_COUNT = 1024;
const PORTS = 256; // destination ports per protocol and slot: 1024 x 256 distinct flows
const UDP_DST = (slot: number): number => 30000 + slot * PORTS;
const TCP_DST = (slot: number): number => 40000 + slot * PORTS;
const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

interface GenSummary { offered: number; started: number; confirmed: number; failed: number; seconds: number }
interface Step {
  phase: 'ramp' | 'hold';
  offered: number;
  seconds: number;
  generated: number;
  /** Flows confirmed per second over the step: the rate actually achieved. */
  achieved: number;
  udp: GenSummary;
  tcp: GenSummary;
  reportedStart: number;
  reportedEnd: number;
  missingStart: number;
  missingEnd: number;
  duplicated: number;
  /** Flows reported that the generators could not confirm (e.g. the echo was lost on the way back). */
  unconfirmedReported: number;
  waitSeconds: number;
  /** The events of a few flows that were lost or duplicated (none when the step is clean). */
  evidence: string[];
  kernel: { ringbufFull: number; mapFullPackets: number; discoveredWithoutStart: number; eventsDropped: number };
  zeroLoss: boolean;
}

/** START/END counts per flow key "PROTO SPORT DPORT", from the daemon's events. */
class Reported {
  readonly flows = new Map<string, { start: number; end: number }>();
  constructor(private readonly tail: JsonlTail) {}

  update(): void {
    for (const line of this.tail.read()) {
      const ev = JSON.parse(line) as { type: string; protocol: number; source: { address: string }; destination: { address: string } };
      if (ev.type !== 'TYPE_START' && ev.type !== 'TYPE_END') continue;
      const port = (a: string): string => a.slice(a.lastIndexOf(':') + 1);
      const key = `${ev.protocol} ${port(ev.source.address)} ${port(ev.destination.address)}`;
      let f = this.flows.get(key);
      if (!f) this.flows.set(key, (f = { start: 0, end: 0 }));
      if (ev.type === 'TYPE_START') f.start += 1;
      else f.end += 1;
    }
  }
}

const tb = new Testbed();
let daemon: DaemonProc | undefined;
const work = mkdtempSync(join(tmpdir(), 'wgflow-churn-'));

async function generate(a: WgEndpoint, b: WgEndpoint, slot: number, rate: number, seconds: number): Promise<{ udp: GenSummary; tcp: GenSummary; keys: string[] }> {
  const dports = Math.ceil(((rate / 2) * seconds) / SRC_COUNT);
  if (dports > PORTS) throw new Error(`${rate} flows/s for ${seconds} s is more than the ${SRC_COUNT * PORTS} port pairs a step has`);
  const opts = (mode: string, dst: number): object => ({
    mode, host: b.ip4, ports: range(dst, dports), srcBase: SRC(slot), srcCount: SRC_COUNT, rate: rate / 2, seconds, out: join(work, `${mode}-${slot}.txt`),
  });
  const udpOpts = opts('udp', UDP_DST(slot)), tcpOpts = opts('tcp', TCP_DST(slot));
  const [udpOut, tcpOut] = await Promise.all([
    run(a.ns, process.execPath, [CHURN, JSON.stringify(udpOpts)], (seconds + 30) * 1000),
    run(a.ns, process.execPath, [CHURN, JSON.stringify(tcpOpts)], (seconds + 30) * 1000),
  ]);
  const keys = ['udp', 'tcp'].flatMap((m) => readFileSync(join(work, `${m}-${slot}.txt`), 'utf8').split('\n').filter(Boolean));
  return { udp: JSON.parse(udpOut) as GenSummary, tcp: JSON.parse(tcpOut) as GenSummary, keys };
}

/** Wait until every generated flow has its START and END, or nothing has come for a while. */
async function awaitEvents(reported: Reported, keys: string[]): Promise<number> {
  const t0 = Date.now();
  // UDP ends UDP_TIMEOUT_S after its packet, seen at the next drain (1 s); TCP 500 ms after the FINs.
  const minWait = (UDP_TIMEOUT_S + 3) * 1000;
  let lastSize = -1, lastChange = Date.now();
  for (;;) {
    reported.update();
    const missing = keys.filter((k) => (reported.flows.get(k)?.end ?? 0) === 0).length;
    if (missing === 0) return (Date.now() - t0) / 1000;
    if (reported.flows.size !== lastSize) {
      lastSize = reported.flows.size;
      lastChange = Date.now();
    }
    if ((Date.now() - t0 > minWait && Date.now() - lastChange > 5000) || Date.now() - t0 > 30_000) return (Date.now() - t0) / 1000;
    await sleep(250);
  }
}

/** The events of the given flow keys, one summary line each, for the report of a lossy step. */
function eventsOf(dir: string, keys: Set<string>): string[] {
  const out: string[] = [];
  // Rotated files (events-<seq>-<time>.jsonl) sort before events.jsonl, oldest first.
  const files = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort((x, y) => (x === 'events.jsonl' ? 1 : y === 'events.jsonl' ? -1 : x.localeCompare(y)));
  for (const line of files.flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n'))) {
    if (!line) continue;
    const ev = JSON.parse(line) as {
      type: string; flow_id: string; protocol: number; timestamp: string; wgflow_end_reason?: string; rx_packets: number; tx_packets: number;
      wgflow_tcp_flags_initiator: number; wgflow_tcp_flags_responder: number; source: { address: string }; destination: { address: string };
    };
    const port = (a: string): string => a.slice(a.lastIndexOf(':') + 1);
    const key = `${ev.protocol} ${port(ev.source.address)} ${port(ev.destination.address)}`;
    if (!keys.has(key)) continue;
    out.push(`${key}: ${ev.type} ${ev.timestamp} flow ${ev.flow_id.slice(0, 8)} ${ev.wgflow_end_reason ?? ''} rx ${ev.rx_packets} tx ${ev.tx_packets} ` +
      `flags ${ev.wgflow_tcp_flags_initiator.toString(16)}/${ev.wgflow_tcp_flags_responder.toString(16)}`);
  }
  for (const k of keys) if (!out.some((l) => l.startsWith(`${k}:`))) out.push(`${k}: no event at all`);
  return out;
}

function diff(after: DaemonCounters, before: DaemonCounters): Step['kernel'] {
  return {
    ringbufFull: after.ringbufFull - before.ringbufFull,
    mapFullPackets: after.mapFullPackets - before.mapFullPackets,
    discoveredWithoutStart: after.discoveredWithoutStart - before.discoveredWithoutStart,
    eventsDropped: after.eventsDropped - before.eventsDropped,
  };
}

async function runStep(a: WgEndpoint, b: WgEndpoint, reported: Reported, slot: number, phase: Step['phase'], rate: number, seconds: number): Promise<Step> {
  const d = daemon!;
  const before = await daemonCounters(d);
  const gen = await generate(a, b, slot, rate, seconds);
  const waitSeconds = await awaitEvents(reported, gen.keys);
  const after = await daemonCounters(d);
  const generated = new Set(gen.keys);
  // Each flow has its own 4-tuple, so a key seen twice in the daemon's output is a duplicate.
  if (generated.size !== gen.keys.length) throw new Error(`the generators reused ${gen.keys.length - generated.size} port pairs`);
  let reportedStart = 0, reportedEnd = 0, missingStart = 0, missingEnd = 0, duplicated = 0;
  for (const k of gen.keys) {
    const f = reported.flows.get(k) ?? { start: 0, end: 0 };
    reportedStart += Math.min(f.start, 1);
    reportedEnd += Math.min(f.end, 1);
    if (f.start === 0) missingStart += 1;
    if (f.end === 0) missingEnd += 1;
    if (f.start > 1 || f.end > 1) duplicated += 1;
  }
  // Flows of this slot's ports that the daemon saw but the generators did not confirm.
  const inSlot = (k: string): boolean => {
    const [proto, sport, dport] = k.split(' ').map(Number);
    const dst = proto === 17 ? UDP_DST(slot) : TCP_DST(slot);
    return sport >= SRC(slot) && sport < SRC(slot) + SRC_COUNT && dport >= dst && dport < dst + PORTS;
  };
  const unconfirmedReported = [...reported.flows.keys()].filter((k) => inSlot(k) && !generated.has(k)).length;
  const kernel = diff(after, before);
  const bad = gen.keys.filter((k) => { const f = reported.flows.get(k); return !f || f.start !== 1 || f.end !== 1; });
  const evidence = bad.length ? eventsOf(d.outDir, new Set(bad.slice(0, 5))) : [];
  for (const e of evidence) console.log(`  lost or duplicated flow: ${e}`);
  const step: Step = {
    phase, offered: rate, seconds, generated: gen.keys.length, achieved: gen.keys.length / Math.max(gen.udp.seconds, gen.tcp.seconds),
    udp: gen.udp, tcp: gen.tcp, reportedStart, reportedEnd, missingStart, missingEnd, duplicated, unconfirmedReported, waitSeconds, kernel, evidence,
    zeroLoss: missingStart === 0 && missingEnd === 0 && duplicated === 0 && kernel.eventsDropped === 0,
  };
  console.log(`${phase} ${rate}/s x ${seconds} s: generated ${step.generated} (${step.achieved.toFixed(0)}/s; udp ${gen.udp.confirmed}/${gen.udp.started}, tcp ${gen.tcp.confirmed}/${gen.tcp.started}), ` +
    `START ${reportedStart}, END ${reportedEnd}, missing ${missingStart}/${missingEnd}, duplicated ${duplicated}, unconfirmed reported ${unconfirmedReported}, ` +
    `ring full ${kernel.ringbufFull}, map full ${kernel.mapFullPackets}, found by drain ${kernel.discoveredWithoutStart} (waited ${waitSeconds.toFixed(1)} s)`);
  return step;
}

/** The generators reached the offered rate (within 10%): otherwise more cannot be offered. */
const reached = (s: Step): boolean => s.achieved >= 0.9 * s.offered;

async function main(): Promise<boolean> {
  const t0 = Date.now();
  const { a, b } = tb.wgPair();
  // Deep accept queues: a burst of connects must not be dropped (and retried) by the server.
  nsExec(b.ns, 'sysctl', ['-qw', 'net.core.somaxconn=4096', 'net.ipv4.tcp_max_syn_backlog=8192']);
  const srv = spawnIn(b.ns, process.execPath, [CHURN, JSON.stringify({
    mode: 'server', udp: range(0, SLOTS).flatMap((s) => range(UDP_DST(s), PORTS)), tcp: range(0, SLOTS).flatMap((s) => range(TCP_DST(s), PORTS)),
  })]);
  await waitForLine(srv, /ready/);
  daemon = await DaemonProc.start(b.ns, {
    interfaces: [b.ifname],
    log_level: 'warn',
    // A short UDP idle timeout so UDP flows end within the step; TCP ends by FIN as usual.
    lifecycle: { udp_timeout_s: UDP_TIMEOUT_S, interim_interval_s: 0 },
    datapath: { max_flows: 65_536, max_flows_v6: 4096 },
  });
  await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]);
  const reported = new Reported(new JsonlTail(daemon.eventsFile));

  const steps: Step[] = [];
  let slot = 0;
  for (const rate of RATES) {
    const s = await runStep(a, b, reported, slot++, 'ramp', rate, STEP_SECONDS);
    steps.push(s);
    if (!s.zeroLoss || !reached(s)) break;
  }
  const clean = steps.filter((s) => s.zeroLoss && reached(s));
  const holdRate = clean.length ? clean[clean.length - 1].offered : undefined;
  if (holdRate !== undefined) steps.push(await runStep(a, b, reported, slot++, 'hold', holdRate, HOLD_SECONDS));
  const hold = steps.find((s) => s.phase === 'hold');
  const final = await daemonCounters(daemon);

  const seconds = (Date.now() - t0) / 1000;
  console.log(`\nchurn: short flows (half UDP, one datagram + echo each, 1 s idle timeout; half TCP connect/close) through wireguard-go, ` +
    `wgflow run on the receiving peer writing JSON lines; ramp steps of ${STEP_SECONDS} s, then ${HOLD_SECONDS} s at the highest zero-loss rate (part took ${seconds.toFixed(0)} s)`);
  console.log('| phase | offered flows/s | achieved flows/s | flows generated | START | END | missing START / END | duplicated | ring full | map full (packets) | found by drain | zero loss |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const s of steps) {
    const note = s.zeroLoss ? (reached(s) ? 'yes' : 'yes (generator below offered rate)') : '**NO: flows lost**';
    console.log(`| ${s.phase} ${s.seconds} s | ${s.offered} | ${s.achieved.toFixed(0)} | ${s.generated} | ${s.reportedStart} | ${s.reportedEnd} | ${s.missingStart} / ${s.missingEnd} | ${s.duplicated} | ${s.kernel.ringbufFull} | ${s.kernel.mapFullPackets} | ${s.kernel.discoveredWithoutStart} | ${note} |`);
  }
  const sustained = hold?.zeroLoss ? hold.achieved : undefined;
  console.log(`highest sustained zero-loss rate (${HOLD_SECONDS} s): ${sustained === undefined ? 'none' : `${sustained.toFixed(0)} flows/s (offered ${hold!.offered})`}`);
  console.log(`daemon totals: events ${JSON.stringify(final.events)}, kernel flows created ${final.flowsCreated}, ring full ${final.ringbufFull}, map full ${final.mapFullPackets}, ` +
    `found by drain ${final.discoveredWithoutStart}, events dropped ${final.eventsDropped}`);
  writeResult('churn', { stepSeconds: STEP_SECONDS, holdSeconds: HOLD_SECONDS, udpTimeoutS: UDP_TIMEOUT_S, seconds, sustainedFlowsPerSecond: sustained ?? null, steps, daemon: final });
  // Every step's correctness is in the table; the part fails only if even the lowest rate lost flows.
  return steps.length > 0 && steps[0].zeroLoss && (hold?.zeroLoss ?? false);
}

runBench(main, () => stopDaemonBench(daemon, tb, work));
