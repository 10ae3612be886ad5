// Precedence of the attribution sources (src/attribution/sources/merge.ts): the file > NetBird's
// API > the WireGuard interfaces, each rule of docs/attribution.md ("Live sources and precedence").
import { describe, expect, it } from 'vitest';
import { Attributor } from '../../src/attribution/attributor';
import type { AttributionConfig } from '../../src/attribution/config';
import { mergeSources } from '../../src/attribution/sources/merge';
import { wgPeersToConfig } from '../../src/attribution/sources/wireguard';

const KEY_A = 'aGFuZHNoYWtlLWtleS1hLTAwMDAwMDAwMDAwMDAwMDA=';
const KEY_B = 'aGFuZHNoYWtlLWtleS1iLTAwMDAwMDAwMDAwMDAwMDA=';

/** Two peers on wg0: A (100.64.0.2, routes 192.168.7.0/24), B (100.64.0.3); C only on the API's side. */
const wg = (): AttributionConfig => wgPeersToConfig({
  peers: [
    { ifname: 'wg0', publicKey: KEY_A, allowedIps: ['100.64.0.2/32', '192.168.7.0/24'], endpoint: '198.51.100.2:51820', lastHandshakeS: 1 },
    { ifname: 'wg0', publicKey: KEY_B, allowedIps: ['100.64.0.3/32'], endpoint: '', lastHandshakeS: 0 },
  ],
  ownPrefixes: ['100.64.0.0/24'],
  errors: [],
});

const api = (): AttributionConfig => ({
  overlay: ['100.64.0.0/10'],
  peers: [
    { id: 'nb-alice', name: 'alice-laptop', ip: '100.64.0.2', groups: ['g-devs'], user: { id: 'u-alice', name: 'Alice', email: 'alice@example.com' } },
    { id: 'nb-carol', name: 'carol', ip: '100.64.0.9' },
  ],
  resources: [{ id: 'res-lan', name: 'lan', type: 'SUBNET', prefixes: ['192.168.1.0/24'] }],
  policies: [{ id: 'rule-1', name: 'devs to lan', action: 'accept', sources: [{ group: 'g-devs' }], destinations: [{ resource: 'res-lan' }] }],
});

const byId = (c: AttributionConfig, id: string) => c.peers?.find((p) => p.id === id);

describe('mergeSources', () => {
  it('WireGuard alone: one peer per public key, the interface network as overlay', () => {
    const m = mergeSources({}, null, wg());
    expect(m.overlay).toEqual(['100.64.0.0/24']);
    expect(m.peers?.map((p) => p.id).sort()).toEqual([KEY_A, KEY_B].sort());
    expect(byId(m, KEY_A)).toMatchObject({ publicKey: KEY_A, ips: ['100.64.0.2'], allowedIps: ['192.168.7.0/24'] });
  });

  it('an API peer absorbs the WireGuard peer with its address: NetBird ids, the interface key and routes', () => {
    const m = mergeSources({}, api(), wg());
    expect(byId(m, KEY_A)).toBeUndefined();
    expect(byId(m, 'nb-alice')).toMatchObject({ name: 'alice-laptop', publicKey: KEY_A, allowedIps: ['192.168.7.0/24'], user: { id: 'u-alice' } });
    // B is not in the API: it stays, by its key; carol is not on the interface: she stays too.
    expect(byId(m, KEY_B)).toMatchObject({ publicKey: KEY_B });
    expect(byId(m, 'nb-carol')).toBeDefined();
    expect(m.overlay?.sort()).toEqual(['100.64.0.0/10', '100.64.0.0/24']);
    expect(m.resources?.map((r) => r.id)).toEqual(['res-lan']);
    expect(m.policies?.map((p) => p.id)).toEqual(['rule-1']);
  });

  it('a file peer replaces what it matches by id, public key or address, and keeps the key and routes it does not write', () => {
    const file: AttributionConfig = {
      peers: [
        { id: 'nb-alice', name: 'Alice (by hand)', ip: '100.64.0.2' }, // same id as the API's
        { id: 'build-box', name: 'build box', publicKey: KEY_B }, // same key as the interface's
        { id: 'printer', ip: '100.64.0.9' }, // same address as the API's carol
      ],
    };
    const m = mergeSources(file, api(), wg());
    expect(m.peers?.map((p) => p.id).sort()).toEqual(['build-box', 'nb-alice', 'printer']);
    const alice = byId(m, 'nb-alice');
    expect(alice).toMatchObject({ name: 'Alice (by hand)', publicKey: KEY_A, allowedIps: ['192.168.7.0/24'] });
    expect(alice?.user).toBeUndefined(); // the file's entry is the whole entry: no API user under it
    expect(byId(m, 'build-box')).toMatchObject({ publicKey: KEY_B });
    expect(byId(m, 'printer')?.name).toBeUndefined();
  });

  it('file resources and policies replace the API entries with the same id; the file overlay wins', () => {
    const file: AttributionConfig = {
      overlay: ['100.64.0.0/16'],
      resources: [{ id: 'res-lan', name: 'lan (by hand)', type: 'SUBNET', prefixes: ['192.168.1.0/25'] }],
      policies: [{ id: 'rule-9', name: 'extra', action: 'drop', sources: [{ peer: 'nb-carol' }], destinations: [{ resource: 'res-lan' }] }],
    };
    const m = mergeSources(file, api(), wg());
    expect(m.overlay).toEqual(['100.64.0.0/16']);
    expect(m.resources).toEqual(file.resources);
    expect(m.policies?.map((p) => p.id)).toEqual(['rule-9', 'rule-1']);
  });

  it('the merged tables attribute as the precedence says', () => {
    const a = new Attributor(mergeSources({ peers: [{ id: 'build-box', name: 'build box', publicKey: KEY_B }] }, api(), wg()));
    // Alice (NetBird id, WireGuard key) to the LAN resource under NetBird's rule.
    const r = a.attributeIps('100.64.0.2', '192.168.1.20', 6, 40000, 22, 'INGRESS');
    expect(r.source).toMatchObject({ id: 'nb-alice', publicKey: KEY_A });
    expect(r.destination).toMatchObject({ id: 'res-lan' });
    expect(r.ruleId).toBe('rule-1');
    expect(r.user.id).toBe('u-alice');
    // Behind Alice's route: the address gets her key.
    expect(a.attributeIps('192.168.7.5', '100.64.0.3', 17, 40000, 5000, 'INGRESS').source).toMatchObject({ publicKey: KEY_A });
    // B: the file's name, the interface's address.
    expect(a.attributeIps('100.64.0.3', '100.64.0.2', 17, 40000, 5000, 'INGRESS').source).toMatchObject({ id: 'build-box', name: 'build box', publicKey: KEY_B });
  });
});
