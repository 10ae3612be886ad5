// Test gating: privileged suites run where there is root, and always under CI=true.
import { spawnSync, SpawnSyncReturns } from 'node:child_process';
import { chmodSync, mkdtempSync, rmdirSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
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

/**
 * Runs a command as user nobody (65534) with only the given capabilities (null: none), seeing the
 * checkout at a path nobody can reach: a bind mount of REPO under /tmp, in a mount namespace of
 * the command's own (nothing is left mounted). A checkout inside a directory only root may enter
 * (/root/wgflow, a 0700 home) is otherwise out of nobody's reach. build() gets that path.
 */
export function spawnAsNobody(caps: string | null, build: (repo: string) => string[]): SpawnSyncReturns<string> {
  const view = mkdtempSync(join(tmpdir(), 'wgflow-view-'));
  chmodSync(view, 0o755);
  try {
    const priv = caps === null ? ['--inh-caps=-all', '--bounding-set=-all'] : [`--inh-caps=${caps}`, `--ambient-caps=${caps}`];
    return spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" "$1" && shift && exec "$@"', REPO, view,
      'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...priv, ...build(view)], { encoding: 'utf8' });
  } finally {
    rmdirSync(view); // empty here: the bind mount lived in the command's namespace only
  }
}
