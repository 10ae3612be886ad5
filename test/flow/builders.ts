// Synthetic flow keys, ring records and flow entries, and FakeKernel: a user-space model of what
// bpf/wgflow.bpf.c does per packet (create the entry and announce START, count per interface
// direction, OR the TCP flags, announce the first FIN per direction and the first RST), so the
// lifecycle tests drive the tracker with the same inputs the real datapath produces.
import {
  DIR_EGRESS,
  DIR_INGRESS,
  FLAG_FIN_EGRESS_SENT,
  FLAG_FIN_INGRESS_SENT,
  FLAG_HINT_LOST,
  FLAG_INIT_B,
  FLAG_INIT_EGRESS,
  FLAG_RST_SENT,
  FLAG_START_LOST,
  FLAG_UNCOUNTED,
  type FlowCounters,
  type FlowEntry,
  type FlowKey,
  FlowKind,
  keyFromId,
  keyId,
  lastSeenStamp,
  RecordType,
  type RingRecord,
} from '../../src/datapath/records';
import { ipToRaw } from '../../src/net/ip';
import type { RecordSource } from '../../src/flow/pipeline';

export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

/** Raw key bytes (the wgf_key4 / wgf_key6 layout). */
export function rawKey(a: string, b: string, portA: number, portB: number, proto: number, kind: FlowKind, ifindex: number): Uint8Array {
  const ra = ipToRaw(a), rb = ipToRaw(b);
  if (ra.length !== rb.length) throw new Error('mixed families');
  const al = ra.length;
  const k = Buffer.alloc(al === 4 ? 16 : 40);
  k.write(ra + rb, 0, 'latin1');
  const po = 2 * al;
  k.writeUInt16BE(portA, po);
  k.writeUInt16BE(portB, po + 2);
  k[po + 4] = proto;
  k[po + 5] = kind;
  k.writeUInt16LE(ifindex, po + 6);
  return new Uint8Array(k.buffer, k.byteOffset, k.length);
}

/** A FlowKey as the decoder makes it (id = keyId(raw)). */
export function makeKey(a: string, b: string, portA: number, portB: number, proto: number, kind: FlowKind = FlowKind.Ports, ifindex = 3): FlowKey {
  const raw = rawKey(a, b, portA, portB, proto, kind, ifindex);
  return keyFromId(keyId(raw, raw.length === 16 ? 4 : 6));
}

/** One connection as seen on the interface: who initiated, and whether it was local (egress). */
export interface Conn {
  key: FlowKey;
  /** The initiator is endpoint b of the canonical key. */
  initB: boolean;
  /** The initiator's first packet left through the interface (this host initiated). */
  initEgress: boolean;
  proto: number;
}

export interface ConnSpec {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  proto?: number;
  kind?: FlowKind;
  ifindex?: number;
  /** This host is the initiator (its first packet is egress). Default false: the peer initiated (ingress). */
  local?: boolean;
}

function cmpRaw(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Canonicalise like the kernel: a = lower address (lower port when the addresses are equal). */
export function conn(s: ConnSpec): Conn {
  const proto = s.proto ?? 6;
  const kind = s.kind ?? (proto === 6 || proto === 17 ? FlowKind.Ports : FlowKind.Other);
  const sport = s.sport ?? 0, dport = s.dport ?? 0;
  const c = cmpRaw(ipToRaw(s.src), ipToRaw(s.dst));
  const srcIsA = c < 0 || (c === 0 && sport <= dport);
  const key = srcIsA
    ? makeKey(s.src, s.dst, sport, dport, proto, kind, s.ifindex ?? 3)
    : makeKey(s.dst, s.src, dport, sport, proto, kind, s.ifindex ?? 3);
  return { key, initB: !srcIsA, initEgress: s.local ?? false, proto };
}

/** An ICMP / ICMPv6 echo flow (portA = identifier, portB = request type << 8). */
export function icmpConn(s: { src: string; dst: string; id: number; type?: number; code?: number; local?: boolean; ifindex?: number }): Conn {
  const v6 = s.src.includes(':');
  const proto = v6 ? 58 : 1;
  const type = s.type ?? (v6 ? 128 : 8);
  const c = cmpRaw(ipToRaw(s.src), ipToRaw(s.dst));
  const srcIsA = c <= 0;
  const key = srcIsA
    ? makeKey(s.src, s.dst, s.id, (type << 8) | (s.code ?? 0), proto, FlowKind.Icmp, s.ifindex ?? 3)
    : makeKey(s.dst, s.src, s.id, (type << 8) | (s.code ?? 0), proto, FlowKind.Icmp, s.ifindex ?? 3);
  return { key, initB: !srcIsA, initEgress: s.local ?? false, proto };
}

export function initFlags(c: Conn): number {
  return (c.initB ? FLAG_INIT_B : 0) | (c.initEgress ? FLAG_INIT_EGRESS : 0);
}

/** Interface direction of a packet from the initiator (true) or the responder (false). */
export function dirOf(c: Conn, fromInitiator: boolean): number {
  const initDir = c.initEgress ? DIR_EGRESS : DIR_INGRESS;
  return fromInitiator ? initDir : 1 - initDir;
}

export function startRecord(c: Conn, tsNs: number, opts: { tcpFlags?: number; flags?: number } = {}): RingRecord {
  const dir = dirOf(c, true);
  const tcp = opts.tcpFlags ?? (c.proto === 6 ? TCP.SYN : 0);
  return { type: RecordType.Start, dir, tcpFlags: tcp, flags: initFlags(c) | (tcp << (8 * dir)) | (opts.flags ?? 0), tsNs, key: c.key };
}

export function hintRecord(c: Conn, type: RecordType.Fin | RecordType.Rst, fromInitiator: boolean, tsNs: number, flags = 0): RingRecord {
  const dir = dirOf(c, fromInitiator);
  const tcp = type === RecordType.Fin ? TCP.FIN | TCP.ACK : TCP.RST;
  return { type, dir, tcpFlags: tcp, flags: initFlags(c) | flags, tsNs, key: c.key };
}

export function entry(c: Conn, v: Partial<FlowCounters> & { firstNs: number; lastSeenNs?: number }): FlowEntry {
  return {
    key: c.key,
    value: {
      firstNs: v.firstNs,
      lastSeen: v.lastSeen ?? lastSeenStamp(v.lastSeenNs ?? v.firstNs),
      rxBytes: v.rxBytes ?? 0,
      txBytes: v.txBytes ?? 0,
      rxPackets: v.rxPackets ?? 0,
      txPackets: v.txPackets ?? 0,
      flags: v.flags ?? initFlags(c),
    },
  };
}

export interface PacketOpts {
  bytes?: number;
  tcpFlags?: number;
  /** GSO segments (packets counted). */
  segs?: number;
}

/** A model of the kernel side: flow maps + ring buffer, driven one packet at a time. */
export class FakeKernel implements RecordSource {
  readonly entries = new Map<string, { key: FlowKey; v: FlowCounters }>();
  ring: RingRecord[] = [];
  counting = true;
  /** Ring buffer full: records are dropped and the flow gets START_LOST / HINT_LOST. */
  ringFull = false;
  ringbufFull = 0;
  deleted: string[] = [];

  constructor(private readonly now: () => number) {}

  /** One packet of connection c, sent by the initiator (fromInitiator) or the responder. */
  packet(c: Conn, fromInitiator: boolean, o: PacketOpts = {}): void {
    const dir = dirOf(c, fromInitiator);
    const tcp = c.proto === 6 ? (o.tcpFlags ?? TCP.ACK) : 0;
    const segs = o.segs ?? 1;
    const bytes = o.bytes ?? 100;
    const now = this.now();
    let e = this.entries.get(c.key.id);
    if (!e) {
      // The first packet's sender is the initiator (the kernel flips for SYN+ACK / echo reply).
      const senderIsB = fromInitiator ? c.initB : !c.initB;
      const flip = c.proto === 6 && (tcp & (TCP.SYN | TCP.ACK)) === (TCP.SYN | TCP.ACK);
      const initB = senderIsB !== flip;
      const initEgress = (dir === DIR_EGRESS) !== flip;
      const v: FlowCounters = {
        firstNs: now, lastSeen: lastSeenStamp(now), rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0,
        flags: (tcp << (8 * dir)) | (initB ? FLAG_INIT_B : 0) | (initEgress ? FLAG_INIT_EGRESS : 0),
      };
      if (this.counting) this.add(v, dir, segs, bytes);
      else v.flags |= FLAG_UNCOUNTED;
      if (this.ringFull) {
        v.flags |= FLAG_START_LOST;
        this.ringbufFull++;
      }
      this.entries.set(c.key.id, { key: c.key, v });
      if (!this.ringFull) this.ring.push({ type: RecordType.Start, dir, tcpFlags: tcp, flags: v.flags, tsNs: now, key: c.key });
      return;
    }
    const v = e.v;
    if (this.counting) this.add(v, dir, segs, bytes);
    v.lastSeen = lastSeenStamp(now);
    let want = tcp << (8 * dir);
    if (!this.counting) want |= FLAG_UNCOUNTED;
    if (tcp & TCP.RST) want |= FLAG_RST_SENT;
    else if (tcp & TCP.FIN) want |= dir === DIR_EGRESS ? FLAG_FIN_EGRESS_SENT : FLAG_FIN_INGRESS_SENT;
    const old = v.flags;
    v.flags |= want;
    const hint = want & ~old & (FLAG_RST_SENT | FLAG_FIN_EGRESS_SENT | FLAG_FIN_INGRESS_SENT);
    if (hint) {
      if (this.ringFull) {
        v.flags |= FLAG_HINT_LOST;
        this.ringbufFull++;
      } else {
        this.ring.push({ type: hint & FLAG_RST_SENT ? RecordType.Rst : RecordType.Fin, dir, tcpFlags: tcp, flags: v.flags, tsNs: now, key: c.key });
      }
    }
  }

  private add(v: FlowCounters, dir: number, segs: number, bytes: number): void {
    if (dir === DIR_INGRESS) {
      v.rxPackets = (v.rxPackets + segs) >>> 0;
      v.rxBytes += bytes;
    } else {
      v.txPackets = (v.txPackets + segs) >>> 0;
      v.txBytes += bytes;
    }
  }

  takeRecords(): RingRecord[] {
    const r = this.ring;
    this.ring = [];
    return r;
  }

  readSync(): FlowEntry[] {
    return [...this.entries.values()].map((e) => ({ key: e.key, value: { ...e.v } }));
  }

  deleteSync(keys: FlowKey[]): (FlowCounters | undefined)[] {
    return keys.map((k) => {
      const e = this.entries.get(k.id);
      if (!e) return undefined;
      this.entries.delete(k.id);
      this.deleted.push(k.id);
      return { ...e.v };
    });
  }

  get(c: Conn): FlowCounters | undefined {
    const e = this.entries.get(c.key.id);
    return e ? { ...e.v } : undefined;
  }

  // RecordSource (pipeline tests)
  async poll(timeoutMs = 100): Promise<RingRecord[]> {
    if (this.ring.length === 0 && timeoutMs > 0) await new Promise((r) => setTimeout(r, Math.min(timeoutMs, 20)));
    return this.takeRecords();
  }
  async readFlows(): Promise<FlowEntry[]> {
    return this.readSync();
  }
  async deleteFlows(keys: FlowKey[]): Promise<(FlowCounters | undefined)[]> {
    return this.deleteSync(keys);
  }
}
