import { createHash } from 'node:crypto';
import type { RedisClient } from './client';
import { RedisError, toRedisError } from './errors';

export interface ScriptSpec {
  name: string;
  lua: string;
  /** null: the caller passes any number of keys (`<name>-n.lua`; standalone Redis only, see scriptSpec). */
  numberOfKeys: number | null;
}

/**
 * `'acquire-2.lua'` (or a path ending in it) → `{ name: 'acquire', numberOfKeys: 2 }` (STYLE 5).
 * `'index-batch-n.lua'` → `numberOfKeys: null`: every key is still declared in KEYS, but their
 * number varies per call, so they may span hash slots; such a script is for standalone Redis only.
 */
export function scriptSpec(fileName: string, lua: string): ScriptSpec {
  const base = fileName.split('/').pop() ?? fileName;
  const m = /^(.+)-(\d+|n)(?:\.lua)?$/.exec(base);
  if (!m?.[1] || m[2] === undefined) throw new Error(`script file name must be <name>-<numKeys>.lua or <name>-n.lua, got ${fileName}`);
  return { name: m[1], lua, numberOfKeys: m[2] === 'n' ? null : Number(m[2]) };
}

export interface ScriptRunner {
  run<T = unknown>(name: string, keys: string[], args: (string | number)[]): Promise<T>;
}

interface Loaded extends ScriptSpec {
  sha: string;
}

/**
 * EVALSHA, falling back to EVAL on NOSCRIPT (after SCRIPT FLUSH, a restart, or a cluster node that
 * never saw the script; EVAL also caches it there). Works on Cluster because both commands are
 * routed by the slot of KEYS[1]; scripts must keep all keys in one slot (hash tags, D4).
 * Errors are rethrown as RedisError with a stable code.
 */
export function defineScripts(c: RedisClient, specs: ScriptSpec[]): ScriptRunner {
  const byName = new Map<string, Loaded>();
  for (const s of specs) {
    if (byName.has(s.name)) throw new Error(`duplicate script ${s.name}`);
    byName.set(s.name, { ...s, sha: createHash('sha1').update(s.lua).digest('hex') });
  }
  return {
    async run<T>(name: string, keys: string[], args: (string | number)[]): Promise<T> {
      const s = byName.get(name);
      if (!s) throw new RedisError('script_error', `unknown script ${name}`);
      if (s.numberOfKeys !== null && keys.length !== s.numberOfKeys) {
        throw new RedisError('script_error', `${name} expects ${s.numberOfKeys} keys, got ${keys.length}`);
      }
      try {
        return (await c.evalsha(s.sha, keys.length, ...keys, ...args)) as T;
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw toRedisError(err);
      }
      try {
        return (await c.eval(s.lua, keys.length, ...keys, ...args)) as T;
      } catch (err) {
        throw toRedisError(err);
      }
    },
  };
}
