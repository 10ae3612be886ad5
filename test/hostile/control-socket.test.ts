// --control-socket pointed at something that is not a stale socket: nothing may be deleted.
// serveControl removes only a socket nobody answers on; a live one, a regular file, a directory
// or a symlink is refused with a message naming the path (and the daemon adds the flag).
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callControl, serveControl } from '../../src/control/control';
import { describePrivileged } from '../helpers/env';
import { wgflow } from '../helpers/daemon';

const dir = mkdtempSync(join(tmpdir(), 'wgflow-ctlsock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const fresh = (name: string): string => join(dir, `${++n}-${name}`);

/** A socket file whose listener died without removing it (as after SIGKILL). */
function staleSocket(path: string): void {
  const script = `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`;
  spawnSync(process.execPath, ['-e', script]);
  if (!lstatSync(path).isSocket()) throw new Error('no stale socket was left');
}

async function listening(path: string): Promise<Server> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(path, () => r()));
  return s;
}

/** Everything a refusal must leave as it was. */
function victims(): Array<{ name: string; make: () => string; intact: (p: string) => void }> {
  return [
    { name: 'a regular file (the configuration)', make: () => {
      const p = fresh('config.yaml');
      writeFileSync(p, 'interfaces: [wg0]\n');
      return p;
    }, intact: (p) => expect(readFileSync(p, 'utf8')).toBe('interfaces: [wg0]\n') },
    { name: 'a directory', make: () => {
      const p = fresh('dir');
      mkdirSync(p);
      writeFileSync(join(p, 'keep'), 'x');
      return p;
    }, intact: (p) => expect(readFileSync(join(p, 'keep'), 'utf8')).toBe('x') },
    { name: 'a symlink to a file', make: () => {
      const target = fresh('target');
      writeFileSync(target, 'keep');
      const p = fresh('link');
      symlinkSync(target, p);
      return p;
    }, intact: (p) => {
      expect(lstatSync(p).isSymbolicLink()).toBe(true);
      expect(readFileSync(readlinkSync(p), 'utf8')).toBe('keep');
    } },
    { name: 'a dangling symlink', make: () => {
      const p = fresh('dangling');
      symlinkSync(join(dir, 'nowhere'), p);
      return p;
    }, intact: (p) => expect(lstatSync(p).isSymbolicLink()).toBe(true) },
  ];
}

describe('serveControl: what it may remove', () => {
  it('replaces a stale socket and serves on it', async () => {
    const p = fresh('stale.sock');
    staleSocket(p);
    const server = await serveControl(p, { ping: () => 'pong' });
    try {
      expect(await callControl(p, { cmd: 'ping' })).toBe('pong');
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('refuses a live socket and leaves it serving', async () => {
    const p = fresh('live.sock');
    const other = await serveControl(p, { ping: () => 'first' });
    try {
      await expect(serveControl(p, {})).rejects.toThrow(`another wgflow daemon is listening on ${p}`);
      expect(await callControl(p, { cmd: 'ping' })).toBe('first');
    } finally {
      await new Promise((r) => other.close(r));
    }
  });

  it.each(victims())('refuses $name and leaves it untouched', async ({ make, intact }) => {
    const p = make();
    await expect(serveControl(p, {})).rejects.toThrow(new RegExp(`^${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is .*not a socket`));
    intact(p);
  });
});

describePrivileged('wgflow run --control-socket at a path that is not a stale socket', () => {
  const run = (sock: string): ReturnType<typeof wgflow> =>
    wgflow(['run', '--interface', 'wg-hostile0', '--control-socket', sock, '--output', join(dir, 'out'), '--metrics-listen', '127.0.0.1:0', '--pin-dir', join(dir, 'nobpf')]);

  it.each(victims())('$name: exit 1, names --control-socket, nothing deleted', ({ make, intact }) => {
    const p = make();
    const r = run(p);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(`wgflow run: ${p} is `);
    expect(r.stderr).toMatch(/not a socket.*--control-socket/);
    intact(p);
  });

  it('a live socket: exit 1, "another wgflow daemon is listening on", still listening', async () => {
    const p = fresh('live.sock');
    const s = await listening(p);
    try {
      const r = run(p);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(`another wgflow daemon is listening on ${p} (--control-socket`);
      expect(existsSync(p) && lstatSync(p).isSocket()).toBe(true);
    } finally {
      s.close();
    }
  });
});
