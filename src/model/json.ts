// The JSON form of a FlowEvent: one object per line, NetBird's management-API field names (so SIEM
// rules written for NetBird work), plus wgflow's extras under wgflow_* names. docs/events.md is the
// schema. toJsonLine and fromJsonLine are exact inverses for every FlowEvent (tests check it).
import { aggregateType, type EndpointType, type FlowDirection, type FlowEndpoint, type FlowEndReason, type FlowEvent, type FlowEventType } from './event';

export interface JsonGeoLocation {
  city_name: string;
  country_code: string;
}

export interface JsonEndpoint {
  /** "ip:port", IPv6 as "[ip]:port"; port 0 for ICMP and other port-less protocols. */
  address: string;
  id: string;
  name: string;
  type: EndpointType;
  dns_label: string;
  os: string;
  geo_location: JsonGeoLocation;
  /** wgflow: base64 WireGuard key of a peer endpoint ('' otherwise). */
  public_key: string;
}

export interface JsonFlowEvent {
  id: string;
  flow_id: string;
  /** TYPE_UNKNOWN: a NetBird window aggregate (with num_of_starts, num_of_ends, num_of_drops). */
  type: 'TYPE_START' | 'TYPE_UPDATE' | 'TYPE_END' | 'TYPE_DROP' | 'TYPE_UNKNOWN';
  direction: FlowDirection;
  protocol: number;
  icmp_type: number;
  icmp_code: number;
  policy_id: string;
  policy_name: string;
  reporter_id: string;
  timestamp: string;
  receive_timestamp: string;
  rx_bytes: number;
  rx_packets: number;
  tx_bytes: number;
  tx_packets: number;
  source: JsonEndpoint;
  destination: JsonEndpoint;
  user_id: string;
  user_email: string;
  user_name: string;
  wgflow_reporter_public_key: string;
  wgflow_interface: string;
  /** Present on END events only. */
  wgflow_end_reason?: FlowEndReason;
  /** DROP events: the kernel's drop reason (when known), and whether an `action: drop` policy matched. */
  wgflow_drop_reason?: string;
  wgflow_drop_policy?: 'matched' | 'none';
  wgflow_window_start?: string;
  wgflow_window_end?: string;
  wgflow_counters_enabled: boolean;
  wgflow_tcp_flags_initiator: number;
  wgflow_tcp_flags_responder: number;
  /** NetBird window aggregates only: how many START, END and DROP events the group stands for. */
  num_of_starts?: number;
  num_of_ends?: number;
  num_of_drops?: number;
}

// RFC 3339 with milliseconds, UTC (Date#toISOString). The collector formats two or more per event
// and neighbouring events share their second, so the "YYYY-MM-DDTHH:MM:SS." part is cached.
const cacheSec = [NaN, NaN];
const cachePrefix = ['', ''];
let cacheNext = 0;
export function rfc3339(ms: number): string {
  const sec = Math.floor(ms / 1000);
  const msPart = ms - sec * 1000;
  if (!Number.isInteger(msPart) || sec < 0 || sec >= 253402300800) return new Date(ms).toISOString();
  let slot = cacheSec[0] === sec ? 0 : cacheSec[1] === sec ? 1 : -1;
  if (slot < 0) {
    slot = cacheNext;
    cacheNext ^= 1;
    cacheSec[slot] = sec;
    cachePrefix[slot] = new Date(sec * 1000).toISOString().slice(0, 20);
  }
  return `${cachePrefix[slot]}${msPart < 10 ? '00' : msPart < 100 ? '0' : ''}${msPart}Z`;
}

export function formatAddress(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export function parseAddress(address: string, field: string): { ip: string; port: number } {
  const m = /^\[([^\]]*)\]:(\d+)$/.exec(address) ?? /^([^:]*):(\d+)$/.exec(address);
  if (!m) throw new Error(`${field}: "${address}" is not "ip:port" or "[ipv6]:port"`);
  return { ip: m[1], port: Number(m[2]) };
}

function endpointToJson(e: FlowEndpoint): JsonEndpoint {
  return {
    address: formatAddress(e.ip, e.port),
    id: e.id,
    name: e.name,
    type: e.type,
    dns_label: e.dnsLabel,
    os: e.os,
    geo_location: { city_name: '', country_code: '' },
    public_key: e.publicKey,
  };
}

/** The JSON object for an event; receiveTimeMs is when the writer received it. */
export function toJsonObject(ev: FlowEvent, receiveTimeMs: number): JsonFlowEvent {
  const o: JsonFlowEvent = {
    id: ev.eventId,
    flow_id: ev.flowId,
    type: ev.aggregate ? 'TYPE_UNKNOWN' : `TYPE_${ev.type}`,
    direction: ev.direction,
    protocol: ev.protocol,
    icmp_type: ev.icmpType,
    icmp_code: ev.icmpCode,
    policy_id: ev.ruleId,
    policy_name: ev.policyName,
    reporter_id: ev.reporterId,
    timestamp: rfc3339(ev.timestampMs),
    receive_timestamp: rfc3339(receiveTimeMs),
    rx_bytes: ev.rxBytes,
    rx_packets: ev.rxPackets,
    tx_bytes: ev.txBytes,
    tx_packets: ev.txPackets,
    source: endpointToJson(ev.source),
    destination: endpointToJson(ev.destination),
    user_id: ev.user.id,
    user_email: ev.user.email,
    user_name: ev.user.name,
    wgflow_reporter_public_key: ev.reporterPublicKey,
    wgflow_interface: ev.interfaceName,
    wgflow_counters_enabled: ev.countersEnabled,
    wgflow_tcp_flags_initiator: ev.tcpFlagsInitiator,
    wgflow_tcp_flags_responder: ev.tcpFlagsResponder,
  };
  if (ev.endReason !== undefined) o.wgflow_end_reason = ev.endReason;
  if (ev.dropReason !== undefined) o.wgflow_drop_reason = ev.dropReason;
  if (ev.type === 'DROP' && !ev.aggregate) o.wgflow_drop_policy = ev.ruleId === '' ? 'none' : 'matched';
  if (ev.windowStartMs !== undefined) o.wgflow_window_start = rfc3339(ev.windowStartMs);
  if (ev.windowEndMs !== undefined) o.wgflow_window_end = rfc3339(ev.windowEndMs);
  if (ev.aggregate) {
    o.num_of_starts = ev.aggregate.starts;
    o.num_of_ends = ev.aggregate.ends;
    o.num_of_drops = ev.aggregate.drops;
  }
  return o;
}

const q = JSON.stringify;

function endpointJson(e: FlowEndpoint): string {
  return `{"address":${q(formatAddress(e.ip, e.port))},"id":${q(e.id)},"name":${q(e.name)},"type":${q(e.type)},"dns_label":${q(e.dnsLabel)},"os":${q(e.os)},"geo_location":{"city_name":"","country_code":""},"public_key":${q(e.publicKey)}}`;
}

/**
 * One JSON line (no trailing newline): exactly JSON.stringify(toJsonObject(ev, receiveTimeMs)),
 * built directly because the collector writes one per event (tests check the equality). `id` is
 * always the first key: the collector's restart scan relies on it.
 */
export function toJsonLine(ev: FlowEvent, receiveTimeMs: number): string {
  let s = `{"id":${q(ev.eventId)},"flow_id":${q(ev.flowId)},"type":${q(ev.aggregate ? 'TYPE_UNKNOWN' : `TYPE_${ev.type}`)},"direction":${q(ev.direction)},"protocol":${ev.protocol},"icmp_type":${ev.icmpType},"icmp_code":${ev.icmpCode},"policy_id":${q(ev.ruleId)},"policy_name":${q(ev.policyName)},"reporter_id":${q(ev.reporterId)},"timestamp":"${rfc3339(ev.timestampMs)}","receive_timestamp":"${rfc3339(receiveTimeMs)}","rx_bytes":${ev.rxBytes},"rx_packets":${ev.rxPackets},"tx_bytes":${ev.txBytes},"tx_packets":${ev.txPackets},"source":${endpointJson(ev.source)},"destination":${endpointJson(ev.destination)},"user_id":${q(ev.user.id)},"user_email":${q(ev.user.email)},"user_name":${q(ev.user.name)},"wgflow_reporter_public_key":${q(ev.reporterPublicKey)},"wgflow_interface":${q(ev.interfaceName)},"wgflow_counters_enabled":${ev.countersEnabled},"wgflow_tcp_flags_initiator":${ev.tcpFlagsInitiator},"wgflow_tcp_flags_responder":${ev.tcpFlagsResponder}`;
  if (ev.endReason !== undefined) s += `,"wgflow_end_reason":${q(ev.endReason)}`;
  if (ev.dropReason !== undefined) s += `,"wgflow_drop_reason":${q(ev.dropReason)}`;
  if (ev.type === 'DROP' && !ev.aggregate) s += ev.ruleId === '' ? ',"wgflow_drop_policy":"none"' : ',"wgflow_drop_policy":"matched"';
  if (ev.windowStartMs !== undefined) s += `,"wgflow_window_start":"${rfc3339(ev.windowStartMs)}"`;
  if (ev.windowEndMs !== undefined) s += `,"wgflow_window_end":"${rfc3339(ev.windowEndMs)}"`;
  if (ev.aggregate) s += `,"num_of_starts":${ev.aggregate.starts},"num_of_ends":${ev.aggregate.ends},"num_of_drops":${ev.aggregate.drops}`;
  return `${s}}`;
}

// ---------- parsing (tests, tools, the collector's restart scan) ----------

type Obj = Record<string, unknown>;

function str(o: Obj, k: string, where: string): string {
  const v = o[k];
  if (typeof v !== 'string') throw new Error(`${where}${k}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function num(o: Obj, k: string, where: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${where}${k}: expected a number, got ${JSON.stringify(v)}`);
  return v;
}

function time(o: Obj, k: string, where: string): number {
  const s = str(o, k, where);
  const ms = Date.parse(s);
  if (Number.isNaN(ms)) throw new Error(`${where}${k}: "${s}" is not an RFC 3339 time`);
  return ms;
}

function obj(o: Obj, k: string, where: string): Obj {
  const v = o[k];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}${k}: expected an object`);
  return v as Obj;
}

function endpointFromJson(o: Obj, where: string): FlowEndpoint {
  const { ip, port } = parseAddress(str(o, 'address', where), `${where}address`);
  return {
    ip,
    port,
    id: str(o, 'id', where),
    name: str(o, 'name', where),
    type: str(o, 'type', where) as EndpointType,
    dnsLabel: str(o, 'dns_label', where),
    os: str(o, 'os', where),
    publicKey: typeof o.public_key === 'string' ? o.public_key : '',
  };
}

export interface ParsedJsonLine {
  event: FlowEvent;
  receiveTimeMs: number;
}

/** Inverse of toJsonLine. Throws an Error naming the field when the line is not an event. */
export function fromJsonLine(line: string): ParsedJsonLine {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
  const o = parsed as Obj;
  const typeText = str(o, 'type', '');
  const aggregate = typeText === 'TYPE_UNKNOWN'
    ? { starts: num(o, 'num_of_starts', ''), ends: num(o, 'num_of_ends', ''), drops: num(o, 'num_of_drops', '') }
    : undefined;
  const type = aggregate ? aggregateType(aggregate) : typeText.replace(/^TYPE_/, '') as FlowEventType;
  if (!['START', 'UPDATE', 'END', 'DROP'].includes(type)) throw new Error(`type: unknown event type "${typeText}"`);
  const ev: FlowEvent = {
    eventId: str(o, 'id', ''),
    flowId: str(o, 'flow_id', ''),
    type,
    timestampMs: time(o, 'timestamp', ''),
    reporterId: str(o, 'reporter_id', ''),
    reporterPublicKey: typeof o.wgflow_reporter_public_key === 'string' ? o.wgflow_reporter_public_key : '',
    direction: str(o, 'direction', '') as FlowDirection,
    protocol: num(o, 'protocol', ''),
    source: endpointFromJson(obj(o, 'source', ''), 'source.'),
    destination: endpointFromJson(obj(o, 'destination', ''), 'destination.'),
    icmpType: num(o, 'icmp_type', ''),
    icmpCode: num(o, 'icmp_code', ''),
    rxPackets: num(o, 'rx_packets', ''),
    txPackets: num(o, 'tx_packets', ''),
    rxBytes: num(o, 'rx_bytes', ''),
    txBytes: num(o, 'tx_bytes', ''),
    ruleId: str(o, 'policy_id', ''),
    policyName: str(o, 'policy_name', ''),
    user: { id: str(o, 'user_id', ''), name: str(o, 'user_name', ''), email: str(o, 'user_email', '') },
    interfaceName: typeof o.wgflow_interface === 'string' ? o.wgflow_interface : '',
    countersEnabled: o.wgflow_counters_enabled !== false,
    tcpFlagsInitiator: typeof o.wgflow_tcp_flags_initiator === 'number' ? o.wgflow_tcp_flags_initiator : 0,
    tcpFlagsResponder: typeof o.wgflow_tcp_flags_responder === 'number' ? o.wgflow_tcp_flags_responder : 0,
  };
  if (typeof o.wgflow_end_reason === 'string') ev.endReason = o.wgflow_end_reason as FlowEndReason;
  if (typeof o.wgflow_drop_reason === 'string') ev.dropReason = o.wgflow_drop_reason;
  if (aggregate) ev.aggregate = aggregate;
  if (o.wgflow_window_start !== undefined) ev.windowStartMs = time(o, 'wgflow_window_start', '');
  if (o.wgflow_window_end !== undefined) ev.windowEndMs = time(o, 'wgflow_window_end', '');
  return { event: ev, receiveTimeMs: time(o, 'receive_timestamp', '') };
}
