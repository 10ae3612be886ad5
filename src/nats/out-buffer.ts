// Outgoing protocol bytes, gathered until the next flush: many frames (publishes, acks) go to the
// socket in one write. A flushed buffer belongs to the socket until its write completes, so the
// next frames go to another one (one spare is kept for reuse).

const MIN_SIZE = 64 * 1024;

export class OutBuffer {
  buf: Buffer = Buffer.allocUnsafe(MIN_SIZE);
  len = 0;
  private spare: Buffer | null = null;

  /** Room for n more bytes at buf[len]. */
  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  /** ASCII/UTF-8 text (a protocol line, a subject). */
  text(s: string): void {
    this.ensure(s.length * 3);
    this.len += this.buf.write(s, this.len, 'utf8');
  }

  /** Protocol text known to be ASCII (numbers, fixed words). */
  ascii(s: string): void {
    this.ensure(s.length);
    this.len += this.buf.write(s, this.len, 'latin1');
  }

  bytes(b: Buffer | Uint8Array, s = 0, e = b.length): void {
    const n = e - s;
    this.ensure(n);
    if (b instanceof Buffer) b.copy(this.buf, this.len, s, e);
    else this.buf.set(b.subarray(s, e), this.len);
    this.len += n;
  }

  /** A non-negative integer in decimal, written digit by digit (no string made). */
  uint(v: number): void {
    if (!(v >= 0 && v <= Number.MAX_SAFE_INTEGER)) throw new RangeError(`not a non-negative integer: ${v}`);
    let digits = 1;
    for (let x = v; x >= 10; x = Math.floor(x / 10)) digits++;
    this.ensure(digits);
    const b = this.buf;
    let at = this.len + digits;
    this.len = at;
    let x = Math.floor(v);
    do {
      b[--at] = 0x30 + (x % 10);
      x = Math.floor(x / 10);
    } while (x > 0);
  }

  /** One byte. */
  byte(c: number): void {
    this.ensure(1);
    this.buf[this.len++] = c;
  }

  crlf(): void {
    this.ensure(2);
    this.buf[this.len++] = 0x0d;
    this.buf[this.len++] = 0x0a;
  }

  /** The bytes gathered so far, handed over; the next frames go to a fresh buffer. */
  take(): Buffer {
    const out = this.buf.subarray(0, this.len);
    const s = this.spare;
    this.spare = null;
    this.buf = s !== null && s.length >= MIN_SIZE ? s : Buffer.allocUnsafe(Math.max(MIN_SIZE, Math.min(this.buf.length, 4 * 1024 * 1024)));
    this.len = 0;
    return out;
  }

  /** A buffer from take() whose write completed: reused for later frames. */
  giveBack(b: Buffer): void {
    if (this.spare === null && b.buffer.byteLength >= MIN_SIZE && b.byteOffset === 0) this.spare = Buffer.from(b.buffer, 0, b.buffer.byteLength);
  }

  clear(): void {
    this.len = 0;
  }
}
