// What every output with a durable spool shares (the gRPC exporter, the JetStream exporter): the
// spool record form, reconnect backoff, and the sink shell — events go to the spool in one write,
// leave it only when their receiver acknowledges them, and a stop waits (up to a deadline) for
// the acks; what is left stays in the spool for the next start. The transports (how a record is
// sent and how its ack comes back) are the subclasses'.
import type { Logger } from 'pino';
import type { FlowEvent } from '../model/event';
import { CodecError } from '../wire/codec';
import { checkScanned, scanFlowEvent, ScannedEvent } from '../wire/reader';
import { writeFlowEventInto } from '../wire/writer';
import type { EventSink } from './sink';
import { SKIP_RECORD, Spool, type SpoolOptions } from './spool';

export interface BackoffOptions {
  /** First delay. NetBird: 800 ms. */
  initialMs?: number;
  /** Growth per failed attempt. NetBird: 1.7. */
  multiplier?: number;
  /** Randomization: delay * (1 +- jitter). NetBird: 0.5. */
  jitter?: number;
  /** Cap of the un-jittered delay. Default 30 s. */
  maxMs?: number;
  /** A stream that lived at least this long resets the backoff. NetBird: 5 s. */
  resetAfterMs?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = { initialMs: 800, multiplier: 1.7, jitter: 0.5, maxMs: 30_000, resetAfterMs: 5_000 };

/** Exponential backoff with jitter (NetBird's parameters by default). */
export class Backoff {
  private current: number;
  constructor(private readonly o: Required<BackoffOptions>, private readonly random: () => number = Math.random) {
    this.current = o.initialMs;
  }
  /** The delay before the next attempt (grows each call). */
  next(): number {
    const base = this.current;
    this.current = Math.min(this.current * this.o.multiplier, this.o.maxMs);
    return Math.round(base * (1 + this.o.jitter * (2 * this.random() - 1)));
  }
  reset(): void {
    this.current = this.o.initialMs;
  }
}

/**
 * A spool record body for an event, straight into spool memory (a BodyWriter): the 16-byte event
 * id, then the encoded event, which starts with the same id (field 1, 16 bytes).
 */
export function writeRecordBody(ev: FlowEvent, buf: Buffer, at: number, end: number): number {
  const e = writeFlowEventInto(ev, buf, at + 16, end);
  if (e < 0) return e - 16;
  if (buf[at + 16] !== 0x0a || buf[at + 17] !== 16) throw new CodecError('encoded event does not start with a 16-byte event_id');
  buf.copyWithin(at, at + 18, at + 34);
  return e;
}

const scratch = new ScannedEvent();

/**
 * Why a spool record read back from disk cannot be sent, or null: the checks the collector makes
 * (a message it cannot parse fails the whole stream), and the record's id must be the event's.
 */
export function validateRecord(id: Buffer, payload: Buffer): string | null {
  try {
    scanFlowEvent(payload, scratch);
  } catch (err) {
    return `not a flow.FlowEvent: ${(err as Error).message}`;
  }
  if (scratch.initiator) return 'an initiator message, not an event';
  // Window aggregates (collector.profile: netbird-aggregated) are valid records too.
  const why = checkScanned(scratch, { aggregates: true });
  if (why !== null) return why;
  const e = scratch.eventId;
  if (e.e - e.s !== 16 || payload.compare(id, 0, 16, e.s, e.e) !== 0) return 'the record id is not the event_id of its event';
  return null;
}

/** The spool's part of a spooled sink's stats. */
export interface SpoolFigures {
  /** In the spool, not yet sent (or waiting for a retry). */
  queued: number;
  /** Dropped because the spool was full. */
  dropped: number;
  corruptSkipped: number;
  /** Spool records read back that were not valid events: quarantined, not sent. */
  quarantined: number;
  /** Events refused at enqueue because they cannot be encoded (the rest of their batch is kept). */
  badEvents: number;
  spoolBytes: number;
}

/** The words a subclass's messages use. */
export interface SpooledSinkText {
  /** Thrown by enqueue after stop: "exporter is stopped: ...". */
  stopped: () => Error;
  /** Who acknowledges: "collector", "JetStream". */
  receiver: string;
  /** What happens to an event: "exported", "published". */
  verb: string;
}

export abstract class SpooledSink implements EventSink {
  abstract readonly name: string;
  protected readonly spool: Spool;
  protected started = false;
  protected stopping = false;
  protected stopped = false;
  private idleWaiters: Array<() => void> = [];
  private badEvents = 0;
  private readonly lastRareLog = new Map<string, number>();

  protected constructor(protected readonly log: Logger, spool: SpoolOptions, private readonly text: SpooledSinkText) {
    this.spool = Spool.open({ logger: log, validate: validateRecord, ...spool });
  }

  /** New records are in the spool: send them when the transport can. */
  protected abstract onEnqueued(): void;

  /** Stops accepting events, waits for acks up to the deadline, closes; see waitForAcks. */
  abstract stop(opts?: { deadlineMs?: number }): Promise<{ queued: number; inFlight: number }>;

  /**
   * Appends events to the spool with one write; when it returns they are in the spool. An event
   * that cannot be encoded is left out, counted (badEvents) and logged. Returns how many were spooled.
   */
  enqueueBatch(events: readonly FlowEvent[]): number {
    if (this.stopping) throw this.text.stopped();
    if (events.length === 0) return 0;
    const bad = this.badEvents;
    this.spool.appendWith(events.length, (k, buf, at, end) => {
      try {
        return writeRecordBody(events[k], buf, at, end);
      } catch (err) {
        if (!(err instanceof CodecError)) throw err;
        // One event we cannot encode must not take the rest of its batch down with it.
        this.badEvents++;
        this.logRare('bad-event', 'error', { eventId: events[k].eventId, flowId: events[k].flowId, err: err.message, badEventsTotal: this.badEvents },
          `an event cannot be encoded: not ${this.text.verb} (the rest of its batch is)`, 1_000);
        return SKIP_RECORD;
      }
    });
    this.onEnqueued();
    return events.length - (this.badEvents - bad);
  }

  /** EventSink: the events go to the spool (see enqueueBatch). */
  emit(events: readonly FlowEvent[]): void {
    this.enqueueBatch(events);
  }

  /** Resolves when every spooled event has been acknowledged. */
  whenIdle(): Promise<void> {
    if (this.spool.unackedCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Call after acks: wakes whenIdle() once the spool holds nothing unacked. */
  protected settleIdle(): void {
    if (this.idleWaiters.length > 0 && this.spool.unackedCount === 0) {
      const ws = this.idleWaiters;
      this.idleWaiters = [];
      for (const r of ws) r();
    }
  }

  /** EventSink: stop() within the deadline; says so when something stays in the spool. */
  async close(deadlineMs: number): Promise<void> {
    const s = await this.stop({ deadlineMs });
    if (s.queued + s.inFlight > 0) this.log.warn({ unacked: s.queued + s.inFlight, spool: this.spool.dir }, `${this.text.receiver} did not ack everything before the deadline: the rest stays in the spool for the next start`);
  }

  /**
   * The first half of a stop: no more events, the spool synced, then wait until everything is
   * acked or deadlineMs passed (default 5 s). The subclass then closes its transport and the spool.
   */
  protected async waitForAcks(deadlineMs = 5_000): Promise<void> {
    this.stopping = true;
    this.spool.sync();
    if (this.started && deadlineMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.whenIdle(), new Promise<void>((r) => (timer = setTimeout(r, deadlineMs)))]);
      clearTimeout(timer);
    }
  }

  /** The spool's figures; inFlight: records sent and not yet acked (not queued). */
  protected spoolFigures(inFlight: number): SpoolFigures {
    const s = this.spool.stats();
    return {
      queued: Math.max(0, s.records - inFlight),
      dropped: s.dropped,
      corruptSkipped: s.corruptSkipped,
      quarantined: s.quarantined,
      badEvents: this.badEvents,
      spoolBytes: s.bytes,
    };
  }

  /** Logs at most once per intervalMs per key (the first time at once); the rest at debug. */
  protected logRare(key: string, level: 'error' | 'warn', obj: object, msg: string, intervalMs = 60_000): void {
    const now = Date.now();
    const last = this.lastRareLog.get(key);
    if (last !== undefined && now - last < intervalMs) {
      this.log.debug(obj, msg);
      return;
    }
    this.lastRareLog.set(key, now);
    this.log[level](obj, msg);
  }
}
