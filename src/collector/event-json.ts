// The collector's hot path: a scanned flow.FlowEvent message straight to its JSON line, bytes to
// bytes. The output is byte for byte toJsonLine(readFlowEvent(msg).event, t) (the schema's one
// definition, src/flow/json.ts; test/collector/event-json.test.ts checks the equality, fuzzed
// too), at a fraction of the cost: no FlowEvent object and no intermediate strings per field.
import { ENDPOINT_TYPES, END_REASONS, EndpointSpans, EVENT_TYPES, ScannedEvent, Span } from '../wire/reader';
import { rfc3339 } from '../model/json';
import { ByteBuffer } from '../util/byte-buffer';
import { writeIpv6 } from '../net/ip';

const UUID_DASHES = [4, 6, 8, 10];
// Constant text as bytes: copying bytes is several times cheaper than walking a string.
const K = (text: string): Buffer => Buffer.from(text, 'latin1');
const DIRECTIONS = ['', 'INGRESS', 'EGRESS'];
/** `,"type":"TYPE_X","direction":"D","protocol":` for every type and direction. */
// Type 0 passes checkScanned only as a NetBird window aggregate (TYPE_UNKNOWN).
const TYPE_DIRECTION = new Map<number, Buffer[]>([...Object.entries(EVENT_TYPES), ['0', 'UNKNOWN']].map(([n, t]) => [Number(n), DIRECTIONS.map((d) => K(`,"type":"TYPE_${t}","direction":"${d}","protocol":`))]));
const ENDPOINT_TYPE_BYTES = new Map<number, Buffer>(Object.entries(ENDPOINT_TYPES).map(([n, t]) => [Number(n), K(`,"type":"${t}","dns_label":`)]));
const UNKNOWN_TYPE_BYTES = K(',"type":"UNKNOWN","dns_label":');
const END_REASON_BYTES = new Map<number, Buffer>(Object.entries(END_REASONS).map(([n, r]) => [Number(n), K(`,"wgflow_end_reason":"${r}"`)]));
const T = {
  id: K('{"id":"'),
  flowId: K('","flow_id":"'),
  afterFlowId: K('"'),
  icmpType: K(',"icmp_type":'),
  noIcmp: K(',"icmp_type":0,"icmp_code":0,"policy_id":'),
  noCounters: K('","rx_bytes":0,"rx_packets":0,"tx_bytes":0,"tx_packets":0,"source":'),
  icmpCode: K(',"icmp_code":'),
  policyId: K(',"policy_id":'),
  policyName: K(',"policy_name":'),
  reporterId: K(',"reporter_id":'),
  timestamp: K(',"timestamp":"'),
  receiveTimestamp: K('","receive_timestamp":"'),
  rxBytes: K('","rx_bytes":'),
  rxPackets: K(',"rx_packets":'),
  txBytes: K(',"tx_bytes":'),
  txPackets: K(',"tx_packets":'),
  source: K(',"source":'),
  destination: K(',"destination":'),
  userId: K(',"user_id":'),
  userEmail: K(',"user_email":'),
  userName: K(',"user_name":'),
  reporterKey: K(',"wgflow_reporter_public_key":"'),
  iface: K('","wgflow_interface":'),
  countersOn: K(',"wgflow_counters_enabled":true,"wgflow_tcp_flags_initiator":'),
  countersOff: K(',"wgflow_counters_enabled":false,"wgflow_tcp_flags_initiator":'),
  flagsR: K(',"wgflow_tcp_flags_responder":'),
  windowStart: K(',"wgflow_window_start":"'),
  dropReason: K(',"wgflow_drop_reason":'),
  numStarts: K(',"num_of_starts":'),
  numEnds: K(',"num_of_ends":'),
  numDrops: K(',"num_of_drops":'),
  dropMatched: K(',"wgflow_drop_policy":"matched"'),
  dropNone: K(',"wgflow_drop_policy":"none"'),
  windowEnd: K(',"wgflow_window_end":"'),
  address: K('{"address":"'),
  address6: K('{"address":"['),
  epId: K('","id":'),
  epName: K(',"name":'),
  epOs: K(',"os":'),
  epKey: K(',"geo_location":{"city_name":"","country_code":""},"public_key":"'),
  epEnd: K('"}'),
  epAbsent: K(',"name":"","type":"UNKNOWN","dns_label":"","os":"","geo_location":{"city_name":"","country_code":""},"public_key":""}'),
};
const ESCAPES: Record<number, string> = { 0x08: '\\b', 0x09: '\\t', 0x0a: '\\n', 0x0c: '\\f', 0x0d: '\\r', 0x22: '\\"', 0x5c: '\\\\' };

/** Length of the valid UTF-8 sequence starting at i (lead byte >= 0x80), or 0 if it is not one. */
function utf8SeqLen(b: Buffer, i: number, end: number): number {
  const c = b[i];
  let n: number, lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c === 0xe0) lo = 0xa0;
    else if (c === 0xed) hi = 0x9f; // no UTF-16 surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c === 0xf0) lo = 0x90;
    else if (c === 0xf4) hi = 0x8f;
  } else return 0;
  if (i + n > end) return 0;
  const c1 = b[i + 1];
  if (c1 < lo || c1 > hi) return 0;
  for (let k = 2; k < n; k++) if ((b[i + k] & 0xc0) !== 0x80) return 0;
  return n;
}

/**
 * JSON.stringify of the UTF-8 text in src[s, e), as UTF-8. Valid UTF-8 is copied (escaping what
 * JSON must escape); anything else takes the exact route: decode (invalid bytes become U+FFFD)
 * and stringify.
 */
function jsonString(out: ByteBuffer, src: Buffer, s: number, e: number): void {
  const start = out.len;
  out.ensure((e - s) * 6 + 2);
  const b = out.buf;
  let at = start;
  b[at++] = 0x22;
  for (let i = s; i < e; ) {
    const c = src[i];
    if (c >= 0x20 && c < 0x80 && c !== 0x22 && c !== 0x5c) {
      b[at++] = c;
      i++;
    } else if (c < 0x80) {
      const esc = ESCAPES[c] ?? `\\u00${c.toString(16).padStart(2, '0')}`;
      for (let k = 0; k < esc.length; k++) b[at++] = esc.charCodeAt(k);
      i++;
    } else {
      const n = utf8SeqLen(src, i, e);
      if (n === 0) {
        out.len = start;
        out.utf8(JSON.stringify(src.toString('utf8', s, e)));
        return;
      }
      for (let k = 0; k < n; k++) b[at++] = src[i + k];
      i += n;
    }
  }
  b[at++] = 0x22;
  out.len = at;
}

const str = (out: ByteBuffer, ev: ScannedEvent, span: Span): void => jsonString(out, ev.buf, span.s, span.e);

// rfc3339's text as bytes. The "YYYY-MM-DDTHH:MM:SS." part is cached per second, four seconds
// at a time: an event's timestamp, window start and receive time, and its neighbours', share few.
const cachedSeconds = [NaN, NaN, NaN, NaN];
const cachedPrefixes = [Buffer.alloc(20), Buffer.alloc(20), Buffer.alloc(20), Buffer.alloc(20)];
let nextSlot = 0;

/** The time as rfc3339 writes it (no quotes). */
function time(out: ByteBuffer, ms: number): void {
  const sec = Math.floor(ms / 1000);
  const milli = ms - sec * 1000;
  if (!Number.isInteger(milli) || sec < 0 || sec >= 253402300800) {
    out.ascii(rfc3339(ms)); // outside the four-digit years: rare, the exact route
    return;
  }
  let slot = cachedSeconds.indexOf(sec);
  if (slot < 0) {
    slot = nextSlot;
    nextSlot = (nextSlot + 1) & 3;
    cachedPrefixes[slot].write(rfc3339(sec * 1000).slice(0, 20), 'latin1');
    cachedSeconds[slot] = sec;
  }
  out.bytes(cachedPrefixes[slot]);
  out.ensure(4);
  const b = out.buf;
  let at = out.len;
  b[at++] = 48 + Math.floor(milli / 100);
  b[at++] = 48 + (Math.floor(milli / 10) % 10);
  b[at++] = 48 + (milli % 10);
  b[at++] = 0x5a; // Z
  out.len = at;
}

function endpoint(out: ByteBuffer, ev: ScannedEvent, raw: EndpointSpans, ip: Span, port: number, resourceId: Span): void {
  const b = ev.buf;
  if (ip.length === 16) {
    out.bytes(T.address6);
    writeIpv6(out, b, ip.s);
    out.byte(0x5d);
  } else {
    out.bytes(T.address);
    if (ip.length === 4) {
      out.uint(b[ip.s]);
      out.byte(0x2e);
      out.uint(b[ip.s + 1]);
      out.byte(0x2e);
      out.uint(b[ip.s + 2]);
      out.byte(0x2e);
      out.uint(b[ip.s + 3]);
    }
  }
  out.byte(0x3a);
  out.uint(port);
  out.bytes(T.epId);
  // A NetBird sender has no endpoint extension: fall back to the contract's resource id.
  str(out, ev, raw.present && raw.id.length > 0 ? raw.id : resourceId);
  if (!raw.present) {
    out.bytes(T.epAbsent);
    return;
  }
  out.bytes(T.epName);
  str(out, ev, raw.name);
  out.bytes(ENDPOINT_TYPE_BYTES.get(raw.type) ?? UNKNOWN_TYPE_BYTES);
  str(out, ev, raw.dns);
  out.bytes(T.epOs);
  str(out, ev, raw.os);
  out.bytes(T.epKey);
  out.base64(b, raw.key.s, raw.key.e);
  out.bytes(T.epEnd);
}

/**
 * Appends the JSON line (no newline) of an event that scanFlowEvent scanned and checkScanned
 * accepted; receiveTimeMs is when the collector received it.
 */
export function writeJsonLine(out: ByteBuffer, ev: ScannedEvent, receiveTimeMs: number): void {
  const b = ev.buf;
  out.bytes(T.id);
  out.hex(b, ev.eventId.s, ev.eventId.e, UUID_DASHES);
  out.bytes(T.flowId);
  out.hex(b, ev.flowId.s, ev.flowId.e, UUID_DASHES);
  out.bytes(T.afterFlowId);
  out.bytes((TYPE_DIRECTION.get(ev.type) as Buffer[])[ev.direction]);
  out.uint(ev.protocol);
  // Common runs of constant text in one copy each (no ICMP; a START's zero counters).
  if (ev.icmpType === 0 && ev.icmpCode === 0) {
    out.bytes(T.noIcmp);
  } else {
    out.bytes(T.icmpType);
    out.uint(ev.icmpType);
    out.bytes(T.icmpCode);
    out.uint(ev.icmpCode);
    out.bytes(T.policyId);
  }
  str(out, ev, ev.ruleId);
  out.bytes(T.policyName);
  str(out, ev, ev.policyName);
  out.bytes(T.reporterId);
  str(out, ev, ev.reporterId);
  out.bytes(T.timestamp);
  time(out, ev.timestampMs);
  out.bytes(T.receiveTimestamp);
  time(out, receiveTimeMs);
  if (ev.rxBytes === 0 && ev.rxPackets === 0 && ev.txBytes === 0 && ev.txPackets === 0) {
    out.bytes(T.noCounters);
  } else {
    out.bytes(T.rxBytes);
    out.uint(ev.rxBytes);
    out.bytes(T.rxPackets);
    out.uint(ev.rxPackets);
    out.bytes(T.txBytes);
    out.uint(ev.txBytes);
    out.bytes(T.txPackets);
    out.uint(ev.txPackets);
    out.bytes(T.source);
  }
  endpoint(out, ev, ev.src, ev.srcIp, ev.sport, ev.srcRes);
  out.bytes(T.destination);
  endpoint(out, ev, ev.dst, ev.dstIp, ev.dport, ev.dstRes);
  out.bytes(T.userId);
  str(out, ev, ev.userId);
  out.bytes(T.userEmail);
  str(out, ev, ev.userEmail);
  out.bytes(T.userName);
  str(out, ev, ev.userName);
  out.bytes(T.reporterKey);
  out.base64(b, ev.publicKey.s, ev.publicKey.e);
  out.bytes(T.iface);
  str(out, ev, ev.iface);
  out.bytes(ev.countersEnabled ? T.countersOn : T.countersOff);
  out.uint(ev.flagsI);
  out.bytes(T.flagsR);
  out.uint(ev.flagsR);
  const reason = END_REASON_BYTES.get(ev.endReason);
  if (reason) out.bytes(reason);
  if (ev.dropReason.length > 0) {
    out.bytes(T.dropReason);
    str(out, ev, ev.dropReason);
  }
  if (ev.type === 3) out.bytes(ev.ruleId.length > 0 ? T.dropMatched : T.dropNone);
  if (ev.windowStartMs >= 0) {
    out.bytes(T.windowStart);
    time(out, ev.windowStartMs);
    out.byte(0x22);
  }
  if (ev.windowEndMs >= 0) {
    out.bytes(T.windowEnd);
    time(out, ev.windowEndMs);
    out.byte(0x22);
  }
  if (ev.type === 0) {
    out.bytes(T.numStarts);
    out.uint(ev.numStarts);
    out.bytes(T.numEnds);
    out.uint(ev.numEnds);
    out.bytes(T.numDrops);
    out.uint(ev.numDrops);
  }
  out.byte(0x7d);
}
