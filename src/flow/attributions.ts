// Attribution results shared between flows: a tracked flow keeps a 32-bit index into this table
// instead of a reference of its own. The attributor hands out one shared object per combination of
// source, destination and policy (attributor.ts), so the table holds as many entries as
// combinations in use, not one per flow. Entries are reference-counted and freed with their last
// flow, so table swaps (reloads) leave nothing behind.
import type { Attribution } from '../attribution/attributor';

export class AttributionTable {
  private items: (Attribution | undefined)[] = [];
  private refs = new Int32Array(64);
  private readonly free: number[] = [];
  private readonly index = new Map<Attribution, number>();

  /** Entries in use. */
  get size(): number {
    return this.index.size;
  }

  /** The index of a (added with one reference, or one more reference). */
  ref(a: Attribution): number {
    const known = this.index.get(a);
    if (known !== undefined) {
      this.refs[known]++;
      return known;
    }
    const idx = this.free.length > 0 ? this.free.pop()! : this.items.length;
    if (idx === this.items.length) this.items.push(a);
    else this.items[idx] = a;
    if (idx >= this.refs.length) {
      const bigger = new Int32Array(this.refs.length * 2);
      bigger.set(this.refs);
      this.refs = bigger;
    }
    this.refs[idx] = 1;
    this.index.set(a, idx);
    return idx;
  }

  get(idx: number): Attribution {
    return this.items[idx]!;
  }

  /** Drop one reference; the entry goes with the last. */
  unref(idx: number): void {
    if (--this.refs[idx] > 0) return;
    this.index.delete(this.items[idx]!);
    this.items[idx] = undefined;
    this.free.push(idx);
  }
}
