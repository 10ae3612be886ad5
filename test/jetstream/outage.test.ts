// Every server of the R3 cluster down for 30 s while the exporter keeps taking events: the spool
// holds the backlog (nothing is acked while the servers are down), the cluster comes back on its
// store, the exporter delivers the backlog, and `wgflow consume` writes every event exactly once.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startNatsCluster, type NatsCluster } from '../../testkit/nats';
import { eventIds, exactlyOnce, ensureBuilt } from '../export/helpers';
import { Publisher } from './publisher';
import { startConsume, waitForIds } from './consume-helpers';

const OUTAGE_MS = 30_000;
let nats: NatsCluster;
const dir = mkdtempSync(join(tmpdir(), 'wgflow-js-outage-'));

beforeAll(async () => {
  ensureBuilt();
  nats = await startNatsCluster();
}, 120_000);
afterAll(async () => {
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it('all three servers down for 30 s mid-stream: the spool holds the backlog, then every event is stored and consumed once', async () => {
  // 1,000 events/s for 40 s: events keep coming during the whole outage.
  const N = 40_000;
  const p = new Publisher({ urls: nats.urls, spool: join(dir, 'spool'), count: N, seed: 'outage', replicas: 3, rate: 1000, timeoutMs: 180_000 });
  try {
    // 3 s of events; the rest of the budget is for the fresh cluster placing the R3 stream. A
    // failure names what the servers said, too.
    await p.until('the first 3,000 acks', (l) => (l.acked ?? 0) >= 3_000, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${nats.servers.map((s) => `--- ${s.name}:\n${s.output.slice(-1500)}`).join('\n')}`);
    });
    await Promise.all(nats.servers.map((s) => s.kill()));
    const down = { enqueued: p.last.enqueued ?? 0, acked: p.last.acked ?? 0 };
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    // Nothing acked while every server was down (a PubAck in flight at the kill may land), and
    // the events kept coming: the spool holds them.
    const during = { enqueued: p.last.enqueued ?? 0, acked: p.last.acked ?? 0 };
    expect(during.acked - down.acked).toBeLessThanOrEqual(1_000);
    expect(during.enqueued - down.enqueued).toBeGreaterThan(20_000);
    expect(during.enqueued - during.acked).toBeGreaterThan(20_000);
    for (const s of nats.servers) s.start();
    await nats.waitReady(60_000);
    expect((await p.exited).code, p.stderr).toBe(0);
    expect(p.last.done, p.stderr).toBe(true);
    expect(p.last.acked).toBe(N);
  } finally {
    p.kill();
  }
  const out = join(dir, 'out');
  const c = await startConsume(nats.urls, 'outage', out);
  await waitForIds([out], N, 'every event consumed', 120_000);
  c.signal('SIGTERM');
  expect((await c.exited).code).toBe(0);
  expect(exactlyOnce(out, eventIds('outage', N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
}, 300_000);
