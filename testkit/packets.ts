// Ethernet frames for BPF_PROG_TEST_RUN (which always hands the program an Ethernet frame), for
// the datapath tests and benchmarks.

export interface L4 {
  proto: number;
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
  payload?: number;
}

function l4bytes(l: L4): Buffer {
  const payload = Buffer.alloc(l.payload ?? 0, 0x61);
  if (l.proto === 6) {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(l.sport ?? 0, 0);
    h.writeUInt16BE(l.dport ?? 0, 2);
    h[12] = 5 << 4;
    h[13] = l.tcpFlags ?? 0x10;
    return Buffer.concat([h, payload]);
  }
  if (l.proto === 17) {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(l.sport ?? 0, 0);
    h.writeUInt16BE(l.dport ?? 0, 2);
    h.writeUInt16BE(8 + payload.length, 4);
    return Buffer.concat([h, payload]);
  }
  if (l.proto === 1 || l.proto === 58) {
    const h = Buffer.alloc(8);
    h[0] = l.icmpType ?? 8;
    h[1] = l.icmpCode ?? 0;
    h.writeUInt16BE(l.icmpId ?? 0, 4);
    return Buffer.concat([h, payload]);
  }
  return payload;
}

function eth(type: number, l3: Buffer): Buffer {
  const h = Buffer.alloc(14);
  h.fill(0x02, 0, 12);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, l3]);
}

function v4addr(s: string): Buffer {
  return Buffer.from(s.split('.').map(Number));
}

function v6addr(s: string): Buffer {
  const [head, tail] = s.split('::');
  const parts = (x: string | undefined): number[] => (x ? x.split(':').map((p) => parseInt(p, 16)) : []);
  const h = parts(head), t = parts(tail);
  const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(g, 2 * i));
  return b;
}

/** IPv4 frame. options: extra option bytes (multiple of 4); fragOffset in 8-byte units. */
export function ipv4(src: string, dst: string, l4: L4, opts: { options?: number; fragOffset?: number; moreFragments?: boolean } = {}): Buffer {
  const body = opts.fragOffset ? Buffer.alloc(l4.payload ?? 8, 0x61) : l4bytes(l4);
  const optLen = opts.options ?? 0;
  const h = Buffer.alloc(20 + optLen, 0x01); // NOP options
  h[0] = 0x40 | ((20 + optLen) / 4);
  h[1] = 0;
  h.writeUInt16BE(20 + optLen + body.length, 2);
  h.writeUInt16BE(0x1234, 4);
  h.writeUInt16BE(((opts.moreFragments ? 1 : 0) << 13) | (opts.fragOffset ?? 0), 6);
  h[8] = 64;
  h[9] = l4.proto;
  h.writeUInt16BE(0, 10);
  v4addr(src).copy(h, 12);
  v4addr(dst).copy(h, 16);
  return eth(0x0800, Buffer.concat([h, body]));
}

/** IPv6 frame with optional extension headers (next-header numbers, 8 bytes each; 44 = fragment). */
export function ipv6(src: string, dst: string, l4: L4, opts: { ext?: number[]; fragOffset?: number } = {}): Buffer {
  const body = opts.fragOffset ? Buffer.alloc(l4.payload ?? 8, 0x61) : l4bytes(l4);
  const chain = opts.ext ?? [];
  const exts: Buffer[] = chain.map((type, i) => {
    const e = Buffer.alloc(8);
    e[0] = i + 1 < chain.length ? chain[i + 1] : l4.proto;
    if (type === 44) e.writeUInt16BE((opts.fragOffset ?? 0) << 3, 2);
    else if (type === 51) e[1] = 0; // AH: (0 + 2) * 4 = 8 bytes
    else e[1] = 0; // (0 + 1) * 8 = 8 bytes
    return e;
  });
  const payload = Buffer.concat([...exts, body]);
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(payload.length, 4);
  h[6] = chain.length ? chain[0] : l4.proto;
  h[7] = 64;
  v6addr(src).copy(h, 8);
  v6addr(dst).copy(h, 24);
  return eth(0x86dd, Buffer.concat([h, payload]));
}

/** A deterministic PRNG (mulberry32) so a failing fuzz case can be reproduced from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
