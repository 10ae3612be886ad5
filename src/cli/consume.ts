// wgflow consume: a durable JetStream pull consumer (src/collector/jetstream-consumer.ts) that
// writes JSON lines as `wgflow collect` does.
import pino from 'pino';
import { CONSUMER_DEFAULTS as D, ConsumerError, JetStreamConsumer } from '../collector/jetstream-consumer';
import { WriterError } from '../output/jsonl-writer';
import { JETSTREAM_DEFAULTS, streamNameProblem, StreamMissingError } from '../wire/jetstream';
import { closeNats, connectForCli, NATS_FLAGS, NATS_FLAGS_HELP, natsErrorMessage, natsOptionsOfFlags } from './nats-flags';
import { catchStopSignals } from './stop-signals';
import { hostPortFlag, intFlag, parseFlags, sizeFlag, UsageError } from './args';
import { consumerMetrics } from '../metrics/receivers';
import { listeningAddress, serveMetrics } from '../metrics/serve';
import type { Server } from 'node:http';

const mib = (n: number): string => `${n / (1024 * 1024)}M`;

/** The stats line's period, as collect's. */
const STATS_INTERVAL_MS = 60_000;

export const CONSUME_HELP = `usage: wgflow consume --jetstream URLS --durable NAME --out DIR [options]

Reads flow events from a JetStream stream through a durable pull consumer and writes each as one
JSON line to DIR/events.jsonl, in the form "wgflow collect" writes (fsync'ed in groups); a message
is acked only once its line is durable. Events are de-duplicated by event id, across restarts
too (beyond the stream's duplicate window). Several processes with the same --durable share the
work; give each its own --out. The durable is created if missing (explicit acks). Logs (JSON) go
to stderr, with a stats line a minute while anything moves. SIGTERM or SIGINT: finish the batch
in hand, ack it, exit 0.

options:
  --durable NAME          the durable consumer's name (required)
  --out DIR               output directory (required; created if missing)
  --stream NAME           the stream (default ${JETSTREAM_DEFAULTS.stream})
  --filter SUBJECT        only these subjects, e.g. wgflow.flows.*.end (default: the whole stream;
                          a durable keeps the filter it was created with)
  --ack-wait-ms N         an unacked message is delivered again after N ms (default ${D.ackWaitMs})
  --max-ack-pending N     messages delivered and not yet acked, for the durable (default ${D.maxAckPending})
  --batch N               messages one pull asks for (default ${D.batch})
  --rotate-size SIZE      rotate events.jsonl before it passes SIZE (default ${mib(D.rotateBytes)})
  --max-files N           keep at most N rotated files, deleting the oldest (default ${D.maxFiles} = all)
  --dedup-window N        event ids remembered for de-duplication (default ${D.dedupWindow})
  --metrics-listen HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics (default: none)
  --stats-interval-ms N   a stats line (consumed, written, duplicates, redeliveries, lag) this
                          often while anything moves (default ${STATS_INTERVAL_MS})
${NATS_FLAGS_HELP}
  --log-level LEVEL       fatal, error, warn, info, debug (default info)
  --help, -h              show this help
`;

const OPTIONS = {
  ...NATS_FLAGS,
  durable: { type: 'string' },
  out: { type: 'string' },
  stream: { type: 'string' },
  filter: { type: 'string' },
  'ack-wait-ms': { type: 'string' },
  'max-ack-pending': { type: 'string' },
  batch: { type: 'string' },
  'rotate-size': { type: 'string' },
  'max-files': { type: 'string' },
  'dedup-window': { type: 'string' },
  'stats-interval-ms': { type: 'string' },
  'metrics-listen': { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
/** NATS consumer names: no whitespace, dots, wildcards or path separators. */
const NAME_RE = /^[^\s.*>/\\]+$/;
/** A subject filter: tokens separated by dots, wildcards * and a final >. */
const SUBJECT_RE = /^([^\s.*>]+|\*)(\.([^\s.*>]+|\*))*(\.>)?$|^>$/;

export async function main(argv: string[]): Promise<number> {
  let f: ReturnType<typeof parseFlags<typeof OPTIONS>>;
  try {
    f = parseFlags(argv, OPTIONS);
    if (f.help) {
      process.stdout.write(CONSUME_HELP);
      return 0;
    }
  } catch (err) {
    return usageFailed(err);
  }
  // A signal during start-up (connecting, creating the durable) must not kill the process
  // half-way: it is remembered and honoured once the consumer runs.
  let early: NodeJS.Signals | null = null;
  const onEarly = (sig: NodeJS.Signals): void => {
    early ??= sig;
  };
  process.on('SIGTERM', onEarly);
  process.on('SIGINT', onEarly);
  const signals = catchStopSignals();
  let consumer: JetStreamConsumer;
  let nc: Awaited<ReturnType<typeof connectForCli>>;
  let logger: pino.Logger;
  let statsIntervalMs: number;
  let metricsServer: Server | null = null;
  try {
    if (f.durable === undefined) throw new UsageError('--durable NAME is required (the durable consumer whose processes share the work)');
    if (!NAME_RE.test(f.durable)) throw new UsageError(`--durable: "${f.durable}" is not a consumer name (no spaces, dots, *, >, / or \\)`);
    if (!f.out) throw new UsageError('--out DIR is required (where events.jsonl is written)');
    const stream = f.stream ?? JETSTREAM_DEFAULTS.stream;
    const streamProblem = streamNameProblem(stream);
    if (streamProblem !== null) throw new UsageError(`--stream: ${streamProblem}`);
    if (f.filter !== undefined && !SUBJECT_RE.test(f.filter)) throw new UsageError(`--filter: "${f.filter}" is not a subject (tokens separated by dots; * for one token, > at the end for the rest)`);
    const level = f['log-level'] ?? 'info';
    if (!LEVELS.includes(level)) throw new UsageError(`--log-level: "${level}" is not one of ${LEVELS.join(', ')}`);
    const natsOpts = natsOptionsOfFlags(f, 'wgflow-consume');
    const ackWaitMs = intFlag(f['ack-wait-ms'], 'ack-wait-ms', D.ackWaitMs, 1000);
    const maxAckPending = intFlag(f['max-ack-pending'], 'max-ack-pending', D.maxAckPending, 1);
    const batch = intFlag(f.batch, 'batch', D.batch, 1);
    if (batch > maxAckPending) throw new UsageError(`--batch ${batch} is larger than --max-ack-pending ${maxAckPending}: a pull could never be filled`);
    const rotateBytes = sizeFlag(f['rotate-size'], 'rotate-size', D.rotateBytes, 1024);
    const maxFiles = intFlag(f['max-files'], 'max-files', D.maxFiles);
    const dedupWindow = intFlag(f['dedup-window'], 'dedup-window', D.dedupWindow, 1);
    statsIntervalMs = intFlag(f['stats-interval-ms'], 'stats-interval-ms', STATS_INTERVAL_MS, 100);
    const metricsListen = hostPortFlag(f['metrics-listen'], 'metrics-listen');
    logger = pino({ name: 'wgflow-consume', level }, pino.destination({ fd: 2, sync: true }));
    try {
      nc = await connectForCli(natsOpts);
    } catch (err) {
      process.stderr.write(`wgflow consume: ${(err as Error).message}\n`);
      return 1;
    }
    try {
      consumer = await JetStreamConsumer.start({ nc, connection: natsOpts, servers: natsOpts.servers, stream, durable: f.durable, filter: f.filter, out: f.out, ackWaitMs, maxAckPending, batch, rotateBytes, maxFiles, dedupWindow, logger });
    } catch (err) {
      await closeNats(nc);
      const msg = err instanceof ConsumerError || err instanceof WriterError || err instanceof StreamMissingError ? err.message : natsErrorMessage(err, natsOpts);
      process.stderr.write(`wgflow consume: ${msg}\n`);
      return 1;
    }
    if (metricsListen !== undefined) {
      const started = consumer;
      try {
        metricsServer = await serveMetrics(consumerMetrics(() => started.stats(), () => started.refreshLag()), metricsListen, 'wgflow consume');
        logger.info({ metrics: listeningAddress(metricsServer) }, 'serving metrics');
      } catch (err) {
        await started.close();
        await closeNats(nc);
        process.stderr.write(`wgflow consume: ${(err as Error).message}\n`);
        return 1;
      }
    }
  } catch (err) {
    return usageFailed(err);
  }
  const c = consumer;
  const ms = metricsServer;
  const conn = nc;
  const log = logger;
  // A stats line a minute while anything moves (the collector's rule).
  let last = '';
  const statsTimer = setInterval(() => {
    void c.refreshLag().then(() => {
      const st = JSON.stringify(c.stats());
      if (st !== last) log.info(c.stats(), 'stats');
      last = st;
    });
  }, statsIntervalMs);
  statsTimer.unref();
  return await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string, code: number): void => {
      if (stopping) return;
      stopping = true;
      log.info({ reason: why }, 'shutting down');
      clearInterval(statsTimer);
      ms?.close();
      c.close()
        .then(() => closeNats(conn))
        .then(
          () => {
            log.info(c.stats(), 'stopped');
            resolve(code);
          },
          (err: Error) => {
            log.error({ err: err.message }, 'shutdown failed');
            resolve(1);
          },
        );
    };
    process.off('SIGTERM', onEarly);
    process.off('SIGINT', onEarly);
    signals.onStop((sig) => stop(sig, 0));
    if (early !== null) stop(early, 0);
    void c.ended.then((err) => {
      if (stopping) return;
      log.error({ err: err?.message ?? 'consumption ended' }, 'consuming stopped by itself');
      stop('consumption ended', 1);
    });
  });
}

function usageFailed(err: unknown): number {
  if (err instanceof UsageError) {
    process.stderr.write(`wgflow consume: ${err.message}\nRun "wgflow consume --help" for the options.\n`);
    return 2;
  }
  throw err;
}
