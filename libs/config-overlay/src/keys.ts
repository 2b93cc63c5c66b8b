import { KeyBuilder } from '@cordum/redis';

export const SCOPES = ['system', 'org', 'team', 'workflow', 'step'] as const;
export type Scope = (typeof SCOPES)[number];

/** The document every service applies today (D34: lower scopes wait for workflows). */
export const DEFAULT_SCOPE: Scope = 'system';
export const DEFAULT_SCOPE_ID = 'default';

export interface ConfigKeys {
  /** `cfg:<scope>:<scope_id>` (CONTRACT §6). */
  doc(scope: Scope, scopeId: string): string;
  /** `cordum:config:applied:<service>:<instance>` (CONTRACT §5, D33). */
  applied(service: string, instanceId: string): string;
  /** SCAN pattern matching every applied report. */
  appliedPattern(): string;
  /** ZSET of the applied report keys, scored by their expiry (epoch ms), read by the status view (P60). */
  appliedIndex(): string;
}

/** All key names of this lib; `prefix` only in library unit tests (D49). */
export function configKeys(prefix = ''): ConfigKeys {
  const kb = new KeyBuilder(prefix);
  return {
    doc: (scope, scopeId) => kb.key('cfg', scope, scopeId),
    applied: (service, instanceId) => kb.key('cordum', 'config', 'applied', service, instanceId),
    appliedPattern: () => kb.key('cordum', 'config', 'applied', '*'),
    appliedIndex: () => kb.key('cordum', 'config', 'reports'),
  };
}

export interface SafetyConfigKeys {
  /**
   * `cordum:safety:file-rules` (CONTRACT §5 style): a hash, field = safety-kernel instance id,
   * value = JSON `FileRules` (the rule ids of that kernel's policy file and when the entry
   * expires). Kernels write it, config writers read it to refuse a bundle rule id that a
   * kernel's file already has (one HGETALL per write of the `safety` section).
   */
  fileRules(): string;
}

/** Safety-kernel keys that config writers read too; `prefix` only in library unit tests (D49). */
export function safetyConfigKeys(prefix = ''): SafetyConfigKeys {
  const kb = new KeyBuilder(prefix);
  return {
    fileRules: () => kb.key('cordum', 'safety', 'file-rules'),
  };
}
