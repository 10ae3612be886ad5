// Follows a growing JSON-lines file (the daemon's or the collector's events.jsonl): each read
// returns what was completed since the last one. For benchmarks that match events to the traffic
// they generated while the writer is still writing. Rotation (the writer renames the file to
// events-<6-digit sequence>-<time>.jsonl and starts a new one) is followed through every file
// rotated since the last read, in order. The first read starts at the oldest file of the directory:
// everything the writer wrote there is read.
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** What one readChunk returns at most (more only for a single longer line): far below V8's string limit. */
const MAX_CHUNK_BYTES = 32 * 2 ** 20;

export class JsonlTail {
  private fd = -1;
  private offset = 0;
  private partial = Buffer.alloc(0);

  constructor(readonly file: string) {}

  /**
   * The bytes of whole lines completed since the last call, at most about `max` of them; empty
   * once caught up (or while the file does not exist). A writer far ahead (hundreds of MB) is
   * followed over several calls.
   */
  readChunk(max = MAX_CHUNK_BYTES): Buffer {
    if (this.fd < 0) {
      const first = existsSync(dirname(this.file)) ? this.rotatedFiles()[0] : undefined;
      if (!first && !existsSync(this.file)) return Buffer.alloc(0);
      this.fd = openSync(first ?? this.file, 'r');
    }
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      // Checked before reading: a file is complete once it has been renamed.
      const ino = fstatSync(this.fd).ino;
      const done = existsSync(this.file) && statSync(this.file).ino !== ino;
      const chunk = this.readNew(max - total);
      chunks.push(chunk);
      total += chunk.length;
      if (this.offset < fstatSync(this.fd).size) break; // the cap: the next call goes on from here
      if (!done || total >= max) break;
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

  /** Whole lines from the offset on, reading about `limit` bytes (on until a newline, if none is in them). */
  private readNew(limit: number): Buffer {
    const size = fstatSync(this.fd).size;
    let data = this.partial;
    let end = 0;
    while (end === 0 && this.offset < size) {
      const buf = Buffer.allocUnsafe(Math.min(size - this.offset, Math.max(limit, 64 * 1024)));
      let got = 0;
      while (got < buf.length) {
        const n = readSync(this.fd, buf, got, buf.length - got, this.offset + got);
        if (n === 0) break;
        got += n;
      }
      if (got === 0) break;
      this.offset += got;
      data = data.length ? Buffer.concat([data, buf.subarray(0, got)]) : buf.subarray(0, got);
      // A line is complete only with its newline: the writer may be in the middle of one.
      end = data.lastIndexOf(10) + 1;
    }
    this.partial = Buffer.from(data.subarray(end));
    return data.subarray(0, end);
  }

  /** The lines completed since the last call (all of them: converted a chunk at a time). */
  read(): string[] {
    const lines: string[] = [];
    for (let c = this.readChunk(); c.length > 0; c = this.readChunk()) {
      for (const line of c.toString('utf8').split('\n')) if (line) lines.push(line);
    }
    return lines;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
