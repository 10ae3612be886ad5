// The NATS JetStream contract, shared by everything that speaks to the stream: the exporter
// (src/output/jetstream/), the collector's relay and `wgflow consume`. docs/jetstream.md is the
// prose version of this file.
//
//   subject   <prefix>.<reporter token>.<type>     e.g. wgflow.flows.peer-a.end
//   payload   the serialized flow.FlowEvent, byte for byte what the gRPC path sends
//             (writer.ts writeFlowEvent; read it back with reader.ts readFlowEvent)
//   header    Nats-Msg-Id: the event id as UUID text; the stream drops a second message with the
//             same id inside its duplicate window, and the PubAck says `duplicate: true`
//
// The stream: WGFLOW over `<prefix>.>`, limits retention (age and bytes), file storage, a
// duplicate window, 1 or 3 replicas. An existing stream is checked against these settings and
// refused when it differs; it is never changed behind the operator's back.
import { readFileSync } from 'node:fs';
import { connect } from '@nats-io/transport-node';
// nats-core is what transport-node re-exports (its types do not resolve through transport-node here).
import { credsAuthenticator, headers, type ConnectionOptions, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
import { DiscardPolicy, JetStreamApiError, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig, type StreamInfo } from '@nats-io/jetstream';
import type { FlowEvent, FlowEventType } from '../model/event';
import { bytesToUuid } from './codec';
import { EVENT_TYPES, scanFlowEvent, ScannedEvent } from './reader';
import { writeFlowEvent } from './writer';

const MS_PER_DAY = 86_400_000;

/** The stream's settings when nothing else is configured (the jetstream.* keys default to these). */
export const JETSTREAM_DEFAULTS = {
  servers: 'nats://127.0.0.1:4222',
  stream: 'WGFLOW',
  subjectPrefix: 'wgflow.flows',
  maxAgeMs: 7 * MS_PER_DAY,
  maxBytes: 10 * 1024 ** 3,
  duplicateWindowMs: 120_000,
  replicas: 1,
  storage: 'file' as 'file' | 'memory',
} as const;

/** The header carrying the event id; JetStream de-duplicates on it. */
export const MSG_ID_HEADER = 'Nats-Msg-Id';

// ---------- subjects ----------

/**
 * A reporter id as one NATS subject token. Bytes that may not appear in a token ('.', '*', '>')
 * or that are not printable ASCII (whitespace, controls, anything above 0x7e, as UTF-8 bytes),
 * and '%' itself, are written as %XX (upper-case hex); everything else is kept. The mapping is
 * reversible (decodeURIComponent gives the id back), so two reporters never share a token, except
 * that the empty id becomes "_" (the same token as a reporter called "_").
 */
export function reporterToken(reporterId: string): string {
  if (reporterId.length === 0) return '_';
  let out = '';
  for (const byte of Buffer.from(reporterId, 'utf8')) {
    const c = byte;
    if (c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x2a && c !== 0x3e && c !== 0x25) out += String.fromCharCode(c);
    else out += '%' + c.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** `<prefix>.<reporter token>.<type lowercase>`: wgflow.flows.peer-a.start. */
/** The subject of an event: its type in lower case; a NetBird window aggregate (TYPE_UNKNOWN) has "aggregate". */
export function subjectOf(prefix: string, reporterId: string, type: FlowEventType | 'AGGREGATE'): string {
  return `${prefix}.${reporterToken(reporterId)}.${type.toLowerCase()}`;
}

/** What a stream over this prefix captures: every reporter, every type. */
export function streamSubject(prefix: string): string {
  return `${prefix}.>`;
}

/**
 * Why a subject prefix is not usable, or null: dot-separated tokens of printable ASCII without
 * wildcards ('*', '>') or empty tokens.
 */
export function subjectPrefixProblem(prefix: string): string | null {
  if (prefix.length === 0) return 'must not be empty';
  for (const token of prefix.split('.')) {
    if (token.length === 0) return `"${prefix}" has an empty token (a leading, trailing or double '.')`;
    if (!/^[\x21-\x7e]+$/.test(token)) return `"${prefix}" has whitespace or a non-ASCII character`;
    if (/[*>]/.test(token)) return `"${prefix}" has a wildcard ('*' or '>'): a prefix names fixed tokens`;
  }
  return null;
}

/** Why a stream name is not usable, or null (NATS: no '.', '*', '>', whitespace or path separators). */
export function streamNameProblem(name: string): string | null {
  if (name.length === 0) return 'must not be empty';
  if (!/^[\x21-\x7e]+$/.test(name) || /[.*>/\\]/.test(name)) return `"${name}" may not contain '.', '*', '>', '/', '\\' or whitespace`;
  return null;
}

// ---------- messages ----------

/** One message as the exporter publishes it. */
export interface JetStreamMessage {
  subject: string;
  /** The Nats-Msg-Id header: the event id as UUID text. */
  msgId: string;
  /** The serialized flow.FlowEvent. */
  payload: Buffer;
}

/** The message for an event (encodes it; throws CodecError when it cannot be encoded). */
export function messageOf(prefix: string, ev: FlowEvent): JetStreamMessage {
  return { subject: subjectOf(prefix, ev.reporterId, ev.aggregate ? 'AGGREGATE' : ev.type), msgId: ev.eventId, payload: writeFlowEvent(ev) };
}

const scratch = new ScannedEvent();

/**
 * Subject and message id of an already serialized flow.FlowEvent (a spool record's payload: the
 * event is not decoded). Throws when the payload is not an event with a 16-byte id and a type.
 */
export function addressOf(prefix: string, payload: Buffer): { subject: string; msgId: string } {
  scanFlowEvent(payload, scratch);
  // Type 0 with a window is a NetBird window aggregate (relayed from a NetBird v0.75 client).
  const type = scratch.type === 0 && scratch.ws >= 0 && scratch.we >= 0 ? 'AGGREGATE' : EVENT_TYPES[scratch.type];
  const id = scratch.eventId;
  if (scratch.initiator || type === undefined || id.e - id.s !== 16) throw new Error('not a flow event with an event id and a type');
  const reporter = payload.toString('utf8', scratch.reporterId.s, scratch.reporterId.e);
  return { subject: subjectOf(prefix, reporter, type), msgId: bytesToUuid(payload.subarray(id.s, id.e), 'event_id') };
}

/** A varint at pos: [value, next pos] packed as value * 2^8 + length would overflow; two fields instead. */
let varintEnd = 0;
function varint(b: Buffer, pos: number): number {
  let v = 0, mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= b.length) throw new Error('truncated varint');
    const c = b[pos++];
    v += (c & 0x7f) * mul;
    if (c < 0x80) {
      varintEnd = pos;
      return v;
    }
    mul *= 128;
  }
  throw new Error('varint too long');
}

/**
 * The subjects of serialized flow.FlowEvents (spool records) without decoding them: only the
 * top-level fields are walked (flow_fields.type and reporter_id, field 100), and the subject of
 * the last reporter is kept (an exporter has one). addressOf's full scan and the id's UUID text
 * were ~10% of the publisher's CPU (profile, 200,000 events).
 */
export class SubjectCache {
  private reporter: Buffer = Buffer.alloc(0);
  private bySubjectType = new Map<number, string>();

  constructor(readonly prefix: string) {}

  /** Throws when the payload is not a flow event with a known type. */
  of(payload: Buffer): string {
    let pos = 0, type = -1, rs = 0, re = 0;
    const len = payload.length;
    while (pos < len) {
      const key = varint(payload, pos);
      pos = varintEnd;
      const wt = key & 7, field = Math.floor(key / 8);
      if (wt === 0) {
        varint(payload, pos);
        pos = varintEnd;
      } else if (wt === 1) pos += 8;
      else if (wt === 5) pos += 4;
      else if (wt === 2) {
        const l = varint(payload, pos);
        const s = varintEnd;
        pos = s + l;
        if (pos > len) throw new Error('truncated field');
        if (field === 4) type = typeIn(payload, s, pos);
        else if (field === 100) {
          rs = s;
          re = pos;
        }
      } else throw new Error(`wire type ${wt} in a flow event`);
    }
    const t = EVENT_TYPES[type];
    if (t === undefined) throw new Error('not a flow event with a type');
    const r = this.reporter;
    if (r.length !== re - rs || payload.compare(r, 0, r.length, rs, re) !== 0) {
      this.reporter = Buffer.from(payload.subarray(rs, re));
      this.bySubjectType.clear();
    }
    let subject = this.bySubjectType.get(type);
    if (subject === undefined) {
      subject = subjectOf(this.prefix, payload.toString('utf8', rs, re), t);
      this.bySubjectType.set(type, subject);
    }
    return subject;
  }
}

/** flow_fields.type (field 2) inside flow_fields [s, e); -1 if absent. */
function typeIn(b: Buffer, s: number, e: number): number {
  let pos = s;
  while (pos < e) {
    const key = varint(b, pos);
    pos = varintEnd;
    const wt = key & 7;
    if (wt === 0) {
      const v = varint(b, pos);
      pos = varintEnd;
      if (key === 0x10) return v;
    } else if (wt === 1) pos += 8;
    else if (wt === 5) pos += 4;
    else if (wt === 2) {
      const l = varint(b, pos);
      pos = varintEnd + l;
    } else return -1;
  }
  return -1;
}

/** The headers of a published message. */
export function messageHeaders(msgId: string): MsgHdrs {
  const h = headers();
  h.set(MSG_ID_HEADER, msgId);
  return h;
}

// ---------- connecting ----------

/** The connection defaults of NatsConnectOptions, shared by the nats.js path and our client (src/nats/options.ts). */
export const NATS_CONNECT_DEFAULTS = { name: 'wgflow', timeoutMs: 5_000, maxReconnectAttempts: -1, reconnectTimeWaitMs: 1_000 } as const;

export interface NatsConnectOptions {
  /** "nats://h:p,h:p" (tls://h:p for TLS; a bare h:p is nats://). */
  servers: string;
  token?: string;
  user?: string;
  password?: string;
  /** A NATS .creds file (user JWT and nkey seed). */
  credsFile?: string;
  /** PEM files: CA bundle to trust, client certificate and key (mTLS: both or neither). */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** Shown in the server's monitoring (connz). */
  name?: string;
  /** How long the first connection may take. Default 5 s. */
  timeoutMs?: number;
  /** After the first connection: reconnect forever (-1, default) or this many tries per server. */
  maxReconnectAttempts?: number;
  /** Between reconnect attempts to one server. Default 1 s. */
  reconnectTimeWaitMs?: number;
}

/**
 * The server list as URLs. Throws an Error naming `what` (the key or flag the text came from)
 * when it is empty or an entry is not nats://host:port, tls://host:port or host:port.
 */
export function parseServers(text: string, what = 'jetstream.servers'): string[] {
  const parts = text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (parts.length === 0) throw new Error(`${what}: no server given; expected nats://host:port[,host:port...]`);
  return parts.map((p) => {
    const withScheme = /^[a-z]+:\/\//i.test(p) ? p : `nats://${p}`;
    let u: URL;
    try {
      u = new URL(withScheme);
    } catch {
      throw new Error(`${what}: "${p}" is not a server URL; expected nats://host:port`);
    }
    if (u.protocol !== 'nats:' && u.protocol !== 'tls:') throw new Error(`${what}: "${p}" has scheme ${u.protocol}//; expected nats:// or tls://`);
    if (!u.hostname || (u.pathname !== '' && u.pathname !== '/') || u.username || u.search) throw new Error(`${what}: "${p}" is not host[:port]; credentials go in jetstream.token/user/password/creds_file, not the URL`);
    return `${u.protocol}//${u.host}`;
  });
}

function readFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the ${what} ${path}: ${(err as Error).message}`);
  }
}

/** The nats.js options for NatsConnectOptions (reads the files; throws naming the one it cannot read). */
export function natsConnectionOptions(o: NatsConnectOptions): ConnectionOptions {
  const servers = parseServers(o.servers);
  const co: ConnectionOptions = {
    servers,
    name: o.name ?? NATS_CONNECT_DEFAULTS.name,
    timeout: o.timeoutMs ?? NATS_CONNECT_DEFAULTS.timeoutMs,
    maxReconnectAttempts: o.maxReconnectAttempts ?? NATS_CONNECT_DEFAULTS.maxReconnectAttempts,
    reconnectTimeWait: o.reconnectTimeWaitMs ?? NATS_CONNECT_DEFAULTS.reconnectTimeWaitMs,
    waitOnFirstConnect: false,
    // Otherwise nats.js builds two Error objects (stack traces) per request, every publish:
    // measured at ~37% of the exporter's CPU.
    noAsyncTraces: true,
  };
  const auth = [o.token ? 'token' : '', o.user || o.password ? 'user/password' : '', o.credsFile ? 'creds_file' : ''].filter(Boolean);
  if (auth.length > 1) throw new Error(`jetstream: give one way to authenticate, not ${auth.join(' and ')}`);
  if (o.token) co.token = o.token;
  if (o.user || o.password) {
    if (!o.user || !o.password) throw new Error('jetstream.user and jetstream.password go together');
    co.user = o.user;
    co.pass = o.password;
  }
  if (o.credsFile) co.authenticator = credsAuthenticator(new TextEncoder().encode(readFile(o.credsFile, 'jetstream.creds_file')));
  if ((o.certFile === undefined) !== (o.keyFile === undefined)) throw new Error('jetstream.cert_file and jetstream.key_file go together (mTLS needs both)');
  if (o.caFile || o.certFile || servers.some((s) => s.startsWith('tls:'))) {
    co.tls = {};
    if (o.caFile) co.tls.ca = readFile(o.caFile, 'jetstream.ca_file');
    if (o.certFile) co.tls.cert = readFile(o.certFile, 'jetstream.cert_file');
    if (o.keyFile) co.tls.key = readFile(o.keyFile, 'jetstream.key_file');
  }
  return co;
}

/** What went wrong talking to NATS, for logs, metrics (errors by kind) and exit messages. */
export type NatsErrorKind = 'unreachable' | 'auth' | 'permission' | 'stream' | 'timeout' | 'no_jetstream' | 'other';

/** Classifies an error from nats.js or from ensureStream. */
export function natsErrorKind(err: unknown): NatsErrorKind {
  if (err instanceof StreamMismatchError || err instanceof StreamMissingError) return 'stream';
  const e = err as { name?: string; message?: string; code?: string; cause?: unknown } | null;
  const text = `${e?.name ?? ''} ${e?.message ?? ''} ${e?.code ?? ''}`.toLowerCase();
  if (/authorization|authentication|auth.*(violation|expired|revoked)|user authentication/.test(text)) return 'auth';
  if (/permission/.test(text)) return 'permission';
  if (/jetstream.*not enabled|no responders|503/.test(text)) return 'no_jetstream';
  if (/econnrefused|ehostunreach|enetunreach|enotfound|eai_again|connection refused|connectionrefused|closed|disconnect/.test(text)) return 'unreachable';
  if (/timeout/.test(text)) return 'timeout';
  if (err instanceof JetStreamApiError) return 'stream';
  if (e?.cause) return natsErrorKind(e.cause);
  return 'other';
}

/** A one-line, actionable description of a NATS error (servers is the configured list). */
export function describeNatsError(err: unknown, servers: string): string {
  const msg = (err as Error)?.message ?? String(err);
  switch (natsErrorKind(err)) {
    case 'auth': return `NATS at ${servers} refused the credentials (${msg}): check jetstream.token, jetstream.user/password or jetstream.creds_file`;
    case 'permission': return `NATS refused a publish or request (${msg}): the account may not use these subjects; check its permissions for jetstream.subject_prefix and $JS.API.>`;
    case 'unreachable': return `cannot reach NATS at ${servers} (${msg}): check jetstream.servers / --jetstream and that nats-server is running`;
    case 'no_jetstream': return `NATS at ${servers} answers but JetStream does not (${msg}): start nats-server with JetStream (-js) for this account`;
    case 'timeout': return `NATS at ${servers} did not answer in time (${msg})`;
    default: return msg;
  }
}

/**
 * Connects (the first connection must succeed within timeoutMs; afterwards nats.js reconnects by
 * itself). Rejects with a message from describeNatsError.
 */
export async function connectNats(o: NatsConnectOptions): Promise<NatsConnection> {
  const co = natsConnectionOptions(o);
  try {
    return await connect(co);
  } catch (err) {
    const e = new Error(describeNatsError(err, o.servers), { cause: err });
    throw e;
  }
}

// ---------- the stream ----------

export interface StreamSettings {
  stream: string;
  subjectPrefix: string;
  maxAgeMs: number;
  maxBytes: number;
  duplicateWindowMs: number;
  replicas: number;
  storage: 'file' | 'memory';
}

/** The defaults with some settings replaced (undefined keeps the default). */
export function streamSettings(o: Partial<StreamSettings> = {}): StreamSettings {
  const s: StreamSettings = {
    stream: o.stream ?? JETSTREAM_DEFAULTS.stream,
    subjectPrefix: o.subjectPrefix ?? JETSTREAM_DEFAULTS.subjectPrefix,
    maxAgeMs: o.maxAgeMs ?? JETSTREAM_DEFAULTS.maxAgeMs,
    maxBytes: o.maxBytes ?? JETSTREAM_DEFAULTS.maxBytes,
    duplicateWindowMs: o.duplicateWindowMs ?? JETSTREAM_DEFAULTS.duplicateWindowMs,
    replicas: o.replicas ?? JETSTREAM_DEFAULTS.replicas,
    storage: o.storage ?? JETSTREAM_DEFAULTS.storage,
  };
  const problems = [
    ['stream', streamNameProblem(s.stream)],
    ['subject_prefix', subjectPrefixProblem(s.subjectPrefix)],
    ['max_age', Number.isSafeInteger(s.maxAgeMs) && s.maxAgeMs >= 1000 ? null : `expected at least 1s, got ${s.maxAgeMs} ms`],
    ['max_bytes', Number.isSafeInteger(s.maxBytes) && s.maxBytes >= 1024 * 1024 ? null : `expected at least 1M, got ${s.maxBytes} bytes`],
    ['duplicate_window', Number.isSafeInteger(s.duplicateWindowMs) && s.duplicateWindowMs >= 1000 ? null : `expected at least 1s, got ${s.duplicateWindowMs} ms`],
    ['replicas', s.replicas === 1 || s.replicas === 3 ? null : `expected 1 or 3, got ${s.replicas}`],
  ].filter(([, p]) => p !== null);
  if (problems.length) throw new Error(problems.map(([k, p]) => `jetstream.${k}: ${p}`).join('; '));
  if (s.duplicateWindowMs > s.maxAgeMs) throw new Error(`jetstream.duplicate_window (${formatDuration(s.duplicateWindowMs)}) may not exceed jetstream.max_age (${formatDuration(s.maxAgeMs)})`);
  return s;
}

const NS_PER_MS = 1_000_000;

/** The StreamConfig wgflow creates for these settings. */
export function streamConfig(s: StreamSettings): Partial<StreamConfig> & { name: string } {
  return {
    name: s.stream,
    subjects: [streamSubject(s.subjectPrefix)],
    retention: RetentionPolicy.Limits,
    storage: s.storage === 'memory' ? StorageType.Memory : StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: s.maxAgeMs * NS_PER_MS,
    max_bytes: s.maxBytes,
    duplicate_window: s.duplicateWindowMs * NS_PER_MS,
    num_replicas: s.replicas,
  };
}

/** A stream that exists with settings other than the configured ones. */
export class StreamMismatchError extends Error {
  constructor(readonly stream: string, readonly differences: string[]) {
    super(`stream ${stream} exists with other settings: ${differences.join('; ')}. wgflow does not change an existing stream: set jetstream.* (or the flags) to match it, or change the stream yourself (nats stream edit ${stream})`);
    this.name = 'StreamMismatchError';
  }
}

/** The stream does not exist and creating it was not asked for. */
export class StreamMissingError extends Error {
  constructor(readonly stream: string, servers: string) {
    super(`stream ${stream} does not exist on ${servers}: create it with \`wgflow jetstream init --jetstream ${servers}\``);
    this.name = 'StreamMissingError';
  }
}

/** 120000 -> "2m", 604800000 -> "7d", 1500 -> "1500ms". */
export function formatDuration(ms: number): string {
  const units: Array<[string, number]> = [['d', MS_PER_DAY], ['h', 3_600_000], ['m', 60_000], ['s', 1000]];
  for (const [u, n] of units) if (ms >= n && ms % n === 0) return `${ms / n}${u}`;
  return `${ms}ms`;
}

/**
 * A duration in milliseconds from "500ms", "90s", "2m", "48h", "7d" (or a combination, "1h30m").
 * Undefined when the text is not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(t)) return undefined;
  const per: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: MS_PER_DAY };
  let total = 0;
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) total += Number(m[1]) * per[m[2]];
  total = Math.round(total);
  return Number.isSafeInteger(total) ? total : undefined;
}

/** What differs between an existing stream and the settings, one phrase per setting. */
export function streamDifferences(cfg: StreamConfig, s: StreamSettings): string[] {
  const want = streamConfig(s);
  const diffs: string[] = [];
  const subjects = cfg.subjects ?? [];
  if (subjects.length !== 1 || subjects[0] !== want.subjects?.[0]) diffs.push(`subjects are ${JSON.stringify(subjects)}, wanted ${JSON.stringify(want.subjects)} (jetstream.subject_prefix)`);
  if (cfg.num_replicas !== s.replicas) diffs.push(`replicas is ${cfg.num_replicas}, wanted ${s.replicas} (jetstream.replicas / --replicas)`);
  const dup = Math.round((cfg.duplicate_window ?? 0) / NS_PER_MS);
  if (dup !== s.duplicateWindowMs) diffs.push(`duplicate_window is ${formatDuration(dup)}, wanted ${formatDuration(s.duplicateWindowMs)} (jetstream.duplicate_window)`);
  const age = Math.round((cfg.max_age ?? 0) / NS_PER_MS);
  if (age !== s.maxAgeMs) diffs.push(`max_age is ${age === 0 ? 'unlimited' : formatDuration(age)}, wanted ${formatDuration(s.maxAgeMs)} (jetstream.max_age / --max-age)`);
  if (cfg.max_bytes !== s.maxBytes) diffs.push(`max_bytes is ${cfg.max_bytes < 0 ? 'unlimited' : cfg.max_bytes}, wanted ${s.maxBytes} (jetstream.max_bytes / --max-bytes)`);
  if (cfg.retention !== want.retention) diffs.push(`retention is ${cfg.retention}, wanted ${want.retention}`);
  if (cfg.storage !== want.storage) diffs.push(`storage is ${cfg.storage}, wanted ${want.storage}`);
  return diffs;
}

function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && (err.code === 10059 || err.status === 404);
}

/**
 * Makes sure the stream is there with these settings: creates a missing one when create is true
 * (StreamMissingError otherwise), checks an existing one and throws StreamMismatchError naming
 * every setting that differs. Never changes an existing stream.
 */
export async function ensureStream(jsm: JetStreamManager, s: StreamSettings, opts: { create: boolean; servers?: string }): Promise<{ created: boolean; info: StreamInfo }> {
  let info: StreamInfo | null = null;
  try {
    info = await jsm.streams.info(s.stream);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
  }
  if (info === null) {
    if (!opts.create) throw new StreamMissingError(s.stream, opts.servers ?? JETSTREAM_DEFAULTS.servers);
    try {
      return { created: true, info: await jsm.streams.add(streamConfig(s)) };
    } catch (err) {
      // Created meanwhile by another process: check that one instead.
      if (err instanceof JetStreamApiError && /already in use|exists/i.test(err.message)) return ensureStream(jsm, s, { ...opts, create: false });
      throw new Error(`cannot create stream ${s.stream}: ${(err as Error).message}`, { cause: err });
    }
  }
  const diffs = streamDifferences(info.config, s);
  if (diffs.length) throw new StreamMismatchError(s.stream, diffs);
  return { created: false, info };
}

/** One line about a stream, for `wgflow jetstream init` and logs. */
export function streamSummary(info: StreamInfo): string {
  const c = info.config;
  return `stream ${c.name}: subjects ${(c.subjects ?? []).join(',')}, replicas ${c.num_replicas}, max_age ${formatDuration(Math.round(c.max_age / NS_PER_MS))}, max_bytes ${c.max_bytes}, duplicate_window ${formatDuration(Math.round((c.duplicate_window ?? 0) / NS_PER_MS))}, storage ${c.storage}; ${info.state.messages} messages, ${info.state.bytes} bytes`;
}
