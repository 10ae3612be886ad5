// Many short flows per second, for the churn and latency benchmarks. Run inside a namespace:
//   node build/testkit/churn-traffic.js '<json options>'
//
//   {"mode":"server","udp":[ports],"tcp":[ports]}
//       UDP echo on every udp port; on every tcp port accept, write "ok" and close first (so the
//       TIME_WAIT is on the server and the client's ports are free again at once). Prints "ready".
//   {"mode":"udp","host":H,"ports":[dst ports],"srcBase":P,"srcCount":S,"rate":R,"seconds":T,"out":FILE}
//       R flows/s for T s, one datagram each, flow i from source port srcBase + i%S to
//       ports[floor(i/S)]: every flow has its own 5-tuple (at most S * ports.length flows).
//   {"mode":"tcp","host":H,"ports":[dst ports],"srcBase":P,"srcCount":S,"rate":R,"seconds":T,"out":FILE,"maxInFlight":N}
//       R connections/s for T s, with source and destination ports chosen as for udp: connect, read
//       "ok" and the server's close. (Ports the kernel picks are reused within seconds, and two
//       connections on one 4-tuple would be told apart only by timing.)
//   {"mode":"tcp-timed","host":H,"port":P,"count":N,"intervalMs":I,"out":FILE}
//       N connections, one every I ms; writes each one's local port and the wall-clock time its
//       socket closed.
//
// A flow counts as generated only when it is known to have crossed the tunnel both ways (the echo
// came back, the connection completed and closed cleanly): those are the flows the exporter must
// report. FILE gets one line per such flow, "PROTO SPORT DPORT" (tcp-timed: "SPORT CLOSE_MS").
// The summary goes to stdout as one JSON line.
import * as dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

interface Summary {
  mode: string;
  offered: number;
  started: number;
  confirmed: number;
  failed: number;
  seconds: number;
}

const opts = JSON.parse(process.argv[2] ?? '{}') as {
  mode: string; host: string; ports: number[]; udp: number[]; tcp: number[]; srcBase: number; srcCount: number;
  rate: number; seconds: number; out: string; maxInFlight?: number; port: number; count: number; intervalMs: number;
};

/** Wall-clock milliseconds with sub-millisecond resolution (Date.now() has 1 ms). */
const nowMs = (): number => performance.timeOrigin + performance.now();

const finish = (s: Summary, lines: string[]): void => {
  writeFileSync(opts.out, lines.length ? lines.join('\n') + '\n' : '');
  process.stdout.write(JSON.stringify(s) + '\n');
  process.exit(0);
};

/**
 * Call start() at an average of rate per second for seconds, catching up after a late timer; start
 * returns false when it cannot start one now (too many in flight). Resolves with the count started.
 */
function paced(rate: number, seconds: number, start: (i: number) => boolean): Promise<{ started: number; seconds: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const total = Math.round(rate * seconds);
    let i = 0;
    const tick = (): void => {
      const elapsed = (performance.now() - t0) / 1000;
      const due = Math.min(total, Math.floor(elapsed * rate));
      while (i < due && start(i)) i += 1;
      // A generator that cannot keep up stops at its deadline: the rate it reached is reported.
      if (i >= total || elapsed >= seconds) resolve({ started: i, seconds: (performance.now() - t0) / 1000 });
      else setTimeout(tick, 2);
    };
    tick();
  });
}

/** Flow i's ports: every source port once per destination port, so no 4-tuple repeats. */
function tuple(i: number): { sport: number; dport: number } {
  return { sport: opts.srcBase + (i % opts.srcCount), dport: opts.ports[Math.floor(i / opts.srcCount)] };
}

function checkTuples(): void {
  const need = Math.ceil(opts.rate * opts.seconds);
  if (need > opts.srcCount * opts.ports.length) throw new Error(`${opts.mode}: ${need} flows need more than ${opts.srcCount} x ${opts.ports.length} port pairs`);
}

async function udpFlows(): Promise<void> {
  const { host, srcBase, srcCount, rate, seconds } = opts;
  checkTuples();
  const payload = Buffer.alloc(64, 0x75);
  const confirmed: string[] = [];
  let failed = 0;
  const sockets = await Promise.all(Array.from({ length: srcCount }, (_, j) => new Promise<dgram.Socket>((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.on('message', (_m, r) => confirmed.push(`17 ${srcBase + j} ${r.port}`));
    s.on('error', () => (failed += 1));
    s.once('error', reject);
    s.bind(srcBase + j, () => resolve(s));
  })));
  const run = await paced(rate, seconds, (i) => {
    sockets[i % srcCount].send(payload, tuple(i).dport, host);
    return true;
  });
  await new Promise((r) => setTimeout(r, 1000)); // the last echoes
  for (const s of sockets) s.close();
  finish({ mode: 'udp', offered: rate, started: run.started, confirmed: confirmed.length, failed, seconds: run.seconds }, confirmed);
}

async function tcpFlows(): Promise<void> {
  const { host, rate, seconds } = opts;
  checkTuples();
  const maxInFlight = opts.maxInFlight ?? 2000;
  const confirmed: string[] = [];
  let failed = 0, inFlight = 0;
  const run = await paced(rate, seconds, (i) => {
    if (inFlight >= maxInFlight) return false;
    inFlight += 1;
    const { sport, dport } = tuple(i);
    const s = net.connect({ host, port: dport, localPort: sport });
    let reply = '';
    s.on('data', (d: Buffer) => (reply += d.toString()));
    s.on('error', () => undefined);
    s.on('close', (hadError) => {
      inFlight -= 1;
      if (!hadError && reply === 'ok') confirmed.push(`6 ${sport} ${dport}`);
      else failed += 1;
    });
    return true;
  });
  const deadline = Date.now() + 10_000;
  while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  finish({ mode: 'tcp', offered: rate, started: run.started, confirmed: confirmed.length, failed: failed + inFlight, seconds: run.seconds }, confirmed);
}

async function tcpTimed(): Promise<void> {
  const lines: string[] = [];
  let failed = 0;
  const t0 = nowMs();
  for (let i = 0; i < opts.count; i++) {
    const next = t0 + i * opts.intervalMs;
    if (next > nowMs()) await new Promise((r) => setTimeout(r, next - nowMs()));
    await new Promise<void>((resolve) => {
      const s = net.connect({ host: opts.host, port: opts.port });
      let reply = '', sport = 0;
      s.on('connect', () => (sport = s.localPort ?? 0));
      s.on('data', (d: Buffer) => (reply += d.toString()));
      s.on('error', () => undefined);
      // 'close': both FINs exchanged and the socket released, i.e. the connection is over.
      s.on('close', (hadError) => {
        const closed = nowMs();
        if (!hadError && reply === 'ok' && sport) lines.push(`${sport} ${closed.toFixed(3)}`);
        else failed += 1;
        resolve();
      });
    });
  }
  finish({ mode: 'tcp-timed', offered: 1000 / opts.intervalMs, started: opts.count, confirmed: lines.length, failed, seconds: (nowMs() - t0) / 1000 }, lines);
}

function servers(): void {
  let pending = opts.udp.length + opts.tcp.length;
  const ready = (): void => {
    if (--pending === 0) process.stdout.write('ready\n');
  };
  for (const port of opts.udp) {
    const s = dgram.createSocket('udp4');
    s.on('message', (m, r) => s.send(m, r.port, r.address));
    s.bind(port, ready);
  }
  for (const port of opts.tcp) {
    const srv = net.createServer((c) => {
      c.on('error', () => undefined);
      c.end('ok');
    });
    srv.listen({ port, backlog: 4096 }, ready);
  }
}

const modes: Record<string, () => void | Promise<void>> = { server: servers, udp: udpFlows, tcp: tcpFlows, 'tcp-timed': tcpTimed };
const main = modes[opts.mode];
if (!main) {
  console.error(`unknown mode ${opts.mode}`);
  process.exit(2);
}
Promise.resolve(main()).catch((err: unknown) => {
  console.error((err as Error).message);
  process.exit(1);
});
