// Longest-prefix match: lookups/s of src/attribution/lpm.ts with 10,000 prefixes (IPv4 and IPv6),
// next to baselines measured in the same run: a linear scan over 100 prefixes (what a naive
// resource table does) and a Map hit (one hash lookup: the floor for any table in JavaScript).
// Rounds alternate between variants; the table shows medians and ratios.
//
//   node build/bench/lpm.js [--rounds 5] [--lookups 1000000] [--prefixes 10000]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { maskRaw, raw4ToU32, rawToIp, u32ToRaw4 } from '../src/net/ip';
import { Lpm } from '../src/attribution/lpm';
import { REPO_ROOT } from '../src/util/addon';
import { median } from '../testkit/bench-run';

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    lookups: { type: 'string', default: '1000000' },
    prefixes: { type: 'string', default: '10000' },
  },
});
const ROUNDS = Number(args.rounds);
const N = Number(args.lookups);
const P = Number(args.prefixes);

let seed = 42;
const rnd = (): number => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return (seed >>> 8) ^ (seed << 13);
};
const u32 = (): number => rnd() >>> 0;

// IPv4: a realistic mix of lengths (mostly /24 subnets and /32 hosts, some /16-/20, a /0).
function v4Prefixes(n: number): [string, number][] {
  const out: [string, number][] = [['0.0.0.0/0', 0]];
  const lens = [8, 12, 16, 16, 20, 22, 24, 24, 24, 24, 24, 26, 28, 30, 32, 32, 32];
  for (let i = 1; i < n; i++) {
    const len = lens[u32() % lens.length];
    const addr = ((10 << 24) | (u32() & 0x00ffffff)) >>> 0; // inside 10/8 so prefixes overlap
    out.push([`${rawToIp(maskRaw(u32ToRaw4(i % 7 === 0 ? u32() : addr), len))}/${len}`, i]);
  }
  return out;
}

function v6Prefixes(n: number): [string, number][] {
  const out: [string, number][] = [['::/0', 0]];
  const lens = [32, 40, 48, 48, 56, 64, 64, 64, 96, 112, 127, 128, 128];
  for (let i = 1; i < n; i++) {
    const len = lens[u32() % lens.length];
    let raw = '\x20\x01\x0d\xb8';
    for (let j = 4; j < 16; j++) raw += String.fromCharCode(u32() & 255);
    out.push([`${rawToIp(maskRaw(raw, len))}/${len}`, i]);
  }
  return out;
}

const p4 = v4Prefixes(P);
const p6 = v6Prefixes(P);
const lpm4 = Lpm.build(p4);
const lpm6 = Lpm.build(p6);

// Queries: half inside a random prefix (host bits randomised), half random in 10/8.
const q4 = new Uint32Array(N);
const q4raw: string[] = new Array(N);
for (let i = 0; i < N; i++) {
  let a: number;
  if (i & 1) {
    const e = lpm4.entries[u32() % lpm4.entries.length].prefix;
    const host = e.length >= 32 ? 0 : u32() & (0xffffffff >>> e.length);
    a = (raw4ToU32(e.raw) | host) >>> 0;
  } else {
    a = ((10 << 24) | (u32() & 0x00ffffff)) >>> 0;
  }
  q4[i] = a;
  q4raw[i] = u32ToRaw4(a);
}
const Q6 = Math.min(N, 250_000);
const q6raw: string[] = new Array(Q6);
for (let i = 0; i < Q6; i++) {
  const e = lpm6.entries[u32() % lpm6.entries.length].prefix;
  let raw = '';
  for (let j = 0; j < 16; j++) raw += String.fromCharCode(u32() & 255);
  // keep the prefix bits for odd queries
  q6raw[i] = i & 1 ? e.raw.substring(0, Math.floor(e.length / 8)) + raw.substring(Math.floor(e.length / 8)) : '\x20\x01\x0d\xb8' + raw.substring(4);
}

// Baselines.
const scan = p4.slice(1, 101).map(([t]) => {
  const [a, l] = t.split('/');
  const len = Number(l);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return { net: raw4ToU32(maskRaw(a.split('.').map((x) => String.fromCharCode(Number(x))).join(''), len)), mask, len };
});
const hostMap = new Map<number, number>();
for (let i = 0; i < P; i++) hostMap.set(q4[i * 7 % N], i);

type Variant = { name: string; ops: number; run: () => number };
const variants: Variant[] = [
  {
    name: 'baseline: linear scan, 100 IPv4 prefixes',
    ops: N / 10, // 100 compares per lookup: a tenth of the queries keeps the round short
    run: () => {
      let sum = 0;
      for (let i = 0; i < N / 10; i++) {
        const a = q4[i];
        let best = -1, bestLen = -1;
        for (let j = 0; j < scan.length; j++) {
          const s = scan[j];
          if (((a & s.mask) >>> 0) === s.net && s.len > bestLen) { best = j; bestLen = s.len; }
        }
        sum += best;
      }
      return sum;
    },
  },
  {
    name: 'baseline: Map.get (exact match, number key)',
    ops: N,
    run: () => {
      let sum = 0;
      for (let i = 0; i < N; i++) sum += hostMap.get(q4[i]) ?? -1;
      return sum;
    },
  },
  {
    name: `Lpm IPv4, ${P} prefixes, u32 address (index4)`,
    ops: N,
    run: () => {
      let sum = 0;
      for (let i = 0; i < N; i++) sum += lpm4.index4(q4[i]);
      return sum;
    },
  },
  {
    name: `Lpm IPv4, ${P} prefixes, raw key bytes (indexRaw)`,
    ops: N,
    run: () => {
      let sum = 0;
      for (let i = 0; i < N; i++) sum += lpm4.indexRaw(q4raw[i]);
      return sum;
    },
  },
  {
    name: `Lpm IPv6, ${P} prefixes, raw key bytes (indexRaw)`,
    ops: Q6,
    run: () => {
      let sum = 0;
      for (let i = 0; i < Q6; i++) sum += lpm6.indexRaw(q6raw[i]);
      return sum;
    },
  },
];

// Sanity: the trie agrees with a scan on a sample (a benchmark of wrong answers is worthless).
for (let i = 0; i < 2000; i++) {
  const raw = q4raw[i];
  let best = -1, bestLen = -1;
  lpm4.entries.forEach((e, j) => {
    if (maskRaw(raw, e.prefix.length) === e.prefix.raw && e.prefix.length > bestLen) { best = j; bestLen = e.prefix.length; }
  });
  if (lpm4.indexRaw(raw) !== best) throw new Error(`LPM disagrees with a scan for ${rawToIp(raw)}`);
}

const samples: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v.name, []]));
let sink = 0;
for (const v of variants) sink += v.run(); // warm-up
for (let r = 0; r < ROUNDS; r++) {
  for (const v of variants) {
    const t0 = process.hrtime.bigint();
    sink += v.run();
    samples[v.name].push(v.ops / (Number(process.hrtime.bigint() - t0) / 1e9));
  }
}
const m = Object.fromEntries(variants.map((v) => [v.name, median(samples[v.name])]));
const scanRate = m[variants[0].name], mapRate = m[variants[1].name];
console.log(`lpm: ${ROUNDS} alternating rounds, medians; ${P} IPv4 + ${P} IPv6 prefixes, ${N} queries (checksum ${sink & 0xffff})`);
console.log(`trie memory: IPv4 ${(lpm4.trieBytes / 1048576).toFixed(1)} MiB, IPv6 ${(lpm6.trieBytes / 1048576).toFixed(1)} MiB`);
console.log('| variant | lookups/s | x scan(100) | x Map.get |');
console.log('|---|---:|---:|---:|');
for (const v of variants) {
  console.log(`| ${v.name} | ${Math.round(m[v.name]).toLocaleString('en')} | ${(m[v.name] / scanRate).toFixed(2)} | ${(m[v.name] / mapRate).toFixed(2)} |`);
}
const v4rate = m[variants[3].name], v6rate = m[variants[4].name];
const met = v4rate >= 1e6 && v6rate >= 1e6;
console.log(`target: >= 1,000,000 lookups/s with ${P} prefixes (IPv4 raw ${Math.round(v4rate).toLocaleString('en')}, IPv6 raw ${Math.round(v6rate).toLocaleString('en')}): ${met ? 'met' : 'MISSED'}`);
mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
writeFileSync(
  join(REPO_ROOT, 'bench', 'results', 'lpm.json'),
  JSON.stringify({ when: new Date().toISOString(), rounds: ROUNDS, lookups: N, prefixes: P, medians: m, samples, trieBytes: { v4: lpm4.trieBytes, v6: lpm6.trieBytes }, target: { lookupsPerSec: 1e6, met } }, null, 2),
);
