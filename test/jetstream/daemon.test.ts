// `wgflow run --jetstream` on the WireGuard testbed with a real nats-server in the daemon's
// namespace: the events land in the stream with the same ids and counters as the daemon's own
// JSON lines; the NATS server down for a while (and the daemon SIGKILLed meanwhile) loses nothing
// and stores nothing twice.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Testbed, type WgEndpoint } from '../../testkit/testbed';
import { fromJsonLine } from '../../src/model/json';
import type { FlowEvent } from '../../src/model/event';
import { subjectOf } from '../../src/wire/jetstream';
import { describePrivileged, killBackground, run, sleep, spawnIn, waitForLine } from '../helpers/env';
import { DaemonProc, TRAFFIC, WGFLOW } from '../helpers/daemon';
import { startNatsServer, type NatsCluster } from '../../testkit/nats';
import { budget } from '../../testkit/slow';
import { ensureBuilt, REPO } from '../export/helpers';

const TOOL = join(REPO, 'build', 'testkit', 'jetstream-tool.js');

interface Stored {
  seq: number;
  subject: string;
  id: string;
  event: FlowEvent;
}

describePrivileged('wgflow run --jetstream', () => {
  let tb: Testbed;
  let a: WgEndpoint, b: WgEndpoint;
  let nats: NatsCluster;
  const daemons: DaemonProc[] = [];

  /** The stream's messages, read inside the namespace (the server listens on its loopback). */
  const stored = (): Stored[] => {
    const r = spawnSync('ip', ['netns', 'exec', b.ns, process.execPath, TOOL, 'dump', '--jetstream', nats.urls], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`dump failed: ${r.stderr}`);
    return r.stdout.split('\n').filter(Boolean).map((l) => {
      const o = JSON.parse(l) as { seq: number; subject: string; id: string; line: string };
      return { seq: o.seq, subject: o.subject, id: o.id, event: fromJsonLine(o.line).event };
    });
  };
  const metric = (d: DaemonProc, name: string): number => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(d.metrics());
    return m ? Number(m[1]) : NaN;
  };
  /** A counter summed over its labels. */
  const total = (d: DaemonProc, name: string): number => [...d.metrics().matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
  const until = async (what: string, cond: () => boolean, ms = 30_000): Promise<void> => {
    for (const end = Date.now() + budget(ms); Date.now() < end; await sleep(200)) if (cond()) return;
    throw new Error(`timed out waiting until ${what}`);
  };
  /** Three short UDP flows to port PORT (5 datagrams each), all ended by the 2 s idle timeout. */
  const flows = async (port: number): Promise<void> => {
    await Promise.all([0, 1, 2].map(() => run(a.ns, 'node', [TRAFFIC, 'udp-paced', b.ip4, String(port), '5', '100', '20'])));
  };

  beforeAll(async () => {
    ensureBuilt();
    tb = new Testbed();
    ({ a, b } = tb.wgPair());
    nats = await startNatsServer({ ns: b.ns });
    for (const port of [9301, 9302, 9303]) {
      const echo = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-echo', String(port)]);
      await waitForLine(echo, /ready/);
    }
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]);
  });

  afterAll(async () => {
    for (const d of daemons) await d.stop('SIGKILL');
    daemons[0]?.cleanup();
    await nats?.stop();
    await killBackground();
    await tb?.destroy();
  });

  const cfg = (): Record<string, unknown> => ({
    interfaces: [b.ifname],
    jetstream: { servers: nats.urls },
    lifecycle: { udp_timeout_s: 2, interim_interval_s: 0 },
  });

  it('the stream holds every event of the JSON lines, same ids, same counters, subjects by reporter and type', async () => {
    const d = await DaemonProc.start(b.ns, cfg());
    daemons.push(d);
    await flows(9301);
    const evs = await d.waitEvents((es) => es.filter((e) => e.type === 'END' && e.destination.port === 9301).length === 3);
    await until('every event acked', () => metric(d, 'wgflow_jetstream_acked_total') >= d.events().length && metric(d, 'wgflow_jetstream_queue_events') === 0);
    const lines = d.events();
    expect(lines.length).toBeGreaterThanOrEqual(evs.length);
    const msgs = stored();
    expect(msgs.map((m) => m.id).sort()).toEqual(lines.map((e) => e.eventId).sort());
    const byId = new Map(msgs.map((m) => [m.id, m]));
    for (const ev of lines) {
      const m = byId.get(ev.eventId)!;
      expect(m.event).toEqual(ev);
      expect(m.subject).toBe(subjectOf('wgflow.flows', ev.reporterId, ev.type));
    }
    const ends = lines.filter((e) => e.type === 'END' && e.destination.port === 9301);
    for (const e of ends) expect(byId.get(e.eventId)!.event.rxBytes).toBe(e.rxBytes);
    expect(metric(d, 'wgflow_jetstream_duplicates_total')).toBe(0);
    expect(metric(d, 'wgflow_jetstream_connected')).toBe(1);
    const status = d.ctl(['status']);
    expect(status.stdout).toMatch(new RegExp(`^jetstream: +connected to ${nats.urls}, stream WGFLOW: ${lines.length} acked \\(0 duplicates\\), 0 in flight, 0 queued$`, 'm'));
    const text = d.metrics();
    expect(text).toMatch(/^wgflow_jetstream_publish_latency_seconds_count \d+/m);
    expect(text).toMatch(/^wgflow_jetstream_errors_total\{kind="unreachable"\} 0/m);
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);
  });

  it('NATS down, the daemon SIGKILLed meanwhile and restarted, NATS back: nothing lost, nothing twice', async () => {
    const first = daemons[0];
    await nats.servers[0].stop();
    await flows(9302);
    await first.waitEvents((es) => es.filter((e) => e.type === 'END' && e.destination.port === 9302).length === 3);
    await until('the backlog is in the spool and the outage counted', () => metric(first, 'wgflow_jetstream_queue_events') >= 6 && total(first, 'wgflow_jetstream_errors_total') > 0);
    expect(metric(first, 'wgflow_jetstream_connected')).toBe(0);
    expect(await first.stop('SIGKILL')).toBe(128);
    nats.servers[0].start();
    await nats.servers[0].waitReady();
    const second = await DaemonProc.start(b.ns, cfg(), first);
    daemons.push(second);
    await until('the backlog delivered', () => metric(second, 'wgflow_jetstream_queue_events') === 0 && stored().length >= second.events().length);
    const lines = second.events();
    const ids = new Set(lines.map((e) => e.eventId));
    const msgs = stored();
    expect(new Set(msgs.map((m) => m.id))).toEqual(ids);
    expect(msgs).toHaveLength(ids.size);
    expect(lines.filter((e) => e.destination.port === 9302 && e.type === 'END')).toHaveLength(3);
  });

  it('end to end: the stream read by wgflow consume gives the lines the gRPC path (wgflow collect) writes for the same traffic', async () => {
    // The daemons of the tests above watch the same interface (their pinned links would stay
    // attached ahead of this one's): stopped and unpinned, this one runs alone.
    for (const x of daemons) await x.stop();
    daemons[0]?.cleanup();
    daemons.length = 0;
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-js-e2e-'));
    try {
      const colOut = join(dir, 'collect'), conOut = join(dir, 'consume');
      // One daemon exports to both: gRPC to a collector, and a stream of its own (created on first use).
      const col = spawnIn(b.ns, 'node', [WGFLOW, 'collect', '--listen', '127.0.0.1:50093', '--out', colOut]);
      await waitForLine(col, /listening/, 15_000, 'stderr');
      const d = await DaemonProc.start(b.ns, { ...cfg(), collector: { url: 'grpc://127.0.0.1:50093' }, jetstream: { servers: nats.urls, stream: 'E2E', subject_prefix: 'e2e.flows' } });
      daemons.push(d);
      await flows(9303);
      /** The JSON lines of a receiver by event id. */
      const lines = (o: string): Map<string, string> => {
        const m = new Map<string, string>();
        let text = '';
        try {
          text = readFileSync(join(o, 'events.jsonl'), 'utf8');
        } catch {
          // not written yet
        }
        for (const l of text.split('\n')) if (l) m.set((JSON.parse(l) as { id: string }).id, l);
        return m;
      };
      const strip = (l: string | undefined): string | undefined => l?.replace(/"receive_timestamp":"[^"]*",/, '');
      const events = (o: string): FlowEvent[] => [...lines(o).values()].map((l) => fromJsonLine(l).event);
      await until('the three flows ended at the collector', () => events(colOut).filter((e) => e.type === 'END' && e.destination.port === 9303).length === 3);
      await until('every event acked on both paths', () => metric(d, 'wgflow_jetstream_queue_events') === 0 && metric(d, 'wgflow_export_queue_events') === 0 && metric(d, 'wgflow_jetstream_acked_total') === metric(d, 'wgflow_export_acks_total'));
      const con = spawnIn(b.ns, 'node', [WGFLOW, 'consume', '--jetstream', nats.urls, '--stream', 'E2E', '--durable', 'e2e', '--out', conOut]);
      await waitForLine(con, /consuming/, 15_000, 'stderr');
      const viaGrpc = lines(colOut);
      const n = viaGrpc.size;
      expect(n).toBe(metric(d, 'wgflow_export_acks_total'));
      await until('consume wrote every event', () => lines(conOut).size >= n);
      const viaJs = lines(conOut);
      expect(viaJs.size).toBe(n);
      // Equal but for the receive time, the one field two receivers cannot share.
      for (const [id, line] of viaGrpc) expect(strip(viaJs.get(id)), id).toBe(strip(line));
      const ends = events(conOut).filter((e) => e.type === 'END' && e.destination.port === 9303);
      expect(ends).toHaveLength(3);
      for (const e of ends) expect([e.txPackets, e.rxPackets]).toEqual([5, 5]);
      con.kill('SIGTERM');
      col.kill('SIGTERM');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
