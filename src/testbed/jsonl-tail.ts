// Follows a growing JSON-lines file (the daemon's or the collector's events.jsonl): each read()
// returns the lines completed since the last one. For benchmarks that match events to the traffic
// they generated while the writer is still writing.
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';

export class JsonlTail {
  private fd = -1;
  private offset = 0;
  private partial = '';

  constructor(readonly file: string) {}

  /** Complete lines written since the last call (none while the file does not exist yet). */
  read(): string[] {
    if (this.fd < 0) {
      if (!existsSync(this.file)) return [];
      this.fd = openSync(this.file, 'r');
    }
    const size = fstatSync(this.fd).size;
    if (size <= this.offset) return [];
    const buf = Buffer.allocUnsafe(size - this.offset);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(this.fd, buf, got, buf.length - got, this.offset + got);
      if (n === 0) break;
      got += n;
    }
    this.offset += got;
    const text = this.partial + buf.toString('utf8', 0, got);
    const last = text.lastIndexOf('\n');
    // A line is complete only with its newline: the writer may be in the middle of one.
    this.partial = text.slice(last + 1);
    return last < 0 ? [] : text.slice(0, last).split('\n').filter(Boolean);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
