// Deterministic synthetic FlowEvents for tests and benchmarks: event i of a run is always the same
// event, so a test can regenerate what a (killed and restarted) sender process sent and compare.
// They cover every shape: IPv4 and IPv6, TCP/UDP ports and ICMP/ICMPv6 type+code, every event
// type, resource endpoints, rule ids, users and every wgflow extension.
import { crc32 } from 'node:zlib';
import { uuidText } from '../src/flow/ids';
import type { EndpointType, FlowEndReason, FlowEvent, FlowEventType } from '../src/model/event';

let lastSeed = '', lastWord = 0;

/** 32 bits naming a run, from any text (the first group of its ids). */
function runWord(seed: string): number {
  // Generators ask for the same seed over and over (benchmarks make millions of events).
  if (seed !== lastSeed || lastSeed === '') {
    lastWord = crc32(Buffer.from(seed));
    lastSeed = seed;
  }
  return lastWord;
}

/** `${run}-${mid}-8000-${i as 12 hex digits}`, built flat like the flow engine's ids. */
function runUuid(seed: string, mid: number, i: number): string {
  const low = i % 2 ** 48;
  return uuidText(runWord(seed), mid, (0x80000000 | Math.floor(low / 2 ** 32)) >>> 0, low >>> 0);
}

export function syntheticEventId(seed: string, i: number): string {
  return runUuid(seed, 0x00004000, i);
}

const keys = new Map<number, string>();

/** A made-up WireGuard key per n (few distinct n, like the peers of a real network). */
function key(n: number): string {
  let k = keys.get(n);
  if (k === undefined) {
    const b = Buffer.alloc(32);
    for (let j = 0; j < 32; j++) b[j] = (n * 31 + j * 7) & 0xff;
    k = b.toString('base64');
    keys.set(n, k);
  }
  return k;
}

/** `${prefix}${k}${suffix}` for k < n, made once: a real network's names are a few shared strings. */
const names = (n: number, prefix: string, suffix = ''): string[] => Array.from({ length: n }, (_, k) => `${prefix}${k}${suffix}`);
const REPORTERS = names(7, 'peer-');
const SRC_IDS = names(13, 'peer-src-');
const HOSTS = names(13, 'host-');
const DNS_LABELS = names(13, 'host-', '.netbird.cloud');
const RESOURCE_IDS = names(17, 'res-');
const RESOURCE_NAMES = names(17, 'resource "', '" ü');
const RULES = names(9, 'rule-');
const POLICIES = names(9, 'policy ');
const USER_IDS = names(3, 'user-');
const USER_NAMES = names(3, 'User ');
const USER_EMAILS = names(3, 'user', '@example.com');

const TYPES: FlowEventType[] = ['START', 'UPDATE', 'END', 'DROP'];
const REASONS: FlowEndReason[] = ['idle', 'tcp_fin', 'tcp_rst', 'forced', 'lack_of_resources'];
const DROP_REASONS = ['NETFILTER_DROP', 'NO_SOCKET', 'IP_INNOROUTES', 'NOT_SPECIFIED', 'TCP_INVALID_SEQUENCE'];
const ENDPOINT_TYPES: EndpointType[] = ['PEER', 'HOST_RESOURCE', 'SUBNET_RESOURCE', 'DOMAIN_RESOURCE', 'UNKNOWN'];

/** Event i of the run named by seed. */
export function syntheticEvent(seed: string, i: number, baseTimeMs = 1_750_000_000_000): FlowEvent {
  const type = TYPES[i % 4];
  const v6 = i % 3 === 0;
  const proto = [6, 17, v6 ? 58 : 1, 6, 17][i % 5];
  const icmp = proto === 1 || proto === 58;
  const ts = baseTimeMs + i * 7;
  const dstType = ENDPOINT_TYPES[i % ENDPOINT_TYPES.length];
  const ev: FlowEvent = {
    eventId: syntheticEventId(seed, i),
    flowId: runUuid(seed, 0x00014000, i >> 2),
    type,
    timestampMs: ts,
    reporterId: REPORTERS[i % 7],
    reporterPublicKey: i % 11 === 0 ? '' : key(i % 97),
    direction: i % 2 === 0 ? 'INGRESS' : 'EGRESS',
    protocol: proto,
    source: {
      ip: v6 ? `fd00:4e42::${((i % 0xfffe) + 1).toString(16)}` : `100.64.${(i >> 8) & 255}.${i & 255}`,
      port: icmp ? 0 : 1024 + (i % 60000),
      id: SRC_IDS[i % 13],
      name: HOSTS[i % 13],
      type: 'PEER',
      dnsLabel: DNS_LABELS[i % 13],
      os: i % 2 ? 'linux' : 'windows',
      publicKey: key(i % 13),
    },
    destination: {
      ip: v6 ? `2001:db8:${((i % 0xfffe) + 1).toString(16)}::1` : `10.${i % 200}.0.${1 + (i % 250)}`,
      port: icmp ? 0 : [443, 53, 22, 8080][i % 4],
      id: dstType === 'UNKNOWN' ? '' : RESOURCE_IDS[i % 17],
      name: dstType === 'UNKNOWN' ? '' : RESOURCE_NAMES[i % 17],
      type: dstType,
      dnsLabel: '',
      os: '',
      publicKey: dstType === 'PEER' ? key(1000 + (i % 5)) : '',
    },
    icmpType: icmp ? [8, 0, 3, 11][i % 4] : 0,
    icmpCode: icmp ? i % 4 : 0,
    rxPackets: type === 'START' ? 0 : i * 3,
    txPackets: type === 'START' ? 0 : i * 5 + 1,
    rxBytes: type === 'START' ? 0 : i * 1500 + 2 ** 33,
    txBytes: type === 'START' ? 0 : i * 900,
    ruleId: i % 5 === 0 ? '' : RULES[i % 9],
    policyName: i % 5 === 0 ? '' : POLICIES[i % 9],
    user: { id: USER_IDS[i % 3], name: USER_NAMES[i % 3], email: USER_EMAILS[i % 3] },
    interfaceName: i % 2 ? 'wt0' : 'wg0',
    countersEnabled: i % 10 !== 0,
    tcpFlagsInitiator: proto === 6 ? 0x1b : 0,
    tcpFlagsResponder: proto === 6 ? 0x12 : 0,
  };
  if (type === 'END') ev.endReason = REASONS[(i >> 2) % REASONS.length];
  // DROP events carry the kernel's reason (most of them; a NetBird-style DROP has none).
  if (type === 'DROP' && i % 7 !== 3) ev.dropReason = DROP_REASONS[(i >> 2) % DROP_REASONS.length];
  if (type === 'UPDATE' || type === 'END') {
    ev.windowStartMs = ts - 60_000;
    ev.windowEndMs = ts;
  }
  return ev;
}
