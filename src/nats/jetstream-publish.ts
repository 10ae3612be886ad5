// JetStream publishing on our own connection: HPUB to the stream's subject with the Nats-Msg-Id
// header and a reply subject <inbox>.<token>; the stream answers there with its PubAck
// ({"stream":..,"seq":..[,"duplicate":true]} or {"error":{code,err_code,description}}), or the
// server with a 503 status when nothing takes the subject. Any number in flight, matched by the
// token; one subscription (<inbox>.*) for all of them. The caller keeps the tokens, times them
// out and resends (the exporter: src/output/jetstream/exporter.ts).
import { randomBytes } from 'node:crypto';
import type { Connection } from './connection';
import type { MsgView } from './parser';

export type PubAckResult =
  | { ok: true; duplicate: boolean }
  | { ok: false; error: Error };

const ACK_NEW: PubAckResult = { ok: true, duplicate: false };
const ACK_DUPLICATE: PubAckResult = { ok: true, duplicate: true };

// nats-server 2.9 writes {"stream":"S", "seq":1,"duplicate": true} (spaces as shown).
const STREAM_PREFIX = Buffer.from('{"stream":"');
const ERROR_KEY = Buffer.from('"error"');
const DUPLICATE_KEY = Buffer.from('"duplicate"');

/** Whether key's bytes are at b[i]. */
function at(b: Buffer, i: number, e: number, key: Buffer): boolean {
  if (i + key.length > e) return false;
  for (let k = 0; k < key.length; k++) if (b[i + k] !== key[k]) return false;
  return true;
}

/**
 * The usual PubAck read in one pass over its ~40 bytes: it starts with {"stream":", has no
 * "error" key; "duplicate": true in any spacing (nats-server 2.9 writes a space after the
 * colon). Null: something else, left to JSON.parse.
 */
function scanPubAck(b: Buffer, s: number, e: number): PubAckResult | null {
  if (!at(b, s, e, STREAM_PREFIX)) return null;
  let duplicate = false;
  for (let i = s + STREAM_PREFIX.length; i < e; i++) {
    if (b[i] !== 0x22) continue; // '"'
    if (at(b, i, e, ERROR_KEY)) return null;
    if (at(b, i, e, DUPLICATE_KEY)) {
      let j = i + DUPLICATE_KEY.length;
      while (j < e && (b[j] === 0x20 || b[j] === 0x3a || b[j] === 0x09)) j++;
      duplicate = b[j] === 0x74; // t(rue)
      i = j;
    }
  }
  return duplicate ? ACK_DUPLICATE : ACK_NEW;
}

/**
 * A new inbox prefix: _INBOX.<11 random base64url characters> (64 bits: enough to keep the
 * processes of a deployment apart; nats.js's 22 would add 11 bytes to every publish and PubAck).
 */
export function newInbox(): string {
  return `_INBOX.${randomBytes(8).toString('base64url')}`;
}

const HEADER_START = Buffer.from('NATS/1.0\r\nNats-Msg-Id: ');
const HEADER_END = Buffer.from('\r\n\r\n');
const RAW_ID_HEADER_LEN = HEADER_START.length + 36 + HEADER_END.length;
const RAW_ID_HEADER_LEN_TEXT = Buffer.from(`${RAW_ID_HEADER_LEN} `);
const HEX = Buffer.from('0123456789abcdef');

/** The header block of a published event: 63 bytes for a UUID id. */
function headerBlock(msgId: string): string {
  return `NATS/1.0\r\nNats-Msg-Id: ${msgId}\r\n\r\n`;
}

/** The PubAck (or error) in a reply: no JSON.parse on the usual answer (profiled: ~1 µs each). */
export function pubAckOf(m: MsgView): PubAckResult {
  const b = m.buf, s = m.dataStart, e = m.dataEnd;
  if (m.hasHeaders) {
    const code = m.status;
    if (code !== 0 && e === s) {
      const h = m.headers();
      return {
        ok: false,
        error: new Error(code === 503
          ? 'no responders (503): JetStream is not enabled for this account, or no stream takes the subject'
          : `status ${code} ${h.description}`),
      };
    }
  }
  if (e === s) return { ok: false, error: new Error('an empty PubAck') };
  const fast = scanPubAck(b, s, e);
  if (fast !== null) return fast;
  const body = b.subarray(s, e);
  let ack: { stream?: string; duplicate?: boolean; error?: { code?: number; err_code?: number; description?: string } };
  try {
    ack = JSON.parse(body.toString('utf8')) as typeof ack;
  } catch {
    return { ok: false, error: new Error('the PubAck is not JSON') };
  }
  if (ack.error || !ack.stream) {
    return { ok: false, error: new Error(`the stream refused the message: ${ack.error?.description ?? 'no stream in the PubAck'} (code ${ack.error?.code ?? '?'}/${ack.error?.err_code ?? '?'})`) };
  }
  return ack.duplicate ? ACK_DUPLICATE : ACK_NEW;
}

export class JetStreamPublisher {
  readonly inbox = newInbox();
  private readonly inboxLen: number;
  /** " <inbox>." as bytes: the reply subject before its token. */
  private readonly inboxBytes: Buffer;
  private sid = 0;

  /** onAck: the answer to the publish with this token (once; none if it is lost). */
  constructor(private readonly conn: Connection, private readonly onAck: (token: number, r: PubAckResult) => void) {
    this.inboxLen = Buffer.byteLength(this.inbox);
    this.inboxBytes = Buffer.from(` ${this.inbox}.`);
  }

  start(): void {
    if (this.sid !== 0) return;
    this.sid = this.conn.subscribe(`${this.inbox}.*`, (m) => this.onReply(m));
  }

  stop(): void {
    if (this.sid !== 0) this.conn.unsubscribe(this.sid);
    this.sid = 0;
  }

  /**
   * HPUB subject <inbox>.<token> with the Nats-Msg-Id header, written into the connection's next
   * write (no per-message objects: the frame goes straight into the output buffer).
   */
  publish(subject: string, msgId: string, payload: Buffer, token: number): void {
    const out = this.conn.out;
    const hdr = headerBlock(msgId);
    const hlen = hdr.length; // ASCII
    out.ascii('HPUB ');
    out.text(subject);
    out.ascii(` ${this.inbox}.${token} ${hlen} ${hlen + payload.length}\r\n`);
    out.ascii(hdr);
    out.bytes(payload);
    out.crlf();
    this.conn.flushSoon();
  }

  /**
   * The same with the message id given as its 16 raw bytes (id[at, at+16)): written as UUID
   * text straight into the frame.
   */
  publishRawId(subject: string, id: Buffer, at: number, payload: Buffer, token: number): void {
    const out = this.conn.out;
    out.ascii('HPUB ');
    out.text(subject);
    out.bytes(this.inboxBytes);
    out.uint(token);
    out.byte(0x20);
    out.bytes(RAW_ID_HEADER_LEN_TEXT);
    out.uint(RAW_ID_HEADER_LEN + payload.length);
    out.crlf();
    out.bytes(HEADER_START);
    out.ensure(36 + HEADER_END.length);
    let o = out.len;
    const b = out.buf;
    for (let i = 0; i < 16; i++) {
      if (i === 4 || i === 6 || i === 8 || i === 10) b[o++] = 0x2d; // '-'
      const v = id[at + i];
      b[o++] = HEX[v >> 4];
      b[o++] = HEX[v & 15];
    }
    out.len = o;
    out.bytes(HEADER_END);
    out.bytes(payload);
    out.crlf();
    this.conn.flushSoon();
  }

  private onReply(m: MsgView): void {
    // The token is the subject's last token, read as digits from the bytes.
    const b = m.buf;
    let token = 0;
    const s = m.subjectStart + this.inboxLen + 1;
    if (s >= m.subjectEnd) return;
    for (let i = s; i < m.subjectEnd; i++) {
      const d = b[i] - 0x30;
      if (d < 0 || d > 9) return;
      token = token * 10 + d;
    }
    this.onAck(token, pubAckOf(m));
  }
}
