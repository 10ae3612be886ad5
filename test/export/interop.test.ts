// The http2 transport against a server built only from the wire contract: a stock grpc-js server
// that loads proto/flow.proto with proto-loader (no wgflow code on the server side).
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/util/addon';
import { Transport } from '../../src/output/grpc/transport';
import { Exporter } from '../../src/output/grpc/exporter';
import { syntheticEvent } from '../../testkit/synthetic';

interface WireEvent { event_id: Buffer; isInitiator: boolean; flow_fields?: { flow_id: Buffer } | null }
interface WireAck { event_id?: Buffer; isInitiator?: boolean }
type Call = grpc.ServerDuplexStream<WireEvent, WireAck>;

const def = protoLoader.loadSync(join(REPO_ROOT, 'proto', 'flow.proto'), { keepCase: true, longs: Number, enums: String, defaults: true });
const flowPkg = grpc.loadPackageDefinition(def).flow as unknown as { FlowService: { service: grpc.ServiceDefinition } };

const servers: grpc.Server[] = [];
const proxies: net.Server[] = [];
const dirs: string[] = [];
const exporters: Exporter[] = [];
afterEach(async () => {
  for (const e of exporters.splice(0)) await e.stop({ deadlineMs: 0 });
  for (const s of servers.splice(0)) s.forceShutdown();
  for (const p of proxies.splice(0)) p.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A contract-only receiver: acks the initiator, then every event by its id; token optional. */
async function contractServer(token?: string): Promise<{ port: number; received: string[] }> {
  const received: string[] = [];
  const server = new grpc.Server();
  server.addService(flowPkg.FlowService.service, {
    Events: (call: Call) => {
      const auth = call.metadata.get('authorization')[0];
      if (token !== undefined && auth !== `Bearer ${token}`) {
        call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: 'bad token' });
        return;
      }
      call.on('data', (ev: WireEvent) => {
        if (ev.isInitiator) {
          call.write({ isInitiator: true });
          return;
        }
        received.push(ev.event_id.toString('hex'));
        call.write({ event_id: ev.event_id });
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  servers.push(server);
  return { port, received };
}

/**
 * A TCP relay that can go silent: while frozen it drops bytes both ways but keeps the connections
 * open, like a peer that hangs or a path that black-holes (no RST, no FIN).
 */
async function freezableProxy(target: number): Promise<{ port: number; freeze(on: boolean): void }> {
  let frozen = false;
  const server = net.createServer((client) => {
    const up = net.connect(target, '127.0.0.1');
    client.on('data', (d) => {
      if (!frozen) up.write(d);
    });
    up.on('data', (d) => {
      if (!frozen) client.write(d);
    });
    const close = (): void => {
      client.destroy();
      up.destroy();
    };
    client.on('error', close).on('close', close);
    up.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxies.push(server);
  return { port: (server.address() as net.AddressInfo).port, freeze: (on) => (frozen = on) };
}

function exporter(port: number, transport: Transport, token?: string, logs: string[] = [], keepalive?: { timeMs: number; timeoutMs: number }): Exporter {
  const dir = mkdtempSync(join(tmpdir(), 'wgflow-interop-'));
  dirs.push(dir);
  const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(line) });
  const e = new Exporter({
    url: `grpc://127.0.0.1:${port}`, token, transport, spool: { dir }, logger, backoff: { initialMs: 50, maxMs: 200 },
    keepaliveTimeMs: keepalive?.timeMs, keepaliveTimeoutMs: keepalive?.timeoutMs,
  });
  exporters.push(e);
  return e;
}

describe.each(['http2', 'grpc-js'] as const)('%s transport -> stock grpc-js server from the .proto', (transport) => {
  it('every event is delivered and acked once', async () => {
    const srv = await contractServer('tok');
    const ex = exporter(srv.port, transport, 'tok');
    const N = 3000;
    ex.start();
    for (let i = 0; i < N; i += 500) ex.enqueueBatch(Array.from({ length: 500 }, (_, k) => syntheticEvent('interop', i + k)));
    await ex.whenIdle();
    expect(ex.stats()).toMatchObject({ acked: N, inFlight: 0, queued: 0, reconnects: 0 });
    expect(new Set(srv.received).size).toBe(N);
    expect(srv.received.length).toBe(N);
  });

  it('a rejected token ends the call with UNAUTHENTICATED and nothing is acked', async () => {
    const srv = await contractServer('right');
    const logs: string[] = [];
    const ex = exporter(srv.port, transport, 'wrong', logs);
    ex.start();
    ex.enqueue(syntheticEvent('interop-bad', 0));
    const t0 = Date.now();
    while (ex.stats().reconnects < 2 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    expect(ex.stats().reconnects).toBeGreaterThanOrEqual(2);
    expect(ex.stats()).toMatchObject({ acked: 0, connected: false, queued: 1 });
    const rejected = logs.map((l) => JSON.parse(l) as { msg: string; code?: string; details?: string }).filter((l) => /rejected the token/.test(l.msg));
    expect(rejected.length).toBeGreaterThanOrEqual(2);
    expect(rejected[0]).toMatchObject({ code: 'UNAUTHENTICATED', details: 'bad token' });
    expect(srv.received).toEqual([]);
  });

  it('a collector that goes silent is detected by keepalive; the events are delivered after it recovers', async () => {
    const srv = await contractServer();
    const proxy = await freezableProxy(srv.port);
    const logs: string[] = [];
    const ex = exporter(proxy.port, transport, undefined, logs, { timeMs: 1000, timeoutMs: 500 });
    ex.start();
    const until = async (what: () => boolean, ms: number): Promise<void> => {
      const t0 = Date.now();
      while (!what() && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 20));
    };
    await until(() => ex.stats().connected, 5000);
    expect(ex.stats().connected).toBe(true);
    proxy.freeze(true); // before the first PING: the server never sees one
    ex.enqueueBatch(Array.from({ length: 100 }, (_, i) => syntheticEvent('keepalive', i)));
    await until(() => ex.stats().reconnects >= 1, 8000);
    expect(ex.stats()).toMatchObject({ acked: 0, reconnects: expect.any(Number) });
    expect(ex.stats().reconnects).toBeGreaterThanOrEqual(1);
    const ended = logs.map((l) => JSON.parse(l) as { msg: string; details?: string }).filter((l) => /stream to collector ended/.test(l.msg));
    // Our transport names the cause; grpc-js reports its keepalive watchdog as a dropped connection.
    expect(ended[0]?.details).toMatch(transport === 'http2' ? /keepalive: no answer to PING within 500 ms/ : /Connection dropped/);
    proxy.freeze(false);
    await ex.whenIdle();
    expect(ex.stats().acked).toBe(100);
    expect(new Set(srv.received).size).toBe(100);
  }, 20_000);
});
