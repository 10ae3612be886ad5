// SHA-1 (FIPS 180-4) in plain JavaScript, for the short inputs of the flow ids (ids.ts).
//
// Why not node:crypto: a createHash round trip costs ~1.5 µs for a 40-byte input (object,
// binding, Buffer), crypto.hash() ~0.95 µs; the compression function here costs ~0.23 µs per
// 64-byte block on the same machine, which matters at one flow id per new flow. Inputs live in a
// caller-owned buffer that has room for the padding, so nothing is allocated per digest; the flow
// id, whose input is whole words, is given as words (sha1Words) and skips the byte packing.
//
// The additions are done two terms at a time with `| 0` so V8 keeps them in 32-bit integer
// arithmetic (a sum of five int32 terms would be computed in doubles and truncated).

/** Message schedule of the block being compressed. */
const W = new Int32Array(80);

/** Compress the 16-word block at word offset o of x into the state h. */
function compress(h: Int32Array, x: Int32Array, o: number): void {
  for (let i = 0; i < 16; i++) W[i] = x[o + i];
  for (let i = 16; i < 80; i++) {
    const x = W[i - 3] ^ W[i - 8] ^ W[i - 14] ^ W[i - 16];
    W[i] = (x << 1) | (x >>> 31);
  }
  let a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  // Five rounds per iteration, renaming the variables instead of shifting them along.
  let i = 0;
  for (; i < 20; i += 5) {
    e = (e + ((a << 5) | (a >>> 27))) | 0; e = (e + ((b & c) | (~b & d))) | 0; e = (e + W[i] + 0x5a827999) | 0; b = (b << 30) | (b >>> 2);
    d = (d + ((e << 5) | (e >>> 27))) | 0; d = (d + ((a & b) | (~a & c))) | 0; d = (d + W[i + 1] + 0x5a827999) | 0; a = (a << 30) | (a >>> 2);
    c = (c + ((d << 5) | (d >>> 27))) | 0; c = (c + ((e & a) | (~e & b))) | 0; c = (c + W[i + 2] + 0x5a827999) | 0; e = (e << 30) | (e >>> 2);
    b = (b + ((c << 5) | (c >>> 27))) | 0; b = (b + ((d & e) | (~d & a))) | 0; b = (b + W[i + 3] + 0x5a827999) | 0; d = (d << 30) | (d >>> 2);
    a = (a + ((b << 5) | (b >>> 27))) | 0; a = (a + ((c & d) | (~c & e))) | 0; a = (a + W[i + 4] + 0x5a827999) | 0; c = (c << 30) | (c >>> 2);
  }
  for (; i < 40; i += 5) {
    e = (e + ((a << 5) | (a >>> 27))) | 0; e = (e + (b ^ c ^ d)) | 0; e = (e + W[i] + 0x6ed9eba1) | 0; b = (b << 30) | (b >>> 2);
    d = (d + ((e << 5) | (e >>> 27))) | 0; d = (d + (a ^ b ^ c)) | 0; d = (d + W[i + 1] + 0x6ed9eba1) | 0; a = (a << 30) | (a >>> 2);
    c = (c + ((d << 5) | (d >>> 27))) | 0; c = (c + (e ^ a ^ b)) | 0; c = (c + W[i + 2] + 0x6ed9eba1) | 0; e = (e << 30) | (e >>> 2);
    b = (b + ((c << 5) | (c >>> 27))) | 0; b = (b + (d ^ e ^ a)) | 0; b = (b + W[i + 3] + 0x6ed9eba1) | 0; d = (d << 30) | (d >>> 2);
    a = (a + ((b << 5) | (b >>> 27))) | 0; a = (a + (c ^ d ^ e)) | 0; a = (a + W[i + 4] + 0x6ed9eba1) | 0; c = (c << 30) | (c >>> 2);
  }
  for (; i < 60; i += 5) { // majority: (x & y) | (z & (x | y)); 0x8f1bbcdc as int32
    e = (e + ((a << 5) | (a >>> 27))) | 0; e = (e + ((b & c) | (d & (b | c)))) | 0; e = (e + W[i] - 0x70e44324) | 0; b = (b << 30) | (b >>> 2);
    d = (d + ((e << 5) | (e >>> 27))) | 0; d = (d + ((a & b) | (c & (a | b)))) | 0; d = (d + W[i + 1] - 0x70e44324) | 0; a = (a << 30) | (a >>> 2);
    c = (c + ((d << 5) | (d >>> 27))) | 0; c = (c + ((e & a) | (b & (e | a)))) | 0; c = (c + W[i + 2] - 0x70e44324) | 0; e = (e << 30) | (e >>> 2);
    b = (b + ((c << 5) | (c >>> 27))) | 0; b = (b + ((d & e) | (a & (d | e)))) | 0; b = (b + W[i + 3] - 0x70e44324) | 0; d = (d << 30) | (d >>> 2);
    a = (a + ((b << 5) | (b >>> 27))) | 0; a = (a + ((c & d) | (e & (c | d)))) | 0; a = (a + W[i + 4] - 0x70e44324) | 0; c = (c << 30) | (c >>> 2);
  }
  for (; i < 80; i += 5) { // 0xca62c1d6 as int32
    e = (e + ((a << 5) | (a >>> 27))) | 0; e = (e + (b ^ c ^ d)) | 0; e = (e + W[i] - 0x359d3e2a) | 0; b = (b << 30) | (b >>> 2);
    d = (d + ((e << 5) | (e >>> 27))) | 0; d = (d + (a ^ b ^ c)) | 0; d = (d + W[i + 1] - 0x359d3e2a) | 0; a = (a << 30) | (a >>> 2);
    c = (c + ((d << 5) | (d >>> 27))) | 0; c = (c + (e ^ a ^ b)) | 0; c = (c + W[i + 2] - 0x359d3e2a) | 0; e = (e << 30) | (e >>> 2);
    b = (b + ((c << 5) | (c >>> 27))) | 0; b = (b + (d ^ e ^ a)) | 0; b = (b + W[i + 3] - 0x359d3e2a) | 0; d = (d << 30) | (d >>> 2);
    a = (a + ((b << 5) | (b >>> 27))) | 0; a = (a + (c ^ d ^ e)) | 0; a = (a + W[i + 4] - 0x359d3e2a) | 0; c = (c << 30) | (c >>> 2);
  }
  h[0] = (h[0] + a) | 0;
  h[1] = (h[1] + b) | 0;
  h[2] = (h[2] + c) | 0;
  h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0;
}

/** Bytes a scratch buffer needs to digest a message of len bytes in place (message + padding). */
export function paddedLength(len: number): number {
  return ((len + 9 + 63) >>> 6) << 6;
}

function init(h: Int32Array): void {
  h[0] = 0x67452301;
  h[1] = 0xefcdab89 | 0;
  h[2] = 0x98badcfe | 0;
  h[3] = 0x10325476;
  h[4] = 0xc3d2e1f0 | 0;
}

/**
 * SHA-1 of a message of len bytes (a multiple of 4) given as big-endian 32-bit words in x, in
 * place: x must hold paddedLength(len) / 4 words (the padding is written after the message).
 * The digest goes to h as five big-endian words.
 */
export function sha1Words(x: Int32Array, len: number, h: Int32Array): void {
  const total = paddedLength(len) >>> 2;
  if ((len & 3) !== 0) throw new RangeError('sha1Words: the length must be whole words');
  if (x.length < total) throw new RangeError(`sha1Words: ${len} bytes need ${total} words`);
  if (len >= 0x2000_0000) throw new RangeError('sha1Words: message too long'); // bit length must fit 32 bits
  x[len >>> 2] = 0x80000000 | 0;
  for (let i = (len >>> 2) + 1; i < total - 1; i++) x[i] = 0;
  x[total - 1] = len * 8;
  init(h);
  for (let o = 0; o < total; o += 16) compress(h, x, o);
}

let words = new Int32Array(64);

/**
 * SHA-1 of the first len bytes of m, in place: m must hold paddedLength(len) bytes (the padding
 * is written over the bytes after the message). The digest goes to h as five big-endian words.
 */
export function sha1Into(m: Uint8Array, len: number, h: Int32Array): void {
  const total = paddedLength(len);
  if (m.length < total) throw new RangeError(`sha1Into: ${len} bytes need a ${total}-byte buffer`);
  if (len >= 0x2000_0000) throw new RangeError('sha1Into: message too long'); // bit length must fit 32 bits
  m[len] = 0x80;
  m.fill(0, len + 1, total - 4);
  const bits = len * 8;
  m[total - 4] = bits >>> 24;
  m[total - 3] = (bits >>> 16) & 0xff;
  m[total - 2] = (bits >>> 8) & 0xff;
  m[total - 1] = bits & 0xff;
  if (words.length < total >>> 2) words = new Int32Array(total >>> 2);
  const x = words;
  for (let i = 0, p = 0; p < total; i++, p += 4) x[i] = (m[p] << 24) | (m[p + 1] << 16) | (m[p + 2] << 8) | m[p + 3];
  init(h);
  for (let o = 0; o < total >>> 2; o += 16) compress(h, x, o);
}

const STATE = new Int32Array(5);

/** SHA-1 of data (any length; allocates a padded copy: for tests and tools, not hot paths). */
export function sha1(data: Uint8Array): Buffer {
  const m = new Uint8Array(paddedLength(data.length));
  m.set(data, 0);
  sha1Into(m, data.length, STATE);
  const out = Buffer.allocUnsafe(20);
  for (let i = 0; i < 5; i++) out.writeInt32BE(STATE[i], i * 4);
  return out;
}
