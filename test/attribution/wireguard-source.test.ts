// The WireGuard interface as an attribution source, against real WireGuard: wireguard-go over its
// UAPI socket on hosts without the kernel module, kernel WireGuard over generic netlink in the VM
// (make vm-test-kernel). Reads run the compiled reader (dist/) in a node inside the testbed's
// namespace, as the daemon runs in its own; `wg show <if> dump` is the reference. Misbehaving
// UAPI servers are local sockets in a temporary directory.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readWireGuard } from '../../src/attribution/sources/wireguard';
import type { WgPeer, WgSnapshot } from '../../src/attribution/sources/source';
import { parsePrefix, prefixToString } from '../../src/net/ip';
import { budget } from '../../testkit/slow';
import { REPO_ROOT } from '../../src/util/addon';
import { nsExec, Testbed, WgEndpoint } from '../../testkit/testbed';

const COMPILED = join(REPO_ROOT, 'dist', 'attribution', 'sources', 'wireguard.js');
const canon = (p: string): string => prefixToString(parsePrefix(p));
const randomKey = (): string => randomBytes(32).toString('base64');

/**
 * readWireGuard in a node inside ns (the compiled module: the daemon's code, in its namespace),
 * started through `wrap` (a command that runs the rest) if given.
 */
function readIn(ns: string, ifnames: string[], wrap: string[] = []): WgSnapshot {
  const script = `require(${JSON.stringify(COMPILED)}).readWireGuard(${JSON.stringify(ifnames)})` +
    '.then((r) => process.stdout.write(JSON.stringify(r)), (e) => { console.error(e); process.exit(1); })';
  const cmd = [...wrap, process.execPath, '-e', script];
  return JSON.parse(nsExec(ns, cmd[0], cmd.slice(1))) as WgSnapshot;
}

interface DumpPeer {
  publicKey: string;
  endpoint: string;
  allowedIps: string[];
  lastHandshakeS: number;
}

/** `wg show <if> dump`: the first line is the interface, then one tab-separated line per peer. */
function wgDump(end: WgEndpoint): DumpPeer[] {
  const lines = nsExec(end.ns, 'wg', ['show', end.ifname, 'dump']).trim().split('\n').slice(1);
  return lines.filter((l) => l !== '').map((l) => {
    const [publicKey, , endpoint, allowed, handshake] = l.split('\t');
    return {
      publicKey,
      endpoint: endpoint === '(none)' ? '' : endpoint,
      allowedIps: allowed === '(none)' ? [] : allowed.split(',').map(canon).sort(),
      lastHandshakeS: Number(handshake),
    };
  });
}

const asDump = (peers: readonly WgPeer[]): DumpPeer[] =>
  peers.map((p) => ({ publicKey: p.publicKey, endpoint: p.endpoint, allowedIps: [...p.allowedIps].sort(), lastHandshakeS: p.lastHandshakeS }));
const byKey = (a: { publicKey: string }, b: { publicKey: string }): number => a.publicKey.localeCompare(b.publicKey);

describe('WireGuard source on the testbed', () => {
  const tb = new Testbed();
  let a: WgEndpoint, b: WgEndpoint;

  beforeAll(() => {
    if (!existsSync(COMPILED)) throw new Error(`${COMPILED} is missing: build the TypeScript first (make ts)`);
    ({ a, b } = tb.wgPair());
    nsExec(a.ns, 'ping', ['-c', '1', '-W', '5', b.ip4]); // a handshake, so there is a time to compare
  });
  afterAll(() => tb.destroy());

  it('finds the peers with their keys, allowed IPs, endpoints and handshake times, as wg show says', () => {
    // Two more peers: a routing peer with a subnet and an IPv6 endpoint, and one never seen.
    const router = randomKey(), silent = randomKey();
    nsExec(a.ns, 'wg', ['set', a.ifname, 'peer', router, 'allowed-ips', '192.168.77.0/24,10.77.0.9/32', 'endpoint', '[2001:db8::7]:51999']);
    nsExec(a.ns, 'wg', ['set', a.ifname, 'peer', silent]);
    const snap = readIn(a.ns, [a.ifname]);
    expect(snap.errors).toEqual([]);
    expect(snap.interfaces).toEqual([{ ifname: a.ifname, via: tb.impl === 'go' ? 'uapi' : 'netlink', peers: 3, ownPrefixes: snap.ownPrefixes }]);
    expect(asDump(snap.peers).sort(byKey)).toEqual(wgDump(a).sort(byKey));
    const peerB = snap.peers.find((p) => p.publicKey === b.publicKey)!;
    expect(peerB).toMatchObject({ ifname: a.ifname, endpoint: `172.30.${a.ip4.split('.')[1]}.2:51821` });
    expect(peerB.lastHandshakeS).toBeGreaterThan(Date.now() / 1000 - 600);
    expect(snap.peers.find((p) => p.publicKey === router)).toMatchObject({ endpoint: '[2001:db8::7]:51999', allowedIps: ['192.168.77.0/24', '10.77.0.9/32'] });
    expect(snap.peers.find((p) => p.publicKey === silent)).toMatchObject({ endpoint: '', allowedIps: [], lastHandshakeS: 0 });
    // The testbed's addresses are 10.n.0.1/24 and fd00:n::1/64, with no link-local address.
    const net = a.ip4.split('.')[1];
    expect([...snap.ownPrefixes].sort()).toEqual([`10.${net}.0.0/24`, `fd00:${net}::/64`]);
    nsExec(a.ns, 'wg', ['set', a.ifname, 'peer', router, 'remove', 'peer', silent, 'remove']);
  });

  it('IPv6 link-local addresses are not own prefixes', () => {
    nsExec(b.ns, 'ip', ['-6', 'addr', 'add', 'fe80::77/64', 'dev', b.ifname, 'nodad']);
    try {
      const snap = readIn(b.ns, [b.ifname]);
      expect(snap.errors).toEqual([]);
      expect(snap.ownPrefixes.some((p) => p.startsWith('fe80'))).toBe(false);
      expect(snap.ownPrefixes.length).toBe(2);
    } finally {
      nsExec(b.ns, 'ip', ['-6', 'addr', 'del', 'fe80::77/64', 'dev', b.ifname]);
    }
  });

  it('sees a peer added, its allowed IPs changed, and removed, on the next read', () => {
    const k = randomKey();
    const keys = (s: WgSnapshot): string[] => s.peers.map((p) => p.publicKey);
    expect(keys(readIn(a.ns, [a.ifname]))).not.toContain(k);
    nsExec(a.ns, 'wg', ['set', a.ifname, 'peer', k, 'allowed-ips', '10.88.0.5/32', 'endpoint', '203.0.113.5:4500']);
    expect(readIn(a.ns, [a.ifname]).peers.find((p) => p.publicKey === k)).toMatchObject({ allowedIps: ['10.88.0.5/32'], endpoint: '203.0.113.5:4500' });
    nsExec(a.ns, 'wg', ['set', a.ifname, 'peer', k, 'allowed-ips', '10.88.0.6/32,10.89.0.0/16,fd88::/48']);
    expect([...(readIn(a.ns, [a.ifname]).peers.find((p) => p.publicKey === k)?.allowedIps ?? [])].sort()).toEqual(['10.88.0.6/32', '10.89.0.0/16', 'fd88::/48']);
    nsExec(a.ns, 'wg', ['set', a.ifname, 'peer', k, 'remove']);
    const after = readIn(a.ns, [a.ifname]);
    expect(keys(after)).not.toContain(k);
    expect(keys(after)).toEqual([b.publicKey]);
  });

  it('reads a large device whole: 300 peers, one with 1,500 allowed IPs (several netlink messages / reads)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgflow-wgconf-'));
    const big = randomKey();
    const bigIps = Array.from({ length: 1500 }, (_, i) => `fd99:${(i >> 8).toString(16)}:${(i & 255).toString(16)}::/64`);
    let conf = `[Peer]\nPublicKey = ${big}\nAllowedIPs = ${bigIps.join(', ')}\n`;
    const keys = [big];
    for (let i = 0; i < 299; i++) {
      const k = randomKey();
      keys.push(k);
      conf += `\n[Peer]\nPublicKey = ${k}\nAllowedIPs = 10.99.${i >> 7}.${(i & 127) + 1}/32\nEndpoint = 198.51.100.${(i % 250) + 1}:${10000 + i}\n`;
    }
    writeFileSync(join(dir, 'peers.conf'), conf);
    try {
      nsExec(a.ns, 'wg', ['addconf', a.ifname, join(dir, 'peers.conf')]);
      const snap = readIn(a.ns, [a.ifname]);
      expect(snap.errors).toEqual([]);
      expect(snap.peers.length).toBe(301);
      expect(asDump(snap.peers).sort(byKey)).toEqual(wgDump(a).sort(byKey));
      expect(snap.peers.find((p) => p.publicKey === big)?.allowedIps.length).toBe(1500);
    } finally {
      const args = ['set', a.ifname];
      for (const k of keys) args.push('peer', k, 'remove');
      nsExec(a.ns, 'wg', args);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a missing interface and a non-WireGuard one are errors; the good one is still read', () => {
    const snap = readIn(a.ns, [a.underlay, 'wgfnosuch0', a.ifname, '../../etc']);
    expect(snap.peers.map((p) => p.publicKey)).toEqual([b.publicKey]);
    const msg = Object.fromEntries(snap.errors.map((e) => [e.ifname, e.message]));
    expect(Object.keys(msg).sort()).toEqual(['../../etc', a.underlay, 'wgfnosuch0'].sort());
    expect(msg[a.underlay]).toMatch(new RegExp(`^${a.underlay}: not a WireGuard interface`));
    expect(msg.wgfnosuch0).toMatch(/^wgfnosuch0: no such interface in this network namespace/);
    expect(msg['../../etc']).toMatch(/is not a valid interface name/);
  });

  it('without CAP_NET_ADMIN: kernel WireGuard refuses with EPERM; a UAPI socket needs only its file permissions', () => {
    const snap = readIn(a.ns, [a.ifname], ['setpriv', '--bounding-set=-net_admin', '--']);
    if (tb.impl === 'kernel') {
      expect(snap.peers).toEqual([]);
      expect(snap.errors.map((e) => e.message)).toEqual([expect.stringMatching(new RegExp(`^${a.ifname}: reading a WireGuard device needs CAP_NET_ADMIN \\(EPERM`))]);
    } else {
      expect(snap.errors).toEqual([]);
      expect(snap.peers.map((p) => p.publicKey)).toEqual([b.publicKey]);
    }
  });

  it('reads the network namespace it runs in: another namespace has no such interface', async () => {
    // The test process is not in a's namespace. wireguard-go's socket is visible from here (one
    // /var/run for all namespaces), but the interface is not: the read says so.
    const snap = await readWireGuard([a.ifname]);
    expect(snap.peers).toEqual([]);
    expect(snap.errors).toHaveLength(1);
    expect(snap.errors[0].message).toMatch(new RegExp(`^${a.ifname}: .*no such interface in this network namespace`));
  });
});

describe('misbehaving UAPI sockets', () => {
  let dir: string;
  const servers: Server[] = [];
  const clients: Socket[] = [];
  const PRIVATE_HEX = 'ab'.repeat(32);
  const keyHex = (n: number): string => Buffer.alloc(32, n).toString('hex');
  const GOOD = `private_key=${PRIVATE_HEX}\nlisten_port=51820\n` +
    `public_key=${keyHex(1)}\npreshared_key=${'0'.repeat(64)}\nprotocol_version=1\nendpoint=[2001:0db8:0:0::7]:51820\n` +
    'last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=1\nrx_bytes=2\npersistent_keepalive_interval=0\n' +
    'allowed_ip=10.0.0.2/32\nallowed_ip=192.168.1.7/24\nallowed_ip=FD00::2/128\nsome_future_key=whatever\n' +
    `public_key=${keyHex(2)}\nendpoint=198.51.100.1:1\nlast_handshake_time_sec=0\nerrno=0\n\n`;

  /** A UAPI server for <dir>/<ifname>.sock that does what onConn does with each connection. */
  function serve(ifname: string, onConn: (c: Socket) => void): Promise<void> {
    const srv = createServer((c) => {
      clients.push(c);
      c.on('error', () => undefined);
      onConn(c);
    });
    servers.push(srv);
    return new Promise((resolve) => srv.listen(join(dir, `${ifname}.sock`), () => resolve()));
  }
  /** Reply with `reply` to the first request, in pieces of `piece` bytes `gapMs` apart. */
  const replyWith = (reply: string, piece = reply.length, gapMs = 0) => (c: Socket): void => {
    c.once('data', async () => {
      for (let i = 0; i < reply.length; i += piece) {
        if (c.destroyed) return;
        c.write(reply.slice(i, i + piece));
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
    });
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'wgflow-uapi-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.destroy();
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    ['in 7-byte pieces', 7],
    ['split between the two newlines that end it', GOOD.length - 1],
  ])('a reply %s is read whole; device keys (the private key) are dropped, unknown keys skipped', async (_, piece) => {
    await serve('lo', replyWith(GOOD, piece, 5)); // lo exists in every namespace: its addresses are readable
    const snap = await readWireGuard(['lo'], { socketDir: dir });
    expect(snap.errors).toEqual([]);
    expect(snap.peers).toEqual([
      { ifname: 'lo', publicKey: Buffer.alloc(32, 1).toString('base64'), allowedIps: ['10.0.0.2/32', '192.168.1.0/24', 'fd00::2/128'], endpoint: '[2001:db8::7]:51820', lastHandshakeS: 1700000000 },
      { ifname: 'lo', publicKey: Buffer.alloc(32, 2).toString('base64'), allowedIps: [], endpoint: '198.51.100.1:1', lastHandshakeS: 0 },
    ]);
    expect(snap.ownPrefixes).toEqual([]); // lo's addresses are host-scope
    const text = JSON.stringify(snap);
    expect(text).not.toContain(PRIVATE_HEX);
    expect(text).not.toContain(Buffer.from(PRIVATE_HEX, 'hex').toString('base64'));
  });

  it('garbage, half a reply, an early close, silence, errno != 0, a stale socket: each an error naming the interface, the rest still read', async () => {
    await serve('lo', replyWith(GOOD));
    await serve('hgarbage', replyWith('HTTP/1.1 400 Bad Request\r\n\r\n\n\n'));
    await serve('hbadkey', replyWith('public_key=xyz\nerrno=0\n\n'));
    await serve('hhalf', (c) => c.once('data', () => c.end(GOOD.slice(0, 200))));
    await serve('hclose', (c) => c.destroy());
    await serve('hsilent', () => undefined);
    await serve('herrno', replyWith('errno=-22\n\n'));
    await serve('hnoerrno', replyWith(`public_key=${keyHex(3)}\n\n`));
    await serve('hghost', replyWith(GOOD)); // answers, but no such interface here
    // A socket file nobody listens on (its process exited without removing it).
    const stale = join(dir, 'hstale.sock');
    const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.exit(0))`]);
    expect(r.status).toBe(0);
    expect(existsSync(stale)).toBe(true);

    const names = ['hgarbage', 'hbadkey', 'hhalf', 'hclose', 'hsilent', 'herrno', 'hnoerrno', 'hghost', 'hstale', 'lo'];
    // 700 ms on the host; scaled under emulation, where the in-process servers themselves answer
    // late (a 700 ms timeout there took the half reply for silence).
    const timeoutMs = budget(700);
    const t0 = Date.now();
    const snap = await readWireGuard(names, { socketDir: dir, timeoutMs });
    expect(Date.now() - t0).toBeLessThan(timeoutMs + budget(4300)); // concurrent, each bounded by the timeout
    expect(snap.peers.map((p) => p.ifname)).toEqual(['lo', 'lo']);
    const msg = Object.fromEntries(snap.errors.map((e) => [e.ifname, e.message]));
    expect(Object.keys(msg).sort()).toEqual(names.filter((n) => n !== 'lo').sort());
    for (const [ifname, m] of Object.entries(msg)) expect(m.startsWith(`${ifname}: `)).toBe(true);
    expect(msg.hgarbage).toMatch(/line 1 of the reply is not key=value/);
    expect(msg.hbadkey).toMatch(/public_key="xyz" is not a 32-byte hex key/);
    expect(msg.hhalf).toMatch(/closed in the middle of the reply/);
    expect(msg.hclose).toMatch(/closed without a reply/);
    expect(msg.hsilent).toContain(`no complete reply within ${timeoutMs} ms`);
    expect(msg.herrno).toMatch(/get failed with errno=-22/);
    expect(msg.hnoerrno).toMatch(/the reply has no errno line/);
    expect(msg.hghost).toMatch(/its UAPI socket .* answers, but there is no such interface in this network namespace/);
    expect(msg.hstale).toMatch(/refused the connection/);
  });
});
