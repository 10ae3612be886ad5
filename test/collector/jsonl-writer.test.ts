// JsonlWriter unit tests: batches far larger than one write, with and without rotation.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JsonlWriter, listEventFiles, MAX_PIECE_BYTES } from '../../src/output/jsonl-writer';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function commitAll(w: JsonlWriter, lines: string[]): Promise<Error | null> {
  for (const l of lines) w.append(l);
  return new Promise((resolve) => w.afterCommit(resolve));
}

function linesIn(dir: string): string[] {
  return listEventFiles(dir).flatMap((f) => readFileSync(f, 'utf8').split('\n').filter((l) => l !== ''));
}

/** Writes about factor x MAX_PIECE_BYTES of padded lines in one batch; returns them and the files. */
async function writeBatch(rotateBytes: number, pad: number, factor: number): Promise<{ lines: string[]; got: string[]; files: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'wgflow-writer-'));
  dirs.push(dir);
  const w = JsonlWriter.open({ dir, rotateBytes });
  const padding = 'x'.repeat(pad);
  const n = Math.ceil((factor * MAX_PIECE_BYTES) / (pad + 20));
  const lines = Array.from({ length: n }, (_, i) => `{"i":${i},"p":"${padding}"}`);
  expect(await commitAll(w, lines)).toBeNull();
  await w.close();
  return { lines, got: linesIn(dir), files: listEventFiles(dir).length };
}

describe('JsonlWriter', () => {
  it('a batch larger than one write is written whole, in order, with rotation set high', async () => {
    const { lines, got, files } = await writeBatch(2 ** 40, 1000, 2.5);
    expect(got.length).toBe(lines.length);
    expect(got.every((l, i) => l === lines[i])).toBe(true);
    expect(files).toBe(1); // no rotation: the cut is only for the write size
  });

  it('rotation boundaries and write-size cuts together keep every line once, in order', async () => {
    const { lines, got, files } = await writeBatch(MAX_PIECE_BYTES + 12_345, 2000, 2.2);
    expect(got.length).toBe(lines.length);
    expect(got.every((l, i) => l === lines[i])).toBe(true);
    expect(files).toBe(3);
  });

  it('lets a burst\'s large buffers go once idle, keeps small ones for reuse', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-writer-'));
    dirs.push(dir);
    const w = JsonlWriter.open({ dir, fsync: false });
    const small = w.bufferBytes;
    const pad = 'x'.repeat(1000);
    // A burst: several batches of ~8 MB each, as a drain that finds a million flows writes them.
    for (let b = 0; b < 3; b++) {
      expect(await commitAll(w, Array.from({ length: 8000 }, (_, i) => `{"b":${b},"i":${i},"p":"${pad}"}`))).toBeNull();
    }
    await new Promise((r) => setImmediate(r));
    expect(w.bufferBytes).toBeLessThanOrEqual(2 * small);
    // Small batches keep reusing their buffer.
    expect(await commitAll(w, ['{"a":1}'])).toBeNull();
    expect(w.bufferBytes).toBeLessThanOrEqual(2 * small);
    await w.close();
    expect(linesIn(dir).length).toBe(3 * 8000 + 1);
  });
});

