// DROP events on the routing testbed (client --WireGuard-- router -- resource subnet), checked
// against an oracle wgflow does not share: the counters of the nftables rules that drop the
// packets on the router. Also: allowed traffic gives no DROP, a missing route, a reject (ICMP
// unreachable back to the sender), drops on the way out to the tunnel, `ctl drops off`.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Testbed, nsExec } from '../../testkit/testbed';
import type { FlowEvent } from '../../src/model/event';
import { describePrivileged, killBackground, run, spawnIn, waitForLine } from '../helpers/env';
import { DaemonProc, TRAFFIC } from '../helpers/daemon';

type R = ReturnType<Testbed['routed']>;

/** packets and bytes of the nftables rule with this comment, in table inet wgftest. */
function nftCounter(ns: string, comment: string): { packets: number; bytes: number } {
  const out = JSON.parse(nsExec(ns, 'nft', ['-j', 'list', 'table', 'inet', 'wgftest'])) as { nftables: Array<{ rule?: { comment?: string; expr: Array<{ counter?: { packets: number; bytes: number } }> } }> };
  for (const o of out.nftables) {
    if (o.rule?.comment !== comment) continue;
    const c = o.rule.expr.find((e) => e.counter)?.counter;
    if (c) return c;
  }
  throw new Error(`no nftables rule "${comment}"`);
}

const drops = (evs: FlowEvent[], pred: (e: FlowEvent) => boolean): FlowEvent[] => evs.filter((e) => e.type === 'DROP' && pred(e));
const sum = (evs: FlowEvent[], f: (e: FlowEvent) => number): number => evs.reduce((a, e) => a + f(e), 0);

describePrivileged('DROP events on a routing testbed', () => {
  let tb: Testbed;
  let r: R;
  let router: DaemonProc;
  let net: string;

  beforeAll(async () => {
    tb = new Testbed();
    r = tb.routed();
    net = r.client.ip4.split('.')[1];
    const wg = r.router.ifname;
    // The router's filter: the oracle. Each rule counts what it drops.
    nsExec(r.router.ns, 'nft', ['-f', '-'], [
      'table inet wgftest {',
      '  chain forward_filter {',
      '    type filter hook forward priority 0; policy accept;',
      `    iifname "${wg}" ip saddr ${r.client.ip4} udp dport 9999 counter drop comment "deny-udp4"`,
      `    iifname "${wg}" ip6 saddr ${r.client.ip6} udp dport 9999 counter drop comment "deny-udp6"`,
      `    iifname "${wg}" tcp dport 8443 counter reject with icmpx type admin-prohibited comment "reject-tcp"`,
      `    oifname "${wg}" udp dport 9997 counter drop comment "deny-out"`,
      `    iifname "${wg}" udp dport 9996 counter drop comment "deny-later"`,
      '  }',
      '}',
    ].join('\n') + '\n');
    // An unreachable route on the router for one address of the subnet; and a network the client
    // sends through the tunnel for which the router has no route at all.
    nsExec(r.router.ns, 'ip', ['route', 'add', 'unreachable', `192.168.${net}.200/32`]);
    nsExec(r.client.ns, 'wg', ['set', r.client.ifname, 'peer', r.router.publicKey, 'allowed-ips',
      [`${r.router.ip4}/32`, `${r.router.ip6}/128`, r.subnet4, r.subnet6, '198.51.100.0/24'].join(',')]);
    nsExec(r.client.ns, 'ip', ['route', 'add', '198.51.100.0/24', 'dev', r.client.ifname]);
    router = await DaemonProc.start(r.router.ns, {
      interfaces: [wg],
      drops: 'on',
      lifecycle: { drop_window_s: 1, udp_timeout_s: 2, interim_interval_s: 0 },
      attribution: {
        overlay: [`10.${net}.0.0/24`, `fd00:${net}::/64`],
        peers: [{ id: 'peer-client', name: 'client', ip: r.client.ip4, ips: [r.client.ip6], public_key: r.client.publicKey, groups: ['staff'], user: { id: 'u-1', name: 'Alice', email: 'alice@example.com' } }],
        resources: [{ id: 'res-office', name: 'office', type: 'SUBNET', prefixes: [r.subnet4, r.subnet6] }],
        policies: [
          { id: 'pol-deny-udp', name: 'no udp 9999 to the office', action: 'drop', sources: [{ group: 'staff' }], destinations: [{ resource: 'res-office' }], protocol: 'udp', ports: [9999] },
          { id: 'pol-all', name: 'staff to office', action: 'accept', sources: [{ group: 'staff' }], destinations: [{ resource: 'res-office' }] },
        ],
      },
    });
    await run(r.client.ns, 'ping', ['-c', '1', '-W', '3', r.router.ip4]); // handshake
  });

  afterAll(async () => {
    if (router) {
      await router.stop();
      router.cleanup();
    }
    await killBackground();
    await tb?.destroy();
  });

  it('a netfilter drop: DROP events whose packets and bytes equal the nftables counter, named after the deny policy (IPv4 and IPv6)', async () => {
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-send', r.resource4, '9999', '40', '200', '40001']);
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-send', r.resource6, '9999', '30', '300', '40002']);
    const want4 = nftCounter(r.router.ns, 'deny-udp4'), want6 = nftCounter(r.router.ns, 'deny-udp6');
    expect(want4.packets).toBe(40);
    expect(want6.packets).toBe(30);
    const is4 = (e: FlowEvent): boolean => e.source.port === 40001 && e.destination.port === 9999;
    const is6 = (e: FlowEvent): boolean => e.source.port === 40002 && e.destination.port === 9999;
    const evs = await router.waitEvents((es) => sum(drops(es, is4), (e) => e.rxPackets) >= 40 && sum(drops(es, is6), (e) => e.rxPackets) >= 30, 20_000);
    for (const [pred, want, src, dst] of [[is4, want4, r.client.ip4, r.resource4], [is6, want6, r.client.ip6, r.resource6]] as const) {
      const d = drops(evs, pred);
      expect(sum(d, (e) => e.rxPackets)).toBe(want.packets);
      expect(sum(d, (e) => e.rxBytes)).toBe(want.bytes);
      for (const e of d) {
        expect(e).toMatchObject({
          direction: 'INGRESS', protocol: 17, dropReason: 'NETFILTER_DROP', ruleId: 'pol-deny-udp', policyName: 'no udp 9999 to the office',
          interfaceName: r.router.ifname, txPackets: 0, txBytes: 0, user: { id: 'u-1' },
        });
        expect(e.source).toMatchObject({ ip: src, id: 'peer-client', type: 'PEER' });
        expect(e.destination).toMatchObject({ ip: dst, id: 'res-office', type: 'SUBNET_RESOURCE' });
        expect(e.windowStartMs).toBeLessThanOrEqual(e.windowEndMs!);
      }
      // At most one event per drop key and window: one flow id, windows that do not overlap.
      expect(new Set(d.map((e) => e.flowId)).size).toBe(1);
      const ws = d.map((e) => [e.windowStartMs!, e.windowEndMs!]).sort((a, b) => a[0] - b[0]);
      for (let i = 1; i < ws.length; i++) expect(ws[i][0]).toBeGreaterThanOrEqual(ws[i - 1][1]);
    }
    expect(new Set(evs.map((e) => e.eventId)).size).toBe(evs.length);
    const m = router.metrics();
    expect(m).toMatch(/wgflow_drop_events_enabled 1/);
    const netfilter = Number(/wgflow_dropped_packets_total\{reason="NETFILTER_DROP"\} (\d+)/.exec(m)?.[1]);
    expect(netfilter).toBeGreaterThanOrEqual(70);
  });

  it('allowed traffic gives no DROP event', async () => {
    const echo = spawnIn(r.resourceNs, 'node', [TRAFFIC, 'udp-echo', '9998']);
    await waitForLine(echo, /ready/);
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-client', r.resource4, '9998', '50', '500', '40003']);
    const srv = spawnIn(r.resourceNs, 'node', [TRAFFIC, 'tcp-server', '8080']);
    await waitForLine(srv, /ready/);
    await run(r.client.ns, 'node', [TRAFFIC, 'tcp-client', r.resource4, '8080', String(1 << 20)]);
    const evs = await router.waitEvents((es) => es.some((e) => e.type === 'END' && e.destination.port === 9998), 20_000);
    echo.kill('SIGKILL');
    srv.kill('SIGKILL');
    await new Promise((res) => setTimeout(res, 2500)); // two drop windows
    expect(drops(router.events(), (e) => e.destination.port === 9998 || e.destination.port === 8080 || e.source.port === 8080)).toEqual([]);
    expect(evs.some((e) => e.type === 'START' && e.destination.port === 9998 && e.ruleId === 'pol-all')).toBe(true);
  });

  it('a reject (ICMP unreachable back to the client) and a missing route', async () => {
    // TCP to a rejected port: every SYN is dropped by the rule, each answered with ICMP.
    const conn = spawnIn(r.client.ns, 'node', ['-e', `const s=require('net').connect(8443,'${r.resource4}');s.on('error',(e)=>{console.log(e.code);process.exit(0)});setTimeout(()=>process.exit(0),3000)`]);
    await waitForLine(conn, /E[A-Z]+/).catch(() => undefined);
    // UDP to an address with an unreachable route, and to a network without any route.
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-send', `192.168.${net}.200`, '5000', '12', '100', '40004']);
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-send', '198.51.100.7', '5000', '9', '100', '40008']);
    const rejected = nftCounter(r.router.ns, 'reject-tcp');
    expect(rejected.packets).toBeGreaterThanOrEqual(1);
    const isRej = (e: FlowEvent): boolean => e.protocol === 6 && e.destination.port === 8443;
    const isNoRoute = (e: FlowEvent): boolean => e.destination.ip === `192.168.${net}.200`;
    const isNoNet = (e: FlowEvent): boolean => e.destination.ip === '198.51.100.7';
    const evs = await router.waitEvents((es) => sum(drops(es, isRej), (e) => e.rxPackets) >= rejected.packets && sum(drops(es, isNoRoute), (e) => e.rxPackets) >= 12 &&
      sum(drops(es, isNoNet), (e) => e.rxPackets) >= 9, 20_000);
    const rej = drops(evs, isRej);
    expect(sum(rej, (e) => e.rxPackets)).toBe(nftCounter(r.router.ns, 'reject-tcp').packets);
    expect(sum(rej, (e) => e.rxBytes)).toBe(nftCounter(r.router.ns, 'reject-tcp').bytes);
    for (const e of rej) expect(e).toMatchObject({ dropReason: 'NETFILTER_DROP', ruleId: '', policyName: '', direction: 'INGRESS' });
    const nr = drops(evs, isNoRoute);
    expect(sum(nr, (e) => e.rxPackets)).toBe(12);
    expect(sum(nr, (e) => e.rxBytes)).toBe(12 * 128);
    // An unreachable route is answered with ICMP host unreachable; the kernel gives no reason for it.
    for (const e of nr) expect(e.dropReason).toBe('NOT_SPECIFIED');
    const nn = drops(evs, isNoNet);
    expect(sum(nn, (e) => e.rxPackets)).toBe(9);
    for (const e of nn) expect(e).toMatchObject({ dropReason: 'IP_INNOROUTES', direction: 'INGRESS', destination: { type: 'UNKNOWN' } });
    // No matching drop policy: the JSON says so.
    const line = readFileSync(router.eventsFile, 'utf8').split('\n').find((l) => l.includes(rej[0].eventId))!;
    expect(JSON.parse(line)).toMatchObject({ type: 'TYPE_DROP', wgflow_drop_policy: 'none', wgflow_drop_reason: 'NETFILTER_DROP' });
  });

  it('a drop on the way out to the tunnel is EGRESS, counted as sent', async () => {
    await run(r.resourceNs, 'node', [TRAFFIC, 'udp-send', r.client.ip4, '9997', '25', '150', '40005']);
    const want = nftCounter(r.router.ns, 'deny-out');
    expect(want.packets).toBe(25);
    const is = (e: FlowEvent): boolean => e.destination.port === 9997;
    const evs = await router.waitEvents((es) => sum(drops(es, is), (e) => e.txPackets) >= 25, 20_000);
    const d = drops(evs, is);
    expect(sum(d, (e) => e.txPackets)).toBe(want.packets);
    expect(sum(d, (e) => e.txBytes)).toBe(want.bytes);
    for (const e of d) {
      expect(e).toMatchObject({ direction: 'EGRESS', rxPackets: 0, dropReason: 'NETFILTER_DROP', interfaceName: r.router.ifname });
      expect(e.source).toMatchObject({ ip: r.resource4, id: 'res-office' });
      expect(e.destination).toMatchObject({ ip: r.client.ip4, id: 'peer-client' });
    }
  });

  it('ctl drops off stops them at once; on again brings them back', async () => {
    const off = router.ctl(['drops', 'off']);
    expect(off.stdout).toMatch(/DROP events are now off/);
    expect(router.metrics()).toMatch(/wgflow_drop_events_enabled 0/);
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-send', r.resource4, '9996', '20', '100', '40006']);
    expect(nftCounter(r.router.ns, 'deny-later').packets).toBe(20);
    await new Promise((res) => setTimeout(res, 2500));
    expect(drops(router.events(), (e) => e.destination.port === 9996)).toEqual([]);
    expect(router.ctl(['status']).stdout).toMatch(/DROP events:\s+off/);
    expect(router.ctl(['drops', 'on']).stdout).toMatch(/now on/);
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-send', r.resource4, '9996', '7', '100', '40007']);
    const evs = await router.waitEvents((es) => sum(drops(es, (e) => e.source.port === 40007), (e) => e.rxPackets) >= 7, 20_000);
    expect(sum(drops(evs, (e) => e.source.port === 40007), (e) => e.rxPackets)).toBe(7);
    expect(drops(evs, (e) => e.source.port === 40006)).toEqual([]);
  });
});

describe('DROP events: bad input', () => {
  it('--drops takes on or off', async () => {
    const { wgflow } = await import('../helpers/daemon');
    const res = wgflow(['run', '--interface', 'wg0', '--drops', 'maybe', '--check-config']);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/--drops must be on or off, got "maybe"/);
  });
});
