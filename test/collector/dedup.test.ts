// The collector's seen-set of event ids: it must behave exactly like a Set with first-in,
// first-out eviction, through heavy churn (the table's deletions shift entries back).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { rebuildSeenSet, SeenSet } from '../../src/collector/dedup';

/** The reference: a Set of hex keys that forgets its oldest key past max. */
class Reference {
  readonly keys = new Set<string>();
  constructor(readonly max: number) {}
  add(k: string): boolean {
    if (this.keys.has(k)) return false;
    this.keys.add(k);
    if (this.keys.size > this.max) this.keys.delete(this.keys.values().next().value as string);
    return true;
  }
}

describe('SeenSet', () => {
  it('matches a FIFO-evicting Set through heavy churn, re-adds and lookups', () => {
    for (const max of [1, 2, 7, 1000]) {
      const s = new SeenSet(max);
      const ref = new Reference(max);
      const pool = Array.from({ length: max * 3 + 5 }, () => randomBytes(16));
      for (let n = 0; n < 20_000; n++) {
        const id = pool[Math.floor(Math.random() * pool.length)];
        const k = id.toString('hex');
        if (Math.random() < 0.5) expect(s.add(id)).toBe(ref.add(k));
        else expect(s.has(id)).toBe(ref.keys.has(k));
      }
      expect(s.size).toBe(ref.keys.size);
      for (const id of pool) expect(s.has(id)).toBe(ref.keys.has(id.toString('hex')));
    }
  });

  it('finds ids inside a larger buffer and by their hex key; refuses a short id', () => {
    const s = new SeenSet(10);
    const buf = Buffer.concat([Buffer.from([1, 2, 3]), Buffer.alloc(16, 0xab)]);
    expect(s.add(buf, 3)).toBe(true);
    expect(s.has(Buffer.alloc(16, 0xab))).toBe(true);
    expect(s.hasKey('ab'.repeat(16))).toBe(true);
    s.addKey('00'.repeat(15) + '01');
    expect(s.has(Buffer.from('00'.repeat(15) + '01', 'hex'))).toBe(true);
    expect(() => s.has(Buffer.alloc(8))).toThrow(/16 bytes/);
    // An output file may hold a hand-edited line whose id is no UUID: skipped, not fatal.
    s.addKey('not-a-uuid');
    s.addKey('abcd');
    expect(s.size).toBe(2);
  });

  it('ids that share all but one word still differ', () => {
    const s = new SeenSet(100);
    const a = Buffer.alloc(16), b = Buffer.alloc(16);
    b[15] = 1;
    s.add(a);
    expect(s.has(b)).toBe(false);
    s.add(b);
    expect(s.size).toBe(2);
  });

  it('rebuilds from output files that also hold hand-edited lines (the collector must still start)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-dedup-'));
    try {
      const f = join(dir, 'events.jsonl');
      const id = '0123456789abcdef0123456789abcdef';
      writeFileSync(f, `{"id":"xyz","note":"hand edited"}\n{"x":1}\n{"id":"${id.slice(0, 8)}-${id.slice(8, 12)}-${id.slice(12, 16)}-${id.slice(16, 20)}-${id.slice(20)}","type":"TYPE_START"}\n`);
      const s = rebuildSeenSet([f], 100);
      expect(s.size).toBe(1);
      expect(s.has(Buffer.from(id, 'hex'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SeenSet batch tags', () => {
  it('forgets the ids of a failed batch (keeping its durable first lines) and nothing else', () => {
    const s = new SeenSet(100);
    const ids = Array.from({ length: 30 }, () => randomBytes(16));
    ids.slice(0, 10).forEach((id) => expect(s.add(id, 0, 1)).toBe(true));
    ids.slice(10, 20).forEach((id) => expect(s.add(id, 0, 2)).toBe(true));
    ids.slice(20, 30).forEach((id) => expect(s.add(id, 0, 3)).toBe(true));
    expect(s.add(ids[15], 0, 3)).toBe(false);
    expect(s.foundTag).toBe(2);
    // Batch 2 failed after its first 4 lines went to a file rotated away.
    expect(s.forgetBatch(2, 4)).toBe(6);
    for (let i = 0; i < 30; i++) expect(s.has(ids[i])).toBe(i < 14 || i >= 20);
    // A resend is new again, and is written with the batch now accumulating.
    expect(s.add(ids[15], 0, 4)).toBe(true);
    expect(s.add(ids[15], 0, 4)).toBe(false);
    expect(s.foundTag).toBe(4);
    expect(s.forgetBatch(9)).toBe(0);
  });

  it('evicts forgotten slots without touching a re-added copy of the same id', () => {
    const s = new SeenSet(4);
    const a = randomBytes(16);
    s.add(a, 0, 1);
    s.forgetBatch(1);
    expect(s.has(a)).toBe(false);
    s.add(a, 0, 2); // the ring now holds a dead copy (oldest) and a live one
    for (let i = 0; i < 2; i++) s.add(randomBytes(16), 0, 2);
    s.add(randomBytes(16), 0, 2); // evicts the dead copy
    expect(s.has(a)).toBe(true);
    s.forgetNewest();
    expect(s.size).toBe(3);
  });
});
