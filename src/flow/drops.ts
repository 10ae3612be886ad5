// DROP events: every window, the drop probe's aggregates become one event per drop key
// (direction, addresses, ports, protocol, interface), attributed like flows and named after the
// `action: drop` policy that matches, if one does (docs/events.md, DROP events).
import type { Attributor, AttributionParts } from '../attribution/attributor';
import { UNKNOWN_ENDPOINT, endpointOf } from '../attribution/attributor';
import type { DropReasonCount } from '../datapath/drops';
import { DIR_EGRESS, DropEntry, DropProbeStats, FlowKind } from '../datapath/records';
import { Clock, systemClock, WallConverter } from '../model/clock';
import type { FlowEvent } from '../model/event';
import { ipv4FromBytes, ipv6FromBytes } from '../net/ip';
import { bootNamespace, eventUuid, readBootId, Uuid, uuidV5 } from './ids';
import { emitInChunks } from './pipeline';

/** Where the reporter reads drops from (the drop probe; tests give their own). */
export interface DropSource {
  drain(): Promise<DropEntry[]>;
}

export interface DropReporterOptions {
  source: DropSource;
  attributor: Attributor;
  /** Takes each window's events (the daemon's sinks); resolves once they took them. */
  sink: (events: FlowEvent[]) => Promise<void>;
  reporterId: string;
  reporterPublicKey?: string;
  /** A kernel drop reason's name (src/datapath/drops.ts: from the kernel's BTF). */
  reasonName: (reason: number) => string;
  /** The name of the watched interface with this ifindex. */
  interfaceName: (ifindex: number) => string;
  /** How often the aggregates are read and reported: at most one event per drop key per window. */
  windowMs?: number;
  clock?: Clock;
  bootId?: string;
  /** A window that could not be read ('drain') or whose events a sink refused ('sink'). */
  onError?: (err: unknown, stage: 'drain' | 'sink') => void;
}

export const DROP_DEFAULTS = {
  windowMs: 5_000,
} as const;

/** DROP events in a daemon: on, off, or unavailable on this kernel (src/daemon/drops.ts). */
export type DropsState = 'on' | 'off' | 'unavailable';

export interface DropsStatus {
  state: DropsState;
  /** Why drops are unavailable on this kernel ('' otherwise). */
  reason: string;
  windowMs: number;
  reporter: DropReporterStats;
  probe: DropProbeStats | null;
  reasons: DropReasonCount[];
}

export interface DropReporterStats {
  /** DROP events made (one per key and window). */
  events: number;
  /** Packets and bytes they report. */
  packets: number;
  bytes: number;
  /** Drops not reported: the export filters (DNS, include/exclude) leave them out, as they do flows. */
  filteredPackets: number;
  windows: number;
  errors: number;
  /** DROP events an output refused (counted and logged, as the flow pipeline's eventsDropped). */
  lostEvents: number;
}

export class DropReporter {
  private readonly opts: Required<Omit<DropReporterOptions, 'onError' | 'reporterPublicKey' | 'bootId' | 'clock'>> & Pick<DropReporterOptions, 'onError'>;
  private readonly wall: WallConverter;
  private readonly ns: Uuid;
  private readonly publicKey: string;
  private readonly parts: AttributionParts = { source: UNKNOWN_ENDPOINT, destination: UNKNOWN_ENDPOINT, policy: null, user: { id: '', name: '', email: '' }, skip: '' };
  private timer?: NodeJS.Timeout;
  private running: Promise<void> = Promise.resolve();
  private readonly s: DropReporterStats = { events: 0, packets: 0, bytes: 0, filteredPackets: 0, windows: 0, errors: 0, lostEvents: 0 };

  constructor(opts: DropReporterOptions) {
    this.opts = { windowMs: DROP_DEFAULTS.windowMs, ...opts };
    this.wall = new WallConverter(opts.clock ?? systemClock);
    this.ns = bootNamespace(opts.bootId ?? readBootId());
    this.publicKey = opts.reporterPublicKey ?? '';
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.flush(), this.opts.windowMs);
    this.timer.unref();
  }

  /** Stop the window timer and report what was recorded until now. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  /** Read the aggregates now and report them (windows never overlap: one flush at a time). */
  flush(): Promise<void> {
    this.running = this.running.then(() => this.window()).catch((err: unknown) => {
      this.s.errors++;
      this.opts.onError?.(err, 'drain');
    });
    return this.running;
  }

  stats(): DropReporterStats {
    return { ...this.s };
  }

  private async window(): Promise<void> {
    const entries = await this.opts.source.drain();
    this.s.windows++;
    if (entries.length === 0) return;
    this.wall.sample();
    const events: FlowEvent[] = [];
    for (const d of entries) {
      const ev = this.event(d);
      if (ev) events.push(ev);
      else this.s.filteredPackets += d.packets;
    }
    // A window may hold up to datapath.drop_keys events: in chunks, as the flow pipeline's.
    await emitInChunks(events, this.opts.sink, (chunk) => {
      for (const ev of chunk) {
        this.s.events++;
        this.s.packets += ev.rxPackets + ev.txPackets;
        this.s.bytes += ev.rxBytes + ev.txBytes;
      }
    }, (chunk, err) => {
      this.s.errors++;
      this.s.lostEvents += chunk.length;
      this.opts.onError?.(err, 'sink');
    });
  }

  /** The DROP event of one aggregate, or null when the export filters leave it out. */
  event(d: DropEntry): FlowEvent | null {
    const ports = d.kind === FlowKind.Ports;
    const icmp = d.kind === FlowKind.Icmp;
    const direction = d.dir === DIR_EGRESS ? 'EGRESS' : 'INGRESS';
    const p = this.parts;
    this.opts.attributor.attributeDrop({
      family: d.family, srcRaw: Buffer.from(d.saddr).toString('latin1'), dstRaw: Buffer.from(d.daddr).toString('latin1'),
      proto: d.proto, hasPorts: ports, srcPort: d.sport, dstPort: d.dport, direction,
    }, p);
    if (p.skip !== '') return null;
    const text = d.family === 6 ? ipv6FromBytes : ipv4FromBytes;
    const keyText = Buffer.from(d.key).toString('latin1');
    const flow = uuidV5(this.ns, `drop:${keyText}`);
    const firstMs = this.wall.toWallMs(d.firstNs);
    const ev: FlowEvent = {
      eventId: eventUuid(flow, `drop:${d.firstNs}`),
      flowId: flow.text,
      type: 'DROP',
      timestampMs: firstMs,
      reporterId: this.opts.reporterId,
      reporterPublicKey: this.publicKey,
      direction,
      protocol: d.proto,
      source: endpointOf(text(d.saddr), ports ? d.sport : 0, p.source),
      destination: endpointOf(text(d.daddr), ports ? d.dport : 0, p.destination),
      icmpType: icmp ? d.dport >>> 8 : 0,
      icmpCode: icmp ? d.dport & 0xff : 0,
      // What was dropped, on the side it was going: received (came in) or sent (headed out).
      rxPackets: direction === 'INGRESS' ? d.packets : 0,
      rxBytes: direction === 'INGRESS' ? d.bytes : 0,
      txPackets: direction === 'EGRESS' ? d.packets : 0,
      txBytes: direction === 'EGRESS' ? d.bytes : 0,
      ruleId: p.policy?.id ?? '',
      policyName: p.policy?.name ?? '',
      user: p.user,
      interfaceName: this.opts.interfaceName(d.ifindex),
      dropReason: this.opts.reasonName(d.reason),
      windowStartMs: firstMs,
      windowEndMs: Math.max(firstMs, this.wall.toWallMs(d.lastNs)),
      countersEnabled: true,
      tcpFlagsInitiator: 0,
      tcpFlagsResponder: 0,
    };
    return ev;
  }
}
