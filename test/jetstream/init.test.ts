// `wgflow jetstream init` against a real nats-server: creates the stream, accepts it as it is on a
// second run, refuses other settings with a message naming each difference (exit 1), and names the
// flag or key for bad input and unreachable servers.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startNatsServer, type NatsCluster } from '../../testkit/nats';
import { CLI, ensureBuilt } from '../export/helpers';

let nats: NatsCluster;
const dir = mkdtempSync(join(tmpdir(), 'wgflow-js-init-'));

beforeAll(async () => {
  ensureBuilt();
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const init = (...args: string[]): { code: number; out: string; err: string } => {
  const r = spawnSync(process.execPath, [CLI, 'jetstream', 'init', ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
};

it('creates the stream, then checks it; other settings are refused with exit 1', () => {
  const a = init('--jetstream', nats.urls, '--max-age', '48h');
  expect(a.err).toBe('');
  expect(a.code).toBe(0);
  expect(a.out).toMatch(/^created stream WGFLOW: subjects wgflow\.flows\.>, replicas 1, max_age 2d, max_bytes 10737418240, duplicate_window 2m, storage file; 0 messages, 0 bytes\n$/);
  const b = init('--jetstream', nats.urls, '--max-age', '2d');
  expect(b.code).toBe(0);
  expect(b.out).toMatch(/^checked stream WGFLOW/);
  const c = init('--jetstream', nats.urls, '--duplicate-window', '5m', '--max-bytes', '1G');
  expect(c.code).toBe(1);
  expect(c.err).toContain('stream WGFLOW exists with other settings: ');
  expect(c.err).toContain('duplicate_window is 2m, wanted 5m');
  expect(c.err).toContain('max_age is 2d, wanted 7d');
  expect(c.err).toContain('max_bytes is 10737418240, wanted 1073741824');
  expect(init('--jetstream', nats.urls, '--max-age', '2d').code).toBe(0);
});

it('reads jetstream.* from --config, flags override', () => {
  const file = join(dir, 'wgflow.yaml');
  writeFileSync(file, `jetstream:\n  servers: ${nats.urls}\n  stream: FROMFILE\n  subject_prefix: site1.flows\n  duplicate_window: 1m\n`);
  const r = init('--config', file, '--max-bytes', '64M');
  expect(r.err).toBe('');
  expect(r.out).toMatch(/^created stream FROMFILE: subjects site1\.flows\.>, replicas 1, max_age 7d, max_bytes 67108864, duplicate_window 1m/);
});

it('bad flags and unreachable servers: messages naming the flag, exit 2 or 1', () => {
  const r3 = init('--jetstream', nats.urls, '--replicas', '2');
  expect(r3.code).toBe(2);
  expect(r3.err).toMatch(/--replicas: expected 1 or 3/);
  const age = init('--jetstream', nats.urls, '--max-age', 'forever');
  expect(age.code).toBe(2);
  expect(age.err).toMatch(/--max-age: expected a duration such as 90s/);
  const tokenFile = init('--jetstream', nats.urls, '--token-file', '/nonexistent/token');
  expect(tokenFile.code).toBe(2);
  expect(tokenFile.err).toMatch(/--token-file: cannot read \/nonexistent\/token/);
  const down = init('--jetstream', 'nats://127.0.0.1:1');
  expect(down.code).toBe(1);
  expect(down.err).toMatch(/cannot reach NATS at nats:\/\/127\.0\.0\.1:1 .*jetstream\.servers \/ --jetstream/);
  const r3one = init('--jetstream', nats.urls, '--stream', 'R3', '--replicas', '3');
  expect(r3one.code).toBe(1);
  expect(r3one.err).toMatch(/cannot create stream R3: .*replicas/i);
});
