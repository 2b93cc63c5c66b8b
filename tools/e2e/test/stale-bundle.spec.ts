// `npm start` builds a bundle again when a source of it changed after its build (tools/stack/stale.mjs,
// decisions.md P276): before, it built only missing bundles, so after a pull it ran the old code.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '@cordum/testing';

let root: string;

/** bundleOlderThanSources(root, name), run in a node process as the launcher runs it (an ES module). */
function stale(dir: string, name: string): boolean {
  const module = pathToFileURL(join(repoRoot, 'tools/stack/stale.mjs')).href;
  const script = `import { bundleOlderThanSources } from ${JSON.stringify(module)}; process.stdout.write(JSON.stringify(bundleOlderThanSources(${JSON.stringify(dir)}, ${JSON.stringify(name)})));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as boolean;
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'stale-bundle-'));
  for (const d of ['apps/svc/src', 'libs/one/src/deep', 'dist/apps/svc']) mkdirSync(join(root, d), { recursive: true });
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Writes `rel` under the fixture with its mtime `secondsAgo` in the past. */
function file(rel: string, secondsAgo: number): void {
  const p = join(root, rel);
  writeFileSync(p, 'x');
  const t = new Date(Date.now() - secondsAgo * 1000);
  utimesSync(p, t, t);
}

it('is false for a bundle built after every source, true once its app, a library (at any depth) or the lockfile changes after it', () => {
  file('apps/svc/src/main.ts', 100);
  file('libs/one/src/deep/lib.ts', 100);
  file('package-lock.json', 100);
  file('dist/apps/svc/main.js', 50);
  expect(stale(root, 'svc')).toBe(false);
  for (const changed of ['apps/svc/src/main.ts', 'libs/one/src/deep/lib.ts', 'package-lock.json']) {
    file(changed, 10);
    expect({ changed, stale: stale(root, 'svc') }).toEqual({ changed, stale: true });
    file(changed, 100);
  }
  expect(stale(root, 'svc')).toBe(false);
});

it('is false without a bundle (built as missing) or without the app sources (a bundle from elsewhere)', () => {
  expect(stale(root, 'other')).toBe(false);
  mkdirSync(join(root, 'dist/apps/prebuilt'), { recursive: true });
  file('dist/apps/prebuilt/main.js', 500);
  expect(stale(root, 'prebuilt')).toBe(false);
});
