// The attribution tables as the configuration file writes them (snake_case keys): every key,
// type and value checked where the operator wrote it, so an error names the exact key
// ("attribution.peers[3].public_key") and unknown keys are errors at every level. Rules that the
// tables also need (prefixes, addresses, ports, protocols) come from ip.ts and tables.ts, not copies.
import { bool, Check, ConfigError, field, list, obj, oneOf, optional, str, via, wgKey } from '../util/check';
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

/**
 * The `attribution` section. Filters, DNS and exit-node collection are top-level settings
 * (`filters.*`), so they are not keys here. Uniqueness and references are the tables' to check.
 */
export const attributionSchema: Check<AttributionConfig> = obj({
  overlay: optional(list(PREFIX)),
  peers: optional(list(peer)),
  resources: optional(list(resource)),
  policies: optional(list(policy)),
});
