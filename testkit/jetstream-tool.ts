// Test kit for the JetStream output (not shipped), run as `node build/testkit/jetstream-tool.js`:
//
//   publish --jetstream URLS --spool DIR --count N [--seed S] [--batch B] [--replicas 1|3] [--rate R]
//       N synthetic events through the real JetStreamExporter and spool; prints {"acked":n} lines
//       and {"done":...} when the spool is empty. With --rate, R events/s are emitted over time
//       (as a daemon would) and the lines also say how many were enqueued so far. Crash tests SIGKILL it and run it again with
//       --count 0 on the same spool to deliver what the first run left.
//   dump --jetstream URLS [--stream NAME]
//       every message of the stream as one JSON line: {"seq","subject","id","line"} (line: the
//       decoded event as wgflow's JSON line, receive time = event time). Runs where the servers are reachable (e.g. inside a namespace).
import pino from 'pino';
import { jetstreamManager } from '@nats-io/jetstream';
import { parseFlags } from '../src/cli/args';
import { toJsonLine } from '../src/model/json';
import { JetStreamExporter } from '../src/output/jetstream/exporter';
import { connectNats, JETSTREAM_DEFAULTS, MSG_ID_HEADER } from '../src/wire/jetstream';
import { readFlowEvent } from '../src/wire/reader';
import { syntheticEvent } from './synthetic';

const OPTIONS = {
  jetstream: { type: 'string' },
  spool: { type: 'string' },
  count: { type: 'string' },
  seed: { type: 'string' },
  batch: { type: 'string' },
  stream: { type: 'string' },
  replicas: { type: 'string' },
  rate: { type: 'string' },
} as const;

async function publish(f: ReturnType<typeof parseFlags<typeof OPTIONS>>): Promise<number> {
  const count = Number(f.count ?? 0);
  const batch = Number(f.batch ?? 100);
  const seed = f.seed ?? 'test';
  const exp = new JetStreamExporter({
    connection: { servers: f.jetstream!, timeoutMs: 2000 },
    stream: { stream: f.stream ?? JETSTREAM_DEFAULTS.stream, replicas: Number(f.replicas ?? JETSTREAM_DEFAULTS.replicas) },
    spool: { dir: f.spool! },
    publishTimeoutMs: 2000,
    backoff: { initialMs: 100, maxMs: 1000 },
    logger: pino({ level: 'warn' }, pino.destination(2)),
  });
  exp.start();
  // Everything goes into the spool first (one synchronous loop): a kill after {"enqueued"} finds
  // all N accepted, so a restart must deliver all N.
  let enqueued = 0;
  const rate = Number(f.rate ?? 0);
  if (rate > 0) {
    // R events/s in 10 ms ticks, from the start time (a slow tick catches up).
    const t0 = Date.now();
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const due = Math.min(count, Math.floor(((Date.now() - t0) * rate) / 1000));
        if (due > enqueued) exp.emit(Array.from({ length: due - enqueued }, (_, k) => syntheticEvent(seed, enqueued + k)));
        enqueued = due;
        process.stdout.write(`${JSON.stringify({ enqueued, acked: exp.stats().acked })}\n`);
        if (enqueued === count) {
          clearInterval(tick);
          resolve();
        }
      }, 10);
    });
  } else {
    for (let i = 0; i < count; i += batch) exp.emit(Array.from({ length: Math.min(batch, count - i) }, (_, k) => syntheticEvent(seed, i + k)));
    enqueued = count;
  }
  process.stdout.write(`${JSON.stringify({ enqueued: count })}\n`);
  const timer = setInterval(() => process.stdout.write(`${JSON.stringify({ acked: exp.stats().acked })}\n`), 5);
  await exp.whenIdle();
  clearInterval(timer);
  const s = await exp.stop();
  process.stdout.write(`${JSON.stringify({ done: true, acked: s.acked, duplicates: s.duplicates, published: s.published })}\n`);
  return 0;
}

async function dump(f: ReturnType<typeof parseFlags<typeof OPTIONS>>): Promise<number> {
  const nc = await connectNats({ servers: f.jetstream!, timeoutMs: 5000 });
  try {
    const jsm = await jetstreamManager(nc);
    const stream = f.stream ?? JETSTREAM_DEFAULTS.stream;
    const info = await jsm.streams.info(stream);
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      if (!m) continue;
      const r = readFlowEvent(Buffer.from(m.data));
      const line = r.kind === 'event' ? toJsonLine(r.event, r.event.timestampMs) : null;
      process.stdout.write(`${JSON.stringify({ seq, subject: m.subject, id: m.header.get(MSG_ID_HEADER), line })}\n`);
    }
  } finally {
    await nc.close();
  }
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const f = parseFlags(rest, OPTIONS);
  if (!f.jetstream) throw new Error('--jetstream URLS is required');
  if (cmd === 'publish') {
    if (!f.spool) throw new Error('--spool DIR is required');
    return publish(f);
  }
  if (cmd === 'dump') return dump(f);
  throw new Error(`unknown command ${cmd}: publish or dump`);
}

if (require.main === module) {
  main(process.argv.slice(2)).then((c) => process.exit(c), (err: unknown) => {
    process.stderr.write(`jetstream-tool: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
