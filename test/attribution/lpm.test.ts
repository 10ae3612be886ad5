// Longest-prefix match: edge cases and a randomized comparison with a linear scan.
import { describe, expect, it } from 'vitest';
import { ipToRaw, maskRaw, parseIpRaw, parsePrefix, prefixContains, rawToIp, rawToIpAt } from '../../src/net/ip';
import { Lpm } from '../../src/attribution/lpm';

describe('addresses and prefixes', () => {
  it('parses IPv4, IPv6 (compressed, embedded IPv4, zone), and rejects junk', () => {
    expect(rawToIp(ipToRaw('10.1.2.3'))).toBe('10.1.2.3');
    expect(rawToIp(ipToRaw('fd00:0:0::1'))).toBe('fd00::1');
    expect(rawToIp(ipToRaw('2001:db8::1.2.3.4'))).toBe('2001:db8::102:304');
    expect(rawToIp(ipToRaw('fe80::1%wg0'))).toBe('fe80::1');
    expect(rawToIp(ipToRaw('[2001:db8::]'))).toBe('2001:db8::');
    expect(rawToIp(ipToRaw('::'))).toBe('::');
    expect(ipToRaw('::ffff:10.0.0.1')).toBe(ipToRaw('10.0.0.1')); // normalised
    expect(rawToIp(parseIpRaw('::ffff:10.0.0.1')!.raw)).toBe('::ffff:10.0.0.1');
    for (const bad of ['', '1.2.3', '1.2.3.256', '1.2.3.4.5', 'a.b.c.d', '1::2::3', '1:2:3:4:5:6:7:8:9', 'fd00::g', '12345::', ':::']) {
      expect(parseIpRaw(bad), bad).toBeNull();
    }
  });

  it('rawToIpAt formats an address inside a longer string (a flow key id) like rawToIp', () => {
    const v4 = ipToRaw('10.1.2.3') + ipToRaw('192.168.255.0') + 'xxxxxxxx';
    expect(rawToIpAt(v4, 0, 4)).toBe('10.1.2.3');
    expect(rawToIpAt(v4, 4, 4)).toBe('192.168.255.0');
    const a6 = parseIpRaw('::ffff:10.0.0.1')!.raw, b6 = ipToRaw('fd00::1');
    const v6 = a6 + b6 + 'xxxxxxxx';
    expect(rawToIpAt(v6, 0, 6)).toBe(rawToIp(a6));
    expect(rawToIpAt(v6, 16, 6)).toBe('fd00::1');
  });

  it('prefixes: host bits cleared, bare addresses are host routes, mapped IPv6 becomes IPv4', () => {
    expect(parsePrefix('10.1.2.3/8')).toMatchObject({ family: 4, length: 8, raw: ipToRaw('10.0.0.0') });
    expect(parsePrefix('10.1.2.3')).toMatchObject({ family: 4, length: 32 });
    expect(parsePrefix('fd00::1')).toMatchObject({ family: 6, length: 128 });
    expect(parsePrefix('::ffff:10.0.0.0/104')).toMatchObject({ family: 4, length: 8, raw: ipToRaw('10.0.0.0') });
    expect(parsePrefix('::/0')).toMatchObject({ family: 6, length: 0 });
    expect(() => parsePrefix('10.0.0.0/33')).toThrow(/0-32/);
    expect(() => parsePrefix('fd00::/129')).toThrow(/0-128/);
    expect(() => parsePrefix('10.0.0.0/x')).toThrow();
    expect(() => parsePrefix('nope/8')).toThrow(/bad address/);
    expect(prefixContains(parsePrefix('10.0.0.0/8'), ipToRaw('10.9.9.9'))).toBe(true);
    expect(maskRaw(ipToRaw('255.255.255.255'), 20)).toBe(ipToRaw('255.255.240.0'));
  });
});

describe('Lpm', () => {
  const t = Lpm.build<string>([
    ['0.0.0.0/0', 'default4'],
    ['10.0.0.0/8', 'ten'],
    ['10.1.0.0/16', 'ten-one'],
    ['10.1.2.0/23', 'odd-23'],
    ['10.1.2.3/32', 'host'],
    ['10.1.2.4/31', 'pair'],
    ['192.168.0.0/17', 'v4-17'],
    ['fd00::/8', 'ula'],
    ['fd00:1::/32', 'ula-1'],
    ['fd00:1::1/128', 'host6'],
    ['fd00:1::/127', 'pair6'],
    ['2001:db8::/33', 'doc33'],
    ['::ffff:172.16.0.0/108', 'mapped-as-v4-12'],
  ]);

  it('picks the longest of overlapping prefixes', () => {
    expect(t.lookup('10.1.2.3')).toBe('host');
    expect(t.lookup('10.1.2.2')).toBe('odd-23');
    expect(t.lookup('10.1.3.255')).toBe('odd-23');
    expect(t.lookup('10.1.4.0')).toBe('ten-one');
    expect(t.lookup('10.1.2.5')).toBe('pair');
    expect(t.lookup('10.1.2.6')).toBe('odd-23');
    expect(t.lookup('10.200.0.1')).toBe('ten');
    expect(t.lookup('192.168.127.255')).toBe('v4-17');
    expect(t.lookup('192.168.128.0')).toBe('default4');
  });

  it('/0 matches everything of its family only', () => {
    expect(t.lookup('8.8.8.8')).toBe('default4');
    expect(t.lookup('2a00::1')).toBeUndefined();
    const v6default = Lpm.build([['::/0', 'd6']]);
    expect(v6default.lookup('2a00::1')).toBe('d6');
    expect(v6default.lookup('1.1.1.1')).toBeUndefined();
    expect(v6default.lookup('::ffff:1.1.1.1')).toBeUndefined(); // mapped addresses are IPv4
  });

  it('IPv6: /128 host routes, /127, odd lengths', () => {
    expect(t.lookup('fd00:1::1')).toBe('host6');
    expect(t.lookup('fd00:1::')).toBe('pair6');
    expect(t.lookup('fd00:1::2')).toBe('ula-1');
    expect(t.lookup('fd00:2::1')).toBe('ula');
    expect(t.lookup('fdff::1')).toBe('ula');
    expect(t.lookup('fe00::1')).toBeUndefined();
    expect(t.lookup('2001:db8:7fff::1')).toBe('doc33');
    expect(t.lookup('2001:db8:8000::1')).toBeUndefined();
  });

  it('IPv4-mapped IPv6 addresses match IPv4 prefixes, and mapped prefixes are IPv4', () => {
    expect(t.lookup('::ffff:10.1.2.3')).toBe('host');
    expect(t.lookup('::ffff:8.8.8.8')).toBe('default4');
    expect(t.lookup('172.31.255.255')).toBe('mapped-as-v4-12');
    expect(t.match('::ffff:172.16.1.1')).toMatchObject({ value: 'mapped-as-v4-12', prefix: { family: 4, length: 12 } });
    const raw6 = parseIpRaw('::ffff:10.1.2.3')!.raw;
    expect(t.entries[t.index6(raw6)].value).toBe('host');
  });

  it('identical prefixes: the last one given wins; invalid text is no match', () => {
    const d = Lpm.build([['10.0.0.0/8', 'a'], ['10.0.0.0/8', 'b']]);
    expect(d.lookup('10.1.1.1')).toBe('b');
    expect(d.size).toBe(1);
    expect(d.lookup('not an ip')).toBeUndefined();
    expect(Lpm.build([]).lookup('10.0.0.1')).toBeUndefined();
    expect([...d]).toEqual([['10.0.0.0/8', 'b']]);
  });

  it('agrees with a linear scan on random prefixes and addresses (IPv4 and IPv6)', () => {
    let seed = 12345;
    const rnd = (): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    for (const family of [4, 6] as const) {
      const n = family === 4 ? 4 : 16;
      const randRaw = (): string => Array.from({ length: n }, (_, i) => String.fromCharCode(i < 2 ? rnd() & 3 : rnd() & 255)).join('');
      const prefixes = Array.from({ length: 800 }, () => {
        const len = rnd() % (8 * n + 1);
        return { raw: maskRaw(randRaw(), len), length: len };
      });
      const text = prefixes.map((p) => `${rawToIp(p.raw)}/${p.length}`);
      const table = Lpm.build(text.map((s, i) => [s, i] as const));
      for (let q = 0; q < 5000; q++) {
        // Queries near prefixes (shared high bits) and random ones.
        const base = q % 2 === 0 ? prefixes[rnd() % prefixes.length].raw : randRaw();
        const raw = base.substring(0, n - 1) + String.fromCharCode(rnd() & 255);
        let best = -1, bestLen = -1;
        prefixes.forEach((p, i) => {
          if (maskRaw(raw, p.length) === p.raw && p.length >= bestLen) {
            // identical prefixes: the last occurrence wins, as in Lpm
            best = i;
            bestLen = p.length;
          }
        });
        const got = table.getRaw(raw);
        expect(got === undefined ? -1 : text[got] === text[best] ? best : got).toBe(best);
      }
    }
  });
});

describe('one set of address rules (src/net/ip.ts)', () => {
  it('accepts exactly what Node accepts (no zones), with the bytes the WHATWG URL parser gives', async () => {
    const { isIP } = await import('node:net');
    const { parseIp, ipv6FromBytes } = await import('../../src/net/ip');
    const hexBytes = (canonical: string): string => {
      // The URL serializer writes IPv6 as hex groups only: expand them.
      const [head, tail] = canonical.split('::');
      const g = (s: string | undefined): string[] => (s ? s.split(':') : []);
      const groups = tail === undefined ? g(head) : [...g(head), ...new Array(8 - g(head).length - g(tail).length).fill('0'), ...g(tail)];
      return groups.map((x) => x.padStart(4, '0')).join('');
    };
    let x = 987654321;
    const alphabets = ['0123456789.', '0123456789abcdefABCDEF:.', '0123:f.%'];
    const samples = ['::ffff:1.2.3.4', '1:2:3:4:5:6:1.2.3.4', '::1.2.3.4', '1::1.2.3.4', '1:2:3:4:5:6::1.2.3.4', 'a:1.2.3.4', '::', '::1', 'fe80::1%wg0', '01.2.3.4', '0.0.0.0', '1.2.3.04'];
    for (let n = 0; n < 30000; n++) {
      x = (x * 1103515245 + 12345) >>> 0;
      const alpha = alphabets[x % alphabets.length];
      let t = '';
      for (let len = (x >>> 4) % 24; len > 0; len--) {
        x = (x * 1103515245 + 12345) >>> 0;
        t += alpha[(x >>> 8) % alpha.length];
      }
      samples.push(t);
    }
    for (const t of samples) {
      const b = parseIp(t);
      const node = t.includes('%') ? 0 : isIP(t);
      expect(b === null ? 0 : b.length === 4 ? 4 : 6, t).toBe(node);
      if (b !== null && b.length === 16) {
        expect(b.toString('hex'), t).toBe(hexBytes(new URL(`http://[${t}]/`).hostname.slice(1, -1)));
        expect(parseIp(ipv6FromBytes(b))?.equals(b), t).toBe(true);
      }
    }
  });
});
