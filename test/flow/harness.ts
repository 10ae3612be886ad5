// A synchronous stand-in for the pipeline loop over FakeKernel and a ManualClock.
import { Attributor } from '../../src/attribution/attributor';
import type { AttributionConfig } from '../../src/attribution/config';
import { ManualClock } from '../../src/model/clock';
import type { FlowEvent } from '../../src/model/event';
import { FlowTracker, type TrackerOptions } from '../../src/flow/tracker';
import { FakeKernel } from './builders';

export const BOOT_ID = '2f6a0c1e-8d4b-4a77-9c55-0e3b1d2a4f68';

export interface Harness {
  clock: ManualClock;
  kernel: FakeKernel;
  tracker: FlowTracker;
  attributor: Attributor;
  events: FlowEvent[];
  /** One loop iteration: ring records, optionally a drain, due deletes. Returns the new events. */
  cycle(opts?: { drain?: boolean }): FlowEvent[];
  /** Advance time by ms in steps of stepMs, cycling each step and draining every drainMs. */
  run(ms: number, opts?: { stepMs?: number; drainMs?: number }): FlowEvent[];
  /** Events of one type. */
  of(type: FlowEvent['type']): FlowEvent[];
}

export function harness(opts: TrackerOptions & { tables?: AttributionConfig } = {}): Harness {
  const clock = new ManualClock();
  const kernel = new FakeKernel(() => clock.nowNs);
  const attributor = new Attributor(opts.tables ?? {}, { clock });
  const tracker = new FlowTracker({ clock, bootId: BOOT_ID, interfaceName: (i) => `wg${i}`, attributor, reporterId: 'me', ...opts });
  const events: FlowEvent[] = [];
  let lastDrainNs = clock.nowNs;
  const cycle = (o: { drain?: boolean } = {}): FlowEvent[] => {
    const out: FlowEvent[] = [];
    out.push(...tracker.onRecords(kernel.takeRecords()));
    if (o.drain) {
      out.push(...tracker.onDrain(kernel.readSync()));
      lastDrainNs = clock.nowNs;
    }
    const keys = tracker.dueDeletes();
    if (keys.length > 0) out.push(...tracker.onDeleted(keys, kernel.deleteSync(keys)));
    events.push(...out);
    return out;
  };
  const run = (ms: number, o: { stepMs?: number; drainMs?: number } = {}): FlowEvent[] => {
    const step = o.stepMs ?? 100;
    const drainNs = (o.drainMs ?? 1000) * 1e6;
    const out: FlowEvent[] = [];
    for (let t = 0; t < ms; t += step) {
      clock.advanceMs(Math.min(step, ms - t));
      out.push(...cycle({ drain: clock.nowNs - lastDrainNs >= drainNs }));
    }
    return out;
  };
  return { clock, kernel, tracker, attributor, events, cycle, run, of: (type) => events.filter((e) => e.type === type) };
}

/** Sum of counters over events. */
export function sum(evs: FlowEvent[]): { rxPackets: number; txPackets: number; rxBytes: number; txBytes: number } {
  const s = { rxPackets: 0, txPackets: 0, rxBytes: 0, txBytes: 0 };
  for (const e of evs) {
    s.rxPackets += e.rxPackets;
    s.txPackets += e.txPackets;
    s.rxBytes += e.rxBytes;
    s.txBytes += e.txBytes;
  }
  return s;
}
