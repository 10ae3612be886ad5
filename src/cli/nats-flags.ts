// The NATS connection flags of the commands that talk to JetStream (consume, collect --jetstream):
// servers, credentials, TLS; their checks; and clear messages for connection failures.
import { readFileSync } from 'node:fs';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { natsConnectionOptions, natsErrorKind, parseServers, type NatsConnectOptions } from '../wire/jetstream';
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

const readFlagFile = (flag: string, path: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--${flag}: cannot read ${path}: ${(err as Error).message}`);
  }
};

const exists = (flag: string, path: string): string => {
  readFlagFile(flag, path);
  return path;
};

/** Connection options of the flags (the contract's form); UsageError names the flag that is wrong. */
export function natsOptionsOfFlags(f: NatsFlagValues, name: string): NatsConnectOptions {
  if (f.jetstream === undefined) throw new UsageError('--jetstream URLS is required (nats://HOST:PORT[,HOST:PORT...])');
  try {
    parseServers(f.jetstream, '--jetstream');
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const o: NatsConnectOptions = { servers: f.jetstream, name };
  const auths = [f.token !== undefined || f['token-file'] !== undefined, f.user !== undefined || f.password !== undefined, f.creds !== undefined].filter(Boolean).length;
  if (auths > 1) throw new UsageError('give one way to authenticate: --token/--token-file, --user/--password or --creds');
  if (f.token !== undefined && f['token-file'] !== undefined) throw new UsageError('give either --token or --token-file, not both');
  let token = f.token;
  if (f['token-file'] !== undefined) token = readFlagFile('token-file', f['token-file']).trim();
  if (token !== undefined) {
    if (token === '') throw new UsageError(f['token-file'] !== undefined ? `--token-file: ${f['token-file']} is empty` : '--token: the token is empty');
    o.token = token;
  }
  if ((f.user === undefined) !== (f.password === undefined)) throw new UsageError('--user and --password go together');
  if (f.user !== undefined) {
    o.user = f.user;
    o.password = f.password;
  }
  if (f.creds !== undefined) {
    if (!readFlagFile('creds', f.creds).includes('-----BEGIN NATS USER JWT-----')) throw new UsageError(`--creds: ${f.creds} is not a NATS credentials file (no "BEGIN NATS USER JWT" block)`);
    o.credsFile = f.creds;
  }
  if ((f['tls-cert'] === undefined) !== (f['tls-key'] === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  if (f['tls-ca'] !== undefined) o.caFile = exists('tls-ca', f['tls-ca']);
  if (f['tls-cert'] !== undefined) o.certFile = exists('tls-cert', f['tls-cert']);
  if (f['tls-key'] !== undefined) o.keyFile = exists('tls-key', f['tls-key']);
  return o;
}

/** Connects; rejects with a message that names the flag to check. */
export async function connectForCli(o: NatsConnectOptions): Promise<NatsConnection> {
  try {
    return await connect(natsConnectionOptions(o));
  } catch (err) {
    throw new Error(natsErrorMessage(err, o), { cause: err });
  }
}

/** Drains (flushing acks and publishes) and closes; never throws. */
export async function closeNats(nc: NatsConnection): Promise<void> {
  try {
    await nc.drain();
  } catch {
    await nc.close().catch(() => undefined);
  }
}

/** A connection or JetStream failure as one sentence that names the flag to check. */
export function natsErrorMessage(err: unknown, o: NatsConnectOptions): string {
  const msg = (err as Error)?.message ?? String(err);
  const where = parseServers(o.servers, '--jetstream').join(',');
  switch (natsErrorKind(err)) {
    case 'auth': return `the NATS servers ${where} refused the credentials (${msg}): check --token/--token-file, --user/--password or --creds`;
    case 'unreachable': return `cannot reach the NATS servers ${where} (${msg}): check --jetstream and that nats-server is running`;
    case 'timeout': return `the NATS servers ${where} did not answer in time (${msg}): check --jetstream`;
    case 'no_jetstream': return `the NATS servers ${where} answer but JetStream does not (${msg}): start nats-server with JetStream (-js)`;
    case 'permission': return `the NATS account may not do this (${msg}): check its permissions for the stream's subjects and $JS.API.>`;
    default: return `NATS: ${msg}`;
  }
}
