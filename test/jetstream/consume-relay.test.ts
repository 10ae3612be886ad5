// `wgflow collect --jetstream`: the relay. Events sent over gRPC (wgflow export-test) are published
// to the stream and acked to the sender only on the PubAck; `wgflow consume` then writes each once.
// With the stream unreachable nothing is acked: the sender keeps its events and sends them again.
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connectNats, ensureStream, streamSettings } from '../../src/wire/jetstream';
import { startNatsServer, type NatsCluster } from '../../testkit/nats';
import { budget } from '../../testkit/slow';
import { eventIds, exactlyOnce, Proc, processSuite, senderDone, startSender } from '../export/helpers';
import { startConsume, waitForAll, waitForIds } from './consume-helpers';

const newDir = processSuite();
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

async function startRelay(extra: string[] = []): Promise<{ proc: Proc; url: string }> {
  const proc = new Proc(['collect', '--listen', '127.0.0.1:0', '--jetstream', nats.urls, ...extra], 'relay');
  const line = await proc.waitJson((o) => o.msg === 'listening', 'the "listening" log line', budget(15_000), 'stderr');
  return { proc, url: `grpc://127.0.0.1:${String(line.address).split(':').pop()}` };
}

const stat = (p: Proc, key: string): number => Number(p.json().filter((o) => o.event === 'stats').pop()?.[key] ?? 0);

describe('wgflow collect --jetstream (relay)', () => {
  it('gRPC in, stream out, acked on the PubAck; consume writes every event once', async () => {
    const N = 3000;
    const relay = await startRelay(['--metrics-listen', '127.0.0.1:0']);
    const s = startSender({ collector: relay.url, spool: newDir('relay-spool'), count: N, seed: 'relay' });
    expect(await senderDone(s)).toMatchObject({ ok: true, acked: N });
    // The same events again (a sender that lost its acks): the stream reports duplicates.
    const again = startSender({ collector: relay.url, spool: newDir('relay-spool2'), count: 500, seed: 'relay' });
    expect(await senderDone(again)).toMatchObject({ ok: true, acked: 500 });
    const out = newDir('relay-out');
    const c = await startConsume(nats.urls, 'relay', out);
    await waitForIds([out], N, 'every relayed event');
    c.signal('SIGTERM');
    expect((await c.exited).code).toBe(0);
    expect(exactlyOnce(out, eventIds('relay', N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
    // The metrics say the same as the stats, and promtool accepts them.
    const addr = String(relay.proc.json('stderr').find((o) => o.msg === 'listening')?.metrics);
    const text = await (await fetch(`http://${addr}/metrics`)).text();
    const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('wgflow_collector_events_received_total')).toBe(N + 500);
    expect(value('wgflow_collector_events_stored_total')).toBe(N);
    expect(value('wgflow_collector_duplicates_total')).toBe(500);
    expect(value('wgflow_relay_publish_failures_total')).toBe(0);
    expect(value('wgflow_relay_publish_latency_seconds_count')).toBe(N + 500);
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);
    relay.proc.signal('SIGTERM');
    expect((await relay.proc.exited).code).toBe(0);
    const stopped = relay.proc.json('stderr').find((o) => o.msg === 'stopped');
    expect(stopped).toMatchObject({ received: N + 500, written: N, duplicates: 500, publishFailures: 0 });
  });

  it('the stream unreachable: nothing acked, the sender resends once it is back', async () => {
    const N = 1000;
    const relay = await startRelay(['--publish-timeout-ms', '1000']);
    await nats.servers[0].stop();
    const s = startSender({ collector: relay.url, spool: newDir('relay-down-spool'), count: N, seed: 'relay-down' });
    // The sender tries while the server is down; the relay refuses to ack.
    await relay.proc.waitJson((o) => o.msg === 'publishing to JetStream failed; not acknowledging (the sender resends)', 'a failed publish', budget(30_000), 'stderr');
    expect(stat(s, 'acked')).toBe(0);
    nats.servers[0].start();
    await nats.waitReady();
    expect(await senderDone(s, budget(50_000))).toMatchObject({ ok: true, acked: N });
    const out = newDir('relay-down-out');
    const c = await startConsume(nats.urls, 'relay-down', out);
    await waitForAll([out], eventIds('relay-down', N), 'every event once the stream was back');
    c.signal('SIGTERM');
    await c.exited;
    const mine = exactlyOnce(out, eventIds('relay-down', N));
    expect(mine.missing).toEqual([]);
    expect(mine.duplicated).toEqual([]);
    relay.proc.signal('SIGTERM');
    await relay.proc.exited;
  });

  it('bad relay inputs: an unknown stream, a prefix the stream does not take', async () => {
    const run = async (args: string[]): Promise<{ code: number | null; stderr: string }> => {
      const p = new Proc(['collect', '--listen', '127.0.0.1:0', '--jetstream', nats.urls, ...args], 'relay (bad input)');
      const { code } = await p.exited;
      return { code, stderr: p.stderr };
    };
    const a = await run(['--stream', 'NOSUCH']);
    expect(a.code).toBe(1);
    expect(a.stderr).toMatch(/stream NOSUCH does not exist/);
    const b = await run(['--subject-prefix', 'other.flows']);
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/--subject-prefix other.flows: stream WGFLOW takes subjects \["wgflow.flows.>"\], not other.flows.>/);
  });
});
