// JetStream over our own NATS client (src/nats/jetstream-publish.ts, jetstream-pull.ts) against
// real nats-server processes, compared with nats.js where both can do the same: the same
// messages end up in the stream, PubAck errors (no stream, a stream's limit), the exporter
// through a server restart, PubAck timeouts (the server SIGSTOPped) and a connection cut in the
// middle of a PubAck; pulls with ack, nak and term, a missing durable, a deleted one, a durable
// whose request limits refuse every pull (409 Exceeded ...: retried after a delay, told once;
// `wgflow consume` refuses such a durable up front).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AckPolicy, DiscardPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { Connection } from '../../src/nats/connection';
import { JetStreamPublisher, type PubAckResult } from '../../src/nats/jetstream-publish';
import { ackInfoOf, PullConsumer, type PullStatus } from '../../src/nats/jetstream-pull';
import { ownConnectionOptions } from '../../src/nats/options';
import { JetStreamExporter } from '../../src/output/jetstream/exporter';
import { JetStreamConsumer } from '../../src/collector/jetstream-consumer';
import { collectedIds } from '../export/helpers';
import { cuttingProxy } from './cutting-proxy';
import { addressOf, connectNats, messageHeaders, messageOf, MSG_ID_HEADER, SubjectCache } from '../../src/wire/jetstream';
import { writeFlowEvent } from '../../src/wire/writer';
import { syntheticEvent } from '../../testkit/synthetic';
import { startNatsServer, type NatsCluster } from '../../testkit/nats';
import { budget } from '../../testkit/slow';

const clusters: NatsCluster[] = [];
const conns: Array<Connection | NatsConnection> = [];
const exporters: JetStreamExporter[] = [];
const dirs: string[] = [];
const servers: Server[] = [];

afterEach(async () => {
  for (const e of exporters.splice(0)) await e.stop({ deadlineMs: 0 });
  for (const c of conns.splice(0)) await c.close().catch(() => undefined);
  for (const s of servers.splice(0)) s.close();
  for (const c of clusters.splice(0)) await c.stop();
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + budget(ms);
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await sleep(25);
  }
}

async function server(extraConfig?: string): Promise<NatsCluster> {
  const c = await startNatsServer({ extraConfig });
  clusters.push(c);
  return c;
}

async function own(urls: string): Promise<Connection> {
  const c = await Connection.connect({ servers: urls.split(','), timeoutMs: 3000, reconnectTimeWaitMs: 200 });
  conns.push(c);
  return c;
}

async function natsjs(urls: string): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> {
  const nc = await connectNats({ servers: urls });
  conns.push(nc);
  return { nc, jsm: await jetstreamManager(nc) };
}

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'wgflow-js-own-'));
  dirs.push(d);
  return d;
}

/** Every message of a stream: subject, Nats-Msg-Id, payload (hex). */
async function stored(jsm: JetStreamManager, stream: string): Promise<Array<{ subject: string; id: string; data: string }>> {
  const info = await jsm.streams.info(stream);
  const out: Array<{ subject: string; id: string; data: string }> = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (m) out.push({ subject: m.subject, id: m.header.get(MSG_ID_HEADER), data: Buffer.from(m.data).toString('hex') });
  }
  return out;
}

/** Publishes with our publisher and waits for every answer; the results by token. */
async function publishAll(c: Connection, msgs: Array<{ subject: string; msgId: string; payload: Buffer }>): Promise<Map<number, PubAckResult>> {
  const results = new Map<number, PubAckResult>();
  const pub = new JetStreamPublisher(c, (token, r) => results.set(token, r));
  pub.start();
  msgs.forEach((m, i) => pub.publish(m.subject, m.msgId, m.payload, i + 1));
  await until('every PubAck', () => results.size === msgs.length);
  pub.stop();
  return results;
}

describe('JetStream publish over our client', () => {
  it('stores exactly what nats.js stores for the same events (subject, Nats-Msg-Id, payload), and reports resends as duplicates', async () => {
    const nats = await server();
    const { nc, jsm } = await natsjs(nats.urls);
    await jsm.streams.add({ name: 'OURS', subjects: ['ours.>'] });
    await jsm.streams.add({ name: 'THEIRS', subjects: ['theirs.>'] });
    const evs = Array.from({ length: 300 }, (_, i) => syntheticEvent('compare', i));
    const c = await own(nats.urls);
    const first = await publishAll(c, evs.map((e) => messageOf('ours', e)));
    expect([...first.values()].every((r) => r.ok && !r.duplicate)).toBe(true);
    const js = jetstream(nc);
    for (const e of evs) {
      const m = messageOf('theirs', e);
      await js.publish(m.subject, m.payload, { headers: messageHeaders(m.msgId) });
    }
    const a = await stored(jsm, 'OURS'), b = await stored(jsm, 'THEIRS');
    expect(a).toHaveLength(evs.length);
    expect(a.map((m) => ({ ...m, subject: m.subject.replace(/^ours\./, '') }))).toEqual(b.map((m) => ({ ...m, subject: m.subject.replace(/^theirs\./, '') })));
    // The raw-id form writes the same header as the text form.
    const again = new Map<number, PubAckResult>();
    const pub = new JetStreamPublisher(c, (t, r) => again.set(t, r));
    pub.start();
    evs.forEach((e, i) => {
      const payload = writeFlowEvent(e);
      pub.publishRawId(messageOf('ours', e).subject, payload, 2, payload, i + 1); // the id is field 1: bytes 2..18
    });
    await until('every PubAck of the resend', () => again.size === evs.length);
    expect([...again.values()].every((r) => r.ok && r.duplicate)).toBe(true);
    expect((await jsm.streams.info('OURS')).state.messages).toBe(evs.length);
  });

  it('a subject no stream takes: 503 no responders; a stream at its limit: the PubAck error, with its description', async () => {
    const nats = await server();
    const { jsm } = await natsjs(nats.urls);
    await jsm.streams.add({ name: 'FULL', subjects: ['full.>'], max_msgs: 2, discard: DiscardPolicy.New });
    const c = await own(nats.urls);
    const r = await publishAll(c, [
      { subject: 'nostream.x', msgId: 'a', payload: Buffer.from('x') },
      { subject: 'full.1', msgId: 'b', payload: Buffer.from('1') },
      { subject: 'full.2', msgId: 'c', payload: Buffer.from('2') },
    ]);
    const r1 = r.get(1);
    expect(r1?.ok).toBe(false);
    expect(r1?.ok === false && r1.error.message).toMatch(/no responders \(503\)/);
    expect(r.get(2)).toEqual({ ok: true, duplicate: false });
    expect(r.get(3)).toEqual({ ok: true, duplicate: false });
    const over = await publishAll(c, [{ subject: 'full.3', msgId: 'd', payload: Buffer.from('3') }]);
    const r4 = over.get(1);
    expect(r4?.ok).toBe(false);
    expect(r4?.ok === false && r4.error.message).toMatch(/the stream refused the message: maximum messages exceeded \(code 503\/10077\)/);
  });

  it('finds the subject of a record as addressOf does, without decoding it', () => {
    const cache = new SubjectCache('wgflow.flows');
    for (let i = 0; i < 400; i++) {
      const ev = { ...syntheticEvent('subjects', i), reporterId: i % 7 === 0 ? `peer.${i % 3}` : 'gw-1' };
      const payload = writeFlowEvent(ev);
      expect(cache.of(payload)).toBe(addressOf('wgflow.flows', payload).subject);
    }
    expect(() => cache.of(Buffer.from([0x0a, 0x01]))).toThrow();
  });

  it('a creds_file is left to nats.js; every other configuration uses our client', () => {
    const creds = join(tempDir(), 'user.creds');
    writeFileSync(creds, '-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.x\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n------END USER NKEY SEED------\n');
    expect(ownConnectionOptions({ servers: 'nats://127.0.0.1:1', credsFile: creds })).toBeNull();
    expect(ownConnectionOptions({ servers: 'nats://127.0.0.1:1', token: 't' })).toMatchObject({ servers: ['nats://127.0.0.1:1'], token: 't' });
    expect(() => ownConnectionOptions({ servers: 'nats://127.0.0.1:1', user: 'u' })).toThrow(/jetstream.user and jetstream.password go together/);
    expect(() => ownConnectionOptions({ servers: 'nats://127.0.0.1:1', caFile: '/nonexistent.pem' })).toThrow(/jetstream.ca_file/);
  });
});

function exporter(servers: string, spool: string, extra: Partial<ConstructorParameters<typeof JetStreamExporter>[0]> = {}): JetStreamExporter {
  const exp = new JetStreamExporter({
    connection: { servers, timeoutMs: 2000, reconnectTimeWaitMs: 200 },
    spool: { dir: spool },
    backoff: { initialMs: 100, maxMs: 500 },
    publishTimeoutMs: 2000,
    logger: pino({ level: 'silent' }),
    ...extra,
  });
  exporters.push(exp);
  exp.start();
  return exp;
}

async function expectStreamHoldsOnce(urls: string, uuids: string[]): Promise<void> {
  const { jsm } = await natsjs(urls);
  const msgs = await stored(jsm, 'WGFLOW');
  expect(msgs).toHaveLength(uuids.length);
  expect(new Set(msgs.map((m) => m.id))).toEqual(new Set(uuids));
}

describe('the exporter over our client, when things go wrong', () => {
  it('the server restarted mid-publish: nothing acked is lost, the unacked are sent again, each stored once', async () => {
    const nats = await server();
    const evs = Array.from({ length: 20_000 }, (_, i) => syntheticEvent('restart-mid', i));
    const exp = exporter(nats.urls, tempDir());
    for (let i = 0; i < evs.length; i += 1000) exp.emit(evs.slice(i, i + 1000));
    await until('some acked', () => exp.stats().acked >= 2000);
    await nats.servers[0].stop();
    const ackedWhileUp = exp.stats().acked;
    expect(ackedWhileUp).toBeLessThan(evs.length);
    await sleep(500);
    nats.servers[0].start();
    await nats.waitReady();
    await until('all acked', () => exp.stats().acked === evs.length && exp.stats().queued === 0, 60_000);
    expect(exp.stats().errors.unreachable).toBeGreaterThan(0);
    await expectStreamHoldsOnce(nats.urls, evs.map((e) => e.eventId));
  });

  it('PubAck timeouts (the server SIGSTOPped): counted as timeouts, published again, each stored once', async () => {
    const nats = await server();
    const evs = Array.from({ length: 3000 }, (_, i) => syntheticEvent('timeout', i));
    const exp = exporter(nats.urls, tempDir(), { publishTimeoutMs: 500 });
    exp.emit(evs.slice(0, 500));
    await until('the first part acked', () => exp.stats().acked === 500);
    const pid = nats.servers[0].pid as number;
    process.kill(pid, 'SIGSTOP');
    try {
      exp.emit(evs.slice(500));
      await until('timeouts counted', () => exp.stats().errors.timeout > 0, 10_000);
      await sleep(1000);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await until('all acked', () => exp.stats().acked === evs.length && exp.stats().queued === 0 && exp.stats().inFlight === 0, 30_000);
    await expectStreamHoldsOnce(nats.urls, evs.map((e) => e.eventId));
  });

  it('the connection cut in the middle of a PubAck (a proxy): reconnects, publishes the unacked again, each stored once', async () => {
    const nats = await server();
    // Cuts the first connection that has passed 30,000 bytes to the client (our publishing
    // connection: nats.js's stream check gets less), 10 bytes into a MSG line.
    const proxy = await cuttingProxy(nats.servers[0].port, 30_000);
    servers.push(proxy.server);
    const url = `nats://127.0.0.1:${proxy.port}`;
    const evs = Array.from({ length: 5000 }, (_, i) => syntheticEvent('cut', i));
    const exp = exporter(url, tempDir());
    exp.emit(evs);
    await until('all acked', () => exp.stats().acked === evs.length && exp.stats().queued === 0 && exp.stats().inFlight === 0, 30_000);
    expect(proxy.cuts()).toBe(1);
    expect(exp.stats().errors.unreachable).toBeGreaterThan(0);
    await expectStreamHoldsOnce(nats.urls, evs.map((e) => e.eventId));
  });
});

describe('JetStream pull over our client', () => {
  async function streamWith(n: number): Promise<{ nats: NatsCluster; jsm: JetStreamManager; ids: string[] }> {
    const nats = await server();
    const { nc, jsm } = await natsjs(nats.urls);
    await jsm.streams.add({ name: 'P', subjects: ['p.>'] });
    const js = jetstream(nc);
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const m = messageOf('p', syntheticEvent('pull', i));
      await js.publish(m.subject, m.payload, { headers: messageHeaders(m.msgId) });
      ids.push(m.msgId);
    }
    return { nats, jsm, ids };
  }

  it('delivers every message once with ack; a nak comes back with its delivery count; a term never does', async () => {
    const { nats, jsm, ids } = await streamWith(50);
    await jsm.consumers.add('P', { durable_name: 'd', ack_policy: AckPolicy.Explicit, ack_wait: 30e9 });
    const c = await own(nats.urls);
    const seen: Array<{ id: string; count: number; seq: number }> = [];
    let pull: PullConsumer | null = null;
    pull = new PullConsumer(c, { stream: 'P', durable: 'd', batch: 20, expiresMs: 2000 }, (m) => {
      const info = ackInfoOf(m.buf, m.replyStart, m.replyEnd);
      const id = m.headers().values.get(MSG_ID_HEADER) ?? '';
      seen.push({ id, count: info?.deliveryCount ?? 0, seq: info?.streamSeq ?? 0 });
      const reply = Buffer.from(m.buf.subarray(m.replyStart, m.replyEnd));
      if (id === ids[0] && info?.deliveryCount === 1) pull?.nak(reply);
      else if (id === ids[1]) pull?.term(reply);
      else pull?.ack(reply);
    }, () => undefined, () => undefined);
    pull.start();
    await until('all delivered, the nak-ed one twice', () => seen.length === 51);
    pull.stop();
    await c.flush();
    expect(seen.filter((s) => s.id === ids[0]).map((s) => s.count)).toEqual([1, 2]);
    expect(seen.filter((s) => s.id === ids[1])).toHaveLength(1);
    expect(new Set(seen.map((s) => s.id))).toEqual(new Set(ids));
    await until('the server has every ack', async () => (await jsm.consumers.info('P', 'd')).num_ack_pending === 0);
    const info = await jsm.consumers.info('P', 'd');
    expect(info.num_pending).toBe(0);
    expect(info.num_redelivered).toBe(0); // the nak'ed one was acked on its second delivery
  });

  it('delivers the same messages as nats.js consume does for a second durable', async () => {
    const { nats, jsm, ids } = await streamWith(120);
    await jsm.consumers.add('P', { durable_name: 'ours', ack_policy: AckPolicy.Explicit });
    await jsm.consumers.add('P', { durable_name: 'theirs', ack_policy: AckPolicy.Explicit });
    const c = await own(nats.urls);
    const ours: string[] = [];
    const pull: PullConsumer = new PullConsumer(c, { stream: 'P', durable: 'ours', batch: 25, expiresMs: 2000 }, (m) => {
      ours.push(`${m.subject} ${m.headers().values.get(MSG_ID_HEADER)} ${m.data.toString('hex')}`);
      pull.ack(Buffer.from(m.buf.subarray(m.replyStart, m.replyEnd)));
    }, () => undefined, () => undefined);
    pull.start();
    const { nc } = await natsjs(nats.urls);
    const theirs: string[] = [];
    const consumer = await jetstream(nc).consumers.get('P', 'theirs');
    const msgs = await consumer.consume({ max_messages: 25, callback: (m) => {
      theirs.push(`${m.subject} ${m.headers?.get(MSG_ID_HEADER)} ${Buffer.from(m.data).toString('hex')}`);
      m.ack();
    } });
    await until('both got everything', () => ours.length === ids.length && theirs.length === ids.length);
    await msgs.close();
    pull.stop();
    expect(ours).toEqual(theirs);
  });

  it('a durable that does not exist: missed heartbeats reported, no messages; a deleted durable ends the pull', async () => {
    const { nats, jsm } = await streamWith(5);
    const c = await own(nats.urls);
    const statuses: PullStatus[] = [];
    let ended: Error | null = null;
    const missing = new PullConsumer(c, { stream: 'P', durable: 'nosuch', batch: 10, expiresMs: 1000 }, () => undefined, (s) => statuses.push(s), (e) => (ended = e));
    missing.start();
    // nats-server 2.9 does not answer a pull for a durable it does not have: the pull's
    // heartbeats never come, and the client says so and asks again.
    await until('missed heartbeats reported', () => statuses.some((s) => s.type === 'heartbeats_missed'));
    missing.stop();
    expect(ended).toBeNull();
    await jsm.consumers.add('P', { durable_name: 'gone', ack_policy: AckPolicy.Explicit });
    let got = 0;
    const pull = new PullConsumer(c, { stream: 'P', durable: 'gone', batch: 10, expiresMs: 5000 }, () => got++, () => undefined, (e) => (ended = e));
    pull.start();
    await until('the messages came', () => got === 5);
    await jsm.consumers.delete('P', 'gone');
    await until('the pull ended', () => ended !== null);
    expect(String(ended)).toMatch(/deleted/);
  });
});

describe('a durable whose request limits refuse our pulls (409 Exceeded ...)', () => {
  it('the pull waits between refused requests and reports the refusal once, not in a loop', async () => {
    const nats = await server();
    const { nc, jsm } = await natsjs(nats.urls);
    await jsm.streams.add({ name: 'P', subjects: ['p.>'] });
    await jsm.consumers.add('P', { durable_name: 'd', ack_policy: AckPolicy.Explicit, max_batch: 10 });
    // Every pull request the server gets (a core subscriber sees the API requests too).
    let requests = 0;
    nc.subscribe('$JS.API.CONSUMER.MSG.NEXT.P.d', { callback: () => { requests++; } });
    await nc.flush();
    const c = await own(nats.urls);
    const st: PullStatus[] = [];
    const pull = new PullConsumer(c, { stream: 'P', durable: 'd', batch: 100, expiresMs: 5000, retryMs: 500 }, () => undefined, (s) => st.push(s), () => undefined);
    pull.start();
    await sleep(2000);
    pull.stop();
    await nc.flush();
    // Before the fix: ~10,000 refused requests and statuses a second.
    expect(st.length).toBeLessThan(20);
    expect(st.filter((s) => s.type === 'exceeded_limits')).toHaveLength(1);
    expect(st[0]).toMatchObject({ type: 'exceeded_limits', code: 409 });
    expect(st[0].type === 'exceeded_limits' && st[0].description).toMatch(/Exceeded MaxRequestBatch/i);
    expect(requests).toBeGreaterThanOrEqual(2); // it does ask again
    expect(requests).toBeLessThan(20);
  });

  it('wgflow consume refuses an existing durable with max_batch below its batch, max_expires below its pull expiry, or max_bytes, naming the setting', async () => {
    const nats = await server();
    const { nc, jsm } = await natsjs(nats.urls);
    await jsm.streams.add({ name: 'WGFLOW', subjects: ['wgflow.flows.>'] });
    await jsm.consumers.add('WGFLOW', { durable_name: 'smallbatch', ack_policy: AckPolicy.Explicit, max_batch: 10 });
    await jsm.consumers.add('WGFLOW', { durable_name: 'shortexp', ack_policy: AckPolicy.Explicit, max_expires: 1e9 });
    await jsm.consumers.add('WGFLOW', { durable_name: 'bytes', ack_policy: AckPolicy.Explicit, max_bytes: 1024 * 1024 });
    const logger = pino({ level: 'silent' });
    const start = (durable: string, batch?: number): Promise<JetStreamConsumer> =>
      JetStreamConsumer.start({ nc, connection: { servers: nats.urls }, stream: 'WGFLOW', durable, batch, out: tempDir(), logger });
    await expect(start('smallbatch')).rejects.toThrow(/durable "smallbatch" on stream "WGFLOW" exists with other settings: its max_batch is 10, below the batch of 1000 \(--batch 10 or less\)\. Use another --durable, or delete it first/);
    await expect(start('shortexp')).rejects.toThrow(/durable "shortexp" .*its max_expires is 1000 ms, below the pull expiry of 5000 ms/);
    await expect(start('bytes')).rejects.toThrow(/durable "bytes" .*its max_bytes is 1048576/);
    // Within the limit: accepted.
    const ok = await start('smallbatch', 10);
    await ok.close();
  });
});

describe('the nats.js paths (creds_file) still work', () => {
  it('the exporter on nats.js publishes every event once; a resend is reported duplicate', async () => {
    const nats = await server();
    const evs = Array.from({ length: 2000 }, (_, i) => syntheticEvent('natsjs-exp', i));
    const spool = tempDir();
    const exp = exporter(nats.urls, spool, { client: 'nats.js' });
    exp.emit(evs);
    await until('all acked', () => exp.stats().acked === evs.length);
    await exp.stop({ deadlineMs: 0 });
    rmSync(spool, { recursive: true, force: true });
    const again = exporter(nats.urls, tempDir(), { client: 'nats.js' });
    again.emit(evs.slice(0, 100));
    await until('the resend acked', () => again.stats().acked === 100);
    expect(again.stats().duplicates).toBe(100);
    await expectStreamHoldsOnce(nats.urls, evs.map((e) => e.eventId));
  });

  it('wgflow consume on nats.js and on our client write the same events, each acked', async () => {
    const nats = await server();
    const { nc, jsm } = await natsjs(nats.urls);
    await jsm.streams.add({ name: 'WGFLOW', subjects: ['wgflow.flows.>'] });
    const js = jetstream(nc);
    const n = 1500;
    for (let i = 0; i < n; i++) {
      const m = messageOf('wgflow.flows', syntheticEvent('natsjs-con', i));
      await js.publish(m.subject, m.payload, { headers: messageHeaders(m.msgId) });
    }
    const logger = pino({ level: 'silent' });
    const outA = tempDir(), outB = tempDir();
    const a = await JetStreamConsumer.start({ nc, stream: 'WGFLOW', durable: 'viaNatsJs', out: outA, logger });
    const b = await JetStreamConsumer.start({ nc, connection: { servers: nats.urls }, stream: 'WGFLOW', durable: 'viaOwn', out: outB, logger });
    try {
      await until('both wrote and acked all', () => a.stats().written === n && a.stats().acked === n && b.stats().written === n && b.stats().acked === n);
    } finally {
      await a.close();
      await b.close();
    }
    for (const d of ['viaNatsJs', 'viaOwn']) {
      await until(`the server has ${d}'s acks`, async () => (await jsm.consumers.info('WGFLOW', d)).num_ack_pending === 0);
    }
    expect(a.stats()).toMatchObject({ duplicates: 0, malformed: 0, redeliveries: 0 });
    expect(b.stats()).toMatchObject({ duplicates: 0, malformed: 0, redeliveries: 0 });
    const idsA = collectedIds(outA), idsB = collectedIds(outB);
    expect(idsA.size).toBe(n);
    expect(new Set(idsB.keys())).toEqual(new Set(idsA.keys()));
  });
});
