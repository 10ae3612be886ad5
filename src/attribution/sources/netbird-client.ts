// HTTP for the NetBird management API: one GET of a JSON list with a personal access token, a
// timeout per request, a size cap, RFC 8288 `Link: <...>; rel="next"` pages followed, and every
// failure turned into a SourceError of the kind the metrics count. The token is sent in one
// header and nowhere else: it is never part of a URL, a message or a log line, redirects are not
// followed (a redirect must not carry it to another host), and whatever a server echoes back is
// scrubbed of it before it reaches a message.
import { SourceError } from './source';

export interface NetbirdClientOptions {
  /** The management URL as configured ("https://api.netbird.io", "https://nb.example.com/"). */
  readonly url: string;
  /** The personal access token (surrounding whitespace, e.g. a token file's newline, is ignored). */
  readonly token: string;
  /** Per request, headers and body together. */
  readonly timeoutMs: number;
  /** Largest body read per response. */
  readonly maxBytes: number;
  /** Most pages followed for one list. */
  readonly maxPages: number;
  /** Cancels everything in flight (daemon shutdown, or a sibling request failed). */
  readonly signal?: AbortSignal;
}

type Kind = SourceError['kind'];

/** The base URL every API path is resolved against: http(s), no credentials, query or fragment. Throws an Error saying why not. */
export function checkNetbirdUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url.trim());
  } catch {
    throw new Error(`"${url}" is not a URL (expected e.g. https://api.netbird.io)`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error(`${u.protocol} URLs are not supported (expected https:// or http://)`);
  // Credentials in the URL would be a second secret in config and logs; the token file is the one place.
  if (u.username || u.password) throw new Error('the URL must not contain a user name or password (the token goes in attribution.netbird.token_file)');
  if (u.search || u.hash) throw new Error('the URL must not have a query or fragment');
  // The API lives under <url>/api/...; a trailing "/api" in the setting is accepted too.
  let path = u.pathname.replace(/\/+$/, '');
  if (path.endsWith('/api')) path = path.slice(0, -4);
  u.pathname = `${path}/`;
  return u;
}

/** A token usable in an HTTP header. Throws an Error that does not contain it. */
export function checkNetbirdToken(token: string): string {
  const t = token.trim();
  if (t === '') throw new Error('the NetBird token is empty');
  // A header value with other characters would be rejected by fetch with the value in the message.
  if (!/^[\x21-\x7e]+$/.test(t)) throw new Error('the NetBird token contains spaces, control or non-ASCII characters (one token, one line)');
  return t;
}

/** Seconds to wait from a Retry-After value (delta seconds or an HTTP date); undefined if absent or unreadable. */
export function retryAfterSeconds(v: string | null, nowMs = Date.now()): number | undefined {
  if (v === null) return undefined;
  const s = v.trim();
  if (/^\d+$/.test(s)) return Number(s);
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : Math.max(0, Math.ceil((t - nowMs) / 1000));
}

/** The rel="next" target of a Link header, if any. */
export function nextLink(header: string | null): string | null {
  if (!header) return null;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>(.*)$/.exec(part);
    if (!m) continue;
    const rels = /;\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))/i.exec(m[2]);
    const rel = (rels?.[1] ?? rels?.[2] ?? '').toLowerCase().split(/\s+/);
    if (rel.includes('next')) return m[1];
  }
  return null;
}

const STATUS_KIND: ReadonlyArray<[(s: number) => boolean, Kind, string]> = [
  [(s) => s === 401, 'unauthorized', 'the token was not accepted (expired, revoked or mistyped?)'],
  [(s) => s === 403, 'forbidden', "the token's user may not read this (a service user with the admin or auditor role can)"],
  [(s) => s === 429, 'rate_limited', 'rate limited'],
  [(s) => s >= 500, 'server', 'management server error'],
];

/** Network error codes (undici's and the socket's) as words an operator can act on. */
function describeNetworkError(err: unknown): { kind: Kind; text: string } {
  const cause = (err as { cause?: unknown }).cause ?? err;
  const c = cause as { code?: unknown; message?: unknown; errors?: unknown };
  // Happy-eyeballs connects fail with an AggregateError of one error per address.
  const first = Array.isArray(c.errors) ? (c.errors[0] as { code?: unknown } | undefined) : undefined;
  const code = typeof c.code === 'string' ? c.code : typeof first?.code === 'string' ? first.code : '';
  const msg = typeof c.message === 'string' && c.message ? c.message : String(cause);
  switch (code) {
    case 'ECONNREFUSED': return { kind: 'network', text: 'connection refused (ECONNREFUSED)' };
    case 'ENOTFOUND': case 'EAI_AGAIN': case 'EAI_NONAME': return { kind: 'network', text: `cannot resolve the host name (${code})` };
    case 'ECONNRESET': case 'EPIPE': case 'UND_ERR_SOCKET': case 'UND_ERR_CLOSED': return { kind: 'network', text: `connection closed by the server (${code})` };
    case 'EHOSTUNREACH': case 'ENETUNREACH': case 'EADDRNOTAVAIL': return { kind: 'network', text: `no route to the server (${code})` };
    case 'ETIMEDOUT': case 'UND_ERR_CONNECT_TIMEOUT': return { kind: 'timeout', text: `connecting timed out (${code})` };
    case 'UND_ERR_HEADERS_TIMEOUT': case 'UND_ERR_BODY_TIMEOUT': return { kind: 'timeout', text: `the server stopped answering (${code})` };
    default: return { kind: 'network', text: code ? `${msg} (${code})` : msg };
  }
}

export class NetbirdClient {
  readonly base: URL;
  private readonly token: string;

  constructor(private readonly opts: NetbirdClientOptions) {
    // Both checks throw plain Errors without the token; the caller labels them.
    this.base = checkNetbirdUrl(opts.url);
    this.token = checkNetbirdToken(opts.token);
  }

  /** A SourceError whose message cannot carry the token, whatever went into it. */
  fail(kind: Kind, message: string, retryAfterS?: number): SourceError {
    return new SourceError('netbird', kind, this.redact(message), retryAfterS);
  }

  redact(text: string): string {
    return text.split(this.token).join('<token>');
  }

  /** "GET /api/peers" for messages: the path as configured-relative, never the token. */
  label(u: URL): string {
    return `GET ${u.pathname}${u.search}`;
  }

  /** GET a path (relative to the base URL, e.g. "api/peers") that answers a JSON array; pages are concatenated. */
  async getList(path: string): Promise<{ items: unknown[]; pages: number }> {
    let url: URL = new URL(path, this.base);
    const first = url;
    const seen = new Set<string>();
    const items: unknown[] = [];
    for (let page = 1; ; page++) {
      seen.add(url.href);
      const { body, link } = await this.getJson(url);
      if (!Array.isArray(body)) {
        throw this.fail('invalid', `${this.label(url)}: expected a JSON array, got ${body === null ? 'null' : typeof body}`);
      }
      for (const x of body) items.push(x);
      const next = nextLink(link);
      if (next === null) return { items, pages: page };
      let nu: URL;
      try {
        nu = new URL(next, url);
      } catch {
        throw this.fail('invalid', `${this.label(url)}: Link rel="next" is not a URL: ${JSON.stringify(next.slice(0, 200))}`);
      }
      // The token goes to the configured server only.
      if (nu.origin !== this.base.origin) throw this.fail('invalid', `${this.label(url)}: Link rel="next" points to another server (${nu.origin}); not followed`);
      if (seen.has(nu.href)) throw this.fail('invalid', `${this.label(first)}: Link rel="next" loops back to ${this.label(nu)}`);
      if (page >= this.opts.maxPages) throw this.fail('invalid', `${this.label(first)}: more than ${this.opts.maxPages} pages`);
      url = nu;
    }
  }

  private async getJson(url: URL): Promise<{ body: unknown; link: string | null }> {
    const label = this.label(url);
    const ctl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctl.abort();
    }, this.opts.timeoutMs);
    const outer = this.opts.signal;
    const onOuter = (): void => ctl.abort();
    outer?.addEventListener('abort', onOuter, { once: true });
    if (outer?.aborted) ctl.abort();
    try {
      let res: Response;
      let text: string;
      try {
        res = await fetch(url, {
          method: 'GET',
          headers: { Authorization: `Token ${this.token}`, Accept: 'application/json' },
          redirect: 'manual',
          signal: ctl.signal,
        });
        text = await this.readBody(res, label);
      } catch (err) {
        if (err instanceof SourceError) throw err;
        if (timedOut) throw this.fail('timeout', `${label}: no complete answer within ${this.opts.timeoutMs} ms`);
        if (outer?.aborted) throw this.fail('network', `${label}: cancelled`);
        const { kind, text: why } = describeNetworkError(err);
        throw this.fail(kind, `${label} (${this.base.origin}): ${why}`);
      }
      const reqId = res.headers.get('x-request-id');
      const where = `${label}: HTTP ${res.status}${reqId ? ` (X-Request-Id ${reqId.slice(0, 64)})` : ''}`;
      if (res.status >= 300 && res.status < 400) {
        const to = res.headers.get('location');
        throw this.fail('invalid', `${where}: redirected${to ? ` to ${to.slice(0, 200)}` : ''}; redirects are not followed, so that the token goes nowhere else: set attribution.netbird.url to the final address`);
      }
      if (res.status < 200 || res.status >= 300) {
        const said = serverMessage(text);
        for (const [match, kind, what] of STATUS_KIND) {
          if (!match(res.status)) continue;
          if (kind === 'rate_limited') {
            const after = retryAfterSeconds(res.headers.get('retry-after'));
            throw this.fail(kind, `${where}: ${what}${after !== undefined ? `; retry after ${after} s` : ' (no Retry-After)'}${said}`, after);
          }
          throw this.fail(kind, `${where}: ${what}${said}`);
        }
        const hint = res.status === 404 ? ': is attribution.netbird.url the management API address?' : '';
        throw this.fail('invalid', `${where}${hint}${said}`);
      }
      try {
        return { body: JSON.parse(text) as unknown, link: res.headers.get('link') };
      } catch (err) {
        const ct = res.headers.get('content-type');
        throw this.fail('invalid', `${label}: the response is not JSON (${(err as Error).message}; Content-Type ${ct ?? 'none'}; starts ${JSON.stringify(printable(text.slice(0, 60)))})`);
      }
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onOuter);
    }
  }

  private async readBody(res: Response, label: string): Promise<string> {
    if (res.body === null) return '';
    const reader = res.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > this.opts.maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw this.fail('invalid', `${label}: the response is larger than ${this.opts.maxBytes} bytes`);
      }
      chunks.push(value);
    }
    return Buffer.concat(chunks).toString('utf8');
  }
}

function printable(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]+/g, ' ');
}

/** NetBird's error body ({"message": ...}) or the start of a text one, as a message suffix. */
function serverMessage(text: string): string {
  let m = '';
  try {
    const j = JSON.parse(text) as { message?: unknown };
    if (j && typeof j === 'object' && typeof j.message === 'string') m = j.message;
  } catch {
    m = text;
  }
  m = printable(m).trim();
  if (m === '') return '';
  return `: server said ${JSON.stringify(m.length > 200 ? `${m.slice(0, 200)}...` : m)}`;
}
