// JsonlWriter unit tests: batches far larger than one write, with and without rotation.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JsonlWriter, listEventFiles, MAX_PIECE_BYTES } from '../../src/collector/jsonl-writer';

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

describe('JsonlWriter', () => {
  it('a batch larger than one write is written whole, in order, with rotation set high', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-writer-'));
    dirs.push(dir);
    const w = JsonlWriter.open({ dir, rotateBytes: 2 ** 40 });
    const pad = 'x'.repeat(1000);
    const n = Math.ceil((2.5 * MAX_PIECE_BYTES) / 1020);
    const lines = Array.from({ length: n }, (_, i) => `{"i":${i},"p":"${pad}"}`);
    expect(await commitAll(w, lines)).toBeNull();
    await w.close();
    const got = linesIn(dir);
    expect(got.length).toBe(n);
    expect(got.every((l, i) => l === lines[i])).toBe(true);
    expect(listEventFiles(dir).length).toBe(1); // no rotation: the cut is only for the write size
  });

  it('rotation boundaries and write-size cuts together keep every line once, in order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-writer-'));
    dirs.push(dir);
    const w = JsonlWriter.open({ dir, rotateBytes: MAX_PIECE_BYTES + 12_345 });
    const pad = 'y'.repeat(2000);
    const n = Math.ceil((2.2 * MAX_PIECE_BYTES) / 2020);
    const lines = Array.from({ length: n }, (_, i) => `{"i":${i},"p":"${pad}"}`);
    expect(await commitAll(w, lines)).toBeNull();
    await w.close();
    const got = linesIn(dir);
    expect(got.length).toBe(n);
    expect(got.every((l, i) => l === lines[i])).toBe(true);
    expect(listEventFiles(dir).length).toBe(3);
  });
});
