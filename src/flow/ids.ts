// Deterministic flow and event ids (RFC 4122 version 5 UUIDs: SHA-1 of a namespace and a name).
//
//   boot namespace = v5(WGFLOW_NAMESPACE, boot_id text)            once per process
//   flow_id        = v5(boot namespace, key id bytes ++ firstNs as 8 bytes big-endian)
//   event_id       = v5(flow_id, "start" | "end" | "update:<k>")
//
// A restarted daemon that adopts a pinned kernel entry sees the same boot id, key and first-packet
// time, so it re-derives the same ids, and the collector's de-duplication by event_id makes a
// re-sent START harmless. A reboot changes boot_id (and CLOCK_MONOTONIC restarts), so ids of a
// new boot never collide with those of an old one.
//
// SHA-1 is computed here in JavaScript rather than with crypto.createHash: for these 20-70 byte
// inputs a createHash round trip costs ~2.3 us (object, binding, Buffer) against ~0.35 us here,
// and two hashes per new flow would otherwise cap the tracker well below 1M records/s. The
// function is plain FIPS 180-4 SHA-1; test/flow/ids.test.ts checks it against node:crypto.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** wgflow's own namespace UUID (a fixed random value). */
export const WGFLOW_NAMESPACE = '5e7c2a4b-9d31-4f0e-8b6a-2c1d7e9f3a58';

const M = new Uint8Array(256);
const W = new Int32Array(80);
const H = new Int32Array(5);

function block(o: number): void {
  for (let i = 0; i < 16; i++) {
    const p = o + i * 4;
    W[i] = (M[p] << 24) | (M[p + 1] << 16) | (M[p + 2] << 8) | M[p + 3];
  }
  for (let i = 16; i < 80; i++) {
    const x = W[i - 3] ^ W[i - 8] ^ W[i - 14] ^ W[i - 16];
    W[i] = (x << 1) | (x >>> 31);
  }
  let a = H[0], b = H[1], c = H[2], d = H[3], e = H[4];
  // Five rounds per iteration with the variables renamed instead of shuffled.
  let i = 0;
  for (; i < 20; i += 5) {
    e = (e + ((a << 5) | (a >>> 27)) + ((b & c) | (~b & d)) + 0x5a827999 + W[i]) | 0; b = (b << 30) | (b >>> 2);
    d = (d + ((e << 5) | (e >>> 27)) + ((a & b) | (~a & c)) + 0x5a827999 + W[i + 1]) | 0; a = (a << 30) | (a >>> 2);
    c = (c + ((d << 5) | (d >>> 27)) + ((e & a) | (~e & b)) + 0x5a827999 + W[i + 2]) | 0; e = (e << 30) | (e >>> 2);
    b = (b + ((c << 5) | (c >>> 27)) + ((d & e) | (~d & a)) + 0x5a827999 + W[i + 3]) | 0; d = (d << 30) | (d >>> 2);
    a = (a + ((b << 5) | (b >>> 27)) + ((c & d) | (~c & e)) + 0x5a827999 + W[i + 4]) | 0; c = (c << 30) | (c >>> 2);
  }
  for (; i < 40; i += 5) {
    e = (e + ((a << 5) | (a >>> 27)) + (b ^ c ^ d) + 0x6ed9eba1 + W[i]) | 0; b = (b << 30) | (b >>> 2);
    d = (d + ((e << 5) | (e >>> 27)) + (a ^ b ^ c) + 0x6ed9eba1 + W[i + 1]) | 0; a = (a << 30) | (a >>> 2);
    c = (c + ((d << 5) | (d >>> 27)) + (e ^ a ^ b) + 0x6ed9eba1 + W[i + 2]) | 0; e = (e << 30) | (e >>> 2);
    b = (b + ((c << 5) | (c >>> 27)) + (d ^ e ^ a) + 0x6ed9eba1 + W[i + 3]) | 0; d = (d << 30) | (d >>> 2);
    a = (a + ((b << 5) | (b >>> 27)) + (c ^ d ^ e) + 0x6ed9eba1 + W[i + 4]) | 0; c = (c << 30) | (c >>> 2);
  }
  for (; i < 60; i += 5) {
    e = (e + ((a << 5) | (a >>> 27)) + ((b & c) | (b & d) | (c & d)) - 0x70e44324 + W[i]) | 0; b = (b << 30) | (b >>> 2);
    d = (d + ((e << 5) | (e >>> 27)) + ((a & b) | (a & c) | (b & c)) - 0x70e44324 + W[i + 1]) | 0; a = (a << 30) | (a >>> 2);
    c = (c + ((d << 5) | (d >>> 27)) + ((e & a) | (e & b) | (a & b)) - 0x70e44324 + W[i + 2]) | 0; e = (e << 30) | (e >>> 2);
    b = (b + ((c << 5) | (c >>> 27)) + ((d & e) | (d & a) | (e & a)) - 0x70e44324 + W[i + 3]) | 0; d = (d << 30) | (d >>> 2);
    a = (a + ((b << 5) | (b >>> 27)) + ((c & d) | (c & e) | (d & e)) - 0x70e44324 + W[i + 4]) | 0; c = (c << 30) | (c >>> 2);
  }
  for (; i < 80; i += 5) {
    e = (e + ((a << 5) | (a >>> 27)) + (b ^ c ^ d) - 0x359d3e2a + W[i]) | 0; b = (b << 30) | (b >>> 2);
    d = (d + ((e << 5) | (e >>> 27)) + (a ^ b ^ c) - 0x359d3e2a + W[i + 1]) | 0; a = (a << 30) | (a >>> 2);
    c = (c + ((d << 5) | (d >>> 27)) + (e ^ a ^ b) - 0x359d3e2a + W[i + 2]) | 0; e = (e << 30) | (e >>> 2);
    b = (b + ((c << 5) | (c >>> 27)) + (d ^ e ^ a) - 0x359d3e2a + W[i + 3]) | 0; d = (d << 30) | (d >>> 2);
    a = (a + ((b << 5) | (b >>> 27)) + (c ^ d ^ e) - 0x359d3e2a + W[i + 4]) | 0; c = (c << 30) | (c >>> 2);
  }
  H[0] = (H[0] + a) | 0;
  H[1] = (H[1] + b) | 0;
  H[2] = (H[2] + c) | 0;
  H[3] = (H[3] + d) | 0;
  H[4] = (H[4] + e) | 0;
}

/** SHA-1 of the first len bytes of the scratch buffer M; the digest is left in H. */
function digestScratch(len: number): void {
  const total = ((len + 9 + 63) >>> 6) << 6;
  M[len] = 0x80;
  M.fill(0, len + 1, total);
  const bits = len * 8; // inputs here are far below 2^29 bytes
  M[total - 4] = bits >>> 24;
  M[total - 3] = (bits >>> 16) & 0xff;
  M[total - 2] = (bits >>> 8) & 0xff;
  M[total - 1] = bits & 0xff;
  H[0] = 0x67452301; H[1] = 0xefcdab89 | 0; H[2] = 0x98badcfe | 0; H[3] = 0x10325476; H[4] = 0xc3d2e1f0 | 0;
  for (let o = 0; o < total; o += 64) block(o);
}

const MAX_INPUT = M.length - 9;

/** SHA-1 of bytes (at most 247 bytes: the ids need far less). */
export function sha1(data: Uint8Array): Buffer {
  if (data.length > MAX_INPUT) throw new RangeError(`sha1 here takes at most ${MAX_INPUT} bytes`);
  M.set(data, 0);
  digestScratch(data.length);
  const out = Buffer.allocUnsafe(20);
  for (let i = 0; i < 5; i++) out.writeInt32BE(H[i], i * 4);
  return out;
}

// UUID text is written into a reused array of character codes and made into one flat string:
// concatenating hex pieces would build a rope of ~20 nodes (~400 bytes per id, kept per flow).
const HEX_CODES = Array.from('0123456789abcdef', (c) => c.charCodeAt(0));
const TEXT: number[] = new Array<number>(36).fill(45); // '-' at 8, 13, 18, 23

function putHex(w: number, at: number, nibbles: number): void {
  for (let i = 0; i < nibbles; i++) TEXT[at + i] = HEX_CODES[(w >>> (4 * (nibbles - 1 - i))) & 15];
}

function uuidText(w0: number, w1: number, w2: number, w3: number): string {
  putHex(w0, 0, 8);
  putHex(w1 >>> 16, 9, 4);
  putHex(w1 & 0xffff, 14, 4);
  putHex(w2 >>> 16, 19, 4);
  putHex(w2 & 0xffff, 24, 4);
  putHex(w3, 28, 8);
  return String.fromCharCode.apply(null, TEXT);
}

const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) {
  HEX_VALUE['0123456789abcdef'.charCodeAt(i)] = i;
  HEX_VALUE['0123456789ABCDEF'.charCodeAt(i)] = i;
}

/** A UUID as four big-endian 32-bit words (for deriving further ids) and its text. */
export interface Uuid {
  readonly w0: number;
  readonly w1: number;
  readonly w2: number;
  readonly w3: number;
  readonly text: string;
}

/** Turn the first 128 bits of H into a version 5 / RFC 4122 variant UUID. */
function uuidFromDigest(): Uuid {
  const w0 = H[0];
  const w1 = (H[1] & 0xffff0fff) | 0x5000;
  const w2 = (H[2] & 0x3fffffff) | 0x80000000;
  const w3 = H[3];
  return { w0, w1, w2, w3, text: uuidText(w0, w1, w2, w3) };
}

function putWord(o: number, w: number): void {
  M[o] = w >>> 24;
  M[o + 1] = (w >>> 16) & 0xff;
  M[o + 2] = (w >>> 8) & 0xff;
  M[o + 3] = w & 0xff;
}

function putNamespace(ns: Uuid): void {
  putWord(0, ns.w0);
  putWord(4, ns.w1);
  putWord(8, ns.w2);
  putWord(12, ns.w3);
}

/** Parse UUID text (hyphens anywhere are ignored; 32 hex digits). */
export function parseUuid(text: string): Uuid {
  const w = [0, 0, 0, 0];
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 45) continue;
    const v = c < 128 ? HEX_VALUE[c] : -1;
    if (v < 0 || n >= 32) throw new Error(`not a UUID: "${text}"`);
    w[n >> 3] = (w[n >> 3] << 4) | v;
    n++;
  }
  if (n !== 32) throw new Error(`not a UUID: "${text}"`);
  return { w0: w[0] | 0, w1: w[1] | 0, w2: w[2] | 0, w3: w[3] | 0, text: text.toLowerCase() };
}

/** RFC 4122 version 5 UUID of a name given as a latin1 string (one byte per character < 256). */
export function uuidV5(namespace: Uuid, name: string): Uuid {
  const n = name.length;
  if (16 + n > MAX_INPUT) throw new RangeError('name too long');
  putNamespace(namespace);
  for (let i = 0; i < n; i++) M[16 + i] = name.charCodeAt(i) & 0xff;
  digestScratch(16 + n);
  return uuidFromDigest();
}

/** Flow id: v5(boot namespace, key id bytes ++ firstNs as 8 bytes big-endian). */
export function flowUuid(bootNamespace: Uuid, keyId: string, firstNs: number): Uuid {
  putNamespace(bootNamespace);
  const n = keyId.length;
  for (let i = 0; i < n; i++) M[16 + i] = keyId.charCodeAt(i);
  const hi = Math.floor(firstNs / 0x1_0000_0000);
  putWord(16 + n, hi);
  putWord(20 + n, firstNs - hi * 0x1_0000_0000);
  digestScratch(24 + n);
  return uuidFromDigest();
}

/** Event id: v5(flow id, label): label "start", "end" or "update:<k>". The flow id as Uuid or text. */
export function eventUuid(flow: Uuid | string, label: string): string {
  return uuidV5(typeof flow === 'string' ? parseUuid(flow) : flow, label).text;
}

/** The namespace of this boot: v5(WGFLOW_NAMESPACE, boot id). */
export function bootNamespace(bootId: string): Uuid {
  return uuidV5(parseUuid(WGFLOW_NAMESPACE), Buffer.from(bootId.trim(), 'utf8').toString('latin1'));
}

/**
 * /proc/sys/kernel/random/boot_id. Where it cannot be read (not Linux) a random id is used: ids
 * then stay unique but a restarted process will not re-derive the same ones.
 */
export function readBootId(path = '/proc/sys/kernel/random/boot_id'): string {
  try {
    const id = readFileSync(path, 'utf8').trim();
    if (id) return id;
  } catch {
    // fall through
  }
  return randomUUID();
}
