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
    if (!(k in fields)) {
      throw new ConfigError(join(path, k), `unknown key (known keys here: ${Object.keys(fields).join(', ')})`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(fields)) {
    const raw = input[k];
    if (raw === undefined || raw === null) {
      if (f.section) out[k] = f.check({}, join(path, k));
      else if (f.default !== undefined) out[k] = f.default;
      else if (!f.optional) throw new ConfigError(join(path, k), 'is required');
      continue;
    }
    out[k] = f.check(raw, join(path, k));
  }
  return out as Shape<F>;
};

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
