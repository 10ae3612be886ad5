// The collector's memory of event ids already written, so a resent event is acked but not written
// twice. Bounded: the oldest ids are forgotten first (resends are always of recent events).
//
// Every id carries the tag of the output batch its line went into. An id is added when its line is
// queued, so that a resend arriving while the batch is being committed is not written twice; when
// that commit fails, forgetBatch() removes the batch's ids again. The set therefore never claims
// an id whose line is not (or will not be) durably written: an ack given for a duplicate waits for
// the commit of the batch that holds the original (see the collector).
import { closeSync, openSync, readSync } from 'node:fs';
import type { Logger } from 'pino';
import { CommitError, type JsonlWriter } from '../output/jsonl-writer';

const ID_BYTES = 16;
/** Tag of a ring position whose id was forgotten (its table entry is gone). */
const DEAD = -1;
const HEX32 = /^[0-9a-f]{32}$/;

/** The murmur3 finalizer: spreads the bits of h over all 32. */
function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * A set of 16-byte event ids in typed arrays: a ring of ids in insertion order (the oldest is
 * evicted when full) and an open-addressing table of ring positions. No string or object per id,
 * so half a million ids cost ~12 MB and a lookup allocates nothing.
 */
export class SeenSet {
  /** Ids in insertion order, four 32-bit words each. */
  private readonly ring: Int32Array;
  /** Linear-probing table: ring position + 1, 0 for an empty slot. */
  private readonly table: Int32Array;
  private readonly mask: number;
  /** Batch tag of each ring position (non-decreasing in insertion order), DEAD once forgotten. */
  private readonly tags: Int32Array;
  private head = 0;
  private count = 0;
  /** After add() returned false: the batch tag of the id already there. */
  foundTag = 0;

  constructor(readonly max: number) {
    if (!(Number.isInteger(max) && max >= 1)) throw new Error(`dedup window must be a positive integer, got ${max}`);
    this.ring = new Int32Array(max * 4);
    this.tags = new Int32Array(max);
    let size = 2;
    while (size < max * 2) size *= 2;
    this.table = new Int32Array(size);
    this.mask = size - 1;
  }

  private hashAt(words: Int32Array, w: number): number {
    return mix(words[w] ^ Math.imul(words[w + 1], 0x9e3779b1) ^ Math.imul(words[w + 2], 0x85ebca77) ^ Math.imul(words[w + 3], 0xc2b2ae3d)) & this.mask;
  }

  /** Table slot holding the id in `probe` (words 0-3), or -1. */
  private find(probe: Int32Array): number {
    const ring = this.ring, table = this.table;
    for (let i = this.hashAt(probe, 0); ; i = (i + 1) & this.mask) {
      const v = table[i];
      if (v === 0) return -1;
      const w = (v - 1) * 4;
      if (ring[w] === probe[0] && ring[w + 1] === probe[1] && ring[w + 2] === probe[2] && ring[w + 3] === probe[3]) return i;
    }
  }

  /** Empties slot i, moving later entries of its probe run back (no tombstones). */
  private removeSlot(i: number): void {
    const table = this.table, mask = this.mask;
    for (let j = (i + 1) & mask; table[j] !== 0; j = (j + 1) & mask) {
      const home = this.hashAt(this.ring, (table[j] - 1) * 4);
      // Move j into the hole at i unless its home lies cyclically in (i, j].
      const inRange = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!inRange) {
        table[i] = table[j];
        i = j;
      }
    }
    table[i] = 0;
  }

  private readonly probe = new Int32Array(4);

  private load(id: Uint8Array, at: number): Int32Array {
    if (id.length - at < ID_BYTES) throw new Error(`an event id is ${ID_BYTES} bytes, got ${id.length - at}`);
    const p = this.probe;
    for (let k = 0; k < 4; k++) {
      const o = at + k * 4;
      p[k] = id[o] | (id[o + 1] << 8) | (id[o + 2] << 16) | (id[o + 3] << 24);
    }
    return p;
  }

  /** Is the 16-byte id at id[at..] in the set? */
  has(id: Uint8Array, at = 0): boolean {
    return this.find(this.load(id, at)) >= 0;
  }

  private readonly oldest = new Int32Array(4);

  /** Removes the table entry that points at ring position pos, if it is still there. */
  private unlinkPos(pos: number): void {
    if (this.tags[pos] === DEAD) return;
    const words = this.oldest;
    for (let k = 0; k < 4; k++) words[k] = this.ring[pos * 4 + k];
    const slot = this.find(words);
    if (slot >= 0 && this.table[slot] === pos + 1) this.removeSlot(slot);
    this.tags[pos] = DEAD;
  }

  /**
   * Adds the 16-byte id at id[at..] with the batch tag `tag` and returns true, or returns false
   * if it was already there (its tag is then in foundTag). The oldest id is forgotten when the
   * set is full. Tags must not decrease from one add to the next.
   */
  add(id: Uint8Array, at = 0, tag = 0): boolean {
    const p = this.load(id, at);
    const found = this.find(p);
    if (found >= 0) {
      this.foundTag = this.tags[this.table[found] - 1];
      return false;
    }
    let pos: number;
    if (this.count < this.max) {
      pos = (this.head + this.count) % this.max;
      this.count++;
    } else {
      pos = this.head;
      this.head = (this.head + 1) % this.max;
      this.unlinkPos(pos);
    }
    this.tags[pos] = tag;
    this.ring.set(p, pos * 4);
    let i = this.hashAt(p, 0);
    while (this.table[i] !== 0) i = (i + 1) & this.mask;
    this.table[i] = pos + 1;
    return true;
  }

  /**
   * Forgets the ids added with batch tag `tag` (a commit of that batch failed), except the first
   * `keep` of them (lines written before the failure that are durable, e.g. in a file rotated away
   * mid-batch). Cost: the ids of the batches from `tag` on, walked from the newest.
   */
  forgetBatch(tag: number, keep = 0): number {
    const positions: number[] = [];
    for (let n = this.count - 1; n >= 0; n--) {
      const pos = (this.head + n) % this.max;
      const t = this.tags[pos];
      if (t === DEAD || t > tag) continue;
      if (t < tag) break;
      positions.push(pos);
    }
    // positions are newest first; the first `keep` of the batch are the last `keep` here.
    let forgotten = 0;
    for (let i = 0; i < positions.length - keep; i++) {
      this.unlinkPos(positions[i]);
      forgotten++;
    }
    return forgotten;
  }

  /** Removes the id added last (its line was never queued). */
  forgetNewest(): void {
    if (this.count === 0) return;
    const pos = (this.head + this.count - 1) % this.max;
    this.unlinkPos(pos);
    this.count--;
  }

  /**
   * Adds an id given as 32 hex digits (a dedup key). Anything else (a hand-edited line's odd id)
   * is skipped: it cannot match a 16-byte id from the wire.
   */
  addKey(key: string): void {
    if (HEX32.test(key)) this.add(Buffer.from(key, 'hex'));
  }

  /** Is the id given as 32 hex digits in the set? */
  hasKey(key: string): boolean {
    return this.has(Buffer.from(key, 'hex'));
  }

  get size(): number {
    return this.count;
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
  for (let i = chunks.length - 1; i >= 0; i--) for (const id of chunks[i]) seen.addKey(id);
  return seen;
}

/**
 * Makes sure that when an output batch fails to commit, the ids added with it leave the
 * de-duplication set: their senders resend them (or the stream redelivers them), and they must be
 * written then, not acked as duplicates. One afterBatch callback per batch, however many ids.
 */
export class CommitGuard {
  private guarded = 0;

  constructor(
    private readonly writer: JsonlWriter,
    private readonly seen: SeenSet,
    private readonly counters: { commitFailures: number; written: number },
    private readonly log: Logger,
    /** The log line when a commit failed (what happens to those events). */
    private readonly message: string,
  ) {}

  guard(batch: number): void {
    if (batch === this.guarded) return;
    this.guarded = batch;
    this.writer.afterBatch(batch, (err) => {
      if (err === null) return;
      const keep = err instanceof CommitError ? err.durableLines : 0;
      const forgotten = this.seen.forgetBatch(batch, keep);
      this.counters.commitFailures++;
      this.counters.written -= forgotten;
      this.log.error({ batch, forgotten, durable: keep, err: err.message }, this.message);
    });
  }
}
