// The netbird-aggregated profile on real WireGuard traffic: the daemon in a namespace sends to a
// receiver built only from NetBird's published proto (testkit/netbird-receiver.ts, run in the same
// namespace). The aggregates' counters and num_of_* must equal what the daemon's own per-event
// counters (the Prometheus metrics, fed every event of the same run) say, in aligned 1 s windows.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Testbed, WgEndpoint } from '../../testkit/testbed';
import { describePrivileged, killBackground, REPO, run, sleep, spawnIn, waitForLine } from '../helpers/env';
import { DaemonProc, TRAFFIC } from '../helpers/daemon';
import { ensureBuilt } from './helpers';

const RECEIVER = join(REPO, 'build', 'testkit', 'netbird-receiver.js');
const PROTO = join(REPO, 'test', 'fixtures', 'netbird-proto', 'flow.proto');

interface Got {
  id: string; type: string; windowStartMs: number; windowEndMs: number;
  num_of_starts: number; num_of_ends: number; num_of_drops: number;
  rx_bytes: number; tx_bytes: number; rx_packets: number; tx_packets: number;
}

/** A sample's value: the first of name whose labels contain label ('' for a metric without labels). */
function metric(text: string, name: string, label: string): number {
  const labels = label === '' ? '' : `\\{[^}]*${label}[^}]*\\}`;
  const m = new RegExp(`^${name}${labels} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

describePrivileged('netbird-aggregated on real WireGuard traffic', () => {
  let tb: Testbed;
  let a: WgEndpoint, b: WgEndpoint;
  let d: DaemonProc;
  let rx: ChildProcess;
  let out = '';
  let metrics = '';

  beforeAll(async () => {
    ensureBuilt(); // the receiver runs from build/testkit
    tb = new Testbed();
    ({ a, b } = tb.wgPair());
    rx = spawnIn(b.ns, process.execPath, [RECEIVER, PROTO]);
    rx.stdout?.on('data', (x: Buffer) => (out += x.toString()));
    const port = (JSON.parse(await waitForLine(rx, /"ready"/)) as { port: number }).port;
    d = await DaemonProc.start(b.ns, {
      interfaces: [b.ifname],
      collector: { url: `grpc://127.0.0.1:${port}`, profile: 'netbird-aggregated', aggregate_window_s: 1 },
      lifecycle: { udp_timeout_s: 2, icmp_timeout_s: 2, interim_interval_s: 2, tcp_close_grace_ms: 200 },
    });
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]);
    const srv = spawnIn(b.ns, 'node', [TRAFFIC, 'tcp-server', '8080']);
    const echo = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-echo', '9000']);
    await waitForLine(srv, /ready/);
    await waitForLine(echo, /ready/);
    for (let i = 0; i < 3; i++) await run(a.ns, 'node', [TRAFFIC, 'tcp-client', b.ip4, '8080', String(200_000 + i)]);
    await run(a.ns, 'ping', ['-c', '4', '-i', '0.2', b.ip4]);
    await run(a.ns, 'ping', ['-6', '-c', '3', '-i', '0.2', b.ip6]);
    await run(a.ns, 'node', [TRAFFIC, 'udp-paced', b.ip6, '9000', '20', '200', '100'], 20_000);
    // Every flow ended (the UDP and ICMP ones by their 2 s timeout) and the counters stand still.
    let prev = '';
    for (let i = 0; i < 100; i++) {
      await sleep(500);
      const m = d.metrics();
      const now = `${metric(m, 'wgflow_flow_events_total', 'START')} ${metric(m, 'wgflow_flow_events_total', 'END')} ${metric(m, 'wgflow_bytes_total', 'rx')}`;
      if (metric(m, 'wgflow_flows_active', '') === 0 && now === prev) {
        metrics = m;
        break;
      }
      prev = now;
    }
    expect(metrics).not.toBe('');
    expect(await d.stop()).toBe(0); // closes the open window; its records are acked before the exit
  }, 120_000);

  afterAll(async () => {
    d?.cleanup();
    await killBackground();
    await tb?.destroy();
  });

  const got = (): Got[] => {
    const byId = new Map<string, Got>();
    for (const l of out.split('\n')) if (l.includes('"event":"flow"')) {
      const g = JSON.parse(l) as Got;
      byId.set(g.id, g); // receivers de-duplicate by event_id
    }
    return [...byId.values()];
  };

  it('the receiver accepts TYPE_UNKNOWN aggregates only, in aligned 1 s windows (the last one may be closed early by the stop; windows without events send nothing)', () => {
    const g = got();
    expect(g.length).toBeGreaterThan(0);
    for (const r of g) {
      expect(r.type).toBe('TYPE_UNKNOWN');
      expect(r.windowEndMs).toBeGreaterThan(r.windowStartMs);
      expect(r.windowEndMs - r.windowStartMs).toBeLessThanOrEqual(1000);
    }
    const full = g.filter((r) => r.windowEndMs - r.windowStartMs === 1000);
    for (const r of full) expect(r.windowStartMs % 1000).toBe(0);
  });

  it('the sums over the aggregates equal the daemon\'s per-event counters of the same run', () => {
    const g = got();
    const s = (k: keyof Got): number => g.reduce((t, r) => t + (r[k] as number), 0);
    const starts = metric(metrics, 'wgflow_flow_events_total', 'START');
    expect(starts).toBeGreaterThanOrEqual(6); // 3 TCP, ICMP, ICMPv6, UDP at least
    expect(s('num_of_starts')).toBe(starts);
    expect(s('num_of_ends')).toBe(metric(metrics, 'wgflow_flow_events_total', 'END'));
    expect(s('num_of_drops')).toBe(0);
    expect(s('rx_bytes')).toBe(metric(metrics, 'wgflow_bytes_total', 'rx'));
    expect(s('tx_bytes')).toBe(metric(metrics, 'wgflow_bytes_total', 'tx'));
    expect(s('rx_packets')).toBe(metric(metrics, 'wgflow_packets_total', 'rx'));
    expect(s('tx_packets')).toBe(metric(metrics, 'wgflow_packets_total', 'tx'));
  });
});
