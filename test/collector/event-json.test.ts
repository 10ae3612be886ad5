// The collector's bytes-to-bytes JSON paths (JavaScript, and the C++ fast path of the native addon)
// must write exactly what toJsonLine writes for the event readFlowEvent decodes: for every event
// shape, for text that needs escaping or is not valid UTF-8, for NetBird-only messages, and for
// thousands of randomly damaged messages. The C++ path may decline (the collector then takes the
// JavaScript route), but never for a plain valid event, and never write different bytes.
import { describe, expect, it } from 'vitest';
import { ByteBuffer } from '../../src/util/byte-buffer';
import { writeJsonLine } from '../../src/collector/event-json';
import { writeIpv6 } from '../../src/net/ip';
import { NativeJson } from '../../src/collector/native-json';
import { ipv6FromBytes } from '../../src/net/ip';
import { loadFlowProto } from '../../src/wire/proto';
import { syntheticEvent } from '../../testkit/synthetic';
import { checkScanned, readFlowEvent, scanFlowEvent, ScannedEvent } from '../../src/wire/reader';
import { writeFlowEvent } from '../../src/wire/writer';
import { toJsonLine } from '../../src/model/json';
import type { FlowEvent } from '../../src/model/event';

const RECEIVED = 1_763_800_000_123;
const scanned = new ScannedEvent();
const out = new ByteBuffer(16);
const loaded = NativeJson.load();
// The addon is built before the tests run (make test); a missing one is a failure, not a skip.
if (typeof loaded === 'string') throw new Error(`the native JSON fast path is not available: ${loaded}`);
const native: NativeJson = loaded;
/** Valid events the C++ path wrote (it may decline odd ones; the JS route then writes them). */
let nativeWrote = 0;

/** The C++ path on msg placed at an odd offset of a bigger buffer: its line and event id, or null if it declined. */
function nativeLine(msg: Buffer, receivedMs = RECEIVED): { line: Buffer; id: Buffer } | null {
  const src = Buffer.alloc(msg.length + 7);
  msg.copy(src, 3);
  const o = new ByteBuffer(16);
  o.ascii('xyz');
  const n = native.write(src, 3, 3 + msg.length, o, receivedMs);
  if (n < 0) return null;
  expect(o.len).toBe(3); // the caller moves len
  return { line: Buffer.from(o.buf.subarray(3, 3 + n)), id: Buffer.from(src.subarray(native.eventIdAt, native.eventIdAt + 16)) };
}

/** Every route for one message: equal JSON bytes, or the same refusal. */
function expectSameOutcome(msg: Buffer, receivedMs = RECEIVED): 'event' | 'invalid' | 'initiator' | 'not-protobuf' {
  let reference: ReturnType<typeof readFlowEvent>;
  try {
    reference = readFlowEvent(msg);
  } catch {
    expect(() => scanFlowEvent(msg, scanned)).toThrow();
    expect(nativeLine(msg, receivedMs)).toBeNull();
    return 'not-protobuf';
  }
  scanFlowEvent(msg, scanned);
  if (reference.kind === 'initiator') {
    expect(scanned.initiator).toBe(true);
    expect(nativeLine(msg, receivedMs)).toBeNull();
    return 'initiator';
  }
  const error = checkScanned(scanned);
  if (reference.kind === 'invalid') {
    expect(error).toBe(reference.error);
    expect(nativeLine(msg, receivedMs)).toBeNull();
    return 'invalid';
  }
  expect(error).toBeNull();
  out.reset();
  writeJsonLine(out, scanned, receivedMs);
  const want = toJsonLine(reference.event, receivedMs);
  expect(out.view().toString('utf8')).toBe(want);
  expect(Buffer.compare(out.view(), Buffer.from(want, 'utf8'))).toBe(0);
  const fast = nativeLine(msg, receivedMs);
  if (fast) {
    nativeWrote++;
    expect(fast.line.toString('utf8')).toBe(want);
    expect(Buffer.compare(fast.line, Buffer.from(want, 'utf8'))).toBe(0);
    expect(fast.id).toEqual(reference.eventId);
  }
  return 'event';
}

/** A deterministic PRNG (xorshift32), so a failure can be replayed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

describe('collector JSON from message bytes', () => {
  it('equals toJsonLine for every synthetic event shape', () => {
    const before = nativeWrote;
    for (let i = 0; i < 2000; i++) expect(expectSameOutcome(writeFlowEvent(syntheticEvent('json', i)))).toBe('event');
    // Plain valid events never need the JS route.
    expect(nativeWrote - before).toBe(2000);
  });

  it('a NetBird v0.75 window aggregate (TYPE_UNKNOWN, where the collector allows it): the JS route writes toJsonLine\'s bytes, the C++ path declines', () => {
    for (let i = 0; i < 300; i++) {
      const base = syntheticEvent('agg', i);
      const ev: FlowEvent = { ...base, aggregate: { starts: i % 3, ends: i % 5, drops: i % 2 }, windowStartMs: base.timestampMs - 30_000, windowEndMs: base.timestampMs, endReason: undefined, dropReason: undefined };
      const msg = writeFlowEvent(ev);
      const ref = readFlowEvent(msg, { aggregates: true });
      expect(ref.kind).toBe('event');
      scanFlowEvent(msg, scanned);
      expect(checkScanned(scanned)).toMatch(/type: 0 is not/); // not where aggregates are not allowed
      expect(checkScanned(scanned, { aggregates: true })).toBeNull();
      out.len = 0;
      writeJsonLine(out, scanned, RECEIVED);
      const line = Buffer.from(out.buf.subarray(0, out.len)).toString('utf8');
      expect(line).toBe(toJsonLine((ref as { event: FlowEvent }).event, RECEIVED));
      expect(JSON.parse(line)).toMatchObject({ type: 'TYPE_UNKNOWN', num_of_starts: i % 3, num_of_ends: i % 5, num_of_drops: i % 2 });
      expect(nativeLine(msg)).toBeNull();
    }
  });

  it('writes times as Date#toISOString does, from 1970 to the year 9999 and past it', () => {
    const next = rng(1970);
    const times = [0, 999, 1000, 86_399_999, 86_400_000, 951_782_400_000, 951_868_800_000, 4_107_542_400_000, 253_402_300_799_999, 253_402_300_800_000, 8.64e15];
    for (let n = 0; n < 3000; n++) times.push(Math.floor(next() * 253_402_300_800_000));
    for (let n = 0; n < 100; n++) times.push(Math.floor(next() * 8.64e15));
    for (const t of times) {
      const ev: FlowEvent = { ...syntheticEvent('time', 2), timestampMs: t, windowStartMs: Math.max(0, t - 60_000), windowEndMs: t };
      expect(expectSameOutcome(writeFlowEvent(ev), t)).toBe('event');
    }
  });

  it('escapes text as JSON.stringify does, and takes the exact route for invalid UTF-8', () => {
    const base = syntheticEvent('json', 7);
    const texts = ['', 'plain', 'quote " and \\ backslash', 'tab\tnl\ncr\rff\fbs\b', 'ctl \u0000\u0001\u001f del \u007f', 'ü é 中文 𝄞 emoji 🎉', '\u2028\u2029', '\ufeffbom', '\uffff'];
    for (const t of texts) {
      const ev: FlowEvent = { ...base, policyName: t, ruleId: t, reporterId: t, interfaceName: t, dropReason: t, user: { id: t, name: t, email: t }, destination: { ...base.destination, name: t, os: t, dnsLabel: t } };
      expect(expectSameOutcome(writeFlowEvent(ev))).toBe('event');
    }
    // Invalid UTF-8: write a placeholder, then overwrite its bytes.
    const bad = [[0xff], [0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf5], [0xc3], [0xe2, 0x82], [0x80], [0xf0, 0x9f, 0x8e]];
    for (const seq of bad) {
      const marker = 'M'.repeat(seq.length + 2);
      const msg = writeFlowEvent({ ...base, policyName: `a${marker}z` });
      const at = msg.indexOf(marker);
      expect(at).toBeGreaterThan(0);
      Buffer.from([...seq, 0x41, 0x42]).copy(msg, at);
      expect(expectSameOutcome(msg)).toBe('event');
    }
  });

  it('equals toJsonLine for a NetBird-only message and for an initiator', () => {
    const proto = loadFlowProto();
    const nb = proto.encodeEvent({
      event_id: Buffer.alloc(16, 1),
      timestamp: { seconds: 1_700_000_000, nanos: 5_000_000 },
      public_key: Buffer.alloc(32, 9),
      flow_fields: {
        flow_id: Buffer.alloc(16, 2), type: 'TYPE_END', direction: 'EGRESS', protocol: 17,
        source_ip: Buffer.from('fe800000000000000000000000000001', 'hex'), dest_ip: Buffer.alloc(0),
        port_info: { source_port: 53, dest_port: 5353 }, rx_bytes: 2 ** 40, tx_packets: 2 ** 53 + 2,
        source_resource_id: Buffer.from('src-res'), dest_resource_id: Buffer.from('res "x"'),
      } as never,
    });
    expect(expectSameOutcome(nb)).toBe('event');
    expect(expectSameOutcome(proto.encodeEvent({ isInitiator: true }))).toBe('initiator');
  });

  it('refuses a timestamp past the range of a date instead of failing on it later', () => {
    const proto = loadFlowProto();
    const ev = { event_id: Buffer.alloc(16, 1), flow_fields: { flow_id: Buffer.alloc(16, 2), type: 'TYPE_START', direction: 'INGRESS' } };
    const msg = proto.encodeEvent({ ...ev, timestamp: { seconds: 9_000_000_000_000, nanos: 0 } } as never);
    expect(readFlowEvent(msg)).toMatchObject({ kind: 'invalid', error: 'timestamp: timestamp out of range' });
    expect(expectSameOutcome(msg)).toBe('invalid');
    expect(expectSameOutcome(proto.encodeEvent({ ...ev, timestamp: { seconds: 8_640_000_000_000, nanos: 0 } } as never))).toBe('event');
  });

  it('agrees with the reference on thousands of randomly damaged messages', () => {
    const next = rng(20261122);
    const seen = { event: 0, invalid: 0, initiator: 0, 'not-protobuf': 0 };
    for (let n = 0; n < 6000; n++) {
      const msg = Buffer.from(writeFlowEvent(syntheticEvent('fuzz', Math.floor(next() * 500))));
      const damage = Math.floor(next() * 3);
      let m = msg;
      if (damage === 0) {
        // A few random bytes changed.
        const k = 1 + Math.floor(next() * 3);
        for (let j = 0; j < k; j++) m[Math.floor(next() * m.length)] = Math.floor(next() * 256);
      } else if (damage === 1) {
        m = m.subarray(0, Math.floor(next() * m.length));
      } else {
        // One byte changed into a text-breaking value.
        m[Math.floor(next() * m.length)] = [0x00, 0x22, 0x5c, 0x80, 0xc3, 0xe2, 0xf0, 0xff][Math.floor(next() * 8)];
      }
      seen[expectSameOutcome(m)]++;
    }
    // The damage must have reached every outcome, or the test proves little.
    expect(seen.event).toBeGreaterThan(500);
    expect(nativeWrote).toBeGreaterThan(500);
    expect(seen.invalid).toBeGreaterThan(50);
    expect(seen['not-protobuf']).toBeGreaterThan(500);
  });
});

describe('IPv6 text', () => {
  it('is written byte for byte as ipv6FromBytes writes it', () => {
    const next = rng(7);
    const out = new ByteBuffer(8);
    const cases: Buffer[] = [Buffer.alloc(16), Buffer.from('00000000000000000000ffff01020304', 'hex'), Buffer.from('00000000000000000000fffe01020304', 'hex'), Buffer.from('20010db8000000000001000000000001', 'hex')];
    for (let n = 0; n < 20_000; n++) {
      const b = Buffer.alloc(16);
      // Groups are zero half of the time, so runs of every length and position occur.
      for (let i = 0; i < 8; i++) if (next() < 0.5) b.writeUInt16BE(Math.floor(next() * 65536) >> Math.floor(next() * 16), i * 2);
      cases.push(b);
    }
    for (const b of cases) {
      out.reset();
      writeIpv6(out, b, 0);
      expect(out.view().toString('latin1')).toBe(ipv6FromBytes(b));
    }
  });
});

describe('ByteBuffer', () => {
  it('prints integers exactly as JavaScript does, and bytes of every length', () => {
    const b = new ByteBuffer(1);
    const values = [0, 1, 9, 10, 42, 99, 100, 101, 999, 1000, 65535, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 33 + 5, 2 ** 53, 2 ** 64, 2 ** 70, 1e21];
    for (let v = 0; v < 5000; v += 7) values.push(v);
    for (const v of values) {
      b.reset();
      b.uint(v);
      expect(b.view().toString('latin1')).toBe(String(v));
    }
    const src = Buffer.from(Array.from({ length: 300 }, (_, i) => i & 0xff));
    for (let n = 0; n <= 40; n++) {
      b.reset();
      b.bytes(src, 3, 3 + n);
      expect(b.view()).toEqual(src.subarray(3, 3 + n));
    }
    for (const n of [0, 1, 2, 3, 32, 100, 101]) {
      b.reset();
      b.base64(src, 5, 5 + n);
      expect(b.view().toString('latin1')).toBe(src.subarray(5, 5 + n).toString('base64'));
    }
  });
});
