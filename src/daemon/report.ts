// What `wgflow ctl status` and `wgflow ctl flows` answer: plain data, formatted by the CLI.
import type { KernelStats } from '../datapath/records';
import type { ExporterStats } from '../output/grpc/exporter';
import type { AggregatorStats } from '../output/aggregator';
import { resourceOf, type FlowEvent } from '../model/event';
import type { PipelineStats } from '../flow/pipeline';
import type { IpfixStats } from '../output/ipfix/exporter';
import type { JetStreamExporterStats } from '../output/jetstream/exporter';
import type { WgflowConfig } from '../config/config';
import type { MemoryBudget, MemoryLimit, MemoryPlan } from '../config/memory';
import { readFileSync } from 'node:fs';
import type { InterfaceState } from './interfaces';
import type { SourceStatus } from './attribution-sources';
import type { DropsStatus } from '../flow/drops';
import { version } from '../util/version';

export interface StatusReport {
  version: string;
  uptimeSeconds: number;
  reporterId: string;
  counting: boolean;
  interfaces: InterfaceState[];
  flowsActive: number;
  events: Record<string, number>;
  drops: { ringbufFull: number; mapFullPackets: number; discoveredWithoutStart: number; eventsDropped: number; spoolDropped: number; spoolQuarantined: number; badEvents: number };
  kernel: KernelStats;
  /** aggregate: set with collector.profile netbird-aggregated. */
  output: { kind: 'collector'; url: string; stats: ExporterStats; aggregate?: AggregatorStats } | { kind: 'file'; dir: string };
  ipfix?: IpfixStats & { targets: string[] };
  jetstream?: JetStreamExporterStats & { servers: string; stream: string };
  memory: MemoryStatus;
  /** The tables' generation and the live sources. */
  attribution: { generation: number; sources: SourceStatus[] };
  /** DROP events: on, off or unavailable, and what the probe saw. */
  dropEvents?: DropsStatus;
}

/** The memory budget computed at start, the limit it was checked against, and the RSS now. */
export interface MemoryStatus extends MemoryBudget {
  limit?: MemoryLimit;
  /** VmRSS and VmHWM (peak) of the daemon now. */
  residentNowBytes: number;
  residentPeakBytes: number;
}

/** This process's VmRSS and VmHWM (process.memoryUsage's RSS for both where /proc is not there). */
export function residentMemory(): { now: number; peak: number } {
  try {
    const text = readFileSync('/proc/self/status', 'utf8');
    const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
    const now = kb('VmRSS'), peak = kb('VmHWM');
    if (Number.isFinite(now) && Number.isFinite(peak)) return { now, peak };
  } catch {
    /* not Linux: below */
  }
  const rss = process.memoryUsage.rss();
  return { now: rss, peak: rss };
}

export function statusReport(s: {
  startedAt: number; cfg: WgflowConfig; interfaces: InterfaceState[]; counting: boolean; pipeline: PipelineStats; kernel: KernelStats;
  exporter?: ExporterStats; aggregator?: AggregatorStats; ipfix?: IpfixStats; jetstream?: JetStreamExporterStats; memory: MemoryPlan;
  attribution: { generation: number; sources: SourceStatus[] }; dropEvents?: DropsStatus;
}): StatusReport {
  const rss = residentMemory();
  return {
    version: version(),
    uptimeSeconds: Math.round((Date.now() - s.startedAt) / 1000),
    reporterId: s.cfg.reporter_id,
    counting: s.counting,
    interfaces: s.interfaces,
    flowsActive: s.pipeline.active,
    events: { ...s.pipeline.events },
    drops: {
      ringbufFull: s.kernel.ringbufFull,
      mapFullPackets: s.kernel.mapFull,
      discoveredWithoutStart: s.pipeline.discoveredWithoutStart,
      eventsDropped: s.pipeline.eventsDropped,
      spoolDropped: s.exporter?.dropped ?? 0,
      spoolQuarantined: s.exporter?.quarantined ?? 0,
      badEvents: s.exporter?.badEvents ?? 0,
    },
    kernel: s.kernel,
    output: s.exporter && s.cfg.collector.url
      ? { kind: 'collector', url: s.cfg.collector.url, stats: s.exporter, ...(s.aggregator ? { aggregate: s.aggregator } : {}) }
      : { kind: 'file', dir: s.cfg.output.dir },
    ipfix: s.ipfix ? { ...s.ipfix, targets: s.cfg.ipfix } : undefined,
    jetstream: s.jetstream ? { ...s.jetstream, servers: s.cfg.jetstream.servers ?? '', stream: s.cfg.jetstream.stream } : undefined,
    memory: { ...s.memory.budget, limit: s.memory.limit, residentNowBytes: rss.now, residentPeakBytes: rss.peak },
    attribution: s.attribution,
    dropEvents: s.dropEvents,
  };
}

/** One active flow as `ctl flows` shows it. */
export interface FlowRow {
  flowId: string;
  startedMs: number;
  direction: string;
  protocol: number;
  source: string;
  destination: string;
  port: string;
  rxBytes: number;
  txBytes: number;
  resource: string;
  policy: string;
  interfaceName: string;
}

/** The view of an in-progress flow the tracker gives (an event-shaped snapshot with counters so far). */
export interface FlowSnapshotSource {
  snapshot(): FlowEvent[];
}

function endpoint(e: FlowEvent['source']): string {
  return e.name || e.ip;
}

/** The top N active flows by bytes. */
export function activeFlows(tracker: FlowSnapshotSource, top: number): FlowRow[] {
  return tracker.snapshot()
    .sort((a, b) => b.rxBytes + b.txBytes - (a.rxBytes + a.txBytes))
    .slice(0, Math.max(1, top))
    .map((f) => {
      const icmp = f.protocol === 1 || f.protocol === 58;
      const res = resourceOf(f);
      return {
        flowId: f.flowId, startedMs: f.timestampMs, direction: f.direction, protocol: f.protocol,
        source: endpoint(f.source), destination: endpoint(f.destination),
        port: icmp ? `type ${f.icmpType}/${f.icmpCode}` : f.destination.port ? String(f.destination.port) : '',
        rxBytes: f.rxBytes, txBytes: f.txBytes, resource: res ? res.name || res.id : '', policy: f.policyName || f.ruleId, interfaceName: f.interfaceName,
      };
    });
}
