// The parser through BPF_PROG_TEST_RUN: known packets give known flows; 100,000+ malformed
// packets crash nothing and every packet is accounted exactly once (a flow, malformed, or non-IP).
import { afterEach, beforeEach, expect, it } from 'vitest';
import { Datapath } from '../../src/datapath/datapath';
import { FlowEntry, FlowKind, FLAG_START_LOST } from '../../src/datapath/records';
import { describePrivileged } from '../helpers/env';
import { ipv4, ipv6, prng } from '../helpers/packets';

const ING = 'wgflow_ingress_eth';
const EGR = 'wgflow_egress_eth';
const TC_ACT_UNSPEC = -1;

describePrivileged('BPF parser (BPF_PROG_TEST_RUN)', () => {
  let dp: Datapath;
  beforeEach(() => {
    dp = Datapath.open({ maxFlows: 262_144, maxFlowsV6: 262_144, ringBytes: 1 << 16 });
  });
  afterEach(() => dp.close());

  const only = async (): Promise<FlowEntry> => {
    const flows = (await dp.readFlows()).slice();
    expect(flows).toHaveLength(1);
    return flows[0];
  };

  it('IPv4 with options: ports are found after the options', async () => {
    dp.testRun(ING, ipv4('10.0.0.2', '10.0.0.1', { proto: 6, sport: 40000, dport: 443, tcpFlags: 0x02 }, { options: 12 }));
    const f = await only();
    expect(f.key).toMatchObject({ family: 4, addrA: '10.0.0.1', addrB: '10.0.0.2', portA: 443, portB: 40000, proto: 6, kind: FlowKind.Ports });
    expect(f.value.rxBytes).toBe(20 + 12 + 20);
  });

  it('both directions of a connection share one entry; a SYN+ACK first marks the other side as initiator', async () => {
    dp.testRun(EGR, ipv4('10.0.0.1', '10.0.0.2', { proto: 6, sport: 443, dport: 40000, tcpFlags: 0x12 }));
    dp.testRun(ING, ipv4('10.0.0.2', '10.0.0.1', { proto: 6, sport: 40000, dport: 443, tcpFlags: 0x10 }));
    const f = await only();
    expect([f.value.rxPackets, f.value.txPackets]).toEqual([1, 1]);
    // The SYN+ACK left through the interface, so the initiator (10.0.0.2, endpoint b) is remote: INGRESS.
    expect(f.value.flags & (1 << 17)).toBeTruthy();
    expect(f.value.flags & (1 << 16)).toBeFalsy();
  });

  it('non-first IPv4 fragments keep their bytes in a fragment flow (ports 0)', async () => {
    dp.testRun(ING, ipv4('10.0.0.2', '10.0.0.1', { proto: 17, payload: 1000 }, { fragOffset: 185 }));
    const f = await only();
    expect(f.key).toMatchObject({ portA: 0, portB: 0, proto: 17, kind: FlowKind.Fragment });
    expect(f.value.rxBytes).toBe(1020);
    expect(dp.stats().fragments).toBe(1);
  });

  it('IPv6 extension headers are walked to the transport header', async () => {
    dp.testRun(ING, ipv6('fd00::2', 'fd00::1', { proto: 6, sport: 5000, dport: 22, tcpFlags: 0x02 }, { ext: [0, 60, 43] }));
    const f = await only();
    expect(f.key).toMatchObject({ family: 6, addrA: 'fd00::1', addrB: 'fd00::2', portA: 22, portB: 5000, proto: 6, kind: FlowKind.Ports });
  });

  it('IPv6: a non-first fragment is a fragment flow; a chain longer than the walk keeps its bytes by address', async () => {
    dp.testRun(ING, ipv6('fd00::2', 'fd00::1', { proto: 17, payload: 64 }, { ext: [44], fragOffset: 100 }));
    dp.testRun(ING, ipv6('fd00::3', 'fd00::1', { proto: 17, sport: 1, dport: 2 }, { ext: [0, 60, 60, 60, 60, 60, 60, 60] }));
    const flows = (await dp.readFlows()).slice();
    const frag = flows.find((f) => f.key.addrB === 'fd00::2');
    const deep = flows.find((f) => f.key.addrB === 'fd00::3');
    expect(frag?.key).toMatchObject({ proto: 17, kind: FlowKind.Fragment, portA: 0, portB: 0 });
    expect(deep?.key).toMatchObject({ proto: 60, kind: FlowKind.Other, portA: 0, portB: 0 });
    expect(deep?.value.rxBytes).toBe(40 + 8 * 8 + 8);
  });

  it('ICMP echo request and reply share a flow; separate identifiers are separate flows', async () => {
    dp.testRun(EGR, ipv4('10.0.0.1', '10.0.0.2', { proto: 1, icmpType: 8, icmpId: 7, payload: 56 }));
    dp.testRun(ING, ipv4('10.0.0.2', '10.0.0.1', { proto: 1, icmpType: 0, icmpId: 7, payload: 56 }));
    dp.testRun(EGR, ipv4('10.0.0.1', '10.0.0.2', { proto: 1, icmpType: 8, icmpId: 8, payload: 56 }));
    dp.testRun(ING, ipv6('fd00::2', 'fd00::1', { proto: 58, icmpType: 1, icmpCode: 4 }));
    const flows = (await dp.readFlows()).slice();
    expect(flows).toHaveLength(3);
    const id7 = flows.find((f) => f.key.portA === 7);
    expect(id7?.key).toMatchObject({ kind: FlowKind.Icmp, portB: 8 << 8 });
    expect([id7?.value.txPackets, id7?.value.rxPackets]).toEqual([1, 1]);
    expect(flows.find((f) => f.key.family === 6)?.key).toMatchObject({ kind: FlowKind.Icmp, portA: 0, portB: (1 << 8) | 4 });
  });

  it('GSO super-packets count as the segments that cross the wire', async () => {
    // One 3-segment skb: 20 (IP) + 20 (TCP) + 3 * 1000 payload; the wire carries 3 * (40 + 1000).
    dp.testRun(EGR, ipv4('10.0.0.1', '10.0.0.2', { proto: 6, sport: 1, dport: 2, payload: 3000 }), { gsoSegs: 3, gsoSize: 1000 });
    const f = await only();
    expect([f.value.txPackets, f.value.txBytes]).toEqual([3, 3 * 1040]);
  });

  it('a truncated transport header is counted as malformed, not as a flow', async () => {
    const pkt = ipv4('10.0.0.2', '10.0.0.1', { proto: 6, sport: 1, dport: 2 }).subarray(0, 14 + 20 + 10);
    dp.testRun(ING, pkt);
    expect((await dp.readFlows()).slice()).toHaveLength(0);
    expect(dp.stats()).toMatchObject({ malformed: 1, malformedBytes: 30 });
  });

  it('a full ring buffer is counted, and the flow says its START was lost', async () => {
    const small = Datapath.open({ maxFlows: 1024, ringBytes: 4096 });
    try {
      for (let i = 0; i < 200; i++) small.testRun(ING, ipv4('10.1.0.2', '10.1.0.1', { proto: 17, sport: 1000 + i, dport: 53 }));
      const flows = (await small.readFlows()).slice();
      const lost = flows.filter((f) => f.value.flags & FLAG_START_LOST).length;
      expect(flows).toHaveLength(200);
      expect(lost).toBeGreaterThan(0);
      expect(small.stats().ringbufFull).toBe(lost);
      expect((await small.poll(0)).length).toBe(200 - lost);
    } finally {
      small.close();
    }
  });

  it('a full flow map counts the packets it could not store', async () => {
    const small = Datapath.open({ maxFlows: 16, ringBytes: 1 << 16 });
    try {
      for (let i = 0; i < 40; i++) small.testRun(ING, ipv4('10.1.0.2', '10.1.0.1', { proto: 17, sport: 2000 + i, dport: 53, payload: 10 }));
      const flows = (await small.readFlows()).slice();
      const s = small.stats();
      expect(flows.length + s.mapFull).toBe(40);
      expect(s.mapFull).toBeGreaterThan(0);
      expect(s.mapFullBytes).toBe(s.mapFull * 38);
    } finally {
      small.close();
    }
  });

  it('fuzz: 100,000 malformed and truncated packets are all accounted for, and none crash', async () => {
    const rnd = prng(0x5eed);
    const int = (n: number): number => Math.floor(rnd() * n);
    const addr4 = (): string => `10.${int(4)}.${int(256)}.${int(256)}`;
    // The test harness itself refuses IP frames shorter than the base IP header (EINVAL), so
    // truncation stops there; everything after it (IHL, options, L4, extension chains) is fair game.
    const cut = (pkt: Buffer): Buffer => {
      const min = 14 + (pkt.readUInt16BE(12) === 0x86dd ? 40 : pkt.readUInt16BE(12) === 0x0800 ? 20 : 0);
      return pkt.subarray(0, Math.max(min, 14 + int(pkt.length - 13)));
    };
    let sent = 0;
    const N = 100_000;
    for (let i = 0; i < N; i++) {
      let pkt: Buffer;
      const shape = i % 6;
      if (shape === 0) {
        // Random bytes behind an IPv4, IPv6 or other ethertype.
        pkt = Buffer.alloc(54 + int(120));
        for (let j = 14; j < pkt.length; j++) pkt[j] = int(256);
        pkt.writeUInt16BE([0x0800, 0x86dd, 0x0806][int(3)], 12);
        pkt = cut(pkt);
      } else if (shape === 1) {
        // IPv4 with a random IHL, total length and protocol, truncated anywhere.
        pkt = ipv4(addr4(), addr4(), { proto: [6, 17, 1, 47, int(256)][int(5)], sport: int(65536), dport: int(65536), payload: int(40) });
        pkt[14] = (pkt[14] & 0xf0) | int(16);
        if (int(2)) pkt.writeUInt16BE(int(65536), 16);
        pkt = cut(pkt);
      } else if (shape === 2) {
        // IPv6 with a deep or random extension chain, truncated anywhere.
        const chain = Array.from({ length: int(12) }, () => [0, 43, 60, 44, 51, 135, int(256)][int(7)]);
        pkt = ipv6(`fd00::${int(65536).toString(16)}`, 'fd00::1', { proto: [6, 17, 58, int(256)][int(4)], sport: int(65536), dport: int(65536) }, { ext: chain, fragOffset: int(3) ? 0 : int(8000) });
        pkt = cut(pkt);
      } else if (shape === 3) {
        // A valid IPv4 TCP/UDP/ICMP header with its bytes flipped at random.
        pkt = Buffer.from(ipv4(addr4(), addr4(), { proto: [6, 17, 1][int(3)], sport: int(65536), dport: int(65536), payload: int(20) }));
        for (let k = 0; k < 3; k++) pkt[14 + int(pkt.length - 14)] = int(256);
      } else if (shape === 4) {
        // Wrong IP version behind the ethertype.
        pkt = Buffer.from(ipv6('fd00::9', 'fd00::1', { proto: 17, sport: 1, dport: 2 }));
        pkt.writeUInt16BE(0x0800, 12);
      } else {
        // Fragments with random offsets.
        pkt = ipv4(addr4(), '10.9.9.9', { proto: 17, sport: int(65536), dport: 53, payload: int(64) }, { fragOffset: int(8192), moreFragments: !!int(2) });
      }
      const r = dp.testRun(int(2) ? ING : EGR, pkt);
      expect(r.retval).toBe(TC_ACT_UNSPEC);
      sent += 1;
    }
    const flows = (await dp.readFlows()).slice();
    const s = dp.stats();
    let inFlows = 0;
    for (const f of flows) {
      inFlows += f.value.rxPackets + f.value.txPackets;
      // Documented shapes only: known kinds; fragment/other flows carry no ports.
      expect([FlowKind.Ports, FlowKind.Icmp, FlowKind.Other, FlowKind.Fragment]).toContain(f.key.kind);
      if (f.key.kind === FlowKind.Other || f.key.kind === FlowKind.Fragment) expect([f.key.portA, f.key.portB]).toEqual([0, 0]);
    }
    expect(s.mapFull).toBe(0);
    expect(inFlows + s.malformed + s.nonIp).toBe(sent);
    expect(s.flowsCreated).toBe(flows.length);
    expect(sent).toBe(N);
  }, 120_000);
});
