// Static API keys (CONTRACT §2, D26). Keys are kept only as SHA-256 digests and
// compared with timingSafeEqual over every entry, so neither the comparison nor
// the lookup order leaks how much of a guess was right.
import { createHash, timingSafeEqual } from 'node:crypto';
import { TENANT_RE } from '@cordum/protocol';

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** D26 tenant names (@cordum/protocol); `*` (any tenant) is only valid on a key, never as an acting tenant. */
export { TENANT_RE };
export const ANY_TENANT = '*';

/**
 * A principal id (static or managed key) or a managed key's name: at most 256 characters, no
 * control characters (P329). The principal goes into every JobRequest a worker gets, approvals and
 * audit events; a newline in it could forge a line in a worker's plain-text log, and a huge static
 * one made every dispatch too large for NATS (as labels did, P309).
 */
export const MAX_PRINCIPAL_CHARS = 256;
export const CONTROL_CHAR_RE = /\p{Cc}/u;
export const CONTROL_CHAR_MESSAGE = 'must not contain control characters';

export interface ApiKeyEntry {
  key: string;
  tenant: string;
  role: Role;
  principalId: string;
}

/** What a key proves: never the key itself. */
export interface KeyIdentity {
  tenant: string;
  role: Role;
  principalId: string;
  /**
   * Set by stores whose keys can stop working at run time (managed keys: revoked, expired).
   * Static keys leave it unset: the env tables are fixed for the life of the process, so a
   * long-lived caller (a WebSocket stream) need not look them up again.
   */
  revocable?: true;
  /** Epoch ms from which the key no longer authenticates; unset = never. */
  expiresAt?: number;
}

const ROLE_RANK: Readonly<Record<Role, number>> = { viewer: 0, operator: 1, admin: 2 };

/** admin ⊃ operator ⊃ viewer (D29). */
export function roleAllows(have: Role, need: Role): boolean {
  return ROLE_RANK[have] >= ROLE_RANK[need];
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

export interface KeyStore {
  /**
   * Managed keys need Redis, so a lookup may be async; static keys answer synchronously.
   * `client`: the caller's address without port, for the failed-login budget (P55).
   */
  lookup(presented: string, client?: string): KeyIdentity | null | Promise<KeyIdentity | null>;
}

/** Static keys first (no I/O), then the others in order. */
export function combineKeyStores(...stores: KeyStore[]): KeyStore {
  return {
    async lookup(presented: string, client?: string): Promise<KeyIdentity | null> {
      for (const s of stores) {
        const id = await s.lookup(presented, client);
        if (id) return id;
      }
      return null;
    },
  };
}

export function createStaticKeyStore(entries: readonly ApiKeyEntry[]): KeyStore {
  const table = entries.map((e) => ({ hash: digest(e.key), id: { tenant: e.tenant, role: e.role, principalId: e.principalId } }));
  return {
    lookup(presented: string): KeyIdentity | null {
      const h = digest(presented);
      let found: KeyIdentity | null = null;
      // No early exit: the time spent does not depend on which entry matched.
      for (const row of table) {
        if (timingSafeEqual(row.hash, h) && found === null) found = row.id;
      }
      return found;
    },
  };
}
