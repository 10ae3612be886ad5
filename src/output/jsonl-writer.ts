// Appends JSON lines to DIR/events.jsonl with group commit: lines accumulate while the previous
// batch is being written and fdatasync'ed, then go out together with one write and one
// fdatasync. Callers learn when their batch is durable (the collector acks only then).
//
// Rotation: when events.jsonl would pass rotateBytes it is closed and renamed to
// events-<6-digit sequence>-<UTC yyyymmddThhmmssZ>.jsonl (the sequence orders the files; the
// time says when the file was closed). maxFiles > 0 keeps only that many rotated files.
import { closeSync, fdatasync, fdatasyncSync, fstatSync, ftruncateSync, openSync, readdirSync, readSync, renameSync, unlinkSync, write } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ensureDir, fsyncDir } from '../util/fs';
import { ByteBuffer } from '../util/byte-buffer';
import { PidLock } from '../util/pid-lock';


/** Largest single write of a commit (see commitLoop). */
export const MAX_PIECE_BYTES = 32 * 1024 * 1024;
export const CURRENT_FILE = 'events.jsonl';
/** Holds the pid of the process writing the directory (src/util/pid-lock.ts). */
export const LOCK_FILE = 'events.lock';
const ROTATED_RE = /^events-(\d{6,})-\d{8}T\d{6}Z\.jsonl$/;

/** The writer's defaults (the daemon's output.* keys and the collector's flags default to these). */
export const JSONL_DEFAULTS = { rotateBytes: 64 * 1024 * 1024, maxFiles: 0 } as const;

export interface JsonlWriterOptions {
  dir: string;
  /** Rotate events.jsonl before it would pass this size. Default 64 MiB. */
  rotateBytes?: number;
  /** Rotated files kept (oldest deleted first); 0 keeps all. Default 0. */
  maxFiles?: number;
  /** fdatasync every batch (default true). Off only for benchmarks of the rest. */
  fsync?: boolean;
  /**
   * Retry a failed commit after this many ms, keeping its lines (and its callbacks waiting)
   * instead of failing them. For a writer whose lines have no sender to resend them (the daemon's
   * own output); callers bound memory through pendingBytes. Off by default: the collector fails
   * the batch and its senders resend.
   */
  retryMs?: number;
  /**
   * Let a burst's large buffers go only after the writer has been idle this long (default 0: as
   * soon as it is). A writer fed in steps (the daemon's flow loop, every few ms under a flood)
   * would otherwise drop and regrow them at every step, each time leaving MBs of garbage.
   */
  idleReleaseMs?: number;
  logger?: Logger;
}

export interface JsonlWriterStats {
  lines: number;
  commits: number;
  bytes: number;
  rotations: number;
}

type CommitCallback = (err: Error | null) => void;

interface Batch {
  id: number;
  /** The lines, each followed by its newline. */
  data: ByteBuffer;
  /** Offset in data after each line's newline (where a write may be cut). */
  ends: number[];
  callbacks: CommitCallback[];
}

/**
 * A committed batch's buffer is reused for the next one (growing a fresh one from 64 KiB copies
 * its bytes again), but not past this size, and not once batches use under an eighth of it, and
 * buffers past ALWAYS_REUSE_BYTES are let go when the writer goes idle: a burst (the daemon
 * draining a million flows) must not leave its buffers held for good.
 */
const REUSE_BUFFER_BYTES = 64 * 1024 * 1024;
const ALWAYS_REUSE_BYTES = 1024 * 1024;

export class WriterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WriterError';
  }
}

/**
 * A batch commit that failed. Its first durableLines lines are on disk all the same (pieces of the
 * batch that went into a file rotated away and synced before the failure); the rest are not.
 */
export class CommitError extends WriterError {
  constructor(message: string, readonly durableLines: number, readonly code?: string) {
    super(message);
    this.name = 'CommitError';
  }
}

function utcStamp(d: Date): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}T${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
}

/** Rotated files of dir, oldest first, then events.jsonl if present. */
export function listEventFiles(dir: string): string[] {
  const names = readdirSync(dir);
  const rotated = names
    .map((n) => ({ n, m: ROTATED_RE.exec(n) }))
    .filter((x): x is { n: string; m: RegExpExecArray } => x.m !== null)
    .sort((a, b) => Number(a.m[1]) - Number(b.m[1]))
    .map((x) => join(dir, x.n));
  if (names.includes(CURRENT_FILE)) rotated.push(join(dir, CURRENT_FILE));
  return rotated;
}

export class JsonlWriter {
  readonly dir: string;
  private readonly path: string;
  private readonly rotateBytes: number;
  private readonly maxFiles: number;
  private readonly doFsync: boolean;
  private readonly retryMs: number | undefined;
  private readonly idleReleaseMs: number;
  private releaseTimer: NodeJS.Timeout | null = null;
  private closing = false;
  private readonly log: Logger | undefined;
  private fd: number;
  /** Bytes of events.jsonl known to be complete (what a failed write is cut back to). */
  private size: number;
  private nextRotation: number;
  /** Size of events.jsonl after the last successful commit. */
  private committedSize: number;
  private current: Batch;
  /** The batch being written and synced, if any. */
  private inCommit: Batch | null = null;
  /** A failed commit could not cut the file back: do it before the next write. */
  private needTruncate = false;
  private spare: ByteBuffer | null = null;
  private committing = false;
  private closed = false;
  private closeWaiters: Array<() => void> = [];
  private readonly counters: JsonlWriterStats = { lines: 0, commits: 0, bytes: 0, rotations: 0 };

  private constructor(opts: JsonlWriterOptions, private readonly lock: PidLock, fd: number, size: number, nextRotation: number) {
    this.dir = opts.dir;
    this.path = join(opts.dir, CURRENT_FILE);
    this.rotateBytes = opts.rotateBytes ?? JSONL_DEFAULTS.rotateBytes;
    this.maxFiles = opts.maxFiles ?? JSONL_DEFAULTS.maxFiles;
    this.doFsync = opts.fsync ?? true;
    this.retryMs = opts.retryMs;
    this.idleReleaseMs = opts.idleReleaseMs ?? 0;
    this.log = opts.logger;
    this.fd = fd;
    this.size = size;
    this.committedSize = size;
    this.nextRotation = nextRotation;
    this.current = this.newBatch(1);
  }

  private newBatch(id: number): Batch {
    const data = this.spare ?? new ByteBuffer();
    this.spare = null;
    data.reset();
    return { id, data, ends: [], callbacks: [] };
  }

  /**
   * Opens DIR/events.jsonl for appending (creating DIR). A torn last line left by a crash is cut
   * off: it was never acknowledged, so its sender sends it again.
   */
  static open(opts: JsonlWriterOptions): JsonlWriter {
    if ((opts.rotateBytes ?? 1) <= 0) throw new WriterError(`rotate size must be positive, got ${opts.rotateBytes}`);
    let fd: number;
    let lock: PidLock;
    try {
      ensureDir(opts.dir);
    } catch (err) {
      throw new WriterError(`cannot write to output directory ${opts.dir}: ${(err as Error).message}`);
    }
    try {
      // Two writers on one directory would cut each other's torn lines and interleave batches.
      lock = PidLock.acquire(join(opts.dir, LOCK_FILE), (pid) => new WriterError(`output directory ${opts.dir} is in use by process ${pid}: give each writer its own directory`));
    } catch (err) {
      throw err instanceof WriterError ? err : new WriterError(`cannot write to output directory ${opts.dir}: ${(err as Error).message}`);
    }
    try {
      fd = openSync(join(opts.dir, CURRENT_FILE), 'a+');
    } catch (err) {
      lock.release();
      throw new WriterError(`cannot write to output directory ${opts.dir}: ${(err as Error).message}`);
    }
    try {
      let size = fstatSync(fd).size;
      if (size > 0) {
        // Find the last newline (reading backwards in small blocks).
        const block = Buffer.alloc(64 * 1024);
        let end = size;
        let keep = -1;
        while (end > 0 && keep < 0) {
          const start = Math.max(0, end - block.length);
          const n = readSync(fd, block, 0, end - start, start);
          const i = block.subarray(0, n).lastIndexOf(0x0a);
          if (i >= 0) keep = start + i + 1;
          end = start;
        }
        if (keep < 0) keep = 0;
        if (keep < size) {
          opts.logger?.warn({ file: join(opts.dir, CURRENT_FILE), droppedBytes: size - keep }, 'cut off a torn last line (never acknowledged; its sender resends it)');
          ftruncateSync(fd, keep);
          fdatasyncSync(fd);
          size = keep;
        }
      }
      let maxSeq = 0;
      for (const n of readdirSync(opts.dir)) {
        const m = ROTATED_RE.exec(n);
        if (m) maxSeq = Math.max(maxSeq, Number(m[1]));
      }
      return new JsonlWriter(opts, lock, fd, size, maxSeq + 1);
    } catch (err) {
      closeSync(fd);
      lock.release();
      throw err;
    }
  }

  /** Queues one line (without its newline); returns the id of the batch it will be committed in. */
  append(line: string): number {
    if (this.closed) throw new WriterError('writer is closed');
    this.current.data.utf8(line);
    return this.endLine();
  }

  /**
   * Queues one line that write() puts into the batch buffer (bytes of one line, no newline);
   * returns the id of the batch it will be committed in. The collector writes JSON this way
   * without building a string first.
   */
  appendWith(write: (out: ByteBuffer) => void): number {
    if (this.closed) throw new WriterError('writer is closed');
    const start = this.current.data.len;
    try {
      write(this.current.data);
    } catch (err) {
      this.current.data.len = start; // no half line
      throw err;
    }
    return this.endLine();
  }

  /**
   * The batch buffer, for a line written in place at its len (the native JSON path writes there
   * without moving len, then commitWritten(n) takes the line, or nothing happens).
   */
  get lineBuffer(): ByteBuffer {
    if (this.closed) throw new WriterError('writer is closed');
    return this.current.data;
  }

  /** Queues the n-byte line written at lineBuffer.len; returns the id of its batch. */
  commitWritten(n: number): number {
    this.current.data.len += n;
    return this.endLine();
  }

  private endLine(): number {
    const b = this.current;
    b.data.byte(0x0a);
    b.ends.push(b.data.len);
    this.kick();
    return b.id;
  }

  /** Id of the batch now accumulating. */
  get batchId(): number {
    return this.current.id;
  }

  /** Bytes queued and not yet committed (the collector slows its senders above a limit). */
  get pendingBytes(): number {
    return this.current.data.len;
  }

  /**
   * Runs cb once the batch now accumulating is durable (or failed). If the batch has no lines it
   * still waits for any commit in progress, so cb also means "everything appended before is durable".
   */
  afterCommit(cb: CommitCallback): number {
    this.current.callbacks.push(cb);
    this.kick();
    return this.current.id;
  }

  /**
   * Runs cb once batch `id` is durable (or failed): the batch accumulating, the one being
   * committed, or (for one already done) the next commit. The collector acks a resent event with
   * the batch that holds its first copy, so that the ack shares that batch's fate.
   */
  afterBatch(id: number, cb: CommitCallback): void {
    if (this.inCommit !== null && this.inCommit.id === id) this.inCommit.callbacks.push(cb);
    else this.afterCommit(cb);
  }

  /** Id of the newest batch whose commit has finished (successfully or not). */
  get finishedBatchId(): number {
    return this.inCommit !== null ? this.inCommit.id - 1 : this.current.id - 1;
  }

  stats(): JsonlWriterStats {
    return { ...this.counters };
  }

  /** Buffer memory the writer holds (the batch accumulating and the one kept for reuse). */
  get bufferBytes(): number {
    return this.current.data.buf.length + (this.spare?.buf.length ?? 0);
  }

  private kick(): void {
    if (this.committing) return;
    this.committing = true;
    // Let the rest of this tick's events join the batch.
    setImmediate(() => this.commitLoop());
  }

  private releaseBuffers(): void {
    const batch = this.current;
    if (batch.data.len === 0 && batch.data.buf.length > ALWAYS_REUSE_BYTES) batch.data = new ByteBuffer();
    if (this.spare !== null && this.spare.buf.length > ALWAYS_REUSE_BYTES) this.spare = null;
  }

  private commitLoop(): void {
    const batch = this.current;
    if (batch.ends.length === 0 && batch.callbacks.length === 0) {
      this.committing = false;
      // Idle: a burst's large buffers are not held for a next burst that may never come.
      if (this.idleReleaseMs === 0) this.releaseBuffers();
      else if (this.releaseTimer === null) {
        this.releaseTimer = setTimeout(() => {
          this.releaseTimer = null;
          if (!this.committing) this.releaseBuffers();
        }, this.idleReleaseMs);
        this.releaseTimer.unref();
      }
      for (const w of this.closeWaiters.splice(0)) w();
      return;
    }
    this.current = this.newBatch(batch.id + 1);
    this.inCommit = batch;
    const lines = batch.ends.length, bytes = batch.data.len;
    /** Lines of the batch in files already rotated away (synced): durable even if the rest fails. */
    let durableLines = 0;
    const done = (cause: NodeJS.ErrnoException | null): void => {
      const capacity = batch.data.buf.length;
      if (capacity <= ALWAYS_REUSE_BYTES || (capacity <= REUSE_BUFFER_BYTES && bytes >= capacity / 8)) this.spare = batch.data;
      if (!cause) this.committedSize = this.size;
      let err: CommitError | null = null;
      if (cause) {
        this.cutBack();
        if (this.retryMs !== undefined && !this.closing) {
          this.log?.error({ err: cause.message, code: cause.code, file: this.path, lines: lines - durableLines, retryInMs: this.retryMs }, 'writing events failed; keeping them and retrying');
          this.requeue(batch, durableLines);
          this.inCommit = null;
          setTimeout(() => this.commitLoop(), this.retryMs);
          return;
        }
        err = new CommitError(`${cause.message} (writing ${this.path})`, durableLines, cause.code);
        this.log?.error({ err: cause.message, code: cause.code, file: this.path, lines: lines - durableLines }, this.retryMs !== undefined ? 'writing events failed at close; these lines are lost' : 'writing events failed; not acknowledging them');
      } else {
        this.counters.lines += lines;
        this.counters.bytes += bytes;
        this.counters.commits++;
      }
      this.inCommit = null;
      for (const cb of batch.callbacks) {
        try {
          cb(err);
        } catch (e) {
          this.log?.error({ err: (e as Error).message }, 'commit callback failed');
        }
      }
      setImmediate(() => this.commitLoop());
    };
    if (lines === 0) {
      done(null);
      return;
    }
    // Split the batch where the file would pass rotateBytes: each piece is one write, and a
    // rotation between pieces (rotate() syncs the file it closes). Pieces are also cut at
    // MAX_PIECE_BYTES, so no single write is huge when rotation is set high. Pieces are views of
    // the batch buffer, cut at line ends.
    const pieces: Buffer[] = [];
    /** Lines before each piece. */
    const linesBefore: number[] = [];
    const t0 = Date.now();
    if (this.size + bytes <= this.rotateBytes && bytes <= MAX_PIECE_BYTES) {
      pieces.push(batch.data.view());
      linesBefore.push(0);
    } else {
      let from = 0, acc = this.size, fromLine = 0;
      for (let i = 0; i < lines; i++) {
        const lineStart = i === 0 ? 0 : batch.ends[i - 1];
        const len = batch.ends[i] - lineStart;
        const rotateHere = acc > 0 && acc + len > this.rotateBytes;
        if (rotateHere || lineStart - from + len > MAX_PIECE_BYTES) {
          if (lineStart > from) {
            pieces.push(batch.data.view(from, lineStart));
            linesBefore.push(fromLine);
            from = lineStart;
            fromLine = i;
          }
          if (rotateHere) acc = 0;
        }
        acc += len;
      }
      pieces.push(batch.data.view(from));
      linesBefore.push(fromLine);
    }
    if (this.needTruncate && !this.cutBack()) {
      done({ name: 'Error', message: `cannot cut ${this.path} back to its last complete line`, code: 'EIO' });
      return;
    }
    const writePiece = (k: number, off: number): void => {
      const data = pieces[k];
      if (off === 0) {
        try {
          if (this.size > 0 && this.size + data.length > this.rotateBytes) {
            this.rotate();
            durableLines = linesBefore[k]; // rotate() synced the file it closed
          }
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          done({ name: 'Error', message: `cannot rotate ${this.path}: ${e.message}`, code: e.code });
          return;
        }
      }
      write(this.fd, data, off, data.length - off, null, (err, n) => {
        if (err) return done(err);
        if (off + n < data.length) return writePiece(k, off + n);
        this.size += data.length;
        if (k + 1 < pieces.length) return writePiece(k + 1, 0);
        if (!this.doFsync) return done(null);
        fdatasync(this.fd, (e) => {
          this.log?.trace({ lines, bytes, ms: Date.now() - t0 }, 'committed');
          done(e ?? null);
        });
      });
    };
    writePiece(0, 0);
  }

  /**
   * Puts the lines of a failed batch from line `from` on back in front of the batch accumulating,
   * with the failed batch's callbacks (retry mode).
   */
  private requeue(failed: Batch, from: number): void {
    const next = this.current;
    const start = from === 0 ? 0 : failed.ends[from - 1];
    const merged: Batch = { id: next.id, data: new ByteBuffer(), ends: [], callbacks: [] };
    merged.data.bytes(failed.data.buf, start, failed.data.len);
    for (let i = from; i < failed.ends.length; i++) merged.ends.push(failed.ends[i] - start);
    const shift = merged.data.len;
    merged.data.bytes(next.data.buf, 0, next.data.len);
    for (const e of next.ends) merged.ends.push(e + shift);
    merged.callbacks.push(...failed.callbacks, ...next.callbacks);
    this.current = merged;
  }

  /**
   * Cuts events.jsonl back to its last committed size (no half-written line stays behind a
   * failed commit). If that fails too, the next commit tries again before it writes.
   */
  private cutBack(): boolean {
    try {
      ftruncateSync(this.fd, this.committedSize);
      this.size = this.committedSize;
      this.needTruncate = false;
      return true;
    } catch (err) {
      this.needTruncate = true;
      this.log?.error({ err: (err as Error).message, file: this.path }, 'cannot cut the output file back after a failed write; retrying before the next write');
      return false;
    }
  }

  private rotate(): void {
    fdatasyncSync(this.fd);
    closeSync(this.fd);
    const name = `events-${String(this.nextRotation).padStart(6, '0')}-${utcStamp(new Date())}.jsonl`;
    this.nextRotation++;
    renameSync(this.path, join(this.dir, name));
    this.fd = openSync(this.path, 'a+');
    this.size = 0;
    this.committedSize = 0;
    fsyncDir(this.dir);
    this.counters.rotations++;
    this.log?.info({ file: name }, 'rotated events.jsonl');
    if (this.maxFiles > 0) {
      const rotated = listEventFiles(this.dir).filter((p) => !p.endsWith(`/${CURRENT_FILE}`));
      for (const old of rotated.slice(0, Math.max(0, rotated.length - this.maxFiles))) {
        try {
          unlinkSync(old);
          this.log?.info({ file: old }, 'deleted old event file (max files)');
        } catch (err) {
          this.log?.warn({ file: old, err: (err as Error).message }, 'cannot delete old event file');
        }
      }
    }
  }

  /** Commits what is queued, then closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closing = true; // one more attempt at what is queued, no retries after it
    if (this.committing || this.current.ends.length > 0) {
      await new Promise<void>((resolve) => {
        this.closeWaiters.push(resolve);
        this.kick();
      });
    }
    this.closed = true;
    if (this.releaseTimer !== null) clearTimeout(this.releaseTimer);
    closeSync(this.fd);
    this.lock.release();
  }
}
