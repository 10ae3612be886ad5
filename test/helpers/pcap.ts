// Minimal pcap reader for captures of an L3 interface (tcpdump -i wg0: LINKTYPE_RAW), used as the
// independent witness of what crossed the interface.
import { readFileSync } from 'node:fs';

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

function v6text(b: Buffer, o: number): string {
  const g: string[] = [];
  for (let i = 0; i < 8; i++) g.push(b.readUInt16BE(o + 2 * i).toString(16));
  // Same compression as the datapath decoder: longest run of >= 2 zero groups.
  let bestAt = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) { bestAt = i; bestLen = j - i; }
    i = j;
  }
  return bestAt < 0 ? g.join(':') : `${g.slice(0, bestAt).join(':')}::${g.slice(bestAt + bestLen).join(':')}`;
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
        src: v6text(b, p + 8), dst: v6text(b, p + 24),
        sport: ports ? b.readUInt16BE(p + 40) : 0,
        dport: ports ? b.readUInt16BE(p + 42) : 0,
      });
    }
  }
  return out;
}
