// JsonlTail, which the benchmarks use to follow the daemon's and the collector's events.jsonl:
// every line once, in order, through rotation, partial lines and a writer far ahead of the reader.
import { appendFileSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { JsonlTail } from '../../testkit/jsonl-tail';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function newDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'wgflow-tail-'));
  dirs.push(d);
  return d;
}

const line = (i: number, pad = 0): string => `{"n":${i},"pad":"${'x'.repeat(pad)}"}`;

describe('JsonlTail', () => {
  it('returns each completed line once, holds back a partial one, follows rotation in order', () => {
    const dir = newDir();
    const file = join(dir, 'events.jsonl');
    const tail = new JsonlTail(file);
    expect(tail.read()).toEqual([]); // no file yet
    writeFileSync(file, `${line(0)}\n${line(1)}\n{"n":2,`);
    expect(tail.read()).toEqual([line(0), line(1)]);
    appendFileSync(file, `"pad":""}\n`);
    renameSync(file, join(dir, 'events-000001-20261204T000000Z.jsonl'));
    writeFileSync(file, `${line(3)}\n`);
    renameSync(file, join(dir, 'events-000002-20261204T000001Z.jsonl'));
    writeFileSync(file, `${line(4)}\n${line(5)}`);
    expect(tail.read()).toEqual([line(2), line(3), line(4)]);
    appendFileSync(file, '\n');
    expect(tail.read()).toEqual([line(5)]);
    expect(tail.read()).toEqual([]);
    tail.close();
  });

  it('follows a writer hundreds of MB ahead in bounded chunks (one string of it all would exceed V8\'s limit)', () => {
    const dir = newDir();
    const file = join(dir, 'events.jsonl');
    // ~40 MB in three rotated files and the current one; chunks of 1 MB here stand for the 32 MB default.
    const per = 10_000, pad = 1000;
    let n = 0;
    for (let f = 1; f <= 4; f++) {
      const text = Array.from({ length: per }, () => line(n++, pad)).join('\n') + '\n';
      writeFileSync(f < 4 ? join(dir, `events-00000${f}-20261204T00000${f}Z.jsonl`) : file, text);
    }
    const tail = new JsonlTail(file);
    const seen: number[] = [];
    let chunks = 0;
    for (let c = tail.readChunk(1 << 20); c.length > 0; c = tail.readChunk(1 << 20)) {
      expect(c.length).toBeLessThanOrEqual((1 << 20) + 2 * (pad + 30));
      expect(c[c.length - 1]).toBe(10);
      for (const l of c.toString('utf8').split('\n')) if (l) seen.push((JSON.parse(l) as { n: number }).n);
      chunks++;
    }
    expect(chunks).toBeGreaterThan(35);
    expect(seen).toEqual(Array.from({ length: n }, (_, i) => i));
    // read() drains everything new in one call, chunk by chunk.
    appendFileSync(file, Array.from({ length: 3 }, (_, k) => line(n + k)).join('\n') + '\n');
    expect(tail.read()).toEqual([line(n), line(n + 1), line(n + 2)]);
    tail.close();
  });
});
