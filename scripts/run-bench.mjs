#!/usr/bin/env node
// `make bench`: runs every benchmark part that exists (or those named: node scripts/run-bench.mjs datapath lpm),
// prints each table, and writes bench/results/all.json. Parts compare against baselines measured in
// the same run; nothing here asserts absolute times.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const parts = ['datapath', 'ring', 'lpm', 'flow', 'export', 'tunnel', 'churn', 'scale', 'latency', 'jetstream', 'drops'];
const chosen = process.argv.slice(2).length ? process.argv.slice(2) : parts;
const results = {};
let failed = 0;
for (const part of chosen) {
  const script = join(root, 'build', 'bench', `${part}.js`);
  if (!existsSync(script)) {
    console.log(`\n## ${part}: not built (${script} missing), skipped`);
    continue;
  }
  console.log(`\n## ${part}`);
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [script], { stdio: 'inherit', cwd: root });
  if (r.status !== 0) failed += 1;
  const out = join(root, 'bench', 'results', `${part}.json`);
  results[part] = { exitCode: r.status, seconds: (Date.now() - t0) / 1000, result: existsSync(out) ? JSON.parse(readFileSync(out, 'utf8')) : null };
}
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
writeFileSync(join(root, 'bench', 'results', 'all.json'), JSON.stringify({ when: new Date().toISOString(), results }, null, 2));
console.log(`\nresults: bench/results/all.json`);
process.exit(failed ? 1 : 0);
