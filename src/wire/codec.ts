// FlowEvent <-> flow.FlowEvent wire message. The contract carries ids, addresses and keys as raw
// bytes; FlowEvent carries them as text. Encoding validates everything, so a bad event is refused
// at enqueue time with a message naming the field, never discovered later by the collector.
import { ipv4FromBytes, ipv6FromBytes, parseIp } from '../net/ip';
import type { EndpointType, FlowEndpoint, FlowEndReason, FlowEvent, FlowEventType } from '../model/event';
import { loadFlowProto, WireEndpoint, WireFlowEvent, WireTimestamp } from './proto';

export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CodecError';
  }
}

// ---------- UUID ----------

const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export function uuidToBytes(text: string, field: string): Buffer {
  if (!UUID_RE.test(text)) throw new CodecError(`${field}: "${text}" is not a UUID (expected 8-4-4-4-12 hex digits)`);
  return Buffer.from(text.replace(/-/g, ''), 'hex');
}

export function bytesToUuid(b: Buffer, field: string): string {
  if (b.length !== 16) throw new CodecError(`${field}: expected 16 bytes (a UUID), got ${b.length}`);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---------- IP addresses ----------

/** Text IP -> 4 or 16 raw bytes; '' -> empty. */
export function ipToBytes(text: string, field: string): Buffer {
  if (text === '') return Buffer.alloc(0);
  const b = parseIp(text);
  if (!b) throw new CodecError(`${field}: "${text}" is not an IPv4 or IPv6 address`);
  return b;
}

/** 4 or 16 raw bytes -> text (IPv6 in RFC 5952 form: lowercase, longest zero run as ::). */
export function bytesToIp(b: Buffer, field: string): string {
  if (b.length === 0) return '';
  if (b.length === 4) return ipv4FromBytes(b);
  if (b.length !== 16) throw new CodecError(`${field}: expected 4 or 16 address bytes, got ${b.length}`);
  return ipv6FromBytes(b);
}

// ---------- WireGuard keys ----------

export function keyToBytes(b64: string, field: string): Buffer {
  if (b64 === '') return Buffer.alloc(0);
  const b = Buffer.from(b64, 'base64');
  if (b.length !== 32 || b.toString('base64') !== b64) {
    throw new CodecError(`${field}: "${b64}" is not a base64 WireGuard key (32 bytes, 44 characters)`);
  }
  return b;
}

export function bytesToKey(b: Buffer, field: string): string {
  if (b.length === 0) return '';
  if (b.length !== 32) throw new CodecError(`${field}: expected a 32-byte WireGuard key, got ${b.length} bytes`);
  return b.toString('base64');
}

// ---------- timestamps ----------

export function msToTimestamp(ms: number): WireTimestamp {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

export function timestampToMs(t: WireTimestamp): number {
  return Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
}

// ---------- enums ----------

const TYPE_TO_WIRE: Record<FlowEventType, string> = { START: 'TYPE_START', UPDATE: 'TYPE_UPDATE', END: 'TYPE_END', DROP: 'TYPE_DROP' };
const WIRE_TO_TYPE: Record<string, FlowEventType> = { TYPE_START: 'START', TYPE_UPDATE: 'UPDATE', TYPE_END: 'END', TYPE_DROP: 'DROP' };
const ENDPOINT_TYPES: readonly EndpointType[] = ['PEER', 'HOST_RESOURCE', 'SUBNET_RESOURCE', 'DOMAIN_RESOURCE', 'UNKNOWN'];
const END_REASONS: readonly FlowEndReason[] = ['idle', 'tcp_fin', 'tcp_rst', 'forced', 'lack_of_resources'];
const RESOURCE_TYPES = new Set<EndpointType>(['HOST_RESOURCE', 'SUBNET_RESOURCE', 'DOMAIN_RESOURCE']);

const isIcmp = (protocol: number): boolean => protocol === 1 || protocol === 58;

function checkUint(v: number, field: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new CodecError(`${field}: ${v} is not an integer in 0..${max}`);
  return v;
}

function endpointToWire(e: FlowEndpoint, field: string): WireEndpoint {
  if (!ENDPOINT_TYPES.includes(e.type)) throw new CodecError(`${field}.type: unknown endpoint type "${e.type}"`);
  return {
    id: e.id,
    name: e.name,
    type: `ENDPOINT_TYPE_${e.type}`,
    dns_label: e.dnsLabel,
    os: e.os,
    public_key: keyToBytes(e.publicKey, `${field}.publicKey`),
  };
}

function endpointFromWire(w: WireEndpoint | null | undefined, ip: Buffer, port: number, resourceId: Buffer, field: string): FlowEndpoint {
  const typeName = w && typeof w.type === 'string' ? w.type.replace(/^ENDPOINT_TYPE_/, '') : 'UNKNOWN';
  const type = (ENDPOINT_TYPES as readonly string[]).includes(typeName) ? (typeName as EndpointType) : 'UNKNOWN';
  return {
    ip: bytesToIp(ip, `${field}_ip`),
    port,
    // A NetBird sender has no endpoint extension: fall back to the contract's resource id.
    id: w?.id || resourceId.toString('utf8'),
    name: w?.name ?? '',
    type,
    dnsLabel: w?.dns_label ?? '',
    os: w?.os ?? '',
    publicKey: w ? bytesToKey(w.public_key, `${field}.public_key`) : '',
  };
}

/** FlowEvent -> wire message object (validated). */
export function toWire(ev: FlowEvent): WireFlowEvent {
  if (!(ev.type in TYPE_TO_WIRE)) throw new CodecError(`type: unknown event type "${String(ev.type)}"`);
  if (ev.direction !== 'INGRESS' && ev.direction !== 'EGRESS') throw new CodecError(`direction: "${String(ev.direction)}" is not INGRESS or EGRESS`);
  if (ev.endReason !== undefined && !END_REASONS.includes(ev.endReason)) throw new CodecError(`endReason: unknown end reason "${ev.endReason}"`);
  if (!Number.isFinite(ev.timestampMs)) throw new CodecError(`timestampMs: ${ev.timestampMs} is not a time`);
  const protocol = checkUint(ev.protocol, 'protocol', 255);
  const icmp = isIcmp(protocol);
  const sport = checkUint(ev.source.port, 'source.port', 65535);
  const dport = checkUint(ev.destination.port, 'destination.port', 65535);
  return {
    event_id: uuidToBytes(ev.eventId, 'eventId'),
    timestamp: msToTimestamp(ev.timestampMs),
    public_key: keyToBytes(ev.reporterPublicKey, 'reporterPublicKey'),
    isInitiator: false,
    window_start: ev.windowStartMs === undefined ? null : msToTimestamp(ev.windowStartMs),
    window_end: ev.windowEndMs === undefined ? null : msToTimestamp(ev.windowEndMs),
    reporter_id: ev.reporterId,
    interface_name: ev.interfaceName,
    flow_fields: {
      flow_id: uuidToBytes(ev.flowId, 'flowId'),
      type: TYPE_TO_WIRE[ev.type],
      rule_id: Buffer.from(ev.ruleId, 'utf8'),
      direction: ev.direction,
      protocol,
      source_ip: ipToBytes(ev.source.ip, 'source.ip'),
      dest_ip: ipToBytes(ev.destination.ip, 'destination.ip'),
      // oneof connection_info: ICMP carries type/code; anything with ports carries ports.
      port_info: !icmp && (sport !== 0 || dport !== 0 || protocol === 6 || protocol === 17) ? { source_port: sport, dest_port: dport } : null,
      icmp_info: icmp ? { icmp_type: checkUint(ev.icmpType, 'icmpType', 255), icmp_code: checkUint(ev.icmpCode, 'icmpCode', 255) } : null,
      rx_packets: checkUint(ev.rxPackets, 'rxPackets'),
      tx_packets: checkUint(ev.txPackets, 'txPackets'),
      rx_bytes: checkUint(ev.rxBytes, 'rxBytes'),
      tx_bytes: checkUint(ev.txBytes, 'txBytes'),
      source_resource_id: RESOURCE_TYPES.has(ev.source.type) ? Buffer.from(ev.source.id, 'utf8') : Buffer.alloc(0),
      dest_resource_id: RESOURCE_TYPES.has(ev.destination.type) ? Buffer.from(ev.destination.id, 'utf8') : Buffer.alloc(0),
      num_of_starts: 0,
      num_of_ends: 0,
      num_of_drops: 0,
      source: endpointToWire(ev.source, 'source'),
      destination: endpointToWire(ev.destination, 'destination'),
      policy_name: ev.policyName,
      user: { id: ev.user.id, name: ev.user.name, email: ev.user.email },
      end_reason: ev.endReason ? `END_REASON_${ev.endReason.toUpperCase()}` : 'END_REASON_UNSPECIFIED',
      counters_enabled: ev.countersEnabled,
      tcp_flags_initiator: checkUint(ev.tcpFlagsInitiator, 'tcpFlagsInitiator', 255),
      tcp_flags_responder: checkUint(ev.tcpFlagsResponder, 'tcpFlagsResponder', 255),
      drop_reason: ev.dropReason ?? '',
    },
  };
}

/** Wire message object -> FlowEvent. Throws CodecError naming the field when it cannot be represented. */
export function fromWire(w: WireFlowEvent): FlowEvent {
  const f = w.flow_fields;
  if (!f) throw new CodecError('flow_fields: missing');
  const type = WIRE_TO_TYPE[String(f.type)];
  if (!type) throw new CodecError(`flow_fields.type: ${String(f.type)} is not TYPE_START, TYPE_UPDATE, TYPE_END or TYPE_DROP`);
  if (f.direction !== 'INGRESS' && f.direction !== 'EGRESS') throw new CodecError(`flow_fields.direction: ${String(f.direction)} is not INGRESS or EGRESS`);
  if (!w.timestamp) throw new CodecError('timestamp: missing');
  const ports = f.connection_info === 'port_info' && f.port_info ? f.port_info : { source_port: 0, dest_port: 0 };
  const icmp = f.connection_info === 'icmp_info' && f.icmp_info ? f.icmp_info : { icmp_type: 0, icmp_code: 0 };
  const endReasonName = String(f.end_reason).replace(/^END_REASON_/, '').toLowerCase();
  const ev: FlowEvent = {
    eventId: bytesToUuid(w.event_id, 'event_id'),
    flowId: bytesToUuid(f.flow_id, 'flow_fields.flow_id'),
    type,
    timestampMs: timestampToMs(w.timestamp),
    reporterId: w.reporter_id,
    reporterPublicKey: bytesToKey(w.public_key, 'public_key'),
    direction: f.direction,
    protocol: f.protocol,
    source: endpointFromWire(f.source, f.source_ip, ports.source_port, f.source_resource_id, 'source'),
    destination: endpointFromWire(f.destination, f.dest_ip, ports.dest_port, f.dest_resource_id, 'dest'),
    icmpType: icmp.icmp_type,
    icmpCode: icmp.icmp_code,
    rxPackets: f.rx_packets,
    txPackets: f.tx_packets,
    rxBytes: f.rx_bytes,
    txBytes: f.tx_bytes,
    ruleId: f.rule_id.toString('utf8'),
    policyName: f.policy_name,
    user: { id: f.user?.id ?? '', name: f.user?.name ?? '', email: f.user?.email ?? '' },
    interfaceName: w.interface_name,
    countersEnabled: f.counters_enabled,
    tcpFlagsInitiator: f.tcp_flags_initiator,
    tcpFlagsResponder: f.tcp_flags_responder,
  };
  if ((END_REASONS as readonly string[]).includes(endReasonName)) ev.endReason = endReasonName as FlowEndReason;
  if (f.drop_reason) ev.dropReason = f.drop_reason;
  if (w.window_start) ev.windowStartMs = timestampToMs(w.window_start);
  if (w.window_end) ev.windowEndMs = timestampToMs(w.window_end);
  return ev;
}

/** FlowEvent -> serialized flow.FlowEvent bytes (what goes on the wire and into the spool). */
export function encodeEvent(ev: FlowEvent): Buffer {
  return loadFlowProto().encodeEvent(toWire(ev));
}

/** Serialized flow.FlowEvent -> FlowEvent. */
export function decodeEvent(buf: Buffer): FlowEvent {
  return fromWire(loadFlowProto().decodeEvent(buf));
}

/** The stream-opening message, FlowEvent{isInitiator: true}. */
export function initiatorMessage(): Buffer {
  return loadFlowProto().encodeEvent({ isInitiator: true });
}

// ---------- acks ----------
// FlowEventAck is two fields; it is encoded and decoded by hand because the collector writes and
// the exporter reads one per event (tests check the bytes against proto-loader's codec).

/** FlowEventAck{event_id} bytes. */
export function encodeAck(eventId: Buffer): Buffer {
  if (eventId.length >= 128) return loadFlowProto().encodeAck({ event_id: eventId });
  const out = Buffer.allocUnsafe(2 + eventId.length);
  out[0] = 0x0a; // field 1, length-delimited
  out[1] = eventId.length; // < 128: a one-byte varint
  eventId.copy(out, 2);
  return out;
}

/** FlowEventAck{isInitiator: true} bytes. */
export const INITIATOR_ACK = Buffer.from([0x10, 0x01]);

export interface DecodedAck {
  eventId: Buffer;
  isInitiator: boolean;
}

function readVarint(b: Buffer, pos: { p: number }): number {
  let result = 0, mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos.p >= b.length) throw new CodecError('ack: truncated varint');
    const byte = b[pos.p++];
    result += (byte & 0x7f) * mul;
    if ((byte & 0x80) === 0) return result;
    mul *= 128;
  }
  throw new CodecError('ack: varint too long');
}

/** Decodes FlowEventAck; unknown fields are skipped as protobuf requires. */
export function decodeAck(b: Buffer): DecodedAck {
  // What every collector sends for an event: only field 1, 16 bytes.
  if (b.length === 18 && b[0] === 0x0a && b[1] === 16) return { eventId: b.subarray(2), isInitiator: false };
  let eventId: Buffer = Buffer.alloc(0);
  let isInitiator = false;
  const pos = { p: 0 };
  while (pos.p < b.length) {
    const tag = readVarint(b, pos);
    const field = Math.floor(tag / 8), wt = tag & 7;
    if (wt === 0) {
      const v = readVarint(b, pos);
      if (field === 2) isInitiator = v !== 0;
    } else if (wt === 2) {
      const len = readVarint(b, pos);
      if (pos.p + len > b.length) throw new CodecError('ack: truncated field');
      if (field === 1) eventId = b.subarray(pos.p, pos.p + len);
      pos.p += len;
    } else if (wt === 1) pos.p += 8;
    else if (wt === 5) pos.p += 4;
    else throw new CodecError(`ack: unsupported wire type ${wt}`);
  }
  if (pos.p > b.length) throw new CodecError('ack: truncated');
  return { eventId, isInitiator };
}
