// One AttributionConfig from the three places attribution comes from, in precedence order:
// the configuration file (hand-written overrides) > NetBird's management API > the WireGuard
// interfaces. docs/attribution.md ("Precedence") states these rules; test/attribution/merge.test.ts
// checks each.
//
// Peers are matched across sources by what they share, because the sources do not share ids: the
// WireGuard interface knows public keys and allowed IPs, NetBird's API knows ids and overlay
// addresses but not public keys, a file may write any of them.
//  - An API peer absorbs the WireGuard peers that have one of its addresses: it keeps its id,
//    name, groups and user, and takes their public key and wider allowed IPs (routes).
//  - A file peer replaces every lower peer with the same id, public key or an address in common;
//    addresses, a public key or allowed IPs the file entry does not write are taken from what it
//    replaced (a file can name a peer by its key alone).
// Resources and policies come from the API and the file only; a file entry replaces the API entry
// with the same id. The overlay is the file's when it writes one, else the API's and the
// interfaces' networks together. Filters and the DNS / exit-node switches are the file's.
import type { AttributionConfig, PeerConfig } from '../config';
import { ipToRaw } from '../../net/ip';

/** The addresses of a peer in one canonical form (raw bytes), for matching. */
function addressesOf(p: PeerConfig): Set<string> {
  const out = new Set<string>();
  for (const ip of [...(p.ip !== undefined ? [p.ip] : []), ...(p.ips ?? [])]) {
    try {
      out.add(ipToRaw(ip));
    } catch {
      // A bad address is the tables' to report.
    }
  }
  return out;
}

const union = (a: readonly string[] | undefined, b: readonly string[] | undefined): string[] | undefined => {
  const all = [...(a ?? []), ...(b ?? [])];
  return all.length === 0 ? undefined : [...new Set(all)];
};

/** Does p share an id, a public key or an address with q? */
function sameEndpoint(p: PeerConfig, pAddrs: Set<string>, q: PeerConfig): boolean {
  if (p.id === q.id) return true;
  if (p.publicKey !== undefined && p.publicKey === q.publicKey) return true;
  for (const a of addressesOf(q)) if (pAddrs.has(a)) return true;
  return false;
}

/** The peers of upper laid over lower: each upper peer takes the place of the lower ones it matches. */
function layerPeers(lower: readonly PeerConfig[], upper: readonly PeerConfig[], match: (u: PeerConfig, uAddrs: Set<string>, l: PeerConfig) => boolean): PeerConfig[] {
  let rest = [...lower];
  const out: PeerConfig[] = [];
  for (const u of upper) {
    const uAddrs = addressesOf(u);
    const replaced = rest.filter((l) => match(u, uAddrs, l));
    if (replaced.length > 0) rest = rest.filter((l) => !replaced.includes(l));
    const merged: PeerConfig = { ...u };
    if (merged.ip === undefined && (merged.ips === undefined || merged.ips.length === 0)) {
      const ips = replaced.reduce<string[] | undefined>((acc, l) => union(acc, [...(l.ip !== undefined ? [l.ip] : []), ...(l.ips ?? [])]), undefined);
      if (ips !== undefined) merged.ips = ips;
    }
    if (merged.publicKey === undefined) {
      const key = replaced.find((l) => l.publicKey !== undefined)?.publicKey;
      if (key !== undefined) merged.publicKey = key;
    }
    if (merged.allowedIps === undefined) {
      const routes = replaced.reduce<string[] | undefined>((acc, l) => union(acc, l.allowedIps), undefined);
      if (routes !== undefined) merged.allowedIps = routes;
    }
    out.push(merged);
  }
  return [...out, ...rest];
}

/** Entries of upper replace entries of lower with the same id; the rest of lower stays. */
function layerById<T extends { id: string }>(lower: readonly T[] | undefined, upper: readonly T[] | undefined): T[] | undefined {
  if (lower === undefined && upper === undefined) return undefined;
  const ids = new Set((upper ?? []).map((x) => x.id));
  return [...(upper ?? []), ...(lower ?? []).filter((x) => !ids.has(x.id))];
}

/**
 * The tables' input from the file's, the API's (null: no API source, or no good snapshot yet) and
 * the WireGuard interfaces' (null: not read).
 */
export function mergeSources(file: AttributionConfig, api: AttributionConfig | null, wg: AttributionConfig | null): AttributionConfig {
  // An API peer matches WireGuard peers by address only: the API has no public keys and its ids
  // are not keys.
  const byAddress = (u: PeerConfig, uAddrs: Set<string>, l: PeerConfig): boolean => {
    for (const a of addressesOf(l)) if (uAddrs.has(a)) return true;
    return false;
  };
  let peers = wg?.peers ?? [];
  if (api !== null) peers = layerPeers(peers, api.peers ?? [], byAddress);
  peers = layerPeers(peers, file.peers ?? [], sameEndpoint);
  const overlay = file.overlay !== undefined && file.overlay.length > 0 ? file.overlay : union(api?.overlay, wg?.overlay);
  const out: AttributionConfig = { ...file, peers };
  if (overlay !== undefined) out.overlay = overlay;
  const resources = layerById(api?.resources, file.resources);
  if (resources !== undefined) out.resources = resources;
  const policies = layerById(api?.policies, file.policies);
  if (policies !== undefined) out.policies = policies;
  return out;
}
