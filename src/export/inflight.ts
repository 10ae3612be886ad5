// Events written to the stream and not yet acknowledged, found by their 16-byte event id when the
// ack comes back. Keyed by a small integer mixed from the id's four words, so matching an ack
// makes no hex string and hashes no string; ids that share the integer are chained.
import type { SpoolRecord } from './spool';

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

/** A small integer (V8 keeps it unboxed) from all 16 bytes: ids often share their first words. */
function keyOf(id: Uint8Array): number {
  let h = word(id, 0) ^ Math.imul(word(id, 4), 0x9e3779b1) ^ Math.imul(word(id, 8), 0x85ebca77) ^ Math.imul(word(id, 12), 0xc2b2ae3d);
  h ^= h >>> 15;
  return h & 0x3fffffff;
}

function sameId(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== 16 || b.length !== 16) return false;
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class InFlightTable {
  private readonly map = new Map<number, InFlight>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** A new live entry for rec (its id must not be in flight already). */
  add(rec: SpoolRecord, sentAt: number): InFlight {
    const k = keyOf(rec.id);
    const f: InFlight = { rec, sentAt, live: true, next: this.map.get(k) ?? null };
    this.map.set(k, f);
    this.count++;
    return f;
  }

  /** The live entry of an event id, if any. */
  get(id: Uint8Array): InFlight | undefined {
    if (id.length !== 16) return undefined;
    for (let f = this.map.get(keyOf(id)); f; f = f.next ?? undefined) if (sameId(f.rec.id, id)) return f;
    return undefined;
  }

  delete(f: InFlight): void {
    if (!f.live) return;
    f.live = false;
    this.count--;
    const k = keyOf(f.rec.id);
    let head = this.map.get(k);
    if (head === f) {
      if (f.next) this.map.set(k, f.next);
      else this.map.delete(k);
      return;
    }
    for (; head; head = head.next ?? undefined) {
      if (head.next === f) {
        head.next = f.next;
        return;
      }
    }
  }

  /** Every live entry (oldest key first). */
  values(): InFlight[] {
    const out: InFlight[] = [];
    for (const head of this.map.values()) for (let f: InFlight | null = head; f; f = f.next) out.push(f);
    return out;
  }

  /** Removes the entries pred picks. */
  deleteWhere(pred: (f: InFlight) => boolean): void {
    for (const f of this.values()) if (pred(f)) this.delete(f);
  }
}
