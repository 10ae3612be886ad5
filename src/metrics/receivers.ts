// Prometheus metrics of the receiving side: `wgflow collect` (writing or relaying to JetStream)
// and `wgflow consume`. Values are read from the components' stats at scrape time, so the metrics
// and the stats log lines never disagree; the relay's publish latency is observed per PubAck.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { CollectorStats } from '../collector/server';
import type { JetStreamConsumerStats } from '../collector/jetstream-consumer';

/** PubAck latency buckets (seconds), as the exporter's wgflow_jetstream_publish_latency_seconds. */
export const PUBLISH_LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Helpers that register scrape-time counters and gauges on one registry. */
function readers<S>(registry: Registry, read: () => S | Promise<S>) {
  const r = [registry];
  return {
    /** A counter mirroring an absolute, monotonic value of the stats. */
    counter(name: string, help: string, pick: (s: S) => number): void {
      let last = 0;
      new Counter({
        name, help, registers: r,
        async collect(this: Counter) {
          const v = pick(await read());
          if (v > last) this.inc(v - last);
          last = v;
        },
      });
    },
    gauge(name: string, help: string, pick: (s: S) => number): void {
      new Gauge({
        name, help, registers: r,
        async collect(this: Gauge) {
          this.set(pick(await read()));
        },
      });
    },
  };
}

export interface CollectorMetrics {
  readonly registry: Registry;
  /** Relay only: observe one PubAck's latency in seconds. */
  readonly observePublish: (seconds: number) => void;
}

/** The collector's metrics: wgflow_collector_* (and wgflow_relay_* when it relays). */
export function collectorMetrics(stats: () => CollectorStats, relaying: boolean): CollectorMetrics {
  const registry = new Registry();
  const m = readers(registry, stats);
  m.counter('wgflow_collector_events_received_total', 'Flow event messages received from senders.', (s) => s.received);
  m.counter('wgflow_collector_events_stored_total', relaying ? 'Events stored in the JetStream stream (PubAck, not a duplicate) and acked to their sender.' : 'Events written as JSON lines (acked to their sender once durable).', (s) => s.written);
  m.counter('wgflow_collector_duplicates_total', relaying ? 'Events the stream reported as duplicates (already stored): acked, not stored again.' : 'Events whose id was already written: acked, not written again.', (s) => s.duplicates);
  m.counter('wgflow_collector_malformed_total', 'Messages that were not storable flow events.', (s) => s.malformed);
  m.counter('wgflow_collector_unauthenticated_total', 'Streams refused for a missing or wrong token.', (s) => s.unauthenticated);
  m.counter('wgflow_collector_streams_total', 'Event streams opened by senders.', (s) => s.streams);
  m.gauge('wgflow_collector_streams_open', 'Event streams open now.', (s) => s.openStreams);
  m.gauge('wgflow_collector_connections', 'Connections open now.', (s) => s.connections);
  m.counter('wgflow_collector_refused_connections_total', 'Connections refused at accept (connection limits).', (s) => s.refusedConnections);
  m.counter('wgflow_collector_refused_streams_total', 'Streams refused because the stream limit was reached.', (s) => s.refusedStreams);
  m.counter('wgflow_collector_timeouts_total', 'Connections closed for not authenticating in time or for being idle.', (s) => s.handshakeTimeouts + s.idleClosed);
  m.counter('wgflow_collector_truncated_streams_total', 'Streams a client ended in the middle of a message.', (s) => s.truncated);
  if (!relaying) m.counter('wgflow_collector_commit_failures_total', 'Output commits that failed (their events were not acked; senders resend them).', (s) => s.commitFailures);
  let observePublish: (seconds: number) => void = () => undefined;
  if (relaying) {
    m.counter('wgflow_relay_publish_failures_total', 'Publishes to JetStream that failed or timed out (their events were not acked; senders resend them).', (s) => s.publishFailures);
    const h = new Histogram({ name: 'wgflow_relay_publish_latency_seconds', help: 'Time from publishing a received event to JetStream to its PubAck.', buckets: PUBLISH_LATENCY_BUCKETS, registers: [registry] });
    observePublish = (s) => h.observe(s);
  }
  return { registry, observePublish };
}

/**
 * The consumer's metrics: wgflow_consumer_*. The lag is asked from the server at scrape time
 * (between deliveries the last one's figure goes stale), bounded by refresh's own timeout.
 */
export function consumerMetrics(stats: () => JetStreamConsumerStats, refreshLag: () => Promise<void>): Registry {
  const registry = new Registry();
  // One server round trip per scrape, shared by every metric collected in it.
  let pending: Promise<JetStreamConsumerStats> | null = null;
  const read = (): Promise<JetStreamConsumerStats> => {
    pending ??= refreshLag().then(() => {
      pending = null;
      return stats();
    });
    return pending;
  };
  const m = readers(registry, read);
  m.counter('wgflow_consumer_messages_total', 'Messages delivered to this process (redeliveries included).', (s) => s.consumed);
  m.counter('wgflow_consumer_events_written_total', 'Events written as JSON lines.', (s) => s.written);
  m.counter('wgflow_consumer_acked_total', 'Messages acked (their lines durable).', (s) => s.acked);
  m.counter('wgflow_consumer_duplicates_total', 'Messages whose event id was already written: acked, not written again.', (s) => s.duplicates);
  m.counter('wgflow_consumer_redeliveries_total', 'Messages delivered more than once (not acked in time, or nak\'ed after a failed commit).', (s) => s.redeliveries);
  m.counter('wgflow_consumer_malformed_total', 'Messages that were not flow events: terminated, not written.', (s) => s.malformed);
  m.counter('wgflow_consumer_commit_failures_total', 'Output commits that failed (their messages were nak\'ed and come back).', (s) => s.commitFailures);
  m.gauge('wgflow_consumer_pending_messages', 'Messages of the stream not yet delivered to the durable consumer (its lag).', (s) => s.pending);
  return registry;
}
