// Byte counts for people: logs, messages, ctl output.

/** 1536 -> "1.5 KiB", 134217728 -> "128 MiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  // One decimal below 100 ("8.5 MiB"), none above ("1014 MiB") or for a whole number ("128 MiB").
  const text = i === 0 || n >= 100 ? Math.round(n).toString() : n.toFixed(1).replace(/\.0$/, '');
  return `${text} ${units[i]}`;
}
