// Bad inputs: each gets its exact message and a non-zero exit (2: usage or configuration, 1: cannot run).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describePrivileged, spawnAsNobody } from '../helpers/env';
import { wgflow } from '../helpers/daemon';

describePrivileged('bad inputs: exact messages and exit codes', () => {
  // Made now, not in beforeAll: the case table below names files in it.
  const dir = mkdtempSync(join(tmpdir(), 'wgflow-bad-'));
  let busy: Server;
  let busyPort = 0;
  const file = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  beforeAll(async () => {
    busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    busyPort = (busy.address() as { port: number }).port;
  });
  afterAll(() => {
    busy?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // Flags common to runs that get past configuration: nothing touches /run or /var/lib.
  const base = (): string[] => ['--control-socket', join(dir, 'ctl.sock'), '--output', join(dir, 'out'), '--metrics-listen', '127.0.0.1:0'];

  const cases: Array<{ name: string; args: () => string[]; code: number; err: string | RegExp | (() => RegExp); asNobody?: boolean }> = [
    { name: 'no interface', args: () => ['run', ...base()], code: 2,
      err: 'wgflow run: configuration error: interfaces: no interface to watch: give --interface NAME (repeatable) or "interfaces" in the config file\n' },
    { name: 'interface name too long', args: () => ['run', '--interface', 'a-name-far-too-long0'], code: 2,
      err: 'wgflow run: configuration error: interfaces[0]: expected an interface name (1-15 letters, digits, _ . : @ -), got "a-name-far-too-long0" (from --interface)\n' },
    { name: 'collector URL with a wrong scheme', args: () => ['run', '--interface', 'wg0', '--collector', 'http://collector:443'], code: 2,
      err: 'wgflow run: configuration error: collector.url: "http://collector:443": unsupported scheme "http://" (plaintext is grpc://); use grpc://, grpcs:// or https:// (e.g. grpc://127.0.0.1:50051, grpcs://collector.example:443 or https://collector.example) (from --collector)\n' },
    { name: 'IPFIX target that is not UDP', args: () => ['run', '--interface', 'wg0', '--ipfix', 'tcp://127.0.0.1:4739'], code: 2,
      err: 'wgflow run: configuration error: ipfix[0]: expected udp://HOST:PORT (port 1-65535), got "tcp://127.0.0.1:4739" (from --ipfix)\n' },
    { name: '--counters neither on nor off', args: () => ['run', '--interface', 'wg0', '--counters', 'maybe'], code: 2,
      err: 'wgflow run: --counters must be on or off, got "maybe"\n' },
    { name: 'metrics address without a port', args: () => ['run', '--interface', 'wg0', '--metrics-listen', '9617'], code: 2,
      err: 'wgflow run: configuration error: metrics_listen: expected HOST:PORT (e.g. 127.0.0.1:9617 or [::1]:9617), got "9617" (from --metrics-listen)\n' },
    { name: 'a flow limit that is not a number', args: () => ['run', '--interface', 'wg0', '--max-flows', 'many'], code: 2,
      err: 'wgflow run: configuration error: datapath.max_flows: expected an integer from 1 to 67108864, got "many" (from --max-flows)\n' },
    { name: 'unknown log level', args: () => ['run', '--interface', 'wg0', '--log-level', 'loud'], code: 2,
      err: 'wgflow run: configuration error: log_level: expected one of "trace", "debug", "info", "warn", "error", "fatal", got "loud" (from --log-level)\n' },
    { name: 'unknown flag', args: () => ['run', '--bogus'], code: 2, err: /^wgflow run: Unknown option '--bogus'/ },
    { name: 'missing config file', args: () => ['run', '--config', join(dir, 'nope.yaml')], code: 2,
      err: /^wgflow run: configuration error: cannot read config file .*nope\.yaml: ENOENT/ },
    { name: 'config file that is not YAML', args: () => ['run', '--config', file('broken.yaml', 'interfaces: [wg0\n')], code: 2,
      err: /^wgflow run: configuration error: .*broken\.yaml is not valid YAML\/JSON: / },
    { name: 'config key of the wrong type', args: () => ['run', '--config', file('type.yaml', 'interfaces: wg0\n')], code: 2,
      err: /^wgflow run: configuration error: interfaces: expected a list, got "wg0" \(in .*type\.yaml\)\n$/ },
    { name: 'unknown config key', args: () => ['run', '--config', file('key.yaml', 'interfaces: [wg0]\ndatapath:\n  max_flow: 10\n')], code: 2,
      err: /^wgflow run: configuration error: datapath\.max_flow: unknown key, did you mean "max_flows"\? \(known keys here: max_flows, max_flows_v6, ring_bytes, pin_dir, attach_mode, poll_timeout_ms, drain_interval_ms, drop_keys\) \(in .*key\.yaml\)\n$/ },
    { name: 'relative spool path', args: () => ['run', '--config', file('rel.yaml', 'interfaces: [wg0]\nspool:\n  dir: spool\n')], code: 2,
      err: /^wgflow run: configuration error: spool\.dir: expected an absolute path, got "spool" \(in .*rel\.yaml\)\n$/ },
    { name: 'bad WireGuard public key', args: () => ['run', '--interface', 'wg0', '--public-key', 'not-a-key'], code: 2,
      err: 'wgflow run: configuration error: reporter_public_key: expected a base64 WireGuard public key (44 characters ending in "=", as printed by `wg pubkey`), got "not-a-key" (from --public-key)\n' },
    { name: 'bad prefix in the attribution tables (--check-config)', args: () => ['run', '--check-config', '--config', file('attr.yaml', 'interfaces: [wg0]\nattribution:\n  overlay: [10.0.0.0/33]\n')], code: 2,
      err: /^wgflow run: configuration error: attribution\.overlay\[0\]: not an IP prefix: "10\.0\.0\.0\/33" \(length must be 0-32\) \(in .*attr\.yaml\)\n$/ },
    { name: 'no privileges', asNobody: true, args: () => ['run', '--interface', 'wg0', ...base()], code: 1,
      err: /wgflow run: wgflow run needs root or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; missing: CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON \(run as root, or use the systemd unit in packaging\/\)\n$/ },
    { name: 'unwritable spool directory', args: () => ['run', '--interface', 'wg0', ...base(), '--collector', 'grpc://127.0.0.1:1', '--spool-dir', '/proc/wgflow-spool'], code: 1,
      err: /wgflow run: spool directory \/proc\/wgflow-spool is not writable \(ENOENT\); choose another with --spool-dir or fix its permissions\n$/ },
    { name: 'metrics port in use', args: () => ['run', '--interface', 'wg0', ...base(), '--metrics-listen', `127.0.0.1:${busyPort}`], code: 1,
      err: () => new RegExp(`wgflow run: metrics address 127\\.0\\.0\\.1:${busyPort} is already in use \\(--metrics-listen\\)\\n$`) },
    { name: 'ctl without a daemon', args: () => ['ctl', '--socket', join(dir, 'none.sock'), 'status'], code: 1,
      err: `wgflow ctl: no control socket at ${join(dir, 'none.sock')}: is "wgflow run" running? (--control-socket)\n` },
    { name: 'ctl counters with a bad value', args: () => ['ctl', 'counters', 'maybe'], code: 2, err: /^wgflow ctl: usage: wgflow ctl counters on\|off\n/ },
    { name: 'unknown command', args: () => ['frobnicate'], code: 2, err: /^wgflow: unknown command "frobnicate"\n/ },
  ];

  it.each(cases)('$name', ({ args, code, err, asNobody }) => {
    const r = asNobody
      ? (() => {
          const s = spawnAsNobody(null, (repo) => [process.execPath, join(repo, 'bin', 'wgflow'), ...args()]);
          return { code: s.status ?? -1, stdout: s.stdout, stderr: s.stderr };
        })()
      : wgflow(args());
    // The message is one line of stderr (usage text or a structured log line may surround it).
    const lines = r.stderr.split('\n').filter(Boolean).map((l) => `${l}\n`);
    const want = typeof err === 'function' ? err() : err;
    if (typeof want === 'string') expect(lines).toContain(want);
    else expect(lines.some((l) => want.test(l)), `no line of stderr matches ${want}:\n${r.stderr}`).toBe(true);
    expect(r.code).toBe(code);
  });
});
