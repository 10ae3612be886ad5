// The flow engine's events reach the wire as bytes (ids, addresses, endpoints without text): the
// encoding is the same, byte for byte, as that of the same event as plain data (the text path),
// for every shape the engine makes. And they serialize to JSON with every field.
import { describe, expect, it } from 'vitest';
import { eventBytes, type FlowEvent } from '../../src/model/event';
import { toJsonLine } from '../../src/model/json';
import { writeFlowEvent } from '../../src/wire/writer';
import { conn, icmpConn, TCP } from '../flow/builders';
import { harness } from '../flow/harness';

const PEER_KEY = Buffer.alloc(32, 7).toString('base64');
const tables = {
  overlay: ['100.64.0.0/10', 'fd00::/64'],
  peers: [
    { id: 'p-a', name: 'alice', ip: '100.64.0.1', publicKey: PEER_KEY, groups: ['all'], user: { id: 'u1', name: 'Ann', email: 'ann@example.com' } },
    { id: 'p-b', name: 'bob', ip: 'fd00::2', groups: ['all'] },
  ],
  resources: [{ id: 'r-db', name: 'db', type: 'HOST' as const, prefixes: ['10.9.0.5/32'], groups: ['res'] }],
  policies: [{ id: 'pol', name: 'Pol', action: 'accept' as const, sources: [{ group: 'all' }], destinations: [{ group: 'res' }, { group: 'all' }] }],
};

function engineEvents(): FlowEvent[] {
  const h = harness({ tables, updateIntervalMs: 1000, udpIdleMs: 3000 });
  const conns = [
    conn({ src: '100.64.0.1', sport: 40000, dst: '10.9.0.5', dport: 5432 }),
    conn({ src: '100.64.0.9', sport: 5000, dst: '100.64.0.1', dport: 22, local: true }),
    conn({ src: 'fd00::2', sport: 999, dst: 'fd00::1', dport: 53, proto: 17 }),
    conn({ src: '::ffff:10.1.2.3', sport: 1, dst: '::ffff:10.1.2.4', dport: 2, proto: 17 }),
    conn({ src: '100.64.0.1', dst: '100.64.0.2', proto: 47 }),
    icmpConn({ src: '100.64.0.1', dst: '10.9.0.5', id: 7 }),
    icmpConn({ src: 'fd00::2', dst: 'fd00::1', id: 8, local: true }),
  ];
  for (const c of conns) h.kernel.packet(c, true, c.proto === 6 ? { tcpFlags: TCP.SYN } : { bytes: 300 });
  h.run(1500, { drainMs: 500 });
  for (const c of conns) h.kernel.packet(c, false, c.proto === 6 ? { tcpFlags: TCP.SYN | TCP.ACK } : { bytes: 70 });
  h.run(1500, { drainMs: 500 });
  h.kernel.packet(conns[0], true, { tcpFlags: TCP.FIN | TCP.ACK });
  h.kernel.packet(conns[0], false, { tcpFlags: TCP.FIN | TCP.ACK });
  h.run(10_000, { drainMs: 500 });
  return h.events;
}

describe('engine events on the wire', () => {
  it('encode to the same bytes as their plain copies, every shape (v4, v6, mapped, ICMP, resources, START/UPDATE/END)', () => {
    const events = engineEvents();
    const types = new Set(events.map((e) => e.type));
    expect([...types].sort()).toEqual(['END', 'START', 'UPDATE']);
    expect(events.length).toBeGreaterThanOrEqual(20);
    for (const ev of events) {
      expect(eventBytes(ev)).toBeDefined();
      const plain = JSON.parse(JSON.stringify(ev)) as FlowEvent; // toJSON: every field as text
      expect(plain.source.ip).toBe(ev.source.ip);
      expect(writeFlowEvent(ev).equals(writeFlowEvent(plain))).toBe(true);
      expect(toJsonLine(ev, 1)).toBe(toJsonLine(plain, 1));
    }
  });
});
