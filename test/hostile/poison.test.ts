// Poison records in the spool: a record whose CRC is valid but whose body is not a FlowEvent used
// to be resent for ever (the collector refuses the stream, the exporter reconnects and sends it
// again), and nothing behind it was delivered. It must be quarantined and the queue must go on.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeRecord, QUARANTINE_FILE, SEGMENT_HEADER_BYTES, walkRecords } from '../../src/output/spool';
import { eventIds, exactlyOnce, processSuite, senderDone, startCollector, startSender } from '../export/helpers';

const newDir = processSuite();

/** Poison: CRC-valid records that are not sendable events. */
function poison(): Buffer[] {
  const id = Buffer.alloc(16, 0xab);
  return [
    encodeRecord(id, Buffer.alloc(40, 0xff)), // not protobuf at all
    encodeRecord(id, Buffer.from([0x28, 0x01])), // an initiator message
    encodeRecord(Buffer.alloc(16, 0xcd), Buffer.from([0x0a, 0x10, ...Buffer.alloc(16, 0x11)])), // protobuf, but no flow fields
  ];
}

/** Puts the poison records before the record at index `at` of the spool's first segment. */
function inject(spool: string, at: number): void {
  const seg = readdirSync(spool).filter((n) => n.endsWith('.seg')).sort()[0];
  const path = join(spool, seg);
  const buf = readFileSync(path);
  const offsets: number[] = [];
  walkRecords(buf.subarray(SEGMENT_HEADER_BYTES), SEGMENT_HEADER_BYTES, true, (off) => {
    offsets.push(off);
  });
  const cut = offsets[at];
  writeFileSync(path, Buffer.concat([buf.subarray(0, cut), ...poison(), buf.subarray(cut)]));
}

describe('hostile: poison spool records', () => {
  for (const transport of ['http2', 'grpc-js'] as const) {
    it(`are quarantined and everything behind them is delivered (${transport})`, async () => {
      const spool = newDir('poison-spool');
      const out = newDir('poison-out');
      const N = 500;
      const seed = `poison-${transport}`;
      const first = startSender({ collector: 'grpc://127.0.0.1:1', spool, count: N, seed, extra: ['--exit-after-enqueue'] });
      await senderDone(first);
      inject(spool, 10);
      const c = await startCollector(out);
      const s = startSender({ collector: c.url, spool, count: 0, seed, extra: ['--transport', transport, '--timeout-ms', '30000'] });
      const done = await senderDone(s, 45_000);
      expect(done).toMatchObject({ ok: true, acked: N, quarantined: 3, dropped: 0 });
      expect(exactlyOnce(out, eventIds(seed, N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
      // The records are kept for inspection, byte for byte.
      expect(readFileSync(join(spool, QUARANTINE_FILE)).equals(Buffer.concat(poison()))).toBe(true);
      expect(s.json('stderr').some((o) => String(o.msg).startsWith('spool record is not a valid event'))).toBe(true);
      await c.proc.kill('SIGTERM');
    }, 90_000);
  }
});
