// Peers' allowed IPs wider than a host (routing peers, exit nodes): an address no peer has exactly
// takes the peer of the longest covering allowed-IP prefix; exact peer addresses and resources at
// least as specific still win; /0 routes are exit-node traffic. And wgPeersToConfig, which makes
// these tables from a WireGuard snapshot.
import { describe, expect, it } from 'vitest';
import { Attributor } from '../../src/attribution/attributor';
import type { AttributionConfig } from '../../src/attribution/config';
import { attributionSchema } from '../../src/attribution/schema';
import { AttributionTables } from '../../src/attribution/tables';
import { wgPeersToConfig } from '../../src/attribution/sources/wireguard';
import type { WgSnapshot } from '../../src/attribution/sources/source';
import { ipToRaw } from '../../src/net/ip';
import { ConfigError } from '../../src/util/check';

const key = (n: number): string => Buffer.alloc(32, n).toString('base64');

const cfg: AttributionConfig = {
  overlay: ['10.0.0.0/24', 'fd00::/64'],
  peers: [
    { id: 'alice', ips: ['10.0.0.2'], user: { id: 'u-alice' } },
    // A hub: everything in the overlay goes through it.
    { id: 'hub', ips: ['10.0.0.1'], allowedIps: ['10.0.0.0/24', 'fd00::/64'] },
    // A routing peer for two LANs and a wide net, with a more specific router inside it.
    { id: 'router', ips: ['10.0.0.3'], allowedIps: ['192.168.0.0/16', '2001:db8::/32', '172.16.5.0/24'], user: { id: 'u-router' } },
    { id: 'inner', ips: ['10.0.0.4'], allowedIps: ['192.168.7.0/24', '172.16.5.128/28'] },
    { id: 'exit', ips: ['10.0.0.5'], allowedIps: ['0.0.0.0/0', '::/0'] },
  ],
  resources: [
    { id: 'r-lan', type: 'SUBNET', prefixes: ['192.168.1.0/24'] },
    { id: 'r-printer', type: 'HOST', prefixes: ['192.168.2.50'] },
    { id: 'r-wide', type: 'SUBNET', prefixes: ['172.16.0.0/12'] },
    { id: 'r-same', type: 'SUBNET', prefixes: ['2001:db8::/32'] },
    { id: 'r-docs', type: 'DOMAIN', domains: ['docs.example.com'] },
  ],
  policies: [
    { id: 'to-router', action: 'accept', sources: [{ peer: 'alice' }], destinations: [{ peer: 'router' }] },
    { id: 'to-lan', action: 'accept', sources: [{ peer: 'alice' }], destinations: [{ prefix: '192.168.9.0/28' }] },
  ],
};

const dst = (a: Attributor, ip: string): string => a.attributeIps('10.0.0.2', ip, 6, 40000, 443).destination.id;

describe('peer routes (allowed IPs wider than a host)', () => {
  const a = new Attributor(cfg);

  it('an address with no exact peer takes the peer of the longest covering route', () => {
    expect(dst(a, '192.168.3.3')).toBe('router');
    expect(dst(a, '192.168.7.9')).toBe('inner'); // the /24 inside router's /16
    expect(dst(a, '172.16.5.130')).toBe('inner'); // /28 inside router's /24 inside resource /12
    expect(a.attributeIps('10.0.0.2', '192.168.3.3', 6, 40000, 443).destination).toMatchObject({ id: 'router', type: 'PEER' });
    expect(new Attributor({ ...cfg, exitNodeCollection: true }).attributeIps('10.0.0.2', '2001:db9::1', 6, 1, 2).destination.id).toBe('exit'); // only ::/0 covers it
  });

  it('an exact peer address wins over every route, the hub included', () => {
    expect(dst(a, '10.0.0.2')).toBe('alice');
    expect(dst(a, '10.0.0.3')).toBe('router');
    expect(dst(a, '10.0.0.9')).toBe('hub'); // overlay, no exact peer: the hub carries it
    expect(a.attributeIps('10.0.0.2', 'fd00::9', 6, 1, 2).destination.id).toBe('hub');
    // Without the hub, the exit node's /0 covers the overlay too, but is no statement about it.
    const noHub = new Attributor({ ...cfg, peers: cfg.peers!.filter((p) => p.id !== 'hub'), exitNodeCollection: true });
    expect(noHub.attributeIps('10.0.0.2', '10.0.0.9', 6, 1, 2)).toMatchObject({ exitNode: false, destination: { type: 'UNKNOWN' } });
    // A route wider than the overlay prefix is not about it either; one inside it is.
    const wide = new Attributor({ overlay: ['10.0.0.0/24'], peers: [{ id: 'w', allowedIps: ['10.0.0.0/8'] }, { id: 'n', allowedIps: ['10.0.0.64/26'] }] });
    expect(wide.attributeIps('10.1.1.1', '10.0.0.9', 6, 1, 2).destination.type).toBe('UNKNOWN');
    expect(wide.attributeIps('10.1.1.1', '10.0.0.70', 6, 1, 2).destination.id).toBe('n');
    expect(wide.attributeIps('10.0.0.70', '10.1.1.1', 6, 1, 2).destination.id).toBe('w');
    const t = a.tables;
    expect(t.addrInfo(ipToRaw('10.0.0.2')).peer?.id).toBe('alice');
    expect(t.addrInfo(ipToRaw('10.0.0.9')).peer).toBeNull();
    expect(t.addrInfo(ipToRaw('10.0.0.9')).route?.id).toBe('hub');
  });

  it('resources at least as specific as the route win for their addresses; a longer route beats a wider resource', () => {
    expect(dst(a, '192.168.1.20')).toBe('r-lan'); // /24 resource inside router's /16
    expect(dst(a, '192.168.2.50')).toBe('r-printer');
    expect(dst(a, '192.168.2.51')).toBe('router');
    expect(a.attributeIps('10.0.0.2', '2001:db8::5', 6, 1, 2).destination.id).toBe('r-same'); // same length: the resource
    expect(dst(a, '172.16.5.1')).toBe('router'); // route /24 is longer than resource /12
    expect(dst(a, '172.17.0.1')).toBe('r-wide');
    // A prefix that is neither (a policy target inside r-lan... and inside router's route) changes nothing.
    expect(dst(a, '192.168.9.1')).toBe('router');
  });

  it('a resolved domain resource wins over a route, and is not exit-node traffic', () => {
    const b = new Attributor(cfg);
    b.feedResolved('docs.example.com', ['93.184.216.34'], 60);
    const r = b.attributeIps('10.0.0.2', '93.184.216.34', 6, 40000, 443);
    expect(r).toMatchObject({ skip: '', exitNode: false });
    expect(r.destination.id).toBe('r-docs');
  });

  it('a /0 route is exit-node traffic: skipped by default, attributed to the exit peer when collected', () => {
    expect(a.attributeIps('10.0.0.2', '8.8.8.8', 17, 40000, 443)).toMatchObject({ skip: 'exit_node', exitNode: true });
    const c = new Attributor({ ...cfg, exitNodeCollection: true });
    const r = c.attributeIps('10.0.0.2', '8.8.8.8', 17, 40000, 443);
    expect(r).toMatchObject({ skip: '', exitNode: true });
    expect(r.destination).toMatchObject({ id: 'exit', type: 'PEER' });
    // Covered by a longer route or resource: not exit traffic.
    expect(a.attributeIps('10.0.0.2', '192.168.3.3', 6, 1, 2)).toMatchObject({ skip: '', exitNode: false });
    expect(a.attributeIps('10.0.0.2', '172.17.0.1', 6, 1, 2)).toMatchObject({ skip: '', exitNode: false });
  });

  it('a /0 resource and a /0 route: the resource names the endpoint (same length)', () => {
    const c = new Attributor({
      ...cfg, exitNodeCollection: true,
      resources: [...cfg.resources!, { id: 'r-exit', type: 'SUBNET', prefixes: ['0.0.0.0/0'] }],
    });
    expect(c.attributeIps('10.0.0.2', '8.8.8.8', 17, 40000, 443)).toMatchObject({ exitNode: true, destination: { id: 'r-exit' } });
    expect(c.attributeIps('10.0.0.2', '192.168.3.3', 17, 40000, 443).destination.id).toBe('router');
  });

  it("a route gives neither the peer's policies nor its user to the addresses behind it", () => {
    expect(a.attributeIps('10.0.0.2', '10.0.0.3', 6, 40000, 22).ruleId).toBe('to-router');
    expect(a.attributeIps('10.0.0.2', '192.168.3.3', 6, 40000, 22).ruleId).toBe('');
    expect(a.attributeIps('10.0.0.2', '192.168.9.1', 6, 40000, 22).ruleId).toBe('to-lan'); // prefix policies still apply
    expect(a.attributeIps('10.0.0.3', '10.0.0.2', 6, 1, 2).user.id).toBe('u-router');
    expect(a.attributeIps('192.168.3.3', '10.0.0.2', 6, 1, 2).user.id).toBe('');
  });

  it('a host prefix in allowedIps is an address of the peer (exact: user, policies)', () => {
    const t = AttributionTables.build({
      peers: [{ id: 'p', allowedIps: ['10.9.0.7/32', 'fd09::7/128', '10.9.1.0/24'], user: { id: 'u' } }],
      policies: [{ id: 'pol', action: 'accept', sources: [{ peer: 'p' }], destinations: [{ prefix: '0.0.0.0/0' }] }],
    });
    const i = t.addrInfo(ipToRaw('10.9.0.7'));
    expect(i.peer?.id).toBe('p');
    expect(Array.from(i.srcList)).toEqual([0]);
    expect(t.addrInfo(ipToRaw('fd09::7')).peer?.id).toBe('p');
    expect(t.addrInfo(ipToRaw('10.9.1.1'))).toMatchObject({ peer: null, route: { id: 'p' } });
    expect(Array.from(t.addrInfo(ipToRaw('10.9.1.1')).srcList)).toEqual([]);
  });

  it('one route on two peers: the first keeps it, with a warning; bad prefixes name their path', () => {
    const t = AttributionTables.build({ peers: [{ id: 'a', allowedIps: ['10.1.0.0/16'] }, { id: 'b', allowedIps: ['10.1.0.0/16'] }] });
    expect(t.addrInfo(ipToRaw('10.1.2.3')).route?.id).toBe('a');
    expect(t.warnings).toEqual(['peers[1]: allowed IPs 10.1.0.0/16 already route to peer "a"; the first one keeps them']);
    expect(() => AttributionTables.build({ peers: [{ id: 'a', allowedIps: ['10.1.0.0/33'] }] })).toThrow(/^peers\[0\]\.allowedIps: not an IP prefix/);
  });

  it('tables without routes behave as before (no route anywhere, exit only through /0 resources)', () => {
    const t = AttributionTables.build({ overlay: ['10.0.0.0/24'], peers: [{ id: 'a', ip: '10.0.0.2' }], resources: [{ id: 'x', type: 'SUBNET', prefixes: ['0.0.0.0/0'] }] });
    for (const e of t.trie.entries) expect(e.value.route).toBeNull();
    expect(t.addrInfo(ipToRaw('8.8.8.8')).exitRoute).toBe(true);
    expect(t.addrInfo(ipToRaw('10.0.0.9')).exitRoute).toBe(false);
    expect(t.noMatch).toMatchObject({ route: null, exitRoute: false });
  });

  it('the config file key is allowed_ips', () => {
    const c = attributionSchema({ peers: [{ id: 'r', allowed_ips: ['192.168.0.0/16', '10.0.0.3/32'] }] }, 'attribution');
    expect(c.peers?.[0].allowedIps).toEqual(['192.168.0.0/16', '10.0.0.3/32']);
    expect(() => attributionSchema({ peers: [{ id: 'r', allowed_ips: ['300.1.1.1/8'] }] }, 'attribution')).toThrow(ConfigError);
    expect(() => attributionSchema({ peers: [{ id: 'r', allowed_ips: ['300.1.1.1/8'] }] }, 'attribution')).toThrow(/^attribution\.peers\[0\]\.allowed_ips\[0\]/);
  });
});

describe('wgPeersToConfig', () => {
  const snap: WgSnapshot = {
    peers: [
      { ifname: 'wg0', publicKey: key(1), allowedIps: ['10.0.0.2/32', 'fd00::2/128'], endpoint: '192.0.2.1:51820', lastHandshakeS: 1 },
      { ifname: 'wg0', publicKey: key(2), allowedIps: ['10.0.0.3/32', '192.168.0.0/16', '0.0.0.0/0'], endpoint: '', lastHandshakeS: 0 },
      { ifname: 'wg1', publicKey: key(2), allowedIps: ['10.1.0.3/32', '192.168.0.0/16'], endpoint: '', lastHandshakeS: 0 },
      { ifname: 'wg1', publicKey: key(3), allowedIps: [], endpoint: '', lastHandshakeS: 0 },
    ],
    ownPrefixes: ['10.0.0.0/24', 'fd00::/64', '10.1.0.0/24'],
    errors: [],
  };

  it('one peer per key (id = key), host allowed IPs as addresses, wider ones as allowedIps, own networks as overlay', () => {
    expect(wgPeersToConfig(snap)).toEqual({
      overlay: ['10.0.0.0/24', 'fd00::/64', '10.1.0.0/24'],
      peers: [
        { id: key(1), publicKey: key(1), ips: ['10.0.0.2', 'fd00::2'] },
        { id: key(2), publicKey: key(2), ips: ['10.0.0.3', '10.1.0.3'], allowedIps: ['192.168.0.0/16', '0.0.0.0/0'] },
        { id: key(3), publicKey: key(3), ips: [] },
      ],
    });
  });

  it('the same peers read in another order give the same tables (wireguard-go lists them in Go map order)', () => {
    const reordered: WgSnapshot = { ...snap, peers: [snap.peers[3], snap.peers[1], snap.peers[0], snap.peers[2]] };
    expect(JSON.stringify(wgPeersToConfig(reordered))).toBe(JSON.stringify(wgPeersToConfig(snap)));
  });

  it('builds valid tables that attribute to the public keys', () => {
    const a = new Attributor({ ...wgPeersToConfig(snap), exitNodeCollection: true });
    expect(a.tables.warnings).toEqual([]);
    expect(a.attributeIps('10.0.0.2', '10.0.0.3', 6, 1, 2)).toMatchObject({ source: { id: key(1), publicKey: key(1), type: 'PEER' }, destination: { id: key(2) } });
    expect(a.attributeIps('10.0.0.2', '192.168.4.4', 6, 1, 2).destination.publicKey).toBe(key(2));
    expect(a.attributeIps('10.0.0.2', '10.0.0.77', 6, 1, 2).destination.type).toBe('UNKNOWN'); // overlay, nobody
    expect(a.attributeIps('10.0.0.2', '1.1.1.1', 6, 1, 2)).toMatchObject({ exitNode: true, destination: { id: key(2) } });
  });
});
