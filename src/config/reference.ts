// docs/config.md's list of every key and its default, made from the schema itself (one default
// per setting, in the component that owns it). test/layout/config-docs.test.ts checks that the
// file holds exactly this; `make docs` writes it.
import { configLeaves, configSchema, RUN_FLAGS } from './config';

const BEGIN = '<!-- keys:begin (generated from src/config/config.ts by `make docs`; do not edit) -->';
const END = '<!-- keys:end -->';

/** The generated block: a table of every key, its default and the flag that sets it. */
export function keysReference(): string {
  const defaults = configSchema({ reporter_id: '(hostname)' }, '') as unknown as Record<string, unknown>;
  const list = configLeaves(defaults);
  const flagOf = new Map<string, string>(RUN_FLAGS.map((f) => [f.path, `\`--${f.flag}\``]));
  const text = (v: unknown): string => (v === undefined ? 'unset' : v === '(hostname)' ? 'the hostname' : `\`${JSON.stringify(v)}\``);
  const lines = ['| key | default | flag |', '|---|---|---|'];
  for (const [key, v] of list) if (!key.startsWith('attribution.')) lines.push(`| \`${key}\` | ${text(v)} | ${flagOf.get(key) ?? ''} |`);
  lines.push('| `attribution` | none | (see [attribution.md](attribution.md)) |');
  return `${BEGIN}\n${lines.join('\n')}\n${END}`;
}

/** The markdown with its generated block replaced (or null when it has no markers). */
export function withKeysReference(markdown: string): string | null {
  const a = markdown.indexOf(BEGIN), b = markdown.indexOf(END);
  if (a < 0 || b < a) return null;
  return markdown.slice(0, a) + keysReference() + markdown.slice(b + END.length);
}
