// The attribution section as the config file writes it: snake_case in, AttributionConfig out,
// every mistake a ConfigError at its exact key.
import { describe, expect, it } from 'vitest';
import { attributionSchema } from '../../src/attribution/schema';
import { closest, ConfigError } from '../../src/util/check';

const KEY = Buffer.alloc(32, 3).toString('base64');

describe('attributionSchema', () => {
  it('maps the file keys to the tables config', () => {
    const c = attributionSchema({
      overlay: ['100.64.0.0/10'],
      peers: [{ id: 'a', ip: '100.64.0.1', public_key: KEY, dns_label: 'a.wg', user: { id: 'u', email: 'a@example.com' } }],
      policies: [{ id: 'p', action: 'accept', sources: [{ peer: 'a' }], destinations: [{ prefix: '10.0.0.0/8' }], ports: [22, '80-81', { from: 1, to: 2 }], protocol: 6 }],
    }, 'attribution');
    expect(c.peers?.[0]).toMatchObject({ id: 'a', publicKey: KEY, dnsLabel: 'a.wg', user: { id: 'u', email: 'a@example.com' } });
    expect(c.policies?.[0]).toMatchObject({ sources: [{ peer: 'a' }], destinations: [{ prefix: '10.0.0.0/8' }], protocol: 6 });
  });

  it('names the key of each mistake', () => {
    const err = (v: unknown): string => {
      try {
        attributionSchema(v, 'attribution');
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as Error).message;
      }
      return 'accepted';
    };
    expect(err({ peers: 'str' })).toBe('attribution.peers: expected a list, got "str"');
    expect(err({ peers: [{ id: 'a', public_key: 'QUxJQ0U=' }] })).toMatch(/^attribution\.peers\[0\]\.public_key: expected a base64 WireGuard public key/);
    expect(err({ resource: [] })).toMatch(/^attribution\.resource: unknown key, did you mean "resources"\?/);
    expect(err({ policies: [{ id: 'p', action: 'accept', sources: [{}], destinations: [] }] })).toBe('attribution.policies[0].sources[0]: expected exactly one of peer, group, prefix or resource, got none');
    expect(err({ policies: [{ id: 'p', action: 'accept', sources: [], destinations: [], ports: [70000] }] })).toBe('attribution.policies[0].ports[0]: port 70000 is not 0-65535');
  });
});

describe('closest (did you mean)', () => {
  it('finds slips, transpositions and camelCase; nothing when far', () => {
    expect(closest('grups', ['id', 'groups', 'user'])).toBe('groups');
    expect(closest('emial', ['id', 'name', 'email'])).toBe('email');
    expect(closest('publicKey', ['public_key', 'dns_label'])).toBe('public_key');
    expect(closest('colour', ['id', 'name', 'os', 'groups'])).toBeUndefined();
  });
});
