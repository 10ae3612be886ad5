// `wgflow consume` against a real nats-server: the lines it writes are the ones `wgflow collect`
// writes for the same events, a durable's processes share the work, a consumer killed mid-batch
// and restarted writes every event exactly once, SIGTERM exits cleanly, bad inputs fail clearly.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { keyOfUuid } from '../../src/collector/dedup';
import { connectNats, ensureStream, streamSettings } from '../../src/wire/jetstream';
import { freePort, startNatsServer, type NatsCluster } from '../../testkit/nats';
import { eventIds, exactlyOnce, Proc, processSuite, senderDone, startCollector, startSender } from '../export/helpers';
import { idsOver, publishEvents, startConsume, stoppedStats, waitForFirst, waitForIds } from './consume-helpers';

const newDir = processSuite();
let nats: NatsCluster;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connectNats({ servers: nats.urls });
}, 60_000);

/** A stream of its own for one test (name T, subjects t.flows.>): tests do not see each other's events. */
async function newStream(name: string): Promise<{ stream: string; prefix: string; flags: string[] }> {
  const prefix = `${name.toLowerCase()}.flows`;
  await ensureStream(await jetstreamManager(nc), streamSettings({ stream: name, subjectPrefix: prefix }), { create: true });
  return { stream: name, prefix, flags: ['--stream', name] };
}

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

/** A line without its receive time (the one field that differs between two receivers). */
const comparable = (line: string): string => line.replace(/"receive_timestamp":"[^"]*",/, '');

function linesById(dir: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const l of readFileSync(join(dir, 'events.jsonl'), 'utf8').split('\n')) if (l) m.set((JSON.parse(l) as { id: string }).id, comparable(l));
  return m;
}

describe('wgflow consume', () => {
  it('writes the lines wgflow collect writes for the same events, and drops resends beyond the duplicate window', async () => {
    const N = 2000;
    const { prefix, flags } = await newStream('SAME');
    await publishEvents(nc, 'same', 0, N, { prefix });
    // The same 100 events again under new message ids: the stream keeps them (as it would a
    // resend after its duplicate window); the consumer must not write them twice.
    await publishEvents(nc, 'same', 0, 100, { prefix, msgIdSuffix: '-late' });
    const out = newDir('con-same');
    const c = await startConsume(nats.urls, 'same', out, [...flags, '--filter', 'same.flows.>']);
    await waitForIds([out], N, 'every event consumed');
    // The gRPC path for the same events: wgflow export-test -> wgflow collect.
    const collected = newDir('con-same-collect');
    const col = await startCollector(collected);
    const s = startSender({ collector: col.url, spool: newDir('con-same-spool'), count: N, seed: 'same' });
    expect(await senderDone(s)).toMatchObject({ ok: true, acked: N });
    const viaJs = linesById(out), viaGrpc = linesById(collected);
    expect(viaJs.size).toBe(N);
    expect(viaGrpc.size).toBe(N);
    for (const [id, line] of viaGrpc) expect(viaJs.get(id), id).toBe(line);
    c.signal('SIGTERM');
    expect(await c.exited).toEqual({ code: 0, signal: null });
    const st = stoppedStats(c);
    expect(st).toMatchObject({ consumed: N + 100, written: N, duplicates: 100, malformed: 0, acked: N + 100, pending: 0 });
    expect(exactlyOnce(out, eventIds('same', N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
    col.proc.signal('SIGTERM');
    await col.proc.exited;
  });

  it('two processes on one durable share the work, no event written by both', async () => {
    const N = 20_000;
    const { prefix, flags } = await newStream('SHARE');
    const a = newDir('con-share-a'), b = newDir('con-share-b');
    const pa = await startConsume(nats.urls, 'shared', a, [...flags, '--filter', 'share.flows.*.*', '--batch', '50']);
    const pb = await startConsume(nats.urls, 'shared', b, [...flags, '--filter', 'share.flows.*.*', '--batch', '50']);
    await publishEvents(nc, 'share', 0, N, { prefix });
    const ids = await waitForIds([a, b], N, 'the union of both outputs');
    pa.signal('SIGTERM');
    pb.signal('SIGTERM');
    expect((await pa.exited).code).toBe(0);
    expect((await pb.exited).code).toBe(0);
    const inA = idsOver([a]), inB = idsOver([b]);
    expect(inA.size).toBeGreaterThan(0);
    expect(inB.size).toBeGreaterThan(0);
    expect([...inA.keys()].filter((k) => inB.has(k))).toEqual([]);
    expect([...ids.values()].filter((n) => n > 1)).toEqual([]);
    const want = new Set(eventIds('share', N).map(keyOfUuid));
    expect([...want].filter((k) => !ids.has(k))).toEqual([]);
    expect(ids.size).toBe(N);
  });

  it('a consumer SIGKILLed mid-batch and restarted writes every event exactly once', async () => {
    const N = 30_000;
    const s = await newStream('KILL');
    await publishEvents(nc, 'kill', 0, N, { prefix: s.prefix });
    const out = newDir('con-kill');
    // A short ack wait: what the killed process held unacked comes back soon.
    const flags = [...s.flags, '--ack-wait-ms', '2000', '--batch', '200', '--max-ack-pending', '1000'];
    const first = await startConsume(nats.urls, 'kill', out, flags);
    await waitForFirst([out], 'the first lines');
    await first.kill('SIGKILL');
    const before = idsOver([out]).size;
    expect(before).toBeLessThan(N); // killed mid-stream
    const second = await startConsume(nats.urls, 'kill', out, flags);
    await waitForIds([out], N, 'every event after the restart');
    second.signal('SIGTERM');
    expect((await second.exited).code).toBe(0);
    expect(exactlyOnce(out, eventIds('kill', N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
  });

  it('SIGTERM finishes the batch in hand: everything written is acked, exit 0', async () => {
    const N = 20_000;
    const { prefix, flags } = await newStream('TERM');
    const out = newDir('con-term');
    // What was pulled but not handled when the signal came is delivered again after the ack wait.
    flags.push('--ack-wait-ms', '2000');
    const c = await startConsume(nats.urls, 'term', out, flags);
    const pub = publishEvents(nc, 'term', 0, N, { prefix });
    await waitForFirst([out], 'the first lines');
    c.signal('SIGTERM');
    expect(await c.exited).toEqual({ code: 0, signal: null });
    await pub;
    const st = stoppedStats(c) as { consumed: number; written: number; duplicates: number; acked: number; malformed: number };
    expect(st.acked).toBe(st.written + st.duplicates);
    expect(idsOver([out]).size).toBe(st.written);
    // A restart takes up the rest: nothing lost, nothing twice.
    const again = await startConsume(nats.urls, 'term', out, flags);
    await waitForIds([out], N, 'the rest after the restart');
    again.signal('SIGTERM');
    expect((await again.exited).code).toBe(0);
    expect(exactlyOnce(out, eventIds('term', N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
  });
});

describe('wgflow consume: stats', () => {
  it('reports the lag at start and in the stats lines, down to 0 when caught up', async () => {
    const N = 3000;
    const { prefix, flags } = await newStream('LAG');
    await publishEvents(nc, 'lag', 0, N, { prefix });
    const out = newDir('con-lag');
    const c = await startConsume(nats.urls, 'lag', out, [...flags, '--stats-interval-ms', '200']);
    expect(c.json('stderr').find((o) => o.msg === 'consuming')).toMatchObject({ pending: N });
    await waitForIds([out], N, 'every event');
    // Acks follow the commit of each batch: wait for the line that has them all.
    const st = await c.waitJson((o) => o.msg === 'stats' && o.consumed === N && o.acked === N, 'a stats line with everything consumed and acked', 20_000, 'stderr');
    expect(st).toMatchObject({ consumed: N, written: N, duplicates: 0, redeliveries: 0, acked: N, pending: 0 });
    c.signal('SIGTERM');
    expect((await c.exited).code).toBe(0);
  });

  it('serves Prometheus metrics that equal the stats, the lag read at scrape time; promtool accepts them', async () => {
    const N = 2000;
    const { prefix, flags } = await newStream('METRICS');
    await publishEvents(nc, 'metrics', 0, N, { prefix });
    const out = newDir('con-metrics');
    const c = await startConsume(nats.urls, 'metrics', out, [...flags, '--metrics-listen', '127.0.0.1:0', '--ack-wait-ms', '60000']);
    const addr = String((await c.waitJson((o) => o.msg === 'serving metrics', 'the "serving metrics" line', 10_000, 'stderr')).metrics);
    await waitForIds([out], N, 'every event');
    // More events while nothing pulls them would show as lag; here: everything consumed, lag 0,
    // then 500 more published and consumed.
    await publishEvents(nc, 'metrics', N, 500, { prefix });
    await waitForIds([out], N + 500, 'the next 500');
    const text = await scrape(addr);
    const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('wgflow_consumer_events_written_total')).toBe(N + 500);
    expect(value('wgflow_consumer_messages_total')).toBe(N + 500);
    expect(value('wgflow_consumer_duplicates_total')).toBe(0);
    expect(value('wgflow_consumer_redeliveries_total')).toBe(0);
    expect(value('wgflow_consumer_pending_messages')).toBe(0);
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);
    c.signal('SIGTERM');
    expect((await c.exited).code).toBe(0);
  });
});

/** GET http://addr/metrics. */
async function scrape(addr: string): Promise<string> {
  const r = await fetch(`http://${addr}/metrics`);
  expect(r.status).toBe(200);
  return r.text();
}

describe('wgflow consume: bad inputs', () => {
  const failed = async (args: string[]): Promise<{ code: number | null; stderr: string }> => {
    const p = new Proc(['consume', ...args], 'consume (bad input)');
    const { code } = await p.exited;
    return { code, stderr: p.stderr };
  };

  it('unreachable servers', async () => {
    const port = await freePort();
    const r = await failed(['--jetstream', `nats://127.0.0.1:${port}`, '--durable', 'd', '--out', newDir('bad')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`cannot reach the NATS servers nats://127.0.0.1:${port}.*--jetstream`));
  });

  it('an unknown stream', async () => {
    const r = await failed(['--jetstream', nats.urls, '--durable', 'd', '--out', newDir('bad'), '--stream', 'NOSUCH']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/stream NOSUCH does not exist/);
  });

  it('a durable that exists with another filter', async () => {
    const out = newDir('bad');
    await newStream('WGFLOW');
    const c = await startConsume(nats.urls, 'filtered', out, ['--filter', 'wgflow.flows.*.end']);
    c.signal('SIGTERM');
    await c.exited;
    const r = await failed(['--jetstream', nats.urls, '--durable', 'filtered', '--out', out, '--filter', 'wgflow.flows.*.start']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/durable "filtered" .* exists with other settings: its filter is "wgflow.flows.\*.end", not "wgflow.flows.\*.start" \(--filter\)/);
  });

  it('one output directory, one writer: a second consume or collect on it is refused, naming the process', async () => {
    const out = newDir('bad-shared-out');
    await newStream('WGFLOW');
    const c = await startConsume(nats.urls, 'owner', out);
    const r = await failed(['--jetstream', nats.urls, '--durable', 'other', '--out', out]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`output directory ${out} is in use by process ${c.pid}: give each writer its own directory`);
    const col = new Proc(['collect', '--listen', '127.0.0.1:0', '--out', out], 'collect (shared out)');
    expect((await col.exited).code).toBe(1);
    expect(col.stderr).toContain(`is in use by process ${c.pid}`);
    c.signal('SIGTERM');
    expect((await c.exited).code).toBe(0);
    // A lock left by a SIGKILLed owner is taken over.
    const k = await startConsume(nats.urls, 'owner', out);
    await k.kill('SIGKILL');
    const again = await startConsume(nats.urls, 'owner', out);
    again.signal('SIGTERM');
    expect((await again.exited).code).toBe(0);
  });

  it('bad flags name the flag, exit 2', async () => {
    const base = ['--jetstream', nats.urls, '--out', newDir('bad')];
    const cases: Array<[string[], RegExp]> = [
      [['--out', 'x', '--durable', 'd'], /--jetstream URLS is required/],
      [base, /--durable NAME is required/],
      [[...base, '--durable', 'a.b'], /--durable: "a.b" is not a consumer name/],
      [['--jetstream', 'http://h:1', '--durable', 'd', '--out', 'x'], /--jetstream: "http:\/\/h:1" has scheme http/],
      [[...base, '--durable', 'd', '--filter', 'a..b'], /--filter: "a..b" is not a subject/],
      [[...base, '--durable', 'd', '--ack-wait-ms', '10'], /--ack-wait-ms: "10" is not an integer >= 1000/],
      [[...base, '--durable', 'd', '--batch', '500', '--max-ack-pending', '100'], /--batch 500 is larger than --max-ack-pending 100/],
      [[...base, '--durable', 'd', '--token', 't', '--user', 'u', '--password', 'p'], /one way to authenticate/],
      [[...base, '--durable', 'd', '--token-file', '/nonexistent/t'], /--token-file: cannot read \/nonexistent\/t/],
      [[...base, '--durable', 'd', '--stream', 'a.b'], /--stream: /],
      [[...base, '--durable', 'd', '--bogus'], /Unknown option '--bogus'/],
      [[...base, '--durable', 'd', '--metrics-listen', '9617'], /--metrics-listen: expected HOST:PORT/],
    ];
    for (const [args, re] of cases) {
      const r = await failed(args);
      expect(r.stderr, args.join(' ')).toMatch(re);
      expect(r.code, args.join(' ')).toBe(2);
    }
  });
});

describe('wgflow consume: credentials', () => {
  let secured: NatsCluster;
  beforeAll(async () => {
    secured = await startNatsServer({ extraConfig: 'authorization { token: "right-token" }' });
  }, 60_000);
  afterAll(async () => {
    await secured?.stop();
  });

  it('a wrong token is refused with a message naming the credential flags; the right one works', async () => {
    const r = new Proc(['consume', '--jetstream', secured.urls, '--token', 'wrong-token', '--durable', 'd', '--out', newDir('tok')], 'consume (wrong token)');
    expect((await r.exited).code).toBe(1);
    expect(r.stderr).toMatch(/refused the credentials.*--token/);
    const none = new Proc(['consume', '--jetstream', secured.urls, '--durable', 'd', '--out', newDir('tok')], 'consume (no token)');
    expect((await none.exited).code).toBe(1);
    expect(none.stderr).toMatch(/refused the credentials/);
    const good = new Proc(['consume', '--jetstream', secured.urls, '--token', 'right-token', '--durable', 'd', '--out', newDir('tok')], 'consume (right token)');
    expect((await good.exited).code).toBe(1);
    expect(good.stderr).toMatch(/stream WGFLOW does not exist/); // past authentication
  });
});
