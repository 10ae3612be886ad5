// End to end, real processes on loopback: `wgflow export-test` -> `wgflow collect`.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect as http2Connect } from 'node:http2';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { listEventFiles } from '../../src/output/jsonl-writer';
import { syntheticEvent } from '../../testkit/synthetic';
import { fromJsonLine } from '../../src/model/json';
import { CLI, collectedCount, eventIds, exactlyOnce, processSuite, REPO, senderDone, startCollector, startSender } from './helpers';

const newDir = processSuite();
const ids = eventIds;

describe('round trip', () => {
  it('N events out, N lines in, every field intact', async () => {
    const out = newDir('rt-out');
    const c = await startCollector(out);
    const N = 3000;
    const s = startSender({ collector: c.url, spool: newDir('rt-spool'), count: N, seed: 'rt' });
    const done = await senderDone(s);
    expect(done).toMatchObject({ ok: true, acked: N, dropped: 0, corruptSkipped: 0 });
    expect(exactlyOnce(out, ids('rt', N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
    const lines = readFileSync(join(out, 'events.jsonl'), 'utf8').trim().split('\n');
    expect(lines.length).toBe(N);
    const byId = new Map(lines.map((l) => {
      const p = fromJsonLine(l);
      return [p.event.eventId, p] as const;
    }));
    for (let i = 0; i < N; i++) {
      const want = syntheticEvent('rt', i);
      const got = byId.get(want.eventId);
      expect(got?.event).toEqual(want);
      expect(got!.receiveTimeMs).toBeGreaterThan(Date.now() - 120_000);
    }
    // The shapes the contract cares about are all in there.
    const protos = new Set([...byId.values()].map((p) => p.event.protocol));
    expect([...protos].sort()).toEqual([1, 17, 58, 6]);
    expect([...byId.values()].some((p) => p.event.source.ip.includes(':'))).toBe(true);
    expect([...byId.values()].some((p) => p.event.destination.type === 'SUBNET_RESOURCE' && p.event.ruleId !== '')).toBe(true);
    await c.proc.kill('SIGTERM');
    expect((await c.proc.exited).code).toBe(0);
  });

  it('writes the same lines on the native JSON path and on the JavaScript route', async () => {
    // Same events (a seed with text to escape is in every synthetic run), two collectors.
    const N = 2000;
    const files: string[] = [];
    for (const env of [{}, { WGFLOW_NATIVE_JSON: '0' }]) {
      const out = newDir('rt-route');
      const c = await startCollector(out, 0, [], env);
      const done = await senderDone(startSender({ collector: c.url, spool: newDir('rt-route-spool'), count: N, seed: 'route' }));
      expect(done).toMatchObject({ ok: true, acked: N });
      await c.proc.kill('SIGTERM');
      expect((await c.proc.exited).code).toBe(0);
      // The JS route says so once at start; the native one does not.
      expect(c.proc.stderr.includes('JSON fast path unavailable')).toBe('WGFLOW_NATIVE_JSON' in env);
      const byId = readFileSync(join(out, 'events.jsonl'), 'utf8').trim().split('\n')
        .map((l) => l.replace(/"receive_timestamp":"[^"]*"/, '"receive_timestamp":""'))
        .sort();
      files.push(byId.join('\n'));
    }
    expect(files[0].split('\n').length).toBe(N);
    expect(files[0]).toBe(files[1]);
  });

  it('serves many exporters at once', async () => {
    const out = newDir('many-out');
    const c = await startCollector(out);
    const senders = [0, 1, 2, 3].map((k) => startSender({ collector: c.url, spool: newDir(`many-spool-${k}`), count: 1500, seed: `many${k}` }));
    const done = await Promise.all(senders.map((s) => senderDone(s)));
    for (const d of done) expect(d).toMatchObject({ ok: true, acked: 1500 });
    const all = [0, 1, 2, 3].flatMap((k) => ids(`many${k}`, 1500));
    expect(exactlyOnce(out, all)).toEqual({ missing: [], duplicated: [], unexpected: [] });
    await c.proc.kill('SIGTERM');
  });

  it('rotates events.jsonl by size and de-duplicates across a restart from the files', async () => {
    const out = newDir('rot-out');
    let c = await startCollector(out, 0, ['--rotate-size', '64k']);
    let s = startSender({ collector: c.url, spool: newDir('rot-spool'), count: 400, seed: 'rot' });
    expect(await senderDone(s)).toMatchObject({ ok: true, acked: 400 });
    const files = listEventFiles(out);
    expect(files.length).toBeGreaterThan(3);
    for (const f of files.slice(0, -1)) expect(f).toMatch(/events-\d{6}-\d{8}T\d{6}Z\.jsonl$/);
    await c.proc.kill('SIGTERM');
    // A sender that sends the same events again (new spool): all acked, none written twice.
    c = await startCollector(out, 0, ['--rotate-size', '64k']);
    s = startSender({ collector: c.url, spool: newDir('rot-spool2'), count: 400, seed: 'rot' });
    expect(await senderDone(s)).toMatchObject({ ok: true, acked: 400 });
    expect(exactlyOnce(out, ids('rot', 400))).toEqual({ missing: [], duplicated: [], unexpected: [] });
    await c.proc.kill('SIGTERM');
  });

  it('malformed input never crashes the collector', async () => {
    const out = newDir('mal-out');
    const c = await startCollector(out);
    // Garbage bytes, a plain HTTP/1 request and an HTTP/2 stream with a broken gRPC frame.
    await new Promise<void>((resolve) => {
      const sock = connect(c.port, '127.0.0.1', () => {
        sock.end(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage'));
      });
      sock.resume(); // read whatever it answers, so 'close' can come
      sock.on('error', () => resolve());
      sock.on('close', () => resolve());
    });
    const session = http2Connect(`http://127.0.0.1:${c.port}`);
    session.on('error', () => undefined);
    const status = await new Promise<string>((resolve) => {
      const req = session.request({ ':method': 'POST', ':path': '/flow.FlowService/Events', 'content-type': 'application/grpc' });
      let grpcStatus = '';
      req.on('response', (h) => {
        if (h['grpc-status']) grpcStatus = String(h['grpc-status']);
      });
      req.on('trailers', (t) => {
        grpcStatus = String(t['grpc-status']);
      });
      req.on('error', () => undefined);
      req.on('close', () => resolve(grpcStatus));
      req.on('data', () => undefined);
      // A frame announcing 5 bytes of protobuf that is not protobuf.
      req.end(Buffer.from([0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff]));
    });
    session.close();
    expect(status).toBe('3'); // INVALID_ARGUMENT
    expect(c.proc.alive).toBe(true);
    // Still serving.
    const s = startSender({ collector: c.url, spool: newDir('mal-spool'), count: 50, seed: 'mal' });
    expect(await senderDone(s)).toMatchObject({ ok: true, acked: 50 });
    expect(collectedCount(out)).toBe(50);
    await c.proc.kill('SIGTERM');
  });
});

describe('command line', () => {
  const run = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [CLI, ...args], { cwd: REPO, encoding: 'utf8', timeout: 20_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('--help, --version, unknown command', () => {
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect(run(['--version']).stdout.trim()).toBe(`wgflow ${pkg.version}`);
    const help = run(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/collect/);
    expect(help.stdout).not.toMatch(/export-test/);
    const bad = run(['frobnicate']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown command "frobnicate"/);
    expect(bad.stderr).toMatch(/usage: wgflow/);
    expect(execFileSync(join(REPO, 'bin', 'wgflow'), ['--version'], { encoding: 'utf8' }).trim()).toBe(`wgflow ${pkg.version}`);
  });

  it('collect: --help, bad flags exit 2 naming the flag', () => {
    expect(run(['collect', '--help'])).toMatchObject({ code: 0 });
    expect(run(['collect', '--help']).stdout).toMatch(/--listen HOST:PORT/);
    const unknown = run(['collect', '--out', '/tmp/x', '--bogus']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/--bogus/);
    const noOut = run(['collect']);
    expect(noOut.code).toBe(2);
    expect(noOut.stderr).toMatch(/--out DIR is required/);
    const badSize = run(['collect', '--out', '/tmp/x', '--rotate-size', 'lots']);
    expect(badSize.code).toBe(2);
    expect(badSize.stderr).toMatch(/--rotate-size: "lots" is not a size/);
    const tls = run(['collect', '--out', '/tmp/x', '--tls-cert', 'a.pem']);
    expect(tls.code).toBe(2);
    expect(tls.stderr).toMatch(/--tls-cert and --tls-key go together/);
  });

  it('collect: port in use and unwritable --out exit 1 with a clear message', async () => {
    const blocker = createServer();
    const port = await new Promise<number>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as { port: number }).port)));
    try {
      const r = run(['collect', '--listen', `127.0.0.1:${port}`, '--out', newDir('inuse')]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: address .* is already in use`));
    } finally {
      blocker.close();
    }
    const file = join(newDir('unwritable'), 'file');
    writeFileSync(file, 'x');
    const r = run(['collect', '--listen', '127.0.0.1:0', '--out', join(file, 'out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot write to output directory .*file\/out/);
  });
});
