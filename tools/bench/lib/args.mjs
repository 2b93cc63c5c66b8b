// Command lines of the bench's scripts: `--help` prints the script's header
// comment, and an unknown flag or a bad value exits 2 with one readable line
// instead of a stack trace or a silently ignored typo.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** The comment block at the top of a script (after the shebang), without the `//`. */
export function helpText(scriptUrl) {
  const lines = readFileSync(fileURLToPath(scriptUrl), 'utf8').split('\n').slice(1);
  const end = lines.findIndex((l) => !l.startsWith('//'));
  return lines.slice(0, end < 0 ? lines.length : end).map((l) => l.replace(/^\/\/ ?/, '')).join('\n');
}

/** One line on stderr, exit 2: what a user who mistyped a flag should see. */
export function usageError(tool, message) {
  process.stderr.write(`${tool}: ${message}\n`);
  process.exit(2);
}

/**
 * `options`: `{ name: { type: 'number' | 'string' | 'boolean', default?, min?, integer? } }`
 * (names without the dashes). Numbers must be finite and at least `min` (default 0),
 * whole when `integer`. Returns `{ values, positionals }`.
 */
export function scriptArgs(scriptUrl, argv, options, { positionals = false } = {}) {
  const tool = basename(fileURLToPath(scriptUrl));
  const nodeOptions = { help: { type: 'boolean', short: 'h' } };
  for (const [name, o] of Object.entries(options)) nodeOptions[name] = { type: o.type === 'boolean' ? 'boolean' : 'string' };
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: nodeOptions, allowPositionals: positionals, strict: true });
  } catch (e) {
    // node's first sentence ("Unknown option '--x'"), without its advice about positionals
    usageError(tool, `${String(e?.message ?? e).split('\n')[0].split(/\.\s/)[0].replace(/\.$/, '')} (try --help)`);
  }
  if (parsed.values.help) {
    process.stdout.write(helpText(scriptUrl) + '\n');
    process.exit(0);
  }
  const values = {};
  for (const [name, o] of Object.entries(options)) {
    const v = parsed.values[name];
    if (v === undefined) values[name] = o.default;
    else if (o.type !== 'number') values[name] = v;
    else {
      const n = Number(v);
      const min = o.min ?? 0;
      if (v.trim() === '' || !Number.isFinite(n) || n < min || (o.integer && !Number.isInteger(n))) {
        usageError(tool, `--${name} needs ${o.integer ? 'a whole number' : 'a number'} ≥ ${min}, got "${v}"`);
      }
      values[name] = n;
    }
  }
  return { values, positionals: parsed.positionals };
}
