// wgflow export-test (hidden): sends synthetic events (src/export/synthetic.ts) through the real
// exporter and spool, then exits once every spooled event is acknowledged. Crash tests kill it
// and start it again on the same spool with --count 0 to deliver what the first run left.
//
// stdout carries one JSON object per line: {"event":"enqueued",...}, {"event":"stats",...},
// {"event":"done",...}. Logs go to stderr.
import pino from 'pino';
import type { FlowEvent } from '../src/model/event';
import { intFlag, parseFlags, sizeFlag, UsageError } from '../src/cli/args';
import { Transport, TRANSPORTS } from '../src/output/grpc/transport';
import { Exporter, EXPORTER_DEFAULTS, ExporterStats } from '../src/output/grpc/exporter';
import { FsyncPolicy, SPOOL_DEFAULTS } from '../src/output/spool';
import { syntheticEvent } from './synthetic';

export const SENDER_HELP = `usage: wgflow export-test --collector URL --spool DIR [options]

  --collector URL        grpc://host:port, grpcs://host:port or https://host[:port]
  --spool DIR            spool directory (kept between runs)
  --count N              synthetic events to enqueue (default 0: only deliver what the spool holds)
  --start I              index of the first event (default 0)
  --seed TEXT            names the run; event i of a seed is always the same event (default "test")
  --rate N               events per second (default 0 = as fast as the exporter takes them)
  --batch N              events per spool append (default 64)
  --token TOKEN          bearer token
  --ca-file FILE         PEM CA bundle to trust (TLS)
  --cert FILE, --key FILE  client certificate and key (mTLS)
  --fsync POLICY         spool fsync policy: always, interval, never (default interval)
  --spool-max SIZE       spool size bound (default 256M)
  --segment-size SIZE    spool segment size (default 4M)
  --max-inflight N       unacknowledged events on the stream (default ${EXPORTER_DEFAULTS.maxInFlight})
  --keepalive-ms N       keepalive ping interval (default ${EXPORTER_DEFAULTS.keepaliveTimeMs})
  --transport T          http2 (default) or grpc-js
  --exit-after-enqueue   stop (deadline 0) right after enqueueing: the spool keeps everything
  --timeout-ms N         give up (exit 1) if not everything is acked by then (default 0 = never)
  --stats-ms N           print a stats line this often (default 0 = never)
  --help, -h
`;

const OPTIONS = {
  collector: { type: 'string' },
  spool: { type: 'string' },
  count: { type: 'string' },
  start: { type: 'string' },
  seed: { type: 'string' },
  rate: { type: 'string' },
  batch: { type: 'string' },
  token: { type: 'string' },
  'ca-file': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  fsync: { type: 'string' },
  'spool-max': { type: 'string' },
  'segment-size': { type: 'string' },
  'max-inflight': { type: 'string' },
  'keepalive-ms': { type: 'string' },
  transport: { type: 'string' },
  'exit-after-enqueue': { type: 'boolean' },
  'timeout-ms': { type: 'string' },
  'stats-ms': { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const out = (o: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

export async function main(argv: string[]): Promise<number> {
  let f: ReturnType<typeof parseFlags<typeof OPTIONS>>;
  try {
    f = parseFlags(argv, OPTIONS);
    if (f.help) {
      process.stdout.write(SENDER_HELP);
      return 0;
    }
    if (!f.collector) throw new UsageError('--collector URL is required');
    if (!f.spool) throw new UsageError('--spool DIR is required');
    if (f.fsync !== undefined && !['always', 'interval', 'never'].includes(f.fsync)) throw new UsageError(`--fsync: "${f.fsync}" is not always, interval or never`);
    if (f.transport !== undefined && !(TRANSPORTS as readonly string[]).includes(f.transport)) throw new UsageError(`--transport: "${f.transport}" is not ${TRANSPORTS.join(' or ')}`);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`wgflow export-test: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const count = intFlag(f.count, 'count', 0);
  const first = intFlag(f.start, 'start', 0);
  const seed = f.seed ?? 'test';
  const rate = intFlag(f.rate, 'rate', 0);
  const batch = intFlag(f.batch, 'batch', 64, 1);
  const timeoutMs = intFlag(f['timeout-ms'], 'timeout-ms', 0);
  const statsMs = intFlag(f['stats-ms'], 'stats-ms', 0);
  const logger = pino({ name: 'wgflow-export-test', level: f['log-level'] ?? 'info' }, pino.destination({ fd: 2, sync: true }));
  const exporter = new Exporter({
    url: f.collector,
    token: f.token,
    caFile: f['ca-file'],
    certFile: f.cert,
    keyFile: f.key,
    maxInFlight: intFlag(f['max-inflight'], 'max-inflight', EXPORTER_DEFAULTS.maxInFlight, 1),
    keepaliveTimeMs: intFlag(f['keepalive-ms'], 'keepalive-ms', EXPORTER_DEFAULTS.keepaliveTimeMs, 1),
    transport: f.transport as Transport | undefined,
    logger,
    spool: {
      dir: f.spool,
      fsync: (f.fsync ?? SPOOL_DEFAULTS.fsync) as FsyncPolicy,
      maxBytes: sizeFlag(f['spool-max'], 'spool-max', SPOOL_DEFAULTS.maxBytes),
      segmentBytes: sizeFlag(f['segment-size'], 'segment-size', SPOOL_DEFAULTS.segmentBytes),
    },
  });
  const statsTimer = statsMs > 0 ? setInterval(() => out({ event: 'stats', t: Date.now(), ...exporter.stats() }), statsMs) : null;
  let giveUp: NodeJS.Timeout | null = null;
  const timedOut = new Promise<'timeout'>((resolve) => {
    if (timeoutMs > 0) giveUp = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const t0 = Date.now();
  if (!f['exit-after-enqueue']) exporter.start();
  // Generate in batches. Unpaced, it waits while many events are queued: a real flow engine
  // enqueues at traffic speed, and piling up millions here would only measure the disk.
  const perTick = rate > 0 ? Math.max(1, Math.round(rate / 100)) : batch;
  let next = first;
  const end = first + count;
  let tNext = Date.now();
  while (next < end) {
    const n = Math.min(perTick, end - next);
    const events: FlowEvent[] = [];
    for (let k = 0; k < n; k++) events.push(syntheticEvent(seed, next + k));
    exporter.enqueueBatch(events);
    next += n;
    if (rate > 0) {
      tNext += 10;
      const wait = tNext - Date.now();
      if (wait > 0) await sleep(wait);
      else await tick();
    } else {
      await tick();
      while (!f['exit-after-enqueue'] && exporter.stats().queued > 20_000) await sleep(1);
    }
  }
  out({ event: 'enqueued', count, first, ms: Date.now() - t0, ...exporter.stats() });
  let stats: ExporterStats;
  let code = 0;
  if (f['exit-after-enqueue']) {
    stats = await exporter.stop({ deadlineMs: 0 });
  } else {
    const r = await Promise.race([exporter.whenIdle().then(() => 'idle' as const), timedOut]);
    const ms = Date.now() - t0;
    if (r === 'timeout') {
      logger.error({ timeoutMs }, 'not every event was acknowledged in time');
      code = 1;
    }
    stats = await exporter.stop({ deadlineMs: 0 });
    out({ event: 'done', ok: code === 0, ms, eventsPerSecond: Math.round(((stats.acked || 0) * 1000) / Math.max(1, ms)), ...stats });
    if (statsTimer) clearInterval(statsTimer);
    if (giveUp) clearTimeout(giveUp);
    return code;
  }
  if (statsTimer) clearInterval(statsTimer);
  if (giveUp) clearTimeout(giveUp);
  out({ event: 'done', ok: true, ms: Date.now() - t0, ...stats });
  return code;
}
