// Background processes for tests and benchmarks: commands in namespaces (killed by PID), waiting
// for a line of output, running to completion. No vitest here, so benchmarks can use it too.
import { ChildProcess, spawn } from 'node:child_process';
import { budget } from './slow';

/** Processes a test started; killBackground() ends them by PID. */
const background = new Set<ChildProcess>();

export function spawnIn(ns: string | null, cmd: string, args: string[]): ChildProcess {
  const full = ns ? ['netns', 'exec', ns, cmd, ...args] : args;
  const child = spawn(ns ? 'ip' : cmd, full, { stdio: ['pipe', 'pipe', 'pipe'] });
  background.add(child);
  child.on('exit', () => background.delete(child));
  return child;
}

export async function killBackground(): Promise<void> {
  const procs = [...background];
  for (const p of procs) if (p.pid && p.exitCode === null) p.kill('SIGKILL');
  await Promise.all(procs.map((p) => (p.exitCode !== null || p.signalCode !== null ? null : new Promise((r) => p.once('exit', r)))));
}

/** Resolve with the first line of child's stdout (or stderr) that matches re. */
export function waitForLine(child: ChildProcess, re: RegExp, timeoutMs = 10_000, stream: 'stdout' | 'stderr' = 'stdout'): Promise<string> {
  timeoutMs = budget(timeoutMs);
  return new Promise((resolve, reject) => {
    let buf = '';
    const src = stream === 'stdout' ? child.stdout : child.stderr;
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re} (got: ${buf.slice(-500)})`)), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const lines = buf.split('\n');
      for (const l of lines) {
        if (re.test(l)) {
          clearTimeout(timer);
          src?.off('data', onData);
          resolve(l);
          return;
        }
      }
    };
    src?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`process exited (${code}) before ${re}: ${buf.slice(-500)}`));
    });
  });
}

/** Run a command to completion (inside ns if given); reject with its stderr on failure. */
export function run(ns: string | null, cmd: string, args: string[], timeoutMs = 30_000): Promise<string> {
  timeoutMs = budget(timeoutMs);
  return new Promise((resolve, reject) => {
    const child = spawnIn(ns, cmd, args);
    let out = '', err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.trim()}`));
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
