// DROP events in the daemon: the drop probe (loaded when first switched on, so a kernel that
// cannot run it costs nothing until asked), its interface set kept equal to the attached
// interfaces, and the window reporter feeding the sinks. `drops: on` / `wgflow ctl drops on|off`.
import type { Logger } from 'pino';
import type { Attributor } from '../attribution/attributor';
import { DropProbe, dropReasonName } from '../datapath/drops';
import { DropReporter, DropsState, DropsStatus } from '../flow/drops';
import { DROP_WATCH_MAX } from '../datapath/records';
import type { FlowEvent } from '../model/event';


/** ctl drops on on a kernel that cannot run the probe. */
export class DropsUnavailableError extends Error {}

export interface DropEventsOptions {
  attributor: Attributor;
  sink: (events: FlowEvent[]) => Promise<void>;
  reporterId: string;
  reporterPublicKey: string;
  windowMs: number;
  maxKeys: number;
  /** The attached interfaces' ifindexes, and the name of one (undefined: not attached now). */
  ifindexes: () => number[];
  interfaceName: (ifindex: number) => string | undefined;
  log: Logger;
  /** Tests: another object file. */
  objectPath?: string;
}

export class DropEvents {
  private probe: DropProbe | null = null;
  private unavailable = '';
  private readonly reporter: DropReporter;
  private on = false;
  private stopped = false;
  private warnedTooMany = false;
  /**
   * The names of the interfaces watched so far, by ifindex: a window reported after its
   * interface was detached (the last one at SIGTERM, after a reload that removed it) still
   * names it.
   */
  private readonly names = new Map<number, string>();

  constructor(private readonly opts: DropEventsOptions) {
    this.reporter = new DropReporter({
      source: { drain: () => (this.probe ? this.probe.drain() : Promise.resolve([])) },
      attributor: opts.attributor, sink: opts.sink, reporterId: opts.reporterId, reporterPublicKey: opts.reporterPublicKey,
      reasonName: dropReasonName, interfaceName: (ifindex) => this.interfaceName(ifindex), windowMs: opts.windowMs,
      onError: (err, stage) => opts.log.error({ err: (err as Error).message, stage },
        stage === 'sink' ? 'DROP events: an output refused a window\'s events (counted as lost)' : 'DROP events: reading the drop probe failed'),
    });
  }

  /**
   * Switch DROP events on or off, now. On: load the probe the first time (throws
   * DropsUnavailableError naming the kernel's reason when it cannot run here), watch the attached
   * interfaces, attach. Off: detach at once; drops recorded until then are still reported.
   */
  set(on: boolean): void {
    if (!on) {
      this.probe?.detach();
      if (this.on) this.opts.log.info('DROP events off');
      this.on = false;
      return;
    }
    if (this.on) return;
    if (this.stopped) throw new DropsUnavailableError('DROP events: the daemon is stopping');
    const probe = this.load();
    try {
      probe.watch(this.watchList());
    } catch (err) {
      throw new DropsUnavailableError(`DROP events: cannot set the watched interfaces: ${firstLine(err)}`);
    }
    try {
      probe.attach();
    } catch (err) {
      this.unavailable = firstLine(err);
      throw new DropsUnavailableError(`DROP events are unavailable on this kernel: ${this.unavailable}`);
    }
    this.unavailable = '';
    this.on = true;
    this.reporter.start();
    this.opts.log.info({ windowMs: this.opts.windowMs }, 'DROP events on');
  }

  /** The attached interfaces changed: the probe watches exactly them. */
  refreshWatch(): void {
    if (!this.probe) return;
    try {
      this.probe.watch(this.watchList());
    } catch (err) {
      this.opts.log.error({ err: firstLine(err) }, 'DROP events: cannot update the watched interfaces');
    }
  }

  /** The attached interfaces, at most DROP_WATCH_MAX of them (the rest are named in a warning). */
  private watchList(): number[] {
    const all = this.opts.ifindexes();
    for (const i of all) {
      const name = this.opts.interfaceName(i);
      if (name !== undefined) this.names.set(i, name);
    }
    if (all.length > DROP_WATCH_MAX && !this.warnedTooMany) {
      this.warnedTooMany = true;
      this.opts.log.warn({ interfaces: all.length, reported: DROP_WATCH_MAX }, `DROP events: the drop probe watches at most ${DROP_WATCH_MAX} interfaces; drops of the others (ifindexes ${all.slice(DROP_WATCH_MAX).join(', ')}) are not reported`);
    }
    return all.slice(0, DROP_WATCH_MAX);
  }

  /**
   * The interface's name as of the last change of the watched set (names are read then, not per
   * event), else its name now, else "if<ifindex>".
   */
  private interfaceName(ifindex: number): string {
    return this.names.get(ifindex) ?? this.opts.interfaceName(ifindex) ?? `if${ifindex}`;
  }

  get state(): DropsState {
    return this.on ? 'on' : this.unavailable ? 'unavailable' : 'off';
  }

  status(): DropsStatus {
    return {
      state: this.state, reason: this.unavailable, windowMs: this.opts.windowMs, reporter: this.reporter.stats(),
      probe: this.probe ? this.probe.stats() : null, reasons: this.probe ? this.probe.reasons() : [],
    };
  }

  /** Detach, report what was recorded, close. */
  async stop(): Promise<void> {
    this.stopped = true; // ctl drops on from now on is refused: nothing would close its probe
    this.probe?.detach();
    this.on = false;
    await this.reporter.stop();
    this.probe?.close();
    this.probe = null;
  }

  private load(): DropProbe {
    if (this.probe) return this.probe;
    try {
      this.probe = DropProbe.open({ maxKeys: this.opts.maxKeys, objectPath: this.opts.objectPath });
    } catch (err) {
      this.unavailable = firstLine(err);
      throw new DropsUnavailableError(`DROP events are unavailable on this kernel (they need BTF and the skb:kfree_skb tracepoint with a drop reason, Linux >= 5.17): ${this.unavailable}`);
    }
    this.unavailable = '';
    return this.probe;
  }
}

function firstLine(err: unknown): string {
  return ((err as Error).message ?? String(err)).split('\n')[0];
}
