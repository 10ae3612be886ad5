// Deterministic ids: the JavaScript SHA-1 against node:crypto, v5 UUIDs against RFC 4122 / Python.
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { bootNamespace, eventUuid, flowUuid, parseUuid, readBootId, sha1, uuidV5, WGFLOW_NAMESPACE } from '../../src/flow/ids';

function refV5(ns: string, name: Buffer): string {
  const h = createHash('sha1').update(Buffer.from(ns.replace(/-/g, ''), 'hex')).update(name).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

describe('ids', () => {
  it('sha1 equals node:crypto for every length up to 247 bytes', () => {
    for (let len = 0; len <= 247; len++) {
      const b = randomBytes(len);
      expect(sha1(b).toString('hex')).toBe(createHash('sha1').update(b).digest('hex'));
    }
  });

  it('uuidV5 matches the well-known value uuid5(NAMESPACE_DNS, "python.org")', () => {
    expect(uuidV5(parseUuid('6ba7b810-9dad-11d1-80b4-00c04fd430c8'), 'python.org').text).toBe('886313e1-3b8a-5372-9b90-0c9aee199e5d');
  });

  it('flow and event ids are the documented v5 derivations', () => {
    const boot = 'b1c2d3e4-0000-4000-8000-123456789abc';
    const ns = bootNamespace(boot);
    expect(ns.text).toBe(refV5(WGFLOW_NAMESPACE, Buffer.from(boot)));
    const key = Buffer.from('0a0000010a0000029c400050060003000', 'hex').subarray(0, 16).toString('latin1');
    const firstNs = 123_456_789_012_345;
    const t = Buffer.alloc(8);
    t.writeBigUInt64BE(BigInt(firstNs));
    const fid = flowUuid(ns, key, firstNs);
    expect(fid.text).toBe(refV5(ns.text, Buffer.concat([Buffer.from(key, 'latin1'), t])));
    expect(eventUuid(fid, 'start')).toBe(refV5(fid.text, Buffer.from('start')));
    expect(eventUuid(fid, 'update:3')).toBe(refV5(fid.text, Buffer.from('update:3')));
    const key6 = randomBytes(40).toString('latin1');
    expect(flowUuid(ns, key6, firstNs).text).toBe(refV5(ns.text, Buffer.concat([Buffer.from(key6, 'latin1'), t])));
  });

  it('readBootId reads the kernel boot id, or falls back to a random one', () => {
    expect(readBootId()).toMatch(/^[0-9a-f-]{36}$/);
    const a = readBootId('/nonexistent/boot_id'), b = readBootId('/nonexistent/boot_id');
    expect(a).not.toBe(b);
  });
});
