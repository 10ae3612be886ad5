// A JetStream pull consumer on our own connection: requests to
// $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> with {batch, expires, idle_heartbeat}, each on a
// reply subject (and subscription) of its own, so that every delivery is counted against its
// request. Status messages on a request's subject: 100 idle heartbeat, 404 no messages, 408
// request expired, 409 (consumer deleted, limits exceeded, leadership change), 503 no responders
// (no such stream or consumer, or no leader yet). Times are monotonic (performance.now()): a
// wall-clock step must not expire requests or fake silence. Acks are PUBs of +ACK to each message's
// $JS.ACK reply subject, gathered into the connection's next write with everything else.
//
// Requests are renewed as they fill: at most two batches are asked for at a time. A request the
// server lost (its server killed, a leader change) is noticed by two missed heartbeats or by its
// expiry, and asked again.
import { performance } from 'node:perf_hooks';
import type { Connection } from './connection';
import { newInbox } from './jetstream-publish';
import type { MsgView } from './parser';

export interface PullOptions {
  stream: string;
  durable: string;
  /** Messages one request asks for. */
  batch: number;
  /** A request lasts this long. */
  expiresMs: number;
  /** The server's heartbeats on an idle request (default expiresMs / 2). */
  heartbeatMs?: number;
  /**
   * Delay before asking again after a 503 (no stream or consumer, no leader) or a 409 limit
   * refusal (Exceeded MaxRequestBatch ...). Default 1 s.
   */
  retryMs?: number;
}

export type PullStatus =
  | { type: 'heartbeats_missed'; count: number }
  | { type: 'not_found'; description: string }
  | { type: 'exceeded_limits'; code: number; description: string }
  | { type: 'request_lost'; outstanding: number };

interface Request {
  sid: number;
  remaining: number;
  expiresAt: number;
}

/** Delivery facts in a $JS.ACK reply subject (v1 and v2 forms); null when it is not one. */
export interface AckInfo {
  deliveryCount: number;
  streamSeq: number;
  pending: number;
}

/**
 * Reads $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> or the form with
 * domain and account hash ($JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>...<pending>.<random>).
 */
export function ackInfoOf(buf: Buffer, start: number, end: number, into?: AckInfo): AckInfo | null {
  const dots = DOTS;
  let n = 0;
  for (let i = start; i < end && n < dots.length; i++) if (buf[i] === 0x2e) dots[n++] = i;
  const tokens = n + 1;
  const at = (k: number): number => {
    const s = k === 0 ? start : dots[k - 1] + 1;
    const e = k < n ? dots[k] : end;
    let v = 0;
    for (let i = s; i < e; i++) v = v * 10 + (buf[i] - 0x30);
    return v;
  };
  let d: number, q: number, p: number;
  if (tokens === 9) [d, q, p] = [4, 5, 8];
  else if (tokens >= 11 && tokens <= 12) [d, q, p] = [6, 7, 10];
  else return null;
  const out = into ?? { deliveryCount: 0, streamSeq: 0, pending: 0 };
  out.deliveryCount = at(d);
  out.streamSeq = at(q);
  out.pending = at(p);
  return out;
}

/** Dot positions of the subject being read (one at a time: no allocation per message). */
const DOTS = new Int32Array(16);

const ACK = Buffer.from(' 4\r\n+ACK\r\n');

export class PullConsumer {
  private readonly inbox = newInbox();
  private readonly requests = new Map<number, Request>();
  private nextId = 1;
  private outstanding = 0;
  private lastActivity = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /**
   * The refusal last reported (code and description): a refusal repeated on every retry is told
   * once, until a message arrives or another refusal comes.
   */
  private lastRefusal: string | null = null;
  private readonly heartbeatMs: number;
  private readonly api: string;

  constructor(
    private readonly conn: Connection,
    private readonly o: PullOptions,
    /** A delivered message (valid during the call; subarrays of m.buf may be kept). */
    private readonly onMessage: (m: MsgView) => void,
    private readonly onStatus: (s: PullStatus) => void,
    /** The consumer was deleted: no more messages. */
    private readonly onEnd: (err: Error) => void,
  ) {
    this.heartbeatMs = o.heartbeatMs ?? Math.max(500, Math.floor(o.expiresMs / 2));
    this.api = `$JS.API.CONSUMER.MSG.NEXT.${o.stream}.${o.durable}`;
    conn.onStatus((s) => {
      if (s.type === 'reconnect') {
        // Requests routed through the old server may be gone with it; the timers find out. Ask now
        // for what is missing meanwhile.
        this.lastActivity = performance.now();
        this.topUp();
      }
    });
  }

  start(): void {
    const every = Math.max(100, Math.min(1_000, Math.floor(this.heartbeatMs / 2)));
    this.timer = setInterval(() => this.check(), every);
    this.timer.unref();
    this.topUp();
  }

  /** Asks for nothing more and forgets the requests (deliveries still on their way are dropped). */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const id of [...this.requests.keys()]) this.end(id);
  }

  /** Acks a message by its reply subject (bytes of a delivery, kept by the caller). */
  ack(reply: Buffer): void {
    const out = this.conn.out;
    out.ascii('PUB ');
    out.bytes(reply);
    out.bytes(ACK);
    this.conn.flushSoon();
  }

  /** Asks for the message again (after delayMs). */
  nak(reply: Buffer, delayMs?: number): void {
    const body = delayMs ? `-NAK {"delay":${delayMs * 1_000_000}}` : '-NAK';
    this.frame(reply, body);
  }

  /**
   * Never delivers it again. The reason is not sent: nats-server 2.9 takes only a bare +TERM (with
   * "+TERM reason" the message stayed pending, measured on 2.9.10); the caller logs it.
   */
  term(reply: Buffer): void {
    this.frame(reply, '+TERM');
  }

  private frame(reply: Buffer, body: string): void {
    const b = Buffer.from(body);
    const out = this.conn.out;
    out.ascii('PUB ');
    out.bytes(reply);
    out.ascii(` ${b.length}\r\n`);
    out.bytes(b);
    out.crlf();
    this.conn.flushSoon();
  }

  /** Messages asked for and not yet delivered. */
  get waiting(): number {
    return this.outstanding;
  }

  private topUp(): void {
    if (this.stopped || !this.conn.connected || this.retryTimer !== null) return;
    while (this.outstanding < this.o.batch) this.pull(this.o.batch);
  }

  private pull(n: number): void {
    const id = this.nextId++;
    const subject = `${this.inbox}.${id}`;
    const sid = this.conn.subscribe(subject, (m) => this.onDelivery(id, m));
    this.requests.set(id, { sid, remaining: n, expiresAt: performance.now() + this.o.expiresMs });
    this.outstanding += n;
    const req = `{"batch":${n},"expires":${this.o.expiresMs * 1_000_000},"idle_heartbeat":${this.heartbeatMs * 1_000_000}}`;
    this.conn.publish(this.api, req, subject);
  }

  private end(id: number): void {
    const r = this.requests.get(id);
    if (r === undefined) return;
    this.requests.delete(id);
    this.outstanding -= r.remaining;
    this.conn.unsubscribe(r.sid);
  }

  private onDelivery(id: number, m: MsgView): void {
    this.lastActivity = performance.now();
    const r = this.requests.get(id);
    if (r === undefined) return;
    if (m.hasHeaders && m.dataEnd === m.dataStart) {
      const code = m.status;
      if (code !== 0) {
        this.onStatusMsg(id, code, m);
        return;
      }
    }
    this.lastRefusal = null;
    r.remaining--;
    this.outstanding--;
    if (r.remaining <= 0) this.end(id);
    this.onMessage(m);
    if (this.outstanding < this.o.batch) this.topUp();
  }

  private onStatusMsg(id: number, code: number, m: MsgView): void {
    if (code === 100) return; // idle heartbeat (the request is alive)
    const description = m.headers().description;
    this.end(id);
    if (code === 404 || code === 408) {
      // no messages / the request expired: ask again
    } else if (code === 409 && /consumer deleted/i.test(description)) {
      this.stop();
      this.onEnd(new Error(`the durable consumer ${this.o.durable} was deleted (${description})`));
      return;
    } else if (code === 503) {
      this.onStatus({ type: 'not_found', description: `no responders: stream ${this.o.stream} or durable ${this.o.durable} not found, or no leader yet` });
      this.retryLater();
      return;
    } else if (code === 409 && /leadership change/i.test(description)) {
      // the request went with the old leader; the new one takes the next at once
    } else {
      // A limit of the durable (Exceeded MaxRequestBatch / MaxRequestExpires / MaxRequestMaxBytes,
      // MaxWaiting) or another refusal: the same request is refused again at once, so wait
      // (asking at once looped ~10,000 times a second) and tell it once, not on every retry.
      const key = `${code} ${description}`;
      if (key !== this.lastRefusal) {
        this.lastRefusal = key;
        this.onStatus({ type: 'exceeded_limits', code, description });
      }
      this.retryLater();
      return;
    }
    this.topUp();
  }

  private retryLater(): void {
    if (this.retryTimer !== null || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.topUp();
    }, this.o.retryMs ?? 1_000);
  }

  /** Requests past their expiry (with a heartbeat of grace), and silence longer than two heartbeats. */
  private check(): void {
    if (this.stopped || this.requests.size === 0) return;
    const now = performance.now();
    if (now - this.lastActivity > 2 * this.heartbeatMs) {
      this.onStatus({ type: 'heartbeats_missed', count: 2 });
      for (const id of [...this.requests.keys()]) this.end(id);
      this.lastActivity = now;
      this.topUp();
      return;
    }
    let lost = false;
    for (const [id, r] of this.requests) {
      if (now > r.expiresAt + this.heartbeatMs) {
        this.end(id);
        lost = true;
      }
    }
    if (lost) {
      this.onStatus({ type: 'request_lost', outstanding: this.outstanding });
      this.topUp();
    }
  }
}
