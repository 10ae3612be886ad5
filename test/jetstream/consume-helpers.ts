// Plumbing of the `wgflow consume` tests: publishing synthetic events in the contract's message
// form (src/wire/jetstream.ts), starting `wgflow consume` processes, reading their output.
import { existsSync } from 'node:fs';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { keyOfUuid } from '../../src/collector/dedup';
import { JETSTREAM_DEFAULTS, messageHeaders, messageOf } from '../../src/wire/jetstream';
import { syntheticEvent } from '../../testkit/synthetic';
import { budget } from '../../testkit/slow';
import { collectedIds, Proc } from '../export/helpers';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Publishes synthetic events from..from+n-1 of the run `seed` as the exporter does (subject,
 * payload, Nats-Msg-Id), `window` PubAcks outstanding at a time. A failed publish (a leader
 * election, a server killed) is retried with the same message id until it is acked, so every
 * event is in the stream once. msgIdSuffix makes the stream see a new message id for the same
 * event (a resend after the duplicate window).
 */
export async function publishEvents(nc: NatsConnection, seed: string, from: number, n: number, o: { prefix?: string; window?: number; msgIdSuffix?: string; onAcked?: (count: number) => void } = {}): Promise<{ retries: number; duplicates: number }> {
  const js: JetStreamClient = jetstream(nc, { timeout: 5_000 });
  const window = o.window ?? 256;
  let next = from, acked = 0, retries = 0, duplicates = 0;
  const one = async (i: number): Promise<void> => {
    const m = messageOf(o.prefix ?? JETSTREAM_DEFAULTS.subjectPrefix, syntheticEvent(seed, i));
    for (let attempt = 0; ; attempt++) {
      try {
        const ack = await js.publish(m.subject, m.payload, { headers: messageHeaders(m.msgId + (o.msgIdSuffix ?? '')) });
        if (ack.duplicate) duplicates++;
        acked++;
        o.onAcked?.(acked);
        return;
      } catch (err) {
        if (attempt > 200) throw err;
        retries++;
        await sleep(100);
      }
    }
  };
  const workers = Array.from({ length: window }, async () => {
    while (next < from + n) await one(next++);
  });
  await Promise.all(workers);
  return { retries, duplicates };
}

/** Starts `wgflow consume` with the usual test flags and waits for its "consuming" line. */
export async function startConsume(urls: string, durable: string, out: string, extra: string[] = []): Promise<Proc> {
  const p = new Proc(['consume', '--jetstream', urls, '--durable', durable, '--out', out, ...extra], `consume ${durable}`);
  await p.waitJson((o) => o.msg === 'consuming', 'the "consuming" log line', budget(20_000), 'stderr');
  return p;
}

/** Event ids (dedup keys) and how often each occurs, over several output dirs. */
export function idsOver(dirs: string[]): Map<string, number> {
  const all = new Map<string, number>();
  for (const d of dirs) {
    if (!existsSync(d)) continue;
    for (const [k, n] of collectedIds(d)) all.set(k, (all.get(k) ?? 0) + n);
  }
  return all;
}

/** Waits until some id is in the dirs (polls the files). */
export async function waitForFirst(dirs: string[], what: string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + budget(timeoutMs);
  while (idsOver(dirs).size === 0) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Waits until the dirs hold at least n distinct ids (polls the files). */
export async function waitForIds(dirs: string[], n: number, what: string, timeoutMs = 40_000): Promise<Map<string, number>> {
  const until = Date.now() + budget(timeoutMs);
  for (;;) {
    const ids = idsOver(dirs);
    if (ids.size >= n) return ids;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}: ${ids.size} of ${n} ids written`);
    await sleep(50);
  }
}

/** Waits until every one of these event ids (UUID text) is in the dirs. */
export async function waitForAll(dirs: string[], uuids: string[], what: string, timeoutMs = 40_000): Promise<void> {
  const keys = uuids.map(keyOfUuid);
  const until = Date.now() + budget(timeoutMs);
  for (;;) {
    const ids = idsOver(dirs);
    const missing = keys.filter((k) => !ids.has(k)).length;
    if (missing === 0) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}: ${missing} of ${keys.length} ids missing`);
    await sleep(50);
  }
}

/** The "stopped" stats line of a consume process that has exited. */
export function stoppedStats(p: Proc): Record<string, unknown> | undefined {
  return p.json('stderr').find((o) => o.msg === 'stopped');
}
