// wgflow's configuration: one file (YAML or JSON), overridden by environment variables, overridden
// by flags. The schema below is the reference; docs/config.md describes every key.
import { accessSync, constants, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parse as parseYaml } from 'yaml';
import {
  bool, Check, ConfigError, field, hostPort, int, list, obj, oneOf, onOff, optional, section, str, via, wgKey,
} from '../util/check';
import type { AttributionConfig } from '../attribution/config';
import { attributionSchema, PREFIX } from '../attribution/schema';
import { AttributionError, AttributionTables } from '../attribution/tables';
import { CollectorUrlError, parseCollectorUrl, TlsFiles, tlsFilesProblem } from '../output/grpc/url';
import { parseIpfixUrl } from '../output/ipfix/exporter';
import { checkRingBytes } from '../datapath/datapath';

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
    max_in_flight: field(int(1, 1_000_000), 4096),
    transport: field(oneOf('http2', 'grpc-js'), 'http2'),
  })),
  spool: section(obj({
    dir: field(ABS_PATH, '/var/lib/wgflow/spool'),
    max_bytes: field(int(1 << 20, 2 ** 48), 256 * 1024 * 1024),
    fsync: field(oneOf('always', 'interval', 'never'), 'interval'),
    fsync_interval_ms: field(int(1, 60_000), 1000),
  })),
  output: section(obj({
    dir: field(ABS_PATH, '/var/lib/wgflow/events'),
    rotate_bytes: field(int(1 << 16, 2 ** 40), 64 * 1024 * 1024),
  })),
  metrics_listen: field(hostPort, '127.0.0.1:9617'),
  control_socket: field(ABS_PATH, '/run/wgflow/ctl.sock'),
  counters: field(onOff, true),
  log_level: field(oneOf('trace', 'debug', 'info', 'warn', 'error', 'fatal'), 'info'),
  datapath: section(obj({
    max_flows: field(int(1, 1 << 26), 65_536),
    max_flows_v6: field(int(1, 1 << 26), 65_536),
    ring_bytes: field(RING_BYTES, 1 << 20),
    pin_dir: field(ABS_PATH, '/sys/fs/bpf/wgflow'),
    attach_mode: field(oneOf('auto', 'tcx', 'clsact'), 'auto'),
    poll_timeout_ms: field(int(1, 10_000), 100),
    drain_interval_ms: field(int(100, 60_000), 1000),
  })),
  lifecycle: section(obj({
    tcp_close_grace_ms: field(int(0, 60_000), 500),
    tcp_timeout_s: field(int(1, 7 * 86_400), 7200),
    udp_timeout_s: field(int(1, 86_400), 30),
    icmp_timeout_s: field(int(1, 86_400), 30),
    other_timeout_s: field(int(1, 86_400), 30),
    interim_interval_s: field(int(0, 86_400), 60),
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
  ipfix_mtu: field(int(512, 65507), 1400),
  ipfix_template_refresh_s: field(int(1, 86_400), 60),
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
  { flag: 'reporter-id', env: 'WGFLOW_REPORTER_ID', path: 'reporter_id', help: 'this peer\'s id in events (default: hostname)' },
  { flag: 'public-key', env: 'WGFLOW_PUBLIC_KEY', path: 'reporter_public_key', help: 'this peer\'s WireGuard public key (base64), sent with events' },
  { flag: 'spool-dir', env: 'WGFLOW_SPOOL_DIR', path: 'spool.dir', help: 'durable spool of unacknowledged events (default /var/lib/wgflow/spool)' },
  { flag: 'output', env: 'WGFLOW_OUTPUT', path: 'output.dir', help: 'directory for events.jsonl when there is no --collector (default /var/lib/wgflow/events)' },
  { flag: 'metrics-listen', env: 'WGFLOW_METRICS_LISTEN', path: 'metrics_listen', help: 'HOST:PORT of the Prometheus /metrics endpoint (default 127.0.0.1:9617)' },
  { flag: 'control-socket', env: 'WGFLOW_CONTROL_SOCKET', path: 'control_socket', help: 'unix socket for wgflow ctl (default /run/wgflow/ctl.sock, mode 0600)' },
  { flag: 'counters', env: 'WGFLOW_COUNTERS', path: 'counters', help: 'kernel byte reporting at start: on or off (default on)' },
  { flag: 'log-level', env: 'WGFLOW_LOG_LEVEL', path: 'log_level', help: 'trace, debug, info, warn, error or fatal (default info)' },
  { flag: 'max-flows', env: 'WGFLOW_MAX_FLOWS', path: 'datapath.max_flows', numeric: true, help: 'IPv4 flow map size (default 65536)' },
  { flag: 'pin-dir', env: 'WGFLOW_PIN_DIR', path: 'datapath.pin_dir', help: 'bpffs directory for the pinned flow maps (default /sys/fs/bpf/wgflow)' },
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
  if (cfg.interfaces.length === 0) throw new ConfigError('interfaces', 'no interface to watch: give --interface NAME (repeatable) or "interfaces" in the config file');
  const c = cfg.collector;
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
  return cfg;
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
    return settingsAgree(configSchema(raw, ''));
  } catch (err) {
    if (err instanceof ConfigError) {
      const flag = RUN_FLAGS.find((f) => f.path === err.path.replace(/\[\d+\]$/, ''));
      const from = flag && opts.flags?.[flag.flag] !== undefined ? ` (from --${flag.flag})`
        : flag && env[flag.env] ? ` (from ${flag.env})` : opts.file ? ` (in ${opts.file})` : '';
      throw new ConfigError(err.path, `${err.problem}${from}`);
    }
    throw err;
  }
}

export type WgflowConfig = ReturnType<typeof configSchema>;

/** The attribution tables and filters of a config, as AttributionTables takes them. */
export function attributionOf(cfg: WgflowConfig): AttributionConfig {
  const f = cfg.filters;
  return {
    ...cfg.attribution,
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
}

/**
 * Everything `run`, `run --check-config` and reload validate, in one place: the settings (file,
 * environment, flags), then the attribution tables compiled from them.
 */
export function loadConfig(opts: { file?: string; env?: NodeJS.ProcessEnv; flags?: FlagValues }): LoadedConfig {
  const config = resolveConfig(opts);
  try {
    return { config, tables: compileAttribution(config) };
  } catch (err) {
    if (err instanceof ConfigError && opts.file) throw new ConfigError(err.path, `${err.problem} (in ${opts.file})`);
    throw err;
  }
}
