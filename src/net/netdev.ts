// Network devices of this process's namespace, as sysfs shows them.
import { readFileSync } from 'node:fs';

/** ifindex of an interface, or 0 if it does not exist. */
export function ifindexOf(name: string): number {
  try {
    return Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}
