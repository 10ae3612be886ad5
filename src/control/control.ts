// The daemon's control socket (wgflow ctl): a unix socket, mode 0600, one JSON request and one
// JSON answer per line. The daemon supplies the handlers; this module only moves messages.
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { ensureDir } from '../util/fs';
import { createConnection, createServer, Server, Socket } from 'node:net';
import { dirname } from 'node:path';

export interface ControlRequest {
  cmd: string;
  [arg: string]: unknown;
}

export type ControlHandler = (req: ControlRequest) => unknown | Promise<unknown>;

/** An error whose message the client shows as is (bad argument, unknown command). */
export class ControlError extends Error {}

/** What is at path, when it is anything but a stale socket that may be removed: a refusal. */
async function replaceableSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  // lstat, not stat: a symlink is refused as itself, whatever it points to.
  if (!st.isSocket()) {
    const what = st.isSymbolicLink() ? 'a symbolic link' : st.isDirectory() ? 'a directory' : st.isFile() ? 'a regular file' : 'a special file';
    throw new ControlError(`${path} is ${what}, not a socket; refusing to replace it (give a path for the control socket, e.g. /run/wgflow/ctl.sock)`);
  }
  // A live daemon answers; a stale socket from a crash refuses or has no listener: only then remove it.
  const code = await new Promise<string | null>((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => { s.destroy(); resolve(null); });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'EUNKNOWN'));
  });
  if (code === null) throw new ControlError(`another wgflow daemon is listening on ${path}`);
  if (code !== 'ECONNREFUSED' && code !== 'ENOENT') throw new ControlError(`cannot tell whether the socket ${path} is in use (${code}); leaving it alone`);
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // gone already: nothing to replace
  }
}

/** Serve handlers on a unix socket at path (replacing only a stale socket left by a crash). */
export async function serveControl(path: string, handlers: Record<string, ControlHandler>): Promise<Server> {
  ensureDir(dirname(path));
  await replaceableSocket(path);
  const server = createServer((sock: Socket) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > 1 << 20) {
        sock.end(JSON.stringify({ ok: false, error: 'request too large' }) + '\n');
        return;
      }
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        void answer(line).then((reply) => sock.write(JSON.stringify(reply) + '\n'));
      }
    });
    sock.on('error', () => sock.destroy());
  });
  async function answer(line: string): Promise<{ ok: boolean; result?: unknown; error?: string }> {
    let req: ControlRequest;
    try {
      req = JSON.parse(line) as ControlRequest;
    } catch {
      return { ok: false, error: 'malformed request (expected one JSON object per line)' };
    }
    const h = typeof req?.cmd === 'string' ? handlers[req.cmd] : undefined;
    if (!h) return { ok: false, error: `unknown command ${JSON.stringify(req?.cmd)} (known: ${Object.keys(handlers).join(', ')})` };
    try {
      return { ok: true, result: await h(req) };
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
  }
  // Created 0600 from the start: a umask for the bind, not a chmod after it.
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(oldMask);
  }
  chmodSync(path, 0o600);
  return server;
}

/** Send one request to a daemon and return its result; errors say what to check. */
export function callControl(path: string, req: ControlRequest, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new ControlError(`no answer from the daemon on ${path} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.once('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.end();
      const reply = JSON.parse(buf.slice(0, nl)) as { ok: boolean; result?: unknown; error?: string };
      if (reply.ok) resolve(reply.result);
      else reject(new ControlError(reply.error ?? 'the daemon refused the request'));
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why = err.code === 'ENOENT' ? `no control socket at ${path}: is "wgflow run" running? (--control-socket)`
        : err.code === 'ECONNREFUSED' ? `${path} exists but nothing listens: the daemon is not running`
        : err.code === 'EACCES' ? `permission denied on ${path}: run as the daemon's user or root`
        : `cannot reach the daemon on ${path}: ${err.message}`;
      reject(new ControlError(why));
    });
  });
}
