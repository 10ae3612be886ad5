// What each flow report moved since the previous one. Events of the flow engine carry it
// (FlowEvent.delta) and cost nothing here. For other events: UPDATE events carry deltas already;
// END carries the flow's totals, so the deltas of its UPDATEs are remembered and subtracted. Used
// by every consumer that needs per-report deltas (IPFIX records, byte metrics).
import type { Delta, FlowEvent } from './event';

export type { Delta } from './event';

interface Reported {
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  lastEndMs: number;
}

export class DeltaTracker {
  private readonly flows = new Map<string, Reported>();

  /** Flows with reports so far and no END yet. */
  get active(): number {
    return this.flows.size;
  }

  /** The delta of a report; undefined for START (it only opens the window) and DROP. */
  next(ev: FlowEvent): Delta | undefined {
    if (ev.delta !== undefined) return ev.delta ?? undefined; // the engine's own: no state per flow
    const prev = this.flows.get(ev.flowId);
    const endMs = ev.windowEndMs ?? ev.timestampMs;
    if (ev.type === 'START') {
      if (!prev) this.flows.set(ev.flowId, { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, lastEndMs: ev.timestampMs });
      return undefined;
    }
    if (ev.type === 'UPDATE') {
      const startMs = ev.windowStartMs ?? prev?.lastEndMs ?? ev.timestampMs;
      const s = prev ?? { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, lastEndMs: startMs };
      s.rxBytes += ev.rxBytes;
      s.txBytes += ev.txBytes;
      s.rxPackets += ev.rxPackets;
      s.txPackets += ev.txPackets;
      s.lastEndMs = endMs;
      this.flows.set(ev.flowId, s);
      return { rxBytes: ev.rxBytes, txBytes: ev.txBytes, rxPackets: ev.rxPackets, txPackets: ev.txPackets, startMs, endMs };
    }
    if (ev.type === 'END') {
      this.flows.delete(ev.flowId);
      const p = prev ?? { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, lastEndMs: ev.windowStartMs ?? ev.timestampMs };
      return {
        rxBytes: Math.max(0, ev.rxBytes - p.rxBytes),
        txBytes: Math.max(0, ev.txBytes - p.txBytes),
        rxPackets: Math.max(0, ev.rxPackets - p.rxPackets),
        txPackets: Math.max(0, ev.txPackets - p.txPackets),
        startMs: p.lastEndMs,
        endMs,
      };
    }
    return undefined;
  }
}
