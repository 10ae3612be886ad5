// Our NATS client (src/nats/connection.ts) against real nats-server processes: every failure
// nats.js handled for us is now ours. Credentials refused (-ERR), permissions violations, TLS and
// mTLS, a slow consumer cut off by the server, a socket closed in the middle of a frame (a proxy
// cuts it), failover in a cluster, a PING kept across a reconnect (a fake server: its PONG must
// not answer a newer flush()). Servers are started and stopped by PID (testkit/nats.ts).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Connection, NatsServerError, type NatsConnOptions, type NatsStatus } from '../../src/nats/connection';
import { connectNats, natsErrorKind } from '../../src/wire/jetstream';
import { startNatsCluster, startNatsServer, type NatsCluster } from '../../testkit/nats';
import { budget } from '../../testkit/slow';
import { cuttingProxy } from './cutting-proxy';

const clusters: NatsCluster[] = [];
const conns: Connection[] = [];
const dirs: string[] = [];
const servers: Server[] = [];

afterEach(async () => {
  for (const c of conns.splice(0)) await c.close().catch(() => undefined);
  for (const s of servers.splice(0)) s.close();
  for (const c of clusters.splice(0)) await c.stop();
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function server(extraConfig?: string): Promise<NatsCluster> {
  const c = await startNatsServer({ extraConfig });
  clusters.push(c);
  return c;
}

async function connect(o: NatsConnOptions): Promise<Connection> {
  const c = await Connection.connect({ timeoutMs: 3000, reconnectTimeWaitMs: 200, ...o });
  conns.push(c);
  return c;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + budget(ms);
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await sleep(20);
  }
}

/** Statuses of a connection, kept in order. */
function statuses(c: Connection): NatsStatus[] {
  const all: NatsStatus[] = [];
  c.onStatus((s) => all.push(s));
  return all;
}

/** Subscribes and keeps the payloads as text. */
function collect(c: Connection, subject: string): string[] {
  const got: string[] = [];
  c.subscribe(subject, (m) => got.push(m.data.toString()));
  return got;
}

describe('our NATS client: credentials and permissions', () => {
  it('a wrong token is refused (-ERR Authorization Violation, classified auth); the right one works', async () => {
    const nats = await server('authorization { token: "right" }');
    const err = await Connection.connect({ servers: [nats.urls], token: 'wrong', timeoutMs: 3000 }).then(() => null, (e: Error) => e);
    expect(err).toBeInstanceOf(NatsServerError);
    expect(err?.message).toMatch(/Authorization Violation/);
    expect(natsErrorKind(err)).toBe('auth');
    const none = await Connection.connect({ servers: [nats.urls], timeoutMs: 3000 }).then(() => null, (e: Error) => e);
    expect(natsErrorKind(none)).toBe('auth');
    const c = await connect({ servers: [nats.urls], token: 'right' });
    const got = collect(c, 'x');
    c.publish('x', 'hello');
    await until('the message came back', () => got.length === 1);
    expect(got).toEqual(['hello']);
  });

  it('user and password: a wrong password is refused, the right one works', async () => {
    const nats = await server('authorization { users: [ { user: u, password: p } ] }');
    const err = await Connection.connect({ servers: [nats.urls], user: 'u', pass: 'nope', timeoutMs: 3000 }).then(() => null, (e: Error) => e);
    expect(natsErrorKind(err)).toBe('auth');
    const c = await connect({ servers: [nats.urls], user: 'u', pass: 'p' });
    await c.flush();
    expect(c.connected).toBe(true);
  });

  it('a publish the account may not make: -ERR Permissions Violation as a status, the connection stays usable', async () => {
    const nats = await server(`authorization {
  users: [ { user: limited, password: l, permissions: { publish: { allow: ["ok.>"] }, subscribe: { allow: ["ok.>", "_INBOX.>"] } } } ]
}`);
    const c = await connect({ servers: [nats.urls], user: 'limited', pass: 'l' });
    const st = statuses(c);
    const got = collect(c, 'ok.>');
    c.publish('denied.subject', 'no');
    c.publish('ok.subject', 'yes');
    await until('the allowed message came back', () => got.length === 1);
    await until('the violation was reported', () => st.some((s) => s.type === 'error'));
    const e = st.find((s) => s.type === 'error');
    expect(e?.type === 'error' && e.error.message).toMatch(/Permissions Violation for Publish to "?denied.subject/);
    expect(natsErrorKind(e?.type === 'error' ? e.error : null)).toBe('permission');
    expect(st.some((s) => s.type === 'disconnect')).toBe(false);
    expect(got).toEqual(['yes']);
  });

  it('a server down for a while: the failing reconnects are reported (the first at once, then rarely), then the reconnect', async () => {
    const nats = await server();
    const c = await connect({ servers: [nats.urls] });
    const st = statuses(c);
    await nats.servers[0].kill();
    await until('disconnected', () => st.some((s) => s.type === 'disconnect'));
    // Attempts every 200 ms for 1.5 s: reported once (then at most every RECONNECT_REPORT_MS).
    await until('a failed reconnect reported', () => st.some((s) => s.type === 'error'));
    await sleep(1500);
    const errors = st.filter((s) => s.type === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0].type === 'error' && errors[0].error.message).toMatch(new RegExp(`reconnecting to ${nats.urls} failed: `));
    expect(natsErrorKind(errors[0].type === 'error' ? errors[0].error : null)).toBe('unreachable');
    nats.servers[0].start();
    await until('reconnected', () => st.some((s) => s.type === 'reconnect'));
  });

  it('unreachable servers: the connect fails, classified unreachable', async () => {
    const port = await (await import('../../testkit/nats')).freePort();
    const err = await Connection.connect({ servers: [`nats://127.0.0.1:${port}`], timeoutMs: 2000 }).then(() => null, (e: Error) => e);
    expect(natsErrorKind(err)).toBe('unreachable');
  });
});

describe('our NATS client: TLS', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wgflow-nats-tls-'));
  dirs.push(dir);
  const f = (n: string): string => join(dir, n);
  const ssl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  };
  // A CA, a server certificate for 127.0.0.1, a client certificate (mTLS), all EC P-256.
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=wgflow test CA');
  for (const who of ['server', 'client']) {
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who === 'server' ? '127.0.0.1' : 'wgflow-client'}`);
    writeFileSync(f(`${who}.ext`), who === 'server' ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' : 'extendedKeyUsage=clientAuth\n');
    ssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.pem`, '-days', '2', '-extfile', `${who}.ext`);
  }
  const tlsConfig = (verify: boolean): string => `tls {
  cert_file: "${f('server.pem')}"
  key_file: "${f('server.key')}"
  ca_file: "${f('ca.pem')}"
  verify: ${verify}
  timeout: 2
}`;

  it('TLS with the CA: connects (also through a tls:// URL), and traffic flows; without the CA the certificate is refused', async () => {
    const nats = await server(tlsConfig(false));
    const ca = readFileSync(f('ca.pem'), 'utf8');
    const c = await connect({ servers: [nats.urls], tls: { ca } });
    const got = collect(c, 't');
    c.publish('t', 'over tls');
    await until('the message came back', () => got.length === 1);
    const viaUrl = await connect({ servers: [nats.urls.replace('nats://', 'tls://')], tls: { ca } });
    await viaUrl.flush();
    // The server asks for TLS: without our CA the self-made certificate is not trusted.
    const err = await Connection.connect({ servers: [nats.urls], timeoutMs: 3000 }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/certificate|self.signed|unable to verify/i);
  });

  it('mTLS: the server refuses a client without a certificate, accepts one with it', async () => {
    const nats = await server(tlsConfig(true));
    const ca = readFileSync(f('ca.pem'), 'utf8');
    const err = await Connection.connect({ servers: [nats.urls], tls: { ca }, timeoutMs: 3000 }).then(() => null, (e: Error) => e);
    expect(err).not.toBeNull();
    const c = await connect({ servers: [nats.urls], tls: { ca, cert: readFileSync(f('client.pem'), 'utf8'), key: readFileSync(f('client.key'), 'utf8') } });
    const got = collect(c, 'm');
    c.publish('m', 'mutual');
    await until('the message came back', () => got.length === 1);
  });

  it('TLS configured but the server offers none: refused with a message saying so', async () => {
    const nats = await server();
    const err = await Connection.connect({ servers: [nats.urls], tls: {}, timeoutMs: 3000 }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/does not offer TLS/);
  });

  it('the exporter publishes over TLS (jetstream.ca_file): every event in the stream', async () => {
    const nats = await server(tlsConfig(false));
    const { JetStreamExporter } = await import('../../src/output/jetstream/exporter');
    const { syntheticEvent } = await import('../../testkit/synthetic');
    const pino = (await import('pino')).default;
    const spool = mkdtempSync(join(tmpdir(), 'wgflow-js-tls-spool-'));
    dirs.push(spool);
    const exp = new JetStreamExporter({ connection: { servers: nats.urls, caFile: f('ca.pem') }, spool: { dir: spool }, logger: pino({ level: 'silent' }) });
    exp.start();
    exp.emit(Array.from({ length: 500 }, (_, i) => syntheticEvent('tls', i)));
    try {
      await until('all acked', () => exp.stats().acked === 500);
    } finally {
      await exp.stop({ deadlineMs: 0 });
    }
    const nc = await connectNats({ servers: nats.urls, caFile: f('ca.pem') });
    try {
      const { jetstreamManager } = await import('@nats-io/jetstream');
      expect((await (await jetstreamManager(nc)).streams.info('WGFLOW')).state.messages).toBe(500);
    } finally {
      await nc.close();
    }
  });
});

describe('our NATS client: connections that break', () => {
  it('the socket closed in the middle of a frame: a disconnect, a reconnect, the subscription goes on', async () => {
    const nats = await server();
    const proxy = await cuttingProxy(nats.servers[0].port, 2000);
    servers.push(proxy.server);
    const c = await connect({ servers: [`nats://127.0.0.1:${proxy.port}`] });
    const st = statuses(c);
    const got = collect(c, 'cut.>');
    const pub = await connect({ servers: [nats.urls] });
    for (let i = 0; i < 200; i++) pub.publish('cut.x', `m${i}`);
    await until('the proxy cut the connection', () => proxy.cuts() === 1);
    await until('reconnected', () => st.some((s) => s.type === 'reconnect'));
    expect(st[0]).toMatchObject({ type: 'disconnect' });
    const before = got.length;
    expect(before).toBeLessThan(200);
    // Every frame that arrived whole was read right; the cut one is gone; the rest of the 200
    // were sent while we were away (core NATS keeps nothing). After the reconnect:
    for (const m of got) expect(m).toMatch(/^m\d+$/);
    pub.publish('cut.x', 'after');
    await until('the message after the reconnect came', () => got.includes('after'));
  });

  it('a slow consumer: the server drops it, the client reconnects and its subscription works again', async () => {
    const nats = await server('max_pending: 1048576\nwrite_deadline: "1s"');
    const c = await connect({ servers: [nats.urls] });
    const st = statuses(c);
    let n = 0;
    c.subscribe('flood', () => n++);
    await c.flush();
    // Stop reading (as a process too busy to read would): the server's buffer for us fills.
    const sock = (c as unknown as { link: { socket: Socket } }).link.socket;
    sock.pause();
    const pub = await connect({ servers: [nats.urls] });
    const chunk = Buffer.alloc(8192, 0x61);
    for (let i = 0; i < 4000; i++) pub.publish('flood', chunk);
    await pub.flush();
    await until('the server called it a slow consumer', () => /slow consumer/i.test(nats.servers[0].output), 15_000);
    sock.resume();
    await until('disconnected and reconnected', () => st.some((s) => s.type === 'reconnect'));
    const m0 = n;
    expect(m0).toBeLessThan(4000);
    pub.publish('flood', 'again');
    await until('a message after the reconnect', () => n > m0);
  });

  it('cluster failover: the server in use is killed, the client moves to another and goes on', async () => {
    const cluster = await startNatsCluster();
    clusters.push(cluster);
    const c = await connect({ servers: cluster.servers.map((s) => s.url) });
    const st = statuses(c);
    const got = collect(c, 'fo');
    const used = cluster.servers.find((s) => s.url === c.server);
    expect(used).toBeDefined();
    await used?.kill();
    await until('reconnected', () => st.some((s) => s.type === 'reconnect'));
    expect(c.server).not.toBe(used?.url);
    const other = cluster.servers.find((s) => s.running && s.url !== c.server);
    const pub = await connect({ servers: [other?.url ?? ''] });
    await sleep(200); // the subscription's interest reaches the other servers
    pub.publish('fo', 'moved');
    await until('the message came through the new server', () => got.includes('moved'));
  });

  it('a PING still in the out buffer at a disconnect: its PONG on the next link does not answer a newer flush()', async () => {
    // A fake server (deterministic where a real one is not): link 1 answers the handshake, then
    // stops reading, so the client's writes back up and a flush()'s PING stays in its out buffer
    // until the link is dropped. Link 2 answers the handshake PING and the stale PING at once,
    // and any later PING only after 400 ms.
    let links = 0;
    const fake = createServer((s: Socket) => {
      const n = ++links;
      s.on('error', () => undefined);
      s.write('INFO {"server_id":"fake","max_payload":67108864,"headers":true}\r\n');
      let pings = 0;
      s.on('data', (d) => {
        const k = d.toString('latin1').split('PING\r\n').length - 1;
        for (let i = 0; i < k; i++) {
          pings++;
          if (n === 1) {
            if (pings === 1) {
              s.write('PONG\r\n');
              s.pause();
            }
          } else if (pings <= 2) s.write('PONG\r\n');
          else setTimeout(() => s.write('PONG\r\n'), 400);
        }
      });
      if (n === 1) setTimeout(() => s.destroy(), 800);
    });
    servers.push(fake);
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const port = (fake.address() as { port: number }).port;
    const c = await connect({ servers: [`nats://127.0.0.1:${port}`], reconnectTimeWaitMs: 50, timeoutMs: 2000 });
    c.publish('x', Buffer.alloc(32 * 1024 * 1024)); // more than the socket takes: writing blocks
    await sleep(50);
    const first = c.flush(10_000).then(() => 'resolved', (e: Error) => e.message);
    const after: { ms: Promise<number> | null } = { ms: null };
    c.onStatus((s) => {
      if (s.type !== 'reconnect') return;
      const t0 = Date.now();
      after.ms = c.flush(3000).then(() => Date.now() - t0);
    });
    expect(await first).toMatch(/disconnected/);
    await until('reconnected', () => after.ms !== null);
    // Answered by its own PONG (sent 400 ms late), not by the stale one that came at once.
    expect(await after.ms).toBeGreaterThanOrEqual(350);
    expect(links).toBe(2);
  });

  it('a stopped server (SIGSTOP): keepalive PINGs go unanswered, the connection is dropped as stale and comes back after SIGCONT', async () => {
    const nats = await server();
    const c = await connect({ servers: [nats.urls], pingIntervalMs: 300, maxPingsOut: 2, timeoutMs: 1000 });
    const st = statuses(c);
    const pid = nats.servers[0].pid as number;
    process.kill(pid, 'SIGSTOP');
    try {
      await until('the connection was found stale', () => st.some((s) => s.type === 'disconnect'), 10_000);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const d = st.find((s) => s.type === 'disconnect');
    expect(d?.type === 'disconnect' && d.reason).toMatch(/stale/);
    await until('reconnected', () => st.some((s) => s.type === 'reconnect'), 15_000);
    await c.flush();
  });
});
