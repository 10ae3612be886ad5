// docs/config.md's list of every key and its default, made from the schema itself (one default
// per setting, in the component that owns it). test/layout/config-docs.test.ts checks that the
// file holds exactly this; `make docs` writes it.
import { configLeaves, configSchema, RUN_FLAGS } from './config';
import { DEFAULT_DROP_KEYS } from '../datapath/drops';
import { DEFAULT_MAX_FLOWS, DEFAULT_RING_BYTES, READ_CHUNK_ENTRIES } from '../datapath/datapath';
import { EXPORTER_DEFAULTS } from '../output/grpc/exporter';
import { SPOOL_DEFAULTS } from '../output/spool';
import { ConfigError } from '../util/check';
import { AGGREGATE_GROUP_BYTES, checkMemoryPlan, DAEMON_BASE_BYTES, formatBytes, IN_FLIGHT_EVENT_BYTES, memoryBudget } from './memory';

const BEGIN = '<!-- keys:begin (generated from src/config/config.ts by `make docs`; do not edit) -->';
const END = '<!-- keys:end -->';

/** The generated block: a table of every key, its default and the flag that sets it. */
export function keysReference(): string {
  const defaults = configSchema({ reporter_id: '(hostname)' }, '') as unknown as Record<string, unknown>;
  const list = configLeaves(defaults);
  const flagOf = new Map<string, string>(RUN_FLAGS.map((f) => [f.path, `\`--${f.flag}\``]));
  const text = (v: unknown): string => (v === undefined ? 'unset' : v === '(hostname)' ? 'the hostname' : `\`${JSON.stringify(v)}\``);
  const lines = ['| key | default | flag |', '|---|---|---|'];
  // The tables under attribution are documented in attribution.md; its source settings are keys like any other.
  const table = /^attribution\.(overlay|peers|resources|policies)$/;
  for (const [key, v] of list) if (!table.test(key)) lines.push(`| \`${key}\` | ${text(v)} | ${flagOf.get(key) ?? ''} |`);
  lines.push('| `attribution.overlay`, `.peers`, `.resources`, `.policies` | none | (the tables: see [attribution.md](attribution.md)) |');
  return `${BEGIN}\n${lines.join('\n')}\n${END}`;
}

const MEM_BEGIN = '<!-- memory:begin (generated from src/config/memory.ts by `make docs`; do not edit) -->';
const MEM_END = '<!-- memory:end -->';

/**
 * The generated block of the Memory section: the budget's parts at the default max_flows and at
 * 1,000,000 flows, with and without a collector, and the refusal a too-small limit gets. Made
 * from the budget functions, so the figures follow the flow store's layout.
 */
export function memoryReference(): string {
  const count = (n: number): string => n.toLocaleString('en-US');
  const inFlight = EXPORTER_DEFAULTS.maxInFlight;
  const at = (flows: number, collector: boolean) => memoryBudget({ maxFlows: flows, ringBytes: DEFAULT_RING_BYTES, maxInFlight: collector ? inFlight : undefined });
  const [d, dc, m, mc] = [at(DEFAULT_MAX_FLOWS, false), at(DEFAULT_MAX_FLOWS, true), at(1_000_000, false), at(1_000_000, true)];
  const f = formatBytes;
  const rows = [
    '| part | what | at the default `max_flows` ' + count(DEFAULT_MAX_FLOWS) + ' | at `max_flows` 1,000,000 |',
    '|---|---|---:|---:|',
    `| base | fixed: code, the heap's own objects, garbage between collections (\`DAEMON_BASE_BYTES\`: idle RSS measured 67-79 MiB (peak 82), rounded up) | ${f(d.baseBytes)} | ${f(m.baseBytes)} |`,
    `| flow state | the flow tracker's state with both maps full (\`src/flow/budget.ts\`): ${d.flowStateBytesPerFlowV4} bytes per IPv4 flow, ${d.flowStateBytesPerFlowV6} per IPv6 flow at ${count(DEFAULT_MAX_FLOWS)} | ${f(d.flowStateBytes)} | ${f(m.flowStateBytes)} |`,
    `| map read | the drain's buffers: it reads the flow maps ${count(READ_CHUNK_ENTRIES)} entries at a time (16 + 40 bytes an IPv4 entry, 40 + 40 an IPv6 one) | ${f(d.mapReadBytes)} | ${f(m.mapReadBytes)} |`,
    `| export | with a collector only: \`collector.max_in_flight\` x ${f(IN_FLIGHT_EVENT_BYTES)} (measured: 1.2-1.3 KiB of RSS per event in flight) + the spool's ${f(SPOOL_DEFAULTS.memoryBytes)} in-memory cap; ${f(dc.exportBytes)} at the default ${count(inFlight)}; with \`collector.profile: netbird-aggregated\` also \`collector.aggregate_max_groups\` x ${f(AGGREGATE_GROUP_BYTES)} (the open window's groups; measured 872 bytes of heap each) | 0 B (${f(dc.exportBytes)}) | 0 B (${f(mc.exportBytes)}) |`,
    `| **resident** | what the daemon's RSS stays within: the sum of the above (\`wgflow_memory_budget_resident_bytes\`) | ${f(d.residentBytes)} (${f(dc.residentBytes)}) | ${f(m.residentBytes)} (${f(mc.residentBytes)}) |`,
    `| kernel maps | the flow maps (preallocated: each entry 48 bytes of header, key and value), the ring buffer and the drop probe's maps (${f(d.dropMapBytes)} at \`datapath.drop_keys\` ${count(DEFAULT_DROP_KEYS)}, budgeted even with drops off: \`ctl drops on\` can load them): not in the RSS, but charged to the daemon's memory cgroup | ${f(d.kernelBytes)} | ${f(m.kernelBytes)} |`,
    `| **total** | resident + kernel maps (\`wgflow_memory_budget_bytes\`): what must fit in the limit | ${f(d.totalBytes)} (${f(dc.totalBytes)}) | ${f(m.totalBytes)} (${f(mc.totalBytes)}) |`,
  ];
  // The refusal at 1,000,000 flows in a unit limited to 256 MiB.
  const s = { maxFlows: 1_000_000, ringBytes: DEFAULT_RING_BYTES };
  let refusal = '';
  try {
    checkMemoryPlan({ budget: memoryBudget(s), limit: { bytes: 256 * 1024 * 1024, source: 'cgroup /system.slice/wgflow.service' } }, s);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    refusal = `wgflow run: configuration error: ${err.message}`;
  }
  const note = `Values in brackets: with a collector (\`collector.max_in_flight\` ${count(inFlight)}). The base is ${f(DAEMON_BASE_BYTES)}.`;
  return `${MEM_BEGIN}\n${rows.join('\n')}\n\n${note} A limit of 256 MiB for 1,000,000 flows is refused so:\n\n\`\`\`\n${refusal}\n\`\`\`\n${MEM_END}`;
}

/** The markdown with its generated blocks replaced (or null when it has no keys markers). */
export function withKeysReference(markdown: string): string | null {
  const a = markdown.indexOf(BEGIN), b = markdown.indexOf(END);
  if (a < 0 || b < a) return null;
  let out = markdown.slice(0, a) + keysReference() + markdown.slice(b + END.length);
  const ma = out.indexOf(MEM_BEGIN), mb = out.indexOf(MEM_END);
  if (ma >= 0 && mb > ma) out = out.slice(0, ma) + memoryReference() + out.slice(mb + MEM_END.length);
  return out;
}
