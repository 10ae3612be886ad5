// The attribution tables as the configuration file writes them (snake_case keys): every key,
// type and value checked where the operator wrote it, so an error names the exact key
// ("attribution.peers[3].public_key") and unknown keys are errors at every level. Rules that the
// tables also need (prefixes, addresses, ports, protocols) come from ip.ts and tables.ts, not copies.
import { bool, Check, ConfigError, field, int, list, obj, onOff, oneOf, optional, section, str, via, wgKey } from '../util/check';
import { checkNetbirdUrl } from './sources/netbird-client';
import { NETBIRD_DEFAULTS } from './sources/netbird';
import { LIVE_SOURCE_DEFAULTS } from './sources/source';
import type { AttributionConfig, PeerConfig, PolicyConfig, PolicyTarget, PortSpec, ResourceConfig, UserConfig } from './config';
import { ipToRaw, parsePrefix } from '../net/ip';
import { portRange, protocolOf } from './tables';

const ID = str({ nonEmpty: true });
export const PREFIX = via(parsePrefix);
const IP = via(ipToRaw);

const userFields = obj({ id: field(str(), ''), name: optional(str()), email: optional(str()) });
const user: Check<UserConfig> = (v, path) => userFields(v, path);

const peerFields = obj({
  id: field(ID),
  name: optional(str()),
  ip: optional(IP),
  ips: optional(list(IP)),
  allowed_ips: optional(list(PREFIX)),
  public_key: optional(wgKey),
  os: optional(str()),
  dns_label: optional(str()),
  groups: optional(list(str({ nonEmpty: true }))),
  user: optional(user),
});
const peer: Check<PeerConfig> = (v, path) => {
  const p = peerFields(v, path);
  return { id: p.id, name: p.name, ip: p.ip, ips: p.ips, allowedIps: p.allowed_ips, publicKey: p.public_key, os: p.os, dnsLabel: p.dns_label, groups: p.groups, user: p.user };
};

const resource: Check<ResourceConfig> = obj({
  id: field(ID),
  name: optional(str()),
  type: field(oneOf('HOST', 'SUBNET', 'DOMAIN')),
  prefixes: optional(list(PREFIX)),
  domains: optional(list(str({ nonEmpty: true }))),
  groups: optional(list(str({ nonEmpty: true }))),
});

const targetFields = obj({ peer: optional(ID), group: optional(ID), prefix: optional(PREFIX), resource: optional(ID) });
const target: Check<PolicyTarget> = (v, path) => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new ConfigError(path, `expected a mapping { peer | group | prefix | resource: ... }, got ${JSON.stringify(v)}`);
  }
  const given = Object.entries(targetFields(v, path)).filter(([, x]) => x !== undefined);
  if (given.length !== 1) {
    throw new ConfigError(path, `expected exactly one of peer, group, prefix or resource, got ${given.length ? given.map(([k]) => k).join(' and ') : 'none'}`);
  }
  return Object.fromEntries(given) as PolicyTarget;
};

const rangeFields = obj({ from: field((v) => v), to: field((v) => v) });
/** 80, "8000-8100" or { from, to }: the shape here, the rule in portRange. */
export const PORT: Check<PortSpec> = (v, path) => {
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) rangeFields(v, path);
  try {
    portRange(v);
  } catch (err) {
    throw new ConfigError(path, (err as Error).message);
  }
  return v as PortSpec;
};

const PROTOCOL: Check<PolicyConfig['protocol']> = (v, path) => {
  try {
    return protocolOf(v);
  } catch (err) {
    throw new ConfigError(path, (err as Error).message);
  }
};

const policy: Check<PolicyConfig> = obj({
  id: field(ID),
  name: optional(str()),
  action: field(oneOf('accept', 'drop')),
  sources: field(list(target)),
  destinations: field(list(target)),
  protocol: optional(PROTOCOL),
  ports: optional(list(PORT)),
  enabled: optional(bool),
  bidirectional: optional(bool),
});

const ABS_PATH = str({ pattern: /^\//, hint: 'an absolute path' });

/** attribution.netbird: where NetBird's management API is and how often it is read. */
const netbirdSettings = obj({
  url: optional(via((u) => checkNetbirdUrl(u))),
  /** The personal access token's file; else WGFLOW_NETBIRD_TOKEN. Read at start and on reload. */
  token_file: optional(ABS_PATH),
  refresh_s: field(int(5, 86_400), LIVE_SOURCE_DEFAULTS.netbirdRefreshS),
  timeout_ms: field(int(100, 120_000), NETBIRD_DEFAULTS.timeoutMs),
});

/**
 * The `attribution` section: the hand-written tables, and the live sources laid under them
 * (docs/attribution.md, "Precedence"). Filters, DNS and exit-node collection are top-level
 * settings (`filters.*`), so they are not keys here. Uniqueness and references are the tables' to check.
 */
export const attributionSchema = obj({
  overlay: optional(list(PREFIX)),
  peers: optional(list(peer)),
  resources: optional(list(resource)),
  policies: optional(list(policy)),
  /** Read the peers of the watched WireGuard interfaces (public keys, allowed IPs). */
  wireguard: field(onOff, true),
  wireguard_refresh_s: field(int(1, 3_600), LIVE_SOURCE_DEFAULTS.wireguardRefreshS),
  /** A management API under the tables: none, or NetBird's. */
  source: field(oneOf('none', 'netbird'), 'none'),
  netbird: section(netbirdSettings),
});

export type AttributionSettings = ReturnType<typeof attributionSchema>;

/** The tables of the section (what AttributionTables.build takes), without the source settings. */
export function tablesOf(a: AttributionSettings): AttributionConfig {
  const out: AttributionConfig = {};
  if (a.overlay !== undefined) out.overlay = a.overlay;
  if (a.peers !== undefined) out.peers = a.peers;
  if (a.resources !== undefined) out.resources = a.resources;
  if (a.policies !== undefined) out.policies = a.policies;
  return out;
}
