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
  'creds-file': { type: 'string' },
  'ca-file': { type: 'string' },
  'cert-file': { type: 'string' },
  'key-file': { type: 'string' },
} as const;

export const NATS_FLAGS_HELP = `
NATS connection:
  --jetstream URLS        NATS servers, comma-separated: nats://HOST:PORT[,HOST:PORT...] (required)
  --token TOKEN           authenticate with a token
  --token-file FILE       read the token from FILE (keeps it out of the process list)
  --user NAME             authenticate with a user name (with --password)
  --password PASS         the password of --user
  --creds-file FILE       authenticate with a NATS credentials file (JWT and nkey seed)
  --ca-file FILE          PEM CA bundle to verify the servers with (turns TLS on)
  --cert-file FILE        PEM client certificate (with --key-file; turns TLS on)
  --key-file FILE         PEM private key of --cert-file
`;

export type NatsFlagValues = { [K in keyof typeof NATS_FLAGS]?: string };

/**
 * The same flags for a command whose own --token and TLS flags mean something else (collect's
 * gRPC server): --nats-token, --nats-user, ... (--jetstream keeps its name).
 */
export const NATS_PREFIXED_FLAGS = {
  jetstream: { type: 'string' },
  'nats-token': { type: 'string' },
  'nats-token-file': { type: 'string' },
  'nats-user': { type: 'string' },
  'nats-password': { type: 'string' },
  'nats-creds-file': { type: 'string' },
  'nats-ca-file': { type: 'string' },
  'nats-cert-file': { type: 'string' },
  'nats-key-file': { type: 'string' },
} as const;

export const NATS_PREFIXED_FLAGS_HELP = `
NATS connection:
  --jetstream URLS        NATS servers, comma-separated: nats://HOST:PORT[,HOST:PORT...]
  --nats-token TOKEN      authenticate with a token
  --nats-token-file FILE  read the token from FILE (keeps it out of the process list)
  --nats-user NAME        authenticate with a user name (with --nats-password)
  --nats-password PASS    the password of --nats-user
  --nats-creds-file FILE  authenticate with a NATS credentials file (JWT and nkey seed)
  --nats-ca-file FILE     PEM CA bundle to verify the servers with (turns TLS on)
  --nats-cert-file FILE   PEM client certificate (with --nats-key-file; turns TLS on)
  --nats-key-file FILE    PEM private key of --nats-cert-file
`;

/** A message about the unprefixed flags, naming the prefixed ones instead. */
export function prefixNatsFlagNames(text: string): string {
  return text.replace(/--(token-file|token|user|password|creds-file|ca-file|cert-file|key-file)\b/g, '--nats-$1');
}

/** The values of NATS_PREFIXED_FLAGS under their unprefixed names. */
export function unprefixNatsFlags(f: { [K in keyof typeof NATS_PREFIXED_FLAGS]?: string }): NatsFlagValues {
  return {
    jetstream: f.jetstream, token: f['nats-token'], 'token-file': f['nats-token-file'], user: f['nats-user'], password: f['nats-password'],
    'creds-file': f['nats-creds-file'], 'ca-file': f['nats-ca-file'], 'cert-file': f['nats-cert-file'], 'key-file': f['nats-key-file'],
  };
}

const readFlagFile = (flag: string, path: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--${flag}: cannot read ${path}: ${(err as Error).message}`);
  }
};

/** The token in FILE (--token-file), trimmed; UsageError when it cannot be read or is empty. */
export function readTokenFile(path: string): string {
  const token = readFlagFile('token-file', path).trim();
  if (token === '') throw new UsageError(`--token-file: ${path} is empty`);
  return token;
}

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
  const auths = [f.token !== undefined || f['token-file'] !== undefined, f.user !== undefined || f.password !== undefined, f['creds-file'] !== undefined].filter(Boolean).length;
  if (auths > 1) throw new UsageError('give one way to authenticate: --token/--token-file, --user/--password or --creds-file');
  if (f.token !== undefined && f['token-file'] !== undefined) throw new UsageError('give either --token or --token-file, not both');
  const token = f['token-file'] !== undefined ? readTokenFile(f['token-file']) : f.token;
  if (token !== undefined) {
    if (token === '') throw new UsageError('--token: the token is empty');
    o.token = token;
  }
  if ((f.user === undefined) !== (f.password === undefined)) throw new UsageError('--user and --password go together');
  if (f.user !== undefined) {
    o.user = f.user;
    o.password = f.password;
  }
  if (f['creds-file'] !== undefined) {
    if (!readFlagFile('creds-file', f['creds-file']).includes('-----BEGIN NATS USER JWT-----')) throw new UsageError(`--creds-file: ${f['creds-file']} is not a NATS credentials file (no "BEGIN NATS USER JWT" block)`);
    o.credsFile = f['creds-file'];
  }
  if ((f['cert-file'] === undefined) !== (f['key-file'] === undefined)) throw new UsageError('--cert-file and --key-file go together');
  if (f['ca-file'] !== undefined) o.caFile = exists('ca-file', f['ca-file']);
  if (f['cert-file'] !== undefined) o.certFile = exists('cert-file', f['cert-file']);
  if (f['key-file'] !== undefined) o.keyFile = exists('key-file', f['key-file']);
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
    case 'auth': return `the NATS servers ${where} refused the credentials (${msg}): check --token/--token-file, --user/--password or --creds-file`;
    case 'unreachable': return `cannot reach the NATS servers ${where} (${msg}): check --jetstream and that nats-server is running`;
    case 'timeout': return `the NATS servers ${where} did not answer in time (${msg}): check --jetstream`;
    case 'no_jetstream': return `the NATS servers ${where} answer but JetStream does not (${msg}): start nats-server with JetStream (-js)`;
    case 'permission': return `the NATS account may not do this (${msg}): check its permissions for the stream's subjects and $JS.API.>`;
    default: return `NATS: ${msg}`;
  }
}
