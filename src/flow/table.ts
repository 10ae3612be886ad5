// The tracker's key table: flow keys (the kernel's own key bytes, as little-endian 32-bit words)
// in one typed array, found through an open-addressing index, with no JavaScript object or string
// per key. A key's slot is its row in the store's columns (store.ts).
//
// Linear probing with backward-shift deletion (no tombstones: a SYN flood's churn cannot fill the
// index with them). The hash is seeded per process, so a sender who controls ports and addresses
// cannot aim for collisions without knowing the seed.
import { randomFillSync } from 'node:crypto';
import { indexEntries } from './budget';

const SEED = randomFillSync(new Uint32Array(1))[0] | 0;

/** A scratch key: words (little-endian, as the kernel's bytes) and their count (4: IPv4, 10: IPv6). */
export class KeyScratch {
  readonly words = new Uint32Array(10);
  readonly bytes = new Uint8Array(this.words.buffer);

  /** Load a key id (the key bytes as a latin1 string of 16 or 40 characters). */
  fromId(id: string): void {
    const w = this.words;
    for (let i = 0, j = 0; i < id.length; i += 4, j++) {
      w[j] = (id.charCodeAt(i) | (id.charCodeAt(i + 1) << 8) | (id.charCodeAt(i + 2) << 16) | (id.charCodeAt(i + 3) << 24)) >>> 0;
    }
  }

  /** Load n bytes (16 or 40) of a key at byte offset o of buf. */
  fromBytes(buf: Uint8Array, o: number, n: number): void {
    const b = this.bytes;
    for (let i = 0; i < n; i++) b[i] = buf[o + i];
  }
}

function hashWords(w: Uint32Array, o: number, n: number): number {
  let h = SEED ^ n;
  for (let i = 0; i < n; i++) {
    h = Math.imul(h ^ w[o + i], 0xcc9e2d51);
    h = (h << 15) | (h >>> 17);
    h = Math.imul(h, 0x1b873593);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

export class FlowTable {
  /** Key words, `words` per slot. */
  keys: Uint32Array;
  /** Index: slot + 1, 0 = empty. */
  private index: Int32Array;
  private mask: number;
  private capacity: number;
  /** Free slots (a stack: the most recently freed row is reused first, its memory is warm). */
  private free: Int32Array;
  private freeTop = 0;
  /** Slots ever handed out: [0, high). */
  private high = 0;
  private count = 0;

  constructor(readonly words: 4 | 10, initialSlots: number) {
    this.capacity = Math.max(16, Math.ceil(initialSlots));
    this.keys = new Uint32Array(this.capacity * words);
    const n = indexEntries(this.capacity);
    this.index = new Int32Array(n);
    this.mask = n - 1;
    this.free = new Int32Array(64);
  }

  get size(): number {
    return this.count;
  }

  /** Slots [0, highWater) have been used (iterate these and skip the free ones). */
  get highWater(): number {
    return this.high;
  }

  /** Rows the columns must hold. */
  get slots(): number {
    return this.capacity;
  }

  /** The slot of this key, or -1. */
  find(k: KeyScratch): number {
    const n = this.words, w = k.words, keys = this.keys, index = this.index, mask = this.mask;
    let i = hashWords(w, 0, n) & mask;
    for (;;) {
      const e = index[i];
      if (e === 0) return -1;
      const o = (e - 1) * n;
      let eq = keys[o] === w[0] && keys[o + 1] === w[1] && keys[o + 2] === w[2] && keys[o + 3] === w[3];
      for (let j = 4; eq && j < n; j++) eq = keys[o + j] === w[j];
      if (eq) return e - 1;
      i = (i + 1) & mask;
    }
  }

  /**
   * Add a key that is not in the table; returns its slot. May grow the table: callers re-read
   * `keys` and `slots` afterwards (the store grows its columns to match).
   */
  insert(k: KeyScratch): number {
    if (this.freeTop === 0 && this.high === this.capacity) this.grow();
    const slot = this.freeTop > 0 ? this.free[--this.freeTop] : this.high++;
    const n = this.words, o = slot * n;
    for (let j = 0; j < n; j++) this.keys[o + j] = k.words[j];
    this.place(slot);
    this.count++;
    return slot;
  }

  /** Remove the key of this slot and free the slot. */
  remove(slot: number): void {
    const n = this.words, keys = this.keys, index = this.index, mask = this.mask;
    let i = hashWords(keys, slot * n, n) & mask;
    while (index[i] !== slot + 1) {
      if (index[i] === 0) throw new Error(`flow table: slot ${slot} is not indexed`);
      i = (i + 1) & mask;
    }
    // Backward shift: move later entries of the probe run into the hole when their home allows.
    let hole = i;
    let j = (i + 1) & mask;
    while (index[j] !== 0) {
      const e = index[j];
      const home = hashWords(keys, (e - 1) * n, n) & mask;
      // The entry may move to the hole if its home is not cyclically in (hole, j].
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        index[hole] = e;
        hole = j;
      }
      j = (j + 1) & mask;
    }
    index[hole] = 0;
    if (this.freeTop === this.free.length) {
      const bigger = new Int32Array(this.free.length * 2);
      bigger.set(this.free);
      this.free = bigger;
    }
    this.free[this.freeTop++] = slot;
    this.count--;
  }

  /** Byte i of the key in this slot. */
  keyByte(slot: number, i: number): number {
    return (this.keys[slot * this.words + (i >> 2)] >>> ((i & 3) * 8)) & 0xff;
  }

  /** The key of this slot as its id (latin1 string of its bytes; one flat string, not a rope). */
  keyId(slot: number): string {
    const n = this.words, o = slot * n, k = this.keys;
    if (n === 4) {
      const a = k[o], b = k[o + 1], c = k[o + 2], d = k[o + 3];
      return String.fromCharCode(
        a & 0xff, (a >>> 8) & 0xff, (a >>> 16) & 0xff, a >>> 24, b & 0xff, (b >>> 8) & 0xff, (b >>> 16) & 0xff, b >>> 24,
        c & 0xff, (c >>> 8) & 0xff, (c >>> 16) & 0xff, c >>> 24, d & 0xff, (d >>> 8) & 0xff, (d >>> 16) & 0xff, d >>> 24,
      );
    }
    const codes = new Array<number>(n * 4);
    for (let j = 0; j < n; j++) {
      const w = k[o + j];
      codes[4 * j] = w & 0xff;
      codes[4 * j + 1] = (w >>> 8) & 0xff;
      codes[4 * j + 2] = (w >>> 16) & 0xff;
      codes[4 * j + 3] = w >>> 24;
    }
    return String.fromCharCode.apply(null, codes);
  }

  private place(slot: number): void {
    const n = this.words, index = this.index, mask = this.mask;
    let i = hashWords(this.keys, slot * n, n) & mask;
    while (index[i] !== 0) i = (i + 1) & mask;
    index[i] = slot + 1;
  }

  private grow(): void {
    this.capacity *= 2;
    const keys = new Uint32Array(this.capacity * this.words);
    keys.set(this.keys);
    this.keys = keys;
    const n = indexEntries(this.capacity);
    if (n !== this.index.length) {
      const old = this.index;
      this.index = new Int32Array(n);
      this.mask = n - 1;
      for (let i = 0; i < old.length; i++) if (old[i] !== 0) this.place(old[i] - 1);
    }
  }
}
