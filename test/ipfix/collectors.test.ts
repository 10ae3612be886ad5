// IPFIX against real collectors (Debian packages): nfcapd/nfdump must show exactly the flows,
// bytes and packets we reported, and libfixbuf's strict ipfixDump must read the captured stream
// without a warning, naming the enterprise fields from the RFC 5610 records.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createSocket, Socket } from 'node:dgram';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { IpfixExporter } from '../../src/output/ipfix/exporter';
import { FlowEvent } from '../../src/model/event';
import { syntheticEvent } from '../../testkit/synthetic';
import { killBackground, sleep, spawnIn } from '../helpers/procs';

interface Counters { rxBytes: number; rxPackets: number; txBytes: number; txPackets: number }

/** START, two UPDATEs and an END for one flow; the END carries the totals. */
function flowEvents(o: { v6?: boolean; proto: number; src: string; dst: string; sport?: number; dport?: number; icmpType?: number; direction: 'INGRESS' | 'EGRESS'; updates: Counters[]; rest: Counters }): FlowEvent[] {
  const base = syntheticEvent('ipfix', 1);
  const flowId = randomUUID();
  const t0 = Date.now() - 60_000;
  const mk = (type: FlowEvent['type'], c: Counters, at: number, from: number): FlowEvent => ({
    ...base, eventId: randomUUID(), flowId, type, protocol: o.proto, direction: o.direction, timestampMs: at,
    source: { ...base.source, ip: o.src, port: o.sport ?? 0 },
    destination: { ...base.destination, ip: o.dst, port: o.dport ?? 0, type: 'SUBNET_RESOURCE', id: 'res-db', name: 'database subnet' },
    icmpType: o.icmpType ?? 0, icmpCode: 0, ruleId: 'pol-1', policyName: 'admins to db',
    ...c, windowStartMs: from, windowEndMs: at, endReason: type === 'END' ? 'tcp_fin' : undefined,
  });
  const zero = { rxBytes: 0, rxPackets: 0, txBytes: 0, txPackets: 0 };
  const events = [mk('START', zero, t0, t0)];
  let at = t0;
  const total = { ...o.rest };
  for (const u of o.updates) {
    events.push(mk('UPDATE', u, at + 10_000, at));
    at += 10_000;
    total.rxBytes += u.rxBytes; total.rxPackets += u.rxPackets; total.txBytes += u.txBytes; total.txPackets += u.txPackets;
  }
  events.push(mk('END', total, at + 5_000, t0));
  return events;
}

/** Two DROP events: netfilter drops coming in (IPv4), NO_SOCKET drops going out (IPv6). */
function dropEvents(): FlowEvent[] {
  const base = syntheticEvent('ipfix', 3);
  const t = Date.now() - 30_000;
  const mk = (o: Partial<FlowEvent>): FlowEvent => ({
    ...base, eventId: randomUUID(), flowId: randomUUID(), type: 'DROP', timestampMs: t, windowStartMs: t, windowEndMs: t + 900,
    icmpType: 0, icmpCode: 0, endReason: undefined, rxBytes: 0, rxPackets: 0, txBytes: 0, txPackets: 0, ...o,
  });
  return [
    mk({ protocol: 17, direction: 'INGRESS', source: { ...base.source, ip: '100.64.9.9', port: 40001 }, destination: { ...base.destination, ip: '10.1.0.7', port: 9999 },
      rxPackets: 40, rxBytes: 9120, ruleId: 'pol-deny', policyName: 'no udp 9999', dropReason: 'NETFILTER_DROP' }),
    mk({ protocol: 6, direction: 'EGRESS', source: { ...base.source, ip: 'fd00:1::7', port: 443 }, destination: { ...base.destination, ip: 'fd00:64::9', port: 50000 },
      txPackets: 3, txBytes: 180, ruleId: '', policyName: '', dropReason: 'NO_SOCKET' }),
  ];
}

interface NfFlow { in_bytes: number; in_packets: number; proto: number; src_port?: number; dst_port?: number; src4_addr?: string; dst4_addr?: string; src6_addr?: string; dst6_addr?: string; icmp_type?: number }

describe('IPFIX export read by nfdump and ipfixDump', () => {
  let dir: string;
  let capture: Socket;
  const capFile = (): string => join(dir, 'stream.ipfix');
  const nfPort = 40000 + (process.pid % 10000);
  let capPort = 0;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'wgflow-ipfix-'));
    // An independent witness: every datagram, as received, appended to a file ipfixDump can read.
    capture = createSocket('udp4');
    capture.on('message', (m) => appendFileSync(capFile(), m));
    await new Promise<void>((r) => capture.bind(0, '127.0.0.1', () => r()));
    capPort = capture.address().port;
  });

  afterAll(async () => {
    capture?.close();
    await killBackground();
    rmSync(dir, { recursive: true, force: true });
  });

  it('nfdump shows every flow with its bytes and packets per direction; interim deltas add up to the END totals', async () => {
    const nfDir = join(dir, 'nfcapd');
    spawnSync('mkdir', ['-p', nfDir]);
    const nfcapd = spawnIn(null, 'nfcapd', ['-b', '127.0.0.1', '-p', String(nfPort), '-w', nfDir, '-t', '3600']);
    for (let i = 0; i < 50; i++) {
      if (spawnSync('ss', ['-lun']).stdout.toString().includes(`:${nfPort} `)) break;
      await sleep(50);
    }
    const x = new IpfixExporter({ targets: [`udp://127.0.0.1:${nfPort}`, `udp://127.0.0.1:${capPort}`], mtu: 600 });
    x.start();
    const flows = [
      flowEvents({ proto: 6, src: '100.64.0.2', dst: '10.1.0.5', sport: 40000, dport: 443, direction: 'INGRESS',
        updates: [{ rxBytes: 1000, rxPackets: 10, txBytes: 500, txPackets: 5 }, { rxBytes: 2000, rxPackets: 20, txBytes: 700, txPackets: 7 }],
        rest: { rxBytes: 300, rxPackets: 3, txBytes: 100, txPackets: 1 } }),
      flowEvents({ proto: 17, src: 'fd00:64::2', dst: 'fd00:1::9', sport: 5353, dport: 53, direction: 'EGRESS',
        updates: [{ rxBytes: 4000, rxPackets: 4, txBytes: 800, txPackets: 8 }], rest: { rxBytes: 0, rxPackets: 0, txBytes: 80, txPackets: 1 } }),
      flowEvents({ proto: 1, src: '100.64.0.3', dst: '10.1.0.6', icmpType: 8, direction: 'INGRESS',
        updates: [], rest: { rxBytes: 420, rxPackets: 5, txBytes: 420, txPackets: 5 } }),
    ];
    // Interleave the flows' events as a daemon would emit them.
    const all = flows.flatMap((f) => f.map((e, i) => ({ e, i }))).sort((a, b) => a.i - b.i).map((x) => x.e);
    x.export([...all, ...dropEvents()]);
    await sleep(300);
    await x.stop();
    nfcapd.kill('SIGTERM');
    await new Promise((r) => nfcapd.once('exit', r));

    const out = spawnSync('nfdump', ['-R', nfDir, '-o', 'json'], { encoding: 'utf8' });
    expect(out.status, out.stderr).toBe(0);
    const got = JSON.parse(out.stdout) as NfFlow[];
    const sum = (pred: (f: NfFlow) => boolean) => got.filter(pred).reduce((s, f) => ({ bytes: s.bytes + f.in_bytes, packets: s.packets + f.in_packets }), { bytes: 0, packets: 0 });
    // TCP, INGRESS: initiator -> responder carries rx.
    expect(sum((f) => f.src4_addr === '100.64.0.2' && f.src_port === 40000)).toEqual({ bytes: 3300, packets: 33 });
    expect(sum((f) => f.src4_addr === '10.1.0.5' && f.dst_port === 40000)).toEqual({ bytes: 1300, packets: 13 });
    // UDP over IPv6, EGRESS: initiator -> responder carries tx.
    expect(sum((f) => f.src6_addr === 'fd00:64::2')).toEqual({ bytes: 880, packets: 9 });
    expect(sum((f) => f.src6_addr === 'fd00:1::9')).toEqual({ bytes: 4000, packets: 4 });
    // ICMP echo: both directions.
    expect(sum((f) => f.proto === 1 && f.src4_addr === '100.64.0.3')).toEqual({ bytes: 420, packets: 5 });
    expect(sum((f) => f.proto === 1 && f.src4_addr === '10.1.0.6')).toEqual({ bytes: 420, packets: 5 });
    // Two records (one per direction) for each of the TCP flow's three reports.
    expect(got.filter((f) => f.proto === 6 && f.src6_addr !== 'fd00:1::7')).toHaveLength(6);
    // nfdump 1.7 lists the DROP records (addresses, ports, times) but does not decode the dropped
    // counters: it shows them as carrying nothing, so dropped traffic never inflates its totals.
    // ipfixDump reads them below.
    expect(sum((f) => f.src4_addr === '100.64.9.9' && f.dst_port === 9999)).toEqual({ bytes: 0, packets: 0 });
    expect(got.filter((f) => f.src4_addr === '100.64.9.9' || f.src6_addr === 'fd00:1::7')).toHaveLength(2);
    expect(x.stats().sendErrors).toBe(0);
  });

  it('ipfixDump --rfc5610 reads the captured stream without a warning and names the enterprise fields', () => {
    const r = spawnSync('ipfixDump', ['--rfc5610', '-i', capFile()], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    // libfixbuf reports sequence gaps, bad sets and unknown templates on stderr (checked empty above).
    expect(r.stdout).toMatch(/\*\*\* File Stats: \d+ Messages, \d+ Data Records, 5 Template Records \*\*\*/); // flows and drops, IPv4 and IPv6, and the RFC 5610 options template
    for (const name of ['wgflowResourceId', 'wgflowPolicyName', 'octetDeltaCount', 'flowEndReason', 'interfaceName']) expect(r.stdout).toContain(name);
    expect(r.stdout).toContain('database subnet');
    expect(r.stdout).toContain('admins to db');
    // The DROP records, field by field: dropped counters, forwardingStatus (129: dropped, ACL
    // deny; 141: dropped, for us), the reason and the deny policy.
    const records = r.stdout.split("--- data record").filter((rec) => /\tcount: \d+\s+tid:\s+(259|260) /.test(rec));
    expect(records).toHaveLength(2);
    const field = (rec: string, name: string): string => new RegExp(`\\s${name} : (?:\\(len: \\d+\\) )?(.*)`).exec(rec)?.[1] ?? '';
    const v4 = records.find((rec) => rec.includes('100.64.9.9'))!, v6 = records.find((rec) => rec.includes('fd00:0001::0007'))!; // ipfixDump writes every group
    expect([field(v4, 'droppedPacketDeltaCount'), field(v4, 'droppedOctetDeltaCount'), field(v4, 'forwardingStatus'), field(v4, 'wgflowDropReason'), field(v4, 'wgflowPolicyId'), field(v4, 'flowDirection')])
      .toEqual(['40', '9120', '129', 'NETFILTER_DROP', 'pol-deny', '0']);
    expect([field(v6, 'droppedPacketDeltaCount'), field(v6, 'droppedOctetDeltaCount'), field(v6, 'forwardingStatus'), field(v6, 'wgflowDropReason'), field(v6, 'flowDirection')])
      .toEqual(['3', '180', '141', 'NO_SOCKET', '1']);
  });
});
