// The wgflow daemon: datapath -> flow pipeline -> outputs (gRPC exporter with its spool, or a local
// JSON-lines file; IPFIX), with metrics, the control socket, reload and clean shutdown.
import { accessSync, constants } from 'node:fs';
import { ensureDir } from '../util/fs';
import type { Server } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import type { Logger } from 'pino';
import { Attributor } from '../attribution/attributor';
import { AttributionSources } from './attribution-sources';
import type { AttributionTables } from '../attribution/tables';
import { ConfigError } from '../util/check';
import { changedKeys, FlagValues, isReloadable, loadConfig, WgflowConfig } from '../config/config';
import { describePlan, MemoryPlan } from '../config/memory';
import { MemoryGovernor } from './memory-governor';
import { ControlError, serveControl } from '../control/control';
import { Datapath } from '../datapath/datapath';
import type { FlowEvent } from '../model/event';
import { FlowPipeline } from '../flow/pipeline';
import { Metrics } from '../metrics/metrics';
import { InterfaceWatcher } from './interfaces';
import { missingCapabilities } from './privileges';
import { activeFlows, statusReport } from './report';
import { DropEvents, DropsUnavailableError } from './drops';
import { buildSinks, closeSinks, emitAll, Sinks } from './sinks';

/** A startup failure the operator must fix; the CLI prints the message and exits non-zero. */
export class StartupError extends Error {}

function writableDir(dir: string, what: string, flag: string): void {
  try {
    ensureDir(dir);
    accessSync(dir, constants.W_OK);
  } catch (err) {
    throw new StartupError(`${what} ${dir} is not writable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); choose another with ${flag} or fix its permissions`);
  }
}

export interface DaemonOptions {
  config: WgflowConfig;
  /** The attribution tables compiled from config (loadConfig). */
  tables: AttributionTables;
  /** The memory budget of config and the limit it fits in (loadConfig checked it). */
  memory: MemoryPlan;
  /** Where reload re-reads the configuration from (flags and environment stay as given). */
  configFile?: string;
  flags?: FlagValues;
  log: Logger;
}

export class Daemon {
  readonly metrics = new Metrics();
  private cfg: WgflowConfig;
  private dp!: Datapath;
  private pipeline!: FlowPipeline;
  private watcher!: InterfaceWatcher;
  private governor: MemoryGovernor | null = null;
  private attributor!: Attributor;
  private sources!: AttributionSources;
  private sinks: Sinks = { all: [] };
  private drops?: DropEvents;
  private metricsServer?: HttpServer;
  private control?: Server;
  private readonly startedAt = Date.now();
  private stopping?: Promise<void>;

  private constructor(private readonly opts: DaemonOptions) {
    this.cfg = opts.config;
  }

  get config(): WgflowConfig {
    return this.cfg;
  }

  /** Start everything, or fail with a StartupError/ConfigError naming what to fix (nothing left running). */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    const d = new Daemon(opts);
    try {
      await d.startParts();
    } catch (err) {
      await d.teardown().catch(() => undefined);
      throw err;
    }
    return d;
  }

  private async startParts(): Promise<void> {
    const { cfg } = this;
    const log = this.opts.log;
    const missing = missingCapabilities();
    if (missing.length) {
      throw new StartupError(`wgflow run needs root or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; missing: ${missing.join(', ')} (run as root, or use the systemd unit in packaging/)`);
    }
    const mem = this.opts.memory;
    log.info({ memory: { ...mem.budget, limitBytes: mem.limit?.bytes ?? null, limitSource: mem.limit?.source ?? null } }, describePlan(mem));
    this.attributor = new Attributor(this.opts.tables);
    this.sources = new AttributionSources(this.attributor, cfg, log.child({ part: 'attribution' }));
    if (cfg.collector.url) writableDir(cfg.spool.dir, 'spool directory', '--spool-dir');
    else writableDir(cfg.output.dir, 'output directory', '--output');

    // Sockets next: a port in use fails before anything is attached.
    this.metricsServer = await this.metrics.listen(cfg.metrics_listen).catch((err: Error) => {
      throw new StartupError(err.message);
    });
    this.control = await serveControl(cfg.control_socket, this.controlHandlers()).catch((err: Error) => {
      const where = '(--control-socket, config key control_socket)';
      throw new StartupError(err instanceof ControlError ? `${err.message} ${where}` : `cannot create the control socket ${cfg.control_socket}: ${err.message} ${where}`);
    });

    try {
      this.dp = Datapath.open({ maxFlows: cfg.datapath.max_flows, maxFlowsV6: cfg.datapath.max_flows_v6, ringBytes: cfg.datapath.ring_bytes, pinDir: cfg.datapath.pin_dir });
    } catch (err) {
      const e = err as Error & { code?: string };
      const hint = e.code === 'ENOSYS' ? ' (this kernel has no BPF support: wgflow needs Linux >= 5.8 with CONFIG_BPF_SYSCALL)' : '';
      throw new StartupError(`cannot load the BPF datapath: ${e.message.split('\n')[0]}${hint}`);
    }
    this.dp.setCounting(cfg.counters);
    if (this.dp.mountedBpffs) {
      log.warn({ pinDir: cfg.datapath.pin_dir }, 'mounted bpffs at /sys/fs/bpf myself: pinned flow state lasts only as long as this mount namespace ' +
        '(under "ip netns exec" each run has its own), so a restart may not adopt live flows; mount bpffs where it persists and point --pin-dir there');
    }

    this.sinks = buildSinks(cfg, this.metrics, log);

    const lc = cfg.lifecycle;
    this.pipeline = new FlowPipeline({
      source: this.dp,
      sink: (events) => this.emit(events),
      attributor: this.attributor,
      trackerOptions: {
        reporterId: cfg.reporter_id, reporterPublicKey: cfg.reporter_public_key,
        tcpIdleMs: lc.tcp_timeout_s * 1000, udpIdleMs: lc.udp_timeout_s * 1000, icmpIdleMs: lc.icmp_timeout_s * 1000, otherIdleMs: lc.other_timeout_s * 1000,
        closeGraceMs: lc.tcp_close_grace_ms, updateIntervalMs: lc.interim_interval_s * 1000,
        // Rows for as many flows as the kernel maps hold (untouched rows cost no memory).
        capacityV4: this.dp.options.maxFlows, capacityV6: this.dp.options.maxFlowsV6,
      },
      drainIntervalMs: cfg.datapath.drain_interval_ms,
      pollTimeoutMs: cfg.datapath.poll_timeout_ms,
      onError: (err, stage) => log.error({ stage, err: (err as Error).message }, 'flow pipeline error'),
    });
    this.watcher = new InterfaceWatcher(this.dp, cfg.interfaces, cfg.datapath.attach_mode, log.child({ part: 'interfaces' }));
    const drops = new DropEvents({
      attributor: this.attributor, sink: (events) => this.emit(events), reporterId: cfg.reporter_id, reporterPublicKey: cfg.reporter_public_key,
      windowMs: lc.drop_window_s * 1000, maxKeys: cfg.datapath.drop_keys,
      ifindexes: () => this.watcher.attachedIfindexes(),
      interfaceName: (ifindex) => this.watcher.list().find((i) => i.ifindex === ifindex)?.name,
      log: log.child({ part: 'drops' }),
    });
    this.drops = drops;
    this.watcher.onChange = () => drops.refreshWatch();
    this.metrics.bind({
      kernel: () => this.dp.stats(),
      pipeline: () => this.pipeline.stats(),
      exporter: this.sinks.exporter ? () => this.sinks.exporter!.stats() : undefined,
      ipfix: this.sinks.ipfix ? () => this.sinks.ipfix!.stats() : undefined,
      jetstream: this.sinks.jetstream ? () => this.sinks.jetstream!.stats() : undefined,
      counting: () => this.dp.counting(),
      drops: () => drops.status(),
      attribution: () => ({ generation: this.attributor.generation, sources: this.sources.status() }),
      interfaces: () => this.watcher.list().map((i) => ({ name: i.name, attached: i.attached })),
      memory: () => ({
        budgetBytes: mem.budget.totalBytes, residentBudgetBytes: mem.budget.residentBytes, flowStateBudgetBytes: mem.budget.flowStateBytes,
        kernelBudgetBytes: mem.budget.kernelBytes, limitBytes: mem.limit?.bytes, collections: this.governor?.stats().collections ?? 0,
      }),
    });
    this.governor = new MemoryGovernor(mem.budget.residentBytes, log.child({ part: 'memory' }));
    this.governor.start();
    // The interfaces' peers are read before the first flow (a few ms); NetBird's API in the background.
    await this.sources.start();
    this.pipeline.start();
    this.watcher.start();
    if (cfg.drops) {
      try {
        drops.set(true);
      } catch (err) {
        if (!(err instanceof DropsUnavailableError)) throw err;
        log.warn(`${err.message}; flows are exported as usual`);
      }
    }
    log.info({ interfaces: cfg.interfaces, collector: cfg.collector.url ?? null, metrics: cfg.metrics_listen, control: cfg.control_socket, counting: cfg.counters }, 'wgflow running');
  }

  /** Every batch goes to every sink (src/daemon/sinks.ts); resolves once they all took it. */
  private emit(events: FlowEvent[]): Promise<void> {
    return events.length === 0 ? Promise.resolve() : emitAll(this.sinks.all, events);
  }

  /** Kernel byte counting on or off, now. */
  setCounting(on: boolean): void {
    this.dp.setCounting(on);
    this.opts.log.info({ counting: on }, `kernel byte reporting ${on ? 'on' : 'off'}`);
  }

  /**
   * Re-read the configuration file: new attribution tables (for flows that start from now on) and
   * the interface list. A bad file leaves everything as it was and says why.
   */
  reload(): { interfaces: string[]; generation: number; restartNeeded: string[] } {
    // The same validation as start and --check-config; nothing is applied unless all of it passes.
    // (It compiles the file's tables too: a bad table refuses the reload here. The sources then
    // merge their snapshots under the new tables.)
    const { config: next } = loadConfig({ file: this.opts.configFile, env: process.env, flags: this.opts.flags });
    // Only the attribution tables, the filters and the interface list apply to a running daemon;
    // every other changed key keeps its running value (so ctl status shows what runs) and is named.
    const restartNeeded = changedKeys(this.cfg, next).filter((k) => !isReloadable(k));
    this.cfg = { ...this.cfg, interfaces: next.interfaces, attribution: next.attribution, filters: next.filters };
    this.sources.configure(this.cfg);
    this.watcher.setInterfaces(next.interfaces);
    this.opts.log.info({ generation: this.attributor.generation, interfaces: next.interfaces }, 'configuration reloaded');
    if (restartNeeded.length > 0) this.opts.log.warn({ keys: restartNeeded }, 'these changed keys take effect only after a restart; their running values stay');
    return { interfaces: next.interfaces, generation: this.attributor.generation, restartNeeded };
  }

  /** SIGTERM/SIGINT: detach, END (forced) for active flows, flush outputs within the deadline. */
  stop(deadlineMs = 10_000): Promise<void> {
    this.stopping ??= (async () => {
      const log = this.opts.log;
      log.info('stopping: detaching, ending active flows, flushing');
      this.watcher?.stop();
      this.governor?.stop();
      this.sources?.stop();
      await this.pipeline?.stop({ forceEnd: true });
      // Drops seen until the probe was detached are reported before the outputs close.
      await this.drops?.stop();
      await this.teardown(deadlineMs);
      log.info('stopped');
    })();
    return this.stopping;
  }

  private async teardown(deadlineMs = 10_000): Promise<void> {
    await closeSinks(this.sinks, deadlineMs);
    await new Promise<void>((r) => (this.metricsServer ? this.metricsServer.close(() => r()) : r()));
    await new Promise<void>((r) => (this.control ? this.control.close(() => r()) : r()));
    if (this.dp && !this.dp.isClosed) this.dp.close();
  }

  private controlHandlers(): Record<string, (req: Record<string, unknown>) => unknown> {
    return {
      status: () => statusReport({
        startedAt: this.startedAt, cfg: this.cfg, interfaces: this.watcher.list(), counting: this.dp.counting(),
        pipeline: this.pipeline.stats(), kernel: this.dp.stats(), exporter: this.sinks.exporter?.stats(), aggregator: this.sinks.aggregator?.stats(), ipfix: this.sinks.ipfix?.stats(),
        jetstream: this.sinks.jetstream?.stats(), memory: this.opts.memory, dropEvents: this.drops?.status(),
        attribution: { generation: this.attributor.generation, sources: this.sources.status() },
      }),
      counters: (req) => {
        if (req.on !== true && req.on !== false) throw new ControlError('counters: expected on or off');
        this.setCounting(req.on);
        return { counting: this.dp.counting() };
      },
      drops: (req) => {
        if (req.on !== true && req.on !== false) throw new ControlError('drops: expected on or off');
        try {
          this.drops!.set(req.on);
        } catch (err) {
          if (err instanceof DropsUnavailableError) throw new ControlError(err.message);
          throw err;
        }
        return { drops: this.drops!.state };
      },
      flows: (req) => activeFlows(this.pipeline.tracker, typeof req.top === 'number' ? req.top : 50),
      reload: () => {
        try {
          return this.reload();
        } catch (err) {
          throw new ControlError(`reload refused, the running configuration stays: ${err instanceof ConfigError ? `configuration error: ${err.message}` : (err as Error).message}`);
        }
      },
      resolve: (req) => {
        // DOMAIN resources: addresses a name resolved to, valid for ttl seconds (from a DNS hook).
        const domain = req.domain, addrs = req.addresses, ttl = req.ttl;
        if (typeof domain !== 'string' || !Array.isArray(addrs) || !addrs.every((a) => typeof a === 'string') || typeof ttl !== 'number') {
          throw new ControlError('resolve: expected a domain, addresses and a ttl');
        }
        this.attributor.feedResolved(domain, addrs as string[], ttl);
        return { domain, addresses: addrs, ttl };
      },
    };
  }
}
