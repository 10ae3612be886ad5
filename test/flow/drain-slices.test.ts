// A drain handed to the tracker in slices (beginDrain / drainEntries / endDrain, as the pipeline
// does) is the same drain as onDrain over all entries at once: same events, same state.
import { describe, expect, it } from 'vitest';
import { FLOW_SIZE, FlowMapRead, type FlowEntry, LAYOUT, RECORD_SIZE, type RingRecord } from '../../src/datapath/records';
import type { FlowEvent } from '../../src/model/event';
import { conn, TCP } from './builders';
import { harness, type Harness } from './harness';

/** A day in the life of 600 flows: discovered by the drain, updated, idle, vanished, closed. */
function scenario(h: Harness, drain: () => FlowEvent[], ring: (records: RingRecord[]) => FlowEvent[] = (r) => h.tracker.onRecords(r)): FlowEvent[] {
  const out: FlowEvent[] = [];
  const cycle = (withDrain: boolean): void => {
    out.push(...ring(h.kernel.takeRecords()));
    if (withDrain) out.push(...drain());
    const keys = h.tracker.dueDeletes();
    if (keys.length > 0) out.push(...h.tracker.onDeleted(keys, h.kernel.deleteSync(keys)));
  };
  const conns = Array.from({ length: 600 }, (_, i) => conn({ src: '100.64.0.1', sport: 1000 + i, dst: `10.0.${i % 7}.9`, dport: 443 + (i % 3), proto: i % 3 === 0 ? 6 : 17, local: true }));
  conns.forEach((c, i) => {
    h.kernel.ringFull = i % 4 === 0; // a quarter found only by the drain
    h.kernel.packet(c, true, c.proto === 6 ? { tcpFlags: TCP.SYN } : {});
  });
  h.kernel.ringFull = false;
  for (let step = 0; step < 40; step++) {
    h.clock.advanceMs(500);
    conns.forEach((c, i) => {
      if (i % 5 === step % 5 && (step < 25 || i % 8 !== 0)) h.kernel.packet(c, i % 2 === 0, { bytes: 100 + i }); // some go quiet
      if (step === 12 && i % 9 === 0 && c.proto === 6) {
        h.kernel.packet(c, true, { tcpFlags: TCP.FIN | TCP.ACK });
        h.kernel.packet(c, false, { tcpFlags: TCP.FIN | TCP.ACK });
      }
    });
    if (step === 20) for (const c of conns.slice(300, 330)) h.kernel.entries.delete(c.key.id); // gone behind our back
    cycle(step % 2 === 1);
  }
  return out;
}

describe('drain in slices', () => {
  it('gives the events and state of one onDrain, whatever the slice size', () => {
    const opts = { updateIntervalMs: 3000, udpIdleMs: 4000 };
    const whole = harness(opts);
    const want = scenario(whole, () => whole.tracker.onDrain(whole.kernel.readSync()));
    expect(want.filter((e) => e.type === 'UPDATE').length).toBeGreaterThan(100);
    expect(whole.tracker.stats()).toMatchObject({ discoveredWithoutStart: 150 });
    const reasons = new Set(want.filter((e) => e.type === 'END').map((e) => e.endReason));
    expect([...reasons].sort()).toEqual(['forced', 'idle', 'tcp_fin']);
    expect(whole.tracker.stats().vanished).toBeGreaterThan(0);
    for (const size of [1, 7, 64, 599, 10_000]) {
      const h = harness(opts);
      const got = scenario(h, () => {
        const entries = h.kernel.readSync();
        h.tracker.beginDrain();
        const out: FlowEvent[] = [];
        for (let i = 0; i < entries.length; i += size) out.push(...h.tracker.drainEntries(entries.slice(i, i + size)));
        out.push(...h.tracker.endDrain());
        return out;
      });
      expect(got).toEqual(want);
      expect(h.tracker.stats()).toEqual(whole.tracker.stats());
    }
  });

  it('the kernel\'s bytes read in place (ring batches, map reads) give the events and state of decoded records and entries', () => {
    const opts = { updateIntervalMs: 3000, udpIdleMs: 4000 };
    const objects = harness(opts);
    const want = scenario(objects, () => objects.tracker.onDrain(objects.kernel.readSync()));
    const h = harness(opts);
    const got = scenario(h, () => {
      const read = mapRead(h.kernel.readSync());
      h.tracker.beginDrain();
      const out: FlowEvent[] = [];
      for (let i = 0; i < read.length; i += 97) out.push(...h.tracker.drainRead(read, i, i + 97));
      out.push(...h.tracker.endDrain());
      return out;
    }, (records) => h.tracker.onRingBatch(ringBytes(records)));
    expect(got.length).toBeGreaterThan(1000);
    expect(got).toEqual(want);
    expect(h.tracker.stats()).toEqual(objects.tracker.stats());
  });

  it('drainEntries and endDrain without beginDrain are refused', () => {
    const h = harness();
    expect(() => h.tracker.drainEntries([])).toThrow(/beginDrain/);
    expect(() => h.tracker.endDrain()).toThrow(/beginDrain/);
  });
});

/** Ring records as the kernel writes them (bpf/wgflow.h's struct wgf_record). */
function ringBytes(records: RingRecord[]): Uint8Array {
  const R = LAYOUT.wgf_record;
  const b = new Uint8Array(records.length * RECORD_SIZE + 8).subarray(8); // not at offset 0 of its buffer
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  records.forEach((r, i) => {
    const o = i * RECORD_SIZE;
    b[o + R.type] = r.type;
    b[o + R.family] = r.key.family;
    b[o + R.dir] = r.dir;
    b[o + R.tcp_flags] = r.tcpFlags;
    v.setUint32(o + R.flags, r.flags, true);
    v.setUint32(o + R.ts_ns, r.tsNs % 0x1_0000_0000, true);
    v.setUint32(o + R.ts_ns + 4, Math.floor(r.tsNs / 0x1_0000_0000), true);
    b.set(r.key.raw, o + (r.key.family === 4 ? R.k4 : R.k6));
  });
  return b;
}

/** Entries as a batched map read returns them (IPv4 and IPv6 parts). */
function mapRead(entries: FlowEntry[]): FlowMapRead {
  const read = new FlowMapRead();
  for (const family of [4, 6] as const) {
    const es = entries.filter((e) => e.key.family === family);
    const size = family === 4 ? 16 : 40, F = LAYOUT.wgf_flow;
    const keys = new Uint8Array(es.length * size), values = new ArrayBuffer(es.length * FLOW_SIZE);
    const v = new DataView(values);
    es.forEach((e, i) => {
      keys.set(e.key.raw, i * size);
      const o = i * FLOW_SIZE, c = e.value;
      v.setUint32(o + F.first_ns, c.firstNs % 0x1_0000_0000, true);
      v.setUint32(o + F.first_ns + 4, Math.floor(c.firstNs / 0x1_0000_0000), true);
      v.setUint32(o + F.bytes, c.rxBytes % 0x1_0000_0000, true);
      v.setUint32(o + F.bytes + 4, Math.floor(c.rxBytes / 0x1_0000_0000), true);
      v.setUint32(o + F.bytes + 8, c.txBytes % 0x1_0000_0000, true);
      v.setUint32(o + F.bytes + 12, Math.floor(c.txBytes / 0x1_0000_0000), true);
      v.setUint32(o + F.packets, c.rxPackets, true);
      v.setUint32(o + F.packets + 4, c.txPackets, true);
      v.setUint32(o + F.last_seen, c.lastSeen, true);
      v.setUint32(o + F.flags, c.flags, true);
    });
    read.add(family, keys.buffer, values, es.length);
  }
  return read;
}
