// Before touching the kernel: does this process have what BPF and TC need? Says which are missing.
import { readFileSync } from 'node:fs';

const CAPS = { CAP_NET_ADMIN: 12, CAP_SYS_ADMIN: 21, CAP_PERFMON: 38, CAP_BPF: 39 } as const;

/** Effective capabilities of this process, from /proc/self/status. */
function effectiveCaps(): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

/** Names of the capabilities wgflow needs and lacks ([] when it may run). */
export function missingCapabilities(caps: bigint = effectiveCaps()): string[] {
  const has = (c: number): boolean => (caps & (1n << BigInt(c))) !== 0n;
  const missing: string[] = [];
  if (!has(CAPS.CAP_NET_ADMIN)) missing.push('CAP_NET_ADMIN');
  // Kernels before 5.8 have no CAP_BPF/CAP_PERFMON: CAP_SYS_ADMIN covers both.
  if (!has(CAPS.CAP_SYS_ADMIN)) {
    if (!has(CAPS.CAP_BPF)) missing.push('CAP_BPF');
    if (!has(CAPS.CAP_PERFMON)) missing.push('CAP_PERFMON');
  }
  return missing;
}
