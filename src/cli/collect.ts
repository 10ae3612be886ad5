// wgflow collect: the embedded collector (src/collector/server.ts) as a command.
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { Collector, COLLECTOR_DEFAULTS as D, CollectorError } from '../collector/server';
import { WriterError } from '../output/jsonl-writer';
import { catchStopSignals } from './stop-signals';
import { hostPortFlag, intFlag, parseFlags, sizeFlag, UsageError } from './args';
import { collectorMetrics, type CollectorMetrics } from '../metrics/receivers';
import { listeningAddress, serveMetrics } from '../metrics/serve';
import type { Server } from 'node:http';
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstreamManager } from '@nats-io/jetstream';
import { JETSTREAM_DEFAULTS, streamNameProblem, StreamMissingError, subjectPrefixProblem } from '../wire/jetstream';
import { closeNats, connectForCli, NATS_PREFIXED_FLAGS, NATS_PREFIXED_FLAGS_HELP, natsErrorMessage, natsOptionsOfFlags, prefixNatsFlagNames, unprefixNatsFlags } from './nats-flags';

const mib = (n: number): string => `${n / (1024 * 1024)}M`;

export const COLLECT_HELP = `usage: wgflow collect --out DIR [options]
       wgflow collect --jetstream URLS [options]     (the relay)

Receives flow events on /flow.FlowService/Events (the NetBird flow contract, gRPC), writes each
as one JSON line to DIR/events.jsonl (fsync'ed in groups), then acknowledges it. Events are
de-duplicated by event id, across restarts too. Logs (JSON) go to stderr.

With --jetstream instead of --out, the collector is a relay: every event is published to the
JetStream stream (subject <prefix>.<reporter>.<type>, Nats-Msg-Id = event id) and acknowledged to
its sender only on the stream's PubAck (a duplicate counts as stored); when the stream cannot be
reached the sender is not acknowledged and sends again later. The stream must exist (wgflow
jetstream init); read it with wgflow consume.

options:
  --listen HOST:PORT      address to listen on (default ${D.listen}; port 0 = any free port)
  --out DIR               output directory (created if missing; this or --jetstream)
  --token TOKEN           require "authorization: Bearer TOKEN" (default: accept any caller)
  --token-file FILE       read the token from FILE (keeps it out of the process list)
  --tls-cert FILE         PEM server certificate: serve TLS (with --tls-key)
  --tls-key FILE          PEM private key of --tls-cert
  --client-ca FILE        PEM CA bundle: require client certificates signed by it (mTLS)
  --rotate-size SIZE      rotate events.jsonl before it passes SIZE (default ${mib(D.rotateBytes)})
  --max-files N           keep at most N rotated files, deleting the oldest (default ${D.maxFiles} = all)
  --dedup-window N        event ids remembered for de-duplication (default ${D.dedupWindow})
  --max-message SIZE      largest accepted gRPC message (default ${mib(D.maxMessageBytes)})

connection limits (a flood of broken or idle clients must not lock exporters out):
  --handshake-timeout-ms N  a connection must open an authenticated stream within N ms (default ${D.handshakeTimeoutMs})
  --idle-timeout-ms N     close a connection with no open stream after N ms (default ${D.idleTimeoutMs})
  --max-unauthenticated N connections not yet authenticated, at most; more are refused (default ${D.maxUnauthenticated})
  --max-connections N     open connections at most; more are refused (default ${D.maxConnections})
  --max-streams-per-connection N  concurrent streams per connection (default ${D.maxStreamsPerConnection})
  --max-streams N         open streams in all; more are refused with RESOURCE_EXHAUSTED (default ${D.maxStreams})
  --metrics-listen HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics (default: none)
  --log-level LEVEL       fatal, error, warn, info, debug (default info)
  --help, -h              show this help

relay (--jetstream):
  --stream NAME           the stream (default ${JETSTREAM_DEFAULTS.stream})
  --subject-prefix P      subjects are P.<reporter>.<type> (default ${JETSTREAM_DEFAULTS.subjectPrefix})
  --publish-timeout-ms N  a publish not acked in N ms fails; its sender resends (default ${D.relayTimeoutMs})
${NATS_PREFIXED_FLAGS_HELP}
Rotated files are named events-<6-digit sequence>-<UTC yyyymmddThhmmssZ>.jsonl.
`;

const OPTIONS = {
  listen: { type: 'string' },
  out: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'client-ca': { type: 'string' },
  'rotate-size': { type: 'string' },
  'max-files': { type: 'string' },
  'dedup-window': { type: 'string' },
  'max-message': { type: 'string' },
  'handshake-timeout-ms': { type: 'string' },
  'idle-timeout-ms': { type: 'string' },
  'max-unauthenticated': { type: 'string' },
  'max-connections': { type: 'string' },
  'max-streams-per-connection': { type: 'string' },
  'max-streams': { type: 'string' },
  'metrics-listen': { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  ...NATS_PREFIXED_FLAGS,
  stream: { type: 'string' },
  'subject-prefix': { type: 'string' },
  'publish-timeout-ms': { type: 'string' },
} as const;

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export async function main(argv: string[]): Promise<number> {
  let collector: Collector;
  const signals = catchStopSignals();
  try {
    const f = parseFlags(argv, OPTIONS);
    if (f.help) {
      process.stdout.write(COLLECT_HELP);
      return 0;
    }
    const relaying = f.jetstream !== undefined;
    if (!f.out && !relaying) throw new UsageError('--out DIR is required (where events.jsonl is written), or --jetstream URLS to relay to a stream');
    if (f.out && relaying) throw new UsageError('give --out (write JSON lines) or --jetstream (relay to the stream), not both');
    if (!relaying) {
      for (const k of ['stream', 'subject-prefix', 'publish-timeout-ms', 'nats-token', 'nats-token-file', 'nats-user', 'nats-password', 'nats-creds-file', 'nats-ca-file', 'nats-cert-file', 'nats-key-file'] as const) {
        if (f[k] !== undefined) throw new UsageError(`--${k} belongs to the relay: also give --jetstream URLS`);
      }
    }
    if (f.token !== undefined && f['token-file'] !== undefined) throw new UsageError('give either --token or --token-file, not both');
    if ((f['tls-cert'] === undefined) !== (f['tls-key'] === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
    if (f['client-ca'] !== undefined && f['tls-cert'] === undefined) throw new UsageError('--client-ca needs TLS: also give --tls-cert and --tls-key');
    const level = f['log-level'] ?? 'info';
    if (!LEVELS.includes(level)) throw new UsageError(`--log-level: "${level}" is not one of ${LEVELS.join(', ')}`);
    let token = f.token;
    if (f['token-file'] !== undefined) {
      try {
        token = readFileSync(f['token-file'], 'utf8').trim();
      } catch (err) {
        throw new UsageError(`--token-file: cannot read ${f['token-file']}: ${(err as Error).message}`);
      }
    }
    if (token !== undefined && token === '') throw new UsageError('--token: the token is empty');
    const metricsListen = hostPortFlag(f['metrics-listen'], 'metrics-listen');
    // Created before the collector so the relay can observe PubAck latencies; stats bound below.
    let stats: () => ReturnType<Collector['stats']> = () => { throw new Error('collector not started'); };
    const metrics: CollectorMetrics | null = metricsListen === undefined ? null : collectorMetrics(() => stats(), relaying);
    let relay: { nc: NatsConnection; subjectPrefix: string; timeoutMs: number; onPublished?: (s: number) => void } | undefined;
    let natsOpts: ReturnType<typeof natsOptionsOfFlags> | undefined;
    let stream = '';
    if (relaying) {
      try {
        natsOpts = natsOptionsOfFlags(unprefixNatsFlags(f), 'wgflow-collect-relay');
      } catch (err) {
        if (err instanceof UsageError) throw new UsageError(prefixNatsFlagNames(err.message));
        throw err;
      }
      stream = f.stream ?? JETSTREAM_DEFAULTS.stream;
      const sp = streamNameProblem(stream);
      if (sp !== null) throw new UsageError(`--stream: ${sp}`);
      const prefix = f['subject-prefix'] ?? JETSTREAM_DEFAULTS.subjectPrefix;
      const pp = subjectPrefixProblem(prefix);
      if (pp !== null) throw new UsageError(`--subject-prefix: ${pp}`);
      const timeoutMs = intFlag(f['publish-timeout-ms'], 'publish-timeout-ms', D.relayTimeoutMs, 100);
      let nc: NatsConnection;
      try {
        nc = await connectForCli(natsOpts);
      } catch (err) {
        process.stderr.write(`wgflow collect: ${prefixNatsFlagNames((err as Error).message)}\n`);
        return 1;
      }
      try {
        // The stream must be there (never created or changed here): its subjects must take ours.
        const info = await (await jetstreamManager(nc)).streams.info(stream).catch((err: unknown) => {
          throw (err as { code?: number }).code === 10059 ? new StreamMissingError(stream, natsOpts?.servers ?? '') : err;
        });
        const subjects = info.config.subjects ?? [];
        if (!subjects.includes(`${prefix}.>`)) throw new UsageError(`--subject-prefix ${prefix}: stream ${stream} takes subjects ${JSON.stringify(subjects)}, not ${prefix}.>`);
      } catch (err) {
        await closeNats(nc);
        if (err instanceof UsageError) throw err;
        process.stderr.write(`wgflow collect: ${err instanceof StreamMissingError ? err.message : prefixNatsFlagNames(natsErrorMessage(err, natsOpts))}\n`);
        return 1;
      }
      relay = { nc, subjectPrefix: prefix, timeoutMs, onPublished: metrics?.observePublish };
    }
    const logger = pino({ name: 'wgflow-collect', level }, pino.destination({ fd: 2, sync: true }));
    try {
      collector = await Collector.start({
        listen: f.listen ?? D.listen,
        out: f.out,
        relay,
        token,
        tlsCert: f['tls-cert'],
        tlsKey: f['tls-key'],
        clientCa: f['client-ca'],
        rotateBytes: sizeFlag(f['rotate-size'], 'rotate-size', D.rotateBytes, 1024),
        maxFiles: intFlag(f['max-files'], 'max-files', D.maxFiles),
        dedupWindow: intFlag(f['dedup-window'], 'dedup-window', D.dedupWindow, 1),
        maxMessageBytes: sizeFlag(f['max-message'], 'max-message', D.maxMessageBytes, 1024),
        handshakeTimeoutMs: intFlag(f['handshake-timeout-ms'], 'handshake-timeout-ms', D.handshakeTimeoutMs, 1),
        idleTimeoutMs: intFlag(f['idle-timeout-ms'], 'idle-timeout-ms', D.idleTimeoutMs, 1),
        maxUnauthenticated: intFlag(f['max-unauthenticated'], 'max-unauthenticated', D.maxUnauthenticated, 1),
        maxConnections: intFlag(f['max-connections'], 'max-connections', D.maxConnections, 1),
        maxStreamsPerConnection: intFlag(f['max-streams-per-connection'], 'max-streams-per-connection', D.maxStreamsPerConnection, 1),
        maxStreams: intFlag(f['max-streams'], 'max-streams', D.maxStreams, 1),
        logger,
      });
    } catch (err) {
      if (relay) await closeNats(relay.nc);
      if (err instanceof UsageError) throw err;
      if (err instanceof CollectorError || err instanceof WriterError) {
        process.stderr.write(`wgflow collect: ${err.message}\n`);
        return 1;
      }
      throw err;
    }
    const col = collector;
    stats = () => col.stats();
    let metricsServer: Server | null = null;
    if (metrics !== null && metricsListen !== undefined) {
      try {
        metricsServer = await serveMetrics(metrics.registry, metricsListen, 'wgflow collect');
      } catch (err) {
        await collector.close();
        if (relay) await closeNats(relay.nc);
        process.stderr.write(`wgflow collect: ${(err as Error).message}\n`);
        return 1;
      }
    }
    logger.info({ address: collector.address, metrics: metricsServer ? listeningAddress(metricsServer) : undefined, out: f.out, relay: relaying ? { servers: natsOpts?.servers, stream } : undefined, tls: f['tls-cert'] !== undefined, mtls: f['client-ca'] !== undefined, auth: token !== undefined }, 'listening');
    const c = collector;
    // A stats line a minute while anything moves: refusals and timeouts are visible while running,
    // not only in the "stopped" line.
    let last = '';
    const statsTimer = setInterval(() => {
      const st = JSON.stringify(c.stats());
      if (st !== last) logger.info(c.stats(), 'stats');
      last = st;
    }, 60_000);
    statsTimer.unref();
    return await new Promise<number>((resolve) => {
      let stopping = false;
      const stop = (sig: string): void => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal: sig }, 'shutting down');
        clearInterval(statsTimer);
        metricsServer?.close();
        c.close().then(async () => {
          if (relay) await closeNats(relay.nc);
        }).then(
          () => {
            logger.info(c.stats(), 'stopped');
            resolve(0);
          },
          (err: Error) => {
            logger.error({ err: err.message }, 'shutdown failed');
            resolve(1);
          },
        );
      };
      signals.onStop(stop);
    });
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`wgflow collect: ${err.message}\nRun "wgflow collect --help" for the options.\n`);
      return 2;
    }
    throw err;
  }
}
