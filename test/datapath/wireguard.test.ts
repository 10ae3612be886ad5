// The datapath on a real WireGuard tunnel (wireguard-go or kernel wg): per-flow packets and bytes
// in each direction must equal what crossed the interface, on both peers.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Testbed, WgEndpoint } from '../../testkit/testbed';
import { FLAG_INIT_B, FLAG_INIT_EGRESS, FLAG_UNCOUNTED } from '../../src/datapath/records';
import { AUTO_MODE, Capture, describePrivileged, killBackground, Probe, REPO, run, sleep, spawnIn, TCX, waitForLine } from '../helpers/env';
import { CapturedPacket, unmergedBytes, WgMessage } from '../helpers/pcap';

interface Entry {
  key: { family: 4 | 6; addrA: string; addrB: string; portA: number; portB: number; proto: number; kind: number; ifindex: number };
  value: { rxBytes: number; txBytes: number; rxPackets: number; txPackets: number; flags: number; firstNs: number };
}

const TRAFFIC = `${REPO}/build/testkit/traffic.js`;

function find(entries: Entry[], proto: number, port: number, family: 4 | 6): Entry {
  const hits = entries.filter((e) => e.key.proto === proto && e.key.family === family && (e.key.portA === port || e.key.portB === port));
  expect(hits, `flows with proto ${proto} port ${port} v${family}`).toHaveLength(1);
  return hits[0];
}

function initiator(e: Entry): string {
  return e.value.flags & FLAG_INIT_B ? e.key.addrB : e.key.addrA;
}

/** Packets and IP bytes in the capture, split by who sent them. */
function witness(pkts: CapturedPacket[], local: string, remote: string, proto: number, port: number): { tx: [number, number]; rx: [number, number] } {
  const tx: [number, number] = [0, 0], rx: [number, number] = [0, 0];
  for (const p of pkts) {
    if (p.proto !== proto || (port && p.sport !== port && p.dport !== port)) continue;
    if (p.src === local && p.dst === remote) { tx[0]++; tx[1] += p.length; }
    if (p.src === remote && p.dst === local) { rx[0]++; rx[1] += p.length; }
  }
  return { tx, rx };
}

/**
 * The length of the data message that carries an IP packet of len bytes on kernel WireGuard: the
 * packet padded to a multiple of 16 (never beyond the MTU), plus the 16-byte header and 16-byte tag.
 */
function wgDataMessageLength(len: number, mtu: number): number {
  const last = len > mtu ? len % mtu : len;
  return len - last + Math.min(mtu, Math.ceil(last / 16) * 16) + 32;
}

function sums(entries: Entry[]): { rxBytes: number; txBytes: number; rxPackets: number; txPackets: number } {
  const s = { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 };
  for (const e of entries) {
    s.rxBytes += e.value.rxBytes; s.txBytes += e.value.txBytes;
    s.rxPackets += e.value.rxPackets; s.txPackets += e.value.txPackets;
  }
  return s;
}

describePrivileged('datapath on a real WireGuard tunnel', () => {
  let tb: Testbed;
  let a: WgEndpoint, b: WgEndpoint;
  let pa: Probe, pb: Probe;

  beforeAll(async () => {
    tb = new Testbed();
    ({ a, b } = tb.wgPair());
    tb.segmentedEgress(a);
    tb.segmentedEgress(b);
    pa = await Probe.start(a.ns);
    pb = await Probe.start(b.ns);
    await pa.call('attach', { ifname: a.ifname });
    await pb.call('attach', { ifname: b.ifname });
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]); // handshake
  });

  afterAll(async () => {
    await pa?.stop();
    await pb?.stop();
    await killBackground();
    await tb?.destroy();
  });

  /**
   * Interface counters and flows of one peer taken together: counters, flows, counters again,
   * retried until the two counter reads agree, so no stray packet falls between the reads.
   */
  async function snapshot(end: WgEndpoint, probe: Probe) {
    for (;;) {
      const c = Testbed.counters(end.ns, end.ifname);
      const flows = await probe.call<Entry[]>('flows');
      const again = Testbed.counters(end.ns, end.ifname);
      if (JSON.stringify(c) === JSON.stringify(again)) return { c, flows };
    }
  }

  const KERNEL = (): boolean => tb.impl === 'kernel';

  /** The packets that left end's interface in its own capture (its overlay addresses as source). */
  const egress = (cap: CapturedPacket[], end: WgEndpoint): CapturedPacket[] => cap.filter((p) => p.src === end.ip4 || p.src === end.ip6);
  const total = (ps: Array<{ length: number }>): number => ps.reduce((s, p) => s + p.length, 0);

  /**
   * Run traffic with captures on both ends and interface counters around it; return everything.
   * On kernel WireGuard the underlay is captured too: there the interface counters count the
   * WireGuard messages (padded packet + 32 bytes, keepalives, handshakes), not IP packets.
   */
  async function observe(traffic: () => Promise<void>) {
    const [ca, cb] = [await Capture.start(a.ns, a.ifname), await Capture.start(b.ns, b.ifname)];
    const cu = KERNEL() ? await Capture.start(a.ns, a.underlay) : null;
    const [sa0, sb0] = [await snapshot(a, pa), await snapshot(b, pb)];
    const before = { a: sa0.c, b: sb0.c, fa: sums(sa0.flows), fb: sums(sb0.flows) };
    await traffic();
    await sleep(300);
    const [sa1, sb1] = [await snapshot(a, pa), await snapshot(b, pb)];
    const after = { a: sa1.c, b: sb1.c, fa: sa1.flows, fb: sb1.flows };
    const [capA, capB] = [await ca.stop(), await cb.stop()];
    const wire: WgMessage[] = cu ? await cu.stopUnderlay() : [];
    const sides = [['A', a, b, before.a, after.a, before.fa, sums(after.fa), capA, capB], ['B', b, a, before.b, after.b, before.fb, sums(after.fb), capB, capA]] as const;
    for (const [side, end, peer, c0, c1, f0, f1, own, peerCap] of sides) {
      const flows = { side, rxB: f1.rxBytes - f0.rxBytes, txB: f1.txBytes - f0.txBytes, rxP: f1.rxPackets - f0.rxPackets, txP: f1.txPackets - f0.txPackets };
      const counters = { side, rxB: c1.rxBytes - c0.rxBytes, txB: c1.txBytes - c0.txBytes, rxP: c1.rxPackets - c0.rxPackets, txP: c1.txPackets - c0.txPackets };
      const drops = c1.txDropped - c0.txDropped + c1.rxDropped - c0.rxDropped;
      if (!KERNEL()) {
        // wireguard-go counts IP packets: all flows together account for exactly what the interface counted.
        expect({ ...flows, drops: 0 }).toEqual({ ...counters, drops });
        continue;
      }
      // Kernel WireGuard counts WireGuard messages: exactly the UDP payloads on the underlay, each way.
      const sent = wire.filter((m) => m.sport === end.port && m.dport === peer.port);
      const got = wire.filter((m) => m.sport === peer.port && m.dport === end.port);
      expect({ ...counters, drops }).toEqual({ side, rxB: total(got), txB: total(sent), rxP: got.length, txP: sent.length, drops: 0 });
      // Every data message but a keepalive (32 bytes) carries one IP packet that left the interface,
      // segment by segment (segmentedEgress): its length padded to 16, plus 32.
      const mtu = Testbed.mtu(end.ns, end.ifname);
      const out = egress(own, end), into = egress(peerCap, peer);
      const data = (ms: WgMessage[]) => ms.filter((m) => m.type === 4 && m.length > 32);
      expect({ side, messages: data(sent).length, bytes: total(data(sent)) })
        .toEqual({ side, messages: out.length, bytes: out.reduce((s, p) => s + wgDataMessageLength(p.length, mtu), 0) });
      expect({ side, messages: data(got).length, bytes: total(data(got)) })
        .toEqual({ side, messages: into.length, bytes: into.reduce((s, p) => s + wgDataMessageLength(p.length, mtu), 0) });
      // All flows together account for exactly those packets: sent, and received (what the peer sent).
      expect(flows).toEqual({ side, rxB: total(into), txB: total(out), rxP: into.length, txP: out.length });
    }
    return { fa: after.fa, fb: after.fb, capA, capB };
  }

  /**
   * Packets and IP bytes of one flow as end sent and received them. A capture sees GRO super-packets
   * on kernel WireGuard's receive path, so there what end received is what the peer sent.
   */
  function witnessOf(own: CapturedPacket[], peerCap: CapturedPacket[], local: string, remote: string, proto: number, port: number) {
    const w = witness(own, local, remote, proto, port);
    return KERNEL() ? { tx: w.tx, rx: witness(peerCap, remote, local, proto, port).tx } : w;
  }

  for (const family of [4, 6] as const) {
    it(`TCP over IPv${family}: a 4 MB transfer (GSO at egress) matches the capture on both peers`, async () => {
      const port = 5000 + family;
      const srv = spawnIn(b.ns, 'node', [TRAFFIC, 'tcp-server', String(port)]);
      await waitForLine(srv, /ready/);
      const dst = family === 4 ? b.ip4 : b.ip6;
      const { fa, fb, capA, capB } = await observe(async () => {
        await run(a.ns, 'node', [TRAFFIC, 'tcp-client', dst, String(port), String(4 << 20)]);
      });
      srv.kill('SIGKILL');
      const [la, lb] = family === 4 ? [a.ip4, b.ip4] : [a.ip6, b.ip6];
      const ea = find(fa, 6, port, family), eb = find(fb, 6, port, family);
      const wa = witnessOf(capA, capB, la, lb, 6, port), wb = witnessOf(capB, capA, lb, la, 6, port);
      expect(wa.tx[1]).toBeGreaterThan(4 << 20);
      expect([ea.value.txPackets, ea.value.txBytes, ea.value.rxPackets, ea.value.rxBytes]).toEqual([...wa.tx, ...wa.rx]);
      expect([eb.value.txPackets, eb.value.txBytes, eb.value.rxPackets, eb.value.rxBytes]).toEqual([...wb.tx, ...wb.rx]);
      if (KERNEL()) {
        // What each receiver's tap saw (GRO super-packets) is exactly the sender's segments merged.
        const merged = (cap: CapturedPacket[], from: string, to: string) => cap.filter((p) => p.proto === 6 && p.src === from && p.dst === to && (p.sport === port || p.dport === port));
        expect(unmergedBytes(merged(capB, la, lb), wa.tx[0])).toBe(wa.tx[1]);
        expect(unmergedBytes(merged(capA, lb, la), wb.tx[0])).toBe(wb.tx[1]);
        // B really received super-packets (GRO), and wgflow counted them segment by segment.
        expect(merged(capB, la, lb).length).toBeLessThan(wa.tx[0]);
      }
      // A initiated: its first packet left A's interface and arrived over B's.
      expect(initiator(ea)).toBe(la);
      expect(initiator(eb)).toBe(la);
      expect(ea.value.flags & FLAG_INIT_EGRESS).toBeTruthy();
      expect(eb.value.flags & FLAG_INIT_EGRESS).toBeFalsy();
      // Both saw SYN and FIN each way.
      expect(ea.value.flags & 0x03).toBe(0x03);
      expect((ea.value.flags >> 8) & 0x03).toBe(0x03);
    });

    it(`UDP over IPv${family}: 50 echoed datagrams of 1000 bytes, exact counts`, async () => {
      const port = 5100 + family;
      const srv = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-echo', String(port)]);
      await waitForLine(srv, /ready/);
      const dst = family === 4 ? b.ip4 : b.ip6;
      const { fa, fb } = await observe(async () => {
        await run(a.ns, 'node', [TRAFFIC, 'udp-client', dst, String(port), '50', '1000']);
      });
      srv.kill('SIGKILL');
      const size = 1000 + 8 + (family === 4 ? 20 : 40);
      const ea = find(fa, 17, port, family), eb = find(fb, 17, port, family);
      expect([ea.value.txPackets, ea.value.txBytes, ea.value.rxPackets, ea.value.rxBytes]).toEqual([50, 50 * size, 50, 50 * size]);
      expect([eb.value.txPackets, eb.value.txBytes, eb.value.rxPackets, eb.value.rxBytes]).toEqual([50, 50 * size, 50, 50 * size]);
      expect(initiator(ea)).toBe(family === 4 ? a.ip4 : a.ip6);
      expect(initiator(eb)).toBe(family === 4 ? a.ip4 : a.ip6);
      expect(eb.value.flags & FLAG_INIT_EGRESS).toBeFalsy();
    });

    it(`ICMP${family === 6 ? 'v6' : ''} echo: request and reply in one flow, keyed by identifier`, async () => {
      const dst = family === 4 ? b.ip4 : b.ip6;
      const { fa, fb } = await observe(async () => {
        await run(a.ns, 'ping', [family === 4 ? '-4' : '-6', '-c', '5', '-i', '0.2', dst]);
      });
      const proto = family === 4 ? 1 : 58;
      const typeCode = family === 4 ? 8 << 8 : 128 << 8;
      const size = family === 4 ? 84 : 104;
      const pick = (es: Entry[]) => es.filter((e) => e.key.proto === proto && e.key.family === family && e.key.portB === typeCode && e.value.firstNs > 0)
        .sort((x, y) => y.value.firstNs - x.value.firstNs)[0];
      const ea = pick(fa), eb = pick(fb);
      expect(ea.key.kind).toBe(1);
      expect([ea.value.txPackets, ea.value.txBytes, ea.value.rxPackets, ea.value.rxBytes]).toEqual([5, 5 * size, 5, 5 * size]);
      expect([eb.value.txPackets, eb.value.txBytes, eb.value.rxPackets, eb.value.rxBytes]).toEqual([5, 5 * size, 5, 5 * size]);
      expect(initiator(ea)).toBe(family === 4 ? a.ip4 : a.ip6);
      expect(initiator(eb)).toBe(family === 4 ? a.ip4 : a.ip6);
    });
  }

  it('one flow updated by several CPUs at once (both peers blasting, pinned to different CPUs): counts still exact', async () => {
    // On each peer the flow's entry is updated by the sender's CPU (egress) and by the receive path
    // (ingress: kernel WireGuard's decryption workers run on every CPU; wireguard-go's goroutines
    // too) at the same time: the atomic adds must lose nothing.
    const [pa0, pb0] = [7301, 7302];
    const N = 4000, SIZE = 400;
    const cpus = (await run(a.ns, 'nproc', [])).trim();
    const last = Math.max(0, Number(cpus) - 1);
    // The witness is the capture alone, not the interface counters: at this rate a device queue may
    // drop a packet after TC and the capture tap saw it (wireguard-go's tun counts it in tx_dropped).
    const [ca, cb] = [await Capture.start(a.ns, a.ifname), await Capture.start(b.ns, b.ifname)];
    const sa = spawnIn(a.ns, 'taskset', ['-c', '0', 'node', TRAFFIC, 'udp-blast', b.ip4, String(pb0), String(pa0), String(N), String(SIZE)]);
    const sb = spawnIn(b.ns, 'taskset', ['-c', String(last), 'node', TRAFFIC, 'udp-blast', a.ip4, String(pa0), String(pb0), String(N), String(SIZE)]);
    await Promise.all([waitForLine(sa, /ready/), waitForLine(sb, /ready/)]);
    sa.stdin?.write('go\n');
    sb.stdin?.write('go\n');
    const lines = await Promise.all([waitForLine(sa, /"sent"/, 60_000), waitForLine(sb, /"sent"/, 60_000)]);
    expect(lines.map((l) => (JSON.parse(l) as { sent: number }).sent)).toEqual([N, N]);
    await sleep(300);
    const [capA, capB] = [await ca.stop(), await cb.stop()];
    const [fa, fb] = [await pa.call<Entry[]>('flows'), await pb.call<Entry[]>('flows')];
    const ea = find(fa, 17, pa0, 4), eb = find(fb, 17, pb0, 4);
    const wa = witnessOf(capA, capB, a.ip4, b.ip4, 17, pa0), wb = witnessOf(capB, capA, b.ip4, a.ip4, 17, pb0);
    const size = SIZE + 28;
    expect([wa.tx[0], wb.tx[0]]).toEqual([N, N]);
    expect([ea.value.txPackets, ea.value.txBytes, ea.value.rxPackets, ea.value.rxBytes]).toEqual([...wa.tx, ...wa.rx]);
    expect([eb.value.txPackets, eb.value.txBytes, eb.value.rxPackets, eb.value.rxBytes]).toEqual([...wb.tx, ...wb.rx]);
    expect([ea.value.txBytes, eb.value.txBytes]).toEqual([N * size, N * size]);
  });

  it('byte counting off: flows still appear with zero counters; back on mid-flow: counting resumes in the same flow', async () => {
    const port = 5200;
    const srv = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-echo', String(port)]);
    await waitForLine(srv, /ready/);
    await pa.call('counting', { on: false });
    try {
      await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, String(port), '10', '100', '41000']);
      await sleep(100);
      const off = find(await pa.call<Entry[]>('flows'), 17, port, 4);
      expect([off.value.txPackets, off.value.txBytes, off.value.rxPackets, off.value.rxBytes]).toEqual([0, 0, 0, 0]);
      expect(off.value.flags & FLAG_UNCOUNTED).toBeTruthy();
      const starts = (await pa.call<Array<{ type: number; key: Entry['key'] }>>('records')).filter((r) => r.type === 1 && r.key.proto === 17 && (r.key.portA === port || r.key.portB === port));
      expect(starts).toHaveLength(1);
    } finally {
      await pa.call('counting', { on: true });
    }
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, String(port), '10', '100', '41000']);
    await sleep(100);
    const on = find(await pa.call<Entry[]>('flows'), 17, port, 4);
    expect([on.value.txPackets, on.value.txBytes, on.value.rxPackets, on.value.rxBytes]).toEqual([10, 1280, 10, 1280]);
    const starts = (await pa.call<Array<{ type: number; key: Entry['key'] }>>('records')).filter((r) => r.type === 1 && r.key.proto === 17 && (r.key.portA === port || r.key.portB === port));
    expect(starts, 'no second START for the same flow').toHaveLength(0);
    srv.kill('SIGKILL');
  });

  it('refuses a second attach to the same interface, and detach leaves nothing attached', async () => {
    await expect(pa.call('attach', { ifname: a.ifname })).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(pa.call('attach', { ifname: 'nosuch0' })).rejects.toThrow(/nosuch0 does not exist/);
    const att = await pa.call<Array<{ name: string; mode: string }>>('attachments');
    expect(att).toEqual([expect.objectContaining({ name: a.ifname, mode: AUTO_MODE, l3Offset: 0 })]);
    await pa.call('detach', { ifname: a.ifname });
    expect(await pa.call('attachments')).toEqual([]);
    const snap = sums(await pa.call<Entry[]>('flows'));
    await run(a.ns, 'ping', ['-c', '3', '-i', '0.2', b.ip4]);
    expect(sums(await pa.call<Entry[]>('flows'))).toEqual(snap);
    // clsact mode: a filter shows in tc while attached, and is gone after detach.
    await pa.call('attach', { ifname: a.ifname, mode: 'clsact' });
    expect(await run(a.ns, 'tc', ['filter', 'show', 'dev', a.ifname, 'egress'])).toMatch(/wgflow_egress/);
    await pa.call('detach', { ifname: a.ifname });
    expect(await run(a.ns, 'tc', ['filter', 'show', 'dev', a.ifname, 'egress'])).not.toMatch(/wgflow/);
    expect(await run(a.ns, 'tc', ['filter', 'show', 'dev', a.ifname, 'ingress'])).not.toMatch(/wgflow/);
    await pa.call('attach', { ifname: a.ifname });
  });

  it('a killed process leaves nothing attached (TCX); a clsact filter left behind is replaced by the next attach', async () => {
    // By id: a program closed by an earlier test may still be on its way out (freed after an RCU
    // grace period), so counting by name would race.
    const ids = async (): Promise<Set<number>> => new Set((JSON.parse(await run(null, 'bpftool', ['-j', 'prog', 'show'])) as Array<{ id: number; name?: string }>)
      .filter((p) => p.name === 'wgflow_ingress').map((p) => p.id));
    const mode = TCX ? 'tcx' : 'clsact';
    const before = await ids();
    const p = await Probe.start(b.ns);
    await p.call('attach', { ifname: b.ifname, mode });
    const its = [...(await ids())].filter((id) => !before.has(id));
    expect(its).toHaveLength(1);
    p.child.kill('SIGKILL');
    await new Promise((r) => p.child.once('exit', r));
    if (TCX) {
      // Freed asynchronously (RCU): wait for it to go.
      let left = (await ids()).has(its[0]);
      for (let i = 0; i < 50 && left; i++) {
        await sleep(100);
        left = (await ids()).has(its[0]);
      }
      expect(left, `program ${its[0]} is still loaded after the process was killed`).toBe(false);
    }
    // Whatever the mode, a new process can attach cleanly and its detach leaves no filter.
    const q = await Probe.start(b.ns);
    await q.call('attach', { ifname: b.ifname, mode: 'clsact' });
    await q.call('detach', { ifname: b.ifname });
    expect(await run(b.ns, 'tc', ['filter', 'show', 'dev', b.ifname, 'ingress'])).not.toMatch(/wgflow/);
    await q.stop();
  });
});
