import { PolicyLoadError, parseYamlStrict, validatePolicy, type Policy, type PolicySnapshot } from '@cordum/config-overlay';
import { snapshotId } from './canonical';

/** Parses policy YAML text (CONTRACT §8). Throws PolicyLoadError with one line naming rule and field. */
export function parsePolicy(text: string): Policy {
  let raw: unknown;
  try {
    raw = parseYamlStrict(text);
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new PolicyLoadError(`YAML syntax: ${msg}`, { cause: err });
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new PolicyLoadError('policy: (root): expected a mapping with version, default_decision, rules');
  return validatePolicy(raw);
}

export function toSnapshot(policy: Policy, loadedAtMs: number): PolicySnapshot {
  return { id: snapshotId(policy), policy, loadedAtMs };
}
