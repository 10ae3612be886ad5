// Per-flow state of the tracker in flat memory: one store per address family, a key table
// (table.ts) whose slots are rows of two typed-array columns. No JavaScript object, string or
// closure per tracked flow: at 1,000,000 flows the object-per-flow design cost ~1.3 KB a flow and
// most of the CPU in garbage collection (docs/performance-history.md, part 7); a row here costs
// the bytes in budget.ts. The lifecycle (tracker.ts) reads and writes flows through the column
// offsets below.
//
// A flow is named by a handle: slot * 2 + family bit (0: IPv4 store, 1: IPv6 store).
import { SLOT_BYTES_V4, SLOT_BYTES_V6 } from './budget';
import { FlowTable, type KeyScratch } from './table';

// Float64 column, F_STRIDE per row: times (CLOCK_MONOTONIC ns) and widened counters.
export const F_FIRST = 0, F_LAST_SEEN = 1, F_CLOSE_AT = 2, F_REP_AT = 3;
export const F_RXP = 4, F_TXP = 5, F_RXB = 6, F_TXB = 7, F_REP_RXB = 8, F_REP_TXB = 9;
export const F_STRIDE = 10;
// Uint32 column, U_STRIDE per row.
/** OR of every kernel flags word seen. */
export const U_FLAGS = 0;
/** B_* bits, phase, end reason, policy (the protocol and kind are read from the key). */
export const U_BITS = 1;
/** The source's and the destination's endpoint in the tracker's AttributionStore (attributions.ts). */
export const U_SRC = 2;
/** The next UPDATE is due at first + n * updateInterval (0: never). */
export const U_UPD_N = 3;
/** Packet counters as of the last report, modulo 2^32 (a window never moves 2^32 packets). */
export const U_REP_RXP = 4, U_REP_TXP = 5;
/**
 * The later of the first FIN of each direction, in ms after the first packet, rounded up (the
 * close is scheduled a grace after it; a ms later at most). FIN_MS_FAR: more than 49 days.
 */
export const U_FIN_MS = 6;
export const FIN_MS_FAR = 0xffffffff;
/**
 * The handle + 1 of the flow after this one in the last drain (0: none). Drains list the map in
 * bucket order, which barely changes between drains: following this link finds most entries'
 * flows without a hash lookup (drain of 100,000 known flows: 9.3 M entries/s with it, 3.6 M
 * without; AMD EPYC VM).
 */
export const U_NEXT = 7;
export const U_DST = 8;
export const U_STRIDE = 9;

if (F_STRIDE * 8 + U_STRIDE * 4 + 16 !== SLOT_BYTES_V4 || F_STRIDE * 8 + U_STRIDE * 4 + 40 !== SLOT_BYTES_V6) {
  throw new Error('flow/budget.ts does not match the store layout');
}

// U_BITS
export const B_LIVE = 1, B_INIT_B = 2, B_EXPORTED = 4, B_REMNANT = 8, B_TCP = 16, B_ADOPTED = 32;
/** FIN seen from the ingress / egress side, RST seen (their times: F_FIN_MAX, and the schedule). */
export const B_FIN_ING = 64, B_FIN_EGR = 128, B_RST = 256;
/** The handle is in the tracker's closing list. */
export const B_LISTED = 512;
export const PHASE_SHIFT = 10, REASON_SHIFT = 12;
/**
 * The parity of the last drain that listed the flow (or that counted it missing), and how many
 * drains in a row missed it (0-3). A drain sees a flow it lists for the first time by the parity.
 */
export const B_SEEN = 1 << 15;
export const MISSED_SHIFT = 30;
export const MISSED_MAX = 3;
/** The flow's policy in the AttributionStore: 14 bits, up to POLICY_MAX policies in use at once. */
export const POLICY_SHIFT = 16;
export const POLICY_MAX = 0x3fff;

export type Phase = 0 | 1 | 2; // ACTIVE, CLOSING (close time scheduled), DELETING (handed out by dueDeletes)
export const ACTIVE: Phase = 0, CLOSING: Phase = 1, DELETING: Phase = 2;

export class FlowStore {
  readonly table: FlowTable;
  f64: Float64Array;
  u32: Uint32Array;

  constructor(readonly family: 4 | 6, initialSlots: number) {
    this.table = new FlowTable(family === 4 ? 4 : 10, initialSlots);
    this.f64 = new Float64Array(this.table.slots * F_STRIDE);
    this.u32 = new Uint32Array(this.table.slots * U_STRIDE);
  }

  get size(): number {
    return this.table.size;
  }

  find(k: KeyScratch): number {
    return this.table.find(k);
  }

  /** A zeroed row for a new key (not in the table). */
  alloc(k: KeyScratch): number {
    const slot = this.table.insert(k);
    if (this.table.slots * U_STRIDE > this.u32.length) {
      const f = new Float64Array(this.table.slots * F_STRIDE);
      f.set(this.f64);
      this.f64 = f;
      const u = new Uint32Array(this.table.slots * U_STRIDE);
      u.set(this.u32);
      this.u32 = u;
    }
    this.f64.fill(0, slot * F_STRIDE, slot * F_STRIDE + F_STRIDE);
    this.u32.fill(0, slot * U_STRIDE, slot * U_STRIDE + U_STRIDE);
    return slot;
  }

  release(slot: number): void {
    this.u32[slot * U_STRIDE + U_BITS] = 0; // not live: iterations skip it
    this.table.remove(slot);
  }
}
