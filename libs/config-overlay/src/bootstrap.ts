import { parse as parseYaml } from 'yaml';
import { hashValue } from './canonical';
import { ConfigValidationError } from './errors';
import { DEFAULT_SCOPE, DEFAULT_SCOPE_ID, type Scope } from './keys';
import type { ConfigStore } from './store';
import { validateConfig } from './schema';

export interface BootstrapFileOptions {
  /** Section the file provides, e.g. `pools`. */
  section: string;
  /** meta member holding the last merged file's hash, e.g. `_poolsFileHash` (CONTRACT §6). */
  fileHashMetaKey: string;
  /** The file's text (YAML or JSON) or its already parsed value. */
  content: unknown;
  scope?: Scope;
  scopeId?: string;
}

export interface BootstrapResult {
  written: boolean;
  revision: number;
  fileHash: string;
}

/**
 * D35: the file replaces its section only when the file itself changed since the last merge
 * (hash ≠ meta[fileHashMetaKey]); an unchanged file writes nothing, so a live edit made through
 * PUT /config survives every restart. The hash is of the parsed content in canonical JSON, so
 * comments and formatting changes do not count as a change. Written with the store's CAS loop:
 * N replicas starting at once merge the file exactly once.
 */
export async function mergeBootstrapFile(store: ConfigStore, o: BootstrapFileOptions): Promise<BootstrapResult> {
  const value: unknown = typeof o.content === 'string' ? parseYaml(o.content) : o.content;
  const errors = validateConfig({ [o.section]: value });
  if (errors.length > 0) throw new ConfigValidationError(errors);
  const fileHash = hashValue(value ?? null);
  const scope = o.scope ?? DEFAULT_SCOPE;
  const scopeId = o.scopeId ?? DEFAULT_SCOPE_ID;
  let unchangedRevision = 0;
  const res = await store.update(scope, scopeId, (doc) => {
    if (doc.meta[o.fileHashMetaKey] === fileHash) {
      unchangedRevision = doc.revision;
      return null;
    }
    const data = { ...doc.data };
    if (value === null || value === undefined) delete data[o.section];
    else data[o.section] = value;
    return { data, metaPatch: { [o.fileHashMetaKey]: fileHash } };
  });
  return res === null ? { written: false, revision: unchangedRevision, fileHash } : { written: true, revision: res.revision, fileHash };
}
