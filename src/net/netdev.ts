// Network devices of this process's namespace, as sysfs shows them.
import { readdirSync, readFileSync } from 'node:fs';

/** ifindex of an interface, or 0 if it does not exist. */
export function ifindexOf(name: string): number {
  try {
    return Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

/** Interface names by ifindex from /sys/class/net/<name>/ifindex, re-read at most every 10 s on a miss. */
export function sysfsInterfaceNames(): (ifindex: number) => string {
  let names = new Map<number, string>();
  let readAt = -Infinity;
  const load = (): void => {
    readAt = Date.now();
    const next = new Map<number, string>();
    try {
      for (const name of readdirSync('/sys/class/net')) {
        try {
          next.set(Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim()), name);
        } catch {
          // interface gone meanwhile
        }
      }
    } catch {
      // no sysfs
    }
    names = next;
  };
  return (ifindex) => {
    let n = names.get(ifindex);
    if (n === undefined && Date.now() - readAt > 10_000) {
      load();
      n = names.get(ifindex);
    }
    return n ?? `if${ifindex}`;
  };
}
