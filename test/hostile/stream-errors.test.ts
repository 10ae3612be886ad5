// Every way a collector can end or break the Events call, one after another, on both transports:
// the exporter must reconnect by itself each time, resend what was not acked, and lose nothing.
// The misbehaving collector here is written from the wire contract alone (gRPC over HTTP/2,
// length-prefixed flow.FlowEvent / FlowEventAck messages) with node:http2.
import * as http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeAck, INITIATOR_ACK } from '../../src/wire/codec';
import { Exporter } from '../../src/output/grpc/exporter';
import { syntheticEvent } from '../../testkit/synthetic';
import { scanFlowEvent, ScannedEvent } from '../../src/wire/reader';
import { cleanup, tmpDir } from '../export/helpers';

const dirs: string[] = [];
afterAll(() => cleanup(...dirs));

const frame = (msg: Buffer): Buffer => {
  const out = Buffer.alloc(5 + msg.length);
  out.writeUInt32BE(msg.length, 1);
  msg.copy(out, 5);
  return out;
};

type Fault = { name: string; after: number; act: (s: http2.ServerHttp2Stream) => void };

const trailers = (code: number, message = '') => (s: http2.ServerHttp2Stream): void => {
  s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': String(code), 'grpc-message': message }));
  s.end();
};

/** The faults, in order: one per connection; the connection after the last one behaves. */
const FAULTS: Fault[] = [
  { name: 'UNAVAILABLE in trailers', after: 5, act: trailers(14, 'disk full') },
  { name: 'INVALID_ARGUMENT in trailers', after: 5, act: trailers(3, 'bad event') },
  { name: 'RESOURCE_EXHAUSTED in trailers', after: 5, act: trailers(8, 'too big') },
  { name: 'OK in trailers mid-stream', after: 5, act: trailers(0) },
  { name: 'half an ack, then INTERNAL', after: 5, act: (s) => { s.write(frame(encodeAck(Buffer.alloc(16, 1))).subarray(0, 9)); trailers(13)(s); } },
  { name: 'half an ack, then OK', after: 5, act: (s) => { s.write(frame(encodeAck(Buffer.alloc(16, 1))).subarray(0, 9)); trailers(0)(s); } },
  { name: 'an ack that is not protobuf', after: 5, act: (s) => s.write(frame(Buffer.from([0xff, 0xff, 0xff]))) },
  { name: 'RST_STREAM', after: 5, act: (s) => s.close(http2.constants.NGHTTP2_INTERNAL_ERROR) },
  { name: 'graceful GOAWAY, then no more acks on the open stream', after: 5, act: (s) => s.session?.close() },
  { name: 'connection dropped', after: 5, act: (s) => s.session?.destroy() },
  { name: 'no ack at all (silence)', after: 0, act: () => undefined },
];

class BadCollector {
  readonly server = http2.createServer();
  readonly written = new Set<string>();
  connections = 0;
  private readonly ev = new ScannedEvent();

  constructor(private readonly faults: Fault[], private readonly special: 'trailers-only' | 'http-503' | null) {
    this.server.on('session', () => this.connections++);
    this.server.on('stream', (s) => this.onStream(s));
  }

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as AddressInfo).port;
  }

  private onStream(s: http2.ServerHttp2Stream): void {
    s.on('error', () => undefined);
    const n = this.connections;
    if (this.special !== null && n === 1) {
      // Refused before any message: trailers-only, or an HTTP error from a proxy.
      if (this.special === 'trailers-only') s.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'overloaded' }, { endStream: true });
      else s.respond({ ':status': 503 }, { endStream: true });
      return;
    }
    const fault = this.special !== null ? undefined : this.faults[n - 1];
    s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    let pending = Buffer.alloc(0);
    let acked = 0;
    let broken = false;
    s.on('data', (chunk: Buffer) => {
      if (broken) return;
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        const msg = pending.subarray(5, 5 + pending.readUInt32BE(1));
        pending = pending.subarray(5 + msg.length);
        scanFlowEvent(msg, this.ev);
        if (this.ev.initiator) {
          s.write(frame(INITIATOR_ACK));
          continue;
        }
        if (fault && acked >= fault.after) {
          broken = true;
          fault.act(s);
          return;
        }
        const id = msg.subarray(this.ev.eventId.s, this.ev.eventId.e);
        this.written.add(id.toString('hex'));
        s.write(frame(encodeAck(id)));
        acked++;
      }
    });
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

async function deliver(transport: 'http2' | 'grpc-js', faults: Fault[], special: BadCollector['special']): Promise<{ c: BadCollector; ex: Exporter; N: number }> {
  const c = new BadCollector(faults, special);
  const port = await c.listen();
  const dir = tmpDir('faults-spool');
  dirs.push(dir);
  const ex = new Exporter({
    url: `grpc://127.0.0.1:${port}`, transport, spool: { dir }, logger: pino({ level: 'silent' }),
    backoff: { initialMs: 20, maxMs: 100, multiplier: 1.5 }, handshakeTimeoutMs: 1000, ackTimeoutMs: 400,
  });
  const N = 300;
  ex.enqueueBatch(Array.from({ length: N }, (_, i) => syntheticEvent(`faults-${transport}`, i)));
  ex.start();
  let timer: NodeJS.Timeout | undefined;
  const idle = await Promise.race([ex.whenIdle().then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 30_000)))]);
  clearTimeout(timer);
  expect(idle, `every event acked (stats ${JSON.stringify(ex.stats())})`).toBe(true);
  return { c, ex, N };
}

describe('hostile: every way a collector ends or breaks the stream', () => {
  for (const transport of ['http2', 'grpc-js'] as const) {
    it(`${transport}: reconnects after each of ${FAULTS.length} faults in turn and delivers everything`, async () => {
      const { c, ex, N } = await deliver(transport, FAULTS, null);
      const st = await ex.stop({ deadlineMs: 0 });
      await c.close();
      expect(st).toMatchObject({ acked: N, inFlight: 0, queued: 0, dropped: 0 });
      expect(st.reconnects).toBe(FAULTS.length);
      expect(c.written.size).toBe(N);
    }, 60_000);

    for (const special of ['trailers-only', 'http-503'] as const) {
      it(`${transport}: a ${special} refusal of the call, then delivery`, async () => {
        const { c, ex, N } = await deliver(transport, [], special);
        const st = await ex.stop({ deadlineMs: 0 });
        await c.close();
        expect(st).toMatchObject({ acked: N, reconnects: 1 });
      }, 30_000);
    }
  }
});
