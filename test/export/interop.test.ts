// The http2 transport against a server built only from the wire contract: a stock grpc-js server
// that loads proto/flow.proto with proto-loader (no wgflow code on the server side).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/datapath/native';
import { Transport } from '../../src/export/event-stream';
import { Exporter } from '../../src/export/grpc-exporter';
import { syntheticEvent } from '../../src/export/synthetic';

interface WireEvent { event_id: Buffer; isInitiator: boolean; flow_fields?: { flow_id: Buffer } | null }
interface WireAck { event_id?: Buffer; isInitiator?: boolean }
type Call = grpc.ServerDuplexStream<WireEvent, WireAck>;

const def = protoLoader.loadSync(join(REPO_ROOT, 'proto', 'flow.proto'), { keepCase: true, longs: Number, enums: String, defaults: true });
const flowPkg = grpc.loadPackageDefinition(def).flow as unknown as { FlowService: { service: grpc.ServiceDefinition } };

const servers: grpc.Server[] = [];
const dirs: string[] = [];
const exporters: Exporter[] = [];
afterEach(async () => {
  for (const e of exporters.splice(0)) await e.stop({ deadlineMs: 0 });
  for (const s of servers.splice(0)) s.forceShutdown();
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

function exporter(port: number, transport: Transport, token?: string, logs: string[] = []): Exporter {
  const dir = mkdtempSync(join(tmpdir(), 'wgflow-interop-'));
  dirs.push(dir);
  const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(line) });
  const e = new Exporter({ url: `grpc://127.0.0.1:${port}`, token, transport, spool: { dir }, logger, backoff: { initialMs: 50, maxMs: 200 } });
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
});
