// Immutable attribution tables compiled from an AttributionConfig: peers by address, one
// longest-prefix-match trie for every prefix any table mentions (overlay, resources, policy
// targets, filters), domain resources, and the policies as bitsets (bit i = policy i in list order).
//
// Every trie entry carries the *cumulative* facts of all prefixes covering it (is it overlay, its
// longest resource, the policies whose sources/destinations cover it, include/exclude filters), so
// one lookup per address answers everything. Tables are never modified after build(): a reload
// builds new tables and swaps a reference (Attributor.swap).
import type { EndpointType, FlowUser } from '../model/event';
import type { AttributionConfig, PeerConfig, PolicyProtocol, PolicyTarget, PortSpec, ResourceConfig, ResourceType } from './config';
import { IpPrefix, ipToRaw, maskRaw, parsePrefix, prefixToString, rawToIp } from '../net/ip';
import { Lpm } from './lpm';

/** A FlowEndpoint without ip and port (same shape as attributor's EndpointInfo). */
export type EndpointTemplate = Readonly<{ id: string; name: string; type: EndpointType; dnsLabel: string; os: string; publicKey: string }>;

export interface PeerInfo {
  /** The endpoint fields of this peer (shared by every flow). */
  readonly endpoint: EndpointTemplate;
  readonly id: string;
  readonly name: string;
  readonly os: string;
  readonly dnsLabel: string;
  readonly publicKey: string;
  readonly groups: readonly string[];
  readonly user: FlowUser;
  /** Policies whose sources / destinations name this peer or one of its groups. */
  readonly srcBits: Uint32Array;
  readonly dstBits: Uint32Array;
}

export interface ResourceInfo {
  readonly endpoint: EndpointTemplate;
  readonly id: string;
  readonly name: string;
  readonly type: ResourceType;
  readonly endpointType: EndpointType;
  /** Policies naming this resource or one of its groups (used for DOMAIN resources; prefix resources carry them in the trie). */
  readonly srcBits: Uint32Array;
  readonly dstBits: Uint32Array;
}

/**
 * What the trie knows about an address (cumulative over every prefix covering it). Peer addresses
 * have entries of their own (/32, /128), so one lookup also finds the peer, and their policy bits
 * already include the peer's: attribution then needs no second table and no bitset OR per flow.
 */
export interface AddrInfo {
  /** The peer with exactly this address (null: none). */
  readonly peer: PeerInfo | null;
  /**
   * The peer whose allowed-IP prefix (wider than a host) is the longest covering the address, when
   * it decides the endpoint (null: none): inside the overlay when it is at least as long as the
   * overlay prefix (a hub's, not an exit node's /0), outside when no resource prefix at least as
   * long covers the address. Its policies are not the address's: a host behind a routing peer is
   * not that peer.
   */
  readonly route: PeerInfo | null;
  readonly overlay: boolean;
  /** The longest resource prefix covering the address (null: none). */
  readonly resource: ResourceInfo | null;
  /** Length of that resource prefix (0 = a /0 route: exit node). -1 when no resource. */
  readonly resourceLen: number;
  /**
   * Exit-node traffic unless a domain resource claims the address: no peer, not in the overlay,
   * and what decides the endpoint (the longest resource, or a longer peer route) is a /0.
   */
  readonly exitRoute: boolean;
  readonly srcBits: Uint32Array;
  readonly dstBits: Uint32Array;
  /** The same sets as ascending policy indexes (firstPolicyOf walks the shorter one). */
  readonly srcList: Int32Array;
  readonly dstList: Int32Array;
  readonly include: boolean;
  readonly exclude: boolean;
}

export interface CompiledPolicy {
  readonly index: number;
  readonly id: string;
  readonly name: string;
  readonly action: 'accept' | 'drop';
  readonly enabled: boolean;
  readonly bidirectional: boolean;
  /** Destination port ranges as [from, to, from, to, ...]; null = any port (port-less flows too). */
  readonly ports: Int32Array | null;
  readonly protocols: PolicyProtocol;
}

/** A set of ports (0-65535) as a bitmap. */
export class PortSet {
  private readonly bits = new Uint8Array(8192);
  readonly empty: boolean;
  constructor(ranges: Int32Array) {
    for (let i = 0; i < ranges.length; i += 2) {
      for (let p = ranges[i]; p <= ranges[i + 1]; p++) this.bits[p >> 3] |= 1 << (p & 7);
    }
    this.empty = ranges.length === 0;
  }
  has(port: number): boolean {
    return (this.bits[port >> 3] & (1 << (port & 7))) !== 0;
  }
}

/** A table entry that breaks a rule; path is inside the attribution tables (e.g. "policies[2].id"). */
export class AttributionError extends Error {
  constructor(readonly path: string, readonly problem: string) {
    super(path ? `${path}: ${problem}` : problem);
    this.name = 'AttributionError';
  }
}

/** One port spec as [from, to]: 80, "8000-8100" or { from, to }. The config schema checks with this too. */
export function portRange(s: unknown): [number, number] {
  const check = (p: unknown): number => {
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p > 65535) throw new Error(`port ${JSON.stringify(p)} is not 0-65535`);
    return p;
  };
  if (typeof s === 'number') return [check(s), s];
  if (typeof s === 'string') {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(s);
    if (!m) throw new Error(`"${s}" is not a port or "from-to" range`);
    const from = check(Number(m[1]));
    const to = m[2] === undefined ? from : check(Number(m[2]));
    if (to < from) throw new Error(`range "${s}" ends before it starts`);
    return [from, to];
  }
  if (s && typeof s === 'object' && !Array.isArray(s)) {
    const r = s as { from?: unknown; to?: unknown };
    const from = check(r.from), to = check(r.to);
    if (to < from) throw new Error(`range ${from}-${to} ends before it starts`);
    return [from, to];
  }
  throw new Error(`bad port spec ${JSON.stringify(s)} (a port, "from-to" or { from, to })`);
}

function parsePorts(specs: readonly PortSpec[] | undefined, where: string): Int32Array {
  const out: number[] = [];
  (specs ?? []).forEach((s, i) => {
    try {
      out.push(...portRange(s));
    } catch (err) {
      throw new AttributionError(`${where}[${i}]`, (err as Error).message);
    }
  });
  return Int32Array.from(out);
}

function protocolMatches(p: PolicyProtocol, proto: number): boolean {
  switch (p) {
    case 'all': return true;
    case 'tcp': return proto === 6;
    case 'udp': return proto === 17;
    case 'icmp': return proto === 1 || proto === 58;
    default: return proto === p;
  }
}

/** A policy's protocol (absent = all). The config schema checks with this too. */
export function protocolOf(p: unknown): PolicyProtocol {
  if (p === undefined) return 'all';
  if (p === 'all' || p === 'tcp' || p === 'udp' || p === 'icmp') return p;
  if (typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 255) return p;
  throw new Error(`expected all, tcp, udp, icmp or 0-255, got ${JSON.stringify(p)}`);
}

/** An id unique in its table: a second one would make events and rule ids ambiguous. */
function uniqueId(seen: Map<string, number>, id: unknown, table: string, what: string, i: number): string {
  if (typeof id !== 'string' || id === '') throw new AttributionError(`${table}[${i}].id`, 'is required');
  const first = seen.get(id);
  if (first !== undefined) throw new AttributionError(`${table}[${i}].id`, `duplicate ${what} id "${id}" (${table}[${first}] has it too)`);
  seen.set(id, i);
  return id;
}

const ENDPOINT_TYPE: Record<ResourceType, EndpointType> = {
  HOST: 'HOST_RESOURCE',
  SUBNET: 'SUBNET_RESOURCE',
  DOMAIN: 'DOMAIN_RESOURCE',
};

const EMPTY_USER: FlowUser = Object.freeze({ id: '', name: '', email: '' });
const NO_POLICIES = new Int32Array(0);

/** Does a policy's port list admit this destination port? */
function portsMatch(p: CompiledPolicy, hasPorts: boolean, dport: number): boolean {
  const ports = p.ports;
  if (ports === null) return true;
  if (!hasPorts) return false;
  for (let i = 0; i < ports.length; i += 2) if (dport >= ports[i] && dport <= ports[i + 1]) return true;
  return false;
}

function normalizeDomain(d: string): string {
  return d.trim().toLowerCase().replace(/\.$/, '');
}

/** Own facts of one distinct prefix, before accumulation. */
interface PrefixFacts {
  prefix: IpPrefix;
  peer: PeerInfo | null;
  /** The peer whose allowed IPs name this prefix (wider than a host). */
  route: PeerInfo | null;
  overlay: boolean;
  resource: ResourceInfo | null;
  srcBits: Uint32Array | null;
  dstBits: Uint32Array | null;
  include: boolean;
  exclude: boolean;
}

export class AttributionTables {
  /** Peers by normalised raw address. */
  readonly peersByAddr: Map<string, PeerInfo>;
  readonly peersById: Map<string, PeerInfo>;
  readonly resourcesById: Map<string, ResourceInfo>;
  /** Every prefix of every table, with cumulative facts. */
  readonly trie: Lpm<AddrInfo>;
  /** Facts of an address no prefix covers. */
  readonly noMatch: AddrInfo;
  readonly policies: readonly CompiledPolicy[];
  /** Words per policy bitset. */
  readonly words: number;
  readonly zero: Uint32Array;
  /** Policies with bidirectional set (and accept + enabled). */
  readonly bidirMask: Uint32Array;
  readonly anyBidirectional: boolean;
  readonly exitNodeCollection: boolean;
  readonly dnsCollection: boolean;
  readonly includePrefixesSet: boolean;
  readonly includePorts: PortSet | null;
  readonly excludePorts: PortSet | null;
  readonly domainExact: Map<string, ResourceInfo>;
  readonly domainWildcards: readonly (readonly [suffix: string, resource: ResourceInfo])[];
  readonly hasDomainResources: boolean;
  /** Dangling references and other non-fatal findings of build(). */
  readonly warnings: readonly string[];
  readonly emptyUser = EMPTY_USER;
  private readonly protoMasks: (Uint32Array | undefined)[] = new Array(256);
  private readonly acceptMask: Uint32Array;

  private constructor(cfg: AttributionConfig) {
    const warnings: string[] = [];
    const policiesCfg = cfg.policies ?? [];
    const words = Math.max(1, Math.ceil(policiesCfg.length / 32));
    this.words = words;
    this.zero = new Uint32Array(words);
    const newBits = (): Uint32Array => new Uint32Array(words);
    const setBit = (bits: Uint32Array, i: number): void => {
      bits[i >>> 5] |= 1 << (i & 31);
    };

    // Peers.
    this.peersByAddr = new Map();
    this.peersById = new Map();
    const peerSrc = new Map<string, Uint32Array>(), peerDst = new Map<string, Uint32Array>();
    const peersByGroup = new Map<string, PeerConfig[]>();
    const peerIds = new Map<string, number>(), peerKeys = new Map<string, number>();
    (cfg.peers ?? []).forEach((p, i) => {
      uniqueId(peerIds, p?.id, 'peers', 'peer', i);
      // One key is one WireGuard peer: two entries with it would attribute its flows arbitrarily.
      if (p.publicKey) {
        const first = peerKeys.get(p.publicKey);
        if (first !== undefined) throw new AttributionError(`peers[${i}].publicKey`, `duplicate public key "${p.publicKey}" (peers[${first}] has it too)`);
        peerKeys.set(p.publicKey, i);
      }
      peerSrc.set(p.id, newBits());
      peerDst.set(p.id, newBits());
      for (const g of p.groups ?? []) {
        if (!peersByGroup.has(g)) peersByGroup.set(g, []);
        peersByGroup.get(g)!.push(p);
      }
    });

    // Resources.
    this.resourcesById = new Map();
    const resCfgById = new Map<string, ResourceConfig>();
    const resourcesByGroup = new Map<string, ResourceConfig[]>();
    const resBits = new Map<string, { src: Uint32Array; dst: Uint32Array }>();
    const resourceIds = new Map<string, number>();
    (cfg.resources ?? []).forEach((r, i) => {
      const where = `resources[${i}]`;
      uniqueId(resourceIds, r?.id, 'resources', 'resource', i);
      if (r.type !== 'HOST' && r.type !== 'SUBNET' && r.type !== 'DOMAIN') {
        throw new Error(`${where}: type must be HOST, SUBNET or DOMAIN, got ${JSON.stringify(r.type)}`);
      }
      resCfgById.set(r.id, r);
      resBits.set(r.id, { src: newBits(), dst: newBits() });
      for (const g of r.groups ?? []) {
        if (!resourcesByGroup.has(g)) resourcesByGroup.set(g, []);
        resourcesByGroup.get(g)!.push(r);
      }
    });

    // Policies: compile, and mark every target with the policy's bit.
    const facts = new Map<string, PrefixFacts>();
    const factsOf = (p: IpPrefix): PrefixFacts => {
      const k = `${p.raw}/${p.length}`;
      let f = facts.get(k);
      if (!f) {
        f = { prefix: p, peer: null, route: null, overlay: false, resource: null, srcBits: null, dstBits: null, include: false, exclude: false };
        facts.set(k, f);
      }
      return f;
    };
    const prefixPolicyBits: { prefix: IpPrefix; side: 'src' | 'dst'; index: number }[] = [];
    const policies: CompiledPolicy[] = [];
    this.acceptMask = newBits();
    this.bidirMask = newBits();
    let anyBidir = false;
    const policyIds = new Map<string, number>();
    policiesCfg.forEach((p, i) => {
      const where = `policies[${i}]`;
      uniqueId(policyIds, p?.id, 'policies', 'policy', i);
      if (p.action !== 'accept' && p.action !== 'drop') throw new Error(`${where}: action must be accept or drop`);
      let protocols: PolicyProtocol;
      try {
        protocols = protocolOf(p.protocol);
      } catch (err) {
        throw new AttributionError(`${where}.protocol`, (err as Error).message);
      }
      const ports = parsePorts(p.ports, `${where}.ports`);
      const cp: CompiledPolicy = {
        index: i,
        id: p.id,
        name: p.name ?? '',
        action: p.action,
        enabled: p.enabled !== false,
        bidirectional: p.bidirectional === true,
        ports: ports.length > 0 ? ports : null,
        protocols,
      };
      policies.push(cp);
      if (cp.enabled && cp.action === 'accept') {
        setBit(this.acceptMask, i);
        if (cp.bidirectional) {
          setBit(this.bidirMask, i);
          anyBidir = true;
        }
      }
      const mark = (targets: PolicyTarget[] | undefined, side: 'src' | 'dst'): void => {
        if (!Array.isArray(targets)) throw new Error(`${where}: ${side === 'src' ? 'sources' : 'destinations'} must be a list`);
        for (const t of targets) this.markTarget(t, side, i, {
          where, peerSrc, peerDst, peersByGroup, resCfgById, resourcesByGroup, resBits, prefixPolicyBits, warnings, setBit,
        });
      };
      mark(p.sources, 'src');
      mark(p.destinations, 'dst');
    });
    this.policies = policies;
    this.anyBidirectional = anyBidir;

    // Peer infos (bits complete now).
    (cfg.peers ?? []).forEach((p, i) => {
      const info: PeerInfo = Object.freeze({
        endpoint: Object.freeze({ id: p.id, name: p.name ?? '', type: 'PEER', dnsLabel: p.dnsLabel ?? '', os: p.os ?? '', publicKey: p.publicKey ?? '' } as const),
        id: p.id,
        name: p.name ?? '',
        os: p.os ?? '',
        dnsLabel: p.dnsLabel ?? '',
        publicKey: p.publicKey ?? '',
        groups: Object.freeze([...(p.groups ?? [])]),
        user: p.user ? Object.freeze({ id: p.user.id ?? '', name: p.user.name ?? '', email: p.user.email ?? '' }) : EMPTY_USER,
        srcBits: peerSrc.get(p.id)!,
        dstBits: peerDst.get(p.id)!,
      });
      this.peersById.set(p.id, info);
      const ips = [...(p.ip ? [p.ip] : []), ...(p.ips ?? [])];
      // Allowed IPs: a host prefix is an address of the peer; a wider one routes to it.
      for (const text of p.allowedIps ?? []) {
        const pfx = this.prefix(text, `peers[${i}].allowedIps`);
        if (pfx.length === pfx.raw.length * 8) {
          ips.push(rawToIp(pfx.raw));
          continue;
        }
        const f = factsOf(pfx);
        if (f.route === null) f.route = info;
        else if (f.route !== info) warnings.push(`peers[${i}]: allowed IPs ${text} already route to peer "${f.route.id}"; the first one keeps them`);
      }
      for (const ip of ips) {
        let raw: string;
        try {
          raw = ipToRaw(ip);
        } catch {
          throw new Error(`peers[${i}]: "${ip}" is not an IP address`);
        }
        const other = this.peersByAddr.get(raw);
        if (other && other !== info) {
          warnings.push(`peers[${i}]: address ${ip} already belongs to peer "${other.id}"; the first one keeps it`);
          continue;
        }
        this.peersByAddr.set(raw, info);
      }
    });

    // Resource infos and their prefixes.
    this.domainExact = new Map();
    const wildcards: [string, ResourceInfo][] = [];
    (cfg.resources ?? []).forEach((r, i) => {
      const bits = resBits.get(r.id)!;
      const info: ResourceInfo = Object.freeze({
        endpoint: Object.freeze({ id: r.id, name: r.name ?? '', type: ENDPOINT_TYPE[r.type], dnsLabel: '', os: '', publicKey: '' }),
        id: r.id, name: r.name ?? '', type: r.type, endpointType: ENDPOINT_TYPE[r.type], srcBits: bits.src, dstBits: bits.dst,
      });
      this.resourcesById.set(r.id, info);
      for (const text of r.prefixes ?? []) {
        const p = this.prefix(text, `resources[${i}].prefixes`);
        const f = factsOf(p);
        if (f.resource === null) f.resource = info; // identical prefixes: the first resource keeps it
        else warnings.push(`resources[${i}]: prefix ${text} already belongs to resource "${f.resource.id}"; the first one keeps it`);
      }
      for (const d of r.domains ?? []) {
        const n = normalizeDomain(d);
        if (n.startsWith('*.')) wildcards.push([n.substring(1), info]); // ".example.com"
        else if (!this.domainExact.has(n)) this.domainExact.set(n, info);
      }
      if (r.type === 'DOMAIN' && (r.domains ?? []).length === 0) warnings.push(`resources[${i}]: a DOMAIN resource without domains never matches`);
    });
    wildcards.sort((a, b) => b[0].length - a[0].length); // most specific wildcard first
    this.domainWildcards = wildcards;
    this.hasDomainResources = this.domainExact.size > 0 || wildcards.length > 0;

    for (const text of cfg.overlay ?? []) factsOf(this.prefix(text, 'overlay')).overlay = true;
    for (const { prefix, side, index } of prefixPolicyBits) {
      const f = factsOf(prefix);
      const key = side === 'src' ? 'srcBits' : 'dstBits';
      if (!f[key]) f[key] = newBits();
      setBit(f[key]!, index);
    }
    const filters = cfg.filters ?? {};
    for (const text of filters.includePrefixes ?? []) factsOf(this.prefix(text, 'filters.includePrefixes')).include = true;
    for (const text of filters.excludePrefixes ?? []) factsOf(this.prefix(text, 'filters.excludePrefixes')).exclude = true;
    this.includePrefixesSet = (filters.includePrefixes ?? []).length > 0;
    const inc = parsePorts(filters.includePorts, 'filters.includePorts');
    const exc = parsePorts(filters.excludePorts, 'filters.excludePorts');
    this.includePorts = inc.length > 0 ? new PortSet(inc) : null;
    this.excludePorts = exc.length > 0 ? new PortSet(exc) : null;
    this.exitNodeCollection = cfg.exitNodeCollection === true;
    this.dnsCollection = cfg.dnsCollection === true;

    for (const [raw, peer] of this.peersByAddr) {
      factsOf({ family: raw.length === 4 ? 4 : 6, raw, length: raw.length * 8 }).peer = peer;
    }
    this.noMatch = Object.freeze({
      peer: null, route: null, overlay: false, resource: null, resourceLen: -1, exitRoute: false, srcBits: this.zero, dstBits: this.zero,
      srcList: NO_POLICIES, dstList: NO_POLICIES, include: false, exclude: false,
    });
    this.trie = this.accumulate([...facts.values()]);
    this.warnings = warnings;
  }

  /** Compile a config; throws with the offending path on invalid input. */
  static build(cfg: AttributionConfig = {}): AttributionTables {
    return new AttributionTables(cfg);
  }

  private prefix(text: string, where: string): IpPrefix {
    try {
      return parsePrefix(String(text));
    } catch (err) {
      throw new Error(`${where}: ${(err as Error).message}`);
    }
  }

  private markTarget(
    t: PolicyTarget,
    side: 'src' | 'dst',
    index: number,
    c: {
      where: string;
      peerSrc: Map<string, Uint32Array>;
      peerDst: Map<string, Uint32Array>;
      peersByGroup: Map<string, PeerConfig[]>;
      resCfgById: Map<string, ResourceConfig>;
      resourcesByGroup: Map<string, ResourceConfig[]>;
      resBits: Map<string, { src: Uint32Array; dst: Uint32Array }>;
      prefixPolicyBits: { prefix: IpPrefix; side: 'src' | 'dst'; index: number }[];
      warnings: string[];
      setBit: (b: Uint32Array, i: number) => void;
    },
  ): void {
    const markPeer = (id: string): void => c.setBit((side === 'src' ? c.peerSrc : c.peerDst).get(id)!, index);
    const markResource = (r: ResourceConfig): void => {
      const b = c.resBits.get(r.id)!;
      c.setBit(side === 'src' ? b.src : b.dst, index);
      for (const text of r.prefixes ?? []) c.prefixPolicyBits.push({ prefix: this.prefix(text, `resource "${r.id}"`), side, index });
    };
    if (!t || typeof t !== 'object') throw new Error(`${c.where}: a target must be { peer | group | prefix | resource }`);
    if ('peer' in t) {
      if (c.peerSrc.has(t.peer)) markPeer(t.peer);
      else c.warnings.push(`${c.where}: unknown peer "${t.peer}"`);
    } else if ('group' in t) {
      const peers = c.peersByGroup.get(t.group) ?? [];
      const res = c.resourcesByGroup.get(t.group) ?? [];
      for (const p of peers) markPeer(p.id);
      for (const r of res) markResource(r);
      if (peers.length === 0 && res.length === 0) c.warnings.push(`${c.where}: group "${t.group}" has no members`);
    } else if ('prefix' in t) {
      c.prefixPolicyBits.push({ prefix: this.prefix(t.prefix, `${c.where} prefix`), side, index });
    } else if ('resource' in t) {
      const r = c.resCfgById.get(t.resource);
      if (r) markResource(r);
      else c.warnings.push(`${c.where}: unknown resource "${t.resource}"`);
    } else {
      throw new Error(`${c.where}: a target must be { peer | group | prefix | resource }, got ${JSON.stringify(t)}`);
    }
  }

  /**
   * Give every distinct prefix the facts of all prefixes covering it: process them shortest first;
   * the covering prefixes of P are all shorter, so P's nearest (longest) covering prefix is already
   * accumulated and found by probing each shorter length present.
   */
  private accumulate(all: PrefixFacts[]): Lpm<AddrInfo> {
    all.sort((a, b) => a.prefix.length - b.prefix.length);
    // Per accumulated prefix: its facts, the longest peer route covering it (whether or not a
    // resource hides it there: a longer prefix inside may be past that resource's reach) and the
    // length of the longest overlay prefix covering it.
    type Done = { info: AddrInfo; route: PeerInfo | null; routeLen: number; overlayLen: number };
    const done = new Map<string, Done>();
    const none: Done = { info: this.noMatch, route: null, routeLen: -1, overlayLen: -1 };
    const lengths: Record<4 | 6, number[]> = { 4: [], 6: [] };
    const pairs: [IpPrefix, AddrInfo][] = [];
    // Equal bitsets are shared: thousands of addresses have only a few distinct policy sets, and
    // a flow's policy match then reads arrays that stay in the CPU cache instead of one per prefix.
    const interned = new Map<string, Uint32Array>();
    const lists = new Map<Uint32Array, Int32Array>([[this.zero, NO_POLICIES]]);
    const intern = (bits: Uint32Array): Uint32Array => {
      const k = Buffer.from(bits.buffer, bits.byteOffset, bits.byteLength).toString('latin1');
      const known = interned.get(k);
      if (known) return known;
      interned.set(k, bits);
      return bits;
    };
    const listOf = (bits: Uint32Array): Int32Array => {
      let l = lists.get(bits);
      if (!l) {
        const idx: number[] = [];
        for (let i = 0; i < bits.length * 32; i++) if ((bits[i >>> 5] & (1 << (i & 31))) !== 0) idx.push(i);
        l = Int32Array.from(idx);
        lists.set(bits, l);
      }
      return l;
    };
    intern(this.zero);
    const or = (a: Uint32Array, b: Uint32Array | null | undefined): Uint32Array => {
      if (!b) return a;
      const out = new Uint32Array(this.words);
      for (let i = 0; i < out.length; i++) out[i] = a[i] | b[i];
      return intern(out);
    };
    for (const f of all) {
      const { family, raw, length } = f.prefix;
      let up = none;
      const ls = lengths[family];
      for (let i = ls.length - 1; i >= 0; i--) {
        if (ls[i] >= length) continue;
        const p = done.get(`${maskRaw(raw, ls[i])}/${ls[i]}`);
        if (p) {
          up = p;
          break;
        }
      }
      const parent = up.info;
      const route = f.route ?? up.route;
      const routeLen = f.route ? length : up.routeLen;
      const overlay = parent.overlay || f.overlay;
      const overlayLen = f.overlay ? length : up.overlayLen;
      const resource = f.resource ?? parent.resource;
      const resourceLen = f.resource ? length : parent.resourceLen;
      // Inside the overlay resources never name an endpoint, and a route does when it is at least
      // as specific as the overlay (a hub carrying it; an exit node's /0 is not about the overlay).
      // Outside, a resource at least as specific as the route wins (a resource behind its router).
      const shownRoute = route !== null && (overlay ? routeLen >= overlayLen : routeLen > resourceLen) ? route : null;
      // A peer's entry is a host address, so nothing inherits its peer or its peer bits.
      const srcBits = intern(or(or(parent.srcBits, f.srcBits), f.peer?.srcBits));
      const dstBits = intern(or(or(parent.dstBits, f.dstBits), f.peer?.dstBits));
      const info: AddrInfo = Object.freeze({
        peer: f.peer,
        route: shownRoute,
        overlay,
        resource,
        resourceLen,
        exitRoute: f.peer === null && !overlay && (shownRoute !== null ? routeLen === 0 : resourceLen === 0),
        srcBits,
        dstBits,
        srcList: listOf(srcBits),
        dstList: listOf(dstBits),
        include: parent.include || f.include,
        exclude: parent.exclude || f.exclude,
      });
      done.set(`${raw}/${length}`, { info, route, routeLen, overlayLen });
      if (ls[ls.length - 1] !== length) ls.push(length);
      pairs.push([f.prefix, info]);
    }
    return Lpm.build(pairs);
  }

  /** Facts of a normalised raw address. */
  addrInfo(raw: string): AddrInfo {
    const i = this.trie.indexRaw(raw);
    return i < 0 ? this.noMatch : this.trie.entries[i].value;
  }

  /** The DOMAIN resource a name belongs to (exact name first, then the longest wildcard). */
  resourceForDomain(domain: string): ResourceInfo | undefined {
    const n = normalizeDomain(domain);
    const exact = this.domainExact.get(n);
    if (exact) return exact;
    for (const [suffix, r] of this.domainWildcards) if (n.endsWith(suffix) && n.length > suffix.length) return r;
    return undefined;
  }

  /** Accept + enabled policies whose protocol matches (bitset). */
  protoMask(proto: number): Uint32Array {
    let m = this.protoMasks[proto & 255];
    if (!m) {
      m = new Uint32Array(this.words);
      for (const p of this.policies) {
        if (p.enabled && p.action === 'accept' && protocolMatches(p.protocols, proto)) m[p.index >>> 5] |= 1 << (p.index & 31);
      }
      this.protoMasks[proto & 255] = m;
    }
    return m;
  }

  /**
   * The first accept policy (list order) whose bit is in both the initiator's source set and the
   * responder's destination set (or the reverse for bidirectional ones), whose protocol matches and
   * whose ports contain the destination port. Sets are prepared by the caller (Attributor).
   */
  firstPolicy(iSrc: Uint32Array, rDst: Uint32Array, rSrc: Uint32Array, iDst: Uint32Array, proto: number, hasPorts: boolean, dport: number): CompiledPolicy | null {
    const pm = this.protoMask(proto);
    const bidir = this.anyBidirectional ? this.bidirMask : null;
    for (let w = 0; w < this.words; w++) {
      let cand = iSrc[w] & rDst[w];
      if (bidir !== null) cand |= rSrc[w] & iDst[w] & bidir[w];
      cand &= pm[w];
      while (cand !== 0) {
        const low = cand & -cand;
        const p = this.policies[w * 32 + 31 - Math.clz32(low)];
        if (portsMatch(p, hasPorts, dport)) return p;
        cand ^= low;
      }
    }
    return null;
  }

  /**
   * firstPolicy for two addresses' own sets (no domain resource involved), with the same result.
   * A policy set usually holds a few dozen of the policies, so walking the shorter index list and
   * testing each index in the other side's bitset beats scanning every word of three bitsets (the
   * scan costs ~2 ns per 32 policies per flow even when nothing matches). Long lists take the scan.
   */
  firstPolicyOf(s: AddrInfo, d: AddrInfo, proto: number, hasPorts: boolean, dport: number): CompiledPolicy | null {
    const bidir = this.anyBidirectional;
    const n1 = Math.min(s.srcList.length, d.dstList.length);
    const n2 = bidir ? Math.min(d.srcList.length, s.dstList.length) : 0;
    if (n1 + n2 > 2 * this.words) {
      return this.firstPolicy(s.srcBits, d.dstBits, bidir ? d.srcBits : this.zero, bidir ? s.dstBits : this.zero, proto, hasPorts, dport);
    }
    const pm = this.protoMask(proto);
    let best = this.firstCommon(s.srcList, s.srcBits, d.dstList, d.dstBits, pm, hasPorts, dport);
    if (bidir) {
      // The reverse direction only counts for bidirectional policies (bidirMask).
      const r = this.firstCommon(d.srcList, d.srcBits, s.dstList, s.dstBits, this.bidirMask, hasPorts, dport, pm);
      if (r >= 0 && (best < 0 || r < best)) best = r;
    }
    return best < 0 ? null : this.policies[best];
  }

  /** Lowest policy index in both sets and in mask (and in mask2) whose ports admit dport; -1 if none. */
  private firstCommon(
    aList: Int32Array, aBits: Uint32Array, bList: Int32Array, bBits: Uint32Array,
    mask: Uint32Array, hasPorts: boolean, dport: number, mask2: Uint32Array = mask,
  ): number {
    const list = bList.length < aList.length ? bList : aList;
    const other = list === aList ? bBits : aBits;
    for (let i = 0; i < list.length; i++) {
      const p = list[i];
      const w = p >>> 5, bit = 1 << (p & 31);
      if ((other[w] & mask[w] & mask2[w] & bit) !== 0 && portsMatch(this.policies[p], hasPorts, dport)) return p;
    }
    return -1;
  }

  /**
   * The first enabled `action: drop` policy (list order) whose sources hold the packets' source
   * (sSrc: its policy bits as a source) and whose destinations hold their destination (dDst), or
   * the reverse for bidirectional ones (dSrc, sDst), whose protocol matches and whose ports hold
   * dport: the policy a DROP event names. The bitsets are firstPolicy's (addresses and domain
   * resources). A plain walk: drops are reported once per key and window, drop policies are few.
   */
  firstDropPolicy(sSrc: Uint32Array, dDst: Uint32Array, dSrc: Uint32Array, sDst: Uint32Array, proto: number, hasPorts: boolean, dport: number): CompiledPolicy | null {
    const has = (bits: Uint32Array, i: number): boolean => (bits[i >>> 5] & (1 << (i & 31))) !== 0;
    for (const p of this.policies) {
      if (!p.enabled || p.action !== 'drop' || !protocolMatches(p.protocols, proto) || !portsMatch(p, hasPorts, dport)) continue;
      const i = p.index;
      if ((has(sSrc, i) && has(dDst, i)) || (p.bidirectional && has(dSrc, i) && has(sDst, i))) return p;
    }
    return null;
  }

  /** Human-readable dump of the trie (debugging). */
  describePrefixes(): string[] {
    return this.trie.entries.map((e) => `${prefixToString(e.prefix)} overlay=${e.value.overlay} resource=${e.value.resource?.id ?? '-'} route=${e.value.route?.id ?? '-'}`);
  }
}

