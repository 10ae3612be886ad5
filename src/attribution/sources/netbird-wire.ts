// NetBird's management API objects as wgflow reads them: only the fields the mapping uses, each
// checked for its type (and presence where wgflow needs it) before anything is mapped. Field
// names and shapes follow NetBird's OpenAPI file (shared/management/http/api/openapi.yml); test
// fixtures are validated against that file. Unknown fields are ignored (the API grows), values
// that are well typed but unusable (an unknown protocol, a bad address) are left to the mapping,
// which warns about them. `null` for a list counts as empty: NetBird's Go handlers write nil
// slices as null (e.g. a rule's `sources` when it has a `sourceResource`).

/** A response that does not have the shape wgflow reads; path is inside the response ("[3].groups[0].id"). */
export class WireError extends Error {
  constructor(readonly path: string, readonly problem: string) {
    super(`response${path}: ${problem}`);
    this.name = 'WireError';
  }
}

export interface NbRef {
  readonly id: string;
  /** "host" | "subnet" | "domain" | "peer" in the current API; others are reported by the mapping. */
  readonly type: string;
}

export interface NbPeer {
  readonly id: string;
  readonly name: string;
  readonly ip: string;
  readonly ipv6?: string;
  readonly dnsLabel: string;
  readonly os: string;
  /** '' for peers added with a setup key. */
  readonly userId: string;
  readonly groups: readonly string[];
}

export interface NbGroup {
  readonly id: string;
  readonly name: string;
  readonly peers: readonly string[];
  readonly resources: readonly NbRef[];
}

export interface NbUser {
  readonly id: string;
  readonly name: string;
  readonly email: string;
}

export interface NbRule {
  readonly id?: string;
  readonly name: string;
  readonly enabled: boolean;
  readonly action: string;
  readonly bidirectional: boolean;
  readonly protocol: string;
  readonly ports: readonly string[];
  readonly portRanges: readonly { start: number; end: number }[];
  readonly sources: readonly string[];
  readonly destinations: readonly string[];
  readonly sourceResource?: NbRef;
  readonly destinationResource?: NbRef;
}

export interface NbPolicy {
  readonly id: string;
  readonly name: string;
  readonly enabled: boolean;
  readonly postureChecks: readonly string[];
  readonly rules: readonly NbRule[];
}

export interface NbNetwork {
  readonly id: string;
  readonly name: string;
}

export interface NbNetworkResource {
  readonly id: string;
  readonly name: string;
  readonly type: string;
  readonly address: string;
  readonly enabled: boolean;
  readonly groups: readonly string[];
}

export interface NbRouter {
  readonly id: string;
  readonly enabled: boolean;
  readonly peer?: string;
  readonly peerGroups: readonly string[];
}

export interface NbRoute {
  readonly id: string;
  /** The route's name in the dashboard ("Network Identifier"); HA routes share it. */
  readonly networkId: string;
  readonly description: string;
  readonly enabled: boolean;
  readonly network?: string;
  readonly domains: readonly string[];
  readonly accessControlGroups: readonly string[];
}

export interface NbAccount {
  readonly networkRange?: string;
  readonly networkRangeV6?: string;
}

type Obj = Record<string, unknown>;

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

const at = (path: string, key: string): string => `${path}.${key}`;

function object(v: unknown, path: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new WireError(path, `expected an object, got ${describe(v)}`);
  return v as Obj;
}

function str(o: Obj, key: string, path: string, need: 'required' | 'id'): string;
function str(o: Obj, key: string, path: string, need: 'optional'): string | undefined;
function str(o: Obj, key: string, path: string, need: 'required' | 'id' | 'optional'): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (need === 'optional') return undefined;
    throw new WireError(at(path, key), 'is missing');
  }
  if (typeof v !== 'string') throw new WireError(at(path, key), `expected a string, got ${describe(v)}`);
  if (need === 'id' && v === '') throw new WireError(at(path, key), 'is an empty id');
  return v;
}

function bool(o: Obj, key: string, path: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') throw new WireError(at(path, key), v === undefined ? 'is missing' : `expected true or false, got ${describe(v)}`);
  return v;
}

function int(v: unknown, path: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new WireError(path, `expected an integer, got ${describe(v)}`);
  return v;
}

/** A list that may be absent or null (= empty). */
function list<T>(o: Obj, key: string, path: string, item: (v: unknown, path: string) => T): T[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new WireError(at(path, key), `expected an array, got ${describe(v)}`);
  return v.map((x, i) => item(x, `${at(path, key)}[${i}]`));
}

const idString = (v: unknown, path: string): string => {
  if (typeof v !== 'string' || v === '') throw new WireError(path, `expected an id string, got ${describe(v)}`);
  return v;
};
const plainString = (v: unknown, path: string): string => {
  if (typeof v !== 'string') throw new WireError(path, `expected a string, got ${describe(v)}`);
  return v;
};
/** GroupMinimum / PeerMinimum: only the id is used. */
const idOf = (v: unknown, path: string): string => str(object(v, path), 'id', path, 'id');

function ref(v: unknown, path: string): NbRef | undefined {
  if (v === undefined || v === null) return undefined;
  const o = object(v, path);
  return { id: str(o, 'id', path, 'id'), type: str(o, 'type', path, 'required') };
}

/** Read every element of a list response with `read`; the path names the element ("[3]"). */
export function readAll<T>(items: readonly unknown[], read: (o: Obj, path: string) => T): T[] {
  return items.map((x, i) => read(object(x, `[${i}]`), `[${i}]`));
}

export function readPeer(o: Obj, p: string): NbPeer {
  return {
    id: str(o, 'id', p, 'id'),
    name: str(o, 'name', p, 'required'),
    ip: str(o, 'ip', p, 'required'),
    ipv6: str(o, 'ipv6', p, 'optional') || undefined,
    dnsLabel: str(o, 'dns_label', p, 'optional') ?? '',
    os: str(o, 'os', p, 'optional') ?? '',
    userId: str(o, 'user_id', p, 'optional') ?? '',
    groups: list(o, 'groups', p, idOf),
  };
}

export function readGroup(o: Obj, p: string): NbGroup {
  return {
    id: str(o, 'id', p, 'id'),
    name: str(o, 'name', p, 'required'),
    peers: list(o, 'peers', p, idOf),
    resources: list(o, 'resources', p, (v, q) => ref(object(v, q), q)!),
  };
}

export function readUser(o: Obj, p: string): NbUser {
  return { id: str(o, 'id', p, 'id'), name: str(o, 'name', p, 'optional') ?? '', email: str(o, 'email', p, 'optional') ?? '' };
}

function readRule(v: unknown, p: string): NbRule {
  const o = object(v, p);
  return {
    id: str(o, 'id', p, 'optional') || undefined,
    name: str(o, 'name', p, 'optional') ?? '',
    enabled: bool(o, 'enabled', p),
    action: str(o, 'action', p, 'required'),
    bidirectional: bool(o, 'bidirectional', p),
    protocol: str(o, 'protocol', p, 'required'),
    ports: list(o, 'ports', p, plainString),
    portRanges: list(o, 'port_ranges', p, (x, q) => {
      const r = object(x, q);
      return { start: int(r.start, at(q, 'start')), end: int(r.end, at(q, 'end')) };
    }),
    sources: list(o, 'sources', p, idOf),
    destinations: list(o, 'destinations', p, idOf),
    sourceResource: ref(o.sourceResource, at(p, 'sourceResource')),
    destinationResource: ref(o.destinationResource, at(p, 'destinationResource')),
  };
}

export function readPolicy(o: Obj, p: string): NbPolicy {
  return {
    id: str(o, 'id', p, 'id'),
    name: str(o, 'name', p, 'optional') ?? '',
    enabled: bool(o, 'enabled', p),
    postureChecks: list(o, 'source_posture_checks', p, idString),
    rules: list(o, 'rules', p, readRule),
  };
}

export function readNetwork(o: Obj, p: string): NbNetwork {
  return { id: str(o, 'id', p, 'id'), name: str(o, 'name', p, 'optional') ?? '' };
}

export function readNetworkResource(o: Obj, p: string): NbNetworkResource {
  return {
    id: str(o, 'id', p, 'id'),
    name: str(o, 'name', p, 'optional') ?? '',
    type: str(o, 'type', p, 'required'),
    address: str(o, 'address', p, 'required'),
    enabled: bool(o, 'enabled', p),
    groups: list(o, 'groups', p, idOf),
  };
}

export function readRouter(o: Obj, p: string): NbRouter {
  return {
    id: str(o, 'id', p, 'id'),
    enabled: bool(o, 'enabled', p),
    peer: str(o, 'peer', p, 'optional') || undefined,
    peerGroups: list(o, 'peer_groups', p, idString),
  };
}

export function readRoute(o: Obj, p: string): NbRoute {
  return {
    id: str(o, 'id', p, 'id'),
    networkId: str(o, 'network_id', p, 'optional') ?? '',
    description: str(o, 'description', p, 'optional') ?? '',
    enabled: bool(o, 'enabled', p),
    network: str(o, 'network', p, 'optional') || undefined,
    domains: list(o, 'domains', p, plainString),
    accessControlGroups: list(o, 'access_control_groups', p, idString),
  };
}

export function readAccount(o: Obj, p: string): NbAccount {
  const s = object(o.settings, at(p, 'settings'));
  const sp = at(p, 'settings');
  return {
    networkRange: str(s, 'network_range', sp, 'optional') || undefined,
    networkRangeV6: str(s, 'network_range_v6', sp, 'optional') || undefined,
  };
}
