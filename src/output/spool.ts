// The durable spool: every event the exporter accepts is written here before it is sent, and
// forgotten only when the collector acknowledged it. Format and fsync policy: docs/export.md.
//
//   DIR/spool.lock              pid of the process using the spool (a second user is refused)
//   DIR/<seq:16 digits>.seg     segment: 16-byte file header, then records
//   DIR/<seq:16 digits>.ack     ack log of that segment: 8-byte entries (record offset, CRC32 of it)
//
// Record: magic u32 LE 0x31464757 ("WGF1"), body length u32 LE, CRC32 of the body u32 LE, body =
// 16-byte event id + the serialized flow.FlowEvent. Acks arrive out of order, so each segment
// counts its acked records and appends their offsets to its ack log (cheap, no fsync: a lost ack
// entry only means a duplicate after a crash, which the collector drops). A segment is deleted
// when every record in it is acked or when the size bound drops it.
//
// Memory is bounded whatever the collector does: records not yet handed to the sender are kept in
// memory only up to memoryBytes (beyond that they are read back from disk, one segment at most at
// a time); what was handed out is the sender's bounded in-flight window.
import { close, closeSync, fdatasync, fdatasyncSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, unlink, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { Logger } from 'pino';
import { ensureDir, fsyncDir } from '../util/fs';
import { PidLock } from '../util/pid-lock';

export type FsyncPolicy = 'always' | 'interval' | 'never';

export interface SpoolOptions {
  dir: string;
  /** Upper bound of the spool on disk (segment files); when full the oldest segment is dropped. Default 256 MiB. */
  maxBytes?: number;
  /** A segment is sealed and a new one started past this size. Default 4 MiB; at most maxBytes / 2. */
  segmentBytes?: number;
  /**
   * always: fdatasync after every append, before append() returns (survives power loss).
   * interval (default): written to the OS at once (survives a crash or SIGKILL of the process),
   *   fdatasync every fsyncIntervalMs (a power loss may lose that much).
   * never: left to the OS.
   */
  fsync?: FsyncPolicy;
  fsyncIntervalMs?: number;
  /** Records appended but not yet handed to the sender are kept in memory up to this many bytes. Default 16 MiB. */
  memoryBytes?: number;
  /** Ack log entries are written in batches this often. Default 200 ms. */
  ackFlushMs?: number;
  /**
   * Checks a record read back from disk (its 16-byte id and payload): a reason it cannot be sent,
   * or null. A record with a valid CRC whose body is not an event (a bug, a hand edit, another
   * program's file) is quarantined instead of being sent: otherwise the collector refuses it, the
   * sender resends it, and nothing behind it is ever delivered.
   */
  validate?: (id: Buffer, payload: Buffer) => string | null;
  /** Quarantined records are kept in DIR/quarantine.records up to this many bytes. Default 16 MiB. */
  quarantineBytes?: number;
  logger?: Logger;
}

export interface SpoolRecord {
  /** Memory holding the record's raw 16-byte event id at idAt, its payload right after it. */
  buf: Buffer;
  idAt: number;
  /** Serialized flow.FlowEvent (a view of buf). */
  payload: Buffer;
  seq: number;
  off: number;
}

/** The raw 16-byte event id of a record (a view). */
export function recordId(rec: SpoolRecord): Buffer {
  return rec.buf.subarray(rec.idAt, rec.idAt + 16);
}

export interface SpoolStats {
  /** Bytes of segment files on disk. */
  bytes: number;
  /** Records not yet acknowledged (in flight or waiting). */
  records: number;
  /** Unacknowledged records removed because the spool was full. */
  dropped: number;
  /** Corrupt or truncated records found and skipped. */
  corruptSkipped: number;
  /** Records whose body failed validation, moved to quarantine.records and not sent. */
  quarantined: number;
  segments: number;
}

export interface AppendItem {
  id: Buffer;
  payload: Buffer;
}

/**
 * Writes the body of record k (16-byte event id, then the payload) into buf from `at` and returns
 * where it ends; or, when it would not fit before `end`, writes nothing useful and returns minus
 * the body's length (it is then called again for k with more room); or returns SKIP_RECORD to
 * leave record k out of the batch (the others are appended).
 */
export type BodyWriter = (k: number, buf: Buffer, at: number, end: number) => number;

/** A BodyWriter's answer for a record it cannot write (0 is never a body's end). */
export const SKIP_RECORD = 0;

/** Name of the file quarantined records go to (same record format as a segment's). */
export const QUARANTINE_FILE = 'quarantine.records';

export const RECORD_MAGIC = 0x31464757;
export const RECORD_HEADER_BYTES = 12;
export const SEGMENT_HEADER = Buffer.concat([Buffer.from('WGFLOWSPOOL\0', 'latin1'), Buffer.from([1, 0, 0, 0])]);
export const SEGMENT_HEADER_BYTES = SEGMENT_HEADER.length; // 16
const ACK_ENTRY_BYTES = 8;
const READ_CHUNK_BYTES = 256 * 1024;
/** Memory of a cached record besides its payload: the record, its header and id, the payload's Buffer object. */
const RECORD_MEMORY_OVERHEAD = 256;
/**
 * Appended records are laid out in chunks of this size (a batch larger than that gets a larger
 * one), exactly as in the file: the write goes straight from the chunk and the records the spool
 * keeps for sending are views into it. A chunk is never reused: a new one when it is full.
 */
const CHUNK_BYTES = 64 * 1024;
/** No event comes near this; a larger length field is corruption. */
export const MAX_RECORD_BODY = 1 << 20;

interface Segment {
  seq: number;
  path: string;
  ackPath: string;
  size: number;
  /** Valid records in the segment. */
  records: number;
  acked: number;
  sealed: boolean;
  /** Append fd (active segment only). */
  fd: number | null;
  ackFd: number | null;
  pendingAcks: number[];
  /** Offsets acked in an earlier run: the reader skips them. */
  preAcked: Set<number> | null;
}

interface Pos {
  seq: number;
  off: number;
}

const segName = (seq: number): string => String(seq).padStart(16, '0');

/** The spool's defaults, one place (spool.* keys and export-test flags default to these). */
export const SPOOL_DEFAULTS = {
  maxBytes: 256 * 1024 * 1024,
  segmentBytes: 4 * 1024 * 1024,
  fsync: 'interval' as FsyncPolicy,
  fsyncIntervalMs: 1000,
  memoryBytes: 16 * 1024 * 1024,
  ackFlushMs: 200,
  quarantineBytes: 16 * 1024 * 1024,
} as const;

export class SpoolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SpoolError';
  }
}

/** Encodes one record (header + body). */
export function encodeRecord(id: Buffer, payload: Buffer): Buffer {
  const bodyLen = 16 + payload.length;
  const out = Buffer.allocUnsafe(RECORD_HEADER_BYTES + bodyLen);
  out.writeUInt32LE(RECORD_MAGIC, 0);
  out.writeUInt32LE(bodyLen, 4);
  id.copy(out, RECORD_HEADER_BYTES, 0, 16);
  payload.copy(out, RECORD_HEADER_BYTES + 16);
  out.writeUInt32LE(crc32(out.subarray(RECORD_HEADER_BYTES)), 8);
  return out;
}

const MAGIC_BYTES = (() => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(RECORD_MAGIC, 0);
  return b;
})();

/** Body length announced by a plausible record header at buf[at], or -1. */
function headerBodyLen(buf: Buffer, at: number): number {
  if (at + RECORD_HEADER_BYTES > buf.length || buf.readUInt32LE(at) !== RECORD_MAGIC) return -1;
  const bodyLen = buf.readUInt32LE(at + 4);
  return bodyLen >= 16 && bodyLen <= MAX_RECORD_BODY ? bodyLen : -1;
}

/** Length of the valid record at buf[at] or 0 if there is none (bad magic, length, CRC or truncated). */
function validRecordAt(buf: Buffer, at: number): number {
  const bodyLen = headerBodyLen(buf, at);
  if (bodyLen < 0) return 0;
  const end = at + RECORD_HEADER_BYTES + bodyLen;
  if (end > buf.length) return 0;
  if (crc32(buf.subarray(at + RECORD_HEADER_BYTES, end)) !== buf.readUInt32LE(at + 8)) return 0;
  return RECORD_HEADER_BYTES + bodyLen;
}

/** True if buf[at] may be the start of a record that continues past the end of buf. */
function cutOff(buf: Buffer, at: number): boolean {
  if (buf.length - at < RECORD_HEADER_BYTES) return MAGIC_BYTES.subarray(0, Math.min(4, buf.length - at)).equals(buf.subarray(at, at + 4));
  const bodyLen = headerBodyLen(buf, at);
  return bodyLen >= 0 && at + RECORD_HEADER_BYTES + bodyLen > buf.length;
}

/**
 * Walks the records of buf (whose first byte is at file offset base). A bad record starts a corrupt
 * region: the walk resynchronises at the next offset holding a valid record. When `complete` is
 * false, buf is a chunk of a longer range and a record cut off by its end is left for the next
 * chunk (the walk stops there). Returns the corrupt region count and the offset the walk reached;
 * onRecord gets each valid record (return false to stop before it).
 */
export function walkRecords(buf: Buffer, base: number, complete: boolean, onRecord: (off: number, len: number) => boolean | void): { corrupt: number; end: number } {
  let at = 0, corrupt = 0;
  while (at < buf.length) {
    const len = validRecordAt(buf, at);
    if (len > 0) {
      if (onRecord(base + at, len) === false) return { corrupt, end: base + at };
      at += len;
      continue;
    }
    if (!complete && cutOff(buf, at)) return { corrupt, end: base + at };
    corrupt++;
    let next = at + 1;
    for (;;) {
      next = buf.indexOf(MAGIC_BYTES, next);
      if (next < 0) {
        // Nothing valid in the rest; a chunk keeps its last bytes (a magic may straddle the cut).
        next = complete ? buf.length : Math.max(at + 1, buf.length - 3);
        break;
      }
      if (validRecordAt(buf, next) > 0 || (!complete && cutOff(buf, next))) break;
      next++;
    }
    at = next;
    if (!complete && at >= buf.length - 3 && validRecordAt(buf, at) === 0) return { corrupt, end: base + at };
  }
  return { corrupt, end: base + buf.length };
}

function readRange(path: string, start: number, end: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(end - start);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, start + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

function tryUnlink(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** Suffix of a segment file being deleted in the background. */
const RETIRED_SUFFIX = '.deleted';

/**
 * Deletes a segment file without blocking the event loop: renamed away at once (cheap; from then
 * on neither a reopen nor a restart sees it as a segment), then unlinked in the background, since
 * freeing a multi-megabyte file takes milliseconds. scan() removes what a crash left behind.
 */
function retire(path: string): void {
  const gone = path + RETIRED_SUFFIX;
  try {
    renameSync(path, gone);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  unlink(gone, () => undefined); // a failure leaves a file the next scan deletes
}

export class Spool {
  readonly dir: string;
  private readonly maxBytes: number;
  private readonly segmentBytes: number;
  private readonly fsyncPolicy: FsyncPolicy;
  private readonly memoryBytes: number;
  private readonly log: Logger | undefined;
  private segments: Segment[] = [];
  private totalBytes = 0;
  private unacked = 0;
  private dropped = 0;
  private corruptSkipped = 0;
  private quarantined = 0;
  private quarantinedBytes = 0;
  private lastQuarantineLog = 0;
  private readonly validate: ((id: Buffer, payload: Buffer) => string | null) | undefined;
  private readonly quarantineLimit: number;
  private cursor: Pos;
  private mem: SpoolRecord[] = [];
  private memHead = 0;
  private memBytes = 0;
  private diskCache: { seq: number; start: number; buf: Buffer } | null = null;
  private dirty = false;
  private syncing = false;
  private closed = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly lockPath: string;
  private pidLock: PidLock | null = null;
  /** Called with the seq of every segment dropped for space (the sender forgets its in-flight records). */
  onSegmentDropped: ((seq: number) => void) | null = null;

  private constructor(opts: SpoolOptions) {
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes ?? SPOOL_DEFAULTS.maxBytes;
    this.segmentBytes = opts.segmentBytes ?? Math.min(SPOOL_DEFAULTS.segmentBytes, Math.floor(this.maxBytes / 2));
    this.fsyncPolicy = opts.fsync ?? SPOOL_DEFAULTS.fsync;
    this.memoryBytes = opts.memoryBytes ?? SPOOL_DEFAULTS.memoryBytes;
    this.log = opts.logger;
    this.lockPath = join(this.dir, 'spool.lock');
    this.validate = opts.validate;
    this.quarantineLimit = opts.quarantineBytes ?? SPOOL_DEFAULTS.quarantineBytes;
    if (!['always', 'interval', 'never'].includes(this.fsyncPolicy)) throw new SpoolError(`spool fsync policy "${String(this.fsyncPolicy)}" is not always, interval or never`);
    if (!(this.segmentBytes >= 4096)) throw new SpoolError(`spool segmentBytes ${this.segmentBytes} is below the minimum of 4096`);
    if (!(this.maxBytes >= 2 * this.segmentBytes)) throw new SpoolError(`spool maxBytes ${this.maxBytes} must be at least twice segmentBytes (${this.segmentBytes})`);
    this.cursor = { seq: 0, off: SEGMENT_HEADER_BYTES };
  }

  /** Opens (creating if needed) the spool in opts.dir and scans what an earlier run left. */
  static open(opts: SpoolOptions): Spool {
    const s = new Spool(opts);
    try {
      ensureDir(s.dir);
    } catch (err) {
      throw new SpoolError(`cannot create spool directory ${s.dir}: ${(err as Error).message}`);
    }
    s.lock();
    try {
      s.quarantinedBytes = fileSize(join(s.dir, QUARANTINE_FILE));
      s.scan();
      s.startSegment();
    } catch (err) {
      s.unlock();
      throw err;
    }
    const fsyncEvery = opts.fsyncIntervalMs ?? SPOOL_DEFAULTS.fsyncIntervalMs;
    if (s.fsyncPolicy === 'interval') s.timers.push(setInterval(() => s.syncInBackground(), fsyncEvery).unref());
    s.timers.push(setInterval(() => s.flushAcks(), opts.ackFlushMs ?? SPOOL_DEFAULTS.ackFlushMs).unref());
    return s;
  }

  private lock(): void {
    try {
      this.pidLock = PidLock.acquire(this.lockPath, (pid) => new SpoolError(`spool ${this.dir} is in use by process ${pid} (two exporters must not share a spool)`));
    } catch (err) {
      throw err instanceof SpoolError ? err : new SpoolError((err as Error).message);
    }
  }

  private unlock(): void {
    this.pidLock?.release();
    this.pidLock = null;
  }

  private scan(): void {
    const names = readdirSync(this.dir);
    const segs = names.filter((n) => /^\d{16}\.seg$/.test(n)).map((n) => Number(n.slice(0, 16))).sort((a, b) => a - b);
    const segSet = new Set(segs);
    // An ack log whose segment is gone belonged to a segment already deleted.
    for (const n of names) if (/^\d{16}\.ack$/.test(n) && !segSet.has(Number(n.slice(0, 16)))) tryUnlink(join(this.dir, n));
    for (const n of names) if (n.endsWith(RETIRED_SUFFIX)) tryUnlink(join(this.dir, n));
    for (const seq of segs) {
      const path = join(this.dir, `${segName(seq)}.seg`);
      const ackPath = join(this.dir, `${segName(seq)}.ack`);
      const buf = readFileSync(path);
      const seg: Segment = { seq, path, ackPath, size: buf.length, records: 0, acked: 0, sealed: true, fd: null, ackFd: null, pendingAcks: [], preAcked: null };
      let corrupt = 0;
      const offsets = new Set<number>();
      if (buf.length < SEGMENT_HEADER_BYTES || !buf.subarray(0, SEGMENT_HEADER_BYTES).equals(SEGMENT_HEADER)) {
        // A segment created just before a crash may be shorter than its header: nothing in it.
        if (buf.length > SEGMENT_HEADER_BYTES) {
          this.log?.warn({ segment: path }, 'spool segment has a bad header; reading its records anyway');
        }
      }
      if (buf.length > SEGMENT_HEADER_BYTES) {
        corrupt = walkRecords(buf.subarray(SEGMENT_HEADER_BYTES), SEGMENT_HEADER_BYTES, true, (off) => {
          offsets.add(off);
        }).corrupt;
      }
      seg.records = offsets.size;
      const acked = new Set<number>();
      try {
        const ab = readFileSync(ackPath);
        for (let i = 0; i + ACK_ENTRY_BYTES <= ab.length; i += ACK_ENTRY_BYTES) {
          const off = ab.readUInt32LE(i);
          // A torn or damaged ack entry is ignored: at worst that record is sent again.
          if (crc32(ab.subarray(i, i + 4)) === ab.readUInt32LE(i + 4) && offsets.has(off)) acked.add(off);
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      seg.acked = acked.size;
      seg.preAcked = acked.size > 0 ? acked : null;
      if (corrupt > 0) {
        this.corruptSkipped += corrupt;
        this.log?.warn({ segment: path, corruptRecords: corrupt, validRecords: seg.records }, 'spool segment has corrupt or truncated records; skipping them');
      }
      if (seg.acked === seg.records) {
        tryUnlink(path);
        tryUnlink(ackPath);
        continue;
      }
      this.segments.push(seg);
      this.totalBytes += seg.size;
      this.unacked += seg.records - seg.acked;
    }
    if (this.segments.length > 0) {
      this.cursor = { seq: this.segments[0].seq, off: SEGMENT_HEADER_BYTES };
      this.log?.info({ records: this.unacked, segments: this.segments.length, bytes: this.totalBytes }, 'spool holds unacknowledged events from an earlier run; resending them');
    }
    this.nextSeq = segs.length > 0 ? segs[segs.length - 1] + 1 : 1;
  }

  private nextSeq = 1;
  private chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  private chunkPos = 0;
  /** Where each record of the batch being appended ends in its chunk. */
  private ends: number[] = [];

  /** The newest segment (appends go there). Undefined only after starting a segment failed. */
  private get active(): Segment {
    return this.segments[this.segments.length - 1];
  }

  private startSegment(): void {
    const seq = this.nextSeq++;
    const path = join(this.dir, `${segName(seq)}.seg`);
    const fd = openSync(path, 'wx');
    try {
      writeSync(fd, SEGMENT_HEADER);
    } catch (err) {
      closeSync(fd);
      tryUnlink(path);
      throw err;
    }
    const seg: Segment = { seq, path, ackPath: join(this.dir, `${segName(seq)}.ack`), size: SEGMENT_HEADER_BYTES, records: 0, acked: 0, sealed: false, fd, ackFd: null, pendingAcks: [], preAcked: null };
    if (this.fsyncPolicy === 'always') {
      fdatasyncSync(fd);
      fsyncDir(this.dir);
    }
    this.segments.push(seg);
    this.totalBytes += seg.size;
    // The cursor of an empty spool waits at the start of the new segment.
    if (this.unacked === 0 && this.memLength() === 0) this.cursor = { seq, off: SEGMENT_HEADER_BYTES };
  }

  private sealActive(): void {
    const seg = this.active;
    seg.sealed = true;
    const fd = seg.fd;
    seg.fd = null;
    if (fd !== null) {
      if (this.fsyncPolicy === 'always') {
        closeSync(fd);
      } else if (this.fsyncPolicy === 'interval') {
        // Sync what the interval timer has not yet synced, off the event loop, then close (also
        // off it: if the segment was deleted meanwhile, the close frees its blocks, milliseconds).
        fdatasync(fd, () => close(fd, () => undefined));
      } else {
        closeSync(fd);
      }
    }
    if (seg.acked === seg.records) this.deleteSegment(seg);
  }

  private memLength(): number {
    return this.mem.length - this.memHead;
  }

  /**
   * Appends events (one write per segment touched). When it returns the records are in the spool
   * file, and on disk if the policy is "always". Drops the oldest segments when the size bound
   * would be passed.
   */
  append(items: readonly AppendItem[]): void {
    if (this.closed) throw new SpoolError('spool is closed');
    for (const it of items) {
      if (it.id.length !== 16) throw new SpoolError(`event id must be 16 bytes, got ${it.id.length}`);
      if (it.payload.length + 16 > MAX_RECORD_BODY) throw new SpoolError(`event of ${it.payload.length} bytes is larger than the spool's record limit (${MAX_RECORD_BODY})`);
    }
    this.appendWith(items.length, (k, buf, at, end) => {
      const { id, payload } = items[k];
      if (16 + payload.length > end - at) return -(16 + payload.length);
      buf.set(id, at);
      buf.set(payload, at + 16);
      return at + 16 + payload.length;
    });
  }

  /**
   * Like append, for `count` records whose bodies `write` puts straight into spool memory. If
   * `write` throws (or a body is too large), nothing of the batch is appended.
   */
  appendWith(count: number, write: BodyWriter): void {
    if (this.closed) throw new SpoolError('spool is closed');
    if (count === 0) return;
    // The records, back to back as in the file, in the current chunk (or a new one if it fills up:
    // the batch so far moves along so that it stays in one piece).
    let buf = this.chunk, start = this.chunkPos, at = start;
    const ends = this.ends;
    ends.length = 0;
    for (let k = 0; k < count; k++) {
      let end = write(k, buf, at + RECORD_HEADER_BYTES, buf.length);
      if (end === SKIP_RECORD) continue;
      if (end < 0) {
        const bodyLen = -end;
        if (bodyLen > MAX_RECORD_BODY) throw new SpoolError(`event of ${bodyLen - 16} bytes is larger than the spool's record limit (${MAX_RECORD_BODY})`);
        const nb = Buffer.allocUnsafe(Math.max(CHUNK_BYTES, 2 * (at - start + RECORD_HEADER_BYTES + bodyLen)));
        buf.copy(nb, 0, start, at);
        for (let m = 0; m < ends.length; m++) ends[m] -= start;
        buf = nb;
        at -= start;
        start = 0;
        end = write(k, buf, at + RECORD_HEADER_BYTES, buf.length);
        if (end === SKIP_RECORD) continue;
        if (end < 0) throw new SpoolError(`record body of ${-end} bytes did not fit the room made for ${bodyLen}`);
      }
      const bodyLen = end - at - RECORD_HEADER_BYTES;
      if (bodyLen > MAX_RECORD_BODY) throw new SpoolError(`event of ${bodyLen - 16} bytes is larger than the spool's record limit (${MAX_RECORD_BODY})`);
      if (bodyLen < 16) throw new SpoolError(`record body of ${bodyLen} bytes has no 16-byte event id`);
      buf.writeUInt32LE(RECORD_MAGIC, at);
      buf.writeUInt32LE(bodyLen, at + 4);
      buf.writeUInt32LE(crc32(new Uint8Array(buf.buffer, buf.byteOffset + at + RECORD_HEADER_BYTES, bodyLen)), at + 8);
      ends.push(end);
      at = end;
    }
    this.chunk = buf;
    this.chunkPos = at;

    const total = ends.length;
    let k = 0, pos = start;
    while (k < total) {
      const act = this.segments.length > 0 ? this.active : null;
      if (act === null || act.size >= this.segmentBytes || act.sealed) {
        if (act !== null && !act.sealed) this.sealActive();
        try {
          this.startSegment();
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          throw new SpoolError(`cannot start a new spool segment in ${this.dir}: ${e.code === 'ENOSPC' ? 'the disk is full (ENOSPC)' : e.message}; ${total - k} event(s) of this batch were not spooled`);
        }
      }
      // Records for the active segment up to its size limit: one write.
      const seg = this.active;
      let j = k, to = pos;
      while (j < total && (j === k || seg.size + (ends[j] - pos) <= this.segmentBytes)) to = ends[j++];
      const bytes = to - pos;
      this.makeRoom(bytes);
      try {
        let written = 0;
        while (written < bytes) written += writeSync(seg.fd as number, buf, pos + written, bytes - written, seg.size + written);
        if (this.fsyncPolicy === 'always') fdatasyncSync(seg.fd as number);
        else this.dirty = true;
      } catch (err) {
        // The records from k on are not in the spool (a partial write is overwritten by the next
        // append, which writes at seg.size); those before k are.
        const e = err as NodeJS.ErrnoException;
        throw new SpoolError(`cannot append to spool segment ${seg.path}: ${e.code === 'ENOSPC' ? 'the disk is full (ENOSPC)' : e.message}; ${total - k} event(s) of this batch were not spooled`);
      }
      for (let m = k, off = seg.size; m < j; m++) {
        this.remember(buf, pos, ends[m], seg.seq, off);
        off += ends[m] - pos;
        pos = ends[m];
      }
      seg.size += bytes;
      seg.records += j - k;
      this.totalBytes += bytes;
      this.unacked += j - k;
      k = j;
    }
  }

  /** Keeps the record at buf[at, end) for sending, unless the memory cap is reached. */
  private remember(buf: Buffer, at: number, end: number, seq: number, off: number): void {
    const size = end - at - RECORD_HEADER_BYTES - 16 + RECORD_MEMORY_OVERHEAD;
    if (this.memBytes + size > this.memoryBytes) {
      // The sender is behind: stop caching; everything from the cursor on is read back from disk.
      this.mem = [];
      this.memHead = 0;
      this.memBytes = 0;
      return;
    }
    if (this.memLength() === 0 && this.memHead > 0) {
      this.mem = [];
      this.memHead = 0;
    }
    const idAt = at + RECORD_HEADER_BYTES;
    this.mem.push({ buf, idAt, payload: buf.subarray(idAt + 16, end), seq, off });
    this.memBytes += size;
  }

  /** Drops the oldest sealed segments until `incoming` more bytes fit in maxBytes. */
  private makeRoom(incoming: number): void {
    let droppedNow = 0;
    while (this.totalBytes + incoming > this.maxBytes && this.segments.length > 1 && this.segments[0].sealed) {
      const seg = this.segments[0];
      const lost = seg.records - seg.acked;
      droppedNow += lost;
      this.dropped += lost;
      this.unacked -= lost;
      this.deleteSegment(seg);
      this.onSegmentDropped?.(seg.seq);
    }
    if (droppedNow > 0) {
      this.log?.warn({ dropped: droppedNow, droppedTotal: this.dropped, maxBytes: this.maxBytes }, 'spool full: dropped the oldest unacknowledged events');
    }
  }

  private deleteSegment(seg: Segment): void {
    const idx = this.segments.indexOf(seg);
    if (idx < 0) return;
    this.segments.splice(idx, 1);
    this.totalBytes -= seg.size;
    if (seg.ackFd !== null) closeSync(seg.ackFd);
    seg.ackFd = null;
    seg.pendingAcks = [];
    if (seg.fd !== null) closeSync(seg.fd);
    seg.fd = null;
    retire(seg.path);
    tryUnlink(seg.ackPath);
    if (this.diskCache?.seq === seg.seq) this.diskCache = null;
    // Records of the segment still waiting in memory are gone with it.
    while (this.memLength() > 0 && this.mem[this.memHead].seq === seg.seq) {
      this.memBytes -= this.mem[this.memHead].payload.length + RECORD_MEMORY_OVERHEAD;
      this.memHead++;
    }
    if (this.cursor.seq === seg.seq) {
      const later = this.segments.find((s) => s.seq > seg.seq);
      if (later) this.cursor = { seq: later.seq, off: SEGMENT_HEADER_BYTES };
    }
  }

  private findSegment(seq: number): Segment | undefined {
    // Segments are few (maxBytes / segmentBytes); the oldest ones are asked for most.
    for (const s of this.segments) if (s.seq === seq) return s;
    return undefined;
  }

  /** Up to max records not yet handed out, oldest first. Each record is handed out once per open. */
  next(max: number): SpoolRecord[] {
    const out: SpoolRecord[] = [];
    while (out.length < max) {
      if (this.memLength() > 0) {
        const head = this.mem[this.memHead];
        if (head.seq === this.cursor.seq && head.off === this.cursor.off) {
          this.memHead++;
          this.memBytes -= head.payload.length + RECORD_MEMORY_OVERHEAD;
          out.push(head);
          this.cursor.off = head.off + RECORD_HEADER_BYTES + 16 + head.payload.length; // same seq: head is at the cursor
          continue;
        }
      }
      const seg = this.findSegment(this.cursor.seq);
      if (!seg) {
        const later = this.segments.find((s) => s.seq > this.cursor.seq);
        if (!later) break;
        this.cursor = { seq: later.seq, off: SEGMENT_HEADER_BYTES };
        continue;
      }
      const memHead = this.memLength() > 0 ? this.mem[this.memHead] : null;
      const limit = memHead && memHead.seq === seg.seq ? memHead.off : seg.size;
      if (this.cursor.off >= limit) {
        if (!seg.sealed || (memHead && memHead.seq === seg.seq)) break; // caught up with the writer
        const later = this.segments.find((s) => s.seq > seg.seq);
        if (!later) break;
        this.cursor = { seq: later.seq, off: SEGMENT_HEADER_BYTES };
        seg.preAcked = null; // the reader is past it: only acks still matter
        continue;
      }
      this.readFromDisk(seg, limit, max - out.length, out);
    }
    return out;
  }

  private readFromDisk(seg: Segment, limit: number, max: number, out: SpoolRecord[]): void {
    let c = this.diskCache;
    if (!c || c.seq !== seg.seq || this.cursor.off < c.start || this.cursor.off >= c.start + c.buf.length) {
      // Read a chunk from the cursor (memory stays bounded however far behind the sender is).
      let want = Math.min(limit, this.cursor.off + READ_CHUNK_BYTES);
      let buf = readRange(seg.path, this.cursor.off, want);
      const bodyLen = headerBodyLen(buf, 0);
      if (bodyLen >= 0 && RECORD_HEADER_BYTES + bodyLen > buf.length && this.cursor.off + RECORD_HEADER_BYTES + bodyLen <= limit) {
        want = this.cursor.off + RECORD_HEADER_BYTES + bodyLen; // one record larger than a chunk
        buf = readRange(seg.path, this.cursor.off, want);
      }
      c = { seq: seg.seq, start: this.cursor.off, buf };
      this.diskCache = c;
    }
    const chunk = c;
    const viewEnd = Math.min(chunk.buf.length, limit - chunk.start);
    const complete = chunk.start + viewEnd >= limit;
    const view = chunk.buf.subarray(this.cursor.off - chunk.start, viewEnd);
    let taken = 0;
    const bad: number[] = [];
    const { end } = walkRecords(view, this.cursor.off, complete, (off, len) => {
      if (taken >= max) return false;
      if (seg.preAcked?.has(off)) return;
      const at = off - chunk.start;
      const validate = this.validate;
      if (validate !== undefined) {
        const why = validate(chunk.buf.subarray(at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + 16), chunk.buf.subarray(at + RECORD_HEADER_BYTES + 16, at + len));
        if (why !== null) {
          this.quarantine(seg, off, chunk.buf.subarray(at, at + len), why);
          bad.push(off);
          return;
        }
      }
      // A copy: the chunk is dropped long before an in-flight record is acked.
      const body = Buffer.from(chunk.buf.subarray(at + RECORD_HEADER_BYTES, at + len));
      out.push({ buf: body, idAt: 0, payload: body.subarray(16), seq: seg.seq, off });
      taken++;
    });
    if (end > this.cursor.off) {
      this.cursor = { seq: seg.seq, off: end };
    } else if (taken === 0 && bad.length === 0) {
      if (chunk.start === this.cursor.off) {
        // A fresh read from the cursor made no progress (cannot happen with a sane file): skip to
        // the limit rather than spin.
        this.cursor = { seq: seg.seq, off: limit };
      } else {
        // The cached chunk ends inside the record at the cursor: read again from the cursor.
        this.diskCache = null;
        return;
      }
    }
    if (this.cursor.off >= chunk.start + chunk.buf.length) this.diskCache = null;
    // Acked after the walk: an ack may delete the segment and the chunk with it.
    for (const off of bad) this.ack(seg.seq, off);
  }

  /** Keeps a record that failed validation in quarantine.records (bounded), counts it and says why. */
  private quarantine(seg: Segment, off: number, record: Buffer, why: string): void {
    this.quarantined++;
    let kept = false;
    if (this.quarantinedBytes + record.length <= this.quarantineLimit) {
      try {
        const path = join(this.dir, QUARANTINE_FILE);
        const fd = openSync(path, 'a');
        try {
          writeSync(fd, record);
        } finally {
          closeSync(fd);
        }
        this.quarantinedBytes += record.length;
        kept = true;
      } catch (err) {
        this.log?.error({ err: (err as Error).message }, 'cannot write the spool quarantine file');
      }
    }
    const now = Date.now();
    if (now - this.lastQuarantineLog >= 1000) {
      this.lastQuarantineLog = now;
      this.log?.error({ segment: seg.path, offset: off, why, kept: kept ? join(this.dir, QUARANTINE_FILE) : 'no (quarantine full)', quarantinedTotal: this.quarantined },
        'spool record is not a valid event: quarantined, not sent (the events behind it go on)');
    }
  }

  /** Marks a handed-out record acknowledged. Unknown (already dropped) records are ignored. */
  ack(seq: number, off: number): void {
    const seg = this.findSegment(seq);
    if (!seg) return;
    seg.acked++;
    this.unacked--;
    if (seg.sealed && seg.acked >= seg.records) {
      this.deleteSegment(seg);
      return;
    }
    seg.pendingAcks.push(off);
  }

  /** Writes buffered ack log entries (no fsync: losing some only causes duplicates). */
  flushAcks(): void {
    for (const seg of this.segments) {
      if (seg.pendingAcks.length === 0) continue;
      const buf = Buffer.allocUnsafe(seg.pendingAcks.length * ACK_ENTRY_BYTES);
      seg.pendingAcks.forEach((off, i) => {
        buf.writeUInt32LE(off, i * ACK_ENTRY_BYTES);
        buf.writeUInt32LE(crc32(buf.subarray(i * ACK_ENTRY_BYTES, i * ACK_ENTRY_BYTES + 4)), i * ACK_ENTRY_BYTES + 4);
      });
      seg.pendingAcks = [];
      if (seg.ackFd === null) seg.ackFd = openSync(seg.ackPath, 'a');
      writeSync(seg.ackFd, buf);
    }
  }

  private syncInBackground(): void {
    if (!this.dirty || this.syncing || this.closed) return;
    const seg = this.active;
    if (!seg || seg.fd === null) return;
    this.dirty = false;
    this.syncing = true;
    fdatasync(seg.fd, (err) => {
      this.syncing = false;
      if (err) this.log?.error({ err: err.message, segment: seg.path }, 'spool fdatasync failed');
    });
  }

  /** Forces appended records to disk now (whatever the policy) and writes pending acks. */
  sync(): void {
    this.flushAcks();
    const seg = this.active;
    if (seg && seg.fd !== null) fdatasyncSync(seg.fd);
    this.dirty = false;
  }

  /** Records not yet acknowledged (cheap; stats() has the rest). */
  get unackedCount(): number {
    return this.unacked;
  }

  stats(): SpoolStats {
    return { bytes: this.totalBytes, records: this.unacked, dropped: this.dropped, corruptSkipped: this.corruptSkipped, quarantined: this.quarantined, segments: this.segments.length };
  }

  /** Records handed out and not yet acked are kept: the next open sends them again. */
  close(): void {
    if (this.closed) return;
    for (const t of this.timers) clearInterval(t);
    this.flushAcks();
    for (const seg of this.segments) {
      if (seg.fd !== null) {
        if (this.fsyncPolicy !== 'never') fdatasyncSync(seg.fd);
        closeSync(seg.fd);
        seg.fd = null;
      }
      if (seg.ackFd !== null) closeSync(seg.ackFd);
      seg.ackFd = null;
    }
    // An empty or fully acked active segment is not worth keeping.
    const last = this.active;
    if (last && last.acked === last.records) {
      tryUnlink(last.path);
      tryUnlink(last.ackPath);
    }
    this.closed = true;
    this.unlock();
  }
}
