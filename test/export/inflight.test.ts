// The exporter's table of unacknowledged events: found by id, whatever ids share a key.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InFlight, InFlightTable } from '../../src/output/grpc/inflight';
import type { SpoolRecord } from '../../src/output/spool';

const rec = (id: Buffer, seq = 1, off = 0): SpoolRecord => ({ buf: id, idAt: 0, payload: Buffer.alloc(0), seq, off });

describe('InFlightTable', () => {
  it('adds, finds and deletes 200,000 ids like a Map (some share a key: 30 bits)', () => {
    const t = new InFlightTable();
    const ref = new Map<string, InFlight>();
    const ids = Array.from({ length: 200_000 }, () => randomBytes(16));
    for (const id of ids) ref.set(id.toString('hex'), t.add(rec(id), 0));
    expect(t.size).toBe(ids.length);
    for (const id of ids) expect(t.get(id)).toBe(ref.get(id.toString('hex')));
    // Delete every other one, in a different order than added.
    for (let i = ids.length - 1; i >= 0; i -= 2) t.delete(ref.get(ids[i].toString('hex'))!);
    for (let i = 0; i < ids.length; i++) {
      const f = t.get(ids[i]);
      if ((ids.length - 1 - i) % 2 === 0) expect(f).toBeUndefined();
      else expect(f).toBe(ref.get(ids[i].toString('hex')));
    }
    expect(t.size).toBe(ids.length / 2);
    expect(t.values().length).toBe(ids.length / 2);
    expect(t.values().every((f) => f.live)).toBe(true);
  });

  it('ids that differ in one byte only, a deleted entry, a wrong-size id, deleteWhere', () => {
    const t = new InFlightTable();
    const a = Buffer.alloc(16), b = Buffer.alloc(16);
    b[15] = 1;
    const fa = t.add(rec(a, 1), 0), fb = t.add(rec(b, 2), 0);
    expect(t.get(Buffer.from(a))).toBe(fa);
    expect(t.get(Buffer.from(b))).toBe(fb);
    expect(t.get(Buffer.alloc(8))).toBeUndefined();
    t.delete(fa);
    t.delete(fa); // twice is harmless
    expect(fa.live).toBe(false);
    expect(t.get(a)).toBeUndefined();
    expect(t.size).toBe(1);
    t.deleteWhere((f) => f.rec.seq === 2);
    expect(t.size).toBe(0);
    expect(t.get(b)).toBeUndefined();
  });

  it('finds ids read in place (inside a larger buffer); values() lists them in spool order', () => {
    const t = new InFlightTable();
    const chunk = randomBytes(40 * 1000);
    const order = Array.from({ length: 1000 }, (_, k) => k).sort((a, b) => ((a * 7919) % 1000) - ((b * 7919) % 1000));
    for (const k of order) t.add({ buf: chunk, idAt: k * 40 + 12, payload: chunk.subarray(k * 40 + 28, k * 40 + 40), seq: 1 + (k >> 8), off: 16 + (k & 255) * 40 }, 0);
    for (let k = 0; k < 1000; k++) expect(t.get(Buffer.from(chunk.subarray(k * 40 + 12, k * 40 + 28)))?.rec.idAt).toBe(k * 40 + 12);
    expect(t.values().map((f) => f.rec.idAt)).toEqual(Array.from({ length: 1000 }, (_, k) => k * 40 + 12));
  });
});
