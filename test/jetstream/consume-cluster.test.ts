// `wgflow consume` on a three-server cluster with an R3 stream: the stream leader is killed
// (SIGKILL, by PID) in the middle of the stream; the publisher retries what was not acked (same
// message ids) and the consumer carries on with the new leader. Nothing lost, nothing twice.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connectNats, ensureStream, streamSettings } from '../../src/wire/jetstream';
import { startNatsCluster, type NatsCluster } from '../../testkit/nats';
import { eventIds, exactlyOnce, processSuite } from '../export/helpers';
import { publishEvents, startConsume, stoppedStats, waitForIds } from './consume-helpers';

const newDir = processSuite();
let cluster: NatsCluster;
let nc: NatsConnection;

beforeAll(async () => {
  cluster = await startNatsCluster();
  nc = await connectNats({ servers: cluster.urls, reconnectTimeWaitMs: 200 });
  await ensureStream(await jetstreamManager(nc), streamSettings({ replicas: 3 }), { create: true });
}, 90_000);

afterAll(async () => {
  await nc?.close();
  await cluster?.stop();
});

describe('wgflow consume: R3 cluster', () => {
  it('the stream leader killed mid-stream: nothing lost, nothing twice', async () => {
    const N = 20_000;
    const out = newDir('con-r3');
    const c = await startConsume(cluster.urls, 'r3', out, ['--ack-wait-ms', '3000']);
    const leader = await cluster.streamLeader('WGFLOW');
    expect(leader).not.toBeNull();
    let killed: Promise<void> | null = null;
    await publishEvents(nc, 'r3', 0, N, {
      onAcked: (n) => {
        if (n === Math.floor(N / 3) && killed === null) killed = leader!.kill();
      },
    });
    await killed;
    expect(leader!.running).toBe(false);
    await waitForIds([out], N, 'every event after the leader was killed', 50_000);
    c.signal('SIGTERM');
    expect((await c.exited).code).toBe(0);
    expect(exactlyOnce(out, eventIds('r3', N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
    const st = stoppedStats(c) as { written: number };
    expect(st.written).toBe(N);
  });
});
