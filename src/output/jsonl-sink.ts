// The daemon's own output when there is no collector: each event as one JSON line in
// DIR/events.jsonl (the form of src/model/json.ts), through the group-commit writer.
import type { Logger } from 'pino';
import type { FlowEvent } from '../model/event';
import { toJsonLine } from '../model/json';
import { JsonlWriter } from './jsonl-writer';
import type { EventSink } from './sink';

export interface JsonlSinkOptions {
  dir: string;
  rotateBytes?: number;
  logger?: Logger;
}

/**
 * emit() waits while this many bytes are queued and not yet on disk: a burst (or a full disk)
 * holds the flow engine back instead of piling up in memory. The writer's buffers grow to about
 * twice this (the batch being written and the one filling): 32 MiB made them 64 MiB each at a
 * burst of a million STARTs (peak RSS 407 MiB against 342 with 4 MiB; AMD EPYC VM, BENCHMARKS.md
 * part 7).
 */
export const JSONL_BACKLOG_BYTES = 4 * 1024 * 1024;

/** The writer keeps a burst's buffers until it has been idle this long (they are reused meanwhile). */
export const JSONL_IDLE_RELEASE_MS = 2000;

/** A failed write (full disk) is retried this often: nobody would resend these lines. */
export const JSONL_RETRY_MS = 1000;

export class JsonlSink implements EventSink {
  readonly name = 'jsonl';
  readonly writer: JsonlWriter;

  constructor(opts: JsonlSinkOptions) {
    this.writer = JsonlWriter.open({ dir: opts.dir, rotateBytes: opts.rotateBytes, retryMs: JSONL_RETRY_MS, idleReleaseMs: JSONL_IDLE_RELEASE_MS, logger: opts.logger });
  }

  emit(events: readonly FlowEvent[]): void | Promise<void> {
    const writer = this.writer;
    const now = Date.now();
    for (const ev of events) writer.append(toJsonLine(ev, now));
    if (writer.pendingBytes > JSONL_BACKLOG_BYTES) return new Promise<void>((resolve) => writer.afterCommit(() => resolve()));
  }

  close(): Promise<void> {
    return this.writer.close();
  }
}
