// A fuzz of the collector's input, bounded in time: random bytes, random messages in valid
// framing, and mutated valid events (bit flips, cuts, insertions, bad lengths and flags). The
// collector must stay up, end each bad stream with a status, write only valid JSON lines, and
// still accept a good event afterwards.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { initiatorMessage } from '../../src/wire/codec';
import { syntheticEvent } from '../../testkit/synthetic';
import { writeFlowEvent } from '../../src/wire/writer';
import { eventIds, exactlyOnce, processSuite, senderDone, startCollector, startSender } from '../export/helpers';

const newDir = processSuite();

/** A deterministic generator, so that a failure can be replayed from its seed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

const frame = (msg: Buffer, flag = 0, len = msg.length): Buffer => {
  const out = Buffer.alloc(5 + msg.length);
  out[0] = flag;
  out.writeUInt32BE(len >>> 0, 1);
  msg.copy(out, 5);
  return out;
};

function mutate(msg: Buffer, r: () => number): Buffer {
  const b = Buffer.from(msg);
  switch (Math.floor(r() * 5)) {
    case 0: // bit flips
      for (let i = 0; i < 1 + r() * 4; i++) b[Math.floor(r() * b.length)] ^= 1 << Math.floor(r() * 8);
      return b;
    case 1: // cut
      return b.subarray(0, Math.floor(r() * b.length));
    case 2: // insert random bytes
      {
        const at = Math.floor(r() * b.length);
        return Buffer.concat([b.subarray(0, at), randomBytes(1 + Math.floor(r() * 8)), b.subarray(at)]);
      }
    case 3: // a byte set to a varint continuation or a huge length
      b[Math.floor(r() * b.length)] = r() < 0.5 ? 0xff : 0x80;
      return b;
    default: // bytes swapped
      {
        const i = Math.floor(r() * b.length), j = Math.floor(r() * b.length);
        [b[i], b[j]] = [b[j], b[i]];
        return b;
      }
  }
}

/** One stream's worth of hostile bytes. */
function payload(r: () => number, n: number): Buffer {
  const valid = writeFlowEvent(syntheticEvent('fuzz-base', n));
  switch (Math.floor(r() * 6)) {
    case 0:
      return randomBytes(1 + Math.floor(r() * 300));
    case 1:
      return frame(randomBytes(Math.floor(r() * 200)));
    case 2:
      return Buffer.concat([frame(initiatorMessage()), frame(mutate(valid, r))]);
    case 3:
      return frame(valid, 1 + Math.floor(r() * 254)); // a compressed flag nobody negotiated
    case 4:
      return frame(valid, 0, valid.length + 1 + Math.floor(r() * 0xffffff)); // a length that lies
    default:
      return Buffer.concat(Array.from({ length: 1 + Math.floor(r() * 5) }, () => frame(mutate(valid, r))));
  }
}

describe('hostile: collector input fuzz', () => {
  it('stays up through 3 s of mutated and random frames, writes only valid lines, then accepts a good event', async () => {
    const out = newDir('fuzz-out');
    const c = await startCollector(out);
    const seed = Date.now() & 0xffff;
    const r = rng(seed);
    const connect = (): http2.ClientHttp2Session => {
      const ss = http2.connect(c.url.replace('grpc:', 'http:'));
      ss.on('error', () => undefined);
      return ss;
    };
    let session = connect();
    let sessions = 1;
    const deadline = Date.now() + 3000;
    let streams = 0, statuses = 0;
    while (Date.now() < deadline && streams < 3000) {
      const batch = Array.from({ length: 20 }, () => {
        const n = streams++;
        return new Promise<void>((resolve) => {
          const req = session.request({ ':method': 'POST', ':path': '/flow.FlowService/Events', 'content-type': 'application/grpc', te: 'trailers' });
          req.on('error', () => resolve());
          req.on('trailers', () => statuses++);
          req.on('response', (h) => {
            if (h['grpc-status'] !== undefined) statuses++;
          });
          req.on('close', () => resolve());
          req.resume();
          req.end(payload(r, n));
        });
      });
      await Promise.all(batch);
      if (session.destroyed || session.closed) {
        session = connect();
        sessions++;
      }
    }
    session.destroy();
    console.log(`collector fuzz (seed ${seed}): ${streams} streams on ${sessions} connections, ${statuses} statuses`);
    expect(c.proc.alive, `collector died (seed ${seed})\n${c.proc.stderr.slice(-2000)}`).toBe(true);
    expect(statuses).toBeGreaterThan(streams * 0.9);
    // Whatever was written is one valid JSON event per line.
    const text = (() => {
      try {
        return readFileSync(join(out, 'events.jsonl'), 'utf8');
      } catch {
        return '';
      }
    })();
    for (const line of text.split('\n').filter((l) => l !== '')) expect((JSON.parse(line) as { id?: unknown }).id, `seed ${seed}`).toBeTypeOf('string');
    const s = startSender({ collector: c.url, spool: newDir('fuzz-spool'), count: 10, seed: 'fuzz-after' });
    expect(await senderDone(s)).toMatchObject({ ok: true, acked: 10 });
    expect(exactlyOnce(out, eventIds('fuzz-after', 10)).missing).toEqual([]);
    await c.proc.kill('SIGTERM');
  }, 60_000);
});
