// The TypeScript decoder against hand-built bytes, and its sizes against the compiled header.
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import {
  decodeCounters, decodeFlows, decodeRecords, decodeStats, FLOW_SIZE, FlowMapRead, KEY4_SIZE, KEY6_SIZE, keyId,
  getJiffiesClock, lastSeenNs, lastSeenStamp, RECORD_SIZE, setJiffiesClock, RecordType, STATS_SIZE, tcpFlagsOf,
} from '../../src/datapath/records';
import { loadNative, REPO_ROOT } from '../../src/util/addon';

function key4(a: number[], b: number[], pa: number, pb: number, proto: number, kind: number, ifindex: number): Buffer {
  const k = Buffer.alloc(KEY4_SIZE);
  Buffer.from(a).copy(k, 0);
  Buffer.from(b).copy(k, 4);
  k.writeUInt16BE(pa, 8);
  k.writeUInt16BE(pb, 10);
  k[12] = proto;
  k[13] = kind;
  k.writeUInt16LE(ifindex, 14);
  return k;
}

describe('record decoding', () => {
  it('sizes match the compiled header (via the addon)', () => {
    if (!existsSync(`${REPO_ROOT}/native/build/Release/wgflow_native.node`)) throw new Error('addon not built: run make build');
    expect(loadNative().sizes).toEqual({ key4: KEY4_SIZE, key6: KEY6_SIZE, flow: FLOW_SIZE, record: RECORD_SIZE, stats: STATS_SIZE });
  });

  it('decodes a ring record with an IPv4 key', () => {
    const r = Buffer.alloc(RECORD_SIZE);
    r[0] = RecordType.Start; r[1] = 4; r[2] = 1; r[3] = 0x02;
    r.writeUInt32LE(0x30002, 4);
    r.writeBigUInt64LE(123456789012345n, 8);
    key4([10, 0, 0, 1], [10, 0, 0, 2], 443, 40000, 6, 0, 7).copy(r, 16);
    const [rec] = decodeRecords(r.buffer.slice(r.byteOffset, r.byteOffset + r.length));
    expect(rec).toMatchObject({ type: RecordType.Start, dir: 1, tcpFlags: 2, flags: 0x30002, tsNs: 123456789012345 });
    expect(rec.key).toMatchObject({ family: 4, addrA: '10.0.0.1', addrB: '10.0.0.2', portA: 443, portB: 40000, proto: 6, kind: 0, ifindex: 7 });
  });

  it('decodes IPv6 keys to RFC 5952 text, including IPv4-mapped addresses', () => {
    const r = Buffer.alloc(RECORD_SIZE * 2);
    for (const [i, a] of [[0, 'fd00:0:0:0:0:0:0:1'], [1, '0:0:0:0:0:ffff:a00:1']] as const) {
      const o = i * RECORD_SIZE;
      r[o] = RecordType.Fin; r[o + 1] = 6;
      a.split(':').forEach((g, j) => r.writeUInt16BE(parseInt(g, 16), o + 16 + 2 * j));
      r.writeUInt16BE(0x2001, o + 32); r.writeUInt16BE(0xdb8, o + 34); r.writeUInt16BE(1, o + 46);
      r[o + 16 + 36] = 17;
    }
    const recs = decodeRecords(r.buffer.slice(r.byteOffset, r.byteOffset + r.length));
    expect(recs.map((x) => [x.key.addrA, x.key.addrB])).toEqual([['fd00::1', '2001:db8::1'], ['::ffff:10.0.0.1', '2001:db8::1']]);
    expect(recs[0].key.proto).toBe(17);
  });

  it('skips records of an unknown family and ignores a trailing partial record', () => {
    const r = Buffer.alloc(RECORD_SIZE * 2 + 10);
    r[1] = 9;
    r[RECORD_SIZE + 1] = 4;
    expect(decodeRecords(r.buffer.slice(r.byteOffset, r.byteOffset + r.length))).toHaveLength(1);
  });

  it('decodes flow values and batched reads; key ids are stable and distinct per family', () => {
    const v = Buffer.alloc(FLOW_SIZE);
    v.writeBigUInt64LE(5_000_000_000n, 0);
    v.writeBigUInt64LE(2n ** 40n, 8);
    v.writeBigUInt64LE(77n, 16);
    v.writeUInt32LE(0xffffffff, 24);
    v.writeUInt32LE(3, 28);
    v.writeUInt32LE(99, 32);
    v.writeUInt32LE(0x1203, 36);
    const c = decodeCounters(new DataView(v.buffer, v.byteOffset), 0);
    expect(c).toEqual({ firstNs: 5e9, rxBytes: 2 ** 40, txBytes: 77, rxPackets: 0xffffffff, txPackets: 3, lastSeen: 99, flags: 0x1203 });
    expect(tcpFlagsOf(c.flags, 0)).toBe(0x03);
    expect(tcpFlagsOf(c.flags, 1)).toBe(0x12);
    const k = key4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, 17, 0, 3);
    const keys = Buffer.concat([k, k]);
    const vals = Buffer.concat([v, v]);
    const flows = decodeFlows(4, keys.buffer.slice(keys.byteOffset, keys.byteOffset + keys.length), vals.buffer.slice(vals.byteOffset, vals.byteOffset + vals.length), 2);
    expect(flows[0].key.id).toBe(flows[1].key.id);
    expect(flows[0].key.id).toBe(keyId(k, 4));
    expect(() => keyId(k, 6)).toThrow(/IPv6 key has 40 bytes/);
    expect(Buffer.from(flows[0].key.raw)).toEqual(k);
  });

  it('FlowMapRead: slices of IPv4 and IPv6 reads decode as decodeFlows of each, in order', () => {
    const ab = (b: Buffer): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
    const values = (n: number, base: number): Buffer => {
      const v = Buffer.alloc(n * FLOW_SIZE);
      for (let i = 0; i < n; i++) {
        v.writeBigUInt64LE(BigInt(base + i), i * FLOW_SIZE);
        v.writeUInt32LE(i, i * FLOW_SIZE + 24);
      }
      return v;
    };
    const k4 = Buffer.concat(Array.from({ length: 37 }, (_, i) => key4([10, 0, 0, i], [10, 0, 1, 1], 1000 + i, 53, 17, 0, 3)));
    const k6 = Buffer.alloc(11 * KEY6_SIZE);
    for (let i = 0; i < 11; i++) k6.writeUInt16BE(0xfd00 + i, i * KEY6_SIZE);
    const v4 = values(37, 1000), v6 = values(11, 5000);
    const read = new FlowMapRead();
    read.add(4, ab(k4), ab(v4), 37);
    read.add(6, ab(Buffer.alloc(0)), ab(Buffer.alloc(0)), 0);
    read.add(6, ab(k6), ab(v6), 11);
    const all = [...decodeFlows(4, ab(k4), ab(v4), 37), ...decodeFlows(6, ab(k6), ab(v6), 11)];
    const plain = (es: typeof all): unknown[] => es.map((e) => ({ id: e.key.id, family: e.key.family, value: e.value }));
    expect(read.length).toBe(48);
    expect(plain(read.slice())).toEqual(plain(all));
    for (const [from, to] of [[0, 5], [30, 40], [36, 37], [37, 48], [47, 100], [-5, 3], [20, 10], [48, 60]]) {
      expect(plain(read.slice(from, to))).toEqual(plain(all.slice(Math.max(0, from), to)));
    }
    expect(() => read.add(4, ab(k4), ab(v4), 38)).toThrow(/38 entries needs/);
  });

  it('decodes summed statistics', () => {
    const s = Buffer.alloc(STATS_SIZE);
    for (let i = 0; i < 8; i++) s.writeBigUInt64LE(BigInt(i + 1), i * 8);
    expect(decodeStats(s.buffer.slice(s.byteOffset, s.byteOffset + s.length))).toEqual({
      flowsCreated: 1, mapFull: 2, mapFullBytes: 3, ringbufFull: 4, nonIp: 5, malformed: 6, malformedBytes: 7, fragments: 8,
    });
  });

  it('widens the 32-bit jiffies stamp to monotonic time, across its wrap-around', () => {
    const saved = getJiffiesClock();
    try {
      // HZ=250, 2^32 - 100 ticks at t=1 s: the 32-bit stamp wraps 0.4 s later.
      setJiffiesClock({ hz: 250, jiffies: 2 ** 32 - 100, monoNs: 1e9 });
      const t = 1e9 + 2e9; // 500 ticks later: past the wrap
      expect(lastSeenStamp(t)).toBe(400);
      expect(lastSeenNs(lastSeenStamp(t), t)).toBe(t);
      expect(lastSeenNs(lastSeenStamp(1.2e9), t)).toBe(1.2e9);
      expect(lastSeenNs(2 ** 32 - 50, t)).toBe(1e9 + 50 * 4e6);
    } finally {
      setJiffiesClock(saved);
    }
  });
});
