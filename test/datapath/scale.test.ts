// The flow map at 1,000,000 entries: every flow stored and read back (whole and in chunks), within
// 128 bytes per flow of map memory by the kernel's own accounting.
import { expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { Datapath } from '../../src/datapath/datapath';
import { describePrivileged } from '../helpers/env';
import { ipv4 } from '../helpers/packets';

describePrivileged('a 1,000,000-flow map', () => {
  it('stores and reads back 1,000,000 distinct flows in <= 128 bytes each', async () => {
    const N = 1_000_000;
    const dp = Datapath.open({ maxFlows: N, maxFlowsV6: 1024, ringBytes: 1 << 12 });
    try {
      const pkt = ipv4('10.0.0.1', '10.0.0.2', { proto: 17, sport: 1, dport: 53 });
      for (let i = 0; i < N; i++) {
        pkt.writeUInt16BE(1024 + (i & 0x7fff), 34);
        pkt[28] = (i >> 15) & 255;
        pkt[29] = (i >> 23) & 255;
        dp.testRun('wgflow_ingress_eth', pkt);
      }
      const s = dp.stats();
      expect(s.flowsCreated).toBe(N);
      expect(s.mapFull).toBe(0);
      const flows = (await dp.readFlows()).slice();
      expect(flows.length).toBe(N);
      // The same in chunks (the drain's read): every flow exactly once, one chunk's memory at a time.
      const seen = new Set<string>();
      let chunks = 0;
      for await (const chunk of dp.readFlowChunks(100_000)) {
        chunks++;
        expect(chunk.length).toBeLessThan(100_000 + 4096 + 1);
        for (const e of chunk.slice()) seen.add(e.key.id);
      }
      expect(seen.size).toBe(N);
      expect(chunks).toBeGreaterThanOrEqual(10);
      const id = dp.mapInfo().find((m) => m.name === 'wgf_flows4')?.id;
      const info = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'id', String(id)], { encoding: 'utf8' })) as { bytes_memlock: number; max_entries: number };
      expect(info.max_entries).toBe(N);
      expect(info.bytes_memlock / N).toBeLessThanOrEqual(128);
    } finally {
      dp.close();
    }
  }, 120_000);
});
