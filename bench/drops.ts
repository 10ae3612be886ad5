// DROP events: what the drop probe (bpf/wgflow_drops.bpf.c, tp_btf/kfree_skb) costs. It runs for
// every drop of the machine, so three measurements, each alternating detached and attached runs:
//
//   1. foreign drops: a UDP flood over a veth pair between two namespaces, dropped by nftables in
//      the receiving one. Detached vs attached watching another interface (and vs watching the
//      flood's ifindex number in another namespace: the netns test then decides), and vs an empty
//      kfree_skb program (bench/bpf/drop_empty.bpf.c: the tracepoint's own cost). The sender's
//      packets/s and CPU ns per packet (its softirq does the veth receive and the drop).
//   2. WireGuard drops: a UDP flood through wireguard-go into the routed testbed's router, dropped
//      by nftables in its forward chain; the probe watches the router's WireGuard interface. Paced
//      below wireguard-go's capacity (--wg-rate): at full speed the sender's own tun queue drops
//      too, and those runs would mix into the ns per run. The router's wireguard-go CPU ns per
//      drop (the forward and the drop run in its write to the tun device).
//   3. tunnel throughput: iperf3 TCP through the same tunnel, probe attached and watching it (no
//      drops made), against detached.
//
// Rounds run with kernel.bpf_stats_enabled=0 (its clock reads would cost more than the program);
// one more round per measurement with it on gives the program's ns per run (run_time_ns / run_cnt).
//
//   node build/bench/drops.js [--rounds 7] [--seconds 3] [--wg-rate 15000] [--tunnel-seconds 5]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DropProbe } from '../src/datapath/drops';
import { REPO_ROOT } from '../src/util/addon';
import { median, runBench, writeResult } from '../testkit/bench-run';
import { killBackground, run, spawnIn, waitForLine } from '../testkit/procs';
import { nsExec, Testbed } from '../testkit/testbed';

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '7' },
    seconds: { type: 'string', default: '3' },
    'wg-rate': { type: 'string', default: '15000' },
    'tunnel-seconds': { type: 'string', default: '5' },
  },
});
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.seconds);
const TUNNEL_SECONDS = Number(args['tunnel-seconds']);
const WG_RATE = Number(args['wg-rate']);
const DROP_PORT = 9;
const TARGET = 0.98;

const tb = new Testbed();
const work = mkdtempSync(join(tmpdir(), 'wgflow-dropbench-'));
const probes: DropProbe[] = [];
let statsBefore: string | undefined;

function setStats(on: boolean): void {
  execFileSync('sysctl', ['-qw', `kernel.bpf_stats_enabled=${on ? 1 : 0}`]);
}

interface ProgInfo { id: number; name?: string; run_time_ns?: number; run_cnt?: number }

function progs(): ProgInfo[] {
  return JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' })) as ProgInfo[];
}

/** Run time and runs of one program (by id: other sessions may have their own drop probes loaded). */
function progRun(id: number): { ns: number; runs: number } {
  const p = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show', 'id', String(id)], { encoding: 'utf8' })) as ProgInfo;
  return { ns: p.run_time_ns ?? 0, runs: p.run_cnt ?? 0 };
}

function ifindex(ns: string, ifname: string): number {
  return (JSON.parse(nsExec(ns, 'ip', ['-j', 'link', 'show', 'dev', ifname])) as Array<{ ifindex: number }>)[0].ifindex;
}

/** The inode of a namespace's net ns, as the probe compares it (net->ns.inum). */
function netnsInode(ns: string): number {
  const m = /net:\[(\d+)\]/.exec(nsExec(ns, 'readlink', ['/proc/self/ns/net']));
  if (!m) throw new Error(`no net namespace inode for ${ns}`);
  return Number(m[1]);
}

/** Packets of the nftables rule with this comment (table inet wgfbench). */
function nftPackets(ns: string, comment: string): number {
  const out = JSON.parse(nsExec(ns, 'nft', ['-j', 'list', 'table', 'inet', 'wgfbench'])) as { nftables: Array<{ rule?: { comment?: string; expr: Array<{ counter?: { packets: number } }> } }> };
  for (const o of out.nftables) {
    const c = o.rule?.comment === comment ? o.rule.expr.find((e) => e.counter)?.counter : undefined;
    if (c) return c.packets;
  }
  throw new Error(`no nftables rule "${comment}" in ${ns}`);
}

/**
 * CPU time (ns) of a process's threads, from their schedstat: ns resolution, where /proc/PID/stat's
 * 10 ms ticks would be 250 ns per drop over a run of 40,000 drops.
 */
function cpuNs(pid: number): number {
  let ns = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      /* the thread ended meanwhile */
    }
  }
  return ns;
}

interface Flood { sent: number; seconds: number; errors: number; cpu_ns: number }

async function flood(bin: string, ns: string, dst: string, rate: number, seconds: number): Promise<Flood> {
  const out = await run(ns, bin, [dst, String(DROP_PORT), '40000', '1', '64', String(rate), String(seconds)], (seconds + 20) * 1000);
  return JSON.parse(out) as Flood;
}

/** A mode: nothing attached, or this probe attached watching these ifindexes of that namespace. */
interface Mode { probe: DropProbe; progId: number; watch: { ifindexes: number[]; netns: number } }

function setMode(m: Mode | null): void {
  for (const p of probes) if (p !== m?.probe) p.detach();
  if (!m) return;
  m.probe.watch(m.watch.ifindexes, m.watch.netns);
  m.probe.attach();
}

/** Load a drop probe object and find its program's id (the wgflow_drop program that appears). */
function load(objectPath?: string): { probe: DropProbe; progId: number } {
  const before = new Set(progs().filter((p) => p.name === 'wgflow_drop').map((p) => p.id));
  const probe = DropProbe.open({ objectPath });
  probes.push(probe);
  // Other sessions may have drop probes of their own loaded: only the new id is ours.
  const mine = progs().filter((p) => p.name === 'wgflow_drop' && !before.has(p.id));
  if (mine.length !== 1) throw new Error(`expected one new wgflow_drop program, found ${mine.length}`);
  return { probe, progId: mine[0].id };
}

interface Sample { round: number; mode: string; accounting: boolean; rate: number; cpuNsPerPacket: number; nsPerRun: number; runs: number; matched: number; extra?: Record<string, number> }

/** Medians of the stats-off rounds per mode, ratios per round against that round's detached run. */
function summarize(samples: Sample[], modes: string[]): Array<{ mode: string; rate: number; rateRatio: number; rateRatioMin: number; rateRatioMax: number; cpuNsPerPacket: number; cpuRatio: number; nsPerRun: number; runs: number }> {
  const plain = samples.filter((s) => !s.accounting);
  return modes.map((mode) => {
    const rs = plain.filter((s) => s.mode === mode);
    const base = (s: Sample): Sample | undefined => plain.find((d) => d.mode === 'detached' && d.round === s.round);
    const rateRatios = rs.map((s) => s.rate / (base(s)?.rate ?? NaN));
    const cpuRatios = rs.map((s) => s.cpuNsPerPacket / (base(s)?.cpuNsPerPacket ?? NaN));
    const acc = samples.find((s) => s.accounting && s.mode === mode);
    return {
      mode, rate: median(rs.map((s) => s.rate)), rateRatio: median(rateRatios), rateRatioMin: Math.min(...rateRatios), rateRatioMax: Math.max(...rateRatios),
      cpuNsPerPacket: median(rs.map((s) => s.cpuNsPerPacket)), cpuRatio: median(cpuRatios), nsPerRun: acc?.nsPerRun ?? NaN, runs: acc?.runs ?? 0,
    };
  });
}

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-');
const f3 = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : '-');
const int = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '-');

async function main(): Promise<boolean> {
  let ok = true;
  const bin = join(work, 'udpflood');
  execFileSync('clang', ['-O2', '-Wall', '-Werror', '-o', bin, join(REPO_ROOT, 'bench', 'udpflood.c')]);
  statsBefore = execFileSync('sysctl', ['-n', 'kernel.bpf_stats_enabled'], { encoding: 'utf8' }).trim();
  setStats(false);

  const real = load();
  const empty = load(join(REPO_ROOT, 'bench', 'bpf', 'drop_empty.bpf.o'));
  const p = real.probe;

  // ---- 1. Foreign drops: veth flood, nftables drop in the receiving namespace.
  const snd = tb.addNamespace('snd');
  const rcv = tb.addNamespace('rcv');
  const other = tb.addNamespace('oth');
  const { ifB: rcvIf } = tb.addVeth(snd, '10.231.0.1/24', rcv, '10.231.0.2/24');
  nsExec(rcv, 'nft', ['-f', '-'], [
    'table inet wgfbench {',
    '  chain input {',
    '    type filter hook input priority 0; policy accept;',
    `    udp dport ${DROP_PORT} counter drop comment "flood"`,
    '  }',
    '}',
  ].join('\n') + '\n');
  const rcvIndex = ifindex(rcv, rcvIf);
  // A watched interface elsewhere whose ifindex is none of the flood's (veth, lo, the local route's lo).
  let otherIndex = 0;
  for (let i = 0; i < 4 && (otherIndex === 0 || otherIndex <= 2 || otherIndex === rcvIndex); i++) {
    // A veth pair inside the namespace (no dummy driver on every kernel); one end is watched.
    nsExec(other, 'ip', ['link', 'add', `wa${i}`, 'type', 'veth', 'peer', 'name', `wb${i}`]);
    otherIndex = ifindex(other, `wa${i}`);
  }
  const otherNetns = netnsInode(other);
  const foreignModes: Record<string, Mode | null> = {
    detached: null,
    'empty kfree_skb program': { ...empty, watch: { ifindexes: [otherIndex], netns: otherNetns } },
    'attached, other interface': { ...real, watch: { ifindexes: [otherIndex], netns: otherNetns } },
    'attached, same ifindex, other netns': { ...real, watch: { ifindexes: [rcvIndex], netns: otherNetns } },
  };
  const foreign = await measure('foreign', foreignModes, async (mode) => {
    const n0 = nftPackets(rcv, 'flood');
    const fl = await flood(bin, snd, '10.231.0.2', 0, SECONDS);
    const dropped = nftPackets(rcv, 'flood') - n0;
    return { rate: fl.sent / fl.seconds, cpuNsPerPacket: fl.cpu_ns / fl.sent, extra: { sent: fl.sent, nftDropped: dropped, errors: fl.errors } };
  });
  // None of those drops is a watched interface's: the probe must not have matched any.
  const foreignMatched = foreign.reduce((a, s) => a + s.matched, 0);
  if (foreignMatched !== 0) {
    console.error(`FAILED: the probe matched ${foreignMatched} foreign drops`);
    ok = false;
  }
  setMode(null);

  // ---- 2. WireGuard drops: flood through the tunnel, dropped in the router's forward chain.
  const r = tb.routed();
  nsExec(r.router.ns, 'nft', ['-f', '-'], [
    'table inet wgfbench {',
    '  chain forward {',
    '    type filter hook forward priority 0; policy accept;',
    `    iifname "${r.router.ifname}" udp dport ${DROP_PORT} counter drop comment "wg-flood"`,
    '  }',
    '}',
  ].join('\n') + '\n');
  await run(r.client.ns, 'ping', ['-c', '1', '-W', '3', r.router.ip4]); // handshake
  const wgWatch: Mode = { ...real, watch: { ifindexes: [ifindex(r.router.ns, r.router.ifname)], netns: netnsInode(r.router.ns) } };
  // The router's wireguard-go: the drop (forward, nftables) runs in its write to the tun device.
  const routerWg = tb.processes.find((c) => c.pid && readFileSync(`/proc/${c.pid}/cmdline`, 'utf8').split('\0').includes(r.router.ifname))?.pid;
  if (!routerWg) throw new Error(`no wireguard-go process for ${r.router.ifname}`);
  let drained = 0, nftWg = 0;
  const wgModes: Record<string, Mode | null> = { detached: null, 'attached, watching it': wgWatch };
  const wg = await measure('wireguard', wgModes, async (mode) => {
    await p.drain(); // empty: what follows is this run's
    const n0 = nftPackets(r.router.ns, 'wg-flood');
    const c0 = cpuNs(routerWg);
    const fl = await flood(bin, r.client.ns, r.resource4, WG_RATE, SECONDS);
    await new Promise((res) => setTimeout(res, 300)); // wireguard-go's queues drain into the drop
    const dropped = nftPackets(r.router.ns, 'wg-flood') - n0;
    const cpu = cpuNs(routerWg) - c0;
    const got = (await p.drain()).filter((e) => e.dport === DROP_PORT && e.proto === 17).reduce((a, e) => a + e.packets, 0);
    if (mode !== 'detached') {
      drained += got;
      nftWg += dropped;
    }
    if (dropped < fl.sent * 0.99) console.log(`  only ${dropped} of ${fl.sent} sent reached the router: --wg-rate is above what the tunnel carries`);
    return { rate: dropped / fl.seconds, cpuNsPerPacket: cpu / dropped, extra: { sent: fl.sent, nftDropped: dropped, probePackets: got } };
  });
  if (drained !== nftWg) {
    console.error(`FAILED: the probe counted ${drained} WireGuard drops, nftables ${nftWg}`);
    ok = false;
  }

  // ---- 3. Tunnel throughput, attached (watching the router's interface) vs detached, no drops made.
  const srv = spawnIn(r.router.ns, 'iperf3', ['-s', '-p', '5201', '--forceflush']);
  await waitForLine(srv, /Server listening/);
  const tunnel: Array<{ round: number; mode: string; mbps: number; matched: number }> = [];
  const reasons0 = new Map(p.reasons().map((x) => [x.reason, x.packets]));
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate which mode goes first so neither always gets the warmer (or quieter) slot.
    const order = round % 2 ? ['attached', 'detached'] : ['detached', 'attached'];
    for (const mode of order) {
      setMode(mode === 'attached' ? wgWatch : null);
      const m0 = p.stats().matched;
      const out = JSON.parse(await run(r.client.ns, 'iperf3', ['-c', r.router.ip4, '-p', '5201', '-t', String(TUNNEL_SECONDS), '-J'], (TUNNEL_SECONDS + 20) * 1000)) as {
        end: { sum_received?: { bits_per_second: number } };
      };
      const mbps = (out.end.sum_received?.bits_per_second ?? 0) / 1e6;
      tunnel.push({ round, mode, mbps, matched: p.stats().matched - m0 });
      console.log(`tunnel round ${round + 1}/${ROUNDS} ${mode}: ${mbps.toFixed(0)} Mbit/s`);
    }
  }
  // One more attached run with bpf_stats on: how often kfree_skb fires during plain tunnel traffic.
  setStats(true);
  setMode(wgWatch);
  const k0 = progRun(real.progId);
  const pk0 = Testbed.counters(r.router.ns, r.router.ifname);
  await run(r.client.ns, 'iperf3', ['-c', r.router.ip4, '-p', '5201', '-t', String(TUNNEL_SECONDS), '-J'], (TUNNEL_SECONDS + 20) * 1000);
  const k1 = progRun(real.progId);
  const pk1 = Testbed.counters(r.router.ns, r.router.ifname);
  setStats(false);
  const tunnelAcc = { runs: k1.runs - k0.runs, ns: k1.ns - k0.ns, packets: pk1.rxPackets + pk1.txPackets - pk0.rxPackets - pk0.txPackets };
  // Why the watched interface dropped anything during plain TCP: the reasons of those drops.
  const tunnelReasons: Record<string, number> = {};
  for (const x of p.reasons()) {
    const n = x.packets - (reasons0.get(x.reason) ?? 0);
    if (n > 0) tunnelReasons[x.reason] = n;
  }
  srv.kill('SIGKILL');
  setMode(null);

  // ---- Report.
  const fs = summarize(foreign, Object.keys(foreignModes));
  const ws = summarize(wg, Object.keys(wgModes));
  console.log(`\ndrops: ${ROUNDS} alternating rounds x ${SECONDS} s per run, medians; ns/run from one more round with kernel.bpf_stats_enabled=1`);
  console.log('\n1. foreign drops: UDP flood (64 B, one flow) over veth, nftables drop in the receiving namespace');
  console.log('| kfree_skb | sender packets/s | x detached (min-max) | sender CPU ns/packet | x detached | program ns/run (runs, accounting round) |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const s of fs) console.log(`| ${s.mode} | ${int(s.rate)} | ${f3(s.rateRatio)} (${f3(s.rateRatioMin)}-${f3(s.rateRatioMax)}) | ${f1(s.cpuNsPerPacket)} | ${f3(s.cpuRatio)} | ${s.mode === 'detached' ? '-' : `${f1(s.nsPerRun)} (${int(s.runs)})`} |`);
  const wgAcc = wg.find((s) => s.accounting && s.mode !== 'detached');
  console.log(`\n2. WireGuard drops: UDP flood (64 B, one flow, ${int(WG_RATE)}/s) through ${tb.impl === 'kernel' ? 'kernel WireGuard' : 'wireguard-go'}, nftables drop of iifname ${r.router.ifname} in the router's forward chain`);
  console.log('| kfree_skb | drops/s | x detached (min-max) | router wireguard-go CPU ns/drop | x detached | program ns/run (runs, accounting round) |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const s of ws) console.log(`| ${s.mode} | ${int(s.rate)} | ${f3(s.rateRatio)} (${f3(s.rateRatioMin)}-${f3(s.rateRatioMax)}) | ${int(s.cpuNsPerPacket)} | ${f3(s.cpuRatio)} | ${s.mode === 'detached' ? '-' : `${f1(s.nsPerRun)} (${int(s.runs)})`} |`);
  console.log(`probe's drop count of the attached runs: ${drained}, nftables: ${nftWg}; accounting round: ${wgAcc?.matched ?? 0} of ${wgAcc?.runs ?? 0} runs matched`);

  const ratios = tunnel.filter((t) => t.mode === 'attached').map((t) => t.mbps / (tunnel.find((d) => d.mode === 'detached' && d.round === t.round)?.mbps ?? NaN));
  const det = median(tunnel.filter((t) => t.mode === 'detached').map((t) => t.mbps));
  const att = median(tunnel.filter((t) => t.mode === 'attached').map((t) => t.mbps));
  const ratio = median(ratios);
  const tunnelMatched = tunnel.reduce((a, t) => a + t.matched, 0);
  console.log(`\n3. tunnel: iperf3 TCP client -> router through ${tb.impl === 'kernel' ? 'kernel WireGuard' : 'wireguard-go'}, ${ROUNDS} rounds x ${TUNNEL_SECONDS} s`);
  console.log('| probe | Mbit/s (median) | x detached (median of per-round ratios) | min-max |');
  console.log('|---|---:|---:|---:|');
  console.log(`| detached | ${det.toFixed(0)} | 1.000 | - |`);
  console.log(`| attached, watching the tunnel | ${att.toFixed(0)} | ${f3(ratio)} | ${f3(Math.min(...ratios))}-${f3(Math.max(...ratios))} |`);
  console.log(`drops of the watched interface during the attached runs: ${tunnelMatched} (${Object.entries(tunnelReasons).map(([k, v]) => `${k} ${v}`).join(', ')}); kfree_skb runs in one attached run with bpf_stats on: ${int(tunnelAcc.runs)} for ${int(tunnelAcc.packets)} tunnel packets (${f1(tunnelAcc.ns / tunnelAcc.runs)} ns/run)`);
  console.log(`target: TCP throughput with the drop probe attached >= ${TARGET}x detached: ${ratio >= TARGET ? 'met' : 'MISSED'} (${f3(ratio)})`);

  writeResult('drops', {
    wireguard: tb.impl, rounds: ROUNDS, seconds: SECONDS, wgRate: WG_RATE, tunnelSeconds: TUNNEL_SECONDS,
    foreign: { table: fs, samples: foreign, watchedOtherIfindex: otherIndex, floodIfindex: rcvIndex },
    wireguardDrops: { table: ws, samples: wg, probePackets: drained, nftPackets: nftWg },
    tunnel: { reasons: tunnelReasons, accounting: tunnelAcc, detachedMbps: det, attachedMbps: att, ratio, ratioMin: Math.min(...ratios), ratioMax: Math.max(...ratios), matched: tunnelMatched, target: TARGET, met: ratio >= TARGET, runs: tunnel },
  });
  return ok;

  /**
   * ROUNDS stats-off rounds of every mode (order rotated each round), then one stats-on round for
   * the program's ns per run. one() runs the load in the mode set.
   */
  async function measure(name: string, modeSet: Record<string, Mode | null>, one: (mode: string) => Promise<{ rate: number; cpuNsPerPacket: number; extra?: Record<string, number> }>): Promise<Sample[]> {
    const out: Sample[] = [];
    const modes = Object.keys(modeSet);
    for (let round = 0; round <= ROUNDS; round++) {
      const accounting = round === ROUNDS;
      setStats(accounting);
      for (let i = 0; i < modes.length; i++) {
        const mode = modes[(i + round) % modes.length];
        const m = modeSet[mode];
        setMode(m);
        const progId = m?.progId ?? real.progId;
        const k0 = progRun(progId);
        const m0 = p.stats().matched;
        const res = await one(mode);
        const k1 = progRun(progId);
        const s: Sample = { round, mode, accounting, ...res, nsPerRun: (k1.ns - k0.ns) / (k1.runs - k0.runs), runs: k1.runs - k0.runs, matched: p.stats().matched - m0 };
        out.push(s);
        console.log(`${name} ${accounting ? 'accounting run' : `round ${round + 1}/${ROUNDS}`} ${mode}: ${int(s.rate)}/s, ${f1(s.cpuNsPerPacket)} CPU ns/packet${accounting && mode !== 'detached' ? `, ${f1(s.nsPerRun)} ns/run over ${s.runs} runs` : ''}`);
      }
    }
    setStats(false);
    setMode(null);
    return out;
  }
}

async function cleanup(): Promise<void> {
  for (const p of probes) p.close();
  await killBackground();
  await tb.destroy();
  if (statsBefore !== undefined) execFileSync('sysctl', ['-qw', `kernel.bpf_stats_enabled=${statsBefore}`]);
  rmSync(work, { recursive: true, force: true });
}

runBench(main, cleanup);
