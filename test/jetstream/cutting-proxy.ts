// A TCP proxy in front of a NATS server that breaks one connection in the middle of a frame: the
// fault both NATS client test files need (a server or network that drops us mid-MSG).
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';

export interface CuttingProxy {
  server: Server;
  port: number;
  /** How many connections it has cut: 0 or 1. */
  cuts: () => number;
}

/**
 * Listens on a free loopback port and forwards to 127.0.0.1:port. The first connection whose
 * server-to-client bytes pass `after` is cut at the first "MSG " from there on, 10 bytes into
 * its control line: both sides are destroyed. Every other connection passes untouched. The
 * caller closes `server`.
 */
export async function cuttingProxy(port: number, after: number): Promise<CuttingProxy> {
  let cuts = 0;
  const server = createServer((client: Socket) => {
    const up = netConnect({ host: '127.0.0.1', port });
    let seen = 0;
    client.on('data', (d) => up.write(d));
    up.on('data', (d: Buffer) => {
      if (cuts === 0 && seen + d.length > after) {
        const at = d.indexOf('MSG ', Math.max(0, after - seen));
        if (at >= 0) {
          cuts++;
          client.write(d.subarray(0, at + 10), () => {
            client.destroy();
            up.destroy();
          });
          return;
        }
      }
      seen += d.length;
      client.write(d);
    });
    const end = (): void => {
      client.destroy();
      up.destroy();
    };
    for (const s of [client, up]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  return { server, port: typeof a === 'object' && a ? a.port : 0, cuts: () => cuts };
}
