// The flow lifecycle: turns ring records (START/FIN/RST hints) and periodic drains of the kernel
// flow maps into START, UPDATE and END events (docs/lifecycle.md).
//
// The tracker is synchronous and does no I/O: the pipeline (pipeline.ts) feeds it and performs the
// kernel deletes it asks for. Deletion is two-step because the final counters come back from the
// delete itself: dueDeletes() hands out the keys whose time has come, deleteFlows() removes them
// and returns their last counters atomically, onDeleted() turns those into END events.
import { Attributor, endpointOf, type FlowAttributor, type FlowTuple } from '../attribution/attributor';
import { rawToIpAt } from '../net/ip';
import {
  FLAG_HINT_LOST,
  FLAG_INIT_B,
  FLAG_INIT_EGRESS,
  FLAG_START_LOST,
  FLAG_UNCOUNTED,
  type FlowCounters,
  type FlowEntry,
  type FlowKey,
  FlowKind,
  lastSeenNs,
  RecordType,
  type RingRecord,
} from '../datapath/records';
import { Clock, systemClock, WallConverter } from '../model/clock';
import type { FlowEndReason, FlowEvent, FlowEventType } from '../model/event';
import { bootNamespace, flowIdWords, type Uuid } from './ids';
import { ACTIVE, CLOSING, DELETING, Flow, FlowSlab, flatCopy } from './store';

const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const MS = 1e6; // ns per ms

/** The tracker's defaults, one place (the daemon's lifecycle.* keys default to these). */
export const TRACKER_DEFAULTS = {
  tcpIdleMs: 2 * 3600_000,
  tcpHalfClosedIdleMs: 120_000,
  udpIdleMs: 30_000,
  icmpIdleMs: 30_000,
  otherIdleMs: 30_000,
  closeGraceMs: 500,
  rstGraceMs: 0,
  timeWaitMs: 30_000,
  updateIntervalMs: 60_000,
} as const;

export interface TrackerOptions {
  clock?: Clock;
  /** /proc/sys/kernel/random/boot_id (read when absent). Part of every flow id. */
  bootId?: string;
  /** Attribution of new flows (default: an Attributor with empty tables). */
  attributor?: FlowAttributor;
  reporterId?: string;
  reporterPublicKey?: string;
  /** Name of the interface with this ifindex (default: read from /sys/class/net, cached). */
  interfaceName?: (ifindex: number) => string;
  /** Idle timeouts. TCP: connections never seen closing. */
  tcpIdleMs?: number;
  /** TCP connections with a FIN in one direction only (half-closed) that then go quiet. */
  tcpHalfClosedIdleMs?: number;
  udpIdleMs?: number;
  icmpIdleMs?: number;
  otherIdleMs?: number;
  /** After FIN in both directions, wait this long for the last ACK before ending (default 500). */
  closeGraceMs?: number;
  /** After an RST (default 0: end at once). */
  rstGraceMs?: number;
  /** How long the key of a TCP flow closed by FIN/RST is remembered to recognise late packets (default 30 s). */
  timeWaitMs?: number;
  /** A remnant (late packets after END) is deleted this long after its first packet (default: closeGraceMs). */
  remnantGraceMs?: number;
  /** Interim UPDATE interval (default 60 s; 0 = no UPDATEs). */
  updateIntervalMs?: number;
  /** A tracked flow missing from this many consecutive drains ended outside our control (default 2). */
  missingDrainsToEnd?: number;
}

export interface TrackerStats {
  /** Flows being tracked (exported, filtered and remnants). */
  active: number;
  /** Of which remnants (late packets of an ended TCP connection). */
  remnantsActive: number;
  events: { START: number; UPDATE: number; END: number };
  ended: Record<FlowEndReason, number>;
  /** Flows first seen by a drain, not by a START record (ring full, or record not yet read). */
  discoveredWithoutStart: number;
  /** Of those, flows the kernel reported FLAG_START_LOST for (the ring was full). */
  startLost: number;
  /** Flows found in the kernel at startup, older than this tracker (restart with pinned maps). */
  adopted: number;
  /** Of those, flows ended (END idle) because nothing moved for udpIdleMs after the adoption. */
  adoptedIdleEnded: number;
  /** Flows not exported because of DNS or include/exclude filters (tracked all the same). */
  filtered: number;
  /** Flows not exported because they are exit-node traffic (exitNodeCollection off). */
  exitNodeSkipped: number;
  /** Late packets of closed TCP connections: remnant entries deleted, and what they counted. */
  lateAfterEndFlows: number;
  lateAfterEndPackets: number;
  lateAfterEndBytes: number;
  /** Remnants that turned out to be a new connection (SYN seen) and were exported after all. */
  remnantsPromoted: number;
  /** Tracked flows whose kernel entry disappeared or was replaced without our delete (END forced). */
  vanished: number;
  /** FIN/RST hints for keys not (yet) tracked. */
  hintsWithoutFlow: number;
  /** Flows whose FIN/RST hint was lost (ring full): closed from the drained flags instead. */
  hintsLost: number;
}

/** Scratch for the flow id's words on their way into the slab. */
const UUID_WORDS = new Int32Array(4);

function zeroStats(): TrackerStats {
  return {
    active: 0, remnantsActive: 0,
    events: { START: 0, UPDATE: 0, END: 0 },
    ended: { idle: 0, tcp_fin: 0, tcp_rst: 0, forced: 0, lack_of_resources: 0 },
    discoveredWithoutStart: 0, startLost: 0, adopted: 0, adoptedIdleEnded: 0, filtered: 0, exitNodeSkipped: 0,
    lateAfterEndFlows: 0, lateAfterEndPackets: 0, lateAfterEndBytes: 0, remnantsPromoted: 0,
    vanished: 0, hintsWithoutFlow: 0, hintsLost: 0,
  };
}

interface PendingHint {
  finIngNs: number;
  finEgrNs: number;
  rstNs: number;
  flags: number;
  gen: number;
}

export class FlowTracker {
  readonly clock: Clock;
  private readonly wall: WallConverter;
  private readonly ns: Uuid;
  private readonly attributor: FlowAttributor;
  private readonly reporterId: string;
  private readonly reporterPublicKey: string;
  private readonly ifnameOf: (ifindex: number) => string;
  private readonly ifnames = new Map<number, string>();
  private readonly idle: { tcp: number; tcpHalf: number; udp: number; icmp: number; other: number };
  private readonly closeGraceNs: number;
  private readonly rstGraceNs: number;
  private readonly timeWaitNs: number;
  private readonly remnantGraceNs: number;
  private readonly updateNs: number;
  private readonly missingToEnd: number;
  /** When this tracker started: older kernel flows found by a drain are adopted. */
  private readonly startedNs: number;

  private readonly flows = new Map<string, Flow>();
  private readonly slab = new FlowSlab();
  /** Flows with a scheduled close time (phase CLOSING). */
  private readonly closing = new Set<Flow>();
  /** Keys of TCP flows ended by FIN/RST -> when; insertion order = time order. */
  private readonly timeWait = new Map<string, number>();
  /** FIN/RST hints that arrived before their flow was known. */
  private readonly pending = new Map<string, PendingHint>();
  private drainGen = 0;
  /** The order of the last drain (a linked list through Flow.nextInDrain). */
  private firstInDrain: Flow | null = null;
  /** The drain in progress: its time and generation, flows listed so far, the last of them. */
  private drain: { now: number; gen: number; seen: number; prev: Flow | null } | null = null;
  private remnants = 0;
  private readonly st = zeroStats();
  /** Reused for every attribute() call (the attributor does not keep it). */
  private readonly tuple: FlowTuple = {
    family: 4, srcRaw: '', dstRaw: '', proto: 0, hasPorts: false, srcPort: 0, dstPort: 0, direction: 'INGRESS', nowNs: 0,
  };

  constructor(opts: TrackerOptions = {}) {
    this.clock = opts.clock ?? systemClock;
    this.wall = new WallConverter(this.clock);
    if (opts.bootId === undefined) throw new RangeError('bootId is required (the pipeline reads it: src/flow/ids.ts readBootId)');
    this.ns = bootNamespace(opts.bootId);
    this.attributor = opts.attributor ?? new Attributor({}, { clock: this.clock });
    this.reporterId = opts.reporterId ?? '';
    this.reporterPublicKey = opts.reporterPublicKey ?? '';
    this.ifnameOf = opts.interfaceName ?? ((ifindex) => `if${ifindex}`);
    const ms = (v: number | undefined, d: number, name: string): number => {
      const x = v ?? d;
      if (!Number.isFinite(x) || x < 0) throw new RangeError(`${name} must be a non-negative number of ms, got ${v}`);
      return x * MS;
    };
    const d = TRACKER_DEFAULTS;
    this.idle = {
      tcp: ms(opts.tcpIdleMs, d.tcpIdleMs, 'tcpIdleMs'),
      tcpHalf: ms(opts.tcpHalfClosedIdleMs, d.tcpHalfClosedIdleMs, 'tcpHalfClosedIdleMs'),
      udp: ms(opts.udpIdleMs, d.udpIdleMs, 'udpIdleMs'),
      icmp: ms(opts.icmpIdleMs, d.icmpIdleMs, 'icmpIdleMs'),
      other: ms(opts.otherIdleMs, d.otherIdleMs, 'otherIdleMs'),
    };
    this.closeGraceNs = ms(opts.closeGraceMs, d.closeGraceMs, 'closeGraceMs');
    this.rstGraceNs = ms(opts.rstGraceMs, d.rstGraceMs, 'rstGraceMs');
    this.timeWaitNs = ms(opts.timeWaitMs, d.timeWaitMs, 'timeWaitMs');
    this.remnantGraceNs = opts.remnantGraceMs === undefined ? this.closeGraceNs : ms(opts.remnantGraceMs, 0, 'remnantGraceMs');
    this.updateNs = ms(opts.updateIntervalMs, d.updateIntervalMs, 'updateIntervalMs');
    this.missingToEnd = Math.max(1, Math.floor(opts.missingDrainsToEnd ?? 2));
    this.startedNs = this.clock.monoNs();
  }

  // ------------------------------------------------------------------ inputs

  /** Ring records: START creates and announces a flow; FIN/RST schedule its END. */
  onRecords(records: readonly RingRecord[]): FlowEvent[] {
    const out: FlowEvent[] = [];
    const now = this.wall.sample();
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      const id = r.key.id;
      let f = this.flows.get(id);
      if (r.type === RecordType.Start) {
        if (f !== undefined) {
          if (f.firstNs === r.tsNs) continue; // already found by a drain
          this.vanish(f, now, out); // the entry was replaced behind our back
        }
        f = this.create(r.key, r.tsNs, r.flags, now, out);
        if (f.tcp && !f.remnant) this.tcpFlags(f, r.flags, r.tsNs);
        continue;
      }
      if (r.type !== RecordType.Fin && r.type !== RecordType.Rst) continue;
      const ing = r.dir === 0;
      if (f === undefined) {
        this.st.hintsWithoutFlow++;
        let p = this.pending.get(id);
        if (!p) {
          p = { finIngNs: 0, finEgrNs: 0, rstNs: 0, flags: 0, gen: this.drainGen };
          this.pending.set(id, p);
        }
        p.flags |= r.flags;
        if (r.type === RecordType.Rst) p.rstNs ||= r.tsNs;
        else if (ing) p.finIngNs ||= r.tsNs;
        else p.finEgrNs ||= r.tsNs;
        continue;
      }
      if (f.remnant || !f.tcp) continue;
      f.flags |= r.flags;
      if (r.type === RecordType.Rst) this.tcpClose(f, 0, 0, r.tsNs);
      else this.tcpClose(f, ing ? r.tsNs : 0, ing ? 0 : r.tsNs, 0);
    }
    return out;
  }

  /** A periodic read of every kernel flow: counters, idle and close detection, UPDATEs, discovery. */
  onDrain(entries: readonly FlowEntry[]): FlowEvent[] {
    this.beginDrain();
    const out = this.drainEntries(entries);
    for (const e of this.endDrain()) out.push(e);
    return out;
  }

  /**
   * onDrain in slices: beginDrain, drainEntries for each slice of the entries in order, endDrain.
   * The pipeline hands each slice's events on before the next, so that a drain that discovers a
   * burst of flows (a million after a ring overflow) never holds all their STARTs at once.
   */
  beginDrain(): void {
    this.drain = { now: this.wall.sample(), gen: ++this.drainGen, seen: 0, prev: null };
  }

  /** The next entries of the drain begun by beginDrain; returns their events. */
  drainEntries(entries: readonly FlowEntry[]): FlowEvent[] {
    const d = this.drain;
    if (d === null) throw new Error('drainEntries: no drain in progress (call beginDrain first)');
    const out: FlowEvent[] = [];
    const { now, gen } = d;
    let seen = 0;
    // Drains list the kernel map in its bucket order, which barely changes from one drain to the
    // next: guess each entry's flow from the previous one's successor in the last drain, and
    // only look it up (a hash of a fresh key string, ~4x the cost) when the guess is wrong.
    let prev = d.prev;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const v = e.value;
      const id = e.key.id;
      const guess: Flow | null = prev === null ? this.firstInDrain : prev.nextInDrain;
      let f: Flow | undefined = guess !== null && guess.phase !== DELETING && guess.id === id ? guess : this.flows.get(id);
      if (f !== undefined && f.firstNs !== v.firstNs) {
        this.vanish(f, now, out);
        f = undefined;
      }
      const last = lastSeenNs(v.lastSeen, now);
      let known = 0;
      if (f === undefined) {
        f = this.discover(e, last, now, out);
      } else {
        known = f.flags;
        this.absorb(f, v);
      }
      if (f.seenGen !== gen) seen++;
      f.seenGen = gen;
      f.missed = 0;
      if (prev === null) this.firstInDrain = f;
      else prev.nextInDrain = f;
      prev = f;
      if (last > f.lastSeenNs) f.lastSeenNs = last;
      if (f.phase === DELETING) continue;
      if ((v.flags & FLAG_HINT_LOST) !== 0 && (known & FLAG_HINT_LOST) === 0) this.st.hintsLost++;
      f.flags |= v.flags;
      if (f.remnant) {
        if ((f.flags & (TCP_SYN | (TCP_SYN << 8))) !== 0) this.promote(f, now, out);
        continue;
      }
      if (f.tcp) this.tcpFlags(f, f.flags, f.lastSeenNs);
      if (f.adopted && this.adoptedIdle(f, now)) continue;
      if (f.phase === ACTIVE && now - f.lastSeenNs >= this.idleTimeout(f)) {
        this.schedule(f, now, 'idle');
        continue;
      }
      if (f.phase === ACTIVE && now >= f.nextUpdateNs) this.update(f, now, out);
    }
    d.prev = prev;
    d.seen += seen;
    return out;
  }

  /** Finishes the drain: flows it did not list (missed drains end them), expired hints. */
  endDrain(): FlowEvent[] {
    const d = this.drain;
    if (d === null) throw new Error('endDrain: no drain in progress (call beginDrain first)');
    this.drain = null;
    const out: FlowEvent[] = [];
    if (d.prev === null) this.firstInDrain = null;
    else d.prev.nextInDrain = null;
    if (d.seen < this.flows.size) this.sweepMissing(d.gen, d.now, out);
    this.expire(d.now, d.gen);
    return out;
  }

  // ------------------------------------------------------------------ deletion

  /** Keys whose END is due (close grace over, idle, remnant, forced): delete them, then call onDeleted. */
  dueDeletes(nowNs: number = this.clock.monoNs()): FlowKey[] {
    const keys: FlowKey[] = [];
    for (const f of this.closing) {
      if (f.closeAtNs <= nowNs) {
        f.phase = DELETING;
        this.closing.delete(f);
        keys.push(f.key);
      }
    }
    return keys;
  }

  /** Earliest scheduled close (CLOCK_MONOTONIC ns; Infinity when none): when dueDeletes() has work. */
  nextDueNs(): number {
    let t = Infinity;
    for (const f of this.closing) if (f.closeAtNs < t) t = f.closeAtNs;
    return t;
  }

  /**
   * The kernel entries of these keys were deleted; finals[i] are their last counters (undefined:
   * the entry was already gone, the last drained counters are used). Emits the END events.
   */
  onDeleted(keys: readonly FlowKey[], finals: readonly (FlowCounters | undefined)[]): FlowEvent[] {
    const out: FlowEvent[] = [];
    const now = this.wall.sample();
    for (let i = 0; i < keys.length; i++) {
      const f = this.flows.get(keys[i].id);
      if (f === undefined || f.phase !== DELETING) continue;
      const fin = finals[i];
      if (fin !== undefined && fin.firstNs === f.firstNs) {
        this.absorb(f, fin);
        f.flags |= fin.flags;
      }
      this.finish(f, f.endReason, now, out);
    }
    return out;
  }

  /** A delete failed: the flows stay and are handed out again by the next dueDeletes(). */
  abortDeletes(keys: readonly FlowKey[]): void {
    for (const k of keys) {
      const f = this.flows.get(k.id);
      if (f !== undefined && f.phase === DELETING) {
        f.phase = CLOSING;
        this.closing.add(f);
      }
    }
  }

  /**
   * Shutdown: every flow is to end now with reason 'forced'. Returns the keys to delete (then
   * onDeleted() emits the ENDs; pass no finals to end with the last drained counters).
   */
  forceEndAll(): FlowKey[] {
    const keys: FlowKey[] = [];
    for (const f of this.flows.values()) {
      if (f.phase === DELETING) continue;
      f.endReason = 'forced';
      f.closeAtNs = 0;
      f.phase = DELETING;
      this.closing.delete(f);
      keys.push(f.key);
    }
    return keys;
  }

  // ------------------------------------------------------------------ introspection

  stats(): TrackerStats {
    const s = this.st;
    return {
      ...s,
      active: this.flows.size,
      remnantsActive: this.remnants,
      events: { ...s.events },
      ended: { ...s.ended },
    };
  }

  /**
   * The exported flows being tracked, as of the last drain, for status pages ("top flows"): one
   * event-shaped record per flow with type UPDATE, eventId '' (never sent anywhere),
   * timestampMs = windowStartMs = the first packet, windowEndMs = the last packet seen, and the
   * flow's totals so far.
   */
  snapshot(): FlowEvent[] {
    const out: FlowEvent[] = [];
    this.wall.sample();
    for (const f of this.flows.values()) {
      if (!f.exported || f.remnant || f.phase === DELETING) continue;
      out.push(this.event(f, 'UPDATE', '', this.wall.toWallMs(f.firstNs), f.rxP, f.txP, f.rxB, f.txB, f.firstNs, f.lastSeenNs));
    }
    return out;
  }

  get activeFlows(): number {
    return this.flows.size;
  }

  /** Is this key tracked (tests, tools)? */
  has(keyId: string): boolean {
    return this.flows.has(keyId);
  }

  // ------------------------------------------------------------------ internals

  private ifname(ifindex: number): string {
    let n = this.ifnames.get(ifindex);
    if (n === undefined) {
      n = this.ifnameOf(ifindex);
      this.ifnames.set(ifindex, n);
    }
    return n;
  }

  private idleTimeout(f: Flow): number {
    switch (f.proto) {
      case 6:
        if (f.kind !== FlowKind.Ports) return this.idle.other;
        return f.finIngNs !== 0 || f.finEgrNs !== 0 ? this.idle.tcpHalf : this.idle.tcp;
      case 17:
        return f.kind === FlowKind.Ports ? this.idle.udp : this.idle.other;
      case 1:
      case 58:
        return f.kind === FlowKind.Icmp ? this.idle.icmp : this.idle.other;
      default:
        return this.idle.other;
    }
  }

  /**
   * An adopted flow's close may have happened while no daemon was reading (SIGKILL): a TCP
   * connection would then wait tcpIdleMs (2 h). One that shows no packet for udpIdleMs after its
   * adoption is ended as idle; one that moves is alive and gets the normal timeouts from then on.
   * Returns true when the flow was scheduled to end.
   */
  private adoptedIdle(f: Flow, now: number): boolean {
    // repNs and the rep counters hold the adoption's values until something moves (update() only
    // changes them then); lastSeen covers packets the kernel did not count (counting off).
    if (f.rxP !== f.repRxP || f.txP !== f.repTxP || f.rxB !== f.repRxB || f.txB !== f.repTxB || f.lastSeenNs > f.repNs) {
      f.adopted = false;
      return false;
    }
    if (f.phase !== ACTIVE || now - f.repNs < this.idle.udp) return false;
    f.adopted = false;
    this.st.adoptedIdleEnded++;
    this.schedule(f, now, 'idle');
    return true;
  }

  /** New flow from a START record or a drain. Decides remnant / exported / filtered; emits START. */
  private create(key: FlowKey, firstNs: number, flags: number, now: number, out: FlowEvent[]): Flow {
    const id = key.id;
    const v4 = id.length === 16;
    const po = v4 ? 8 : 32;
    const proto = id.charCodeAt(po + 4);
    const kind = id.charCodeAt(po + 5) as FlowKind;
    const ifindex = id.charCodeAt(po + 6) | (id.charCodeAt(po + 7) << 8);
    const flat = flatCopy(id);
    const f = new Flow(this.slab, this.slab.alloc(), flat, firstNs, flags, proto, kind, this.ifname(ifindex));
    this.flows.set(flat, f);
    if (f.tcp && (flags & (TCP_SYN | (TCP_SYN << 8))) === 0) {
      const endedAt = this.timeWait.get(id);
      if (endedAt !== undefined && now - endedAt < this.timeWaitNs) {
        f.remnant = true;
        this.remnants++;
        this.schedule(f, Math.max(firstNs + this.remnantGraceNs, now), 'forced');
        return f;
      }
    }
    this.attribute(f, now, out);
    return f;
  }

  private attribute(f: Flow, now: number, out: FlowEvent[]): void {
    const id = f.id;
    const v4 = id.length === 16;
    const al = v4 ? 4 : 16;
    const po = v4 ? 8 : 32;
    const initB = (f.flags & FLAG_INIT_B) !== 0;
    const rawA = id.substring(0, al);
    const rawB = id.substring(al, 2 * al);
    const portA = (id.charCodeAt(po) << 8) | id.charCodeAt(po + 1);
    const portB = (id.charCodeAt(po + 2) << 8) | id.charCodeAt(po + 3);
    const t = this.tuple;
    t.family = v4 ? 4 : 6;
    t.srcRaw = initB ? rawB : rawA;
    t.dstRaw = initB ? rawA : rawB;
    t.proto = f.proto;
    t.hasPorts = f.kind === FlowKind.Ports;
    t.srcPort = t.hasPorts ? (initB ? portB : portA) : 0;
    t.dstPort = t.hasPorts ? (initB ? portA : portB) : 0;
    t.direction = (f.flags & FLAG_INIT_EGRESS) !== 0 ? 'EGRESS' : 'INGRESS';
    t.nowNs = now;
    const a = this.attributor.attribute(t);
    f.attribution = a;
    f.initB = initB;
    if (a.skip === '') {
      f.exported = true;
      if (this.updateNs > 0) f.nextUpdateNs = f.firstNs + this.updateNs;
      out.push(this.event(f, 'START', 'start', this.wall.toWallMs(f.firstNs), 0, 0, 0, 0, f.firstNs, now));
    } else if (a.skip === 'exit_node') {
      this.st.exitNodeSkipped++;
    } else {
      this.st.filtered++;
    }
  }

  /** An entry found by a drain that no START record announced. */
  private discover(e: FlowEntry, lastNs: number, now: number, out: FlowEvent[]): Flow {
    const v = e.value;
    const adopted = v.firstNs < this.startedNs;
    // Counters as found; adopted flows report only what moves from now on in UPDATEs (END has totals).
    const f = this.create(e.key, v.firstNs, v.flags, now, out);
    f.rawRxP = f.rxP = v.rxPackets;
    f.rawTxP = f.txP = v.txPackets;
    f.rxB = v.rxBytes;
    f.txB = v.txBytes;
    f.lastSeenNs = Math.max(lastNs, v.firstNs);
    if (f.remnant) return f;
    if (adopted) {
      this.st.adopted++;
      f.adopted = true;
      f.repRxP = f.rxP;
      f.repTxP = f.txP;
      f.repRxB = f.rxB;
      f.repTxB = f.txB;
      f.repNs = now;
      if (f.exported && this.updateNs > 0) {
        f.nextUpdateNs = f.firstNs + (Math.floor((now - f.firstNs) / this.updateNs) + 1) * this.updateNs;
      }
    } else {
      this.st.discoveredWithoutStart++;
      if ((v.flags & FLAG_START_LOST) !== 0) this.st.startLost++;
    }
    const p = this.pending.get(e.key.id);
    if (p !== undefined) {
      // Hints older than this entry belong to an earlier flow on the same key: ignore those.
      this.pending.delete(e.key.id);
      const t0 = v.firstNs;
      if (f.tcp) this.tcpClose(f, p.finIngNs >= t0 ? p.finIngNs : 0, p.finEgrNs >= t0 ? p.finEgrNs : 0, p.rstNs >= t0 ? p.rstNs : 0);
    }
    return f;
  }

  /** A remnant whose entry shows a SYN is a new connection on the same ports after all. */
  private promote(f: Flow, now: number, out: FlowEvent[]): void {
    f.remnant = false;
    this.remnants--;
    this.st.remnantsPromoted++;
    this.closing.delete(f);
    f.phase = ACTIVE;
    f.closeAtNs = Infinity;
    this.attribute(f, now, out);
    if (f.tcp) this.tcpFlags(f, f.flags, f.lastSeenNs);
  }

  /** Widen and store kernel counters. */
  private absorb(f: Flow, v: FlowCounters): void {
    f.rxP += (v.rxPackets - f.rawRxP) >>> 0;
    f.rawRxP = v.rxPackets;
    f.txP += (v.txPackets - f.rawTxP) >>> 0;
    f.rawTxP = v.txPackets;
    if (v.rxBytes > f.rxB) f.rxB = v.rxBytes;
    if (v.txBytes > f.txB) f.txB = v.txBytes;
  }

  /** FIN/RST from the TCP flag bits of the kernel flags (drains, START records). */
  private tcpFlags(f: Flow, flags: number, atNs: number): void {
    const ing = flags & 0xff, egr = (flags >>> 8) & 0xff;
    if (((ing | egr) & (TCP_FIN | TCP_RST)) === 0) return;
    this.tcpClose(f, ing & TCP_FIN ? atNs : 0, egr & TCP_FIN ? atNs : 0, (ing | egr) & TCP_RST ? atNs : 0);
  }

  /** Record FIN (per direction) / RST times (0 = not seen here) and schedule the END. */
  private tcpClose(f: Flow, finIngNs: number, finEgrNs: number, rstNs: number): void {
    if (rstNs !== 0 && f.rstNs === 0) {
      f.rstNs = rstNs;
      this.schedule(f, rstNs + this.rstGraceNs, 'tcp_rst');
    }
    if (finIngNs !== 0 && f.finIngNs === 0) f.finIngNs = finIngNs;
    if (finEgrNs !== 0 && f.finEgrNs === 0) f.finEgrNs = finEgrNs;
    if (f.finIngNs !== 0 && f.finEgrNs !== 0) {
      this.schedule(f, Math.max(f.finIngNs, f.finEgrNs) + this.closeGraceNs, 'tcp_fin');
    }
  }

  /** End the flow at atNs (the earliest schedule wins). */
  private schedule(f: Flow, atNs: number, reason: FlowEndReason): void {
    if (f.phase === DELETING || atNs >= f.closeAtNs) return;
    f.closeAtNs = atNs;
    f.endReason = reason;
    f.phase = CLOSING;
    this.closing.add(f);
  }

  private update(f: Flow, now: number, out: FlowEvent[]): void {
    const k = Math.floor((now - f.firstNs) / this.updateNs);
    f.nextUpdateNs = f.firstNs + (k + 1) * this.updateNs;
    const dRxP = f.rxP - f.repRxP, dTxP = f.txP - f.repTxP, dRxB = f.rxB - f.repRxB, dTxB = f.txB - f.repTxB;
    if (dRxP === 0 && dTxP === 0 && dRxB === 0 && dTxB === 0) return; // nothing moved: the next window starts at the last report
    out.push(this.event(f, 'UPDATE', `update:${k}`, this.wall.toWallMs(now), dRxP, dTxP, dRxB, dTxB, f.repNs, now));
    f.repRxP = f.rxP;
    f.repTxP = f.txP;
    f.repRxB = f.rxB;
    f.repTxB = f.txB;
    f.repNs = now;
  }

  /** Emit the END (if exported), drop the flow, remember closed TCP keys. */
  private finish(f: Flow, reason: FlowEndReason, now: number, out: FlowEvent[]): void {
    this.flows.delete(f.id);
    this.closing.delete(f);
    if (f.remnant) {
      this.remnants--;
      this.st.lateAfterEndFlows++;
      this.st.lateAfterEndPackets += f.rxP + f.txP;
      this.st.lateAfterEndBytes += f.rxB + f.txB;
    } else {
      if (f.exported) {
        const ev = this.event(f, 'END', 'end', this.wall.toWallMs(now), f.rxP, f.txP, f.rxB, f.txB, f.firstNs, now);
        ev.endReason = reason;
        out.push(ev);
        this.st.ended[reason]++;
      }
      if (f.tcp && (reason === 'tcp_fin' || reason === 'tcp_rst')) {
        this.timeWait.delete(f.id);
        this.timeWait.set(f.id, now);
      }
    }
    f.phase = DELETING; // a stale reference must not schedule it again (and is never a drain guess)
    this.slab.release(f.slot); // the slot's numbers belong to the next flow from here on
  }

  /** The kernel entry went away (or was replaced) without our delete: END with what we last saw. */
  private vanish(f: Flow, now: number, out: FlowEvent[]): void {
    this.st.vanished++;
    this.finish(f, f.phase === ACTIVE ? 'forced' : f.endReason, now, out);
  }

  private sweepMissing(gen: number, now: number, out: FlowEvent[]): void {
    const gone: Flow[] = [];
    for (const f of this.flows.values()) {
      if (f.seenGen === gen || f.phase === DELETING) continue;
      if (++f.missed >= this.missingToEnd) gone.push(f);
    }
    for (const f of gone) this.vanish(f, now, out);
  }

  private expire(now: number, gen: number): void {
    for (const [id, at] of this.timeWait) {
      if (now - at < this.timeWaitNs) break;
      this.timeWait.delete(id);
    }
    for (const [id, p] of this.pending) if (gen - p.gen >= 2) this.pending.delete(id);
  }

  private event(
    f: Flow, type: FlowEventType, label: string, timestampMs: number,
    rxPackets: number, txPackets: number, rxBytes: number, txBytes: number, windowStartNs: number, windowEndNs: number,
  ): FlowEvent {
    if (!f.hasUuid) {
      flowIdWords(this.ns, f.id, f.firstNs, UUID_WORDS);
      f.setUuid(UUID_WORDS);
    }
    const a = f.attribution!;
    const flags = f.flags;
    const initEgress = (flags & FLAG_INIT_EGRESS) !== 0;
    const ing = flags & 0xff, egr = (flags >>> 8) & 0xff;
    // Initiator and responder from the key: addresses at 0 and al, ports at po and po + 2.
    const id = f.id;
    const v4 = id.length === 16;
    const al = v4 ? 4 : 16, po = v4 ? 8 : 32;
    const hasPorts = f.kind === FlowKind.Ports;
    const portA = hasPorts ? (id.charCodeAt(po) << 8) | id.charCodeAt(po + 1) : 0;
    const portB = hasPorts ? (id.charCodeAt(po + 2) << 8) | id.charCodeAt(po + 3) : 0;
    const srcIp = rawToIpAt(id, f.initB ? al : 0, v4 ? 4 : 6);
    const dstIp = rawToIpAt(id, f.initB ? 0 : al, v4 ? 4 : 6);
    let icmpType = 0, icmpCode = 0;
    if (f.kind === FlowKind.Icmp) {
      icmpType = id.charCodeAt(po + 2); // portB
      icmpCode = id.charCodeAt(po + 3);
    }
    if (label !== '') this.st.events[type as 'START' | 'UPDATE' | 'END']++;
    return {
      eventId: label === '' ? '' : f.eventId(label),
      flowId: f.flowIdText(),
      type,
      timestampMs,
      reporterId: this.reporterId,
      reporterPublicKey: this.reporterPublicKey,
      direction: initEgress ? 'EGRESS' : 'INGRESS',
      protocol: f.proto,
      source: endpointOf(srcIp, f.initB ? portB : portA, a.source),
      destination: endpointOf(dstIp, f.initB ? portA : portB, a.destination),
      icmpType,
      icmpCode,
      rxPackets,
      txPackets,
      rxBytes,
      txBytes,
      ruleId: a.ruleId,
      policyName: a.policyName,
      user: a.user,
      interfaceName: f.ifname,
      windowStartMs: this.wall.toWallMs(windowStartNs),
      windowEndMs: this.wall.toWallMs(windowEndNs),
      countersEnabled: (flags & FLAG_UNCOUNTED) === 0,
      // The initiator's packets went out (egress) if it was local, else came in (ingress).
      tcpFlagsInitiator: initEgress ? egr : ing,
      tcpFlagsResponder: initEgress ? ing : egr,
    };
  }
}
