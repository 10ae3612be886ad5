// `wgflow consume` with its output disk full, then freed: the failed commits' messages are not
// acked (nak'ed, delivered again) and their ids leave the de-duplication set, so once the disk
// frees every event is written exactly once. A small tmpfs is the disk (needs root).
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connectNats, ensureStream, streamSettings } from '../../src/wire/jetstream';
import { startNatsServer, type NatsCluster } from '../../testkit/nats';
import { describePrivileged } from '../helpers/env';
import { eventIds, exactlyOnce, processSuite } from '../export/helpers';
import { publishEvents, startConsume, stoppedStats, waitForIds } from './consume-helpers';

const newDir = processSuite();

describePrivileged('consume: output disk full', () => {
  let nats: NatsCluster;
  let nc: NatsConnection;
  beforeAll(async () => {
    nats = await startNatsServer();
    nc = await connectNats({ servers: nats.urls });
    await ensureStream(await jetstreamManager(nc), streamSettings(), { create: true });
  }, 60_000);
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
  });

  it('fills then frees: every event exactly once, commit failures counted', async () => {
    const dir = newDir('con-full');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
    try {
      const out = `${dir}/out`;
      mkdirSync(out);
      const filler = `${dir}/filler`;
      const free = Number(execFileSync('df', ['-B1', '--output=avail', dir], { encoding: 'utf8' }).trim().split('\n').pop());
      // Room for about a hundred lines: the disk fills early in the stream.
      writeFileSync(filler, Buffer.alloc(Math.max(0, free - 128 * 1024)));
      const N = 3000;
      await publishEvents(nc, 'full', 0, N);
      const c = await startConsume(nats.urls, 'full', out);
      await c.waitJson((o) => o.msg === 'output commit failed: those messages were not acked and come back', 'a failed commit', 30_000, 'stderr');
      rmSync(filler);
      await waitForIds([out], N, 'every event once the disk is free');
      c.signal('SIGTERM');
      expect((await c.exited).code).toBe(0);
      expect(exactlyOnce(out, eventIds('full', N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
      const st = stoppedStats(c) as { written: number; commitFailures: number; redeliveries: number };
      expect(st.written).toBe(N);
      expect(st.commitFailures).toBeGreaterThan(0);
      expect(st.redeliveries).toBeGreaterThan(0);
    } finally {
      try {
        execFileSync('umount', ['-l', dir]);
      } catch {
        // Already unmounted.
      }
    }
  });
});
