// The JetStream contract (src/wire/jetstream.ts) against a real nats-server: subjects, the
// message form, stream creation, the check of an existing stream, de-duplication by Nats-Msg-Id.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  addressOf, connectNats, ensureStream, formatDuration, JETSTREAM_DEFAULTS, messageHeaders, messageOf, MSG_ID_HEADER, parseDuration, parseServers,
  reporterToken, StreamMismatchError, StreamMissingError, streamSettings, streamSummary, subjectOf, subjectPrefixProblem,
} from '../../src/wire/jetstream';
import { readFlowEvent } from '../../src/wire/reader';
import { syntheticEvent } from '../../testkit/synthetic';
import { startNatsCluster, startNatsServer, type NatsCluster } from '../../testkit/nats';

describe('subjects', () => {
  it('names the reporter and the event type', () => {
    expect(subjectOf('wgflow.flows', 'peer-a', 'START')).toBe('wgflow.flows.peer-a.start');
    expect(subjectOf('x', 'p', 'UPDATE')).toBe('x.p.update');
    expect(subjectOf('wgflow.flows', '', 'END')).toBe('wgflow.flows._.end');
  });

  it('makes any reporter id one valid, reversible token', () => {
    for (const id of ['a.b', 'a*b', 'a>b', 'a b', 'tab\there', '100%', 'ünï', 'x\ny', '.', '>']) {
      const t = reporterToken(id);
      expect(t, id).toMatch(/^[\x21-\x7e]+$/);
      expect(t, id).not.toMatch(/[.*>]/);
      expect(decodeURIComponent(t), id).toBe(id);
    }
    expect(reporterToken('a.b')).toBe('a%2Eb');
    expect(reporterToken('peer-1_A')).toBe('peer-1_A');
    expect(reporterToken('')).toBe('_');
  });

  it('checks prefixes, servers and durations', () => {
    expect(subjectPrefixProblem('wgflow.flows')).toBeNull();
    expect(subjectPrefixProblem('a..b')).toMatch(/empty token/);
    expect(subjectPrefixProblem('a.>')).toMatch(/wildcard/);
    expect(parseServers('nats://h:1, h2:2,tls://h3:3')).toEqual(['nats://h:1', 'nats://h2:2', 'tls://h3:3']);
    expect(() => parseServers('', '--jetstream')).toThrow(/--jetstream: no server/);
    expect(() => parseServers('http://h:1')).toThrow(/scheme http/);
    expect(() => parseServers('nats://u:p@h:1')).toThrow(/creds/);
    expect(parseDuration('2m')).toBe(120_000);
    expect(parseDuration('7d')).toBe(JETSTREAM_DEFAULTS.maxAgeMs);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('soon')).toBeUndefined();
    expect(formatDuration(120_000)).toBe('2m');
    expect(() => streamSettings({ replicas: 2 })).toThrow(/jetstream.replicas: expected 1 or 3/);
  });

  it('the payload is the flow.FlowEvent and the address is read from it without decoding', () => {
    const ev = { ...syntheticEvent('contract', 1), reporterId: 'peer.one' };
    const m = messageOf('wgflow.flows', ev);
    expect(m.msgId).toBe(ev.eventId);
    expect(m.subject).toBe(`wgflow.flows.peer%2Eone.${ev.type.toLowerCase()}`);
    expect(addressOf('wgflow.flows', m.payload)).toEqual({ subject: m.subject, msgId: m.msgId });
    const r = readFlowEvent(m.payload);
    expect(r.kind).toBe('event');
    if (r.kind === 'event') expect(r.event).toEqual(ev);
  });
});

describe('a real nats-server', () => {
  let nats: NatsCluster;
  let nc: NatsConnection;
  let jsm: JetStreamManager;

  beforeAll(async () => {
    nats = await startNatsServer();
    nc = await connectNats({ servers: nats.urls });
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
  });

  it('creates a missing stream with the defaults, then accepts it as it is', async () => {
    const s = streamSettings({ stream: 'CREATE1', subjectPrefix: 'c1.flows' });
    await expect(ensureStream(jsm, s, { create: false, servers: nats.urls })).rejects.toThrow(StreamMissingError);
    const first = await ensureStream(jsm, s, { create: true });
    expect(first.created).toBe(true);
    const c = first.info.config;
    expect(c.subjects).toEqual(['c1.flows.>']);
    expect(c.num_replicas).toBe(1);
    expect(c.max_age).toBe(7 * 86_400 * 1e9);
    expect(c.max_bytes).toBe(10 * 1024 ** 3);
    expect(c.duplicate_window).toBe(120 * 1e9);
    expect(c.storage).toBe('file');
    const again = await ensureStream(jsm, s, { create: true });
    expect(again.created).toBe(false);
    expect(streamSummary(again.info)).toMatch(/^stream CREATE1: subjects c1.flows.>, replicas 1, max_age 7d, max_bytes 10737418240, duplicate_window 2m/);
  });

  it('refuses a stream with other settings, naming each difference, and leaves it as it was', async () => {
    await jsm.streams.add({ name: 'OTHER', subjects: ['other.>'], max_age: 3_600 * 1e9, duplicate_window: 60 * 1e9, max_bytes: 1024 * 1024 * 64 });
    const s = streamSettings({ stream: 'OTHER', subjectPrefix: 'o.flows' });
    const err = await ensureStream(jsm, s, { create: true }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(StreamMismatchError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/^stream OTHER exists with other settings: /);
    expect(msg).toContain('subjects are ["other.>"], wanted ["o.flows.>"]');
    expect(msg).toContain('duplicate_window is 1m, wanted 2m');
    expect(msg).toContain('max_age is 1h, wanted 7d');
    expect(msg).toContain('max_bytes is 67108864, wanted 10737418240');
    expect(msg).not.toContain('replicas');
    expect((err as StreamMismatchError).differences).toHaveLength(4);
    const info = await jsm.streams.info('OTHER');
    expect(info.config.subjects).toEqual(['other.>']);
    expect(info.config.duplicate_window).toBe(60 * 1e9);
  });

  it('a second publish with the same Nats-Msg-Id is reported duplicate and not stored twice', async () => {
    const s = streamSettings({ stream: 'DEDUP', subjectPrefix: 'd.flows' });
    await ensureStream(jsm, s, { create: true });
    const js = jetstream(nc);
    const m = messageOf(s.subjectPrefix, syntheticEvent('dedup', 7));
    const a = await js.publish(m.subject, m.payload, { headers: messageHeaders(m.msgId) });
    const b = await js.publish(m.subject, m.payload, { headers: messageHeaders(m.msgId) });
    expect(a.duplicate).toBe(false);
    expect(b.duplicate).toBe(true);
    expect(b.seq).toBe(a.seq);
    const info = await jsm.streams.info('DEDUP');
    expect(info.state.messages).toBe(1);
    const stored = await jsm.streams.getMessage('DEDUP', { seq: a.seq });
    expect(stored?.header.get(MSG_ID_HEADER)).toBe(m.msgId);
    expect(Buffer.from(stored!.data).equals(m.payload)).toBe(true);
    expect(stored?.subject).toBe(m.subject);
  });

  it('wrong credentials and unreachable servers fail with a message naming the keys', async () => {
    const authed = await startNatsServer({ extraConfig: 'authorization { token: "s3cret" }' });
    try {
      await expect(connectNats({ servers: authed.urls, token: 'wrong', timeoutMs: 3000 })).rejects.toThrow(/refused the credentials.*jetstream.token/);
      const ok = await connectNats({ servers: authed.urls, token: 's3cret' });
      await ok.close();
    } finally {
      await authed.stop();
    }
    await expect(connectNats({ servers: authed.urls, timeoutMs: 2000 })).rejects.toThrow(/cannot reach NATS at .*jetstream.servers/);
  });
});

describe('a three-server cluster on loopback', () => {
  let nats: NatsCluster;
  afterAll(async () => {
    await nats?.stop();
  });

  it('holds an R3 stream, and a check with --replicas 1 is refused', async () => {
    nats = await startNatsCluster();
    expect(nats.servers.map((s) => s.name)).toEqual(['n1', 'n2', 'n3']);
    expect(await nats.metaLeader()).toMatch(/^n[123]$/);
    const nc = await connectNats({ servers: nats.urls });
    try {
      const jsm = await jetstreamManager(nc);
      const s = streamSettings({ stream: 'R3', replicas: 3 });
      const { info } = await ensureStream(jsm, s, { create: true });
      expect(info.config.num_replicas).toBe(3);
      expect(info.cluster?.replicas).toHaveLength(2);
      const m = messageOf(s.subjectPrefix, syntheticEvent('r3', 1));
      const ack = await jetstream(nc).publish(m.subject, m.payload, { headers: messageHeaders(m.msgId) });
      expect(ack.stream).toBe('R3');
      expect((await nats.streamLeader('R3'))?.name).toBe(info.cluster?.leader);
      await expect(ensureStream(jsm, { ...s, replicas: 1 }, { create: true })).rejects.toThrow(/replicas is 3, wanted 1 \(jetstream.replicas \/ --replicas\)/);
    } finally {
      await nc.close();
    }
  });
});
