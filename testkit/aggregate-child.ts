// A process for the aggregated profile's crash test (test/export/aggregate.test.ts): the real
// exporter and spool behind the window aggregator, fed aggregateTraffic events [from, to) on a clock
// that follows the events' times. With --hold it stops after the last one and waits to be
// killed (kill -9 mid-window); with --finish it moves the clock past the open window, closes it and
// exits once everything is acknowledged.
//
// stdout: {"event":"held",...} or {"event":"done",...}. Logs go to stderr.
import { join } from 'node:path';
import pino from 'pino';
import { Exporter } from '../src/output/grpc/exporter';
import { WindowAggregator } from '../src/output/aggregator';
import { aggregateTraffic } from './aggregate-traffic';

function arg(name: string, dflt?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) {
    if (dflt !== undefined) return dflt;
    throw new Error(`aggregate-child: --${name} is required`);
  }
  return process.argv[i + 1];
}

async function main(): Promise<void> {
  const events = aggregateTraffic(arg('seed'), Number(arg('flows')));
  const from = Number(arg('from', '0'));
  const to = Math.min(events.length, Number(arg('to', String(events.length))));
  const windowMs = Number(arg('window-ms'));
  const spool = arg('spool');
  const log = pino({ level: 'warn' }, pino.destination(2));
  let now = events[Math.min(from, events.length - 1)].timestampMs;
  const exporter = new Exporter({ url: arg('collector'), spool: { dir: spool, fsync: 'never' }, logger: log });
  exporter.start();
  const agg = new WindowAggregator({ dir: join(spool, 'aggregate'), windowMs, target: exporter, logger: log, now: () => now, timer: false, closeTarget: (ms) => exporter.close(ms) });
  for (let i = from; i < to; i++) {
    now = events[i].timestampMs;
    agg.emit([events[i]]);
  }
  if (process.argv.includes('--hold')) {
    process.stdout.write(`${JSON.stringify({ event: 'held', ...agg.stats() })}\n`);
    setInterval(() => undefined, 1 << 30);
    return;
  }
  now = events[events.length - 1].timestampMs + 2 * windowMs;
  agg.tick();
  const stats = agg.stats();
  await agg.close(30_000);
  process.stdout.write(`${JSON.stringify({ event: 'done', ...stats, exporter: exporter.stats() })}\n`);
  process.exit(0);
}

main().catch((err: Error) => {
  process.stderr.write(`aggregate-child: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
