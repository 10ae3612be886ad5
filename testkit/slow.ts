// How much slower this machine runs the tests than the machines their time budgets were set on,
// so that waits and timeouts scale instead of being constants. In the emulated VM (QEMU TCG,
// vm/run.sh) Node starts ~25x slower than on the host (`node -e 0`: ~2 s against ~80 ms).
//
// Measured once per process: the time to start `node -e 0`. WGFLOW_TIME_SCALE=N overrides the scale.
import { spawnSync } from 'node:child_process';

function nodeStartMs(): number {
  let best = Infinity;
  for (let i = 0; i < 2; i++) {
    const t0 = process.hrtime.bigint();
    spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return best;
}

/** How long starting a Node process takes here, in ms (the best of two). */
export const NODE_START_MS = nodeStartMs();

/** 1 on the project's machines (node starts in under 150 ms); ~20 under emulation. At most 40. */
export const TIME_SCALE = ((): number => {
  const forced = Number(process.env.WGFLOW_TIME_SCALE);
  if (Number.isFinite(forced) && forced >= 1) return forced;
  return Math.min(40, Math.max(1, Math.round(NODE_START_MS / 100)));
})();

/** A time budget (an upper bound to wait) in ms, scaled for this machine. */
export function budget(ms: number): number {
  return Math.round(ms * TIME_SCALE);
}

/**
 * An idle timeout in seconds for tests whose flow pauses between two commands (each starts a Node
 * process): the base, or four Node starts when that is longer, so a pause is never taken for the
 * flow's end. 2 s stays 2 s on the host; ~8 s under emulation.
 */
export function idleTimeoutS(base: number): number {
  return Math.max(base, Math.ceil((4 * NODE_START_MS) / 1000));
}
