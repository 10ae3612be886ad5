// The flow event: what the flow engine emits, what the spool stores, what the gRPC exporter sends
// and what the JSON writers print. One shape for all of them so no layer re-invents a field.

/** START: first packet seen. UPDATE: interim report of a long flow. END: closed, idle or forced. DROP: blocked. */
export type FlowEventType = 'START' | 'UPDATE' | 'END' | 'DROP';

/** INGRESS: the flow's first packet arrived over the WireGuard interface; EGRESS: it left through it. */
export type FlowDirection = 'INGRESS' | 'EGRESS';

/** Why a flow ended (END events only). Mirrors IPFIX flowEndReason. */
export type FlowEndReason = 'idle' | 'tcp_fin' | 'tcp_rst' | 'forced' | 'lack_of_resources';

/** What an address is, from the reporter's attribution tables (NetBird's JSON vocabulary). */
export type EndpointType = 'PEER' | 'HOST_RESOURCE' | 'SUBNET_RESOURCE' | 'DOMAIN_RESOURCE' | 'UNKNOWN';

export interface FlowEndpoint {
  /** Textual IPv4 or IPv6 address. */
  ip: string;
  /** TCP/UDP port; 0 for other protocols. */
  port: number;
  /** Peer id or resource id, '' when unknown. */
  id: string;
  name: string;
  type: EndpointType;
  dnsLabel: string;
  os: string;
  /** Set for peers: base64 WireGuard public key. */
  publicKey: string;
}

export interface FlowUser {
  id: string;
  name: string;
  email: string;
}

export interface FlowEvent {
  /** UUID (text form) unique to this event; the collector de-duplicates by it. */
  eventId: string;
  /** UUID shared by every event of one flow. */
  flowId: string;
  type: FlowEventType;
  /** When the event happened, epoch milliseconds UTC (START: the first packet). */
  timestampMs: number;
  reporterId: string;
  /** Base64 WireGuard public key of the reporting peer ('' if not configured). */
  reporterPublicKey: string;
  direction: FlowDirection;
  /** IP protocol number (1 ICMP, 6 TCP, 17 UDP, 58 ICMPv6, ...). */
  protocol: number;
  /** The initiator of the flow. */
  source: FlowEndpoint;
  /** The responder. */
  destination: FlowEndpoint;
  /** ICMP/ICMPv6 type and code (protocol 1 or 58), else 0. */
  icmpType: number;
  icmpCode: number;
  /**
   * Counters from the reporter's point of view (tx = sent by this peer; rx = received by it).
   * START: zero (an announcement). UPDATE: what moved in [windowStartMs, windowEndMs], i.e. since
   * the previous UPDATE of the flow (or its first packet). END: the flow's totals over its whole life.
   * So END minus the sum of the flow's UPDATEs is what moved after the last UPDATE (docs/events.md).
   */
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  /** Id and name of the first allowing policy ('' when none matched). */
  ruleId: string;
  policyName: string;
  user: FlowUser;
  // wgflow extensions (proto field numbers >= 100)
  /** WireGuard interface the flow crossed. */
  interfaceName: string;
  /** END only. */
  endReason?: FlowEndReason;
  /**
   * DROP only: the kernel's reason for the window's first drop (enum skb_drop_reason without its
   * SKB_DROP_REASON_ prefix: NETFILTER_DROP, NO_SOCKET, IP_NOROUTE, ...). ruleId/policyName are
   * then the first enabled `action: drop` policy matching the packets, '' when none did.
   */
  dropReason?: string;
  /** The counting window the counters cover, epoch ms (UPDATE and END; START: first packet to report). */
  windowStartMs?: number;
  windowEndMs?: number;
  /** False if kernel byte reporting was off for some or all of the window: counters are then partial. */
  countersEnabled: boolean;
  /** OR of TCP flags seen from the initiator / from the responder. */
  tcpFlagsInitiator: number;
  tcpFlagsResponder: number;
  /**
   * Set by the flow engine that made the event (never sent): what this report moved since the
   * flow's previous one, so consumers of per-report deltas (metrics, IPFIX) keep no per-flow
   * state. null for START (it only opens the window). Absent on events from elsewhere (the
   * collector, tests): DeltaTracker then derives it (model/deltas.ts).
   */
  delta?: Delta | null;
  /**
   * Set only on a NetBird window aggregate (collector.profile: netbird-aggregated, made by
   * output/aggregator.ts): the record stands for every event of its group in
   * [windowStartMs, windowEndMs]. On the wire it is TYPE_UNKNOWN with these num_of_* counts;
   * `type` is then only the type of the group's earliest event (kept for logs).
   */
  aggregate?: AggregateCounts;
}

/**
 * The type an aggregate of these counts is given in FlowEvent.type (its wire and JSON type is
 * TYPE_UNKNOWN): START when the group saw a start, else END, else DROP, else UPDATE.
 */
export function aggregateType(a: AggregateCounts): FlowEventType {
  return a.starts > 0 ? 'START' : a.ends > 0 ? 'END' : a.drops > 0 ? 'DROP' : 'UPDATE';
}

/** How many events of each kind a window aggregate stands for (flow_fields 16-18). */
export interface AggregateCounts {
  starts: number;
  ends: number;
  drops: number;
}

/** What one flow report moved since the flow's previous one, and the window it covers (epoch ms). */
export interface Delta {
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  /** Start of what this report covers: the previous report's end, or the first packet. */
  startMs: number;
  endMs: number;
}

/**
 * Binary forms of an event's ids and addresses. The flow engine's events have them (and make
 * their text only when something reads it, the JSON and log edges): writers of binary formats
 * (the gRPC wire format, IPFIX) copy these bytes instead of parsing the text back.
 */
export interface FlowEventBytes {
  /** Writes the 16 bytes of the event id / the flow id at out[at]. */
  eventIdInto(out: Uint8Array, at: number): void;
  flowIdInto(out: Uint8Array, at: number): void;
  /** Writes the source's / destination's address (4 or 16 bytes) at out[at]; returns its length. */
  sourceIpInto(out: Uint8Array, at: number): number;
  destinationIpInto(out: Uint8Array, at: number): number;
  /** The endpoints without their address (shared objects: never modify) and their ports. */
  sourceInfo(): EndpointFields;
  destinationInfo(): EndpointFields;
  sourcePort(): number;
  destinationPort(): number;
}

/** An endpoint without its address and port. */
export type EndpointFields = Readonly<Omit<FlowEndpoint, 'ip' | 'port'>>;

/** The binary forms of this event's ids and addresses, when it has them. */
export function eventBytes(ev: FlowEvent): FlowEventBytes | undefined {
  const b = ev as FlowEvent & Partial<FlowEventBytes>;
  return typeof b.eventIdInto === 'function' ? (b as FlowEvent & FlowEventBytes) : undefined;
}

/**
 * The endpoint that is a route/resource (destination first), or undefined for peer-to-peer flows.
 * Without its address: the flow engine's events answer without making text.
 */
export function resourceOf(ev: Pick<FlowEvent, 'source' | 'destination'>): EndpointFields | undefined {
  const b = ev as Partial<FlowEventBytes>;
  const bin = typeof b.sourceInfo === 'function';
  const d = bin ? b.destinationInfo!() : ev.destination;
  if (d.type.endsWith('_RESOURCE')) return d;
  const s = bin ? b.sourceInfo!() : ev.source;
  if (s.type.endsWith('_RESOURCE')) return s;
  return undefined;
}
