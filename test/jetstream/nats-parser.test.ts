// The NATS protocol parser (src/nats/parser.ts): every frame the server sends, split at every
// byte boundary and at random ones, gives the same frames as the stream in one piece.
import { describe, expect, it } from 'vitest';
import { NatsProtocolError, Parser, parseHeaders, type MsgView, type ParserHandler } from '../../src/nats/parser';
import { ackInfoOf } from '../../src/nats/jetstream-pull';
import { pubAckOf, type PubAckResult } from '../../src/nats/jetstream-publish';
import { OutBuffer } from '../../src/nats/out-buffer';

type Frame = string;

/** Records every frame as text: op and fields, payloads as hex. */
function recorder(): { frames: Frame[]; h: ParserHandler } {
  const frames: Frame[] = [];
  const h: ParserHandler = {
    info: (j) => frames.push(`INFO ${j}`),
    msg: (m: MsgView) => frames.push(`MSG ${m.subject} ${m.sid} ${m.reply} ${m.buf.toString('hex', m.headerStart, m.headerEnd)} ${m.data.toString('hex')} ${m.status}`),
    ok: () => frames.push('+OK'),
    err: (t) => frames.push(`-ERR ${t}`),
    ping: () => frames.push('PING'),
    pong: () => frames.push('PONG'),
  };
  return { frames, h };
}

const payload = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff));
const hdr = 'NATS/1.0\r\nNats-Msg-Id: 3f0c2a1e-0000-4000-8000-000000000001\r\n\r\n';
const status = 'NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\nNats-Pending-Bytes: 1000\r\n\r\n';

const stream = Buffer.concat([
  Buffer.from('INFO {"server_id":"X","headers":true,"max_payload":1048576,"connect_urls":["127.0.0.1:4222"]}\r\n'),
  Buffer.from('+OK\r\nPING\r\nPONG\r\n'),
  Buffer.from('MSG a.b 1 5\r\nhello\r\n'),
  Buffer.from('MSG _INBOX.abc.17 12 _INBOX.r.1 0\r\n\r\n'),
  Buffer.from(`MSG bin 3 ${payload.length}\r\n`), payload, Buffer.from('\r\n'),
  Buffer.from(`HMSG wgflow.flows.p.start 2 $JS.ACK.WGFLOW.d.1.42.42.1733380000000000000.7 ${Buffer.byteLength(hdr)} ${Buffer.byteLength(hdr) + payload.length}\r\n${hdr}`), payload, Buffer.from('\r\n'),
  Buffer.from(`HMSG _INBOX.x.3 4 ${Buffer.byteLength(status)} ${Buffer.byteLength(status)}\r\n${status}\r\n`),
  Buffer.from("-ERR 'Permissions Violation for Publish to \"wgflow.flows.x.start\"'\r\n"),
  Buffer.from('MSG with.crlf.in.payload 9 4\r\n\r\n\r\n\r\n'),
  Buffer.from('ping\r\n'), // lower case is accepted too
  Buffer.from("-ERR 'Authorization Violation'\r\n"),
]);

function parseChunks(chunks: Buffer[]): Frame[] {
  const r = recorder();
  const p = new Parser(r.h);
  for (const c of chunks) p.push(c);
  return r.frames;
}

describe('NATS parser', () => {
  const whole = parseChunks([stream]);

  it('reads every frame of a stream given in one piece', () => {
    expect(whole).toHaveLength(13);
    expect(whole[0]).toMatch(/^INFO \{"server_id":"X"/);
    expect(whole.slice(1, 4)).toEqual(['+OK', 'PING', 'PONG']);
    expect(whole[4]).toBe(`MSG a.b 1   ${Buffer.from('hello').toString('hex')} 0`);
    expect(whole[5]).toBe('MSG _INBOX.abc.17 12 _INBOX.r.1   0');
    expect(whole[7]).toContain('$JS.ACK.WGFLOW.d.1.42.42');
    expect(whole[8]).toMatch(/ 408$/);
    expect(whole[9]).toBe('-ERR Permissions Violation for Publish to "wgflow.flows.x.start"');
    expect(whole[10]).toBe(`MSG with.crlf.in.payload 9   0d0a0d0a 0`);
    expect(whole.slice(11)).toEqual(['PING', '-ERR Authorization Violation']);
  });

  it('gives the same frames for the stream split in two at every byte', () => {
    for (let i = 1; i < stream.length; i++) {
      expect(parseChunks([stream.subarray(0, i), stream.subarray(i)]), `split at ${i}`).toEqual(whole);
    }
  });

  it('gives the same frames for the stream in one-byte chunks and in random chunks (fuzzed)', () => {
    const bytes: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) bytes.push(stream.subarray(i, i + 1));
    expect(parseChunks(bytes)).toEqual(whole);
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 500; round++) {
      // The stream repeated 1-3 times, cut at 1-40 random points.
      const reps = 1 + rand(3);
      const all = Buffer.concat(Array.from({ length: reps }, () => stream));
      const cuts = Array.from({ length: 1 + rand(40) }, () => rand(all.length)).sort((a, b) => a - b);
      const chunks: Buffer[] = [];
      let at = 0;
      for (const c of [...cuts, all.length]) {
        chunks.push(all.subarray(at, c));
        at = c;
      }
      expect(parseChunks(chunks), `round ${round}`).toEqual(Array.from({ length: reps }, () => whole).flat());
    }
  });

  it('a delivered payload stays valid after later chunks (the buffers are never reused)', () => {
    const kept: Buffer[] = [];
    const p = new Parser({ info() {}, ok() {}, err() {}, ping() {}, pong() {}, msg: (m) => kept.push(m.data) });
    const frame = Buffer.concat([Buffer.from(`MSG s 1 ${payload.length}\r\n`), payload, Buffer.from('\r\n')]);
    for (let i = 0; i < 3; i++) {
      p.push(frame.subarray(0, 100));
      p.push(frame.subarray(100));
      p.push(Buffer.from(frame));
    }
    for (const k of kept) expect(k.equals(payload)).toBe(true);
  });

  it('refuses broken frames with a protocol error', () => {
    const bad = ['FOO bar\r\n', 'MSG a 1\r\n', 'MSG a 1 x\r\n', 'HMSG a 1 10 5\r\n', 'MSG a 1 3\r\nabcXY', 'MSG a b 3\r\nabc\r\n'];
    for (const b of bad) expect(() => parseChunks([Buffer.from(b)]), b).toThrow(NatsProtocolError);
  });

  it('reads status headers and $JS.ACK reply subjects', () => {
    const h = parseHeaders(Buffer.from(status), 0, Buffer.byteLength(status));
    expect(h.code).toBe(408);
    expect(h.description).toBe('Request Timeout');
    expect(h.values.get('Nats-Pending-Messages')).toBe('5');
    const v1 = Buffer.from('$JS.ACK.WGFLOW.dur.3.1042.99.1733380000000000000.12');
    expect(ackInfoOf(v1, 0, v1.length)).toEqual({ deliveryCount: 3, streamSeq: 1042, pending: 12 });
    const v2 = Buffer.from('$JS.ACK._.ACCHASH.WGFLOW.dur.1.7.7.1733380000000000000.0.xyz');
    expect(ackInfoOf(v2, 0, v2.length)).toEqual({ deliveryCount: 1, streamSeq: 7, pending: 0 });
    const notAck = Buffer.from('_INBOX.abc');
    expect(ackInfoOf(notAck, 0, notAck.length)).toBeNull();
  });

  it('reads PubAcks in every form the server writes', () => {
    const results: PubAckResult[] = [];
    const p = new Parser({ info() {}, ok() {}, err() {}, ping() {}, pong() {}, msg: (m) => results.push(pubAckOf(m)) });
    const bodies = [
      '{"stream":"S", "seq":1}',
      '{"stream":"S","seq":2,"duplicate":true}',
      '{"stream":"S", "seq":1,"duplicate": true}',
      '{"stream":"S", "seq":1,"duplicate": false}',
      '{"stream":"S","domain":"d","seq":3}',
      '{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"S","seq":0}',
      '{"stream":"S","seq":0,"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}',
      'not json',
    ];
    for (const b of bodies) p.push(Buffer.from(`MSG _INBOX.x.1 1 ${Buffer.byteLength(b)}\r\n${b}\r\n`));
    p.push(Buffer.from('HMSG _INBOX.x.2 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n'));
    const text = results.map((r) => (r.ok ? (r.duplicate ? 'dup' : 'new') : r.error.message));
    expect(text.slice(0, 5)).toEqual(['new', 'dup', 'dup', 'new', 'new']);
    expect(text[5]).toMatch(/refused the message: maximum messages exceeded \(code 503\/10077\)/);
    expect(text[6]).toMatch(/refused the message: expected stream does not match/);
    expect(text[7]).toMatch(/not JSON/);
    expect(text[8]).toMatch(/no responders \(503\)/);
  });

  it('writes integers into the output buffer as decimal text', () => {
    const o = new OutBuffer();
    for (const v of [0, 7, 10, 99, 100, 4096, 123456789, Number.MAX_SAFE_INTEGER]) {
      o.uint(v);
      o.byte(0x20);
    }
    expect(o.buf.toString('latin1', 0, o.len)).toBe(`0 7 10 99 100 4096 123456789 ${Number.MAX_SAFE_INTEGER} `);
    expect(() => o.uint(-1)).toThrow(RangeError);
  });
});
