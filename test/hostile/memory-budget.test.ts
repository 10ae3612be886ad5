// The memory budget as an operator meets it: memory_limit's sizes and their mistakes, the
// budget's arithmetic, the cgroup limit read from a fake /sys/fs/cgroup tree (v2, nested, hybrid
// v1), and `wgflow run --check-config` refusing a configuration that does not fit, with the keys
// to change and what would fit.
import { DEFAULT_DROP_KEYS, dropMapBytes } from '../../src/datapath/drops';
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { cgroupMemoryLimit } from '../../src/config/cgroup';
import { loadConfig, resolveConfig } from '../../src/config/config';
import {
  BudgetSettings, checkMemoryPlan, DAEMON_BASE_BYTES, describePlan, effectiveLimit, formatBytes, AGGREGATE_GROUP_BYTES, IN_FLIGHT_EVENT_BYTES, maxFlowsThatFit, memoryBudget, parseByteSize,
} from '../../src/config/memory';
import { kernelMapBytes, mapReadBytes } from '../../src/datapath/datapath';
import { flowStateBytes } from '../../src/flow/budget';
import { SPOOL_DEFAULTS } from '../../src/output/spool';
import { ConfigError } from '../../src/util/check';
import { wgflow } from '../helpers/daemon';

const MiB = 1024 ** 2, GiB = 1024 ** 3;
const dir = mkdtempSync(join(tmpdir(), 'wgflow-memory-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** A fake cgroup tree: files relative to a new root, and the /proc/self/cgroup text. */
function fakeCgroup(files: Record<string, string>, membership: string): { root: string; procFile: string } {
  const root = join(dir, `cg${++n}`);
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), text);
  }
  mkdirSync(root, { recursive: true });
  const procFile = join(root, 'proc-self-cgroup');
  writeFileSync(procFile, membership);
  return { root, procFile };
}
/** No cgroup limit at all, whatever the machine running the tests has. */
const NO_CGROUP = { root: join(dir, 'none'), procFile: join(dir, 'none', 'cgroup') };

/** The refusal's text for settings s, spelled out here (the figures from the budget). */
function refusal(s: BudgetSettings, limit: string, advice: string): string {
  const b = memoryBudget(s), f = formatBytes, n = (x: number): string => x.toLocaleString('en-US');
  const v6 = s.maxFlowsV6 === undefined ? 'datapath.max_flows_v6 unset: the same' : 'datapath.max_flows_v6';
  const exp = b.exportBytes ? `, export buffers of ${f(b.exportBytes)} (collector.max_in_flight ${n(s.maxInFlight ?? 0)})` : '';
  return `datapath.max_flows: ${n(b.maxFlows)} IPv4 and ${n(b.maxFlowsV6)} IPv6 flows (${v6}) need ${f(b.flowStateBytes)} of flow state and ${f(b.mapReadBytes)} ` +
    `for a read of the flow maps; with the daemon's base of ${f(b.baseBytes)}${exp} and ${f(b.kernelBytes)} of kernel maps (charged to the same cgroup) ` +
    `that is a budget of ${f(b.totalBytes)}, over the memory limit of ${limit}; ${advice}`;
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('no ConfigError');
}

describe('memory_limit sizes', () => {
  it('reads bytes and units: K/M/G/T and KiB.. are powers of 1024, KB.. of 1000', () => {
    const cases: Array<[string, number]> = [
      ['536870912', 512 * MiB], ['512M', 512 * MiB], ['512MiB', 512 * MiB], ['512m', 512 * MiB], [' 1G ', GiB], ['1 GiB', GiB],
      ['1.5G', 1.5 * GiB], ['2048K', 2 * MiB], ['1T', 1024 * GiB], ['1000KB', 1_000_000], ['1GB', 1e9], ['100B', 100],
    ];
    for (const [text, bytes] of cases) expect(parseByteSize(text), text).toBe(bytes);
    for (const bad of ['', 'lots', '12X', '-5M', '1e9', 'M', '5 M B', '0x10', '1,5G']) expect(parseByteSize(bad), bad).toBeUndefined();
  });

  it('the key takes a number or a size, and a mistake names the key, the expected form and where it came from', () => {
    const file = join(dir, 'mem.yaml');
    writeFileSync(file, 'interfaces: [wg0]\nmemory_limit: lots\n');
    expect(resolveConfig({ flags: { interface: ['wg0'], 'memory-limit': '768M' } }).memory_limit).toBe(768 * MiB);
    expect(resolveConfig({ env: { WGFLOW_INTERFACES: 'wg0', WGFLOW_MEMORY_LIMIT: '2G' } }).memory_limit).toBe(2 * GiB);
    expect(resolveConfig({ flags: { interface: ['wg0'] } }).memory_limit).toBeUndefined();
    expect(configError(() => resolveConfig({ file })).message).toBe(
      `memory_limit: expected a size in bytes, e.g. 536870912, 512M, 512MiB or 1G (K/M/G/T and KiB/MiB/GiB/TiB: powers of 1024; KB/MB/GB/TB: of 1000), got "lots" (in ${file})`);
    expect(configError(() => resolveConfig({ flags: { interface: ['wg0'], 'memory-limit': '512' } })).message).toBe(
      'memory_limit: "512" is 512 bytes, below the minimum of 1M (a bare number is bytes: write 512M for 512 MiB) (from --memory-limit)');
    expect(configError(() => resolveConfig({ env: { WGFLOW_INTERFACES: 'wg0', WGFLOW_MEMORY_LIMIT: '1.5 parsecs' } })).message).toMatch(
      /^memory_limit: expected a size in bytes, .*, got "1\.5 parsecs" \(from WGFLOW_MEMORY_LIMIT\)$/);
    writeFileSync(file, 'interfaces: [wg0]\nmemory_limit: [1G]\n');
    expect(configError(() => resolveConfig({ file })).message).toMatch(/^memory_limit: expected a size in bytes, .*, got a list \(in /);
  });
});

describe('the budget', () => {
  it('is base + flow state + one map read + export buffers, plus the kernel maps', () => {
    const b = memoryBudget({ maxFlows: 65_536, ringBytes: 1 << 20 });
    expect(b.maxFlowsV6).toBe(65_536); // unset: as max_flows, the datapath's rule
    expect(b.flowStateBytes).toBe(flowStateBytes(65_536, 65_536));
    // The drain's buffers: IPv4 keys, IPv6 keys and one values buffer, a chunk of 65,536 entries.
    expect(b.mapReadBytes).toBe(65_536 * (16 + 40 + 40));
    expect(b.mapReadBytes).toBe(mapReadBytes(65_536, 65_536));
    expect(mapReadBytes(1_000_000, 1_000_000)).toBe(65_536 * (16 + 40 + 40));
    expect(mapReadBytes(1000, 10)).toBe(1000 * 16 + 10 * 40 + 1000 * 40);
    expect(mapReadBytes(10, 100_000)).toBe(10 * 16 + 65_536 * 40 + 65_536 * 40);
    expect(b.exportBytes).toBe(0);
    expect(b.residentBytes).toBe(DAEMON_BASE_BYTES + b.flowStateBytes + b.mapReadBytes);
    // The drop maps count even with drops off (wgflow ctl drops on can load them at any time).
    expect(b.dropMapBytes).toBe(dropMapBytes(DEFAULT_DROP_KEYS));
    expect(b.kernelBytes).toBe(kernelMapBytes(65_536, 65_536, 1 << 20) + b.dropMapBytes);
    expect(memoryBudget({ maxFlows: 65_536, ringBytes: 1 << 20, dropKeys: 1 }).dropMapBytes).toBeLessThan(b.dropMapBytes);
    expect(b.totalBytes).toBe(b.residentBytes + b.kernelBytes);
    // Per flow: the tracker's slot and its share of the index.
    expect(b.flowStateBytesPerFlowV4).toBe(Math.ceil(flowStateBytes(65_536, 0) / 65_536));
    expect(b.flowStateBytesPerFlowV6).toBe(Math.ceil(flowStateBytes(0, 65_536) / 65_536));

    const withCollector = memoryBudget({ maxFlows: 65_536, maxFlowsV6: 1024, ringBytes: 1 << 20, maxInFlight: 32_768 });
    expect(withCollector.maxFlowsV6).toBe(1024);
    expect(withCollector.exportBytes).toBe(32_768 * IN_FLIGHT_EVENT_BYTES + SPOOL_DEFAULTS.memoryBytes);
    expect(withCollector.residentBytes).toBe(DAEMON_BASE_BYTES + flowStateBytes(65_536, 1024) + mapReadBytes(65_536, 1024) + withCollector.exportBytes);
    // The aggregated profile's open window: its groups are part of the export buffers.
    const aggregated = memoryBudget({ maxFlows: 65_536, maxFlowsV6: 1024, ringBytes: 1 << 20, maxInFlight: 32_768, aggregateGroups: 16_384 });
    expect(aggregated.exportBytes - withCollector.exportBytes).toBe(16_384 * AGGREGATE_GROUP_BYTES);
  });

  it('kernel maps: preallocated elements (48-byte header, key, value) and a power-of-two bucket array', () => {
    // bytes_memlock as bpftool reports it for these sizes (kernel 6.18): the formula is at most
    // 4 KiB per map above, never below (checked on the daemon's own maps in test/integration).
    const measured = { v4: 7_865_440, v6: 9_438_352, ring: 1_065_288, v4of1M: 120_778_336, v6of1M: 144_778_384 };
    const oneMap = (entries: number, key: number): number => entries * (48 + key + 40) + 2 ** Math.ceil(Math.log2(entries)) * 16;
    // Plus 4 KiB per hash map (struct bpf_htab, per-CPU spares) and 5 pages of ring header.
    for (const [v4, v6, ring] of [[65_536, 65_536, 1 << 20], [1_000_000, 3, 4096], [100_000, 1_000_000, 1 << 24]]) {
      expect(kernelMapBytes(v4, v6, ring)).toBe(oneMap(v4, 16) + oneMap(v6, 40) + ring + 2 * 4096 + 5 * 4096);
    }
    for (const [got, want] of [[oneMap(65_536, 16), measured.v4], [oneMap(65_536, 40), measured.v6], [oneMap(1_000_000, 16), measured.v4of1M], [oneMap(1_000_000, 40), measured.v6of1M]]) {
      expect(want - got).toBeGreaterThanOrEqual(0);
      expect(want - got).toBeLessThan(4096);
    }
    expect(kernelMapBytes(65_536, 65_536, 1 << 20)).toBeGreaterThanOrEqual(measured.v4 + measured.v6 + measured.ring);
    expect(kernelMapBytes(65_536, 65_536, 1 << 20)).toBeLessThan(measured.v4 + measured.v6 + measured.ring + 16_384);
  });

  it('sizes are written in binary units, one decimal below 100', () => {
    expect([0, 100, 1536, 8.5 * MiB, 128 * MiB, 1014 * MiB, 2.8 * GiB, 1024 * GiB].map(formatBytes)).toEqual(
      ['0 B', '100 B', '1.5 KiB', '8.5 MiB', '128 MiB', '1014 MiB', '2.8 GiB', '1 TiB']);
  });

  it('what fits is the most flows whose budget is within the limit', () => {
    for (const s of [{ maxFlows: 4_000_000, ringBytes: 1 << 20 }, { maxFlows: 4_000_000, maxFlowsV6: 10_000, ringBytes: 1 << 20, maxInFlight: 32_768 }]) {
      for (const limit of [300 * MiB, 512 * MiB, 3 * GiB]) {
        const fit = maxFlowsThatFit(s, limit);
        const at = (k: number): number => memoryBudget({ ...s, maxFlows: k, maxFlowsV6: s.maxFlowsV6 ?? k }).totalBytes;
        expect(fit).toBeGreaterThan(0);
        expect(at(fit)).toBeLessThanOrEqual(limit);
        expect(at(fit + 1)).toBeGreaterThan(limit);
      }
    }
    expect(maxFlowsThatFit({ maxFlows: 10, ringBytes: 1 << 20 }, 100 * MiB)).toBe(0);
  });

  it('a budget over the limit is refused naming max_flows, max_flows_v6, the limit and its source, and what fits', () => {
    const s = { maxFlows: 4_000_000, ringBytes: 1 << 20 };
    const limit = { bytes: 512 * MiB, source: 'cgroup /system.slice/wgflow.service' };
    const fit = maxFlowsThatFit(s, limit.bytes);
    const err = configError(() => checkMemoryPlan({ budget: memoryBudget(s), limit }, s));
    expect(err.path).toBe('datapath.max_flows');
    expect(err.message).toBe(refusal(s, '512 MiB (cgroup /system.slice/wgflow.service)',
      `at most ${fit.toLocaleString('en-US')} flows fit (datapath.max_flows and max_flows_v6): lower datapath.max_flows or raise the limit`));
    // An explicit max_flows_v6 stays as set; when it alone does not fit, it is the one named.
    const v6 = { maxFlows: 1000, maxFlowsV6: 4_000_000, ringBytes: 1 << 20 };
    expect(configError(() => checkMemoryPlan({ budget: memoryBudget(v6), limit }, v6)).message).toMatch(
      /not even 1 IPv4 flow fits next to 4,000,000 IPv6 flows: lower datapath\.max_flows_v6 or raise the limit$/);
    // Below the fixed part: nothing fits; the exporter's window is named when a collector is set.
    const tiny = { maxFlows: 1000, ringBytes: 1 << 20, maxInFlight: 32_768 };
    const one = formatBytes(memoryBudget({ ...tiny, maxFlows: 1, maxFlowsV6: 1 }).totalBytes);
    expect(configError(() => checkMemoryPlan({ budget: memoryBudget(tiny), limit: { bytes: 100 * MiB, source: 'memory_limit' } }, tiny)).message).toBe(
      refusal(tiny, '100 MiB (memory_limit)', `not even 1 flow fits (the budget with one flow is ${one}): raise the limit or lower collector.max_in_flight`));
    // Within the limit: nothing to say.
    expect(() => checkMemoryPlan({ budget: memoryBudget({ maxFlows: 65_536, ringBytes: 1 << 20 }), limit }, s)).not.toThrow();
  });
});

describe('the cgroup memory limit (fake /sys/fs/cgroup)', () => {
  it('cgroup v2: memory.max of the group, the lowest of its ancestors, "max" meaning none', () => {
    const unit = '/system.slice/wgflow.service';
    const v2 = (files: Record<string, string>): ReturnType<typeof fakeCgroup> => fakeCgroup({ 'cgroup.controllers': 'cpu memory pids\n', ...files }, `0::${unit}\n`);
    expect(cgroupMemoryLimit(v2({ [`${unit}/memory.max`]: '536870912\n', 'system.slice/memory.max': 'max\n' }))).toEqual(
      { bytes: 512 * MiB, group: unit, file: expect.stringMatching(/\/system\.slice\/wgflow\.service\/memory\.max$/) });
    // A slice with a lower limit than the unit bounds it too.
    expect(cgroupMemoryLimit(v2({ [`${unit}/memory.max`]: '1073741824\n', 'system.slice/memory.max': '268435456\n' }))).toMatchObject({ bytes: 256 * MiB, group: '/system.slice' });
    expect(cgroupMemoryLimit(v2({ [`${unit}/memory.max`]: 'max\n', 'system.slice/memory.max': 'max\n' }))).toBeUndefined();
    // In a container (a cgroup namespace) the group is "/" and its limit is at the root.
    expect(cgroupMemoryLimit(fakeCgroup({ 'cgroup.controllers': 'memory\n', 'memory.max': '2147483648\n' }, '0::/\n'))).toMatchObject({ bytes: 2 * GiB, group: '/' });
    // A group name with ':' in it (allowed by the kernel).
    expect(cgroupMemoryLimit(fakeCgroup({ 'cgroup.controllers': 'memory\n', 'a:b/memory.max': '104857600\n' }, '0::/a:b\n'))).toMatchObject({ bytes: 100 * MiB, group: '/a:b' });
  });

  it('hybrid hosts: the v1 memory controller (memory.limit_in_bytes; ~2^63 means none)', () => {
    const membership = '9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n';
    expect(cgroupMemoryLimit(fakeCgroup({ 'unified/cgroup.controllers': '', 'memory/process_api/abc/memory.limit_in_bytes': '402653184\n', 'memory/memory.limit_in_bytes': '9223372036854771712\n' }, membership)))
      .toMatchObject({ bytes: 384 * MiB, group: '/process_api/abc' });
    expect(cgroupMemoryLimit(fakeCgroup({ 'unified/cgroup.controllers': '', 'memory/process_api/abc/memory.limit_in_bytes': '9223372036854771712\n' }, membership))).toBeUndefined();
  });

  it('no cgroup file system, no membership file, or garbage: no limit', () => {
    expect(cgroupMemoryLimit(NO_CGROUP)).toBeUndefined();
    expect(cgroupMemoryLimit(fakeCgroup({}, '0::/x\n'))).toBeUndefined();
    expect(cgroupMemoryLimit(fakeCgroup({ 'cgroup.controllers': '', 'x/memory.max': 'lots\n' }, '0::/x\n'))).toBeUndefined();
    expect(cgroupMemoryLimit(fakeCgroup({}, 'not a cgroup file\n'))).toBeUndefined();
  });

  it('loadConfig: the lower of memory_limit and the cgroup limit applies, and says where it came from', () => {
    const cgroup = fakeCgroup({ 'cgroup.controllers': 'memory\n', 'system.slice/wgflow.service/memory.max': `${512 * MiB}\n` }, '0::/system.slice/wgflow.service\n');
    const flags = { interface: ['wg0'] };
    expect(loadConfig({ flags, cgroup }).memory.limit).toEqual({ bytes: 512 * MiB, source: 'cgroup /system.slice/wgflow.service' });
    expect(loadConfig({ flags: { ...flags, 'memory-limit': '256M' }, cgroup }).memory.limit).toEqual({ bytes: 256 * MiB, source: 'memory_limit, from --memory-limit' });
    expect(loadConfig({ flags: { ...flags, 'memory-limit': '1G' }, cgroup }).memory.limit).toEqual({ bytes: 512 * MiB, source: 'cgroup /system.slice/wgflow.service' });
    expect(loadConfig({ flags, cgroup: NO_CGROUP }).memory.limit).toBeUndefined();
    expect(effectiveLimit(undefined, undefined)).toBeUndefined();
    // Over the cgroup's limit: refused by the one validation path (run, --check-config, reload).
    expect(configError(() => loadConfig({ flags: { ...flags, 'max-flows': '2000000' }, cgroup })).message).toMatch(
      /^datapath\.max_flows: 2,000,000 IPv4 and 2,000,000 IPv6 flows .* over the memory limit of 512 MiB \(cgroup \/system\.slice\/wgflow\.service\); at most [\d,]+ flows fit/);
  });
});

describe('wgflow run --check-config', () => {
  const safe = ['--control-socket', join(dir, 'ctl.sock'), '--output', join(dir, 'out'), '--metrics-listen', '127.0.0.1:0'];

  it('refuses a memory_limit the budget does not fit in: exit 2, the keys and what fits', () => {
    const r = wgflow(['run', '--check-config', '--interface', 'wg0', '--max-flows', '4000000', '--memory-limit', '512M', ...safe]);
    expect(r.code).toBe(2);
    const s = { maxFlows: 4_000_000, ringBytes: 1 << 20 };
    const fit = maxFlowsThatFit(s, 512 * MiB).toLocaleString('en-US');
    expect(r.stderr).toBe(`wgflow run: configuration error: ${refusal(s, '512 MiB (memory_limit, from --memory-limit)',
      `at most ${fit} flows fit (datapath.max_flows and max_flows_v6): lower datapath.max_flows or raise the limit`)}\n`);
    expect(r.stdout).toBe('');
  });

  it('a file setting memory_limit too low for a collector\'s window says so; run refuses what --check-config refuses', () => {
    const file = join(dir, 'small.yaml');
    writeFileSync(file, 'interfaces: [wg0]\nmemory_limit: 150MiB\ncollector:\n  url: grpc://127.0.0.1:1\n  max_in_flight: 100000\n');
    for (const args of [['run', '--check-config', '--config', file], ['run', '--config', file, ...safe]]) {
      const r = wgflow(args);
      expect(r.code, args.join(' ')).toBe(2);
      const s = { maxFlows: 65_536, ringBytes: 1 << 20, maxInFlight: 100_000 };
      const one = formatBytes(memoryBudget({ ...s, maxFlows: 1, maxFlowsV6: 1 }).totalBytes);
      expect(formatBytes(memoryBudget(s).exportBytes)).toBe('162 MiB'); // 100,000 x 1.5 KiB + 16 MiB
      expect(r.stderr).toBe(`wgflow run: configuration error: ${refusal(s, `150 MiB (memory_limit, in ${file})`,
        `not even 1 flow fits (the budget with one flow is ${one}): raise the limit or lower collector.max_in_flight`)}\n`);
    }
  });

  it('prints the budget when the configuration fits', () => {
    const r = wgflow(['run', '--check-config', '--interface', 'wg0', '--memory-limit', '1G', ...safe], { env: { ...process.env, WGFLOW_MAX_FLOWS: '100000' } });
    expect(r.code, r.stderr).toBe(0);
    const b = memoryBudget({ maxFlows: 100_000, ringBytes: 1 << 20 });
    const f = formatBytes;
    expect(r.stdout.split('\n')[1]).toBe(`memory budget: flow state ${b.flowStateBytesPerFlowV4} bytes per IPv4 flow and ${b.flowStateBytesPerFlowV6} per IPv6 flow, ` +
      `${f(b.flowStateBytes)} for 100,000 + 100,000 flows; resident ${f(b.residentBytes)} (base ${f(b.baseBytes)}, flow state, map read ${f(b.mapReadBytes)}, export 0 B); ` +
      `kernel maps ${f(b.kernelBytes)}; total ${f(b.totalBytes)}; limit 1 GiB (memory_limit, from --memory-limit)`);
    expect(describePlan({ budget: b, limit: { bytes: GiB, source: 'memory_limit, from --memory-limit' } })).toBe(r.stdout.split('\n')[1]);
  });
});
