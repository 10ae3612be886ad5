// Deterministic ids: the JavaScript SHA-1 against node:crypto, v5 UUIDs against RFC 4122 / Python,
// event ids against an independent implementation of the documented derivation (docs/events.md).
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  bootNamespace, EVENT_MASK_NAMESPACE, eventIdText, eventUuid, flowUuid, parseUuid, readBootId, sha1, uuidText, uuidV5, WGFLOW_NAMESPACE,
} from '../../src/flow/ids';
import { paddedLength, sha1Into, sha1Words } from '../../src/flow/sha1';

const hexUuid = (x: string): string => `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;

function refV5(ns: string, name: Buffer): string {
  const h = createHash('sha1').update(Buffer.from(ns.replace(/-/g, ''), 'hex')).update(name).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  return hexUuid(h.subarray(0, 16).toString('hex'));
}

/** The documented event id: flow id XOR SHA-1(EVENT_MASK_NAMESPACE ++ label)[0..16), version 8, RFC 4122 variant. */
function refEventId(flowId: string, label: string): string {
  const mask = createHash('sha1').update(Buffer.from(EVENT_MASK_NAMESPACE.replace(/-/g, ''), 'hex')).update(label).digest();
  const b = Buffer.from(flowId.replace(/-/g, ''), 'hex');
  for (let i = 0; i < 16; i++) b[i] ^= mask[i];
  b[6] = (b[6] & 0x0f) | 0x80;
  b[8] = (b[8] & 0x3f) | 0x80;
  return hexUuid(b.toString('hex'));
}

describe('sha1', () => {
  it('equals node:crypto for every length up to 300 bytes, and for long inputs', () => {
    for (let len = 0; len <= 300; len++) {
      const b = randomBytes(len);
      expect(sha1(b).toString('hex')).toBe(createHash('sha1').update(b).digest('hex'));
    }
    for (const len of [1000, 4095, 4096, 65_537]) {
      const b = randomBytes(len);
      expect(sha1(b).toString('hex')).toBe(createHash('sha1').update(b).digest('hex'));
    }
  });

  it('sha1Into digests in place, reusing one buffer, and refuses a buffer without room for the padding', () => {
    const m = new Uint8Array(256);
    const h = new Int32Array(5);
    for (let i = 0; i < 200; i++) {
      const len = i % 120;
      const b = randomBytes(len);
      m.set(b); // the previous message's padding is still in the buffer after it
      sha1Into(m, len, h);
      const got = Buffer.alloc(20);
      for (let w = 0; w < 5; w++) got.writeInt32BE(h[w], 4 * w);
      expect(got.toString('hex')).toBe(createHash('sha1').update(b).digest('hex'));
    }
    // The word form (whole-word messages, as the flow id uses) gives the same digests.
    const x = new Int32Array(64);
    for (const len of [0, 4, 40, 52, 56, 64, 120]) {
      const b = randomBytes(len);
      for (let w = 0; w < len / 4; w++) x[w] = b.readInt32BE(4 * w);
      x[len / 4 + 3] = -1; // stale words past the message are overwritten by the padding
      sha1Words(x, len, h);
      const got = Buffer.alloc(20);
      for (let w = 0; w < 5; w++) got.writeInt32BE(h[w], 4 * w);
      expect(got.toString('hex')).toBe(createHash('sha1').update(b).digest('hex'));
    }
    expect(() => sha1Words(x, 6, h)).toThrow(RangeError);
    expect(paddedLength(55)).toBe(64);
    expect(paddedLength(56)).toBe(128);
    expect(() => sha1Into(new Uint8Array(64), 56, h)).toThrow(RangeError);
  });
});

describe('ids', () => {
  it('uuidV5 matches the well-known value uuid5(NAMESPACE_DNS, "python.org")', () => {
    expect(uuidV5(parseUuid('6ba7b810-9dad-11d1-80b4-00c04fd430c8'), 'python.org').text).toBe('886313e1-3b8a-5372-9b90-0c9aee199e5d');
  });

  it('uuidText writes the 36-character form of four words', () => {
    for (let i = 0; i < 100; i++) {
      const b = randomBytes(16);
      expect(uuidText(b.readInt32BE(0), b.readInt32BE(4), b.readInt32BE(8), b.readInt32BE(12))).toBe(hexUuid(b.toString('hex')));
    }
    expect(parseUuid(uuidText(-1, 0, 0x12345678, -0x80000000)).text).toBe('ffffffff-0000-0000-1234-567880000000');
  });

  it('flow and event ids are the documented derivations', () => {
    const boot = 'b1c2d3e4-0000-4000-8000-123456789abc';
    const ns = bootNamespace(boot);
    expect(ns.text).toBe(refV5(WGFLOW_NAMESPACE, Buffer.from(boot)));
    const key = Buffer.from('0a0000010a0000029c400050060003000', 'hex').subarray(0, 16).toString('latin1');
    const firstNs = 123_456_789_012_345;
    const t = Buffer.alloc(8);
    t.writeBigUInt64BE(BigInt(firstNs));
    const fid = flowUuid(ns, key, firstNs);
    expect(fid.text).toBe(refV5(ns.text, Buffer.concat([Buffer.from(key, 'latin1'), t])));
    for (const label of ['start', 'end', 'update:0', 'update:3', 'update:123456']) {
      expect(eventUuid(fid, label)).toBe(refEventId(fid.text, label));
      expect(eventUuid(fid.text, label)).toBe(refEventId(fid.text, label));
      expect(eventIdText(fid.w0, fid.w1, fid.w2, fid.w3, label)).toBe(refEventId(fid.text, label));
    }
    const key6 = randomBytes(40).toString('latin1');
    expect(flowUuid(ns, key6, firstNs).text).toBe(refV5(ns.text, Buffer.concat([Buffer.from(key6, 'latin1'), t])));
  });

  it('event ids are deterministic, version 8, and distinct across flows and labels', () => {
    const ns = bootNamespace('b1c2d3e4-0000-4000-8000-123456789abc');
    const all = new Set<string>();
    const flows = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const fid = flowUuid(ns, randomBytes(16).toString('latin1'), 1e12 + i);
      flows.add(fid.text);
      for (const label of ['start', 'end', `update:${i % 7}`]) {
        const id = eventUuid(fid, label);
        expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        expect(eventUuid(parseUuid(fid.text), label)).toBe(id); // same id from a re-parsed flow id (a restart)
        all.add(id);
      }
    }
    expect(all.size).toBe(3 * 2000);
    for (const f of flows) expect(all.has(f)).toBe(false);
  });

  it('readBootId reads the kernel boot id, or falls back to a random one', () => {
    expect(readBootId()).toMatch(/^[0-9a-f-]{36}$/);
    const a = readBootId('/nonexistent/boot_id'), b = readBootId('/nonexistent/boot_id');
    expect(a).not.toBe(b);
  });
});
