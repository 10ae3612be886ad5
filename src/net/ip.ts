// IP addresses, one module with one set of rules for every layer: parsing text to bytes, bytes
// and "raw" strings to text, prefixes.
//
// Rules (the wire's, applied everywhere): IPv4 is a dotted quad of decimal octets without leading
// zeros ("010" reads as octal in some tools: ambiguous, refused); IPv6 is RFC 4291 text, with an
// embedded IPv4 in the last 32 bits allowed; no zone, no brackets, no spaces. Configuration text
// goes through parseIpRaw, which first takes off what surrounds an address there (spaces,
// [brackets], a %zone, which names an interface, not an address) and then applies the same rules.
//
// Forms: bytes (4 or 16, as on the wire and in the kernel's flow key), and "raw" strings, one
// latin1 character per address byte, exactly as they sit inside a flow key id
// (src/datapath/records.ts): cheap Map keys that need no decoding on the hot path.
//
// Text output: IPv4 dotted quad; IPv6 in RFC 5952 form (lowercase, the longest run of two or more
// zero groups as "::", IPv4-mapped addresses as ::ffff:a.b.c.d). The native addon's JSON writer
// (native/src/json_line.cc) writes the same text; test/collector/event-json.test.ts checks that.
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are normalised to IPv4 everywhere in attribution:
// they match IPv4 prefixes, IPv4 peers and IPv4 resources (docs/attribution.md).

export type Family = 4 | 6;

export interface IpPrefix {
  family: Family;
  /** Network address (host bits cleared), raw: 4 or 16 latin1 characters. */
  raw: string;
  /** Prefix length: 0-32 for IPv4, 0-128 for IPv6. */
  length: number;
}

/** The text writer's needs (util/byte-buffer's ByteBuffer has them). */
export interface TextOut {
  byte(b: number): void;
  ascii(s: string): void;
  uint(n: number): void;
}

// ---------- text -> bytes ----------

const HEX_VALUE = new Uint8Array(65536).fill(16);
for (let i = 0; i < 10; i++) HEX_VALUE[48 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX_VALUE[97 + i] = 10 + i;
  HEX_VALUE[65 + i] = 10 + i;
}

// Scratch for parseIpScratch: the caller copies the address out at once.
const IP4 = Buffer.alloc(4);
const IP6 = Buffer.alloc(16);
const GROUPS = new Int32Array(8);

/** A dotted quad into out[o..o+4); false when the text is not one. One pass, no allocation. */
function ipv4Into(text: string, from: number, to: number, out: Uint8Array, o: number): boolean {
  let part = 0, digits = 0, idx = 0;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || idx > 2) return false;
      out[o + idx++] = part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return false; // leading zero
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return false;
    } else return false;
  }
  if (digits === 0 || idx !== 3) return false;
  out[o + 3] = part;
  return true;
}

/** IPv6 text into out (16 bytes); false when it is not one. One pass, no allocation. */
function ipv6Into(text: string, out: Uint8Array): boolean {
  const groups = GROUPS;
  let count = 0, gap = -1, group = 0, digits = 0;
  let n = text.length;
  if (n < 2 || n > 45) return false;
  // An embedded IPv4 in the last 32 bits: parse it into the last two groups' place.
  let v4 = false;
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.indexOf('.', lastColon) !== -1) {
    if (!ipv4Into(text, lastColon + 1, n, out, 12)) return false;
    v4 = true;
    n = lastColon + 1;
    if (n >= 2 && text.charCodeAt(n - 2) !== 58) n -= 1; // "a:b:1.2.3.4": drop the separator
  }
  const maxGroups = v4 ? 6 : 8;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 58) {
      if (i + 1 < n && text.charCodeAt(i + 1) === 58) {
        if (gap >= 0) return false;
        if (digits > 0) {
          if (count === maxGroups) return false;
          groups[count++] = group;
        } else if (i !== 0) return false; // "x:::y" or ":a::"
        gap = count;
        group = 0;
        digits = 0;
        i++;
        continue;
      }
      if (digits === 0 || count === maxGroups) return false;
      groups[count++] = group;
      group = 0;
      digits = 0;
      if (i + 1 === n) return false; // a trailing single colon
    } else {
      const v = HEX_VALUE[c];
      if (v > 15 || ++digits > 4) return false;
      group = group * 16 + v;
    }
  }
  if (digits > 0) {
    if (count === maxGroups) return false;
    groups[count++] = group;
  } else if (v4 && count > 0 && gap !== count) return false; // "a:1.2.3.4" needs its colon pair right
  if (gap < 0 ? count !== maxGroups : count > maxGroups - 1) return false;
  const tail = gap < 0 ? 0 : count - gap;
  for (let k = 0; k < maxGroups * 2; k++) out[k] = 0;
  for (let k = 0; k < count; k++) {
    const at = gap < 0 || k < gap ? k : maxGroups - tail + (k - gap);
    out[at * 2] = groups[k] >> 8;
    out[at * 2 + 1] = groups[k] & 0xff;
  }
  return true;
}

/**
 * The 4 or 16 bytes of an address in scratch memory (valid until the next call), or null when the
 * text is not an address by the rules above. The encoder's hot path: no allocation.
 */
export function parseIpScratch(text: string): Buffer | null {
  if (text.includes(':')) return ipv6Into(text, IP6) ? IP6 : null;
  return ipv4Into(text, 0, text.length, IP4, 0) ? IP4 : null;
}

/** The 4 or 16 bytes of an address (a new buffer), or null when the text is not an address. */
export function parseIp(text: string): Buffer | null {
  const b = parseIpScratch(text);
  return b === null ? null : Buffer.from(b);
}

// ---------- bytes -> text ----------

/** IPv6 text from its eight 16-bit groups. */
export function ipv6FromGroups(g: readonly number[]): string {
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${g[6] >> 8}.${g[6] & 0xff}.${g[7] >> 8}.${g[7] & 0xff}`;
  }
  let bestAt = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestAt = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestAt < 0) return hex.join(':');
  return `${hex.slice(0, bestAt).join(':')}::${hex.slice(bestAt + bestLen).join(':')}`;
}

/** IPv6 text from 16 bytes at offset o. */
export function ipv6FromBytes(b: Uint8Array, o = 0): string {
  const g: number[] = new Array(8);
  for (let i = 0; i < 8; i++) g[i] = (b[o + 2 * i] << 8) | b[o + 2 * i + 1];
  return ipv6FromGroups(g);
}

/** IPv4 text from 4 bytes at offset o. */
export function ipv4FromBytes(b: Uint8Array, o = 0): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');
const TEXT_GROUPS = new Int32Array(8);

/**
 * IPv6 text of the 16 bytes at b[s..] written as bytes, exactly as ipv6FromBytes writes it:
 * RFC 5952, lowercase, the longest run of two or more zero groups as "::", IPv4-mapped as
 * ::ffff:a.b.c.d.
 */
export function writeIpv6(out: TextOut, b: Uint8Array, s: number): void {
  const g = TEXT_GROUPS;
  for (let i = 0; i < 8; i++) g[i] = (b[s + 2 * i] << 8) | b[s + 2 * i + 1];
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    out.ascii('::ffff:');
    for (let k = 12; k < 16; k++) {
      if (k > 12) out.byte(0x2e);
      out.uint(b[s + k]);
    }
    return;
  }
  let bestAt = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  let first = true;
  for (let i = 0; i < 8; i++) {
    if (i === bestAt) {
      out.byte(0x3a);
      out.byte(0x3a);
      i += bestLen - 1;
      first = true;
      continue;
    }
    if (!first) out.byte(0x3a);
    first = false;
    const v = g[i];
    if (v >= 0x1000) out.byte(HEX_DIGITS[v >> 12]);
    if (v >= 0x100) out.byte(HEX_DIGITS[(v >> 8) & 15]);
    if (v >= 0x10) out.byte(HEX_DIGITS[(v >> 4) & 15]);
    out.byte(HEX_DIGITS[v & 15]);
  }
}

// ---------- raw strings and prefixes ----------

const MAPPED_PREFIX = '\0\0\0\0\0\0\0\0\0\0\xff\xff';

/** The IPv4 raw form of an IPv4-mapped IPv6 raw address, else the address unchanged. */
export function normalizeRaw(raw: string): string {
  if (raw.length === 16 && raw.charCodeAt(10) === 0xff && raw.charCodeAt(11) === 0xff && raw.startsWith(MAPPED_PREFIX)) {
    return raw.substring(12);
  }
  return raw;
}

/**
 * Parse configuration text to an address's raw form (not normalised), or null when invalid:
 * spaces, [brackets] and a %zone around it are taken off, then the rules above apply.
 */
export function parseIpRaw(text: string): { family: Family; raw: string } | null {
  let t = text.trim();
  if (t.startsWith('[') && t.endsWith(']')) t = t.slice(1, -1);
  const pct = t.indexOf('%');
  if (pct >= 0 && t.includes(':')) t = t.substring(0, pct);
  const b = parseIpScratch(t);
  if (b === null) return null;
  return { family: b.length === 4 ? 4 : 6, raw: b.toString('latin1') };
}

/** Parse an address to its normalised raw form (IPv4-mapped IPv6 becomes IPv4); throws when invalid. */
export function ipToRaw(text: string): string {
  const p = parseIpRaw(text);
  if (!p) throw new Error(`not an IP address: "${text}"`);
  return normalizeRaw(p.raw);
}

// IPv4 text is assembled as character codes and made into one flat string: a template literal
// would give a rope of several nodes (more memory per flow, which keeps its endpoints' text).
const DEC_CODES: number[][] = Array.from({ length: 256 }, (_, i) => Array.from(String(i), (c) => c.charCodeAt(0)));
const TEXT_BY_LEN: number[][] = Array.from({ length: 16 }, (_, n) => new Array<number>(n).fill(46));
const SCRATCH: number[] = new Array<number>(15).fill(0);

function raw4Text(raw: string, off: number): string {
  let n = 0;
  for (let k = 0; k < 4; k++) {
    if (k > 0) SCRATCH[n++] = 46; // '.'
    const d = DEC_CODES[raw.charCodeAt(off + k) & 255];
    for (let j = 0; j < d.length; j++) SCRATCH[n++] = d[j];
  }
  const out = TEXT_BY_LEN[n];
  for (let j = 0; j < n; j++) out[j] = SCRATCH[j];
  return String.fromCharCode.apply(null, out);
}

/** Text form of a raw address (IPv4 dotted quad; IPv6 RFC 5952). */
export function rawToIp(raw: string): string {
  if (raw.length === 4) return raw4Text(raw, 0);
  if (raw.length !== 16) throw new RangeError(`a raw address has 4 or 16 characters, got ${raw.length}`);
  const g: number[] = new Array(8);
  for (let i = 0; i < 8; i++) g[i] = (raw.charCodeAt(2 * i) << 8) | raw.charCodeAt(2 * i + 1);
  return ipv6FromGroups(g);
}

/**
 * Text form of the raw address of the given family at offset off of s (a flow key id holds both
 * addresses): no substring for IPv4. IPv4-mapped IPv6 stays in IPv6 text, as rawToIp does.
 */
export function rawToIpAt(s: string, off: number, family: Family): string {
  return family === 4 ? raw4Text(s, off) : rawToIp(s.substring(off, off + 16));
}

/** Clear every bit past `length` of a raw address. */
export function maskRaw(raw: string, length: number): string {
  const n = raw.length;
  let out = '';
  for (let i = 0; i < n; i++) {
    const bitsHere = Math.max(0, Math.min(8, length - 8 * i));
    const mask = bitsHere === 0 ? 0 : (0xff << (8 - bitsHere)) & 0xff;
    out += String.fromCharCode(raw.charCodeAt(i) & mask);
  }
  return out;
}

/**
 * Parse "addr/len" (or a bare address: /32 or /128). Host bits are cleared. IPv6 prefixes inside
 * ::ffff:0:0/96 become IPv4 prefixes (length - 96), so mapped addresses and IPv4 agree.
 */
export function parsePrefix(text: string): IpPrefix {
  const t = text.trim();
  const slash = t.indexOf('/');
  const addr = slash >= 0 ? t.substring(0, slash) : t;
  const p = parseIpRaw(addr);
  if (!p) throw new Error(`not an IP prefix: "${text}" (bad address)`);
  const max = p.family === 4 ? 32 : 128;
  let length = max;
  if (slash >= 0) {
    const l = t.substring(slash + 1);
    if (!/^\d{1,3}$/.test(l) || Number(l) > max) throw new Error(`not an IP prefix: "${text}" (length must be 0-${max})`);
    length = Number(l);
  }
  if (p.family === 6 && length >= 96 && p.raw.startsWith(MAPPED_PREFIX)) {
    return { family: 4, raw: maskRaw(p.raw.substring(12), length - 96), length: length - 96 };
  }
  return { family: p.family, raw: maskRaw(p.raw, length), length };
}

/** Does the prefix contain the (normalised) raw address? */
export function prefixContains(p: IpPrefix, raw: string): boolean {
  return raw.length === p.raw.length && maskRaw(raw, p.length) === p.raw;
}

export function prefixToString(p: IpPrefix): string {
  return `${rawToIp(p.raw)}/${p.length}`;
}

/** A raw IPv4 address as an unsigned 32-bit number. */
export function raw4ToU32(raw: string, off = 0): number {
  return ((raw.charCodeAt(off) << 24) | (raw.charCodeAt(off + 1) << 16) | (raw.charCodeAt(off + 2) << 8) | raw.charCodeAt(off + 3)) >>> 0;
}

export function u32ToRaw4(a: number): string {
  return String.fromCharCode((a >>> 24) & 0xff, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff);
}
