// Broken and idle HTTP/2 clients against a collector that runs under a low file limit: an
// authenticated exporter must still get through. Before the fix, each connection that broke
// HTTP/2 kept its file descriptor after the peer closed (nghttp2 stops reading after its GOAWAY),
// idle connections were never closed, and 600 such clients locked every exporter out, silently.
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { eventIds, exactlyOnce, processSuite, senderDone, startCollector, startSender } from '../export/helpers';

const newDir = processSuite();

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
/** DATA on stream 7, which was never opened: a connection error (PROTOCOL_ERROR) for the server. */
const DATA_ON_IDLE_STREAM = Buffer.from([0, 0, 1, 0, 0, 0, 0, 0, 7, 0x41]);

const held: Socket[] = [];
afterEach(() => {
  for (const s of held.splice(0)) s.destroy();
});

/** Opens a connection, sends bytes, and closes it after a moment (or keeps it when hold). */
function client(port: number, bytes: Buffer | null, hold: boolean): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => resolve());
    s.on('data', () => undefined);
    s.on('connect', () => {
      if (bytes) s.write(bytes);
      if (hold) {
        held.push(s);
        resolve();
      } else {
        setTimeout(() => {
          s.end();
          resolve();
        }, 20);
      }
    });
    s.on('close', () => resolve());
  });
}

async function many(n: number, parallel: number, one: () => Promise<void>): Promise<void> {
  for (let i = 0; i < n; i += parallel) await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, one));
}

const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

describe('hostile: broken and idle HTTP/2 clients', () => {
  it('600 protocol-breaking and 300 idle connections under a 256-file limit: an exporter with the token still gets through', async () => {
    const out = newDir('conn-out');
    const c = await startCollector(out, 0, ['--token', 'sekrit', '--handshake-timeout-ms', '1500']);
    execFileSync('prlimit', ['--pid', String(c.proc.pid), '--nofile=256:256']);
    const baseline = fdCount(c.proc.pid);
    await many(600, 50, () => client(c.port, Buffer.concat([PREFACE, SETTINGS, DATA_ON_IDLE_STREAM]), false));
    await many(300, 50, () => client(c.port, null, true));
    const N = 200;
    const s = startSender({ collector: c.url, spool: newDir('conn-spool'), count: N, seed: 'conn', extra: ['--token', 'sekrit'] });
    const done = await senderDone(s, 60_000);
    expect(done).toMatchObject({ ok: true, acked: N, dropped: 0 });
    expect(exactlyOnce(out, eventIds('conn', N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
    // The idle ones are closed by the deadline: the collector's descriptors come back down.
    await new Promise((r) => setTimeout(r, 2500));
    expect(fdCount(c.proc.pid)).toBeLessThan(baseline + 10);
    await c.proc.kill('SIGTERM');
    const final = c.proc.json('stderr').find((o) => o.msg === 'stopped');
    expect(final).toBeDefined();
    expect(Number(final!.refusedConnections)).toBeGreaterThan(0);
    expect(Number(final!.handshakeTimeouts)).toBeGreaterThan(0);
    expect(c.proc.json('stderr').some((o) => o.msg === 'refused a connection')).toBe(true);
  }, 120_000);

  it('a client that opens streams and goes quiet is closed after the idle timeout; one that breaks mid-message gets an error', async () => {
    const out = newDir('idle-out');
    const c = await startCollector(out, 0, ['--idle-timeout-ms', '500', '--handshake-timeout-ms', '60000']);
    const http2 = await import('node:http2');
    const session = http2.connect(`http://127.0.0.1:${c.port}`);
    session.on('error', () => undefined);
    const req = session.request({ ':method': 'POST', ':path': '/flow.FlowService/Events', 'content-type': 'application/grpc', te: 'trailers' });
    // Half a message (a 100-byte message announced, 3 bytes sent), then the end of the stream.
    req.end(Buffer.from([0, 0, 0, 0, 100, 1, 2, 3]));
    const trailers = await new Promise<Record<string, unknown>>((resolve) => req.on('trailers', (t) => resolve(t)));
    req.resume();
    expect(trailers['grpc-status']).toBe('3');
    expect(String(trailers['grpc-message'])).toMatch(/ended inside a message/);
    const closed = await new Promise<boolean>((resolve) => {
      session.on('close', () => resolve(true));
      setTimeout(() => resolve(false), 5000);
    });
    expect(closed).toBe(true);
    await c.proc.kill('SIGTERM');
    const final = c.proc.json('stderr').find((o) => o.msg === 'stopped');
    expect(final).toMatchObject({ idleClosed: 1, truncated: 1 });
  }, 60_000);

  it('streams past --max-streams are refused with RESOURCE_EXHAUSTED and counted', async () => {
    const out = newDir('streams-out');
    const c = await startCollector(out, 0, ['--max-streams', '5']);
    const http2 = await import('node:http2');
    const session = http2.connect(`http://127.0.0.1:${c.port}`);
    session.on('error', () => undefined);
    const statuses = await Promise.all(Array.from({ length: 10 }, () => new Promise<string>((resolve) => {
      const req = session.request({ ':method': 'POST', ':path': '/flow.FlowService/Events', 'content-type': 'application/grpc', te: 'trailers' });
      req.on('response', (h) => resolve(String(h['grpc-status'] ?? 'open')));
      req.on('error', () => resolve('error'));
      req.write(Buffer.from([0, 0, 0, 0, 2, 0x28, 1]));
    })));
    expect(statuses.filter((st) => st === 'open').length).toBe(5);
    expect(statuses.filter((st) => st === '8').length).toBe(5);
    session.destroy();
    await c.proc.kill('SIGTERM');
    expect(c.proc.json('stderr').find((o) => o.msg === 'stopped')).toMatchObject({ refusedStreams: 5 });
  }, 30_000);
});
