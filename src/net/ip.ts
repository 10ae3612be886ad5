// IP addresses and prefixes in the form the flow engine already has them: "raw" strings, one
// latin1 character per address byte (4 for IPv4, 16 for IPv6), exactly as they sit inside a flow
// key id (src/datapath/records.ts). They are cheap Map keys and need no decoding on the hot path.
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are normalised to IPv4 everywhere in attribution:
// they match IPv4 prefixes, IPv4 peers and IPv4 resources (docs/attribution.md).
import { ipv6FromGroups } from './ip-text';

export type Family = 4 | 6;

export interface IpPrefix {
  family: Family;
  /** Network address (host bits cleared), raw: 4 or 16 latin1 characters. */
  raw: string;
  /** Prefix length: 0-32 for IPv4, 0-128 for IPv6. */
  length: number;
}

const MAPPED_PREFIX = '\0\0\0\0\0\0\0\0\0\0\xff\xff';

/** The IPv4 raw form of an IPv4-mapped IPv6 raw address, else the address unchanged. */
export function normalizeRaw(raw: string): string {
  if (raw.length === 16 && raw.charCodeAt(10) === 0xff && raw.charCodeAt(11) === 0xff && raw.startsWith(MAPPED_PREFIX)) {
    return raw.substring(12);
  }
  return raw;
}

function parseV4Into(text: string, out: number[]): boolean {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return false;
    const n = Number(p);
    if (n > 255) return false;
    out.push(n);
  }
  return true;
}

function parseV6Bytes(text: string): number[] | null {
  let s = text;
  const pct = s.indexOf('%'); // zone id: not part of the address
  if (pct >= 0) s = s.substring(0, pct);
  if (s.length === 0) return null;
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (h: string): number[] | null => {
    if (h === '') return [];
    const out: number[] = [];
    const parts = h.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (i === parts.length - 1 && p.includes('.')) {
        const b: number[] = [];
        if (!parseV4Into(p, b)) return null;
        out.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
      out.push(parseInt(p, 16));
    }
    return out;
  };
  const head = groups(halves[0]);
  if (!head) return null;
  let all: number[];
  if (halves.length === 2) {
    const tail = groups(halves[1]);
    if (!tail) return null;
    const fill = 8 - head.length - tail.length;
    if (fill < 1) return null;
    all = [...head, ...new Array<number>(fill).fill(0), ...tail];
  } else {
    all = head;
  }
  if (all.length !== 8) return null;
  const bytes: number[] = [];
  for (const g of all) bytes.push(g >> 8, g & 0xff);
  return bytes;
}

/** Parse an IPv4 or IPv6 address to its raw form (not normalised), or null when invalid. */
export function parseIpRaw(text: string): { family: Family; raw: string } | null {
  const t = text.trim();
  if (t.includes(':')) {
    const b = parseV6Bytes(t.startsWith('[') && t.endsWith(']') ? t.slice(1, -1) : t);
    return b ? { family: 6, raw: String.fromCharCode(...b) } : null;
  }
  const b: number[] = [];
  return parseV4Into(t, b) ? { family: 4, raw: String.fromCharCode(...b) } : null;
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
