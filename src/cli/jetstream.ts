// wgflow jetstream init: create the JetStream stream, or check that an existing one has the
// configured settings (it is never changed). The settings come from the jetstream.* keys of
// --config, overridden by the flags; the defaults are the contract's (src/wire/jetstream.ts).
import { jetstreamManager } from '@nats-io/jetstream';
import { configSchema, jetstreamStreamSettings, readConfigFile } from '../config/config';
import { ConfigError } from '../util/check';
import { connectNats, describeNatsError, ensureStream, JETSTREAM_DEFAULTS, streamSettings, streamSummary, type NatsConnectOptions } from '../wire/jetstream';
import { parseFlags, UsageError } from './args';
import { NATS_FLAGS, NATS_FLAGS_HELP, readTokenFile } from './nats-flags';

export const JETSTREAM_HELP = `usage: wgflow jetstream init [options]

Creates the NATS JetStream stream wgflow publishes to, or checks an existing one: a stream with
other settings (subjects, replicas, duplicate window, limits) is refused with a message naming
each difference and exits 1; wgflow never changes an existing stream. Prints one line about the
stream and exits 0 when it is there with these settings.

options:
  --config FILE           read the jetstream.* keys of this config file (flags override them)
  --stream NAME           stream name (default ${JETSTREAM_DEFAULTS.stream})
  --subject-prefix P      subjects are P.<reporter>.<type> (default ${JETSTREAM_DEFAULTS.subjectPrefix})
  --replicas 1|3          replicas of the stream (3 needs a cluster of 3 or more servers; default ${JETSTREAM_DEFAULTS.replicas})
  --max-age DURATION      messages older than this are removed, e.g. 7d, 48h (default 7d)
  --max-bytes SIZE        the stream's size limit, oldest removed first, e.g. 10G (default 10G)
  --duplicate-window D    ids remembered for de-duplication, e.g. 2m (default 2m)
  --help, -h              show this help
${NATS_FLAGS_HELP.replace('(required)', `(default: jetstream.servers, else ${JETSTREAM_DEFAULTS.servers})`)}`;

const OPTIONS = {
  ...NATS_FLAGS,
  config: { type: 'string' },
  stream: { type: 'string' },
  'subject-prefix': { type: 'string' },
  replicas: { type: 'string' },
  'max-age': { type: 'string' },
  'max-bytes': { type: 'string' },
  'duplicate-window': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Flag -> jetstream.* key. */
const KEYS: Record<string, string> = {
  jetstream: 'servers', stream: 'stream', 'subject-prefix': 'subject_prefix', replicas: 'replicas', 'max-age': 'max_age', 'max-bytes': 'max_bytes',
  'duplicate-window': 'duplicate_window', token: 'token', user: 'user', password: 'password', 'creds-file': 'creds_file', 'ca-file': 'ca_file', 'cert-file': 'cert_file', 'key-file': 'key_file',
};

export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(JETSTREAM_HELP);
    return sub === undefined ? 2 : 0;
  }
  try {
    if (sub !== 'init') throw new UsageError(`unknown subcommand "${sub}" (expected: init)`);
    const f = parseFlags(rest, OPTIONS);
    if (f.help) {
      process.stdout.write(JETSTREAM_HELP);
      return 0;
    }
    const file = f.config ? readConfigFile(f.config) : {};
    if (f['token-file'] !== undefined) {
      if (f.token !== undefined) throw new UsageError('give either --token or --token-file, not both');
      f.token = readTokenFile(f['token-file']);
    }
    const raw: Record<string, unknown> = { ...((file.jetstream ?? {}) as Record<string, unknown>) };
    for (const [flag, key] of Object.entries(KEYS)) {
      const v = (f as Record<string, unknown>)[flag];
      if (v !== undefined) raw[key] = flag === 'replicas' && /^\d+$/.test(String(v)) ? Number(v) : v;
    }
    let j;
    try {
      j = configSchema({ jetstream: raw }, '').jetstream;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const flag = Object.entries(KEYS).find(([, k]) => `jetstream.${k}` === err.path)?.[0];
      throw new UsageError(flag && (f as Record<string, unknown>)[flag] !== undefined ? `--${flag}: ${err.problem}` : err.message);
    }
    const settings = streamSettings(jetstreamStreamSettings({ jetstream: j }));
    const servers = j.servers ?? JETSTREAM_DEFAULTS.servers;
    const conn: NatsConnectOptions = {
      servers, token: j.token, user: j.user, password: j.password, credsFile: j.creds_file, caFile: j.ca_file, certFile: j.cert_file, keyFile: j.key_file,
      name: 'wgflow jetstream init', maxReconnectAttempts: 0,
    };
    const nc = await connectNats(conn);
    try {
      const jsm = await jetstreamManager(nc);
      const { created, info } = await ensureStream(jsm, settings, { create: true, servers });
      process.stdout.write(`${created ? 'created' : 'checked'} ${streamSummary(info)}\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`wgflow jetstream init: ${describeNatsError(err, servers)}\n`);
      return 1;
    } finally {
      await nc.close().catch(() => undefined);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`wgflow jetstream init: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`wgflow jetstream init: ${(err as Error).message}\n`);
    return 1;
  }
}
