// Follows a growing JSON-lines file (the daemon's or the collector's events.jsonl): each read
// returns what was completed since the last one. For benchmarks that match events to the traffic
// they generated while the writer is still writing. Rotation (the writer renames the file to
// events-<6-digit sequence>-<time>.jsonl and starts a new one) is followed through every file
// rotated since the last read, in order. The first read starts at the oldest file of the directory:
// everything the writer wrote there is read.
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export class JsonlTail {
  private fd = -1;
  private offset = 0;
  private partial = Buffer.alloc(0);

  constructor(readonly file: string) {}

  /** The bytes of the lines completed since the last call (empty while the file does not exist). */
  readChunk(): Buffer {
    if (this.fd < 0) {
      const first = existsSync(dirname(this.file)) ? this.rotatedFiles()[0] : undefined;
      if (!first && !existsSync(this.file)) return Buffer.alloc(0);
      this.fd = openSync(first ?? this.file, 'r');
    }
    const chunks: Buffer[] = [];
    for (;;) {
      // Checked before reading: a file is complete once it has been renamed.
      const ino = fstatSync(this.fd).ino;
      const done = existsSync(this.file) && statSync(this.file).ino !== ino;
      chunks.push(this.readNew());
      if (!done) break;
      closeSync(this.fd);
      this.fd = openSync(this.nextFile(ino), 'r');
      this.offset = 0;
    }
    return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
  }

  /** The file written after the (rotated) one with inode ino: the next rotated one, else the current. */
  private nextFile(ino: number): string {
    const rotated = this.rotatedFiles();
    const at = rotated.findIndex((f) => statSync(f).ino === ino);
    return at >= 0 && at + 1 < rotated.length ? rotated[at + 1] : this.file;
  }

  /** Rotated files, oldest first (their names start with a zero-padded sequence number). */
  private rotatedFiles(): string[] {
    const dir = dirname(this.file);
    return readdirSync(dir).filter((f) => f.endsWith('.jsonl') && f !== basename(this.file)).sort().map((f) => join(dir, f));
  }

  private readNew(): Buffer {
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
