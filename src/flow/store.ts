// Per-flow state of the tracker, in flat memory: one Float64Array (the slab) holds every flow's
// numbers, STRIDE doubles per flow, and a Flow is a small handle (key id, packed bits, slot).
// The lifecycle (tracker.ts) reads and writes flows only through this module, so the storage can
// change (e.g. to typed-array columns with no object per flow) without touching it.
import type { Attribution } from '../attribution/attributor';
import { FlowKind, keyFromId, type FlowKey } from '../datapath/records';
import type { FlowEndReason } from '../model/event';
import { eventIdText, uuidText } from './ids';

/** A flat copy of a short string (key ids are slices of a whole ring or map batch). */
const CODES16: number[] = new Array<number>(16).fill(0);
const CODES40: number[] = new Array<number>(40).fill(0);
export function flatCopy(s: string): string {
  const codes = s.length === 16 ? CODES16 : s.length === 40 ? CODES40 : new Array<number>(s.length);
  for (let i = 0; i < s.length; i++) codes[i] = s.charCodeAt(i);
  return String.fromCharCode.apply(null, codes);
}

export type Phase = 0 | 1 | 2; // ACTIVE, CLOSING (close time scheduled), DELETING (handed out by dueDeletes)
export const ACTIVE: Phase = 0, CLOSING: Phase = 1, DELETING: Phase = 2;

// Per-flow numbers live in one Float64Array (FlowSlab), STRIDE doubles per flow, not in object
// fields: V8 boxes every double field (timestamps in ns, byte counters) in its own heap object,
// which made a tracked flow cost ~1.3 KB and the garbage collector most of the CPU at 100k+ flows.
const F_FIRST = 0, F_CLOSE_AT = 1, F_REP_AT = 2, F_NEXT_UPDATE = 3, F_LAST_SEEN = 4, F_FIN_ING = 5, F_FIN_EGR = 6, F_RST = 7;
const F_RXP = 8, F_TXP = 9, F_RXB = 10, F_TXB = 11, F_REP_RXP = 12, F_REP_TXP = 13, F_REP_RXB = 14, F_REP_TXB = 15;
const F_RAW_RXP = 16, F_RAW_TXP = 17, F_FLAGS = 18, F_UUID = 19; // F_UUID..+3: the flow id's 32-bit words
const STRIDE = 23;

export class FlowSlab {
  f64 = new Float64Array(STRIDE * 1024);
  private readonly free: number[] = [];
  private next = 0;

  alloc(): number {
    const slot = this.free.length > 0 ? this.free.pop()! : this.next++;
    if ((slot + 1) * STRIDE > this.f64.length) {
      const bigger = new Float64Array(this.f64.length * 2);
      bigger.set(this.f64);
      this.f64 = bigger;
    }
    const a = this.f64;
    for (let i = slot * STRIDE, end = i + STRIDE; i < end; i++) a[i] = 0;
    return slot;
  }

  release(slot: number): void {
    this.free.push(slot);
  }
}

const END_REASONS: readonly FlowEndReason[] = ['idle', 'tcp_fin', 'tcp_rst', 'forced', 'lack_of_resources'];
// Flow.bits: the flags, phase, end reason, protocol and kind of a flow packed into one small
// integer (one field instead of nine).
const B_UUID = 1, B_INIT_B = 2, B_EXPORTED = 4, B_REMNANT = 8, B_TCP = 16;
const B_PHASE_SHIFT = 5, B_REASON_SHIFT = 8, B_PROTO_SHIFT = 12, B_KIND_SHIFT = 20;
const B_ADOPTED = 1 << 22;

/**
 * Per-flow state. Counters are widened (packets past 2^32) and from the reporter's view.
 *
 * A flow object is kept small and holds no strings of its own besides the key id: numbers are in
 * the slab, flags in one packed integer, and the flow id lives as four words in the slab; its
 * text, the event ids and the address text are made when an event is built. Everything a flow
 * keeps survives into the old generation, and at 100k+ new flows/s that copying and marking costs
 * more than formatting twice (START and END).
 */
export class Flow {
  private bits: number;
  /** Shared with other flows of the same attribution (never modify). */
  attribution: Attribution | null = null;
  /** The flow after this one in the last drain (see onDrain). */
  nextInDrain: Flow | null = null;
  /** The last drain that listed it, and how many drains in a row missed it (small integers: no boxing). */
  seenGen = 0;
  missed = 0;

  constructor(
    private readonly slab: FlowSlab,
    readonly slot: number,
    /** The key id: a flat copy (a substring of a batch would keep the whole batch alive). */
    readonly id: string,
    firstNs: number,
    flags: number,
    proto: number,
    kind: FlowKind,
    readonly ifname: string,
  ) {
    this.bits = (proto << B_PROTO_SHIFT) | (kind << B_KIND_SHIFT) | (proto === 6 && kind === FlowKind.Ports ? B_TCP : 0);
    const a = slab.f64, o = slot * STRIDE;
    a[o + F_FIRST] = firstNs;
    a[o + F_REP_AT] = firstNs;
    a[o + F_LAST_SEEN] = firstNs;
    a[o + F_CLOSE_AT] = Infinity;
    a[o + F_NEXT_UPDATE] = Infinity;
    a[o + F_FLAGS] = flags;
  }

  private get o(): number { return this.slot * STRIDE; }
  private flag(b: number, on: boolean): void { this.bits = on ? this.bits | b : this.bits & ~b; }
  /** The flow id's words are in the slab (set when the first event is built). */
  get hasUuid(): boolean { return (this.bits & B_UUID) !== 0; }
  /** The initiator is key side b (FLAG_INIT_B as of the attribution). */
  get initB(): boolean { return (this.bits & B_INIT_B) !== 0; }
  set initB(v: boolean) { this.flag(B_INIT_B, v); }
  get exported(): boolean { return (this.bits & B_EXPORTED) !== 0; }
  set exported(v: boolean) { this.flag(B_EXPORTED, v); }
  get remnant(): boolean { return (this.bits & B_REMNANT) !== 0; }
  set remnant(v: boolean) { this.flag(B_REMNANT, v); }
  get tcp(): boolean { return (this.bits & B_TCP) !== 0; }
  /** Adopted at a restart and nothing has moved since (repNs is the adoption time meanwhile). */
  get adopted(): boolean { return (this.bits & B_ADOPTED) !== 0; }
  set adopted(v: boolean) { this.flag(B_ADOPTED, v); }
  get phase(): Phase { return ((this.bits >>> B_PHASE_SHIFT) & 3) as Phase; }
  set phase(v: Phase) { this.bits = (this.bits & ~(3 << B_PHASE_SHIFT)) | (v << B_PHASE_SHIFT); }
  get endReason(): FlowEndReason { return END_REASONS[(this.bits >>> B_REASON_SHIFT) & 7]; }
  set endReason(v: FlowEndReason) { this.bits = (this.bits & ~(7 << B_REASON_SHIFT)) | (END_REASONS.indexOf(v) << B_REASON_SHIFT); }
  get proto(): number { return (this.bits >>> B_PROTO_SHIFT) & 255; }
  get kind(): FlowKind { return ((this.bits >>> B_KIND_SHIFT) & 3) as FlowKind; }

  get key(): FlowKey {
    return keyFromId(this.id);
  }
  get firstNs(): number { return this.slab.f64[this.o + F_FIRST]; }
  get closeAtNs(): number { return this.slab.f64[this.o + F_CLOSE_AT]; }
  set closeAtNs(v: number) { this.slab.f64[this.o + F_CLOSE_AT] = v; }
  /** When the counters were last reported (UPDATE), or the window start for the next one. */
  get repNs(): number { return this.slab.f64[this.o + F_REP_AT]; }
  set repNs(v: number) { this.slab.f64[this.o + F_REP_AT] = v; }
  get nextUpdateNs(): number { return this.slab.f64[this.o + F_NEXT_UPDATE]; }
  set nextUpdateNs(v: number) { this.slab.f64[this.o + F_NEXT_UPDATE] = v; }
  get lastSeenNs(): number { return this.slab.f64[this.o + F_LAST_SEEN]; }
  set lastSeenNs(v: number) { this.slab.f64[this.o + F_LAST_SEEN] = v; }
  get finIngNs(): number { return this.slab.f64[this.o + F_FIN_ING]; }
  set finIngNs(v: number) { this.slab.f64[this.o + F_FIN_ING] = v; }
  get finEgrNs(): number { return this.slab.f64[this.o + F_FIN_EGR]; }
  set finEgrNs(v: number) { this.slab.f64[this.o + F_FIN_EGR] = v; }
  get rstNs(): number { return this.slab.f64[this.o + F_RST]; }
  set rstNs(v: number) { this.slab.f64[this.o + F_RST] = v; }
  get rxP(): number { return this.slab.f64[this.o + F_RXP]; }
  set rxP(v: number) { this.slab.f64[this.o + F_RXP] = v; }
  get txP(): number { return this.slab.f64[this.o + F_TXP]; }
  set txP(v: number) { this.slab.f64[this.o + F_TXP] = v; }
  get rxB(): number { return this.slab.f64[this.o + F_RXB]; }
  set rxB(v: number) { this.slab.f64[this.o + F_RXB] = v; }
  get txB(): number { return this.slab.f64[this.o + F_TXB]; }
  set txB(v: number) { this.slab.f64[this.o + F_TXB] = v; }
  /** Counters as of the last report: the next UPDATE carries the difference. */
  get repRxP(): number { return this.slab.f64[this.o + F_REP_RXP]; }
  set repRxP(v: number) { this.slab.f64[this.o + F_REP_RXP] = v; }
  get repTxP(): number { return this.slab.f64[this.o + F_REP_TXP]; }
  set repTxP(v: number) { this.slab.f64[this.o + F_REP_TXP] = v; }
  get repRxB(): number { return this.slab.f64[this.o + F_REP_RXB]; }
  set repRxB(v: number) { this.slab.f64[this.o + F_REP_RXB] = v; }
  get repTxB(): number { return this.slab.f64[this.o + F_REP_TXB]; }
  set repTxB(v: number) { this.slab.f64[this.o + F_REP_TXB] = v; }
  /** The kernel's last 32-bit packet counters (for widening). */
  get rawRxP(): number { return this.slab.f64[this.o + F_RAW_RXP]; }
  set rawRxP(v: number) { this.slab.f64[this.o + F_RAW_RXP] = v; }
  get rawTxP(): number { return this.slab.f64[this.o + F_RAW_TXP]; }
  set rawTxP(v: number) { this.slab.f64[this.o + F_RAW_TXP] = v; }
  /** The flow id text (valid once hasUuid). */
  flowIdText(): string {
    const a = this.slab.f64, o = this.o + F_UUID;
    return uuidText(a[o], a[o + 1], a[o + 2], a[o + 3]);
  }
  /** The id of this flow's event with this label (valid once hasUuid): derived from the flow id's words. */
  eventId(label: string): string {
    const a = this.slab.f64, o = this.o + F_UUID;
    return eventIdText(a[o], a[o + 1], a[o + 2], a[o + 3], label);
  }
  setUuid(w: Int32Array): void {
    const a = this.slab.f64, o = this.o + F_UUID;
    a[o] = w[0];
    a[o + 1] = w[1];
    a[o + 2] = w[2];
    a[o + 3] = w[3];
    this.bits |= B_UUID;
  }
  /** OR of every kernel flags word seen. */
  get flags(): number { return this.slab.f64[this.o + F_FLAGS]; }
  set flags(v: number) { this.slab.f64[this.o + F_FLAGS] = v >>> 0; }
}

