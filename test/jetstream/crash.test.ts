// kill -9 of the exporter mid-publish, then a restart on the same spool: every event reaches the
// stream, and what the first run published but had not yet removed from the spool is sent again
// and absorbed by the stream's duplicate window (nothing stored twice).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectNats } from '../../src/wire/jetstream';
import { syntheticEvent } from '../../testkit/synthetic';
import { startNatsServer, type NatsCluster } from '../../testkit/nats';
import { ensureBuilt } from '../export/helpers';
import { Publisher, storedMsgIds, type PublishRecord } from './publisher';

let nats: NatsCluster;
const spool = mkdtempSync(join(tmpdir(), 'wgflow-js-crash-'));
const procs: Publisher[] = [];

beforeAll(async () => {
  ensureBuilt();
  nats = await startNatsServer();
});
afterAll(async () => {
  for (const p of procs) p.kill();
  await nats?.stop();
  rmSync(spool, { recursive: true, force: true });
});

/** Runs the publisher until it exits, or SIGKILLs it once acked >= killAt; its last records. */
async function publisher(count: number, killAt?: number): Promise<{ signal: NodeJS.Signals | null; last: PublishRecord }> {
  const p = new Publisher({ urls: nats.urls, spool, count, seed: 'crash', batch: 200 }, (r, self) => {
    if (killAt !== undefined && (r.acked ?? 0) >= killAt) self.kill();
  });
  procs.push(p);
  const { code, signal } = await p.exited;
  if (code !== 0 && signal !== 'SIGKILL') throw new Error(`publisher exited ${code}: ${p.stderr}`);
  return { signal, last: p.last };
}

it('SIGKILL mid-publish, restart on the same spool: every event stored exactly once', async () => {
  const N = 20_000;
  const first = await publisher(N, 3_000);
  expect(first.signal).toBe('SIGKILL');
  const nc = await connectNats({ servers: nats.urls });
  try {
    const jsm = await jetstreamManager(nc);
    const afterCrash = (await jsm.streams.info('WGFLOW')).state.messages;
    expect(afterCrash).toBeGreaterThanOrEqual(3_000);
    expect(afterCrash).toBeLessThan(N);
    const second = await publisher(0);
    expect(second.last.done, JSON.stringify(second.last)).toBe(true);
    // Everything the spool still held went out again; what the stream had is reported duplicate.
    expect(second.last.acked as number).toBeGreaterThanOrEqual(N - afterCrash);
    const { messages, ids } = await storedMsgIds(jsm, 'WGFLOW');
    expect(messages).toBe(N);
    expect(ids.size).toBe(N);
    for (let i = 0; i < N; i++) expect(ids.has(syntheticEvent('crash', i).eventId)).toBe(true);
  } finally {
    await nc.close();
  }
});
