// A growable byte buffer for building output without intermediate strings: the collector writes
// JSON lines straight into the batch that goes to disk, and its acks into one frame list.

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const B64 = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', 'latin1');

export class ByteBuffer {
  buf: Buffer;
  len = 0;

  constructor(initialBytes = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  /** Room for n more bytes. */
  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const nb = Buffer.allocUnsafe(size);
    this.buf.copy(nb, 0, 0, this.len);
    this.buf = nb;
  }

  reset(): void {
    this.len = 0;
  }

  /** The bytes written so far (a view, valid until the next write or reset). */
  view(start = 0, end = this.len): Buffer {
    return this.buf.subarray(start, end);
  }

  byte(c: number): void {
    this.ensure(1);
    this.buf[this.len++] = c;
  }

  /** Text whose characters are all below U+0080 (keys, numbers, times, hex). */
  ascii(s: string): void {
    const n = s.length;
    this.ensure(n);
    const b = this.buf;
    let at = this.len;
    for (let i = 0; i < n; i++) b[at++] = s.charCodeAt(i);
    this.len = at;
  }

  /** Any text, UTF-8 encoded. */
  utf8(s: string): void {
    this.ensure(s.length * 3);
    this.len += this.buf.write(s, this.len, 'utf8');
  }

  bytes(src: Uint8Array, start = 0, end = src.length): void {
    const n = end - start;
    this.ensure(n);
    if (n < 16) {
      // A JS byte loop costs ~1.5 ns a byte; TypedArray#set ~25 ns a call whatever the size.
      const b = this.buf;
      let at = this.len;
      for (let i = start; i < end; i++) b[at++] = src[i];
      this.len = at;
    } else {
      this.buf.set(start === 0 && end === src.length ? src : src.subarray(start, end), this.len);
      this.len += n;
    }
  }

  /** A non-negative integer in decimal, as JavaScript prints it (String(v) past 2^31). */
  uint(v: number): void {
    if (!(v >= 0 && v < 2147483648 && v === Math.floor(v))) {
      this.ascii(String(v));
      return;
    }
    this.ensure(10);
    const b = this.buf;
    let at = this.len;
    // Most numbers here are small (ports, octets, flags, codes).
    if (v < 10) {
      b[at] = 48 + v;
      this.len = at + 1;
      return;
    }
    if (v < 100) {
      const t = (v / 10) | 0;
      b[at] = 48 + t;
      b[at + 1] = 48 + v - t * 10;
      this.len = at + 2;
      return;
    }
    let digits = 3;
    for (let t = (v / 1000) | 0; t > 0; t = (t / 10) | 0) digits++;
    at += digits;
    this.len = at;
    do {
      const q = (v / 10) | 0;
      b[--at] = 48 + v - q * 10;
      v = q;
    } while (v > 0);
  }

  /** Bytes as lowercase hex; dashes (0x2d) before the bytes at the given indexes. */
  hex(src: Uint8Array, start: number, end: number, dashesBefore: readonly number[]): void {
    this.ensure((end - start) * 2 + dashesBefore.length);
    const b = this.buf;
    let at = this.len, d = 0;
    for (let i = start; i < end; i++) {
      if (d < dashesBefore.length && i - start === dashesBefore[d]) {
        b[at++] = 0x2d;
        d++;
      }
      const h = HEX[src[i]];
      b[at++] = h.charCodeAt(0);
      b[at++] = h.charCodeAt(1);
    }
    this.len = at;
  }

  /** Standard base64 with padding (the same text as Buffer#toString('base64')). */
  base64(src: Uint8Array, start: number, end: number): void {
    const n = end - start;
    this.ensure(Math.ceil(n / 3) * 4);
    const b = this.buf;
    let at = this.len, i = start;
    for (; i + 3 <= end; i += 3) {
      const v = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2];
      b[at++] = B64[v >> 18];
      b[at++] = B64[(v >> 12) & 63];
      b[at++] = B64[(v >> 6) & 63];
      b[at++] = B64[v & 63];
    }
    if (end - i === 1) {
      const v = src[i] << 16;
      b[at++] = B64[v >> 18];
      b[at++] = B64[(v >> 12) & 63];
      b[at++] = 0x3d;
      b[at++] = 0x3d;
    } else if (end - i === 2) {
      const v = (src[i] << 16) | (src[i + 1] << 8);
      b[at++] = B64[v >> 18];
      b[at++] = B64[(v >> 12) & 63];
      b[at++] = B64[(v >> 6) & 63];
      b[at++] = 0x3d;
    }
    this.len = at;
  }
}
