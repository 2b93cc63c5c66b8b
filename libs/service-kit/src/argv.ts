import { isAbsolute, relative } from 'node:path';

// Command-line arguments. A service takes none: every setting is an env var (CONTRACT §1).
// `--help` says where they are documented; anything else is refused. Both happen before the
// config is loaded or anything is connected, so `main.js --help` never joins a running stack.
//   invalid arguments: unknown argument "--foo"; services are configured by environment variables (see --help)

const HELP_FLAGS = new Set(['-h', '--help']);

export type ServiceArgs = { kind: 'run' } | { kind: 'help' } | { kind: 'invalid'; message: string };

/** The command-line arguments after `node main.js`. The one place outside tests that reads them. */
export function processArgs(): string[] {
  return process.argv.slice(2);
}

/** No arguments → run; only -h/--help → help; anything else → invalid, with its one-line message. */
export function parseServiceArgs(argv: readonly string[]): ServiceArgs {
  const bad = argv.find((a) => !HELP_FLAGS.has(a));
  if (bad !== undefined) {
    const shown = bad.length > 80 ? `${bad.slice(0, 77)}...` : bad;
    return { kind: 'invalid', message: `invalid arguments: unknown argument ${JSON.stringify(shown)}; services are configured by environment variables (see --help)` };
  }
  return argv.length === 0 ? { kind: 'run' } : { kind: 'help' };
}

export interface ServiceUsageOptions {
  /** The service name, e.g. `scheduler`. */
  name: string;
  /** Its README, relative to the repository root; defaults to `apps/<name>/README.md`. */
  readme?: string;
  /** How the process was started, for the usage line; defaults to process.argv[1]. */
  script?: string;
}

/** The `--help` text. */
export function serviceUsage(opts: ServiceUsageOptions): string {
  const readme = opts.readme ?? `apps/${opts.name}/README.md`;
  return [
    `${opts.name}: a Cordum service`,
    '',
    `Usage: node ${scriptPath(opts.script ?? process.argv[1])} [-h | --help]`,
    '',
    'It takes no other arguments: it is configured only by environment variables,',
    `documented in ${readme} and docs/operations.md.`,
    'A bad value stops it at start with one stderr line naming the variable (exit code 2).',
    '',
    'Options:',
    '  -h, --help   print this help and exit',
    '',
  ].join('\n');
}

function scriptPath(script: string | undefined): string {
  if (script === undefined || script === '') return 'main.js';
  const rel = relative(process.cwd(), script);
  return rel === '' || rel.startsWith('..') || isAbsolute(rel) ? script : rel;
}

export interface CommandLineOptions extends ServiceUsageOptions {
  /** Defaults to processArgs(). */
  argv?: readonly string[];
  exit?: (code: number) => void;
}

/**
 * Call first in main, before loading the config. Returns true when there are no arguments
 * (go on starting). Otherwise prints the usage to stdout and exits 0 (`-h`, `--help`) or prints
 * one line to stderr and exits 2, like a bad env value, and returns false.
 */
export function acceptCommandLine(opts: CommandLineOptions): boolean {
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const args = parseServiceArgs(opts.argv ?? processArgs());
  if (args.kind === 'run') return true;
  if (args.kind === 'help') {
    process.stdout.write(serviceUsage(opts));
    exit(0);
  } else {
    process.stderr.write(`${args.message}\n`);
    exit(2);
  }
  return false;
}
