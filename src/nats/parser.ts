// The NATS client protocol, server to client: INFO, MSG, HMSG, +OK, -ERR, PING, PONG. One parser
// per socket (a new socket starts clean, so a connection closed mid-frame leaves nothing behind).
// Frames may be split anywhere across chunks; a message is handed over as offsets into one buffer
// (no strings, no objects per message: the consumer reads its reply subject and payload as bytes).
//
// Buffers handed to the handler are never reused by the parser: a socket chunk, or a buffer made
// for one frame that spanned chunks. A handler may keep subarrays of them.

/** One MSG/HMSG, valid during the handler call (the view is reused; the bytes are not). */
export class MsgView {
  buf: Buffer = Buffer.alloc(0);
  sid = 0;
  subjectStart = 0;
  subjectEnd = 0;
  /** replyStart === replyEnd: no reply subject. */
  replyStart = 0;
  replyEnd = 0;
  /** headerStart === headerEnd: no headers (MSG). */
  headerStart = 0;
  headerEnd = 0;
  dataStart = 0;
  dataEnd = 0;

  get subject(): string {
    return this.buf.toString('utf8', this.subjectStart, this.subjectEnd);
  }

  get reply(): string {
    return this.buf.toString('utf8', this.replyStart, this.replyEnd);
  }

  /** The payload (a view, not a copy). */
  get data(): Buffer {
    return this.buf.subarray(this.dataStart, this.dataEnd);
  }

  get hasHeaders(): boolean {
    return this.headerEnd > this.headerStart;
  }

  /**
   * The status code of the header block's first line ("NATS/1.0 408 Request Timeout"), 0 when
   * there is none (a plain header block, or no headers).
   */
  get status(): number {
    const b = this.buf;
    const s = this.headerStart + 8; // after "NATS/1.0"
    if (this.headerEnd - this.headerStart < 12 || b[s] !== 0x20) return 0;
    const d0 = b[s + 1] - 0x30, d1 = b[s + 2] - 0x30, d2 = b[s + 3] - 0x30;
    if (d0 < 0 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return 0;
    return d0 * 100 + d1 * 10 + d2;
  }

  /** The header block parsed (for the rare paths: status messages, errors). */
  headers(): MsgHeaders {
    return parseHeaders(this.buf, this.headerStart, this.headerEnd);
  }
}

export interface MsgHeaders {
  /** 0 when the first line has no status. */
  code: number;
  description: string;
  /** Header names as sent; values of a repeated name joined with ", ". */
  values: Map<string, string>;
}

/** Parses a header block "NATS/1.0[ code[ description]]\r\nName: value\r\n...\r\n\r\n". */
export function parseHeaders(buf: Buffer, start: number, end: number): MsgHeaders {
  const text = buf.toString('utf8', start, end);
  const lines = text.split('\r\n');
  const first = lines[0] ?? '';
  const m = /^NATS\/1\.0(?: (\d{3})(?: (.*))?)?$/.exec(first);
  const out: MsgHeaders = { code: m?.[1] ? Number(m[1]) : 0, description: m?.[2]?.trim() ?? '', values: new Map() };
  for (let i = 1; i < lines.length; i++) {
    const l = lines[i];
    if (l === '') continue;
    const c = l.indexOf(':');
    if (c <= 0) continue;
    const k = l.slice(0, c).trim(), v = l.slice(c + 1).trim();
    const had = out.values.get(k);
    out.values.set(k, had === undefined ? v : `${had}, ${v}`);
  }
  return out;
}

export interface ParserHandler {
  info(json: string): void;
  msg(m: MsgView): void;
  ok(): void;
  /** The text of -ERR without the quotes: "Authorization Violation". */
  err(text: string): void;
  ping(): void;
  pong(): void;
}

/** The server broke the protocol (a bad frame); the connection cannot be used any more. */
export class NatsProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NatsProtocolError';
  }
}

/** A control line longer than this without its CRLF is refused (the server's own limit is 4 KiB; INFO can be longer). */
const MAX_CONTROL_LINE = 1024 * 1024;
/** A message body larger than this is refused (the server's max_payload is at most 64 MiB). */
const MAX_FRAME = 128 * 1024 * 1024;

const CR = 0x0d, LF = 0x0a, SP = 0x20, TAB = 0x09;

export class Parser {
  /** Bytes of an incomplete control line (need < 0), or of an incomplete frame (need = its size). */
  private rest: Buffer | null = null;
  private restLen = 0;
  private need = -1;
  private readonly view = new MsgView();
  /** Token bounds of the control line being parsed: start, end pairs. */
  private readonly tok = new Int32Array(16);

  constructor(private readonly h: ParserHandler) {}

  /** Feeds one chunk; throws NatsProtocolError on a bad frame (the parser is then unusable). */
  push(chunk: Buffer): void {
    if (this.rest !== null) {
      if (this.need < 0) {
        // An incomplete control line: join it with the rest of the line only (not the whole
        // chunk: that copy was ~2% of the consumer's CPU). A MSG line then waits for its body
        // as a frame of known size.
        const lf = chunk.indexOf(LF);
        if (lf < 0) {
          if (this.restLen + chunk.length > MAX_CONTROL_LINE) throw new NatsProtocolError('control line too long');
          this.rest = Buffer.concat([this.rest.subarray(0, this.restLen), chunk]);
          this.restLen = this.rest.length;
          return;
        }
        const head = Buffer.concat([this.rest.subarray(0, this.restLen), chunk.subarray(0, lf + 1)]);
        this.rest = null;
        this.restLen = 0;
        this.parse(head, 0);
        if (lf + 1 < chunk.length) this.push(chunk.subarray(lf + 1));
        return;
      }
      // An incomplete frame of known size: fill its own buffer.
      const n = Math.min(this.need - this.restLen, chunk.length);
      chunk.copy(this.rest, this.restLen, 0, n);
      this.restLen += n;
      if (this.restLen < this.need) return;
      const frame = this.rest;
      this.rest = null;
      this.restLen = 0;
      this.need = -1;
      const used = this.parse(frame, 0);
      if (used !== frame.length) throw new NatsProtocolError('frame length mismatch');
      if (n < chunk.length) this.parse(chunk, n);
      return;
    }
    this.parse(chunk, 0);
  }

  /** Parses whole frames from pos; keeps an incomplete one. Returns where it stopped. */
  private parse(buf: Buffer, pos: number): number {
    const len = buf.length;
    while (pos < len) {
      const lf = buf.indexOf(LF, pos);
      if (lf < 0) {
        if (len - pos > MAX_CONTROL_LINE) throw new NatsProtocolError('control line too long');
        this.keep(buf, pos, len, -1);
        return len;
      }
      const lineEnd = lf > pos && buf[lf - 1] === CR ? lf - 1 : lf;
      const c0 = buf[pos] | 0x20; // lower case
      if (c0 === 0x6d /* m */ || c0 === 0x68 /* h */) {
        const next = this.message(buf, pos, lineEnd, lf + 1, c0 === 0x68);
        if (next < 0) return len; // kept
        pos = next;
        continue;
      }
      if (c0 === 0x70 /* p */) {
        const c1 = buf[pos + 1] | 0x20;
        const c2 = buf[pos + 2] | 0x20;
        if (c1 === 0x69 /* pi */) this.h.ping();
        else if (c1 === 0x6f /* po */ && c2 === 0x6e) this.h.pong();
        else throw new NatsProtocolError(`unknown operation ${this.lineText(buf, pos, lineEnd)}`);
      } else if (c0 === 0x2b /* + */) {
        this.h.ok();
      } else if (c0 === 0x2d /* - */) {
        const text = buf.toString('utf8', pos, lineEnd).replace(/^-ERR\s*/i, '').trim().replace(/^'(.*)'$/, '$1');
        this.h.err(text);
      } else if (c0 === 0x69 /* i */) {
        const s = buf.toString('utf8', pos, lineEnd);
        const sp = s.search(/\s/);
        if (sp < 0 || s.slice(0, sp).toUpperCase() !== 'INFO') throw new NatsProtocolError(`unknown operation ${this.lineText(buf, pos, lineEnd)}`);
        this.h.info(s.slice(sp + 1).trim());
      } else if (lineEnd === pos) {
        // an empty line: tolerated
      } else {
        throw new NatsProtocolError(`unknown operation ${this.lineText(buf, pos, lineEnd)}`);
      }
      pos = lf + 1;
    }
    return pos;
  }

  private lineText(buf: Buffer, s: number, e: number): string {
    return JSON.stringify(buf.toString('latin1', s, Math.min(e, s + 40)));
  }

  /** Keeps buf[s, e) for the next chunk; need: the whole frame's size, or -1 for a control line. */
  private keep(buf: Buffer, s: number, e: number, need: number): void {
    if (need < 0) {
      this.rest = buf.subarray(s, e);
      this.restLen = e - s;
    } else {
      this.rest = Buffer.allocUnsafe(need);
      buf.copy(this.rest, 0, s, e);
      this.restLen = e - s;
    }
    this.need = need;
  }

  /**
   * MSG <subject> <sid> [reply] <size> / HMSG <subject> <sid> [reply] <hdr size> <total size>.
   * Returns the position after the frame, or -1 when it was kept for the next chunk.
   */
  private message(buf: Buffer, start: number, lineEnd: number, bodyStart: number, withHeaders: boolean): number {
    const tok = this.tok;
    let n = 0;
    let i = start;
    while (i < lineEnd) {
      while (i < lineEnd && (buf[i] === SP || buf[i] === TAB)) i++;
      if (i >= lineEnd) break;
      const s = i;
      while (i < lineEnd && buf[i] !== SP && buf[i] !== TAB) i++;
      if (n >= 14) throw new NatsProtocolError(`too many arguments: ${this.lineText(buf, start, lineEnd)}`);
      tok[n++] = s;
      tok[n++] = i;
    }
    const args = n / 2 - 1; // without the operation
    const op = buf.toString('latin1', tok[0], tok[1]).toUpperCase();
    if ((op !== 'MSG' && op !== 'HMSG') || (op === 'HMSG') !== withHeaders) throw new NatsProtocolError(`unknown operation ${this.lineText(buf, start, lineEnd)}`);
    const fixed = withHeaders ? 4 : 3;
    if (args !== fixed && args !== fixed + 1) throw new NatsProtocolError(`bad ${op} line ${this.lineText(buf, start, lineEnd)}`);
    const hasReply = args === fixed + 1;
    const total = num(buf, tok[n - 2], tok[n - 1]);
    const hdr = withHeaders ? num(buf, tok[n - 4], tok[n - 3]) : 0;
    if (total < 0 || hdr < 0 || hdr > total || total > MAX_FRAME) throw new NatsProtocolError(`bad sizes in ${this.lineText(buf, start, lineEnd)}`);
    const end = bodyStart + total + 2;
    if (end > buf.length) {
      this.keep(buf, start, buf.length, end - start);
      return -1;
    }
    if (buf[end - 2] !== CR || buf[end - 1] !== LF) throw new NatsProtocolError(`${op} body not followed by CRLF`);
    const v = this.view;
    v.buf = buf;
    v.subjectStart = tok[2];
    v.subjectEnd = tok[3];
    const sid = num(buf, tok[4], tok[5]);
    if (sid < 0) throw new NatsProtocolError(`bad sid in ${this.lineText(buf, start, lineEnd)}`);
    v.sid = sid;
    if (hasReply) {
      v.replyStart = tok[6];
      v.replyEnd = tok[7];
    } else {
      v.replyStart = v.replyEnd = 0;
    }
    v.headerStart = bodyStart;
    v.headerEnd = bodyStart + hdr;
    v.dataStart = bodyStart + hdr;
    v.dataEnd = bodyStart + total;
    this.h.msg(v);
    return end;
  }
}

/** A decimal number of bytes [s, e); -1 when it is not one. */
function num(buf: Buffer, s: number, e: number): number {
  if (e <= s || e - s > 15) return -1;
  let v = 0;
  for (let i = s; i < e; i++) {
    const d = buf[i] - 0x30;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}
