// The flow loop: ring records and periodic map drains into the tracker, due kernel deletes, and
// the resulting events out to a sink. One sequential loop, so the tracker never sees a drain and
// a delete of the same flow interleave (docs/lifecycle.md).
//
//   poll (<= pollTimeoutMs, shorter when a close is due sooner) -> tracker.onRingBatch (onRecords)
//   every drainIntervalMs: readFlows -> tracker.onDrain
//   tracker.dueDeletes -> deleteFlows (final counters) -> tracker.onDeleted (ENDs)
//   sink(events)
import { sysfsInterfaceNames } from '../net/netdev';
import { readBootId } from './ids';
import type { FlowAttributor } from '../attribution/attributor';
import { type FlowCounters, type FlowEntryList, type FlowKey, FlowMapRead, RECORD_SIZE, type RingRecord } from '../datapath/records';
import type { FlowEvent } from '../model/event';
import { FlowTracker, type TrackerOptions, type TrackerStats } from './tracker';

/** The part of the datapath the flow engine reads and deletes through (Datapath fits; tests fake it). */
export interface FlowSource {
  /** Every kernel flow entry (a FlowMapRead from the datapath; a plain array from a fake). */
  readFlows(): Promise<FlowEntryList>;
  /** The same in chunks, when the source can (the datapath): the drain then holds one chunk at a time. */
  readFlowChunks?(): AsyncIterable<FlowEntryList>;
  /** Delete and return the final counters, read atomically with the delete (undefined: already gone). */
  deleteFlows(keys: FlowKey[]): Promise<(FlowCounters | undefined)[]>;
}

/** A FlowSource with the ring buffer. */
export interface RecordSource extends FlowSource {
  /** One batch of ring records, waiting at most timeoutMs when there are none. */
  poll(timeoutMs?: number): Promise<RingRecord[]>;
  /**
   * The same batch as the kernel wrote it, when the source can (the datapath): read in place,
   * valid until the next poll.
   */
  pollShared?(timeoutMs?: number): Promise<Uint8Array>;
}

export type EventSink = (events: FlowEvent[]) => void | Promise<void>;


/** Events per sink call (see emitInChunks). */
export const EMIT_CHUNK = 2048;

/**
 * Hands events to the sink in chunks of EMIT_CHUNK, yielding to the event loop between them: a
 * burst (a million flows after a ring overflow, a full drop map) then streams through the sink's
 * own backpressure instead of building every output line at once, and the control socket and
 * metrics keep answering meanwhile. Each chunk goes to sunk or, when the sink refused it (not
 * retried), to refused.
 */
export async function emitInChunks(
  events: FlowEvent[], sink: EventSink, sunk: (chunk: FlowEvent[]) => void, refused: (chunk: FlowEvent[], err: unknown) => void,
): Promise<void> {
  for (let i = 0; i < events.length; i += EMIT_CHUNK) {
    const chunk = events.length <= EMIT_CHUNK ? events : events.slice(i, i + EMIT_CHUNK);
    try {
      await sink(chunk);
      sunk(chunk);
    } catch (err) {
      refused(chunk, err);
    }
    if (i + EMIT_CHUNK < events.length) await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
/** Drain entries decoded and handed to the tracker at a time (their events go to the sink once EMIT_CHUNK are ready). */
export const DRAIN_SLICE = 4096;

/** The pipeline's defaults (datapath.drain_interval_ms and poll_timeout_ms default to these). */
export const PIPELINE_DEFAULTS = { drainIntervalMs: 1000, pollTimeoutMs: 100 } as const;
export type PipelineStage = 'poll' | 'drain' | 'delete' | 'sink';

export interface PipelineOptions {
  source: RecordSource;
  sink: EventSink;
  /** A ready tracker; otherwise one is built from trackerOptions and attributor. */
  tracker?: FlowTracker;
  trackerOptions?: TrackerOptions;
  attributor?: FlowAttributor;
  /** How often the kernel maps are read (default 1000 ms). */
  drainIntervalMs?: number;
  /** Longest wait for ring records (default 100 ms). */
  pollTimeoutMs?: number;
  /** Errors of the source or the sink (the loop keeps running). Default: ignored (counted in stats). */
  onError?: (err: unknown, stage: PipelineStage) => void;
}

export interface PipelineStats extends TrackerStats {
  running: boolean;
  polls: number;
  records: number;
  drains: number;
  /** Duration of the last drain (readFlows + onDrain), ms. */
  lastDrainMs: number;
  drainedEntries: number;
  deletes: number;
  errors: Record<PipelineStage, number>;
  /** Events handed to the sink / lost because the sink threw. */
  eventsSunk: number;
  eventsDropped: number;
}

export interface StopOptions {
  /**
   * End every active flow with END reason 'forced', deleting its kernel entry for the final
   * counters (default true: SIGTERM). False: emit nothing and leave the kernel entries for a
   * successor that adopts them (pinned maps), which re-derives the same ids.
   */
  forceEnd?: boolean;
  /** Same as forceEnd: false. Both true is contradictory and throws. */
  keepKernelState?: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class FlowPipeline {
  readonly tracker: FlowTracker;
  private readonly source: RecordSource;
  private readonly sink: EventSink;
  private readonly drainNs: number;
  private readonly pollMs: number;
  private readonly onError: (err: unknown, stage: PipelineStage) => void;
  private loop: Promise<void> | null = null;
  private runningFlag = false;
  private nextDrainNs = 0;
  private deleteRetryNs = 0;
  private stopped = false;
  private readonly s = {
    polls: 0, records: 0, drains: 0, lastDrainMs: 0, drainedEntries: 0, deletes: 0,
    errors: { poll: 0, drain: 0, delete: 0, sink: 0 } as Record<PipelineStage, number>,
    eventsSunk: 0, eventsDropped: 0,
  };

  constructor(opts: PipelineOptions) {
    this.source = opts.source;
    this.sink = opts.sink;
    // The tracker does no I/O: what it needs from the system (the boot id, interface names) is read here.
    const to = opts.trackerOptions;
    this.tracker = opts.tracker ?? new FlowTracker({
      ...to, attributor: opts.attributor ?? to?.attributor, bootId: to?.bootId ?? readBootId(), interfaceName: to?.interfaceName ?? sysfsInterfaceNames(),
    });
    const drainMs = opts.drainIntervalMs ?? PIPELINE_DEFAULTS.drainIntervalMs;
    if (!(drainMs > 0)) throw new RangeError(`drainIntervalMs must be > 0, got ${drainMs}`);
    this.drainNs = drainMs * 1e6;
    this.pollMs = opts.pollTimeoutMs ?? PIPELINE_DEFAULTS.pollTimeoutMs;
    this.onError = opts.onError ?? (() => undefined);
  }

  get running(): boolean {
    return this.runningFlag;
  }

  /** Start the loop (the first drain happens at once: it adopts flows left by a previous run). */
  start(): void {
    if (this.runningFlag) return;
    if (this.stopped) throw new Error('a stopped pipeline cannot be restarted');
    this.runningFlag = true;
    this.nextDrainNs = this.tracker.clock.monoNs();
    this.loop = (async () => {
      while (this.runningFlag) await this.step();
    })();
  }

  /**
   * Stop the loop (within one poll timeout) and, by default, end every flow (END 'forced').
   * Resolves when the last events were handed to the sink.
   */
  async stop(opts: StopOptions = {}): Promise<void> {
    if (opts.forceEnd === true && opts.keepKernelState === true) {
      throw new TypeError('stop(): forceEnd and keepKernelState exclude each other');
    }
    const forceEnd = opts.forceEnd ?? !(opts.keepKernelState ?? false);
    this.runningFlag = false;
    this.stopped = true;
    if (this.loop) await this.loop;
    this.loop = null;
    if (!forceEnd) return;
    const keys = this.tracker.forceEndAll();
    if (keys.length === 0) return;
    let finals: (FlowCounters | undefined)[] = [];
    try {
      finals = await this.source.deleteFlows(keys);
      this.s.deletes += keys.length;
    } catch (err) {
      this.s.errors.delete++;
      this.onError(err, 'delete'); // END with the last drained counters
    }
    await this.emit(this.tracker.onDeleted(keys, finals));
  }

  /** One iteration of the loop (exposed for tests that drive the pipeline step by step). */
  async step(): Promise<void> {
    const clock = this.tracker.clock;
    let now = clock.monoNs();
    const wakeNs = Math.min(this.nextDrainNs, Math.max(this.tracker.nextDueNs(), this.deleteRetryNs));
    const timeout = Math.max(0, Math.min(this.pollMs, Math.ceil((wakeNs - now) / 1e6)));
    const events: FlowEvent[] = [];
    let records: RingRecord[] = [];
    let raw: Uint8Array | null = null;
    try {
      if (this.source.pollShared) raw = await this.source.pollShared(timeout);
      else records = await this.source.poll(timeout);
      this.s.polls++;
    } catch (err) {
      this.s.errors.poll++;
      this.onError(err, 'poll');
      await sleep(this.pollMs);
    }
    if (raw !== null && raw.byteLength > 0) {
      // The datapath's batch read in place (no object per record).
      this.s.records += Math.floor(raw.byteLength / RECORD_SIZE);
      for (const e of this.tracker.onRingBatch(raw)) events.push(e);
    }
    if (records.length > 0) {
      this.s.records += records.length;
      for (const e of this.tracker.onRecords(records)) events.push(e);
    }
    now = clock.monoNs();
    if (now >= this.nextDrainNs) {
      this.nextDrainNs = now + this.drainNs;
      try {
        const t0 = process.hrtime.bigint();
        let sinkNs = 0n;
        const chunks = this.source.readFlowChunks ? this.source.readFlowChunks() : [await this.source.readFlows()];
        this.tracker.beginDrain();
        let drained = 0;
        try {
          for await (const entries of chunks) {
            drained += entries.length;
            for (let i = 0; i < entries.length; i += DRAIN_SLICE) {
              const part = entries instanceof FlowMapRead
                ? this.tracker.drainRead(entries, i, i + DRAIN_SLICE) // the kernel's bytes in place
                : this.tracker.drainEntries(entries.slice(i, i + DRAIN_SLICE));
              for (const e of part) events.push(e);
              if (events.length >= EMIT_CHUNK) {
                // A burst of discovered flows: on to the sink now, in order, rather than all at once.
                const s0 = process.hrtime.bigint();
                await this.emit(events.splice(0));
                sinkNs += process.hrtime.bigint() - s0;
              }
            }
          }
        } catch (err) {
          // A read that fails part way: the flows not listed are not missed (that would end them).
          this.tracker.abandonDrain();
          throw err;
        }
        for (const e of this.tracker.endDrain()) events.push(e);
        this.s.lastDrainMs = Number(process.hrtime.bigint() - t0 - sinkNs) / 1e6;
        this.s.drains++;
        this.s.drainedEntries += drained;
      } catch (err) {
        this.s.errors.drain++;
        this.onError(err, 'drain');
      }
      now = clock.monoNs();
    }
    if (now >= this.deleteRetryNs) {
      const keys = this.tracker.dueDeletes(now);
      if (keys.length > 0) {
        try {
          const finals = await this.source.deleteFlows(keys);
          this.s.deletes += keys.length;
          for (const e of this.tracker.onDeleted(keys, finals)) events.push(e);
        } catch (err) {
          this.tracker.abortDeletes(keys);
          this.deleteRetryNs = now + this.pollMs * 1e6;
          this.s.errors.delete++;
          this.onError(err, 'delete');
        }
      }
    }
    if (events.length > 0) await this.emit(events);
  }

  private emit(events: FlowEvent[]): Promise<void> {
    return emitInChunks(events, this.sink, (chunk) => {
      this.s.eventsSunk += chunk.length;
    }, (chunk, err) => {
      this.s.errors.sink++;
      this.s.eventsDropped += chunk.length;
      this.onError(err, 'sink');
    });
  }

  stats(): PipelineStats {
    const s = this.s;
    return { ...this.tracker.stats(), running: this.runningFlag, ...s, errors: { ...s.errors } };
  }
}
