// SIGTERM and SIGINT for the long-running commands, caught from the first moment: a signal during
// start-up (connecting, opening files) is remembered and handed to the stop function once the
// command runs, instead of killing the process half-way or being lost.
//
// The listeners are installed once and never swapped: a signal that libuv has queued for a
// listener that is then removed is dropped (measured: `consume` SIGTERMed right after start-up
// ignored the signal about one run in six when the start-up listener was replaced).

export interface StopSignals {
  /** From now on, a signal calls stop (at once, if one came before). */
  onStop(stop: (signal: NodeJS.Signals) => void): void;
}

export function catchStopSignals(): StopSignals {
  let early: NodeJS.Signals | null = null;
  let handler: ((signal: NodeJS.Signals) => void) | null = null;
  const on = (signal: NodeJS.Signals): void => {
    if (handler !== null) handler(signal);
    else early ??= signal;
  };
  process.on('SIGTERM', on);
  process.on('SIGINT', on);
  return {
    onStop(stop) {
      handler = stop;
      if (early !== null) stop(early);
    },
  };
}
