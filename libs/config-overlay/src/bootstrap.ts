import { parseYamlStrict } from './yaml';
import { hashValue } from './canonical';
import { ConfigValidationError } from './errors';
import { DEFAULT_SCOPE, DEFAULT_SCOPE_ID, type Scope } from './keys';
import type { ConfigStore } from './store';
import { sectionFileErrors } from './schema';

export interface BootstrapFile {
  /** Section the file provides, e.g. `pools`. */
  section: string;
  /** meta member holding the last merged file's hash, e.g. `_poolsFileHash` (CONTRACT §6). */
  fileHashMetaKey: string;
  /** The file's text (YAML or JSON) or its already parsed value. */
  content: unknown;
  /** Where it came from (logs only). */
  source?: string;
}

export interface BootstrapFileOptions extends BootstrapFile {
  scope?: Scope;
  scopeId?: string;
}

export interface BootstrapResult {
  written: boolean;
  revision: number;
  fileHash: string;
}

export interface BootstrapFilesResult {
  /** True when this call wrote the document (at least one file changed since its last merge). */
  written: boolean;
  /** Revision after the call (the unchanged document's revision when nothing was written). */
  revision: number;
  files: { section: string; fileHash: string; merged: boolean; source?: string }[];
}

/**
 * A file gets the checks of a `PUT /config` (unknown keys, P66, then the section schema): merged,
 * `topic:` for `topics:` would replace the live routing with a section no replica reads.
 */
function parsed(f: BootstrapFile): { value: unknown; fileHash: string } {
  const value: unknown = typeof f.content === 'string' ? parseYamlStrict(f.content) : f.content;
  const errors = sectionFileErrors(f.section, value);
  if (errors.length > 0) throw new ConfigValidationError(f.source ? errors.map((e) => ({ ...e, message: `${e.message} (in ${f.source})` })) : errors);
  return { value, fileHash: hashValue(value ?? null) };
}

/**
 * D35 for several files in ONE compare-and-set write, so no replica ever reads the document with
 * one file merged and the other not. A file replaces its section only when the file itself
 * changed since its last merge (hash ≠ meta[fileHashMetaKey]); an unchanged file writes nothing,
 * so a live edit made through PUT /config survives every restart. The hash is of the parsed
 * content in canonical JSON: comments and formatting do not count as a change. The store's CAS
 * loop re-runs the comparison on a conflict: N replicas starting together merge a file once, and
 * a concurrent edit of another section is kept; one of a changed file's section that lands just
 * before the merge is replaced by the file.
 */
export async function mergeBootstrapFiles(
  store: ConfigStore,
  files: readonly BootstrapFile[],
  o: { scope?: Scope; scopeId?: string } = {},
): Promise<BootstrapFilesResult> {
  const items = files.map((f) => ({ f, ...parsed(f) }));
  let unchangedRevision = 0;
  let merged = new Set<string>();
  const res = await store.update(o.scope ?? DEFAULT_SCOPE, o.scopeId ?? DEFAULT_SCOPE_ID, (doc) => {
    merged = new Set();
    const data = { ...doc.data };
    const metaPatch: Record<string, unknown> = {};
    for (const { f, value, fileHash } of items) {
      if (doc.meta[f.fileHashMetaKey] === fileHash) continue;
      if (value === null || value === undefined) delete data[f.section];
      else data[f.section] = value;
      metaPatch[f.fileHashMetaKey] = fileHash;
      merged.add(f.section);
    }
    if (merged.size === 0) {
      unchangedRevision = doc.revision;
      return null;
    }
    return { data, metaPatch };
  });
  return {
    written: res !== null,
    revision: res === null ? unchangedRevision : res.revision,
    files: items.map(({ f, fileHash }) => ({ section: f.section, fileHash, merged: merged.has(f.section), source: f.source })),
  };
}

/** One file (see `mergeBootstrapFiles`). */
export async function mergeBootstrapFile(store: ConfigStore, o: BootstrapFileOptions): Promise<BootstrapResult> {
  const r = await mergeBootstrapFiles(store, [o], { scope: o.scope, scopeId: o.scopeId });
  const f = r.files[0];
  if (!f) throw new Error('mergeBootstrapFile: no result');
  return { written: r.written, revision: r.revision, fileHash: f.fileHash };
}
