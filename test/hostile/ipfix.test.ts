// IPFIX export against collectors that are not there: a port nobody listens on (the ICMP port
// unreachable must be counted, by kind, in the stats and in /metrics, logged rate-limited, and a
// collector started later must get templates and data), and a host name that never resolves
// (resolved on a schedule, not per message; the log stays bounded however many messages are tried).
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createSocket, Socket } from 'node:dgram';
import pino, { Logger } from 'pino';
import { IpfixExporter } from '../../src/output/ipfix/exporter';
import { Metrics } from '../../src/metrics/metrics';
import { syntheticEvent } from '../../testkit/synthetic';
import type { FlowEvent } from '../../src/model/event';
import { readFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Testbed } from '../../testkit/testbed';
import { describePrivileged, killBackground, run, sleep, spawnIn, waitForLine } from '../helpers/env';
import { DaemonProc, TRAFFIC } from '../helpers/daemon';

interface LogLine { level: number; msg: string; [k: string]: unknown }

/** A pino logger whose lines are kept in memory. */
function memoryLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { logger, lines };
}

/** A UDP port on 127.0.0.1 that was free a moment ago and has no listener now. */
async function deadPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Events that produce data records (UPDATE and END of synthetic flows, their START first). */
function batch(seed: string, n: number): FlowEvent[] {
  return Array.from({ length: n }, (_, i) => syntheticEvent(seed, i));
}

/** The set ids of one IPFIX message. */
function setIds(msg: Buffer): number[] {
  const ids: number[] = [];
  for (let o = 16; o + 4 <= msg.length; o += msg.readUInt16BE(o + 2)) {
    ids.push(msg.readUInt16BE(o));
    if (msg.readUInt16BE(o + 2) < 4) break;
  }
  return ids;
}

const open: Array<{ close: () => unknown }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

describe('IPFIX to a port with no listener', () => {
  it('counts the refusals by kind (stats and /metrics), logs them rate-limited, and a collector started later gets templates and data', async () => {
    const port = await deadPort();
    const { logger, lines } = memoryLogger();
    const x = new IpfixExporter({ targets: [`udp://127.0.0.1:${port}`], templateRefreshMs: 200, logger });
    open.push({ close: () => x.stop() });
    x.start();
    for (let i = 0; i < 40; i++) {
      x.export(batch(`dead-${i}`, 8));
      await sleep(10);
    }
    await sleep(50);
    const s = x.stats();
    expect(s.errors.refused).toBeGreaterThanOrEqual(20);
    expect(s.sendErrors).toBe(Object.values(s.errors).reduce((a, b) => a + b, 0));
    const warned = lines.filter((l) => l.level >= 40);
    expect(warned.length).toBeGreaterThanOrEqual(1);
    expect(warned.length).toBeLessThanOrEqual(2);
    expect(warned[0]).toMatchObject({ kind: 'refused', target: `udp://127.0.0.1:${port}` });

    const m = new Metrics();
    m.bind({ ipfix: () => x.stats() });
    const text = await m.registry.metrics();
    expect(text).toContain(`wgflow_ipfix_send_errors_total{kind="refused"} ${s.errors.refused}`);
    expect(text).toContain('wgflow_ipfix_send_errors_total{kind="unresolved"} 0');
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);

    // A collector appears on that port: the exporter keeps sending, templates come on their schedule.
    const got: Buffer[] = [];
    const col: Socket = createSocket('udp4');
    open.push({ close: () => new Promise<void>((r) => col.close(() => r())) });
    col.on('message', (msg) => got.push(msg));
    await new Promise<void>((r) => col.bind(port, '127.0.0.1', () => r()));
    const refusedBefore = x.stats().errors.refused;
    for (let i = 0; i < 40; i++) {
      x.export(batch(`alive-${i}`, 8));
      await sleep(10);
    }
    await sleep(100);
    const ids = got.flatMap(setIds);
    expect(ids).toContain(2); // a template set
    expect(ids.some((id) => id === 256 || id === 257)).toBe(true); // data records
    expect(x.stats().errors.refused).toBeLessThanOrEqual(refusedBefore + 1); // at most one refusal in flight
  });
});

describe('IPFIX to a host name that does not resolve', () => {
  it('does not crash, resolves on a schedule, counts the dropped messages, and logs a bounded number of lines', async () => {
    const { logger, lines } = memoryLogger();
    const got: Buffer[] = [];
    const col: Socket = createSocket('udp4');
    open.push({ close: () => new Promise<void>((r) => col.close(() => r())) });
    col.on('message', (msg) => got.push(msg));
    await new Promise<void>((r) => col.bind(0, '127.0.0.1', () => r()));
    const bad = 'udp://collector.wgflow.invalid:4739';
    const x = new IpfixExporter({ targets: [bad, `udp://127.0.0.1:${col.address().port}`], logger });
    open.push({ close: () => x.stop() });
    x.start();
    for (let i = 0; i < 100; i++) {
      x.export(batch(`nx-${i}`, 8));
      if (i % 10 === 0) await sleep(20);
    }
    await sleep(200);
    // Both targets were given the same messages: what the good one received, the bad one dropped.
    const s = x.stats();
    expect(got.length).toBeGreaterThanOrEqual(100);
    expect(s.errors.unresolved).toBe(got.length);
    expect(s.sendErrors).toBe(got.length);
    const about = lines.filter((l) => l.level >= 40 && l.target === bad);
    expect(about.length).toBeGreaterThanOrEqual(1);
    expect(about.length).toBeLessThanOrEqual(2);
    // The other target is not held up by the bad one.
    expect(got.flatMap(setIds).some((id) => id === 256 || id === 257)).toBe(true);
  });

  it('a name that starts resolving later is picked up by the retry schedule, with one lookup per retry, not per message', async () => {
    const got: Buffer[] = [];
    const col: Socket = createSocket('udp4');
    open.push({ close: () => new Promise<void>((r) => col.close(() => r())) });
    col.on('message', (msg) => got.push(msg));
    await new Promise<void>((r) => col.bind(0, '127.0.0.1', () => r()));
    let lookups = 0;
    let resolvable = false;
    const lookup = async (host: string): Promise<{ address: string; family: 4 | 6 }> => {
      lookups++;
      if (!resolvable || host !== 'collector.example') throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      return { address: '127.0.0.1', family: 4 };
    };
    const x = new IpfixExporter({ targets: [`udp://collector.example:${col.address().port}`], lookup, resolveRetryMs: 100 });
    open.push({ close: () => x.stop() });
    x.start();
    for (let i = 0; i < 30; i++) {
      x.export(batch(`later-${i}`, 8));
      await sleep(10);
    }
    expect(got).toEqual([]);
    expect(lookups).toBeLessThanOrEqual(4); // at start, then 100 ms, 200 ms (backoff)
    resolvable = true;
    for (let i = 0; i < 100 && got.length === 0; i++) {
      x.export(batch(`later-b-${i}`, 8));
      await sleep(20);
    }
    expect(got.length).toBeGreaterThan(0);
    x.export(batch('later-c', 8));
    await sleep(100);
    const ids = got.flatMap(setIds);
    // Templates go out at once on resolution (before any data), then data.
    expect(setIds(got[0])).toContain(2);
    expect(ids.some((id) => id === 256 || id === 257)).toBe(true);
    expect(x.stats().errors.unresolved).toBeGreaterThan(0);
  });
});

/** wgflow_ipfix_send_errors_total{kind="..."} from a /metrics text. */
function ipfixErrors(text: string, kind: string): number {
  const m = new RegExp(`^wgflow_ipfix_send_errors_total\\{kind="${kind}"\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

describePrivileged('the daemon with IPFIX collectors that are not there', () => {
  let tb: Testbed;
  let d: DaemonProc | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'wgflow-hostile-ipfix-'));

  afterAll(async () => {
    await d?.stop('SIGKILL');
    d?.cleanup();
    await killBackground();
    await tb?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts with a name that does not resolve and a port nobody listens on, counts both, logs little, and delivers once a collector listens', async () => {
    tb = new Testbed();
    const { a, b } = tb.wgPair();
    const bad = 'udp://collector.wgflow.invalid:4739';
    d = await DaemonProc.start(b.ns, {
      interfaces: [b.ifname],
      ipfix: [bad, 'udp://127.0.0.1:4741'],
      ipfix_template_refresh_s: 1,
      lifecycle: { udp_timeout_s: 1, icmp_timeout_s: 1, interim_interval_s: 1 },
    });
    for (let i = 0; i < 5; i++) await run(a.ns, 'ping', ['-c', '3', '-i', '0.2', b.ip4]);
    await sleep(2500);
    const text = d.metrics();
    expect(ipfixErrors(text, 'refused')).toBeGreaterThan(0);
    expect(ipfixErrors(text, 'unresolved')).toBeGreaterThan(0);
    expect(d.child.exitCode).toBeNull();
    expect(d.ctl(['status']).stdout).toMatch(/ipfix: .* send errors \(refused \d+, unresolved \d+\)/);
    const warnings = d.log.split('\n').filter((l) => l.includes('"part":"ipfix"') && /"level":(40|50)/.test(l));
    expect(warnings.length).toBeGreaterThanOrEqual(2); // one per target and kind
    expect(warnings.length).toBeLessThanOrEqual(4);

    // A collector appears on the port: templates on their schedule, then the data of new flows.
    const file = join(dir, 'stream.ipfix');
    const sink = spawnIn(b.ns, 'node', [TRAFFIC, 'udp-sink', '127.0.0.1', '4741', file]);
    await waitForLine(sink, /ready/);
    await sleep(1500);
    await run(a.ns, 'ping', ['-c', '3', '-i', '0.2', b.ip4]);
    await sleep(3000);
    expect(existsSync(file)).toBe(true);
    const stream = readFileSync(file);
    const ids: number[] = [];
    for (let o = 0; o + 16 <= stream.length; o += stream.readUInt16BE(o + 2)) {
      ids.push(...setIds(stream.subarray(o, o + stream.readUInt16BE(o + 2))));
      if (stream.readUInt16BE(o + 2) < 16) break;
    }
    expect(ids).toContain(2);
    expect(ids).toContain(256);
    expect(d.child.exitCode).toBeNull();
  });
});
