// Exporter.enqueueBatch into the spool: what lands there, and a bad event refusing its whole batch.
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { CodecError } from '../../src/export/codec';
import { Exporter } from '../../src/export/grpc-exporter';
import { recordId, Spool, SpoolRecord } from '../../src/export/spool';
import { syntheticEvent } from '../../src/export/synthetic';
import { writeFlowEvent } from '../../src/export/wire-writer';
import { cleanup, tmpDir } from './helpers';

const dirs: string[] = [];
afterAll(() => cleanup(...dirs));

function drain(s: Spool): SpoolRecord[] {
  const out: SpoolRecord[] = [];
  for (let r = s.next(100); r.length > 0; r = s.next(100)) out.push(...r);
  return out;
}

describe('Exporter.enqueueBatch', () => {
  it('spools each event as writeFlowEvent encodes it, under its id; a bad event appends nothing of its batch', async () => {
    const dir = tmpDir('enqueue');
    dirs.push(dir);
    // Never started: nothing is sent, everything stays in the spool.
    const ex = new Exporter({ url: 'grpc://127.0.0.1:1', spool: { dir, segmentBytes: 64 * 1024 }, logger: pino({ level: 'silent' }) });
    const events = Array.from({ length: 3000 }, (_, i) => syntheticEvent('enqueue', i));
    ex.enqueueBatch(events.slice(0, 1000));
    const bytes = ex.stats().spoolBytes;
    const bad = events.slice(1000, 1700).map((ev, k) => (k === 650 ? { ...ev, destination: { ...ev.destination, ip: '10.0.0.300' } } : ev));
    expect(() => ex.enqueueBatch(bad)).toThrow(CodecError);
    expect(() => ex.enqueueBatch(bad)).toThrow('destination.ip');
    expect(ex.stats()).toMatchObject({ queued: 1000, spoolBytes: bytes });
    ex.enqueueBatch(events.slice(1000, 2000));
    for (const ev of events.slice(2000)) ex.enqueue(ev);
    expect(ex.stats().queued).toBe(3000);
    await ex.stop({ deadlineMs: 0 });
    const s = Spool.open({ dir });
    const got = drain(s);
    s.close();
    expect(got.length).toBe(3000);
    const mismatched = got.filter((r, i) => {
      const want = writeFlowEvent(events[i]);
      return !r.payload.equals(want) || !recordId(r).equals(want.subarray(2, 18));
    });
    expect(mismatched.length).toBe(0);
  });
});
