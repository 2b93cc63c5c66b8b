import { renameSync, writeFileSync } from 'node:fs';

/**
 * Writes `data` to `path` the way a Kubernetes Secret volume changes a file: a whole new file,
 * renamed in, so a reader sees the old contents or the new ones, never half of them.
 */
export function replaceFileWhole(path: string, data: string | Uint8Array): void {
  writeFileSync(`${path}.new`, data);
  renameSync(`${path}.new`, path);
}
