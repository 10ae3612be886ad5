// Minimal pcap reader for captures of an L3 interface (tcpdump -i wg0: LINKTYPE_RAW), used as the
// independent witness of what crossed the interface.
import { readFileSync } from 'node:fs';
import { ipv6FromBytes } from '../../src/net/ip';

export interface CapturedPacket {
  family: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  sport: number;
  dport: number;
  /** Length of the IP packet on the wire (pcap orig_len). */
  length: number;
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
        family: 4, proto, length: orig,
        src: `${b[p + 12]}.${b[p + 13]}.${b[p + 14]}.${b[p + 15]}`,
        dst: `${b[p + 16]}.${b[p + 17]}.${b[p + 18]}.${b[p + 19]}`,
        sport: ports ? b.readUInt16BE(p + ihl) : 0,
        dport: ports ? b.readUInt16BE(p + ihl + 2) : 0,
      });
    } else if (ver === 6) {
      const proto = b[p + 6];
      const ports = (proto === 6 || proto === 17) && incl >= 44;
      out.push({
        family: 6, proto, length: orig,
        src: ipv6FromBytes(b, p + 8), dst: ipv6FromBytes(b, p + 24),
        sport: ports ? b.readUInt16BE(p + 40) : 0,
        dport: ports ? b.readUInt16BE(p + 42) : 0,
      });
    }
  }
  return out;
}
