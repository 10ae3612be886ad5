// The flow lifecycle: turns ring records (START/FIN/RST hints) and periodic drains of the kernel
// flow maps into START, UPDATE and END events (docs/lifecycle.md).
//
// The tracker is synchronous and does no I/O: the pipeline (pipeline.ts) feeds it and performs the
// kernel deletes it asks for. Deletion is two-step because the final counters come back from the
// delete itself: dueDeletes() hands out the keys whose time has come, deleteFlows() removes them
// and returns their last counters atomically, onDeleted() turns those into END events.
import { Attributor, type AttributionParts, type FlowAttributor, type FlowTuple } from '../attribution/attributor';
import {
  FLAG_HINT_LOST,
  FLAG_INIT_B,
  FLAG_INIT_EGRESS,
  FLAG_START_LOST,
  FLOW_SIZE,
  KEY4_SIZE,
  KEY6_SIZE,
  LAYOUT,
  RECORD_SIZE,
  type FlowCounters,
  type FlowEntry,
  type FlowKey,
  FlowKind,
  type FlowMapRead,
  keyFromId,
  lastSeenNs,
  RecordType,
  type RingRecord,
} from '../datapath/records';
import { Clock, systemClock, WallConverter } from '../model/clock';
import type { FlowEndReason, FlowEvent, FlowEventType } from '../model/event';
import { AttributionStore } from './attributions';
import { EventBuilder, type EventInput } from './events';
import { bootNamespace } from './ids';
import {
  ACTIVE, B_ADOPTED, B_EXPORTED, B_FIN_EGR, B_FIN_ING, B_INIT_B, B_LISTED, B_LIVE, B_REMNANT, B_RST, B_TCP, CLOSING, DELETING,
  B_SEEN, F_CLOSE_AT, F_FIRST, F_LAST_SEEN, F_REP_AT, F_REP_RXB, F_REP_TXB, F_RXB, F_RXP, F_STRIDE, F_TXB, F_TXP, FIN_MS_FAR,
  FlowStore, MISSED_MAX, MISSED_SHIFT, type Phase, PHASE_SHIFT, POLICY_MAX, POLICY_SHIFT, REASON_SHIFT, U_BITS, U_DST, U_FIN_MS,
  U_FLAGS, U_NEXT, U_REP_RXP, U_REP_TXP, U_SRC, U_STRIDE, U_UPD_N,
} from './store';
import { KeyScratch } from './table';

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
  /** A tracked flow missing from this many consecutive drains ended outside our control (default 2, at most 3). */
  missingDrainsToEnd?: number;
  /**
   * Rows to reserve for IPv4 / IPv6 flows (the kernel maps' sizes). The columns are allocated
   * zeroed and untouched rows cost address space only; the store grows past this if it must.
   */
  capacityV4?: number;
  capacityV6?: number;
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
  /**
   * START records read after their flow was already found by a drain and ended (the ring read
   * lagged by more than the flow lived): dropped, not a second START for the same flow.
   */
  lateStartRecords: number;
  /** Flows reported without their policy: more policies in use at once than a flow row can name (16,383). */
  policiesOverflow: number;
  /** Flows whose FIN/RST hint was lost (ring full): closed from the drained flags instead. */
  hintsLost: number;
}

function zeroStats(): TrackerStats {
  return {
    active: 0, remnantsActive: 0,
    events: { START: 0, UPDATE: 0, END: 0 },
    ended: { idle: 0, tcp_fin: 0, tcp_rst: 0, forced: 0, lack_of_resources: 0 },
    discoveredWithoutStart: 0, startLost: 0, adopted: 0, adoptedIdleEnded: 0, filtered: 0, exitNodeSkipped: 0,
    lateAfterEndFlows: 0, lateAfterEndPackets: 0, lateAfterEndBytes: 0, remnantsPromoted: 0,
    vanished: 0, hintsWithoutFlow: 0, hintsLost: 0, policiesOverflow: 0, lateStartRecords: 0,
  };
}

interface PendingHint {
  finIngNs: number;
  finEgrNs: number;
  rstNs: number;
  flags: number;
  gen: number;
}

const TIME_WAIT_MAX_DEFAULT = 1 << 20;
const NONE = -1;
/** The kernel stamps a first packet with the coarse clock (up to a tick, 10 ms at HZ=100, behind) before it inserts the entry. */
const DRAIN_STAMP_MARGIN_NS = 50 * MS;

export class FlowTracker {
  readonly clock: Clock;
  private readonly wall: WallConverter;
  private readonly attributor: FlowAttributor;
  private readonly builder: EventBuilder;
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

  private readonly s4: FlowStore;
  private readonly s6: FlowStore;
  private readonly attrs = new AttributionStore();
  /** Scratch of attributeParts. */
  private readonly parts: AttributionParts = { source: null!, destination: null!, policy: null, user: null!, skip: '' };
  private readonly k = new KeyScratch();
  /** Handles with a scheduled close time (phase CLOSING), unordered; stale entries are dropped by dueDeletes. */
  private closing = new Int32Array(1024);
  private closingLen = 0;
  /** A lower bound of the closing flows' close times. */
  private minDueNs = Infinity;
  /** Keys of TCP flows ended by FIN/RST -> when; insertion order = time order. */
  private readonly timeWait = new Map<string, number>();
  /** Entries whose first packet is older than this were in a whole-map read (a completed drain). */
  private drainedSinceNs = -Infinity;
  private readonly timeWaitMax: number;
  /** FIN/RST hints that arrived before their flow was known. */
  private readonly pending = new Map<string, PendingHint>();
  private drainGen = 0;
  /** The order of the last drain (a linked list through U_NEXT): its first handle. */
  private firstInDrain = NONE;
  /** The drain in progress: its time and generation, flows listed so far, the last of them. */
  private drain: { now: number; gen: number; seen: number; prev: number } | null = null;
  private remnants = 0;
  private readonly st = zeroStats();
  /** Reused for every attribute() call (the attributor does not keep it). */
  private readonly tuple: FlowTuple = {
    family: 4, srcRaw: '', dstRaw: '', proto: 0, hasPorts: false, srcPort: 0, dstPort: 0, direction: 'INGRESS', nowNs: 0,
  };
  /** Reused for every event built. */
  private readonly input: EventInput = {
    keyId: '', firstNs: 0, flags: 0, proto: 0, kind: FlowKind.Ports, initB: false,
    source: null!, destination: null!, ruleId: '', policyName: '', user: null!, interfaceName: '',
  };
  /** Scratch counters of a drained entry. */
  private readonly cv: FlowCounters = { firstNs: 0, lastSeen: 0, rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, flags: 0 };

  constructor(opts: TrackerOptions = {}) {
    this.clock = opts.clock ?? systemClock;
    this.wall = new WallConverter(this.clock);
    if (opts.bootId === undefined) throw new RangeError('bootId is required (the pipeline reads it: src/flow/ids.ts readBootId)');
    this.builder = new EventBuilder(bootNamespace(opts.bootId), this.wall, opts.reporterId ?? '', opts.reporterPublicKey ?? '');
    this.attributor = opts.attributor ?? new Attributor({}, { clock: this.clock });
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
    this.missingToEnd = Math.min(MISSED_MAX, Math.max(1, Math.floor(opts.missingDrainsToEnd ?? 2)));
    const cap = (v: number | undefined, name: string): number => {
      const x = v ?? 1024;
      if (!Number.isInteger(x) || x < 0) throw new RangeError(`${name} must be a non-negative integer, got ${v}`);
      return x;
    };
    this.s4 = new FlowStore(4, cap(opts.capacityV4, 'capacityV4'));
    this.s6 = new FlowStore(6, cap(opts.capacityV6, 'capacityV6'));
    // Closed TCP keys remembered for late packets: at most as many as flows can be tracked.
    this.timeWaitMax = Math.max(TIME_WAIT_MAX_DEFAULT, (opts.capacityV4 ?? 0) + (opts.capacityV6 ?? 0));
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
      this.k.fromId(id);
      this.recordOne(r.type, r.dir, r.flags, r.tsNs, id.length === 16, id, now, out);
    }
    return out;
  }

  /**
   * A batch of ring records as the kernel wrote them (RECORD_SIZE bytes each), read in place:
   * the pipeline's path, with no object per record. Records of an unknown family are skipped.
   */
  onRingBatch(buf: ArrayBuffer | Uint8Array): FlowEvent[] {
    const out: FlowEvent[] = [];
    const now = this.wall.sample();
    const b = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const R = LAYOUT.wgf_record;
    const n = Math.floor(b.byteLength / RECORD_SIZE);
    for (let i = 0; i < n; i++) {
      const o = i * RECORD_SIZE;
      const family = b[o + R.family];
      if (family !== 4 && family !== 6) continue;
      const v4 = family === 4;
      this.k.fromBytes(b, o + (v4 ? R.k4 : R.k6), v4 ? KEY4_SIZE : KEY6_SIZE);
      const tsNs = v.getUint32(o + R.ts_ns, true) + v.getUint32(o + R.ts_ns + 4, true) * 0x1_0000_0000;
      this.recordOne(b[o + R.type], b[o + R.dir], v.getUint32(o + R.flags, true), tsNs, v4, null, now, out);
    }
    return out;
  }

  /** One ring record, its key in this.k (id: its text when the caller has it). */
  private recordOne(type: number, dir: number, flags: number, tsNs: number, v4: boolean, id: string | null, now: number, out: FlowEvent[]): void {
    let h = this.find(v4);
    if (type === RecordType.Start) {
      if (h !== NONE) {
        if (this.f(h, F_FIRST) === tsNs) return; // already found by a drain
        this.vanish(h, now, out); // the entry was replaced behind our back
      } else if (tsNs < this.drainedSinceNs) {
        // The entry existed before a drain that read the whole map, so that drain found it; it is
        // not tracked now, so it has ended (its id may have left timeWait meanwhile). Seen in the
        // flood test with the ring read seconds behind: without this, a second START and END.
        this.st.lateStartRecords++;
        return;
      }
      h = this.create(id ?? this.scratchId(v4), tsNs, flags, now, out);
      if (this.isTcp(h) && !this.has_(h, B_REMNANT)) this.tcpFlags(h, flags, tsNs);
      return;
    }
    if (type !== RecordType.Fin && type !== RecordType.Rst) return;
    const ing = dir === 0;
    if (h === NONE) {
      this.st.hintsWithoutFlow++;
      const key = id ?? this.scratchId(v4);
      let p = this.pending.get(key);
      if (!p) {
        p = { finIngNs: 0, finEgrNs: 0, rstNs: 0, flags: 0, gen: this.drainGen };
        this.pending.set(key, p);
      }
      p.flags |= flags;
      if (type === RecordType.Rst) p.rstNs ||= tsNs;
      else if (ing) p.finIngNs ||= tsNs;
      else p.finEgrNs ||= tsNs;
      return;
    }
    if (this.has_(h, B_REMNANT) || !this.isTcp(h)) return;
    this.orFlags(h, flags);
    if (type === RecordType.Rst) this.tcpClose(h, 0, 0, tsNs);
    else this.tcpClose(h, ing ? tsNs : 0, ing ? 0 : tsNs, 0);
  }

  /** A periodic read of every kernel flow: counters, idle and close detection, UPDATEs, discovery. */
  onDrain(entries: readonly FlowEntry[]): FlowEvent[] {
    this.beginDrain();
    const out = this.drainEntries(entries);
    for (const e of this.endDrain()) out.push(e);
    return out;
  }

  /**
   * onDrain in slices: beginDrain, drainEntries (or drainRead) for each slice of the entries in
   * order, endDrain. The pipeline hands each slice's events on before the next, so that a drain
   * that discovers a burst of flows (a million after a ring overflow) never holds all their
   * STARTs at once.
   */
  beginDrain(): void {
    this.drain = { now: this.wall.sample(), gen: ++this.drainGen, seen: 0, prev: NONE };
  }

  /** The next entries of the drain begun by beginDrain; returns their events. */
  drainEntries(entries: readonly FlowEntry[]): FlowEvent[] {
    const d = this.drainState('drainEntries');
    const out: FlowEvent[] = [];
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const id = e.key.id;
      this.k.fromId(id);
      this.drainOne(d, id.length === 16, e.value, id, out);
    }
    return out;
  }

  /**
   * Entries [from, to) of a map read, read in place from the kernel's key and value bytes (no
   * object per entry): the pipeline's drain.
   */
  drainRead(read: FlowMapRead, from: number, to: number): FlowEvent[] {
    const d = this.drainState('drainRead');
    const out: FlowEvent[] = [];
    const cv = this.cv;
    read.forEachPart(from, to, (family, keys, values, a, b) => {
      const size = family === 4 ? 16 : 40;
      const vv = new DataView(values.buffer, values.byteOffset, values.byteLength);
      for (let i = a; i < b; i++) {
        this.k.fromBytes(keys, i * size, size);
        const o = i * FLOW_SIZE;
        cv.firstNs = vv.getUint32(o, true) + vv.getUint32(o + 4, true) * 0x1_0000_0000;
        cv.rxBytes = vv.getUint32(o + 8, true) + vv.getUint32(o + 12, true) * 0x1_0000_0000;
        cv.txBytes = vv.getUint32(o + 16, true) + vv.getUint32(o + 20, true) * 0x1_0000_0000;
        cv.rxPackets = vv.getUint32(o + 24, true);
        cv.txPackets = vv.getUint32(o + 28, true);
        cv.lastSeen = vv.getUint32(o + 32, true);
        cv.flags = vv.getUint32(o + 36, true);
        this.drainOne(d, family === 4, cv, null, out);
      }
    });
    return out;
  }

  private drainState(what: string): { now: number; gen: number; seen: number; prev: number } {
    const d = this.drain;
    if (d === null) throw new Error(`${what}: no drain in progress (call beginDrain first)`);
    return d;
  }

  /**
   * One drained entry (its key in this.k). Each entry's flow is guessed from the previous one's
   * successor in the last drain (U_NEXT) and only looked up when the guess is wrong.
   */
  private drainOne(d: { now: number; gen: number; seen: number; prev: number }, v4: boolean, v: FlowCounters, id: string | null, out: FlowEvent[]): void {
    const { now, gen } = d;
    const prev = d.prev;
    const guess = prev === NONE ? this.firstInDrain : this.u(prev, U_NEXT) - 1;
    let h = guess !== NONE && (guess & 1) === (v4 ? 0 : 1) && this.live(guess) && this.phase(guess) !== DELETING && this.keyIs(guess) ? guess : this.find(v4);
    if (h !== NONE && this.f(h, F_FIRST) !== v.firstNs) {
      this.vanish(h, now, out);
      h = NONE;
    }
    const last = lastSeenNs(v.lastSeen, now);
    let known = 0;
    if (h === NONE) {
      h = this.discover(id ?? this.scratchId(v4), v, last, now, out);
    } else {
      known = this.u(h, U_FLAGS);
      this.absorb(h, v);
    }
    const S = this.st_(h), uo = (h >>> 1) * U_STRIDE, fo = (h >>> 1) * F_STRIDE;
    const parity = (gen & 1) === 1 ? B_SEEN : 0;
    if ((S.u32[uo + U_BITS] & B_SEEN) !== parity) {
      d.seen++;
      S.u32[uo + U_BITS] ^= B_SEEN;
    }
    S.u32[uo + U_BITS] &= ~(MISSED_MAX << MISSED_SHIFT);
    if (prev === NONE) this.firstInDrain = h;
    else this.setU(prev, U_NEXT, h + 1);
    d.prev = h;
    if (last > S.f64[fo + F_LAST_SEEN]) S.f64[fo + F_LAST_SEEN] = last;
    if (this.phase(h) === DELETING) return;
    if ((v.flags & FLAG_HINT_LOST) !== 0 && (known & FLAG_HINT_LOST) === 0) this.st.hintsLost++;
    S.u32[uo + U_FLAGS] |= v.flags;
    const flags = S.u32[uo + U_FLAGS];
    const bits = S.u32[uo + U_BITS];
    if ((bits & B_REMNANT) !== 0) {
      if ((flags & (TCP_SYN | (TCP_SYN << 8))) !== 0) this.promote(h, now, out);
      return;
    }
    if ((bits & B_TCP) !== 0) this.tcpFlags(h, flags, S.f64[fo + F_LAST_SEEN]);
    if ((bits & B_ADOPTED) !== 0 && this.adoptedIdle(h, now)) return;
    if (this.phase(h) !== ACTIVE) return;
    if (now - S.f64[fo + F_LAST_SEEN] >= this.idleTimeout(h)) {
      this.schedule(h, now, 'idle');
      return;
    }
    const n = S.u32[uo + U_UPD_N];
    if (n !== 0 && now >= S.f64[fo + F_FIRST] + n * this.updateNs) this.update(h, now, out);
  }

  /**
   * Gives up the drain begun by beginDrain (its read failed part way): the flows it did not list
   * are not counted as missed, and the next drain starts afresh.
   */
  abandonDrain(): void {
    const d = this.drain;
    this.drain = null;
    if (d !== null && d.prev !== NONE) this.setU(d.prev, U_NEXT, 0);
  }

  /** Finishes the drain: flows it did not list (missed drains end them), expired hints. */
  endDrain(): FlowEvent[] {
    const d = this.drainState('endDrain');
    this.drain = null;
    // Every entry created before the drain began (less a margin: the kernel stamps a flow's first
    // packet a moment before it inserts the entry) was in the map it read.
    this.drainedSinceNs = Math.max(this.drainedSinceNs, d.now - DRAIN_STAMP_MARGIN_NS);
    const out: FlowEvent[] = [];
    if (d.prev === NONE) this.firstInDrain = NONE;
    else this.setU(d.prev, U_NEXT, 0);
    if (d.seen < this.activeFlows) this.sweepMissing(d.gen, d.now, out);
    this.expire(d.now, d.gen);
    return out;
  }

  // ------------------------------------------------------------------ deletion

  /** Keys whose END is due (close grace over, idle, remnant, forced): delete them, then call onDeleted. */
  dueDeletes(nowNs: number = this.clock.monoNs()): FlowKey[] {
    const keys: FlowKey[] = [];
    const c = this.closing;
    let n = 0, min = Infinity;
    // Keep each closing flow once: B_LISTED is cleared on the first copy kept and set again below.
    for (let i = 0; i < this.closingLen; i++) {
      const h = c[i];
      if (!this.live(h) || this.phase(h) !== CLOSING || !this.has_(h, B_LISTED)) continue;
      const at = this.f(h, F_CLOSE_AT);
      if (at <= nowNs) {
        this.setPhase(h, DELETING);
        this.clear(h, B_LISTED);
        keys.push(keyFromId(this.keyIdOf(h)));
        continue;
      }
      this.clear(h, B_LISTED);
      if (at < min) min = at;
      c[n++] = h;
    }
    for (let i = 0; i < n; i++) this.set(c[i], B_LISTED);
    this.closingLen = n;
    this.minDueNs = min;
    return keys;
  }

  /** Earliest scheduled close (CLOCK_MONOTONIC ns; Infinity when none): when dueDeletes() has work. */
  nextDueNs(): number {
    return this.minDueNs;
  }

  /**
   * The kernel entries of these keys were deleted; finals[i] are their last counters (undefined:
   * the entry was already gone, the last drained counters are used). Emits the END events.
   */
  onDeleted(keys: readonly FlowKey[], finals: readonly (FlowCounters | undefined)[]): FlowEvent[] {
    const out: FlowEvent[] = [];
    const now = this.wall.sample();
    for (let i = 0; i < keys.length; i++) {
      const id = keys[i].id;
      this.k.fromId(id);
      const h = this.find(id.length === 16);
      if (h === NONE || this.phase(h) !== DELETING) continue;
      const fin = finals[i];
      if (fin !== undefined && fin.firstNs === this.f(h, F_FIRST)) {
        this.absorb(h, fin);
        this.orFlags(h, fin.flags);
      }
      this.finish(h, this.endReason(h), now, out);
    }
    return out;
  }

  /** A delete failed: the flows stay and are handed out again by the next dueDeletes(). */
  abortDeletes(keys: readonly FlowKey[]): void {
    for (const key of keys) {
      this.k.fromId(key.id);
      const h = this.find(key.id.length === 16);
      if (h !== NONE && this.phase(h) === DELETING) {
        this.setPhase(h, CLOSING);
        this.list(h);
      }
    }
  }

  /**
   * Shutdown: every flow is to end now with reason 'forced'. Returns the keys to delete (then
   * onDeleted() emits the ENDs; pass no finals to end with the last drained counters).
   */
  forceEndAll(): FlowKey[] {
    const keys: FlowKey[] = [];
    this.forEachFlow((h) => {
      if (this.phase(h) === DELETING) return;
      this.setReason(h, 'forced');
      this.setF(h, F_CLOSE_AT, 0);
      this.setPhase(h, DELETING);
      keys.push(keyFromId(this.keyIdOf(h)));
    });
    this.closingLen = 0;
    this.minDueNs = Infinity;
    this.forEachFlow((h) => this.clear(h, B_LISTED));
    return keys;
  }

  // ------------------------------------------------------------------ introspection

  stats(): TrackerStats {
    const s = this.st;
    return {
      ...s,
      active: this.activeFlows,
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
    this.forEachFlow((h) => {
      const bits = this.u(h, U_BITS);
      if ((bits & B_EXPORTED) === 0 || (bits & B_REMNANT) !== 0 || this.phase(h) === DELETING) return;
      const first = this.f(h, F_FIRST);
      out.push(this.event(h, null, 'UPDATE', '', this.wall.toWallMs(first),
        this.f(h, F_RXP), this.f(h, F_TXP), this.f(h, F_RXB), this.f(h, F_TXB), first, this.f(h, F_LAST_SEEN)));
    });
    return out;
  }

  get activeFlows(): number {
    return this.s4.size + this.s6.size;
  }

  /** Endpoints and policies held by tracked flows (shared between flows). */
  get attributionsHeld(): number {
    return this.attrs.size;
  }

  /** Is this key tracked (tests, tools)? */
  has(keyId: string): boolean {
    this.k.fromId(keyId);
    return this.find(keyId.length === 16) !== NONE;
  }

  // ------------------------------------------------------------------ column access

  private st_(h: number): FlowStore {
    return (h & 1) === 0 ? this.s4 : this.s6;
  }
  private f(h: number, col: number): number {
    return this.st_(h).f64[(h >>> 1) * F_STRIDE + col];
  }
  private setF(h: number, col: number, v: number): void {
    this.st_(h).f64[(h >>> 1) * F_STRIDE + col] = v;
  }
  private u(h: number, col: number): number {
    return this.st_(h).u32[(h >>> 1) * U_STRIDE + col];
  }
  private setU(h: number, col: number, v: number): void {
    this.st_(h).u32[(h >>> 1) * U_STRIDE + col] = v;
  }
  private has_(h: number, b: number): boolean {
    return (this.u(h, U_BITS) & b) !== 0;
  }
  private set(h: number, b: number): void {
    this.st_(h).u32[(h >>> 1) * U_STRIDE + U_BITS] |= b;
  }
  private clear(h: number, b: number): void {
    this.st_(h).u32[(h >>> 1) * U_STRIDE + U_BITS] &= ~b;
  }
  private live(h: number): boolean {
    return (this.u(h, U_BITS) & B_LIVE) !== 0;
  }
  private isTcp(h: number): boolean {
    return (this.u(h, U_BITS) & B_TCP) !== 0;
  }
  private phase(h: number): Phase {
    return ((this.u(h, U_BITS) >>> PHASE_SHIFT) & 3) as Phase;
  }
  private setPhase(h: number, p: Phase): void {
    const o = (h >>> 1) * U_STRIDE + U_BITS, u = this.st_(h).u32;
    u[o] = (u[o] & ~(3 << PHASE_SHIFT)) | (p << PHASE_SHIFT);
  }
  private endReason(h: number): FlowEndReason {
    return END_REASONS[(this.u(h, U_BITS) >>> REASON_SHIFT) & 7];
  }
  private setReason(h: number, r: FlowEndReason): void {
    const o = (h >>> 1) * U_STRIDE + U_BITS, u = this.st_(h).u32;
    u[o] = (u[o] & ~(7 << REASON_SHIFT)) | (END_REASONS.indexOf(r) << REASON_SHIFT);
  }
  /** The key's word with proto, kind and ifindex (bytes 12-15 of an IPv4 key, 36-39 of IPv6). */
  private keyTail(h: number): number {
    const v4 = (h & 1) === 0;
    return this.st_(h).table.keys[(h >>> 1) * (v4 ? 4 : 10) + (v4 ? 3 : 9)];
  }
  private proto(h: number): number {
    return this.keyTail(h) & 255;
  }
  private kind(h: number): FlowKind {
    return ((this.keyTail(h) >>> 8) & 255) as FlowKind;
  }
  private orFlags(h: number, flags: number): void {
    this.st_(h).u32[(h >>> 1) * U_STRIDE + U_FLAGS] |= flags;
  }
  /** The flow of the key in this.k, or NONE. */
  private find(v4: boolean): number {
    const slot = (v4 ? this.s4 : this.s6).find(this.k);
    return slot < 0 ? NONE : slot * 2 + (v4 ? 0 : 1);
  }
  /** Is this flow's key the one in this.k? */
  private keyIs(h: number): boolean {
    const keys = this.st_(h).table.keys, n = (h & 1) === 0 ? 4 : 10, o = (h >>> 1) * n, w = this.k.words;
    for (let j = 0; j < n; j++) if (keys[o + j] !== w[j]) return false;
    return true;
  }
  private policyOf(h: number): number {
    return (this.u(h, U_BITS) >>> POLICY_SHIFT) & POLICY_MAX;
  }
  private keyIdOf(h: number): string {
    return this.st_(h).table.keyId(h >>> 1);
  }
  /** The key in this.k as an id (one flat string: concatenating pieces would make a rope). */
  private scratchId(v4: boolean): string {
    const b = this.k.bytes;
    if (v4) return String.fromCharCode(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    return String.fromCharCode.apply(null, Array.from(b.subarray(0, 40)));
  }
  private forEachFlow(fn: (h: number) => void): void {
    for (const S of [this.s4, this.s6]) {
      const fam = S === this.s4 ? 0 : 1, hw = S.table.highWater;
      for (let s = 0; s < hw; s++) if ((S.u32[s * U_STRIDE + U_BITS] & B_LIVE) !== 0) fn(s * 2 + fam);
    }
  }
  /** Put a CLOSING flow on the closing list (once). */
  private list(h: number): void {
    const at = this.f(h, F_CLOSE_AT);
    if (at < this.minDueNs) this.minDueNs = at;
    if (this.has_(h, B_LISTED)) return;
    this.set(h, B_LISTED);
    if (this.closingLen === this.closing.length) {
      const bigger = new Int32Array(this.closing.length * 2);
      bigger.set(this.closing);
      this.closing = bigger;
    }
    this.closing[this.closingLen++] = h;
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

  private idleTimeout(h: number): number {
    const kind = this.kind(h);
    switch (this.proto(h)) {
      case 6:
        if (kind !== FlowKind.Ports) return this.idle.other;
        return this.has_(h, B_FIN_ING | B_FIN_EGR) ? this.idle.tcpHalf : this.idle.tcp;
      case 17:
        return kind === FlowKind.Ports ? this.idle.udp : this.idle.other;
      case 1:
      case 58:
        return kind === FlowKind.Icmp ? this.idle.icmp : this.idle.other;
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
  private adoptedIdle(h: number, now: number): boolean {
    // F_REP_AT and the rep counters hold the adoption's values until something moves (update()
    // only changes them then); lastSeen covers packets the kernel did not count (counting off).
    const S = this.st_(h), fo = (h >>> 1) * F_STRIDE, uo = (h >>> 1) * U_STRIDE, a = S.f64, u = S.u32;
    if ((a[fo + F_RXP] % 0x1_0000_0000) !== u[uo + U_REP_RXP] || (a[fo + F_TXP] % 0x1_0000_0000) !== u[uo + U_REP_TXP] ||
        a[fo + F_RXB] !== a[fo + F_REP_RXB] || a[fo + F_TXB] !== a[fo + F_REP_TXB] || a[fo + F_LAST_SEEN] > a[fo + F_REP_AT]) {
      this.clear(h, B_ADOPTED);
      return false;
    }
    if (this.phase(h) !== ACTIVE || now - a[fo + F_REP_AT] < this.idle.udp) return false;
    this.clear(h, B_ADOPTED);
    this.st.adoptedIdleEnded++;
    this.schedule(h, now, 'idle');
    return true;
  }

  /** New flow (key in this.k, id its text) from a START record or a drain. Decides remnant / exported / filtered; emits START. */
  private create(id: string, firstNs: number, flags: number, now: number, out: FlowEvent[]): number {
    const v4 = id.length === 16;
    const po = v4 ? 8 : 32;
    const proto = id.charCodeAt(po + 4);
    const kind = id.charCodeAt(po + 5) as FlowKind;
    const S = v4 ? this.s4 : this.s6;
    const slot = S.alloc(this.k);
    const h = slot * 2 + (v4 ? 0 : 1);
    const tcp = proto === 6 && kind === FlowKind.Ports;
    const fo = slot * F_STRIDE, uo = slot * U_STRIDE, a = S.f64, u = S.u32;
    a[fo + F_FIRST] = firstNs;
    a[fo + F_REP_AT] = firstNs;
    a[fo + F_LAST_SEEN] = firstNs;
    a[fo + F_CLOSE_AT] = Infinity;
    u[uo + U_FLAGS] = flags;
    u[uo + U_BITS] = B_LIVE | (tcp ? B_TCP : 0);
    // The parity opposite to the drain in progress (or the next one): that drain sees it as new.
    const next = this.drain !== null ? this.drainGen : this.drainGen + 1;
    if ((next & 1) === 0) u[uo + U_BITS] |= B_SEEN;
    if (tcp && (flags & (TCP_SYN | (TCP_SYN << 8))) === 0) {
      const endedAt = this.timeWait.get(id);
      if (endedAt !== undefined && now - endedAt < this.timeWaitNs) {
        this.set(h, B_REMNANT);
        this.remnants++;
        this.schedule(h, Math.max(firstNs + this.remnantGraceNs, now), 'forced');
        return h;
      }
    }
    this.attribute(h, id, now, out);
    return h;
  }

  private attribute(h: number, id: string, now: number, out: FlowEvent[]): void {
    const v4 = id.length === 16;
    const al = v4 ? 4 : 16;
    const po = v4 ? 8 : 32;
    const flags = this.u(h, U_FLAGS);
    const initB = (flags & FLAG_INIT_B) !== 0;
    const rawA = id.substring(0, al);
    const rawB = id.substring(al, 2 * al);
    const portA = (id.charCodeAt(po) << 8) | id.charCodeAt(po + 1);
    const portB = (id.charCodeAt(po + 2) << 8) | id.charCodeAt(po + 3);
    const t = this.tuple;
    t.family = v4 ? 4 : 6;
    t.srcRaw = initB ? rawB : rawA;
    t.dstRaw = initB ? rawA : rawB;
    t.proto = this.proto(h);
    t.hasPorts = this.kind(h) === FlowKind.Ports;
    t.srcPort = t.hasPorts ? (initB ? portB : portA) : 0;
    t.dstPort = t.hasPorts ? (initB ? portA : portB) : 0;
    t.direction = (flags & FLAG_INIT_EGRESS) !== 0 ? 'EGRESS' : 'INGRESS';
    t.nowNs = now;
    const attributor = this.attributor;
    let a: AttributionParts;
    if (attributor.attributeParts !== undefined) {
      a = this.parts;
      attributor.attributeParts(t, a);
    } else {
      a = this.attrs.partsOf(attributor.attribute(t));
    }
    t.srcRaw = t.dstRaw = ''; // the tuple must not keep a batch's key text alive
    let pol = this.attrs.refPolicy(a.policy);
    if (pol > POLICY_MAX) {
      // More policies in use at once than the flow row holds: this flow is reported without one.
      this.attrs.unrefPolicy(pol);
      pol = this.attrs.refPolicy(null);
      this.st.policiesOverflow++;
    }
    this.setU(h, U_SRC, this.attrs.refSource(a.source, a.user));
    this.setU(h, U_DST, this.attrs.refDestination(a.destination));
    const o = (h >>> 1) * U_STRIDE + U_BITS, u = this.st_(h).u32;
    u[o] = (u[o] & ~(POLICY_MAX << POLICY_SHIFT)) | (pol << POLICY_SHIFT);
    if (initB) this.set(h, B_INIT_B);
    else this.clear(h, B_INIT_B);
    if (a.skip === '') {
      this.set(h, B_EXPORTED);
      if (this.updateNs > 0) this.setU(h, U_UPD_N, 1);
      const first = this.f(h, F_FIRST);
      const ev = this.event(h, id, 'START', 'start', this.wall.toWallMs(first), 0, 0, 0, 0, first, now);
      ev.delta = null;
      out.push(ev);
    } else if (a.skip === 'exit_node') {
      this.st.exitNodeSkipped++;
    } else {
      this.st.filtered++;
    }
  }

  /** An entry found by a drain that no START record announced (key in this.k). */
  private discover(id: string, v: FlowCounters, lastNs: number, now: number, out: FlowEvent[]): number {
    const adopted = v.firstNs < this.startedNs;
    // Counters as found; adopted flows report only what moves from now on in UPDATEs (END has totals).
    const h = this.create(id, v.firstNs, v.flags, now, out);
    const S = this.st_(h), fo = (h >>> 1) * F_STRIDE, uo = (h >>> 1) * U_STRIDE, a = S.f64, u = S.u32;
    a[fo + F_RXP] = v.rxPackets;
    a[fo + F_TXP] = v.txPackets;
    a[fo + F_RXB] = v.rxBytes;
    a[fo + F_TXB] = v.txBytes;
    a[fo + F_LAST_SEEN] = Math.max(lastNs, v.firstNs);
    if (this.has_(h, B_REMNANT)) return h;
    if (adopted) {
      this.st.adopted++;
      this.set(h, B_ADOPTED);
      u[uo + U_REP_RXP] = v.rxPackets;
      u[uo + U_REP_TXP] = v.txPackets;
      a[fo + F_REP_RXB] = v.rxBytes;
      a[fo + F_REP_TXB] = v.txBytes;
      a[fo + F_REP_AT] = now;
      if (this.has_(h, B_EXPORTED) && this.updateNs > 0) {
        u[uo + U_UPD_N] = Math.floor((now - v.firstNs) / this.updateNs) + 1;
      }
    } else {
      this.st.discoveredWithoutStart++;
      if ((v.flags & FLAG_START_LOST) !== 0) this.st.startLost++;
    }
    const p = this.pending.get(id);
    if (p !== undefined) {
      // Hints older than this entry belong to an earlier flow on the same key: ignore those.
      this.pending.delete(id);
      const t0 = v.firstNs;
      if (this.isTcp(h)) this.tcpClose(h, p.finIngNs >= t0 ? p.finIngNs : 0, p.finEgrNs >= t0 ? p.finEgrNs : 0, p.rstNs >= t0 ? p.rstNs : 0);
    }
    return h;
  }

  /** A remnant whose entry shows a SYN is a new connection on the same ports after all. */
  private promote(h: number, now: number, out: FlowEvent[]): void {
    this.clear(h, B_REMNANT);
    this.remnants--;
    this.st.remnantsPromoted++;
    this.clear(h, B_LISTED); // off the closing list (dueDeletes drops the stale entry)
    this.setPhase(h, ACTIVE);
    this.setF(h, F_CLOSE_AT, Infinity);
    this.attribute(h, this.keyIdOf(h), now, out);
    if (this.isTcp(h)) this.tcpFlags(h, this.u(h, U_FLAGS), this.f(h, F_LAST_SEEN));
  }

  /** Widen and store kernel counters. The widened packet count is kept; the kernel's is its low 32 bits. */
  private absorb(h: number, v: FlowCounters): void {
    const a = this.st_(h).f64, fo = (h >>> 1) * F_STRIDE;
    const rx = a[fo + F_RXP], tx = a[fo + F_TXP];
    a[fo + F_RXP] = rx + ((v.rxPackets - (rx % 0x1_0000_0000)) >>> 0);
    a[fo + F_TXP] = tx + ((v.txPackets - (tx % 0x1_0000_0000)) >>> 0);
    if (v.rxBytes > a[fo + F_RXB]) a[fo + F_RXB] = v.rxBytes;
    if (v.txBytes > a[fo + F_TXB]) a[fo + F_TXB] = v.txBytes;
  }

  /** FIN/RST from the TCP flag bits of the kernel flags (drains, START records). */
  private tcpFlags(h: number, flags: number, atNs: number): void {
    const ing = flags & 0xff, egr = (flags >>> 8) & 0xff;
    if (((ing | egr) & (TCP_FIN | TCP_RST)) === 0) return;
    this.tcpClose(h, ing & TCP_FIN ? atNs : 0, egr & TCP_FIN ? atNs : 0, (ing | egr) & TCP_RST ? atNs : 0);
  }

  /**
   * Record FIN (per direction) / RST (0 = not seen here) and schedule the END. Only the first FIN
   * of each direction counts and the close waits for the later of the two: U_FIN_MS keeps it.
   */
  private tcpClose(h: number, finIngNs: number, finEgrNs: number, rstNs: number): void {
    if (rstNs !== 0 && !this.has_(h, B_RST)) {
      this.set(h, B_RST);
      this.schedule(h, rstNs + this.rstGraceNs, 'tcp_rst');
    }
    if (finIngNs !== 0 && !this.has_(h, B_FIN_ING)) {
      this.set(h, B_FIN_ING);
      this.finMs(h, finIngNs);
    }
    if (finEgrNs !== 0 && !this.has_(h, B_FIN_EGR)) {
      this.set(h, B_FIN_EGR);
      this.finMs(h, finEgrNs);
    }
    if ((this.u(h, U_BITS) & (B_FIN_ING | B_FIN_EGR)) === (B_FIN_ING | B_FIN_EGR)) {
      const ms = this.u(h, U_FIN_MS);
      // FIN_MS_FAR: a FIN more than 49 days into the flow; the later FIN seen now stands in.
      const atNs = ms !== FIN_MS_FAR ? this.f(h, F_FIRST) + ms * MS : Math.max(finIngNs, finEgrNs);
      this.schedule(h, atNs + this.closeGraceNs, 'tcp_fin');
    }
  }

  /** Keep the later FIN (ms after the first packet, rounded up) in U_FIN_MS. */
  private finMs(h: number, finNs: number): void {
    const raw = Math.ceil((finNs - this.f(h, F_FIRST)) / MS);
    const ms = raw < 0 ? 0 : raw >= FIN_MS_FAR ? FIN_MS_FAR : raw;
    const cur = this.u(h, U_FIN_MS);
    if (ms > cur) this.setU(h, U_FIN_MS, ms);
  }

  /** End the flow at atNs (the earliest schedule wins). */
  private schedule(h: number, atNs: number, reason: FlowEndReason): void {
    if (this.phase(h) === DELETING || atNs >= this.f(h, F_CLOSE_AT)) return;
    this.setF(h, F_CLOSE_AT, atNs);
    this.setReason(h, reason);
    this.setPhase(h, CLOSING);
    this.list(h);
  }

  private update(h: number, now: number, out: FlowEvent[]): void {
    const S = this.st_(h), fo = (h >>> 1) * F_STRIDE, uo = (h >>> 1) * U_STRIDE, a = S.f64, u = S.u32;
    const k = Math.floor((now - a[fo + F_FIRST]) / this.updateNs);
    u[uo + U_UPD_N] = k + 1;
    const dRxP = ((a[fo + F_RXP] % 0x1_0000_0000) - u[uo + U_REP_RXP]) >>> 0;
    const dTxP = ((a[fo + F_TXP] % 0x1_0000_0000) - u[uo + U_REP_TXP]) >>> 0;
    const dRxB = a[fo + F_RXB] - a[fo + F_REP_RXB], dTxB = a[fo + F_TXB] - a[fo + F_REP_TXB];
    if (dRxP === 0 && dTxP === 0 && dRxB === 0 && dTxB === 0) return; // nothing moved: the next window starts at the last report
    const ev = this.event(h, null, 'UPDATE', `update:${k}`, this.wall.toWallMs(now), dRxP, dTxP, dRxB, dTxB, a[fo + F_REP_AT], now);
    ev.delta = { rxBytes: dRxB, txBytes: dTxB, rxPackets: dRxP, txPackets: dTxP, startMs: ev.windowStartMs!, endMs: ev.windowEndMs! };
    out.push(ev);
    u[uo + U_REP_RXP] = a[fo + F_RXP] % 0x1_0000_0000;
    u[uo + U_REP_TXP] = a[fo + F_TXP] % 0x1_0000_0000;
    a[fo + F_REP_RXB] = a[fo + F_RXB];
    a[fo + F_REP_TXB] = a[fo + F_TXB];
    a[fo + F_REP_AT] = now;
  }

  /** Emit the END (if exported), drop the flow, remember closed TCP keys. */
  private finish(h: number, reason: FlowEndReason, now: number, out: FlowEvent[]): void {
    const bits = this.u(h, U_BITS);
    const id = this.keyIdOf(h);
    if ((bits & B_REMNANT) !== 0) {
      this.remnants--;
      this.st.lateAfterEndFlows++;
      this.st.lateAfterEndPackets += this.f(h, F_RXP) + this.f(h, F_TXP);
      this.st.lateAfterEndBytes += this.f(h, F_RXB) + this.f(h, F_TXB);
    } else {
      if ((bits & B_EXPORTED) !== 0) {
        const ev = this.event(h, id, 'END', 'end', this.wall.toWallMs(now),
          this.f(h, F_RXP), this.f(h, F_TXP), this.f(h, F_RXB), this.f(h, F_TXB), this.f(h, F_FIRST), now);
        ev.endReason = reason;
        // What moved since the last report (or the first packet; for an adopted flow, its adoption).
        const S = this.st_(h), fo = (h >>> 1) * F_STRIDE, uo = (h >>> 1) * U_STRIDE, a = S.f64, u = S.u32;
        ev.delta = {
          rxBytes: Math.max(0, a[fo + F_RXB] - a[fo + F_REP_RXB]), txBytes: Math.max(0, a[fo + F_TXB] - a[fo + F_REP_TXB]),
          rxPackets: ((a[fo + F_RXP] % 0x1_0000_0000) - u[uo + U_REP_RXP]) >>> 0,
          txPackets: ((a[fo + F_TXP] % 0x1_0000_0000) - u[uo + U_REP_TXP]) >>> 0,
          startMs: this.wall.toWallMs(a[fo + F_REP_AT]), endMs: ev.windowEndMs!,
        };
        out.push(ev);
        this.st.ended[reason]++;
      }
      if ((bits & B_TCP) !== 0 && (reason === 'tcp_fin' || reason === 'tcp_rst')) {
        this.timeWait.delete(id);
        this.timeWait.set(id, now);
        if (this.timeWait.size > this.timeWaitMax) this.timeWait.delete(this.timeWait.keys().next().value!);
      }
      this.attrs.unref(this.u(h, U_SRC), this.u(h, U_DST), this.policyOf(h)); // remnants have none
    }
    if (this.firstInDrain === h) this.firstInDrain = NONE;
    // The row goes back to the store: a stale handle (closing list, drain guess) sees it not live.
    this.st_(h).release(h >>> 1);
  }

  /** The kernel entry went away (or was replaced) without our delete: END with what we last saw. */
  private vanish(h: number, now: number, out: FlowEvent[]): void {
    this.st.vanished++;
    this.finish(h, this.phase(h) === ACTIVE ? 'forced' : this.endReason(h), now, out);
  }

  private sweepMissing(gen: number, now: number, out: FlowEvent[]): void {
    const gone: number[] = [];
    const parity = (gen & 1) === 1 ? B_SEEN : 0;
    this.forEachFlow((h) => {
      const S = this.st_(h), o = (h >>> 1) * U_STRIDE + U_BITS, bits = S.u32[o];
      if ((bits & B_SEEN) === parity || this.phase(h) === DELETING) return;
      const missed = Math.min(((bits >>> MISSED_SHIFT) & MISSED_MAX) + 1, MISSED_MAX);
      // Counted for this drain: takes its parity, so the next drain sees it missing again.
      S.u32[o] = ((bits & ~(MISSED_MAX << MISSED_SHIFT)) | (missed << MISSED_SHIFT)) ^ B_SEEN;
      if (missed >= this.missingToEnd) gone.push(h);
    });
    for (const h of gone) this.vanish(h, now, out);
  }

  private expire(now: number, gen: number): void {
    for (const [id, at] of this.timeWait) {
      if (now - at < this.timeWaitNs) break;
      this.timeWait.delete(id);
    }
    for (const [id, p] of this.pending) if (gen - p.gen >= 2) this.pending.delete(id);
  }

  private event(
    h: number, keyId: string | null, type: FlowEventType, label: string, timestampMs: number,
    rxPackets: number, txPackets: number, rxBytes: number, txBytes: number, windowStartNs: number, windowEndNs: number,
  ): FlowEvent {
    const x = this.input;
    const id = keyId ?? this.keyIdOf(h);
    const bits = this.u(h, U_BITS);
    x.keyId = id;
    x.firstNs = this.f(h, F_FIRST);
    x.flags = this.u(h, U_FLAGS);
    x.proto = this.proto(h);
    x.kind = this.kind(h);
    x.initB = (bits & B_INIT_B) !== 0;
    const src = this.u(h, U_SRC), pol = this.attrs.policy((bits >>> POLICY_SHIFT) & POLICY_MAX);
    x.source = this.attrs.endpoint(src);
    x.destination = this.attrs.endpoint(this.u(h, U_DST));
    x.user = this.attrs.user(src);
    x.ruleId = pol.id;
    x.policyName = pol.name;
    const po = id.length === 16 ? 8 : 32;
    x.interfaceName = this.ifname(id.charCodeAt(po + 6) | (id.charCodeAt(po + 7) << 8));
    if (label !== '') this.st.events[type as 'START' | 'UPDATE' | 'END']++;
    const ev = this.builder.build(x, type, label, timestampMs, rxPackets, txPackets, rxBytes, txBytes, windowStartNs, windowEndNs);
    x.keyId = '';
    return ev;
  }
}

const END_REASONS: readonly FlowEndReason[] = ['idle', 'tcp_fin', 'tcp_rst', 'forced', 'lack_of_resources'];
