// `wgflow consume`: a durable pull consumer of the JetStream stream that writes every flow event
// as one JSON line, in exactly the form the embedded collector writes (same event JSON, same
// JsonlWriter group commit, same de-duplication set), and acks a message only once its line is
// durable.
//
// Delivery: the stream is at-least-once (a publisher resends what it did not see acked; the
// server redelivers what a consumer did not ack within ack wait). The stream's duplicate window
// drops resends within minutes; beyond it, and for redeliveries, the SeenSet drops events whose
// id is already written (rebuilt from the output files at start, as the collector does). An id
// counts as seen once its line is queued, but a message is acked only after the commit of the
// batch that holds the line (a duplicate: of the batch that holds the first copy); if that commit
// fails, the batch's ids are forgotten again and its messages are nak'ed, so they come back and
// are written then.
//
// Several processes with the same durable share the work: the server hands each message to one
// pull request. Each process writes its own --out directory.
//
// Pulling and acking go over our own NATS client (src/nats/jetstream-pull.ts: no object or
// promise per message, acks gathered into one write); nats.js makes and checks the durable and
// reads the lag. With a creds_file (JWT and nkey) nats.js does all of it.
import { AckPolicy, DeliverPolicy, jetstream, JetStreamApiError, jetstreamManager } from '@nats-io/jetstream';
import type { Consumer, ConsumerConfig, ConsumerInfo, ConsumerMessages, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import { Connection } from '../nats/connection';
import { ackInfoOf, PullConsumer, type AckInfo } from '../nats/jetstream-pull';
import { ownConnectionOptions } from '../nats/options';
import type { MsgView } from '../nats/parser';
import { JETSTREAM_DEFAULTS, StreamMissingError, type NatsConnectOptions } from '../wire/jetstream';
import { checkScanned, scanFlowEvent, ScannedEvent } from '../wire/reader';
/** NetBird v0.75 clients send window aggregates (TYPE_UNKNOWN): stored as such (docs/export.md). */
const AGGREGATES = { aggregates: true } as const;
import type { ByteBuffer } from '../util/byte-buffer';
import { JSONL_DEFAULTS, JsonlWriter, listEventFiles } from '../output/jsonl-writer';
import { CommitGuard, rebuildSeenSet, SeenSet } from './dedup';
import { writeJsonLine } from './event-json';
import { NativeJson } from './native-json';
import { COLLECTOR_DEFAULTS } from './server';

/** The consumer's defaults, one place (the CLI's help and docs/jetstream.md name these). */
export const CONSUMER_DEFAULTS = {
  /** A message not acked within this time is delivered again (to this or another process). */
  ackWaitMs: 30_000,
  /** Messages delivered and not yet acked, at most, for the durable (all its processes). */
  maxAckPending: 20_000,
  /** Messages one pull asks for (the client asks for more at three quarters). */
  batch: 1_000,
  /**
   * A pull request lasts this long; the server's heartbeats come at half of it. A pull lost with
   * its server (a leader killed) is noticed after two missed heartbeats, so this bounds the stall
   * of a failover; the client's default (30 s) would stall half a minute.
   */
  pullExpiresMs: 5_000,
  /** Event ids remembered for de-duplication (across restarts too): as the collector. */
  dedupWindow: COLLECTOR_DEFAULTS.dedupWindow,
  rotateBytes: JSONL_DEFAULTS.rotateBytes,
  maxFiles: JSONL_DEFAULTS.maxFiles,
  /** A failed commit's messages are nak'ed with this delay (the disk gets a moment). */
  retryDelayMs: 1_000,
} as const;

export interface JetStreamConsumerOptions {
  /** A connected client (the caller owns it: connects, drains and closes it). */
  nc: NatsConnection;
  /**
   * The connection settings nc was made with: given, the messages are pulled and acked over a
   * connection of our own client (closed by close()); absent, or with a creds_file, over nc.
   */
  connection?: NatsConnectOptions;
  /** The servers as given (for messages only). */
  servers?: string;
  stream: string;
  /** The durable consumer's name: created if missing, else checked. */
  durable: string;
  /** Subject filter of the durable (e.g. wgflow.flows.*.end); undefined: the whole stream. */
  filter?: string;
  out: string;
  ackWaitMs?: number;
  maxAckPending?: number;
  batch?: number;
  dedupWindow?: number;
  rotateBytes?: number;
  maxFiles?: number;
  /** fdatasync every batch (default true). */
  fsync?: boolean;
  logger: Logger;
}

export interface JetStreamConsumerStats {
  /** Messages delivered to this process (redeliveries included). */
  consumed: number;
  /** Lines written (durable or about to be). */
  written: number;
  /** Messages whose event id was already written: acked, not written. */
  duplicates: number;
  /** Messages delivered more than once (the server's count, seen on delivery). */
  redeliveries: number;
  /** Messages that are not flow events: terminated (never delivered again), not written. */
  malformed: number;
  /** Messages acked. */
  acked: number;
  /** Output commits that failed (their messages were nak'ed and come back). */
  commitFailures: number;
  /** Messages of the stream not yet delivered to the durable, as of the last delivery. */
  pending: number;
}

/** A setup problem with a message for the user (unknown stream, a durable set up differently). */
export class ConsumerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConsumerError';
  }
}

const ERR_STREAM_NOT_FOUND = 10059;
const ERR_CONSUMER_NOT_FOUND = 10014;

function positiveInt(n: number, what: string): number {
  if (!(Number.isInteger(n) && n >= 1)) throw new ConsumerError(`${what} must be a positive integer, got ${n}`);
  return n;
}

const nanos = (ms: number): number => ms * 1_000_000;

/** Scratch for the message being handled (each is handled to the end synchronously). */
const scanned = new ScannedEvent();

/** How a message is acked: its $JS.ACK reply subject (our client) or the nats.js message. */
type AckHandle = Buffer | JsMsg;

/** One delivered message, whichever client brought it (reused: valid during onMessage). */
interface Delivery {
  data: Buffer;
  deliveryCount: number;
  pending: number;
  handle: AckHandle;
  /** For log lines only. */
  subject(): string;
  seq(): number;
}

interface Acker {
  ack(h: AckHandle): void;
  nak(h: AckHandle, delayMs?: number): void;
  term(h: AckHandle, reason: string): void;
}

const NATSJS_ACKER: Acker = {
  ack: (h) => (h as JsMsg).ack(),
  nak: (h, delayMs) => (h as JsMsg).nak(delayMs),
  term: (h, reason) => (h as JsMsg).term(reason),
};

/** A nats.js message as a Delivery. */
class NatsJsDelivery implements Delivery {
  data: Buffer = Buffer.alloc(0);
  deliveryCount = 0;
  pending = 0;
  handle: AckHandle = this.data;
  private m: JsMsg | null = null;

  set(m: JsMsg): this {
    this.m = m;
    const d = m.data;
    this.data = Buffer.from(d.buffer, d.byteOffset, d.byteLength);
    const info = m.info;
    this.deliveryCount = info.deliveryCount;
    this.pending = info.pending;
    this.handle = m;
    return this;
  }

  subject(): string {
    return this.m?.subject ?? '';
  }

  seq(): number {
    return this.m?.seq ?? 0;
  }
}

/** A message of our client as a Delivery: the reply subject's bytes are the ack handle. */
class OwnDelivery implements Delivery {
  data: Buffer = Buffer.alloc(0);
  deliveryCount = 0;
  pending = 0;
  handle: AckHandle = this.data;
  private m: MsgView | null = null;
  private readonly info: AckInfo = { deliveryCount: 0, streamSeq: 0, pending: 0 };

  set(m: MsgView): this {
    this.m = m;
    this.data = m.buf.subarray(m.dataStart, m.dataEnd);
    // A subarray of the chunk the parser never reuses: kept until the ack.
    this.handle = m.buf.subarray(m.replyStart, m.replyEnd);
    const info = ackInfoOf(m.buf, m.replyStart, m.replyEnd, this.info);
    this.deliveryCount = info?.deliveryCount ?? 1;
    this.pending = info?.pending ?? 0;
    return this;
  }

  subject(): string {
    return this.m?.subject ?? '';
  }

  seq(): number {
    return this.info.streamSeq;
  }
}

export class JetStreamConsumer {
  readonly writer: JsonlWriter;
  readonly seen: SeenSet;
  private readonly native: NativeJson | null;
  private readonly log: Logger;
  private readonly counters: JetStreamConsumerStats = { consumed: 0, written: 0, duplicates: 0, redeliveries: 0, malformed: 0, acked: 0, commitFailures: 0, pending: 0 };
  /** Messages waiting for the commit of a batch, by batch id. */
  private readonly waiting = new Map<number, AckHandle[]>();
  private messages: ConsumerMessages | null = null;
  /** Our client's connection and pull (when used). */
  private own: Connection | null = null;
  private pull: PullConsumer | null = null;
  private acker: Acker = NATSJS_ACKER;
  private consumer: Consumer | null = null;
  private stopping = false;
  private stopped: Promise<void> | null = null;
  /** Forgets the ids of a batch whose commit failed (see guard). */
  private readonly commits: CommitGuard;
  private readonly lineOf = (out: ByteBuffer): void => writeJsonLine(out, scanned, Date.now());
  /** Resolves when consumption ends by itself (the consumer deleted, the connection closed). */
  readonly ended: Promise<Error | null>;
  private endWith: (err: Error | null) => void = () => undefined;

  private constructor(private readonly opts: JetStreamConsumerOptions, readonly info: ConsumerInfo) {
    this.log = opts.logger;
    this.writer = JsonlWriter.open({ dir: opts.out, rotateBytes: opts.rotateBytes ?? CONSUMER_DEFAULTS.rotateBytes, maxFiles: opts.maxFiles ?? CONSUMER_DEFAULTS.maxFiles, fsync: opts.fsync, logger: opts.logger });
    const t0 = Date.now();
    this.seen = rebuildSeenSet(listEventFiles(opts.out), positiveInt(opts.dedupWindow ?? CONSUMER_DEFAULTS.dedupWindow, 'dedup window'));
    this.commits = new CommitGuard(this.writer, this.seen, this.counters, this.log, 'output commit failed: those messages were not acked and come back');
    if (this.seen.size > 0) this.log.info({ ids: this.seen.size, ms: Date.now() - t0 }, 'rebuilt the de-duplication set from the output files');
    const native = NativeJson.load();
    this.native = typeof native === 'string' ? null : native;
    if (typeof native === 'string') this.log.warn({ reason: native }, 'JSON fast path unavailable; writing lines in JavaScript');
    this.ended = new Promise((resolve) => (this.endWith = resolve));
  }

  /**
   * Checks the stream, creates or checks the durable, opens the output and starts consuming.
   * Rejects with a ConsumerError that says what to do (unknown stream, a durable set up
   * differently) or with the client's error (connection, permissions).
   */
  static async start(opts: JetStreamConsumerOptions): Promise<JetStreamConsumer> {
    const ackWaitMs = positiveInt(opts.ackWaitMs ?? CONSUMER_DEFAULTS.ackWaitMs, 'ack wait (ms)');
    const maxAckPending = positiveInt(opts.maxAckPending ?? CONSUMER_DEFAULTS.maxAckPending, 'max ack pending');
    const batch = positiveInt(opts.batch ?? CONSUMER_DEFAULTS.batch, 'batch');
    if (batch > maxAckPending) throw new ConsumerError(`batch (${batch}) must not exceed max ack pending (${maxAckPending})`);
    const jsm = await jetstreamManager(opts.nc);
    const info = await ensureDurable(jsm, opts, ackWaitMs, maxAckPending, batch);
    const c = new JetStreamConsumer(opts, info);
    try {
      await c.run(batch);
    } catch (err) {
      await c.writer.close();
      throw err;
    }
    opts.logger.info({ stream: opts.stream, durable: opts.durable, filter: info.config.filter_subject ?? '', ackWaitMs: (info.config.ack_wait ?? 0) / 1e6, maxAckPending: info.config.max_ack_pending, pending: info.num_pending }, 'consuming');
    return c;
  }

  private async run(batch: number): Promise<void> {
    const js = jetstream(this.opts.nc);
    const consumer = await js.consumers.get(this.opts.stream, this.opts.durable);
    this.consumer = consumer;
    const ownOpts = this.opts.connection ? ownConnectionOptions(this.opts.connection) : null;
    if (ownOpts !== null) {
      await this.runOwn(batch, await Connection.connect({ ...ownOpts, name: ownOpts.name ?? 'wgflow-consume' }));
      return;
    }
    const delivery = new NatsJsDelivery();
    const messages = await consumer.consume({ max_messages: batch, expires: CONSUMER_DEFAULTS.pullExpiresMs, callback: (m) => this.onMessage(delivery.set(m)) });
    this.messages = messages;
    void (async () => {
      for await (const s of messages.status()) {
        if (s.type === 'consumer_deleted') this.log.error({ durable: this.opts.durable, description: s.description }, 'the durable consumer was deleted; no more messages');
        else if (s.type === 'consumer_not_found' || s.type === 'stream_not_found') this.log.warn({ stream: this.opts.stream, durable: this.opts.durable, kind: s.type }, 'stream or durable not found; retrying');
        else if (s.type === 'heartbeats_missed') this.log.warn({ count: s.count }, 'missed heartbeats from the server; pulling again');
        else if (s.type === 'exceeded_limits') this.log.warn({ code: s.code, description: s.description }, 'a pull exceeded a server limit');
      }
    })().catch(() => undefined);
    void messages.closed().then((err) => {
      if (!this.stopping) this.endWith(err instanceof Error ? err : null);
    });
  }

  /** Pulls and acks over our own connection (the caller made it; closed by close()). */
  private async runOwn(batch: number, own: Connection): Promise<void> {
    this.own = own;
    const delivery = new OwnDelivery();
    const pull = new PullConsumer(own, { stream: this.opts.stream, durable: this.opts.durable, batch, expiresMs: CONSUMER_DEFAULTS.pullExpiresMs },
      (m) => this.onMessage(delivery.set(m)),
      (s) => {
        if (s.type === 'not_found') this.log.warn({ stream: this.opts.stream, durable: this.opts.durable, why: s.description }, 'stream or durable not found; retrying');
        else if (s.type === 'heartbeats_missed') this.log.warn({ count: s.count }, 'missed heartbeats from the server; pulling again');
        else if (s.type === 'exceeded_limits') this.log.warn({ code: s.code, description: s.description }, 'a pull exceeded a server limit');
        else this.log.debug({ outstanding: s.outstanding }, 'a pull request expired unanswered; pulling again');
      },
      (err) => {
        this.log.error({ durable: this.opts.durable, description: err.message }, 'the durable consumer was deleted; no more messages');
        if (!this.stopping) this.endWith(err);
      });
    this.pull = pull;
    this.acker = {
      ack: (h) => pull.ack(h as Buffer),
      nak: (h, delayMs) => pull.nak(h as Buffer, delayMs),
      term: (h) => pull.term(h as Buffer),
    };
    own.onStatus((s) => {
      if (s.type === 'disconnect') this.log.warn({ server: s.server, reason: s.reason }, 'disconnected from NATS; reconnecting');
      else if (s.type === 'reconnect') this.log.info({ server: s.server }, 'reconnected to NATS');
      else this.log.warn({ err: s.error.message }, 'NATS error');
    });
    void own.whenClosed().then((err) => {
      if (!this.stopping) this.endWith(err ?? new Error('the connection to NATS closed'));
    });
    pull.start();
  }

  private onMessage(m: Delivery): void {
    if (this.stopping) {
      this.acker.nak(m.handle); // arrived while stopping: delivered again at once, to whoever pulls
      return;
    }
    const c = this.counters;
    c.consumed++;
    if (m.deliveryCount > 1) c.redeliveries++;
    c.pending = m.pending;
    const buf = m.data;
    const w = this.writer;
    if (this.native !== null) {
      const n = this.native.write(buf, 0, buf.length, w.lineBuffer, Date.now());
      if (n >= 0) {
        const batch = w.batchId;
        if (this.seen.add(buf, this.native.eventIdAt, batch)) {
          w.commitWritten(n);
          c.written++;
          this.guard(batch);
          this.ackAfter(batch, m.handle);
        } else {
          c.duplicates++;
          this.ackAfter(this.ackBatchOfDuplicate(), m.handle);
        }
        return;
      }
    }
    const ev = scanned;
    let error: string | null;
    try {
      scanFlowEvent(buf, ev);
      error = ev.initiator ? 'an initiator (handshake) message, not an event' : checkScanned(ev, AGGREGATES);
    } catch (err) {
      error = `cannot parse a flow.FlowEvent: ${(err as Error).message}`;
    }
    if (error !== null) {
      c.malformed++;
      this.log.warn({ subject: m.subject(), seq: m.seq(), why: error }, 'terminated a message that is not a storable flow event');
      this.acker.term(m.handle, error);
      return;
    }
    const id = buf.subarray(ev.eventId.s, ev.eventId.e);
    if (!this.seen.add(id, 0, w.batchId)) {
      c.duplicates++;
      this.ackAfter(this.ackBatchOfDuplicate(), m.handle);
      return;
    }
    let batch: number;
    try {
      batch = w.appendWith(this.lineOf);
    } catch (err) {
      this.seen.forgetNewest();
      c.malformed++;
      this.log.warn({ subject: m.subject(), seq: m.seq(), err: (err as Error).message }, 'cannot write the event as JSON; terminated it');
      this.acker.term(m.handle, 'cannot write as JSON');
      return;
    }
    c.written++;
    this.guard(batch);
    this.ackAfter(batch, m.handle);
  }

  /** m is acked when batch is durable, nak'ed (delivered again) if its commit fails. */
  private ackAfter(batch: number, m: AckHandle): void {
    let list = this.waiting.get(batch);
    if (list === undefined) {
      list = [];
      this.waiting.set(batch, list);
      this.writer.afterBatch(batch, (err) => this.onCommitted(batch, err));
    }
    list.push(m);
  }

  private onCommitted(batch: number, err: Error | null): void {
    const list = this.waiting.get(batch);
    this.waiting.delete(batch);
    if (list === undefined) return;
    const a = this.acker;
    if (err !== null) {
      for (const m of list) a.nak(m, CONSUMER_DEFAULTS.retryDelayMs);
      return;
    }
    for (const m of list) a.ack(m);
    this.counters.acked += list.length;
  }

  /**
   * If batch fails to commit, its ids leave the de-duplication set (the messages come back and
   * must be written then, not dropped as duplicates). The collector's rule, see server.ts.
   */
  private guard(batch: number): void {
    this.commits.guard(batch);
  }

  /** The batch whose commit acks a duplicate: the one holding the first copy while it is not durable. */
  private ackBatchOfDuplicate(): number {
    const tag = this.seen.foundTag;
    return tag > this.writer.finishedBatchId ? tag : this.writer.batchId;
  }

  /**
   * Asks the server for the durable's lag (num_pending) now: between deliveries the last one's
   * figure goes stale (a stalled consumer receives nothing). Keeps the old figure on failure.
   */
  async refreshLag(timeoutMs = 1_000): Promise<void> {
    if (this.consumer === null) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      // Bounded: a scrape or a stats line must not wait for the client's own 5 s timeout.
      const info = await Promise.race([
        this.consumer.info(),
        new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs))),
      ]);
      if (info !== null) this.counters.pending = info.num_pending;
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'cannot read the consumer info');
    } finally {
      clearTimeout(timer);
    }
  }

  stats(): JetStreamConsumerStats {
    return { ...this.counters };
  }

  /**
   * Stops pulling, commits what is in hand, acks it and closes the output. Messages delivered
   * after the stop are left unacked: the server delivers them again. The caller then drains the
   * connection (which flushes the acks).
   */
  async close(): Promise<void> {
    if (this.stopped !== null) return this.stopped;
    this.stopping = true;
    this.stopped = (async () => {
      this.pull?.stop();
      await this.messages?.close();
      await this.writer.close();
      // The acks of the last batch are in the connection's buffer: close() writes them and waits
      // for the server's PONG (so they are processed) before closing.
      await this.own?.close();
      this.endWith(null);
    })();
    return this.stopped;
  }
}

/** What our pulls ask for: a durable whose request limits refuse them is refused up front. */
interface PullShape {
  batch: number;
  expiresMs: number;
}

/** What differs between the durable's settings and the ones asked for (empty: fine). */
function differences(have: ConsumerConfig, want: Partial<ConsumerConfig>, pull: PullShape): string[] {
  const out: string[] = [];
  if (have.ack_policy !== AckPolicy.Explicit) out.push(`ack policy is "${have.ack_policy}", not "explicit"`);
  if (have.deliver_subject) out.push(`it is a push consumer (deliver subject ${have.deliver_subject}), not a pull consumer`);
  if ((have.filter_subject ?? '') !== (want.filter_subject ?? '')) out.push(`its filter is "${have.filter_subject ?? ''}", not "${want.filter_subject ?? ''}" (--filter)`);
  // The server refuses (409 Exceeded ...) every pull over these limits: nothing would arrive.
  const maxBatch = have.max_batch ?? 0;
  if (maxBatch > 0 && maxBatch < pull.batch) out.push(`its max_batch is ${maxBatch}, below the batch of ${pull.batch} (--batch ${maxBatch} or less)`);
  const maxExpires = have.max_expires ?? 0;
  if (maxExpires > 0 && maxExpires < nanos(pull.expiresMs)) out.push(`its max_expires is ${maxExpires / 1e6} ms, below the pull expiry of ${pull.expiresMs} ms`);
  if ((have.max_bytes ?? 0) > 0) out.push(`its max_bytes is ${have.max_bytes} (a per-pull byte limit), not unset`);
  return out;
}

/** The stream must exist; the durable is created if missing, else checked (never changed). */
async function ensureDurable(jsm: JetStreamManager, opts: JetStreamConsumerOptions, ackWaitMs: number, maxAckPending: number, batch: number): Promise<ConsumerInfo> {
  try {
    await jsm.streams.info(opts.stream);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === ERR_STREAM_NOT_FOUND) {
      throw new StreamMissingError(opts.stream, opts.servers ?? JETSTREAM_DEFAULTS.servers);
    }
    throw err;
  }
  const want: Partial<ConsumerConfig> = {
    durable_name: opts.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(ackWaitMs),
    max_ack_pending: maxAckPending,
  };
  if (opts.filter !== undefined) want.filter_subject = opts.filter;
  for (let attempt = 0; ; attempt++) {
    let info: ConsumerInfo | null = null;
    try {
      info = await jsm.consumers.info(opts.stream, opts.durable);
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === ERR_CONSUMER_NOT_FOUND)) throw err;
    }
    if (info !== null) {
      const diff = differences(info.config, want, { batch, expiresMs: CONSUMER_DEFAULTS.pullExpiresMs });
      if (diff.length > 0) throw new ConsumerError(`durable "${opts.durable}" on stream "${opts.stream}" exists with other settings: ${diff.join('; ')}. Use another --durable, or delete it first`);
      if (info.config.ack_wait !== want.ack_wait || info.config.max_ack_pending !== want.max_ack_pending) {
        opts.logger.warn({ durable: opts.durable, ackWaitMs: (info.config.ack_wait ?? 0) / 1e6, maxAckPending: info.config.max_ack_pending }, 'the durable exists with another ack wait or max ack pending; using its settings');
      }
      return info;
    }
    try {
      const created = await jsm.consumers.add(opts.stream, want);
      opts.logger.info({ stream: opts.stream, durable: opts.durable }, 'created the durable consumer');
      return created;
    } catch (err) {
      // Another process created it at the same moment (with other settings): check that one.
      if (attempt === 0 && err instanceof JetStreamApiError) continue;
      throw err;
    }
  }
}
