// A small validating parser for configuration: each checker turns unknown input into a typed
// value or throws a ConfigError naming the exact key and what was expected.

export class ConfigError extends Error {
  constructor(readonly path: string, readonly problem: string) {
    super(path ? `${path}: ${problem}` : problem);
    this.name = 'ConfigError';
  }
}

export type Check<T> = (value: unknown, path: string) => T;

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return JSON.stringify(v);
  return `${typeof v} ${String(v)}`;
}

export const str = (opts: { nonEmpty?: boolean; pattern?: RegExp; hint?: string } = {}): Check<string> => (v, path) => {
  if (typeof v !== 'string') throw new ConfigError(path, `expected a string, got ${describe(v)}`);
  if (opts.nonEmpty && v.length === 0) throw new ConfigError(path, 'must not be empty');
  if (opts.pattern && !opts.pattern.test(v)) throw new ConfigError(path, `expected ${opts.hint ?? `a string matching ${opts.pattern}`}, got ${describe(v)}`);
  return v;
};

export const int = (min: number, max: number): Check<number> => (v, path) => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(path, `expected an integer from ${min} to ${max}, got ${describe(v)}`);
  }
  return v;
};

export const bool: Check<boolean> = (v, path) => {
  if (typeof v !== 'boolean') throw new ConfigError(path, `expected true or false, got ${describe(v)}`);
  return v;
};

/** "on"/"off" as operators write it, or a boolean. */
export const onOff: Check<boolean> = (v, path) => {
  if (typeof v === 'boolean') return v;
  if (v === 'on') return true;
  if (v === 'off') return false;
  throw new ConfigError(path, `expected "on" or "off", got ${describe(v)}`);
};

export const oneOf = <T extends string>(...values: T[]): Check<T> => (v, path) => {
  if (typeof v !== 'string' || !values.includes(v as T)) {
    throw new ConfigError(path, `expected one of ${values.map((x) => JSON.stringify(x)).join(', ')}, got ${describe(v)}`);
  }
  return v as T;
};

export const list = <T>(item: Check<T>): Check<T[]> => (v, path) => {
  if (!Array.isArray(v)) throw new ConfigError(path, `expected a list, got ${describe(v)}`);
  return v.map((x, i) => item(x, `${path}[${i}]`));
};

/** A value that may be absent: the default is used then. */
export interface Field<T> {
  check: Check<T>;
  default?: T;
  optional?: boolean;
  /** A nested mapping: when absent, check an empty one so its own defaults apply. */
  section?: boolean;
}

export const field = <T>(check: Check<T>, dflt?: T): Field<T> => ({ check, default: dflt });
export const optional = <T>(check: Check<T>): Field<T | undefined> => ({ check, optional: true });
export const section = <T>(check: Check<T>): Field<T> => ({ check, section: true });

type Fields = Record<string, Field<unknown>>;
export type Shape<F extends Fields> = { [K in keyof F]: F[K] extends Field<infer T> ? T : never };

/** A mapping with exactly these keys (snake_case in the file); unknown keys are errors. */
export const obj = <F extends Fields>(fields: F): Check<Shape<F>> => (v, path) => {
  if (v === undefined || v === null) v = {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(path, `expected a mapping, got ${describe(v)}`);
  const input = v as Record<string, unknown>;
  for (const k of Object.keys(input)) {
    if (!Object.prototype.hasOwnProperty.call(fields, k)) {
      const known = Object.keys(fields);
      const near = closest(k, known);
      throw new ConfigError(join(path, k), `unknown key${near ? `, did you mean "${near}"?` : ''} (known keys here: ${known.join(', ')})`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(fields)) {
    const raw = input[k];
    if (raw === undefined || raw === null) {
      if (f.section) out[k] = f.check({}, join(path, k));
      else if (f.default !== undefined) out[k] = f.default;
      else if (!f.optional) throw new ConfigError(join(path, k), 'is required');
      else out[k] = undefined; // present and unset: the key list stays complete (docs/config.md)
      continue;
    }
    out[k] = f.check(raw, join(path, k));
  }
  return out as Shape<F>;
};

/** Edit distance with adjacent transpositions counting 1 ("emial" is one slip from "email"). */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The known key a typo most likely meant (case, '_' and '-' ignored: "dnsLabel" is "dns_label"), if one is close. */
export function closest(key: string, known: readonly string[]): string | undefined {
  const norm = (x: string): string => x.toLowerCase().replace(/[_-]/g, '');
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of known) {
    const d = distance(norm(key), norm(c));
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return bestD <= Math.max(1, Math.floor(key.length / 3)) ? best : undefined;
}

export function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

/** HOST:PORT with a numeric port (IPv6 hosts in brackets). */
export const hostPort: Check<string> = (v, path) => {
  const s = str()(v, path);
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(s);
  if (!m || Number(m[2]) > 65535) throw new ConfigError(path, `expected HOST:PORT (e.g. 127.0.0.1:9617 or [::1]:9617), got ${describe(v)}`);
  return s;
};

/** Checks with a rule that lives elsewhere (a parser that throws): its message, at this path. */
export const via = (parse: (s: string) => unknown, hint?: string): Check<string> => (v, path) => {
  const s = str()(v, path);
  try {
    parse(s);
  } catch (err) {
    throw new ConfigError(path, hint ? `${hint}, got ${describe(v)}` : (err as Error).message);
  }
  return s;
};

/**
 * A WireGuard public key: base64 of exactly 32 bytes, canonical (43 characters, the last carrying
 * 4 bits, then one "="). Anything else would fail to encode on every event that carries it.
 * Empty means "no key".
 */
export const wgKey = str({ pattern: /^$|^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/, hint: 'a base64 WireGuard public key (44 characters ending in "=", as printed by `wg pubkey`)' });
