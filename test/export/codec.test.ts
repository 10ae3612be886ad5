// Unit tests: FlowEvent <-> wire (both encoders), acks, the JSON form, collector URLs, backoff.
import { describe, expect, it } from 'vitest';
import { bytesToIp, CodecError, decodeAck, decodeEvent, encodeAck, encodeEvent, fromWire, INITIATOR_ACK, ipToBytes, toWire, uuidToBytes } from '../../src/wire/codec';
import { Backoff, DEFAULT_BACKOFF } from '../../src/output/spooled-sink';
import { loadFlowProto } from '../../src/wire/proto';
import { syntheticEvent } from '../../testkit/synthetic';
import { parseCollectorUrl, tlsFilesProblem } from '../../src/output/grpc/url';
import { readFlowEvent } from '../../src/wire/reader';
import { ip as encoderIp, writeFlowEvent, writeFlowEventInto } from '../../src/wire/writer';
import { fromJsonLine, toJsonLine, toJsonObject } from '../../src/model/json';
import type { FlowEvent } from '../../src/model/event';

const events: FlowEvent[] = Array.from({ length: 600 }, (_, i) => syntheticEvent('codec', i));

describe('wire codec', () => {
  it('round-trips every synthetic event shape through proto-loader', () => {
    for (const ev of events) expect(decodeEvent(encodeEvent(ev))).toEqual(ev);
  });

  it('the direct encoder decodes to the same message as proto-loader\'s encoding', () => {
    const proto = loadFlowProto();
    for (const ev of events) {
      const direct = writeFlowEvent(ev);
      expect(proto.decodeEvent(direct)).toEqual(proto.decodeEvent(encodeEvent(ev)));
      expect(fromWire(proto.decodeEvent(direct))).toEqual(ev);
    }
    const upper = writeFlowEvent({ ...events[0], eventId: events[0].eventId.toUpperCase() });
    expect(upper.subarray(2, 18)).toEqual(uuidToBytes(events[0].eventId, 'id'));
  });

  it('the direct decoder reads both encoders\' output exactly', () => {
    for (const ev of events) {
      expect(readFlowEvent(writeFlowEvent(ev))).toEqual({ kind: 'event', eventId: uuidToBytes(ev.eventId, 'id'), event: ev });
      const viaLoader = readFlowEvent(encodeEvent(ev));
      expect(viaLoader.kind === 'event' && viaLoader.event).toEqual(ev);
    }
    expect(readFlowEvent(loadFlowProto().encodeEvent({ isInitiator: true }))).toEqual({ kind: 'initiator' });
  });

  it('reads a NetBird-only message (no wgflow fields, unknown fields present)', () => {
    const proto = loadFlowProto();
    const id = Buffer.alloc(16, 1);
    const nb = proto.encodeEvent({
      event_id: id,
      timestamp: { seconds: 1_700_000_000, nanos: 0 },
      public_key: Buffer.alloc(0),
      flow_fields: {
        flow_id: Buffer.alloc(16, 2), type: 'TYPE_END', direction: 'INGRESS', protocol: 6,
        source_ip: Buffer.from([100, 64, 0, 1]), dest_ip: Buffer.from([10, 0, 0, 5]),
        port_info: { source_port: 40000, dest_port: 443 }, rx_bytes: 1000, tx_bytes: 2000,
        dest_resource_id: Buffer.from('res-xyz'), num_of_ends: 1,
      } as never,
    });
    // An unknown field 50 (string) appended at the top level must be skipped.
    const withUnknown = Buffer.concat([nb, Buffer.from([0x92, 0x03, 0x02, 0x68, 0x69])]);
    const r = readFlowEvent(withUnknown);
    expect(r.kind).toBe('event');
    if (r.kind !== 'event') return;
    expect(r.event).toMatchObject({ type: 'END', direction: 'INGRESS', rxBytes: 1000, txBytes: 2000, countersEnabled: false });
    expect(r.event.source).toMatchObject({ ip: '100.64.0.1', port: 40000, type: 'UNKNOWN' });
    expect(r.event.destination).toMatchObject({ ip: '10.0.0.5', port: 443, id: 'res-xyz' });
    expect(r.event).toEqual(fromWire(proto.decodeEvent(withUnknown)));
  });

  it('reports an event it cannot represent with its id, and non-protobuf as an error', () => {
    const ev = syntheticEvent('codec', 3);
    const buf = writeFlowEvent(ev);
    const shortId = Buffer.concat([Buffer.from([0x0a, 0x02, 0xaa, 0xbb]), buf.subarray(18)]);
    const r = readFlowEvent(shortId);
    expect(r).toMatchObject({ kind: 'invalid', error: expect.stringMatching(/event_id: expected 16 bytes/) });
    expect(r.kind !== 'initiator' && r.eventId).toEqual(Buffer.from([0xaa, 0xbb]));
    expect(() => readFlowEvent(Buffer.from([0xff, 0xff, 0xff]))).toThrow(CodecError);
    expect(() => readFlowEvent(Buffer.from([0x0a, 0x50, 0x01]))).toThrow(/past the end/);
  });

  it('uses the contract field numbers (raw bytes of a known event)', () => {
    const ev = syntheticEvent('codec', 5);
    const buf = writeFlowEvent(ev);
    expect(buf[0]).toBe(0x0a); // field 1 event_id, length-delimited
    expect(buf[1]).toBe(16);
    expect(buf.subarray(2, 18).toString('hex')).toBe(ev.eventId.replace(/-/g, ''));
    expect(buf[18]).toBe(0x12); // field 2 timestamp
    const w = loadFlowProto().decodeEvent(buf);
    expect(w.flow_fields?.connection_info).toBe('port_info');
    expect(w.reporter_id).toBe(ev.reporterId);
  });

  it('carries ICMP in icmp_info, ports in port_info, and both address families as raw bytes', () => {
    const proto = loadFlowProto();
    const icmp = events.find((e) => e.protocol === 1)!;
    const icmp6 = events.find((e) => e.protocol === 58)!;
    const tcp6 = events.find((e) => e.protocol === 6 && e.source.ip.includes(':'))!;
    const w1 = proto.decodeEvent(writeFlowEvent(icmp));
    expect(w1.flow_fields?.connection_info).toBe('icmp_info');
    expect(w1.flow_fields?.icmp_info).toEqual({ icmp_type: icmp.icmpType, icmp_code: icmp.icmpCode });
    expect(w1.flow_fields?.source_ip.length).toBe(4);
    const w2 = proto.decodeEvent(writeFlowEvent(icmp6));
    expect(w2.flow_fields?.connection_info).toBe('icmp_info');
    expect(w2.flow_fields?.source_ip.length).toBe(16);
    const w3 = proto.decodeEvent(writeFlowEvent(tcp6));
    expect(w3.flow_fields?.port_info).toEqual({ source_port: tcp6.source.port, dest_port: tcp6.destination.port });
    expect(w3.flow_fields?.dest_ip.length).toBe(16);
  });

  it('UPDATE is TYPE_UPDATE = 100 on the wire; resources fill the contract resource ids', () => {
    const upd = events.find((e) => e.type === 'UPDATE' && e.destination.type === 'SUBNET_RESOURCE')!;
    const w = toWire(upd);
    expect(w.flow_fields?.type).toBe('TYPE_UPDATE');
    const raw = loadFlowProto().decodeEvent(writeFlowEvent(upd));
    expect(raw.flow_fields?.dest_resource_id.toString()).toBe(upd.destination.id);
    expect(raw.flow_fields?.rule_id.toString()).toBe(upd.ruleId);
  });

  it('writes strings as Buffer.write does: 1- to 4-byte characters, lone surrogates, every length class', () => {
    const proto = loadFlowProto();
    const pieces = ['a', '\u007f', '\u0080', 'é', '\u07ff', '\u0800', '€', '\uffff', '😀', '\u{10ffff}', '\ud800', '\udbff', '\udc00', '\udfff', '\ud83d', '\ude00', '"', '\u0000'];
    const texts: string[] = [...pieces, '\ud800\ud800', '\udc00\ud800', '\ud83d\ude00\ud83d', 'x\ud800y', 'ü'.repeat(42), 'ü'.repeat(43), 'a'.repeat(42) + '😀', 'a'.repeat(127), 'a'.repeat(128), 'é'.repeat(64), '€'.repeat(200), 'a'.repeat(300) + '\udfff'];
    let x = 7;
    for (let n = 0; n < 300; n++) {
      let t = '';
      x = (x * 1103515245 + 12345) >>> 0;
      for (let len = x % 60; len > 0; len--) {
        x = (x * 1103515245 + 12345) >>> 0;
        t += pieces[x % pieces.length];
      }
      texts.push(t);
    }
    const base = events[1];
    for (const t of texts) {
      const ev = { ...base, ruleId: t, policyName: t, user: { ...base.user, name: t } };
      const buf = writeFlowEvent(ev);
      const w = proto.decodeEvent(buf);
      // rule_id is bytes on the wire: exactly Buffer's UTF-8 (a lone surrogate is EF BF BD).
      expect(Buffer.from(w.flow_fields!.rule_id)).toEqual(Buffer.from(t, 'utf8'));
      expect(w.flow_fields!.policy_name).toBe(Buffer.from(t, 'utf8').toString('utf8'));
      expect(w.flow_fields!.user!.name).toBe(Buffer.from(t, 'utf8').toString('utf8'));
      expect(proto.decodeEvent(buf)).toEqual(proto.decodeEvent(encodeEvent({ ...ev, ruleId: Buffer.from(t, 'utf8').toString('utf8'), policyName: Buffer.from(t, 'utf8').toString('utf8'), user: { ...ev.user, name: Buffer.from(t, 'utf8').toString('utf8') } })));
    }
  });

  it('writeFlowEventInto writes writeFlowEvent\'s bytes in place, or says how many it needs', () => {
    const out = Buffer.alloc(64 * 1024);
    for (const ev of [...events.slice(0, 50), { ...events[3], policyName: 'ü'.repeat(5000) }]) {
      const ref = writeFlowEvent(ev);
      expect(writeFlowEventInto(ev, out, 100, out.length)).toBe(100 + ref.length);
      expect(out.subarray(100, 100 + ref.length)).toEqual(ref);
      // Exactly enough room (less than the encoder's worst case) still fits; one byte less does not.
      out.fill(0);
      expect(writeFlowEventInto(ev, out, 7, 7 + ref.length)).toBe(7 + ref.length);
      expect(out.subarray(7, 7 + ref.length)).toEqual(ref);
      expect(writeFlowEventInto(ev, out, 7, 6 + ref.length)).toBe(-ref.length);
    }
    expect(() => writeFlowEventInto({ ...events[0], flowId: 'nope' }, out, 0, out.length)).toThrow('flowId: "nope" is not a UUID');
  });

  it('varints up to 2^53 match proto-loader', () => {
    const proto = loadFlowProto();
    for (const v of [1, 127, 128, 16383, 16384, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 35 + 12345, 2 ** 49 - 1, 2 ** 52 + 3, Number.MAX_SAFE_INTEGER]) {
      const ev = { ...events[1], rxBytes: v, txBytes: v, rxPackets: v, txPackets: v };
      expect(proto.decodeEvent(writeFlowEvent(ev))).toEqual(proto.decodeEvent(encodeEvent(ev)));
      expect(fromWire(proto.decodeEvent(writeFlowEvent(ev)))).toEqual(ev);
    }
  });

  it('the encoder\'s fast address parsers agree with ipToBytes, on tricky and random text', () => {
    const outcome = (f: () => Buffer): string => {
      try {
        return f().toString('hex');
      } catch (err) {
        return `error: ${(err as Error).message}`;
      }
    };
    const tricky = ['', '::', '::1', '1::', 'fe80::1', '2001:db8::', '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', '1::8', 'ABCD:ef01::', '::ffff:1.2.3.4', '0:0:0:0:0:0:0:0',
      ':', ':::', '1:::2', '1::2::3', ':1::', '1::2:', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '12345::', 'g::1', '1:2:3:4:5:6:7::8', 'fe80::1%wg0', '01.2.3.4', '1.2.3.256', '1.2.3', '255.255.255.255', '0.0.0.0', ' 1.2.3.4'];
    for (const t of tricky) expect(outcome(() => encoderIp(t, 'f'))).toBe(outcome(() => ipToBytes(t, 'f')));
    let x = 12345;
    const alphabet = '0123456789abcdefABCDEFg:::.%';
    for (let n = 0; n < 20000; n++) {
      x = (x * 1103515245 + 12345) >>> 0;
      let t = '';
      for (let len = x % 40; len > 0; len--) {
        x = (x * 1103515245 + 12345) >>> 0;
        t += alphabet[(x >>> 8) % alphabet.length];
      }
      expect(outcome(() => encoderIp(t, 'f'))).toBe(outcome(() => ipToBytes(t, 'f')));
    }
  });

  it('refuses bad events with a message naming the field', () => {
    const ev = syntheticEvent('codec', 1);
    const bad: Array<[Partial<FlowEvent>, RegExp]> = [
      [{ eventId: 'nope' }, /eventId: "nope" is not a UUID/],
      [{ eventId: '0000000g-0000-4000-8000-000000000000' }, /eventId: "0000000g-.*" is not a UUID/],
      [{ eventId: '00000000-0000-4000-8000-00000000000\u00e9' }, /eventId: .* is not a UUID/],
      [{ flowId: '123' }, /flowId/],
      [{ source: { ...ev.source, ip: '300.1.1.1' } }, /source\.ip: "300\.1\.1\.1" is not an IPv4 or IPv6 address/],
      [{ reporterPublicKey: 'abc' }, /reporterPublicKey: "abc" is not a base64 WireGuard key/],
      [{ protocol: 999 }, /protocol: 999/],
      [{ rxBytes: -1 }, /rxBytes/],
      [{ type: 'BOGUS' as FlowEvent['type'] }, /type: unknown event type/],
    ];
    for (const [patch, re] of bad) {
      const e = { ...ev, ...patch } as FlowEvent;
      expect(() => writeFlowEvent(e)).toThrow(re);
      expect(() => toWire(e)).toThrow(CodecError);
    }
    // Names of inherited properties are not enum values either.
    expect(() => writeFlowEvent({ ...ev, type: 'toString' as FlowEvent['type'] })).toThrow(/type: unknown event type "toString"/);
    expect(() => writeFlowEvent({ ...ev, direction: 'constructor' as FlowEvent['direction'] })).toThrow(/direction: "constructor"/);
    expect(() => writeFlowEvent({ ...ev, endReason: 'valueOf' as FlowEvent['endReason'] })).toThrow(/endReason: unknown end reason "valueOf"/);
    expect(() => writeFlowEvent({ ...ev, source: { ...ev.source, type: 'hasOwnProperty' as FlowEvent['source']['type'] } })).toThrow(/source\.type: unknown endpoint type/);
  });

  it('parses and prints addresses canonically', () => {
    expect(bytesToIp(ipToBytes('2001:db8:0:0:0:0:0:1', 'x'), 'x')).toBe('2001:db8::1');
    expect(bytesToIp(ipToBytes('::ffff:10.0.0.1', 'x'), 'x')).toBe('::ffff:10.0.0.1');
    expect(bytesToIp(ipToBytes('::', 'x'), 'x')).toBe('::');
    expect(bytesToIp(ipToBytes('fe80::1:0:0:1', 'x'), 'x')).toBe('fe80::1:0:0:1');
    expect(() => ipToBytes('1::2::3', 'x')).toThrow(CodecError);
    expect(() => uuidToBytes('zzzzzzzz-0000-4000-8000-000000000000', 'id')).toThrow(/not a UUID/);
  });

  it('acks: hand codec matches proto-loader both ways', () => {
    const proto = loadFlowProto();
    const id = Buffer.alloc(16, 7);
    expect(encodeAck(id)).toEqual(proto.encodeAck({ event_id: id }));
    expect(INITIATOR_ACK).toEqual(proto.encodeAck({ isInitiator: true }));
    expect(proto.decodeAck(encodeAck(id))).toEqual({ event_id: id, isInitiator: false });
    expect(decodeAck(proto.encodeAck({ event_id: id, isInitiator: false }))).toEqual({ eventId: id, isInitiator: false });
    expect(decodeAck(INITIATOR_ACK).isInitiator).toBe(true);
    expect(() => decodeAck(Buffer.from([0x0a, 0x10, 1]))).toThrow(/truncated/);
  });
});

describe('JSON form', () => {
  it('toJsonLine / fromJsonLine are inverses for every event shape', () => {
    for (const ev of events) {
      const line = toJsonLine(ev, 1_760_000_000_123);
      const back = fromJsonLine(line);
      expect(back.event).toEqual(ev);
      expect(back.receiveTimeMs).toBe(1_760_000_000_123);
    }
  });

  it('uses NetBird\'s field names and formats', () => {
    const icmp6 = events.find((e) => e.protocol === 58)!;
    const o = JSON.parse(toJsonLine(icmp6, 0)) as Record<string, unknown>;
    expect(Object.keys(o).slice(0, 3)).toEqual(['id', 'flow_id', 'type']);
    for (const k of ['id', 'flow_id', 'type', 'direction', 'protocol', 'icmp_type', 'icmp_code', 'policy_id', 'policy_name', 'reporter_id', 'timestamp', 'receive_timestamp', 'rx_bytes', 'rx_packets', 'tx_bytes', 'tx_packets', 'source', 'destination', 'user_id', 'user_email', 'user_name']) {
      expect(o).toHaveProperty(k);
    }
    expect((o.source as { address: string }).address).toBe(`[${icmp6.source.ip}]:0`);
    expect((o.source as { geo_location: unknown }).geo_location).toEqual({ city_name: '', country_code: '' });
    expect(o.timestamp).toBe(new Date(icmp6.timestampMs).toISOString());
    const upd = JSON.parse(toJsonLine(events.find((e) => e.type === 'UPDATE')!, 0)) as Record<string, unknown>;
    expect(upd.type).toBe('TYPE_UPDATE');
    expect(upd.wgflow_window_start).toMatch(/Z$/);
  });

  it('the direct line builder equals JSON.stringify of the object form', () => {
    for (const ev of events) expect(toJsonLine(ev, 1_760_000_000_007)).toBe(JSON.stringify(toJsonObject(ev, 1_760_000_000_007)));
  });

  it('names the field when a line is not an event', () => {
    expect(() => fromJsonLine('{"id":"x"}')).toThrow(/type/);
    expect(() => fromJsonLine('nope')).toThrow(/not JSON/);
  });
});

describe('collector URL', () => {
  it('accepts grpc, grpcs and https', () => {
    expect(parseCollectorUrl('grpc://127.0.0.1:50051')).toMatchObject({ target: '127.0.0.1:50051', tls: false });
    expect(parseCollectorUrl('grpcs://c.example:8443')).toMatchObject({ target: 'c.example:8443', tls: true });
    expect(parseCollectorUrl('https://c.example')).toMatchObject({ target: 'c.example:443', tls: true });
    expect(parseCollectorUrl('grpc://[::1]:50051')).toMatchObject({ target: '[::1]:50051', host: '::1' });
    expect(parseCollectorUrl('grpc://host:80').port).toBe(80);
  });

  it('rejects anything else with a clear message', () => {
    expect(() => parseCollectorUrl('http://x:1')).toThrow(/unsupported scheme "http:\/\/" \(plaintext is grpc:\/\/\)/);
    expect(() => parseCollectorUrl('127.0.0.1:50051')).toThrow(/missing scheme/);
    expect(() => parseCollectorUrl('grpc://host')).toThrow(/missing port/);
    expect(() => parseCollectorUrl('grpc://host:99999')).toThrow(/out of range|not a valid/);
    expect(() => parseCollectorUrl('grpcs://host:443/path')).toThrow(/no path/);
    expect(() => parseCollectorUrl('grpc://user:pw@h:1')).toThrow(/credentials in the URL are not supported; give the token with --token or collector\.token/);
  });

  it('TLS files: a certificate needs its key, and plaintext takes none (one rule for the exporter and the config check)', () => {
    const plain = parseCollectorUrl('grpc://h:1'), tls = parseCollectorUrl('grpcs://h:1');
    expect(tlsFilesProblem(tls, { caFile: '/ca', certFile: '/c', keyFile: '/k' })).toBeNull();
    expect(tlsFilesProblem(tls, { certFile: '/c' })).toEqual({ file: 'keyFile', problem: 'a client certificate needs its key: set both or neither' });
    expect(tlsFilesProblem(tls, { keyFile: '/k' })?.file).toBe('certFile');
    expect(tlsFilesProblem(plain, { caFile: '/ca' })).toEqual({ file: 'caFile', problem: 'TLS files were given but "grpc://h:1" is plaintext; use grpcs:// or https://' });
    expect(tlsFilesProblem(plain, {})).toBeNull();
  });
});

describe('backoff', () => {
  it('follows NetBird: 0.8 s, x1.7, +-50% jitter, capped', () => {
    const mid = new Backoff(DEFAULT_BACKOFF, () => 0.5);
    const seq = Array.from({ length: 12 }, () => mid.next());
    expect(seq.slice(0, 3)).toEqual([800, 1360, 2312]);
    expect(Math.max(...seq)).toBe(30_000);
    const low = new Backoff(DEFAULT_BACKOFF, () => 0);
    const high = new Backoff(DEFAULT_BACKOFF, () => 0.999999);
    expect(low.next()).toBe(400);
    expect(high.next()).toBe(1200);
    mid.reset();
    expect(mid.next()).toBe(800);
  });
});
