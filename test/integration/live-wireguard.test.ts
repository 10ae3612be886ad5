// The WireGuard interface as a live attribution source of a real daemon (wireguard-go over UAPI
// here, kernel WireGuard in the VM): started with only --interface, every flow's remote endpoint
// is the peer's public key; peers added, their allowed IPs moved and removed with `wg set` while
// traffic flows reach new flows within the refresh interval, flows in progress keep the
// attribution they started with, and no flow is lost or duplicated.
//
//   [A] wgA ==== wgB [B: wgflow] ==== wgC [C]      10.N.0.50 sits on both A and C: B's allowed
//                                                   IPs decide which of them it belongs to.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { nsExec, Testbed, type WgEndpoint } from '../../testkit/testbed';
import { resourceOf, type FlowEvent } from '../../src/model/event';
import { budget, idleTimeoutS } from '../../testkit/slow';
import { describePrivileged, run, sleep, spawnIn, waitForLine } from '../helpers/env';
import { DaemonProc, teardown, TRAFFIC, wgflow } from '../helpers/daemon';
import { ensureBuilt } from '../export/helpers';

interface Third {
  ns: string;
  ifname: string;
  ip4: string;
  publicKey: string;
  /** Where B reaches C's WireGuard port. */
  endpoint: string;
}

describePrivileged('the WireGuard interface as a live attribution source of the daemon', () => {
  let tb: Testbed;
  let a: WgEndpoint, b: WgEndpoint, c: Third;
  let net: string;
  let shared: string;
  let d: DaemonProc | undefined;

  const lifecycle = { udp_timeout_s: idleTimeoutS(2), icmp_timeout_s: idleTimeoutS(2), interim_interval_s: 1, tcp_close_grace_ms: 200 };
  const wgSet = (...args: string[]): string => nsExec(b.ns, 'wg', ['set', b.ifname, ...args]);
  const isUdpFrom = (lport: number) => (e: FlowEvent): boolean => e.protocol === 17 && e.source.port === lport;
  const status = (dp: DaemonProc): { attribution: { generation: number } } => {
    const r = dp.ctl(['status', '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { attribution: { generation: number } };
  };
  /** Wait until the daemon has swapped in tables newer than generation `g` (a change read). */
  const newerThan = async (dp: DaemonProc, g: number): Promise<number> => {
    for (const end = Date.now() + budget(10_000); Date.now() < end; await sleep(100)) {
      const now = status(dp).attribution.generation;
      if (now > g) return now;
    }
    throw new Error(`the tables were not swapped after generation ${g}: ${dp.log.slice(-2000)}`);
  };

  beforeAll(async () => {
    ensureBuilt();
    tb = new Testbed();
    ({ a, b } = tb.wgPair());
    net = b.ip4.split('.')[1];
    shared = `10.${net}.0.50`;
    // The third peer, C, with its own underlay to B; configured towards B, but not yet a peer of B.
    const cNs = tb.addNamespace('c');
    tb.addVeth(cNs, `172.31.${net}.1/30`, b.ns, `172.31.${net}.2/30`);
    const ifname = `wgfc${tb.id}`.slice(0, 15);
    tb.addWgInterface(cNs, ifname);
    const priv = spawnSync('wg', ['genkey'], { encoding: 'utf8' }).stdout.trim();
    const publicKey = spawnSync('wg', ['pubkey'], { input: priv, encoding: 'utf8' }).stdout.trim();
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-key-'));
    try {
      writeFileSync(join(dir, 'key'), priv, { mode: 0o600 });
      nsExec(cNs, 'wg', ['set', ifname, 'listen-port', '51822', 'private-key', join(dir, 'key'), 'peer', b.publicKey, 'allowed-ips', `${b.ip4}/32`, 'endpoint', `172.31.${net}.2:51821`]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    nsExec(cNs, 'sysctl', ['-qw', `net.ipv6.conf.${ifname}.router_solicitations=0`, `net.ipv6.conf.${ifname}.addr_gen_mode=1`]);
    // 10.N.0.3 first: it is the source of C's own flows; .50 is only answered from (echo bound to it).
    nsExec(cNs, 'ip', ['addr', 'add', `10.${net}.0.3/24`, 'dev', ifname]);
    nsExec(cNs, 'ip', ['addr', 'add', `${shared}/32`, 'dev', ifname]);
    nsExec(cNs, 'ip', ['link', 'set', ifname, 'up']);
    c = { ns: cNs, ifname, ip4: `10.${net}.0.3`, publicKey, endpoint: `172.31.${net}.1:51822` };
    nsExec(a.ns, 'ip', ['addr', 'add', `${shared}/32`, 'dev', a.ifname]);
    wgSet('peer', a.publicKey, 'allowed-ips', `${a.ip4}/32,${a.ip6}/128,${shared}/32`);

    for (const [ns, port, addr] of [[b.ns, '9100', undefined], [a.ns, '9101', undefined], [a.ns, '9200', shared], [c.ns, '9200', shared]] as const) {
      const echo = spawnIn(ns, 'node', [TRAFFIC, 'udp-echo', port, ...(addr ? [addr] : [])]);
      await waitForLine(echo, /ready/);
    }
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]); // handshake
  });

  afterAll(async () => {
    await teardown(d, tb);
  });

  it('started with only --interface and no attribution in its config: every flow\'s remote endpoint is the peer\'s public key', async () => {
    // No `attribution` and no `interfaces` key: the interface comes from the flag.
    d = await DaemonProc.start(b.ns, { lifecycle: { ...lifecycle, interim_interval_s: 0 } }, undefined, undefined, ['--interface', b.ifname]);
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, '9100', '3', '100', '43001']);
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip6, '9100', '3', '100', '43002']);
    await run(b.ns, 'node', [TRAFFIC, 'udp-client', a.ip4, '9101', '2', '100', '43003']);
    await run(a.ns, 'ping', ['-c', '2', '-i', '0.2', b.ip4]);
    const evs = await d.waitEvents((es) => [43001, 43002, 43003].every((p) => es.some((e) => isUdpFrom(p)(e) && e.type === 'END')) &&
      es.some((e) => e.protocol === 1 && e.type === 'END'));
    const peerA = { id: a.publicKey, name: '', type: 'PEER', publicKey: a.publicKey };
    const local = { id: '', type: 'UNKNOWN', publicKey: '' };
    expect(evs.length).toBeGreaterThanOrEqual(8);
    for (const e of evs) {
      const [remote, own] = e.direction === 'INGRESS' ? [e.source, e.destination] : [e.destination, e.source];
      expect({ type: e.type, remote, own }).toMatchObject({ type: e.type, remote: peerA, own: local });
      // The overlay is the interface's own network, so B's address is no resource: peer to peer.
      expect(resourceOf(e)).toBeUndefined();
    }
    const end = (p: number): FlowEvent => evs.find((e) => isUdpFrom(p)(e) && e.type === 'END')!;
    expect(end(43001)).toMatchObject({ direction: 'INGRESS', rxPackets: 3, txPackets: 3 });
    expect(end(43002).source).toMatchObject({ ip: a.ip6, publicKey: a.publicKey });
    expect(end(43003)).toMatchObject({ direction: 'EGRESS', rxPackets: 2, txPackets: 2 });

    // The overlay the daemon took: the interface's networks, as --check-source reports them.
    const chk = wgflow(['run', '--config', d.configFile, '--interface', b.ifname, '--check-config', '--check-source'], { ns: b.ns });
    expect(chk.code, chk.stdout + chk.stderr).toBe(0);
    expect(chk.stdout).toContain(`wireguard: ${b.ifname} (${tb.impl === 'go' ? 'uapi' : 'netlink'}, 1 peers); 1 peers, overlay 10.${net}.0.0/24, fd00:${net}::/64\n`);
  });

  it('ctl status shows the wireguard source; /metrics has it up with its objects, and promtool accepts the text', () => {
    const st = d!.ctl(['status']);
    expect(st.code, st.stderr).toBe(0);
    expect(st.stdout).toMatch(/^attribution: +tables generation \d+; wireguard read \d+ s ago \(1 interfaces, 1 peers\)$/m);
    const text = d!.metrics();
    expect(text).toMatch(/^wgflow_attribution_source_up\{source="wireguard"\} 1$/m);
    expect(text).toMatch(/^wgflow_attribution_source_objects\{source="wireguard",kind="peers"\} 1$/m);
    expect(text).toMatch(/^wgflow_attribution_source_objects\{source="wireguard",kind="interfaces"\} 1$/m);
    expect(text).toMatch(/^wgflow_attribution_source_age_seconds\{source="wireguard"\} [\d.e+-]+$/m);
    expect(text).not.toMatch(/source="netbird"/);
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);
  });

  it('a peer added, its allowed IPs moved, a peer removed while traffic flows: new flows follow, flows in progress keep their START attribution', async () => {
    await d!.stop();
    d!.cleanup();
    d = undefined;
    d = await DaemonProc.start(b.ns, { interfaces: [b.ifname], lifecycle, attribution: { wireguard_refresh_s: 1 } });
    const dp = d;
    const peerOf = (key: string) => ({ id: key, type: 'PEER', publicKey: key });
    const nobody = { id: '', type: 'UNKNOWN', publicKey: '' };

    // A long flow from B to the shared address, to A for now; it runs across the changes below.
    const long = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-stream', shared, '9200', '100', '100', '44000']);
    await waitForLine(long, /ready/);
    const longDone = waitForLine(long, /^\{"sent"/, 120_000);
    await dp.waitEvents((es) => es.some((e) => isUdpFrom(44000)(e) && e.type === 'START'));
    await run(b.ns, 'node', [TRAFFIC, 'udp-client', shared, '9200', '3', '100', '44100']);
    let g = status(dp).attribution.generation;

    // Added: C becomes a peer of B.
    wgSet('peer', c.publicKey, 'allowed-ips', `${c.ip4}/32`, 'endpoint', c.endpoint);
    g = await newerThan(dp, g);
    await run(c.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, '9100', '3', '100', '44101']);

    // Changed: the shared address moves from A's allowed IPs to C's (the long flow now goes to C).
    wgSet('peer', c.publicKey, 'allowed-ips', `${c.ip4}/32,${shared}/32`, 'peer', a.publicKey, 'allowed-ips', `${a.ip4}/32,${a.ip6}/128`);
    g = await newerThan(dp, g);
    await run(b.ns, 'node', [TRAFFIC, 'udp-client', shared, '9200', '3', '100', '44102']);
    // Let the long flow carry a few datagrams over its new path, then end it.
    await sleep(500);
    long.stdin?.end();
    const longCounts = JSON.parse(await longDone) as { sent: number; got: number };

    // Removed: C is no peer of B any more, so its address is nobody's.
    wgSet('peer', c.publicKey, 'remove');
    await newerThan(dp, g);
    await run(b.ns, 'ping', ['-c', '2', '-i', '0.2', '-W', '1', c.ip4]).catch(() => undefined); // no answer: C is gone

    const ports = [44000, 44100, 44101, 44102];
    const evs = await dp.waitEvents((es) => ports.every((p) => es.some((e) => isUdpFrom(p)(e) && e.type === 'END')) &&
      es.some((e) => e.protocol === 1 && e.destination.ip === c.ip4 && e.type === 'END'), 30_000);

    // No flow lost or duplicated: one START and one END per flow id, one flow per traffic command.
    const byFlow = new Map<string, FlowEvent[]>();
    for (const e of evs) byFlow.set(e.flowId, [...(byFlow.get(e.flowId) ?? []), e]);
    for (const [id, fe] of byFlow) {
      const types = fe.map((e) => e.type);
      expect({ id, types }).toEqual({ id, types: ['START', ...types.filter((t) => t === 'UPDATE'), 'END'] });
    }
    for (const p of ports) expect(new Set(evs.filter(isUdpFrom(p)).map((e) => e.flowId)).size).toBe(1);
    const flow = (p: number): FlowEvent[] => evs.filter(isUdpFrom(p));
    const endOf = (p: number): FlowEvent => flow(p).find((e) => e.type === 'END')!;

    // The long flow: started with A, and every UPDATE and its END say A, though it ended going to C.
    const long0 = flow(44000);
    expect(long0.filter((e) => e.type === 'UPDATE').length).toBeGreaterThanOrEqual(1);
    for (const e of long0) expect({ type: e.type, destination: e.destination }).toMatchObject({ type: e.type, destination: peerOf(a.publicKey) });
    expect(endOf(44000)).toMatchObject({ direction: 'EGRESS', txPackets: longCounts.sent, rxPackets: longCounts.got });
    // It was in progress across the move: it ended after the flow that saw the move had started.
    expect(endOf(44000).windowEndMs!).toBeGreaterThan(flow(44102)[0].timestampMs);
    expect(longCounts.got).toBeGreaterThan(0);

    // New flows after each change: to the shared address before (A) and after (C) the move; from C once added.
    expect(flow(44100).every((e) => e.destination.publicKey === a.publicKey)).toBe(true);
    expect(endOf(44100)).toMatchObject({ txPackets: 3, rxPackets: 3, destination: { ip: shared, ...peerOf(a.publicKey) } });
    expect(endOf(44101)).toMatchObject({ direction: 'INGRESS', txPackets: 3, rxPackets: 3, source: { ip: c.ip4, ...peerOf(c.publicKey) } });
    expect(endOf(44102)).toMatchObject({ direction: 'EGRESS', txPackets: 3, rxPackets: 3, destination: { ip: shared, ...peerOf(c.publicKey) } });
    // After the removal: C's address belongs to no peer (inside the overlay: UNKNOWN).
    const gone = evs.filter((e) => e.protocol === 1 && e.destination.ip === c.ip4);
    expect(new Set(gone.map((e) => e.flowId)).size).toBe(1);
    for (const e of gone) expect(e.destination).toMatchObject(nobody);
    expect(gone.find((e) => e.type === 'END')).toMatchObject({ txPackets: 2, rxPackets: 0 });

    // The tables were swapped once at start and once per change, never for a read that changed
    // nothing (wireguard-go lists its peers in a different order at each read).
    const swaps = dp.log.split('\n').filter((l) => l.includes('attribution tables updated') && l.includes('"cause":"wireguard"'));
    expect(swaps.length, swaps.join('\n')).toBe(4);
  });
});
