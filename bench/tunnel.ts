// Tunnel overhead: iperf3 TCP and UDP through a WireGuard tunnel (wireguard-go, or kernel wg with
// WGFLOW_WG=kernel, e.g. in the VM: make vm-bench-tunnel) between two namespaces,
// alternating runs with wgflow detached, attached with byte counting on, and attached with it off.
// Reports throughput ratios against detached runs of the same round (kernel.bpf_stats_enabled off:
// its two clock reads per program run would cost more than the program), and, from separate runs
// with it on, wgflow's CPU time per million packets: the programs' run time plus user-space CPU.
//
//   node build/bench/tunnel.js [--rounds 3] [--seconds 5]
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../src/util/addon';
import { Testbed, WgEndpoint } from '../testkit/testbed';
import { killBackground, Probe, run, spawnIn, waitForLine } from '../testkit/witness';
import { median } from '../testkit/bench-run';

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' } } });
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.seconds);
type Mode = 'detached' | 'on' | 'off';
type Proto = 'tcp' | 'udp';

/** Total run time (ns) and runs of wgflow's programs, from the kernel's per-program accounting. */
function bpfRunTime(): { ns: number; runs: number } {
  const progs = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' })) as Array<{ name?: string; run_time_ns?: number; run_cnt?: number }>;
  let ns = 0, runs = 0;
  for (const p of progs) {
    if (p.name?.startsWith('wgflow_')) {
      ns += p.run_time_ns ?? 0;
      runs += p.run_cnt ?? 0;
    }
  }
  return { ns, runs };
}

/** CPU time (ns) a process has used, from /proc. */
function cpuNs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const ticks = Number(f[11]) + Number(f[12]); // utime + stime
  return (ticks * 1e9) / 100; // USER_HZ
}

function packets(end: WgEndpoint): number {
  const c = Testbed.counters(end.ns, end.ifname);
  return c.rxPackets + c.txPackets;
}

async function main(): Promise<void> {
  const tb = new Testbed();
  const statsBefore = execFileSync('sysctl', ['-n', 'kernel.bpf_stats_enabled'], { encoding: 'utf8' }).trim();
  const setStats = (on: boolean): void => void execFileSync('sysctl', ['-qw', `kernel.bpf_stats_enabled=${on ? 1 : 0}`]);
  const probes: Probe[] = [];
  const results: Array<{ round: number; mode: Mode; proto: Proto; mbps: number; packets: number; cpuNs: number; bpfNs: number; userNs: number; accounting: boolean }> = [];
  try {
    const { a, b } = tb.wgPair();
    const srv = spawnIn(b.ns, 'iperf3', ['-s', '-p', '5201', '--forceflush']);
    await waitForLine(srv, /Server listening/);
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]);
    const pa = await Probe.start(a.ns);
    const pb = await Probe.start(b.ns);
    probes.push(pa, pb);
    let attached = false;
    const modes: Mode[] = ['detached', 'on', 'off'];
    // The last round, with CPU accounting on, is used only for CPU time per packet.
    for (let r = 0; r <= ROUNDS; r++) {
      const accounting = r === ROUNDS;
      setStats(accounting);
      for (const proto of ['tcp', 'udp'] as const) {
        // Rotate the order each round so no mode always runs first (warm caches, noisy neighbours).
        for (let i = 0; i < modes.length; i++) {
          const mode = modes[(i + r) % modes.length];
          if (mode === 'detached' && attached) {
            await pa.call('detach', { ifname: a.ifname });
            await pb.call('detach', { ifname: b.ifname });
            attached = false;
          } else if (mode !== 'detached') {
            if (!attached) {
              await pa.call('attach', { ifname: a.ifname });
              await pb.call('attach', { ifname: b.ifname });
              attached = true;
            }
            await pa.call('counting', { on: mode === 'on' });
            await pb.call('counting', { on: mode === 'on' });
          }
          const p0 = packets(a) + packets(b);
          const k0 = bpfRunTime();
          const u0 = cpuNs(pa.child.pid!) + cpuNs(pb.child.pid!);
          const iperfArgs = ['-c', b.ip4, '-p', '5201', '-t', String(SECONDS), '-J', ...(proto === 'udp' ? ['-u', '-b', '0', '-l', '1300'] : [])];
          const out = JSON.parse(await run(a.ns, 'iperf3', iperfArgs, (SECONDS + 20) * 1000)) as {
            end: { sum_received?: { bits_per_second: number }; sum?: { bits_per_second: number; lost_percent?: number } };
          };
          const k1 = bpfRunTime();
          const u1 = cpuNs(pa.child.pid!) + cpuNs(pb.child.pid!);
          const pkts = packets(a) + packets(b) - p0;
          const bps = proto === 'tcp'
            ? out.end.sum_received?.bits_per_second ?? 0
            : (out.end.sum?.bits_per_second ?? 0) * (1 - (out.end.sum?.lost_percent ?? 0) / 100);
          results.push({ round: r, mode, proto, mbps: bps / 1e6, packets: pkts, cpuNs: mode === 'detached' ? 0 : k1.ns - k0.ns + (u1 - u0), bpfNs: k1.ns - k0.ns, userNs: u1 - u0, accounting });
          console.log(`${accounting ? 'cpu accounting run' : `round ${r + 1}/${ROUNDS}`} ${proto} ${mode}: ${(bps / 1e6).toFixed(0)} Mbit/s, ${pkts} packets`);
        }
      }
    }
    srv.kill('SIGKILL');
  } finally {
    for (const p of probes) await p.stop();
    await killBackground();
    await tb.destroy();
    execFileSync('sysctl', ['-qw', `kernel.bpf_stats_enabled=${statsBefore}`]);
  }

  const table: Array<Record<string, number | string>> = [];
  console.log(`\ntunnel: iperf3 through ${tb.impl === 'kernel' ? 'kernel WireGuard' : 'wireguard-go'}, ${ROUNDS} rounds x ${SECONDS} s per run, medians; wgflow attached on both peers`);
  console.log('| protocol | wgflow | Mbit/s | x detached | CPU ms per million packets | of which BPF ns/packet | user-space ns/packet |');
  console.log('|---|---|---:|---:|---:|---:|---:|');
  for (const proto of ['tcp', 'udp'] as const) {
    const detached = median(results.filter((x) => x.proto === proto && x.mode === 'detached').map((x) => x.mbps));
    for (const mode of ['detached', 'on', 'off'] as const) {
      const rs = results.filter((x) => x.proto === proto && x.mode === mode && !x.accounting);
      // Ratio per round against that round's detached run, then the median of the ratios.
      const ratios = rs.map((x) => x.mbps / (results.find((d) => d.proto === proto && d.mode === 'detached' && d.round === x.round)?.mbps ?? NaN));
      const acc = results.find((x) => x.proto === proto && x.mode === mode && x.accounting);
      const cpu = mode === 'detached' || !acc ? NaN : acc.cpuNs / 1e6 / (acc.packets / 1e6);
      const row = {
        proto, mode, mbps: median(rs.map((x) => x.mbps)), ratio: mode === 'detached' ? 1 : median(ratios), cpuMsPerMillionPackets: cpu,
        bpfNsPerPacket: acc && mode !== 'detached' ? acc.bpfNs / acc.packets : NaN, userNsPerPacket: acc && mode !== 'detached' ? acc.userNs / acc.packets : NaN,
      };
      table.push(row);
      const f = (x: number): string => (Number.isNaN(x) ? '-' : x.toFixed(1));
      console.log(`| ${proto} | ${mode === 'detached' ? 'detached' : `attached, counting ${mode}`} | ${row.mbps.toFixed(0)} | ${row.ratio.toFixed(3)} | ${f(cpu)} | ${f(row.bpfNsPerPacket)} | ${f(row.userNsPerPacket)} |`);
    }
    void detached;
  }
  const tcpOn = table.find((t) => t.proto === 'tcp' && t.mode === 'on')?.ratio as number;
  console.log(`target: TCP throughput >= 0.98x detached with byte counting on: ${tcpOn >= 0.98 ? 'met' : 'MISSED'} (${tcpOn.toFixed(3)})`);
  mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(REPO_ROOT, 'bench', 'results', 'tunnel.json'), JSON.stringify({ when: new Date().toISOString(), wireguard: tb.impl, rounds: ROUNDS, seconds: SECONDS, table, results }, null, 2));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
