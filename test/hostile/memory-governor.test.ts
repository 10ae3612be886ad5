// The memory governor: over its threshold it forces a full collection (at most once per gap),
// counts samples over the whole budget, and says so in the log once a minute.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { MemoryGovernor } from '../../src/daemon/memory-governor';

describe('MemoryGovernor', () => {
  it('collects over its threshold, at most once per gap; warns once when over the whole budget', () => {
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (l: string) => lines.push(l) });
    const g = new MemoryGovernor(1024 * 1024, log, { minGapMs: 1000 }); // 1 MiB: this process is over it
    g.check(10_000);
    g.check(10_500); // inside the gap: no second collection
    g.check(11_000);
    const s = g.stats();
    expect(s.collections).toBe(2);
    expect(s.overBudget).toBe(3);
    expect(s.peakRssBytes).toBeGreaterThan(1024 * 1024);
    expect(lines.length).toBe(1);
    expect(JSON.parse(lines[0])).toMatchObject({ msg: expect.stringMatching(/over its budget.*memory_limit.*max_flows/) });
  });

  it('does nothing under its threshold', () => {
    const g = new MemoryGovernor(1024 ** 4, pino({ level: 'silent' }));
    g.check();
    expect(g.stats()).toMatchObject({ collections: 0, overBudget: 0 });
  });

  it('refuses a budget that is not a positive size', () => {
    expect(() => new MemoryGovernor(0, pino({ level: 'silent' }))).toThrow(/resident budget must be > 0/);
  });
});
