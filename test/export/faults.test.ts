// Fault injection with real processes: every event must end up in the collector's output exactly
// once (or, for a damaged spool, exactly the undamaged ones, with the damage counted).
import { readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, walkRecords } from '../../src/output/spool';
import { collectedCount, eventIds, exactlyOnce, processSuite, Proc, senderDone, startCollector, startSender } from './helpers';

const newDir = processSuite();
const ids = eventIds;
const clean = { missing: [], duplicated: [], unexpected: [] };

/** The sender's latest stats line. */
const lastStats = (p: Proc): Record<string, unknown> | undefined => p.json().filter((o) => o.event === 'stats').pop();
const ackedAtLeast = (p: Proc, n: number) => (): boolean => Number(lastStats(p)?.acked ?? 0) >= n;
/** A collector URL where nothing listens (port 1 on loopback refuses at once). */
const NOWHERE = 'grpc://127.0.0.1:1';

describe('faults', () => {
  it('collector SIGKILLed mid-stream and restarted: every event exactly once', async () => {
    const out = newDir('ck-out');
    const N = 20_000;
    let c = await startCollector(out);
    const s = startSender({ collector: c.url, spool: newDir('ck-spool'), count: N, seed: 'ck', extra: ['--rate', '8000'] });
    await s.waitFor(ackedAtLeast(s, 3000), '3000 acks before the kill');
    await c.proc.kill('SIGKILL');
    const atKill = collectedCount(out);
    expect(atKill).toBeLessThan(N);
    c = await startCollector(out, c.port);
    const done = await senderDone(s);
    expect(done).toMatchObject({ ok: true, dropped: 0 });
    expect(Number(done.reconnects)).toBeGreaterThanOrEqual(1);
    expect(exactlyOnce(out, ids('ck', N))).toEqual(clean);
    await c.proc.kill('SIGTERM');
  });

  it('collector paused (SIGSTOP) then resumed: every event exactly once', async () => {
    const out = newDir('cs-out');
    const N = 15_000;
    const c = await startCollector(out);
    const s = startSender({ collector: c.url, spool: newDir('cs-spool'), count: N, seed: 'cs', extra: ['--rate', '8000'] });
    await s.waitFor(ackedAtLeast(s, 2000), '2000 acks before the pause');
    c.proc.signal('SIGSTOP');
    const ackedAtStop = Number(lastStats(s)?.acked);
    // While it is stopped nothing is acked, and the sender keeps spooling.
    await new Promise((r) => setTimeout(r, 2000));
    const during = lastStats(s)!;
    expect(Number(during.acked)).toBeLessThan(ackedAtStop + 5000);
    expect(Number(during.inFlight) + Number(during.queued)).toBeGreaterThan(0);
    c.proc.signal('SIGCONT');
    const done = await senderDone(s);
    expect(done).toMatchObject({ ok: true, acked: N, dropped: 0 });
    expect(exactlyOnce(out, ids('cs', N))).toEqual(clean);
    await c.proc.kill('SIGTERM');
  });

  it('exporter SIGKILLed mid-stream and restarted on the same spool: every event exactly once', async () => {
    const out = newDir('ek-out');
    const spool = newDir('ek-spool');
    // Kill while events are in flight, whatever the speed of the machine: the sender spools at a
    // paced 10,000/s; stop the collector once the stream carries acks (a fraction of N is
    // delivered by then), let the sender spool all N (its generator pauses only past 20,000
    // queued, so N = 20,000 always fits), kill it, then let the collector go on.
    const N = 20_000;
    const c = await startCollector(out);
    const s1 = startSender({ collector: c.url, spool, count: N, seed: 'ek', extra: ['--rate', '10000'] });
    await s1.waitFor(ackedAtLeast(s1, 1), 'the first ack');
    c.proc.signal('SIGSTOP');
    await s1.waitJson((o) => o.event === 'enqueued', 'all events spooled', 30_000);
    await s1.kill('SIGKILL');
    c.proc.signal('SIGCONT');
    await new Promise((r) => setTimeout(r, 300)); // the collector writes what it had read
    const atKill = collectedCount(out);
    expect(atKill).toBeLessThan(N);
    const s2 = startSender({ collector: c.url, spool, count: 0, seed: 'ek' });
    const done = await senderDone(s2);
    expect(done).toMatchObject({ ok: true, dropped: 0, corruptSkipped: 0 });
    expect(Number(done.acked)).toBeGreaterThanOrEqual(N - atKill);
    expect(exactlyOnce(out, ids('ek', N))).toEqual(clean);
    // Nothing left behind: the spool holds no segment once everything is acked.
    expect(readdirSync(spool).filter((n) => n.endsWith('.seg'))).toEqual([]);
    await c.proc.kill('SIGTERM');
  });

  it('a truncated segment (torn tail) and a bad checksum: the rest delivered, 2 skipped and counted', async () => {
    const spool = newDir('tr-spool');
    const N = 500;
    // Spool only (exit right after enqueueing; nothing is sent).
    const s1 = startSender({ collector: NOWHERE, spool, count: N, seed: 'tr', extra: ['--exit-after-enqueue'] });
    expect(await senderDone(s1)).toMatchObject({ ok: true });
    expect((await s1.exited).code).toBe(0);
    const segs = readdirSync(spool).filter((n) => n.endsWith('.seg'));
    expect(segs.length).toBe(1);
    const path = join(spool, segs[0]);
    const buf = readFileSync(path);
    const offsets: number[] = [];
    walkRecords(buf.subarray(SEGMENT_HEADER_BYTES), SEGMENT_HEADER_BYTES, true, (off) => {
      offsets.push(off);
    });
    expect(offsets.length).toBe(N);
    buf[offsets[123] + RECORD_HEADER_BYTES + 40] ^= 0x55; // bad checksum in record 123
    writeFileSync(path, buf);
    truncateSync(path, offsets[N - 1] + 25); // the last record torn in half
    const out = newDir('tr-out');
    const c = await startCollector(out);
    const s2 = startSender({ collector: c.url, spool, count: 0, seed: 'tr' });
    const done = await senderDone(s2);
    expect(done).toMatchObject({ ok: true, acked: N - 2, corruptSkipped: 2, dropped: 0 });
    expect(s2.stderr).toMatch(/corrupt or truncated records/);
    const expected = ids('tr', N).filter((_, i) => i !== 123 && i !== N - 1);
    expect(exactlyOnce(out, expected)).toEqual(clean);
    await c.proc.kill('SIGTERM');
  });

  it('spool full: the oldest events are dropped, counted and logged; the newest are delivered', async () => {
    const spool = newDir('full-spool');
    const N = 3000;
    const s1 = startSender({ collector: NOWHERE, spool, count: N, seed: 'full', extra: ['--exit-after-enqueue', '--spool-max', '256k', '--segment-size', '32k'] });
    const d1 = await senderDone(s1);
    const dropped = Number(d1.dropped);
    const kept = Number(d1.queued) + Number(d1.inFlight);
    expect(dropped).toBeGreaterThan(0);
    expect(dropped + kept).toBe(N);
    expect(Number(d1.spoolBytes)).toBeLessThanOrEqual(256 * 1024);
    expect(s1.stderr).toMatch(/spool full: dropped the oldest unacknowledged events/);
    const out = newDir('full-out');
    const c = await startCollector(out);
    const s2 = startSender({ collector: c.url, spool, count: 0, seed: 'full', extra: ['--spool-max', '256k', '--segment-size', '32k'] });
    expect(await senderDone(s2)).toMatchObject({ ok: true, acked: kept });
    expect(exactlyOnce(out, ids('full', kept, N - kept))).toEqual(clean);
    await c.proc.kill('SIGTERM');
  });
});
