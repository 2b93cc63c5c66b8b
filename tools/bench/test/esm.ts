// The bench's modules are ES modules (.mjs) and jest here runs CommonJS, so a test evaluates an
// expression over one of them in a child node and reads the JSON it prints.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '@cordum/testing';

/** `expr` evaluated with the module at `modulePath` (from the repo root) bound to `m`. */
export function evalModule(modulePath: string, expr: string): unknown {
  const url = pathToFileURL(join(repoRoot, modulePath)).href;
  const code = `const m = await import(${JSON.stringify(url)}); console.log(JSON.stringify(${expr}));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as unknown;
}
