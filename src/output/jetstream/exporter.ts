// The JetStream exporter: the same at-least-once contract as the gRPC exporter, with a NATS
// JetStream stream in place of the collector. Every event goes to the durable spool first (the
// same Spool and record form as src/output/grpc/), then it is published to
// `<prefix>.<reporter>.<type>` with its event id as Nats-Msg-Id, and it leaves the spool only when
// the stream's PubAck arrives. A PubAck saying `duplicate: true` means the stream already holds
// that id (a resend after a lost ack, or after a crash): delivered.
//
// Bounds: at most maxInFlight publishes waiting for their PubAck; the spool's own caps for the
// rest. When NATS is unreachable, refuses the credentials or the publish, or the stream does not
// match, nothing leaves the spool: the exporter logs why (naming the key to fix) and retries with
// backoff.
//
// The publishing itself goes over our own NATS client (src/nats/: HPUB frames written straight
// into one buffer per turn of the event loop, PubAcks read without JSON.parse), nats.js only
// checks or creates the stream. A creds_file (JWT and nkey) is left to nats.js end to end.
import { performance } from 'node:perf_hooks';
import pino, { type Logger } from 'pino';
import { jetstreamManager } from '@nats-io/jetstream';
import { createInbox, type Msg, type NatsConnection } from '@nats-io/nats-core';
import {
  connectNats, describeNatsError, ensureStream, messageHeaders, natsErrorKind, streamSettings, streamSummary,
  SubjectCache, type NatsConnectOptions, type NatsErrorKind, type StreamSettings,
} from '../../wire/jetstream';
import { bytesToUuid } from '../../wire/codec';
import { Connection } from '../../nats/connection';
import { JetStreamPublisher, type PubAckResult } from '../../nats/jetstream-publish';
import { ownConnectionOptions } from '../../nats/options';
import { recordId, type SpoolOptions, type SpoolRecord } from '../spool';
import { Backoff, DEFAULT_BACKOFF, SpooledSink, type BackoffOptions } from '../spooled-sink';

/** The exporter's own defaults (jetstream.max_in_flight defaults to this). */
export const JETSTREAM_EXPORTER_DEFAULTS = {
  /** Publishes waiting for their PubAck, at most. */
  maxInFlight: 4096,
  /** A publish without a PubAck in this time is retried. */
  publishTimeoutMs: 10_000,
} as const;

export const NATS_ERROR_KINDS: readonly NatsErrorKind[] = ['unreachable', 'auth', 'permission', 'stream', 'timeout', 'no_jetstream', 'other'];

export interface JetStreamExporterOptions {
  connection: NatsConnectOptions;
  /** Stream name, subject prefix and limits (defaults: JETSTREAM_DEFAULTS). */
  stream?: Partial<StreamSettings>;
  /** Create the stream when it is missing (default true); an existing one is only checked. */
  createStream?: boolean;
  spool: SpoolOptions;
  maxInFlight?: number;
  publishTimeoutMs?: number;
  backoff?: BackoffOptions;
  logger?: Logger;
  /** Publish-to-PubAck time of every acked event (attach a histogram here). */
  onPublishLatency?: (ms: number) => void;
  /**
   * Which NATS client publishes: 'auto' (default) our own (src/nats/) unless the connection needs
   * nats.js (creds_file); 'nats.js' always nats.js (the fallback path, kept tested).
   */
  client?: 'auto' | 'nats.js';
}

export interface JetStreamExporterStats {
  connected: boolean;
  /** Published, waiting for the PubAck. */
  inFlight: number;
  /** In the spool, not yet published (or waiting for a retry). */
  queued: number;
  /** Publishes since start (retries included). */
  published: number;
  /** PubAcks since start (duplicates included): events that left the spool. */
  acked: number;
  /** PubAcks saying the stream already had the id. */
  duplicates: number;
  /** Failed publishes, connections and stream checks, by kind. */
  errors: Record<NatsErrorKind, number>;
  /** Sessions (connection + stream check) that ended and were retried. */
  reconnects: number;
  dropped: number;
  corruptSkipped: number;
  quarantined: number;
  badEvents: number;
  spoolBytes: number;
}

interface Pending {
  rec: SpoolRecord;
  subject: string;
  /**
   * When it was last published (set by publish), on the monotonic clock: a wall-clock step must
   * not time out every publish at once, nor keep one waiting for ever.
   */
  sentAt: number;
}

export class JetStreamExporterStoppedError extends Error {
  constructor() {
    super('JetStream exporter is stopped: it accepts no more events');
    this.name = 'JetStreamExporterStoppedError';
  }
}

export class JetStreamExporter extends SpooledSink {
  readonly name = 'jetstream';
  readonly settings: StreamSettings;
  private readonly maxInFlight: number;
  private readonly publishTimeoutMs: number;
  private readonly backoff: Backoff;
  private nc: NatsConnection | null = null;
  /** Our own connection, when the configuration allows it (everything but creds_file). */
  private own: Connection | null = null;
  /** Writes one publish with reply <inbox>.<token> (our client's, or nats.js's). */
  private send: ((subject: string, rec: SpoolRecord, token: number) => void) | null = null;
  private readonly subjects: SubjectCache;
  /**
   * Publishes go out with a reply subject <inbox>.<token> of their own; the PubAcks come back on
   * one subscription to <inbox>.* (no request object, promise and timer per event, as nats.js's
   * js.publish makes). waiting: by token, in publish order (the timeout sweep relies on it).
   */
  private inbox = '';
  private readonly waiting = new Map<number, Pending>();
  private nextToken = 1;
  private sweepTimer: NodeJS.Timeout | null = null;
  /** Connected and the stream checked: publishing. */
  private ready = false;
  /** False while the client is reconnecting (ready stays: publishes wait or fail and are retried). */
  private linkUp = false;
  /** A publish failed: wait for the retry timer before publishing again. */
  private paused = false;
  /** Taken from the spool, not published yet, or failed and waiting for the retry. */
  private retry: Pending[] = [];
  private retryAt = 0;
  private pumpScheduled = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly errors = Object.fromEntries(NATS_ERROR_KINDS.map((k) => [k, 0])) as Record<NatsErrorKind, number>;
  private counters = { published: 0, acked: 0, duplicates: 0, reconnects: 0 };

  constructor(private readonly opts: JetStreamExporterOptions) {
    super(opts.logger ?? pino({ name: 'wgflow-jetstream' }, pino.destination(2)), opts.spool, { stopped: () => new JetStreamExporterStoppedError(), receiver: 'JetStream', verb: 'published' });
    this.settings = streamSettings(opts.stream);
    this.subjects = new SubjectCache(this.settings.subjectPrefix);
    this.maxInFlight = opts.maxInFlight ?? JETSTREAM_EXPORTER_DEFAULTS.maxInFlight;
    if (!(Number.isInteger(this.maxInFlight) && this.maxInFlight >= 1)) throw new Error(`jetstream.max_in_flight must be a positive integer, got ${opts.maxInFlight}`);
    this.publishTimeoutMs = opts.publishTimeoutMs ?? JETSTREAM_EXPORTER_DEFAULTS.publishTimeoutMs;
    this.backoff = new Backoff({ ...DEFAULT_BACKOFF, maxMs: 10_000, ...opts.backoff });
    this.spool.onSegmentDropped = (seq) => {
      this.retry = this.retry.slice(this.retryAt).filter((p) => p.rec.seq !== seq);
      this.retryAt = 0;
    };
  }

  /** Connects, checks (or creates) the stream and starts publishing what the spool holds. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(50, Math.floor(this.publishTimeoutMs / 4)));
    this.sweepTimer.unref();
    void this.session();
  }

  protected onEnqueued(): void {
    this.schedulePump();
  }

  stats(): JetStreamExporterStats {
    return {
      connected: this.ready && this.linkUp,
      inFlight: this.waiting.size,
      published: this.counters.published,
      acked: this.counters.acked,
      duplicates: this.counters.duplicates,
      errors: { ...this.errors },
      reconnects: this.counters.reconnects,
      ...this.spoolFigures(this.waiting.size),
    };
  }

  /** Stops accepting events, publishes until all are acked or the deadline, then closes. */
  async stop(opts: { deadlineMs?: number } = {}): Promise<JetStreamExporterStats> {
    if (this.stopped) return this.stats();
    await this.waitForAcks(opts.deadlineMs);
    this.stopped = true;
    const stats = this.stats();
    if (this.timer) clearTimeout(this.timer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.ready = false;
    const nc = this.nc;
    this.nc = null;
    if (nc) await nc.close().catch(() => undefined);
    const own = this.own;
    this.own = null;
    this.send = null;
    if (own) await own.close().catch(() => undefined);
    this.spool.close();
    this.log.info({ ...stats }, 'JetStream exporter stopped');
    return stats;
  }

  // ---------- the session: connect, check the stream, publish until the connection closes ----------

  private async session(): Promise<void> {
    while (!this.stopped) {
      let nc: NatsConnection | null = null;
      let own: Connection | null = null;
      try {
        const name = this.opts.connection.name ?? 'wgflow-exporter';
        nc = await connectNats({ ...this.opts.connection, name });
        if (this.stopped) {
          await nc.close().catch(() => undefined); // stop() ran while connecting: it did not see this one
          break;
        }
        this.nc = nc;
        const jsm = await jetstreamManager(nc, { timeout: this.publishTimeoutMs });
        const { created, info } = await ensureStream(jsm, this.settings, { create: this.opts.createStream ?? true, servers: this.opts.connection.servers });
        if (this.stopped) break;
        const ownOpts = this.opts.client === 'nats.js' ? null : ownConnectionOptions({ ...this.opts.connection, name });
        let closed: Promise<Error | null | void>;
        if (ownOpts !== null) {
          // Frames not written at a disconnect are dropped: what waits for a PubAck is published
          // again after the reconnect anyway (requeueWaiting).
          own = await Connection.connect({ ...ownOpts, keepPendingOnReconnect: false });
          if (this.stopped) {
            await own.close().catch(() => undefined); // stop() ran while connecting
            break;
          }
          this.own = own;
          // The stream is checked: nats.js has nothing more to do here.
          this.nc = null;
          await nc.close().catch(() => undefined);
          nc = null;
          const pub = new JetStreamPublisher(own, (token, r) => this.onReply(token, r));
          pub.start();
          this.send = (subject, rec, token) => pub.publishRawId(subject, rec.buf, rec.idAt, rec.payload, token);
          this.watchOwn(own);
          closed = own.whenClosed();
        } else {
          const n = nc;
          this.inbox = createInbox();
          n.subscribe(`${this.inbox}.*`, { callback: (err, msg) => (err ? undefined : this.onNatsJsReply(msg)) });
          this.send = (subject, rec, token) => n.publish(subject, rec.payload, { reply: `${this.inbox}.${token}`, headers: messageHeaders(bytesToUuid(recordId(rec), 'event_id')) });
          this.watchStatus(n);
          // nats.js reconnects by itself; the connection closes for good only when it gives up
          // (e.g. credentials refused on reconnect) or when we close it.
          closed = n.closed();
        }
        this.ready = true;
        this.linkUp = true;
        this.paused = false;
        this.log.info({ servers: this.opts.connection.servers, created, spooled: this.spool.stats().records, client: own ? 'wgflow' : 'nats.js' }, streamSummary(info));
        this.pump();
        const closedWith = await closed;
        if (this.stopped) break;
        this.ready = false;
        throw closedWith ?? new Error('connection to NATS closed');
      } catch (err) {
        this.ready = false;
        this.send = null;
        this.requeueWaiting();
        if (nc && !nc.isClosed()) await nc.close().catch(() => undefined);
        if (this.nc === nc) this.nc = null;
        if (own) await own.close().catch(() => undefined);
        if (this.own === own) this.own = null;
        if (this.stopped) break;
        this.countError(err);
        const delay = this.backoff.next();
        this.counters.reconnects++;
        this.logRare(`session-${natsErrorKind(err)}`, 'error', { retryInMs: delay, kind: natsErrorKind(err), spooled: this.spool.stats().records },
          `${this.describe(err)}; the events stay in the spool, retrying`);
        await new Promise<void>((r) => (this.timer = setTimeout(r, delay)));
      }
    }
  }

  /** Our connection's disconnects, reconnects and -ERRs (e.g. a permissions violation). */
  private watchOwn(own: Connection): void {
    own.onStatus((s) => {
      if (own !== this.own) return;
      if (s.type === 'disconnect') {
        this.linkUp = false;
        this.errors.unreachable++;
        // Nothing sent on the old socket is answered on the new one: publish it all again (a
        // message the stream stored meanwhile comes back as a duplicate).
        this.requeueWaiting();
        this.log.warn({ server: s.server, reason: s.reason, spooled: this.spool.stats().records }, 'disconnected from NATS; reconnecting (the events stay in the spool)');
      } else if (s.type === 'reconnect') {
        this.linkUp = true;
        this.log.info({ server: s.server }, 'reconnected to NATS');
        this.schedulePump();
      } else {
        // A permissions violation for the subject: the publish gets no PubAck (the sweep retries
        // it), the reason comes here.
        this.countError(s.error);
        this.logRare(`status-${natsErrorKind(s.error)}`, 'error', {}, `${this.describe(s.error)}; the events stay in the spool`);
      }
    });
  }

  private watchStatus(nc: NatsConnection): void {
    void (async () => {
      for await (const s of nc.status()) {
        if (nc !== this.nc) break;
        if (s.type === 'disconnect') {
          this.linkUp = false;
          this.errors.unreachable++;
          this.log.warn({ server: (s as { server?: string }).server, spooled: this.spool.stats().records }, 'disconnected from NATS; reconnecting (the events stay in the spool)');
        } else if (s.type === 'reconnect') {
          this.linkUp = true;
          this.log.info({ server: (s as { server?: string }).server }, 'reconnected to NATS');
          this.schedulePump();
        } else if (s.type === 'error') {
          // E.g. a permissions violation for the subject: the publish gets no PubAck (the sweep
          // retries it), the reason comes here.
          const error = (s as { error?: unknown }).error;
          this.countError(error);
          this.logRare(`status-${natsErrorKind(error)}`, 'error', {}, `${this.describe(error)}; the events stay in the spool`);
        }
      }
    })().catch(() => undefined);
  }

  private describe(err: unknown): string {
    return describeNatsError(err, this.opts.connection.servers);
  }

  private countError(err: unknown): void {
    this.errors[natsErrorKind(err)]++;
  }

  // ---------- publishing ----------

  private schedulePump(): void {
    if (this.pumpScheduled || !this.ready || this.paused) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Publishes until maxInFlight is reached or nothing is left: retries first, then the spool. */
  private pump(): void {
    const send = this.send;
    if (send === null || !this.ready || this.paused || (this.own !== null && !this.linkUp)) return;
    while (this.waiting.size < this.maxInFlight) {
      let p: Pending | undefined;
      if (this.retryAt < this.retry.length) {
        p = this.retry[this.retryAt++];
      } else {
        if (this.retry.length > 0) {
          this.retry = [];
          this.retryAt = 0;
        }
        const recs = this.spool.next(Math.min(256, this.maxInFlight - this.waiting.size));
        if (recs.length === 0) break;
        for (const rec of recs) {
          try {
            this.retry.push({ rec, subject: this.subjects.of(rec.payload), sentAt: 0 });
          } catch {
            // validateRecord passed it: cannot happen; never let one record stop the rest.
            this.spool.ack(rec.seq, rec.off);
          }
        }
        continue;
      }
      this.publish(send, p);
    }
  }

  private publish(send: (subject: string, rec: SpoolRecord, token: number) => void, p: Pending): void {
    const token = this.nextToken++;
    p.sentAt = performance.now();
    this.waiting.set(token, p);
    this.counters.published++;
    try {
      send(p.subject, p.rec, token);
    } catch (err) {
      this.waiting.delete(token); // closed or draining: retried on the next connection
      this.failed(p, err);
    }
  }

  /** A PubAck through nats.js (the creds_file path), in our client's terms. */
  private onNatsJsReply(msg: Msg): void {
    const token = Number(msg.subject.slice(this.inbox.length + 1));
    const h = msg.headers;
    if ((h && h.hasError) || msg.data.length === 0) {
      const code = h?.code ?? 0;
      this.onReply(token, { ok: false, error: new Error(code === 503 ? 'no responders (503): JetStream is not enabled for this account, or no stream takes the subject' : `status ${code} ${h?.description ?? ''}`) });
      return;
    }
    let ack: { stream?: string; seq?: number; duplicate?: boolean; error?: { code?: number; err_code?: number; description?: string } };
    try {
      ack = JSON.parse(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.length).toString('utf8')) as typeof ack;
    } catch {
      this.onReply(token, { ok: false, error: new Error('the PubAck is not JSON') });
      return;
    }
    if (ack.error || !ack.stream) {
      this.onReply(token, { ok: false, error: new Error(`the stream refused the message: ${ack.error?.description ?? 'no stream in the PubAck'} (code ${ack.error?.code ?? '?'}/${ack.error?.err_code ?? '?'})`) });
      return;
    }
    this.onReply(token, { ok: true, duplicate: ack.duplicate === true });
  }

  /** A PubAck (or an error) for one publish. */
  private onReply(token: number, r: PubAckResult): void {
    const w = this.waiting.get(token);
    if (!w) return; // timed out and retried meanwhile, or from an earlier connection
    this.waiting.delete(token);
    if (!r.ok) {
      this.failed(w, r.error);
      return;
    }
    // After stop() the spool is closed: the event stays in it, the next start resends it and the
    // stream reports the duplicate.
    if (this.stopped) return;
    const p = w;
    this.spool.ack(p.rec.seq, p.rec.off);
    this.counters.acked++;
    if (r.duplicate) this.counters.duplicates++;
    this.opts.onPublishLatency?.(performance.now() - w.sentAt);
    this.backoff.reset();
    this.settleIdle();
    this.schedulePump();
  }

  /** Publishes without a PubAck for publishTimeoutMs are retried (the oldest come first in waiting). */
  private sweep(): void {
    if (this.waiting.size === 0) return;
    const now = performance.now();
    for (const [token, w] of this.waiting) {
      if (now - w.sentAt < this.publishTimeoutMs) break;
      this.waiting.delete(token);
      this.failed(w, Object.assign(new Error(`no PubAck within ${this.publishTimeoutMs} ms (timeout)`), { name: 'TimeoutError' }));
    }
  }

  /** The connection is gone: everything waiting for a PubAck is published again on the next one. */
  private requeueWaiting(): void {
    for (const w of this.waiting.values()) this.retry.push(w);
    this.waiting.clear();
  }

  /** A publish failed: the record waits in the retry list, publishing pauses for a backoff delay. */
  private failed(p: Pending, err: unknown): void {
    this.countError(err);
    this.retry.push(p);
    if (this.stopped || this.paused) return;
    this.paused = true;
    const delay = this.backoff.next();
    this.logRare(`publish-${natsErrorKind(err)}`, 'error', { retryInMs: delay, kind: natsErrorKind(err), inFlight: this.waiting.size, subject: p.subject },
      `publish to JetStream failed: ${this.describe(err)}; the events stay in the spool, retrying`);
    this.timer = setTimeout(() => {
      this.paused = false;
      this.pump();
    }, delay);
  }
}
