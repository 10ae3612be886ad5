// Events written to the stream and not yet acknowledged, found by their 16-byte event id (read in
// place, in the record's memory) when the ack comes back. A hash table of its own: buckets picked
// by an integer mixed from the id's four words (no hex string, no string hashing, and cheaper than
// a Map keyed by that integer), entries of a bucket chained.
import type { SpoolRecord } from '../spool';

export interface InFlight {
  rec: SpoolRecord;
  /** When it was last written (ms). */
  sentAt: number;
  /** False once acked or dropped. */
  live: boolean;
  /** The next entry with the same key. */
  next: InFlight | null;
}

const word = (b: Uint8Array, o: number): number => b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);

/**
 * A small integer (V8 keeps it unboxed) from the 16 bytes at id[o], every bit of it depending on
 * every byte (murmur3's finalizer): ids often differ only in a few bytes, and buckets are picked
 * by its low bits.
 */
function keyOf(id: Uint8Array, o: number): number {
  let h = word(id, o) ^ Math.imul(word(id, o + 4), 0x9e3779b1) ^ Math.imul(word(id, o + 8), 0x85ebca77) ^ Math.imul(word(id, o + 12), 0xc2b2ae3d);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h & 0x3fffffff;
}

/** True if the record's id is the 16 bytes of id. */
function hasId(rec: SpoolRecord, id: Uint8Array): boolean {
  const b = rec.buf, o = rec.idAt;
  for (let i = 0; i < 16; i++) if (b[o + i] !== id[i]) return false;
  return true;
}

/** Spool order: the order the records were appended (and first sent) in. */
const bySpoolOrder = (a: InFlight, b: InFlight): number => a.rec.seq - b.rec.seq || a.rec.off - b.rec.off;

export class InFlightTable {
  /** Chains by key & mask; at most one entry per bucket on average (the table doubles past that). */
  private buckets: Array<InFlight | null> = new Array<InFlight | null>(1024).fill(null);
  private mask = 1023;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** A new live entry for rec (its id must not be in flight already). */
  add(rec: SpoolRecord, sentAt: number): InFlight {
    if (this.count >= this.buckets.length) this.grow();
    const i = keyOf(rec.buf, rec.idAt) & this.mask;
    const f: InFlight = { rec, sentAt, live: true, next: this.buckets[i] };
    this.buckets[i] = f;
    this.count++;
    return f;
  }

  /** The live entry of an event id, if any. */
  get(id: Uint8Array): InFlight | undefined {
    if (id.length !== 16) return undefined;
    for (let f = this.buckets[keyOf(id, 0) & this.mask]; f; f = f.next) if (hasId(f.rec, id)) return f;
    return undefined;
  }

  delete(f: InFlight): void {
    if (!f.live) return;
    f.live = false;
    this.count--;
    const i = keyOf(f.rec.buf, f.rec.idAt) & this.mask;
    let head = this.buckets[i];
    if (head === f) {
      this.buckets[i] = f.next;
      return;
    }
    for (; head; head = head.next) {
      if (head.next === f) {
        head.next = f.next;
        return;
      }
    }
  }

  /** Every live entry, oldest (in spool order) first. */
  values(): InFlight[] {
    const out: InFlight[] = [];
    for (const head of this.buckets) for (let f = head; f; f = f.next) out.push(f);
    return out.sort(bySpoolOrder);
  }

  /** Removes the entries pred picks. */
  deleteWhere(pred: (f: InFlight) => boolean): void {
    for (const f of this.values()) if (pred(f)) this.delete(f);
  }

  private grow(): void {
    const old = this.buckets;
    this.buckets = new Array<InFlight | null>(old.length * 2).fill(null);
    this.mask = this.buckets.length - 1;
    for (const head of old) {
      for (let f = head; f; ) {
        const next = f.next;
        const i = keyOf(f.rec.buf, f.rec.idAt) & this.mask;
        f.next = this.buckets[i];
        this.buckets[i] = f;
        f = next;
      }
    }
  }
}
