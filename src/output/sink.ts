// Where flow events go. Every output (the gRPC exporter, the JSON-lines file, IPFIX, the
// Prometheus counters) implements EventSink; the daemon holds a list of them, built from the
// configuration in one place (src/daemon/sinks.ts), and hands each batch to every sink in turn.
import type { FlowEvent } from '../model/event';

export interface EventSink {
  /** Names the sink in logs ("collector", "jsonl", "ipfix", "metrics"). */
  readonly name: string;
  /**
   * Takes a batch of events. Returning a promise asks the caller to wait for it before the next
   * batch (backpressure: the output is far behind). Throwing refuses the batch; the caller still
   * hands it to the other sinks.
   */
  emit(events: readonly FlowEvent[]): void | Promise<void>;
  /** Flushes within the deadline and releases what the sink holds. */
  close(deadlineMs: number): Promise<void>;
}
