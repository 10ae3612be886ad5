// Ring buffer to JavaScript: records/s from the kernel ring into TypeScript, in batches.
// The kernel side is filled first (START records of distinct new flows, via BPF_PROG_TEST_RUN),
// then drained by poll(): raw batches (the baseline: transfer only) and decoded batches.
//
//   node build/bench/ring.js [--rounds 5] [--records 200000]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Datapath } from '../src/datapath/datapath';
import { REPO_ROOT } from '../src/util/addon';
import { decodeRecords, RECORD_SIZE } from '../src/datapath/records';
import { ipv4 } from '../testkit/packets';
import { median } from '../testkit/bench-run';

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, records: { type: 'string', default: '200000' } } });
const ROUNDS = Number(args.rounds);
const N = Number(args.records);

async function fillAndDrain(dp: Datapath, round: number, decode: boolean): Promise<number> {
  const pkt = ipv4('10.0.0.1', '10.0.0.2', { proto: 17, sport: 1, dport: 53 });
  for (let i = 0; i < N; i++) {
    pkt.writeUInt16BE(1024 + (i & 0x7fff), 34);
    pkt[28] = (i >> 15) & 255;
    pkt[29] = round * 2 + (decode ? 1 : 0);
    dp.testRun('wgflow_ingress_eth', pkt);
  }
  let got = 0;
  const t0 = process.hrtime.bigint();
  while (got < N) {
    const buf = await dp.pollRaw(0);
    got += decode ? decodeRecords(buf).length : buf.byteLength / RECORD_SIZE;
  }
  return N / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function main(): Promise<void> {
  const dp = Datapath.open({ maxFlows: 2 * (ROUNDS + 1) * N + 1024, ringBytes: 1 << 24 });
  const raw: number[] = [], decoded: number[] = [];
  try {
    // One uncounted round warms the JIT for both paths.
    await fillAndDrain(dp, ROUNDS, false);
    await fillAndDrain(dp, ROUNDS, true);
    for (let r = 0; r < ROUNDS; r++) {
      raw.push(await fillAndDrain(dp, r, false));
      decoded.push(await fillAndDrain(dp, r, true));
    }
  } finally {
    dp.close();
  }
  const m = { raw: median(raw), decoded: median(decoded) };
  console.log(`ring -> JS: ${N} records per round, ${ROUNDS} rounds, medians`);
  console.log('| delivery | records/s | x raw |');
  console.log('|---|---:|---:|');
  console.log(`| raw batches (poll only, baseline) | ${Math.round(m.raw).toLocaleString('en')} | 1.00 |`);
  console.log(`| decoded batches (poll + decodeRecords) | ${Math.round(m.decoded).toLocaleString('en')} | ${(m.decoded / m.raw).toFixed(2)} |`);
  console.log(`target: >= 5,000,000 decoded records/s: ${m.decoded >= 5e6 ? 'met' : 'MISSED'}`);
  mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(REPO_ROOT, 'bench', 'results', 'ring.json'), JSON.stringify({ when: new Date().toISOString(), records: N, rounds: ROUNDS, medians: m, raw, decoded }, null, 2));
}

void main();
