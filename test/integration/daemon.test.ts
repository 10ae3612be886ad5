// The CLI against a real daemon on a WireGuard pair: ctl status/counters/flows/reload, interface
// flap and recreate, /metrics matching the events (and promtool), SIGTERM ending flows.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { Testbed, WgEndpoint, nsExec } from '../../testkit/testbed';
import type { FlowEvent } from '../../src/model/event';
import { describePrivileged, run, sleep, spawnIn, waitForLine } from '../helpers/env';
import { DaemonProc, teardown, TRAFFIC } from '../helpers/daemon';
import { idleTimeoutS } from '../../testkit/slow';

describePrivileged('wgflow run and ctl on a WireGuard pair', () => {
  let tb: Testbed;
  let a: WgEndpoint, b: WgEndpoint;
  let d: DaemonProc;
  let echo: ReturnType<typeof spawnIn>;

  beforeAll(async () => {
    tb = new Testbed();
    ({ a, b } = tb.wgPair());
    d = await DaemonProc.start(b.ns, {
      interfaces: [b.ifname],
      // Idle timeouts longer than a pause between two commands here (under emulation a Node start
      // takes seconds): the counters test pauses its flow for one `ctl` and one client start.
      lifecycle: { udp_timeout_s: idleTimeoutS(2), icmp_timeout_s: idleTimeoutS(2), interim_interval_s: 0, tcp_close_grace_ms: 200 },
      attribution: {
        // Only A is a peer here, so B's address is looked up in the resource table.
        overlay: [`${a.ip4}/32`],
        peers: [{ id: 'peer-a', name: 'alpha', ip: a.ip4 }],
        resources: [
          { id: 'res-old', name: 'old-table', type: 'HOST', prefixes: ['10.254.0.1/32'] },
          { id: 'res-dom', name: 'db-by-name', type: 'DOMAIN', domains: ['db.example.com'] },
        ],
        policies: [{ id: 'pol-a', name: 'alpha to b', action: 'accept', sources: [{ peer: 'peer-a' }], destinations: [{ prefix: `${b.ip4}/32` }] }],
      },
    });
    echo = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-echo', '9100']);
    await waitForLine(echo, /ready/);
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]);
  });

  afterAll(async () => {
    await teardown(d, tb);
  });

  it('ctl status reports interfaces, byte reporting and outputs', () => {
    const r = d.ctl(['status']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${b.ifname} attached`);
    expect(r.stdout).toContain('byte reporting: on');
    expect(r.stdout).toMatch(/output: +.*events\.jsonl \(no collector configured\)/);
    const j = JSON.parse(d.ctl(['status', '--json']).stdout);
    expect(j).toMatchObject({ counting: true, interfaces: [{ name: b.ifname, attached: true }] });
  });

  it('counters off then on: bytes counted only while on, the flow neither lost nor duplicated', async () => {
    expect(d.ctl(['counters', 'off']).stdout).toBe('kernel byte reporting is now off\n');
    expect(JSON.parse(d.ctl(['status', '--json']).stdout).counting).toBe(false);
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, '9100', '10', '100', '42000']);
    expect(d.ctl(['counters', 'on']).stdout).toBe('kernel byte reporting is now on\n');
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, '9100', '5', '100', '42000']);
    const isIt = (e: FlowEvent): boolean => e.protocol === 17 && e.source.port === 42000;
    const evs = await d.waitEvents((es) => es.some((e) => isIt(e) && e.type === 'END'));
    const flow = evs.filter(isIt);
    expect(flow.map((e) => e.type)).toEqual(['START', 'END']);
    // Only the 5 datagrams each way sent while counting was on.
    expect(flow[1]).toMatchObject({ rxPackets: 5, txPackets: 5, rxBytes: 5 * 128, txBytes: 5 * 128, countersEnabled: false, ruleId: 'pol-a' });
  });

  it('ctl flows shows active flows as a table', async () => {
    const paced = spawnIn(a.ns, 'node', [TRAFFIC, 'udp-paced', b.ip4, '9100', '30', '200', '100']);
    await sleep(1800);
    const r = d.ctl(['flows', '--top', '5']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(/^DIR +SOURCE +DESTINATION +PROTO\/PORT +BYTES ↑ +BYTES ↓ +RESOURCE +POLICY +IF$/);
    expect(r.stdout).toMatch(new RegExp(`in +alpha +→ +${b.ip4.replace(/\./g, '\\.')} +udp/9100 .* alpha to b +${b.ifname}`));
    await new Promise((res) => paced.once('exit', res));
  });

  it('ctl resolve feeds the domain table: new flows to that address belong to the DOMAIN resource', async () => {
    const r = d.ctl(['resolve', 'db.example.com', b.ip4, '--ttl', '60']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`db.example.com -> ${b.ip4} for 60 s\n`);
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, '9100', '2', '50', '42050']);
    const evs = await d.waitEvents((es) => es.some((e) => e.source.port === 42050 && e.type === 'START'));
    expect(evs.find((e) => e.source.port === 42050)?.destination).toMatchObject({ id: 'res-dom', name: 'db-by-name', type: 'DOMAIN_RESOURCE' });
    expect(d.ctl(['resolve', 'db.example.com']).code).toBe(2);
  });

  it('reload with a changed resource table: new flows get the new resource id', async () => {
    const cfg = parse(readFileSync(d.configFile, 'utf8')) as { attribution: { resources: Array<Record<string, unknown>> } };
    cfg.attribution.resources = [{ id: 'res-new', name: 'new-table', type: 'HOST', prefixes: [`${b.ip4}/32`] }];
    writeFileSync(d.configFile, stringify(cfg));
    const r = d.ctl(['reload']);
    expect(r.code, r.stderr).toBe(0);
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, '9100', '2', '50', '42100']);
    const evs = await d.waitEvents((es) => es.some((e) => e.source.port === 42100 && e.type === 'START'));
    expect(evs.find((e) => e.source.port === 42100)?.destination).toMatchObject({ id: 'res-new', name: 'new-table', type: 'HOST_RESOURCE' });
    // A bad file is refused and the running tables stay.
    writeFileSync(d.configFile, 'attribution:\n  resources: [{ id: x, type: SUBNET, prefixes: [not-a-prefix] }]\n');
    const bad = d.ctl(['reload']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/attribution/);
    writeFileSync(d.configFile, stringify(cfg));
  });

  it('interface down/up and delete/recreate: flows afterwards are counted', async () => {
    nsExec(b.ns, 'ip', ['link', 'set', b.ifname, 'down']);
    nsExec(b.ns, 'ip', ['link', 'set', b.ifname, 'up']);
    nsExec(b.ns, 'ip', ['-6', 'addr', 'add', `${b.ip6}/64`, 'dev', b.ifname, 'nodad']);
    // Kernel WireGuard drops its sessions when the device goes down (wireguard-go keeps them): B
    // starts the handshake, as after the recreate below (A would keep sending on its old session,
    // which B can no longer decrypt, until its 15 s rekey).
    await run(b.ns, 'ping', ['-c', '1', '-W', '3', a.ip4]);
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, '9100', '3', '100', '42200']);
    await d.waitEvents((es) => es.some((e) => e.source.port === 42200 && e.type === 'END' && e.rxPackets === 3));

    await tb.recreateWg(b);
    // Reattached within a second of the new device appearing.
    await sleep(1000);
    // The new device has no session: let it start the handshake (A would wait for a rekey).
    await run(b.ns, 'ping', ['-c', '1', '-W', '3', a.ip4]);
    const st = JSON.parse(d.ctl(['status', '--json']).stdout) as { interfaces: Array<{ attached: boolean; ifindex: number }> };
    expect(st.interfaces[0].attached).toBe(true);
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]);
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, '9100', '4', '100', '42300']);
    const evs = await d.waitEvents((es) => es.some((e) => e.source.port === 42300 && e.type === 'END'));
    expect(evs.find((e) => e.source.port === 42300 && e.type === 'END')).toMatchObject({ rxPackets: 4, txPackets: 4 });
  });

  it('/metrics during traffic: values match the events, and promtool accepts them', async () => {
    await run(a.ns, 'node', [TRAFFIC, 'udp-client', b.ip4, '9100', '7', '300', '42400']);
    await d.waitEvents((es) => es.some((e) => e.source.port === 42400 && e.type === 'END'));
    await sleep(300);
    const text = d.metrics();
    const evs = d.events();
    const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
    // END totals minus UPDATE deltas per flow = every byte reported; interim updates are off here.
    const ends = evs.filter((e) => e.type === 'END');
    expect(value(/^wgflow_bytes_total\{direction="rx"\} (\d+)$/m)).toBe(ends.reduce((s, e) => s + e.rxBytes, 0));
    expect(value(/^wgflow_packets_total\{direction="tx"\} (\d+)$/m)).toBe(ends.reduce((s, e) => s + e.txPackets, 0));
    expect(value(/^wgflow_flow_events_total\{type="START"\} (\d+)$/m)).toBe(evs.filter((e) => e.type === 'START').length);
    expect(value(/^wgflow_kernel_byte_counting_enabled (\d+)$/m)).toBe(1);
    expect(value(new RegExp(`^wgflow_interface_attached\\{interface="${b.ifname}"\\} (\\d+)$`, 'm'))).toBe(1);
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);
  });

  it('SIGTERM: active flows get a forced END, and the daemon exits 0', async () => {
    const paced = spawnIn(a.ns, 'node', [TRAFFIC, 'udp-paced', b.ip4, '9100', '100', '100', '50']);
    await d.waitEvents((es) => es.some((e) => e.type === 'START' && e.destination.port === 9100 && e.source.port !== 42000 && !es.some((x) => x.flowId === e.flowId && x.type === 'END')));
    expect(await d.stop('SIGTERM')).toBe(0);
    paced.kill('SIGKILL');
    const evs = d.events();
    const open = evs.filter((e) => e.type === 'START' && !evs.some((x) => x.flowId === e.flowId && x.type === 'END'));
    expect(open).toEqual([]);
    expect(evs.some((e) => e.type === 'END' && e.endReason === 'forced')).toBe(true);
  });
});
