// A direct flow.FlowEvent bytes -> FlowEvent decoder for the collector's hot path (proto-loader's
// decode + toObject + codec.fromWire cost about four times as much). It follows protobuf's rules:
// fields in any order, unknown fields skipped, the last member of a oneof wins, absent fields take
// their defaults. Tests check it against proto-loader + fromWire for every event shape.
import type { EndpointType, FlowEndpoint, FlowEndReason, FlowEvent, FlowEventType } from '../flow/event';
import { bytesToIp, bytesToKey, bytesToUuid, CodecError } from './codec';

const TYPES: Record<number, FlowEventType> = { 1: 'START', 2: 'END', 3: 'DROP', 100: 'UPDATE' };
const ENDPOINT_TYPES: Record<number, EndpointType> = { 0: 'UNKNOWN', 1: 'PEER', 2: 'HOST_RESOURCE', 3: 'SUBNET_RESOURCE', 4: 'DOMAIN_RESOURCE' };
const END_REASONS: Record<number, FlowEndReason> = { 1: 'idle', 2: 'tcp_fin', 3: 'tcp_rst', 4: 'forced', 5: 'lack_of_resources' };
const EMPTY = Buffer.alloc(0);

class Reader {
  pos: number;
  constructor(readonly buf: Buffer, start: number, readonly end: number) {
    this.pos = start;
  }

  /** Unsigned varint; values past 2^53 lose precision (none of ours get there). */
  varint(): number {
    let result = 0, mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new CodecError('truncated varint');
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    throw new CodecError('varint longer than 10 bytes');
  }

  /** [start, end) of a length-delimited field's content. */
  len(): number {
    const n = this.varint();
    const start = this.pos;
    if (start + n > this.end) throw new CodecError('length-delimited field runs past the end of its message');
    this.pos = start + n;
    return start;
  }

  skip(wt: number): void {
    if (wt === 0) this.varint();
    else if (wt === 2) this.len();
    else if (wt === 1) this.pos += 8;
    else if (wt === 5) this.pos += 4;
    else throw new CodecError(`unsupported wire type ${wt}`);
    if (this.pos > this.end) throw new CodecError('field runs past the end of its message');
  }
}

interface RawEndpoint {
  id: string;
  name: string;
  type: number;
  dns: string;
  os: string;
  key: Buffer;
}

function readEndpoint(r: Reader, start: number, end: number): RawEndpoint {
  const e: RawEndpoint = { id: '', name: '', type: 0, dns: '', os: '', key: EMPTY };
  const m = new Reader(r.buf, start, end);
  while (m.pos < end) {
    const tag = m.varint();
    const f = Math.floor(tag / 8), wt = tag & 7;
    if (wt === 2 && f >= 1 && f <= 6 && f !== 3) {
      const s = m.len();
      if (f === 6) e.key = m.buf.subarray(s, m.pos);
      else {
        const text = m.buf.toString('utf8', s, m.pos);
        if (f === 1) e.id = text;
        else if (f === 2) e.name = text;
        else if (f === 4) e.dns = text;
        else e.os = text;
      }
    } else if (wt === 0 && f === 3) e.type = m.varint();
    else m.skip(wt);
  }
  return e;
}

function readTimestampMs(r: Reader, start: number, end: number, field: string): number {
  let seconds = 0, nanos = 0;
  const m = new Reader(r.buf, start, end);
  while (m.pos < end) {
    const tag = m.varint();
    const f = Math.floor(tag / 8), wt = tag & 7;
    if (wt === 0 && f === 1) seconds = m.varint();
    else if (wt === 0 && f === 2) nanos = m.varint();
    else m.skip(wt);
  }
  if (seconds > 2 ** 53 / 1000 || nanos > 999_999_999) throw new CodecError(`${field}: timestamp out of range`);
  return seconds * 1000 + Math.floor(nanos / 1e6);
}

function toEndpoint(raw: RawEndpoint | null, ip: Buffer, port: number, resourceId: Buffer, field: string): FlowEndpoint {
  return {
    ip: bytesToIp(ip, `${field}_ip`),
    port,
    // A NetBird sender has no endpoint extension: fall back to the contract's resource id.
    id: raw?.id || resourceId.toString('utf8'),
    name: raw?.name ?? '',
    type: raw ? (ENDPOINT_TYPES[raw.type] ?? 'UNKNOWN') : 'UNKNOWN',
    dnsLabel: raw?.dns ?? '',
    os: raw?.os ?? '',
    publicKey: raw ? bytesToKey(raw.key, `${field}.public_key`) : '',
  };
}

export type ReadResult =
  | { kind: 'initiator' }
  | { kind: 'event'; eventId: Buffer; event: FlowEvent }
  /** Parsed far enough to know the event id (may be empty), but not representable. */
  | { kind: 'invalid'; eventId: Buffer; error: string };

/** Decodes one flow.FlowEvent. Throws CodecError only when the bytes are not protobuf at all. */
export function readFlowEvent(buf: Buffer): ReadResult {
  const r = new Reader(buf, 0, buf.length);
  let eventId: Buffer = EMPTY, publicKey: Buffer = EMPTY;
  let tsStart = -1, tsEnd = -1, wsStart = -1, wsEnd = -1, weStart = -1, weEnd = -1, ffStart = -1, ffEnd = -1;
  let initiator = false, reporterId = '', iface = '';
  while (r.pos < r.end) {
    const tag = r.varint();
    const f = Math.floor(tag / 8), wt = tag & 7;
    if (wt === 2) {
      const s = r.len();
      switch (f) {
        case 1: eventId = buf.subarray(s, r.pos); break;
        case 2: tsStart = s; tsEnd = r.pos; break;
        case 3: publicKey = buf.subarray(s, r.pos); break;
        case 4: ffStart = s; ffEnd = r.pos; break;
        case 6: wsStart = s; wsEnd = r.pos; break;
        case 7: weStart = s; weEnd = r.pos; break;
        case 100: reporterId = buf.toString('utf8', s, r.pos); break;
        case 101: iface = buf.toString('utf8', s, r.pos); break;
        default: break; // unknown length-delimited field: already skipped
      }
    } else if (wt === 0 && f === 5) initiator = r.varint() !== 0;
    else r.skip(wt);
  }
  if (initiator) return { kind: 'initiator' };

  // flow_fields
  let flowId: Buffer = EMPTY, ruleId: Buffer = EMPTY, srcIp: Buffer = EMPTY, dstIp: Buffer = EMPTY, srcRes: Buffer = EMPTY, dstRes: Buffer = EMPTY;
  let type = 0, direction = 0, protocol = 0, rxP = 0, txP = 0, rxB = 0, txB = 0, endReason = 0, flagsI = 0, flagsR = 0;
  let countersEnabled = false, policyName = '';
  let sport = 0, dport = 0, icmpType = 0, icmpCode = 0;
  let src: RawEndpoint | null = null, dst: RawEndpoint | null = null;
  const user = { id: '', name: '', email: '' };
  if (ffStart >= 0) {
    const m = new Reader(buf, ffStart, ffEnd);
    while (m.pos < ffEnd) {
      const tag = m.varint();
      const f = Math.floor(tag / 8), wt = tag & 7;
      if (wt === 0) {
        const v = m.varint();
        switch (f) {
          case 2: type = v; break;
          case 4: direction = v; break;
          case 5: protocol = v; break;
          case 10: rxP = v; break;
          case 11: txP = v; break;
          case 12: rxB = v; break;
          case 13: txB = v; break;
          case 104: endReason = v; break;
          case 105: countersEnabled = v !== 0; break;
          case 106: flagsI = v; break;
          case 107: flagsR = v; break;
          default: break; // 16-18 (aggregates) and unknown
        }
      } else if (wt === 2) {
        const s = m.len();
        const e = m.pos;
        switch (f) {
          case 1: flowId = buf.subarray(s, e); break;
          case 3: ruleId = buf.subarray(s, e); break;
          case 6: srcIp = buf.subarray(s, e); break;
          case 7: dstIp = buf.subarray(s, e); break;
          case 8:
          case 9: {
            // oneof connection_info: the last member seen wins.
            let a = 0, b = 0;
            const sub = new Reader(buf, s, e);
            while (sub.pos < e) {
              const t = sub.varint();
              const sf = Math.floor(t / 8), swt = t & 7;
              if (swt === 0 && sf === 1) a = sub.varint();
              else if (swt === 0 && sf === 2) b = sub.varint();
              else sub.skip(swt);
            }
            if (f === 8) { sport = a; dport = b; icmpType = 0; icmpCode = 0; } else { icmpType = a; icmpCode = b; sport = 0; dport = 0; }
            break;
          }
          case 14: srcRes = buf.subarray(s, e); break;
          case 15: dstRes = buf.subarray(s, e); break;
          case 100: src = readEndpoint(m, s, e); break;
          case 101: dst = readEndpoint(m, s, e); break;
          case 102: policyName = buf.toString('utf8', s, e); break;
          case 103: {
            const sub = new Reader(buf, s, e);
            while (sub.pos < e) {
              const t = sub.varint();
              const sf = Math.floor(t / 8), swt = t & 7;
              if (swt === 2 && sf >= 1 && sf <= 3) {
                const ss = sub.len();
                const text = buf.toString('utf8', ss, sub.pos);
                if (sf === 1) user.id = text;
                else if (sf === 2) user.name = text;
                else user.email = text;
              } else sub.skip(swt);
            }
            break;
          }
          default: break;
        }
      } else m.skip(wt);
    }
  }

  try {
    if (ffStart < 0) throw new CodecError('flow_fields: missing');
    const evType = TYPES[type];
    if (!evType) throw new CodecError(`flow_fields.type: ${type} is not TYPE_START, TYPE_UPDATE, TYPE_END or TYPE_DROP`);
    if (direction !== 1 && direction !== 2) throw new CodecError(`flow_fields.direction: ${direction} is not INGRESS or EGRESS`);
    if (tsStart < 0) throw new CodecError('timestamp: missing');
    const ev: FlowEvent = {
      eventId: bytesToUuid(eventId, 'event_id'),
      flowId: bytesToUuid(flowId, 'flow_fields.flow_id'),
      type: evType,
      timestampMs: readTimestampMs(r, tsStart, tsEnd, 'timestamp'),
      reporterId,
      reporterPublicKey: bytesToKey(publicKey, 'public_key'),
      direction: direction === 1 ? 'INGRESS' : 'EGRESS',
      protocol,
      source: toEndpoint(src, srcIp, sport, srcRes, 'source'),
      destination: toEndpoint(dst, dstIp, dport, dstRes, 'dest'),
      icmpType,
      icmpCode,
      rxPackets: rxP,
      txPackets: txP,
      rxBytes: rxB,
      txBytes: txB,
      ruleId: ruleId.toString('utf8'),
      policyName,
      user,
      interfaceName: iface,
      countersEnabled,
      tcpFlagsInitiator: flagsI,
      tcpFlagsResponder: flagsR,
    };
    const reason = END_REASONS[endReason];
    if (reason) ev.endReason = reason;
    if (wsStart >= 0) ev.windowStartMs = readTimestampMs(r, wsStart, wsEnd, 'window_start');
    if (weStart >= 0) ev.windowEndMs = readTimestampMs(r, weStart, weEnd, 'window_end');
    return { kind: 'event', eventId, event: ev };
  } catch (err) {
    if (err instanceof CodecError) return { kind: 'invalid', eventId, error: err.message };
    throw err;
  }
}
