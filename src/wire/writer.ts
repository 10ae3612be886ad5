// A direct FlowEvent -> flow.FlowEvent protobuf encoder. The exporter encodes every event once, on
// its hot path; going through proto-loader (FlowEvent -> object -> fromObject -> encode) cost
// about four times as much. The output decodes to the same message as proto-loader's encoding of
// codec.toWire(event) (test/export/codec.test.ts checks this for every event shape), and it
// validates the same way, with the same CodecError messages.
import { eventBytes, type EndpointFields, type FlowEvent } from '../model/event';
import { parseIpScratch } from '../net/ip';
import { CodecError, ipToBytes } from './codec';

// Enum numbers by switch, -1 for anything else: cheaper than a keyed lookup on every event, and
// no inherited property ("toString") can pass for a value.
function typeNum(t: string): number {
  switch (t) {
    case 'START': return 1;
    case 'END': return 2;
    case 'DROP': return 3;
    case 'UPDATE': return 100;
    default: return -1;
  }
}

function directionNum(d: string): number {
  return d === 'INGRESS' ? 1 : d === 'EGRESS' ? 2 : -1;
}

function endpointTypeNum(t: string): number {
  switch (t) {
    case 'UNKNOWN': return 0;
    case 'PEER': return 1;
    case 'HOST_RESOURCE': return 2;
    case 'SUBNET_RESOURCE': return 3;
    case 'DOMAIN_RESOURCE': return 4;
    default: return -1;
  }
}

function endReasonNum(r: string): number {
  switch (r) {
    case 'idle': return 1;
    case 'tcp_fin': return 2;
    case 'tcp_rst': return 3;
    case 'forced': return 4;
    case 'lack_of_resources': return 5;
    default: return -1;
  }
}

// Wire types: 0 varint, 2 length-delimited.
const VARINT = 0;
const LEN = 2;

/**
 * Writes into buf from pos on. It never checks for room: writeFlowEventInto makes sure, once per
 * event, that buf holds maxEncodedLength(ev) bytes past pos.
 */
class Writer {
  buf: Buffer = Buffer.alloc(0);
  pos = 0;

  /** Unsigned varint up to 2^53, with 32-bit integer operations only. */
  varint(v: number): void {
    const b = this.buf;
    let p = this.pos;
    if (v >= 0x80000000) {
      // At least 5 bytes: the low 28 bits from the low word, then what is left (< 2^25).
      const lo = v >>> 0; // v mod 2^32
      const hi = (v - lo) / 0x100000000;
      b[p] = (lo & 127) | 128;
      b[p + 1] = ((lo >>> 7) & 127) | 128;
      b[p + 2] = ((lo >>> 14) & 127) | 128;
      b[p + 3] = ((lo >>> 21) & 127) | 128;
      p += 4;
      v = (lo >>> 28) | (hi << 4);
    }
    while (v >= 128) {
      b[p++] = (v & 127) | 128;
      v >>>= 7;
    }
    b[p++] = v;
    this.pos = p;
  }

  tag(field: number, wt: number): void {
    if (field < 16) this.buf[this.pos++] = field * 8 + wt; // one byte: most of our fields
    else this.varint(field * 8 + wt);
  }

  uint(field: number, v: number): void {
    if (v === 0) return; // proto3: defaults are not written
    this.tag(field, VARINT);
    if (v < 128) this.buf[this.pos++] = v;
    else this.varint(v);
  }

  bool(field: number, v: boolean): void {
    if (!v) return;
    this.tag(field, VARINT);
    this.buf[this.pos++] = 1;
  }

  /** Short raw bytes (an address, a key): TypedArray.set, cheaper than a call into Buffer.copy. */
  bytes(field: number, b: Uint8Array): void {
    if (b.length === 0) return;
    this.tag(field, LEN);
    const out = this.buf;
    let p = this.pos;
    out[p++] = b.length; // < 128
    if (b.length === 4) {
      out[p] = b[0];
      out[p + 1] = b[1];
      out[p + 2] = b[2];
      out[p + 3] = b[3];
    } else {
      out.set(b, p);
    }
    this.pos = p + b.length;
  }

  string(field: number, s: string): void {
    const n = s.length;
    if (n === 0) return;
    this.tag(field, LEN);
    const b = this.buf;
    if (n < 43) {
      // At most 3 bytes a UTF-16 unit: the length fits its one byte, filled in afterwards.
      const start = this.pos + 1;
      let p = start, i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        b[p++] = c;
      }
      if (i < n) p = writeUtf8(b, p, s, i);
      b[start - 1] = p - start;
      this.pos = p;
      return;
    }
    this.varint(utf8Length(s));
    this.pos = writeUtf8(b, this.pos, s, 0);
  }

  /** 16 raw bytes from UUID text, parsed straight into the buffer. */
  uuid(field: number, text: string, name: string): void {
    if (text.length !== 36 || text.charCodeAt(8) !== 45 || text.charCodeAt(13) !== 45 || text.charCodeAt(18) !== 45 || text.charCodeAt(23) !== 45) {
      throw new CodecError(`${name}: "${text}" is not a UUID (expected 8-4-4-4-12 hex digits)`);
    }
    const b = this.buf;
    let p = this.pos;
    b[p++] = field * 8 + LEN; // field < 16
    b[p++] = 16;
    let bad = 0;
    for (let k = 0; k < 16; k++) {
      const i = UUID_DIGITS[k];
      const hi = HEX_VALUE[text.charCodeAt(i)], lo = HEX_VALUE[text.charCodeAt(i + 1)];
      bad |= hi | lo;
      b[p + k] = (hi << 4) | lo;
    }
    if (bad > 15) throw new CodecError(`${name}: "${text}" is not a UUID (expected 8-4-4-4-12 hex digits)`);
    this.pos = p + 16;
  }

  /**
   * Starts a length-delimited field whose content follows; returns the content start. `reserve`
   * bytes are left for the length (1, or 2 for content that is usually 128..16383 bytes long);
   * end() moves the content if the length needs another number of bytes.
   */
  /** 16 UUID bytes written by put (the flow engine's events have them). */
  uuidFrom(field: number, put: (out: Uint8Array, at: number) => void): void {
    const b = this.buf;
    b[this.pos] = field * 8 + LEN; // field < 16
    b[this.pos + 1] = 16;
    put(b, this.pos + 2);
    this.pos += 18;
  }

  /** An address written by put (4 or 16 bytes). */
  ipFrom(field: number, put: (out: Uint8Array, at: number) => number): void {
    const b = this.buf;
    b[this.pos] = field * 8 + LEN; // field < 16
    const n = put(b, this.pos + 2);
    b[this.pos + 1] = n;
    this.pos += 2 + n;
  }

  begin(field: number, reserve = 1): number {
    this.tag(field, LEN);
    return (this.pos += reserve);
  }

  end(start: number, reserved = 1): void {
    const n = this.pos - start;
    if (n < 128 && reserved === 1) {
      this.buf[start - 1] = n;
      return;
    }
    let lenBytes = 1;
    for (let v = n; v >= 128; v = Math.floor(v / 128)) lenBytes++;
    let p = start - reserved;
    if (lenBytes !== reserved) this.buf.copyWithin(p + lenBytes, start, start + n);
    let v = n;
    while (v >= 128) {
      this.buf[p++] = (v % 128) | 128;
      v = Math.floor(v / 128);
    }
    this.buf[p++] = v;
    this.pos = p + n;
  }

  /** A base64 WireGuard key as its 32 raw bytes ('' writes nothing). */
  key(field: number, b64: string, name: string): void {
    if (b64.length === 0) return;
    // The same few keys (peers) come again and again: decode each once.
    let raw = keyCache.get(b64);
    if (raw === undefined) {
      if (!KEY_RE.test(b64)) throw new CodecError(`${name}: "${b64}" is not a base64 WireGuard key (32 bytes, 44 characters)`);
      raw = Buffer.from(b64, 'base64');
      if (keyCache.size >= KEY_CACHE_SIZE) keyCache.clear();
      keyCache.set(b64, raw);
    }
    this.bytes(field, raw);
  }

  timestamp(field: number, ms: number, name: string): void {
    if (!Number.isFinite(ms) || ms < 0) throw new CodecError(`${name}: ${ms} is not a time (epoch milliseconds >= 0)`);
    const seconds = Math.floor(ms / 1000);
    const nanos = Math.round((ms - seconds * 1000) * 1e6);
    const at = this.begin(field);
    this.uint(1, seconds);
    this.uint(2, nanos);
    this.end(at);
  }
}

/** Where the 16 byte pairs of a UUID's text start. */
const UUID_DIGITS = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/** UTF-8 of s from index i on into b at p, as Buffer.write does it (a lone surrogate becomes U+FFFD); returns the end. */
function writeUtf8(b: Buffer, p: number, s: string, i: number): number {
  for (const n = s.length; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      b[p++] = c;
    } else if (c < 0x800) {
      b[p++] = 0xc0 | (c >> 6);
      b[p++] = 0x80 | (c & 63);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = c <= 0xdbff && i + 1 < n ? s.charCodeAt(i + 1) : 0;
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          b[p++] = 0xf0 | (c >> 18);
          b[p++] = 0x80 | ((c >> 12) & 63);
          b[p++] = 0x80 | ((c >> 6) & 63);
          b[p++] = 0x80 | (c & 63);
          continue;
        }
        c = 0xfffd;
      }
      b[p++] = 0xe0 | (c >> 12);
      b[p++] = 0x80 | ((c >> 6) & 63);
      b[p++] = 0x80 | (c & 63);
    }
  }
  return p;
}

/** Bytes writeUtf8 writes for s. */
function utf8Length(s: string): number {
  const n = s.length;
  let len = n;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) len += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      len += 2; // 4 bytes for the pair
      i++;
    } else len += 2;
  }
  return len;
}

const KEY_RE = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
const KEY_CACHE_SIZE = 4096;
const keyCache = new Map<string, Buffer>();

/** Value of a hex digit by UTF-16 code unit (every unit: no range check), 16 for anything else. */
const HEX_VALUE = new Uint8Array(65536).fill(16);
for (let i = 0; i < 10; i++) HEX_VALUE[48 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[65 + i] = HEX_VALUE[97 + i] = 10 + i;

const w = new Writer();

function checkUint(v: number, name: string, max: number): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new CodecError(`${name}: ${v} is not an integer in 0..${max}`);
  return v;
}

/** ip() into scratch memory, valid until the next call. */
function ipScratch(text: string, name: string): Buffer {
  return (text.length > 0 ? parseIpScratch(text) : null) ?? ipToBytes(text, name);
}

/** Text IP -> 4 or 16 raw bytes, exactly as ipToBytes (fast paths for plain addresses). */
export function ip(text: string, name: string): Buffer {
  return Buffer.from(ipScratch(text, name));
}

function endpoint(field: number, e: EndpointFields, name: 'source' | 'destination'): void {
  const type = endpointTypeNum(e.type);
  if (type < 0) throw new CodecError(`${name}.type: unknown endpoint type "${e.type}"`);
  const at = w.begin(field);
  w.string(1, e.id);
  w.string(2, e.name);
  w.uint(3, type);
  w.string(4, e.dnsLabel);
  w.string(5, e.os);
  w.key(6, e.publicKey, name === 'source' ? 'source.publicKey' : 'destination.publicKey');
  w.end(at);
}

const isResource = (t: string): boolean => t === 'HOST_RESOURCE' || t === 'SUBNET_RESOURCE' || t === 'DOMAIN_RESOURCE';

/** Encodes ev at w.pos (which must have maxEncodedLength(ev) bytes of room). */
function encode(ev: FlowEvent): void {
  const agg = ev.aggregate;
  // A window aggregate is TYPE_UNKNOWN (0, not written) as NetBird's v0.75 client sends it.
  const type = agg !== undefined ? 0 : typeNum(ev.type);
  if (type < 0) throw new CodecError(`type: unknown event type "${String(ev.type)}"`);
  const direction = directionNum(ev.direction);
  if (direction < 0) throw new CodecError(`direction: "${String(ev.direction)}" is not INGRESS or EGRESS`);
  let endReason = 0;
  if (ev.endReason !== undefined) {
    endReason = endReasonNum(ev.endReason);
    if (endReason < 0) throw new CodecError(`endReason: unknown end reason "${ev.endReason}"`);
  }
  const protocol = checkUint(ev.protocol, 'protocol', 255);
  const icmp = protocol === 1 || protocol === 58;
  // The flow engine's events hand over their ids and addresses as bytes: no text made or parsed.
  const eb = eventBytes(ev);
  const src: EndpointFields = eb ? eb.sourceInfo() : ev.source;
  const dst: EndpointFields = eb ? eb.destinationInfo() : ev.destination;
  const sport = checkUint(eb ? eb.sourcePort() : ev.source.port, 'source.port', 65535);
  const dport = checkUint(eb ? eb.destinationPort() : ev.destination.port, 'destination.port', 65535);
  const max = Number.MAX_SAFE_INTEGER;
  if (eb) w.uuidFrom(1, (o, at) => eb.eventIdInto(o, at));
  else w.uuid(1, ev.eventId, 'eventId');
  w.timestamp(2, ev.timestampMs, 'timestampMs');
  w.key(3, ev.reporterPublicKey, 'reporterPublicKey');
  const ff = w.begin(4, 2); // flow_fields: a few hundred bytes
  if (eb) w.uuidFrom(1, (o, at) => eb.flowIdInto(o, at));
  else w.uuid(1, ev.flowId, 'flowId');
  w.uint(2, type);
  w.string(3, ev.ruleId); // bytes on the wire; UTF-8 text is the same bytes
  w.uint(4, direction);
  w.uint(5, protocol);
  if (eb) {
    w.ipFrom(6, (o, at) => eb.sourceIpInto(o, at));
    w.ipFrom(7, (o, at) => eb.destinationIpInto(o, at));
  } else {
    w.bytes(6, ipScratch(ev.source.ip, 'source.ip'));
    w.bytes(7, ipScratch(ev.destination.ip, 'destination.ip'));
  }
  if (icmp) {
    const at = w.begin(9);
    w.uint(1, checkUint(ev.icmpType, 'icmpType', 255));
    w.uint(2, checkUint(ev.icmpCode, 'icmpCode', 255));
    w.end(at);
  } else if (sport !== 0 || dport !== 0 || protocol === 6 || protocol === 17) {
    const at = w.begin(8);
    w.uint(1, sport);
    w.uint(2, dport);
    w.end(at);
  }
  w.uint(10, checkUint(ev.rxPackets, 'rxPackets', max));
  w.uint(11, checkUint(ev.txPackets, 'txPackets', max));
  w.uint(12, checkUint(ev.rxBytes, 'rxBytes', max));
  w.uint(13, checkUint(ev.txBytes, 'txBytes', max));
  if (isResource(src.type)) w.string(14, src.id);
  if (isResource(dst.type)) w.string(15, dst.id);
  if (agg !== undefined) {
    w.uint(16, checkUint(agg.starts, 'aggregate.starts', max));
    w.uint(17, checkUint(agg.ends, 'aggregate.ends', max));
    w.uint(18, checkUint(agg.drops, 'aggregate.drops', max));
  }
  endpoint(100, src, 'source');
  endpoint(101, dst, 'destination');
  w.string(102, ev.policyName);
  const u = w.begin(103);
  w.string(1, ev.user.id);
  w.string(2, ev.user.name);
  w.string(3, ev.user.email);
  w.end(u);
  w.uint(104, endReason);
  w.bool(105, ev.countersEnabled);
  w.uint(106, checkUint(ev.tcpFlagsInitiator, 'tcpFlagsInitiator', 255));
  w.uint(107, checkUint(ev.tcpFlagsResponder, 'tcpFlagsResponder', 255));
  if (ev.dropReason !== undefined) w.string(108, ev.dropReason);
  w.end(ff, 2);
  if (ev.windowStartMs !== undefined) w.timestamp(6, ev.windowStartMs, 'windowStartMs');
  if (ev.windowEndMs !== undefined) w.timestamp(7, ev.windowEndMs, 'windowEndMs');
  w.string(100, ev.reporterId);
  w.string(101, ev.interfaceName);
}

/**
 * Room encode() may need: at most ~450 bytes of fixed-size fields (two UUIDs, three keys, two
 * 16-byte addresses, three timestamps, 10-byte varints, nested length prefixes that widen), at
 * most 7 bytes of tag and length per string, and 3 bytes per UTF-16 unit of the strings (a
 * surrogate pair is 4 bytes for 2 units). The resource ids count twice (fields 14 and 15).
 */
function maxEncodedLength(ev: FlowEvent): number {
  const eb = eventBytes(ev);
  const s = eb ? eb.sourceInfo() : ev.source, d = eb ? eb.destinationInfo() : ev.destination, u = ev.user;
  const units = ev.ruleId.length + ev.policyName.length + ev.reporterId.length + ev.interfaceName.length + (ev.dropReason?.length ?? 0)
    + 2 * s.id.length + s.name.length + s.dnsLabel.length + s.os.length
    + 2 * d.id.length + d.name.length + d.dnsLabel.length + d.os.length
    + u.id.length + u.name.length + u.email.length;
  return 1024 + 3 * units;
}

let scratch = Buffer.allocUnsafe(8192);

/** Encodes ev into the scratch buffer; returns its length there. */
function encodeToScratch(ev: FlowEvent): number {
  const room = maxEncodedLength(ev);
  if (room > scratch.length) scratch = Buffer.allocUnsafe(Math.max(room, 2 * scratch.length));
  w.buf = scratch;
  w.pos = 0;
  encode(ev);
  if (w.pos > scratch.length) throw new Error('wire-writer: encoded past the end of its buffer');
  return w.pos;
}

/** FlowEvent -> serialized flow.FlowEvent (validated; throws CodecError naming the field). */
export function writeFlowEvent(ev: FlowEvent): Buffer {
  const n = encodeToScratch(ev);
  return Buffer.from(scratch.subarray(0, n));
}

/**
 * writeFlowEvent's bytes, written into buf from `at`; returns where they end, or minus their
 * length (nothing useful written) when they do not fit before `end`. Throws CodecError like
 * writeFlowEvent.
 */
export function writeFlowEventInto(ev: FlowEvent, buf: Buffer, at: number, end: number): number {
  if (maxEncodedLength(ev) <= end - at) {
    w.buf = buf;
    w.pos = at;
    encode(ev);
    w.buf = scratch; // not left holding buf
    if (w.pos > end) throw new Error('wire-writer: encoded past the end of its buffer');
    return w.pos;
  }
  // Perhaps too long: the exact length from the scratch buffer decides.
  const n = encodeToScratch(ev);
  if (n > end - at) return -n;
  buf.set(scratch.subarray(0, n), at);
  return at + n;
}
