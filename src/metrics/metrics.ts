// Prometheus metrics (prom-client) on a registry of wgflow's own: names prefixed wgflow_, units in
// the names, _total on counters. Most values are read from the components at scrape time; the
// byte/packet counters are fed from the flow events themselves, so they match the events exactly.
import type { EventSink } from '../output/sink';
import type { Server } from 'node:http';
import { serveMetrics } from './serve';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { KernelStats } from '../datapath/records';
import { DeltaTracker } from '../model/deltas';
import { resourceOf, type FlowEvent } from '../model/event';
import type { PipelineStats } from '../flow/pipeline';
import type { ExporterStats } from '../output/grpc/exporter';
import type { IpfixStats } from '../output/ipfix/exporter';
import { NATS_ERROR_KINDS, type JetStreamExporterStats } from '../output/jetstream/exporter';
import { SOURCE_ERROR_KINDS, type SourceStatus } from '../attribution/sources/source';
import type { DropsStatus } from '../flow/drops';

/** What the daemon exposes to the metrics at scrape time; absent parts are not reported. */
export interface MetricSources {
  kernel?: () => KernelStats;
  pipeline?: () => PipelineStats;
  exporter?: () => ExporterStats;
  ipfix?: () => IpfixStats;
  jetstream?: () => JetStreamExporterStats;
  counting?: () => boolean;
  /** Configured interfaces and whether wgflow is attached to each. */
  interfaces?: () => Array<{ name: string; attached: boolean }>;
  /** The memory budget computed at start and the limit it was checked against. */
  memory?: () => MemoryFigures;
  /** The attribution tables' generation and the live sources (src/daemon/attribution-sources.ts). */
  attribution?: () => { generation: number; sources: SourceStatus[] };
  /** DROP events (src/daemon/drops.ts). */
  drops?: () => DropsStatus;
}

/** The daemon's memory budget as the metrics show it (src/config/memory.ts computes it). */
export interface MemoryFigures {
  /** Resident budget plus the kernel maps: what was checked against the limit. */
  budgetBytes: number;
  /** What the daemon's own resident memory (RSS) stays within. */
  residentBudgetBytes: number;
  /** The flow tracker's per-flow state with the flow maps full. */
  flowStateBudgetBytes: number;
  /** The kernel's flow maps and ring buffer (charged to the daemon's cgroup, not in its RSS). */
  kernelBudgetBytes: number;
  /** memory_limit or the cgroup's limit, whichever is lower; undefined when there is none. */
  limitBytes?: number;
  /** Full collections the memory governor forced to stay within the resident budget. */
  collections?: number;
}

/** Resources get their own label value up to this many; the rest are counted as "other". */
export const MAX_RESOURCE_LABELS = 100;

export class Metrics implements EventSink {
  readonly name = 'metrics';
  readonly registry = new Registry();
  private sources: MetricSources = {};
  private readonly deltas = new DeltaTracker();
  private readonly resourceLabels = new Set<string>();
  private readonly bytes: Counter<'direction'>;
  private readonly packets: Counter<'direction'>;
  private readonly resourceBytes: Counter<'resource' | 'direction'>;
  readonly ackLatency: Histogram;
  readonly jetstreamPublishLatency: Histogram;

  constructor() {
    const r = [this.registry];
    const self = this;
    /** A counter mirroring an absolute, monotonic value read at scrape time. */
    const mirror = (name: string, help: string, read: (s: MetricSources) => number | undefined): void => {
      let last = 0;
      new Counter({
        name, help, registers: r,
        collect(this: Counter) {
          const v = read(self.sources);
          if (v === undefined) return;
          if (v >= last) this.inc(v - last);
          last = v; // a reset source (datapath reopened) restarts from its value
        },
      });
    };
    const gauge = (name: string, help: string, read: (s: MetricSources) => number | undefined): void => {
      new Gauge({
        name, help, registers: r,
        collect(this: Gauge) {
          const v = read(self.sources);
          if (v !== undefined) this.set(v);
        },
      });
    };

    gauge('wgflow_flows_active', 'Flows being tracked now.', (s) => s.pipeline?.().active);
    const lastEvents: Record<string, number> = {};
    new Counter({
      name: 'wgflow_flow_events_total', help: 'Flow events produced, by type.', labelNames: ['type'], registers: r,
      collect(this: Counter<'type'>) {
        const p = self.sources.pipeline?.();
        if (!p) return;
        for (const [type, cur] of Object.entries(p.events)) {
          if (cur > (lastEvents[type] ?? 0)) this.inc({ type }, cur - (lastEvents[type] ?? 0));
          lastEvents[type] = cur;
        }
      },
    });
    mirror('wgflow_flows_discovered_without_start_total', 'Flows found by a map read without a START record (ring buffer full or record not read yet).', (s) => s.pipeline?.().discoveredWithoutStart);
    mirror('wgflow_flows_adopted_total', 'Flows found in the pinned kernel maps at startup (restart).', (s) => s.pipeline?.().adopted);
    mirror('wgflow_flows_adopted_idle_ended_total', 'Adopted flows ended because nothing moved for the UDP idle timeout after the adoption.', (s) => s.pipeline?.().adoptedIdleEnded);
    mirror('wgflow_flows_filtered_total', 'Flows not exported because of the DNS or include/exclude filters.', (s) => s.pipeline?.().filtered);
    mirror('wgflow_flows_exit_node_skipped_total', 'Flows not exported because they are exit-node traffic.', (s) => s.pipeline?.().exitNodeSkipped);
    mirror('wgflow_late_start_records_total', 'START records read after their flow was found by a drain and ended (the ring read lagged): dropped, not a second START.', (s) => s.pipeline?.().lateStartRecords);
    mirror('wgflow_late_packets_after_end_total', 'Packets of TCP connections that arrived after their END (not exported as flows).', (s) => s.pipeline?.().lateAfterEndPackets);
    mirror('wgflow_events_dropped_total', 'Events lost because the output refused them (see logs).', (s) => s.pipeline?.().eventsDropped);

    mirror('wgflow_kernel_flows_created_total', 'Flow entries created by the BPF programs.', (s) => s.kernel?.().flowsCreated);
    mirror('wgflow_kernel_ringbuf_drops_total', 'Ring buffer records (START or FIN/RST hints) dropped because the ring was full.', (s) => s.kernel?.().ringbufFull);
    mirror('wgflow_kernel_flow_map_full_packets_total', 'Packets not counted in a flow because the flow map was full.', (s) => s.kernel?.().mapFull);
    mirror('wgflow_kernel_flow_map_full_bytes_total', 'Bytes of those packets.', (s) => s.kernel?.().mapFullBytes);
    mirror('wgflow_kernel_malformed_packets_total', 'Packets with a truncated or invalid IP or transport header.', (s) => s.kernel?.().malformed);
    mirror('wgflow_kernel_non_ip_packets_total', 'Frames that are not IPv4 or IPv6.', (s) => s.kernel?.().nonIp);
    gauge('wgflow_kernel_byte_counting_enabled', '1 when the kernel counts bytes and packets, 0 when byte reporting is off.', (s) => (s.counting ? (s.counting() ? 1 : 0) : undefined));

    this.bytes = new Counter({ name: 'wgflow_bytes_total', help: 'IP bytes reported in flow events, by direction (rx received, tx sent by this peer).', labelNames: ['direction'], registers: r });
    this.packets = new Counter({ name: 'wgflow_packets_total', help: 'Packets reported in flow events, by direction.', labelNames: ['direction'], registers: r });
    this.resourceBytes = new Counter({
      name: 'wgflow_resource_bytes_total', labelNames: ['resource', 'direction'], registers: r,
      help: `IP bytes by resource (id; the first ${MAX_RESOURCE_LABELS} resources seen, the rest as "other"; "none" for peer-to-peer).`,
    });

    gauge('wgflow_export_queue_events', 'Events in the spool not yet acknowledged (waiting or in flight).', (s) => {
      const e = s.exporter?.();
      return e ? e.queued + e.inFlight : undefined;
    });
    gauge('wgflow_export_in_flight_events', 'Events sent to the collector and waiting for their ack.', (s) => s.exporter?.().inFlight);
    gauge('wgflow_spool_bytes', 'Size of the spool segment files on disk.', (s) => s.exporter?.().spoolBytes);
    mirror('wgflow_export_acks_total', 'Events acknowledged by the collector.', (s) => s.exporter?.().acked);
    mirror('wgflow_export_reconnects_total', 'Collector streams that ended and were retried.', (s) => s.exporter?.().reconnects);
    mirror('wgflow_spool_dropped_events_total', 'Unacknowledged events dropped because the spool was full.', (s) => s.exporter?.().dropped);
    mirror('wgflow_spool_corrupt_records_total', 'Corrupt or truncated spool records skipped.', (s) => s.exporter?.().corruptSkipped);
    mirror('wgflow_spool_quarantined_records_total', 'Spool records read back that were not valid events: moved to quarantine.records, not sent.', (s) => s.exporter?.().quarantined);
    mirror('wgflow_export_bad_events_total', 'Events that could not be encoded: left out of their batch (see logs).', (s) => s.exporter?.().badEvents);
    gauge('wgflow_collector_connected', '1 while the stream to the collector is up.', (s) => (s.exporter ? (s.exporter().connected ? 1 : 0) : undefined));
    this.ackLatency = new Histogram({
      name: 'wgflow_export_ack_latency_seconds', help: 'Time from sending an event to its ack.', registers: r,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    });

    mirror('wgflow_jetstream_published_total', 'Events published to JetStream (retries included).', (s) => s.jetstream?.().published);
    mirror('wgflow_jetstream_acked_total', 'Events the stream acknowledged (PubAcks, duplicates included): removed from the JetStream spool.', (s) => s.jetstream?.().acked);
    mirror('wgflow_jetstream_duplicates_total', 'PubAcks saying the stream already held the event id (a resend absorbed by the duplicate window).', (s) => s.jetstream?.().duplicates);
    gauge('wgflow_jetstream_in_flight_events', 'Events published and waiting for their PubAck.', (s) => s.jetstream?.().inFlight);
    gauge('wgflow_jetstream_queue_events', 'Events in the JetStream spool not yet acknowledged (waiting or in flight).', (s) => {
      const j = s.jetstream?.();
      return j ? j.queued + j.inFlight : undefined;
    });
    gauge('wgflow_jetstream_spool_bytes', 'Size of the JetStream spool segment files on disk.', (s) => s.jetstream?.().spoolBytes);
    gauge('wgflow_jetstream_connected', '1 while connected to NATS with the stream checked.', (s) => (s.jetstream ? (s.jetstream().connected ? 1 : 0) : undefined));
    const lastJsErrors: Record<string, number> = {};
    new Counter({
      name: 'wgflow_jetstream_errors_total', labelNames: ['kind'], registers: r,
      help: 'Failed JetStream publishes, connections and stream checks by kind: unreachable, auth (credentials refused), permission (subject not allowed), stream (missing or other settings), timeout, no_jetstream, other.',
      collect(this: Counter<'kind'>) {
        const x = self.sources.jetstream?.();
        if (!x) return;
        for (const kind of NATS_ERROR_KINDS) {
          const cur = x.errors[kind], last = lastJsErrors[kind] ?? 0;
          // Every kind from the start (at 0), so a rate() sees the first error.
          this.inc({ kind }, cur > last ? cur - last : 0);
          lastJsErrors[kind] = cur;
        }
      },
    });
    this.jetstreamPublishLatency = new Histogram({
      name: 'wgflow_jetstream_publish_latency_seconds', help: 'Time from publishing an event to JetStream to its PubAck.', registers: r,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    });

    mirror('wgflow_ipfix_messages_total', 'IPFIX messages sent (templates included).', (s) => s.ipfix?.().messages);
    mirror('wgflow_ipfix_records_total', 'IPFIX data records sent (option records included).', (s) => s.ipfix?.().records);
    const lastIpfixErrors: Record<string, number> = {};
    new Counter({
      name: 'wgflow_ipfix_send_errors_total', labelNames: ['kind'], registers: r,
      help: 'IPFIX send errors by kind: refused (ICMP port unreachable: no collector listening), unreachable (no route), unresolved (messages dropped, the host does not resolve), other.',
      collect(this: Counter<'kind'>) {
        const x = self.sources.ipfix?.();
        if (!x) return;
        for (const [kind, cur] of Object.entries(x.errors)) {
          const last = lastIpfixErrors[kind] ?? 0;
          // Every kind is exported from the start (at 0), so a rate() sees the first error.
          this.inc({ kind }, cur > last ? cur - last : 0);
          lastIpfixErrors[kind] = cur;
        }
      },
    });

    gauge('wgflow_memory_budget_bytes', 'Memory budget computed at start from the settings: resident budget plus the kernel flow maps (checked against the memory limit).', (s) => s.memory?.().budgetBytes);
    gauge('wgflow_memory_budget_resident_bytes', 'Part of the budget that is the daemon\'s own resident memory: base, flow state, one flow map read, export buffers.', (s) => s.memory?.().residentBudgetBytes);
    gauge('wgflow_flow_state_budget_bytes', 'Flow tracker state with both flow maps full (worst case), part of the resident budget.', (s) => s.memory?.().flowStateBudgetBytes);
    gauge('wgflow_memory_budget_kernel_bytes', 'Kernel memory of the flow maps and the ring buffer (charged to the daemon\'s cgroup, not in its RSS).', (s) => s.memory?.().kernelBudgetBytes);
    gauge('wgflow_resident_memory_bytes', 'The daemon\'s resident memory (RSS) now.', () => process.memoryUsage.rss());
    let collectionsSeen = 0;
    new Counter({
      name: 'wgflow_memory_collections_total', help: 'Full garbage collections forced to keep the resident memory within its budget (src/daemon/memory-governor.ts).', registers: r,
      collect(this: Counter) {
        const cur = self.sources.memory?.().collections ?? 0;
        if (cur > collectionsSeen) this.inc(cur - collectionsSeen);
        collectionsSeen = cur;
      },
    });

    gauge('wgflow_drop_events_enabled', '1 while DROP events are on, 0 when off or unavailable on this kernel (see wgflow ctl status).', (s) => (s.drops ? (s.drops().state === 'on' ? 1 : 0) : undefined));
    mirror('wgflow_drop_events_total', 'DROP events made (at most one per drop key and window).', (s) => s.drops?.().reporter.events);
    mirror('wgflow_drop_events_lost_total', 'DROP events an output refused (see logs), as wgflow_events_dropped_total for flows.', (s) => s.drops?.().reporter.lostEvents);
    mirror('wgflow_drop_events_filtered_packets_total', 'Dropped packets not reported: the DNS or include/exclude filters leave them out, as they do flows.', (s) => s.drops?.().reporter.filteredPackets);
    mirror('wgflow_drop_map_full_packets_total', 'Dropped packets of watched interfaces not aggregated because the drop map was full (datapath.drop_keys).', (s) => s.drops?.().probe?.mapFull);
    mirror('wgflow_drop_unparsed_total', 'Drops on watched interfaces whose IP header could not be read.', (s) => s.drops?.().probe?.unparsed);
    for (const [unit, field] of [['packets', 'packets'], ['bytes', 'bytes']] as const) {
      const last = new Map<string, number>();
      new Counter({
        name: `wgflow_dropped_${unit}_total`, labelNames: ['reason'], registers: r,
        help: `${unit === 'packets' ? 'Packets' : 'IP bytes'} the kernel dropped that came in through or were headed out to a watched interface, by drop reason (while DROP events were on).`,
        collect(this: Counter<'reason'>) {
          for (const c of self.sources.drops?.().reasons ?? []) {
            const cur = c[field];
            const prev = last.get(c.reason) ?? 0;
            if (cur > prev) this.inc({ reason: c.reason }, cur - prev);
            last.set(c.reason, cur);
          }
        },
      });
    }

    gauge('wgflow_attribution_generation', 'Attribution tables generation: +1 every time new tables are swapped in (reload or a live source change).', (s) => s.attribution?.().generation);
    const sources = (): SourceStatus[] => self.sources.attribution?.().sources ?? [];
    new Gauge({
      name: 'wgflow_attribution_source_age_seconds', help: 'Age of the snapshot in use of each live attribution source (since its last good read).', labelNames: ['source'], registers: r,
      collect(this: Gauge<'source'>) {
        this.reset();
        const now = Date.now();
        for (const src of sources()) if (src.lastSuccessMs !== null) this.set({ source: src.name }, (now - src.lastSuccessMs) / 1000);
      },
    });
    new Gauge({
      name: 'wgflow_attribution_source_up', help: '1 when the last read of the live attribution source succeeded, 0 while it fails (the last good snapshot stays in use).', labelNames: ['source'], registers: r,
      collect(this: Gauge<'source'>) {
        this.reset();
        for (const src of sources()) this.set({ source: src.name }, src.failing ? 0 : 1);
      },
    });
    new Gauge({
      name: 'wgflow_attribution_source_objects', help: 'Objects in the snapshot in use of each live attribution source, by kind.', labelNames: ['source', 'kind'], registers: r,
      collect(this: Gauge<'source' | 'kind'>) {
        this.reset();
        for (const src of sources()) for (const [kind, n] of Object.entries(src.counts)) this.set({ source: src.name, kind }, n);
      },
    });
    const lastSourceErrors = new Map<string, number>();
    new Counter({
      name: 'wgflow_attribution_source_errors_total', labelNames: ['source', 'kind'], registers: r,
      help: 'Failed reads of live attribution sources by kind: unauthorized, forbidden, rate_limited, server, timeout, network, invalid (a malformed answer), tables (a snapshot the tables refuse).',
      collect(this: Counter<'source' | 'kind'>) {
        for (const src of sources()) {
          for (const kind of SOURCE_ERROR_KINDS) {
            const k = `${src.name}/${kind}`;
            const cur = src.errors[kind];
            const last = lastSourceErrors.get(k) ?? 0;
            this.inc({ source: src.name, kind }, cur > last ? cur - last : 0);
            lastSourceErrors.set(k, cur);
          }
        }
      },
    });

    new Gauge({
      name: 'wgflow_interface_attached', help: '1 when wgflow is attached to the configured interface, 0 while it waits for it.', labelNames: ['interface'], registers: r,
      collect(this: Gauge<'interface'>) {
        this.reset();
        for (const i of self.sources.interfaces?.() ?? []) this.set({ interface: i.name }, i.attached ? 1 : 0);
      },
    });
  }

  /** Where scrape-time values come from (replaceable, e.g. after a reload). */
  bind(sources: MetricSources): void {
    this.sources = sources;
    // Only when a limit applies: a 0 would read as "no memory at all".
    if (sources.memory?.().limitBytes !== undefined && !this.registry.getSingleMetric('wgflow_memory_limit_bytes')) {
      const self = this;
      new Gauge({
        name: 'wgflow_memory_limit_bytes', help: 'The memory limit the budget was checked against: memory_limit or the cgroup\'s memory limit, whichever is lower.', registers: [this.registry],
        collect(this: Gauge) {
          const v = self.sources.memory?.().limitBytes;
          if (v !== undefined) this.set(v);
        },
      });
    }
  }

  /** EventSink: observeEvents. */
  emit(events: readonly FlowEvent[]): void {
    this.observeEvents(events);
  }

  /** EventSink: nothing to flush (the HTTP listener is the daemon's to close). */
  close(): Promise<void> {
    return Promise.resolve();
  }

  /** Count the bytes and packets of flow events (call with every event the daemon emits). */
  observeEvents(events: readonly FlowEvent[]): void {
    for (const ev of events) {
      const d = this.deltas.next(ev);
      if (!d) continue;
      this.bytes.inc({ direction: 'rx' }, d.rxBytes);
      this.bytes.inc({ direction: 'tx' }, d.txBytes);
      this.packets.inc({ direction: 'rx' }, d.rxPackets);
      this.packets.inc({ direction: 'tx' }, d.txPackets);
      const res = resourceOf(ev)?.id ?? '';
      const label = res === '' ? 'none' : this.resourceLabel(res);
      this.resourceBytes.inc({ resource: label, direction: 'rx' }, d.rxBytes);
      this.resourceBytes.inc({ resource: label, direction: 'tx' }, d.txBytes);
    }
  }

  private resourceLabel(id: string): string {
    if (this.resourceLabels.has(id)) return id;
    if (this.resourceLabels.size >= MAX_RESOURCE_LABELS) return 'other';
    this.resourceLabels.add(id);
    return id;
  }

  /** Serve /metrics on host:port; rejects with a clear message when the port is taken. */
  listen(hostPort: string): Promise<Server> {
    return serveMetrics(this.registry, hostPort);
  }
}
