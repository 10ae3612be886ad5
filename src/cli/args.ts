// Small helpers shared by wgflow's command-line parsers: flag errors that name the flag and the
// fix, and number/size flags with units.
import { parseArgs, ParseArgsConfig } from 'node:util';

/** A command-line mistake: printed with the command's name, exit code 2. */
import { hostPort } from '../util/check';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** node:util parseArgs, strict, with errors rewritten as UsageError. */
export function parseFlags<O extends Options>(argv: string[], options: O): ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>>['values'] {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    const e = err as Error & { code?: string };
    if (typeof e.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) throw new UsageError(e.message.replace(/\. To specify a positional argument.*$/s, ''));
    throw err;
  }
}

/** A non-negative integer flag ("1000", "10_000"). */
export function intFlag(value: string | undefined, flag: string, dflt: number, min = 0): number {
  if (value === undefined) return dflt;
  const n = Number(value.replace(/_/g, ''));
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${flag}: "${value}" is not an integer >= ${min}`);
  return n;
}

const UNITS: Record<string, number> = { '': 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** A byte size flag: 1048576, 512k, 64M, 1G (binary units). */
export function sizeFlag(value: string | undefined, flag: string, dflt: number, min = 1): number {
  if (value === undefined) return dflt;
  const m = /^(\d+)\s*([a-zA-Z]*)$/.exec(value.trim());
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new UsageError(`--${flag}: "${value}" is not a size (e.g. 1048576, 512k, 64M, 1G)`);
  const n = Number(m[1]) * unit;
  if (n < min) throw new UsageError(`--${flag}: ${value} is below the minimum of ${min} bytes`);
  return n;
}

/** A HOST:PORT flag (the config's rule, src/util/check.ts hostPort). */
export function hostPortFlag(value: string | undefined, flag: string): string | undefined {
  if (value === undefined) return undefined;
  try {
    return hostPort(value, `--${flag}`);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
