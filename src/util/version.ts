// wgflow's version, from package.json (one place for the CLI and the status report).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** package.json's version, found from dist/cli, build/src/cli or a test build alike. */
export function version(): string {
  let dir = __dirname;
  for (;;) {
    const p = join(dir, 'package.json');
    if (existsSync(p)) {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'wgflow' && pkg.version) return pkg.version;
    }
    const up = dirname(dir);
    if (up === dir) return 'unknown';
    dir = up;
  }
}
