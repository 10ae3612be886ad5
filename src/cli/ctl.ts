// wgflow ctl: talk to a running daemon over its control socket.
import { parseArgs } from 'node:util';
import { callControl } from '../control/control';
import type { FlowRow, StatusReport } from '../daemon/report';
import { formatBytes } from '../util/bytes';

const DEFAULT_SOCKET = '/run/wgflow/ctl.sock';

export function help(): string {
  return [
    'usage: wgflow ctl [--socket PATH | --control-socket PATH] [--json] <command>',
    '',
    'commands:',
    '  status              interfaces, active flows, events by type, drops, exporter state, byte reporting',
    '  counters on|off     switch kernel byte reporting now (no restart, no flow lost)',
    '  drops on|off        switch DROP events now (docs/events.md); drops already seen are still reported',
    '  flows [--top N]     the N largest active flows (default 20)',
    '  reload              re-read the configuration file (attribution tables, interfaces)',
    '  resolve DOMAIN ADDR... [--ttl S]   feed the DOMAIN-resource table: DOMAIN resolved to ADDRs (default ttl 300 s)',
    '',
    'options:',
    `  --socket PATH       the daemon's control socket (default ${DEFAULT_SOCKET}; env WGFLOW_CONTROL_SOCKET);`,
    '                      --control-socket PATH, as wgflow run spells it, is the same',
    '  --json              print the raw answer as JSON',
    '  --help              show this help',
    '',
  ].join('\n');
}

/** A plain text table with aligned columns. */
export function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (c ?? '').padEnd(w[i])).join('  ').trimEnd();
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

const PROTO: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };
export const protoName = (p: number): string => PROTO[p] ?? `ip/${p}`;

function formatStatus(s: StatusReport): string {
  const out: string[] = [];
  out.push(`wgflow ${s.version}, up ${s.uptimeSeconds} s, reporter ${s.reporterId}`);
  out.push(`byte reporting: ${s.counting ? 'on' : 'OFF (flows are tracked, counters stay zero)'}`);
  out.push(`interfaces:     ${s.interfaces.map((i) => `${i.name} ${i.attached ? `attached (${i.mode}, ifindex ${i.ifindex})` : `waiting${i.error ? `: ${i.error}` : ''}`}`).join('; ')}`);
  out.push(`flows active:   ${s.flowsActive}`);
  out.push(`events:         ${Object.entries(s.events).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const d = s.dropEvents;
  if (d) {
    const why = d.state === 'unavailable' ? ` (${d.reason})` : '';
    const seen = d.reasons.map((r) => `${r.reason} ${r.packets}`).join(', ');
    out.push(`DROP events:    ${d.state}${why}, window ${d.windowMs / 1000} s: ${d.reporter.events} events for ${d.reporter.packets} packets` +
      (d.reporter.lostEvents ? `, ${d.reporter.lostEvents} refused by an output` : '') +
      (d.probe ? `; dropped on watched interfaces: ${seen || 'none'}${d.probe.mapFull ? `; drop map full ${d.probe.mapFull} packets` : ''}` : ''));
  }
  out.push(`drops:          ring buffer full ${s.drops.ringbufFull}, flow map full ${s.drops.mapFullPackets} packets, ` +
    `found without START ${s.drops.discoveredWithoutStart}, output refused ${s.drops.eventsDropped}, spool full ${s.drops.spoolDropped}, quarantined ${s.drops.spoolQuarantined}, not encodable ${s.drops.badEvents}`);
  if (s.output.kind === 'collector') {
    const e = s.output.stats;
    out.push(`collector:      ${s.output.url} ${e.connected ? 'connected' : 'DISCONNECTED'}, acked ${e.acked}, in flight ${e.inFlight}, queued ${e.queued}, ` +
      `spool ${formatBytes(e.spoolBytes)}, reconnects ${e.reconnects}`);
    const a = s.output.aggregate;
    if (a) out.push(`aggregated:     netbird-aggregated, ${a.events} events in ${a.records} records over ${a.windows} windows, open window ${new Date(a.windowStartMs).toISOString()} (${a.openGroups} groups)`);
  } else {
    out.push(`output:         ${s.output.dir}/events.jsonl (no collector configured)`);
  }
  if (s.memory) {
    const m = s.memory;
    const n = (x: number): string => x.toLocaleString('en-US');
    out.push(`memory:         resident ${formatBytes(m.residentNowBytes)} (peak ${formatBytes(m.residentPeakBytes)}) of a ${formatBytes(m.residentBytes)} budget ` +
      `(flow state ${formatBytes(m.flowStateBytes)} for ${n(m.maxFlows)} + ${n(m.maxFlowsV6)} flows, ${m.flowStateBytesPerFlowV4}/${m.flowStateBytesPerFlowV6} bytes each); ` +
      `kernel maps ${formatBytes(m.kernelBytes)}; total ${formatBytes(m.totalBytes)}, ${m.limit ? `limit ${formatBytes(m.limit.bytes)} (${m.limit.source})` : 'no limit'}`);
  }
  if (s.ipfix) {
    // Kinds with errors only (refused: nobody listening; unresolved: host name does not resolve).
    const kinds = Object.entries(s.ipfix.errors ?? {}).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
    out.push(`ipfix:          ${s.ipfix.targets.join(', ')}: ${s.ipfix.messages} messages, ${s.ipfix.records} records, ${s.ipfix.sendErrors} send errors` +
      (kinds ? ` (${kinds})` : ''));
  }
  if (s.jetstream) {
    const j = s.jetstream;
    const kinds = Object.entries(j.errors).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
    out.push(`jetstream:      ${j.connected ? 'connected' : 'not connected'} to ${j.servers}, stream ${j.stream}: ${j.acked} acked (${j.duplicates} duplicates), ` +
      `${j.inFlight} in flight, ${j.queued} queued${kinds ? `; errors: ${kinds}` : ''}`);
  }
  if (s.attribution) {
    const now = Date.now();
    const age = (ms: number | null): string => (ms === null ? 'never read' : `read ${Math.round((now - ms) / 1000)} s ago`);
    const parts = s.attribution.sources.map((src) => {
      const counts = Object.entries(src.counts).map(([k, n]) => `${n} ${k}`).join(', ');
      const errs = Object.entries(src.errors).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
      return `${src.name} ${age(src.lastSuccessMs)}${counts ? ` (${counts})` : ''}` +
        (src.failing ? `, FAILING: ${src.lastError ?? ''}${src.lastSuccessMs === null ? '' : ' (the last good snapshot stays in use)'}` : '') +
        (errs ? `; errors: ${errs}` : '') + (src.unreadable.length ? `; unreadable: ${src.unreadable.join('; ')}` : '');
    });
    out.push(`attribution:    tables generation ${s.attribution.generation}${parts.length ? `; ${parts.join('; ')}` : '; file only'}`);
  }
  return out.join('\n') + '\n';
}

function formatFlows(rows: FlowRow[]): string {
  if (rows.length === 0) return 'no active flows\n';
  return table(
    ['DIR', 'SOURCE', '', 'DESTINATION', 'PROTO/PORT', 'BYTES ↑', 'BYTES ↓', 'RESOURCE', 'POLICY', 'IF'],
    rows.map((r) => [
      r.direction === 'INGRESS' ? 'in' : 'out', r.source, '→', r.destination, `${protoName(r.protocol)}${r.port ? `/${r.port}` : ''}`,
      formatBytes(r.txBytes), formatBytes(r.rxBytes), r.resource, r.policy, r.interfaceName,
    ]),
  );
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: { socket: { type: 'string' }, 'control-socket': { type: 'string' }, json: { type: 'boolean' }, top: { type: 'string' }, ttl: { type: 'string' }, help: { type: 'boolean' } },
    });
  } catch (err) {
    process.stderr.write(`wgflow ctl: ${(err as Error).message}\n\n${help()}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(help());
    return 0;
  }
  if (values.socket !== undefined && values['control-socket'] !== undefined && values.socket !== values['control-socket']) {
    process.stderr.write(`wgflow ctl: --socket and --control-socket name different sockets; give one\n`);
    return 2;
  }
  // --control-socket is the flag wgflow run takes for the same path: both are accepted.
  const socket = values.socket ?? values['control-socket'] ?? process.env.WGFLOW_CONTROL_SOCKET ?? DEFAULT_SOCKET;
  const [cmd, arg, ...extra] = positionals;
  const usageError = (msg: string): number => {
    process.stderr.write(`wgflow ctl: ${msg}\n\n${help()}`);
    return 2;
  };
  let req: { cmd: string; [k: string]: unknown };
  switch (cmd) {
    case 'status':
    case 'reload':
      if (arg !== undefined) return usageError(`${cmd} takes no argument`);
      req = { cmd };
      break;
    case 'counters':
    case 'drops':
      if ((arg !== 'on' && arg !== 'off') || extra.length) return usageError(`usage: wgflow ctl ${cmd} on|off`);
      req = { cmd, on: arg === 'on' };
      break;
    case 'flows': {
      const top = values.top === undefined ? 20 : Number(values.top);
      if (arg !== undefined || !Number.isInteger(top) || top < 1) return usageError('usage: wgflow ctl flows [--top N] (N a positive integer)');
      req = { cmd, top };
      break;
    }
    case 'resolve': {
      const ttl = values.ttl === undefined ? 300 : Number(values.ttl);
      if (arg === undefined || extra.length === 0 || !Number.isFinite(ttl) || ttl < 0) return usageError('usage: wgflow ctl resolve DOMAIN ADDR... [--ttl SECONDS]');
      req = { cmd, domain: arg, addresses: extra, ttl };
      break;
    }
    case undefined:
      return usageError('no command given');
    default:
      return usageError(`unknown command "${cmd}"`);
  }
  let result: unknown;
  try {
    result = await callControl(socket, req);
  } catch (err) {
    process.stderr.write(`wgflow ctl: ${(err as Error).message}\n`);
    return 1;
  }
  if (values.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else if (cmd === 'status') process.stdout.write(formatStatus(result as StatusReport));
  else if (cmd === 'flows') process.stdout.write(formatFlows(result as FlowRow[]));
  else if (cmd === 'counters') process.stdout.write(`kernel byte reporting is now ${(result as { counting: boolean }).counting ? 'on' : 'off'}\n`);
  else if (cmd === 'drops') process.stdout.write(`DROP events are now ${(result as { drops: string }).drops}\n`);
  else if (cmd === 'resolve') process.stdout.write(`${arg} -> ${extra.join(', ')} for ${req.ttl} s\n`);
  else {
    const r = result as { interfaces: string[]; restartNeeded?: string[] };
    process.stdout.write(`reloaded: interfaces ${r.interfaces.join(', ')}\n`);
    if (r.restartNeeded?.length) process.stdout.write(`changed, but only applied by a restart (the running values stay): ${r.restartNeeded.join(', ')}\n`);
  }
  return 0;
}
