// A small NetBird account as its management API answers it, written from NetBird's OpenAPI file
// (every response is checked against it in netbird-source.test.ts). The account:
//   peers  alice-laptop (devs, user Alice, IPv4 + IPv6), bob-laptop (devs, user Bob),
//          db-server (servers, added with a setup key: no user), gw (routers: the routing peer)
//   network "office" routed by gw: lan 192.168.1.0/24 and printer 192.168.1.50 (group lan),
//          docs.example.com and *.wiki.example.com (group docs)
//   routes datacenter 10.10.0.0/16 (two HA routes, access group dc-access), exit node 0.0.0.0/0
//   policies  Default (disabled), devs→servers SSH (tcp 22), devs→servers web (tcp port ranges),
//          devs↔lan (all, bidirectional), drop devs→printer, devs→docs resource (tcp 443),
//          devs→datacenter (tcp 443), db-server (peer resource)→routers (udp 5432-5433)
// Response bodies are plain JSON values built by small helpers that fill the fields NetBird
// always sends, so each object below shows only what matters.

type J = Record<string, unknown>;

export const IDS = {
  gAll: 'cq1grp0all0000000000',
  gDevs: 'cq1grp0devs000000000',
  gServers: 'cq1grp0servers000000',
  gRouters: 'cq1grp0routers000000',
  gLan: 'cq1grp0lan0000000000',
  gDocs: 'cq1grp0docs000000000',
  gDcAccess: 'cq1grp0dcaccess00000',
  pAlice: 'cq1peer0alice0000000',
  pBob: 'cq1peer0bob000000000',
  pDb: 'cq1peer0db0000000000',
  pGw: 'cq1peer0gw0000000000',
  uAlice: 'google-oauth2|110000000000000000001',
  uBob: 'google-oauth2|110000000000000000002',
  uSvc: 'cq1user0svc000000000',
  nOffice: 'cq1net0office0000000',
  rLan: 'cq1res0lan0000000000',
  rPrinter: 'cq1res0printer000000',
  rDocs: 'cq1res0docs000000000',
  rWiki: 'cq1res0wiki000000000',
  routerGw: 'cq1rtr0gw00000000000',
  routeDcA: 'cq1route0dc0a0000000',
  routeDcB: 'cq1route0dc0b0000000',
  routeExit: 'cq1route0exit0000000',
  polDefault: 'cq1pol0default000000',
  polSsh: 'cq1pol0ssh0000000000',
  polWeb: 'cq1pol0web0000000000',
  polLan: 'cq1pol0lan0000000000',
  polDropPrinter: 'cq1pol0dropprinter00',
  polDocs: 'cq1pol0docs000000000',
  polDc: 'cq1pol0dc00000000000',
  polDb: 'cq1pol0db00000000000',
} as const;

const T = '2026-11-30T09:00:00Z';

const GROUP_NAMES: Record<string, string> = {
  [IDS.gAll]: 'All', [IDS.gDevs]: 'devs', [IDS.gServers]: 'servers', [IDS.gRouters]: 'routers',
  [IDS.gLan]: 'lan', [IDS.gDocs]: 'docs', [IDS.gDcAccess]: 'dc-access',
};

/** GroupMinimum as peers, resources and rules embed it. */
export const groupMin = (id: string, peers = 0, resources = 0): J => ({ id, name: GROUP_NAMES[id] ?? id, peers_count: peers, resources_count: resources, issued: 'api' });

export function peer(id: string, name: string, ip: string, userId: string, groups: string[], extra: J = {}): J {
  return {
    id, name, ip, user_id: userId, dns_label: `${name}.netbird.cloud`, os: 'Linux 6.8', hostname: name,
    groups: groups.map((g) => groupMin(g)),
    created_at: T, connection_ip: '198.51.100.7', connected: true, last_seen: T, kernel_version: '6.8.0', geoname_id: 2950159,
    version: '0.60.0', ssh_enabled: false, ui_version: '', login_expiration_enabled: false, login_expired: false, last_login: T,
    inactivity_expiration_enabled: false, approval_required: false, country_code: 'DE', city_name: 'Berlin', serial_number: '',
    extra_dns_labels: [], ephemeral: false, accessible_peers_count: 3,
    ...extra,
  };
}

export function group(id: string, peers: [string, string][], resources: [string, string][]): J {
  return {
    ...groupMin(id, peers.length, resources.length),
    peers: peers.map(([pid, name]) => ({ id: pid, name })),
    resources: resources.map(([rid, type]) => ({ id: rid, type })),
  };
}

export function user(id: string, name: string, email: string, extra: J = {}): J {
  return { id, name, email, role: 'user', status: 'active', auto_groups: [], is_blocked: false, pending_approval: false, is_service_user: false, issued: 'api', ...extra };
}

/** A PolicyRule: sources/destinations as group ids (GroupMinimum objects in the response). */
export function rule(r: { id?: string; action?: string; protocol?: string; bidirectional?: boolean; enabled?: boolean; sources?: string[]; destinations?: string[]; ports?: string[]; port_ranges?: { start: number; end: number }[]; sourceResource?: J; destinationResource?: J; name?: string }): J {
  const out: J = {
    name: r.name ?? 'rule', description: '', enabled: r.enabled ?? true, action: r.action ?? 'accept',
    bidirectional: r.bidirectional ?? false, protocol: r.protocol ?? 'all',
  };
  if (r.id !== undefined) out.id = r.id;
  if (r.ports) out.ports = r.ports;
  if (r.port_ranges) out.port_ranges = r.port_ranges;
  if (r.sources) out.sources = r.sources.map((g) => groupMin(g));
  if (r.destinations) out.destinations = r.destinations.map((g) => groupMin(g));
  if (r.sourceResource) out.sourceResource = r.sourceResource;
  if (r.destinationResource) out.destinationResource = r.destinationResource;
  return out;
}

/** A Policy with its rules; NetBird gives a rule created without an id the policy's id. */
export function policy(id: string, name: string, rules: J[], extra: J = {}): J {
  return { id, name, description: '', enabled: true, source_posture_checks: [], rules: rules.map((r) => ('id' in r ? r : { id, ...r })), ...extra };
}

export function network(id: string, name: string, resources: string[], routers: string[], policies: string[]): J {
  return { id, name, description: '', resources, routers, routing_peers_count: routers.length, policies };
}

export function resource(id: string, name: string, type: string, address: string, groups: string[], extra: J = {}): J {
  return { id, name, description: '', type, address, enabled: true, groups: groups.map((g) => groupMin(g, 0, 1)), ...extra };
}

export function router(id: string, peerId: string, extra: J = {}): J {
  return { id, peer: peerId, metric: 9999, masquerade: true, enabled: true, ...extra };
}

export function route(id: string, networkId: string, dest: { network?: string; domains?: string[] }, acl: string[], extra: J = {}): J {
  return {
    id, network_id: networkId, description: '', enabled: true, peer: IDS.pGw, metric: 9999, masquerade: true, groups: [IDS.gAll], keep_route: true,
    network_type: dest.domains ? 'Domain' : dest.network?.includes(':') ? 'IPv6' : 'IPv4',
    ...(dest.network ? { network: dest.network } : {}), ...(dest.domains ? { domains: dest.domains } : {}),
    access_control_groups: acl, ...extra,
  };
}

export function account(settings: J = {}): J {
  return {
    id: 'cq1acct000000000000', domain: 'example.com', domain_category: 'private', created_at: T, created_by: IDS.uAlice,
    onboarding: { signup_form_pending: false, onboarding_flow_pending: false },
    settings: {
      peer_login_expiration_enabled: true, peer_login_expiration: 86400, peer_inactivity_expiration_enabled: false, peer_inactivity_expiration: 600,
      regular_users_view_blocked: true, peer_expose_enabled: false, peer_expose_groups: [],
      network_range: '100.64.0.0/16', network_range_v6: 'fd00:4e42:ab12::/64',
      ...settings,
    },
  };
}

/** The response of each GET, keyed by the path the server serves. */
export type Responses = Record<string, unknown>;

/** The OpenAPI path template of a served path (for schema validation). */
export function templateOf(path: string): string {
  return path.replace(/^\/api\/networks\/[^/]+\/(resources|routers)$/, '/api/networks/{networkId}/$1');
}

export function account1(): Responses {
  const { pAlice, pBob, pDb, pGw } = IDS;
  return {
    '/api/accounts': [account()],
    '/api/peers': [
      peer(pAlice, 'alice-laptop', '100.64.0.1', IDS.uAlice, [IDS.gAll, IDS.gDevs], { ipv6: 'fd00:4e42:ab12::1', os: 'Darwin 14.5' }),
      peer(pBob, 'bob-laptop', '100.64.0.2', IDS.uBob, [IDS.gAll, IDS.gDevs]),
      peer(pDb, 'db-server', '100.64.0.20', '', [IDS.gAll, IDS.gServers]),
      peer(pGw, 'gw', '100.64.0.10', '', [IDS.gAll, IDS.gRouters]),
    ],
    '/api/groups': [
      group(IDS.gAll, [[pAlice, 'alice-laptop'], [pBob, 'bob-laptop'], [pDb, 'db-server'], [pGw, 'gw']], []),
      group(IDS.gDevs, [[pAlice, 'alice-laptop'], [pBob, 'bob-laptop']], []),
      group(IDS.gServers, [[pDb, 'db-server']], []),
      group(IDS.gRouters, [[pGw, 'gw']], []),
      group(IDS.gLan, [], [[IDS.rLan, 'subnet'], [IDS.rPrinter, 'host']]),
      group(IDS.gDocs, [], [[IDS.rDocs, 'domain'], [IDS.rWiki, 'domain']]),
      group(IDS.gDcAccess, [], []),
    ],
    '/api/users': [
      user(IDS.uAlice, 'Alice Example', 'alice@example.com', { role: 'admin' }),
      user(IDS.uBob, 'Bob Example', 'bob@example.com'),
      user(IDS.uSvc, 'wgflow', '', { role: 'auditor', is_service_user: true }),
    ],
    '/api/policies': [
      policy(IDS.polDefault, 'Default', [rule({ sources: [IDS.gAll], destinations: [IDS.gAll], bidirectional: true })], { enabled: false }),
      policy(IDS.polSsh, 'Devs to servers (SSH)', [rule({ sources: [IDS.gDevs], destinations: [IDS.gServers], protocol: 'tcp', ports: ['22'] })]),
      policy(IDS.polWeb, 'Devs to servers (web)', [rule({ sources: [IDS.gDevs], destinations: [IDS.gServers], protocol: 'tcp', port_ranges: [{ start: 8000, end: 8100 }, { start: 30000, end: 32767 }] })]),
      policy(IDS.polDropPrinter, 'No printing', [rule({ action: 'drop', sources: [IDS.gDevs], destinationResource: { id: IDS.rPrinter, type: 'host' } })]),
      policy(IDS.polLan, 'Devs and office LAN', [rule({ sources: [IDS.gDevs], destinations: [IDS.gLan], bidirectional: true })]),
      policy(IDS.polDocs, 'Docs', [rule({ sources: [IDS.gDevs], destinationResource: { id: IDS.rDocs, type: 'domain' }, protocol: 'tcp', ports: ['443'] })]),
      policy(IDS.polDc, 'Datacenter HTTPS', [rule({ sources: [IDS.gDevs], destinations: [IDS.gDcAccess], protocol: 'tcp', ports: ['443'] })]),
      policy(IDS.polDb, 'DB replication to routers', [rule({ sourceResource: { id: pDb, type: 'peer' }, destinations: [IDS.gRouters], protocol: 'udp', port_ranges: [{ start: 5432, end: 5433 }] })]),
    ],
    '/api/networks': [network(IDS.nOffice, 'office', [IDS.rLan, IDS.rPrinter, IDS.rDocs, IDS.rWiki], [IDS.routerGw], [IDS.polLan, IDS.polDocs])],
    [`/api/networks/${IDS.nOffice}/resources`]: [
      resource(IDS.rLan, 'office-lan', 'subnet', '192.168.1.0/24', [IDS.gLan]),
      resource(IDS.rPrinter, 'printer', 'host', '192.168.1.50/32', [IDS.gLan]),
      resource(IDS.rDocs, 'docs', 'domain', 'docs.example.com', [IDS.gDocs]),
      resource(IDS.rWiki, 'wiki', 'domain', '*.wiki.example.com', [IDS.gDocs]),
    ],
    [`/api/networks/${IDS.nOffice}/routers`]: [router(IDS.routerGw, IDS.pGw)],
    '/api/routes': [
      route(IDS.routeDcB, 'datacenter', { network: '10.10.0.0/16' }, [IDS.gDcAccess], { peer: IDS.pDb, metric: 100 }),
      route(IDS.routeDcA, 'datacenter', { network: '10.10.0.0/16' }, [IDS.gDcAccess]),
      route(IDS.routeExit, 'exit-node', { network: '0.0.0.0/0' }, []),
    ],
  };
}
