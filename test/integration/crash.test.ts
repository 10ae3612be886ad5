// A crash loses nothing accepted: SIGKILL the daemon mid-flow, start it again on the same spool and
// pinned maps. The collector ends up with the flow exactly once (one START, one END, one flow id),
// the restarted daemon adopts the live flow, and what was counted before the crash is kept.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Testbed, WgEndpoint } from '../../testkit/testbed';
import { fromJsonLine } from '../../src/model/json';
import type { FlowEvent } from '../../src/model/event';
import { describePrivileged, killBackground, run, sleep, spawnIn, waitForLine } from '../helpers/env';
import { DaemonProc, TRAFFIC, WGFLOW } from '../helpers/daemon';
import { budget } from '../../testkit/slow';

describePrivileged('crash and restart', () => {
  let tb: Testbed;
  let a: WgEndpoint, b: WgEndpoint;
  const out = mkdtempSync(join(tmpdir(), 'wgflow-crash-'));
  const daemons: DaemonProc[] = [];

  const collected = (): FlowEvent[] => {
    const f = join(out, 'events.jsonl');
    return existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => fromJsonLine(l).event) : [];
  };
  const waitCollected = async (pred: (e: FlowEvent[]) => boolean): Promise<FlowEvent[]> => {
    for (const deadline = Date.now() + budget(20_000); Date.now() < deadline; ) {
      const evs = collected();
      if (pred(evs)) return evs;
      await sleep(100);
    }
    throw new Error(`collector output: ${collected().map((e) => `${e.type} ${e.source.port}`).join(', ')}`);
  };

  beforeAll(async () => {
    tb = new Testbed();
    ({ a, b } = tb.wgPair());
    const col = spawnIn(b.ns, 'node', [WGFLOW, 'collect', '--listen', '127.0.0.1:50091', '--out', out, '--token', 'crash-test']);
    await waitForLine(col, /listening/, 10_000, 'stderr');
    const echo = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-echo', '9200']);
    await waitForLine(echo, /ready/);
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]);
  });

  afterAll(async () => {
    for (const d of daemons) await d.stop('SIGKILL');
    daemons[0]?.cleanup();
    await killBackground();
    await tb?.destroy();
    rmSync(out, { recursive: true, force: true });
  });

  it('SIGKILL mid-flow, restart: the flow is adopted and reported exactly once', async () => {
    const cfg = {
      interfaces: [b.ifname],
      collector: { url: 'grpc://127.0.0.1:50091', token: 'crash-test' },
      lifecycle: { udp_timeout_s: 2, interim_interval_s: 0 },
    };
    const first = await DaemonProc.start(b.ns, cfg);
    daemons.push(first);
    // 60 datagrams, 100 ms apart, from one socket: a flow that outlives the crash.
    const paced = spawnIn(a.ns, 'node', [TRAFFIC, 'udp-paced', b.ip4, '9200', '60', '200', '100']);
    await waitCollected((es) => es.some((e) => e.type === 'START' && e.destination.port === 9200));
    await sleep(1000);
    const before = JSON.parse(first.ctl(['flows', '--json']).stdout) as Array<{ rxBytes: number; port: string }>;
    const countedBefore = before.find((f) => f.port === '9200')?.rxBytes ?? 0;
    expect(countedBefore).toBeGreaterThan(0);
    expect(await first.stop('SIGKILL')).toBe(128);

    const second = await DaemonProc.start(b.ns, cfg, first);
    daemons.push(second);
    // On a slow machine (the VM under emulation) the restart can outlast the 6 s of traffic.
    if (paced.exitCode === null && paced.signalCode === null) await new Promise((r) => paced.once('exit', r));
    const evs = await waitCollected((es) => es.some((e) => e.type === 'END' && e.destination.port === 9200));
    const flow = evs.filter((e) => e.destination.port === 9200);
    // One START (the restart re-derives the same event id; the collector keeps it once) and one END.
    expect(flow.map((e) => e.type)).toEqual(['START', 'END']);
    expect(flow[1].flowId).toBe(flow[0].flowId);
    expect(new Set(evs.map((e) => e.eventId)).size).toBe(evs.length);
    // What was counted before the crash is in the END (the gap while nothing was attached is not).
    expect(flow[1].rxBytes).toBeGreaterThanOrEqual(countedBefore);
    expect(flow[1].rxPackets).toBeLessThanOrEqual(60);
    const status = JSON.parse(second.ctl(['status', '--json']).stdout) as { events: Record<string, number> };
    expect(status.events.START).toBeGreaterThanOrEqual(1);
    const metrics = second.metrics();
    expect(Number(/^wgflow_flows_adopted_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
  });
});
