// What the flow engine's per-flow state costs, computed from its own layout (store.ts, table.ts):
// the daemon's memory budget adds this to its fixed costs. Kept next to the store so the figure
// changes with the layout.

/** Bytes per IPv4 / IPv6 flow slot in the store's columns and key words (see store.ts). */
export const SLOT_BYTES_V4 = 10 * 8 + 9 * 4 + 16;
export const SLOT_BYTES_V6 = 10 * 8 + 9 * 4 + 40;

/** Open-addressing index entries (4 bytes each) for a table of this many slots (load <= 0.75). */
export function indexEntries(slots: number): number {
  let n = 16;
  while (n * 0.75 < slots) n *= 2;
  return n;
}

/**
 * Worst-case bytes of the tracker's per-flow state with every slot used: maxFlowsV4 IPv4 and
 * maxFlowsV6 IPv6 flows (the kernel maps' sizes, which bound what can be tracked).
 */
export function flowStateBytes(maxFlowsV4: number, maxFlowsV6: number): number {
  const part = (slots: number, slotBytes: number): number => (slots === 0 ? 0 : slots * slotBytes + indexEntries(slots) * 4);
  return part(maxFlowsV4, SLOT_BYTES_V4) + part(maxFlowsV6, SLOT_BYTES_V6);
}
