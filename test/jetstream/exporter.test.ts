// The JetStream exporter against real nats-server processes: everything in the spool reaches the
// stream with its id, nothing is lost while the servers are down or refuse us, and a resend is
// absorbed by the stream's duplicate window.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { JetStreamExporter, type JetStreamExporterOptions } from '../../src/output/jetstream/exporter';
import { connectNats, MSG_ID_HEADER, subjectOf } from '../../src/wire/jetstream';
import { readFlowEvent } from '../../src/wire/reader';
import type { FlowEvent } from '../../src/model/event';
import { syntheticEvent } from '../../testkit/synthetic';
import { startNatsServer, type NatsCluster } from '../../testkit/nats';
import { budget } from '../../testkit/slow';

const dirs: string[] = [];
const clusters: NatsCluster[] = [];
const exporters: JetStreamExporter[] = [];

afterEach(async () => {
  for (const e of exporters.splice(0)) await e.stop({ deadlineMs: 0 });
  for (const c of clusters.splice(0)) await c.stop();
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'wgflow-js-exp-'));
  dirs.push(d);
  return d;
}

async function server(extraConfig?: string): Promise<NatsCluster> {
  const c = await startNatsServer({ extraConfig });
  clusters.push(c);
  return c;
}

/** An exporter whose log lines are kept in `lines`. */
function exporter(o: Partial<JetStreamExporterOptions> & { servers: string; spoolDir: string }): { exp: JetStreamExporter; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _e, cb) { lines.push(...chunk.toString().split('\n').filter(Boolean)); cb(); } });
  const exp = new JetStreamExporter({
    connection: { servers: o.servers, timeoutMs: 2000, ...o.connection },
    stream: o.stream ?? { stream: 'WGFLOW' },
    spool: { dir: o.spoolDir },
    backoff: { initialMs: 100, maxMs: 500 },
    publishTimeoutMs: 2000,
    logger: pino({ level: 'debug' }, sink),
    ...o,
  } as JetStreamExporterOptions);
  exporters.push(exp);
  exp.start();
  return { exp, lines };
}

function events(seed: string, n: number): FlowEvent[] {
  return Array.from({ length: n }, (_, i) => syntheticEvent(seed, i));
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + budget(ms);
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** Every message of the stream: id header, subject, decoded event. */
async function streamMessages(servers: string, stream = 'WGFLOW'): Promise<Array<{ id: string; subject: string; event: FlowEvent }>> {
  const nc = await connectNats({ servers });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const out: Array<{ id: string; subject: string; event: FlowEvent }> = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      if (!m) continue;
      const r = readFlowEvent(Buffer.from(m.data));
      if (r.kind !== 'event') throw new Error(`message ${seq} is not an event`);
      out.push({ id: m.header.get(MSG_ID_HEADER), subject: m.subject, event: r.event });
    }
    return out;
  } finally {
    await nc.close();
  }
}

async function streamCount(servers: string, stream = 'WGFLOW', auth: { user?: string; password?: string } = {}): Promise<number> {
  const nc = await connectNats({ servers, ...auth });
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages;
  } finally {
    await nc.close();
  }
}

describe('JetStream exporter', () => {
  it('publishes every spooled event once, with its id and subject, and empties the spool', async () => {
    const nats = await server();
    const evs = events('basic', 3000);
    const { exp } = exporter({ servers: nats.urls, spoolDir: tempDir() });
    for (let i = 0; i < evs.length; i += 500) exp.emit(evs.slice(i, i + 500));
    await until('all acked', () => exp.stats().acked === evs.length);
    const s = exp.stats();
    expect(s).toMatchObject({ queued: 0, inFlight: 0, duplicates: 0, connected: true });
    expect(s.published).toBe(evs.length);
    const msgs = await streamMessages(nats.urls);
    expect(msgs).toHaveLength(evs.length);
    const byId = new Map(msgs.map((m) => [m.id, m]));
    for (const ev of evs) {
      const m = byId.get(ev.eventId);
      expect(m?.event).toEqual(ev);
      expect(m?.subject).toBe(subjectOf('wgflow.flows', ev.reporterId, ev.type));
    }
  });

  it('holds the backlog while the server is down, delivers it when it is back, nothing twice', async () => {
    const nats = await server();
    const spoolDir = tempDir();
    const { exp } = exporter({ servers: nats.urls, spoolDir });
    const evs = events('down', 4000);
    exp.emit(evs.slice(0, 1000));
    await until('first part acked', () => exp.stats().acked === 1000);
    await nats.servers[0].stop();
    exp.emit(evs.slice(1000, 3000));
    await until('errors seen', () => exp.stats().queued + exp.stats().inFlight === 2000);
    exp.emit(evs.slice(3000));
    expect(exp.stats().acked).toBe(1000);
    nats.servers[0].start();
    await nats.waitReady();
    await until('all acked', () => exp.stats().acked >= evs.length && exp.stats().queued === 0 && exp.stats().inFlight === 0, 40_000);
    const msgs = await streamMessages(nats.urls);
    expect(new Set(msgs.map((m) => m.id))).toEqual(new Set(evs.map((e) => e.eventId)));
    expect(msgs).toHaveLength(evs.length);
  });

  it('a restart resends what was not acked; the stream drops the duplicates', async () => {
    const nats = await server();
    const spoolDir = tempDir();
    const evs = events('restart', 2000);
    // First run: everything published and stored, but the spool's acks are thrown away (as after
    // a crash before the ack log was written): the next run sends all of it again.
    const first = exporter({ servers: nats.urls, spoolDir });
    first.exp.emit(evs);
    await until('all acked', () => first.exp.stats().acked === evs.length);
    await first.exp.stop({ deadlineMs: 0 });
    exporters.splice(exporters.indexOf(first.exp), 1);
    rmSync(join(spoolDir), { recursive: true, force: true });
    // Second run from a spool that holds the same events again.
    const second = exporter({ servers: nats.urls, spoolDir });
    second.exp.emit(evs);
    await until('all acked again', () => second.exp.stats().acked === evs.length);
    expect(second.exp.stats().duplicates).toBe(evs.length);
    expect(await streamCount(nats.urls)).toBe(evs.length);
  });

  it('wrong token: a clear message naming jetstream.token, and the spool keeps every event', async () => {
    const nats = await server('authorization { token: "right" }');
    const spoolDir = tempDir();
    const evs = events('auth', 500);
    const bad = exporter({ servers: nats.urls, spoolDir, connection: { servers: nats.urls, token: 'wrong', timeoutMs: 2000 } });
    bad.exp.emit(evs);
    await until('auth error counted', () => bad.exp.stats().errors.auth > 0);
    expect(bad.lines.some((l) => /refused the credentials.*jetstream\.token.*the events stay in the spool/.test(l))).toBe(true);
    const s = await bad.exp.stop({ deadlineMs: 0 });
    exporters.splice(exporters.indexOf(bad.exp), 1);
    expect(s.acked).toBe(0);
    expect(s.queued).toBe(evs.length);
    const good = exporter({ servers: nats.urls, spoolDir, connection: { servers: nats.urls, token: 'right' } });
    await until('all acked', () => good.exp.stats().acked === evs.length);
    expect(good.exp.stats().duplicates).toBe(0);
  });

  it('a stream with other settings is refused with the message; nothing leaves the spool', async () => {
    const nats = await server();
    const nc = await connectNats({ servers: nats.urls });
    await (await jetstreamManager(nc)).streams.add({ name: 'WGFLOW', subjects: ['wgflow.flows.>'], duplicate_window: 30 * 1e9 });
    await nc.close();
    const spoolDir = tempDir();
    const { exp, lines } = exporter({ servers: nats.urls, spoolDir });
    exp.emit(events('mismatch', 200));
    await until('stream error counted', () => exp.stats().errors.stream > 0);
    expect(lines.some((l) => /stream WGFLOW exists with other settings: .*duplicate_window is 30s, wanted 2m/.test(l))).toBe(true);
    expect(exp.stats()).toMatchObject({ acked: 0, queued: 200, connected: false });
    expect(await streamCount(nats.urls)).toBe(0);
  });

  it('a subject the account may not publish to: a permissions message, nothing leaves the spool', async () => {
    const nats = await server(`authorization {
  users: [
    { user: admin, password: a }
    { user: limited, password: l, permissions: { publish: { allow: ["$JS.API.>", "other.>"] }, subscribe: { allow: ["_INBOX.>"] } } }
  ]
}`);
    const admin = exporter({ servers: nats.urls, spoolDir: tempDir(), connection: { servers: nats.urls, user: 'admin', password: 'a' } });
    admin.exp.emit(events('perm-admin', 10));
    await until('admin acked', () => admin.exp.stats().acked === 10);
    const spoolDir = tempDir();
    const { exp, lines } = exporter({ servers: nats.urls, spoolDir, connection: { servers: nats.urls, user: 'limited', password: 'l' }, publishTimeoutMs: 2000 });
    exp.emit(events('perm', 100));
    await until('permission error counted', () => exp.stats().errors.permission > 0, 30_000);
    expect(lines.some((l) => /may not use these subjects.*jetstream.subject_prefix/.test(l))).toBe(true);
    expect(exp.stats().acked).toBe(0);
    expect(exp.stats().queued + exp.stats().inFlight).toBe(100);
    expect(await streamCount(nats.urls, 'WGFLOW', { user: 'admin', password: 'a' })).toBe(10);
  });
});
