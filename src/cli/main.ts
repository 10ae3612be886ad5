// wgflow's command dispatcher. Each subcommand is one row of COMMANDS: a summary for the usage
// text and a loader returning its main(argv) => exit code. Add a row to add a command.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../util/addon';
import { version } from '../util/version';

export type CommandMain = (argv: string[]) => Promise<number>;

interface Command {
  summary: string;
  /** Left out of the usage text (test and benchmark helpers). */
  hidden?: boolean;
  load: () => Promise<CommandMain>;
}

/**
 * A command of the test and demo kit (testkit/): it does not ship in dist/, a checkout builds it
 * into build/testkit (make build). Elsewhere the command says so instead of failing obscurely.
 */
function fromTestkit(name: string): CommandMain {
  const path = join(REPO_ROOT, 'build', 'testkit', `${name}.js`);
  if (!existsSync(path)) {
    return async () => {
      process.stderr.write(`wgflow ${name}: part of the test and demo kit, which is not installed with wgflow (${path} is missing); in a checkout of wgflow run "make build" first\n`);
      return 1;
    };
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require(path) as { main: CommandMain }).main;
}

export const COMMANDS: Record<string, Command> = {
  run: {
    summary: 'the daemon: count flows on WireGuard interfaces and export them',
    load: async () => (await import('./run')).main,
  },
  ctl: {
    summary: 'talk to a running daemon: status, counters on|off, drops on|off, flows, reload',
    load: async () => (await import('./ctl')).main,
  },
  demo: {
    summary: 'a namespace testbed with WireGuard, the daemon, a collector and traffic, shown live',
    load: async () => fromTestkit('demo'),
  },
  collect: {
    summary: 'run the embedded collector: receive flow events over gRPC, write JSON lines',
    load: async () => (await import('./collect')).main,
  },
  consume: {
    summary: 'read flow events from a JetStream durable consumer, write JSON lines',
    load: async () => (await import('./consume')).main,
  },
  jetstream: {
    summary: 'jetstream init: create the NATS JetStream stream, or check an existing one',
    load: async () => (await import('./jetstream')).main,
  },
  'export-test': {
    summary: 'send N synthetic events through the exporter and spool (tests, benchmarks)',
    hidden: true,
    load: async () => fromTestkit('export-test'),
  },
};


export function usage(): string {
  const rows = Object.entries(COMMANDS).filter(([, c]) => !c.hidden);
  const width = Math.max(...rows.map(([n]) => n.length));
  return [
    'usage: wgflow <command> [options]',
    '',
    'commands:',
    ...rows.map(([n, c]) => `  ${n.padEnd(width)}  ${c.summary}`),
    '',
    'options:',
    '  --help, -h     show this help (wgflow <command> --help for a command\'s options)',
    '  --version, -V  print the version',
    '',
  ].join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === '--help' || first === '-h' || first === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  if (first === '--version' || first === '-V') {
    process.stdout.write(`wgflow ${version()}\n`);
    return 0;
  }
  if (first === undefined) {
    process.stderr.write(`wgflow: no command given\n\n${usage()}`);
    return 2;
  }
  const cmd = Object.prototype.hasOwnProperty.call(COMMANDS, first) ? COMMANDS[first] : undefined;
  if (!cmd) {
    process.stderr.write(`wgflow: unknown command "${first}"\n\n${usage()}`);
    return 2;
  }
  return (await cmd.load())(rest);
}

// Runs when executed directly or required by bin/wgflow; importing it (tests, other tools) runs nothing.
if (require.main === module || (require.main !== undefined && /[\\/]bin[\\/]wgflow$/.test(require.main.filename))) {
  run(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`wgflow: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
