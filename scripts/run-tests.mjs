#!/usr/bin/env node
// Runs vitest and prints the one summary line CI reads: "N passed, N failed, N skipped".
// Under CI=true a skipped test counts as a failure: privileged tests must really run there.
import { spawnSync } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'wgflow-vitest-'));
const out = join(dir, 'report.json');
const args = ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`, ...process.argv.slice(2)];
const run = spawnSync('npx', args, { stdio: 'inherit' });

let passed = 0, failed = 0, skipped = 0;
try {
  const report = JSON.parse(readFileSync(out, 'utf8'));
  for (const file of report.testResults ?? []) {
    let fileFailures = 0;
    for (const t of file.assertionResults ?? []) {
      if (t.status === 'passed') passed += 1;
      else if (t.status === 'failed') fileFailures += 1;
      else skipped += 1;
    }
    // A file that failed with no failing test failed outside them (load error, a hook): count it.
    if (file.status === 'failed' && fileFailures === 0) {
      fileFailures = 1;
      console.error(`failed outside its tests: ${file.name}: ${(file.message ?? '').split('\n')[0]}`);
    }
    failed += fileFailures;
  }
} catch (err) {
  console.error(`could not read the vitest report (${err.message}); vitest exited with ${run.status}`);
  failed += 1;
}
rmSync(dir, { recursive: true, force: true });
const ci = process.env.CI === 'true';
if (ci && skipped > 0) console.error(`CI=true: ${skipped} skipped test(s) count as failures`);
if (run.status !== 0 && failed === 0) {
  console.error(`vitest exited with ${run.status} without a failed test in its report: counted as one failure`);
  failed = 1;
}
const bad = failed > 0 || (ci && skipped > 0) || run.status !== 0;
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(bad ? 1 : 0);
