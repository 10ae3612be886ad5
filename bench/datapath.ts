// Datapath benchmark: ns per packet of wgflow's TC program through BPF_PROG_TEST_RUN, next to an
// empty program and a minimal per-CPU counter measured in the same run. Rounds alternate between
// programs and the table reports medians and ratios (never trust one absolute time here).
//
//   node build/bench/datapath.js [--rounds 7] [--repeat 1000000] [--new-flows 20000]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Datapath } from '../src/datapath/datapath';
import { loadNative, REPO_ROOT } from '../src/util/addon';
import { ipv4 } from '../testkit/packets';
import { median } from '../testkit/bench-run';

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '7' },
    repeat: { type: 'string', default: '1000000' },
    'new-flows': { type: 'string', default: '20000' },
  },
});
const ROUNDS = Number(args.rounds);
const REPEAT = Number(args.repeat);
const NEW_FLOWS = Number(args['new-flows']);

const pkt = ipv4('10.0.0.2', '10.0.0.1', { proto: 6, sport: 40000, dport: 443, tcpFlags: 0x10, payload: 1000 });
const fresh = (i: number): Buffer => ipv4(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, '10.255.0.1', { proto: 6, sport: 1024 + (i % 60000), dport: 443, tcpFlags: 0x02, payload: 100 });
const freshPkts = Array.from({ length: NEW_FLOWS }, (_, i) => fresh(i));

const base = new (loadNative().ProgramSet)(join(REPO_ROOT, 'bench', 'bpf', 'baseline.bpf.o'));
const samples: Record<string, number[]> = { empty: [], counter: [], known: [], knownOff: [], emptyOnce: [], newFlow: [] };

for (let r = 0; r < ROUNDS; r++) {
  // Hit path: one packet repeated in the kernel (the flow exists after the first run).
  samples.empty.push(base.testRun('empty', pkt, { repeat: REPEAT }).durationNs);
  samples.counter.push(base.testRun('counter', pkt, { repeat: REPEAT }).durationNs);
  const dp = Datapath.open({ maxFlows: 65_536, ringBytes: 1 << 22 });
  try {
    dp.testRun('wgflow_ingress_eth', pkt);
    samples.known.push(dp.testRun('wgflow_ingress_eth', pkt, { repeat: REPEAT }).durationNs);
    dp.setCounting(false);
    samples.knownOff.push(dp.testRun('wgflow_ingress_eth', pkt, { repeat: REPEAT }).durationNs);
    dp.setCounting(true);
    // Insert path: distinct new flows, one run each, next to the empty program run the same way.
    let sumNew = 0, sumEmpty = 0;
    for (const p of freshPkts) {
      sumEmpty += base.testRun('empty', p).durationNs;
      sumNew += dp.testRun('wgflow_ingress_eth', p).durationNs;
    }
    samples.emptyOnce.push(sumEmpty / NEW_FLOWS);
    samples.newFlow.push(sumNew / NEW_FLOWS);
  } finally {
    dp.close();
  }
}
base.close();

const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)])) as Record<keyof typeof samples, number>;
const rows = [
  ['empty TC program (hit path)', m.empty, 1],
  ['minimal per-CPU counter', m.counter, m.counter / m.empty],
  ['wgflow, known flow', m.known, m.known / m.empty],
  ['wgflow, known flow, byte counting off', m.knownOff, m.knownOff / m.empty],
  ['empty TC program, one run per call', m.emptyOnce, 1],
  ['wgflow, new flow, one run per call', m.newFlow, m.newFlow / m.emptyOnce],
] as const;
console.log(`datapath: BPF_PROG_TEST_RUN, ${ROUNDS} alternating rounds, medians; hit path repeat=${REPEAT}, new flows=${NEW_FLOWS}`);
console.log('| program | ns/packet | x empty |');
console.log('|---|---:|---:|');
for (const [name, ns, ratio] of rows) console.log(`| ${name} | ${ns.toFixed(1)} | ${ratio.toFixed(2)} |`);
// The new-flow target is the path's own cost: one run per call pays the test-run harness (its
// timer reads, ~110 ns here), which the empty program run the same way measures; both figures
// are printed and recorded.
const newNet = m.newFlow - m.emptyOnce;
const targets = {
  knownFlowRatio: { value: m.known / m.empty, target: '<= 2.5', met: m.known / m.empty <= 2.5 },
  newFlowNs: { value: newNet, target: '<= 600', met: newNet <= 600, note: 'new-flow path net of the harness (minus the empty program, same calls)' },
  newFlowWithHarnessNs: { value: m.newFlow, note: 'including the harness' },
};
console.log(`targets: known flow ${targets.knownFlowRatio.value.toFixed(2)}x empty (${targets.knownFlowRatio.target}: ${targets.knownFlowRatio.met ? 'met' : 'MISSED'}); ` +
  `new flow ${newNet.toFixed(0)} ns net of the harness (${targets.newFlowNs.target}: ${targets.newFlowNs.met ? 'met' : 'MISSED'}; ${m.newFlow.toFixed(0)} ns including it)`);
mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
writeFileSync(join(REPO_ROOT, 'bench', 'results', 'datapath.json'), JSON.stringify({ when: new Date().toISOString(), rounds: ROUNDS, repeat: REPEAT, newFlows: NEW_FLOWS, medians: m, samples, targets }, null, 2));
