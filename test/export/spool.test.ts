// Unit tests of the durable spool: order, acks, restart, corruption, size bound, locking.
import { readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_RECORD_BODY, recordId, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, Spool, SpoolRecord, walkRecords } from '../../src/output/spool';
import { cleanup, tmpDir } from './helpers';

const dirs: string[] = [];
const newDir = (): string => {
  const d = tmpDir('spool');
  dirs.push(d);
  return d;
};
afterAll(() => cleanup(...dirs));

/** Item i: 16-byte id holding i, payload of varying size. */
const item = (i: number): { id: Buffer; payload: Buffer } => {
  const id = Buffer.alloc(16);
  id.writeUInt32BE(i, 12);
  return { id, payload: Buffer.alloc(100 + (i % 37), i & 0xff) };
};
const idx = (r: SpoolRecord): number => recordId(r).readUInt32BE(12);
const items = (from: number, n: number): Array<{ id: Buffer; payload: Buffer }> => Array.from({ length: n }, (_, k) => item(from + k));

function drain(s: Spool, max = 1_000_000): SpoolRecord[] {
  const out: SpoolRecord[] = [];
  for (;;) {
    const r = s.next(97);
    if (r.length === 0 || out.length >= max) return out;
    out.push(...r);
  }
}

const segFiles = (dir: string): string[] => readdirSync(dir).filter((n) => n.endsWith('.seg')).sort();

describe('spool', () => {
  it('hands out records once, in order, across segments and the memory cap', () => {
    const dir = newDir();
    const s = Spool.open({ dir, segmentBytes: 8192, memoryBytes: 4096, maxBytes: 64 << 20 });
    for (let b = 0; b < 50; b++) s.append(items(b * 40, 40));
    const got = drain(s);
    expect(got.map(idx)).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    expect(got[7].payload).toEqual(item(7).payload);
    expect(s.stats().records).toBe(2000);
    expect(segFiles(dir).length).toBeGreaterThan(10);
    for (const r of got) s.ack(r.seq, r.off);
    expect(s.stats().records).toBe(0);
    // Sealed, fully acked segments are deleted right away; only the active one is left.
    expect(segFiles(dir).length).toBe(1);
    s.close();
    expect(segFiles(dir).length).toBe(0);
  });

  it('deletes acked segments in the background; a reopen removes what a crash left half-deleted', async () => {
    const dir = newDir();
    const s = Spool.open({ dir, segmentBytes: 8192, maxBytes: 64 << 20 });
    for (let b = 0; b < 10; b++) s.append(items(b * 40, 40));
    for (const r of drain(s)) s.ack(r.seq, r.off);
    expect(segFiles(dir).length).toBe(1); // renamed away at once
    await new Promise((r) => setTimeout(r, 200));
    expect(readdirSync(dir).filter((n) => n.endsWith('.deleted'))).toEqual([]);
    s.close();
    writeFileSync(join(dir, '0000000000000042.seg.deleted'), 'left by a crash');
    const again = Spool.open({ dir });
    expect(readdirSync(dir).filter((n) => n.endsWith('.deleted'))).toEqual([]);
    expect(again.stats().records).toBe(0);
    again.close();
  });

  it('after a restart resends only what was not acked (acks out of order)', () => {
    const dir = newDir();
    let s = Spool.open({ dir, segmentBytes: 8192 });
    s.append(items(0, 300));
    const got = drain(s);
    const acked = new Set<number>();
    for (const r of got) {
      if (idx(r) % 3 !== 0) {
        s.ack(r.seq, r.off);
        acked.add(idx(r));
      }
    }
    s.close();
    s = Spool.open({ dir, segmentBytes: 8192 });
    expect(s.stats().records).toBe(100);
    const again = drain(s);
    expect(again.map(idx)).toEqual(Array.from({ length: 100 }, (_, k) => k * 3));
    // New appends go after what the earlier run left.
    s.append(items(1000, 5));
    expect(drain(s).map(idx)).toEqual([1000, 1001, 1002, 1003, 1004]);
    s.close();
  });

  it('a crash (no close, unflushed acks) loses nothing: unacked and maybe some acked come back', () => {
    const dir = newDir();
    const s = Spool.open({ dir, segmentBytes: 8192, ackFlushMs: 60_000 });
    s.append(items(0, 50));
    for (const r of drain(s).slice(0, 20)) s.ack(r.seq, r.off);
    // Simulate SIGKILL: drop the object without close(); the lock's pid is ours, so fake a dead one.
    writeFileSync(join(dir, 'spool.lock'), '999999999');
    const s2 = Spool.open({ dir, segmentBytes: 8192 });
    const back = drain(s2).map(idx);
    expect(back.length).toBeGreaterThanOrEqual(30);
    expect(back.slice(-30)).toEqual(Array.from({ length: 30 }, (_, k) => 20 + k));
    s2.close();
  });

  it('a torn tail and a bad checksum are each skipped and counted once', () => {
    const dir = newDir();
    const s = Spool.open({ dir, segmentBytes: 1 << 20 });
    s.append(items(0, 100));
    s.close();
    const [seg] = segFiles(dir);
    const path = join(dir, seg);
    const buf = readFileSync(path);
    const offsets: number[] = [];
    walkRecords(buf.subarray(SEGMENT_HEADER_BYTES), SEGMENT_HEADER_BYTES, true, (off) => {
      offsets.push(off);
    });
    expect(offsets.length).toBe(100);
    // Flip one payload byte of record 40 (bad CRC), cut record 99 in half (torn tail).
    buf[offsets[40] + RECORD_HEADER_BYTES + 20] ^= 0xff;
    writeFileSync(path, buf);
    truncateSync(path, offsets[99] + 30);
    const s2 = Spool.open({ dir, segmentBytes: 1 << 20 });
    expect(s2.stats().corruptSkipped).toBe(2);
    expect(s2.stats().records).toBe(98);
    const back = drain(s2).map(idx);
    expect(back).toEqual(Array.from({ length: 100 }, (_, i) => i).filter((i) => i !== 40 && i !== 99));
    s2.close();
  });

  it('a garbage region in the middle is one corrupt region; records after it are found again', () => {
    const dir = newDir();
    const s = Spool.open({ dir, segmentBytes: 1 << 20 });
    s.append(items(0, 20));
    s.close();
    const [seg] = segFiles(dir);
    const buf = readFileSync(join(dir, seg));
    const offsets: number[] = [];
    walkRecords(buf.subarray(SEGMENT_HEADER_BYTES), SEGMENT_HEADER_BYTES, true, (off) => {
      offsets.push(off);
    });
    buf.fill(0x57, offsets[5], offsets[8]); // records 5, 6, 7 overwritten
    writeFileSync(join(dir, seg), buf);
    const s2 = Spool.open({ dir, segmentBytes: 1 << 20 });
    expect(s2.stats().corruptSkipped).toBe(1);
    expect(drain(s2).map(idx)).toEqual(Array.from({ length: 20 }, (_, i) => i).filter((i) => i < 5 || i > 7));
    s2.close();
  });

  it('when full, drops the oldest segments and counts every dropped event', () => {
    const dir = newDir();
    const s = Spool.open({ dir, segmentBytes: 8192, maxBytes: 32768 });
    for (let b = 0; b < 40; b++) s.append(items(b * 10, 10));
    const st = s.stats();
    expect(st.dropped).toBeGreaterThan(0);
    expect(st.bytes).toBeLessThanOrEqual(32768);
    expect(st.dropped + st.records).toBe(400);
    const left = drain(s).map(idx);
    expect(left).toEqual(Array.from({ length: st.records }, (_, k) => 400 - st.records + k));
    s.close();
  });

  it('dropping the segment the reader is in moves the reader on', () => {
    const dir = newDir();
    const s = Spool.open({ dir, segmentBytes: 8192, maxBytes: 32768, memoryBytes: 1024 });
    s.append(items(0, 10));
    expect(drain(s, 5).length).toBeGreaterThan(0);
    for (let b = 1; b < 40; b++) s.append(items(b * 10, 10));
    const st = s.stats();
    const rest = drain(s).map(idx);
    expect(rest).toEqual(Array.from({ length: rest.length }, (_, k) => 400 - rest.length + k));
    expect(rest.length).toBe(st.records);
    s.close();
  });

  it('lays records out in chunks: batches across chunk ends, larger than a chunk, read back the same from memory and disk', () => {
    const dir = newDir();
    const s = Spool.open({ dir, segmentBytes: 256 * 1024, maxBytes: 64 << 20 });
    const sizes: number[] = [];
    const big = (i: number): { id: Buffer; payload: Buffer } => ({ ...item(i), payload: Buffer.alloc(90_000 + i, i & 0xff) });
    let n = 0;
    // ~140 KiB batches and single large records: many chunk ends (64 KiB) fall inside a batch.
    for (let b = 0; b < 30; b++) {
      const batch = b % 7 === 3 ? [big(n)] : items(n, 1000);
      if (b % 7 === 3) sizes.push(batch[0].payload.length);
      s.append(batch);
      n += batch.length;
    }
    const got = drain(s);
    expect(got.map(idx)).toEqual(Array.from({ length: n }, (_, i) => i));
    const want = (r: SpoolRecord): { id: Buffer; payload: Buffer } => (r.payload.length > 1000 ? big(idx(r)) : item(idx(r)));
    expect(got.filter((r) => !r.payload.equals(want(r).payload) || !recordId(r).equals(want(r).id)).length).toBe(0);
    s.close();
    // The file holds the same records: a reopen reads them all back.
    const s2 = Spool.open({ dir, segmentBytes: 256 * 1024 });
    expect(s2.stats().corruptSkipped).toBe(0);
    const back = drain(s2);
    expect(back.map(idx)).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(back.filter((r) => r.payload.length > 1000).map((r) => r.payload.length)).toEqual(sizes);
    expect(back.filter((r) => !r.payload.equals(want(r).payload)).length).toBe(0);
    s2.close();
  });

  it('a batch whose writer throws midway appends nothing; the next batch goes on as if it never was', () => {
    const dir = newDir();
    const s = Spool.open({ dir, segmentBytes: 8192, maxBytes: 64 << 20 });
    const write = (from: number, failAt: number) => (k: number, buf: Buffer, at: number, end: number): number => {
      if (k === failAt) throw new Error(`bad event ${k}`);
      const { id, payload } = item(from + k);
      if (16 + payload.length > end - at) return -(16 + payload.length);
      id.copy(buf, at);
      payload.copy(buf, at + 16);
      return at + 16 + payload.length;
    };
    s.appendWith(30, write(0, -1));
    const sizeBefore = s.stats().bytes;
    // Enough records before the failure to need a new chunk and a new segment.
    expect(() => s.appendWith(1000, write(30, 700))).toThrow('bad event 700');
    expect(() => s.appendWith(5, write(30, 0))).toThrow('bad event 0');
    expect(s.stats()).toMatchObject({ records: 30, bytes: sizeBefore, segments: 1 });
    // Too large for a record: refused whole too.
    expect(() => s.appendWith(3, (k, buf, at, end) => (k < 2 ? write(30, -1)(k, buf, at, end) : -(MAX_RECORD_BODY + 1)))).toThrow(/larger than the spool's record limit/);
    expect(() => s.append([item(30), { id: Buffer.alloc(16), payload: Buffer.alloc(MAX_RECORD_BODY) }])).toThrow(/larger than the spool's record limit/);
    expect(s.stats()).toMatchObject({ records: 30, bytes: sizeBefore });
    s.appendWith(20, write(30, -1));
    expect(drain(s).map(idx)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    s.close();
    const s2 = Spool.open({ dir, segmentBytes: 8192 });
    expect(s2.stats()).toMatchObject({ records: 50, corruptSkipped: 0 });
    expect(drain(s2).map(idx)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    s2.close();
  });

  it('refuses a spool in use by a live process, with a clear message', () => {
    const dir = newDir();
    writeFileSync(join(dir, 'spool.lock'), String(process.ppid));
    expect(() => Spool.open({ dir })).toThrow(/in use by process \d+/);
  });

  it('validates its options', () => {
    expect(() => Spool.open({ dir: newDir(), segmentBytes: 100 })).toThrow(/segmentBytes 100 is below/);
    expect(() => Spool.open({ dir: newDir(), segmentBytes: 8192, maxBytes: 10000 })).toThrow(/at least twice/);
    const file = join(newDir(), 'a-file');
    writeFileSync(file, 'x');
    expect(() => Spool.open({ dir: join(file, 'spool') })).toThrow(/cannot create spool directory/);
    // Node's recursive mkdir spins forever here; ours must fail at once.
    expect(() => Spool.open({ dir: '/proc/wgflow-test/spool' })).toThrow(/cannot create spool directory \/proc\/wgflow-test\/spool: ENOENT/);
  });
});
