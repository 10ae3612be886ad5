// Minimal pcap reader for captures of an L3 interface (tcpdump -i wg0: LINKTYPE_RAW), used as the
// independent witness of what crossed the interface.
import { readFileSync } from 'node:fs';
import { ipv6FromBytes } from '../src/net/ip';

export interface CapturedPacket {
  family: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  sport: number;
  dport: number;
  /** Length of the IP packet on the wire (pcap orig_len). */
  length: number;
  /** IP and TCP header bytes (TCP only, else 0). */
  headerLength: number;
}

export function readPcap(path: string): CapturedPacket[] {
  const b = readFileSync(path);
  if (b.length < 24) return [];
  const le = b.readUInt32LE(0) === 0xa1b2c3d4 || b.readUInt32LE(0) === 0xa1b23c4d;
  const u32 = (o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const linktype = u32(20);
  if (linktype !== 101 && linktype !== 12 && linktype !== 228 && linktype !== 229) {
    throw new Error(`pcap link type ${linktype} is not raw IP`);
  }
  const out: CapturedPacket[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const incl = u32(o + 8);
    const orig = u32(o + 12);
    const p = o + 16;
    o = p + incl;
    if (o > b.length) break;
    const ver = b[p] >> 4;
    if (ver === 4) {
      const ihl = (b[p] & 0xf) * 4;
      const proto = b[p + 9];
      const frag = b.readUInt16BE(p + 6) & 0x1fff;
      const ports = !frag && (proto === 6 || proto === 17) && incl >= ihl + 4;
      out.push({
        family: 4, proto, length: orig, headerLength: ports && proto === 6 && incl >= ihl + 13 ? ihl + (b[p + ihl + 12] >> 4) * 4 : 0,
        src: `${b[p + 12]}.${b[p + 13]}.${b[p + 14]}.${b[p + 15]}`,
        dst: `${b[p + 16]}.${b[p + 17]}.${b[p + 18]}.${b[p + 19]}`,
        sport: ports ? b.readUInt16BE(p + ihl) : 0,
        dport: ports ? b.readUInt16BE(p + ihl + 2) : 0,
      });
    } else if (ver === 6) {
      const proto = b[p + 6];
      const ports = (proto === 6 || proto === 17) && incl >= 44;
      out.push({
        family: 6, proto, length: orig, headerLength: ports && proto === 6 && incl >= 53 ? 40 + (b[p + 52] >> 4) * 4 : 0,
        src: ipv6FromBytes(b, p + 8), dst: ipv6FromBytes(b, p + 24),
        sport: ports ? b.readUInt16BE(p + 40) : 0,
        dport: ports ? b.readUInt16BE(p + 42) : 0,
      });
    }
  }
  return out;
}

/** One WireGuard message on the underlay: a UDP datagram between the two peers' ports. */
export interface WgMessage {
  sport: number;
  dport: number;
  /** Message type (1 initiation, 2 response, 3 cookie, 4 data; a data message of 32 bytes is a keepalive). */
  type: number;
  /** UDP payload length: what kernel WireGuard's interface counters count. */
  length: number;
}

/** WireGuard messages in a capture of the underlay (Ethernet, IPv4 or IPv6, UDP). */
export function readWgUnderlay(path: string): WgMessage[] {
  const b = readFileSync(path);
  if (b.length < 24) return [];
  const le = b.readUInt32LE(0) === 0xa1b2c3d4 || b.readUInt32LE(0) === 0xa1b23c4d;
  const u32 = (o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  if (u32(20) !== 1) throw new Error(`pcap link type ${u32(20)} is not Ethernet`);
  const out: WgMessage[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const incl = u32(o + 8);
    const p = o + 16;
    o = p + incl;
    if (o > b.length || incl < 14) break;
    const ethertype = b.readUInt16BE(p + 12);
    let udp: number;
    if (ethertype === 0x0800 && b[p + 14 + 9] === 17) udp = p + 14 + (b[p + 14] & 0xf) * 4;
    else if (ethertype === 0x86dd && b[p + 14 + 6] === 17) udp = p + 14 + 40;
    else continue;
    if (udp + 9 > p + incl) continue;
    out.push({ sport: b.readUInt16BE(udp), dport: b.readUInt16BE(udp + 2), length: b.readUInt16BE(udp + 4) - 8, type: b[udp + 8] });
  }
  return out;
}

/**
 * A receiver's capture of one TCP direction checked against the segments the sender's capture
 * saw: GRO merges segments before the receiver's tap, and a merged packet carries the headers of
 * one segment. Returns the bytes the merged capture stands for once its packets are split back
 * into `segments` segments (all merged packets must share one header length).
 */
export function unmergedBytes(merged: CapturedPacket[], segments: number): number {
  const big = merged.filter((p) => p.length > 1500);
  const headers = new Set(big.map((p) => p.headerLength));
  if (headers.size > 1) throw new Error(`merged packets with different header lengths: ${[...headers].join(', ')}`);
  const h = big[0]?.headerLength ?? 0;
  return merged.reduce((s, p) => s + p.length, 0) + (segments - merged.length) * h;
}
