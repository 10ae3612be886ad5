// The collector's output disk fills up, then frees: every event must be written exactly once, and
// the exporter must recover by itself on both transports. Before the fix the collector acked
// resends of events it had never written (their ids were left in the de-duplication set), and the
// http2 exporter hung after the collector ended its stream with an error.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import pino from 'pino';
import { expect, it } from 'vitest';
import { Exporter } from '../../src/output/grpc/exporter';
import { syntheticEvent } from '../../testkit/synthetic';
import { describePrivileged } from '../helpers/env';
import { eventIds, exactlyOnce, processSuite, Proc, senderDone, startCollector, startSender } from '../export/helpers';

const newDir = processSuite();

/** A small tmpfs: a real filesystem that runs out of space. Unmounted by the returned function. */
function smallDisk(bytes: number): { dir: string; unmount: () => void } {
  const dir = newDir('full');
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
  return {
    dir,
    unmount: () => {
      try {
        execFileSync('umount', ['-l', dir]);
      } catch {
        // Already unmounted.
      }
    },
  };
}

/** Fills the filesystem of dir until writing fails (ENOSPC), leaving about `leave` bytes. */
function fill(path: string, free: number, leave: number): void {
  writeFileSync(path, Buffer.alloc(Math.max(0, free - leave)));
}

function freeBytes(dir: string): number {
  const out = execFileSync('df', ['-B1', '--output=avail', dir], { encoding: 'utf8' }).trim().split('\n').pop() ?? '0';
  return Number(out.trim());
}

const stats = (p: Proc): Array<Record<string, unknown>> => p.json().filter((o) => o.event === 'stats');

describePrivileged('hostile: collector output disk full', () => {
  for (const transport of ['http2', 'grpc-js'] as const) {
    it(`fills then frees: every event exactly once, the ${transport} exporter recovers by itself`, async () => {
      const disk = smallDisk(4 * 1024 * 1024);
      try {
        const out = `${disk.dir}/out`;
        mkdirSync(out);
        const filler = `${disk.dir}/filler`;
        const c = await startCollector(out);
        const N = 3000;
        // Room for a few hundred lines only: the disk fills while the sender is mid-stream.
        fill(filler, freeBytes(disk.dir), 128 * 1024);
        const seed = `full-${transport}`;
        const s = startSender({ collector: c.url, spool: newDir('full-spool'), count: N, seed, extra: ['--rate', '3000', '--transport', transport] });
        await c.proc.waitJson((o) => o.msg === 'writing events failed; not acknowledging them', 'a failed commit', 30_000, 'stderr');
        // Stay full through several resends (each is refused again), then free the disk.
        await s.waitFor(() => (stats(s).pop()?.reconnects as number) >= 2, 'two reconnects while the disk is full', 30_000);
        const ackedWhileFull = Number(stats(s).pop()?.acked);
        expect(ackedWhileFull).toBeLessThan(N);
        rmSync(filler);
        const done = await senderDone(s, 60_000);
        expect(done).toMatchObject({ ok: true, acked: N, dropped: 0 });
        expect(exactlyOnce(out, eventIds(seed, N))).toEqual({ missing: [], duplicated: [], unexpected: [] });
        await c.proc.kill('SIGTERM');
        const final = c.proc.json('stderr').find((o) => o.msg === 'stopped');
        expect(final).toBeDefined();
        expect(final!.written).toBe(N);
        expect(Number(final!.commitFailures)).toBeGreaterThan(0);
      } finally {
        disk.unmount();
      }
    }, 120_000);
  }

  it('a full spool disk says which file and why, and keeps what was spooled before', async () => {
    const disk = smallDisk(1024 * 1024);
    try {
      const ex = new Exporter({ url: 'grpc://127.0.0.1:1', spool: { dir: `${disk.dir}/spool`, segmentBytes: 64 * 1024, maxBytes: 64 * 1024 * 1024 }, logger: pino({ level: 'silent' }) });
      let spooled = 0;
      let error: Error | null = null;
      for (let i = 0; i < 10_000 && error === null; i += 100) {
        try {
          spooled += ex.enqueueBatch(Array.from({ length: 100 }, (_, k) => syntheticEvent('spool-full', i + k)));
        } catch (err) {
          error = err as Error;
        }
      }
      expect(error?.message).toMatch(/(cannot append to spool segment .*\/spool\/\d{16}\.seg|cannot start a new spool segment in .*\/spool): the disk is full \(ENOSPC\); \d+ event\(s\) of this batch were not spooled/);
      expect(ex.stats().queued).toBeGreaterThanOrEqual(spooled);
      await ex.stop({ deadlineMs: 0 });
    } finally {
      disk.unmount();
    }
  });
});

describePrivileged('hostile: the daemon output disk full', () => {
  it('a writer in retry mode keeps its lines through a full disk and writes each exactly once when it frees', async () => {
    const { JsonlWriter } = await import('../../src/output/jsonl-writer');
    const disk = smallDisk(1024 * 1024);
    try {
      const filler = `${disk.dir}/filler`;
      fill(filler, freeBytes(disk.dir), 64 * 1024);
      const w = JsonlWriter.open({ dir: `${disk.dir}/out`, rotateBytes: 256 * 1024, retryMs: 50 });
      const N = 5000;
      let durable = 0;
      for (let i = 0; i < N; i++) {
        w.append(JSON.stringify({ id: `line-${i}`, pad: 'x'.repeat(80) }));
        if (i % 500 === 499) {
          w.afterCommit((err) => {
            if (err === null) durable = i + 1;
          });
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      await new Promise((r) => setTimeout(r, 300));
      expect(durable).toBeLessThan(N); // the disk is full: not everything can be on it
      rmSync(filler);
      await w.close();
      const { listEventFiles } = await import('../../src/output/jsonl-writer');
      const { readFileSync } = await import('node:fs');
      const ids = listEventFiles(`${disk.dir}/out`).flatMap((f) => readFileSync(f, 'utf8').split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { id: string }).id));
      expect(ids).toEqual(Array.from({ length: N }, (_, i) => `line-${i}`));
    } finally {
      disk.unmount();
    }
  });
});
