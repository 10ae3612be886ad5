// The /metrics HTTP endpoint, one for every command that has metrics (run, collect, consume).
import { createServer, Server } from 'node:http';
import type { Registry } from 'prom-client';

/** Serve registry at /metrics on host:port; rejects with a message naming --metrics-listen. */
export async function serveMetrics(registry: Registry, hostPort: string, what = 'wgflow'): Promise<Server> {
  const i = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(hostPort.slice(i + 1));
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        (err: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics failed: ${err.message}\n`);
        },
      );
      return;
    }
    res.writeHead(req.url === '/' ? 200 : 404, { 'content-type': 'text/plain' });
    res.end(req.url === '/' ? `${what}: metrics at /metrics\n` : 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new Error(err.code === 'EADDRINUSE' ? `metrics address ${hostPort} is already in use (--metrics-listen)`
        : err.code === 'EADDRNOTAVAIL' ? `metrics address ${hostPort} is not an address of this host (--metrics-listen)`
        : err.code === 'EACCES' ? `not allowed to listen on ${hostPort} (--metrics-listen)` : `cannot listen on ${hostPort}: ${err.message}`));
    });
    server.listen(port, host, () => resolve());
  });
  return server;
}

/** The address a server listens on, as HOST:PORT (port 0 resolved). */
export function listeningAddress(server: Server): string {
  const a = server.address();
  if (a === null || typeof a === 'string') return String(a);
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
