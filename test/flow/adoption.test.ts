// Flows adopted after a restart (SIGKILL, pinned maps): a TCP connection whose FIN/RST the dead
// daemon never saw must not stay active for tcpIdleMs (2 h) when nothing moves after adoption.
import { describe, expect, it } from 'vitest';
import type { FlowEvent } from '../../src/model/event';
import { FlowTracker, type TrackerOptions } from '../../src/flow/tracker';
import { conn, TCP } from './builders';
import { BOOT_ID, harness, type Harness } from './harness';

/** The restarted daemon: a new tracker on the same kernel and clock, driven like the pipeline loop. */
function restart(h: Harness, opts: TrackerOptions = {}): { t: FlowTracker; run: (ms: number, each?: () => void) => FlowEvent[] } {
  const t = new FlowTracker({ clock: h.clock, bootId: BOOT_ID, interfaceName: (i) => `wg${i}`, reporterId: 'me', ...opts });
  h.kernel.takeRecords(); // ring records of the dead run are gone with it
  const run = (ms: number, each?: () => void): FlowEvent[] => {
    const out: FlowEvent[] = [];
    for (let i = 0; i < ms; i += 1000) {
      each?.();
      out.push(...t.onRecords(h.kernel.takeRecords()));
      out.push(...t.onDrain(h.kernel.readSync()));
      const keys = t.dueDeletes();
      if (keys.length > 0) out.push(...t.onDeleted(keys, h.kernel.deleteSync(keys)));
      h.clock.advanceMs(1000);
    }
    return out;
  };
  return { t, run };
}

function handshake(h: Harness, c: ReturnType<typeof conn>): void {
  h.kernel.packet(c, true, { tcpFlags: TCP.SYN, bytes: 60 });
  h.kernel.packet(c, false, { tcpFlags: TCP.SYN | TCP.ACK, bytes: 60 });
  h.kernel.packet(c, true, { tcpFlags: TCP.ACK | TCP.PSH, bytes: 500 });
}

describe('adopted flows', () => {
  it('a silent adopted TCP flow ends after the UDP idle timeout with its totals; a moving one stays', () => {
    const h = harness();
    const quiet = conn({ src: '100.64.0.1', sport: 4000, dst: '100.64.0.2', dport: 443, local: true });
    const busy = conn({ src: '100.64.0.1', sport: 4001, dst: '100.64.0.2', dport: 443, local: true });
    handshake(h, quiet);
    handshake(h, busy);
    h.cycle({ drain: true });
    h.clock.advanceMs(5_000); // SIGKILL, then the daemon comes back 5 s later

    const { t, run } = restart(h, { udpIdleMs: 30_000 }); // tcpIdleMs stays at its 2 h default
    const moving = (): void => h.kernel.packet(busy, true, { bytes: 100 });
    const first = run(29_000, moving);
    expect(first.filter((e) => e.type === 'START')).toHaveLength(2);
    expect(first.filter((e) => e.type === 'END')).toEqual([]);

    const ends = run(2_000, moving).filter((e) => e.type === 'END');
    expect(ends).toHaveLength(1);
    expect(ends[0]).toMatchObject({
      source: { port: 4000 }, endReason: 'idle', txPackets: 2, rxPackets: 1, txBytes: 560, rxBytes: 60,
    });
    expect(t.stats()).toMatchObject({ adopted: 2, adoptedIdleEnded: 1 });

    // The moving flow is still there ten minutes on (UPDATEs, no END).
    const later = run(600_000, moving);
    expect(later.filter((e) => e.type === 'END')).toEqual([]);
    expect(later.filter((e) => e.type === 'UPDATE').length).toBeGreaterThan(5);
    expect(t.has(busy.key.id)).toBe(true);
  });

  it('an adopted flow that moves after adoption then goes quiet keeps the normal TCP timeout', () => {
    const h = harness();
    const c = conn({ src: '100.64.0.1', sport: 4000, dst: '100.64.0.2', dport: 443, local: true });
    handshake(h, c);
    h.cycle({ drain: true });
    h.clock.advanceMs(5_000);
    const { t, run } = restart(h, { udpIdleMs: 30_000, tcpIdleMs: 300_000 });
    run(2_000);
    h.kernel.packet(c, false, { bytes: 80 }); // it is alive: the rest is TCP's business
    expect(run(200_000).filter((e) => e.type === 'END')).toEqual([]);
    const ends = run(110_000).filter((e) => e.type === 'END');
    expect(ends).toMatchObject([{ endReason: 'idle', rxPackets: 2 }]);
    expect(t.stats().adoptedIdleEnded).toBe(0);
  });

  it('a flow the tracker saw start is not affected (normal TCP timeout)', () => {
    const h = harness({ udpIdleMs: 30_000 });
    const c = conn({ src: '100.64.0.1', sport: 4000, dst: '100.64.0.2', dport: 443, local: true });
    handshake(h, c);
    h.cycle({ drain: true });
    expect(h.run(120_000).filter((e) => e.type === 'END')).toEqual([]);
    expect(h.tracker.stats().adoptedIdleEnded).toBe(0);
  });
});
