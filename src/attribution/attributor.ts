// Attribution of a flow to peers, resources, a policy and a user, and the export filters.
// The tracker calls attribute() once per flow, when the flow starts; the result is reused for
// every later event of the flow. Tables are replaced whole by swap(): flows that already have an
// attribution keep it, flows starting afterwards use the new tables (docs/attribution.md).
import type { FlowDirection, FlowEndpoint, FlowUser } from '../model/event';
import { Clock, systemClock } from '../model/clock';
import type { AttributionConfig } from './config';
import { ipToRaw, normalizeRaw, parseIpRaw } from '../net/ip';
import { AddrInfo, AttributionTables, CompiledPolicy, PeerInfo, ResourceInfo } from './tables';

/** What the tracker knows about a flow when it starts: initiator (src) and responder (dst). */
export interface FlowTuple {
  family: 4 | 6;
  /** Raw addresses (latin1, 4 or 16 characters, as in the flow key; IPv4-mapped is fine). */
  srcRaw: string;
  dstRaw: string;
  proto: number;
  /** TCP/UDP-style flow with ports (kind Ports); false for ICMP, other protocols and fragments. */
  hasPorts: boolean;
  srcPort: number;
  dstPort: number;
  direction: FlowDirection;
  /** CLOCK_MONOTONIC ns now (expiry of resolved domain addresses); default: the attributor's clock. */
  nowNs?: number;
}

/** Why a flow is tracked but not exported ('' = exported). */
export type SkipReason = '' | 'dns' | 'filter' | 'exit_node';

/**
 * What the tables say about one endpoint: a FlowEndpoint without ip and port. Shared (one frozen
 * object per peer, per resource, and one for unknown addresses), so a tracked flow holds two
 * pointers rather than two endpoint objects; events combine it with the flow's address and port.
 */
export type EndpointInfo = Readonly<Omit<FlowEndpoint, 'ip' | 'port'>>;

export const UNKNOWN_ENDPOINT: EndpointInfo = Object.freeze({ id: '', name: '', type: 'UNKNOWN', dnsLabel: '', os: '', publicKey: '' });

/** A FlowEndpoint from an address, a port and what the tables know about it. */
export function endpointOf(ip: string, port: number, e: EndpointInfo): FlowEndpoint {
  return { ip, port, id: e.id, name: e.name, type: e.type, dnsLabel: e.dnsLabel, os: e.os, publicKey: e.publicKey };
}

export interface Attribution {
  /** The initiator and the responder (shared objects: never modify). */
  source: EndpointInfo;
  destination: EndpointInfo;
  ruleId: string;
  policyName: string;
  user: FlowUser;
  skip: SkipReason;
  /** The non-overlay endpoint only matched a /0 resource. */
  exitNode: boolean;
  /** Tables generation that produced it (1 = the first tables). */
  generation: number;
}

/** A policy as events name it. */
export interface PolicyRef {
  readonly id: string;
  readonly name: string;
}

/** An attribution in parts, written in place (see Attributor.attributeParts). */
export interface AttributionParts {
  source: EndpointInfo;
  destination: EndpointInfo;
  /** The first allowing policy; null when none matched. */
  policy: PolicyRef | null;
  user: FlowUser;
  skip: SkipReason;
  exitNode?: boolean;
}

/** The attribution interface the tracker depends on (attributeParts, when there, saves an object per flow). */
export interface FlowAttributor {
  attribute(t: FlowTuple): Attribution;
  attributeParts?(t: FlowTuple, out: AttributionParts): void;
}

export interface AttributorOptions {
  clock?: Clock;
  /** Most addresses kept in the resolved-domain table (default 100,000); expired ones go first, then the oldest. */
  maxResolved?: number;
}

interface ResolvedName {
  domain: string;
  expiresNs: number;
}

const EMPTY_USER: FlowUser = Object.freeze({ id: '', name: '', email: '' });

function skipped(reason: SkipReason, generation: number): Attribution {
  return Object.freeze({
    source: UNKNOWN_ENDPOINT, destination: UNKNOWN_ENDPOINT, ruleId: '', policyName: '', user: EMPTY_USER,
    skip: reason, exitNode: reason === 'exit_node', generation,
  });
}

export class Attributor implements FlowAttributor {
  private current: AttributionTables;
  private gen = 1;
  private readonly clock: Clock;
  private readonly maxResolved: number;
  /** Resolved addresses (normalised raw) -> the names they were resolved for. Survives swaps. */
  private readonly resolved = new Map<string, ResolvedName[]>();
  // Scratch bitsets for policy matching (reallocated when the policy count changes).
  private iSrc!: Uint32Array;
  private iDst!: Uint32Array;
  private rSrc!: Uint32Array;
  private rDst!: Uint32Array;
  private skipDns!: Attribution;
  private skipFilter!: Attribution;
  private skipExit!: Attribution;
  private readonly scratch: AttributionParts = { source: UNKNOWN_ENDPOINT, destination: UNKNOWN_ENDPOINT, policy: null, user: EMPTY_USER, skip: '' };

  constructor(config: AttributionConfig | AttributionTables = {}, opts: AttributorOptions = {}) {
    this.clock = opts.clock ?? systemClock;
    this.maxResolved = opts.maxResolved ?? 100_000;
    this.current = config instanceof AttributionTables ? config : AttributionTables.build(config);
    this.prepare();
  }

  get tables(): AttributionTables {
    return this.current;
  }

  /** Incremented by every swap(). */
  get generation(): number {
    return this.gen;
  }

  /**
   * Replace the tables atomically: the new ones are compiled completely first (a bad config throws
   * and leaves the current tables in place), then one reference is swapped. Flows already started
   * keep their attribution; the resolved-domain table is kept.
   */
  swap(next: AttributionConfig | AttributionTables): AttributionTables {
    const tables = next instanceof AttributionTables ? next : AttributionTables.build(next);
    this.current = tables;
    this.gen++;
    this.prepare();
    return tables;
  }

  private prepare(): void {
    const w = this.current.words;
    this.iSrc = new Uint32Array(w);
    this.iDst = new Uint32Array(w);
    this.rSrc = new Uint32Array(w);
    this.rDst = new Uint32Array(w);
    this.skipDns = skipped('dns', this.gen);
    this.skipFilter = skipped('filter', this.gen);
    this.skipExit = skipped('exit_node', this.gen);
  }

  /**
   * Addresses a name resolved to (from a DNS hook), valid for ttlSec. Flows to these addresses
   * are attributed to the DOMAIN resource whose domains match the name. Invalid addresses are skipped.
   */
  feedResolved(domain: string, addrs: readonly string[], ttlSec: number): void {
    const expiresNs = this.clock.monoNs() + Math.max(0, ttlSec) * 1e9;
    const name = domain.trim().toLowerCase().replace(/\.$/, '');
    for (const a of addrs) {
      const p = parseIpRaw(a);
      if (!p) continue;
      const raw = normalizeRaw(p.raw);
      let list = this.resolved.get(raw);
      if (!list) {
        list = [];
        this.resolved.set(raw, list);
      }
      const same = list.find((r) => r.domain === name);
      if (same) same.expiresNs = Math.max(same.expiresNs, expiresNs);
      else list.push({ domain: name, expiresNs });
    }
    if (this.resolved.size > this.maxResolved) this.purgeResolved();
  }

  /** Drop expired resolved addresses (and the oldest ones past maxResolved); returns how many remain. */
  purgeResolved(nowNs = this.clock.monoNs()): number {
    for (const [raw, list] of this.resolved) {
      const live = list.filter((r) => r.expiresNs > nowNs);
      if (live.length === 0) this.resolved.delete(raw);
      else if (live.length !== list.length) this.resolved.set(raw, live);
    }
    if (this.resolved.size > this.maxResolved) {
      let excess = this.resolved.size - this.maxResolved;
      for (const raw of this.resolved.keys()) {
        if (excess-- <= 0) break;
        this.resolved.delete(raw);
      }
    }
    return this.resolved.size;
  }

  get resolvedSize(): number {
    return this.resolved.size;
  }

  private domainResource(t: AttributionTables, raw: string, nowNs: number): ResourceInfo | null {
    const list = this.resolved.get(raw);
    if (!list) return null;
    for (const r of list) {
      if (r.expiresNs <= nowNs) continue;
      const res = t.resourceForDomain(r.domain);
      if (res) return res;
    }
    return null;
  }

  /** Convenience for tools and tests: attribute a flow given by text addresses. */
  attributeIps(srcIp: string, dstIp: string, proto: number, srcPort: number, dstPort: number, direction: FlowDirection = 'INGRESS'): Attribution {
    const srcRaw = ipToRaw(srcIp), dstRaw = ipToRaw(dstIp);
    return this.attribute({
      family: srcRaw.length === 4 ? 4 : 6, srcRaw, dstRaw, proto,
      hasPorts: proto === 6 || proto === 17 || proto === 132 || proto === 136, srcPort, dstPort, direction,
    });
  }

  attribute(f: FlowTuple): Attribution {
    const p = this.scratch;
    this.attributeParts(f, p);
    if (p.skip !== '') return p.skip === 'dns' ? this.skipDns : p.skip === 'exit_node' ? this.skipExit : this.skipFilter;
    return {
      source: p.source, destination: p.destination,
      ruleId: p.policy === null ? '' : p.policy.id, policyName: p.policy === null ? '' : p.policy.name,
      user: p.user, skip: '', exitNode: p.exitNode ?? false, generation: this.gen,
    };
  }

  /**
   * attribute() into out, allocating nothing: the policy is the compiled one (a shared object),
   * the endpoints the tables' shared ones. The flow engine keeps these parts as indexes.
   */
  attributeParts(f: FlowTuple, out: AttributionParts): void {
    this.attributeInto(f, out, false);
  }

  /**
   * A DROP event's attribution: the endpoints, user and export filters as for a flow from the
   * packets' source to their destination, and as policy the first `action: drop` policy that
   * matches (null: none did), domain resources included. Either direction: a routing peer's
   * policies name both.
   */
  attributeDrop(f: FlowTuple, out: AttributionParts): void {
    this.attributeInto(f, out, true);
  }

  /** attributeParts (drop: false) or attributeDrop (drop: true): they differ in the policy only. */
  private attributeInto(f: FlowTuple, out: AttributionParts, drop: boolean): void {
    const t = this.current;
    const srcRaw = normalizeRaw(f.srcRaw);
    const dstRaw = normalizeRaw(f.dstRaw);
    const hasPorts = f.hasPorts;
    const sport = hasPorts ? f.srcPort : 0;
    const dport = hasPorts ? f.dstPort : 0;

    if (!t.dnsCollection && hasPorts && (f.proto === 6 || f.proto === 17) &&
        (dport === 53 || dport === 5353 || sport === 53 || sport === 5353)) {
      return skip(out, 'dns');
    }
    const sInfo = t.addrInfo(srcRaw);
    const dInfo = t.addrInfo(dstRaw);
    if (sInfo.exclude || dInfo.exclude) return skip(out, 'filter');
    if (t.includePrefixesSet && !sInfo.include && !dInfo.include) return skip(out, 'filter');
    if (t.excludePorts !== null && hasPorts && t.excludePorts.has(dport)) return skip(out, 'filter');
    if (t.includePorts !== null && !(hasPorts && t.includePorts.has(dport))) return skip(out, 'filter');

    const sPeer = sInfo.peer;
    const dPeer = dInfo.peer;
    let sDom: ResourceInfo | null = null, dDom: ResourceInfo | null = null;
    if (t.hasDomainResources && this.resolved.size > 0) {
      const now = f.nowNs ?? this.clock.monoNs();
      if (!sPeer && !sInfo.overlay) sDom = this.domainResource(t, srcRaw, now);
      if (!dPeer && !dInfo.overlay) dDom = this.domainResource(t, dstRaw, now);
    }
    const sExit = sInfo.exitRoute && sDom === null;
    const dExit = dInfo.exitRoute && dDom === null;
    const exitNode = sExit || dExit;
    if (exitNode && !t.exitNodeCollection) return skip(out, 'exit_node');

    let policy: CompiledPolicy | null = null;
    if (drop && t.policies.length > 0) {
      policy = t.firstDropPolicy(
        this.bits(this.iSrc, sInfo, sDom, true), this.bits(this.rDst, dInfo, dDom, false),
        this.bits(this.rSrc, dInfo, dDom, true), this.bits(this.iDst, sInfo, sDom, false),
        f.proto, hasPorts, dport,
      );
    } else if (!drop && f.direction === 'INGRESS' && t.policies.length > 0) {
      policy = sDom === null && dDom === null
        ? t.firstPolicyOf(sInfo, dInfo, f.proto, hasPorts, dport)
        : t.firstPolicy(
          this.bits(this.iSrc, sInfo, sDom, true),
          this.bits(this.rDst, dInfo, dDom, false),
          t.anyBidirectional ? this.bits(this.rSrc, dInfo, dDom, true) : t.zero,
          t.anyBidirectional ? this.bits(this.iDst, sInfo, sDom, false) : t.zero,
          f.proto, hasPorts, dport,
        );
    }
    out.source = this.fill(sPeer, sInfo, sDom);
    out.destination = this.fill(dPeer, dInfo, dDom);
    out.policy = policy;
    out.user = sPeer ? sPeer.user : EMPTY_USER;
    out.skip = '';
    out.exitNode = exitNode;
  }

  /** The policy bitset of one endpoint and side: the address's (prefixes and peer) | domain resource. */
  private bits(scratch: Uint32Array, info: AddrInfo, dom: ResourceInfo | null, src: boolean): Uint32Array {
    const a = src ? info.srcBits : info.dstBits;
    if (dom === null) return a;
    const c = src ? dom.srcBits : dom.dstBits;
    for (let i = 0; i < scratch.length; i++) scratch[i] = a[i] | c[i];
    return scratch;
  }

  private fill(peer: PeerInfo | null, info: AddrInfo, dom: ResourceInfo | null): EndpointInfo {
    if (peer) return peer.endpoint;
    if (dom) return dom.endpoint; // only looked up outside the overlay
    if (info.route) return info.route.endpoint; // already beaten by resources at least as long
    if (info.overlay) return UNKNOWN_ENDPOINT; // resource ids only outside the overlay
    return info.resource ? info.resource.endpoint : UNKNOWN_ENDPOINT;
  }
}

function skip(out: AttributionParts, reason: SkipReason): void {
  out.source = UNKNOWN_ENDPOINT;
  out.destination = UNKNOWN_ENDPOINT;
  out.policy = null;
  out.user = EMPTY_USER;
  out.skip = reason;
  out.exitNode = reason === 'exit_node';
}

/** An attributor with no tables: every endpoint UNKNOWN, nothing filtered but DNS. */
export function emptyAttributor(opts: AttributorOptions = {}): Attributor {
  return new Attributor({}, opts);
}
