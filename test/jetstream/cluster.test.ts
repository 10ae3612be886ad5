// An R3 stream on a three-server cluster on loopback: the stream leader is killed (kill -9)
// mid-publish; the exporter keeps publishing to the new leader, and the stream ends up with every
// event exactly once (resends of unacked events are absorbed by the duplicate window).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectNats } from '../../src/wire/jetstream';
import { startNatsCluster, type NatsCluster, type NatsServer } from '../../testkit/nats';
import { ensureBuilt } from '../export/helpers';
import { Publisher, storedMsgIds } from './publisher';

let nats: NatsCluster;
const spool = mkdtempSync(join(tmpdir(), 'wgflow-js-r3-'));

beforeAll(async () => {
  ensureBuilt();
  nats = await startNatsCluster();
});
afterAll(async () => {
  await nats?.stop();
  rmSync(spool, { recursive: true, force: true });
});

it('kill -9 of the stream leader mid-publish: every event stored once on the R3 stream', async () => {
  const N = 20_000;
  let killed: NatsServer | null = null;
  let killing = false;
  let ackedAtKill = -1;
  const p = new Publisher({ urls: nats.urls, spool, count: N, seed: 'r3', replicas: 3, timeoutMs: 50_000 }, (r) => {
    if (!killing && (r.acked ?? 0) >= 3_000) {
      killing = true;
      ackedAtKill = r.acked ?? 0;
      void nats.streamLeader('WGFLOW').then(async (leader) => {
        killed = leader;
        await leader?.kill();
      });
    }
  });
  const { code } = await p.exited;
  expect(code, p.stderr).toBe(0);
  const last = p.last;
  expect(last.done).toBe(true);
  expect(killed).not.toBeNull();
  // The leader died with events still to publish (not after the last PubAck).
  expect(ackedAtKill).toBeGreaterThanOrEqual(3_000);
  expect(ackedAtKill).toBeLessThan(N);
  const alive = nats.servers.filter((s) => s.running).map((s) => s.url).join(',');
  expect(alive.split(',')).toHaveLength(2);
  const nc = await connectNats({ servers: alive });
  try {
    const jsm = await jetstreamManager(nc);
    // Right after a leader election the surviving servers may need a moment: requests are retried.
    const { messages, ids, info } = await storedMsgIds(jsm, 'WGFLOW');
    expect(info.config.num_replicas).toBe(3);
    expect(info.cluster?.leader).not.toBe(killed!.name);
    expect(messages).toBe(N);
    expect(ids.size).toBe(N);
  } finally {
    await nc.close();
  }
});
