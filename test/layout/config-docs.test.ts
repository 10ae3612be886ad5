// docs/config.md says what the code does: its key table is exactly what the schema generates
// (every key, its one default, its flag), and its flag table has every flag with its variable.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RUN_FLAGS } from '../../src/config/config';
import { withKeysReference } from '../../src/config/reference';

const DOC = join(__dirname, '..', '..', 'docs', 'config.md');

describe('docs/config.md', () => {
  it('holds the key table generated from the schema (run `make docs` after changing a key or default)', () => {
    const text = readFileSync(DOC, 'utf8');
    const regenerated = withKeysReference(text);
    expect(regenerated, 'docs/config.md lost its keys:begin/keys:end markers').not.toBeNull();
    expect(text === regenerated, 'docs/config.md is out of date: run `make docs`').toBe(true);
  });

  it('lists every flag of wgflow run with its environment variable and key', () => {
    const text = readFileSync(DOC, 'utf8');
    const table = text.slice(text.indexOf('## Flags and environment variables'));
    for (const f of RUN_FLAGS) {
      const row = table.split('\n').find((l) => l.includes(`\`--${f.flag} `) || l.includes(`\`--${f.flag}\``));
      expect(row, `--${f.flag} has no row`).toBeDefined();
      expect(row, `--${f.flag}'s row names ${f.env}`).toContain(f.env);
      expect(row, `--${f.flag}'s row names ${f.path}`).toContain(`\`${f.path}\``);
    }
  });
});
