// Test gating: privileged suites run where there is root, and always under CI=true.
import { release } from 'node:os';
import { join } from 'node:path';
import { describe } from 'vitest';

export { Capture, killBackground, Probe, run, sleep, spawnIn, waitForLine } from './procs';

export const REPO = join(__dirname, '..', '..');
export const IS_ROOT = process.getuid?.() === 0;
export const IN_CI = process.env.CI === 'true';

/** TCX links exist from kernel 6.6; before that attach('auto') falls back to clsact. */
export const TCX = ((): boolean => {
  const [major, minor] = release().split('.').map(Number);
  return major > 6 || (major === 6 && minor >= 6);
})();
export const AUTO_MODE = TCX ? 'tcx' : 'clsact';

/**
 * describe() for tests that need root, BPF and network namespaces. They skip with a message only
 * on a machine without root; under CI=true they always run (and fail loudly if they cannot).
 */
export function describePrivileged(name: string, fn: () => void): void {
  if (IS_ROOT || IN_CI) {
    describe(name, fn);
  } else {
    console.warn(`skipping "${name}": needs root (BPF, network namespaces); run the tests as root`);
    describe.skip(name, fn);
  }
}
