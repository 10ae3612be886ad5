// IPFIX (RFC 7011) message encoding for wgflow's flow reports, written from the RFC.
// Two data templates (IPv4 and IPv6 unidirectional flow records) with enterprise-specific string
// fields for resource and policy, described in-band by RFC 5610 option records.

/** RFC 5612's documentation Private Enterprise Number, until wgflow has its own. */
export const WGFLOW_PEN = 32473;
export const TEMPLATE_V4 = 256;
export const TEMPLATE_V6 = 257;
export const TEMPLATE_IE_TYPES = 258;
/** DROP reports: what was dropped (droppedOctet/PacketDeltaCount) and why (forwardingStatus). */
export const TEMPLATE_DROP_V4 = 259;
export const TEMPLATE_DROP_V6 = 260;
const VARLEN = 65535;
const HEADER_LEN = 16;

interface FieldSpec {
  id: number;
  length: number;
  pen?: number;
}

/** wgflow's enterprise-specific information elements (PEN 32473), all variable-length strings. */
export const ENTERPRISE_IES = [
  { id: 1, name: 'wgflowResourceId', description: 'id of the route or network resource the flow reached (or came from)' },
  { id: 2, name: 'wgflowResourceName', description: 'name of that resource' },
  { id: 3, name: 'wgflowPolicyId', description: 'id of the first policy that allowed the flow' },
  { id: 4, name: 'wgflowPolicyName', description: 'name of that policy' },
  { id: 5, name: 'wgflowSourceName', description: 'peer or resource name of the source address' },
  { id: 6, name: 'wgflowDestinationName', description: 'peer or resource name of the destination address' },
  { id: 7, name: 'wgflowDropReason', description: 'the kernel drop reason of dropped packets (e.g. NETFILTER_DROP, NO_SOCKET)' },
] as const;
/** The flow templates carry the first six; the drop templates the policy, the names and the reason. */
const FLOW_IES = ENTERPRISE_IES.filter((ie) => ie.id <= 6);
const DROP_IES = ENTERPRISE_IES.filter((ie) => ie.id >= 3);

/**
 * A template's fields: the flow and drop templates differ only in their counters (octet/packet
 * deltas or dropped ones), their status fields (flowEndReason and tcpControlBits, or
 * forwardingStatus) and their enterprise strings. encodeRecord writes them in this order.
 */
function recordFields(v6: boolean, counters: readonly [number, number], status: FieldSpec[], ies: ReadonlyArray<{ id: number }>): FieldSpec[] {
  return [
    { id: v6 ? 27 : 8, length: v6 ? 16 : 4 }, // sourceIPv{4,6}Address
    { id: v6 ? 28 : 12, length: v6 ? 16 : 4 }, // destinationIPv{4,6}Address
    { id: 7, length: 2 }, // sourceTransportPort
    { id: 11, length: 2 }, // destinationTransportPort
    { id: 4, length: 1 }, // protocolIdentifier
    { id: counters[0], length: 8 },
    { id: counters[1], length: 8 },
    { id: 152, length: 8 }, // flowStartMilliseconds
    { id: 153, length: 8 }, // flowEndMilliseconds
    { id: 61, length: 1 }, // flowDirection
    { id: v6 ? 139 : 32, length: 2 }, // icmpTypeCodeIPv{4,6}
    ...status,
    { id: 10, length: 4 }, // ingressInterface
    { id: 14, length: 4 }, // egressInterface
    { id: 148, length: 8 }, // flowId
    { id: 82, length: VARLEN }, // interfaceName
    ...ies.map((ie) => ({ id: ie.id, length: VARLEN, pen: WGFLOW_PEN })),
  ];
}

// octetDeltaCount, packetDeltaCount; flowEndReason, tcpControlBits (one octet: pmacct reads 0 otherwise).
const dataFields = (v6: boolean): FieldSpec[] => recordFields(v6, [1, 2], [{ id: 136, length: 1 }, { id: 6, length: 1 }], FLOW_IES);
// droppedOctetDeltaCount, droppedPacketDeltaCount; forwardingStatus (RFC 7270), reduced-size: status and reason code.
const dropFields = (v6: boolean): FieldSpec[] => recordFields(v6, [132, 133], [{ id: 89, length: 1 }], DROP_IES);

/**
 * forwardingStatus (RFC 7270, IANA registry) of a kernel drop reason: "dropped" (0b10 in the top
 * two bits) and the closest reason code; 128, dropped for an unknown reason, for the rest.
 */
export function forwardingStatusOf(dropReason: string): number {
  const r = dropReason.toUpperCase();
  if (r === 'NETFILTER_DROP' || r.startsWith('NFT_') || r.startsWith('XFRM_POLICY')) return 129; // ACL deny
  if (r === 'TC_DROP' || r === 'TC_INGRESS' || r === 'TC_EGRESS' || r === 'BPF_CGROUP_EGRESS') return 130; // ACL drop
  if (r.includes('NOROUTE') || r === 'IP_INADDRERRORS' || r === 'IP_INNOROUTES' || r === 'IPV6_NOROUTE' || r === 'UNROUTABLE') return 131; // unroutable
  if (r.includes('NEIGH')) return 132; // adjacency
  if (r === 'PKT_TOO_BIG' || r.startsWith('FRAG')) return 133; // fragmentation and DF set
  if (r === 'IP_CSUM' || r.endsWith('_CSUM')) return 134; // bad header checksum
  if (r === 'PKT_TOO_SMALL' || r === 'IP_INHDR_LEN') return 135; // bad total length
  if (r === 'IP_INHDR' || r === 'IPV6_BAD_EXTHDR') return 136; // bad header length
  if (r.includes('TTL') || r.includes('HOPLIMIT')) return 137; // bad TTL
  if (r.startsWith('QDISC') || r === 'TC_CHAIN_NOTFOUND' || r === 'TC_RECLASSIFY_LOOP') return 139; // WRED (queue)
  if (r === 'IP_RPFILTER') return 140; // RPF
  if (r === 'NO_SOCKET' || r === 'SOCKET_FILTER' || r.startsWith('TCP_') || r.startsWith('SOCKET_')) return 141; // for us
  return 128;
}

/** One unidirectional flow record, ready to encode. */
export interface IpfixRecord {
  v6: boolean;
  src: Buffer;
  dst: Buffer;
  sport: number;
  dport: number;
  proto: number;
  octets: number;
  packets: number;
  startMs: number;
  endMs: number;
  /** 0 ingress, 1 egress. */
  direction: number;
  icmpTypeCode: number;
  /** 1 idle, 2 active timeout, 3 end of flow, 4 forced end, 5 lack of resources. */
  endReason: number;
  tcpFlags: number;
  ingressIf: number;
  egressIf: number;
  /** flowId (unsigned64) as 8 big-endian bytes. */
  flowId: Buffer;
  interfaceName: string;
  resourceId: string;
  resourceName: string;
  policyId: string;
  policyName: string;
  sourceName: string;
  destinationName: string;
  /** DROP reports only: octets and packets are what was dropped; the drop templates carry them. */
  drop?: { forwardingStatus: number; reason: string };
}

/** The data template a record is encoded for. */
export function templateOf(r: IpfixRecord): number {
  return r.drop ? (r.v6 ? TEMPLATE_DROP_V6 : TEMPLATE_DROP_V4) : r.v6 ? TEMPLATE_V6 : TEMPLATE_V4;
}

/** A growable big-endian byte writer. */
class Writer {
  buf = Buffer.alloc(2048);
  len = 0;

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const b = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(b, 0, 0, this.len);
    this.buf = b;
  }
  u8(v: number): void { this.ensure(1); this.buf[this.len++] = v & 0xff; }
  u16(v: number): void { this.ensure(2); this.buf.writeUInt16BE(v & 0xffff, this.len); this.len += 2; }
  u32(v: number): void { this.ensure(4); this.buf.writeUInt32BE(v >>> 0, this.len); this.len += 4; }
  u64(v: number): void {
    this.ensure(8);
    const n = Math.max(0, Math.floor(v));
    this.buf.writeUInt32BE(Math.floor(n / 0x1_0000_0000) >>> 0, this.len);
    this.buf.writeUInt32BE(n % 0x1_0000_0000, this.len + 4);
    this.len += 8;
  }
  bytes(b: Buffer): void { this.ensure(b.length); b.copy(this.buf, this.len); this.len += b.length; }
  /** RFC 7011 7: one length octet below 255, else 255 and two octets. */
  varlen(s: string): void {
    const b = Buffer.from(s, 'utf8').subarray(0, 65535);
    if (b.length < 255) this.u8(b.length);
    else { this.u8(255); this.u16(b.length); }
    this.bytes(b);
  }
  result(): Buffer { return Buffer.from(this.buf.subarray(0, this.len)); }
}

function fieldSpecs(w: Writer, fields: FieldSpec[]): void {
  for (const f of fields) {
    w.u16(f.pen ? f.id | 0x8000 : f.id);
    w.u16(f.length);
    if (f.pen) w.u32(f.pen);
  }
}

/** The template set (id 2) with both data templates. Not padded: some parsers choke on it. */
export function templateSet(): Buffer {
  const w = new Writer();
  w.u16(2);
  w.u16(0);
  for (const [id, v6, drop] of [[TEMPLATE_V4, false, false], [TEMPLATE_V6, true, false], [TEMPLATE_DROP_V4, false, true], [TEMPLATE_DROP_V6, true, true]] as const) {
    const fields = drop ? dropFields(v6) : dataFields(v6);
    w.u16(id);
    w.u16(fields.length);
    fieldSpecs(w, fields);
  }
  const b = w.result();
  b.writeUInt16BE(b.length, 2);
  return b;
}

/** RFC 5610: the options template describing information elements (id 258), in a set of id 3. */
export function ieTypeOptionsTemplateSet(): Buffer {
  const w = new Writer();
  w.u16(3);
  w.u16(0);
  const scope: FieldSpec[] = [{ id: 346, length: 4 }, { id: 303, length: 2 }];
  const fields: FieldSpec[] = [
    { id: 339, length: 1 }, // informationElementDataType
    { id: 344, length: 1 }, // informationElementSemantics
    { id: 345, length: 2 }, // informationElementUnits
    { id: 342, length: 8 }, // informationElementRangeBegin
    { id: 343, length: 8 }, // informationElementRangeEnd
    { id: 341, length: VARLEN }, // informationElementName
    { id: 340, length: VARLEN }, // informationElementDescription
  ];
  w.u16(TEMPLATE_IE_TYPES);
  w.u16(scope.length + fields.length);
  w.u16(scope.length);
  fieldSpecs(w, [...scope, ...fields]);
  const b = w.result();
  b.writeUInt16BE(b.length, 2);
  return b;
}

/** RFC 5610 option data records describing wgflow's enterprise fields (strings, data type 13). */
export function ieTypeDataSet(): { set: Buffer; records: number } {
  const w = new Writer();
  w.u16(TEMPLATE_IE_TYPES);
  w.u16(0);
  for (const ie of ENTERPRISE_IES) {
    w.u32(WGFLOW_PEN);
    w.u16(ie.id);
    w.u8(13); // string
    w.u8(0); // default semantics
    w.u16(0); // no units
    w.u64(0);
    w.u64(0);
    w.varlen(ie.name);
    w.varlen(ie.description);
  }
  const b = w.result();
  b.writeUInt16BE(b.length, 2);
  return { set: b, records: ENTERPRISE_IES.length };
}

/** Encode one data record (without set header) for its template (templateOf). */
export function encodeRecord(r: IpfixRecord): Buffer {
  const w = new Writer();
  w.bytes(r.src);
  w.bytes(r.dst);
  w.u16(r.sport);
  w.u16(r.dport);
  w.u8(r.proto);
  w.u64(r.octets);
  w.u64(r.packets);
  w.u64(r.startMs);
  w.u64(r.endMs);
  w.u8(r.direction);
  w.u16(r.icmpTypeCode);
  if (r.drop) {
    w.u8(r.drop.forwardingStatus);
  } else {
    w.u8(r.endReason);
    w.u8(r.tcpFlags);
  }
  w.u32(r.ingressIf);
  w.u32(r.egressIf);
  w.bytes(r.flowId);
  w.varlen(r.interfaceName);
  const strings = r.drop
    ? [r.policyId, r.policyName, r.sourceName, r.destinationName, r.drop.reason]
    : [r.resourceId, r.resourceName, r.policyId, r.policyName, r.sourceName, r.destinationName];
  for (const t of strings) w.varlen(t);
  return w.result();
}

/** The 16-octet message header. */
export function header(length: number, exportTimeSec: number, sequence: number, domain: number): Buffer {
  const b = Buffer.alloc(HEADER_LEN);
  b.writeUInt16BE(10, 0);
  b.writeUInt16BE(length, 2);
  b.writeUInt32BE(exportTimeSec >>> 0, 4);
  b.writeUInt32BE(sequence >>> 0, 8);
  b.writeUInt32BE(domain >>> 0, 12);
  return b;
}

/**
 * Pack encoded data records into messages of at most mtu octets: one data set per template run.
 * Returns each message's sets and record count (the header is added when sending, for the
 * sequence number).
 */
export function packRecords(records: Array<{ template: number; bytes: Buffer }>, mtu: number): Array<{ body: Buffer; records: number }> {
  const messages: Array<{ body: Buffer; records: number }> = [];
  let sets: Buffer[] = [];
  let size = HEADER_LEN;
  let count = 0;
  let cur: { template: number; parts: Buffer[]; len: number } | null = null;
  const closeSet = (): void => {
    if (!cur) return;
    const h = Buffer.alloc(4);
    h.writeUInt16BE(cur.template, 0);
    h.writeUInt16BE(cur.len, 2);
    sets.push(h, ...cur.parts);
    cur = null;
  };
  const closeMessage = (): void => {
    closeSet();
    if (count > 0) messages.push({ body: Buffer.concat(sets), records: count });
    sets = [];
    size = HEADER_LEN;
    count = 0;
  };
  for (const r of records) {
    const needSetHeader = !cur || cur.template !== r.template;
    const need = r.bytes.length + (needSetHeader ? 4 : 0);
    if (size + need > mtu && count > 0) closeMessage();
    if (!cur || cur.template !== r.template) {
      closeSet();
      cur = { template: r.template, parts: [], len: 4 };
      size += 4;
    }
    cur.parts.push(r.bytes);
    cur.len += r.bytes.length;
    size += r.bytes.length;
    count += 1;
  }
  closeMessage();
  return messages;
}
