// The embedded collector: a receiver of /flow.FlowService/Events (the NetBird flow contract) that
// writes each event as one JSON line, durably, and only then acks it.
//
// It speaks gRPC directly over node:http2 rather than through grpc-js's server, for one reason:
// acks of a whole group commit go out as one HTTP/2 write (many length-prefixed gRPC messages in
// one DATA frame), where grpc-js writes one frame per message. On the wire it is ordinary gRPC:
// response headers, length-prefixed protobuf messages, grpc-status trailers.
import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from 'pino';
import { encodeAck, INITIATOR_ACK } from '../wire/codec';
import { EVENTS_METHOD } from '../wire/proto';
import { checkScanned, EVENT_TYPES, scanFlowEvent, ScannedEvent } from '../wire/reader';
/** NetBird v0.75 clients send window aggregates (TYPE_UNKNOWN): stored as such (docs/export.md). */
const AGGREGATES = { aggregates: true } as const;
import { ByteBuffer } from '../util/byte-buffer';
import { encodeGrpcMessage, frameMessage, GrpcStatus } from '../wire/grpc';
import { writeJsonLine } from './event-json';
import { NativeJson } from './native-json';
import { CommitGuard, rebuildSeenSet, SeenSet } from './dedup';
import { JSONL_DEFAULTS, JsonlWriter, listEventFiles } from '../output/jsonl-writer';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { messageHeaders, subjectOf } from '../wire/jetstream';
import { bytesToUuid } from '../wire/codec';

export interface CollectorOptions {
  /** HOST:PORT to listen on (PORT 0 picks a free port). */
  listen: string;
  /** Output directory (events.jsonl and rotated files); not with relay. */
  out?: string;
  /**
   * Relay instead of writing: every event goes to the JetStream stream (Nats-Msg-Id = event id)
   * and is acked to its sender only on the PubAck (a duplicate PubAck counts as stored).
   */
  relay?: RelayOptions;
  /** Required bearer token; undefined or '' accepts any caller. */
  token?: string;
  /** PEM server certificate and key: TLS when given. */
  tlsCert?: string;
  tlsKey?: string;
  /** PEM CA bundle: client certificates signed by it are required (mTLS). */
  clientCa?: string;
  rotateBytes?: number;
  maxFiles?: number;
  /** Event ids remembered for de-duplication (across restarts too). Default 500,000. */
  dedupWindow?: number;
  /** Largest accepted gRPC message. Default 4 MiB (grpc's default). */
  maxMessageBytes?: number;
  /** fdatasync every batch (default true). */
  fsync?: boolean;
  /** A connection must open an authenticated Events stream within this time (TLS handshake included). */
  handshakeTimeoutMs?: number;
  /** A connection with no open Events stream for this long is closed. */
  idleTimeoutMs?: number;
  /** Connections that have not yet opened an authenticated stream, at most; more are refused. */
  maxUnauthenticated?: number;
  /** Open connections at most; more are refused. */
  maxConnections?: number;
  /** Concurrent streams per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxStreamsPerConnection?: number;
  /** Open Events streams in all, at most; more are refused with RESOURCE_EXHAUSTED. */
  maxStreams?: number;
  logger: Logger;
}

/**
 * The collector's defaults, one place (the CLI's help and docs/export.md name these). The limits
 * keep a flood of broken or idle clients from using up the collector's file descriptors: an
 * exporter holds one connection with one stream and authenticates at once.
 */
export const COLLECTOR_DEFAULTS = {
  listen: '127.0.0.1:50051',
  rotateBytes: JSONL_DEFAULTS.rotateBytes,
  maxFiles: JSONL_DEFAULTS.maxFiles,
  dedupWindow: 500_000,
  maxMessageBytes: 4 * 1024 * 1024,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  maxUnauthenticated: 64,
  maxConnections: 1024,
  maxStreamsPerConnection: 100,
  // Each open stream costs ~9 KB of native HTTP/2 state that glibc keeps after it closes
  // (measured: 5,000 idle streams, +45 MB RSS): an exporter needs one.
  maxStreams: 1024,
  /** Relay: a publish not acked within this time fails (its sender resends). */
  relayTimeoutMs: 10_000,
} as const;

export interface RelayOptions {
  /** A connected client (the caller owns it). */
  nc: NatsConnection;
  /** Subjects are <prefix>.<reporter>.<type> (the contract's subjectOf). */
  subjectPrefix: string;
  /** A publish not acked within this time fails; its sender is not acked and resends. */
  timeoutMs?: number;
  /** Called with each PubAck's latency in seconds (the metrics' histogram). */
  onPublished?: (seconds: number) => void;
}

export interface CollectorStats {
  streams: number;
  openStreams: number;
  received: number;
  written: number;
  duplicates: number;
  malformed: number;
  unauthenticated: number;
  /** Connections open now, and those of them not yet authenticated. */
  connections: number;
  unauthenticatedConnections: number;
  /** Connections refused at accept (maxConnections or maxUnauthenticated reached). */
  refusedConnections: number;
  /** Streams refused because maxStreams were open. */
  refusedStreams: number;
  /** Connections closed for not authenticating in time, or for being idle. */
  handshakeTimeouts: number;
  idleClosed: number;
  /** Streams ended because the client ended them in the middle of a message. */
  truncated: number;
  /** Output commits that failed (their events were not acked; senders resend them). */
  commitFailures: number;
  /** Relay: publishes that failed or timed out (their events were not acked; senders resend them). */
  publishFailures: number;
}

/** The framed ack of the event id src[start, end), appended to out. */
function appendAck(out: ByteBuffer, src: Buffer, start: number, end: number): void {
  const n = end - start;
  if (n >= 128) {
    out.bytes(frameMessage(encodeAck(src.subarray(start, end))));
    return;
  }
  // FlowEventAck{event_id} is 0x0a, length, bytes: framed without building it first.
  out.ensure(7 + n);
  const b = out.buf;
  let at = out.len;
  b[at++] = 0;
  b.writeUInt32BE(2 + n, at);
  at += 4;
  b[at++] = 0x0a;
  b[at++] = n;
  out.len = at;
  out.bytes(src, start, end);
}

const EMPTY = Buffer.alloc(0);

/** Scratch for the message being handled (every message is handled to the end synchronously). */
const scanned = new ScannedEvent();

export class CollectorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CollectorError';
  }
}

/** One accepted TCP connection (the session on it, once there is one). */
interface Conn {
  socket: Socket;
  session: http2.ServerHttp2Session | null;
  authenticated: boolean;
  streams: number;
  /** The handshake deadline, then (with no stream open) the idle timer. */
  timer: NodeJS.Timeout | null;
  peer: string;
}

/** The same key for the raw socket and the (TLS) socket of its session. */
const connKey = (s: { remoteAddress?: string; remotePort?: number }): string => `${s.remoteAddress ?? ''}|${s.remotePort ?? ''}`;

function positiveInt(n: number, what: string): number {
  if (!(Number.isInteger(n) && n >= 1)) throw new CollectorError(`${what} must be a positive integer, got ${n}`);
  return n;
}

export function parseListen(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]*):(\d+)$/.exec(text);
  if (!m) throw new CollectorError(`listen address "${text}" is not HOST:PORT (e.g. 127.0.0.1:50051 or [::1]:50051)`);
  const port = Number(m[2]);
  if (port > 65535) throw new CollectorError(`listen port ${port} is out of range 0..65535`);
  return { host: m[1] || '0.0.0.0', port };
}

/** Pauses reading a stream while this many of its events wait for their commit. */
const MAX_PENDING_PER_STREAM = 65_536;
/** Relay: pauses reading a stream while this many of its events wait for their PubAck. */
const MAX_RELAY_IN_FLIGHT = 4_096;

/** The relay's client: where and how events are published. */
interface Relay {
  js: JetStreamClient;
  prefix: string;
  timeoutMs: number;
  onPublished: ((seconds: number) => void) | null;
}

class EventStream {
  /**
   * The start of a message that a chunk ended in the middle of, at asm[0, asmLen). Reused: a new
   * buffer for each such chunk was ~100 MB/s of short-lived external memory at full speed.
   */
  private asm = EMPTY;
  private asmLen = 0;
  /** Framed acks waiting for their batch's commit, by batch id, and how many each holds. */
  private readonly acks = new Map<number, { frames: ByteBuffer; count: number }>();
  private pending = 0;
  private paused = false;
  private clientDone = false;
  private finished = false;
  private status: { code: number; message: string } = { code: GrpcStatus.OK, message: '' };

  constructor(private readonly c: Collector, private readonly s: http2.ServerHttp2Stream, private readonly peer: string) {
    s.on('wantTrailers', () => {
      const t: http2.OutgoingHttpHeaders = { 'grpc-status': String(this.status.code) };
      if (this.status.message) t['grpc-message'] = encodeGrpcMessage(this.status.message);
      try {
        s.sendTrailers(t);
      } catch {
        // The peer is gone.
      }
    });
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('end', () => {
      this.clientDone = true;
      if (this.asmLen > 0) {
        this.c.counters.truncated++;
        this.fail(GrpcStatus.INVALID_ARGUMENT, `stream ended inside a message (${this.asmLen} bytes of it received)`);
        return;
      }
      this.maybeFinish();
    });
    s.on('drain', () => this.updateFlow());
    s.on('error', (err) => this.c.log.debug({ peer, err: err.message }, 'stream error'));
    s.on('close', () => {
      this.finished = true;
      this.c.streamClosed();
    });
  }

  private onData(chunk: Buffer): void {
    if (this.finished) return;
    let buf = chunk;
    if (this.asmLen > 0) {
      this.keep(this.asmLen + chunk.length);
      chunk.copy(this.asm, this.asmLen);
      buf = this.asm.subarray(0, this.asmLen + chunk.length);
    }
    // Messages are views into buf, used only until this returns (what is kept is copied).
    let off = 0;
    while (buf.length - off >= 5) {
      const compressed = buf[off];
      const len = buf.readUInt32BE(off + 1);
      if (len > this.c.maxMessageBytes) {
        return this.fail(GrpcStatus.RESOURCE_EXHAUSTED, `message of ${len} bytes is larger than the limit of ${this.c.maxMessageBytes}`);
      }
      if (buf.length - off - 5 < len) break;
      if (compressed !== 0) return this.fail(GrpcStatus.UNIMPLEMENTED, 'compressed messages are not supported (use identity encoding)');
      const start = off + 5;
      off += 5 + len;
      if (!this.onMessage(buf, start, off)) return;
    }
    const rest = buf.length - off;
    if (rest > 0 && buf === chunk) {
      this.keep(rest);
      chunk.copy(this.asm, 0, off);
    } else if (rest > 0) {
      this.asm.copyWithin(0, off, buf.length);
    }
    this.asmLen = rest;
  }

  /** Room for n bytes in asm, keeping asm[0, asmLen). Allocated on first use: an idle stream holds none. */
  private keep(n: number): void {
    if (n <= this.asm.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(n, this.asm.length * 2, 64 * 1024));
    this.asm.copy(bigger, 0, 0, this.asmLen);
    this.asm = bigger;
  }

  /** Handles the FlowEvent message buf[start, end); false when the stream was failed. */
  private onMessage(buf: Buffer, start: number, end: number): boolean {
    if (this.c.relay !== null) return this.onMessageRelay(buf.subarray(start, end));
    const native = this.c.native;
    if (native !== null) {
      // The fast path: a plain valid event straight to its line, in place in the batch buffer.
      const n = native.write(buf, start, end, this.c.writer.lineBuffer, Date.now());
      if (n >= 0) {
        this.c.counters.received++;
        const id = native.eventIdAt;
        const batch = this.c.writer.batchId;
        if (this.c.seen.add(buf, id, batch)) {
          this.c.writer.commitWritten(n);
          this.c.counters.written++;
          this.c.guard(batch);
          this.queueAck(batch, buf, id, id + 16);
        } else {
          this.c.counters.duplicates++;
          this.queueAck(this.c.ackBatchOfDuplicate(), buf, id, id + 16);
        }
        return true;
      }
    }
    return this.onMessageJs(buf.subarray(start, end));
  }

  /**
   * Scans msg into `scanned`. Returns what the message handler returns when that settles it (a
   * malformed message fails the stream, the initiator handshake is answered), or null for an
   * event to handle (counted as received).
   */
  private scan(msg: Buffer): boolean | null {
    try {
      scanFlowEvent(msg, scanned);
    } catch (err) {
      this.c.counters.malformed++;
      this.fail(GrpcStatus.INVALID_ARGUMENT, `cannot parse a flow.FlowEvent: ${(err as Error).message}`);
      return false;
    }
    if (scanned.initiator) {
      this.s.write(frameMessage(INITIATOR_ACK));
      return true;
    }
    this.c.counters.received++;
    return null;
  }

  /** The reference route: every message the fast path declines (or all, without the addon). */
  private onMessageJs(msg: Buffer): boolean {
    const ev = scanned;
    const r = this.scan(msg);
    if (r !== null) return r;
    const id = msg.subarray(ev.eventId.s, ev.eventId.e);
    const error = checkScanned(ev, AGGREGATES);
    let batch: number;
    if (error !== null) {
      // Acked anyway: one event we cannot represent must not block its sender forever.
      this.c.counters.malformed++;
      this.c.warnMalformed(this.peer, error);
      batch = this.c.writer.batchId;
    } else if (!this.c.seen.add(id, 0, this.c.writer.batchId)) {
      this.c.counters.duplicates++;
      batch = this.c.ackBatchOfDuplicate();
    } else {
      try {
        batch = this.c.writer.appendWith(this.c.lineOf);
      } catch (err) {
        // Nothing was queued for this id: it must not stay in the set.
        this.c.seen.forgetNewest();
        this.fail(GrpcStatus.INTERNAL, `cannot write the event as JSON: ${(err as Error).message}`);
        return false;
      }
      this.c.counters.written++;
      this.c.guard(batch);
    }
    this.queueAck(batch, msg, ev.eventId.s, ev.eventId.e);
    return true;
  }

  /** Acks of PubAcks that arrived in this tick, written together (one DATA frame). */
  private relayAcks: ByteBuffer | null = null;

  /** Relay: publish the event, ack it to the sender on its PubAck. */
  private onMessageRelay(msg: Buffer): boolean {
    const ev = scanned;
    const r = this.scan(msg);
    if (r !== null) return r;
    // The message is a view of a buffer reused after this returns: keep a copy until the PubAck.
    const payload = Buffer.from(msg);
    const idStart = ev.eventId.s, idEnd = ev.eventId.e;
    const error = checkScanned(ev, AGGREGATES);
    if (error !== null) {
      // Acked anyway, as the writing collector does: it cannot be stored anywhere.
      this.c.counters.malformed++;
      this.c.warnMalformed(this.peer, error);
      this.relayAck(payload, idStart, idEnd);
      return true;
    }
    const relay = this.c.relay as Relay;
    const subject = subjectOf(relay.prefix, payload.toString('utf8', ev.reporterId.s, ev.reporterId.e), EVENT_TYPES[ev.type]);
    const msgId = bytesToUuid(payload.subarray(idStart, idEnd), 'event_id');
    this.pending++;
    if (this.pending >= MAX_RELAY_IN_FLIGHT) this.updateFlow();
    const t0 = relay.onPublished === null ? 0 : performance.now();
    relay.js.publish(subject, payload, { headers: messageHeaders(msgId), timeout: relay.timeoutMs }).then(
      (ack) => {
        this.pending--;
        if (relay.onPublished !== null) relay.onPublished((performance.now() - t0) / 1000);
        if (ack.duplicate) this.c.counters.duplicates++;
        else this.c.counters.written++;
        this.relayAck(payload, idStart, idEnd);
      },
      (err: Error) => {
        this.pending--;
        this.c.counters.publishFailures++;
        // The sender keeps the event and sends it again on a new stream.
        this.c.warnRelay(this.peer, err);
        this.fail(GrpcStatus.UNAVAILABLE, `collector cannot store events in JetStream: ${err.message}`);
      },
    );
    return true;
  }

  private relayAck(src: Buffer, start: number, end: number): void {
    if (this.finished) return;
    if (this.relayAcks === null) {
      this.relayAcks = new ByteBuffer(4096);
      setImmediate(() => {
        const frames = this.relayAcks;
        this.relayAcks = null;
        if (frames === null || this.finished) return;
        this.s.write(frames.view());
        this.updateFlow();
        this.maybeFinish();
      });
    }
    appendAck(this.relayAcks, src, start, end);
  }

  /** The ack of event id src[start, end) goes out when batch is committed. */
  private queueAck(batch: number, src: Buffer, start: number, end: number): void {
    let pending = this.acks.get(batch);
    if (!pending) {
      pending = { frames: new ByteBuffer(4096), count: 0 };
      this.acks.set(batch, pending);
      this.c.writer.afterBatch(batch, (err) => this.onCommitted(batch, err));
    }
    appendAck(pending.frames, src, start, end);
    pending.count++;
    this.pending++;
    if (this.pending >= MAX_PENDING_PER_STREAM) this.updateFlow();
  }

  private onCommitted(batch: number, err: Error | null): void {
    const acks = this.acks.get(batch);
    this.acks.delete(batch);
    if (!acks) return;
    this.pending -= acks.count;
    if (this.finished) return;
    if (err) {
      // The senders keep the events and send them again on a new stream.
      this.fail(GrpcStatus.UNAVAILABLE, `collector cannot store events: ${err.message}`);
      return;
    }
    // All acks of the batch in one write: one DATA frame instead of one per event.
    this.s.write(acks.frames.view());
    this.updateFlow();
    this.maybeFinish();
  }

  /** Stops reading while too many acks wait for commit or the peer does not read its acks. */
  private updateFlow(): void {
    if (this.finished) return;
    const limit = this.c.relay !== null ? MAX_RELAY_IN_FLIGHT : MAX_PENDING_PER_STREAM;
    const shouldPause = this.pending >= limit || this.s.writableNeedDrain;
    if (shouldPause && !this.paused) {
      this.paused = true;
      this.s.pause();
    } else if (!shouldPause && this.paused) {
      this.paused = false;
      this.s.resume();
    }
  }

  private maybeFinish(): void {
    if (this.clientDone && this.pending === 0 && this.relayAcks === null && !this.finished) {
      this.finished = true;
      this.s.end();
    }
  }

  fail(code: number, message: string): void {
    if (this.finished) return;
    this.finished = true;
    this.status = { code, message };
    this.c.log.warn({ peer: this.peer, code, message }, 'ending stream with an error');
    this.s.end();
  }

  /** Ends the stream (server shutdown): the sender resends what is unacked elsewhere or later. */
  shutdown(): void {
    this.fail(GrpcStatus.UNAVAILABLE, 'collector is shutting down');
  }
}

export class Collector {
  readonly log: Logger;
  readonly maxMessageBytes: number;
  private readonly output: JsonlWriter | null;
  /** The JetStream relay, or null (then events are written as JSON lines). */
  readonly relay: Relay | null;
  /** Writes the JSON line of the event in `scanned` (one function, not a closure per event). */
  readonly lineOf = (out: ByteBuffer): void => writeJsonLine(out, scanned, Date.now());
  readonly seen: SeenSet;
  /** The C++ JSON fast path, or null (then every line is written in JavaScript). */
  readonly native: NativeJson | null;
  readonly counters = { streams: 0, received: 0, written: 0, duplicates: 0, malformed: 0, unauthenticated: 0, commitFailures: 0, publishFailures: 0, refusedConnections: 0, refusedStreams: 0, handshakeTimeouts: 0, idleClosed: 0, truncated: 0 };
  private readonly server: http2.Http2Server | http2.Http2SecureServer;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly streams = new Set<EventStream>();
  private readonly tokenBuf: Buffer | null;
  private lastMalformedLog = 0;
  private openStreams = 0;
  private readonly limits: { handshakeTimeoutMs: number; idleTimeoutMs: number; maxUnauthenticated: number; maxConnections: number; maxStreams: number };
  private readonly connections = new Map<string, Conn>();
  private unauthenticatedConns = 0;
  private readonly lastWarn = new Map<string, number>();
  address = '';

  private constructor(opts: CollectorOptions) {
    this.log = opts.logger;
    const d = COLLECTOR_DEFAULTS;
    this.maxMessageBytes = opts.maxMessageBytes ?? d.maxMessageBytes;
    this.limits = {
      handshakeTimeoutMs: positiveInt(opts.handshakeTimeoutMs ?? d.handshakeTimeoutMs, 'handshake timeout'),
      idleTimeoutMs: positiveInt(opts.idleTimeoutMs ?? d.idleTimeoutMs, 'idle timeout'),
      maxUnauthenticated: positiveInt(opts.maxUnauthenticated ?? d.maxUnauthenticated, 'max unauthenticated connections'),
      maxConnections: positiveInt(opts.maxConnections ?? d.maxConnections, 'max connections'),
      maxStreams: positiveInt(opts.maxStreams ?? d.maxStreams, 'max streams'),
    };
    this.tokenBuf = opts.token ? Buffer.from(`Bearer ${opts.token}`) : null;
    if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw new CollectorError('TLS needs both a certificate and a key (--tls-cert and --tls-key)');
    if (opts.clientCa && !opts.tlsCert) throw new CollectorError('client certificate checking (--client-ca) needs TLS (--tls-cert and --tls-key)');
    if ((opts.out === undefined) === (opts.relay === undefined)) throw new CollectorError('give an output directory (--out) or a JetStream relay (--jetstream), one of the two');
    this.relay = opts.relay ? { js: jetstream(opts.relay.nc), prefix: opts.relay.subjectPrefix, timeoutMs: opts.relay.timeoutMs ?? COLLECTOR_DEFAULTS.relayTimeoutMs, onPublished: opts.relay.onPublished ?? null } : null;
    this.output = opts.out !== undefined ? JsonlWriter.open({ dir: opts.out, rotateBytes: opts.rotateBytes, maxFiles: opts.maxFiles, fsync: opts.fsync, logger: opts.logger }) : null;
    const window = opts.dedupWindow ?? d.dedupWindow;
    const t0 = Date.now();
    // The relay de-duplicates in the stream (Nats-Msg-Id): no set of its own.
    this.seen = opts.out !== undefined ? rebuildSeenSet(listEventFiles(opts.out), window) : new SeenSet(1);
    const native = NativeJson.load();
    this.native = typeof native === 'string' ? null : native;
    if (typeof native === 'string') this.log.warn({ reason: native }, 'JSON fast path unavailable; writing lines in JavaScript (about half the throughput)');
    if (this.seen.size > 0) this.log.info({ ids: this.seen.size, ms: Date.now() - t0 }, 'rebuilt the de-duplication set from the output files');
    const settings: http2.Settings = { initialWindowSize: 1 << 20, maxConcurrentStreams: positiveInt(opts.maxStreamsPerConnection ?? d.maxStreamsPerConnection, 'max streams per connection') };
    if (opts.tlsCert && opts.tlsKey) {
      const read = (p: string, what: string): Buffer => {
        try {
          return readFileSync(p);
        } catch (err) {
          throw new CollectorError(`cannot read the ${what} ${p}: ${(err as Error).message}`);
        }
      };
      const secure: http2.SecureServerOptions = { cert: read(opts.tlsCert, 'TLS certificate'), key: read(opts.tlsKey, 'TLS key'), settings, allowHTTP1: false, handshakeTimeout: this.limits.handshakeTimeoutMs };
      if (opts.clientCa) {
        secure.ca = read(opts.clientCa, 'client CA file');
        secure.requestCert = true;
        secure.rejectUnauthorized = true;
      }
      try {
        this.server = http2.createSecureServer(secure);
      } catch (err) {
        throw new CollectorError(`bad TLS material: ${(err as Error).message}`);
      }
    } else {
      this.server = http2.createServer({ settings });
    }
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      const conn = this.connOf(session);
      if (conn) conn.session = session;
      // A bigger connection window than HTTP/2's 64 KiB default: many events per round trip.
      try {
        session.setLocalWindowSize(8 << 20);
      } catch {
        // Session already gone.
      }
      session.on('error', (err) => {
        // A broken peer (bad preface, protocol error): drop the connection, never the server.
        this.log.debug({ err: err.message }, 'session error');
        session.destroy();
      });
      session.on('close', () => this.sessions.delete(session));
    });
    this.server.on('connection', (socket: Socket) => this.onConnection(socket));
    // Acks are small writes: without TCP_NODELAY, Nagle holds them back until the sender's
    // delayed ACK, and the sender's window drains in slow motion.
    this.server.on('secureConnection', (socket: Socket) => socket.setNoDelay(true));
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    this.server.on('sessionError', (err: Error, session?: http2.ServerHttp2Session) => {
      this.log.debug({ err: err.message }, 'session error');
      session?.destroy();
    });
    this.server.on('tlsClientError', (err) => this.log.warn({ err: err.message }, 'TLS handshake with a client failed'));
  }

  /** Opens the output, rebuilds the de-dup set, and listens. Rejects with a clear CollectorError. */
  static async start(opts: CollectorOptions): Promise<Collector> {
    const { host, port } = parseListen(opts.listen);
    const c = new Collector(opts);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        const why = err.code === 'EADDRINUSE' ? `address ${opts.listen} is already in use (another collector running? pick another --listen port)` : err.code === 'EACCES' ? `no permission to listen on ${opts.listen}` : err.code === 'EADDRNOTAVAIL' ? `${host} is not an address of this machine` : err.message;
        reject(new CollectorError(`cannot listen on ${opts.listen}: ${why}`));
      };
      c.server.once('error', onError);
      c.server.listen(port, host, () => {
        c.server.off('error', onError);
        c.server.on('error', (err) => c.log.error({ err: err.message }, 'server error'));
        resolve();
      });
    }).catch(async (err) => {
      await c.output?.close();
      throw err;
    });
    const a = c.server.address() as AddressInfo;
    c.address = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    return c;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => undefined); // reported per session; never fatal
    const peer = `${stream.session?.socket?.remoteAddress ?? '?'}:${stream.session?.socket?.remotePort ?? '?'}`;
    const trailersOnly = (code: number, message: string): void => {
      try {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(message) }, { endStream: true });
      } catch {
        // The peer is gone.
      }
    };
    if (headers[':method'] !== 'POST') {
      stream.respond({ ':status': 405 }, { endStream: true });
      return;
    }
    const ct = String(headers['content-type'] ?? '');
    if (!ct.startsWith('application/grpc')) {
      stream.respond({ ':status': 415 }, { endStream: true });
      return;
    }
    if (headers[':path'] !== EVENTS_METHOD) {
      trailersOnly(GrpcStatus.UNIMPLEMENTED, `unknown method ${String(headers[':path'])}; this collector serves ${EVENTS_METHOD}`);
      return;
    }
    if (this.tokenBuf) {
      const got = Buffer.from(String(headers.authorization ?? ''));
      if (got.length !== this.tokenBuf.length || !timingSafeEqual(got, this.tokenBuf)) {
        this.counters.unauthenticated++;
        this.log.warn({ peer, reason: headers.authorization ? 'wrong token' : 'no authorization header' }, 'rejected a stream: bad bearer token');
        trailersOnly(GrpcStatus.UNAUTHENTICATED, headers.authorization ? 'invalid bearer token' : 'missing authorization: Bearer <token> metadata');
        return;
      }
    }
    if (this.openStreams >= this.limits.maxStreams) {
      this.counters.refusedStreams++;
      this.warnLimited('streams', { peer, maxStreams: this.limits.maxStreams, refusedTotal: this.counters.refusedStreams }, 'refused a stream: too many open streams (maxStreams)');
      trailersOnly(GrpcStatus.RESOURCE_EXHAUSTED, `this collector has ${this.limits.maxStreams} streams open, its limit; retry later`);
      return;
    }
    const conn = this.connOf(stream.session);
    if (conn) this.streamOpened(conn);
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-accept-encoding': 'identity' }, { waitForTrailers: true });
    this.counters.streams++;
    this.openStreams++;
    this.log.info({ peer }, 'exporter stream opened');
    const es = new EventStream(this, stream, peer);
    this.streams.add(es);
    stream.on('close', () => {
      this.streams.delete(es);
      if (conn) this.streamClosedOn(conn);
      this.log.info({ peer }, 'exporter stream closed');
    });
  }

  /**
   * A new TCP connection. Why all this: a connection that breaks HTTP/2 gets a GOAWAY from
   * nghttp2, which then stops reading it, so even the peer's close goes unnoticed and the file
   * descriptor stays; and an idle connection is never closed by node:http2. Every connection
   * therefore has to authenticate (open an accepted Events stream) within handshakeTimeoutMs, is
   * closed after idleTimeoutMs without a stream, and only so many may wait unauthenticated.
   */
  private onConnection(socket: Socket): void {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const reason = this.connections.size >= this.limits.maxConnections ? `${this.limits.maxConnections} connections are open (maxConnections)`
      : this.unauthenticatedConns >= this.limits.maxUnauthenticated ? `${this.limits.maxUnauthenticated} connections have not authenticated yet (maxUnauthenticated)` : null;
    if (reason !== null) {
      this.counters.refusedConnections++;
      this.warnLimited('refused', { peer, reason, refusedTotal: this.counters.refusedConnections }, 'refused a connection');
      socket.destroy();
      return;
    }
    const key = connKey(socket);
    const conn: Conn = { socket, session: null, authenticated: false, streams: 0, timer: null, peer };
    this.connections.set(key, conn);
    this.unauthenticatedConns++;
    conn.timer = setTimeout(() => this.expire(conn, 'handshake'), this.limits.handshakeTimeoutMs);
    conn.timer.unref();
    socket.on('close', () => {
      if (conn.timer) clearTimeout(conn.timer);
      conn.timer = null;
      if (!conn.authenticated) this.unauthenticatedConns--;
      if (this.connections.get(key) === conn) this.connections.delete(key);
    });
  }

  private connOf(session: http2.Http2Session | undefined): Conn | undefined {
    const socket = session?.socket;
    return socket ? this.connections.get(connKey(socket)) : undefined;
  }

  private streamOpened(conn: Conn): void {
    if (!conn.authenticated) {
      conn.authenticated = true;
      this.unauthenticatedConns--;
    }
    if (conn.timer) clearTimeout(conn.timer);
    conn.timer = null;
    conn.streams++;
  }

  private streamClosedOn(conn: Conn): void {
    conn.streams--;
    if (conn.streams > 0 || conn.socket.destroyed) return;
    conn.timer = setTimeout(() => this.expire(conn, 'idle'), this.limits.idleTimeoutMs);
    conn.timer.unref();
  }

  private expire(conn: Conn, why: 'handshake' | 'idle'): void {
    conn.timer = null;
    if (why === 'handshake') {
      this.counters.handshakeTimeouts++;
      this.warnLimited('handshake', { peer: conn.peer, timeoutMs: this.limits.handshakeTimeoutMs, total: this.counters.handshakeTimeouts }, 'closed a connection that did not open an authenticated stream in time');
    } else {
      this.counters.idleClosed++;
      this.log.debug({ peer: conn.peer, idleMs: this.limits.idleTimeoutMs }, 'closed an idle connection');
    }
    conn.session?.destroy();
    conn.socket.destroy();
  }

  /** Logs a warning of one kind at most once every 10 s (a flood must not flood the log too). */
  private warnLimited(kind: string, info: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    if (now - (this.lastWarn.get(kind) ?? 0) < 10_000) return;
    this.lastWarn.set(kind, now);
    this.log.warn(info, msg);
  }

  /** Forgets the ids of a batch whose commit failed (created with the output; none when relaying). */
  private commits: CommitGuard | null = null;

  /**
   * Makes sure that if batch fails to commit, the ids added with it leave the de-duplication set
   * (their senders resend them; they must be written then, not acked as duplicates).
   */
  guard(batch: number): void {
    this.commits ??= new CommitGuard(this.writer, this.seen, this.counters, this.log,
      'output commit failed: those events were not acknowledged and will be written when resent');
    this.commits.guard(batch);
  }

  /**
   * The batch whose commit acks a duplicate: the batch that holds the first copy while that one is
   * not yet durable (the ack shares its fate), else the batch now accumulating.
   */
  ackBatchOfDuplicate(): number {
    const tag = this.seen.foundTag;
    return tag > this.writer.finishedBatchId ? tag : this.writer.batchId;
  }

  /** The JSON-lines output (not in relay mode, where nothing calls this). */
  get writer(): JsonlWriter {
    if (this.output === null) throw new CollectorError('this collector relays to JetStream; it has no JSON-lines output');
    return this.output;
  }

  private lastRelayWarn = 0;

  /** Logs a failed publish at most once a second. */
  warnRelay(peer: string, err: Error): void {
    const now = Date.now();
    if (now - this.lastRelayWarn < 1000) return;
    this.lastRelayWarn = now;
    this.log.warn({ peer, err: err.message, publishFailures: this.counters.publishFailures }, 'publishing to JetStream failed; not acknowledging (the sender resends)');
  }

  /** Called by a stream when it closes. */
  streamClosed(): void {
    this.openStreams--;
  }

  /** Logs malformed events at most once a second (a broken sender must not flood the log). */
  warnMalformed(peer: string, why: string): void {
    const now = Date.now();
    if (now - this.lastMalformedLog < 1000) return;
    this.lastMalformedLog = now;
    this.log.warn({ peer, why, malformedTotal: this.counters.malformed }, 'acknowledged an event that cannot be stored (malformed)');
  }

  stats(): CollectorStats {
    return { ...this.counters, openStreams: this.openStreams, connections: this.connections.size, unauthenticatedConnections: this.unauthenticatedConns };
  }

  /** Ends every stream, commits what is queued and closes the output. */
  async close(): Promise<void> {
    for (const s of this.streams) s.shutdown();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sessions) s.close();
      setTimeout(() => {
        for (const s of this.sessions) s.destroy();
        for (const c of this.connections.values()) c.socket.destroy();
      }, 2000).unref();
      // Connections with no session yet (or a broken one) would hold server.close() up.
      for (const c of this.connections.values()) if (c.streams === 0) c.socket.destroy();
    });
    await this.output?.close();
  }
}
