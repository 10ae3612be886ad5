// The memory budget on a real daemon: one log line at start with the figures, the gauges in
// /metrics (promtool-clean), ctl status, the kernel-map figure against the kernel's own accounting
// of the daemon's maps, a reload that would not fit refused, and a real control group's memory
// limit (a child of this process's own group) refusing a configuration that does not fit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { formatBytes, memoryBudget, maxFlowsThatFit } from '../../src/config/memory';
import { Testbed, WgEndpoint } from '../../testkit/testbed';
import { describePrivileged, run } from '../helpers/env';
import { DaemonProc, teardown, WGFLOW } from '../helpers/daemon';

const MiB = 1024 ** 2, GiB = 1024 ** 3;

describePrivileged('the memory budget of a running daemon', () => {
  let tb: Testbed;
  let a: WgEndpoint, b: WgEndpoint;
  let d: DaemonProc;
  const budget = memoryBudget({ maxFlows: 65_536, ringBytes: 1 << 20 });

  beforeAll(async () => {
    tb = new Testbed();
    ({ a, b } = tb.wgPair());
    // The default map sizes (the test helper's own default is smaller).
    d = await DaemonProc.start(b.ns, { interfaces: [b.ifname], memory_limit: '1G', datapath: { max_flows: 65_536, max_flows_v6: null } });
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]);
  });

  afterAll(async () => {
    await teardown(d, tb);
  });

  it('logs one line at start: per-flow bytes, flow state, the budget, the limit and where it came from', () => {
    const lines = d.log.split('\n').filter((l) => l.includes('"memory budget: '));
    expect(lines.length).toBe(1);
    const rec = JSON.parse(lines[0]) as { msg: string; memory: Record<string, unknown> };
    expect(rec.memory).toEqual({ ...budget, limitBytes: GiB, limitSource: `memory_limit, in ${d.configFile}` });
    const f = formatBytes;
    expect(rec.msg).toBe(`memory budget: flow state ${budget.flowStateBytesPerFlowV4} bytes per IPv4 flow and ${budget.flowStateBytesPerFlowV6} per IPv6 flow, ` +
      `${f(budget.flowStateBytes)} for 65,536 + 65,536 flows; resident ${f(budget.residentBytes)} (base ${f(budget.baseBytes)}, flow state, map read ${f(budget.mapReadBytes)}, export 0 B); ` +
      `kernel maps ${f(budget.kernelBytes)}; total ${f(budget.totalBytes)}; limit 1 GiB (memory_limit, in ${d.configFile})`);
  });

  it('/metrics: the budget, its parts and the limit, promtool-clean; the RSS is within the resident budget', () => {
    const text = d.metrics();
    const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    expect(value('wgflow_memory_budget_bytes')).toBe(budget.totalBytes);
    expect(value('wgflow_memory_budget_resident_bytes')).toBe(budget.residentBytes);
    expect(value('wgflow_flow_state_budget_bytes')).toBe(budget.flowStateBytes);
    expect(value('wgflow_memory_budget_kernel_bytes')).toBe(budget.kernelBytes);
    expect(value('wgflow_memory_limit_bytes')).toBe(GiB);
    const rss = value('wgflow_resident_memory_bytes');
    expect(rss).toBeGreaterThan(0);
    expect(rss).toBeLessThanOrEqual(budget.residentBytes);
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);
  });

  it('ctl status shows the budget, the limit and the RSS', () => {
    const text = d.ctl(['status']);
    expect(text.code, text.stderr).toBe(0);
    const line = text.stdout.split('\n').find((l) => l.startsWith('memory:'));
    const f = formatBytes;
    expect(line).toMatch(new RegExp(`^memory: +resident [\\d.]+ MiB \\(peak [\\d.]+ MiB\\) of a ${f(budget.residentBytes)} budget `));
    expect(line?.replace(/^memory: +resident .*? budget /, '')).toBe(`(flow state ${f(budget.flowStateBytes)} for 65,536 + 65,536 flows, ` +
      `${budget.flowStateBytesPerFlowV4}/${budget.flowStateBytesPerFlowV6} bytes each); kernel maps ${f(budget.kernelBytes)}; total ${f(budget.totalBytes)}, ` +
      `limit 1 GiB (memory_limit, in ${d.configFile})`);
    const j = JSON.parse(d.ctl(['status', '--json']).stdout) as { memory: Record<string, unknown> & { residentNowBytes: number; residentPeakBytes: number } };
    expect(j.memory).toMatchObject({ ...budget, limit: { bytes: GiB, source: `memory_limit, in ${d.configFile}` } });
    expect(j.memory.residentNowBytes).toBeGreaterThan(0);
    expect(j.memory.residentPeakBytes).toBeGreaterThanOrEqual(j.memory.residentNowBytes);
    expect(j.memory.residentPeakBytes).toBeLessThanOrEqual(budget.residentBytes);
  });

  it('the kernel-map figure holds what the kernel charges for the daemon\'s maps (bpftool bytes_memlock)', () => {
    const pinned = (name: string): { id: number; bytes_memlock: number; max_entries: number } =>
      JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', join(d.dir, 'bpf', 'wgflow', name)], { encoding: 'utf8' }));
    const m4 = pinned('wgf_flows4'), m6 = pinned('wgf_flows6');
    expect([m4.max_entries, m6.max_entries]).toEqual([65_536, 65_536]);
    // The ring is not pinned: the object's next map, created right after the flow maps (a fresh pin directory).
    const all = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show'], { encoding: 'utf8' })) as Array<{ id: number; name?: string; bytes_memlock: number }>;
    expect(m6.id).toBe(m4.id + 1);
    const ring = all.filter((m) => m.name === 'wgf_events' && m.id === m6.id + 1);
    expect(ring.length).toBe(1);
    const charged = m4.bytes_memlock + m6.bytes_memlock + ring[0].bytes_memlock;
    // The drop maps are budgeted too (ctl drops on can load them); they are not loaded here.
    const flowMaps = budget.kernelBytes - budget.dropMapBytes;
    expect(flowMaps).toBeGreaterThanOrEqual(charged);
    expect(flowMaps - charged).toBeLessThan(32 * 1024);
  });

  it('a reload whose max_flows would not fit in the limit is refused, and the running budget stays', () => {
    const cfg = parse(readFileSync(d.configFile, 'utf8')) as { datapath: Record<string, unknown> };
    const before = cfg.datapath.max_flows;
    cfg.datapath.max_flows = 4_000_000;
    writeFileSync(d.configFile, stringify(cfg));
    try {
      const r = d.ctl(['reload']);
      expect(r.code).toBe(1);
      const fit = maxFlowsThatFit({ maxFlows: 4_000_000, ringBytes: 1 << 20 }, GiB).toLocaleString('en-US');
      expect(r.stderr).toMatch(new RegExp('^wgflow ctl: reload refused, the running configuration stays: configuration error: datapath\\.max_flows: 4,000,000 IPv4 and 4,000,000 IPv6 flows ' +
        `.* over the memory limit of 1 GiB \\(memory_limit, in .*\\); at most ${fit} flows fit \\(datapath\\.max_flows and max_flows_v6\\): lower datapath\\.max_flows or raise the limit\\n$`));
    } finally {
      cfg.datapath.max_flows = before;
      writeFileSync(d.configFile, stringify(cfg));
    }
    const j = JSON.parse(d.ctl(['status', '--json']).stdout) as { memory: { totalBytes: number } };
    expect(j.memory.totalBytes).toBe(budget.totalBytes);
  });
});

/**
 * A child of this process's own memory cgroup (v2, or the v1 memory controller of a hybrid host)
 * with memory.max set; removed by the returned function (once nothing runs in it).
 */
function childCgroup(limitBytes: number): { dir: string; group: string; remove: () => void } {
  const membership = readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const name = `wgflow-test-${process.pid}`;
  const v2 = membership.find((l) => l.startsWith('0::'))?.slice(3);
  const v2root = existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : '/sys/fs/cgroup/unified';
  if (v2 !== undefined && readFileSync(join(v2root, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('memory')) {
    const parent = join(v2root, v2);
    if (!readFileSync(join(parent, 'cgroup.subtree_control'), 'utf8').includes('memory')) writeFileSync(join(parent, 'cgroup.subtree_control'), '+memory');
    const dir = join(parent, name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'memory.max'), String(limitBytes));
    return { dir, group: join(v2, name), remove: () => rmdirSync(dir) };
  }
  const v1 = membership.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l))?.replace(/^\d+:[^:]*:/, '');
  if (v1 === undefined) throw new Error('no cgroup memory controller on this machine (neither v2 nor v1)');
  const dir = join('/sys/fs/cgroup/memory', v1, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'memory.limit_in_bytes'), String(limitBytes));
  return { dir, group: join(v1, name), remove: () => rmdirSync(dir) };
}

describePrivileged('a control group\'s memory limit (systemd MemoryMax=)', () => {
  it('run and --check-config inside a 256 MiB cgroup refuse 1,000,000 flows, naming the group; 65,536 flows fit', () => {
    const cg = childCgroup(256 * MiB);
    try {
      const inGroup = (args: string[]): ReturnType<typeof spawnSync> =>
        spawnSync('sh', ['-c', `echo $$ > ${join(cg.dir, 'cgroup.procs')} && exec "$0" "$@"`, process.execPath, WGFLOW, ...args], { encoding: 'utf8' });
      const safe = ['--control-socket', join(cg.dir, 'none.sock'), '--output', '/nonexistent/wgflow-out', '--metrics-listen', '127.0.0.1:0'];
      const fit = maxFlowsThatFit({ maxFlows: 1_000_000, ringBytes: 1 << 20 }, 256 * MiB).toLocaleString('en-US');
      for (const args of [['run', '--check-config', '--interface', 'wg0', '--max-flows', '1000000'], ['run', '--interface', 'wg0', '--max-flows', '1000000', ...safe]]) {
        const r = inGroup(args);
        expect(r.status, String(r.stderr)).toBe(2);
        const b = memoryBudget({ maxFlows: 1_000_000, ringBytes: 1 << 20 }), f = formatBytes;
        expect(r.stderr).toBe('wgflow run: configuration error: datapath.max_flows: 1,000,000 IPv4 and 1,000,000 IPv6 flows (datapath.max_flows_v6 unset: the same) ' +
          `need ${f(b.flowStateBytes)} of flow state and ${f(b.mapReadBytes)} for a read of the flow maps; with the daemon's base of ${f(b.baseBytes)} and ${f(b.kernelBytes)} of kernel maps ` +
          `(charged to the same cgroup) that is a budget of ${f(b.totalBytes)}, over the memory limit of 256 MiB (cgroup ${cg.group}); at most ${fit} flows fit ` +
          '(datapath.max_flows and max_flows_v6): lower datapath.max_flows or raise the limit\n');
      }
      const ok = inGroup(['run', '--check-config', '--interface', 'wg0']);
      expect(ok.status, String(ok.stderr)).toBe(0);
      expect(ok.stdout.endsWith(`; total ${formatBytes(memoryBudget({ maxFlows: 65_536, ringBytes: 1 << 20 }).totalBytes)}; limit 256 MiB (cgroup ${cg.group})\n`), ok.stdout).toBe(true);
    } finally {
      cg.remove();
    }
  });
});
