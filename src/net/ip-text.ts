// The text form of addresses, one implementation for every layer: IPv4 dotted quad; IPv6 in
// RFC 5952 form (lowercase, the longest run of two or more zero groups as "::", IPv4-mapped
// addresses as ::ffff:a.b.c.d).

/** IPv6 text from its eight 16-bit groups. */
export function ipv6FromGroups(g: readonly number[]): string {
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${g[6] >> 8}.${g[6] & 0xff}.${g[7] >> 8}.${g[7] & 0xff}`;
  }
  let bestAt = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestAt = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestAt < 0) return hex.join(':');
  return `${hex.slice(0, bestAt).join(':')}::${hex.slice(bestAt + bestLen).join(':')}`;
}

/** IPv6 text from 16 bytes at offset o. */
export function ipv6FromBytes(b: Uint8Array, o = 0): string {
  const g: number[] = new Array(8);
  for (let i = 0; i < 8; i++) g[i] = (b[o + 2 * i] << 8) | b[o + 2 * i + 1];
  return ipv6FromGroups(g);
}

/** IPv4 text from 4 bytes at offset o. */
export function ipv4FromBytes(b: Uint8Array, o = 0): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}
