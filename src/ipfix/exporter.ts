// IPFIX export over UDP: every flow report (UPDATE, END) becomes two unidirectional data records,
// initiator -> responder and back, with the bytes and packets moved since the previous report.
import { createSocket, Socket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { ipToBytes, uuidToBytes } from '../export/codec';
import { DeltaTracker } from '../flow/deltas';
import { FlowEvent, FlowEndReason, resourceOf } from '../flow/event';
import { ifindexOf } from '../netdev';
import {
  encodeRecord, header, ieTypeDataSet, ieTypeOptionsTemplateSet, IpfixRecord, packRecords, TEMPLATE_V4, TEMPLATE_V6, templateSet,
} from './encoder';

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
}

export interface IpfixStats {
  messages: number;
  records: number;
  sendErrors: number;
}

interface Target {
  url: string;
  host: string;
  port: number;
  socket: Socket;
  /** Data records (option data records included) sent so far: the next message's sequence number. */
  sequence: number;
}

const END_REASON: Record<FlowEndReason, number> = { idle: 1, tcp_fin: 3, tcp_rst: 3, forced: 4, lack_of_resources: 5 };
const ECHO_REPLY: Record<number, number> = { 8: 0, 128: 129 };

/** Parse udp://HOST:PORT (IPv6 in brackets). */
export function parseIpfixUrl(url: string): { host: string; port: number } {
  const m = /^udp:\/\/(\[([0-9a-fA-F:.]+)\]|([^:/[\]]+)):(\d{1,5})$/.exec(url);
  const port = m ? Number(m[4]) : NaN;
  if (!m || port < 1 || port > 65535) throw new Error(`IPFIX target ${JSON.stringify(url)}: expected udp://HOST:PORT`);
  return { host: m[2] ?? m[3], port };
}

export class IpfixExporter {
  private readonly targets: Target[];
  private readonly mtu: number;
  private readonly domain: number;
  private readonly deltas = new DeltaTracker();
  private readonly ifindexes = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private readonly counters: IpfixStats = { messages: 0, records: 0, sendErrors: 0 };

  constructor(private readonly opts: IpfixOptions) {
    this.mtu = opts.mtu ?? 1400;
    if (this.mtu < 512 || this.mtu > 65507) throw new Error(`IPFIX MTU must be 512..65507 octets, got ${this.mtu}`);
    this.domain = opts.observationDomain ?? randomInt(1, 2 ** 31);
    this.targets = opts.targets.map((url) => {
      const { host, port } = parseIpfixUrl(url);
      const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
      socket.on('error', (err) => this.sendFailed(url, err));
      return { url, host, port, socket, sequence: 0 };
    });
  }

  get observationDomain(): number {
    return this.domain;
  }

  /** Send the templates now and then every templateRefreshMs. */
  start(): void {
    this.sendTemplates();
    this.timer = setInterval(() => this.sendTemplates(), this.opts.templateRefreshMs ?? 60_000);
    this.timer.unref();
  }

  stats(): IpfixStats {
    return { ...this.counters };
  }

  /** Turn flow events into data records and send them. */
  export(events: FlowEvent[]): void {
    const records: Array<{ template: number; bytes: Buffer }> = [];
    for (const ev of events) {
      for (const r of this.toRecords(ev)) records.push({ template: r.v6 ? TEMPLATE_V6 : TEMPLATE_V4, bytes: encodeRecord(r) });
    }
    if (records.length === 0) return;
    for (const msg of packRecords(records, this.mtu)) {
      for (const t of this.targets) this.send(t, msg.body, msg.records);
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await Promise.all(this.targets.map((t) => new Promise<void>((r) => t.socket.close(() => r()))));
  }

  /** The two unidirectional records of one report (none for START, which only opens the window). */
  toRecords(ev: FlowEvent): IpfixRecord[] {
    const d = this.deltas.next(ev);
    if (!d) return [];
    const { startMs, endMs } = d;
    const ifindex = this.ifindex(ev.interfaceName);
    const ingress = ev.direction === 'INGRESS';
    const resource = resourceOf(ev);
    const v6 = ev.source.ip.includes(':');
    const icmp = ev.protocol === 1 || ev.protocol === 58;
    const common = {
      v6, proto: ev.protocol,
      startMs, endMs,
      endReason: ev.type === 'UPDATE' ? 2 : END_REASON[ev.endReason ?? 'forced'],
      flowId: uuidToBytes(ev.flowId, 'flow_id').subarray(0, 8),
      interfaceName: ev.interfaceName,
      resourceId: resource?.id ?? '', resourceName: resource?.name ?? '',
      policyId: ev.ruleId, policyName: ev.policyName,
    };
    const src = ipToBytes(ev.source.ip, 'source'), dst = ipToBytes(ev.destination.ip, 'destination');
    // Initiator -> responder arrived over the interface for INGRESS flows (rx), left through it for EGRESS (tx).
    const forward: IpfixRecord = {
      ...common, src, dst, sport: icmp ? 0 : ev.source.port, dport: icmp ? 0 : ev.destination.port,
      octets: ingress ? d.rxBytes : d.txBytes, packets: ingress ? d.rxPackets : d.txPackets,
      direction: ingress ? 0 : 1, icmpTypeCode: icmp ? (ev.icmpType << 8) | ev.icmpCode : 0,
      tcpFlags: ev.tcpFlagsInitiator & 0xff, ingressIf: ingress ? ifindex : 0, egressIf: ingress ? 0 : ifindex,
      sourceName: ev.source.name, destinationName: ev.destination.name,
    };
    const reverse: IpfixRecord = {
      ...common, src: dst, dst: src, sport: forward.dport, dport: forward.sport,
      octets: ingress ? d.txBytes : d.rxBytes, packets: ingress ? d.txPackets : d.rxPackets,
      direction: ingress ? 1 : 0, icmpTypeCode: icmp ? ((ECHO_REPLY[ev.icmpType] ?? ev.icmpType) << 8) | ev.icmpCode : 0,
      tcpFlags: ev.tcpFlagsResponder & 0xff, ingressIf: ingress ? 0 : ifindex, egressIf: ingress ? ifindex : 0,
      sourceName: ev.destination.name, destinationName: ev.source.name,
    };
    // A direction that moved nothing is not a flow; an END with nothing at all still reports the initiator's side.
    const out = [forward, reverse].filter((r) => r.packets > 0);
    return out.length > 0 ? out : ev.type === 'END' ? [forward] : [];
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
  private sendTemplates(): void {
    const ie = ieTypeDataSet();
    const body = Buffer.concat([ieTypeOptionsTemplateSet(), ie.set, templateSet()]);
    for (const t of this.targets) this.send(t, body, ie.records);
  }

  private send(t: Target, body: Buffer, dataRecords: number): void {
    const msg = Buffer.concat([header(16 + body.length, Math.floor(Date.now() / 1000), t.sequence, this.domain), body]);
    t.sequence = (t.sequence + dataRecords) >>> 0;
    this.counters.messages += 1;
    this.counters.records += dataRecords;
    t.socket.send(msg, t.port, t.host, (err) => {
      if (err) this.sendFailed(t.url, err);
    });
  }

  private sendFailed(url: string, err: Error): void {
    this.counters.sendErrors += 1;
    this.opts.logger?.warn({ target: url, err: err.message }, 'IPFIX send failed');
  }
}
