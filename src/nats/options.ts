// Which connections our own NATS client (src/nats/) makes, from the contract's connection options
// (src/wire/jetstream.ts NatsConnectOptions): no auth, a token, or user and password, over TCP or
// TLS (CA, client certificate). A creds file (user JWT signed with an nkey) is not implemented
// here: null, and the caller uses nats.js for that configuration.
import { natsConnectionOptions, type NatsConnectOptions } from '../wire/jetstream';
import type { NatsConnOptions } from './connection';

/**
 * Our client's options for o, or null when o needs nats.js (creds_file). Derived from the nats.js
 * options, so both clients get the same checks and messages (naming the key), the same defaults,
 * and the same files read.
 */
export function ownConnectionOptions(o: NatsConnectOptions): NatsConnOptions | null {
  const co = natsConnectionOptions(o);
  if (o.credsFile) return null;
  const c: NatsConnOptions = {
    servers: co.servers as string[],
    name: co.name,
    timeoutMs: co.timeout,
    maxReconnectAttempts: co.maxReconnectAttempts,
    reconnectTimeWaitMs: co.reconnectTimeWait,
  };
  if (co.token) c.token = co.token;
  if (co.user) {
    c.user = co.user;
    c.pass = co.pass;
  }
  if (co.tls) c.tls = { ca: co.tls.ca, cert: co.tls.cert, key: co.tls.key };
  return c;
}
