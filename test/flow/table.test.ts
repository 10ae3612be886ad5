// The flat flow store: the key table against a Map under random churn (inserts, finds, removes
// with backward shifting, growth), for IPv4 and IPv6 keys; shared attributions freed with their
// last flow.
import { describe, expect, it } from 'vitest';
import { Attributor } from '../../src/attribution/attributor';
import { AttributionStore } from '../../src/flow/attributions';
import { flowStateBytes, indexEntries, SLOT_BYTES_V4, SLOT_BYTES_V6 } from '../../src/flow/budget';
import { FlowTable, KeyScratch } from '../../src/flow/table';
import { conn } from './builders';
import { harness } from './harness';

let seed = 12345;
const rnd = (n: number): number => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return ((seed >>> 4) ^ (seed << 7)) % n >>> 0;
};

function keyText(family: 4 | 6, i: number): string {
  const n = family === 4 ? 16 : 40;
  // Keys that differ only in a few bytes (ports), like a port scan's.
  let s = '';
  for (let j = 0; j < n; j++) s += String.fromCharCode(j === n - 8 ? i & 0xff : j === n - 7 ? (i >>> 8) & 0xff : j === n - 6 ? (i >>> 16) & 0xff : 7);
  return s;
}

describe('FlowTable', () => {
  for (const family of [4, 6] as const) {
    it(`agrees with a Map under random churn, growing from 16 slots (IPv${family})`, () => {
      const t = new FlowTable(family === 4 ? 4 : 10, 16);
      const ref = new Map<string, number>();
      const k = new KeyScratch();
      for (let op = 0; op < 60_000; op++) {
        const id = keyText(family, rnd(5000));
        k.fromId(id);
        const slot = t.find(k);
        expect(slot).toBe(ref.get(id) ?? -1);
        if (slot < 0) {
          const s = t.insert(k);
          expect(t.keyId(s)).toBe(id);
          ref.set(id, s);
        } else if (rnd(3) === 0) {
          t.remove(slot);
          ref.delete(id);
        }
        expect(t.size).toBe(ref.size);
      }
      // Every key still found at its slot; the bytes read back.
      for (const [id, s] of ref) {
        k.fromId(id);
        expect(t.find(k)).toBe(s);
        expect(t.keyByte(s, 0)).toBe(id.charCodeAt(0));
      }
      // Emptied completely, nothing is found and slots are reused (no growth past the peak).
      const slots = t.slots;
      for (const [id, s] of ref) {
        t.remove(s);
        k.fromId(id);
        expect(t.find(k)).toBe(-1);
      }
      expect(t.size).toBe(0);
      for (let i = 0; i < 100; i++) {
        k.fromId(keyText(family, 1_000_000 + i));
        t.insert(k);
      }
      expect(t.slots).toBe(slots);
    });
  }

  it('loads a key from bytes and from its id alike', () => {
    const a = new KeyScratch(), b = new KeyScratch();
    const id = keyText(6, 4242);
    a.fromId(id);
    b.fromBytes(Buffer.from(id, 'latin1'), 0, 40);
    expect([...a.words]).toEqual([...b.words]);
  });

  it('states its worst case per flow from the layout', () => {
    expect(SLOT_BYTES_V4).toBe(132);
    expect(SLOT_BYTES_V6).toBe(156);
    expect(indexEntries(1_000_000)).toBe(1 << 21);
    expect(flowStateBytes(1_000_000, 0)).toBe(1_000_000 * 132 + (1 << 21) * 4);
  });
});

describe('shared attributions', () => {
  it('one entry per endpoint and policy in use, freed with the last flow; a table swap leaves nothing behind', () => {
    const tables = {
      overlay: ['100.64.0.0/10'],
      peers: [{ id: 'p1', name: 'one', ip: '100.64.0.1', groups: ['all'] }, { id: 'p2', name: 'two', ip: '100.64.0.2', groups: ['all'] }],
      policies: [{ id: 'all', name: 'All', action: 'accept' as const, sources: [{ group: 'all' }], destinations: [{ group: 'all' }] }],
    };
    const h = harness({ tables, udpIdleMs: 5_000 });
    const udp = (sport: number): ReturnType<typeof conn> => conn({ src: '100.64.0.1', sport, dst: '100.64.0.2', dport: 53_000, proto: 17 });
    for (let i = 0; i < 2000; i++) h.kernel.packet(udp(10_000 + i), true);
    h.cycle({ drain: true });
    expect(h.tracker.activeFlows).toBe(2000);
    expect(h.tracker.attributionsHeld).toBe(3); // peer one, peer two, policy All
    h.attributor.swap({ ...tables, peers: [{ ...tables.peers[0], name: 'renamed' }, tables.peers[1]] });
    for (let i = 0; i < 10; i++) h.kernel.packet(udp(30_000 + i), true);
    h.cycle({ drain: true });
    expect(h.tracker.attributionsHeld).toBe(6); // and the new tables' three
    h.run(10_000); // all idle: END
    expect(h.tracker.activeFlows).toBe(0);
    expect(h.tracker.attributionsHeld).toBe(0);
  });

  it('reference counts endpoints and policies; policies of whole attributions are known by their text', () => {
    const t = new AttributionStore();
    const a = new Attributor({}).attributeIps('10.0.0.1', '10.0.0.2', 17, 1, 2);
    const s1 = t.refSource(a.source, a.user), s2 = t.refSource(a.source, a.user);
    expect(s2).toBe(s1);
    const d = t.refDestination(a.destination);
    expect(d).toBe(s1); // both UNKNOWN: one entry
    const p = t.partsOf({ ...a, ruleId: 'r1', policyName: 'one' });
    const p1 = t.refPolicy(p.policy);
    const p2 = t.refPolicy(t.partsOf({ ...a, ruleId: 'r1', policyName: 'one' }).policy);
    expect(p2).toBe(p1);
    expect(t.policy(p1)).toEqual({ id: 'r1', name: 'one' });
    expect(t.size).toBe(2);
    const d2 = t.refDestination(a.destination);
    t.unref(s1, d, p1);
    expect(t.size).toBe(2);
    t.unref(s2, d2, p2);
    expect(t.size).toBe(0);
  });
});
