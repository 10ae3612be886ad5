// Where a process's JavaScript heap goes, from a V8 heap snapshot (node --heapsnapshot-signal):
// the objects' own sizes summed by kind (constructor name for objects, V8's type for the rest).
import { readFileSync } from 'node:fs';

export interface HeapKind {
  kind: string;
  count: number;
  bytes: number;
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Kinds by total own size, largest first, and the heap's total (live objects: V8 collects first). */
export function summarizeHeapSnapshot(file: string): { total: number; kinds: HeapKind[] } {
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const f = s.snapshot.meta.node_fields;
  const width = f.length, typeAt = f.indexOf('type'), nameAt = f.indexOf('name'), sizeAt = f.indexOf('self_size');
  const types = s.snapshot.meta.node_types[0];
  const byKind = new Map<string, HeapKind>();
  let total = 0;
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + typeAt]];
    // Objects and closures by name; strings, arrays and V8 internals by type (their names are contents).
    const kind = type === 'object' || type === 'closure' || type === 'native' ? `${type} ${s.strings[s.nodes[i + nameAt]]}` : `(${type})`;
    const size = s.nodes[i + sizeAt];
    total += size;
    const k = byKind.get(kind) ?? { kind, count: 0, bytes: 0 };
    k.count += 1;
    k.bytes += size;
    byKind.set(kind, k);
  }
  return { total, kinds: [...byKind.values()].sort((a, b) => b.bytes - a.bytes) };
}
