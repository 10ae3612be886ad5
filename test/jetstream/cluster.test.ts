// An R3 stream on a three-server cluster on loopback: the stream leader is killed (kill -9)
// mid-publish; the exporter keeps publishing to the new leader, and the stream ends up with every
// event exactly once (resends of unacked events are absorbed by the duplicate window).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectNats } from '../../src/wire/jetstream';
import { startNatsCluster, type NatsCluster, type NatsServer } from '../../testkit/nats';
import { budget } from '../../testkit/slow';
import { ensureBuilt, REPO } from '../export/helpers';

const TOOL = join(REPO, 'build', 'testkit', 'jetstream-tool.js');
let nats: NatsCluster;
const spool = mkdtempSync(join(tmpdir(), 'wgflow-js-r3-'));

beforeAll(async () => {
  ensureBuilt();
  nats = await startNatsCluster();
});
afterAll(async () => {
  await nats?.stop();
  rmSync(spool, { recursive: true, force: true });
});

it('kill -9 of the stream leader mid-publish: every event stored once on the R3 stream', async () => {
  const N = 20_000;
  const p = spawn(process.execPath, [TOOL, 'publish', '--jetstream', nats.urls, '--spool', spool, '--count', String(N), '--seed', 'r3', '--replicas', '3'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let killed: NatsServer | null = null;
  let killing = false;
  let ackedAtKill = -1;
  let last: Record<string, unknown> = {};
  let buf = '', err = '';
  p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  p.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const l of lines) {
      last = JSON.parse(l) as Record<string, unknown>;
      if (!killing && typeof last.acked === 'number' && last.acked >= 3_000) {
        killing = true;
        void nats.streamLeader('WGFLOW').then(async (leader) => {
          killed = leader;
          ackedAtKill = last.acked as number;
          await leader?.kill();
        });
      }
    }
  });
  const timer = setTimeout(() => p.kill('SIGKILL'), budget(50_000));
  const code = await new Promise<number | null>((r) => p.once('exit', r));
  clearTimeout(timer);
  expect(code, err).toBe(0);
  expect(last.done).toBe(true);
  expect(killed).not.toBeNull();
  // The leader died with events still to publish (not after the last PubAck).
  expect(ackedAtKill).toBeGreaterThanOrEqual(3_000);
  expect(ackedAtKill).toBeLessThan(N);
  const alive = nats.servers.filter((s) => s.running).map((s) => s.url).join(',');
  expect(alive.split(',')).toHaveLength(2);
  const nc = await connectNats({ servers: alive });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info('WGFLOW');
    expect(info.config.num_replicas).toBe(3);
    expect(info.cluster?.leader).not.toBe(killed!.name);
    expect(info.state.messages).toBe(N);
    const ids = new Set<string>();
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage('WGFLOW', { seq });
      if (m) ids.add(m.header.get('Nats-Msg-Id'));
    }
    expect(ids.size).toBe(N);
  } finally {
    await nc.close();
  }
});
