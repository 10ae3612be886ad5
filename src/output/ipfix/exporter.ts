// IPFIX export over UDP: every flow report (UPDATE, END) becomes two unidirectional data records,
// initiator -> responder and back, with the bytes and packets moved since the previous report.
import type { EventSink } from '../sink';
import { createSocket, Socket } from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { ipToBytes, uuidToBytes } from '../../wire/codec';
import { DeltaTracker } from '../../model/deltas';
import { type EndpointFields, eventBytes, FlowEvent, FlowEndReason } from '../../model/event';
import { ifindexOf } from '../../net/netdev';
import {
  encodeRecord, forwardingStatusOf, header, ieTypeDataSet, ieTypeOptionsTemplateSet, IpfixRecord, packRecords, templateOf, templateSet,
} from './encoder';

/** Resolves a collector's host name to one address. */
export type IpfixLookup = (host: string) => Promise<{ address: string; family: number }>;

export interface IpfixOptions {
  /** udp://HOST:PORT collectors. */
  targets: string[];
  /** Largest message, in octets (default 1400; a WireGuard path on IPv4 carries 1392). */
  mtu?: number;
  /** Templates are sent at start and then this often (default 60 s). */
  templateRefreshMs?: number;
  /** Observation domain id; default random per run, so a restart is a new session for collectors. */
  observationDomain?: number;
  logger?: Logger;
  /** Host name resolution (default: the system resolver, as getaddrinfo). */
  lookup?: IpfixLookup;
  /** First retry after a failed resolution; doubles up to resolveRetryMaxMs (default 1 s, 60 s). */
  resolveRetryMs?: number;
  resolveRetryMaxMs?: number;
  /** A resolved name is looked up again this often, to follow address changes (default 60 s). */
  resolveIntervalMs?: number;
  /** At most one warning per target and error kind in this interval (default 60 s). */
  errorLogIntervalMs?: number;
}

/**
 * Why a message did not reach a collector. refused: ICMP port unreachable (nobody listening);
 * unreachable: no route / host unreachable; unresolved: dropped because the host name does not
 * resolve (yet); other: any other socket error.
 */
export type IpfixErrorKind = 'refused' | 'unreachable' | 'unresolved' | 'other';
export const IPFIX_ERROR_KINDS: readonly IpfixErrorKind[] = ['refused', 'unreachable', 'unresolved', 'other'];

export interface IpfixStats {
  /** Messages handed to a socket (templates included). */
  messages: number;
  records: number;
  /** Sum of errors. */
  sendErrors: number;
  errors: Record<IpfixErrorKind, number>;
}

/** A message waiting for its target's socket to connect; the header is written when it is sent. */
interface Pending {
  body: Buffer;
  records: number;
  template: boolean;
}

/**
 * resolving: the first lookup (or a retry) is under way; connecting: the socket is connecting to
 * the address; up: connected; down: the host did not resolve or the socket could not connect, a
 * retry is scheduled. Messages are queued (bounded) while resolving or connecting, dropped while down.
 */
type TargetState = 'resolving' | 'connecting' | 'up' | 'down';

interface Target {
  url: string;
  host: string;
  port: number;
  state: TargetState;
  /** Why it is down (the kind its dropped messages are counted as), and the error's text. */
  downKind: IpfixErrorKind;
  downError?: string;
  /** The connected socket (a connected UDP socket is told of ICMP errors) and its address. */
  socket?: Socket;
  address?: string;
  queue: Pending[];
  /** A lookup is in flight (also while up: names are looked up again to follow address changes). */
  lookingUp: boolean;
  retryMs: number;
  timer?: NodeJS.Timeout;
  /** Data records sent so far: the next message's sequence number (RFC 7011: records sent, not dropped). */
  sequence: number;
  /** Rate-limited warnings per error kind: when the last was logged, how many since. */
  logged: Map<IpfixErrorKind, { at: number; since: number }>;
}

const END_REASON: Record<FlowEndReason, number> = { idle: 1, tcp_fin: 3, tcp_rst: 3, forced: 4, lack_of_resources: 5 };
const ECHO_REPLY: Record<number, number> = { 8: 0, 128: 129 };
/** Messages held per target while its socket connects (a connect to an address takes a few ticks). */
const MAX_QUEUED = 256;

function errorKind(err: NodeJS.ErrnoException): IpfixErrorKind {
  switch (err.code) {
    case 'ECONNREFUSED': return 'refused';
    case 'EHOSTUNREACH': case 'ENETUNREACH': case 'EHOSTDOWN': case 'ENETDOWN': return 'unreachable';
    case 'ENOTFOUND': case 'EAI_AGAIN': case 'EAI_FAIL': case 'ENODATA': return 'unresolved';
    default: return 'other';
  }
}

const systemLookup: IpfixLookup = (host) => dnsLookup(host);

/** Parse udp://HOST:PORT (IPv6 in brackets). */
export function parseIpfixUrl(url: string): { host: string; port: number } {
  const m = /^udp:\/\/(\[([0-9a-fA-F:.]+)\]|([^:/[\]]+)):(\d{1,5})$/.exec(url);
  const port = m ? Number(m[4]) : NaN;
  if (!m || port < 1 || port > 65535) throw new Error(`IPFIX target ${JSON.stringify(url)}: expected udp://HOST:PORT`);
  return { host: m[2] ?? m[3], port };
}

/** IPFIX defaults (ipfix_mtu and ipfix_template_refresh_s default to these). */
export const IPFIX_DEFAULTS = { mtu: 1400, templateRefreshMs: 60_000 } as const;

/** A route/resource endpoint (the record's resource fields name it; the destination first). */
const isResource = (e: EndpointFields): boolean => e.type.endsWith('_RESOURCE');

export class IpfixExporter implements EventSink {
  readonly name = 'ipfix';
  private readonly targets: Target[];
  private readonly mtu: number;
  private readonly domain: number;
  private readonly deltas = new DeltaTracker();
  private readonly ifindexes = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private readonly lookup: IpfixLookup;
  private readonly retryMs: number;
  private readonly retryMaxMs: number;
  private readonly resolveIntervalMs: number;
  private readonly logIntervalMs: number;
  private readonly counters = { messages: 0, records: 0 };
  private readonly errors: Record<IpfixErrorKind, number> = { refused: 0, unreachable: 0, unresolved: 0, other: 0 };

  constructor(private readonly opts: IpfixOptions) {
    this.mtu = opts.mtu ?? IPFIX_DEFAULTS.mtu;
    if (this.mtu < 512 || this.mtu > 65507) throw new Error(`IPFIX MTU must be 512..65507 octets, got ${this.mtu}`);
    this.domain = opts.observationDomain ?? randomInt(1, 2 ** 31);
    this.lookup = opts.lookup ?? systemLookup;
    this.retryMs = opts.resolveRetryMs ?? 1000;
    this.retryMaxMs = Math.max(this.retryMs, opts.resolveRetryMaxMs ?? 60_000);
    this.resolveIntervalMs = opts.resolveIntervalMs ?? 60_000;
    this.logIntervalMs = opts.errorLogIntervalMs ?? 60_000;
    this.targets = opts.targets.map((url) => {
      const { host, port } = parseIpfixUrl(url);
      const t: Target = {
        url, host, port, state: 'resolving', downKind: 'unresolved', queue: [], lookingUp: false, retryMs: this.retryMs, sequence: 0, logged: new Map(),
      };
      return t;
    });
  }

  get observationDomain(): number {
    return this.domain;
  }

  /**
   * Resolve and connect every target, send the templates now and then every templateRefreshMs.
   * Never throws for a target that does not resolve: it is retried on a schedule.
   */
  start(): void {
    for (const t of this.targets) this.resolve(t);
    this.sendTemplates();
    this.timer = setInterval(() => this.sendTemplates(), this.opts.templateRefreshMs ?? IPFIX_DEFAULTS.templateRefreshMs);
    this.timer.unref();
  }

  stats(): IpfixStats {
    let sendErrors = 0;
    for (const k of IPFIX_ERROR_KINDS) sendErrors += this.errors[k];
    return { ...this.counters, sendErrors, errors: { ...this.errors } };
  }

  /** Turn flow events into data records and send them. */
  /** EventSink: the same as export(). */
  emit(events: readonly FlowEvent[]): void {
    this.export(events);
  }

  /** EventSink: stop(). */
  close(): Promise<void> {
    return this.stop();
  }

  export(events: readonly FlowEvent[]): void {
    const records: Array<{ template: number; bytes: Buffer }> = [];
    for (const ev of events) {
      for (const r of this.toRecords(ev)) records.push({ template: templateOf(r), bytes: encodeRecord(r) });
    }
    if (records.length === 0) return;
    for (const msg of packRecords(records, this.mtu)) {
      for (const t of this.targets) this.send(t, msg.body, msg.records);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.all(this.targets.map((t) => {
      if (t.timer) clearTimeout(t.timer);
      const s = t.socket;
      t.socket = undefined;
      return s ? new Promise<void>((r) => s.close(() => r())) : Promise.resolve();
    }));
  }

/** The two unidirectional records of one report (none for START, which only opens the window). */
  toRecords(ev: FlowEvent): IpfixRecord[] {
    if (ev.type === 'DROP') return [this.dropRecord(ev)];
    const d = this.deltas.next(ev);
    if (!d) return [];
    const { startMs, endMs } = d;
    const ifindex = this.ifindex(ev.interfaceName);
    const ingress = ev.direction === 'INGRESS';
    // The flow engine's events give their ids, addresses and endpoints without making text.
    const eb = eventBytes(ev);
    const sInfo = eb ? eb.sourceInfo() : ev.source, dInfo = eb ? eb.destinationInfo() : ev.destination;
    const resource = isResource(dInfo) ? dInfo : isResource(sInfo) ? sInfo : undefined;
    let src: Buffer, dst: Buffer, flowId: Buffer;
    if (eb) {
      const b = Buffer.alloc(48);
      src = b.subarray(0, eb.sourceIpInto(b, 0));
      dst = b.subarray(16, 16 + eb.destinationIpInto(b, 16));
      eb.flowIdInto(b, 32);
      flowId = b.subarray(32, 40);
    } else {
      src = ipToBytes(ev.source.ip, 'source');
      dst = ipToBytes(ev.destination.ip, 'destination');
      flowId = uuidToBytes(ev.flowId, 'flow_id').subarray(0, 8);
    }
    const v6 = src.length === 16;
    const icmp = ev.protocol === 1 || ev.protocol === 58;
    const common = {
      v6, proto: ev.protocol,
      startMs, endMs,
      endReason: ev.type === 'UPDATE' ? 2 : END_REASON[ev.endReason ?? 'forced'],
      flowId,
      interfaceName: ev.interfaceName,
      resourceId: resource?.id ?? '', resourceName: resource?.name ?? '',
      policyId: ev.ruleId, policyName: ev.policyName,
    };
    const sport = eb ? eb.sourcePort() : ev.source.port, dport = eb ? eb.destinationPort() : ev.destination.port;
    // Initiator -> responder arrived over the interface for INGRESS flows (rx), left through it for EGRESS (tx).
    const forward: IpfixRecord = {
      ...common, src, dst, sport: icmp ? 0 : sport, dport: icmp ? 0 : dport,
      octets: ingress ? d.rxBytes : d.txBytes, packets: ingress ? d.rxPackets : d.txPackets,
      direction: ingress ? 0 : 1, icmpTypeCode: icmp ? (ev.icmpType << 8) | ev.icmpCode : 0,
      tcpFlags: ev.tcpFlagsInitiator & 0xff, ingressIf: ingress ? ifindex : 0, egressIf: ingress ? 0 : ifindex,
      sourceName: sInfo.name, destinationName: dInfo.name,
    };
    const reverse: IpfixRecord = {
      ...common, src: dst, dst: src, sport: forward.dport, dport: forward.sport,
      octets: ingress ? d.txBytes : d.rxBytes, packets: ingress ? d.txPackets : d.rxPackets,
      direction: ingress ? 1 : 0, icmpTypeCode: icmp ? ((ECHO_REPLY[ev.icmpType] ?? ev.icmpType) << 8) | ev.icmpCode : 0,
      tcpFlags: ev.tcpFlagsResponder & 0xff, ingressIf: ingress ? 0 : ifindex, egressIf: ingress ? ifindex : 0,
      sourceName: dInfo.name, destinationName: sInfo.name,
    };
    // A direction that moved nothing is not a flow; an END with nothing at all still reports the initiator's side.
    const out = [forward, reverse].filter((r) => r.packets > 0);
    return out.length > 0 ? out : ev.type === 'END' ? [forward] : [];
  }

  /** One record per DROP event: the dropped packets' own direction, never a reverse side. */
  private dropRecord(ev: FlowEvent): IpfixRecord {
    const ifindex = this.ifindex(ev.interfaceName);
    const ingress = ev.direction === 'INGRESS';
    const src = ipToBytes(ev.source.ip, 'source'), dst = ipToBytes(ev.destination.ip, 'destination');
    const icmp = ev.protocol === 1 || ev.protocol === 58;
    const startMs = ev.windowStartMs ?? ev.timestampMs;
    const reason = ev.dropReason ?? '';
    return {
      v6: src.length === 16, src, dst, sport: icmp ? 0 : ev.source.port, dport: icmp ? 0 : ev.destination.port, proto: ev.protocol,
      octets: ev.rxBytes + ev.txBytes, packets: ev.rxPackets + ev.txPackets,
      startMs, endMs: ev.windowEndMs ?? startMs,
      direction: ingress ? 0 : 1, icmpTypeCode: icmp ? (ev.icmpType << 8) | ev.icmpCode : 0,
      endReason: 0, tcpFlags: 0, ingressIf: ingress ? ifindex : 0, egressIf: ingress ? 0 : ifindex,
      flowId: uuidToBytes(ev.flowId, 'flow_id').subarray(0, 8),
      interfaceName: ev.interfaceName, resourceId: '', resourceName: '',
      policyId: ev.ruleId, policyName: ev.policyName, sourceName: ev.source.name, destinationName: ev.destination.name,
      drop: { forwardingStatus: forwardingStatusOf(reason), reason },
    };
  }

  private ifindex(name: string): number {
    let i = this.ifindexes.get(name);
    if (i === undefined) {
      i = ifindexOf(name);
      this.ifindexes.set(name, i);
    }
    return i;
  }

  /** RFC 5610 type records first (collectors name the enterprise fields with them), then templates. */
  private sendTemplates(only?: Target): void {
    const ie = ieTypeDataSet();
    const body = Buffer.concat([ieTypeOptionsTemplateSet(), ie.set, templateSet()]);
    for (const t of only ? [only] : this.targets) this.send(t, body, ie.records, true);
  }

  private send(t: Target, body: Buffer, dataRecords: number, template = false): void {
    if (t.state === 'up' && t.socket) this.write(t, t.socket, body, dataRecords);
    else if (t.state === 'down') this.failed(t, t.downKind, 1);
    else if (t.queue.length < MAX_QUEUED) t.queue.push({ body, records: dataRecords, template });
    else this.failed(t, 'unresolved', 1); // a slow first lookup: the host is not resolved yet
  }

  private write(t: Target, socket: Socket, body: Buffer, dataRecords: number): void {
    const msg = Buffer.concat([header(16 + body.length, Math.floor(Date.now() / 1000), t.sequence, this.domain), body]);
    t.sequence = (t.sequence + dataRecords) >>> 0;
    this.counters.messages += 1;
    this.counters.records += dataRecords;
    socket.send(msg, (err) => {
      if (err) this.failed(t, errorKind(err), 1, err.message);
    });
  }

  /** Look the host up (an address needs none), then connect; a failure is retried with backoff. */
  private resolve(t: Target): void {
    if (this.stopped || t.lookingUp) return;
    const family = isIP(t.host);
    if (family !== 0) {
      this.connect(t, t.host, family);
      return;
    }
    t.lookingUp = true;
    if (t.state === 'down') t.state = 'resolving';
    this.lookup(t.host).then(
      ({ address, family: f }) => {
        t.lookingUp = false;
        if (this.stopped) return;
        if (t.downKind === 'unresolved' && t.downError !== undefined) {
          this.opts.logger?.info({ target: t.url, address }, 'IPFIX collector host resolves now');
          t.downError = undefined;
        }
        t.retryMs = this.retryMs;
        if (address !== t.address || t.state !== 'up') this.connect(t, address, f === 6 ? 6 : 4);
        else this.later(t, this.resolveIntervalMs);
      },
      (err: Error) => {
        t.lookingUp = false;
        if (this.stopped) return;
        if (t.state === 'up') {
          // Known address: keep using it; a passing resolver failure is no reason to stop sending.
          this.opts.logger?.debug({ target: t.url, err: err.message }, 'IPFIX collector host lookup failed; keeping its last address');
          this.later(t, this.resolveIntervalMs);
          return;
        }
        this.down(t, 'unresolved', err.message);
      },
    );
  }

  /** Drop what was queued, count it, and retry later (backoff). */
  private down(t: Target, kind: IpfixErrorKind, error: string): void {
    t.state = 'down';
    t.downKind = kind;
    t.downError = error;
    const dropped = t.queue.length;
    t.queue = [];
    this.failed(t, kind, dropped, error);
    this.later(t, t.retryMs);
    t.retryMs = Math.min(t.retryMs * 2, this.retryMaxMs);
  }

  private later(t: Target, ms: number): void {
    if (t.timer) clearTimeout(t.timer);
    t.timer = setTimeout(() => this.resolve(t), ms);
    t.timer.unref();
  }

  /**
   * A connected socket for this address: the kernel then reports an ICMP port unreachable to it
   * (ECONNREFUSED on a later send or receive), which an unconnected socket never sees.
   */
  private connect(t: Target, address: string, family: number): void {
    const old = t.socket;
    const socket = createSocket(family === 6 ? 'udp6' : 'udp4');
    // A connected socket's ICMP errors surface here (from recvmsg) as well as in send callbacks.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (t.socket !== socket) return;
      if (t.state === 'connecting') {
        t.socket = undefined;
        t.address = undefined;
        socket.close();
        this.down(t, errorKind(err), err.message);
      } else {
        this.failed(t, errorKind(err), 1, err.message);
      }
    });
    t.socket = socket;
    t.address = address;
    t.state = 'connecting';
    old?.close();
    socket.connect(t.port, address, () => {
      if (t.socket !== socket || this.stopped) return;
      t.state = 'up';
      const queued = t.queue;
      t.queue = [];
      // A new connection starts with templates (after drops or an address change the collector
      // there has none), unless the queue already does.
      if (queued.length === 0 || !queued[0].template) this.sendTemplates(t);
      for (const m of queued) this.write(t, socket, m.body, m.records);
      if (isIP(t.host) === 0) this.later(t, this.resolveIntervalMs);
    });
  }

  /** Count n errors; warn at most once per target, kind and interval, saying how many since the last warning. */
  private failed(t: Target, kind: IpfixErrorKind, n: number, error?: string): void {
    this.errors[kind] += n;
    const now = Date.now();
    let l = t.logged.get(kind);
    if (l === undefined) {
      l = { at: -Infinity, since: 0 };
      t.logged.set(kind, l);
    }
    l.since += n;
    if (now - l.at < this.logIntervalMs) return;
    this.opts.logger?.warn(
      { target: t.url, kind, err: error ?? t.downError, errors: l.since, intervalS: Math.round(this.logIntervalMs / 1000) },
      kind === 'unresolved' ? 'IPFIX collector host does not resolve: messages to it are dropped' : 'IPFIX send failed',
    );
    l.at = now;
    l.since = 0;
  }
}
