// IPFIX from the daemon on real WireGuard traffic: nfdump must show the same flows, bytes and
// packets as wgflow's own JSON events (both directions, IPv4 and IPv6, ICMP), interim reports
// must add up to the END totals there, and ipfixDump must read the captured stream cleanly.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Testbed, WgEndpoint } from '../../testkit/testbed';
import type { FlowEvent } from '../../src/model/event';
import { describePrivileged, killBackground, run, sleep, spawnIn, waitForLine } from '../helpers/env';
import { DaemonProc, TRAFFIC } from '../helpers/daemon';

interface NfFlow { in_bytes: number; in_packets: number; proto: number; src_port?: number; dst_port?: number; src4_addr?: string; dst4_addr?: string; src6_addr?: string; dst6_addr?: string }

describePrivileged('IPFIX export of real WireGuard traffic', () => {
  let tb: Testbed;
  let a: WgEndpoint, b: WgEndpoint;
  let d: DaemonProc;
  const dir = mkdtempSync(join(tmpdir(), 'wgflow-ipfix-wg-'));
  let events: FlowEvent[] = [];
  let nf: NfFlow[] = [];

  beforeAll(async () => {
    tb = new Testbed();
    ({ a, b } = tb.wgPair());
    const nfcapd = spawnIn(b.ns, 'nfcapd', ['-b', '127.0.0.1', '-p', '4739', '-w', dir, '-t', '3600']);
    const sink = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-sink', '127.0.0.1', '4740', join(dir, 'stream.ipfix')]);
    await waitForLine(sink, /ready/);
    await sleep(300);
    d = await DaemonProc.start(b.ns, {
      interfaces: [b.ifname],
      ipfix: ['udp://127.0.0.1:4739', 'udp://127.0.0.1:4740'],
      lifecycle: { udp_timeout_s: 2, icmp_timeout_s: 2, interim_interval_s: 2, tcp_close_grace_ms: 200 },
    });
    await run(a.ns, 'ping', ['-c', '1', '-W', '3', b.ip4]);
    const srv = spawnIn(b.ns, 'node', [TRAFFIC, 'tcp-server', '8080']);
    const echo = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-echo', '9000']);
    await waitForLine(srv, /ready/);
    await waitForLine(echo, /ready/);
    await run(a.ns, 'node', [TRAFFIC, 'tcp-client', b.ip4, '8080', String(1 << 20)]);
    await run(a.ns, 'ping', ['-c', '4', '-i', '0.2', b.ip4]);
    await run(a.ns, 'ping', ['-6', '-c', '3', '-i', '0.2', b.ip6]);
    // A long flow: 50 datagrams over 5 s, interim reports every 2 s.
    await run(a.ns, 'node', [TRAFFIC, 'udp-paced', b.ip6, '9000', '50', '300', '100'], 20_000);
    await d.waitEvents((es) => es.filter((e) => e.type === 'END').length >= 5);
    expect(await d.stop()).toBe(0); // ENDs for anything left, flushed to IPFIX
    events = d.events();
    await sleep(300);
    nfcapd.kill('SIGTERM');
    await new Promise((r) => nfcapd.once('exit', r));
    const out = spawnSync('nfdump', ['-R', dir, '-o', 'json'], { encoding: 'utf8' });
    if (out.status !== 0) throw new Error(`nfdump: ${out.stderr}`);
    nf = JSON.parse(out.stdout) as NfFlow[];
  });

  afterAll(async () => {
    d?.cleanup();
    await killBackground();
    await tb?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const sum = (pred: (f: NfFlow) => boolean): { bytes: number; packets: number } =>
    nf.filter(pred).reduce((s, f) => ({ bytes: s.bytes + f.in_bytes, packets: s.packets + f.in_packets }), { bytes: 0, packets: 0 });
  const src = (f: NfFlow): string | undefined => f.src4_addr ?? f.src6_addr;
  const dst = (f: NfFlow): string | undefined => f.dst4_addr ?? f.dst6_addr;

  it('every flow ended in the JSON events shows in nfdump with the same totals, both directions', () => {
    const ends = events.filter((e) => e.type === 'END');
    expect(ends.length).toBeGreaterThanOrEqual(5);
    // Group the events the way nfdump can tell flows apart: ICMP records carry no echo identifier,
    // so ICMP sessions between the same addresses add up into one.
    const groups = new Map<string, { e: FlowEvent; rx: [number, number]; tx: [number, number] }>();
    for (const e of ends) {
      const icmp = e.protocol === 1 || e.protocol === 58;
      const k = `${e.protocol} ${e.source.ip} ${e.destination.ip} ${icmp ? '' : `${e.source.port} ${e.destination.port}`}`;
      const g = groups.get(k) ?? { e, rx: [0, 0], tx: [0, 0] };
      g.rx = [g.rx[0] + e.rxBytes, g.rx[1] + e.rxPackets];
      g.tx = [g.tx[0] + e.txBytes, g.tx[1] + e.txPackets];
      groups.set(k, g);
      // On B every flow here came in over WireGuard: initiator -> responder is what B received.
      expect(e.direction).toBe('INGRESS');
    }
    for (const [flow, { e, rx, tx }] of groups) {
      const icmp = e.protocol === 1 || e.protocol === 58;
      const fwd = sum((f) => f.proto === e.protocol && src(f) === e.source.ip && dst(f) === e.destination.ip && (icmp || (f.src_port === e.source.port && f.dst_port === e.destination.port)));
      const rev = sum((f) => f.proto === e.protocol && src(f) === e.destination.ip && dst(f) === e.source.ip && (icmp || (f.src_port === e.destination.port && f.dst_port === e.source.port)));
      expect({ flow, fwd, rev }).toEqual({ flow, fwd: { bytes: rx[0], packets: rx[1] }, rev: { bytes: tx[0], packets: tx[1] } });
    }
    const kinds = new Set(ends.map((e) => `${e.protocol}/${e.source.ip.includes(':') ? 6 : 4}`));
    for (const k of ['6/4', '1/4', '58/6', '17/6']) expect(kinds).toContain(k);
  });

  it('the long UDP flow was reported in interim records that add up to its END totals', () => {
    const udp = events.filter((e) => e.protocol === 17 && e.destination.port === 9000);
    expect(udp.filter((e) => e.type === 'UPDATE').length).toBeGreaterThanOrEqual(2);
    const end = udp.find((e) => e.type === 'END')!;
    const recs = nf.filter((f) => f.proto === 17 && (f.dst_port === 9000 || f.src_port === 9000));
    expect(recs.length).toBeGreaterThanOrEqual(4); // several reports, two records each
    expect(sum((f) => f.proto === 17 && f.dst_port === 9000)).toEqual({ bytes: end.rxBytes, packets: end.rxPackets });
    expect(end.rxPackets).toBe(50);
  });

  it('ipfixDump --rfc5610 reads the captured stream without a warning', () => {
    const file = join(dir, 'stream.ipfix');
    expect(existsSync(file)).toBe(true);
    const r = spawnSync('ipfixDump', ['--rfc5610', '-i', file], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('wgflowPolicyId');
    expect(r.stdout).toContain(b.ifname);
  });
});
