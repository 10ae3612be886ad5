// The live attribution sources of a running daemon: the watched WireGuard interfaces (read again
// every attribution.wireguard_refresh_s) and, with attribution.source: netbird, NetBird's
// management API (every attribution.netbird.refresh_s). Each good read is merged under the file's
// tables (src/attribution/sources/merge.ts: file > NetBird > WireGuard) and applied with one
// Attributor.swap: flows in progress keep the attribution they started with, new flows get the new
// one. A failed or invalid read keeps the last good snapshot of that source, says why in the log
// (rate-limited) and counts it by kind; metrics and `ctl status` show each source's age and errors.
import type { Logger } from 'pino';
import type { AttributionConfig } from '../attribution/config';
import type { Attributor } from '../attribution/attributor';
import { AttributionError, AttributionTables } from '../attribution/tables';
import { mergeSources } from '../attribution/sources/merge';
import { fetchNetbird } from '../attribution/sources/netbird';
import { SOURCE_ERROR_KINDS, SourceError, type ApiSnapshot, type SourceErrorKind, type SourceName, type SourceStatus, type WgSnapshot } from '../attribution/sources/source';

export type { SourceStatus } from '../attribution/sources/source';
import { readWireGuard, wgPeersToConfig } from '../attribution/sources/wireguard';
import { attributionOf, netbirdToken, type WgflowConfig } from '../config/config';

interface SourceState {
  status: SourceStatus;
  /** The snapshot in use, as tables input (null: no good read yet). */
  config: AttributionConfig | null;
  timer: NodeJS.Timeout | null;
  /** The read in progress: a second caller waits for it rather than starting another. */
  running: Promise<void> | null;
  /** Do not ask again before this epoch ms (a 429's Retry-After). */
  notBeforeMs: number;
  lastLogMs: number;
  /** The kind of the failure last logged; null after a success. A new kind is logged at once. */
  lastLogKind: SourceErrorKind | null;
}

/** A source failing the same way is logged at most this often (a new kind of failure at once). */
const LOG_EVERY_MS = 60_000;

const zeroErrors = (): Record<SourceErrorKind, number> => Object.fromEntries(SOURCE_ERROR_KINDS.map((k) => [k, 0])) as Record<SourceErrorKind, number>;

function newState(name: SourceName): SourceState {
  return {
    status: { name, lastSuccessMs: null, failing: false, lastError: null, errors: zeroErrors(), syncs: 0, counts: {}, warnings: [], unreadable: [] },
    config: null, timer: null, running: null, notBeforeMs: 0, lastLogMs: 0, lastLogKind: null,
  };
}

export class AttributionSources {
  private cfg: WgflowConfig;
  private file: AttributionConfig;
  private readonly wg = newState('wireguard');
  private readonly nb = newState('netbird');
  /** The merged input of the tables in use (JSON): an unchanged merge is not applied again. */
  private appliedKey = '';
  private stopped = false;
  private abort: AbortController | null = null;

  constructor(private readonly attributor: Attributor, cfg: WgflowConfig, private readonly log: Logger, private readonly env: NodeJS.ProcessEnv = process.env) {
    this.cfg = cfg;
    this.file = attributionOf(cfg);
    // The attributor starts with the file's tables: a merge that adds nothing is not a new generation.
    this.appliedKey = JSON.stringify(mergeSources(this.file, null, null));
  }

  /**
   * Reads the WireGuard interfaces once (a few ms) and applies the result before the first flow,
   * then starts the refresh timers; NetBird's first read runs in the background (flows until it
   * lands get the file's and the interfaces' attribution).
   */
  async start(): Promise<void> {
    if (this.cfg.attribution.wireguard) await this.readWg();
    this.schedule();
  }

  /** A reload: new file tables and source settings; applied at once, timers restarted. */
  configure(cfg: WgflowConfig): void {
    const was = this.cfg.attribution;
    this.cfg = cfg;
    this.file = attributionOf(cfg);
    const a = cfg.attribution;
    if (!a.wireguard) this.forget(this.wg);
    if (a.source !== 'netbird' || a.netbird.url !== was.netbird.url) this.forget(this.nb);
    this.apply('file');
    this.clearTimers();
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.clearTimers();
    this.abort?.abort();
  }

  status(): SourceStatus[] {
    const out: SourceStatus[] = [];
    if (this.cfg.attribution.wireguard) out.push({ ...this.wg.status });
    if (this.cfg.attribution.source === 'netbird') out.push({ ...this.nb.status });
    return out;
  }

  /** A source switched off or moved: its snapshot no longer applies. */
  private forget(s: SourceState): void {
    s.config = null;
    s.status = newState(s.status.name).status;
    s.notBeforeMs = 0;
  }

  private clearTimers(): void {
    for (const s of [this.wg, this.nb]) {
      if (s.timer) clearInterval(s.timer);
      s.timer = null;
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    const a = this.cfg.attribution;
    if (a.wireguard) {
      this.wg.timer = setInterval(() => void this.readWg(), a.wireguard_refresh_s * 1000);
      this.wg.timer.unref();
    }
    if (a.source === 'netbird') {
      this.nb.timer = setInterval(() => void this.readNetbird(), a.netbird.refresh_s * 1000);
      this.nb.timer.unref();
      void this.readNetbird();
    }
  }

  /** One read of the watched interfaces (or the one in progress). */
  readWg(): Promise<void> {
    return this.once(this.wg, () => this.readWgNow());
  }

  /** One read of NetBird's API (or the one in progress). */
  readNetbird(): Promise<void> {
    return this.once(this.nb, () => this.readNetbirdNow());
  }

  private once(s: SourceState, read: () => Promise<void>): Promise<void> {
    if (s.running !== null) return s.running;
    if (this.stopped) return Promise.resolve();
    s.running = read().finally(() => (s.running = null));
    return s.running;
  }

  /** Interfaces that cannot be read are reported, the rest used. */
  private async readWgNow(): Promise<void> {
    const s = this.wg;
    let snap: WgSnapshot;
    try {
      snap = await readWireGuard(this.cfg.interfaces);
    } catch (err) {
      this.failed(s, err instanceof SourceError ? err.kind : 'invalid', (err as Error).message);
      return;
    }
    if (this.stopped || !this.cfg.attribution.wireguard) return;
    s.status.unreadable = snap.errors.map((e) => e.message);
    // A watched interface that is not there (yet) is normal for a daemon that waits for it;
    // one that is there and cannot be read is logged (rarely).
    const unreadable = snap.errors.filter((e) => !/no such interface/.test(e.message));
    if (unreadable.length > 0) this.logRare(s, 'warn', { errors: unreadable.map((e) => e.message) }, 'cannot read the peers of some WireGuard interfaces; the others are used');
    s.config = wgPeersToConfig(snap);
    s.status.counts = { interfaces: snap.interfaces?.length ?? 0, peers: s.config.peers?.length ?? 0 };
    this.succeeded(s, 'wireguard');
  }

  /** All or nothing; a 429's Retry-After is honoured. */
  private async readNetbirdNow(): Promise<void> {
    const s = this.nb;
    const a = this.cfg.attribution;
    if (a.source !== 'netbird' || a.netbird.url === undefined) return;
    if (Date.now() < s.notBeforeMs) return;
    this.abort = new AbortController();
    const url = a.netbird.url;
    try {
      let snap: ApiSnapshot;
      try {
        // Read at every attempt: a rotated token file needs no restart.
        const token = netbirdToken(this.cfg, this.env);
        snap = await fetchNetbird({ url, token, timeoutMs: a.netbird.timeout_ms, signal: this.abort.signal });
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof SourceError && err.retryAfterS !== undefined) s.notBeforeMs = Date.now() + err.retryAfterS * 1000;
        this.failed(s, err instanceof SourceError ? err.kind : 'invalid', (err as Error).message);
        return;
      }
      if (this.stopped || this.cfg.attribution.source !== 'netbird' || this.cfg.attribution.netbird.url !== url) return;
      s.config = snap.config;
      s.status.counts = { ...snap.counts };
      if (snap.warnings.join('\n') !== s.status.warnings.join('\n') && snap.warnings.length > 0) {
        this.log.warn({ source: 'netbird', warnings: snap.warnings.slice(0, 20), count: snap.warnings.length }, 'NetBird objects wgflow cannot fully represent (see docs/attribution.md)');
      }
      s.status.warnings = snap.warnings;
      this.succeeded(s, 'netbird');
    } finally {
      this.abort = null;
    }
  }

  private succeeded(s: SourceState, why: SourceName): void {
    const wasFailing = s.status.failing;
    if (!this.apply(why)) return;
    s.status.lastSuccessMs = Date.now();
    s.status.syncs++;
    s.status.failing = false;
    s.status.lastError = null;
    s.lastLogKind = null;
    if (wasFailing) this.log.info({ source: s.status.name }, 'attribution source readable again');
  }

  private failed(s: SourceState, kind: SourceErrorKind, message: string): void {
    s.status.errors[kind]++;
    s.status.failing = true;
    s.status.lastError = message;
    // Repeats of one failure are rate-limited; a new one (a 500 turning into a 401: the token was
    // revoked meanwhile) is news, logged at once.
    if (kind !== s.lastLogKind) s.lastLogMs = 0;
    s.lastLogKind = kind;
    const age = s.status.lastSuccessMs === null ? null : Math.round((Date.now() - s.status.lastSuccessMs) / 1000);
    this.logRare(s, 'error', { source: s.status.name, kind, snapshotAgeS: age }, `${message}; ${s.config === null ? 'no snapshot of this source yet' : 'keeping its last good snapshot'}`);
  }

  /**
   * Merges and swaps in new tables when the merged input changed. A merge the tables refuse
   * (e.g. two peers with one public key) keeps the tables in use: false.
   */
  private apply(why: SourceName | 'file'): boolean {
    const merged = mergeSources(this.file, this.nb.config, this.wg.config);
    const key = JSON.stringify(merged);
    if (key === this.appliedKey) return true;
    let tables: AttributionTables;
    try {
      tables = AttributionTables.build(merged);
    } catch (err) {
      const msg = err instanceof AttributionError ? `${err.path}: ${err.problem}` : (err as Error).message;
      if (why !== 'file') this.failed(why === 'wireguard' ? this.wg : this.nb, 'tables', `the ${why} snapshot does not fit the tables (${msg})`);
      else this.log.error({ err: msg }, 'the live sources do not fit the reloaded tables; keeping the tables in use');
      return false;
    }
    this.attributor.swap(tables);
    this.appliedKey = key;
    this.log.info({
      generation: this.attributor.generation, cause: why, peers: tables.peersById.size, resources: tables.resourcesById.size, policies: tables.policies.length,
      warnings: tables.warnings.length > 0 ? tables.warnings.slice(0, 10) : undefined,
    }, 'attribution tables updated');
    return true;
  }

  private logRare(s: SourceState, level: 'warn' | 'error', obj: object, msg: string): void {
    const now = Date.now();
    if (now - s.lastLogMs < LOG_EVERY_MS) {
      this.log.debug(obj, msg);
      return;
    }
    s.lastLogMs = now;
    this.log[level](obj, msg);
  }
}

/**
 * `wgflow run --check-config --check-source`: each live source read once, what it found (counts,
 * warnings, unreadable interfaces), and whether the merged tables build. ok is false when a source
 * cannot be read or the merge is refused.
 */
export async function checkSources(cfg: WgflowConfig, env: NodeJS.ProcessEnv): Promise<{ text: string; ok: boolean }> {
  const a = cfg.attribution;
  const out: string[] = [];
  let ok = true;
  let wgConfig: AttributionConfig | null = null;
  let nbConfig: AttributionConfig | null = null;
  if (a.wireguard) {
    const snap = await readWireGuard(cfg.interfaces);
    wgConfig = wgPeersToConfig(snap);
    const read = (snap.interfaces ?? []).map((i) => `${i.ifname} (${i.via}, ${i.peers} peers)`).join(', ');
    out.push(`wireguard: ${read || 'no interface read'}; ${wgConfig.peers?.length ?? 0} peers, overlay ${(wgConfig.overlay ?? []).join(', ') || 'none'}`);
    for (const e of snap.errors) out.push(`  cannot read ${e.message}`);
    if (snap.errors.length > 0 && (snap.interfaces ?? []).length === 0) ok = false;
  } else {
    out.push('wireguard: off (attribution.wireguard)');
  }
  if (a.source === 'netbird' && a.netbird.url !== undefined) {
    try {
      const snap = await fetchNetbird({ url: a.netbird.url, token: netbirdToken(cfg, env), timeoutMs: a.netbird.timeout_ms });
      nbConfig = snap.config;
      out.push(`netbird: ${a.netbird.url}: ${Object.entries(snap.counts).map(([k, n]) => `${n} ${k}`).join(', ')}; ${snap.warnings.length} warnings`);
      for (const w of snap.warnings) out.push(`  warning: ${w}`);
    } catch (err) {
      ok = false;
      out.push(`netbird: ${a.netbird.url}: FAILED${err instanceof SourceError ? ` (${err.kind})` : ''}: ${(err as Error).message}`);
    }
  }
  try {
    const tables = AttributionTables.build(mergeSources(attributionOf(cfg), nbConfig, wgConfig));
    out.push(`merged tables (file > netbird > wireguard): ${tables.peersById.size} peers, ${tables.resourcesById.size} resources, ${tables.policies.length} policies`);
    for (const w of tables.warnings) out.push(`  warning: ${w}`);
  } catch (err) {
    ok = false;
    out.push(`merged tables refused: ${err instanceof AttributionError ? `${err.path}: ${err.problem}` : (err as Error).message}`);
  }
  return { text: `${out.join('\n')}\n`, ok };
}
