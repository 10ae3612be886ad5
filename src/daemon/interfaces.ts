// Keeps the datapath attached to the configured interfaces as they come and go: waits for an
// interface that does not exist yet, and reattaches when it is deleted and recreated (new
// ifindex). A TCX link survives down/up; a deleted device leaves it pointing nowhere.
import { ifindexOf } from '../net/netdev';
import type { Logger } from 'pino';
import type { AttachMode, Datapath } from '../datapath/datapath';

export interface InterfaceState {
  name: string;
  attached: boolean;
  ifindex: number;
  mode: string;
  /** Last attach error, if any (the watcher keeps retrying). */
  error: string;
}

export class InterfaceWatcher {
  private readonly states = new Map<string, InterfaceState>();
  private timer?: NodeJS.Timeout;
  /** Called when the set of attached interfaces (or an ifindex) changed (the drop probe's watch set). */
  onChange?: () => void;

  constructor(private readonly dp: Datapath, names: string[], private readonly mode: AttachMode, private readonly log: Logger, private readonly intervalMs = 500) {
    this.setInterfaces(names);
  }

  /** Replace the set of interfaces (reload): detach the ones dropped, attach the new ones. */
  setInterfaces(names: string[]): void {
    let dropped = false;
    for (const [name, st] of this.states) {
      if (!names.includes(name)) {
        if (st.attached) this.detach(st);
        this.states.delete(name);
        dropped = true;
      }
    }
    if (dropped) this.onChange?.();
    for (const name of names) {
      if (!this.states.has(name)) this.states.set(name, { name, attached: false, ifindex: 0, mode: '', error: '' });
    }
    this.check();
  }

  start(): void {
    this.check();
    this.timer = setInterval(() => this.check(), this.intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const st of this.states.values()) if (st.attached) this.detach(st);
  }

  list(): InterfaceState[] {
    return [...this.states.values()].map((s) => ({ ...s }));
  }

  /** One pass: attach what appeared, reattach what was recreated, note what vanished. */
  check(): void {
    const before = this.attachedKey();
    this.checkAll();
    if (this.attachedKey() !== before) this.onChange?.();
  }

  /** The ifindexes of the attached interfaces. */
  attachedIfindexes(): number[] {
    return [...this.states.values()].filter((s) => s.attached).map((s) => s.ifindex);
  }

  private attachedKey(): string {
    return this.attachedIfindexes().join(',');
  }

  private checkAll(): void {
    for (const st of this.states.values()) {
      const ifindex = ifindexOf(st.name);
      if (st.attached && ifindex === st.ifindex) continue;
      if (st.attached) {
        this.log.warn({ interface: st.name, ifindex }, ifindex ? 'interface was recreated: reattaching' : 'interface disappeared: waiting for it');
        this.detach(st);
      }
      if (!ifindex) {
        const msg = `interface ${st.name} does not exist: waiting for it`;
        if (st.error !== msg) this.log.warn({ interface: st.name }, msg);
        st.error = msg;
        continue;
      }
      try {
        const a = this.dp.attach(st.name, this.mode);
        Object.assign(st, { attached: true, ifindex: a.ifindex, mode: a.mode, error: '' });
        this.log.info({ interface: st.name, ifindex: a.ifindex, mode: a.mode }, 'attached');
      } catch (err) {
        const msg = (err as Error).message;
        if (msg !== st.error) this.log.error({ interface: st.name, err: msg }, 'cannot attach (retrying)');
        st.error = msg;
      }
    }
  }

  private detach(st: InterfaceState): void {
    try {
      this.dp.detach(st.name);
    } catch {
      // The device went away with its filters or links.
    }
    st.attached = false;
    st.ifindex = 0;
    st.mode = '';
  }
}
