import { readFile } from 'node:fs/promises';
import { PolicyLoadError, type Policy } from '@cordum/config-overlay';
import { parsePolicy } from './parse';

/**
 * Used only when SAFETY_POLICY_PATH is unset AND no copy sits beside the bundle
 * (running from source): the same effect as the shipped config/safety.yaml (D22).
 */
export const BUILTIN_DEFAULT_POLICY: Policy = {
  version: 1,
  // No catch-all rule, so bundle rules (appended after the file's) stay reachable for job topics (P11).
  default_decision: 'allow',
  rules: [],
};

/** Reads and validates a policy file. Throws PolicyLoadError (code policy_invalid or policy_unreadable). */
export async function readPolicyFile(path: string): Promise<Policy> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    throw new PolicyLoadError(`cannot read ${path}: ${typeof code === 'string' ? code : String(err)}`, { cause: err });
  }
  try {
    return parsePolicy(text);
  } catch (err) {
    if (err instanceof PolicyLoadError) throw new PolicyLoadError(`${path}: ${err.message}`, { cause: err });
    throw err;
  }
}
