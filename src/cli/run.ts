// wgflow run: the daemon. Flags come from the same table as the config file keys (RUN_FLAGS).
import { parseArgs } from 'node:util';
import { ConfigError } from '../util/check';
import { FlagValues, loadConfig, RUN_FLAGS } from '../config/config';
import { describePlan } from '../config/memory';
import { Daemon } from '../daemon/daemon';
import { checkSources } from '../daemon/attribution-sources';
import { createLogger } from '../util/log';

export function help(): string {
  const rows = [
    ...RUN_FLAGS.map((f) => [`--${f.flag}${'multiple' in f && f.multiple ? ' VALUE...' : ' VALUE'}`, `${f.help} [env ${f.env}]`]),
    ['--config FILE', 'configuration file, YAML or JSON (docs/config.md); flags and environment override it'],
    ['--check-config', 'validate the configuration (file, environment, flags, attribution tables) and exit'],
    ['--check-source', 'with --check-config: also read each live attribution source once (WireGuard interfaces, NetBird API) and print what it found'],
    ['--help', 'show this help'],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  return ['usage: wgflow run [options]', '', 'Count flows on WireGuard interfaces in eBPF and export them (gRPC collector, JSON lines, IPFIX).', '',
    ...rows.map(([a, b]) => `  ${a.padEnd(w)}  ${b}`), '',
    'Exit status: 0 after a clean stop (SIGTERM/SIGINT), 1 when it cannot run, 2 for a bad flag or configuration.', ''].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {
    config: { type: 'string' }, 'check-config': { type: 'boolean' }, 'check-source': { type: 'boolean' }, help: { type: 'boolean', },
  };
  for (const f of RUN_FLAGS) options[f.flag] = 'multiple' in f && f.multiple ? { type: 'string', multiple: true } : { type: 'string' };
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Record<string, string | string[] | boolean | undefined>;
  } catch (err) {
    process.stderr.write(`wgflow run: ${(err as Error).message}\n\n${help()}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(help());
    return 0;
  }
  const flags: FlagValues = {};
  for (const f of RUN_FLAGS) if (values[f.flag] !== undefined) (flags as Record<string, unknown>)[f.flag] = values[f.flag];
  for (const f of ['counters', 'drops'] as const) {
    if (values[f] !== undefined && values[f] !== 'on' && values[f] !== 'off') {
      process.stderr.write(`wgflow run: --${f} must be on or off, got "${String(values[f])}"\n`);
      return 2;
    }
  }
  if (values['check-source'] && !values['check-config']) {
    process.stderr.write('wgflow run: --check-source goes with --check-config (it reads the sources once and exits)\n');
    return 2;
  }
  const file = typeof values.config === 'string' ? values.config : undefined;
  let loaded;
  try {
    // The one validation path: --check-config stops after it, run goes on with its result.
    loaded = loadConfig({ file, env: process.env, flags });
    if (values['check-config']) {
      const { config: cfg, tables } = loaded;
      process.stdout.write(`configuration OK${file ? ` (${file})` : ''}: interfaces ${cfg.interfaces.join(', ')}, ` +
        `output ${cfg.collector.url ?? `${cfg.output.dir}/events.jsonl`}${cfg.ipfix.length ? `, ipfix ${cfg.ipfix.join(', ')}` : ''}` +
        `, ${tables.peersById.size} peers, ${tables.resourcesById.size} resources, ${tables.policies.length} policies\n${describePlan(loaded.memory)}\n`);
      if (values['check-source']) {
        const r = await checkSources(cfg, process.env);
        process.stdout.write(r.text);
        return r.ok ? 0 : 1;
      }
      return 0;
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`wgflow run: configuration error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }

  const cfg = loaded.config;
  const log = createLogger(cfg.log_level);
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({ config: cfg, tables: loaded.tables, memory: loaded.memory, configFile: file, flags, log });
  } catch (err) {
    const msg = err instanceof ConfigError ? `configuration error: ${err.message}` : (err as Error).message;
    log.fatal(msg);
    process.stderr.write(`wgflow run: ${msg}\n`);
    await new Promise((r) => setTimeout(r, 50)); // let the async log line out
    return err instanceof ConfigError ? 2 : 1;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (sig: string): void => {
      if (stopping) {
        log.warn({ signal: sig }, 'second signal: exiting now (the spool and pinned maps keep what was accepted)');
        resolve(1);
        return;
      }
      stopping = true;
      log.info({ signal: sig }, 'signal received');
      daemon.stop().then(() => resolve(0), (err: Error) => {
        log.error({ err: err.message }, 'error while stopping');
        resolve(1);
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      try {
        daemon.reload();
      } catch (err) {
        log.error({ err: (err as Error).message }, 'reload failed: keeping the current configuration');
      }
    });
  });
}
