// NetBird's v0.75 aggregated reporting (netbirdio/netbird #6627) as an output profile
// (collector.profile: netbird-aggregated). Events are grouped per time window by NetBird's key —
// source address, destination address, destination port, direction, protocol, ICMP type — and
// each group leaves as one TYPE_UNKNOWN record with num_of_starts/ends/drops, the window's
// counters and window_start/window_end. Protocols other than TCP, UDP, ICMP and ICMPv6 are not
// grouped (one record per event), as in NetBird.
//
// Differences from NetBird, on purpose:
// - counters are the events' deltas (FlowEvent.delta), not their face values: an END carries the
//   flow's totals, so summing face values would count every UPDATE twice. Summed over all
//   windows, the records' counters are the flows' totals.
// - windows are aligned to multiples of the window length (NetBird: ticks from its start), so a
//   restart continues the same window and the bounds stay contiguous.
// - the open window is journaled next to the spool: a kill -9 loses nothing that was handed to
//   the sink (NetBird keeps it in memory only).
// - a record's event id is derived from (reporter, window start, group key), not the earliest
//   event's id: see aggregateId.
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DeltaTracker } from '../model/deltas';
import type { FlowEndpoint, FlowEvent } from '../model/event';
import type { EventSink } from './sink';

export const PROFILES = ['events', 'netbird-aggregated'] as const;
export type CollectorProfile = (typeof PROFILES)[number];

export const AGGREGATOR_DEFAULTS = {
  profile: 'events' as CollectorProfile,
  /**
   * NetBird's client has no built-in window: it is the `interval` its management pushes in
   * FlowConfig. 30 s is the interval NetBird's own client tests configure for a complete flow
   * setup (client/internal/netflow/manager_test.go).
   */
  windowMs: 30_000,
  /**
   * Groups in one window, at most: a scan (one destination port after another) makes a group per
   * packet, and each group holds a copy of its earliest event. At the cap the window is closed
   * early (its records spooled, a new window begun at once), so memory stays bounded and the
   * sums still add up; the windows then are shorter, never lost.
   */
  maxGroups: 16_384,
} as const;

/** Where aggregates go: the exporter's spool (one write per window). */
export interface AggregateTarget {
  enqueueBatch(events: readonly FlowEvent[]): number;
}

export interface AggregatorOptions {
  /** Directory of the window journal (created); the exporter's spool directory is a good place. */
  dir: string;
  windowMs?: number;
  /** Groups in one window, at most (AGGREGATOR_DEFAULTS.maxGroups): the window closes early at the cap. */
  maxGroups?: number;
  target: AggregateTarget;
  /** Called after close() of the aggregator, to close the target (the exporter). */
  closeTarget?: (deadlineMs: number) => Promise<void>;
  logger: Logger;
  /** Wall clock, epoch ms (tests drive it). */
  now?: () => number;
  /** Arm a timer that closes idle windows at their end. Default true; tests call tick(). */
  timer?: boolean;
  /** Event lines that trigger a compaction of the journal, at least (default 8 MiB). */
  compactBytes?: number;
}

/** A group's running sums in the open window. */
interface Group {
  /** The group's earliest event (NetBird reports its timestamp, source port and flow id). */
  rep: FlowEvent;
  ruleId: string;
  policyName: string;
  starts: number;
  ends: number;
  drops: number;
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  countersEnabled: boolean;
  flagsI: number;
  flagsR: number;
}

type Counters = [rxBytes: number, txBytes: number, rxPackets: number, txPackets: number];

/**
 * One journal line per event: its share of the open window (counters already its delta). The
 * event itself (ev) only when the group keeps it (its first, earliest, or first with a rule id):
 * most lines are a few dozen bytes.
 */
interface EventLine {
  k: string;
  t: FlowEvent['type'];
  c: Counters;
  /** countersEnabled (0/1), TCP flags from the initiator and from the responder. */
  x: [number, number, number];
  ev?: FlowEvent;
}

/** A compacted group: the whole state of a group, replacing the event lines it came from. */
interface SnapshotLine {
  s: string;
  g: Group;
}

const GROUPED = new Set([1, 6, 17, 58]);
const JOURNAL = 'window.journal';
/** The journal is compacted into one line per group when its event lines pass this and twice the last compaction. */
const COMPACT_MIN_BYTES = 8 << 20;

/** NetBird's grouping key; events of other protocols get a key of their own. */
export function groupKey(ev: FlowEvent): string {
  if (!GROUPED.has(ev.protocol)) return `event|${ev.eventId}`;
  const icmp = ev.protocol === 1 || ev.protocol === 58;
  return `${ev.source.ip}|${ev.destination.ip}|${icmp ? 0 : ev.destination.port}|${ev.direction}|${ev.protocol}|${icmp ? ev.icmpType : 0}`;
}

/**
 * The record id: a name-based UUID (SHA-1, version 5 layout) of reporter, window start and group
 * key. Replaying a journal after a crash makes the same groups in the same window, so a record
 * spooled before the crash and again after it carries the same id, and the receiver's
 * de-duplication by event_id (the contract's rule) counts it once. An id taken from the events
 * (NetBird: the earliest event's) would be stable too, but the window and key are what the record
 * stands for, and two reporters or two windows can never share one.
 */
export function aggregateId(reporter: string, windowStartMs: number, key: string): string {
  const h = createHash('sha1').update(`wgflow-aggregate\0${reporter}\0${windowStartMs}\0${key}`).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.toString('hex', 0, 16);
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

function plainEndpoint(e: FlowEndpoint): FlowEndpoint {
  return { ip: e.ip, port: e.port, id: e.id, name: e.name, type: e.type, dnsLabel: e.dnsLabel, os: e.os, publicKey: e.publicKey };
}

/**
 * A plain copy of an event's reported fields: the flow engine's events make their text lazily
 * (getters JSON would not see), and the journal and the group keep it after the batch is gone.
 */
function plainEvent(ev: FlowEvent): FlowEvent {
  return {
    eventId: ev.eventId, flowId: ev.flowId, type: ev.type, timestampMs: ev.timestampMs,
    reporterId: ev.reporterId, reporterPublicKey: ev.reporterPublicKey, direction: ev.direction, protocol: ev.protocol,
    source: plainEndpoint(ev.source), destination: plainEndpoint(ev.destination), icmpType: ev.icmpType, icmpCode: ev.icmpCode,
    rxPackets: ev.rxPackets, txPackets: ev.txPackets, rxBytes: ev.rxBytes, txBytes: ev.txBytes,
    ruleId: ev.ruleId, policyName: ev.policyName, user: { id: ev.user.id, name: ev.user.name, email: ev.user.email },
    interfaceName: ev.interfaceName, countersEnabled: ev.countersEnabled,
    tcpFlagsInitiator: ev.tcpFlagsInitiator, tcpFlagsResponder: ev.tcpFlagsResponder,
  };
}

export interface AggregatorStats {
  /** Windows closed with records, records spooled, events taken (since start). */
  windows: number;
  records: number;
  events: number;
  /** Windows closed early because they reached maxGroups. */
  earlyCloses: number;
  /** Groups in the open window, and its start (epoch ms). */
  openGroups: number;
  windowStartMs: number;
}

export class WindowAggregator implements EventSink {
  readonly name = 'collector';
  readonly windowMs: number;
  private readonly maxGroups: number;
  private readonly path: string;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly deltas = new DeltaTracker();
  private groups = new Map<string, Group>();
  /** Start of the open window (epoch ms). */
  private windowStart: number;
  private fd: number;
  /** Journal bytes: the header and snapshot lines of the last rewrite, and event lines since. */
  private baseBytes = 0;
  private appendedBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private counters = { windows: 0, records: 0, events: 0, earlyCloses: 0 };

  constructor(private readonly o: AggregatorOptions) {
    this.windowMs = o.windowMs ?? AGGREGATOR_DEFAULTS.windowMs;
    this.maxGroups = o.maxGroups ?? AGGREGATOR_DEFAULTS.maxGroups;
    if (!(Number.isInteger(this.maxGroups) && this.maxGroups >= 1)) throw new Error(`aggregate max groups must be a positive integer, got ${o.maxGroups}`);
    if (!(Number.isInteger(this.windowMs) && this.windowMs >= 1000)) throw new Error(`aggregate window must be a whole number of milliseconds >= 1000, got ${o.windowMs}`);
    this.now = o.now ?? Date.now;
    this.log = o.logger;
    this.path = join(o.dir, JOURNAL);
    mkdirSync(o.dir, { recursive: true });
    this.windowStart = this.alignedStart(this.now());
    this.fd = -1;
    this.recover();
    if (o.timer !== false) this.arm();
  }

  /** Windows closed, records spooled and events taken since start. */
  stats(): AggregatorStats {
    return { ...this.counters, openGroups: this.groups.size, windowStartMs: this.windowStart };
  }

  private alignedStart(t: number): number {
    return Math.floor(t / this.windowMs) * this.windowMs;
  }

  /** End of the open window: the next multiple of the window length. */
  private windowEnd(): number {
    return this.alignedStart(this.windowStart) + this.windowMs;
  }

  /** Reads the journal a previous run left: its window is continued, or closed if already over. */
  private recover(): void {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.rewriteJournal(this.windowStart);
      return;
    }
    const lines = text.split('\n');
    let start = -1, replayed = 0, torn = 0;
    for (const line of lines) {
      if (line === '') continue;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch {
        torn++; // a write cut short (power loss): the event was never acknowledged to the engine
        continue;
      }
      const r = rec as { ws?: unknown } & Partial<EventLine> & Partial<SnapshotLine>;
      if (typeof r.ws === 'number') start = r.ws;
      else if (typeof r.s === 'string' && r.g !== undefined) this.groups.set(r.s, r.g);
      else if (typeof r.k === 'string' && typeof r.t === 'string' && Array.isArray(r.c) && Array.isArray(r.x)) {
        this.add(r.k, r.t, r.c, r.x, r.ev);
        replayed++;
      }
    }
    if (torn > 0) this.log.warn({ journal: this.path, torn }, 'aggregate journal: lines that do not parse were skipped');
    if (start < 0) start = this.alignedStart(this.now());
    this.windowStart = start;
    if (this.groups.size > 0) this.log.info({ journal: this.path, groups: this.groups.size, events: replayed, windowStartMs: start }, 'aggregate journal: the open window of the previous run is restored');
    // A window already over is closed now (its end is its aligned end, as if no restart happened).
    if (this.now() >= this.windowEnd()) this.closeWindow(this.windowEnd(), this.alignedStart(this.now()));
    else this.rewriteJournal(start, this.groups); // compacted, without any torn tail
  }

  private reopenJournal(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = openSync(this.path, 'a');
  }

  /**
   * The journal becomes a header and one line per group (none for a new window), atomically:
   * written aside, synced, renamed over the old one.
   */
  private rewriteJournal(windowStart: number, groups?: ReadonlyMap<string, Group>): void {
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w');
    let bytes = writeSync(fd, `${JSON.stringify({ ws: windowStart })}\n`);
    if (groups !== undefined && groups.size > 0) {
      const lines: string[] = [];
      for (const [s, g] of groups) lines.push(JSON.stringify({ s, g } satisfies SnapshotLine));
      bytes += writeSync(fd, `${lines.join('\n')}\n`);
    }
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, this.path);
    this.reopenJournal();
    this.baseBytes = bytes;
    this.appendedBytes = 0;
  }

  private arm(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      try {
        this.tick();
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'aggregate window could not be closed: retried at the next tick');
      }
      this.arm();
    }, Math.max(10, this.windowEnd() - this.now() + 5));
    this.timer.unref();
  }

  /** Closes the open window if its end has passed (the timer calls it; tests call it directly). */
  tick(): void {
    const t = this.now();
    if (t >= this.windowEnd()) this.closeWindow(this.windowEnd(), this.alignedStart(t));
  }

  /** Whether the group (undefined: none yet) keeps this event: its first, earliest, or first rule id. */
  private static keeps(g: Group | undefined, ev: FlowEvent): boolean {
    if (g === undefined) return true;
    const ts = ev.timestampMs, rts = g.rep.timestampMs;
    // NetBird reports the earliest event's time and source port, and the first rule id seen.
    return ts < rts || (ts === rts && ev.eventId < g.rep.eventId) || (g.ruleId === '' && ev.ruleId !== '');
  }

  /** Adds one event's share to its group; ev is given when the group keeps it (see keeps). */
  private add(k: string, type: FlowEvent['type'], c: Counters, x: EventLine['x'], ev?: FlowEvent): void {
    let g = this.groups.get(k);
    if (ev !== undefined) {
      if (g === undefined) {
        g = { rep: ev, ruleId: ev.ruleId, policyName: ev.policyName, starts: 0, ends: 0, drops: 0, rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, countersEnabled: true, flagsI: 0, flagsR: 0 };
        this.groups.set(k, g);
      } else if (ev.timestampMs < g.rep.timestampMs || (ev.timestampMs === g.rep.timestampMs && ev.eventId < g.rep.eventId)) {
        g.rep = ev;
      }
      if (g.ruleId === '' && ev.ruleId !== '') {
        g.ruleId = ev.ruleId;
        g.policyName = ev.policyName;
      }
    }
    if (g === undefined) return; // a journal line without its group's first event: cannot happen unless edited
    if (type === 'START') g.starts++;
    else if (type === 'END') g.ends++;
    else if (type === 'DROP') g.drops++;
    g.rxBytes += c[0];
    g.txBytes += c[1];
    g.rxPackets += c[2];
    g.txPackets += c[3];
    g.countersEnabled &&= x[0] === 1;
    g.flagsI |= x[1];
    g.flagsR |= x[2];
  }

  /**
   * Spools one record per group of the open window [windowStart, end], then starts the window at
   * nextStart with an empty journal. Spool first, journal second: a crash in between replays the
   * journal into the same records with the same ids (the receiver de-duplicates them).
   */
  private closeWindow(end: number, nextStart: number): void {
    const start = this.windowStart;
    if (this.groups.size > 0) {
      const records: FlowEvent[] = [];
      for (const [k, g] of this.groups) {
        const r = g.rep;
        const reporter = r.reporterPublicKey !== '' ? r.reporterPublicKey : r.reporterId;
        records.push({
          ...r,
          eventId: aggregateId(reporter, start, k),
          ruleId: g.ruleId,
          policyName: g.policyName,
          rxBytes: g.rxBytes, txBytes: g.txBytes, rxPackets: g.rxPackets, txPackets: g.txPackets,
          countersEnabled: g.countersEnabled,
          tcpFlagsInitiator: g.flagsI, tcpFlagsResponder: g.flagsR,
          windowStartMs: start,
          windowEndMs: end,
          aggregate: { starts: g.starts, ends: g.ends, drops: g.drops },
        });
      }
      const spooled = this.o.target.enqueueBatch(records);
      this.counters.windows++;
      this.counters.records += spooled;
    }
    this.groups = new Map();
    // Contiguous bounds: the next window starts where this one ended unless that period is over.
    this.windowStart = Math.max(end, nextStart);
    this.rewriteJournal(this.windowStart);
  }

  /** EventSink: each event joins its group of the open window and is journaled (one write a batch). */
  emit(events: readonly FlowEvent[]): void {
    if (this.closed) throw new Error('aggregator is stopped: it accepts no more events');
    if (events.length === 0) return;
    this.tick();
    let lines: string[] = [];
    for (const ev of events) {
      const d = this.deltas.next(ev);
      // START moves nothing; DROP events carry their own dropped counts; the rest their delta.
      const c: Counters = d !== undefined ? [d.rxBytes, d.txBytes, d.rxPackets, d.txPackets]
        : ev.type === 'DROP' ? [ev.rxBytes, ev.txBytes, ev.rxPackets, ev.txPackets] : [0, 0, 0, 0];
      const k = groupKey(ev);
      const x: EventLine['x'] = [ev.countersEnabled ? 1 : 0, ev.tcpFlagsInitiator, ev.tcpFlagsResponder];
      const line: EventLine = { k, t: ev.type, c, x };
      if (WindowAggregator.keeps(this.groups.get(k), ev)) line.ev = plainEvent(ev);
      this.add(k, line.t, c, x, line.ev);
      lines.push(JSON.stringify(line));
      if (this.groups.size >= this.maxGroups) {
        // The cap: this window's records go to the spool now and a new window starts. The lines
        // gathered so far are in those records, so they must not reach the new window's journal.
        const t = Math.max(this.now(), this.windowStart + 1);
        this.closeWindow(Math.min(t, this.windowEnd()), t);
        this.counters.earlyCloses++;
        if (this.counters.earlyCloses === 1 || this.counters.earlyCloses % 100 === 0) {
          this.log.warn({ maxGroups: this.maxGroups, earlyCloses: this.counters.earlyCloses }, 'aggregate window reached collector.aggregate_max_groups: closed early (shorter windows, nothing lost)');
        }
        lines = [];
      }
    }
    // No fsync per batch: what a kill -9 leaves in the page cache survives; a power loss takes
    // the open window (as it takes the spool's unsynced tail with spool.fsync: never).
    if (lines.length > 0) this.appendedBytes += writeSync(this.fd, `${lines.join('\n')}\n`);
    this.counters.events += events.length;
    // Bounded by the groups, not the events: one line per group replaces the event lines.
    if (this.appendedBytes > Math.max(this.o.compactBytes ?? COMPACT_MIN_BYTES, 2 * this.baseBytes)) this.rewriteJournal(this.windowStart, this.groups);
  }

  /**
   * Closes the open window early (window_end = now) so a stop sends everything, and records that
   * the next run starts its window there: no two windows share a start, so no two records an id.
   */
  async close(deadlineMs: number): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      const t = Math.max(this.now(), this.windowStart + 1);
      if (this.groups.size > 0) this.closeWindow(Math.min(t, this.windowEnd()), this.alignedStart(t));
      closeSync(this.fd);
      this.fd = -1;
    }
    if (this.o.closeTarget) await this.o.closeTarget(deadlineMs);
  }
}
