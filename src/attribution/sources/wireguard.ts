// The WireGuard interface as an attribution source: its peers (public key, allowed IPs, endpoint,
// latest handshake) and its own addresses, read now, with no configuration.
//
// Userspace implementations (wireguard-go, boringtun, NetBird's userspace mode) answer on a UNIX
// socket, /var/run/wireguard/<if>.sock, in the cross-platform UAPI text protocol; kernel WireGuard
// answers over generic netlink (native/src/wg_netlink.cc, as Node has no AF_NETLINK). Either way
// the read happens in the calling thread's network namespace: the daemon's own. Addresses come
// from rtnetlink (RTM_GETADDR) through the same addon: /proc has no IPv4 prefix lengths, and
// shelling out to `ip` is not an option for shipped code.
//
// Not hot path. One interface failing never hides the others: it goes to `errors`.
import { lstatSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import type { AttributionConfig, PeerConfig } from '../config';
import type { WgInterface, WgPeer, WgSnapshot } from './source';
import { ipv4FromBytes, ipv6FromBytes, parseIpRaw, parsePrefix, prefixToString, rawToIp } from '../../net/ip';
import { loadNative, NativeIfAddress, NativeModule } from '../../util/addon';

export const DEFAULT_UAPI_DIR = '/var/run/wireguard';
export const DEFAULT_UAPI_TIMEOUT_MS = 2000;
/** A get reply larger than this is not a WireGuard device (~300 bytes a peer: 100,000 peers fit). */
const MAX_UAPI_REPLY = 64 << 20;

export interface ReadWireGuardOptions {
  /** Where userspace implementations put their UAPI sockets (default /var/run/wireguard). */
  socketDir?: string;
  /** Most time for one interface's UAPI exchange, connect to end of reply (default 2000 ms). */
  timeoutMs?: number;
}

/** One interface's peers as a reader returns them, before its addresses are added. */
interface DeviceRead {
  via: 'uapi' | 'netlink';
  peers: WgPeer[];
}

class ReadError extends Error {}

// Linux interface names: 1-15 bytes, no '/', whitespace or ':' ... and never "." or "..": the name
// becomes part of a socket path, so it must not be able to leave the socket directory.
const IFNAME = /^[^/\s:]{1,15}$/;

/**
 * Read the peers and own addresses of each interface. Never throws for an interface: one that
 * cannot be read is reported in `errors` (message starting with its name) and the others returned.
 */
export async function readWireGuard(ifnames: readonly string[], opts: ReadWireGuardOptions = {}): Promise<WgSnapshot> {
  const socketDir = opts.socketDir ?? DEFAULT_UAPI_DIR;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_UAPI_TIMEOUT_MS;
  const names = [...new Set(ifnames)];
  type Outcome = { ifname: string; ok?: InterfaceRead; error?: string };
  const results = await Promise.all(names.map(async (ifname): Promise<Outcome> => {
    try {
      return { ifname, ok: await readInterface(ifname, socketDir, timeoutMs) };
    } catch (err) {
      const msg = (err as Error).message;
      return { ifname, error: msg.startsWith(`${ifname}:`) ? msg : `${ifname}: ${msg}` };
    }
  }));
  const peers: WgPeer[] = [];
  const own = new Set<string>();
  const errors: { ifname: string; message: string }[] = [];
  const interfaces: WgInterface[] = [];
  for (const r of results) {
    if (r.ok) {
      peers.push(...r.ok.peers);
      for (const p of r.ok.ownPrefixes) own.add(p);
      interfaces.push(r.ok.info);
    } else {
      errors.push({ ifname: r.ifname, message: r.error ?? `${r.ifname}: unknown error` });
    }
  }
  return { peers, ownPrefixes: [...own], errors, interfaces };
}

interface InterfaceRead {
  peers: WgPeer[];
  ownPrefixes: string[];
  info: WgInterface;
}

async function readInterface(ifname: string, socketDir: string, timeoutMs: number): Promise<InterfaceRead> {
  if (!IFNAME.test(ifname) || ifname === '.' || ifname === '..') throw new ReadError(`${JSON.stringify(ifname)} is not a valid interface name`);
  const sock = join(socketDir, `${ifname}.sock`);
  let dev: DeviceRead;
  if (isSocket(sock)) {
    try {
      dev = { via: 'uapi', peers: await uapiGet(ifname, sock, timeoutMs) };
    } catch (err) {
      // A socket file nobody listens on is left over by an implementation that exited; the
      // interface may be kernel WireGuard now (wg(8) does the same).
      if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw err;
      try {
        dev = netlinkGet(ifname);
      } catch {
        throw err;
      }
    }
  } else {
    dev = netlinkGet(ifname);
  }
  let addrs: NativeIfAddress[];
  try {
    addrs = native().netlinkAddresses(ifname).addresses;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENODEV' && dev.via === 'uapi') {
      throw new ReadError(`${ifname}: its UAPI socket ${sock} answers, but there is no such interface in this network namespace`);
    }
    throw err;
  }
  const ownPrefixes = ownPrefixesOf(addrs);
  return { peers: dev.peers, ownPrefixes, info: { ifname, via: dev.via, peers: dev.peers.length, ownPrefixes } };
}

function isSocket(path: string): boolean {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
}

let nativeModule: NativeModule | undefined;
function native(): NativeModule {
  nativeModule ??= loadNative();
  return nativeModule;
}

// ---------- kernel: generic netlink ----------

function netlinkGet(ifname: string): DeviceRead {
  const dev = native().wgGetDevice(ifname);
  return {
    via: 'netlink',
    peers: dev.peers.map((p) => ({
      ifname,
      publicKey: p.publicKey.toString('base64'),
      allowedIps: p.allowedIps.map((a) => prefixToString(parsePrefix(`${bytesToIp(a.family, a.addr)}/${a.cidr}`))),
      endpoint: p.endpoint ? hostPort(p.endpoint.family, bytesToIp(p.endpoint.family, p.endpoint.addr), p.endpoint.port) : '',
      lastHandshakeS: p.lastHandshakeSec,
    })),
  };
}

function bytesToIp(family: 4 | 6, b: Buffer): string {
  return family === 4 ? ipv4FromBytes(b) : ipv6FromBytes(b);
}

function hostPort(family: 4 | 6, ip: string, port: number): string {
  return family === 4 ? `${ip}:${port}` : `[${ip}]:${port}`;
}

/** The networks of an interface's addresses, without IPv6 link-local and host-scope ones. */
export function ownPrefixesOf(addrs: readonly NativeIfAddress[]): string[] {
  const out: string[] = [];
  for (const a of addrs) {
    if (a.scope >= 254) continue; // RT_SCOPE_HOST / NOWHERE: loopback-like, never a peer's way in
    if (a.family === 6 && a.local[0] === 0xfe && (a.local[1] & 0xc0) === 0x80) continue; // fe80::/10
    // IFA_ADDRESS is the prefix's address (the remote end's with `peer`), so its network is what
    // the interface reaches.
    const p = prefixToString(parsePrefix(`${bytesToIp(a.family, a.address)}/${a.prefixLen}`));
    if (!out.includes(p)) out.push(p);
  }
  return out;
}

// ---------- userspace: the UAPI socket ----------

/** One `get=1` exchange: connect, ask, read to the blank line that ends the reply, parse. */
function uapiGet(ifname: string, path: string, timeoutMs: number): Promise<WgPeer[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let lastWasNewline = false;
    let settled = false;
    const sock = createConnection({ path });
    const finish = (err: Error | null, peers?: WgPeer[]): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(peers!);
    };
    const fail = (what: string, code?: string): void => {
      const e = new ReadError(`${ifname}: UAPI socket ${path}: ${what}`) as ReadError & { code?: string };
      if (code) e.code = code;
      finish(e);
    };
    const timer = setTimeout(() => fail(`no complete reply within ${timeoutMs} ms`, 'ETIMEDOUT'), timeoutMs);
    sock.on('connect', () => sock.write('get=1\n\n'));
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      size += d.length;
      if (size > MAX_UAPI_REPLY) return fail(`reply larger than ${MAX_UAPI_REPLY} bytes`);
      // The reply ends with a blank line; it may come in any number of pieces. Each piece is
      // searched once (and its first byte against the previous one's last), then joined once.
      const blank = d.indexOf('\n\n') >= 0 || (lastWasNewline && d[0] === 0x0a);
      lastWasNewline = d[d.length - 1] === 0x0a;
      if (!blank) return;
      const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      const end = all.indexOf('\n\n');
      try {
        finish(null, parseUapiGet(ifname, all.toString('utf8', 0, end + 1)));
      } catch (err) {
        fail((err as Error).message);
      }
    });
    const closed = (): void => fail(size === 0 ? 'closed without a reply' : `closed in the middle of the reply (${size} bytes, no blank line at the end)`);
    sock.on('end', closed);
    sock.on('close', closed);
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return closed();
      const why = err.code === 'ECONNREFUSED' ? 'refused the connection (nobody listens: a leftover of an implementation that exited?)'
        : err.code === 'EACCES' ? 'permission denied (run as root)'
          : err.message;
      fail(why, err.code);
    });
  });
}

const HEX_KEY = /^[0-9a-f]{64}$/;

/**
 * The peers of a UAPI get reply (the lines before the blank line). Device keys (private_key among
 * them) are skipped; unknown keys too (newer implementations add some); a line that is not
 * key=value, a bad value of a key used here, a missing errno line or errno != 0 is an error.
 */
export function parseUapiGet(ifname: string, text: string): WgPeer[] {
  const peers: WgPeer[] = [];
  let cur: { publicKey: string; allowedIps: string[]; endpoint: string; lastHandshakeS: number } | null = null;
  let errno: number | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`line ${i + 1} of the reply is not key=value: ${JSON.stringify(line.slice(0, 80))}`);
    const key = line.slice(0, eq), value = line.slice(eq + 1);
    const bad = (what: string): Error => new Error(`line ${i + 1}: ${key}=${JSON.stringify(value.slice(0, 80))} is not ${what}`);
    if (key === 'errno') {
      if (!/^-?\d+$/.test(value)) throw bad('a number');
      errno = Number(value);
      continue;
    }
    if (key === 'public_key') {
      if (!HEX_KEY.test(value)) throw bad('a 32-byte hex key');
      if (cur) peers.push(finishPeer(ifname, cur));
      cur = { publicKey: Buffer.from(value, 'hex').toString('base64'), allowedIps: [], endpoint: '', lastHandshakeS: 0 };
      continue;
    }
    if (!cur) continue; // device keys: private_key, listen_port, fwmark
    switch (key) {
      case 'allowed_ip':
        try {
          cur.allowedIps.push(prefixToString(parsePrefix(value)));
        } catch {
          throw bad('a prefix');
        }
        break;
      case 'endpoint': {
        const ep = parseEndpoint(value);
        if (ep === null) throw bad('an address:port');
        cur.endpoint = ep;
        break;
      }
      case 'last_handshake_time_sec':
        if (!/^\d+$/.test(value)) throw bad('a number of seconds');
        cur.lastHandshakeS = Number(value);
        break;
      default:
        break;
    }
  }
  if (errno === undefined) throw new Error('the reply has no errno line');
  if (errno !== 0) throw new Error(`get failed with errno=${errno}`);
  if (cur) peers.push(finishPeer(ifname, cur));
  return peers;
}

function finishPeer(ifname: string, p: { publicKey: string; allowedIps: string[]; endpoint: string; lastHandshakeS: number }): WgPeer {
  return { ifname, publicKey: p.publicKey, allowedIps: p.allowedIps, endpoint: p.endpoint, lastHandshakeS: p.lastHandshakeS };
}

/** "a.b.c.d:port" or "[v6]:port" (a %zone is dropped) in canonical text; null when neither. */
function parseEndpoint(text: string): string | null {
  let host: string, port: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return null;
    host = text.slice(1, close);
    port = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return null;
    host = text.slice(0, colon);
    port = text.slice(colon + 1);
  }
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return null;
  const ip = parseIpRaw(host);
  if (ip === null || (ip.family === 4) !== !text.startsWith('[')) return null;
  return hostPort(ip.family, rawToIp(ip.raw), Number(port));
}

// ---------- to the attribution tables ----------

/**
 * The attribution tables a snapshot implies: one peer per public key (id = the key, sorted by it), its host
 * allowed IPs (/32, /128) as its addresses, its wider allowed IPs (a routing peer's subnets, /0
 * for an exit node) as `allowedIps`, and the interfaces' own networks as the overlay. A key seen
 * on two interfaces is one peer with both interfaces' allowed IPs.
 */
export function wgPeersToConfig(snap: WgSnapshot): AttributionConfig {
  const byKey = new Map<string, { ips: string[]; allowedIps: string[] }>();
  for (const p of snap.peers) {
    let e = byKey.get(p.publicKey);
    if (!e) {
      e = { ips: [], allowedIps: [] };
      byKey.set(p.publicKey, e);
    }
    for (const text of p.allowedIps) {
      const pfx = parsePrefix(text);
      if (pfx.length === (pfx.family === 4 ? 32 : 128)) {
        const ip = rawToIp(pfx.raw);
        if (!e.ips.includes(ip)) e.ips.push(ip);
      } else {
        const s = prefixToString(pfx);
        if (!e.allowedIps.includes(s)) e.allowedIps.push(s);
      }
    }
  }
  const peers: PeerConfig[] = [];
  // In key order: wireguard-go lists its peers in Go map order, different at each read, and the
  // daemon swaps tables only when their input changes.
  const keys = [...byKey.keys()].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  for (const key of keys) {
    const e = byKey.get(key)!;
    const peer: PeerConfig = { id: key, publicKey: key, ips: e.ips };
    if (e.allowedIps.length > 0) peer.allowedIps = e.allowedIps;
    peers.push(peer);
  }
  return { overlay: [...snap.ownPrefixes], peers };
}
