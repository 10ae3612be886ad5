// Longest-prefix match for IPv4 and IPv6: an immutable multibit trie (4 bits per level) stored in
// flat Int32Arrays, built once and then only read (tables are swapped whole, never edited).
//
// Layout: node n occupies 32 slots, two per nibble value: [child node, value index]. Node 0 is
// the root, so child 0 means "no child"; value -1 means "no prefix ends here". A prefix of length
// L lives in the node at depth ceil(L/4)-1 and is expanded over the 2^(4 - L mod 4) nibble values it
// covers; an entry keeps the longest prefix that covers it. A lookup walks at most 8 (IPv4) or 32
// (IPv6) nodes, remembering the last value seen: the deepest one is the longest match.
//
// Special cases: /0 is a per-family default (not expanded into the root). IPv6 /128 host routes go
// into a hash map checked first (a /128 is always the longest match), so thousands of host
// resources do not cost 32 trie nodes each. IPv4-mapped IPv6 addresses are looked up as IPv4
// (parsePrefix maps prefixes inside ::ffff:0:0/96 to IPv4 as well).
import { IpPrefix, normalizeRaw, parsePrefix, parseIpRaw, prefixToString, raw4ToU32 } from '../net/ip';

const SLOTS = 32; // 16 nibbles x [child, value]

class TrieBuilder {
  t: Int32Array = new Int32Array(SLOTS * 64).fill(-1);
  lens: Uint8Array = new Uint8Array(16 * 64);
  nodes = 1;
  def = -1;
  defLen = -1;

  constructor() {
    this.initNode(0);
  }

  private initNode(n: number): void {
    const o = n * SLOTS;
    for (let i = 0; i < SLOTS; i += 2) {
      this.t[o + i] = 0;
      this.t[o + i + 1] = -1;
    }
  }

  private newNode(): number {
    const n = this.nodes++;
    if (n * SLOTS >= this.t.length) {
      const t = new Int32Array(this.t.length * 2).fill(-1);
      t.set(this.t);
      this.t = t;
      const lens = new Uint8Array(this.lens.length * 2);
      lens.set(this.lens);
      this.lens = lens;
    }
    this.initNode(n);
    return n;
  }

  /** Insert a prefix given by its nibbles (most significant first). */
  insert(nibble: (i: number) => number, length: number, value: number): void {
    if (length === 0) {
      this.def = value;
      return;
    }
    const depth = (length - 1) >> 2;
    let node = 0;
    for (let d = 0; d < depth; d++) {
      const slot = node * SLOTS + nibble(d) * 2;
      let child = this.t[slot];
      if (child === 0) {
        child = this.newNode();
        this.t[slot] = child;
      }
      node = child;
    }
    const rest = length - depth * 4; // 1..4 bits in this node
    const span = 1 << (4 - rest);
    const base = nibble(depth) & ~(span - 1);
    for (let j = base; j < base + span; j++) {
      const e = node * 16 + j;
      if (this.lens[e] <= length) {
        this.lens[e] = length;
        this.t[node * SLOTS + j * 2 + 1] = value;
      }
    }
  }

  finish(): Int32Array {
    return this.t.slice(0, this.nodes * SLOTS);
  }
}

function nibbleOfRaw(raw: string): (i: number) => number {
  return (i) => {
    const b = raw.charCodeAt(i >> 1);
    return i & 1 ? b & 15 : b >> 4;
  };
}

/** One stored prefix: its value and where it came from. */
export interface LpmEntry<T> {
  prefix: IpPrefix;
  value: T;
}

/**
 * An immutable longest-prefix-match table mapping prefixes to values of type T.
 * Identical prefixes: the last one given wins (like a Map).
 */
export class Lpm<T> {
  private constructor(
    private readonly t4: Int32Array,
    private readonly t6: Int32Array,
    private readonly def4: number,
    private readonly def6: number,
    private readonly host6: Map<string, number>,
    /** Entries by value index. */
    readonly entries: readonly LpmEntry<T>[],
  ) {}

  /** Build from [prefix, value] pairs; prefixes as text ("10.0.0.0/8", "fd00::/64", "1.2.3.4") or parsed. */
  static build<T>(pairs: Iterable<readonly [string | IpPrefix, T]>): Lpm<T> {
    const dedup = new Map<string, LpmEntry<T>>();
    for (const [p, value] of pairs) {
      const prefix = typeof p === 'string' ? parsePrefix(p) : p;
      const k = `${prefix.raw}/${prefix.length}`;
      dedup.delete(k); // keep insertion order of the last occurrence
      dedup.set(k, { prefix, value });
    }
    const entries = [...dedup.values()];
    const b4 = new TrieBuilder();
    const b6 = new TrieBuilder();
    const host6 = new Map<string, number>();
    entries.forEach((e, i) => {
      const { family, raw, length } = e.prefix;
      if (family === 6 && length === 128) host6.set(raw, i);
      else (family === 4 ? b4 : b6).insert(nibbleOfRaw(raw), length, i);
    });
    return new Lpm<T>(b4.finish(), b6.finish(), b4.def, b6.def, host6, entries);
  }

  get size(): number {
    return this.entries.length;
  }

  /** Memory held by the trie arrays, bytes (for docs and benchmarks). */
  get trieBytes(): number {
    return this.t4.byteLength + this.t6.byteLength;
  }

  /** Index of the longest IPv4 match of an address given as an unsigned 32-bit number; -1 if none. */
  index4(addr: number): number {
    const t = this.t4;
    let best = this.def4;
    let node = 0;
    for (let s = 28; s >= 0; s -= 4) {
      const e = node * SLOTS + (((addr >>> s) & 15) << 1);
      const v = t[e + 1];
      if (v >= 0) best = v;
      node = t[e];
      if (node === 0) break;
    }
    return best;
  }

  /** Index of the longest match of an IPv6 address: 16 raw characters of `raw` from `off`. */
  index6(raw: string, off = 0): number {
    if (
      raw.charCodeAt(off + 10) === 0xff && raw.charCodeAt(off + 11) === 0xff &&
      (raw.charCodeAt(off) | raw.charCodeAt(off + 1) | raw.charCodeAt(off + 2) | raw.charCodeAt(off + 3) |
        raw.charCodeAt(off + 4) | raw.charCodeAt(off + 5) | raw.charCodeAt(off + 6) | raw.charCodeAt(off + 7) |
        raw.charCodeAt(off + 8) | raw.charCodeAt(off + 9)) === 0
    ) {
      return this.index4(raw4ToU32(raw, off + 12));
    }
    if (this.host6.size > 0) {
      const h = this.host6.get(off === 0 && raw.length === 16 ? raw : raw.substring(off, off + 16));
      if (h !== undefined) return h;
    }
    const t = this.t6;
    let best = this.def6;
    let node = 0;
    for (let i = 0; i < 16; i++) {
      const byte = raw.charCodeAt(off + i);
      let e = node * SLOTS + ((byte >> 4) << 1);
      let v = t[e + 1];
      if (v >= 0) best = v;
      node = t[e];
      if (node === 0) break;
      e = node * SLOTS + ((byte & 15) << 1);
      v = t[e + 1];
      if (v >= 0) best = v;
      node = t[e];
      if (node === 0) break;
    }
    return best;
  }

  /** Index of the longest match of a raw address (4 or 16 characters); -1 if none. */
  indexRaw(raw: string): number {
    return raw.length === 4 ? this.index4(raw4ToU32(raw, 0)) : this.index6(raw, 0);
  }

  /** The value of the longest match of a raw address. */
  getRaw(raw: string): T | undefined {
    const i = this.indexRaw(raw);
    return i < 0 ? undefined : this.entries[i].value;
  }

  /** The longest match of a textual address (undefined when none or when the text is not an address). */
  match(ip: string): LpmEntry<T> | undefined {
    const p = parseIpRaw(ip);
    if (!p) return undefined;
    const i = this.indexRaw(normalizeRaw(p.raw));
    return i < 0 ? undefined : this.entries[i];
  }

  /** The value of the longest match of a textual address. */
  lookup(ip: string): T | undefined {
    return this.match(ip)?.value;
  }

  /** Every prefix, as text, with its value (debugging, docs). */
  *[Symbol.iterator](): IterableIterator<[string, T]> {
    for (const e of this.entries) yield [prefixToString(e.prefix), e.value];
  }
}
