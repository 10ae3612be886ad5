// Deterministic flow and event ids (docs/events.md, "Ids").
//
//   boot namespace = v5(WGFLOW_NAMESPACE, boot_id text)            once per process
//   flow_id        = v5(boot namespace, key id bytes ++ firstNs as 8 bytes big-endian)
//   event_id       = flow_id XOR mask(label), as a version 8 UUID; label "start" | "end" | "update:<k>"
//   mask(label)    = the first 128 bits of SHA-1(EVENT_MASK_NAMESPACE bytes ++ label)
//
// A restarted daemon that adopts a pinned kernel entry sees the same boot id, key and first-packet
// time, so it re-derives the same ids, and the collector's de-duplication by event_id makes a
// re-sent START harmless. A reboot changes boot_id (and CLOCK_MONOTONIC restarts), so ids of a
// new boot never collide with those of an old one.
//
// Event ids are not hashed again: XOR with a fixed mask is a bijection on the 122 free bits, so
// two flows' START (or END) ids are equal only if their flow ids are; a START id equals another
// flow's END id only if the two flow ids differ by exactly mask(start) ^ mask(end), which for
// SHA-1 outputs is a 2^-122 chance. That saves a second SHA-1 and a second digest per new flow.
// They carry version 8 ("custom", RFC 9562) because they are not name-based v5 UUIDs.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { sha1Into, sha1Words } from './sha1';

export { sha1 } from './sha1';

/** wgflow's own namespace UUID (a fixed random value). */
export const WGFLOW_NAMESPACE = '5e7c2a4b-9d31-4f0e-8b6a-2c1d7e9f3a58';
/** Namespace of the event id masks (a fixed random value). */
export const EVENT_MASK_NAMESPACE = 'c4a1e3f2-6b7d-4e58-9a0c-1d2f3b4a5e6c';

/** Scratch message buffer: namespace (16) + the longest name here (key id 40 + 8) fits 2 blocks. */
const M = new Uint8Array(256);
const H = new Int32Array(5);
const MAX_NAME = M.length - 16 - 9;

// UUID text: 36 character codes straight into String.fromCharCode, which makes one flat string
// (concatenating hex pieces would build a rope of ~20 nodes, ~400 bytes per id kept per flow) and
// is ~2x faster than filling an array for fromCharCode.apply.
const HEX2 = new Uint16Array(512); // byte b -> hex codes at [2b, 2b + 1]
for (let b = 0; b < 256; b++) {
  HEX2[2 * b] = '0123456789abcdef'.charCodeAt(b >> 4);
  HEX2[2 * b + 1] = '0123456789abcdef'.charCodeAt(b & 15);
}

/** The text form of a UUID given as four big-endian 32-bit words. */
export function uuidText(w0: number, w1: number, w2: number, w3: number): string {
  const a0 = (w0 >>> 23) & 510, a1 = (w0 >>> 15) & 510, a2 = (w0 >>> 7) & 510, a3 = (w0 << 1) & 510;
  const b0 = (w1 >>> 23) & 510, b1 = (w1 >>> 15) & 510, b2 = (w1 >>> 7) & 510, b3 = (w1 << 1) & 510;
  const c0 = (w2 >>> 23) & 510, c1 = (w2 >>> 15) & 510, c2 = (w2 >>> 7) & 510, c3 = (w2 << 1) & 510;
  const d0 = (w3 >>> 23) & 510, d1 = (w3 >>> 15) & 510, d2 = (w3 >>> 7) & 510, d3 = (w3 << 1) & 510;
  const h = HEX2;
  return String.fromCharCode(
    h[a0], h[a0 + 1], h[a1], h[a1 + 1], h[a2], h[a2 + 1], h[a3], h[a3 + 1], 45,
    h[b0], h[b0 + 1], h[b1], h[b1 + 1], 45, h[b2], h[b2 + 1], h[b3], h[b3 + 1], 45,
    h[c0], h[c0 + 1], h[c1], h[c1 + 1], 45, h[c2], h[c2 + 1], h[c3], h[c3 + 1],
    h[d0], h[d0 + 1], h[d1], h[d1 + 1], h[d2], h[d2 + 1], h[d3], h[d3 + 1],
  );
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
  if (n > MAX_NAME) throw new RangeError('name too long');
  putNamespace(namespace);
  for (let i = 0; i < n; i++) M[16 + i] = name.charCodeAt(i) & 0xff;
  sha1Into(M, 16 + n, H);
  return uuidFromDigest();
}

/** Flow id input as words: namespace (4) + key id (4 or 10) + firstNs (2), padded to 2 blocks. */
const X = new Int32Array(32);

/**
 * Flow id words: v5(boot namespace, key id bytes ++ firstNs as 8 bytes big-endian), written to
 * out[0..4) with the version and variant bits set. The key id has whole words (16 or 40 bytes):
 * the input is packed into words directly, without a byte buffer.
 */
export function flowIdWords(bootNamespace: Uuid, keyId: string, firstNs: number, out: Int32Array): void {
  const n = keyId.length;
  if ((n & 3) !== 0 || n > 64) throw new RangeError(`a flow key id has 16 or 40 bytes, got ${n}`);
  X[0] = bootNamespace.w0;
  X[1] = bootNamespace.w1;
  X[2] = bootNamespace.w2;
  X[3] = bootNamespace.w3;
  let w = 4;
  for (let i = 0; i < n; i += 4, w++) {
    X[w] = (keyId.charCodeAt(i) << 24) | (keyId.charCodeAt(i + 1) << 16) | (keyId.charCodeAt(i + 2) << 8) | keyId.charCodeAt(i + 3);
  }
  const hi = Math.floor(firstNs / 0x1_0000_0000);
  X[w] = hi;
  X[w + 1] = firstNs - hi * 0x1_0000_0000;
  sha1Words(X, 24 + n, H);
  out[0] = H[0];
  out[1] = (H[1] & 0xffff0fff) | 0x5000;
  out[2] = (H[2] & 0x3fffffff) | 0x80000000;
  out[3] = H[3];
}

const FLOW_WORDS = new Int32Array(4);

/** Flow id: v5(boot namespace, key id bytes ++ firstNs as 8 bytes big-endian). */
export function flowUuid(bootNamespace: Uuid, keyId: string, firstNs: number): Uuid {
  flowIdWords(bootNamespace, keyId, firstNs, FLOW_WORDS);
  const [w0, w1, w2, w3] = FLOW_WORDS;
  return { w0, w1, w2, w3, text: uuidText(w0, w1, w2, w3) };
}

// ---------------------------------------------------------------- event ids

const MASK_NS = parseUuid(EVENT_MASK_NAMESPACE);

/** mask(label): the first four words of SHA-1(EVENT_MASK_NAMESPACE ++ label). */
function maskOf(label: string): Int32Array {
  const n = label.length;
  if (n > MAX_NAME) throw new RangeError('label too long');
  putNamespace(MASK_NS);
  for (let i = 0; i < n; i++) M[16 + i] = label.charCodeAt(i) & 0xff;
  sha1Into(M, 16 + n, H);
  return H.slice(0, 4);
}

// The masks of the two labels every exported flow uses, computed once.
const START_MASK = maskOf('start');
const END_MASK = maskOf('end');

/**
 * Event id text of the flow whose id has these words: (flow id XOR mask(label)) with the version
 * set to 8 and the RFC 4122 variant. Labels other than start and end cost one SHA-1 for the mask.
 */
export function eventIdText(w0: number, w1: number, w2: number, w3: number, label: string): string {
  const e = eventIdWords(w0, w1, w2, w3, label);
  return uuidText(e[0], e[1], e[2], e[3]);
}

const EVENT_WORDS = new Int32Array(4);

/** The event id's four words (big-endian), as eventIdText; the array is reused by the next call. */
export function eventIdWords(w0: number, w1: number, w2: number, w3: number, label: string): Int32Array {
  const m = label === 'start' ? START_MASK : label === 'end' ? END_MASK : maskOf(label);
  const e = EVENT_WORDS;
  e[0] = w0 ^ m[0];
  e[1] = ((w1 ^ m[1]) & 0xffff0fff) | 0x8000;
  e[2] = ((w2 ^ m[2]) & 0x3fffffff) | 0x80000000;
  e[3] = w3 ^ m[3];
  return e;
}

/** Event id: flow id XOR mask(label) (see above); label "start", "end" or "update:<k>". The flow id as Uuid or text. */
export function eventUuid(flow: Uuid | string, label: string): string {
  const f = typeof flow === 'string' ? parseUuid(flow) : flow;
  return eventIdText(f.w0, f.w1, f.w2, f.w3, label);
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
