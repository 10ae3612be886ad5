// The one place where the configuration becomes the daemon's outputs. Each is an EventSink; the
// order is the order every batch is handed out in: counters first (cheap, never refuse), then
// IPFIX (fire and forget), then JetStream (its own spool), then the durable output (the collector's spool, or the JSON-lines file
// when there is no collector), whose backpressure the flow engine waits on.
import type { Logger } from 'pino';
import type { WgflowConfig } from '../config/config';
import type { FlowEvent } from '../model/event';
import type { Metrics } from '../metrics/metrics';
import { Exporter } from '../output/grpc/exporter';
import { IpfixExporter } from '../output/ipfix/exporter';
import { JetStreamExporter } from '../output/jetstream/exporter';
import { jetstreamStreamSettings } from '../config/config';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { JsonlSink } from '../output/jsonl-sink';
import { WindowAggregator } from '../output/aggregator';
import type { EventSink } from '../output/sink';

export interface Sinks {
  /** Every sink, in the order batches are handed out. */
  all: EventSink[];
  /** The typed ones the status report and metrics read. */
  exporter?: Exporter;
  ipfix?: IpfixExporter;
  jetstream?: JetStreamExporter;
  jsonl?: JsonlSink;
  /** With collector.profile: netbird-aggregated: what stands before the exporter. */
  aggregator?: WindowAggregator;
}

/** Builds (and starts) the outputs the configuration asks for. */
export function buildSinks(cfg: WgflowConfig, metrics: Metrics, log: Logger): Sinks {
  const s: Sinks = { all: [metrics] };
  try {
    if (cfg.ipfix.length) {
      s.ipfix = new IpfixExporter({ targets: cfg.ipfix, mtu: cfg.ipfix_mtu, templateRefreshMs: cfg.ipfix_template_refresh_s * 1000, logger: log.child({ part: 'ipfix' }) });
      s.ipfix.start();
      s.all.push(s.ipfix);
    }
    const j = cfg.jetstream;
    if (j.servers) {
      // Its own spool, next to the collector's (a spool has one sender: its lock says so).
      s.jetstream = new JetStreamExporter({
        connection: { servers: j.servers, token: j.token, user: j.user, password: j.password, credsFile: j.creds_file, caFile: j.ca_file, certFile: j.cert_file, keyFile: j.key_file, name: `wgflow ${cfg.reporter_id}` },
        stream: jetstreamStreamSettings(cfg),
        maxInFlight: j.max_in_flight,
        spool: { dir: join(cfg.spool.dir, 'jetstream'), maxBytes: cfg.spool.max_bytes, fsync: cfg.spool.fsync, fsyncIntervalMs: cfg.spool.fsync_interval_ms, logger: log.child({ part: 'jetstream-spool' }) },
        logger: log.child({ part: 'jetstream' }),
        onPublishLatency: (ms) => metrics.jetstreamPublishLatency.observe(ms / 1000),
      });
      s.jetstream.start();
      s.all.push(s.jetstream);
    }
    if (cfg.collector.url) {
      s.exporter = new Exporter({
        url: cfg.collector.url, token: cfg.collector.token, caFile: cfg.collector.ca_file, certFile: cfg.collector.cert_file, keyFile: cfg.collector.key_file,
        maxInFlight: cfg.collector.max_in_flight, transport: cfg.collector.transport, logger: log.child({ part: 'exporter' }),
        spool: { dir: cfg.spool.dir, maxBytes: cfg.spool.max_bytes, fsync: cfg.spool.fsync, fsyncIntervalMs: cfg.spool.fsync_interval_ms, logger: log.child({ part: 'spool' }) },
        onAckLatency: (ms) => metrics.ackLatency.observe(ms / 1000),
      });
      s.exporter.start();
      if (cfg.collector.profile === 'netbird-aggregated') {
        // Window aggregates go into the spool instead of the events; its journal lives beside it.
        const exporter = s.exporter;
        s.all.push(exporter); // until the aggregator stands: closed with the rest if it cannot start
        s.aggregator = new WindowAggregator({
          dir: join(cfg.spool.dir, 'aggregate'), windowMs: cfg.collector.aggregate_window_s * 1000, maxGroups: cfg.collector.aggregate_max_groups, target: exporter,
          closeTarget: (ms) => exporter.close(ms), logger: log.child({ part: 'aggregator' }),
        });
        s.all[s.all.length - 1] = s.aggregator;
      } else {
        s.all.push(s.exporter);
        flushLeftWindow(join(cfg.spool.dir, 'aggregate'), cfg.collector.aggregate_window_s * 1000, s.exporter, log);
      }
    } else {
      s.jsonl = new JsonlSink({ dir: cfg.output.dir, rotateBytes: cfg.output.rotate_bytes, logger: log.child({ part: 'output' }) });
      log.info({ dir: cfg.output.dir }, 'no --collector: writing events to events.jsonl there');
      s.all.push(s.jsonl);
    }
  } catch (err) {
    void closeSinks(s, 0);
    throw err;
  }
  return s;
}

/**
 * A netbird-aggregated run killed mid-window left its open window in the journal: after a switch
 * back to the events profile it is sent (closed now) so nothing handed over is lost, then removed.
 */
function flushLeftWindow(dir: string, windowMs: number, exporter: Exporter, log: Logger): void {
  if (!existsSync(join(dir, 'window.journal'))) return;
  const left = new WindowAggregator({ dir, windowMs, target: exporter, logger: log.child({ part: 'aggregator' }), timer: false });
  const open = left.stats().openGroups;
  void left.close(0);
  if (open > 0) log.warn({ groups: open, dir }, 'collector.profile is events: the open window a netbird-aggregated run left is sent as aggregates');
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Hands a batch to every sink. One sink refusing it (throwing) does not keep it from the others;
 * the first error is thrown afterwards, for the caller to log. Waits for any backpressure.
 */
export async function emitAll(sinks: readonly EventSink[], events: readonly FlowEvent[]): Promise<void> {
  let first: unknown = null;
  let waits: Array<Promise<void>> | null = null;
  for (const sink of sinks) {
    try {
      const w = sink.emit(events);
      if (w !== undefined) (waits ??= []).push(w);
    } catch (err) {
      first ??= new Error(`${sink.name}: ${(err as Error).message}`);
    }
  }
  if (waits !== null) await Promise.all(waits);
  if (first !== null) throw first;
}

/** Closes every sink within the deadline (the durable output last: it gets what is left). */
export async function closeSinks(s: Sinks, deadlineMs: number): Promise<void> {
  for (const sink of [...s.all].reverse()) await sink.close(deadlineMs);
}
