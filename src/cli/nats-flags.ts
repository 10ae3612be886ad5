// The NATS connection flags of the commands that talk to JetStream (consume, collect --jetstream):
// servers, credentials, TLS; their checks; and clear messages for connection failures.
import { readFileSync } from 'node:fs';
import { connect } from '@nats-io/transport-node';
import { credsAuthenticator } from '@nats-io/nats-core';
import type { ConnectionOptions as NodeConnectionOptions } from '@nats-io/nats-core';
import { UsageError } from './args';

export const NATS_FLAGS = {
  jetstream: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  user: { type: 'string' },
  password: { type: 'string' },
  creds: { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
} as const;

export const NATS_FLAGS_HELP = `
NATS connection:
  --jetstream URLS        NATS servers, comma-separated: nats://HOST:PORT[,HOST:PORT...] (required)
  --token TOKEN           authenticate with a token
  --token-file FILE       read the token from FILE (keeps it out of the process list)
  --user NAME             authenticate with a user name (with --password)
  --password PASS         the password of --user
  --creds FILE            authenticate with a NATS credentials file (JWT and nkey seed)
  --tls-ca FILE           PEM CA bundle to verify the servers with (turns TLS on)
  --tls-cert FILE         PEM client certificate (with --tls-key; turns TLS on)
  --tls-key FILE          PEM private key of --tls-cert
`;

type NatsFlagValues = { [K in keyof typeof NATS_FLAGS]?: string };

export interface NatsCliOptions {
  servers: string[];
  connect: NodeConnectionOptions;
}

const readFlagFile = (flag: string, path: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--${flag}: cannot read ${path}: ${(err as Error).message}`);
  }
};

/** Server list of --jetstream: nats://h:p, h:p, tls://h:p; comma-separated. */
export function parseServers(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split(',')) {
    const s = raw.trim();
    if (s === '') continue;
    const m = /^(?:(nats|tls):\/\/)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d+))?$/.exec(s);
    if (!m) throw new UsageError(`--jetstream: "${s}" is not a server address (nats://HOST:PORT)`);
    const port = m[3] === undefined ? 4222 : Number(m[3]);
    if (port < 1 || port > 65535) throw new UsageError(`--jetstream: port ${m[3]} of "${s}" is out of range 1..65535`);
    out.push(`${m[1] ?? 'nats'}://${m[2]}:${port}`);
  }
  if (out.length === 0) throw new UsageError('--jetstream: no server given (nats://HOST:PORT[,HOST:PORT...])');
  return out;
}

/** Connection options of the flags; UsageError names the flag that is wrong. */
export function natsOptionsOfFlags(f: NatsFlagValues, name: string): NatsCliOptions {
  if (f.jetstream === undefined) throw new UsageError('--jetstream URLS is required (nats://HOST:PORT[,HOST:PORT...])');
  const servers = parseServers(f.jetstream);
  const opts: NodeConnectionOptions = { servers, name, maxReconnectAttempts: -1, reconnectTimeWait: 500, waitOnFirstConnect: false };
  const auths = [f.token !== undefined || f['token-file'] !== undefined, f.user !== undefined, f.creds !== undefined].filter(Boolean).length;
  if (auths > 1) throw new UsageError('give one way to authenticate: --token/--token-file, --user/--password or --creds');
  if (f.token !== undefined && f['token-file'] !== undefined) throw new UsageError('give either --token or --token-file, not both');
  let token = f.token;
  if (f['token-file'] !== undefined) token = readFlagFile('token-file', f['token-file']).trim();
  if (token !== undefined) {
    if (token === '') throw new UsageError(f['token-file'] !== undefined ? `--token-file: ${f['token-file']} is empty` : '--token: the token is empty');
    opts.token = token;
  }
  if ((f.user === undefined) !== (f.password === undefined)) throw new UsageError('--user and --password go together');
  if (f.user !== undefined) {
    opts.user = f.user;
    opts.pass = f.password;
  }
  if (f.creds !== undefined) {
    const creds = readFlagFile('creds', f.creds);
    if (!creds.includes('-----BEGIN NATS USER JWT-----')) throw new UsageError(`--creds: ${f.creds} is not a NATS credentials file (no "BEGIN NATS USER JWT" block)`);
    opts.authenticator = credsAuthenticator(new TextEncoder().encode(creds));
  }
  if ((f['tls-cert'] === undefined) !== (f['tls-key'] === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  if (f['tls-ca'] !== undefined || f['tls-cert'] !== undefined) {
    const tls: NonNullable<NodeConnectionOptions['tls']> = {};
    if (f['tls-ca'] !== undefined) tls.ca = readFlagFile('tls-ca', f['tls-ca']);
    if (f['tls-cert'] !== undefined && f['tls-key'] !== undefined) {
      tls.cert = readFlagFile('tls-cert', f['tls-cert']);
      tls.key = readFlagFile('tls-key', f['tls-key']);
    }
    opts.tls = tls;
  }
  return { servers, connect: opts };
}

export type CliNatsConnection = Awaited<ReturnType<typeof connect>>;

export async function connectForCli(o: NatsCliOptions): Promise<CliNatsConnection> {
  return connect(o.connect);
}

/** Drains (flushing acks and publishes) and closes; never throws. */
export async function closeNats(nc: CliNatsConnection): Promise<void> {
  try {
    await nc.drain();
  } catch {
    await nc.close().catch(() => undefined);
  }
}

/** A connection or JetStream failure as one sentence that says what to check. */
export function natsErrorMessage(err: unknown, o: NatsCliOptions): string {
  const e = err as Error & { code?: string; cause?: unknown };
  const text = `${e?.message ?? String(err)}`;
  const where = o.servers.join(',');
  const causeText = e?.cause instanceof Error ? e.cause.message : '';
  if (/authorization violation|authentication/i.test(text) || /authorization violation/i.test(causeText)) {
    return `the NATS servers ${where} refused the credentials (--token, --user/--password or --creds): ${text}`;
  }
  if (/ECONNREFUSED|CONNECTION_REFUSED|connection refused|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|timeout|ECONNRESET/i.test(`${text} ${e?.code ?? ''} ${causeText}`)) {
    return `cannot reach the NATS servers ${where} (--jetstream): ${text}`;
  }
  if (/jetstream not enabled|no responders|503/i.test(text)) {
    return `JetStream is not available on ${where} (is the server started with JetStream, -js?): ${text}`;
  }
  if (/permissions violation/i.test(text)) return `the NATS account may not do this (permissions): ${text}`;
  return `NATS: ${text}`;
}
