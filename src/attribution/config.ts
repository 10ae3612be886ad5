// The attribution tables as plain data: what the daemon loads from YAML/JSON and hands to
// Attributor (new AttributionTables on every reload). docs/attribution.md is the schema.

export interface UserConfig {
  id: string;
  name?: string;
  email?: string;
}

export interface PeerConfig {
  id: string;
  name?: string;
  /** Overlay address(es) of the peer (IPv4 and/or IPv6). */
  ip?: string;
  ips?: string[];
  /**
   * Prefixes routed to this peer (WireGuard allowed IPs wider than a host: a routing peer's
   * subnets, 0.0.0.0/0 for an exit node). An address no peer has exactly takes the peer of the
   * longest one covering it, unless a resource prefix at least as long covers it (outside the
   * overlay). A host prefix (/32, /128) here is an address of the peer, as in `ips`.
   */
  allowedIps?: string[];
  publicKey?: string;
  os?: string;
  dnsLabel?: string;
  groups?: string[];
  /** The user the peer belongs to (user fields of flows the peer initiates). */
  user?: UserConfig;
}

export type ResourceType = 'HOST' | 'SUBNET' | 'DOMAIN';

export interface ResourceConfig {
  id: string;
  name?: string;
  type: ResourceType;
  /** HOST: /32 or /128 (a bare address is accepted); SUBNET: any prefix; /0 = exit node. */
  prefixes?: string[];
  /** DOMAIN: names ("example.com") or wildcards ("*.example.com"); addresses come from feedResolved(). */
  domains?: string[];
  /** Groups the resource belongs to (policy targets { group }). */
  groups?: string[];
}

/** One policy source or destination. */
export type PolicyTarget =
  | { peer: string }
  | { group: string }
  | { prefix: string }
  | { resource: string };

export type PolicyProtocol = 'all' | 'tcp' | 'udp' | 'icmp' | number;

/** A destination port (80), a range ("8000-8100" or { from, to }). */
export type PortSpec = number | string | { from: number; to: number };

export interface PolicyConfig {
  id: string;
  name?: string;
  action: 'accept' | 'drop';
  sources: PolicyTarget[];
  destinations: PolicyTarget[];
  /** Default 'all'. 'icmp' means ICMP and ICMPv6. */
  protocol?: PolicyProtocol;
  /** Destination (responder) ports; empty or absent = any port (and port-less protocols). */
  ports?: PortSpec[];
  /** Default true. */
  enabled?: boolean;
  /** Also match when the initiator is in destinations and the responder in sources. Default false. */
  bidirectional?: boolean;
}

export interface FilterConfig {
  /** If non-empty, only flows with at least one endpoint inside these prefixes are exported. */
  includePrefixes?: string[];
  /** Flows with an endpoint inside these prefixes are not exported. */
  excludePrefixes?: string[];
  /** If non-empty, only flows whose destination port is listed are exported (port-less flows are not). */
  includePorts?: PortSpec[];
  /** Flows whose destination port is listed are not exported. */
  excludePorts?: PortSpec[];
}

export interface AttributionConfig {
  /** Overlay (WireGuard network) prefixes: addresses inside are peers, never resources. */
  overlay?: string[];
  peers?: PeerConfig[];
  resources?: ResourceConfig[];
  policies?: PolicyConfig[];
  /** Export flows whose non-overlay endpoint only matches a /0 resource (exit-node traffic). Default false. */
  exitNodeCollection?: boolean;
  /** Export DNS flows (TCP/UDP port 53 or 5353 on either side). Default false. */
  dnsCollection?: boolean;
  filters?: FilterConfig;
}
