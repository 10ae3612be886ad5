// mkdir -p without fs.mkdirSync's { recursive: true }: on Node 20 that spins forever for a path
// under /proc (mkdir answers ENOENT though the parent exists). This walks up by itself and
// fails with the real error.
import { mkdirSync, statSync } from 'node:fs';
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
