// wgflow demo: on one machine, a namespace testbed (client --WireGuard-- routing peer -- resource
// subnet), the daemon on the routing peer, the embedded collector, a mix of traffic, and the flow
// events as a live table. Everything is cleaned up at the end, also on Ctrl-C.
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { REPO_ROOT } from '../src/util/addon';
import { missingCapabilities } from '../src/daemon/privileges';
import { fromJsonLine } from '../src/model/json';
import { resourceOf, type FlowEvent } from '../src/model/event';
import { Testbed } from './testbed';
import { protoName } from '../src/cli/ctl';
import { formatBytes } from '../src/util/bytes';

const WGFLOW = join(REPO_ROOT, 'bin', 'wgflow');
const TRAFFIC = join(REPO_ROOT, 'build', 'testkit', 'traffic.js');

export function help(): string {
  return [
    'usage: wgflow demo [--duration SECONDS] [--keep]',
    '',
    'Builds a network-namespace testbed (a client, a routing peer running WireGuard, a resource subnet',
    'behind it), starts wgflow on the routing peer and the embedded collector, sends TCP, UDP, ICMP and',
    'IPv6 traffic to a peer and to resources, and shows the flow events live. Needs root.',
    '',
    '  --duration SECONDS  how long to generate traffic (default 30), then stop and clean up',
    '  --keep              keep the event files (path printed at the end)',
    '  --help              show this help',
    '',
  ].join('\n');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One row of the live table. */
export function eventRow(ev: FlowEvent): string[] {
  const icmp = ev.protocol === 1 || ev.protocol === 58;
  const res = resourceOf(ev);
  const who = (e: FlowEvent['source']): string => (e.name ? `${e.name} (${e.ip})` : e.ip);
  return [
    new Date(ev.timestampMs).toISOString().slice(11, 23),
    ev.type + (ev.type === 'END' && ev.endReason ? ` ${ev.endReason}` : ''),
    ev.direction === 'INGRESS' ? 'in' : 'out',
    who(ev.source),
    who(ev.destination),
    `${protoName(ev.protocol)}${icmp ? ` ${ev.icmpType}/${ev.icmpCode}` : `/${ev.destination.port}`}`,
    ev.type === 'START' ? '' : `${formatBytes(ev.txBytes)} ↑ ${formatBytes(ev.rxBytes)} ↓`,
    res ? res.name || res.id : '',
    ev.policyName || ev.ruleId || '',
  ];
}

const COLUMNS: Array<[string, number]> = [['TIME', 12], ['TYPE', 12], ['DIR', 3], ['SOURCE', 26], ['DESTINATION', 30], ['PROTO/PORT', 12], ['BYTES ↑ / ↓', 24], ['RESOURCE', 12], ['POLICY', 0]];
const fmt = (cells: string[]): string => cells.map((c, i) => (COLUMNS[i][1] ? c.padEnd(COLUMNS[i][1]) : c)).join(' ').trimEnd();

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, strict: true, options: { duration: { type: 'string' }, keep: { type: 'boolean' }, help: { type: 'boolean' } } }));
  } catch (err) {
    process.stderr.write(`wgflow demo: ${(err as Error).message}\n\n${help()}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(help());
    return 0;
  }
  const duration = values.duration === undefined ? 30 : Number(values.duration);
  if (!Number.isFinite(duration) || duration <= 0) {
    process.stderr.write(`wgflow demo: --duration must be a positive number of seconds, got "${values.duration}"\n`);
    return 2;
  }
  if (process.getuid?.() !== 0 || missingCapabilities().length) {
    process.stderr.write('wgflow demo: needs root (it creates network namespaces, WireGuard interfaces and loads BPF programs)\n');
    return 1;
  }
  if (!existsSync(TRAFFIC)) {
    process.stderr.write(`wgflow demo: ${TRAFFIC} is missing: run "make build" first\n`);
    return 1;
  }

  const tb = new Testbed();
  const work = mkdtempSync(join(tmpdir(), 'wgflow-demo-'));
  const pinDir = `/sys/fs/bpf/wgflow-demo-${tb.id}`;
  const procs: ChildProcess[] = [];
  let stopped = false;
  const onSigint = (): void => {
    process.stdout.write('\ninterrupted: stopping and cleaning up...\n');
    stopped = true;
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  const log = (msg: string): void => void process.stdout.write(`demo: ${msg}\n`);

  const startIn = (ns: string, args: string[], logName?: string): ChildProcess => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    p.stdout?.on('data', (d: Buffer) => out.push(d.toString()));
    p.stderr?.on('data', (d: Buffer) => out.push(d.toString()));
    p.on('exit', (code) => {
      if (logName) writeFileSync(join(work, `${logName}.log`), out.join(''));
    });
    procs.push(p);
    return p;
  };

  let shown = 0;
  let offset = 0;
  const eventsFile = join(work, 'collector', 'events.jsonl');
  const counts: Record<string, number> = {};
  const showNew = (): void => {
    if (!existsSync(eventsFile)) return;
    const text = readFileSync(eventsFile, 'utf8');
    const fresh = text.slice(offset);
    const last = fresh.lastIndexOf('\n');
    if (last < 0) return;
    offset += last + 1;
    for (const line of fresh.slice(0, last).split('\n')) {
      if (!line) continue;
      try {
        const ev = fromJsonLine(line).event;
        counts[ev.type] = (counts[ev.type] ?? 0) + 1;
        if (shown++ % 25 === 0) process.stdout.write(`\n${fmt(COLUMNS.map((c) => c[0]))}\n`);
        process.stdout.write(`${fmt(eventRow(ev))}\n`);
      } catch {
        // A line we cannot read is the collector's problem; the demo shows the rest.
      }
    }
  };

  try {
    log(`building the testbed (WireGuard: ${tb.impl === 'kernel' ? 'kernel module' : 'wireguard-go'})`);
    const r = tb.routed();
    const net = r.client.ip4.split('.')[1];
    const config = {
      interfaces: [r.router.ifname],
      reporter_id: 'routing-peer',
      reporter_public_key: r.router.publicKey,
      collector: { url: 'grpc://127.0.0.1:50051', token: 'demo-token' },
      spool: { dir: join(work, 'spool') },
      metrics_listen: '127.0.0.1:9617',
      control_socket: join(work, 'ctl.sock'),
      log_level: 'warn',
      datapath: { pin_dir: pinDir },
      lifecycle: { udp_timeout_s: 5, icmp_timeout_s: 5, interim_interval_s: 10, tcp_close_grace_ms: 300 },
      attribution: {
        overlay: [`10.${net}.0.0/24`, `fd00:${net}::/64`],
        peers: [
          { id: 'peer-laptop', name: 'alice-laptop', ip: r.client.ip4, ips: [r.client.ip6], public_key: r.client.publicKey, os: 'linux', dns_label: 'alice-laptop.demo', groups: ['staff'], user: { id: 'user-alice', name: 'Alice', email: 'alice@example.com' } },
          { id: 'peer-router', name: 'routing-peer', ip: r.router.ip4, ips: [r.router.ip6], public_key: r.router.publicKey, os: 'linux', dns_label: 'router.demo', groups: ['routers'] },
        ],
        resources: [
          { id: 'res-office', name: 'office-lan', type: 'SUBNET', prefixes: [r.subnet4, r.subnet6] },
          { id: 'res-db', name: 'database', type: 'HOST', prefixes: [`${r.resource4}/32`] },
        ],
        policies: [
          { id: 'pol-db', name: 'staff to database', action: 'accept', sources: [{ group: 'staff' }], destinations: [{ resource: 'res-db' }], protocol: 'tcp', ports: [8080] },
          { id: 'pol-office', name: 'staff to office', action: 'accept', sources: [{ group: 'staff' }], destinations: [{ resource: 'res-office' }] },
          { id: 'pol-mesh', name: 'staff to routers', action: 'accept', sources: [{ group: 'staff' }], destinations: [{ group: 'routers' }] },
        ],
      },
    };
    const cfgFile = join(work, 'wgflow.yaml');
    writeFileSync(cfgFile, stringify(config));

    log('starting the collector and wgflow on the routing peer');
    startIn(r.router.ns, [WGFLOW, 'collect', '--listen', '127.0.0.1:50051', '--out', join(work, 'collector'), '--token', 'demo-token'], 'collector');
    const daemon = startIn(r.router.ns, [WGFLOW, 'run', '--config', cfgFile], 'daemon');
    for (let i = 0; i < 100 && !existsSync(join(work, 'ctl.sock')); i++) {
      if (daemon.exitCode !== null) throw new Error(`the daemon exited (${daemon.exitCode}); see ${join(work, 'daemon.log')}`);
      await sleep(100);
    }
    await sleep(600); // attach (the watcher checks every 500 ms)

    // Servers: a web app on the database host, a UDP echo in the office subnet, a service on the router.
    startIn(r.resourceNs, [TRAFFIC, 'tcp-server', '8080']);
    startIn(r.resourceNs, [TRAFFIC, 'udp-echo', '9000']);
    startIn(r.router.ns, [TRAFFIC, 'tcp-server', '7000']);
    await sleep(300);
    const steps: Array<[string, string[]]> = [
      ['TCP 512 KiB to the database (IPv4)', [TRAFFIC, 'tcp-client', r.resource4, '8080', String(512 << 10)]],
      ['UDP 20 datagrams to the office LAN (IPv6)', [TRAFFIC, 'udp-client', r.resource6, '9000', '20', '400']],
      ['TCP 64 KiB to the routing peer (a peer, IPv6)', [TRAFFIC, 'tcp-client', r.router.ip6, '7000', String(64 << 10)]],
      ['ping the database', ['ping', '-c', '3', '-i', '0.2', r.resource4]],
      ['ping6 the routing peer', ['ping', '-6', '-c', '3', '-i', '0.2', r.router.ip6]],
    ];
    log(`sending traffic for ${duration} s (Ctrl-C stops early); events appear as the collector writes them`);
    const until = Date.now() + duration * 1000;
    let step = 0;
    while (!stopped && Date.now() < until) {
      const [, args] = steps[step++ % steps.length];
      const cmd = args[0] === 'ping' ? 'ping' : process.execPath;
      const cargs = args[0] === 'ping' ? args.slice(1) : args;
      await new Promise<void>((resolve) => {
        const p = spawn('ip', ['netns', 'exec', r.client.ns, cmd, ...cargs], { stdio: 'ignore' });
        p.on('exit', () => resolve());
        p.on('error', () => resolve());
      });
      for (let i = 0; i < 6 && !stopped; i++) {
        showNew();
        await sleep(250);
      }
    }
    log('stopping wgflow: active flows get a forced END, then the spool is flushed');
    daemon.kill('SIGTERM');
    await new Promise((res) => (daemon.exitCode !== null ? res(null) : daemon.once('exit', res)));
    await sleep(500);
    showNew();
    log(`events: ${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}; metrics were at http://127.0.0.1:9617/metrics inside ${r.router.ns}`);
    return shown > 0 ? 0 : 1;
  } catch (err) {
    process.stderr.write(`wgflow demo: ${(err as Error).message}\n`);
    return 1;
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => (p.exitCode !== null || p.signalCode !== null ? null : new Promise((res) => {
      const t = setTimeout(() => p.kill('SIGKILL'), 3000);
      p.once('exit', () => { clearTimeout(t); res(null); });
    }))));
    await tb.destroy();
    rmSync(pinDir, { recursive: true, force: true });
    if (values.keep) log(`files kept in ${work} (collector/events.jsonl, daemon.log, wgflow.yaml)`);
    else rmSync(work, { recursive: true, force: true });
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    log('cleaned up');
  }
}
