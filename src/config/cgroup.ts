// The memory limit of the control group this process runs in (a systemd unit's MemoryMax=, a
// container's memory limit): the daemon's memory budget must fit in it. cgroup v2 first
// (memory.max), then the v1 memory controller (memory.limit_in_bytes) of hybrid hosts. A limit set
// on a parent group applies to its children too, so the whole path up to the root is read and
// the lowest limit wins. Paths are injectable so tests can use a fake tree.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CgroupPaths {
  /** Where the cgroup file systems are mounted (default /sys/fs/cgroup). */
  root?: string;
  /** This process's membership (default /proc/self/cgroup). */
  procFile?: string;
}

export interface CgroupLimit {
  bytes: number;
  /** The group that sets it, as in /proc/self/cgroup (e.g. /system.slice/wgflow.service). */
  group: string;
  /** The file it was read from, under the root. */
  file: string;
}

/** cgroup v1 says "no limit" with a number near 2^63 (PAGE_COUNTER_MAX pages). */
const V1_UNLIMITED = 2 ** 60;

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** /a/b/c, /a/b, /a, / */
function ancestors(group: string): string[] {
  const parts = group.split('/').filter(Boolean);
  const out: string[] = [];
  for (let n = parts.length; n >= 0; n--) out.push('/' + parts.slice(0, n).join('/'));
  return out;
}

/** The lowest limit in dir/<group and its ancestors>/name; undefined when none is set. */
function lowest(dir: string, group: string, name: string, parse: (text: string) => number | undefined): CgroupLimit | undefined {
  let best: CgroupLimit | undefined;
  for (const g of ancestors(group)) {
    const file = join(dir, g, name);
    const text = read(file);
    if (text === undefined) continue;
    const bytes = parse(text);
    if (bytes !== undefined && (best === undefined || bytes < best.bytes)) best = { bytes, group: g, file };
  }
  return best;
}

const parseV2 = (text: string): number | undefined => (/^\d+$/.test(text) ? Number(text) : undefined); // "max": none
const parseV1 = (text: string): number | undefined => (/^\d+$/.test(text) && Number(text) < V1_UNLIMITED ? Number(text) : undefined);

/**
 * The memory limit that applies to this process, or undefined when there is none (no cgroup
 * file system, "max" all the way up, or an unreadable tree).
 */
export function cgroupMemoryLimit(paths: CgroupPaths = {}): CgroupLimit | undefined {
  const root = paths.root ?? '/sys/fs/cgroup';
  const membership = read(paths.procFile ?? '/proc/self/cgroup');
  if (membership === undefined) return undefined;
  let v2Group: string | undefined, v1Group: string | undefined;
  for (const line of membership.split('\n')) {
    // hierarchy-id:controllers:path; the path may itself contain ':'.
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === '0' && m[2] === '') v2Group = m[3];
    else if (m[2].split(',').includes('memory')) v1Group = m[3];
  }
  if (v2Group !== undefined) {
    // Pure v2 is mounted at the root itself; a hybrid host mounts it at root/unified.
    const dir = existsSync(join(root, 'cgroup.controllers')) ? root : join(root, 'unified');
    const v2 = lowest(dir, v2Group, 'memory.max', parseV2);
    if (v2) return v2;
  }
  if (v1Group !== undefined) return lowest(join(root, 'memory'), v1Group, 'memory.limit_in_bytes', parseV1);
  return undefined;
}
