// The daemon's attribution sources (src/daemon/attribution-sources.ts) against a local NetBird
// API serving schema-checked fixtures: the first read lands in the tables; a refresh that fails
// (5xx, 401, malformed JSON, a snapshot the tables refuse) keeps the last good snapshot, counted
// by kind; a good refresh is swapped in whole (attributions already handed out do not change); a
// reload without the source drops its snapshot.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Attributor } from '../../src/attribution/attributor';
import { resolveConfig } from '../../src/config/config';
import { AttributionSources } from '../../src/daemon/attribution-sources';
import { account1, IDS, peer, templateOf, type Responses } from './netbird-fixtures';
import { schemaErrors } from './netbird-schema';

const TOKEN = 'nbp_LiveS0urceTestToken0123456789abcdefXYZ';
const TCP = 6;
let server: Server;
let url = '';
let responses: Responses = account1();
/** How the next requests are answered. */
let mode: 'ok' | '500' | '401' | 'malformed' = 'ok';
const dir = mkdtempSync(join(tmpdir(), 'wgflow-live-'));
const logged: string[] = [];
const log = pino({ level: 'debug' }, { write: (s: string) => logged.push(s) });

beforeAll(async () => {
  server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (mode === '500') return void res.writeHead(500, { 'content-type': 'application/json' }).end('{"message":"internal error"}');
    if (mode === '401') return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"message":"token invalid"}');
    if (mode === 'malformed') return void res.writeHead(200, { 'content-type': 'application/json' }).end('[{"id": "p1", "name": ');
    if (!(path in responses)) return void res.writeHead(404).end('{}');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(responses[path]));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

/** Every served body checked against NetBird's published schema: the fixtures cannot drift. */
function checked(r: Responses): Responses {
  for (const [path, body] of Object.entries(r)) expect(schemaErrors(templateOf(path), body), path).toEqual([]);
  return r;
}

function config(attribution: Record<string, unknown>) {
  const file = join(dir, `wgflow-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, stringify({ interfaces: ['wg-test0'], attribution: { wireguard: 'off', ...attribution } }));
  return resolveConfig({ file, env: { WGFLOW_NETBIRD_TOKEN: TOKEN } });
}

const ssh = (a: Attributor) => a.attributeIps('100.64.0.1', '100.64.0.20', TCP, 40000, 22, 'INGRESS');

describe('live attribution sources: NetBird', () => {
  const attributor = new Attributor({});
  let sources: AttributionSources;

  it('the first read lands in the tables: NetBird ids for the flows', async () => {
    responses = checked(account1());
    sources = new AttributionSources(attributor, config({ source: 'netbird', netbird: { url } }), log, { WGFLOW_NETBIRD_TOKEN: TOKEN });
    await sources.start();
    await sources.readNetbird(); // the background read may still run: this waits for a read of its own
    const r = ssh(attributor);
    expect(r.source).toMatchObject({ id: IDS.pAlice, name: 'alice-laptop' });
    expect(r.destination).toMatchObject({ id: IDS.pDb });
    expect(r.user.id).toBe(IDS.uAlice);
    expect(r.ruleId).toBe(IDS.polSsh);
    const st = sources.status();
    expect(st.map((s) => s.name)).toEqual(['netbird']);
    expect(st[0]).toMatchObject({ failing: false, syncs: 1, counts: { peers: 4 } });
  });

  it('failed refreshes keep the last good snapshot, each counted by kind, the token never logged', async () => {
    const before = attributor.generation;
    for (const m of ['500', '401', 'malformed'] as const) {
      mode = m;
      await sources.readNetbird();
    }
    mode = 'ok';
    const st = sources.status()[0];
    expect(st.errors).toMatchObject({ server: 1, unauthorized: 1, invalid: 1 });
    expect(st.failing).toBe(true);
    expect(st.lastError).toMatch(/./);
    expect(attributor.generation).toBe(before);
    expect(ssh(attributor).source.id).toBe(IDS.pAlice);
    expect(logged.join('')).not.toContain(TOKEN);
    expect(logged.some((l) => /keeping its last good snapshot/.test(l))).toBe(true);
  });

  it('what the tables cannot take is a warning, not a failure; a changed snapshot is swapped in whole', async () => {
    const before = attributor.generation;
    const held = ssh(attributor);
    // A peer listed twice: the first is used, the status says so, nothing else changes.
    const dup = checked(account1());
    (dup['/api/peers'] as unknown[]).push(peer(IDS.pAlice, 'alice-again', '100.64.0.99', IDS.uAlice, [IDS.gAll]));
    responses = dup;
    await sources.readNetbird();
    expect(sources.status()[0].warnings.join('\n')).toMatch(/listed twice by \/api\/peers; the first is used/);
    expect(sources.status()[0].failing).toBe(false);
    expect(attributor.generation).toBe(before); // the same tables: not swapped again
    // Alice renamed in the dashboard.
    const renamed = checked(account1());
    (renamed['/api/peers'] as Array<{ id: string; name: string }>).find((p) => p.id === IDS.pAlice)!.name = 'alice-new-laptop';
    responses = checked(renamed);
    await sources.readNetbird();
    expect(attributor.generation).toBe(before + 1);
    expect(ssh(attributor).source.name).toBe('alice-new-laptop');
    expect(held.source.name).toBe('alice-laptop'); // what a flow already holds does not change
    expect(sources.status()[0]).toMatchObject({ failing: false, syncs: 3 });
  });

  it('a reload without the source drops its snapshot; the file tables stay', () => {
    sources.configure(config({ peers: [{ id: 'by-hand', name: 'alice by hand', ip: '100.64.0.1' }] }));
    expect(sources.status()).toEqual([]);
    expect(ssh(attributor).source).toMatchObject({ id: 'by-hand' });
    expect(ssh(attributor).destination.id).toBe('');
    sources.stop();
  });
});

describe('attribution source settings', () => {
  it('refuse what cannot work, naming the key', () => {
    expect(() => config({ source: 'netbird' })).toThrow(/attribution\.netbird\.url: is required with attribution\.source: netbird/);
    expect(() => config({ netbird: { url: 'https://api.netbird.io' } })).toThrow(/attribution\.netbird\.url: NetBird settings are given but attribution\.source is not netbird/);
    expect(() => config({ source: 'netbird', netbird: { url: 'ftp://x' } })).toThrow(/attribution\.netbird\.url: .*not supported/);
    expect(() => config({ source: 'netbird', netbird: { url: 'https://a', refresh_s: 1 } })).toThrow(/attribution\.netbird\.refresh_s/);
    expect(() => config({ source: 'maybe' })).toThrow(/attribution\.source/);
    const file = join(dir, 'no-token.yaml');
    writeFileSync(file, stringify({ interfaces: ['wg0'], attribution: { source: 'netbird', netbird: { url: 'https://api.netbird.io' } } }));
    expect(() => resolveConfig({ file, env: {} })).toThrow(/attribution\.netbird\.token_file: .*WGFLOW_NETBIRD_TOKEN/);
    writeFileSync(file, stringify({ interfaces: ['wg0'], attribution: { source: 'netbird', netbird: { url: 'https://api.netbird.io', token_file: '/nonexistent/token' } } }));
    expect(() => resolveConfig({ file, env: {} })).toThrow(/attribution\.netbird\.token_file: cannot read \/nonexistent\/token/);
    writeFileSync(file, stringify({ interfaces: ['wg0'], attribution: { wirguard: 'off' } }));
    expect(() => resolveConfig({ file, env: {} })).toThrow(/attribution\.wirguard: unknown key, did you mean "wireguard"/);
  });
});
