// The collector's memory of event ids already written, so a resent event is acked but not written
// twice. Bounded: the oldest ids are forgotten first (resends are always of recent events).
import { closeSync, openSync, readSync } from 'node:fs';

export class SeenSet {
  private readonly set = new Set<string>();

  constructor(readonly max: number) {
    if (!(Number.isInteger(max) && max >= 1)) throw new Error(`dedup window must be a positive integer, got ${max}`);
  }

  has(key: string): boolean {
    return this.set.has(key);
  }

  add(key: string): void {
    if (this.set.has(key)) return;
    this.set.add(key);
    if (this.set.size > this.max) {
      // A Set iterates in insertion order: the first key is the oldest.
      const oldest = this.set.values().next().value as string;
      this.set.delete(oldest);
    }
  }

  get size(): number {
    return this.set.size;
  }
}

/** "8-4-4-4-12" UUID text -> the dedup key (32 hex digits, as the wire bytes in hex). */
export const keyOfUuid = (uuid: string): string => uuid.replace(/-/g, '').toLowerCase();

const ID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/**
 * Event ids of a JSONL file, in file order. Lines that are not events are skipped. Reads in 1 MiB
 * chunks so that scanning a 64 MiB file at start does not hold it in memory.
 */
export function idsOfFile(path: string): string[] {
  const ids: string[] = [];
  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.allocUnsafe(1 << 20);
    let carry = Buffer.alloc(0);
    let pos = 0;
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, pos);
      pos += n;
      const buf = carry.length > 0 ? Buffer.concat([carry, chunk.subarray(0, n)]) : chunk.subarray(0, n);
      let start = 0;
      for (;;) {
        const nl = buf.indexOf(0x0a, start);
        if (nl < 0) break;
        idOfLine(buf, start, nl, ids);
        start = nl + 1;
      }
      carry = Buffer.from(buf.subarray(start));
      if (n === 0) {
        if (carry.length > 0) idOfLine(carry, 0, carry.length, ids);
        return ids;
      }
    }
  } finally {
    closeSync(fd);
  }
}

const ID_PREFIX = Buffer.from('{"id":"');

function idOfLine(buf: Buffer, start: number, end: number, ids: string[]): void {
  if (end <= start) return;
  // The writer puts "id" first; anything else (hand-edited files) takes the slow path.
  if (end - start > ID_PREFIX.length + 37 && buf.compare(ID_PREFIX, 0, ID_PREFIX.length, start, start + ID_PREFIX.length) === 0) {
    const idStart = start + ID_PREFIX.length;
    if (buf[idStart + 36] === 0x22) {
      const text = buf.toString('latin1', idStart, idStart + 36);
      if (ID_RE.test(text)) {
        ids.push(keyOfUuid(text));
        return;
      }
    }
  }
  try {
    const o = JSON.parse(buf.toString('utf8', start, end)) as { id?: unknown };
    if (typeof o.id === 'string') ids.push(keyOfUuid(o.id));
  } catch {
    // Not JSON: not an event.
  }
}

/**
 * Rebuilds the seen-set from the output files, newest file first, until `max` ids are known.
 * `filesOldestFirst` lists the files in the order they were written.
 */
export function rebuildSeenSet(filesOldestFirst: readonly string[], max: number): SeenSet {
  const chunks: string[][] = [];
  let total = 0;
  for (let i = filesOldestFirst.length - 1; i >= 0 && total < max; i--) {
    const ids = idsOfFile(filesOldestFirst[i]);
    chunks.push(ids);
    total += ids.length;
  }
  const seen = new SeenSet(max);
  // Insert oldest first so that eviction order stays chronological.
  for (let i = chunks.length - 1; i >= 0; i--) for (const id of chunks[i]) seen.add(id);
  return seen;
}
