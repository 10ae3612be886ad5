// Configuration mistakes an operator makes: each one exits non-zero with a message naming the key
// (or flag), --check-config says exactly what `run` says, and nothing accepted is lost: the file is
// untouched, and a reload of a bad file keeps the running configuration.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describePrivileged, sleep } from '../helpers/env';
import { WGFLOW, wgflow } from '../helpers/daemon';

const dir = mkdtempSync(join(tmpdir(), 'wgflow-hostile-cfg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Keys as `wg pubkey` prints them (32 bytes, 44 characters of base64 ending in "=").
const KEY_A = Buffer.alloc(32, 1).toString('base64');
const KEY_B = Buffer.alloc(32, 2).toString('base64');

let n = 0;
function file(text: string): string {
  const p = join(dir, `c${++n}.yaml`);
  writeFileSync(p, text);
  return p;
}

// Keeps a `run` that wrongly gets past validation away from /run and /var/lib.
const safe = (): string[] => ['--control-socket', join(dir, 'ctl.sock'), '--output', join(dir, 'out'), '--metrics-listen', '127.0.0.1:0', '--pin-dir', join(dir, 'no-bpffs')];

/** The "configuration error" line of stderr. */
function errorLine(stderr: string): string {
  return stderr.split('\n').find((l) => l.startsWith('wgflow run: configuration error: ')) ?? `(no configuration error line) ${stderr}`;
}

const peers = (...rows: string[]): string => `interfaces: [wg0]\nattribution:\n  peers:\n${rows.map((r) => `    - ${r}\n`).join('')}`;
const policy = (p: string): string => `interfaces: [wg0]\nattribution:\n  peers: [{ id: a, ip: 100.64.0.1 }]\n  policies:\n    - ${p}\n`;

const cases: Array<{ name: string; yaml: string; flags?: string[]; err: RegExp }> = [
  // A peer key that is not a WireGuard key: every event of that peer would fail to encode.
  { name: 'peer public_key that is not base64', yaml: peers(`{ id: a, ip: 100.64.0.1, public_key: "${KEY_A}" }`, '{ id: b, ip: 100.64.0.2, public_key: "not base64!" }'),
    err: /^attribution\.peers\[1\]\.public_key: expected a base64 WireGuard public key \(44 characters ending in "=".*\), got "not base64!"/ },
  { name: 'peer public_key of 5 bytes', yaml: peers('{ id: a, ip: 100.64.0.1, public_key: "QUxJQ0U=" }'),
    err: /^attribution\.peers\[0\]\.public_key: expected a base64 WireGuard public key/ },
  { name: 'peer public_key with its padding missing', yaml: peers(`{ id: a, ip: 100.64.0.1, public_key: "${KEY_A.slice(0, 43)}" }`),
    err: /^attribution\.peers\[0\]\.public_key: expected a base64 WireGuard public key/ },
  { name: 'peer public_key that is not canonical base64', yaml: peers(`{ id: a, ip: 100.64.0.1, public_key: "${'A'.repeat(42)}B=" }`),
    err: /^attribution\.peers\[0\]\.public_key: expected a base64 WireGuard public key/ },
  { name: 'peer public_key that is a number', yaml: peers('{ id: a, ip: 100.64.0.1, public_key: 12 }'),
    err: /^attribution\.peers\[0\]\.public_key: expected a string, got number 12/ },

  // Unknown keys, at every level, with a suggestion when one is close.
  { name: 'attribution.resource instead of resources', yaml: 'interfaces: [wg0]\nattribution:\n  resource:\n    - { id: r, type: HOST, prefixes: [10.0.0.1] }\n',
    err: /^attribution\.resource: unknown key, did you mean "resources"\? \(known keys here: overlay, peers, resources, policies, wireguard, wireguard_refresh_s, source, netbird\)/ },
  { name: "a peer's grups", yaml: peers('{ id: a, ip: 100.64.0.1, grups: [staff] }'),
    err: /^attribution\.peers\[0\]\.grups: unknown key, did you mean "groups"\?/ },
  { name: "a peer's dnsLabel in camelCase", yaml: peers('{ id: a, ip: 100.64.0.1, dnsLabel: a.wg }'),
    err: /^attribution\.peers\[0\]\.dnsLabel: unknown key, did you mean "dns_label"\?/ },
  { name: "a user's emial", yaml: peers('{ id: a, ip: 100.64.0.1, user: { id: u, emial: a@example.com } }'),
    err: /^attribution\.peers\[0\]\.user\.emial: unknown key, did you mean "email"\?/ },
  { name: "a resource's prefix", yaml: 'interfaces: [wg0]\nattribution:\n  resources:\n    - { id: r, type: SUBNET, prefix: [10.0.0.0/8] }\n',
    err: /^attribution\.resources\[0\]\.prefix: unknown key, did you mean "prefixes"\?/ },
  { name: "a policy's destination", yaml: policy('{ id: p, action: accept, sources: [{ peer: a }], destination: [{ peer: a }] }'),
    err: /^attribution\.policies\[0\]\.destination: unknown key, did you mean "destinations"\?/ },
  { name: 'a policy target { peers: a }', yaml: policy('{ id: p, action: accept, sources: [{ peers: a }], destinations: [] }'),
    err: /^attribution\.policies\[0\]\.sources\[0\]\.peers: unknown key, did you mean "peer"\?/ },
  { name: 'a port range with a "form"', yaml: policy('{ id: p, action: accept, sources: [], destinations: [], ports: [{ form: 1, to: 2 }] }'),
    err: /^attribution\.policies\[0\]\.ports\[0\]\.form: unknown key, did you mean "from"\?/ },
  { name: 'a top-level colector', yaml: 'interfaces: [wg0]\ncolector:\n  url: grpc://127.0.0.1:1\n',
    err: /^colector: unknown key, did you mean "collector"\?/ },
  // A key that is also a property of every object ("constructor") is still unknown.
  { name: 'a top-level constructor key', yaml: 'interfaces: [wg0]\nconstructor: 1\n', err: /^constructor: unknown key/ },
  { name: 'an unknown key with nothing close', yaml: peers('{ id: a, ip: 100.64.0.1, colour: blue }'),
    err: /^attribution\.peers\[0\]\.colour: unknown key \(known keys here: id, name, ip, ips, allowed_ips, public_key, os, dns_label, groups, user\)/ },

  // Duplicates that make ids ambiguous: both positions named.
  { name: 'duplicate policy ids', yaml: 'interfaces: [wg0]\nattribution:\n  policies:\n    - { id: pol, action: accept, sources: [], destinations: [] }\n    - { id: other, action: accept, sources: [], destinations: [] }\n    - { id: pol, action: drop, sources: [], destinations: [] }\n',
    err: /^attribution\.policies\[2\]\.id: duplicate policy id "pol" \(policies\[0\] has it too\)/ },
  { name: 'duplicate peer ids', yaml: peers('{ id: a, ip: 100.64.0.1 }', '{ id: a, ip: 100.64.0.2 }'),
    err: /^attribution\.peers\[1\]\.id: duplicate peer id "a" \(peers\[0\] has it too\)/ },
  { name: 'duplicate resource ids', yaml: 'interfaces: [wg0]\nattribution:\n  resources:\n    - { id: r, type: HOST, prefixes: [10.0.0.1] }\n    - { id: r, type: HOST, prefixes: [10.0.0.2] }\n',
    err: /^attribution\.resources\[1\]\.id: duplicate resource id "r" \(resources\[0\] has it too\)/ },
  { name: 'two peers with one public key', yaml: peers(`{ id: a, ip: 100.64.0.1, public_key: "${KEY_B}" }`, `{ id: b, ip: 100.64.0.2, public_key: "${KEY_B}" }`),
    err: /^attribution\.peers\[1\]\.public_key: duplicate public key "[^"]+" \(peers\[0\] has it too\)/ },

  // Wrong types: the key and the expected type, never an internal message.
  { name: 'peers: "str"', yaml: 'interfaces: [wg0]\nattribution:\n  peers: "str"\n', err: /^attribution\.peers: expected a list, got "str"/ },
  { name: 'policies as a mapping', yaml: 'interfaces: [wg0]\nattribution:\n  policies: { id: p }\n', err: /^attribution\.policies: expected a list, got a mapping/ },
  { name: 'a resource that is a string', yaml: 'interfaces: [wg0]\nattribution:\n  resources: [r1]\n', err: /^attribution\.resources\[0\]: expected a mapping, got "r1"/ },
  { name: "a peer's groups as a string", yaml: peers('{ id: a, ip: 100.64.0.1, groups: staff }'), err: /^attribution\.peers\[0\]\.groups: expected a list, got "staff"/ },
  { name: 'attribution as a list', yaml: 'interfaces: [wg0]\nattribution: [a]\n', err: /^attribution: expected a mapping, got a list/ },
  { name: 'a peer without an id', yaml: peers('{ ip: 100.64.0.1 }'), err: /^attribution\.peers\[0\]\.id: is required/ },
  { name: 'a peer address that is not one', yaml: peers('{ id: a, ips: [100.64.0.1, 300.1.1.1] }'), err: /^attribution\.peers\[0\]\.ips\[1\]: not an IP address: "300\.1\.1\.1"/ },
  { name: 'a resource type in lower case', yaml: 'interfaces: [wg0]\nattribution:\n  resources: [{ id: r, type: host, prefixes: [10.0.0.1] }]\n',
    err: /^attribution\.resources\[0\]\.type: expected one of "HOST", "SUBNET", "DOMAIN", got "host"/ },
  { name: 'a policy action that is neither', yaml: policy('{ id: p, action: allow, sources: [], destinations: [] }'), err: /^attribution\.policies\[0\]\.action: expected one of "accept", "drop", got "allow"/ },
  { name: 'a policy without destinations', yaml: policy('{ id: p, action: accept, sources: [] }'), err: /^attribution\.policies\[0\]\.destinations: is required/ },
  { name: 'a reversed port range', yaml: policy('{ id: p, action: accept, sources: [], destinations: [], ports: ["90-80"] }'), err: /^attribution\.policies\[0\]\.ports\[0\]: range "90-80" ends before it starts/ },
  { name: 'an unknown protocol', yaml: policy('{ id: p, action: accept, sources: [], destinations: [], protocol: sctp }'), err: /^attribution\.policies\[0\]\.protocol: expected all, tcp, udp, icmp or 0-255, got "sctp"/ },
  { name: 'a target naming two things', yaml: policy('{ id: p, action: accept, sources: [{ peer: a, group: g }], destinations: [] }'),
    err: /^attribution\.policies\[0\]\.sources\[0\]: expected exactly one of peer, group, prefix or resource, got peer and group/ },
  { name: 'an overlay prefix too long', yaml: 'interfaces: [wg0]\nattribution:\n  overlay: [10.0.0.0/33]\n', err: /^attribution\.overlay\[0\]: not an IP prefix: "10\.0\.0\.0\/33"/ },
  { name: 'a filter prefix that is not one', yaml: 'interfaces: [wg0]\nfilters:\n  include_prefixes: [nope]\n', err: /^filters\.include_prefixes\[0\]: not an IP prefix: "nope"/ },

  // Settings `run` refused after --check-config had said OK.
  { name: 'collector URL with credentials', yaml: 'interfaces: [wg0]\ncollector:\n  url: grpc://user:pw@h:1\n', err: /^collector\.url: "grpc:\/\/user:pw@h:1": credentials in the URL are not supported; give the token with --token or collector\.token/ },
  { name: 'collector URL with credentials (flag)', yaml: 'interfaces: [wg0]\n', flags: ['--collector', 'grpc://user:pw@h:1'], err: /^collector\.url: "grpc:\/\/user:pw@h:1": credentials .*\(from --collector\)$/ },
  { name: 'grpc:// collector URL without a port', yaml: 'interfaces: [wg0]\ncollector:\n  url: grpc://collector\n', err: /^collector\.url: "grpc:\/\/collector": missing port/ },
  { name: 'collector port out of range', yaml: 'interfaces: [wg0]\ncollector:\n  url: grpc://collector:99999\n', err: /^collector\.url: "grpc:\/\/collector:99999": / },
  { name: 'IPFIX port 0', yaml: 'interfaces: [wg0]\nipfix: [udp://127.0.0.1:0]\n', err: /^ipfix\[0\]: expected udp:\/\/HOST:PORT \(port 1-65535\), got "udp:\/\/127\.0\.0\.1:0"/ },
  { name: 'no interface', yaml: 'reporter_id: x\n', err: /^interfaces: no interface to watch: give --interface NAME/ },
  { name: 'a client certificate without its key', yaml: 'interfaces: [wg0]\ncollector:\n  url: grpcs://c.example:443\n  cert_file: /etc/wgflow/client.pem\n',
    err: /^collector\.key_file: a client certificate needs its key: set both or neither/ },
  { name: 'TLS files with a plaintext collector', yaml: 'interfaces: [wg0]\ncollector:\n  url: grpc://c.example:50051\n  ca_file: /etc/wgflow/ca.pem\n',
    err: /^collector\.ca_file: TLS files were given but "grpc:\/\/c\.example:50051" is plaintext; use grpcs:\/\/ or https:\/\// },
  { name: 'a CA file that does not exist', yaml: 'interfaces: [wg0]\ncollector:\n  url: grpcs://c.example:443\n  ca_file: /nonexistent/wgflow-ca.pem\n',
    err: /^collector\.ca_file: cannot read \/nonexistent\/wgflow-ca\.pem \(ENOENT\)/ },
  { name: 'a ring buffer size that is not a power of two', yaml: 'interfaces: [wg0]\ndatapath:\n  ring_bytes: 5000\n',
    err: /^datapath\.ring_bytes: expected a power of two from 4096 to 1073741824 \(e\.g\. 1048576\), got 5000/ },
];

describe('configuration mistakes: --check-config and run say the same, exit 2, the file stays', () => {
  it.each(cases)('$name', ({ yaml, flags, err }) => {
    const cfg = file(yaml);
    const check = wgflow(['run', '--check-config', '--config', cfg, ...(flags ?? [])], { timeoutMs: 15_000 });
    const run = wgflow(['run', '--config', cfg, ...(flags ?? []), ...safe()], { timeoutMs: 15_000 });
    const line = errorLine(check.stderr).slice('wgflow run: configuration error: '.length);
    expect(line).toMatch(err);
    expect(check.code, check.stderr).toBe(2);
    expect(check.stdout).toBe('');
    expect(errorLine(run.stderr)).toBe(errorLine(check.stderr));
    expect(run.code, run.stderr).toBe(2);
    expect(readFileSync(cfg, 'utf8')).toBe(yaml);
  });

  it('a good configuration with every kind of table entry passes both', () => {
    const cfg = file(`interfaces: [wg0]\nreporter_public_key: "${KEY_A}"\nattribution:\n  overlay: [100.64.0.0/10]\n  peers:\n    - { id: a, name: alice, ip: 100.64.0.1, ips: ["fd00::1"], public_key: "${KEY_B}", os: linux, dns_label: a.wg, groups: [staff], user: { id: u, name: Alice, email: a@example.com } }\n` +
      '  resources:\n    - { id: r, name: lan, type: SUBNET, prefixes: [192.168.0.0/16], groups: [lan] }\n    - { id: d, type: DOMAIN, domains: ["*.example.com"] }\n' +
      '  policies:\n    - { id: p, name: web, action: accept, enabled: true, bidirectional: false, sources: [{ group: staff }], destinations: [{ resource: r }, { prefix: 10.0.0.0/8 }, { peer: a }, { group: lan }], protocol: tcp, ports: [80, "8000-8100", { from: 9000, to: 9001 }] }\n');
    const check = wgflow(['run', '--check-config', '--config', cfg]);
    expect(check.stderr).toBe('');
    expect(check.stdout).toMatch(/^configuration OK .*1 policies\nmemory budget: .*\n$/);
    expect(check.code).toBe(0);
  });
});

describePrivileged('reload of a bad configuration keeps the running one', () => {
  let child: ChildProcess;
  let log = '';
  const base = join(dir, 'daemon');
  const sock = join(base, 'ctl.sock');
  const cfgFile = join(base, 'wgflow.yaml');
  const good = (iface: string, key: string): string =>
    `interfaces: [${iface}]\ncontrol_socket: ${sock}\nmetrics_listen: 127.0.0.1:0\noutput: { dir: ${join(base, 'out')} }\n` +
    `datapath: { pin_dir: ${join(base, 'bpf', 'wgflow')}, max_flows: 1024, max_flows_v6: 1024 }\n` +
    `attribution:\n  peers: [{ id: a, ip: 100.64.0.1, public_key: "${key}" }]\n`;
  const ctl = (...args: string[]): ReturnType<typeof wgflow> => wgflow(['ctl', '--socket', sock, ...args]);

  beforeAll(async () => {
    mkdirSync(join(base, 'bpf'), { recursive: true });
    // A bpffs of its own: nothing pinned outlives the test.
    execFileSync('mount', ['-t', 'bpf', 'bpf', join(base, 'bpf')]);
    writeFileSync(cfgFile, good('wgh-absent0', KEY_A));
    // No such interface: the daemon waits for it, which is all a reload test needs.
    child = spawn(process.execPath, [WGFLOW, 'run', '--config', cfgFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const deadline = Date.now() + 15_000;
    while (!(existsSync(sock) && ctl('status').code === 0)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`daemon did not start: ${log}`);
      await sleep(100);
    }
  });

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    spawnSync('umount', [join(base, 'bpf')]);
  });

  const interfaces = (): string[] => (JSON.parse(ctl('status', '--json').stdout) as { interfaces: Array<{ name: string }> }).interfaces.map((i) => i.name);

  it('ctl reload: non-zero, names the key, the old tables and interfaces stay', () => {
    writeFileSync(cfgFile, good('wgh-other0', 'not-a-key'));
    const r = ctl('reload');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^wgflow ctl: reload refused, the running configuration stays: configuration error: attribution\.peers\[0\]\.public_key: expected a base64 WireGuard public key .*got "not-a-key"/);
    expect(interfaces()).toEqual(['wgh-absent0']);
  });

  it('SIGHUP: logs why and keeps running the old configuration', async () => {
    writeFileSync(cfgFile, good('wgh-other0', 'QUxJQ0U='));
    child.kill('SIGHUP');
    const deadline = Date.now() + 5000;
    while (!/reload failed/.test(log) && Date.now() < deadline) await sleep(50);
    const line = log.split('\n').find((l) => l.includes('reload failed')) ?? '';
    expect(line).toMatch(/keeping the current configuration/);
    expect(line).toMatch(/attribution\.peers\[0\]\.public_key: expected a base64 WireGuard public key/);
    expect(child.exitCode).toBe(null);
    expect(interfaces()).toEqual(['wgh-absent0']);
  });

  it('a good file afterwards is the first reload that counts (generation 2: 1 is the tables it started with)', () => {
    writeFileSync(cfgFile, good('wgh-other0', KEY_B));
    const r = ctl('reload', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ interfaces: ['wgh-other0'], generation: 2, restartNeeded: [] });
  });

  it('keys a reload cannot apply are named, and keep their running values in ctl status', async () => {
    writeFileSync(cfgFile, `${good('wgh-other0', KEY_B)}log_level: debug\nipfix: [udp://127.0.0.1:4739]\n`);
    const r = wgflow(['ctl', '--control-socket', sock, 'reload']); // run's spelling of the flag works too
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('reloaded: interfaces wgh-other0\nchanged, but only applied by a restart (the running values stay): log_level, ipfix\n');
    const st = JSON.parse(ctl('status', '--json').stdout) as { ipfix?: unknown };
    expect(st.ipfix).toBeUndefined();
    const deadline = Date.now() + 5000;
    while (!/these changed keys take effect only after a restart/.test(log) && Date.now() < deadline) await sleep(50);
    expect(log).toMatch(/these changed keys take effect only after a restart/);
  });
});
