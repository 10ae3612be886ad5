// A directory owned by one process: DIR/<name> holds the owner's pid. A second live process is
// refused; a lock left by a dead process (kill -9) is taken over. Used by the spool and by the
// JSON-lines writer: two writers on one directory would cut each other's lines.
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class PidLock {
  private constructor(readonly path: string) {}

  /**
   * Takes path for this process. inUse(pid) makes the error for a live holder; other failures
   * (cannot write) throw with the path in the message.
   */
  static acquire(path: string, inUse: (pid: number) => Error): PidLock {
    const me = String(process.pid);
    try {
      writeFileSync(path, me, { flag: 'wx' });
      return new PidLock(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`cannot write ${path}: ${(err as Error).message}`);
    }
    const holder = PidLock.holder(path);
    if (holder !== null && holder !== process.pid && pidAlive(holder)) throw inUse(holder);
    // Left by a process that died: take it over (rename: the file is never half written).
    const tmp = `${path}.${me}`;
    writeFileSync(tmp, me);
    renameSync(tmp, path);
    // Two processes taking over the same stale lock: the last rename wins, the other sees it.
    const now = PidLock.holder(path);
    if (now !== process.pid && now !== null) throw inUse(now);
    return new PidLock(path);
  }

  /** The pid in the lock file; null when there is none or it is not a pid. */
  static holder(path: string): number | null {
    try {
      const n = Number(readFileSync(path, 'utf8').trim());
      return Number.isInteger(n) && n > 0 ? n : null;
    } catch {
      return null;
    }
  }

  /** Removes the lock if it is still this process's. */
  release(): void {
    if (PidLock.holder(this.path) === process.pid) {
      try {
        unlinkSync(this.path);
      } catch {
        // Already gone.
      }
    }
  }
}
