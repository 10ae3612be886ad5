// NetBird's management API as a live attribution source of a real daemon on the routing testbed
// (client --wg-- router [wgflow] -- resource subnet). The API is a fixture server in the router's
// namespace (testkit/netbird-fixture-server.ts) serving an account whose peers have the testbed's
// overlay addresses, each response validated against NetBird's OpenAPI schema first. The same
// traffic gets the same attribution from the API as from the equivalent hand-written tables; a
// change in the account reaches new flows at the next refresh while flows in progress keep theirs;
// 500, 401, malformed JSON and a server that never answers each keep the last good snapshot, with
// a metric, a log line and never the token; `run --check-config --check-source` against it.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { Testbed } from '../../testkit/testbed';
import type { FlowEvent } from '../../src/model/event';
import type { SourceStatus } from '../../src/attribution/sources/source';
import { budget, idleTimeoutS } from '../../testkit/slow';
import { describePrivileged, run, sleep, spawnIn, waitForLine } from '../helpers/env';
import { DaemonProc, teardown, TRAFFIC, wgflow } from '../helpers/daemon';
import { ensureBuilt, REPO } from '../export/helpers';
import { account, group, IDS, network, peer, policy, resource, type Responses, route, router, rule, templateOf, user } from '../attribution/netbird-fixtures';
import { schemaErrors } from '../attribution/netbird-schema';

const SERVER = join(REPO, 'build', 'testkit', 'netbird-fixture-server.js');
const TOKEN = `nbp_${randomBytes(18).toString('hex')}`;

type R = ReturnType<Testbed['routed']>;

/** The account, version 1 or 2 (2: the client renamed, the UDP policy replaced by another). */
function account1(r: R, version: 1 | 2): Responses {
  const net = r.client.ip4.split('.')[1];
  const { pAlice, pGw, gAll, gDevs, gRouters, gLan } = IDS;
  const clientName = version === 1 ? 'alice-laptop' : 'alice-desk';
  const udp = version === 1
    ? [policy(IDS.polWeb, 'Devs to gw (UDP)', [rule({ sources: [gDevs], destinations: [gRouters], protocol: 'udp', port_ranges: [{ start: 9000, end: 9200 }] })])]
    : [
      policy(IDS.polWeb, 'Devs to gw (UDP)', [rule({ sources: [gDevs], destinations: [gRouters], protocol: 'udp', port_ranges: [{ start: 9300, end: 9400 }] })]),
      policy(IDS.polDb, 'Devs to gw (UDP 9100)', [rule({ sources: [gDevs], destinations: [gRouters], protocol: 'udp', ports: ['9100'] })]),
    ];
  return {
    '/api/accounts': [account({ network_range: `10.${net}.0.0/24`, network_range_v6: `fd00:${net}::/64` })],
    '/api/peers': [
      peer(pAlice, clientName, r.client.ip4, IDS.uAlice, [gAll, gDevs], { ipv6: r.client.ip6 }),
      peer(pGw, 'gw', r.router.ip4, '', [gAll, gRouters], { ipv6: r.router.ip6 }),
    ],
    '/api/groups': [
      group(gAll, [[pAlice, clientName], [pGw, 'gw']], []),
      group(gDevs, [[pAlice, clientName]], []),
      group(gRouters, [[pGw, 'gw']], []),
      group(gLan, [], [[IDS.rLan, 'subnet']]),
    ],
    '/api/users': [user(IDS.uAlice, 'Alice Example', 'alice@example.com'), user(IDS.uSvc, 'wgflow', '', { role: 'auditor', is_service_user: true })],
    '/api/policies': [
      policy(IDS.polDefault, 'Default', [rule({ sources: [gAll], destinations: [gAll], bidirectional: true })], { enabled: false }),
      ...udp,
      policy(IDS.polSsh, 'Devs to gw (TCP 8022)', [rule({ sources: [gDevs], destinations: [gRouters], protocol: 'tcp', ports: ['8022'] })]),
      policy(IDS.polLan, 'Devs and office LAN', [rule({ sources: [gDevs], destinations: [gLan], bidirectional: true })]),
    ],
    '/api/networks': [network(IDS.nOffice, 'office', [IDS.rLan], [IDS.routerGw], [IDS.polLan])],
    [`/api/networks/${IDS.nOffice}/resources`]: [resource(IDS.rLan, 'office-lan', 'subnet', r.subnet4, [gLan])],
    [`/api/networks/${IDS.nOffice}/routers`]: [router(IDS.routerGw, pGw)],
    // Disabled: not attributed, and a warning (what --check-source prints).
    '/api/routes': [route(IDS.routeDcA, 'old-dc', { network: '10.99.0.0/16' }, [], { enabled: false })],
  };
}

/** Version 1 as an operator would write it in wgflow's configuration file. */
function handWritten(r: R): Record<string, unknown> {
  const net = r.client.ip4.split('.')[1];
  const { gAll, gDevs, gRouters, gLan } = IDS;
  return {
    overlay: [`10.${net}.0.0/24`, `fd00:${net}::/64`],
    peers: [
      { id: IDS.pAlice, name: 'alice-laptop', ips: [r.client.ip4, r.client.ip6], os: 'Linux 6.8', dns_label: 'alice-laptop.netbird.cloud', groups: [gAll, gDevs],
        user: { id: IDS.uAlice, name: 'Alice Example', email: 'alice@example.com' } },
      { id: IDS.pGw, name: 'gw', ips: [r.router.ip4, r.router.ip6], os: 'Linux 6.8', dns_label: 'gw.netbird.cloud', groups: [gAll, gRouters] },
    ],
    resources: [{ id: IDS.rLan, name: 'office-lan', type: 'SUBNET', prefixes: [r.subnet4], groups: [gLan] }],
    policies: [
      { id: IDS.polDefault, name: 'Default', action: 'accept', enabled: false, bidirectional: true, sources: [{ group: gAll }], destinations: [{ group: gAll }] },
      { id: IDS.polWeb, name: 'Devs to gw (UDP)', action: 'accept', protocol: 'udp', ports: [{ from: 9000, to: 9200 }], sources: [{ group: gDevs }], destinations: [{ group: gRouters }] },
      { id: IDS.polSsh, name: 'Devs to gw (TCP 8022)', action: 'accept', protocol: 'tcp', ports: [8022], sources: [{ group: gDevs }], destinations: [{ group: gRouters }] },
      { id: IDS.polLan, name: 'Devs and office LAN', action: 'accept', bidirectional: true, sources: [{ group: gDevs }], destinations: [{ group: gLan }] },
    ],
  };
}

/** Write each response as DIR/api/....json after checking it against NetBird's schema. */
function writeFixtures(dir: string, responses: Responses): void {
  for (const [path, body] of Object.entries(responses)) {
    expect({ path, errors: schemaErrors(templateOf(path), body) }).toEqual({ path, errors: [] });
    const file = join(dir, `${path}.json`);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, JSON.stringify(body));
  }
}

/** What attribution put on an event. */
const attribution = (e: FlowEvent): object => {
  const ep = ({ id, name, type, dnsLabel, os, publicKey }: FlowEvent['source']): object => ({ id, name, type, dnsLabel, os, publicKey });
  return { direction: e.direction, source: ep(e.source), destination: ep(e.destination), ruleId: e.ruleId, policyName: e.policyName, user: e.user };
};
/** A flow of the traffic below, the same in both runs (TCP's source port is the kernel's). */
const keyOf = (e: FlowEvent): string => `${e.protocol} ${e.destination.ip}:${e.destination.port}${e.protocol === 17 ? ` from ${e.source.port}` : ''}`;

describePrivileged('NetBird\'s management API as a live attribution source of the daemon', () => {
  let tb: Testbed;
  let r: R;
  let dir: string;
  let server: ChildProcess;
  let url: string;
  let tokenFile: string;
  let d: DaemonProc | undefined;
  const timeoutMs = budget(500);
  const lifecycle = { udp_timeout_s: idleTimeoutS(2), icmp_timeout_s: idleTimeoutS(2), interim_interval_s: 1, tcp_close_grace_ms: 200 };

  const netbird = (dp: DaemonProc): SourceStatus & { errors: Record<string, number> } => {
    const st = dp.ctl(['status', '--json']);
    expect(st.code, st.stderr).toBe(0);
    const s = (JSON.parse(st.stdout) as { attribution: { sources: SourceStatus[] } }).attribution.sources.find((x) => x.name === 'netbird');
    if (!s) throw new Error(`no netbird source in ctl status: ${st.stdout}`);
    return s;
  };
  const until = async (what: string, cond: () => boolean, ms = 20_000): Promise<void> => {
    for (const end = Date.now() + budget(ms); Date.now() < end; await sleep(150)) if (cond()) return;
    throw new Error(`timed out waiting until ${what}; daemon log: ${d?.log.slice(-2000)}`);
  };
  const generation = (dp: DaemonProc): number => (JSON.parse(dp.ctl(['status', '--json']).stdout) as { attribution: { generation: number } }).attribution.generation;
  /** Tell the server something and wait until it has applied it (between two fetches). */
  const tell = async (line: string): Promise<void> => {
    const applied = waitForLine(server, new RegExp(`^applied ${line}$`), 20_000);
    server.stdin!.write(`${line}\n`);
    await applied;
  };

  /** The traffic both runs send, from the client unless said. */
  const traffic = async (): Promise<string[]> => {
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-client', r.router.ip4, '9100', '3', '100', '45001']);
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-client', r.router.ip6, '9100', '3', '100', '45002']);
    await run(r.client.ns, 'node', [TRAFFIC, 'tcp-client', r.router.ip4, '8022', '20000']);
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-client', r.resource4, '9000', '3', '100', '45003']);
    await run(r.router.ns, 'node', [TRAFFIC, 'udp-client', r.client.ip4, '9300', '3', '100', '45004']);
    await run(r.client.ns, 'ping', ['-c', '1', r.router.ip4]);
    return [`17 ${r.router.ip4}:9100 from 45001`, `17 ${r.router.ip6}:9100 from 45002`, `6 ${r.router.ip4}:8022`, `17 ${r.resource4}:9000 from 45003`,
      `17 ${r.client.ip4}:9300 from 45004`, `1 ${r.router.ip4}:0`];
  };
  const startsOf = async (dp: DaemonProc, keys: string[]): Promise<Map<string, FlowEvent>> => {
    const evs = await dp.waitEvents((es) => keys.every((k) => es.some((e) => e.type === 'START' && keyOf(e) === k)));
    return new Map(keys.map((k) => [k, evs.find((e) => e.type === 'START' && keyOf(e) === k)!]));
  };
  const daemonConfig = (attribution: Record<string, unknown>): Record<string, unknown> => ({ interfaces: [r.router.ifname], lifecycle, attribution });
  const nbSettings = (more: Record<string, unknown> = {}): Record<string, unknown> => ({ source: 'netbird', netbird: { url, token_file: tokenFile, refresh_s: 5, timeout_ms: timeoutMs, ...more } });

  beforeAll(async () => {
    ensureBuilt();
    tb = new Testbed();
    r = tb.routed();
    dir = mkdtempSync(join(tmpdir(), 'wgflow-netbird-'));
    writeFixtures(join(dir, 'v1'), account1(r, 1));
    writeFixtures(join(dir, 'v2'), account1(r, 2));
    tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    server = spawnIn(r.router.ns, 'node', [SERVER, '--dir', join(dir, 'v1'), '--token-file', tokenFile]);
    url = `http://127.0.0.1:${(await waitForLine(server, /^ready \d+$/)).split(' ')[1]}`;
    for (const [ns, args] of [[r.router.ns, ['udp-echo', '9100']], [r.router.ns, ['tcp-server', '8022']], [r.resourceNs, ['udp-echo', '9000']], [r.client.ns, ['udp-echo', '9300']]] as const) {
      await waitForLine(spawnIn(ns, 'node', [TRAFFIC, ...args]), /ready/);
    }
    await run(r.client.ns, 'ping', ['-c', '1', '-W', '3', r.router.ip4]); // handshake
  });

  afterAll(async () => {
    await teardown(d, tb);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('flows get the same NetBird peer, user, resource and rule ids from the API as from the equivalent hand-written tables', async () => {
    const fileRun = await DaemonProc.start(r.router.ns, daemonConfig(handWritten(r)));
    let byHand: Map<string, FlowEvent>;
    try {
      byHand = await startsOf(fileRun, await traffic());
    } finally {
      await fileRun.stop();
      fileRun.cleanup();
    }
    d = await DaemonProc.start(r.router.ns, daemonConfig(nbSettings()));
    const dp = d;
    await until('the first NetBird read landed', () => netbird(dp).lastSuccessMs !== null);
    const fromApi = await startsOf(dp, await traffic());
    for (const [k, e] of fromApi) expect({ k, a: attribution(e) }).toEqual({ k, a: attribution(byHand.get(k)!) });
    // What the account means, so that the comparison is not vacuous.
    const udp = fromApi.get(`17 ${r.router.ip4}:9100 from 45001`)!;
    expect(udp).toMatchObject({ direction: 'INGRESS', ruleId: IDS.polWeb, policyName: 'Devs to gw (UDP)', user: { id: IDS.uAlice, name: 'Alice Example', email: 'alice@example.com' } });
    // The API has no public keys: the client's comes from the WireGuard interface under it.
    expect(udp.source).toMatchObject({ id: IDS.pAlice, name: 'alice-laptop', type: 'PEER', publicKey: r.client.publicKey, dnsLabel: 'alice-laptop.netbird.cloud' });
    expect(udp.destination).toMatchObject({ id: IDS.pGw, name: 'gw', type: 'PEER' });
    expect(fromApi.get(`17 ${r.router.ip6}:9100 from 45002`)!).toMatchObject({ ruleId: IDS.polWeb, source: { id: IDS.pAlice } });
    expect(fromApi.get(`6 ${r.router.ip4}:8022`)!).toMatchObject({ ruleId: IDS.polSsh });
    expect(fromApi.get(`17 ${r.resource4}:9000 from 45003`)!).toMatchObject({ ruleId: IDS.polLan, destination: { id: IDS.rLan, name: 'office-lan', type: 'SUBNET_RESOURCE' } });
    expect(fromApi.get(`17 ${r.client.ip4}:9300 from 45004`)!).toMatchObject({ direction: 'EGRESS', source: { id: IDS.pGw }, destination: { id: IDS.pAlice } });
    expect(fromApi.get(`1 ${r.router.ip4}:0`)!).toMatchObject({ ruleId: '', source: { id: IDS.pAlice } });
    const st = dp.ctl(['status']);
    expect(st.stdout).toMatch(/^attribution: +tables generation \d+; wireguard read \d+ s ago \(1 interfaces, 1 peers\); netbird read \d+ s ago \(2 peers, 4 groups, 2 users, 4 policies, 4 rules, 1 networks, 1 resources, 1 routers, 1 routes\)$/m);
    expect(dp.metrics()).toMatch(/^wgflow_attribution_source_up\{source="netbird"\} 1$/m);
  });

  it('a changed account reaches new flows at the next refresh; a flow in progress keeps its attribution to its END', async () => {
    const dp = d!;
    const long = spawnIn(r.client.ns, 'node', [TRAFFIC, 'udp-stream', r.router.ip4, '9100', '100', '100', '45100']);
    await waitForLine(long, /ready/);
    const longDone = waitForLine(long, /^\{"sent"/, 60_000);
    await dp.waitEvents((es) => es.some((e) => e.type === 'START' && e.source.port === 45100));
    const g = generation(dp);
    await tell(`dir ${join(dir, 'v2')}`);
    await until('the changed account was applied', () => generation(dp) > g);
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-client', r.router.ip4, '9100', '3', '100', '45101']);
    await sleep(300);
    long.stdin!.end();
    const counts = JSON.parse(await longDone) as { sent: number; got: number };
    const evs = await dp.waitEvents((es) => [45100, 45101].every((p) => es.some((e) => e.type === 'END' && e.protocol === 17 && e.source.port === p)), 30_000);
    const flow = (p: number): FlowEvent[] => evs.filter((e) => e.protocol === 17 && e.source.port === p);
    expect(flow(45101).find((e) => e.type === 'START')).toMatchObject({ ruleId: IDS.polDb, policyName: 'Devs to gw (UDP 9100)', source: { id: IDS.pAlice, name: 'alice-desk' } });
    const old = flow(45100);
    expect(old.map((e) => e.type).filter((t) => t !== 'UPDATE')).toEqual(['START', 'END']);
    expect(old.filter((e) => e.type === 'UPDATE').length).toBeGreaterThanOrEqual(1);
    for (const e of old) expect({ t: e.type, ruleId: e.ruleId, policyName: e.policyName, source: e.source.name }).toEqual({ t: e.type, ruleId: IDS.polWeb, policyName: 'Devs to gw (UDP)', source: 'alice-laptop' });
    const end = old.find((e) => e.type === 'END')!;
    expect(end).toMatchObject({ rxPackets: counts.sent, txPackets: counts.got });
    // It was in progress when the change landed: it ended after a flow with the new attribution began.
    expect(end.windowEndMs!).toBeGreaterThan(flow(45101)[0].timestampMs);
  });

  it('500, 401, malformed JSON and no answer: the last good snapshot stays, each kind is counted, the source is down, the log says why without the token', async () => {
    const dp = d!;
    const failures: [string, string, RegExp][] = [
      ['500', 'server', /HTTP 500 .*management server error/],
      ['401', 'unauthorized', /HTTP 401 .*the token was not accepted/],
      ['malformed', 'invalid', /the response is not JSON/],
      ['hang', 'timeout', new RegExp(`no complete answer within ${timeoutMs} ms`)],
    ];
    let port = 45200;
    for (const [answer, kind, message] of failures) {
      await tell(`answer ${answer}`);
      await until(`a ${kind} error was counted`, () => netbird(dp).errors[kind] > 0);
      const s = netbird(dp);
      expect(s).toMatchObject({ failing: true });
      expect(s.lastError).toMatch(message);
      const text = dp.metrics();
      expect(text).toMatch(/^wgflow_attribution_source_up\{source="netbird"\} 0$/m);
      expect(text).toMatch(new RegExp(`^wgflow_attribution_source_errors_total\\{source="netbird",kind="${kind}"\\} [1-9]\\d*$`, 'm'));
      expect(text).not.toContain(TOKEN);
      const st = dp.ctl(['status']);
      expect(st.stdout).toMatch(/netbird read \d+ s ago \(2 peers.*\), FAILING: .* \(the last good snapshot stays in use\); errors: /);
      expect(st.stdout).not.toContain(TOKEN);
      // New flows still get the last good snapshot's ids.
      port += 1;
      await run(r.client.ns, 'node', [TRAFFIC, 'udp-client', r.router.ip4, '9100', '2', '100', String(port)]);
      const evs = await dp.waitEvents((es) => es.some((e) => e.type === 'START' && e.protocol === 17 && e.source.port === port));
      expect(evs.find((e) => e.type === 'START' && e.source.port === port)).toMatchObject({ ruleId: IDS.polDb, source: { id: IDS.pAlice, name: 'alice-desk' }, user: { id: IDS.uAlice } });
    }
    // Every kind counted, none forgotten.
    const text = dp.metrics();
    for (const [, kind] of failures) expect(text).toMatch(new RegExp(`^wgflow_attribution_source_errors_total\\{source="netbird",kind="${kind}"\\} [1-9]\\d*$`, 'm'));
    await tell('answer ok');
    await until('the source is up again', () => !netbird(dp).failing);
    expect(dp.metrics()).toMatch(/^wgflow_attribution_source_up\{source="netbird"\} 1$/m);
    await until('the recovery is logged', () => /attribution source readable again/.test(dp.log));
    // Each kind of failure is logged at once (repeats of one kind are rate-limited), as an error
    // naming the request and the kind, and saying that the last good snapshot stays.
    const lines = dp.log.split('\n').filter((l) => l.includes('"source":"netbird"') && l.includes('"level":50'));
    for (const [, kind, message] of failures) {
      expect({ kind, logged: lines.some((l) => l.includes(`"kind":"${kind}"`) && message.test(l) && /GET \/api\/\S+/.test(l) && /keeping its last good snapshot/.test(l)) })
        .toEqual({ kind, logged: true });
    }
    expect(dp.log).not.toContain(TOKEN);
    expect(dp.log).not.toContain(TOKEN.slice(4, 20));
  });

  it('run --check-config --check-source against the API: counts and warnings (0); a refused token (1); the token from the environment (0); no token at all (2)', () => {
    const cfgFile = (name: string, attribution: Record<string, unknown>): string => {
      const f = join(dir, name);
      writeFileSync(f, stringify({ interfaces: [r.router.ifname], attribution }));
      return f;
    };
    const env = { ...process.env };
    delete env.WGFLOW_NETBIRD_TOKEN;
    const ok = wgflow(['run', '--config', cfgFile('ok.yaml', nbSettings()), '--check-config', '--check-source'], { ns: r.router.ns, env });
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    // The server serves version 2 by now (5 policies).
    expect(ok.stdout).toMatch(/^netbird: http:\/\/127\.0\.0\.1:\d+\/?: 2 peers, 4 groups, 2 users, 5 policies, 5 rules, 1 networks, 1 resources, 1 routers, 1 routes; 1 warnings$/m);
    expect(ok.stdout).toContain(`  warning: route "${IDS.routeDcA}" (old-dc): disabled in NetBird; not attributed\n`);
    expect(ok.stdout).toMatch(/^merged tables \(file > netbird > wireguard\): 2 peers, 1 resources, 5 policies$/m);

    const wrong = join(dir, 'wrong-token');
    writeFileSync(wrong, `nbp_${randomBytes(18).toString('hex')}\n`, { mode: 0o600 });
    const refused = wgflow(['run', '--config', cfgFile('refused.yaml', nbSettings({ token_file: wrong })), '--check-config', '--check-source'], { ns: r.router.ns, env });
    expect(refused.code, refused.stdout + refused.stderr).toBe(1);
    expect(refused.stdout).toMatch(/^netbird: http:\/\/127\.0\.0\.1:\d+\/?: FAILED \(unauthorized\): GET \/api\/\S+: HTTP 401 .*the token was not accepted \(expired, revoked or mistyped\?\)/m);
    expect(refused.stdout + refused.stderr).not.toContain(TOKEN);

    const { token_file: _none, ...noFile } = nbSettings().netbird as Record<string, unknown>;
    // The token from the environment instead of a file.
    const fromEnv = wgflow(['run', '--config', cfgFile('env.yaml', { source: 'netbird', netbird: noFile }), '--check-config', '--check-source'], { ns: r.router.ns, env: { ...env, WGFLOW_NETBIRD_TOKEN: TOKEN } });
    expect(fromEnv.code, fromEnv.stdout + fromEnv.stderr).toBe(0);
    expect(fromEnv.stdout).toMatch(/^netbird: http:\/\/127\.0\.0\.1:\d+\/?: 2 peers, /m);
    expect(fromEnv.stdout + fromEnv.stderr).not.toContain(TOKEN);
    const missing = wgflow(['run', '--config', cfgFile('missing.yaml', { source: 'netbird', netbird: noFile }), '--check-config', '--check-source'], { ns: r.router.ns, env });
    expect(missing.code, missing.stdout + missing.stderr).toBe(2);
    expect(missing.stderr).toMatch(/configuration error: attribution\.netbird\.token_file: .*WGFLOW_NETBIRD_TOKEN/);
  });

  it('SIGTERM while the API does not answer: the read in flight is cancelled and the daemon exits 0', async () => {
    // The only reader of the API from now on: the hanging request is this daemon's.
    await d!.stop();
    d!.cleanup();
    d = undefined;
    await tell('answer hang');
    const hung = waitForLine(server, /"status":"hang"/, 20_000);
    const slow = await DaemonProc.start(r.router.ns, daemonConfig(nbSettings({ timeout_ms: 120_000 })));
    try {
      await hung;
      expect(await slow.stop('SIGTERM')).toBe(0);
    } finally {
      await slow.stop('SIGKILL');
      slow.cleanup();
    }
  });
});
