// kill -9 of the exporter mid-publish, then a restart on the same spool: every event reaches the
// stream, and what the first run published but had not yet removed from the spool is sent again
// and absorbed by the stream's duplicate window (nothing stored twice).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectNats } from '../../src/wire/jetstream';
import { syntheticEvent } from '../../testkit/synthetic';
import { startNatsServer, type NatsCluster } from '../../testkit/nats';
import { budget } from '../../testkit/slow';
import { ensureBuilt, REPO } from '../export/helpers';

const TOOL = join(REPO, 'build', 'testkit', 'jetstream-tool.js');
let nats: NatsCluster;
const spool = mkdtempSync(join(tmpdir(), 'wgflow-js-crash-'));
const procs: ChildProcess[] = [];

beforeAll(async () => {
  ensureBuilt();
  nats = await startNatsServer();
});
afterAll(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await nats?.stop();
  rmSync(spool, { recursive: true, force: true });
});

/** Runs the publisher; resolves with its last stdout record when it exits, or kills it (SIGKILL) once acked >= killAt. */
function publisher(count: number, killAt?: number): Promise<{ signal: NodeJS.Signals | null; last: Record<string, unknown> }> {
  const p = spawn(process.execPath, [TOOL, 'publish', '--jetstream', nats.urls, '--spool', spool, '--count', String(count), '--seed', 'crash', '--batch', '200'], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(p);
  let out = '', err = '';
  let last: Record<string, unknown> = {};
  p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  p.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    const lines = out.split('\n');
    out = lines.pop() ?? '';
    for (const l of lines) {
      last = JSON.parse(l) as Record<string, unknown>;
      if (killAt !== undefined && typeof last.acked === 'number' && last.acked >= killAt && p.exitCode === null) p.kill('SIGKILL');
    }
  });
  const timer = setTimeout(() => p.kill('SIGKILL'), budget(45_000));
  return new Promise((resolve, reject) => p.once('exit', (code, signal) => {
    clearTimeout(timer);
    if (code !== 0 && signal !== 'SIGKILL') reject(new Error(`publisher exited ${code}: ${err}`));
    else resolve({ signal, last: { ...last, stderr: err } });
  }));
}

it('SIGKILL mid-publish, restart on the same spool: every event stored exactly once', async () => {
  const N = 20_000;
  const first = await publisher(N, 3_000);
  expect(first.signal).toBe('SIGKILL');
  const nc = await connectNats({ servers: nats.urls });
  try {
    const jsm = await jetstreamManager(nc);
    const afterCrash = (await jsm.streams.info('WGFLOW')).state.messages;
    expect(afterCrash).toBeGreaterThanOrEqual(3_000);
    expect(afterCrash).toBeLessThan(N);
    const second = await publisher(0);
    expect(second.last.done, JSON.stringify(second.last)).toBe(true);
    // Everything the spool still held went out again; what the stream had is reported duplicate.
    expect(second.last.acked as number).toBeGreaterThanOrEqual(N - afterCrash);
    const info = await jsm.streams.info('WGFLOW');
    expect(info.state.messages).toBe(N);
    const ids = new Set<string>();
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage('WGFLOW', { seq });
      if (m) ids.add(m.header.get('Nats-Msg-Id'));
    }
    expect(ids.size).toBe(N);
    for (let i = 0; i < N; i++) expect(ids.has(syntheticEvent('crash', i).eventId)).toBe(true);
  } finally {
    await nc.close();
  }
});
