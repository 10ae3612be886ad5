// The NetBird management API source against a local HTTP server (127.0.0.1, port 0) serving
// responses written from NetBird's OpenAPI file, each checked against that file here: the mapping
// gives the same attribution as the equivalent hand-written tables; pages; every failure kind
// (401, 403, 429, 5xx, timeout, refused, malformed JSON, wrong types, missing ids) with a clear
// message that never contains the token; and the mapping's warnings.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { budget } from '../../testkit/slow';
import { Attributor } from '../../src/attribution/attributor';
import type { AttributionConfig } from '../../src/attribution/config';
import { AttributionTables } from '../../src/attribution/tables';
import { fetchNetbird, type NetbirdOptions } from '../../src/attribution/sources/netbird';
import { checkNetbirdUrl, nextLink, retryAfterSeconds } from '../../src/attribution/sources/netbird-client';
import { readPolicy, WireError } from '../../src/attribution/sources/netbird-wire';
import { SourceError } from '../../src/attribution/sources/source';
import {
  account, account1, group, IDS, network, peer, policy, resource, Responses, route, router, rule, templateOf, user,
} from './netbird-fixtures';
import { schemaErrors, upstreamResourceTypeIsUnsatisfiable } from './netbird-schema';

const TOKEN = 'nbp_Tst0kenSecretValue0123456789abcdefGHIJ';

// ---- the server ----

interface Reply {
  status?: number;
  headers?: Record<string, string>;
  /** A JSON value, or raw text with `raw`. */
  body?: unknown;
  raw?: string;
  /** Never answer. */
  hang?: boolean;
  /** Send the headers and the start of the body, then nothing more. */
  stall?: boolean;
}

interface TestServer {
  url: string;
  requests: { path: string; authorization?: string; accept?: string }[];
  close(): Promise<void>;
}

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** Serve `responses` (path → JSON body); `override` may answer a path differently. */
async function serve(responses: Responses, override?: (path: string, req: IncomingMessage) => Reply | undefined): Promise<TestServer> {
  const requests: TestServer['requests'] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '/';
    requests.push({ path, authorization: req.headers.authorization, accept: req.headers.accept });
    const pathname = new URL(path, 'http://x').pathname;
    const r: Reply = override?.(path, req) ?? (pathname in responses ? { body: responses[pathname] } : { status: 404, body: { message: 'not found' } });
    if (r.hang) return; // the socket stays open until close()
    const text = r.raw ?? JSON.stringify(r.body);
    res.writeHead(r.status ?? 200, { 'Content-Type': 'application/json', 'X-Request-Id': 'req-test-1', ...r.headers });
    if (r.stall) res.write(text.slice(0, 10));
    else res.end(text);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  const s: TestServer = {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((ok) => {
      server.closeAllConnections();
      server.close(() => ok());
    }),
  };
  servers.push(s);
  return s;
}

const opts = (s: TestServer, more: Partial<NetbirdOptions> = {}): NetbirdOptions => ({ url: s.url, token: TOKEN, timeoutMs: 2000, ...more });

/** The SourceError a fetch fails with (the test fails if it succeeds or throws something else). */
async function failure(p: Promise<unknown>): Promise<SourceError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(SourceError);
    const e = err as SourceError;
    expect(e.source).toBe('netbird');
    // The token never appears in a message, however the failure came about.
    expect(e.message).not.toContain(TOKEN);
    expect(e.message).not.toContain(TOKEN.slice(4, 20));
    expect(String(e.stack)).not.toContain(TOKEN);
    return e;
  }
  throw new Error('expected the fetch to fail');
}

/** Every response of a fixture set is a valid 200 response of its endpoint in NetBird's schema. */
function expectSchemaValid(responses: Responses): void {
  for (const [path, body] of Object.entries(responses)) {
    expect({ path, errors: schemaErrors(templateOf(path), body) }).toEqual({ path, errors: [] });
  }
}

// ---- the schema check itself ----

describe('fixtures follow NetBird\'s OpenAPI schema', () => {
  it('every response of the account validates against the 200 response schema of its endpoint', () => {
    const r = account1();
    expect(Object.keys(r).map(templateOf).sort()).toEqual([
      '/api/accounts', '/api/groups', '/api/networks', '/api/networks/{networkId}/resources', '/api/networks/{networkId}/routers',
      '/api/peers', '/api/policies', '/api/routes', '/api/users',
    ]);
    expectSchemaValid(r);
  });

  it('the validator rejects a fixture that drifts: a wrong type, a missing required field, a misspelt optional field', () => {
    const peers = account1()['/api/peers'] as Record<string, unknown>[];
    expect(schemaErrors('/api/peers', [{ ...peers[0], ip: 1 }])).toEqual([expect.stringMatching(/^\/0\/ip must be string/)]);
    const { dns_label: _drop, ...noLabel } = peers[0];
    expect(schemaErrors('/api/peers', [noLabel]).join('\n')).toMatch(/must have required property 'dns_label'/);
    expect(schemaErrors('/api/peers', [{ ...peers[0], ip_v6: 'fd00::1' }]).join('\n')).toMatch(/unevaluated properties.*ip_v6/);
    expect(schemaErrors('/api/networks/{networkId}/resources', [resource('r', 'r', 'cidr', '10.0.0.0/8', [])]).join('\n')).toMatch(/must be equal to one of the allowed values/);
    expect(schemaErrors('/api/accounts', [account({ network_range: '100.64.0.0/33' })]).join('\n')).toMatch(/must match format "cidr"/);
    expect(() => expectSchemaValid({ '/api/users': [user(IDS.uAlice, 'A', 'a@example.com', { is_blocked: 'no' })] })).toThrow();
  });

  it('the one fix-up (ResourceType as the union of its two enums) is still needed upstream', () => {
    // If this fails, NetBird fixed the schema: drop the fix-up in netbird-schema.ts.
    expect(upstreamResourceTypeIsUnsatisfiable()).toBe(true);
  });
});

// ---- mapping: the same attribution as hand-written tables ----

/** The same account as an operator would write it in wgflow's tables, with NetBird's ids. */
const handWritten: AttributionConfig = {
  overlay: ['100.64.0.0/16', 'fd00:4e42:ab12::/64'],
  peers: [
    {
      id: IDS.pAlice, name: 'alice-laptop', ips: ['100.64.0.1', 'fd00:4e42:ab12::1'], os: 'Darwin 14.5', dnsLabel: 'alice-laptop.netbird.cloud',
      groups: [IDS.gAll, IDS.gDevs], user: { id: IDS.uAlice, name: 'Alice Example', email: 'alice@example.com' },
    },
    {
      id: IDS.pBob, name: 'bob-laptop', ip: '100.64.0.2', os: 'Linux 6.8', dnsLabel: 'bob-laptop.netbird.cloud',
      groups: [IDS.gAll, IDS.gDevs], user: { id: IDS.uBob, name: 'Bob Example', email: 'bob@example.com' },
    },
    { id: IDS.pDb, name: 'db-server', ip: '100.64.0.20', os: 'Linux 6.8', dnsLabel: 'db-server.netbird.cloud', groups: [IDS.gAll, IDS.gServers] },
    { id: IDS.pGw, name: 'gw', ip: '100.64.0.10', os: 'Linux 6.8', dnsLabel: 'gw.netbird.cloud', groups: [IDS.gAll, IDS.gRouters] },
  ],
  resources: [
    { id: IDS.rLan, name: 'office-lan', type: 'SUBNET', prefixes: ['192.168.1.0/24'], groups: [IDS.gLan] },
    { id: IDS.rPrinter, name: 'printer', type: 'HOST', prefixes: ['192.168.1.50'], groups: [IDS.gLan] },
    { id: IDS.rDocs, name: 'docs', type: 'DOMAIN', domains: ['docs.example.com'], groups: [IDS.gDocs] },
    { id: IDS.rWiki, name: 'wiki', type: 'DOMAIN', domains: ['*.wiki.example.com'], groups: [IDS.gDocs] },
    { id: IDS.routeDcA, name: 'datacenter', type: 'SUBNET', prefixes: ['10.10.0.0/16'], groups: [IDS.gDcAccess] },
    { id: IDS.routeExit, name: 'exit-node', type: 'SUBNET', prefixes: ['0.0.0.0/0'] },
  ],
  policies: [
    { id: IDS.polDefault, name: 'Default', action: 'accept', enabled: false, bidirectional: true, sources: [{ group: IDS.gAll }], destinations: [{ group: IDS.gAll }] },
    { id: IDS.polSsh, name: 'Devs to servers (SSH)', action: 'accept', protocol: 'tcp', ports: [22], sources: [{ group: IDS.gDevs }], destinations: [{ group: IDS.gServers }] },
    { id: IDS.polWeb, name: 'Devs to servers (web)', action: 'accept', protocol: 'tcp', ports: ['8000-8100', { from: 30000, to: 32767 }], sources: [{ group: IDS.gDevs }], destinations: [{ group: IDS.gServers }] },
    { id: IDS.polDropPrinter, name: 'No printing', action: 'drop', sources: [{ group: IDS.gDevs }], destinations: [{ resource: IDS.rPrinter }] },
    { id: IDS.polLan, name: 'Devs and office LAN', action: 'accept', bidirectional: true, sources: [{ group: IDS.gDevs }], destinations: [{ group: IDS.gLan }] },
    { id: IDS.polDocs, name: 'Docs', action: 'accept', protocol: 'tcp', ports: [443], sources: [{ group: IDS.gDevs }], destinations: [{ resource: IDS.rDocs }] },
    { id: IDS.polDc, name: 'Datacenter HTTPS', action: 'accept', protocol: 'tcp', ports: [443], sources: [{ group: IDS.gDevs }], destinations: [{ group: IDS.gDcAccess }] },
    { id: IDS.polDb, name: 'DB replication to routers', action: 'accept', protocol: 'udp', ports: ['5432-5433'], sources: [{ peer: IDS.pDb }], destinations: [{ group: IDS.gRouters }] },
  ],
};

const TCP = 6, UDP = 17, ICMP = 1;
/** [src, dst, proto, dport, direction] */
const TUPLES: [string, string, number, number, ('INGRESS' | 'EGRESS')?][] = [
  ['100.64.0.1', '100.64.0.20', TCP, 22],            // alice → db: SSH policy
  ['100.64.0.2', '100.64.0.20', TCP, 8080],          // bob → db: web port range
  ['100.64.0.1', '100.64.0.20', TCP, 31000],         // second range
  ['100.64.0.1', '100.64.0.20', TCP, 9000],          // no policy
  ['100.64.0.20', '100.64.0.1', TCP, 22],            // wrong direction: none
  ['100.64.0.1', '100.64.0.20', ICMP, 0],            // Default is disabled: none
  ['100.64.0.1', '192.168.1.7', TCP, 3389],          // devs → lan (all)
  ['100.64.0.1', '192.168.1.50', TCP, 631],          // printer: drop gives no id, lan policy does
  ['192.168.1.7', '100.64.0.2', UDP, 5000],          // lan → bob: bidirectional
  ['100.64.0.1', '10.10.3.4', TCP, 443],             // route (HA pair → one resource)
  ['100.64.0.1', '10.10.3.4', TCP, 80],              // route, port not allowed
  ['100.64.0.20', '100.64.0.10', UDP, 5433],         // peer resource as source
  ['100.64.0.2', '100.64.0.10', UDP, 5433],          // not that peer
  ['fd00:4e42:ab12::1', 'fd00:4e42:ab12::99', TCP, 22], // IPv6 overlay, unknown peer
  ['100.64.0.1', '203.0.113.5', TCP, 443],           // resolved docs.example.com
  ['100.64.0.1', '203.0.113.6', TCP, 443],           // resolved a.wiki.example.com: docs group, not the docs resource
  ['100.64.0.1', '8.8.8.8', UDP, 443],               // exit node: skipped
  ['100.64.0.1', '100.64.0.20', TCP, 22, 'EGRESS'],  // no rule id on EGRESS
];

function attributor(cfg: AttributionConfig): Attributor {
  const a = new Attributor(cfg);
  a.feedResolved('docs.example.com', ['203.0.113.5'], 300);
  a.feedResolved('a.wiki.example.com', ['203.0.113.6'], 300);
  return a;
}

describe('mapping a NetBird account', () => {
  it('gives every flow the same peer, resource, policy and user ids as the equivalent hand-written tables', async () => {
    const s = await serve(account1());
    const snap = await fetchNetbird(opts(s));
    const fromApi = attributor(snap.config);
    const byHand = attributor(handWritten);
    for (const [src, dst, proto, dport, dir] of TUPLES) {
      const got = fromApi.attributeIps(src, dst, proto, 40000, dport, dir ?? 'INGRESS');
      const want = byHand.attributeIps(src, dst, proto, 40000, dport, dir ?? 'INGRESS');
      expect({ src, dst, proto, dport, dir, got }).toEqual({ src, dst, proto, dport, dir, got: want });
    }
    // And the hand-written tables say what the account means (so the comparison is not vacuous).
    const rule = (src: string, dst: string, proto: number, dport: number): string => fromApi.attributeIps(src, dst, proto, 40000, dport).ruleId;
    expect(rule('100.64.0.1', '100.64.0.20', TCP, 22)).toBe(IDS.polSsh);
    expect(rule('100.64.0.2', '100.64.0.20', TCP, 8080)).toBe(IDS.polWeb);
    expect(rule('100.64.0.1', '100.64.0.20', TCP, 9000)).toBe('');
    expect(rule('100.64.0.1', '192.168.1.50', TCP, 631)).toBe(IDS.polLan);
    expect(rule('192.168.1.7', '100.64.0.2', UDP, 5000)).toBe(IDS.polLan);
    expect(rule('100.64.0.1', '10.10.3.4', TCP, 443)).toBe(IDS.polDc);
    expect(rule('100.64.0.20', '100.64.0.10', UDP, 5433)).toBe(IDS.polDb);
    expect(rule('100.64.0.1', '203.0.113.5', TCP, 443)).toBe(IDS.polDocs);
    const r = fromApi.attributeIps('100.64.0.1', '10.10.3.4', TCP, 40000, 443);
    expect(r.source).toEqual({ id: IDS.pAlice, name: 'alice-laptop', type: 'PEER', dnsLabel: 'alice-laptop.netbird.cloud', os: 'Darwin 14.5', publicKey: '' });
    expect(r.destination).toMatchObject({ id: IDS.routeDcA, name: 'datacenter', type: 'SUBNET_RESOURCE' });
    expect(r.user).toEqual({ id: IDS.uAlice, name: 'Alice Example', email: 'alice@example.com' });
    expect(r.policyName).toBe('Datacenter HTTPS');
    expect(fromApi.attributeIps('100.64.0.1', '192.168.1.50', TCP, 40000, 631).destination).toMatchObject({ id: IDS.rPrinter, type: 'HOST_RESOURCE' });
    expect(fromApi.attributeIps('100.64.0.1', '203.0.113.6', TCP, 40000, 443).destination).toMatchObject({ id: IDS.rWiki, type: 'DOMAIN_RESOURCE' });
    expect(fromApi.attributeIps('100.64.0.20', '100.64.0.10', UDP, 40000, 5433).user).toEqual({ id: '', name: '', email: '' });
  });

  it('counts the objects, warns about what it cannot represent, and sends the token as NetBird asks', async () => {
    const s = await serve(account1());
    const snap = await fetchNetbird(opts(s));
    expect(snap.counts).toEqual({ peers: 4, groups: 7, users: 3, policies: 8, rules: 8, networks: 1, resources: 4, routers: 1, routes: 3 });
    expect(snap.warnings).toEqual([
      `routes "${IDS.routeDcA}", "${IDS.routeDcB}" are one HA route ("datacenter"): attributed as resource "${IDS.routeDcA}"`,
    ]);
    expect(snap.config.overlay).toEqual(['100.64.0.0/16', 'fd00:4e42:ab12::/64']);
    const tables = AttributionTables.build(snap.config);
    expect(tables.warnings).toEqual([]);
    expect(s.requests.map((r) => r.path).sort()).toEqual([
      '/api/accounts', '/api/groups', `/api/networks/${IDS.nOffice}/resources`, `/api/networks/${IDS.nOffice}/routers`, '/api/networks',
      '/api/peers', '/api/policies', '/api/routes', '/api/users',
    ].sort());
    for (const r of s.requests) {
      expect(r.authorization).toBe(`Token ${TOKEN}`);
      expect(r.accept).toBe('application/json');
    }
  });

  it('takes a token with surrounding whitespace (a token file\'s newline) and a URL with a path or a trailing /api', async () => {
    const s = await serve(account1());
    await fetchNetbird(opts(s, { token: `  ${TOKEN}\n`, url: `${s.url}/api/` }));
    expect(s.requests.every((r) => r.authorization === `Token ${TOKEN}`)).toBe(true);
    expect(checkNetbirdUrl('https://nb.example.com/mgmt').href).toBe('https://nb.example.com/mgmt/');
    expect(checkNetbirdUrl('https://nb.example.com/mgmt/api').href).toBe('https://nb.example.com/mgmt/');
  });
});

// ---- pages ----

describe('pages', () => {
  it('the schema\'s list endpoints do not paginate; a Link rel="next" header is followed on the same server', async () => {
    const r = account1();
    const peers = r['/api/peers'] as unknown[];
    const pages: Record<string, unknown[]> = { '1': peers.slice(0, 1), '2': peers.slice(1, 3), '3': peers.slice(3) };
    for (const p of Object.values(pages)) expect(schemaErrors('/api/peers', p)).toEqual([]);
    const s = await serve(r, (path) => {
      const u = new URL(path, 'http://x');
      if (u.pathname !== '/api/peers') return undefined;
      const page = u.searchParams.get('page') ?? '1';
      const next: Record<string, string> = page === '3' ? {} : { Link: `</api/peers?page=${Number(page) + 1}>; rel="next", </api/peers?page=1>; rel="first"` };
      return { body: pages[page], headers: next };
    });
    const paged = await fetchNetbird(opts(s));
    const s2 = await serve(account1());
    const whole = await fetchNetbird(opts(s2));
    expect(paged.config).toEqual(whole.config);
    expect(s.requests.filter((q) => q.path.startsWith('/api/peers')).map((q) => q.path)).toEqual(['/api/peers', '/api/peers?page=2', '/api/peers?page=3']);
  });

  it('a next page on another server, a loop, or too many pages fail as invalid', async () => {
    const s = await serve(account1(), (path) => (path.startsWith('/api/users') ? { body: [], headers: { Link: '<http://198.51.100.1/api/users?page=2>; rel="next"' } } : undefined));
    const e = await failure(fetchNetbird(opts(s)));
    expect(e.kind).toBe('invalid');
    expect(e.message).toMatch(/GET \/api\/users: Link rel="next" points to another server \(http:\/\/198\.51\.100\.1\); not followed/);
    const loop = await serve(account1(), (path) => (path.startsWith('/api/users') ? { body: [], headers: { Link: '</api/users>; rel="next"' } } : undefined));
    expect((await failure(fetchNetbird(opts(loop)))).message).toMatch(/GET \/api\/users: Link rel="next" loops back to GET \/api\/users/);
    let n = 0;
    const many = await serve(account1(), (path) => (path.startsWith('/api/users') ? { body: [], headers: { Link: `</api/users?page=${++n}>; rel="next"` } } : undefined));
    expect((await failure(fetchNetbird(opts(many, { maxPages: 5 })))).message).toMatch(/GET \/api\/users: more than 5 pages/);
  });

  it('Link and Retry-After parsing', () => {
    expect(nextLink('<https://a/x?page=2>; rel="next"')).toBe('https://a/x?page=2');
    expect(nextLink('<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel=next')).toBe('https://a/x?page=3');
    expect(nextLink('<https://a/x?page=1>; rel="prev"')).toBeNull();
    expect(nextLink(null)).toBeNull();
    expect(retryAfterSeconds('30')).toBe(30);
    expect(retryAfterSeconds('Sat, 05 Dec 2026 04:00:10 GMT', Date.parse('2026-12-05T04:00:00Z'))).toBe(10);
    expect(retryAfterSeconds('soon')).toBeUndefined();
    expect(retryAfterSeconds(null)).toBeUndefined();
  });
});

// ---- failures ----

describe('failures: one SourceError of the right kind, naming the endpoint, never the token', () => {
  const on = (endpoint: string, reply: Reply) => (path: string): Reply | undefined => (new URL(path, 'http://x').pathname === endpoint ? reply : undefined);

  it('401 → unauthorized (and a server message that echoes the token is scrubbed)', async () => {
    const s = await serve(account1(), on('/api/peers', { status: 401, body: { message: `token ${TOKEN} is invalid`, code: 401 } }));
    const e = await failure(fetchNetbird(opts(s)));
    expect(e.kind).toBe('unauthorized');
    expect(e.message).toBe('GET /api/peers: HTTP 401 (X-Request-Id req-test-1): the token was not accepted (expired, revoked or mistyped?): server said "token <token> is invalid"');
  });

  it('403 → forbidden', async () => {
    const s = await serve(account1(), on('/api/users', { status: 403, raw: '' }));
    const e = await failure(fetchNetbird(opts(s)));
    expect(e.kind).toBe('forbidden');
    expect(e.message).toMatch(/^GET \/api\/users: HTTP 403 .*may not read this/);
  });

  it('429 → rate_limited with the Retry-After in the message and the error', async () => {
    const s = await serve(account1(), on('/api/policies', { status: 429, headers: { 'Retry-After': '7' }, body: { message: 'too many requests' } }));
    const e = await failure(fetchNetbird(opts(s)));
    expect(e.kind).toBe('rate_limited');
    expect(e.retryAfterS).toBe(7);
    expect(e.message).toMatch(/^GET \/api\/policies: HTTP 429 .*: rate limited; retry after 7 s: server said "too many requests"$/);
    const s2 = await serve(account1(), on('/api/policies', { status: 429, raw: '' }));
    const e2 = await failure(fetchNetbird(opts(s2)));
    expect(e2.retryAfterS).toBeUndefined();
    expect(e2.message).toMatch(/rate limited \(no Retry-After\)$/);
  });

  it('500 and 503 → server; a failure of one network\'s routers fails the whole fetch', async () => {
    const s = await serve(account1(), on('/api/groups', { status: 500, body: { message: 'internal error' } }));
    expect((await failure(fetchNetbird(opts(s)))).kind).toBe('server');
    const s2 = await serve(account1(), on(`/api/networks/${IDS.nOffice}/routers`, { status: 503, raw: '<html>upstream unavailable</html>', headers: { 'Content-Type': 'text/html' } }));
    const e = await failure(fetchNetbird(opts(s2)));
    expect(e.kind).toBe('server');
    expect(e.message).toBe(`GET /api/networks/${IDS.nOffice}/routers: HTTP 503 (X-Request-Id req-test-1): management server error: server said "<html>upstream unavailable</html>"`);
  });

  it('a server that never answers → timeout after timeoutMs', async () => {
    const s = await serve(account1(), on('/api/routes', { hang: true }));
    const t0 = Date.now();
    const e = await failure(fetchNetbird(opts(s, { timeoutMs: 300 })));
    expect(e.kind).toBe('timeout');
    expect(e.message).toBe('GET /api/routes: no complete answer within 300 ms');
    expect(Date.now() - t0).toBeLessThan(budget(3000)); // the timeout fired, not the test's own
    // Headers, then a body that stops half-way: the timeout covers the body too.
    const s2 = await serve(account1(), on('/api/users', { stall: true, raw: '[{"id": "cq1user0stall00000000", "name": "x"}]' }));
    const e2 = await failure(fetchNetbird(opts(s2, { timeoutMs: 300 })));
    expect(e2.kind).toBe('timeout');
    expect(e2.message).toBe('GET /api/users: no complete answer within 300 ms');
  });

  it('connection refused → network', async () => {
    const s = await serve({});
    const url = s.url;
    await s.close();
    servers.length = 0;
    const e = await failure(fetchNetbird({ url, token: TOKEN, timeoutMs: 2000 }));
    expect(e.kind).toBe('network');
    expect(e.message).toMatch(/^GET \/api\/\w+ \(http:\/\/127\.0\.0\.1:\d+\): connection refused \(ECONNREFUSED\)$/);
  });

  it('malformed JSON → invalid', async () => {
    const s = await serve(account1(), on('/api/peers', { raw: '[{"id": "x", ' }));
    const e = await failure(fetchNetbird(opts(s)));
    expect(e.kind).toBe('invalid');
    expect(e.message).toMatch(/^GET \/api\/peers: the response is not JSON \(.*; Content-Type application\/json; starts "\[\{\\"id\\": \\"x\\", "\)$/);
  });

  it('a wrong type, a missing id, an object instead of a list → invalid, naming the endpoint and the field', async () => {
    // The last element: does NetBird's schema reject the body too? (A policy without an id or an
    // empty id is valid there, but wgflow cannot name a flow's policy or resource without one.)
    const cases: [string, unknown, RegExp, boolean][] = [
      ['/api/peers', (() => { const p = account1()['/api/peers'] as Record<string, unknown>[]; return [p[0], { ...p[1], groups: [{ id: 42, name: 'x', peers_count: 0, resources_count: 0 }] }]; })(),
        /^GET \/api\/peers: response\[1\]\.groups\[0\]\.id: expected a string, got number 42$/, true],
      ['/api/policies', [policy('pol', 'p', [rule({ sources: [IDS.gDevs], destinations: [IDS.gDevs], enabled: 'yes' as unknown as boolean })])],
        /^GET \/api\/policies: response\[0\]\.rules\[0\]\.enabled: expected true or false, got string "yes"$/, true],
      ['/api/policies', [(() => { const { id: _id, ...p } = policy('pol', 'p', [rule({ sources: [IDS.gDevs], destinations: [IDS.gDevs] })]); return p; })()],
        /^GET \/api\/policies: response\[0\]\.id: is missing$/, false],
      ['/api/routes', { routes: [] }, /^GET \/api\/routes: expected a JSON array, got object$/, true],
      [`/api/networks/${IDS.nOffice}/resources`, [{ ...resource('r1', 'x', 'host', '10.0.0.1', []), id: '' }],
        new RegExp(`^GET /api/networks/${IDS.nOffice}/resources: response\\[0\\]\\.id: is an empty id$`), false],
      ['/api/accounts', [{ ...account(), settings: 'none' }], /^GET \/api\/accounts: response\[0\]\.settings: expected an object, got string "none"$/, true],
    ];
    for (const [endpoint, body, message, schemaRejects] of cases) {
      expect({ endpoint, schemaRejects: schemaErrors(templateOf(endpoint), body).length > 0 }).toEqual({ endpoint, schemaRejects });
      const s = await serve(account1(), on(endpoint, { body }));
      const e = await failure(fetchNetbird(opts(s)));
      expect({ endpoint, kind: e.kind }).toEqual({ endpoint, kind: 'invalid' });
      expect(e.message).toMatch(message);
    }
  });

  it('a redirect is not followed (the token would go with it) → invalid', async () => {
    const s = await serve(account1(), on('/api/peers', { status: 302, headers: { Location: 'https://elsewhere.example/api/peers' }, raw: '' }));
    const e = await failure(fetchNetbird(opts(s)));
    expect(e.kind).toBe('invalid');
    expect(e.message).toMatch(/^GET \/api\/peers: HTTP 302 .*redirected to https:\/\/elsewhere\.example\/api\/peers; redirects are not followed/);
    expect(s.requests.length).toBeGreaterThan(0);
  });

  it('404 → invalid with a hint about the URL; a response over maxBytes → invalid', async () => {
    const s = await serve({});
    expect((await failure(fetchNetbird(opts(s)))).message).toMatch(/HTTP 404 .*: is attribution\.netbird\.url the management API address\?: server said "not found"$/);
    const big = await serve(account1());
    expect((await failure(fetchNetbird(opts(big, { maxBytes: 200 })))).message).toMatch(/the response is larger than 200 bytes$/);
  });

  it('bad settings fail before any request, without the token in the message', async () => {
    const s = await serve(account1());
    const cases: [Partial<NetbirdOptions>, RegExp][] = [
      [{ token: '' }, /token is empty/],
      [{ token: `${TOKEN}\r\nX-Evil: 1` }, /one token, one line/],
      [{ token: `${TOKEN} ${TOKEN}` }, /one token, one line/],
      [{ url: `http://user:${TOKEN}@127.0.0.1:1` }, /must not contain a user name or password/],
      [{ url: 'ftp://nb.example.com' }, /ftp: URLs are not supported/],
      [{ url: 'not a url' }, /is not a URL/],
    ];
    for (const [o, message] of cases) {
      const e = await failure(fetchNetbird(opts(s, o)));
      expect(e.kind).toBe('invalid');
      expect(e.message).toMatch(/^attribution\.netbird: /);
      expect(e.message).toMatch(message);
    }
    expect(s.requests).toEqual([]);
  });

  it('an aborted signal cancels the fetch', async () => {
    const s = await serve(account1(), () => ({ hang: true }));
    const ctl = new AbortController();
    const p = fetchNetbird(opts(s, { signal: ctl.signal, timeoutMs: 10_000 }));
    setTimeout(() => ctl.abort(), 50);
    const e = await failure(p);
    expect(e.kind).toBe('network');
    expect(e.message).toMatch(/cancelled$/);
  });
});

// ---- what wgflow cannot represent ----

describe('warnings: what the tables cannot represent is named, never dropped silently, never a crash', () => {
  function messy(): Responses {
    const r = account1();
    const peers = r['/api/peers'] as Record<string, unknown>[];
    peers.push(peer(IDS.pBob, 'bob-again', '100.64.0.3', IDS.uBob, [IDS.gAll]));
    peers.push(peer('cq1peer0bad000000000', 'bad-ip', '100.64.0.300', 'auth0|gone', [IDS.gAll]));
    // A group may list a peer among its resources (type "peer"): the peer is in that group.
    (r['/api/groups'] as unknown[]).push(group('cq1grp0dbpeer0000000', [], [[IDS.pDb, 'peer']]));
    r[`/api/networks/${IDS.nOffice}/resources`] = [
      ...(r[`/api/networks/${IDS.nOffice}/resources`] as unknown[]),
      resource('cq1res0off0000000000', 'old-nas', 'host', '192.168.1.60', [IDS.gLan], { enabled: false }),
      resource('cq1res0badnet0000000', 'typo', 'subnet', '192.168.300.0/24', []),
    ];
    (r['/api/networks'] as unknown[]).push(network('cq1net0lab0000000000', 'lab', ['cq1res0lab0000000000'], ['cq1rtr0lab0000000000'], []));
    r['/api/networks/cq1net0lab0000000000/resources'] = [resource('cq1res0lab0000000000', 'lab-net', 'subnet', '172.16.0.0/16', [])];
    r['/api/networks/cq1net0lab0000000000/routers'] = [router('cq1rtr0lab0000000000', IDS.pGw, { enabled: false })];
    (r['/api/routes'] as unknown[]).push(
      route('cq1route0off00000000', 'old-office', { network: '10.20.0.0/16' }, [], { enabled: false }),
      route('cq1route0dns00000000', 'saas', { domains: ['app.example.net', '*.cdn.example.net'] }, [IDS.gDcAccess]),
    );
    (r['/api/policies'] as unknown[]).push(
      // Two rules created together: NetBird gives both the policy's id.
      policy('cq1pol0two0000000000', 'Two rules', [
        rule({ sources: [IDS.gDevs], destinations: [IDS.gServers], protocol: 'udp', ports: ['53'] }),
        rule({ sources: [IDS.gServers], destinations: [IDS.gDevs], protocol: 'icmp' }),
      ].map((x) => ({ id: 'cq1pol0two0000000000', ...x }))),
      policy('cq1pol0posture000000', 'Compliant laptops', [rule({ sources: [IDS.gDevs], destinations: [IDS.gServers], protocol: 'tcp', ports: ['5432'] })], { source_posture_checks: ['cq1chk0os0000000000'] }),
      policy('cq1pol0nbssh00000000', 'NetBird SSH', [rule({ sources: [IDS.gDevs], destinations: [IDS.gServers], protocol: 'netbird-ssh', ports: ['22'] })]),
      policy('cq1pol0badport000000', 'Bad port', [rule({ sources: [IDS.gDevs], destinations: [IDS.gServers], protocol: 'tcp', ports: ['http'] })]),
      policy('cq1pol0ghost00000000', 'Ghost group', [rule({ sources: ['cq1grp0deleted000000'], destinations: [IDS.gServers] })]),
      policy('cq1pol0offres0000000', 'To old NAS', [rule({ sources: [IDS.gDevs], destinationResource: { id: 'cq1res0off0000000000', type: 'host' } })]),
      policy('cq1pol0empty00000000', 'Empty', []),
    );
    return r;
  }

  it('maps the rest, lists every finding, and the tables build from it', async () => {
    const r = messy();
    expectSchemaValid(r);
    const s = await serve(r);
    const snap = await fetchNetbird(opts(s));
    expect(snap.warnings).toEqual([
      `peer "${IDS.pBob}" (bob-again): listed twice by /api/peers; the first is used`,
      'peer "cq1peer0bad000000000" (bad-ip): ip "100.64.0.300" is not an IP address; flows to it are not attributed to the peer',
      'peer "cq1peer0bad000000000" (bad-ip): no usable overlay address; no flow can be attributed to it',
      'peer "cq1peer0bad000000000" (bad-ip): user "auth0|gone" is not in /api/users; flows carry its id without name and email',
      `network "${IDS.nOffice}" (office) resource "cq1res0off0000000000" (old-nas): disabled in NetBird; not attributed`,
      `network "${IDS.nOffice}" (office) resource "cq1res0badnet0000000" (typo): address "192.168.300.0/24" is not an IP prefix; not attributed`,
      'network "cq1net0lab0000000000" (lab): no enabled routing peer, so its resources carry no traffic through NetBird',
      'route "cq1route0off00000000" (old-office): disabled in NetBird; not attributed',
      `routes "${IDS.routeDcA}", "${IDS.routeDcB}" are one HA route ("datacenter"): attributed as resource "${IDS.routeDcA}"`,
      'policy "cq1pol0two0000000000" (Two rules) rule "cq1pol0two0000000000": rule id "cq1pol0two0000000000" is used by an earlier rule; this one is "cq1pol0two0000000000#1" in wgflow\'s flows',
      'policy "cq1pol0posture000000" (Compliant laptops): posture checks ("cq1chk0os0000000000") are not evaluated by wgflow; flows of peers that fail them may still name this policy',
      'policy "cq1pol0badport000000" (Bad port): port "http": "http" is not a port or "from-to" range; rule not used for attribution',
      'policy "cq1pol0ghost00000000" (Ghost group): source group "cq1grp0deleted000000" is not in /api/groups',
      'policy "cq1pol0offres0000000" (To old NAS): destination resource "cq1res0off0000000000" is not an attributed network resource',
      'policy "cq1pol0empty00000000" (Empty): has no rules',
    ]);
    const tables = AttributionTables.build(snap.config);
    const pol = (id: string) => snap.config.policies!.find((p) => p.id === id);
    expect(pol('cq1pol0two0000000000')).toMatchObject({ protocol: 'udp', ports: [53] });
    expect(pol('cq1pol0two0000000000#1')).toMatchObject({ protocol: 'icmp', sources: [{ group: IDS.gServers }] });
    expect(pol('cq1pol0nbssh00000000')).toMatchObject({ protocol: 'tcp', ports: [22, 22022] });
    expect(pol('cq1pol0badport000000')).toBeUndefined();
    expect(snap.config.resources!.find((x) => x.id === 'cq1route0dns00000000')).toEqual({
      id: 'cq1route0dns00000000', name: 'saas', type: 'DOMAIN', domains: ['app.example.net', '*.cdn.example.net'], groups: [IDS.gDcAccess],
    });
    const a = new Attributor(tables);
    expect(a.attributeIps('100.64.0.1', '100.64.0.20', TCP, 40000, 22022).ruleId).toBe('cq1pol0nbssh00000000');
    expect(a.attributeIps('100.64.0.20', '100.64.0.2', ICMP, 0, 0).ruleId).toBe('cq1pol0two0000000000#1');
    expect(a.attributeIps('100.64.0.1', '100.64.0.3', TCP, 40000, 22).destination.type).toBe('UNKNOWN'); // the duplicate's address
    expect(snap.config.peers!.find((p) => p.id === IDS.pDb)!.groups).toEqual([IDS.gAll, IDS.gServers, 'cq1grp0dbpeer0000000']);
  });

  it('an account without overlay ranges, and NetBird\'s null lists, are read without failing', async () => {
    const r = account1();
    r['/api/accounts'] = [account({ network_range: undefined, network_range_v6: undefined })];
    expectSchemaValid(r);
    const s = await serve(r);
    const snap = await fetchNetbird(opts(s));
    expect(snap.config.overlay).toBeUndefined();
    expect(snap.warnings).toContain('account settings have no network_range: the overlay range is unknown (take it from the WireGuard interface or the file)');
    // Go writes a nil slice as null: a rule with a destination resource has "destinations": null.
    const p = readPolicy({ id: 'p', name: 'p', enabled: true, source_posture_checks: null, rules: [{ id: 'p', name: 'r', enabled: true, action: 'accept', bidirectional: false, protocol: 'all', sources: null, destinations: null, destinationResource: { id: 'x', type: 'host' } }] }, '[0]');
    expect(p.rules[0]).toMatchObject({ sources: [], destinations: [], destinationResource: { id: 'x', type: 'host' } });
    expect(() => readPolicy({ id: 'p', enabled: true, rules: [{ enabled: true, action: 'accept', bidirectional: false, protocol: 7 }] }, '[0]')).toThrow(WireError);
  });
});
