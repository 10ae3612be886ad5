// wgflow's configuration: one file (YAML or JSON), overridden by environment variables, overridden
// by flags. The schema below is the reference; docs/config.md describes every key.
import { accessSync, constants, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parse as parseYaml } from 'yaml';
import {
  bool, Check, ConfigError, field, hostPort, int, list, obj, oneOf, onOff, optional, section, str, via, wgKey,
} from '../util/check';
import type { AttributionConfig } from '../attribution/config';
import { attributionSchema, PREFIX, tablesOf } from '../attribution/schema';
import { checkNetbirdToken } from '../attribution/sources/netbird-client';
import { AttributionError, AttributionTables } from '../attribution/tables';
import { CollectorUrlError, parseCollectorUrl, TlsFiles, tlsFilesProblem } from '../output/grpc/url';
import { IPFIX_DEFAULTS, parseIpfixUrl } from '../output/ipfix/exporter';
import { checkRingBytes, DEFAULT_MAX_FLOWS, DEFAULT_PIN_DIR, DEFAULT_RING_BYTES } from '../datapath/datapath';
import { PIPELINE_DEFAULTS } from '../flow/pipeline';
import { DROP_DEFAULTS } from '../flow/drops';
import { DEFAULT_DROP_KEYS } from '../datapath/drops';
import { TRACKER_DEFAULTS } from '../flow/tracker';
import { EXPORTER_DEFAULTS } from '../output/grpc/exporter';
import { AGGREGATOR_DEFAULTS, PROFILES } from '../output/aggregator';
import { SPOOL_DEFAULTS } from '../output/spool';
import { JSONL_DEFAULTS } from '../output/jsonl-writer';
import { JETSTREAM_EXPORTER_DEFAULTS } from '../output/jetstream/exporter';
import { formatDuration, JETSTREAM_DEFAULTS, parseDuration, parseServers, streamNameProblem, streamSettings, subjectPrefixProblem } from '../wire/jetstream';
import { CgroupPaths, cgroupMemoryLimit } from './cgroup';
import { byteSize, checkMemoryPlan, effectiveLimit, memoryBudget, MemoryPlan } from './memory';

const IFNAME = str({ nonEmpty: true, pattern: /^[A-Za-z0-9_.:@-]{1,15}$/, hint: 'an interface name (1-15 letters, digits, _ . : @ -)' });
/** The exporter's own parser decides, so --check-config refuses exactly what the exporter would. */
const COLLECTOR_URL = (v: unknown, path: string): string => {
  const s = str()(v, path);
  try {
    parseCollectorUrl(s);
  } catch (err) {
    if (err instanceof CollectorUrlError) throw new ConfigError(path, err.reason);
    throw err;
  }
  return s;
};
const IPFIX_URL = via(parseIpfixUrl, 'expected udp://HOST:PORT (port 1-65535)');
const RING_BYTES: Check<number> = (v, path) => {
  const n = int(4096, 1 << 30)(v, path);
  try {
    checkRingBytes(n);
  } catch {
    throw new ConfigError(path, `expected a power of two from 4096 to ${1 << 30} (e.g. 1048576), got ${n}`);
  }
  return n;
};
const ABS_PATH = str({ pattern: /^\//, hint: 'an absolute path' });
/** A checker from a "why not" function of the JetStream contract (null: fine). */
const problemCheck = (problem: (s: string) => string | null): Check<string> => (v, path) => {
  const s = str()(v, path);
  const p = problem(s);
  if (p !== null) throw new ConfigError(path, p);
  return s;
};
const NATS_SERVERS: Check<string> = (v, path) => {
  const s = str()(v, path);
  try {
    parseServers(s, path);
  } catch (err) {
    throw new ConfigError(path, (err as Error).message.replace(`${path}: `, ''));
  }
  return s;
};
/** A duration as text ("90s", "2m", "48h", "7d"), kept as written; parseDuration reads it. */
const DURATION: Check<string> = (v, path) => {
  const s = typeof v === 'number' ? `${v}s` : str()(v, path);
  if (parseDuration(s) === undefined) throw new ConfigError(path, `expected a duration such as 90s, 2m, 48h or 7d (units ms, s, m, h, d), got ${JSON.stringify(v)}`);
  return s;
};
const REPLICAS: Check<number> = (v, path) => {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (n !== 1 && n !== 3) throw new ConfigError(path, `expected 1 or 3 (a stream of 3 replicas needs a cluster of 3 or more servers), got ${JSON.stringify(v)}`);
  return n;
};

/** The daemon's own defaults (its components own theirs: see the imports above). */
export const DAEMON_DEFAULTS = {
  spoolDir: '/var/lib/wgflow/spool',
  outputDir: '/var/lib/wgflow/events',
  metricsListen: '127.0.0.1:9617',
  controlSocket: '/run/wgflow/ctl.sock',
  logLevel: 'info',
} as const;
const D = DAEMON_DEFAULTS;

export const configSchema = obj({
  interfaces: field(list(IFNAME), [] as string[]),
  reporter_id: field(str({ nonEmpty: true }), hostname()),
  reporter_public_key: field(wgKey, ''),
  collector: section(obj({
    url: optional(COLLECTOR_URL),
    token: optional(str()),
    ca_file: optional(ABS_PATH),
    cert_file: optional(ABS_PATH),
    key_file: optional(ABS_PATH),
    max_in_flight: field(int(1, 1_000_000), EXPORTER_DEFAULTS.maxInFlight),
    transport: field(oneOf('http2', 'grpc-js'), EXPORTER_DEFAULTS.transport),
    /** events: every flow event; netbird-aggregated: NetBird v0.75 window aggregates (docs/export.md). */
    profile: field(oneOf(...PROFILES), AGGREGATOR_DEFAULTS.profile),
    aggregate_window_s: field(int(1, 86_400), AGGREGATOR_DEFAULTS.windowMs / 1000),
    aggregate_max_groups: field(int(1, 1_000_000), AGGREGATOR_DEFAULTS.maxGroups),
  })),
  spool: section(obj({
    dir: field(ABS_PATH, D.spoolDir),
    max_bytes: field(int(1 << 20, 2 ** 48), SPOOL_DEFAULTS.maxBytes),
    fsync: field(oneOf('always', 'interval', 'never'), SPOOL_DEFAULTS.fsync),
    fsync_interval_ms: field(int(1, 60_000), SPOOL_DEFAULTS.fsyncIntervalMs),
  })),
  jetstream: section(obj({
    /** Unset: no JetStream output. */
    servers: optional(NATS_SERVERS),
    stream: field(problemCheck(streamNameProblem), JETSTREAM_DEFAULTS.stream),
    subject_prefix: field(problemCheck(subjectPrefixProblem), JETSTREAM_DEFAULTS.subjectPrefix),
    token: optional(str()),
    user: optional(str()),
    password: optional(str()),
    creds_file: optional(ABS_PATH),
    ca_file: optional(ABS_PATH),
    cert_file: optional(ABS_PATH),
    key_file: optional(ABS_PATH),
    replicas: field(REPLICAS, JETSTREAM_DEFAULTS.replicas),
    max_age: field(DURATION, formatDuration(JETSTREAM_DEFAULTS.maxAgeMs)),
    max_bytes: field(byteSize, JETSTREAM_DEFAULTS.maxBytes),
    duplicate_window: field(DURATION, formatDuration(JETSTREAM_DEFAULTS.duplicateWindowMs)),
    max_in_flight: field(int(1, 1_000_000), JETSTREAM_EXPORTER_DEFAULTS.maxInFlight),
  })),
  output: section(obj({
    dir: field(ABS_PATH, D.outputDir),
    rotate_bytes: field(int(1 << 16, 2 ** 40), JSONL_DEFAULTS.rotateBytes),
  })),
  metrics_listen: field(hostPort, D.metricsListen),
  control_socket: field(ABS_PATH, D.controlSocket),
  /** Unset: the memory limit of the daemon's control group (systemd's MemoryMax=), if any (src/config/memory.ts). */
  memory_limit: optional(byteSize),
  counters: field(onOff, true),
  /** DROP events (docs/events.md): off by default, switchable at run time (wgflow ctl drops on|off). */
  drops: field(onOff, false),
  log_level: field(oneOf('trace', 'debug', 'info', 'warn', 'error', 'fatal'), D.logLevel),
  datapath: section(obj({
    max_flows: field(int(1, 1 << 26), DEFAULT_MAX_FLOWS),
    /** Unset: the same as max_flows (the datapath's rule). */
    max_flows_v6: optional(int(1, 1 << 26)),
    ring_bytes: field(RING_BYTES, DEFAULT_RING_BYTES),
    pin_dir: field(ABS_PATH, DEFAULT_PIN_DIR),
    attach_mode: field(oneOf('auto', 'tcx', 'clsact'), 'auto'),
    poll_timeout_ms: field(int(1, 10_000), PIPELINE_DEFAULTS.pollTimeoutMs),
    drain_interval_ms: field(int(100, 60_000), PIPELINE_DEFAULTS.drainIntervalMs),
    /** Distinct drop keys (direction, addresses, ports, protocol) one drop window can hold. */
    drop_keys: field(int(1, 1 << 24), DEFAULT_DROP_KEYS),
  })),
  lifecycle: section(obj({
    tcp_close_grace_ms: field(int(0, 60_000), TRACKER_DEFAULTS.closeGraceMs),
    tcp_timeout_s: field(int(1, 7 * 86_400), TRACKER_DEFAULTS.tcpIdleMs / 1000),
    udp_timeout_s: field(int(1, 86_400), TRACKER_DEFAULTS.udpIdleMs / 1000),
    icmp_timeout_s: field(int(1, 86_400), TRACKER_DEFAULTS.icmpIdleMs / 1000),
    other_timeout_s: field(int(1, 86_400), TRACKER_DEFAULTS.otherIdleMs / 1000),
    interim_interval_s: field(int(0, 86_400), TRACKER_DEFAULTS.updateIntervalMs / 1000),
    /** DROP events: at most one per drop key per window of this length. */
    drop_window_s: field(int(1, 3_600), DROP_DEFAULTS.windowMs / 1000),
  })),
  filters: section(obj({
    dns_collection: field(bool, false),
    exit_node_collection: field(bool, false),
    include_prefixes: field(list(PREFIX), [] as string[]),
    exclude_prefixes: field(list(PREFIX), [] as string[]),
    include_ports: field(list(int(0, 65535)), [] as number[]),
    exclude_ports: field(list(int(0, 65535)), [] as number[]),
  })),
  attribution: section(attributionSchema),
  ipfix: field(list(IPFIX_URL), [] as string[]),
  ipfix_mtu: field(int(512, 65507), IPFIX_DEFAULTS.mtu),
  ipfix_template_refresh_s: field(int(1, 86_400), IPFIX_DEFAULTS.templateRefreshMs / 1000),
});


/**
 * The flags of `wgflow run`, the environment variables and the config keys they set. One table,
 * so the three never disagree; docs/config.md is written from it.
 */
export const RUN_FLAGS = [
  { flag: 'interface', env: 'WGFLOW_INTERFACES', path: 'interfaces', multiple: true, help: 'WireGuard interface to watch (repeatable; env: comma-separated)' },
  { flag: 'collector', env: 'WGFLOW_COLLECTOR', path: 'collector.url', help: 'collector URL: grpc://HOST:PORT (plaintext) or grpcs://HOST:PORT (TLS); without it events go to --output' },
  { flag: 'token', env: 'WGFLOW_TOKEN', path: 'collector.token', help: 'bearer token sent to the collector' },
  { flag: 'ca-file', env: 'WGFLOW_CA_FILE', path: 'collector.ca_file', help: 'PEM CA bundle for grpcs:// (default: system roots)' },
  { flag: 'cert-file', env: 'WGFLOW_CERT_FILE', path: 'collector.cert_file', help: 'PEM client certificate for mTLS' },
  { flag: 'key-file', env: 'WGFLOW_KEY_FILE', path: 'collector.key_file', help: 'PEM client key for mTLS' },
  { flag: 'jetstream', env: 'WGFLOW_JETSTREAM', path: 'jetstream.servers', help: 'NATS JetStream servers nats://HOST:PORT[,HOST:PORT...]: publish every event to the stream (docs/jetstream.md); jetstream.* in the config file for the rest' },
  { flag: 'reporter-id', env: 'WGFLOW_REPORTER_ID', path: 'reporter_id', help: 'this peer\'s id in events (default: hostname)' },
  { flag: 'public-key', env: 'WGFLOW_PUBLIC_KEY', path: 'reporter_public_key', help: 'this peer\'s WireGuard public key (base64), sent with events' },
  { flag: 'spool-dir', env: 'WGFLOW_SPOOL_DIR', path: 'spool.dir', help: `durable spool of unacknowledged events (default ${D.spoolDir})` },
  { flag: 'output', env: 'WGFLOW_OUTPUT', path: 'output.dir', help: `directory for events.jsonl when there is no --collector (default ${D.outputDir})` },
  { flag: 'metrics-listen', env: 'WGFLOW_METRICS_LISTEN', path: 'metrics_listen', help: `HOST:PORT of the Prometheus /metrics endpoint (default ${D.metricsListen})` },
  { flag: 'control-socket', env: 'WGFLOW_CONTROL_SOCKET', path: 'control_socket', help: `unix socket for wgflow ctl (default ${D.controlSocket}, mode 0600)` },
  { flag: 'memory-limit', env: 'WGFLOW_MEMORY_LIMIT', path: 'memory_limit', help: 'the most memory the daemon may use, e.g. 512M or 1G; start is refused when its budget (docs/config.md#memory) does not fit (default: the cgroup\'s memory limit, if any)' },
  { flag: 'counters', env: 'WGFLOW_COUNTERS', path: 'counters', help: 'kernel byte reporting at start: on or off (default on)' },
  { flag: 'drops', env: 'WGFLOW_DROPS', path: 'drops', help: 'DROP events at start: on or off (default off; wgflow ctl drops on|off switches them at run time)' },
  { flag: 'log-level', env: 'WGFLOW_LOG_LEVEL', path: 'log_level', help: `trace, debug, info, warn, error or fatal (default ${D.logLevel})` },
  { flag: 'max-flows', env: 'WGFLOW_MAX_FLOWS', path: 'datapath.max_flows', numeric: true, help: `IPv4 flow map size (default ${DEFAULT_MAX_FLOWS})` },
  { flag: 'max-flows-v6', env: 'WGFLOW_MAX_FLOWS_V6', path: 'datapath.max_flows_v6', numeric: true, help: 'IPv6 flow map size (default: the same as --max-flows)' },
  { flag: 'pin-dir', env: 'WGFLOW_PIN_DIR', path: 'datapath.pin_dir', help: `bpffs directory for the pinned flow maps (default ${DEFAULT_PIN_DIR})` },
  { flag: 'ipfix', env: 'WGFLOW_IPFIX', path: 'ipfix', multiple: true, help: 'IPFIX collector udp://HOST:PORT (repeatable)' },
] as const;

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let o = target;
  for (const k of keys.slice(0, -1)) {
    if (typeof o[k] !== 'object' || o[k] === null) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[keys[keys.length - 1]] = value;
}

const TLS_KEYS = { caFile: 'collector.ca_file', certFile: 'collector.cert_file', keyFile: 'collector.key_file' } as const;

/**
 * Rules across settings that `run` depends on. They are part of resolveConfig, the one path of
 * run, --check-config and reload, so none of them can accept what another refuses.
 */
function settingsAgree(cfg: ReturnType<typeof configSchema>): ReturnType<typeof configSchema> {
  const a = cfg.attribution;
  if (a.source === 'netbird' && a.netbird.url === undefined) throw new ConfigError('attribution.netbird.url', 'is required with attribution.source: netbird (the management URL, e.g. https://api.netbird.io)');
  if (a.source !== 'netbird' && (a.netbird.url !== undefined || a.netbird.token_file !== undefined)) {
    throw new ConfigError(a.netbird.url !== undefined ? 'attribution.netbird.url' : 'attribution.netbird.token_file', 'NetBird settings are given but attribution.source is not netbird: set attribution.source: netbird to read the API');
  }
  if (cfg.interfaces.length === 0) throw new ConfigError('interfaces', 'no interface to watch: give --interface NAME (repeatable) or "interfaces" in the config file');
  const c = cfg.collector;
  if (c.profile !== 'events' && c.url === undefined) throw new ConfigError('collector.profile', `${c.profile} shapes what goes to the gRPC collector: set collector.url (--collector), or leave the profile at "events"`);
  if (c.url !== undefined) {
    const files: TlsFiles = { caFile: c.ca_file, certFile: c.cert_file, keyFile: c.key_file };
    const tls = tlsFilesProblem(parseCollectorUrl(c.url), files);
    if (tls) throw new ConfigError(TLS_KEYS[tls.file], tls.problem);
    // The exporter reads them at start: a missing file is a configuration mistake, found here too.
    for (const [k, file] of Object.entries(files) as [keyof TlsFiles, string | undefined][]) {
      if (file === undefined) continue;
      try {
        accessSync(file, constants.R_OK);
      } catch (err) {
        throw new ConfigError(TLS_KEYS[k], `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
    }
  }
  const j = cfg.jetstream;
  if (j.servers !== undefined) {
    const auth = [j.token !== undefined ? 'jetstream.token' : '', j.user !== undefined || j.password !== undefined ? 'jetstream.user/password' : '', j.creds_file !== undefined ? 'jetstream.creds_file' : ''].filter(Boolean);
    if (auth.length > 1) throw new ConfigError(auth[1], `give one way to authenticate to NATS, not ${auth.join(' and ')}`);
    if ((j.user === undefined) !== (j.password === undefined)) throw new ConfigError(j.user === undefined ? 'jetstream.user' : 'jetstream.password', 'jetstream.user and jetstream.password go together');
    if ((j.cert_file === undefined) !== (j.key_file === undefined)) throw new ConfigError(j.cert_file === undefined ? 'jetstream.cert_file' : 'jetstream.key_file', 'a client certificate needs its key (jetstream.cert_file and jetstream.key_file go together)');
    for (const k of ['creds_file', 'ca_file', 'cert_file', 'key_file'] as const) {
      const file = j[k];
      if (file === undefined) continue;
      try {
        accessSync(file, constants.R_OK);
      } catch (err) {
        throw new ConfigError(`jetstream.${k}`, `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
    }
    try {
      streamSettings(jetstreamStreamSettings(cfg));
    } catch (err) {
      throw new ConfigError('jetstream', (err as Error).message);
    }
  }
  return cfg;
}

/** The stream settings of the jetstream.* keys (the exporter and `wgflow jetstream init` use them). */
export function jetstreamStreamSettings(cfg: { jetstream: { stream: string; subject_prefix: string; replicas: number; max_age: string; max_bytes: number; duplicate_window: string } }): {
  stream: string; subjectPrefix: string; replicas: number; maxAgeMs: number; maxBytes: number; duplicateWindowMs: number;
} {
  const j = cfg.jetstream;
  return {
    stream: j.stream, subjectPrefix: j.subject_prefix, replicas: j.replicas, maxBytes: j.max_bytes,
    maxAgeMs: parseDuration(j.max_age) ?? JETSTREAM_DEFAULTS.maxAgeMs,
    duplicateWindowMs: parseDuration(j.duplicate_window) ?? JETSTREAM_DEFAULTS.duplicateWindowMs,
  };
}

/** Read a config file (YAML or JSON) into a raw mapping; errors name the file. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read config file ${file}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (err) {
    throw new ConfigError('', `${file} is not valid YAML/JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  if (raw === null || raw === undefined) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('', `${file}: expected a mapping at the top level`);
  return raw as Record<string, unknown>;
}

export type FlagValues = Partial<Record<(typeof RUN_FLAGS)[number]['flag'], string | string[]>>;

/**
 * The effective configuration: file, then environment, then flags. Flags and environment are
 * strings; numbers and on/off are converted here so the schema sees typed values.
 */
export function resolveConfig(opts: { file?: string; env?: NodeJS.ProcessEnv; flags?: FlagValues }): ReturnType<typeof configSchema> {
  const raw = opts.file ? readConfigFile(opts.file) : {};
  const env = opts.env ?? {};
  for (const f of RUN_FLAGS) {
    const fromFlag = opts.flags?.[f.flag];
    const fromEnv = env[f.env];
    let v: unknown = fromFlag !== undefined ? fromFlag : fromEnv;
    if (v === undefined || v === '') continue;
    if ('multiple' in f && f.multiple && typeof v === 'string') v = v.split(',').map((x) => x.trim()).filter(Boolean);
    if ('numeric' in f && f.numeric) v = /^\d+$/.test(String(v)) ? Number(v) : v;
    setPath(raw, f.path, v);
  }
  try {
    const cfg = settingsAgree(configSchema(raw, ''));
    if (cfg.attribution.source === 'netbird') netbirdToken(cfg, env);
    return cfg;
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(err.path, `${err.problem}${originOf(err.path.replace(/\[\d+\]$/, ''), opts)}`);
    throw err;
  }
}

/** The environment variable that holds NetBird's token when attribution.netbird.token_file is not set. */
export const NETBIRD_TOKEN_ENV = 'WGFLOW_NETBIRD_TOKEN';

/**
 * NetBird's personal access token: attribution.netbird.token_file, else WGFLOW_NETBIRD_TOKEN. Read
 * at start and on every reload (a rotated token needs no restart); never logged. ConfigError
 * names the key; its message never holds the token.
 */
export function netbirdToken(cfg: WgflowConfig, env: NodeJS.ProcessEnv): string {
  const n = cfg.attribution.netbird;
  let raw: string;
  const where = n.token_file !== undefined ? 'attribution.netbird.token_file' : NETBIRD_TOKEN_ENV;
  if (n.token_file !== undefined) {
    try {
      raw = readFileSync(n.token_file, 'utf8');
    } catch (err) {
      throw new ConfigError('attribution.netbird.token_file', `cannot read ${n.token_file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  } else {
    const v = env[NETBIRD_TOKEN_ENV];
    if (v === undefined || v === '') throw new ConfigError('attribution.netbird.token_file', `attribution.source is netbird: give the personal access token's file here, or the token in ${NETBIRD_TOKEN_ENV}`);
    raw = v;
  }
  try {
    return checkNetbirdToken(raw);
  } catch (err) {
    throw new ConfigError(where === NETBIRD_TOKEN_ENV ? 'attribution.netbird' : where, `${(err as Error).message}${where === NETBIRD_TOKEN_ENV ? ` (in ${NETBIRD_TOKEN_ENV})` : ''}`);
  }
}

/** Where the value of a key came from: " (from --flag)", " (from ENV)", " (in FILE)" or "". */
function originOf(path: string, opts: { file?: string; env?: NodeJS.ProcessEnv; flags?: FlagValues }): string {
  const flag = RUN_FLAGS.find((f) => f.path === path);
  return flag && opts.flags?.[flag.flag] !== undefined ? ` (from --${flag.flag})`
    : flag && opts.env?.[flag.env] ? ` (from ${flag.env})` : opts.file ? ` (in ${opts.file})` : '';
}

export type WgflowConfig = ReturnType<typeof configSchema>;

/** The attribution tables and filters of a config, as AttributionTables takes them. */
export function attributionOf(cfg: WgflowConfig): AttributionConfig {
  const f = cfg.filters;
  return {
    ...tablesOf(cfg.attribution),
    dnsCollection: f.dns_collection,
    exitNodeCollection: f.exit_node_collection,
    filters: { includePrefixes: f.include_prefixes, excludePrefixes: f.exclude_prefixes, includePorts: f.include_ports, excludePorts: f.exclude_ports },
  };
}

/** Compile the tables; what only the whole table can tell (duplicate ids and keys) is found here. */
export function compileAttribution(cfg: WgflowConfig): AttributionTables {
  try {
    return AttributionTables.build(attributionOf(cfg));
  } catch (err) {
    // The tables name fields in camelCase; the file writes them in snake_case.
    if (err instanceof AttributionError) throw new ConfigError(`attribution.${err.path.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`, err.problem);
    throw new ConfigError('attribution', (err as Error).message);
  }
}

export interface LoadedConfig {
  config: WgflowConfig;
  tables: AttributionTables;
  /** The memory budget of these settings and the limit it was checked against. */
  memory: MemoryPlan;
}

/**
 * The memory budget of a configuration and the limit that applies (memory_limit or the control
 * group's, the lower of the two); refuses a budget over the limit (src/config/memory.ts).
 */
export function planMemory(config: WgflowConfig, opts: { file?: string; env?: NodeJS.ProcessEnv; flags?: FlagValues; cgroup?: CgroupPaths } = {}): MemoryPlan {
  const settings = {
    maxFlows: config.datapath.max_flows, maxFlowsV6: config.datapath.max_flows_v6, ringBytes: config.datapath.ring_bytes,
    maxInFlight: exportInFlight(config), dropKeys: config.datapath.drop_keys,
    aggregateGroups: config.collector.url !== undefined && config.collector.profile === 'netbird-aggregated' ? config.collector.aggregate_max_groups : undefined,
  };
  const configured = config.memory_limit === undefined ? undefined : { bytes: config.memory_limit, source: `memory_limit${originOf('memory_limit', opts).replace(/^ \((.*)\)$/, ', $1')}` };
  const plan: MemoryPlan = { budget: memoryBudget(settings), limit: effectiveLimit(configured, cgroupMemoryLimit(opts.cgroup)) };
  checkMemoryPlan(plan, settings);
  return plan;
}

/** Events the outputs may hold in flight: the collector's window plus JetStream's; undefined with neither. */
function exportInFlight(config: WgflowConfig): number | undefined {
  const parts = [config.collector.url !== undefined ? config.collector.max_in_flight : 0, config.jetstream.servers !== undefined ? config.jetstream.max_in_flight : 0];
  return config.collector.url === undefined && config.jetstream.servers === undefined ? undefined : parts[0] + parts[1];
}

/**
 * Everything `run`, `run --check-config` and reload validate, in one place: the settings (file,
 * environment, flags), the attribution tables compiled from them, and the memory budget against
 * the limit. cgroup: where to read the control group's limit (tests give a fake tree).
 */
export function loadConfig(opts: { file?: string; env?: NodeJS.ProcessEnv; flags?: FlagValues; cgroup?: CgroupPaths }): LoadedConfig {
  const config = resolveConfig(opts);
  let tables: AttributionTables;
  try {
    tables = compileAttribution(config);
  } catch (err) {
    if (err instanceof ConfigError && opts.file) throw new ConfigError(err.path, `${err.problem} (in ${opts.file})`);
    throw err;
  }
  return { config, tables, memory: planMemory(config, opts) };
}

/** Every leaf key of a resolved configuration with its value, nested keys joined by dots. */
export function configLeaves(value: unknown, path = '', out: Array<[string, unknown]> = []): Array<[string, unknown]> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) configLeaves(v, path ? `${path}.${k}` : k, out);
  } else out.push([path, value]);
  return out;
}

/** Keys whose values differ between two resolved configurations. */
export function changedKeys(a: WgflowConfig, b: WgflowConfig): string[] {
  const before = new Map(configLeaves(a).map(([k, v]) => [k, JSON.stringify(v)]));
  const after = configLeaves(b);
  const changed = after.filter(([k, v]) => before.get(k) !== JSON.stringify(v)).map(([k]) => k);
  for (const k of before.keys()) if (!after.some(([x]) => x === k)) changed.push(k);
  return changed;
}

/** Keys a reload applies to the running daemon; every other change needs a restart. */
export const isReloadable = (key: string): boolean => key === 'interfaces' || key.startsWith('attribution.') || key.startsWith('filters.');
