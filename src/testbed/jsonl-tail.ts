// Follows a growing JSON-lines file (the daemon's or the collector's events.jsonl): each read
// returns what was completed since the last one. For benchmarks that match events to the traffic
// they generated while the writer is still writing.
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';

export class JsonlTail {
  private fd = -1;
  private offset = 0;
  private partial = Buffer.alloc(0);

  constructor(readonly file: string) {}

  /** The bytes of the lines completed since the last call (empty while the file does not exist). */
  readChunk(): Buffer {
    if (this.fd < 0) {
      if (!existsSync(this.file)) return Buffer.alloc(0);
      this.fd = openSync(this.file, 'r');
    }
    const size = fstatSync(this.fd).size;
    if (size <= this.offset) return Buffer.alloc(0);
    const buf = Buffer.allocUnsafe(size - this.offset);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(this.fd, buf, got, buf.length - got, this.offset + got);
      if (n === 0) break;
      got += n;
    }
    this.offset += got;
    const data = this.partial.length ? Buffer.concat([this.partial, buf.subarray(0, got)]) : buf.subarray(0, got);
    // A line is complete only with its newline: the writer may be in the middle of one.
    const end = data.lastIndexOf(10) + 1;
    this.partial = Buffer.from(data.subarray(end));
    return data.subarray(0, end);
  }

  /** The lines completed since the last call. */
  read(): string[] {
    return this.readChunk().toString('utf8').split('\n').filter(Boolean);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
