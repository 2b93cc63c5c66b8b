import { buildSync } from 'esbuild';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startProcess, type ManagedProcess } from '@cordum/testing';

const libs = resolve(__dirname, '../..');

/** Bundles fixtures/holder.ts (with the lib sources, not a build) into a temp dir. */
export function bundleHolder(): { file: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'cordum-locks-holder-'));
  const file = join(dir, 'holder.js');
  buildSync({
    entryPoints: [join(__dirname, 'fixtures/holder.ts')],
    outfile: file,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    logLevel: 'error',
    loader: { '.lua': 'text' },
    alias: {
      '@cordum/redis': join(libs, 'redis/src/index.ts'),
      '@cordum/locks': join(libs, 'locks/src/index.ts'),
    },
  });
  return { file, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function spawnHolder(file: string, name: string, env: Record<string, string>): ManagedProcess {
  return startProcess(name, process.execPath, [file], { ...env, OWNER: name });
}

/** The `k=v` fields of the last stdout line starting with `event`, or null. */
export function lastEvent(p: ManagedProcess, event: string): Record<string, string> | null {
  for (let i = p.output.length - 1; i >= 0; i--) {
    const line = p.output[i] ?? '';
    const [head, ...rest] = line.split(' ');
    if (head !== event) continue;
    const fields: Record<string, string> = { _: rest.join(' ') };
    for (const kv of rest) {
      const j = kv.indexOf('=');
      if (j > 0) fields[kv.slice(0, j)] = kv.slice(j + 1);
    }
    return fields;
  }
  return null;
}
