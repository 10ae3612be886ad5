// The NetBird management API as an attribution source: read the account once (peers, groups,
// users, policies, networks with their resources and routers, routes, the account's overlay
// ranges) and describe it in wgflow's table form with NetBird's own ids, so flows carry the peer,
// resource, policy (rule) and user ids NetBird's dashboard and its own flow events use.
// All or nothing: one failed or malformed endpoint fails the fetch (the caller keeps its last
// good snapshot). What wgflow cannot represent becomes a warning naming the object. The mapping
// table is in docs/attribution.md.
import type { AttributionConfig, PeerConfig, PolicyConfig, PolicyProtocol, PolicyTarget, PortSpec, ResourceConfig } from '../config';
import { ipToRaw, parsePrefix } from '../../net/ip';
import { portRange } from '../tables';
import { NetbirdClient } from './netbird-client';
import {
  NbAccount, NbGroup, NbNetwork, NbNetworkResource, NbPeer, NbPolicy, NbRef, NbRoute, NbRouter, NbRule, NbUser,
  readAccount, readAll, readGroup, readNetwork, readNetworkResource, readPeer, readPolicy, readRoute, readRouter, readUser, WireError,
} from './netbird-wire';
import { ApiSnapshot, SourceError } from './source';

export interface NetbirdOptions {
  /** Management URL (attribution.netbird.url), e.g. https://api.netbird.io. */
  readonly url: string;
  /** Personal access token (from attribution.netbird.token_file or WGFLOW_NETBIRD_TOKEN). */
  readonly token: string;
  /** Per request (headers and body). Default 10 s. */
  readonly timeoutMs?: number;
  /** Requests in flight at once. Default 4. */
  readonly concurrency?: number;
  /** Largest response body. Default 64 MiB. */
  readonly maxBytes?: number;
  /** Most `Link: rel="next"` pages followed per list. Default 1000. */
  readonly maxPages?: number;
  /** Aborts the fetch (SourceError kind network, "cancelled"). */
  readonly signal?: AbortSignal;
}

export const NETBIRD_DEFAULTS = Object.freeze({ timeoutMs: 10_000, concurrency: 4, maxBytes: 64 * 1024 * 1024, maxPages: 1000 });

/** The NetBird port a netbird-ssh rule also opens (its native SSH server). */
const NETBIRD_SSH_PORT = 22022;

/** Everything one fetch read, before mapping. */
export interface NetbirdData {
  readonly accounts: readonly NbAccount[];
  readonly peers: readonly NbPeer[];
  readonly groups: readonly NbGroup[];
  readonly users: readonly NbUser[];
  readonly policies: readonly NbPolicy[];
  readonly networks: readonly { network: NbNetwork; resources: readonly NbNetworkResource[]; routers: readonly NbRouter[] }[];
  readonly routes: readonly NbRoute[];
}

/** Read the account from the management API and map it; throws SourceError. */
export async function fetchNetbird(opts: NetbirdOptions): Promise<ApiSnapshot> {
  return mapNetbird(await readNetbird(opts));
}

/** Read every endpoint (validated), without mapping; throws SourceError. */
export async function readNetbird(opts: NetbirdOptions): Promise<NetbirdData> {
  // One controller for the whole fetch: the first failure cancels the requests still in flight.
  const ctl = new AbortController();
  const outer = opts.signal;
  const onOuter = (): void => ctl.abort();
  outer?.addEventListener('abort', onOuter, { once: true });
  if (outer?.aborted) ctl.abort();
  let client: NetbirdClient;
  try {
    client = new NetbirdClient({
      url: opts.url,
      token: opts.token,
      timeoutMs: opts.timeoutMs ?? NETBIRD_DEFAULTS.timeoutMs,
      maxBytes: opts.maxBytes ?? NETBIRD_DEFAULTS.maxBytes,
      maxPages: opts.maxPages ?? NETBIRD_DEFAULTS.maxPages,
      signal: ctl.signal,
    });
  } catch (err) {
    // The checks' messages never contain the token.
    throw new SourceError('netbird', 'invalid', `attribution.netbird: ${(err as Error).message}`);
  }
  const get = async <T>(path: string, read: (o: Record<string, unknown>, p: string) => T): Promise<T[]> => {
    const { items } = await client.getList(path);
    try {
      return readAll(items, read);
    } catch (err) {
      if (err instanceof WireError) throw client.fail('invalid', `${client.label(new URL(path, client.base))}: ${err.message}`);
      throw err;
    }
  };
  const limit = Math.max(1, opts.concurrency ?? NETBIRD_DEFAULTS.concurrency);
  try {
    const [accounts, peers, groups, users, policies, networks, routes] = await pool(limit, ctl, [
      () => get('api/accounts', readAccount),
      () => get('api/peers', readPeer),
      () => get('api/groups', readGroup),
      () => get('api/users', readUser),
      () => get('api/policies', readPolicy),
      () => get('api/networks', readNetwork),
      () => get('api/routes', readRoute),
    ]);
    // One task per network (its resources, then its routers): networks run side by side.
    const perNetwork = await pool(limit, ctl, networks.map((network) => async () => {
      const base = `api/networks/${encodeURIComponent(network.id)}`;
      const resources = await get(`${base}/resources`, readNetworkResource);
      const routers = await get(`${base}/routers`, readRouter);
      return { network, resources, routers };
    }));
    return { accounts, peers, groups, users, policies, networks: perNetwork, routes };
  } finally {
    outer?.removeEventListener('abort', onOuter);
  }
}

/** Run tasks, at most `limit` at once; the first failure aborts `ctl` (cancelling the rest) and is the one thrown. */
async function pool<T extends readonly unknown[]>(limit: number, ctl: AbortController, tasks: { readonly [K in keyof T]: () => Promise<T[K]> }): Promise<T> {
  const out = new Array<unknown>(tasks.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < tasks.length) {
      const i = next++;
      try {
        out[i] = await tasks[i]();
      } catch (err) {
        if (!failed) {
          failed = true;
          ctl.abort();
        }
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return out as unknown as T;
}

const q = (s: string): string => JSON.stringify(s);
const named = (kind: string, id: string, name: string): string => (name && name !== id ? `${kind} ${q(id)} (${name})` : `${kind} ${q(id)}`);

function validIp(text: string): boolean {
  try {
    ipToRaw(text);
    return true;
  } catch {
    return false;
  }
}

function validPrefix(text: string): boolean {
  try {
    parsePrefix(text);
    return true;
  } catch {
    return false;
  }
}

/** An ordered union of id lists. */
function union(...lists: ReadonlyArray<Iterable<string> | undefined>): string[] {
  const s = new Set<string>();
  for (const l of lists) for (const x of l ?? []) s.add(x);
  return [...s];
}

/** Map what was read onto wgflow's tables. Never throws on content: problems become warnings. */
export function mapNetbird(d: NetbirdData): ApiSnapshot {
  const warnings: string[] = [];
  const warn = (s: string): void => {
    warnings.push(s);
  };

  // Groups: membership as /api/groups lists it, merged with what peers and resources list themselves.
  const groupsById = new Map<string, NbGroup>();
  const groupsOfPeer = new Map<string, string[]>();
  const groupsOfResource = new Map<string, string[]>();
  for (const g of d.groups) {
    if (groupsById.has(g.id)) {
      warn(`${named('group', g.id, g.name)}: listed twice by /api/groups; the first is used`);
      continue;
    }
    groupsById.set(g.id, g);
    for (const p of g.peers) (groupsOfPeer.get(p) ?? groupsOfPeer.set(p, []).get(p)!).push(g.id);
    for (const r of g.resources) {
      // A group's resources may name a peer (type "peer"): that peer is in the group.
      const m = r.type === 'peer' ? groupsOfPeer : groupsOfResource;
      (m.get(r.id) ?? m.set(r.id, []).get(r.id)!).push(g.id);
    }
  }

  const usersById = new Map<string, NbUser>();
  for (const u of d.users) if (!usersById.has(u.id)) usersById.set(u.id, u);

  // Peers.
  const peers: PeerConfig[] = [];
  const peerIds = new Set<string>();
  for (const p of d.peers) {
    const who = named('peer', p.id, p.name);
    if (peerIds.has(p.id)) {
      warn(`${who}: listed twice by /api/peers; the first is used`);
      continue;
    }
    peerIds.add(p.id);
    const ips: string[] = [];
    for (const [field, ip] of [['ip', p.ip], ['ipv6', p.ipv6]] as const) {
      if (ip === undefined || ip === '') continue;
      if (validIp(ip)) ips.push(ip);
      else warn(`${who}: ${field} ${q(ip)} is not an IP address; flows to it are not attributed to the peer`);
    }
    if (ips.length === 0) warn(`${who}: no usable overlay address; no flow can be attributed to it`);
    let user: PeerConfig['user'];
    if (p.userId !== '') {
      const u = usersById.get(p.userId);
      if (u) user = { id: u.id, name: u.name, email: u.email };
      else {
        user = { id: p.userId };
        warn(`${who}: user ${q(p.userId)} is not in /api/users; flows carry its id without name and email`);
      }
    }
    peers.push({
      id: p.id,
      name: p.name,
      ips,
      os: p.os,
      dnsLabel: p.dnsLabel,
      groups: union(p.groups, groupsOfPeer.get(p.id)),
      ...(user ? { user } : {}),
    });
  }

  // Overlay: the account's effective network ranges.
  const overlay: string[] = [];
  if (d.accounts.length === 0) warn('/api/accounts listed no account: the overlay range is unknown (take it from the WireGuard interface or the file)');
  for (const a of d.accounts.slice(0, 1)) {
    for (const [field, r] of [['network_range', a.networkRange], ['network_range_v6', a.networkRangeV6]] as const) {
      if (r === undefined) continue;
      if (validPrefix(r)) overlay.push(r);
      else warn(`account settings: ${field} ${q(r)} is not a prefix; not used as overlay`);
    }
    if (a.networkRange === undefined && a.networkRangeV6 === undefined) warn('account settings have no network_range: the overlay range is unknown (take it from the WireGuard interface or the file)');
  }

  // Resources: network resources, then routes.
  const resources: ResourceConfig[] = [];
  const resourceIds = new Set<string>();
  const addResource = (r: ResourceConfig, who: string): void => {
    if (resourceIds.has(r.id)) {
      warn(`${who}: resource id ${q(r.id)} is already used; the first is used`);
      return;
    }
    resourceIds.add(r.id);
    resources.push(r);
  };
  let resourceCount = 0;
  let routerCount = 0;
  for (const { network, resources: nrs, routers } of d.networks) {
    const net = named('network', network.id, network.name);
    resourceCount += nrs.length;
    routerCount += routers.length;
    for (const r of nrs) {
      const who = `${net} ${named('resource', r.id, r.name)}`;
      if (!r.enabled) {
        warn(`${who}: disabled in NetBird; not attributed`);
        continue;
      }
      const groups = union(r.groups, groupsOfResource.get(r.id));
      const address = r.address.trim();
      switch (r.type) {
        case 'host':
        case 'subnet':
          if (!validPrefix(address)) {
            warn(`${who}: address ${q(r.address)} is not an ${r.type === 'host' ? 'IP address' : 'IP prefix'}; not attributed`);
            break;
          }
          addResource({ id: r.id, name: r.name, type: r.type === 'host' ? 'HOST' : 'SUBNET', prefixes: [address], groups }, who);
          break;
        case 'domain':
          if (address === '' || /[\s/]/.test(address)) {
            warn(`${who}: address ${q(r.address)} is not a domain name; not attributed`);
            break;
          }
          addResource({ id: r.id, name: r.name, type: 'DOMAIN', domains: [address], groups }, who);
          break;
        default:
          warn(`${who}: resource type ${q(r.type)} is not one wgflow knows (host, subnet, domain); not attributed`);
      }
    }
    if (nrs.some((r) => r.enabled) && !routers.some((r) => r.enabled)) {
      warn(`${net}: no enabled routing peer, so its resources carry no traffic through NetBird`);
    }
  }

  // Routes: HA routes (same network identifier and destination) become one resource.
  const haSets = new Map<string, NbRoute[]>();
  for (const r of d.routes) {
    if (!r.enabled) {
      warn(`${named('route', r.id, r.networkId)}: disabled in NetBird; not attributed`);
      continue;
    }
    const key = JSON.stringify([r.networkId, r.network ?? '', [...r.domains].sort()]);
    (haSets.get(key) ?? haSets.set(key, []).get(key)!).push(r);
  }
  for (const set of haSets.values()) {
    set.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const r = set[0];
    const who = named('route', r.id, r.networkId);
    const name = r.networkId || r.description;
    const groups = union(...set.map((x) => x.accessControlGroups));
    if (set.length > 1) warn(`routes ${set.map((x) => q(x.id)).join(', ')} are one HA route (${q(r.networkId)}): attributed as resource ${q(r.id)}`);
    if (r.network !== undefined) {
      let len: number;
      try {
        len = parsePrefix(r.network).length;
      } catch {
        warn(`${who}: network ${q(r.network)} is not an IP prefix; not attributed`);
        continue;
      }
      const host = r.network.includes(':') ? len === 128 : len === 32;
      addResource({ id: r.id, name, type: host ? 'HOST' : 'SUBNET', prefixes: [r.network], groups }, who);
      if (r.domains.length > 0) warn(`${who}: has both a network and domains; the domains are not attributed`);
    } else if (r.domains.length > 0) {
      const domains = r.domains.map((x) => x.trim()).filter((x) => x !== '' && !/[\s/]/.test(x));
      if (domains.length < r.domains.length) warn(`${who}: some domains are not domain names and are not attributed`);
      if (domains.length > 0) addResource({ id: r.id, name, type: 'DOMAIN', domains, groups }, who);
    } else {
      warn(`${who}: has neither a network nor domains; not attributed`);
    }
  }

  // Policies: one wgflow policy per NetBird rule.
  const policies: PolicyConfig[] = [];
  const policyIds = new Set<string>();
  let ruleCount = 0;
  for (const pol of d.policies) {
    const pwho = named('policy', pol.id, pol.name);
    ruleCount += pol.rules.length;
    if (pol.rules.length === 0) warn(`${pwho}: has no rules`);
    if (pol.postureChecks.length > 0) {
      warn(`${pwho}: posture checks (${pol.postureChecks.map(q).join(', ')}) are not evaluated by wgflow; flows of peers that fail them may still name this policy`);
    }
    pol.rules.forEach((r, j) => {
      const who = pol.rules.length > 1 ? `${pwho} rule ${r.id ? q(r.id) : `#${j}`}` : pwho;
      const mapped = mapRule(r, who, warn, { groupsById, peerIds, resourceIds });
      if (mapped === null) return;
      // NetBird's flow events carry the rule id, which NetBird sets to the policy id for rules
      // created without one; a second rule with the same id gets a suffix (wgflow ids are unique).
      let id = r.id ?? pol.id;
      if (policyIds.has(id)) {
        let n = j;
        while (policyIds.has(`${id}#${n}`)) n++;
        warn(`${who}: rule id ${q(id)} is used by an earlier rule; this one is ${q(`${id}#${n}`)} in wgflow's flows`);
        id = `${id}#${n}`;
      }
      policyIds.add(id);
      policies.push({ id, name: pol.name, enabled: pol.enabled && r.enabled, ...mapped });
    });
  }

  const config: AttributionConfig = {
    ...(overlay.length > 0 ? { overlay } : {}),
    peers,
    resources,
    policies,
  };
  return {
    config,
    counts: {
      peers: d.peers.length,
      groups: d.groups.length,
      users: d.users.length,
      policies: d.policies.length,
      rules: ruleCount,
      networks: d.networks.length,
      resources: resourceCount,
      routers: routerCount,
      routes: d.routes.length,
    },
    warnings,
  };
}

interface Known {
  groupsById: ReadonlyMap<string, NbGroup>;
  peerIds: ReadonlySet<string>;
  resourceIds: ReadonlySet<string>;
}

/** A rule's matching part, or null (with a warning) when wgflow cannot represent it. */
function mapRule(r: NbRule, who: string, warn: (s: string) => void, known: Known): Omit<PolicyConfig, 'id' | 'name' | 'enabled'> | null {
  if (r.action !== 'accept' && r.action !== 'drop') {
    warn(`${who}: action ${q(r.action)} is not accept or drop; not used for attribution`);
    return null;
  }
  let protocol: PolicyProtocol;
  let extraPorts: PortSpec[] = [];
  switch (r.protocol) {
    case 'all': case 'tcp': case 'udp': case 'icmp':
      protocol = r.protocol;
      break;
    case 'netbird-ssh':
      // NetBird installs these as TCP rules on the rule's ports plus its native SSH port.
      protocol = 'tcp';
      extraPorts = [NETBIRD_SSH_PORT];
      break;
    default:
      warn(`${who}: protocol ${q(r.protocol)} is not one wgflow knows (all, tcp, udp, icmp, netbird-ssh); not used for attribution`);
      return null;
  }
  const ports: PortSpec[] = [];
  for (const p of r.ports) {
    const spec: PortSpec = /^\s*\d+\s*$/.test(p) ? Number(p) : p;
    try {
      portRange(spec);
    } catch (err) {
      // Leaving the port out would widen or narrow the rule: the rule is not used at all.
      warn(`${who}: port ${q(p)}: ${(err as Error).message}; rule not used for attribution`);
      return null;
    }
    ports.push(spec);
  }
  for (const pr of r.portRanges) {
    const spec = { from: pr.start, to: pr.end };
    try {
      portRange(spec);
    } catch (err) {
      warn(`${who}: port range ${pr.start}-${pr.end}: ${(err as Error).message}; rule not used for attribution`);
      return null;
    }
    ports.push(spec);
  }
  if (ports.length > 0) ports.push(...extraPorts);

  const side = (groups: readonly string[], res: NbRef | undefined, what: 'source' | 'destination'): PolicyTarget[] => {
    const out: PolicyTarget[] = [];
    for (const g of groups) {
      if (!known.groupsById.has(g)) warn(`${who}: ${what} group ${q(g)} is not in /api/groups`);
      out.push({ group: g });
    }
    if (res) {
      if (res.type === 'peer') {
        if (!known.peerIds.has(res.id)) warn(`${who}: ${what} peer ${q(res.id)} is not in /api/peers`);
        out.push({ peer: res.id });
      } else if (res.type === 'host' || res.type === 'subnet' || res.type === 'domain') {
        if (!known.resourceIds.has(res.id)) warn(`${who}: ${what} resource ${q(res.id)} is not an attributed network resource`);
        out.push({ resource: res.id });
      } else {
        warn(`${who}: ${what} resource ${q(res.id)} has type ${q(res.type)}, which wgflow does not know; left out`);
      }
    }
    if (out.length === 0) warn(`${who}: no ${what}s; the rule matches no flow`);
    return out;
  };
  return {
    action: r.action,
    protocol,
    ...(ports.length > 0 ? { ports } : {}),
    bidirectional: r.bidirectional,
    sources: side(r.sources, r.sourceResource, 'source'),
    destinations: side(r.destinations, r.destinationResource, 'destination'),
  };
}
