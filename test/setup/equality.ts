// The flow engine's events make their ids and addresses on first read (getters, src/flow/events.ts),
// which toEqual does not see. Compared as their plain data (toJSON) instead, every field counts,
// as it did when events were plain objects; the matcher's own rules (toMatchObject's subsets) stay.
import { expect } from 'vitest';

interface Plain {
  toJSON(): unknown;
  eventIdInto(out: Uint8Array, at: number): void;
}

function isEngineEvent(x: unknown): x is Plain {
  return typeof x === 'object' && x !== null && typeof (x as Partial<Plain>).eventIdInto === 'function' && typeof (x as Partial<Plain>).toJSON === 'function';
}

expect.addEqualityTesters([
  function engineEvents(this: { equals(a: unknown, b: unknown, testers?: unknown[]): boolean }, a: unknown, b: unknown, testers: unknown[]) {
    const ea = isEngineEvent(a), eb = isEngineEvent(b);
    if (!ea && !eb) return undefined;
    return this.equals(ea ? a.toJSON() : a, eb ? b.toJSON() : b, testers);
  },
]);
