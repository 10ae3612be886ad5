// Building flow events from a tracked flow's key and numbers: the one place where the key's bytes
// become the event's addresses, ports and ids (the event is the JSON and log edge's input).
import { endpointOf, type Attribution } from '../attribution/attributor';
import { FLAG_INIT_EGRESS, FLAG_UNCOUNTED, FlowKind } from '../datapath/records';
import type { WallConverter } from '../model/clock';
import type { FlowEvent, FlowEventType } from '../model/event';
import { rawToIpAt } from '../net/ip';
import { eventIdText, flowIdWords, uuidText, type Uuid } from './ids';

/** What an event is built from (filled by the tracker; reused, never kept). */
export interface EventInput {
  /** The flow key id: its bytes as a latin1 string. */
  keyId: string;
  firstNs: number;
  flags: number;
  proto: number;
  kind: FlowKind;
  /** The initiator is key side b. */
  initB: boolean;
  attribution: Attribution;
  interfaceName: string;
}

const WORDS = new Int32Array(4);

export class EventBuilder {
  constructor(
    private readonly ns: Uuid,
    private readonly wall: WallConverter,
    private readonly reporterId: string,
    private readonly reporterPublicKey: string,
  ) {}

  /**
   * One event. label: "start", "end", "update:<k>" (the event id's label), or '' for a status
   * snapshot (no event id). Counters as given; the window in CLOCK_MONOTONIC ns.
   */
  build(
    f: EventInput, type: FlowEventType, label: string, timestampMs: number,
    rxPackets: number, txPackets: number, rxBytes: number, txBytes: number, windowStartNs: number, windowEndNs: number,
  ): FlowEvent {
    const id = f.keyId;
    flowIdWords(this.ns, id, f.firstNs, WORDS);
    const w0 = WORDS[0], w1 = WORDS[1], w2 = WORDS[2], w3 = WORDS[3];
    const a = f.attribution;
    const flags = f.flags;
    const initEgress = (flags & FLAG_INIT_EGRESS) !== 0;
    const ing = flags & 0xff, egr = (flags >>> 8) & 0xff;
    // Initiator and responder from the key: addresses at 0 and al, ports at po and po + 2.
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
    return {
      eventId: label === '' ? '' : eventIdText(w0, w1, w2, w3, label),
      flowId: uuidText(w0, w1, w2, w3),
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
      interfaceName: f.interfaceName,
      windowStartMs: this.wall.toWallMs(windowStartNs),
      windowEndMs: this.wall.toWallMs(windowEndNs),
      countersEnabled: (flags & FLAG_UNCOUNTED) === 0,
      // The initiator's packets went out (egress) if it was local, else came in (ingress).
      tcpFlagsInitiator: initEgress ? egr : ing,
      tcpFlagsResponder: initEgress ? ing : egr,
    };
  }
}
