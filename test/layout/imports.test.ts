// The layout of src/: every import points down. Folders have ranks (a model that imports nothing
// at the bottom, the CLI on top); a module may import only from its own folder or from folders of
// a lower rank, and no set of modules imports itself in a circle. A new folder must be given a
// rank here, which is the point: where it sits is decided, not drifted into.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = join(__dirname, '..', '..', 'src');

/** Lower imports nothing of higher. Same rank: no imports between the two folders. */
export const RANKS: Record<string, number> = {
  model: 0, // the flow event, its JSON form, counter deltas, the clock
  util: 0, // byte buffers, files, value checks, logging, the addon loader, the version
  net: 1, // IP addresses and interface names
  wire: 2, // the wire contract: protobuf, gRPC framing and statuses
  nats: 3, // our NATS client for the JetStream hot paths (publish, pull consume)
  attribution: 3,
  datapath: 3,
  control: 3,
  output: 4, // sinks: the gRPC exporter and its spool, IPFIX, the JSON-lines writer
  collector: 5,
  flow: 5, // the flow lifecycle engine
  metrics: 6,
  config: 6,
  daemon: 7,
  cli: 8,
};

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative imports of a module (static, type-only, dynamic and require), as module paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  const re = /(?:\bfrom\s+|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)(['"])(\.{1,2}\/[^'"]+)\1/gm;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) out.push(resolve(dirname(file), m[2]).replace(/\.(ts|js)$/, '') + '.ts');
  return out;
}

const folderOf = (file: string): string => relative(SRC, file).split('/')[0].replace(/\.ts$/, '');

const modules = files(SRC);
const graph = new Map(modules.map((f) => [f, importsOf(f)]));

describe('src/ layout', () => {
  it('every folder has a rank, and every import resolves to a module', () => {
    for (const f of modules) expect(RANKS[folderOf(f)], `${relative(SRC, f)}: its folder has no rank in test/layout/imports.test.ts`).toBeDefined();
    for (const [f, imps] of graph) for (const i of imps) expect(graph.has(i), `${relative(SRC, f)} imports ${relative(SRC, i)}, which is not a module of src/`).toBe(true);
  });

  it('imports point down: to the same folder or a folder of lower rank', () => {
    const upward: string[] = [];
    for (const [f, imps] of graph) {
      const from = folderOf(f);
      for (const i of imps) {
        const to = folderOf(i);
        if (to !== from && !(RANKS[to] < RANKS[from])) upward.push(`${relative(SRC, f)} (${from}, rank ${RANKS[from]}) -> ${relative(SRC, i)} (${to}, rank ${RANKS[to]})`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('no import cycles between modules', () => {
    // Tarjan's strongly connected components; any component of more than one module is a cycle.
    let index = 0;
    const idx = new Map<string, number>(), low = new Map<string, number>(), onStack = new Set<string>(), stack: string[] = [];
    const cycles: string[][] = [];
    const visit = (v: string): void => {
      idx.set(v, index);
      low.set(v, index++);
      stack.push(v);
      onStack.add(v);
      for (const w of graph.get(v) ?? []) {
        if (!graph.has(w)) continue;
        if (!idx.has(w)) {
          visit(w);
          low.set(v, Math.min(low.get(v)!, low.get(w)!));
        } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
      if (low.get(v) === idx.get(v)) {
        const comp: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          comp.push(relative(SRC, w));
        } while (w !== v);
        if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(comp.sort());
      }
    };
    for (const m of modules) if (!idx.has(m)) visit(m);
    expect(cycles).toEqual([]);
  });
});
