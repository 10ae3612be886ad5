// The collector's hot path: a scanned flow.FlowEvent message straight to its JSON line, bytes to
// bytes. The output is byte for byte toJsonLine(readFlowEvent(msg).event, t) (the schema's one
// definition, src/flow/json.ts; test/collector/event-json.test.ts checks the equality, fuzzed
// too), at a fraction of the cost: no FlowEvent object and no intermediate strings per field.
import { ipv6FromBytes } from '../ip-text';
import { ENDPOINT_TYPES, END_REASONS, EndpointSpans, EVENT_TYPES, ScannedEvent, Span } from '../export/wire-reader';
import { rfc3339 } from '../flow/json';
import { ByteBuffer } from './byte-buffer';

const UUID_DASHES = [4, 6, 8, 10];
const DIRECTIONS = ['', 'INGRESS', 'EGRESS'];
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

function quotedUuid(out: ByteBuffer, ev: ScannedEvent, span: Span): void {
  out.byte(0x22);
  out.hex(ev.buf, span.s, span.e, UUID_DASHES);
  out.byte(0x22);
}

function quotedKey(out: ByteBuffer, ev: ScannedEvent, span: Span): void {
  out.byte(0x22);
  out.base64(ev.buf, span.s, span.e);
  out.byte(0x22);
}

function quotedTime(out: ByteBuffer, ms: number): void {
  out.byte(0x22);
  out.ascii(rfc3339(ms));
  out.byte(0x22);
}

function address(out: ByteBuffer, ev: ScannedEvent, ip: Span, port: number): void {
  const b = ev.buf;
  if (ip.length === 16) {
    out.ascii(`"[${ipv6FromBytes(b, ip.s)}]:`);
  } else {
    out.byte(0x22);
    if (ip.length === 4) {
      out.uint(b[ip.s]);
      out.byte(0x2e);
      out.uint(b[ip.s + 1]);
      out.byte(0x2e);
      out.uint(b[ip.s + 2]);
      out.byte(0x2e);
      out.uint(b[ip.s + 3]);
    }
    out.byte(0x3a);
  }
  out.uint(port);
  out.byte(0x22);
}

function endpoint(out: ByteBuffer, ev: ScannedEvent, raw: EndpointSpans, ip: Span, port: number, resourceId: Span): void {
  out.ascii('{"address":');
  address(out, ev, ip, port);
  out.ascii(',"id":');
  // A NetBird sender has no endpoint extension: fall back to the contract's resource id.
  str(out, ev, raw.present && raw.id.length > 0 ? raw.id : resourceId);
  if (raw.present) {
    out.ascii(',"name":');
    str(out, ev, raw.name);
    out.ascii(`,"type":"${ENDPOINT_TYPES[raw.type] ?? 'UNKNOWN'}","dns_label":`);
    str(out, ev, raw.dns);
    out.ascii(',"os":');
    str(out, ev, raw.os);
    out.ascii(',"geo_location":{"city_name":"","country_code":""},"public_key":');
    quotedKey(out, ev, raw.key);
    out.byte(0x7d);
  } else {
    out.ascii(',"name":"","type":"UNKNOWN","dns_label":"","os":"","geo_location":{"city_name":"","country_code":""},"public_key":""}');
  }
}

/**
 * Appends the JSON line (no newline) of an event that scanFlowEvent scanned and checkScanned
 * accepted; receiveTimeMs is when the collector received it.
 */
export function writeJsonLine(out: ByteBuffer, ev: ScannedEvent, receiveTimeMs: number): void {
  out.ascii('{"id":');
  quotedUuid(out, ev, ev.eventId);
  out.ascii(',"flow_id":');
  quotedUuid(out, ev, ev.flowId);
  out.ascii(`,"type":"TYPE_${EVENT_TYPES[ev.type]}","direction":"${DIRECTIONS[ev.direction]}","protocol":`);
  out.uint(ev.protocol);
  out.ascii(',"icmp_type":');
  out.uint(ev.icmpType);
  out.ascii(',"icmp_code":');
  out.uint(ev.icmpCode);
  out.ascii(',"policy_id":');
  str(out, ev, ev.ruleId);
  out.ascii(',"policy_name":');
  str(out, ev, ev.policyName);
  out.ascii(',"reporter_id":');
  str(out, ev, ev.reporterId);
  out.ascii(',"timestamp":');
  quotedTime(out, ev.timestampMs);
  out.ascii(',"receive_timestamp":');
  quotedTime(out, receiveTimeMs);
  out.ascii(',"rx_bytes":');
  out.uint(ev.rxBytes);
  out.ascii(',"rx_packets":');
  out.uint(ev.rxPackets);
  out.ascii(',"tx_bytes":');
  out.uint(ev.txBytes);
  out.ascii(',"tx_packets":');
  out.uint(ev.txPackets);
  out.ascii(',"source":');
  endpoint(out, ev, ev.src, ev.srcIp, ev.sport, ev.srcRes);
  out.ascii(',"destination":');
  endpoint(out, ev, ev.dst, ev.dstIp, ev.dport, ev.dstRes);
  out.ascii(',"user_id":');
  str(out, ev, ev.userId);
  out.ascii(',"user_email":');
  str(out, ev, ev.userEmail);
  out.ascii(',"user_name":');
  str(out, ev, ev.userName);
  out.ascii(',"wgflow_reporter_public_key":');
  quotedKey(out, ev, ev.publicKey);
  out.ascii(',"wgflow_interface":');
  str(out, ev, ev.iface);
  out.ascii(ev.countersEnabled ? ',"wgflow_counters_enabled":true,"wgflow_tcp_flags_initiator":' : ',"wgflow_counters_enabled":false,"wgflow_tcp_flags_initiator":');
  out.uint(ev.flagsI);
  out.ascii(',"wgflow_tcp_flags_responder":');
  out.uint(ev.flagsR);
  const reason = END_REASONS[ev.endReason];
  if (reason) out.ascii(`,"wgflow_end_reason":"${reason}"`);
  if (ev.windowStartMs >= 0) {
    out.ascii(',"wgflow_window_start":');
    quotedTime(out, ev.windowStartMs);
  }
  if (ev.windowEndMs >= 0) {
    out.ascii(',"wgflow_window_end":');
    quotedTime(out, ev.windowEndMs);
  }
  out.byte(0x7d);
}
