// Endpoint fill (peers, resources, unknown), user fields, filters (DNS, include/exclude),
// exit-node traffic, domain resources with TTL, and table swaps.
import { describe, expect, it } from 'vitest';
import { Attributor } from '../../src/attribution/attributor';
import type { AttributionConfig } from '../../src/attribution/config';
import { ipToRaw } from '../../src/net/ip';
import { ManualClock } from '../../src/model/clock';
import { conn, TCP } from '../flow/builders';
import { harness } from '../flow/harness';

const cfg: AttributionConfig = {
  overlay: ['100.64.0.0/10', 'fd7a::/48'],
  peers: [
    {
      id: 'p-alice', name: 'alice-laptop', ips: ['100.64.0.1', 'fd7a::1'], publicKey: 'QUxJQ0U=', os: 'linux', dnsLabel: 'alice.wg',
      groups: ['devs'], user: { id: 'u1', name: 'Alice', email: 'alice@example.com' },
    },
    { id: 'p-gw', name: 'gateway', ip: '100.64.0.10', publicKey: 'R1c=', os: 'linux', dnsLabel: 'gw.wg' },
  ],
  resources: [
    { id: 'r-lan', name: 'office-lan', type: 'SUBNET', prefixes: ['192.168.1.0/24', '2001:db8:1::/48'] },
    { id: 'r-printer', name: 'printer', type: 'HOST', prefixes: ['192.168.1.50'] },
    { id: 'r-exit', name: 'exit', type: 'SUBNET', prefixes: ['0.0.0.0/0', '::/0'] },
    { id: 'r-in-overlay', name: 'bogus', type: 'SUBNET', prefixes: ['100.64.0.0/24'] },
    { id: 'r-docs', name: 'docs', type: 'DOMAIN', domains: ['docs.example.com', '*.wiki.example.com'] },
  ],
  policies: [
    { id: 'pol-docs', name: 'Docs', action: 'accept', sources: [{ group: 'devs' }], destinations: [{ resource: 'r-docs' }] },
  ],
};

describe('endpoint fill', () => {
  const a = new Attributor(cfg);

  it('peers: type PEER with id, name, os, dns label, public key; user from the initiating peer', () => {
    const r = a.attributeIps('100.64.0.1', '100.64.0.10', 6, 40000, 22);
    expect(r.source).toEqual({ id: 'p-alice', name: 'alice-laptop', type: 'PEER', dnsLabel: 'alice.wg', os: 'linux', publicKey: 'QUxJQ0U=' });
    expect(r.destination).toMatchObject({ id: 'p-gw', type: 'PEER' });
    // Endpoint fields are shared per peer (flows hold a pointer, events copy them).
    expect(a.attributeIps('100.64.0.1', '100.64.0.10', 17, 1, 2).source).toBe(r.source);
    expect(r.user).toEqual({ id: 'u1', name: 'Alice', email: 'alice@example.com' });
    expect(a.attributeIps('100.64.0.10', '100.64.0.1', 6, 1, 2).user).toEqual({ id: '', name: '', email: '' });
    expect(a.attributeIps('fd7a::1', 'fd7a::2', 6, 1, 2).source).toMatchObject({ id: 'p-alice' });
  });

  it('peer addresses are trie entries: one lookup finds the peer, the covering prefixes and both policy sets', () => {
    const t = a.tables;
    const alice = t.addrInfo(ipToRaw('100.64.0.1'));
    expect(alice.peer?.id).toBe('p-alice');
    expect(alice.overlay).toBe(true);
    expect(t.addrInfo(ipToRaw('fd7a::1')).peer).toBe(alice.peer); // IPv6 /128 of the same peer
    expect(t.addrInfo(ipToRaw('100.64.0.2')).peer).toBeNull(); // overlay, no peer
    // Alice is in group devs: pol-docs (index 0) names devs as source.
    expect(alice.srcBits[0] & 1).toBe(1);
    expect(Array.from(alice.srcList)).toEqual([0]);
    expect(Array.from(t.addrInfo(ipToRaw('100.64.0.10')).srcList)).toEqual([]);
  });

  it('resources: longest prefix wins, HOST / SUBNET types; none for overlay addresses', () => {
    expect(a.attributeIps('100.64.0.1', '192.168.1.50', 6, 1, 631).destination).toMatchObject({ id: 'r-printer', name: 'printer', type: 'HOST_RESOURCE' });
    expect(a.attributeIps('100.64.0.1', '192.168.1.7', 6, 1, 22).destination).toMatchObject({ id: 'r-lan', type: 'SUBNET_RESOURCE' });
    expect(a.attributeIps('100.64.0.1', '2001:db8:1::5', 6, 1, 22).destination).toMatchObject({ id: 'r-lan' });
    expect(a.attributeIps('100.64.0.1', '::ffff:192.168.1.7', 6, 1, 22).destination).toMatchObject({ id: 'r-lan' });
    // An overlay address that is no known peer: UNKNOWN, even though a resource prefix covers it.
    expect(a.attributeIps('100.64.0.1', '100.64.0.77', 6, 1, 22).destination).toMatchObject({ id: '', type: 'UNKNOWN', name: '' });
  });

  it('events carry the endpoint fields with the flow\'s addresses and ports', () => {
    const h = harness({ tables: cfg });
    const c = conn({ src: '100.64.0.1', sport: 40000, dst: '192.168.1.50', dport: 631 });
    h.kernel.packet(c, true, { tcpFlags: TCP.SYN });
    const [start] = h.cycle();
    expect(start.source).toEqual({ ip: '100.64.0.1', port: 40000, id: 'p-alice', name: 'alice-laptop', type: 'PEER', dnsLabel: 'alice.wg', os: 'linux', publicKey: 'QUxJQ0U=' });
    expect(start.destination).toEqual({ ip: '192.168.1.50', port: 631, id: 'r-printer', name: 'printer', type: 'HOST_RESOURCE', dnsLabel: '', os: '', publicKey: '' });
    expect(start.user).toEqual({ id: 'u1', name: 'Alice', email: 'alice@example.com' });
  });
});

describe('exit node', () => {
  it('traffic matched only by a /0 route is skipped unless exitNodeCollection is on', () => {
    const off = new Attributor(cfg);
    expect(off.attributeIps('100.64.0.1', '8.8.4.4', 6, 1, 443)).toMatchObject({ skip: 'exit_node', exitNode: true });
    expect(off.attributeIps('2001:db8:2::1', '100.64.0.1', 17, 1, 443)).toMatchObject({ skip: 'exit_node' });
    expect(off.attributeIps('100.64.0.1', '192.168.1.7', 6, 1, 443).skip).toBe('');
    const on = new Attributor({ ...cfg, exitNodeCollection: true });
    expect(on.attributeIps('100.64.0.1', '8.8.4.4', 6, 1, 443)).toMatchObject({ skip: '', exitNode: true, destination: { id: 'r-exit', type: 'SUBNET_RESOURCE' } });
    const noRoute = new Attributor({ overlay: cfg.overlay });
    expect(noRoute.attributeIps('100.64.0.1', '8.8.4.4', 6, 1, 443)).toMatchObject({ skip: '', exitNode: false, destination: { type: 'UNKNOWN' } });
  });
});

describe('filters', () => {
  it('DNS (TCP/UDP 53 and 5353, either side) is skipped unless dnsCollection is on', () => {
    const a = new Attributor({});
    expect(a.attributeIps('100.64.0.1', '100.64.0.2', 17, 40000, 53).skip).toBe('dns');
    expect(a.attributeIps('100.64.0.1', '100.64.0.2', 6, 40000, 53).skip).toBe('dns');
    expect(a.attributeIps('100.64.0.1', '224.0.0.251', 17, 5353, 5353).skip).toBe('dns');
    expect(a.attributeIps('100.64.0.2', '100.64.0.1', 17, 53, 40000).skip).toBe('dns');
    expect(a.attributeIps('100.64.0.1', '100.64.0.2', 132, 40000, 53).skip).toBe(''); // SCTP is not DNS
    expect(new Attributor({ dnsCollection: true }).attributeIps('100.64.0.1', '100.64.0.2', 17, 40000, 53).skip).toBe('');
  });

  it('include/exclude prefixes (either endpoint) and ports (destination)', () => {
    const a = new Attributor({
      dnsCollection: true,
      filters: { includePrefixes: ['10.0.0.0/8', 'fd00::/8'], excludePrefixes: ['10.66.0.0/16'], excludePorts: [22, '6000-6010'] },
    });
    expect(a.attributeIps('10.1.1.1', '8.8.8.8', 6, 1, 443).skip).toBe('');
    expect(a.attributeIps('8.8.8.8', 'fd00::1', 6, 1, 443).skip).toBe('');
    expect(a.attributeIps('8.8.8.8', '1.1.1.1', 6, 1, 443).skip).toBe('filter');
    expect(a.attributeIps('10.1.1.1', '10.66.1.1', 6, 1, 443).skip).toBe('filter');
    expect(a.attributeIps('10.1.1.1', '10.2.2.2', 6, 1, 22).skip).toBe('filter');
    expect(a.attributeIps('10.1.1.1', '10.2.2.2', 6, 22, 80).skip).toBe(''); // source port is not the service
    expect(a.attributeIps('10.1.1.1', '10.2.2.2', 17, 1, 6005).skip).toBe('filter');
    const inc = new Attributor({ filters: { includePorts: [443] } });
    expect(inc.attributeIps('10.1.1.1', '10.2.2.2', 6, 1, 443).skip).toBe('');
    expect(inc.attributeIps('10.1.1.1', '10.2.2.2', 6, 1, 80).skip).toBe('filter');
    expect(inc.attributeIps('10.1.1.1', '10.2.2.2', 1, 0, 0).skip).toBe('filter');
  });

  it('filtered flows are counted by the tracker and never exported', () => {
    const h = harness({ tables: { filters: { excludePorts: [22] } } });
    const ssh = conn({ src: '100.64.0.1', sport: 5000, dst: '100.64.0.2', dport: 22, local: true });
    const web = conn({ src: '100.64.0.1', sport: 5001, dst: '100.64.0.2', dport: 443, local: true });
    h.kernel.packet(ssh, true, { tcpFlags: TCP.SYN });
    h.kernel.packet(web, true, { tcpFlags: TCP.SYN });
    expect(h.cycle().map((e) => e.destination.port)).toEqual([443]);
    h.kernel.packet(ssh, true, { tcpFlags: TCP.RST });
    expect(h.cycle()).toEqual([]);
    expect(h.tracker.stats()).toMatchObject({ filtered: 1, active: 1 });
  });
});

describe('domain resources', () => {
  it('resolved addresses map to the DOMAIN resource until their TTL runs out; policies naming it match', () => {
    const clock = new ManualClock();
    const a = new Attributor(cfg, { clock });
    a.feedResolved('docs.example.com.', ['203.0.113.5', '2001:db8:99::5', 'garbage'], 60);
    a.feedResolved('a.wiki.example.com', ['203.0.113.6'], 10);
    a.feedResolved('unrelated.example.org', ['203.0.113.7'], 60);
    const r = a.attributeIps('100.64.0.1', '203.0.113.5', 6, 1, 443);
    expect(r).toMatchObject({ skip: '', destination: { id: 'r-docs', name: 'docs', type: 'DOMAIN_RESOURCE' }, ruleId: 'pol-docs', policyName: 'Docs' });
    expect(a.attributeIps('100.64.0.1', '2001:db8:99::5', 6, 1, 443).destination.id).toBe('r-docs');
    expect(a.attributeIps('100.64.0.1', '203.0.113.6', 6, 1, 443).destination.id).toBe('r-docs');
    // Not a docs name: only the /0 route covers it -> exit-node traffic.
    expect(a.attributeIps('100.64.0.1', '203.0.113.7', 6, 1, 443).skip).toBe('exit_node');
    clock.advanceMs(11_000);
    expect(a.attributeIps('100.64.0.1', '203.0.113.6', 6, 1, 443).skip).toBe('exit_node');
    expect(a.attributeIps('100.64.0.1', '203.0.113.5', 6, 1, 443).destination.id).toBe('r-docs');
    expect(a.purgeResolved()).toBe(3);
    clock.advanceMs(50_000);
    expect(a.purgeResolved()).toBe(0);
  });

  it('the resolved table is bounded', () => {
    const a = new Attributor(cfg, { maxResolved: 100 });
    for (let i = 0; i < 300; i++) a.feedResolved('docs.example.com', [`198.51.100.${i % 250}`, `2001:db8::${i.toString(16)}`], 60);
    expect(a.resolvedSize).toBeLessThanOrEqual(101);
  });
});

describe('table swaps', () => {
  it('new tables apply to flows started after the swap; running flows keep their attribution', () => {
    const h = harness({ tables: cfg, updateIntervalMs: 0 });
    const old = conn({ src: '100.64.0.1', sport: 1000, dst: '100.64.0.10', dport: 22 });
    h.kernel.packet(old, true, { tcpFlags: TCP.SYN });
    const [s1] = h.cycle();
    expect(s1).toMatchObject({ direction: 'INGRESS', source: { id: 'p-alice' }, ruleId: '' });
    const gen = h.attributor.generation;
    h.attributor.swap({
      ...cfg,
      peers: [{ id: 'p-alice2', name: 'renamed', ip: '100.64.0.1' }, cfg.peers![1]],
      policies: [{ id: 'ssh', name: 'SSH', action: 'accept', protocol: 'tcp', ports: [22], sources: [{ prefix: '100.64.0.0/10' }], destinations: [{ peer: 'p-gw' }] }],
    });
    expect(h.attributor.generation).toBe(gen + 1);
    const fresh = conn({ src: '100.64.0.1', sport: 1001, dst: '100.64.0.10', dport: 22 });
    h.kernel.packet(fresh, true, { tcpFlags: TCP.SYN });
    const [s2] = h.cycle();
    expect(s2).toMatchObject({ source: { id: 'p-alice2', name: 'renamed' }, ruleId: 'ssh', policyName: 'SSH' });
    h.kernel.packet(old, true, { tcpFlags: TCP.RST });
    const [end] = h.cycle();
    expect(end).toMatchObject({ type: 'END', flowId: s1.flowId, source: { id: 'p-alice' }, ruleId: '' });
  });

  it('a bad config throws and leaves the current tables in place', () => {
    const a = new Attributor(cfg);
    const before = a.tables;
    expect(() => a.swap({ resources: [{ id: 'x', type: 'NET' as 'SUBNET', prefixes: [] }] })).toThrow(/resources\[0\]: type/);
    expect(a.tables).toBe(before);
    expect(a.attributeIps('100.64.0.1', '192.168.1.7', 6, 1, 22).destination.id).toBe('r-lan');
  });

  it('validation: ids required and unique, addresses and prefixes checked', () => {
    expect(() => new Attributor({ peers: [{ id: '' }] })).toThrow(/peers\[0\]\.id: is required/);
    expect(() => new Attributor({ peers: [{ id: 'a' }, { id: 'a' }] })).toThrow(/duplicate peer/);
    expect(() => new Attributor({ peers: [{ id: 'a', ip: '1.2.3' }] })).toThrow(/not an IP/);
    expect(() => new Attributor({ resources: [{ id: 'r', type: 'SUBNET', prefixes: ['1.2.3.0/40'] }] })).toThrow(/resources\[0\].prefixes/);
    expect(() => new Attributor({ overlay: ['x'] })).toThrow(/overlay/);
    const t = new Attributor({ peers: [{ id: 'a', ip: '100.64.0.1' }, { id: 'b', ip: '100.64.0.1' }] }).tables;
    expect(t.warnings[0]).toMatch(/already belongs to peer "a"/);
  });
});
