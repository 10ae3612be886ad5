// The JetStream test kit's publisher (`jetstream-tool publish`: synthetic events through the real
// JetStreamExporter and its spool) as a child process whose progress records ({"enqueued"},
// {"acked"}, {"done"}) are parsed as they come; the fault tests act on them (kill a server, kill
// the publisher) at a given point.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { JetStreamManager, StreamInfo } from '@nats-io/jetstream';
import { budget } from '../../testkit/slow';
import { REPO } from '../export/helpers';

const TOOL = join(REPO, 'build', 'testkit', 'jetstream-tool.js');

export interface PublishRecord {
  enqueued?: number;
  acked?: number;
  done?: boolean;
  duplicates?: number;
  published?: number;
}

export interface PublisherOptions {
  urls: string;
  spool: string;
  count: number;
  seed: string;
  batch?: number;
  replicas?: 1 | 3;
  /** Events per second over time, instead of all at once. */
  rate?: number;
  /** SIGKILLed after this long (scaled for slow machines). */
  timeoutMs?: number;
}

export class Publisher {
  readonly child: ChildProcess;
  /** The latest value of each field over the records so far. */
  last: PublishRecord = {};
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  /** onRecord sees each record as it comes (e.g. to kill something at a point). */
  constructor(o: PublisherOptions, onRecord?: (r: PublishRecord, p: Publisher) => void) {
    const args = ['publish', '--jetstream', o.urls, '--spool', o.spool, '--count', String(o.count), '--seed', o.seed];
    if (o.batch !== undefined) args.push('--batch', String(o.batch));
    if (o.replicas !== undefined) args.push('--replicas', String(o.replicas));
    if (o.rate !== undefined) args.push('--rate', String(o.rate));
    this.child = spawn(process.execPath, [TOOL, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        const r = JSON.parse(l) as PublishRecord;
        this.last = { ...this.last, ...r };
        onRecord?.(r, this);
      }
    });
    const timer = setTimeout(() => this.kill(), budget(o.timeoutMs ?? 45_000));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    }));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(): void {
    if (this.running) this.child.kill('SIGKILL');
  }

  /** Waits until pred holds for the records so far; throws with them after timeoutMs. */
  async until(what: string, pred: (last: PublishRecord) => boolean, timeoutMs: number): Promise<void> {
    for (const end = Date.now() + budget(timeoutMs); !pred(this.last); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > end || !this.running) throw new Error(`publisher: ${this.running ? 'timed out' : 'exited'} waiting for ${what}: ${JSON.stringify(this.last)} ${this.stderr}`);
    }
  }
}

/** A JetStream request retried on a timeout (a leader election, a loaded machine), up to 5 tries. */
export async function retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 5 || !/timeout/i.test(`${(err as Error).name} ${(err as Error).message}`)) throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
}

/** The Nats-Msg-Id of every message of the stream, and how many messages it holds. */
export async function storedMsgIds(jsm: JetStreamManager, stream: string): Promise<{ messages: number; ids: Set<string>; info: StreamInfo }> {
  const info = await retrying(`stream info ${stream}`, () => jsm.streams.info(stream));
  const ids = new Set<string>();
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await retrying(`message ${seq}`, () => jsm.streams.getMessage(stream, { seq }));
    if (m) ids.add(m.header.get('Nats-Msg-Id'));
  }
  return { messages: info.state.messages, ids, info };
}
