// Whether an app's bundle (dist/apps/<name>/main.js) is older than a source it is built from: its
// app, any library, the lockfile, the base tsconfig, its project.json. `npm start` builds such a
// bundle again rather than run yesterday's code after a pull or an edit (decisions.md P276).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** The newest modification time (ms) of the files under `dir`, 0 when it does not exist. */
export function newestUnder(dir) {
  let newest = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestUnder(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** True when `root`'s bundle of app `name` exists and a source of it changed after it was built; false without sources here. */
export function bundleOlderThanSources(root, name) {
  const bundle = join(root, 'dist/apps', name, 'main.js');
  if (!existsSync(bundle) || !existsSync(join(root, 'apps', name, 'src'))) return false;
  const built = statSync(bundle).mtimeMs;
  const libs = existsSync(join(root, 'libs')) ? readdirSync(join(root, 'libs')).map((l) => join(root, 'libs', l, 'src')) : [];
  const files = ['package-lock.json', 'tsconfig.base.json', join('apps', name, 'project.json')].map((f) => join(root, f)).filter((f) => existsSync(f));
  return Math.max(newestUnder(join(root, 'apps', name, 'src')), ...libs.map(newestUnder), ...files.map((f) => statSync(f).mtimeMs)) > built;
}
