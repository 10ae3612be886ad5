// Network-namespace testbeds joined by WireGuard, for the demo, the tests and the benchmarks.
//
//   pair:    [A] wgA ==(wg over veth underlay)== wgB [B]
//   routed:  [client] wgC ==wg== wgR [router] vethR --- vethS [resource subnet]
//
// WireGuard is kernel wg when the module exists (or WGFLOW_WG=kernel), else wireguard-go
// (WGFLOW_WG=go forces it). wireguard-go's control socket lives in /var/run/wireguard/<if>.sock,
// shared by every namespace, so every interface name here is unique to this process.
// Everything created is recorded and removed by destroy(): namespaces by name, processes by PID.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type WgImpl = 'kernel' | 'go';

export interface WgEndpoint {
  ns: string;
  ifname: string;
  /** Overlay addresses of this end (no prefix length). */
  ip4: string;
  ip6: string;
  publicKey: string;
  /** The underlay interface in ns that carries this end's WireGuard messages (UDP), and its port. */
  underlay: string;
  port: number;
}

function sh(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(e.stderr ?? '').trim() || e.message}`);
  }
}

/** Run a command inside a namespace and return its stdout. */
export function nsExec(ns: string, cmd: string, args: string[], input?: string): string {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args], input);
}

let seq = 0;
/** A short unique tag for names (interface names are limited to 15 characters). */
function tag(): string {
  seq += 1;
  return `${(process.pid % 100000).toString(36)}${seq.toString(36)}`;
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

let kernelWg: boolean | undefined;
/** Which WireGuard implementation to use: WGFLOW_WG=kernel|go, or kernel when its module loads. */
export function wgImpl(): WgImpl {
  const forced = process.env.WGFLOW_WG;
  if (forced === 'kernel' || forced === 'go') return forced;
  if (kernelWg === undefined) {
    const probe = `wgfprobe${tag()}`;
    try {
      sh('ip', ['link', 'add', probe, 'type', 'wireguard']);
      sh('ip', ['link', 'del', probe]);
      kernelWg = true;
    } catch {
      kernelWg = false;
    }
  }
  return kernelWg ? 'kernel' : 'go';
}

export class Testbed {
  readonly namespaces: string[] = [];
  readonly processes: ChildProcess[] = [];
  private readonly sockets: string[] = [];
  readonly impl: WgImpl = wgImpl();
  readonly id = tag();

  /** A new network namespace with loopback up; removed by destroy(). */
  addNamespace(role: string): string {
    const ns = `wgf-${role}-${this.id}`;
    sh('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    nsExec(ns, 'ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A veth pair between two namespaces, with addresses "a.b.c.d/len" on each end. */
  addVeth(nsA: string, addrA: string, nsB: string, addrB: string, addr6A?: string, addr6B?: string): { ifA: string; ifB: string } {
    const ifA = `vfa${this.id}${this.namespaces.length}`.slice(0, 15);
    const ifB = `vfb${this.id}${this.namespaces.length}`.slice(0, 15);
    sh('ip', ['link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
    for (const [ns, ifn, a4, a6] of [[nsA, ifA, addrA, addr6A], [nsB, ifB, addrB, addr6B]] as const) {
      nsExec(ns, 'ip', ['addr', 'add', a4, 'dev', ifn]);
      if (a6) nsExec(ns, 'ip', ['-6', 'addr', 'add', a6, 'dev', ifn, 'nodad']);
      nsExec(ns, 'ip', ['link', 'set', ifn, 'up']);
    }
    return { ifA, ifB };
  }

  /** Create a WireGuard interface in ns (kernel or wireguard-go), not yet configured. */
  addWgInterface(ns: string, ifname: string): void {
    if (this.impl === 'kernel') {
      nsExec(ns, 'ip', ['link', 'add', ifname, 'type', 'wireguard']);
      return;
    }
    const sock = `/var/run/wireguard/${ifname}.sock`;
    if (existsSync(sock)) throw new Error(`${sock} exists: another wireguard-go uses the name ${ifname}`);
    // -f: stay in the foreground so that this PID is wireguard-go itself and can be killed.
    const child = spawn('ip', ['netns', 'exec', ns, 'wireguard-go', '-f', ifname], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: 'error' },
    });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    this.processes.push(child);
    this.sockets.push(sock);
    for (let i = 0; i < 100; i++) {
      if (existsSync(sock)) return;
      if (child.exitCode !== null) break;
      sleepMs(50);
    }
    throw new Error(`wireguard-go did not create ${ifname} in ${ns}: ${stderr.trim() || 'timed out'}`);
  }

  /** How each WireGuard end was set up, so recreateWg() can build it again. */
  private readonly wgSetup = new Map<string, { priv: string; port: number; peerKey: string; allowed: string; endpoint: string }>();

  /** Configure ifname in ns as a WireGuard end (key, port, addresses, one peer) and bring it up. */
  private configureWg(end: WgEndpoint): void {
    const s = this.wgSetup.get(end.ifname);
    if (!s) throw new Error(`no setup recorded for ${end.ifname}`);
    // A quiet interface: no router solicitations or link-local address (and its MLD/DAD) on a
    // point-to-point tunnel, so tests see only the traffic they make.
    nsExec(end.ns, 'sysctl', ['-qw', `net.ipv6.conf.${end.ifname}.router_solicitations=0`, `net.ipv6.conf.${end.ifname}.addr_gen_mode=1`]);
    // wg reads the key from a file: a Node stdin is a socket, which /dev/stdin cannot open.
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-key-'));
    writeFileSync(join(dir, 'key'), s.priv, { mode: 0o600 });
    try {
      nsExec(end.ns, 'wg', ['set', end.ifname, 'listen-port', String(s.port), 'private-key', join(dir, 'key')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    if (s.peerKey) nsExec(end.ns, 'wg', ['set', end.ifname, 'peer', s.peerKey, 'allowed-ips', s.allowed, 'endpoint', s.endpoint]);
    nsExec(end.ns, 'ip', ['addr', 'add', `${end.ip4}/24`, 'dev', end.ifname]);
    nsExec(end.ns, 'ip', ['-6', 'addr', 'add', `${end.ip6}/64`, 'dev', end.ifname, 'nodad']);
    nsExec(end.ns, 'ip', ['link', 'set', end.ifname, 'up']);
  }

  /**
   * Two WireGuard peers in two namespaces. Overlay 10.<n>.0.1-2/24 and fd00:<n>::1-2/64; the
   * underlay is a veth pair. extraAllowed: more prefixes routed to B (e.g. a resource subnet).
   */
  wgPair(opts: { nsA?: string; nsB?: string; net?: number; extraAllowedViaB?: string[] } = {}): { a: WgEndpoint; b: WgEndpoint } {
    const net = opts.net ?? 200 + (seq % 50);
    const nsA = opts.nsA ?? this.addNamespace('a');
    const nsB = opts.nsB ?? this.addNamespace('b');
    const { ifA, ifB } = this.addVeth(nsA, `172.30.${net}.1/30`, nsB, `172.30.${net}.2/30`);
    const ends: WgEndpoint[] = [];
    const privs: string[] = [];
    for (const [i, ns] of [nsA, nsB].entries()) {
      const ifname = `wgf${i === 0 ? 'a' : 'b'}${this.id}`.slice(0, 15);
      this.addWgInterface(ns, ifname);
      const priv = sh('wg', ['genkey']).trim();
      privs.push(priv);
      ends.push({ ns, ifname, ip4: `10.${net}.0.${i + 1}`, ip6: `fd00:${net}::${i + 1}`, publicKey: sh('wg', ['pubkey'], priv).trim(),
        underlay: i === 0 ? ifA : ifB, port: 51820 + i });
    }
    const [a, b] = ends;
    this.wgSetup.set(a.ifname, { priv: privs[0], port: 51820, peerKey: b.publicKey, endpoint: `172.30.${net}.2:51821`,
      allowed: [`${b.ip4}/32`, `${b.ip6}/128`, ...(opts.extraAllowedViaB ?? [])].join(',') });
    this.wgSetup.set(b.ifname, { priv: privs[1], port: 51821, peerKey: a.publicKey, endpoint: `172.30.${net}.1:51820`, allowed: `${a.ip4}/32,${a.ip6}/128` });
    this.configureWg(a);
    this.configureWg(b);
    return { a, b };
  }

  /**
   * Make a capture on end's interface see what leaves it segment by segment, as on wireguard-go.
   * Kernel WireGuard takes TCP GSO super-packets itself (it segments them before encrypting), so
   * tcpdump, which taps after the stack's own segmentation, sees them whole. With the device's TSO
   * off the stack segments before the tap; the TCP socket still builds GSO packets (generic GSO
   * stays on), so TC egress still sees super-packets. No-op on wireguard-go.
   */
  segmentedEgress(end: WgEndpoint): void {
    if (this.impl !== 'kernel') return;
    nsExec(end.ns, 'ethtool', ['-K', end.ifname, 'tx-tcp-segmentation', 'off', 'tx-tcp6-segmentation', 'off']);
  }

  /** The interface's MTU (kernel WireGuard pads each message to a multiple of 16, at most this). */
  static mtu(ns: string, ifname: string): number {
    return (JSON.parse(nsExec(ns, 'ip', ['-j', 'link', 'show', 'dev', ifname])) as Array<{ mtu: number }>)[0].mtu;
  }

  /** Delete end's WireGuard interface and create it again (same name, key and peer): a new ifindex. */
  async recreateWg(end: WgEndpoint): Promise<void> {
    nsExec(end.ns, 'ip', ['link', 'del', end.ifname]);
    if (this.impl === 'go') {
      // wireguard-go exits when its device is deleted; wait for it and its socket to go away.
      const sock = `/var/run/wireguard/${end.ifname}.sock`;
      for (let i = 0; i < 100 && existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      rmSync(sock, { force: true });
    }
    this.addWgInterface(end.ns, end.ifname);
    this.configureWg(end);
  }

  /**
   * client --wg-- router --veth-- resource subnet 192.168.<net>.0/24 (router .1, host .10) and
   * fd00:<net>:1::/64. The router forwards; the client routes the resource subnet over WireGuard.
   */
  routed(opts: { net?: number } = {}): { client: WgEndpoint; router: WgEndpoint; resourceNs: string; resource4: string; resource6: string; subnet4: string; subnet6: string } {
    const net = opts.net ?? 150 + (seq % 50);
    const subnet4 = `192.168.${net}.0/24`;
    const subnet6 = `fd00:${net}:1::/64`;
    const { a: client, b: router } = this.wgPair({ net, extraAllowedViaB: [subnet4, subnet6] });
    const resourceNs = this.addNamespace('res');
    this.addVeth(router.ns, `192.168.${net}.1/24`, resourceNs, `192.168.${net}.10/24`, `fd00:${net}:1::1/64`, `fd00:${net}:1::10/64`);
    nsExec(router.ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    nsExec(client.ns, 'ip', ['route', 'add', subnet4, 'dev', client.ifname]);
    nsExec(client.ns, 'ip', ['-6', 'route', 'add', subnet6, 'dev', client.ifname]);
    nsExec(resourceNs, 'ip', ['route', 'add', 'default', 'via', `192.168.${net}.1`]);
    nsExec(resourceNs, 'ip', ['-6', 'route', 'add', 'default', 'via', `fd00:${net}:1::1`]);
    return { client, router, resourceNs, resource4: `192.168.${net}.10`, resource6: `fd00:${net}:1::10`, subnet4, subnet6 };
  }

  /** Interface counters (rx/tx packets and bytes) of ifname in ns. */
  static counters(ns: string, ifname: string): { rxPackets: number; rxBytes: number; txPackets: number; txBytes: number; rxDropped: number; txDropped: number } {
    const j = JSON.parse(nsExec(ns, 'ip', ['-s', '-j', 'link', 'show', 'dev', ifname])) as Array<{
      stats64: { rx: { bytes: number; packets: number; dropped: number }; tx: { bytes: number; packets: number; dropped: number } };
    }>;
    const s = j[0].stats64;
    return { rxPackets: s.rx.packets, rxBytes: s.rx.bytes, txPackets: s.tx.packets, txBytes: s.tx.bytes, rxDropped: s.rx.dropped, txDropped: s.tx.dropped };
  }

  /** Stop what we started (by PID; SIGKILL after 3 s) and delete our namespaces. Safe to call twice. */
  async destroy(): Promise<void> {
    const procs = this.processes.splice(0);
    for (const p of procs) {
      if (p.exitCode === null && p.signalCode === null && p.pid) {
        try {
          process.kill(p.pid, 'SIGTERM');
        } catch {
          /* already gone */
        }
      }
    }
    const deadline = Date.now() + 3000;
    for (const p of procs) {
      while (p.exitCode === null && p.signalCode === null && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      if (p.exitCode === null && p.signalCode === null && p.pid) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    for (const ns of this.namespaces.splice(0).reverse()) {
      try {
        sh('ip', ['netns', 'del', ns]);
      } catch {
        /* already gone */
      }
    }
    for (const s of this.sockets.splice(0)) rmSync(s, { force: true });
  }
}
