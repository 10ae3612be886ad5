// Policy matching: list order, groups, prefixes, resources, protocols, port ranges, disabled and
// drop policies, bidirectional, and rule ids only on the receiving/routing side (INGRESS).
import { describe, expect, it } from 'vitest';
import { Attributor } from '../../src/attribution/attributor';
import type { AttributionConfig, PolicyConfig } from '../../src/attribution/config';
import { ipToRaw } from '../../src/net/ip';
import { AttributionTables } from '../../src/attribution/tables';

const base: AttributionConfig = {
  overlay: ['100.64.0.0/10', 'fd7a::/48'],
  peers: [
    { id: 'p-alice', name: 'alice-laptop', ips: ['100.64.0.1', 'fd7a::1'], groups: ['devs', 'all'], user: { id: 'u1', name: 'Alice', email: 'alice@example.com' } },
    { id: 'p-bob', name: 'bob-laptop', ip: '100.64.0.2', groups: ['ops', 'all'] },
    { id: 'p-gw', name: 'gateway', ip: '100.64.0.10', groups: ['routers', 'all'] },
    { id: 'p-db', name: 'db', ip: '100.64.0.20', groups: ['servers', 'all'] },
  ],
  resources: [
    { id: 'r-lan', name: 'office-lan', type: 'SUBNET', prefixes: ['192.168.1.0/24'], groups: ['lan'] },
    { id: 'r-printer', name: 'printer', type: 'HOST', prefixes: ['192.168.1.50/32'] },
  ],
};

function attributor(policies: PolicyConfig[]): Attributor {
  return new Attributor({ ...base, policies });
}

const rule = (a: Attributor, src: string, dst: string, proto: number, dport: number, dir: 'INGRESS' | 'EGRESS' = 'INGRESS'): string =>
  a.attributeIps(src, dst, proto, 40000, dport, dir).ruleId;

describe('policy matching', () => {
  it('the first accept policy in list order wins; drop and disabled policies are skipped', () => {
    const a = attributor([
      { id: 'drop-all', action: 'drop', sources: [{ group: 'all' }], destinations: [{ group: 'all' }] },
      { id: 'off', action: 'accept', enabled: false, sources: [{ group: 'all' }], destinations: [{ group: 'all' }] },
      { id: 'devs-to-servers', name: 'Devs to servers', action: 'accept', sources: [{ group: 'devs' }], destinations: [{ group: 'servers' }] },
      { id: 'all-to-all', name: 'Default', action: 'accept', sources: [{ group: 'all' }], destinations: [{ group: 'all' }] },
    ]);
    const r = a.attributeIps('100.64.0.1', '100.64.0.20', 6, 40000, 5432);
    expect(r).toMatchObject({ ruleId: 'devs-to-servers', policyName: 'Devs to servers' });
    expect(rule(a, '100.64.0.2', '100.64.0.20', 6, 5432)).toBe('all-to-all');
    expect(rule(a, '100.64.0.20', '100.64.0.1', 6, 22)).toBe('all-to-all'); // not bidirectional: reverse needs its own rule
    expect(rule(a, '100.64.0.99', '100.64.0.20', 6, 5432)).toBe(''); // unknown overlay address is in no group
  });

  it('rule ids are set only on the receiving / routing side (INGRESS)', () => {
    const a = attributor([{ id: 'any', action: 'accept', sources: [{ prefix: '0.0.0.0/0' }], destinations: [{ prefix: '0.0.0.0/0' }] }]);
    expect(rule(a, '100.64.0.1', '100.64.0.2', 17, 5000, 'INGRESS')).toBe('any');
    expect(rule(a, '100.64.0.1', '100.64.0.2', 17, 5000, 'EGRESS')).toBe('');
  });

  it('protocols: tcp, udp, icmp (v4 and v6), numbers, all', () => {
    const a = attributor([
      { id: 'tcp', action: 'accept', protocol: 'tcp', sources: [{ peer: 'p-alice' }], destinations: [{ peer: 'p-bob' }] },
      { id: 'udp', action: 'accept', protocol: 'udp', sources: [{ peer: 'p-alice' }], destinations: [{ peer: 'p-bob' }] },
      { id: 'icmp', action: 'accept', protocol: 'icmp', sources: [{ peer: 'p-alice' }], destinations: [{ group: 'all' }] },
      { id: 'gre', action: 'accept', protocol: 47, sources: [{ peer: 'p-alice' }], destinations: [{ peer: 'p-bob' }] },
      { id: 'all', action: 'accept', protocol: 'all', sources: [{ peer: 'p-bob' }], destinations: [{ peer: 'p-alice' }] },
    ]);
    expect(rule(a, '100.64.0.1', '100.64.0.2', 6, 80)).toBe('tcp');
    expect(rule(a, '100.64.0.1', '100.64.0.2', 17, 80)).toBe('udp');
    expect(rule(a, '100.64.0.1', '100.64.0.2', 1, 0)).toBe('icmp');
    expect(rule(a, '100.64.0.1', '100.64.0.2', 47, 0)).toBe('gre');
    expect(rule(a, '100.64.0.1', '100.64.0.2', 50, 0)).toBe('');
    expect(rule(a, '100.64.0.2', '100.64.0.1', 50, 0)).toBe('all');
    // ICMPv6 from alice's IPv6 address to an unknown overlay address is in no destination group.
    expect(rule(a, 'fd7a::1', 'fd7a::99', 58, 0)).toBe('');
    const b = attributor([{ id: 'icmp6', action: 'accept', protocol: 'icmp', sources: [{ peer: 'p-alice' }], destinations: [{ prefix: 'fd7a::/48' }] }]);
    expect(rule(b, 'fd7a::1', 'fd7a::99', 58, 0)).toBe('icmp6');
  });

  it('ports: single ports, "from-to" strings, {from,to} ranges; destination port only; port-less flows never match', () => {
    const a = attributor([
      { id: 'web', action: 'accept', protocol: 'tcp', ports: [80, 443, '8000-8099'], sources: [{ group: 'all' }], destinations: [{ peer: 'p-db' }] },
      { id: 'high', action: 'accept', ports: [{ from: 30000, to: 32767 }], sources: [{ group: 'all' }], destinations: [{ peer: 'p-db' }] },
      { id: 'rest', action: 'accept', protocol: 'icmp', sources: [{ group: 'all' }], destinations: [{ peer: 'p-db' }] },
    ]);
    expect(rule(a, '100.64.0.1', '100.64.0.20', 6, 443)).toBe('web');
    expect(rule(a, '100.64.0.1', '100.64.0.20', 6, 8000)).toBe('web');
    expect(rule(a, '100.64.0.1', '100.64.0.20', 6, 8099)).toBe('web');
    expect(rule(a, '100.64.0.1', '100.64.0.20', 6, 8100)).toBe('');
    expect(rule(a, '100.64.0.1', '100.64.0.20', 17, 31000)).toBe('high');
    expect(rule(a, '100.64.0.1', '100.64.0.20', 17, 443)).toBe(''); // web is tcp only
    expect(rule(a, '100.64.0.1', '100.64.0.20', 1, 0)).toBe('rest');
  });

  it('prefix and resource targets (routing peer side), resource groups, longest resource not required', () => {
    const a = attributor([
      { id: 'printer', action: 'accept', sources: [{ peer: 'p-bob' }], destinations: [{ resource: 'r-printer' }] },
      { id: 'lan', action: 'accept', sources: [{ group: 'devs' }], destinations: [{ group: 'lan' }] },
      { id: 'net', action: 'accept', sources: [{ prefix: '100.64.0.0/30' }], destinations: [{ prefix: '192.168.0.0/16' }] },
    ]);
    expect(rule(a, '100.64.0.2', '192.168.1.50', 6, 631)).toBe('printer');
    // The printer is inside the LAN resource: a policy for the LAN covers it too.
    expect(rule(a, '100.64.0.1', '192.168.1.50', 6, 631)).toBe('lan');
    expect(rule(a, '100.64.0.1', '192.168.1.7', 6, 22)).toBe('lan');
    expect(rule(a, '100.64.0.2', '192.168.1.7', 6, 22)).toBe('net');
    expect(rule(a, '100.64.0.2', '192.168.2.7', 6, 22)).toBe('net');
    expect(rule(a, '100.64.0.10', '192.168.2.7', 6, 22)).toBe('');
  });

  it('bidirectional policies also match the reverse direction', () => {
    const a = attributor([{ id: 'bi', action: 'accept', bidirectional: true, sources: [{ peer: 'p-alice' }], destinations: [{ peer: 'p-bob' }] }]);
    expect(rule(a, '100.64.0.1', '100.64.0.2', 6, 22)).toBe('bi');
    expect(rule(a, '100.64.0.2', '100.64.0.1', 6, 22)).toBe('bi');
    expect(rule(a, '100.64.0.2', '100.64.0.10', 6, 22)).toBe('');
  });

  it('order holds across bitset words (more than 32 policies)', () => {
    const policies: PolicyConfig[] = [];
    for (let i = 0; i < 100; i++) {
      policies.push({ id: `p${i}`, action: 'accept', protocol: 'tcp', ports: [1000 + i], sources: [{ group: 'all' }], destinations: [{ group: 'all' }] });
    }
    policies.push({ id: 'catch-all', action: 'accept', sources: [{ group: 'all' }], destinations: [{ group: 'all' }] });
    policies[70] = { ...policies[70], ports: [1050] }; // p50 comes first for 1050
    const a = attributor(policies);
    expect(rule(a, '100.64.0.1', '100.64.0.2', 6, 1099)).toBe('p99');
    expect(rule(a, '100.64.0.1', '100.64.0.2', 6, 1050)).toBe('p50');
    expect(rule(a, '100.64.0.1', '100.64.0.2', 6, 1070)).toBe('catch-all');
  });

  it('dangling references are warnings; malformed policies throw with their path', () => {
    const t = AttributionTables.build({ ...base, policies: [{ id: 'x', action: 'accept', sources: [{ peer: 'ghost' }], destinations: [{ group: 'nobody' }] }] });
    expect(t.warnings).toEqual(['policies[0]: unknown peer "ghost"', 'policies[0]: group "nobody" has no members']);
    expect(() => AttributionTables.build({ policies: [{ id: 'x', action: 'allow' as 'accept', sources: [], destinations: [] }] })).toThrow(/policies\[0\]: action/);
    expect(() => AttributionTables.build({ policies: [{ id: 'x', action: 'accept', ports: ['80-70'], sources: [], destinations: [] }] })).toThrow(/ends before/);
    expect(() => AttributionTables.build({ policies: [{ id: 'x', action: 'accept', protocol: 'sctp' as 'tcp', sources: [], destinations: [] }] })).toThrow(/protocol/);
    expect(() => AttributionTables.build({ policies: [{ id: 'x', action: 'accept', sources: [{ prefix: '10.0.0.0/99' }], destinations: [] }] })).toThrow(/policies\[0\] prefix/);
  });

  it('duplicate ids and peer keys are errors naming both positions', () => {
    const pol = (id: string): PolicyConfig => ({ id, action: 'accept', sources: [], destinations: [] });
    expect(() => AttributionTables.build({ policies: [pol('a'), pol('b'), pol('a')] })).toThrow('policies[2].id: duplicate policy id "a" (policies[0] has it too)');
    expect(() => AttributionTables.build({ resources: [{ id: 'r', type: 'HOST' }, { id: 'r', type: 'HOST' }] })).toThrow('resources[1].id: duplicate resource id "r" (resources[0] has it too)');
    const key = Buffer.alloc(32, 7).toString('base64');
    expect(() => AttributionTables.build({ peers: [{ id: 'a', publicKey: key }, { id: 'b' }, { id: 'c', publicKey: key }] }))
      .toThrow(`peers[2].publicKey: duplicate public key "${key}" (peers[0] has it too)`);
    // Peers without a key do not collide.
    expect(AttributionTables.build({ peers: [{ id: 'a' }, { id: 'b', publicKey: '' }] }).peersById.size).toBe(2);
  });

  it('matches a naive reference on random tables (sparse lists, word scan, bidirectional, domain path)', () => {
    let seed = 11;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const groups = ['g0', 'g1', 'g2', 'g3', 'g4', 'all'];
    const seen = new Set<string>();
    for (let round = 0; round < 12; round++) {
      const peers = Array.from({ length: 12 }, (_, i) => ({
        id: `p${i}`, ip: `100.64.0.${i + 1}`, groups: [groups[rnd(5)], groups[rnd(5)], 'all'],
      }));
      const resources = Array.from({ length: 6 }, (_, i) => ({
        id: `r${i}`, type: 'SUBNET' as const, prefixes: [`10.${i}.0.0/16`], groups: [`rg${rnd(3)}`],
      }));
      // Few policies (sparse lists) in even rounds, many (the word scan) in odd ones.
      const n = round % 2 === 0 ? 20 : 300;
      const target = (): { group: string } | { prefix: string } | { peer: string } => {
        const k = rnd(4);
        return k === 0 ? { group: groups[rnd(6)] } : k === 1 ? { group: `rg${rnd(3)}` } : k === 2 ? { prefix: `10.${rnd(6)}.0.0/${16 + rnd(2) * 8}` } : { peer: `p${rnd(12)}` };
      };
      const policies: PolicyConfig[] = Array.from({ length: n }, (_, i) => ({
        id: `pol${i}`, action: rnd(10) === 0 ? 'drop' : 'accept', enabled: rnd(10) !== 0, bidirectional: round >= 6 && rnd(3) === 0,
        protocol: (['all', 'tcp', 'udp'] as const)[rnd(3)], ports: rnd(2) === 0 ? [] : [rnd(3) === 0 ? '8000-8100' : 443],
        sources: [target()], destinations: [target(), target()],
      }));
      const cfg: AttributionConfig = { overlay: ['100.64.0.0/10'], peers, resources, policies };
      const a = new Attributor(cfg);
      const t = a.tables;
      // Reference: the first accept + enabled policy, in list order, by evaluating its targets directly.
      const member = (targets: PolicyConfig['sources'], ip: string): boolean => targets.some((tg) => {
        const peer = peers.find((p) => p.ip === ip);
        const res = resources.find((r) => ip.startsWith(r.prefixes[0].split('.').slice(0, 2).join('.') + '.'));
        if ('peer' in tg) return peer?.id === tg.peer;
        if ('group' in tg) return (peer?.groups.includes(tg.group) ?? false) || (res?.groups.includes(tg.group) ?? false);
        if ('prefix' in tg) {
          const [net, len] = tg.prefix.split('/');
          const parts = net.split('.').slice(0, Number(len) / 8);
          return ip.split('.').slice(0, parts.length).join('.') === parts.join('.');
        }
        return false;
      });
      const reference = (src: string, dst: string, proto: number, dport: number): string => {
        for (const p of policies) {
          if (p.action !== 'accept' || p.enabled === false) continue;
          if (p.protocol === 'tcp' && proto !== 6) continue;
          if (p.protocol === 'udp' && proto !== 17) continue;
          if (p.ports!.length > 0 && !p.ports!.some((x) => (x === 443 ? dport === 443 : dport >= 8000 && dport <= 8100))) continue;
          const fwd = member(p.sources, src) && member(p.destinations, dst);
          const rev = p.bidirectional === true && member(p.sources, dst) && member(p.destinations, src);
          if (fwd || rev) return p.id;
        }
        return '';
      };
      const addrs = [...peers.map((p) => p.ip), '10.1.2.3', '10.4.0.9', '10.5.200.1', '192.0.2.1'];
      for (let k = 0; k < 200; k++) {
        const src = addrs[rnd(addrs.length)], dst = addrs[rnd(addrs.length)];
        const proto = [6, 17][rnd(2)], dport = [443, 8050, 22][rnd(3)];
        const got = a.attributeIps(src, dst, proto, 40000, dport).ruleId;
        expect(got, `${src} -> ${dst} ${proto}/${dport}`).toBe(reference(src, dst, proto, dport));
        seen.add(got);
        // The bitset scan (the path taken with domain resources) agrees.
        const s = t.addrInfo(ipToRaw(src)), d = t.addrInfo(ipToRaw(dst));
        const scan = t.firstPolicy(s.srcBits, d.dstBits, t.anyBidirectional ? d.srcBits : t.zero, t.anyBidirectional ? s.dstBits : t.zero, proto, true, dport);
        expect(scan?.id ?? '').toBe(got);
      }
    }
    expect(seen.has('')).toBe(true); // both outcomes occur, and many different rules
    expect(seen.size).toBeGreaterThan(20);
  });
});

