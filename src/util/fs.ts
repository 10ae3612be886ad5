// mkdir -p without fs.mkdirSync's { recursive: true }: on Node 20 that spins forever for a path
// under /proc (mkdir answers ENOENT though the parent exists). This walks up by itself and
// fails with the real error.
import { closeSync, fdatasyncSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

export function ensureDir(dir: string): void {
  try {
    mkdirSync(dir);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      if (!statSync(dir).isDirectory()) throw Object.assign(new Error(`ENOTDIR: ${dir} exists and is not a directory`), { code: 'ENOTDIR' });
      return;
    }
    const parent = dirname(dir);
    if (code !== 'ENOENT' || parent === dir) throw err;
    // The parent must exist first; if it already did, the ENOENT was the final answer.
    let parentExisted = true;
    try {
      statSync(parent);
    } catch {
      parentExisted = false;
    }
    if (parentExisted) throw err;
    ensureDir(parent);
  }
  try {
    mkdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/** Make a rename or create in dir durable. Some filesystems refuse fsync on a directory; the files themselves are synced anyway. */
export function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, 'r');
    fdatasyncSync(fd);
  } catch {
    // not supported here
  } finally {
    if (fd !== null) closeSync(fd);
  }
}
