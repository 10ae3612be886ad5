// Which connections our own NATS client (src/nats/) makes, from the contract's connection options
// (src/wire/jetstream.ts NatsConnectOptions): no auth, a token, or user and password, over TCP or
// TLS (CA, client certificate). A creds file (user JWT signed with an nkey) is not implemented
// here: null, and the caller uses nats.js for that configuration.
import { readFileSync } from 'node:fs';
import { NATS_CONNECT_DEFAULTS, natsConnectionOptions, parseServers, type NatsConnectOptions } from '../wire/jetstream';
import type { NatsConnOptions } from './connection';

function readFile(path: string, key: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the ${key} ${path}: ${(err as Error).message}`);
  }
}

/**
 * Our client's options for o, or null when o needs nats.js (creds_file). Throws the same errors
 * as natsConnectionOptions (naming the key) for an inconsistent configuration.
 */
export function ownConnectionOptions(o: NatsConnectOptions): NatsConnOptions | null {
  natsConnectionOptions(o); // the same checks and messages as the nats.js path
  if (o.credsFile) return null;
  const servers = parseServers(o.servers);
  const c: NatsConnOptions = {
    servers,
    name: o.name ?? NATS_CONNECT_DEFAULTS.name,
    timeoutMs: o.timeoutMs ?? NATS_CONNECT_DEFAULTS.timeoutMs,
    maxReconnectAttempts: o.maxReconnectAttempts ?? NATS_CONNECT_DEFAULTS.maxReconnectAttempts,
    reconnectTimeWaitMs: o.reconnectTimeWaitMs ?? NATS_CONNECT_DEFAULTS.reconnectTimeWaitMs,
  };
  if (o.token) c.token = o.token;
  if (o.user) {
    c.user = o.user;
    c.pass = o.password;
  }
  if (o.caFile || o.certFile || servers.some((s) => s.startsWith('tls:'))) {
    c.tls = {};
    if (o.caFile) c.tls.ca = readFile(o.caFile, 'jetstream.ca_file');
    if (o.certFile) c.tls.cert = readFile(o.certFile, 'jetstream.cert_file');
    if (o.keyFile) c.tls.key = readFile(o.keyFile, 'jetstream.key_file');
  }
  return c;
}
