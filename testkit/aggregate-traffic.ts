// Deterministic, self-consistent flow traffic for the aggregated profile's tests: every flow has a
// START, interim UPDATEs and an END whose counters are the flow's totals, and every event carries
// its delta as the flow engine's do. Flows share NetBird's grouping key in several ways (same
// source, destination, port and protocol; ICMP echo request vs reply; another protocol that is
// not grouped), and long ones span several windows.
import { createHash } from 'node:crypto';
import type { FlowEvent, FlowEventType } from '../src/model/event';

function uuid(seed: string, what: string): string {
  const h = createHash('sha1').update(`${seed}\0${what}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const PROTOS = [6, 17, 1, 6, 58, 17, 47];

/** The events of `flows` flows starting at baseMs, sorted by time (ties: by flow, then kind). */
export function aggregateTraffic(seed: string, flows: number, baseMs = 1_750_000_000_000): FlowEvent[] {
  const out: FlowEvent[] = [];
  for (let f = 0; f < flows; f++) {
    const proto = PROTOS[f % PROTOS.length];
    const icmp = proto === 1 || proto === 58;
    const v6 = proto === 58;
    const t0 = baseMs + f * 300;
    const lifeMs = 2_000 + (f % 9) * 7_000;
    const flowId = uuid(seed, `flow ${f}`);
    // The same key comes back every 14 flows (4.2 s): several flows share a group in a window.
    const src = v6 ? `fd00::${1 + (Math.floor(f / 7) % 2)}` : `100.64.0.${1 + (Math.floor(f / 7) % 2)}`;
    const dst = v6 ? 'fd00::99' : `10.0.0.${1 + (f % 2)}`;
    const base = (type: FlowEventType, k: number, ts: number): FlowEvent => ({
      eventId: uuid(seed, `event ${f} ${k}`), flowId, type, timestampMs: ts, reporterId: 'peer-a',
      reporterPublicKey: Buffer.alloc(32, 7).toString('base64'), direction: f % 4 === 3 ? 'INGRESS' : 'EGRESS', protocol: proto,
      source: { ip: src, port: icmp ? 0 : 40_000 + f, id: 'peer-a', name: 'a', type: 'PEER', dnsLabel: '', os: 'linux', publicKey: '' },
      destination: { ip: dst, port: icmp ? 0 : [443, 53][f % 2], id: '', name: '', type: 'UNKNOWN', dnsLabel: '', os: '', publicKey: '' },
      icmpType: icmp ? [8, 0][f % 2] : 0, icmpCode: 0,
      rxPackets: 0, txPackets: 0, rxBytes: 0, txBytes: 0,
      ruleId: f % 5 === 0 ? '' : `rule-${f % 3}`, policyName: f % 5 === 0 ? '' : `policy ${f % 3}`, user: { id: '', name: '', email: '' },
      interfaceName: 'wt0', countersEnabled: true, tcpFlagsInitiator: proto === 6 ? 0x1b : 0, tcpFlagsResponder: proto === 6 ? 0x12 : 0,
    });
    out.push({ ...base('START', 0, t0), delta: null });
    const tot = { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 };
    let last = t0, k = 1;
    const step = (type: 'UPDATE' | 'END', ts: number): void => {
      const d = { rxPackets: 1 + ((f + k) % 5), txPackets: 2 + ((f * 3 + k) % 7), rxBytes: 100 * (1 + ((f + k) % 13)), txBytes: 60 * (1 + ((f * 7 + k) % 11)) };
      tot.rxBytes += d.rxBytes; tot.txBytes += d.txBytes; tot.rxPackets += d.rxPackets; tot.txPackets += d.txPackets;
      // UPDATE carries what moved in its window; END the flow's totals (docs/events.md).
      const shown = type === 'UPDATE' ? d : tot;
      out.push({ ...base(type, k, ts), ...shown, windowStartMs: last, windowEndMs: ts, delta: { ...d, startMs: last, endMs: ts }, ...(type === 'END' ? { endReason: 'idle' as const } : {}) });
      last = ts;
      k++;
    };
    for (let t = t0 + 4_000; t < t0 + lifeMs; t += 4_000) step('UPDATE', t);
    step('END', t0 + lifeMs);
  }
  return out.sort((a, b) => a.timestampMs - b.timestampMs || a.eventId.localeCompare(b.eventId));
}

/** Sums the way a receiver of the plain profile would: START/END/DROP counts, and the flows' totals from END. */
export function plainTotals(events: readonly FlowEvent[]): { starts: number; ends: number; drops: number; rxBytes: number; txBytes: number; rxPackets: number; txPackets: number } {
  const s = { starts: 0, ends: 0, drops: 0, rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 };
  for (const e of events) {
    if (e.type === 'START') s.starts++;
    if (e.type === 'DROP') s.drops++;
    if (e.type !== 'END') continue;
    s.ends++;
    s.rxBytes += e.rxBytes; s.txBytes += e.txBytes; s.rxPackets += e.rxPackets; s.txPackets += e.txPackets;
  }
  return s;
}
