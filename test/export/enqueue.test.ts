// Exporter.enqueueBatch into the spool: what lands there, and a bad event left out of its batch
// without harming the others (it used to take its whole batch down).
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { Exporter } from '../../src/output/grpc/exporter';
import { recordId, Spool, SpoolRecord } from '../../src/output/spool';
import { syntheticEvent } from '../../testkit/synthetic';
import { writeFlowEvent } from '../../src/wire/writer';
import { cleanup, tmpDir } from './helpers';

const dirs: string[] = [];
afterAll(() => cleanup(...dirs));

function drain(s: Spool): SpoolRecord[] {
  const out: SpoolRecord[] = [];
  for (let r = s.next(100); r.length > 0; r = s.next(100)) out.push(...r);
  return out;
}

describe('Exporter.enqueueBatch', () => {
  it('spools each event as writeFlowEvent encodes it, under its id; a bad event is left out and counted, the rest of its batch is spooled', async () => {
    const dir = tmpDir('enqueue');
    dirs.push(dir);
    // Never started: nothing is sent, everything stays in the spool.
    const ex = new Exporter({ url: 'grpc://127.0.0.1:1', spool: { dir, segmentBytes: 64 * 1024 }, logger: pino({ level: 'silent' }) });
    const events = Array.from({ length: 3000 }, (_, i) => syntheticEvent('enqueue', i));
    ex.enqueueBatch(events.slice(0, 1000));
    const bytes = ex.stats().spoolBytes;
    const bad = (ev: (typeof events)[number]): (typeof events)[number] => ({ ...ev, destination: { ...ev.destination, ip: '10.0.0.300' } });
    // Bad events first, in the middle and last of a batch (the last one needs a larger chunk too).
    const batch = events.slice(1000, 2000).map((ev, k) => (k === 0 || k === 650 || k === 999 ? bad(ev) : ev));
    expect(ex.enqueueBatch(batch)).toBe(997);
    expect(ex.stats()).toMatchObject({ queued: 1997, badEvents: 3 });
    expect(ex.stats().spoolBytes).toBeGreaterThan(bytes);
    expect(ex.enqueueBatch([bad(events[0])])).toBe(0);
    for (const ev of events.slice(2000)) ex.enqueue(ev);
    expect(ex.stats()).toMatchObject({ queued: 2997, badEvents: 4 });
    await ex.stop({ deadlineMs: 0 });
    const s = Spool.open({ dir });
    const got = drain(s);
    s.close();
    const expected = events.filter((_, i) => !(i === 1000 || i === 1650 || i === 1999));
    expect(got.length).toBe(expected.length);
    const mismatched = got.filter((r, i) => {
      const want = writeFlowEvent(expected[i]);
      return !r.payload.equals(want) || !recordId(r).equals(want.subarray(2, 18));
    });
    expect(mismatched.length).toBe(0);
  });
});
