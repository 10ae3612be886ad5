// The flow lifecycle state machine, driven by a model of the kernel (FakeKernel) and a manual clock.
import { describe, expect, it } from 'vitest';
import { FLAG_START_LOST, FlowKind, RecordType } from '../../src/datapath/records';
import { bootNamespace, eventUuid, flowUuid } from '../../src/flow/ids';
import { FlowTracker } from '../../src/flow/tracker';
import { conn, entry, hintRecord, icmpConn, startRecord, TCP } from './builders';
import { BOOT_ID, harness, sum } from './harness';

const UUID_V5 = /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Event ids are derived from the flow id without hashing: version 8 (docs/events.md). */
const UUID_V8 = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A full TCP exchange: handshake, data both ways, then FIN from each side. */
function tcpSession(h: ReturnType<typeof harness>, c: ReturnType<typeof conn>): void {
  h.kernel.packet(c, true, { tcpFlags: TCP.SYN, bytes: 60 });
  h.kernel.packet(c, false, { tcpFlags: TCP.SYN | TCP.ACK, bytes: 60 });
  h.kernel.packet(c, true, { tcpFlags: TCP.ACK, bytes: 52 });
  h.kernel.packet(c, true, { tcpFlags: TCP.ACK | TCP.PSH, bytes: 500 });
  h.kernel.packet(c, false, { tcpFlags: TCP.ACK | TCP.PSH, bytes: 1500, segs: 3 });
}

describe('TCP', () => {
  it('START at the first packet, END after FIN both ways plus the grace, with the totals', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 40000, dst: '100.64.0.2', dport: 443, local: true });
    const t0 = h.clock.wallMs();
    tcpSession(h, c);
    const [start] = h.cycle({ drain: true });
    expect(start).toMatchObject({
      type: 'START', direction: 'EGRESS', protocol: 6, rxPackets: 0, txPackets: 0, rxBytes: 0, txBytes: 0,
      timestampMs: t0, interfaceName: 'wg3', reporterId: 'me', countersEnabled: true,
      source: { ip: '100.64.0.1', port: 40000 }, destination: { ip: '100.64.0.2', port: 443 },
    });
    expect(start.flowId).toMatch(UUID_V5);
    expect(start.eventId).toMatch(UUID_V8);
    expect(start.eventId).toBe(eventUuid(start.flowId, 'start'));

    h.clock.advanceMs(200);
    h.kernel.packet(c, true, { tcpFlags: TCP.FIN | TCP.ACK, bytes: 52 });
    h.clock.advanceMs(10);
    h.kernel.packet(c, false, { tcpFlags: TCP.FIN | TCP.ACK, bytes: 52 });
    const finAt = h.clock.wallMs();
    h.kernel.packet(c, true, { tcpFlags: TCP.ACK, bytes: 52 }); // the last ACK, inside the grace
    expect(h.cycle()).toEqual([]);
    h.clock.advanceMs(499);
    expect(h.cycle()).toEqual([]);
    h.clock.advanceMs(1);
    const [end] = h.cycle();
    expect(end).toMatchObject({ type: 'END', endReason: 'tcp_fin', flowId: start.flowId, direction: 'EGRESS', timestampMs: finAt + 500 });
    // Local initiator: its packets are egress (tx). 60+52+500+52+52 sent; 60+1500+52 received in 5 packets.
    expect(end).toMatchObject({ txPackets: 5, txBytes: 716, rxPackets: 5, rxBytes: 1612, windowStartMs: t0, windowEndMs: finAt + 500 });
    expect(end.tcpFlagsInitiator).toBe(TCP.SYN | TCP.ACK | TCP.PSH | TCP.FIN);
    expect(end.tcpFlagsResponder).toBe(TCP.SYN | TCP.ACK | TCP.PSH | TCP.FIN);
    expect(end.eventId).not.toBe(start.eventId);
    expect(end.eventId).toMatch(UUID_V8);
    expect(end.eventId).toBe(eventUuid(start.flowId, 'end'));
    expect(h.kernel.entries.size).toBe(0);
    expect(h.tracker.activeFlows).toBe(0);
    expect(h.tracker.stats().ended.tcp_fin).toBe(1);
  });

  it('a peer-initiated connection is INGRESS with the peer as source; rx/tx stay the interface view', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.9', sport: 50000, dst: '100.64.0.1', dport: 22 }); // 0.9 > 0.1: initiator is b
    expect(c.initB).toBe(true);
    tcpSession(h, c);
    h.kernel.packet(c, false, { tcpFlags: TCP.RST, bytes: 40 });
    const evs = h.cycle();
    expect(evs.map((e) => e.type)).toEqual(['START', 'END']);
    const end = evs[1];
    expect(end).toMatchObject({ direction: 'INGRESS', endReason: 'tcp_rst', source: { ip: '100.64.0.9', port: 50000 }, destination: { ip: '100.64.0.1', port: 22 } });
    // The initiator's packets arrive (rx): 60+52+500; we sent 60+1500 (3 segs)+40.
    expect(end).toMatchObject({ rxPackets: 3, rxBytes: 612, txPackets: 5, txBytes: 1600 });
  });

  it('RST ends the flow at once (react to the ring hint, no drain needed)', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, local: true });
    h.kernel.packet(c, true, { tcpFlags: TCP.SYN });
    h.cycle();
    h.clock.advanceMs(50);
    h.kernel.packet(c, false, { tcpFlags: TCP.RST | TCP.ACK });
    const evs = h.cycle();
    expect(evs).toHaveLength(1);
    expect(evs[0]).toMatchObject({ type: 'END', endReason: 'tcp_rst', rxPackets: 1, txPackets: 1 });
  });

  it('half-close then silence: END idle after the half-closed timeout, not the 2 h one', () => {
    const h = harness({ tcpHalfClosedIdleMs: 120_000, updateIntervalMs: 0 });
    const c = conn({ src: '100.64.0.1', sport: 1000, dst: '100.64.0.2', dport: 80, local: true });
    tcpSession(h, c);
    h.cycle({ drain: true });
    h.kernel.packet(c, true, { tcpFlags: TCP.FIN | TCP.ACK });
    expect(h.run(119_000)).toEqual([]);
    const evs = h.run(2_000);
    expect(evs).toHaveLength(1);
    expect(evs[0]).toMatchObject({ type: 'END', endReason: 'idle', txPackets: 4, rxPackets: 4 });
  });

  it('FIN hints lost (ring full): closed from the drained TCP flags', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, local: true });
    tcpSession(h, c);
    h.cycle();
    h.kernel.ringFull = true;
    h.kernel.packet(c, true, { tcpFlags: TCP.FIN | TCP.ACK });
    h.kernel.packet(c, false, { tcpFlags: TCP.FIN | TCP.ACK });
    expect(h.cycle()).toEqual([]); // no hint
    h.clock.advanceMs(100);
    const evs = h.cycle({ drain: true }); // drain sees FIN both ways; grace counts from the last packet
    expect(evs).toEqual([]);
    const after = h.run(1000);
    expect(after).toHaveLength(1);
    expect(after[0]).toMatchObject({ type: 'END', endReason: 'tcp_fin', txPackets: 4, rxPackets: 5 });
    expect(h.tracker.stats().hintsLost).toBe(1);
  });

  it('an idle TCP connection without close ends after 2 h', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, local: true });
    tcpSession(h, c);
    h.cycle({ drain: true });
    expect(h.run(7_199_000, { stepMs: 1000 }).filter((e) => e.type === 'END')).toEqual([]);
    const evs = h.run(2_000, { stepMs: 1000 });
    expect(evs.filter((e) => e.type === 'END')).toMatchObject([{ endReason: 'idle' }]);
  });
});

describe('UDP, ICMP, other', () => {
  it('an idle UDP flow ends 30 s after its last packet', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 5000, dst: '100.64.0.2', dport: 51820, proto: 17, local: true });
    h.kernel.packet(c, true, { bytes: 200 });
    h.kernel.packet(c, false, { bytes: 300 });
    h.cycle({ drain: true });
    h.run(10_000);
    h.kernel.packet(c, true, { bytes: 200 });
    expect(h.run(29_000)).toEqual([]);
    const evs = h.run(2_000);
    expect(evs).toMatchObject([{ type: 'END', endReason: 'idle', txPackets: 2, txBytes: 400, rxPackets: 1, rxBytes: 300, protocol: 17 }]);
  });

  it('ICMP echo: type and code from the key, no ports, IPv4 and IPv6', () => {
    const h = harness();
    const v4 = icmpConn({ src: '100.64.0.1', dst: '100.64.0.2', id: 77, local: true });
    const v6 = icmpConn({ src: 'fd00::2', dst: 'fd00::1', id: 5 });
    h.kernel.packet(v4, true, { bytes: 84 });
    h.kernel.packet(v4, false, { bytes: 84 });
    h.kernel.packet(v6, true, { bytes: 104 });
    const starts = h.cycle({ drain: true });
    expect(starts).toMatchObject([
      { protocol: 1, icmpType: 8, icmpCode: 0, source: { ip: '100.64.0.1', port: 0 }, destination: { ip: '100.64.0.2', port: 0 }, direction: 'EGRESS' },
      { protocol: 58, icmpType: 128, icmpCode: 0, source: { ip: 'fd00::2', port: 0 }, destination: { ip: 'fd00::1', port: 0 }, direction: 'INGRESS' },
    ]);
    const ends = h.run(31_000);
    expect(ends.map((e) => [e.type, e.protocol, e.endReason])).toEqual([['END', 1, 'idle'], ['END', 58, 'idle']]);
  });

  it('other protocols and fragments use the other timeout; ports are 0', () => {
    const h = harness({ otherIdleMs: 5_000 });
    const gre = conn({ src: '100.64.0.1', dst: '100.64.0.2', proto: 47, local: true });
    const frag = conn({ src: '100.64.0.1', dst: '100.64.0.2', proto: 17, kind: FlowKind.Fragment, local: true });
    h.kernel.packet(gre, true);
    h.kernel.packet(frag, true, { bytes: 1400 });
    expect(h.cycle({ drain: true })).toMatchObject([{ protocol: 47, source: { port: 0 } }, { protocol: 17, source: { port: 0 } }]);
    expect(h.run(6_000).map((e) => e.endReason)).toEqual(['idle', 'idle']);
  });
});

describe('interim UPDATEs', () => {
  it('deltas per window plus the remainder add up to the END totals; windows are contiguous', () => {
    const h = harness({ updateIntervalMs: 60_000 });
    const c = conn({ src: '100.64.0.1', sport: 3000, dst: '100.64.0.2', dport: 443, local: true });
    tcpSession(h, c);
    const [start] = h.cycle({ drain: true });
    for (let s = 0; s < 250; s++) {
      h.kernel.packet(c, true, { bytes: 1000 + s });
      if (s % 3 === 0) h.kernel.packet(c, false, { bytes: 40 });
      h.run(1000);
    }
    h.kernel.packet(c, true, { tcpFlags: TCP.FIN | TCP.ACK });
    h.kernel.packet(c, false, { tcpFlags: TCP.FIN | TCP.ACK });
    h.run(1000);
    const updates = h.of('UPDATE');
    const [end] = h.of('END');
    expect(updates).toHaveLength(4); // at 60, 120, 180, 240 s
    expect(new Set(updates.map((u) => u.eventId)).size).toBe(4);
    expect(updates.every((u) => u.flowId === start.flowId)).toBe(true);
    expect(updates[0].windowStartMs).toBe(start.timestampMs);
    for (let i = 1; i < updates.length; i++) expect(updates[i].windowStartMs).toBe(updates[i - 1].windowEndMs);
    const remainder = {
      rxPackets: end.rxPackets - sum(updates).rxPackets,
      txPackets: end.txPackets - sum(updates).txPackets,
      rxBytes: end.rxBytes - sum(updates).rxBytes,
      txBytes: end.txBytes - sum(updates).txBytes,
    };
    const k = h.kernel; // everything after the last UPDATE: a positive remainder
    expect(remainder.txPackets).toBeGreaterThan(0);
    expect(k.entries.size).toBe(0);
    // The totals are exactly what the kernel counted.
    expect(end).toMatchObject({ txPackets: 3 + 250 + 1, rxPackets: 4 + 84 + 1 });
    expect(end.txBytes).toBe(60 + 52 + 500 + 250 * 1000 + (249 * 250) / 2 + 100);
    expect(sum([...updates]).txBytes + remainder.txBytes).toBe(end.txBytes);
  });

  it('a window in which nothing moved produces no UPDATE', () => {
    const h = harness({ updateIntervalMs: 10_000, udpIdleMs: 3600_000 });
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, proto: 17, local: true });
    h.kernel.packet(c, true);
    h.cycle({ drain: true });
    h.run(25_000);
    expect(h.of('UPDATE')).toHaveLength(1); // the first window carried the packet, the second was empty
    h.kernel.packet(c, true);
    h.run(10_000);
    const u = h.of('UPDATE');
    expect(u).toHaveLength(2);
    expect(u[1].windowStartMs).toBe(u[0].windowEndMs); // covers the quiet window too
    expect(u[1].txPackets).toBe(1);
  });

  it('updateIntervalMs 0 turns UPDATEs off', () => {
    const h = harness({ updateIntervalMs: 0 });
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, local: true });
    tcpSession(h, c);
    for (let i = 0; i < 200; i++) {
      h.kernel.packet(c, true);
      h.run(1000);
    }
    expect(h.of('UPDATE')).toEqual([]);
  });

  it('packet counters wrap at 2^32 in the kernel and are widened', () => {
    const h = harness({ updateIntervalMs: 0 });
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, proto: 17, local: true });
    const t0 = h.clock.nowNs;
    h.tracker.onRecords([startRecord(c, t0)]);
    h.tracker.onDrain([entry(c, { firstNs: t0, txPackets: 0xfffffff0, lastSeenNs: t0 })]);
    h.clock.advanceMs(1000);
    h.tracker.onDrain([entry(c, { firstNs: t0, txPackets: 0x10, lastSeenNs: h.clock.nowNs })]);
    h.clock.advanceMs(1000);
    const keys = h.tracker.forceEndAll();
    const [end] = h.tracker.onDeleted(keys, [entry(c, { firstNs: t0, txPackets: 0x20 }).value]);
    expect(end.txPackets).toBe(0x1_0000_0020);
  });
});

describe('discovery, adoption, ids', () => {
  it('a flow whose START was lost (ring full) is found by the drain and announced', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 9, dst: '100.64.0.2', dport: 10, proto: 17, local: true });
    h.kernel.ringFull = true;
    const t0 = h.clock.wallMs();
    h.kernel.packet(c, true);
    h.clock.advanceMs(700);
    expect(h.cycle()).toEqual([]);
    expect(h.kernel.get(c)!.flags & FLAG_START_LOST).toBeTruthy();
    const [start] = h.cycle({ drain: true });
    expect(start).toMatchObject({ type: 'START', timestampMs: t0, windowStartMs: t0, txPackets: 0 });
    expect(h.tracker.stats()).toMatchObject({ discoveredWithoutStart: 1, startLost: 1, adopted: 0 });
  });

  it('a START record read after its flow was found by a drain and ended is dropped, not a second flow', () => {
    const h = harness({ udpIdleMs: 2000 });
    const c = conn({ src: '100.64.0.1', sport: 9, dst: '100.64.0.2', dport: 10, proto: 17, local: true });
    h.kernel.packet(c, true);
    const late = h.kernel.takeRecords(); // the ring read lags: this START is not read yet
    h.clock.advanceMs(100);
    expect(h.cycle({ drain: true }).map((e) => e.type)).toEqual(['START']); // found by the drain
    h.run(4000);
    expect(h.of('END')).toHaveLength(1);
    // Now the lagging ring read delivers the flow's START record.
    expect(h.tracker.onRecords(late)).toEqual([]);
    expect(h.tracker.stats()).toMatchObject({ lateStartRecords: 1, discoveredWithoutStart: 1 });
    // A new flow on the same key after that is a flow of its own.
    h.kernel.packet(c, true);
    expect(h.cycle().map((e) => e.type)).toEqual(['START']);
  });

  it('FIN hints for a flow not yet discovered are applied when the drain finds it', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 9, dst: '100.64.0.2', dport: 10, local: true });
    h.kernel.ringFull = true;
    tcpSession(h, c);
    h.kernel.ringFull = false;
    h.kernel.packet(c, true, { tcpFlags: TCP.FIN | TCP.ACK });
    h.kernel.packet(c, false, { tcpFlags: TCP.FIN | TCP.ACK });
    expect(h.cycle()).toEqual([]);
    expect(h.tracker.stats().hintsWithoutFlow).toBe(2);
    h.clock.advanceMs(100);
    expect(h.cycle({ drain: true }).map((e) => e.type)).toEqual(['START']);
    expect(h.run(500).map((e) => [e.type, e.endReason])).toEqual([['END', 'tcp_fin']]);
  });

  it('a restarted tracker adopts kernel flows with identical flow and event ids', () => {
    const h = harness({ updateIntervalMs: 60_000 });
    const c = conn({ src: '100.64.0.1', sport: 4000, dst: '100.64.0.2', dport: 443, local: true });
    tcpSession(h, c);
    const [start1] = h.cycle({ drain: true });
    h.run(5000);
    // The daemon restarts (maps pinned): a new tracker, same boot.
    h.clock.advanceMs(3000);
    const t2 = new FlowTracker({ clock: h.clock, bootId: BOOT_ID, interfaceName: (i) => `wg${i}`, reporterId: 'me', updateIntervalMs: 60_000 });
    h.kernel.takeRecords();
    const [start2] = t2.onDrain(h.kernel.readSync());
    expect(start2).toMatchObject({ type: 'START', eventId: start1.eventId, flowId: start1.flowId, timestampMs: start1.timestampMs });
    expect(t2.stats()).toMatchObject({ adopted: 1, discoveredWithoutStart: 0 });
    // The END the new tracker produces has the id the old one would have used.
    h.kernel.packet(c, true, { tcpFlags: TCP.RST });
    const recs = h.kernel.takeRecords();
    expect(t2.onRecords(recs)).toEqual([]);
    const keys = t2.dueDeletes();
    const [end] = t2.onDeleted(keys, h.kernel.deleteSync(keys));
    const ns = bootNamespace(BOOT_ID);
    const fid = flowUuid(ns, c.key.id, h.clock.nowNs - 8_000 * 1e6 - 0);
    expect(end.flowId).toBe(start1.flowId);
    expect(end.eventId).toBe(eventUuid(fid, 'end'));
    expect(end).toMatchObject({ endReason: 'tcp_rst', txPackets: 4, rxPackets: 4 });
  });

  it('adopted flows: UPDATEs report from the adoption on, END has the kernel totals', () => {
    const h = harness({ updateIntervalMs: 60_000 });
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, proto: 17, local: true });
    for (let i = 0; i < 10; i++) h.kernel.packet(c, true);
    h.clock.advanceMs(30_000);
    const t2 = new FlowTracker({ clock: h.clock, bootId: BOOT_ID, interfaceName: () => 'wg0', updateIntervalMs: 60_000, udpIdleMs: 3600_000 });
    const adoptedAt = h.clock.wallMs();
    t2.onDrain(h.kernel.readSync());
    h.kernel.packet(c, true);
    h.clock.advanceMs(31_000);
    const [u] = t2.onDrain(h.kernel.readSync());
    expect(u).toMatchObject({ type: 'UPDATE', txPackets: 1, windowStartMs: adoptedAt });
    const keys = t2.forceEndAll();
    const [end] = t2.onDeleted(keys, h.kernel.deleteSync(keys));
    expect(end).toMatchObject({ type: 'END', endReason: 'forced', txPackets: 11 });
  });

  it('ids differ per flow, per boot and per first-packet time, and are RFC 4122 v5 text', () => {
    const ns1 = bootNamespace(BOOT_ID), ns2 = bootNamespace('00000000-0000-4000-8000-000000000000');
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2 });
    const d = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 3 });
    const ids = [flowUuid(ns1, c.key.id, 1e12), flowUuid(ns1, c.key.id, 1e12 + 1), flowUuid(ns2, c.key.id, 1e12), flowUuid(ns1, d.key.id, 1e12)];
    expect(new Set(ids.map((i) => i.text)).size).toBe(4);
    expect(flowUuid(ns1, c.key.id, 1e12).text).toBe(ids[0].text);
    for (const i of ids) expect(i.text).toMatch(UUID_V5);
    expect(new Set([eventUuid(ids[0], 'start'), eventUuid(ids[0], 'end'), eventUuid(ids[0], 'update:1')]).size).toBe(3);
  });

  it('a kernel entry that disappears without our delete is ended (forced) after two drains', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, proto: 17, local: true });
    h.kernel.packet(c, true);
    h.cycle({ drain: true });
    h.kernel.entries.clear();
    expect(h.cycle({ drain: true })).toEqual([]);
    expect(h.cycle({ drain: true })).toMatchObject([{ type: 'END', endReason: 'forced', txPackets: 1 }]);
    expect(h.tracker.stats().vanished).toBe(1);
  });

  it('drains in any order, with entries added and removed between them, update the right flows', () => {
    const h = harness({ updateIntervalMs: 0, udpIdleMs: 3600_000 });
    const conns = Array.from({ length: 60 }, (_, i) => conn({ src: '100.64.0.1', sport: 1000 + i, dst: '100.64.0.2', dport: 9, proto: 17, local: true }));
    const t0 = h.clock.nowNs;
    let rnd = 1;
    const shuffle = <T>(xs: T[]): T[] => {
      const a = [...xs];
      for (let i = a.length - 1; i > 0; i--) {
        rnd = (rnd * 48271) % 2147483647;
        const j = rnd % (i + 1);
        [a[i], a[j]] = [a[j], a[i]];
      }
      return a;
    };
    const drainOf = (cs: typeof conns, n: number) => cs.map((c) => entry(c, { firstNs: t0, txPackets: n + c.key.portA, lastSeenNs: h.clock.nowNs }));
    let live = conns.slice(0, 40);
    h.tracker.onDrain(drainOf(live, 0));
    for (let round = 1; round <= 6; round++) {
      h.clock.advanceMs(1000);
      live = shuffle(round % 2 ? live : [...live].reverse());
      if (round === 3) live = [...live.slice(5), ...conns.slice(40, 50)]; // 5 gone (ENDed after 2 drains), 10 new
      if (round === 5) live = [...conns.slice(50, 60), ...live];
      h.tracker.onDrain(drainOf(live, round * 100));
    }
    const keys = h.tracker.forceEndAll();
    const ends = h.tracker.onDeleted(keys, []);
    expect(ends).toHaveLength(live.length);
    const byPort = new Map(ends.map((e) => [e.source.port, e.txPackets]));
    for (const c of live) expect(byPort.get(c.key.portA)).toBe(600 + c.key.portA);
    expect(h.tracker.stats().vanished).toBe(5);
  });

  it('a START record for a flow the drain already announced is not announced twice', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, proto: 17, local: true });
    h.kernel.packet(c, true);
    const recs = h.kernel.takeRecords();
    expect(h.tracker.onDrain(h.kernel.readSync())).toHaveLength(1);
    expect(h.tracker.onRecords(recs)).toEqual([]);
  });
});

describe('counting off, remnants, shutdown, filters', () => {
  it('countersEnabled is false once the flow saw packets while counting was off', () => {
    const h = harness({ updateIntervalMs: 10_000 });
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, proto: 17, local: true });
    h.kernel.packet(c, true);
    const [start] = h.cycle({ drain: true });
    expect(start.countersEnabled).toBe(true);
    h.kernel.packet(c, true);
    h.kernel.counting = false;
    h.kernel.packet(c, true);
    h.kernel.packet(c, true);
    h.run(10_000);
    const [u] = h.of('UPDATE');
    expect(u).toMatchObject({ countersEnabled: false, txPackets: 2 }); // the uncounted packets are not there
    h.kernel.counting = true;
    h.kernel.packet(c, true);
    const later = h.run(31_000);
    expect(later.every((e) => !e.countersEnabled)).toBe(true);
    expect(later.filter((e) => e.type === 'END')).toMatchObject([{ countersEnabled: false, txPackets: 3 }]);
  });

  it('late packets after a TCP END are a remnant: not exported, deleted after the grace, counted', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 7000, dst: '100.64.0.2', dport: 443, local: true });
    tcpSession(h, c);
    h.kernel.packet(c, true, { tcpFlags: TCP.FIN | TCP.ACK });
    h.kernel.packet(c, false, { tcpFlags: TCP.FIN | TCP.ACK });
    h.cycle();
    h.run(600);
    expect(h.of('END')).toHaveLength(1);
    // The last ACK arrives after the delete: a new entry without SYN.
    h.kernel.packet(c, true, { tcpFlags: TCP.ACK, bytes: 52 });
    expect(h.cycle()).toEqual([]);
    h.kernel.packet(c, false, { tcpFlags: TCP.ACK, bytes: 52 });
    h.run(400);
    expect(h.kernel.entries.size).toBe(1);
    h.run(200);
    expect(h.kernel.entries.size).toBe(0);
    expect(h.of('START')).toHaveLength(1);
    expect(h.tracker.stats()).toMatchObject({ lateAfterEndFlows: 1, lateAfterEndPackets: 2, lateAfterEndBytes: 104, remnantsActive: 0 });
    // A new connection on the same ports (SYN) within the time-wait is a real flow.
    h.kernel.packet(c, true, { tcpFlags: TCP.SYN });
    expect(h.cycle().map((e) => e.type)).toEqual(['START']);
  });

  it('after the time-wait, packets without SYN are a new (mid-stream) flow again', () => {
    const h = harness({ timeWaitMs: 5_000 });
    const c = conn({ src: '100.64.0.1', sport: 7000, dst: '100.64.0.2', dport: 443, local: true });
    tcpSession(h, c);
    h.kernel.packet(c, true, { tcpFlags: TCP.RST });
    h.cycle();
    h.run(6_000);
    h.kernel.packet(c, true, { tcpFlags: TCP.ACK });
    expect(h.cycle({ drain: true }).map((e) => e.type)).toEqual(['START']);
  });

  it('forceEndAll ends every flow with reason forced (the pipeline deletes them)', () => {
    const h = harness();
    const a = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, local: true });
    const b = conn({ src: '100.64.0.1', sport: 3, dst: '100.64.0.2', dport: 4, proto: 17, local: true });
    tcpSession(h, a);
    h.kernel.packet(b, true);
    h.cycle({ drain: true });
    const keys = h.tracker.forceEndAll();
    expect(keys).toHaveLength(2);
    const ends = h.tracker.onDeleted(keys, h.kernel.deleteSync(keys));
    expect(ends.map((e) => [e.type, e.endReason])).toEqual([['END', 'forced'], ['END', 'forced']]);
    expect(ends[0]).toMatchObject({ txPackets: 3, rxPackets: 4 });
    expect(h.kernel.entries.size).toBe(0);
  });

  it('filtered flows (DNS) are tracked and deleted when idle but never exported', () => {
    const h = harness();
    const dns = conn({ src: '100.64.0.1', sport: 33333, dst: '100.64.0.53', dport: 53, proto: 17, local: true });
    h.kernel.packet(dns, true);
    h.kernel.packet(dns, false);
    expect(h.cycle({ drain: true })).toEqual([]);
    expect(h.tracker.activeFlows).toBe(1);
    expect(h.run(31_000)).toEqual([]);
    expect(h.kernel.entries.size).toBe(0);
    expect(h.tracker.stats()).toMatchObject({ filtered: 1, active: 0 });
  });

  it('snapshot() lists exported active flows with their totals, without counting events', () => {
    const h = harness();
    const a = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, local: true });
    const dns = conn({ src: '100.64.0.1', sport: 3, dst: '100.64.0.2', dport: 53, proto: 17, local: true });
    tcpSession(h, a);
    h.kernel.packet(dns, true);
    const t0 = h.clock.wallMs();
    h.cycle({ drain: true });
    const before = h.tracker.stats().events;
    const snap = h.tracker.snapshot();
    expect(snap).toHaveLength(1);
    expect(snap[0]).toMatchObject({ eventId: '', type: 'UPDATE', timestampMs: t0, txPackets: 3, rxPackets: 4, txBytes: 612, rxBytes: 1560 });
    expect(h.tracker.stats().events).toEqual(before);
  });

  it('records build helpers: hint records for RST', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 1, dst: '100.64.0.2', dport: 2, local: true });
    const t = h.clock.nowNs;
    expect(h.tracker.onRecords([startRecord(c, t), hintRecord(c, RecordType.Rst, false, t + 1)])).toHaveLength(1);
    expect(h.tracker.dueDeletes(t + 1)).toHaveLength(1);
  });
});
