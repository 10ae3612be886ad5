// Flow events on a real routing testbed: client --WireGuard-- routing peer (forwarding) -- resource
// subnet. wgflow runs on the routing peer and on the client. Traffic from the client to a resource
// must give, on the router, START and END with direction INGRESS, the resource id, the allowing
// policy and the exact byte totals; on the client the same flow as EGRESS.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Testbed } from '../../testkit/testbed';
import type { FlowEvent } from '../../src/model/event';
import { idleTimeoutS } from '../../testkit/slow';
import { Capture, describePrivileged, killBackground, run, spawnIn, waitForLine } from '../helpers/env';
import { unmergedBytes } from '../helpers/pcap';
import { DaemonProc, TRAFFIC } from '../helpers/daemon';

type R = ReturnType<Testbed['routed']>;

function tuple(e: FlowEvent): string {
  return `${e.protocol} ${e.source.ip}:${e.source.port} > ${e.destination.ip}:${e.destination.port}`;
}

describePrivileged('flow events on a routing testbed', () => {
  let tb: Testbed;
  let r: R;
  let router: DaemonProc, client: DaemonProc;

  beforeAll(async () => {
    tb = new Testbed();
    r = tb.routed();
    // Captures see what leaves each WireGuard interface segment by segment (kernel WireGuard).
    tb.segmentedEgress(r.client);
    tb.segmentedEgress(r.router);
    const net = r.client.ip4.split('.')[1];
    const overlay = [`10.${net}.0.0/24`, `fd00:${net}::/64`];
    // Idle timeouts scale with the machine: under emulation a sender can stall for seconds between
    // two paced datagrams, which a 2 s timeout would take for the flow's end.
    const lifecycle = { udp_timeout_s: idleTimeoutS(2), icmp_timeout_s: idleTimeoutS(2), interim_interval_s: 2, tcp_close_grace_ms: 200 };
    router = await DaemonProc.start(r.router.ns, {
      interfaces: [r.router.ifname],
      reporter_public_key: r.router.publicKey,
      lifecycle,
      attribution: {
        overlay,
        peers: [
          { id: 'peer-client', name: 'client', ip: r.client.ip4, ips: [r.client.ip6], public_key: r.client.publicKey, groups: ['staff'], user: { id: 'u-1', name: 'Alice', email: 'alice@example.com' } },
          { id: 'peer-router', name: 'router', ip: r.router.ip4, ips: [r.router.ip6] },
        ],
        resources: [{ id: 'res-office', name: 'office', type: 'SUBNET', prefixes: [r.subnet4, r.subnet6] }],
        policies: [
          { id: 'pol-ssh', name: 'ssh only', action: 'accept', sources: [{ group: 'staff' }], destinations: [{ resource: 'res-office' }], protocol: 'tcp', ports: [22] },
          { id: 'pol-web', name: 'staff to office web', action: 'accept', sources: [{ peer: 'peer-client' }], destinations: [{ resource: 'res-office' }], protocol: 'tcp', ports: ['8000-8100'] },
          { id: 'pol-all', name: 'staff to office', action: 'accept', sources: [{ group: 'staff' }], destinations: [{ resource: 'res-office' }] },
        ],
      },
    });
    client = await DaemonProc.start(r.client.ns, { interfaces: [r.client.ifname], lifecycle, attribution: { overlay } });
    await run(r.client.ns, 'ping', ['-c', '1', '-W', '3', r.router.ip4]); // handshake
  });

  afterAll(async () => {
    for (const d of [router, client]) {
      if (!d) continue;
      await d.stop();
      d.cleanup();
    }
    await killBackground();
    await tb?.destroy();
  });

  it('TCP to a resource: INGRESS on the router with resource, policy and exact bytes; EGRESS on the client', async () => {
    const srv = spawnIn(r.resourceNs, 'node', [TRAFFIC, 'tcp-server', '8080']);
    await waitForLine(srv, /ready/);
    const cap = await Capture.start(r.router.ns, r.router.ifname);
    const ccap = await Capture.start(r.client.ns, r.client.ifname);
    await run(r.client.ns, 'node', [TRAFFIC, 'tcp-client', r.resource4, '8080', String(2 << 20)]);
    const isIt = (e: FlowEvent): boolean => e.protocol === 6 && e.destination.ip === r.resource4 && e.destination.port === 8080;
    const evs = await router.waitEvents((es) => es.some((e) => isIt(e) && e.type === 'END'));
    const pkts = await cap.stop();
    const cpkts = await ccap.stop();
    srv.kill('SIGKILL');
    const start = evs.find((e) => isIt(e) && e.type === 'START')!;
    const end = evs.find((e) => isIt(e) && e.type === 'END')!;
    expect(start).toMatchObject({ direction: 'INGRESS', ruleId: 'pol-web', policyName: 'staff to office web', interfaceName: r.router.ifname, reporterPublicKey: r.router.publicKey });
    expect(start.source).toMatchObject({ ip: r.client.ip4, id: 'peer-client', name: 'client', type: 'PEER', publicKey: r.client.publicKey });
    expect(start.destination).toMatchObject({ ip: r.resource4, port: 8080, id: 'res-office', name: 'office', type: 'SUBNET_RESOURCE' });
    expect(start.user).toEqual({ id: 'u-1', name: 'Alice', email: 'alice@example.com' });
    expect(end).toMatchObject({ flowId: start.flowId, endReason: 'tcp_fin', direction: 'INGRESS' });
    // What crossed each peer's interface, each way. Egress captures see segments. On kernel
    // WireGuard the receive path merges segments (GRO) before the tap, so there what a peer
    // received is what the other sent, checked against its own merged capture below.
    const kernel = tb.impl === 'kernel';
    const fromClient = pkts.filter((p) => p.src === r.client.ip4 && p.dst === r.resource4 && p.dport === 8080);
    const toClient = pkts.filter((p) => p.src === r.resource4 && p.dst === r.client.ip4 && p.sport === 8080);
    const sent = cpkts.filter((p) => p.src === r.client.ip4 && p.dst === r.resource4 && p.dport === 8080);
    const got = cpkts.filter((p) => p.src === r.resource4 && p.dst === r.client.ip4 && p.sport === 8080);
    const bytes = (ps: typeof pkts): number => ps.reduce((s, p) => s + p.length, 0);
    if (kernel) {
      expect(unmergedBytes(fromClient, sent.length)).toBe(bytes(sent));
      expect(unmergedBytes(got, toClient.length)).toBe(bytes(toClient));
      expect(fromClient.length, 'the router received GRO super-packets').toBeLessThan(sent.length);
    }
    const routerRx = kernel ? sent : fromClient, clientRx = kernel ? toClient : got;
    // The router received what the client sent (rx) and sent the replies (tx): exactly the capture.
    expect([end.rxPackets, end.rxBytes]).toEqual([routerRx.length, bytes(routerRx)]);
    expect([end.txPackets, end.txBytes]).toEqual([toClient.length, bytes(toClient)]);
    expect(end.rxBytes).toBeGreaterThan(2 << 20);
    // The client saw the same connection leave through its interface, and counted exactly what
    // crossed its own interface (on wireguard-go the tunnel may lose packets: each peer counts its side).
    const cev = await client.waitEvents((es) => es.some((e) => isIt(e) && e.type === 'END'));
    const cend = cev.find((e) => isIt(e) && e.type === 'END')!;
    expect(tuple(cend)).toBe(tuple(end));
    expect(cend.direction).toBe('EGRESS');
    expect([cend.txPackets, cend.txBytes]).toEqual([sent.length, bytes(sent)]);
    expect([cend.rxPackets, cend.rxBytes]).toEqual([clientRx.length, bytes(clientRx)]);
    // One START and one END per flow, sharing the flow id; every event id distinct.
    expect(evs.filter((e) => e.flowId === start.flowId).map((e) => e.type)).toEqual(['START', 'END']);
    expect(new Set(evs.map((e) => e.eventId)).size).toBe(evs.length);
  });

  it('ICMP echo to a resource, and a long UDP flow over IPv6 whose interim updates add up to the END', async () => {
    await run(r.client.ns, 'ping', ['-c', '3', '-i', '0.2', r.resource4]);
    const echo = spawnIn(r.resourceNs, 'node', [TRAFFIC, 'udp-echo', '9000']);
    await waitForLine(echo, /ready/);
    // 60 datagrams of 500 bytes, 100 ms apart: 6 s, three interim windows of 2 s.
    await run(r.client.ns, 'node', [TRAFFIC, 'udp-paced', r.resource6, '9000', '60', '500', '100'], 20_000);
    const isUdp = (e: FlowEvent): boolean => e.protocol === 17 && e.destination.ip === r.resource6 && e.destination.port === 9000;
    const isIcmp = (e: FlowEvent): boolean => e.protocol === 1 && e.destination.ip === r.resource4;
    const evs = await router.waitEvents((es) => es.some((e) => isUdp(e) && e.type === 'END') && es.some((e) => isIcmp(e) && e.type === 'END'));
    echo.kill('SIGKILL');

    const icmpEnd = evs.find((e) => isIcmp(e) && e.type === 'END')!;
    expect(icmpEnd).toMatchObject({ icmpType: 8, icmpCode: 0, endReason: 'idle', ruleId: 'pol-all', rxPackets: 3, txPackets: 3, rxBytes: 3 * 84, txBytes: 3 * 84 });

    const udp = evs.filter(isUdp);
    const updates = udp.filter((e) => e.type === 'UPDATE');
    const end = udp.find((e) => e.type === 'END')!;
    const size = 500 + 8 + 40;
    expect(end).toMatchObject({ direction: 'INGRESS', endReason: 'idle', ruleId: 'pol-all', rxPackets: 60, txPackets: 60, rxBytes: 60 * size, txBytes: 60 * size });
    expect(updates.length).toBeGreaterThanOrEqual(2);
    // Windows follow each other; the deltas plus what moved after the last UPDATE are the END totals.
    for (let i = 1; i < updates.length; i++) expect(updates[i].windowStartMs).toBe(updates[i - 1].windowEndMs);
    const sum = (k: 'rxBytes' | 'txBytes' | 'rxPackets' | 'txPackets'): number => updates.reduce((s, u) => s + u[k], 0);
    for (const k of ['rxBytes', 'txBytes', 'rxPackets', 'txPackets'] as const) {
      expect(sum(k)).toBeLessThanOrEqual(end[k]);
      expect(sum(k)).toBeGreaterThan(0);
    }
    expect(udp.map((e) => e.flowId).every((id) => id === end.flowId)).toBe(true);
  });
});
