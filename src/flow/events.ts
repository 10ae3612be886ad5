// The flow engine's events: built from a tracked flow's key and numbers, with the key's bytes kept
// as they are. Ids and addresses become text only when something reads them (the JSON lines, a
// log); the gRPC and IPFIX writers take their bytes (FlowEventBytes), so on those paths no UUID
// or address text is made at all, and a new flow's START costs one object.
import { endpointOf, type EndpointInfo } from '../attribution/attributor';
import { FLAG_INIT_EGRESS, FLAG_UNCOUNTED, FlowKind } from '../datapath/records';
import type { WallConverter } from '../model/clock';
import type {
  Delta, FlowDirection, FlowEndpoint, FlowEndReason, FlowEvent, FlowEventBytes, FlowEventType, FlowUser,
} from '../model/event';
import { rawToIpAt } from '../net/ip';
import { eventIdText, eventIdWords, flowIdWords, uuidText, type Uuid } from './ids';

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
  /** What the attribution tables say of the initiator and the responder (shared objects). */
  source: EndpointInfo;
  destination: EndpointInfo;
  ruleId: string;
  policyName: string;
  user: FlowUser;
  interfaceName: string;
}

const WORDS = new Int32Array(4);

function putWord(out: Uint8Array, at: number, w: number): void {
  out[at] = w >>> 24;
  out[at + 1] = (w >>> 16) & 0xff;
  out[at + 2] = (w >>> 8) & 0xff;
  out[at + 3] = w & 0xff;
}

/**
 * A flow event of this engine. The plain fields are set at once; eventId, flowId, source and
 * destination are made from the key bytes on first read (and kept).
 */
export class EngineEvent implements FlowEvent, FlowEventBytes {
  declare endReason?: FlowEndReason;
  declare delta?: Delta | null;
  readonly type: FlowEventType;
  timestampMs: number;
  reporterId: string;
  reporterPublicKey: string;
  direction: FlowDirection;
  protocol: number;
  icmpType: number;
  icmpCode: number;
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  ruleId: string;
  policyName: string;
  user: FlowUser;
  interfaceName: string;
  windowStartMs: number;
  windowEndMs: number;
  countersEnabled: boolean;
  tcpFlagsInitiator: number;
  tcpFlagsResponder: number;

  readonly #ns: Uuid;
  readonly #key: string;
  readonly #firstNs: number;
  readonly #label: string;
  readonly #initB: boolean;
  readonly #srcInfo: EndpointInfo;
  readonly #dstInfo: EndpointInfo;
  readonly #srcPort: number;
  readonly #dstPort: number;
  /** The flow id's words once derived (SHA-1 of the key and first-packet time). */
  #w0 = 0;
  #w1 = 0;
  #w2 = 0;
  #w3 = 0;
  #haveWords = false;
  #eventId: string | undefined;
  #flowId: string | undefined;
  #source: FlowEndpoint | undefined;
  #destination: FlowEndpoint | undefined;

  constructor(
    ns: Uuid, wall: WallConverter, reporterId: string, reporterPublicKey: string,
    f: EventInput, type: FlowEventType, label: string, timestampMs: number,
    rxPackets: number, txPackets: number, rxBytes: number, txBytes: number, windowStartNs: number, windowEndNs: number,
  ) {
    const id = f.keyId;
    const flags = f.flags;
    const initEgress = (flags & FLAG_INIT_EGRESS) !== 0;
    const ing = flags & 0xff, egr = (flags >>> 8) & 0xff;
    const po = id.length === 16 ? 8 : 32;
    const hasPorts = f.kind === FlowKind.Ports;
    const portA = hasPorts ? (id.charCodeAt(po) << 8) | id.charCodeAt(po + 1) : 0;
    const portB = hasPorts ? (id.charCodeAt(po + 2) << 8) | id.charCodeAt(po + 3) : 0;
    let icmpType = 0, icmpCode = 0;
    if (f.kind === FlowKind.Icmp) {
      icmpType = id.charCodeAt(po + 2); // portB
      icmpCode = id.charCodeAt(po + 3);
    }
    this.type = type;
    this.timestampMs = timestampMs;
    this.reporterId = reporterId;
    this.reporterPublicKey = reporterPublicKey;
    this.direction = initEgress ? 'EGRESS' : 'INGRESS';
    this.protocol = f.proto;
    this.icmpType = icmpType;
    this.icmpCode = icmpCode;
    this.rxPackets = rxPackets;
    this.txPackets = txPackets;
    this.rxBytes = rxBytes;
    this.txBytes = txBytes;
    this.ruleId = f.ruleId;
    this.policyName = f.policyName;
    this.user = f.user;
    this.interfaceName = f.interfaceName;
    this.windowStartMs = wall.toWallMs(windowStartNs);
    this.windowEndMs = wall.toWallMs(windowEndNs);
    this.countersEnabled = (flags & FLAG_UNCOUNTED) === 0;
    // The initiator's packets went out (egress) if it was local, else came in (ingress).
    this.tcpFlagsInitiator = initEgress ? egr : ing;
    this.tcpFlagsResponder = initEgress ? ing : egr;
    this.#ns = ns;
    this.#key = id;
    this.#firstNs = f.firstNs;
    this.#label = label;
    this.#initB = f.initB;
    this.#srcInfo = f.source;
    this.#dstInfo = f.destination;
    this.#srcPort = f.initB ? portB : portA;
    this.#dstPort = f.initB ? portA : portB;
  }

  #words(): void {
    if (this.#haveWords) return;
    flowIdWords(this.#ns, this.#key, this.#firstNs, WORDS);
    this.#w0 = WORDS[0];
    this.#w1 = WORDS[1];
    this.#w2 = WORDS[2];
    this.#w3 = WORDS[3];
    this.#haveWords = true;
  }

  /** UUID text; '' for a status snapshot (no event id). */
  get eventId(): string {
    if (this.#eventId === undefined) {
      if (this.#label === '') return (this.#eventId = '');
      this.#words();
      this.#eventId = eventIdText(this.#w0, this.#w1, this.#w2, this.#w3, this.#label);
    }
    return this.#eventId;
  }
  set eventId(v: string) {
    this.#eventId = v;
  }

  get flowId(): string {
    if (this.#flowId === undefined) {
      this.#words();
      this.#flowId = uuidText(this.#w0, this.#w1, this.#w2, this.#w3);
    }
    return this.#flowId;
  }
  set flowId(v: string) {
    this.#flowId = v;
  }

  get source(): FlowEndpoint {
    if (this.#source === undefined) this.#source = endpointOf(this.#ip(true), this.#srcPort, this.#srcInfo);
    return this.#source;
  }
  set source(v: FlowEndpoint) {
    this.#source = v;
  }

  get destination(): FlowEndpoint {
    if (this.#destination === undefined) this.#destination = endpointOf(this.#ip(false), this.#dstPort, this.#dstInfo);
    return this.#destination;
  }
  set destination(v: FlowEndpoint) {
    this.#destination = v;
  }

  /** The address text of the initiator (src) or the responder. */
  #ip(src: boolean): string {
    const v4 = this.#key.length === 16, al = v4 ? 4 : 16;
    return rawToIpAt(this.#key, src === this.#initB ? al : 0, v4 ? 4 : 6);
  }

  eventIdInto(out: Uint8Array, at: number): void {
    if (this.#label === '') throw new RangeError('a status snapshot has no event id');
    this.#words();
    const w = eventIdWords(this.#w0, this.#w1, this.#w2, this.#w3, this.#label);
    putWord(out, at, w[0]);
    putWord(out, at + 4, w[1]);
    putWord(out, at + 8, w[2]);
    putWord(out, at + 12, w[3]);
  }

  flowIdInto(out: Uint8Array, at: number): void {
    this.#words();
    putWord(out, at, this.#w0);
    putWord(out, at + 4, this.#w1);
    putWord(out, at + 8, this.#w2);
    putWord(out, at + 12, this.#w3);
  }

  sourceIpInto(out: Uint8Array, at: number): number {
    return this.#ipInto(true, out, at);
  }

  destinationIpInto(out: Uint8Array, at: number): number {
    return this.#ipInto(false, out, at);
  }

  sourceInfo(): EndpointInfo {
    return this.#srcInfo;
  }

  destinationInfo(): EndpointInfo {
    return this.#dstInfo;
  }

  sourcePort(): number {
    return this.#srcPort;
  }

  destinationPort(): number {
    return this.#dstPort;
  }

  #ipInto(src: boolean, out: Uint8Array, at: number): number {
    const key = this.#key, n = key.length === 16 ? 4 : 16;
    const o = src === this.#initB ? n : 0;
    for (let i = 0; i < n; i++) out[at + i] = key.charCodeAt(o + i);
    return n;
  }

  /** Plain data (JSON.stringify, structured logs): every field, ids and addresses as text. */
  toJSON(): FlowEvent {
    const { eventId, flowId, source, destination } = this;
    return { ...this, eventId, flowId, source, destination };
  }
}

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
  ): EngineEvent {
    return new EngineEvent(this.ns, this.wall, this.reporterId, this.reporterPublicKey, f, type, label, timestampMs,
      rxPackets, txPackets, rxBytes, txBytes, windowStartNs, windowEndNs);
  }
}
