// The DROP event reporter on hand-made drop aggregates: one event per aggregate and window,
// attributed like flows, named after the first matching `action: drop` policy (or none), the
// export filters applied, stable flow ids across windows; a window an output refuses is counted
// as lost (as the flow pipeline counts refused events), never reported twice.
import { describe, expect, it } from 'vitest';
import { Attributor } from '../../src/attribution/attributor';
import { DIR_EGRESS, DIR_INGRESS, DropEntry, FlowKind, LAYOUT } from '../../src/datapath/records';
import { DropReporter } from '../../src/flow/drops';
import { EMIT_CHUNK } from '../../src/flow/pipeline';
import { ManualClock } from '../../src/model/clock';
import type { FlowEvent } from '../../src/model/event';
import { parseIp } from '../../src/net/ip';

const attribution = {
  overlay: ['100.64.0.0/16'],
  peers: [
    { id: 'p-alice', name: 'alice', ip: '100.64.0.2', groups: ['staff'], user: { id: 'u-a', name: 'Alice', email: 'a@example.com' } },
    { id: 'p-bob', name: 'bob', ip: '100.64.0.3', groups: ['guests'] },
  ],
  resources: [{ id: 'r-db', name: 'db', type: 'SUBNET' as const, prefixes: ['10.1.0.0/24'] }],
  policies: [
    { id: 'pol-ok', name: 'staff to db', action: 'accept' as const, sources: [{ group: 'staff' }], destinations: [{ resource: 'r-db' }] },
    { id: 'pol-off', name: 'disabled deny', action: 'drop' as const, enabled: false, sources: [{ group: 'guests' }], destinations: [{ resource: 'r-db' }] },
    { id: 'pol-no-guests', name: 'no guests to db', action: 'drop' as const, sources: [{ group: 'guests' }], destinations: [{ resource: 'r-db' }], protocol: 'tcp' as const, ports: [5432] },
    { id: 'pol-both', name: 'nothing between alice and bob', action: 'drop' as const, bidirectional: true, sources: [{ peer: 'p-alice' }], destinations: [{ peer: 'p-bob' }] },
  ],
};

const K = LAYOUT.wgf_drop_key;

function entry(o: { src: string; dst: string; sport?: number; dport?: number; proto?: number; kind?: FlowKind; dir?: number; packets?: number; bytes?: number; firstNs?: number; lastNs?: number; reason?: number; ifindex?: number }): DropEntry {
  const s = parseIp(o.src)!, d = parseIp(o.dst)!;
  const family = s.length === 16 ? 6 : 4;
  const key = new Uint8Array(K.size);
  key.set(s, K.saddr);
  key.set(d, K.daddr);
  const sport = o.sport ?? 0, dport = o.dport ?? 0;
  key[K.sport] = sport >> 8; key[K.sport + 1] = sport & 255;
  key[K.dport] = dport >> 8; key[K.dport + 1] = dport & 255;
  key[K.proto] = o.proto ?? 17;
  key[K.kind] = o.kind ?? FlowKind.Ports;
  key[K.family] = family;
  key[K.dir] = o.dir ?? DIR_INGRESS;
  key[K.ifindex] = o.ifindex ?? 7;
  return {
    family, saddr: key.subarray(0, s.length), daddr: key.subarray(16, 16 + d.length), sport, dport, proto: o.proto ?? 17, kind: o.kind ?? FlowKind.Ports,
    dir: o.dir ?? DIR_INGRESS, ifindex: o.ifindex ?? 7, firstNs: o.firstNs ?? 2_000_000_000_000, lastNs: o.lastNs ?? 2_000_500_000_000,
    packets: o.packets ?? 3, bytes: o.bytes ?? 300, reason: o.reason ?? 12, flags: 0, key,
  };
}

function reporter(batches: DropEntry[][], sink: (evs: FlowEvent[]) => Promise<void>, filters: Record<string, unknown> = {}): DropReporter {
  const clock = new ManualClock(2_001_000_000_000);
  return new DropReporter({
    source: { drain: async () => batches.shift() ?? [] },
    attributor: new Attributor({ ...attribution, ...filters }, { clock }),
    sink, reporterId: 'router-1', reporterPublicKey: '',
    reasonName: (r) => ({ 12: 'NETFILTER_DROP', 3: 'NO_SOCKET' })[r] ?? `REASON_${r}`,
    interfaceName: (i) => (i === 7 ? 'wg0' : `if${i}`),
    clock, bootId: '3f8c1d52-8f25-4a53-9a2e-6f0e6b1b2c4d',
  });
}

describe('DropReporter', () => {
  it('one event per aggregate: endpoints, user, counters on the side the packets went, reason, window', async () => {
    const got: FlowEvent[] = [];
    const r = reporter([[
      entry({ src: '100.64.0.3', dst: '10.1.0.5', sport: 40000, dport: 5432, proto: 6, packets: 4, bytes: 240, firstNs: 2_000_000_000_000, lastNs: 2_000_400_000_000 }),
      entry({ src: '10.1.0.5', dst: '100.64.0.2', sport: 8125, dport: 9999, dir: DIR_EGRESS, packets: 2, bytes: 130, reason: 3 }),
    ]], async (evs) => void got.push(...evs));
    await r.flush();
    expect(got).toHaveLength(2);
    const [a, b] = got;
    expect(a).toMatchObject({
      type: 'DROP', direction: 'INGRESS', protocol: 6, rxPackets: 4, rxBytes: 240, txPackets: 0, txBytes: 0,
      ruleId: 'pol-no-guests', policyName: 'no guests to db', dropReason: 'NETFILTER_DROP', interfaceName: 'wg0', reporterId: 'router-1',
      source: { ip: '100.64.0.3', port: 40000, id: 'p-bob', type: 'PEER' }, destination: { ip: '10.1.0.5', port: 5432, id: 'r-db', type: 'SUBNET_RESOURCE' },
    });
    expect(a.windowEndMs! - a.windowStartMs!).toBe(400);
    expect(a.timestampMs).toBe(a.windowStartMs);
    expect(b).toMatchObject({ direction: 'EGRESS', txPackets: 2, txBytes: 130, rxPackets: 0, dropReason: 'NO_SOCKET', user: { id: '' }, destination: { id: 'p-alice' } });
    // Alice may reach the db: no drop policy names this one.
    expect(b).toMatchObject({ ruleId: '', policyName: '' });
    expect(r.stats()).toMatchObject({ events: 2, packets: 6, bytes: 370, windows: 1 });
  });

  it('the first enabled matching drop policy: protocol and ports must match; bidirectional ones both ways; disabled ones never', async () => {
    const got: FlowEvent[] = [];
    const r = reporter([[
      entry({ src: '100.64.0.3', dst: '10.1.0.5', sport: 1, dport: 5433, proto: 6 }), // port not denied (and pol-off is disabled)
      entry({ src: '100.64.0.3', dst: '10.1.0.5', sport: 1, dport: 5432, proto: 17 }), // udp: not denied
      entry({ src: '100.64.0.3', dst: '100.64.0.2', sport: 1, dport: 80, proto: 6 }), // bob -> alice: the reverse of pol-both
      entry({ src: '100.64.0.2', dst: '100.64.0.3', proto: 1, kind: FlowKind.Icmp, dport: (8 << 8) | 0 }), // alice -> bob ping
    ]], async (evs) => void got.push(...evs));
    await r.flush();
    expect(got.map((e) => e.ruleId)).toEqual(['', '', 'pol-both', 'pol-both']);
    expect(got[3]).toMatchObject({ protocol: 1, icmpType: 8, icmpCode: 0, source: { port: 0 }, destination: { port: 0 } });
  });

  it('ids: the same drop key keeps its flow id from window to window; every event id is new', async () => {
    const got: FlowEvent[] = [];
    const same = { src: '100.64.0.3', dst: '10.1.0.5', sport: 40000, dport: 5432, proto: 6 };
    const r = reporter([[entry({ ...same, firstNs: 1e12 })], [entry({ ...same, firstNs: 1e12 + 5e9 })], [entry({ ...same, dport: 5431 })]], async (evs) => void got.push(...evs));
    await r.flush();
    await r.flush();
    await r.flush();
    expect(got[0].flowId).toBe(got[1].flowId);
    expect(got[2].flowId).not.toBe(got[0].flowId);
    expect(new Set(got.map((e) => e.eventId)).size).toBe(3);
  });

  it('the export filters leave drops out as they leave flows out, counted', async () => {
    const got: FlowEvent[] = [];
    const r = reporter([[entry({ src: '100.64.0.3', dst: '10.9.9.9', dport: 53 }), entry({ src: '100.64.0.3', dst: '10.1.0.5', dport: 22, proto: 6, packets: 5 })]],
      async (evs) => void got.push(...evs), { filters: { excludePrefixes: ['10.1.0.0/24'] } });
    await r.flush();
    expect(got).toEqual([]);
    expect(r.stats()).toMatchObject({ events: 0, filteredPackets: 8 });
  });

  it('a failing sink: the error is reported with its stage, the events counted as lost, the reporter goes on with the next window', async () => {
    const errors: Array<{ err: unknown; stage: string }> = [];
    let fail = true;
    const got: FlowEvent[] = [];
    const r = new DropReporter({
      source: { drain: async () => [entry({ src: '100.64.0.3', dst: '10.1.0.5', dport: 5432, proto: 6 })] },
      attributor: new Attributor(attribution), reporterId: 'r', reasonName: String, interfaceName: String,
      sink: async (evs) => {
        if (fail) throw new Error('disk full');
        got.push(...evs);
      },
      onError: (err, stage) => errors.push({ err, stage }),
    });
    await r.flush();
    fail = false;
    await r.flush();
    expect(errors).toHaveLength(1);
    expect(errors[0].stage).toBe('sink');
    expect(got).toHaveLength(1);
    expect(r.stats()).toMatchObject({ events: 1, errors: 1, lostEvents: 1 });
  });

  it('a window larger than one output batch goes out in chunks of EMIT_CHUNK; one refused chunk loses only itself', async () => {
    const n = EMIT_CHUNK * 2 + 5;
    const entries = Array.from({ length: n }, (_, i) => entry({ src: '100.64.0.3', dst: '10.1.0.5', sport: 10_000 + i, dport: 5432, proto: 6 }));
    const sizes: number[] = [];
    const r = reporter([entries], async (evs) => {
      sizes.push(evs.length);
      if (sizes.length === 2) throw new Error('disk full');
    });
    await r.flush();
    expect(sizes).toEqual([EMIT_CHUNK, EMIT_CHUNK, 5]);
    expect(r.stats()).toMatchObject({ events: EMIT_CHUNK + 5, lostEvents: EMIT_CHUNK, errors: 1 });
  });

  it('a drop policy naming a DOMAIN resource matches the addresses the name resolved to', async () => {
    const got: FlowEvent[] = [];
    const clock = new ManualClock(2_001_000_000_000);
    const attributor = new Attributor({
      ...attribution,
      resources: [...attribution.resources, { id: 'r-docs', name: 'docs', type: 'DOMAIN' as const, domains: ['docs.example.com'] }],
      policies: [
        ...attribution.policies,
        { id: 'pol-no-docs', name: 'no guests to docs', action: 'drop' as const, sources: [{ group: 'guests' }], destinations: [{ resource: 'r-docs' }] },
      ],
    }, { clock });
    attributor.feedResolved('docs.example.com', ['93.184.216.34'], 300);
    const r = new DropReporter({
      source: { drain: async () => [entry({ src: '100.64.0.3', dst: '93.184.216.34', sport: 40000, dport: 443, proto: 6 }), entry({ src: '100.64.0.3', dst: '93.184.216.35', sport: 40000, dport: 443, proto: 6 })] },
      attributor, sink: async (evs) => void got.push(...evs), reporterId: 'r', reasonName: String, interfaceName: String, clock,
      bootId: '3f8c1d52-8f25-4a53-9a2e-6f0e6b1b2c4d',
    });
    await r.flush();
    expect(got[0]).toMatchObject({ ruleId: 'pol-no-docs', destination: { id: 'r-docs', type: 'DOMAIN_RESOURCE' } });
    expect(got[1]).toMatchObject({ ruleId: '', destination: { id: '' } }); // not resolved from the name
  });
});
