// A NATS client connection of our own, for the JetStream hot paths (publishing from the spool,
// pulling and acking in `wgflow consume`): with nats.js the publisher spent 10.8 µs of CPU per
// event and the consumer 9.8 (BENCHMARKS.md part 10, nats.js baseline), much of it objects,
// promises and GC per message.
//
// What it does: INFO, then TLS if either side asks for it, CONNECT (token or user/password; no
// nkeys or JWT: those stay with nats.js, see src/nats/options.ts), PING/PONG as the handshake and
// keepalive (a connection whose PONGs stop is stale and dropped), subscriptions (renewed after a
// reconnect), outgoing frames gathered and written once per turn of the event loop, writing held
// while the socket is backed up, and reconnecting through the server list (plus the servers the
// cluster announces in INFO connect_urls) until told to stop.
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { OutBuffer } from './out-buffer';
import { Parser, type MsgView, type ParserHandler } from './parser';

export interface NatsTlsOptions {
  /** PEM text of the CA bundle to verify the server with (default: the system's). */
  ca?: string;
  /** PEM client certificate and key (mTLS). */
  cert?: string;
  key?: string;
}

export interface NatsConnOptions {
  /** nats://host:port or tls://host:port (as parseServers gives them). */
  servers: string[];
  token?: string;
  user?: string;
  pass?: string;
  /** Shown in the server's connz. */
  name?: string;
  /** TLS asked for by the configuration (also when a server URL is tls://). */
  tls?: NatsTlsOptions;
  /** One connection attempt (TCP, TLS, CONNECT, PONG) may take this long. Default 5 s. */
  timeoutMs?: number;
  /** Tries per server after a disconnect; -1 (default): forever. */
  maxReconnectAttempts?: number;
  /** At most one attempt per server in this time. Default 1 s. */
  reconnectTimeWaitMs?: number;
  /** A keepalive PING this often. Default 20 s. */
  pingIntervalMs?: number;
  /** Unanswered keepalive PINGs after which the connection is stale. Default 2. */
  maxPingsOut?: number;
  /**
   * Frames not yet written when the connection drops are sent after the reconnect (default
   * true: acks survive a failover). False drops them (a publisher resends what it did not see
   * acked anyway).
   */
  keepPendingOnReconnect?: boolean;
}

export type NatsStatus =
  | { type: 'disconnect'; server: string; reason: string }
  | { type: 'reconnect'; server: string }
  | { type: 'error'; error: Error };

/** An -ERR from the server ("Authorization Violation", "Permissions Violation for Publish to ..."). */
export class NatsServerError extends Error {
  constructor(readonly text: string, readonly server: string) {
    super(`${text} (from ${server})`);
    this.name = 'NatsServerError';
  }

  /** The server refused the credentials. */
  get isAuth(): boolean {
    return /authorization|authentication|auth.*(violation|expired|revoked)/i.test(this.text);
  }
}

interface ServerEntry {
  url: string;
  host: string;
  port: number;
  tls: boolean;
  lastAttempt: number;
}

interface ServerInfo {
  server_id?: string;
  tls_required?: boolean;
  tls_available?: boolean;
  headers?: boolean;
  max_payload?: number;
  connect_urls?: string[];
}

function entryOf(url: string): ServerEntry {
  const u = new URL(/^[a-z]+:\/\//i.test(url) ? url : `nats://${url}`);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  return { url: `${u.protocol}//${u.host}`, host, port: u.port ? Number(u.port) : 4222, tls: u.protocol === 'tls:', lastAttempt: 0 };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A failing reconnect is reported at its first failure, then at most this often. */
export const RECONNECT_REPORT_MS = 30_000;

/** One socket's life: the handshake, then frames for the connection. */
class Link implements ParserHandler {
  readonly parser = new Parser(this);
  socket: Socket | TLSSocket;
  open = false;
  serverInfo: ServerInfo = {};
  lastError: Error | null = null;
  onFirstInfo: ((info: ServerInfo) => void) | null = null;
  onHandshakePong: (() => void) | null = null;
  onHandshakeErr: ((e: Error) => void) | null = null;

  constructor(readonly conn: Connection, readonly entry: ServerEntry, socket: Socket) {
    this.socket = socket;
  }

  info(json: string): void {
    let info: ServerInfo = {};
    try {
      info = JSON.parse(json) as ServerInfo;
    } catch {
      // a server that sends no JSON: nothing learned
    }
    this.serverInfo = info;
    if (this.onFirstInfo !== null) {
      const f = this.onFirstInfo;
      this.onFirstInfo = null;
      f(info);
      return;
    }
    this.conn.onInfo(info);
  }

  msg(m: MsgView): void {
    this.conn.dispatch(m);
  }

  ok(): void {
    // verbose is off: none expected
  }

  err(text: string): void {
    const e = new NatsServerError(text, this.entry.url);
    this.lastError = e;
    if (!this.open) this.onHandshakeErr?.(e);
    else this.conn.onServerError(e);
  }

  ping(): void {
    this.socket.write('PONG\r\n');
  }

  pong(): void {
    if (!this.open) {
      this.onHandshakePong?.();
      return;
    }
    this.conn.onPong();
  }
}

export class Connection {
  /** Frames waiting for the next write. Append frames here, then call flushSoon(). */
  readonly out = new OutBuffer();
  private readonly o: Required<Omit<NatsConnOptions, 'token' | 'user' | 'pass' | 'name' | 'tls'>> & NatsConnOptions;
  private readonly servers: ServerEntry[];
  private link: Link | null = null;
  private readonly subs = new Map<number, { subject: string; handler: (m: MsgView) => void }>();
  private nextSid = 1;
  private blocked = false;
  private flushScheduled = false;
  /** One entry per PING sent and not yet answered: null for a keepalive, else the flush's resolver. */
  private pongs: Array<((err: Error | null) => void) | null> = [];
  private pingsOut = 0;
  /** PINGs appended to `out` since it was last handed to the socket. */
  private pingsInOut = 0;
  /**
   * PONGs still to come for PINGs kept in `out` across a reconnect: their waiters were already
   * rejected at the disconnect, so these PONGs must not answer newer PINGs (a later flush would
   * resolve before the server saw its frames).
   */
  private stalePongs = 0;
  private pingTimer: NodeJS.Timeout | null = null;
  private readonly listeners: Array<(s: NatsStatus) => void> = [];
  private closing = false;
  private wake: (() => void) | null = null;
  private endWith: (err: Error | null) => void = () => undefined;
  private readonly closedP: Promise<Error | null>;
  private isClosed = false;

  private constructor(o: NatsConnOptions) {
    this.o = { timeoutMs: 5_000, maxReconnectAttempts: -1, reconnectTimeWaitMs: 1_000, pingIntervalMs: 20_000, maxPingsOut: 2, keepPendingOnReconnect: true, ...o };
    if (o.servers.length === 0) throw new Error('no NATS server given');
    this.servers = o.servers.map(entryOf);
    this.closedP = new Promise((r) => (this.endWith = r));
  }

  /**
   * Connects to the first server that accepts (each tried once, in order). Rejects with the last
   * failure (an -ERR such as "Authorization Violation" comes first: it says most).
   */
  static async connect(o: NatsConnOptions): Promise<Connection> {
    const c = new Connection(o);
    let failure: Error | null = null;
    for (const s of c.servers) {
      s.lastAttempt = Date.now();
      try {
        c.adopt(await c.open(s));
        return c;
      } catch (err) {
        if (!(failure instanceof NatsServerError) || err instanceof NatsServerError) failure = err as Error;
      }
    }
    c.isClosed = true;
    c.endWith(failure);
    throw failure ?? new Error('cannot connect');
  }

  /** The server in use (its URL), or null while reconnecting. */
  get server(): string | null {
    return this.link?.entry.url ?? null;
  }

  get connected(): boolean {
    return this.link !== null;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** The server's INFO of the current connection. */
  get info(): { maxPayload: number; headers: boolean } {
    return { maxPayload: this.link?.serverInfo.max_payload ?? 1024 * 1024, headers: this.link?.serverInfo.headers !== false };
  }

  /** Bytes written but not yet taken by the kernel, plus the frames not yet written. */
  get pendingBytes(): number {
    return this.out.len + (this.link?.socket.writableLength ?? 0);
  }

  onStatus(f: (s: NatsStatus) => void): void {
    this.listeners.push(f);
  }

  /** Resolves when the connection ends for good: null after close(), else the reason. */
  whenClosed(): Promise<Error | null> {
    return this.closedP;
  }

  subscribe(subject: string, handler: (m: MsgView) => void): number {
    const sid = this.nextSid++;
    this.subs.set(sid, { subject, handler });
    if (this.link !== null) {
      this.out.ascii('SUB ');
      this.out.text(subject);
      this.out.ascii(` ${sid}\r\n`);
      this.flushSoon();
    }
    return sid;
  }

  unsubscribe(sid: number): void {
    if (!this.subs.delete(sid)) return;
    if (this.link !== null) {
      this.out.ascii(`UNSUB ${sid}\r\n`);
      this.flushSoon();
    }
  }

  /** PUB (or HPUB with a ready header block "NATS/1.0\r\n...\r\n\r\n"). */
  publish(subject: string, data: Buffer | string, reply?: string, headerBlock?: string): void {
    const body = typeof data === 'string' ? Buffer.from(data) : data;
    const out = this.out;
    const hdr = headerBlock === undefined ? 0 : Buffer.byteLength(headerBlock);
    out.ascii(hdr > 0 ? 'HPUB ' : 'PUB ');
    out.text(subject);
    if (reply !== undefined && reply !== '') {
      out.ascii(' ');
      out.text(reply);
    }
    out.ascii(hdr > 0 ? ` ${hdr} ${hdr + body.length}\r\n` : ` ${body.length}\r\n`);
    if (hdr > 0) out.text(headerBlock as string);
    out.bytes(body);
    out.crlf();
    this.flushSoon();
  }

  /** Writes what is gathered at the next turn of the event loop (frames of one turn go together). */
  flushSoon(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.doFlush);
  }

  private readonly doFlush = (): void => {
    this.flushScheduled = false;
    this.writeOut();
  };

  private writeOut(): void {
    const link = this.link;
    if (link === null || this.blocked || this.out.len === 0) return;
    const b = this.out.take();
    this.pingsInOut = 0;
    // The kernel takes less than we give when the server reads slowly: stop gathering writes in
    // the socket's own queue, wait for 'drain' (our OutBuffer holds the rest meanwhile).
    if (!link.socket.write(b, () => this.out.giveBack(b))) this.blocked = true;
  }

  /** Resolves when the server has seen everything sent so far (PING, PONG); rejects on a disconnect or after timeoutMs. */
  flush(timeoutMs = this.o.timeoutMs): Promise<void> {
    if (this.link === null) return Promise.reject(new Error('not connected to NATS'));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no PONG within ${timeoutMs} ms (timeout)`)), timeoutMs);
      this.pongs.push((err) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      });
      this.out.ascii('PING\r\n');
      this.pingsInOut++;
      this.writeOut();
    });
  }

  /** Writes what is pending (best effort, up to timeoutMs), then closes. Idempotent. */
  async close(timeoutMs = 2_000): Promise<void> {
    if (this.isClosed) return;
    if (!this.closing) {
      this.closing = true;
      this.wake?.();
      if (this.link !== null) await this.flush(timeoutMs).catch(() => undefined);
      this.finish(null);
    }
    await this.closedP;
  }

  // ---------- for Link ----------

  dispatch(m: MsgView): void {
    const s = this.subs.get(m.sid);
    if (s === undefined) return; // unsubscribed meanwhile
    try {
      s.handler(m);
    } catch (err) {
      this.emit({ type: 'error', error: err as Error });
    }
  }

  onInfo(info: ServerInfo): void {
    for (const u of info.connect_urls ?? []) {
      let e: ServerEntry;
      try {
        e = entryOf(`${this.link?.entry.tls ? 'tls' : 'nats'}://${u}`);
      } catch {
        continue;
      }
      if (!this.servers.some((s) => s.host === e.host && s.port === e.port)) this.servers.push(e);
    }
  }

  onServerError(e: NatsServerError): void {
    // Fatal ones (auth, stale, slow consumer, max payload) are followed by the server closing
    // the socket: the close starts the reconnect. Here the reason is told.
    this.emit({ type: 'error', error: e });
  }

  onPong(): void {
    this.pingsOut = 0;
    if (this.stalePongs > 0) {
      this.stalePongs--;
      return;
    }
    const f = this.pongs.shift();
    if (f) f(null);
  }

  // ---------- connecting ----------

  private emit(s: NatsStatus): void {
    for (const f of this.listeners) f(s);
  }

  private connectFrame(tlsUsed: boolean): string {
    const c: Record<string, unknown> = {
      verbose: false, pedantic: false, tls_required: tlsUsed, name: this.o.name ?? 'wgflow', lang: 'wgflow-node', version: '1',
      protocol: 1, headers: true, no_responders: true, echo: true,
    };
    if (this.o.token) c.auth_token = this.o.token;
    if (this.o.user !== undefined) {
      c.user = this.o.user;
      c.pass = this.o.pass ?? '';
    }
    let frame = `CONNECT ${JSON.stringify(c)}\r\n`;
    for (const [sid, s] of this.subs) frame += `SUB ${s.subject} ${sid}\r\n`;
    return frame + 'PING\r\n';
  }

  /** One attempt: TCP, INFO, TLS when asked, CONNECT, PONG. Resolves with the open link. */
  private open(s: ServerEntry): Promise<Link> {
    return new Promise<Link>((resolve, reject) => {
      let done = false;
      const sock = netConnect({ host: s.host, port: s.port });
      sock.setNoDelay(true);
      const link = new Link(this, s, sock);
      const fail = (err: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        link.socket.destroy();
        sock.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new Error(`timeout: no answer from ${s.url} within ${this.o.timeoutMs} ms`)), this.o.timeoutMs);
      const onData = (d: Buffer): void => {
        try {
          link.parser.push(d);
        } catch (err) {
          link.lastError = err as Error;
          if (!done) fail(err as Error);
          else link.socket.destroy();
        }
      };
      const onClose = (): void => {
        if (!done) fail(link.lastError ?? new Error(`connection closed by ${s.url} during the handshake`));
        else this.onLinkClosed(link);
      };
      const onError = (err: Error): void => {
        link.lastError ??= err;
        if (!done) fail(err);
      };
      sock.on('data', onData);
      sock.on('error', onError);
      sock.on('close', onClose);
      link.onHandshakeErr = fail;
      link.onFirstInfo = (info) => {
        const wantTls = s.tls || this.o.tls !== undefined;
        if (wantTls && !info.tls_required && !info.tls_available) {
          fail(new Error(`${s.url} does not offer TLS, but TLS is configured (a tls:// server or a CA, certificate or key file)`));
          return;
        }
        if (!wantTls && !info.tls_required) {
          sock.write(this.connectFrame(false));
          return;
        }
        // The server sends INFO in the clear, then expects the TLS handshake on the same socket.
        sock.off('data', onData);
        const t = tlsConnect({
          socket: sock,
          host: s.host,
          servername: isIP(s.host) ? undefined : s.host,
          ca: this.o.tls?.ca,
          cert: this.o.tls?.cert,
          key: this.o.tls?.key,
        });
        link.socket = t;
        t.on('data', onData);
        t.on('error', onError);
        t.on('close', onClose);
        t.once('secureConnect', () => t.write(this.connectFrame(true)));
      };
      link.onHandshakePong = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        link.open = true;
        link.onHandshakeErr = null;
        link.socket.on('drain', () => this.onDrain(link));
        resolve(link);
      };
    });
  }

  /** The link is open: it becomes the connection's; pending frames go out. */
  private adopt(link: Link): void {
    if (this.closing) {
      link.socket.destroy();
      return;
    }
    this.link = link;
    this.blocked = false;
    this.pingsOut = 0;
    this.pongs = [];
    this.onInfo(link.serverInfo);
    if (this.pingTimer === null) {
      this.pingTimer = setInterval(() => this.keepalive(), this.o.pingIntervalMs);
      this.pingTimer.unref();
    }
    if (this.out.len > 0) this.writeOut();
  }

  private keepalive(): void {
    const link = this.link;
    if (link === null) return;
    if (this.pingsOut >= this.o.maxPingsOut) {
      link.lastError = new Error(`stale connection: ${this.pingsOut} PINGs to ${link.entry.url} unanswered`);
      link.socket.destroy();
      return;
    }
    this.pingsOut++;
    this.pongs.push(null);
    this.out.ascii('PING\r\n');
    this.pingsInOut++;
    this.writeOut();
  }

  private onDrain(link: Link): void {
    if (link !== this.link) return;
    this.blocked = false;
    if (this.out.len > 0) this.writeOut();
  }

  private onLinkClosed(link: Link): void {
    if (link !== this.link) return;
    this.link = null;
    const pongs = this.pongs;
    this.pongs = [];
    const gone = new Error(`disconnected from ${link.entry.url}`);
    for (const f of pongs) f?.(gone);
    if (this.closing) {
      this.finish(null);
      return;
    }
    if (!this.o.keepPendingOnReconnect) {
      this.out.clear();
      this.pingsInOut = 0;
    }
    // The PINGs still in `out` go to the next server, which answers them first (what this link
    // was sent is lost with it, PONGs included).
    this.stalePongs = this.pingsInOut;
    this.emit({ type: 'disconnect', server: link.entry.url, reason: link.lastError?.message ?? 'connection closed' });
    void this.reconnect(link.entry);
  }

  private async reconnect(from: ServerEntry): Promise<void> {
    const tries = new Map<ServerEntry, number>();
    let authFailures = 0;
    let last: Error | null = null;
    let reportedAt: number | null = null;
    while (!this.closing) {
      const at = this.servers.indexOf(from);
      const order = [...this.servers.slice(at + 1), ...this.servers.slice(0, at + 1)];
      let tried = 0;
      for (const s of order) {
        if (this.closing) return;
        const n = tries.get(s) ?? 0;
        if (this.o.maxReconnectAttempts >= 0 && n >= this.o.maxReconnectAttempts) continue;
        tried++;
        const wait = s.lastAttempt + this.o.reconnectTimeWaitMs - Date.now();
        if (wait > 0) await new Promise<void>((r) => {
          const t = setTimeout(r, wait);
          this.wake = () => {
            clearTimeout(t);
            r();
          };
        });
        this.wake = null;
        if (this.closing) return;
        s.lastAttempt = Date.now();
        tries.set(s, n + 1);
        try {
          const link = await this.open(s);
          if (this.closing) {
            link.socket.destroy();
            return;
          }
          this.adopt(link);
          this.emit({ type: 'reconnect', server: s.url });
          return;
        } catch (err) {
          last = err as Error;
          // The credentials were taken away (or changed) while we were away: give up, as nats.js
          // does on a repeated auth error, and let the owner say so and retry with its backoff.
          if (err instanceof NatsServerError && err.isAuth && ++authFailures >= 2) {
            this.finish(err);
            return;
          }
          // Retried forever by default: say why now and then (the first failure, then at most
          // every RECONNECT_REPORT_MS), not once a second, and not never.
          const now = performance.now();
          if (reportedAt === null || now - reportedAt >= RECONNECT_REPORT_MS) {
            reportedAt = now;
            this.emit({ type: 'error', error: new Error(`reconnecting to ${s.url} failed: ${last.message}`, { cause: err }) });
          }
        }
      }
      if (tried === 0) {
        this.finish(new Error(`could not reconnect to ${this.servers.map((x) => x.url).join(',')}: ${last?.message ?? 'no attempts left'}`));
        return;
      }
      await sleep(0);
    }
  }

  private finish(err: Error | null): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closing = true;
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.pingTimer = null;
    const link = this.link;
    this.link = null;
    for (const f of this.pongs) f?.(new Error('connection closed'));
    this.pongs = [];
    link?.socket.destroy();
    this.endWith(err);
  }
}
