// The exporter: FlowEvents go to the durable spool first, then out on one long-lived
// /flow.FlowService/Events stream, and leave the spool only when acknowledged.
//
// Flow control has three bounds, so memory stays flat whatever the collector does: at most
// maxInFlight events written and not yet acked, no write while the stream reports backpressure
// (write() === false until 'drain'), and the spool's own in-memory cap for events not yet sent.
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import pino, { Logger } from 'pino';
import type { FlowEvent } from '../../model/event';
import { DecodedAck, initiatorMessage } from '../../wire/codec';
import { GrpcStatus, statusName } from '../../wire/grpc';
import { CallStatus, EventStream, StreamOptions, Transport, TRANSPORTS } from './transport';
import { openGrpcJsStream } from './grpcjs-stream';
import { openH2Stream } from './h2-stream';
import type { SpoolOptions, SpoolRecord } from '../spool';
import { Backoff, DEFAULT_BACKOFF, SpooledSink, type BackoffOptions } from '../spooled-sink';
import { InFlight, InFlightTable } from './inflight';
import { parseCollectorUrl, CollectorUrl, tlsFilesProblem } from './url';

export interface ExporterOptions {
  /** grpc://host:port, grpcs://host:port or https://host[:port]. */
  url: string;
  /** Sent as `authorization: Bearer <token>` on every stream. */
  token?: string;
  /** PEM CA bundle to trust instead of the system roots (TLS only). */
  caFile?: string;
  /** PEM client certificate and key for mTLS (both or neither). */
  certFile?: string;
  keyFile?: string;
  /** The durable spool (dir is required). */
  spool: SpoolOptions;
  /** http2 (default: batches of events per HTTP/2 write) or grpc-js (the reference library). */
  transport?: Transport;
  /**
   * Events written to the stream and not yet acked, at most. Default 32768: a collector acks
   * only after its group commit is on disk, so at ~100k events/s the window must cover a few
   * hundred milliseconds of commits (measured: ~5% faster than 16384, ~10 MiB more memory).
   */
  maxInFlight?: number;
  /** HTTP/2 keepalive ping interval and ack timeout (NetBird: 30 s / 10 s). */
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** A stream whose initiator ack does not arrive in this time is torn down and retried. Default 10 s. */
  handshakeTimeoutMs?: number;
  /**
   * Events are in flight and no ack at all came for this long: the stream is torn down and the
   * events resent on a new one. Covers a collector that keeps the connection (and answers PINGs)
   * but has stopped acking, e.g. after a graceful GOAWAY. Default 60 s.
   */
  ackTimeoutMs?: number;
  backoff?: BackoffOptions;
  logger?: Logger;
  /** Called with the send-to-ack time of every acked event (attach a histogram here). */
  onAckLatency?: (ms: number) => void;
  /** Called on every stream state change. */
  onConnectionChange?: (connected: boolean) => void;
}

export interface ExporterStats {
  connected: boolean;
  /** Written to the stream, waiting for their ack. */
  inFlight: number;
  /** In the spool, not yet written to the stream. */
  queued: number;
  /** Acked since start. */
  acked: number;
  /** Writes to the stream since start (resends included). */
  sent: number;
  /** Streams that ended and were retried. */
  reconnects: number;
  /** Spool figures: dropped because full, corrupt records skipped, bytes on disk. */
  dropped: number;
  corruptSkipped: number;
  /** Spool records read back that were not valid events: quarantined, not sent. */
  quarantined: number;
  /** Events refused at enqueue because they cannot be encoded (the rest of their batch is kept). */
  badEvents: number;
  spoolBytes: number;
}

/** The exporter's defaults, one place (collector.* keys and export-test flags default to these). */
export const EXPORTER_DEFAULTS = {
  maxInFlight: 32_768,
  transport: 'http2' as Transport,
  keepaliveTimeMs: 30_000,
  keepaliveTimeoutMs: 10_000,
  handshakeTimeoutMs: 10_000,
  ackTimeoutMs: 60_000,
} as const;

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read the ${what} ${path}: ${(err as Error).message}`);
  }
}

const SYSTEM_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem'];

/** Node's bundled roots plus the system bundle when there is one (Node 20 does not read it itself). */
function systemRoots(): Buffer {
  const parts = [rootCertificates.join('\n')];
  for (const p of SYSTEM_BUNDLES) {
    try {
      parts.push(readFileSync(p, 'utf8'));
      break;
    } catch {
      // Not on this system.
    }
  }
  return Buffer.from(parts.join('\n'));
}

/** Events written to the stream in one batch (one HTTP/2 DATA frame with the http2 transport). */
const WRITE_BATCH = 256;

export class ExporterStoppedError extends Error {
  constructor() {
    super('exporter is stopped: it accepts no more events');
    this.name = 'ExporterStoppedError';
  }
}

export class Exporter extends SpooledSink {
  readonly name = 'collector';
  readonly url: CollectorUrl;
  private readonly streamOptions: StreamOptions;
  private readonly openStream: typeof openH2Stream;
  private readonly maxInFlight: number;
  private readonly backoffOpts: Required<BackoffOptions>;
  private readonly backoff: Backoff;
  private readonly handshakeTimeoutMs: number;
  private readonly ackTimeoutMs: number;
  /** Last ack, stream open, or first event in flight after none was: what the ack timeout counts from. */
  private lastProgressAt = 0;
  private ackTimer: NodeJS.Timeout | null = null;
  private readonly initiator: Buffer;
  private call: EventStream | null = null;
  private open = false;
  private openedAt = 0;
  private writeBlocked = false;
  private pumpScheduled = false;
  private readonly inflight = new InFlightTable();
  private resend: InFlight[] = [];
  /** Taken from the spool, not yet written (a write may block halfway through a batch). */
  private outbox: SpoolRecord[] = [];
  private outboxAt = 0;
  private resendAt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private counters = { acked: 0, sent: 0, reconnects: 0 };

  constructor(private readonly opts: ExporterOptions) {
    const url = parseCollectorUrl(opts.url);
    super(opts.logger ?? pino({ name: 'wgflow-exporter' }, pino.destination(2)), opts.spool, { stopped: () => new ExporterStoppedError(), receiver: 'collector', verb: 'exported' });
    this.url = url;
    this.maxInFlight = opts.maxInFlight ?? EXPORTER_DEFAULTS.maxInFlight;
    if (!(Number.isInteger(this.maxInFlight) && this.maxInFlight >= 1)) throw new Error(`maxInFlight must be a positive integer, got ${opts.maxInFlight}`);
    this.backoffOpts = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.backoff = new Backoff(this.backoffOpts);
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? EXPORTER_DEFAULTS.handshakeTimeoutMs;
    this.ackTimeoutMs = opts.ackTimeoutMs ?? EXPORTER_DEFAULTS.ackTimeoutMs;
    if (!(Number.isInteger(this.ackTimeoutMs) && this.ackTimeoutMs >= 1)) throw new Error(`ackTimeoutMs must be a positive integer, got ${opts.ackTimeoutMs}`);
    const tlsProblem = tlsFilesProblem(this.url, opts);
    if (tlsProblem) throw new Error(`${tlsProblem.file}: ${tlsProblem.problem}`);
    const transport = opts.transport ?? EXPORTER_DEFAULTS.transport;
    if (!TRANSPORTS.includes(transport)) throw new Error(`transport must be one of ${TRANSPORTS.join(', ')}, got ${String(transport)}`);
    this.openStream = transport === 'grpc-js' ? openGrpcJsStream : openH2Stream;
    this.streamOptions = {
      url: this.url,
      token: opts.token,
      keepaliveTimeMs: opts.keepaliveTimeMs ?? EXPORTER_DEFAULTS.keepaliveTimeMs,
      keepaliveTimeoutMs: opts.keepaliveTimeoutMs ?? EXPORTER_DEFAULTS.keepaliveTimeoutMs,
    };
    if (this.url.tls) {
      this.streamOptions.ca = opts.caFile ? readPem(opts.caFile, 'CA file') : systemRoots();
      if (opts.certFile) this.streamOptions.cert = readPem(opts.certFile, 'client certificate');
      if (opts.keyFile) this.streamOptions.key = readPem(opts.keyFile, 'client key');
    }
    this.initiator = initiatorMessage();
    this.spool.onSegmentDropped = (seq) => {
      this.inflight.deleteWhere((f) => f.rec.seq === seq);
      this.outbox = this.outbox.slice(this.outboxAt).filter((r) => r.seq !== seq);
      this.outboxAt = 0;
    };
  }

  /** Connects and starts sending what the spool holds (including what an earlier run left). */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.ackTimer = setInterval(() => this.checkAckTimeout(), Math.max(10, Math.floor(this.ackTimeoutMs / 4)));
    this.ackTimer.unref();
    this.connect();
  }

  /** Validates, encodes and appends one event to the spool; see enqueueBatch. */
  enqueue(event: FlowEvent): boolean {
    return this.enqueueBatch([event]) === 1;
  }

  protected onEnqueued(): void {
    this.schedulePump();
  }

  stats(): ExporterStats {
    return {
      connected: this.open,
      inFlight: this.inflight.size,
      acked: this.counters.acked,
      sent: this.counters.sent,
      reconnects: this.counters.reconnects,
      ...this.spoolFigures(this.inflight.size),
    };
  }

  /**
   * Stops accepting events, keeps sending until everything is acked or deadlineMs passed, then
   * closes the stream and the spool. What is still unacked stays in the spool for the next start.
   */
  async stop(opts: { deadlineMs?: number } = {}): Promise<ExporterStats> {
    if (this.stopped) return this.stats();
    await this.waitForAcks(opts.deadlineMs);
    this.stopped = true;
    const stats = this.stats();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    if (this.ackTimer) clearInterval(this.ackTimer);
    const call = this.call;
    this.call = null;
    this.open = false;
    if (call) call.cancel();
    this.spool.close();
    this.log.info({ ...stats }, 'exporter stopped');
    return stats;
  }

  private connect(): void {
    this.retryTimer = null;
    if (this.stopped) return;
    this.open = false;
    this.writeBlocked = false;
    // A fresh connection per attempt: our backoff paces reconnects.
    const call: EventStream = this.openStream(this.streamOptions, {
      onAck: (ack) => this.onAck(call, ack),
      onEnd: (status) => this.onStreamEnd(call, status),
      onDrain: () => {
        if (call !== this.call) return;
        this.writeBlocked = false;
        this.pump();
      },
    });
    this.call = call;
    this.handshakeTimer = setTimeout(() => {
      if (call === this.call && !this.open) {
        this.log.warn({ collector: this.url.text, timeoutMs: this.handshakeTimeoutMs }, 'collector did not answer the stream handshake in time');
        call.cancel();
      }
    }, this.handshakeTimeoutMs);
    call.write([this.initiator]);
  }

  private onAck(call: EventStream, ack: DecodedAck): void {
    if (call !== this.call) return;
    if (ack.isInitiator) {
      if (this.open) return;
      this.open = true;
      this.openedAt = Date.now();
      this.lastProgressAt = this.openedAt;
      if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
      this.handshakeTimer = null;
      this.log.info({ collector: this.url.text, resending: this.inflight.size, spooled: this.spool.stats().records }, 'connected to collector');
      this.opts.onConnectionChange?.(true);
      // Everything written on the previous stream and not acked goes again, first.
      this.resend = [...this.inflight.values()];
      this.resendAt = 0;
      this.pump();
      return;
    }
    const f = this.inflight.get(ack.eventId);
    if (!f) return; // a duplicate ack, or for a record dropped for space
    this.inflight.delete(f);
    const now = Date.now(); // one clock read per ack: the ack timeout and the latency share it
    this.lastProgressAt = now;
    this.spool.ack(f.rec.seq, f.rec.off);
    this.counters.acked++;
    this.opts.onAckLatency?.(now - f.sentAt);
    this.settleIdle();
    this.schedulePump();
  }

  private checkAckTimeout(): void {
    const call = this.call;
    if (!call || !this.open || this.inflight.size === 0) return;
    if (Date.now() - this.lastProgressAt < this.ackTimeoutMs) return;
    this.log.warn({ collector: this.url.text, inFlight: this.inflight.size, timeoutMs: this.ackTimeoutMs }, 'no ack from the collector in time: reconnecting and resending');
    call.cancel();
    this.onStreamEnd(call, { code: GrpcStatus.DEADLINE_EXCEEDED, details: `no ack for ${this.ackTimeoutMs} ms with ${this.inflight.size} events in flight` });
  }

  private onStreamEnd(call: EventStream, status: CallStatus): void {
    if (call !== this.call) return;
    const wasOpen = this.open;
    this.call = null;
    this.open = false;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    if (wasOpen) this.opts.onConnectionChange?.(false);
    if (this.stopped) return;
    if (wasOpen && Date.now() - this.openedAt >= this.backoffOpts.resetAfterMs) this.backoff.reset();
    const delay = this.backoff.next();
    this.counters.reconnects++;
    const info = { collector: this.url.text, code: statusName(status.code), details: status.details, retryInMs: delay, inFlight: this.inflight.size };
    if (status.code === GrpcStatus.UNAUTHENTICATED) {
      this.log.error(info, 'collector rejected the token (UNAUTHENTICATED): check the exporter token; retrying');
    } else if (status.code === GrpcStatus.UNAVAILABLE && !wasOpen) {
      this.log.warn(info, 'collector unreachable; retrying');
    } else {
      this.log.warn(info, 'stream to collector ended; reconnecting');
    }
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private schedulePump(): void {
    if (this.pumpScheduled || !this.open) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Writes batches until the stream pushes back, maxInFlight is reached or nothing is left. */
  private pump(): void {
    const call = this.call;
    if (!call || !this.open) return;
    while (!this.writeBlocked) {
      const batch = this.nextBatch(Date.now());
      if (batch.length === 0) break;
      this.counters.sent += batch.length;
      if (!call.write(batch)) this.writeBlocked = true;
    }
  }

  /** Up to WRITE_BATCH payloads: resends first, then new records from the spool. */
  private nextBatch(now: number): Buffer[] {
    const batch: Buffer[] = [];
    while (batch.length < WRITE_BATCH) {
      let f: InFlight | undefined;
      if (this.resendAt < this.resend.length) {
        f = this.resend[this.resendAt++];
        if (!f.live) continue; // acked or dropped meanwhile
      } else {
        if (this.resend.length > 0) this.resend = [];
        if (this.outboxAt >= this.outbox.length) {
          const room = this.maxInFlight - this.inflight.size;
          if (room <= 0) break;
          this.outbox = this.spool.next(Math.min(room, WRITE_BATCH));
          this.outboxAt = 0;
          if (this.outbox.length === 0) break;
        }
        if (this.inflight.size === 0) this.lastProgressAt = now;
        f = this.inflight.add(this.outbox[this.outboxAt++], now);
      }
      f.sentAt = now;
      batch.push(f.rec.payload);
    }
    return batch;
  }
}
