// The clocks the flow engine reads, injectable so tests drive time by hand.
// monoNs: CLOCK_MONOTONIC in ns, the clock of the kernel's first_ns and ring timestamps
// (process.hrtime.bigint() reads the same clock on Linux). wallMs: epoch ms UTC for events.

export interface Clock {
  monoNs(): number;
  wallMs(): number;
}

export const systemClock: Clock = {
  monoNs: () => Number(process.hrtime.bigint()),
  wallMs: () => Date.now(),
};

/** Wall-clock drift (NTP step or slew) that makes the converter adopt a new offset. */
export const WALL_RESYNC_MS = 100;

/**
 * Converts monotonic ns to wall-clock ms. The offset is kept while the wall clock stays within
 * WALL_RESYNC_MS of it, so one monotonic instant always gives the same ms: an UPDATE window then
 * starts exactly where the previous one ended. A larger jump (clock step) is adopted at once.
 */
export class WallConverter {
  private offsetMs = NaN;
  constructor(private readonly clock: Clock) {
    this.sample();
  }
  /** Check the offset against the clocks (once per batch); returns the current monotonic time (ns). */
  sample(): number {
    const mono = this.clock.monoNs();
    const off = this.clock.wallMs() - mono / 1e6;
    if (!(Math.abs(off - this.offsetMs) <= WALL_RESYNC_MS)) this.offsetMs = off;
    return mono;
  }
  /** Wall-clock epoch ms of a monotonic ns time (whole ms). */
  toWallMs(monoNs: number): number {
    return Math.round(monoNs / 1e6 + this.offsetMs);
  }
}

/** A hand-driven clock for tests and benchmarks. */
export class ManualClock implements Clock {
  constructor(public nowNs = 1_000_000_000_000, public wallBaseMs = 1_700_000_000_000, private readonly monoBaseNs = 1_000_000_000_000) {}
  monoNs(): number {
    return this.nowNs;
  }
  wallMs(): number {
    return this.wallBaseMs + (this.nowNs - this.monoBaseNs) / 1e6;
  }
  advanceMs(ms: number): number {
    this.nowNs += Math.round(ms * 1e6);
    return this.nowNs;
  }
}
