// Open streams re-check their API key (D27, D31). HTTP and gRPC look the key up
// on every call; a stream is one call that lasts for hours, so without this a
// revoked or expired managed key kept receiving its tenant's events until the
// TCP connection dropped. Every RECHECK_INTERVAL_MS each distinct revocable key
// that has an open stream on this replica is looked up once, through the same
// key store HTTP uses (and its ≤ RECORD_CACHE_MS record cache, so at most ~2
// HGETALL a second per key however many sockets share it), and every socket of
// that key gets the same tenant/role check as at its upgrade. A socket that
// fails it is invalidated: delivery stops at once and it is closed with 4401.
// Static keys are fixed for the life of the process and are not re-checked.
import { Counter, type Registry } from 'prom-client';
import type { Logger } from '@cordum/service-kit';
import { authorizeIdentity } from '../auth/middleware';
import type { KeyIdentity, KeyStore } from '../auth/keys';
import { ApiError } from '../http/errors';
import { errorText } from '@cordum/service-kit';
import { clusterNow } from '@cordum/redis';

/**
 * A revocation reaches a replica's record cache within RECORD_CACHE_MS (500 ms);
 * a socket sees it at the next tick after that, so revoked → closed within
 * RECORD_CACHE_MS + RECHECK_INTERVAL_MS + one Redis round trip ≈ 750 ms, inside
 * D27's 1 s. Expiry needs no Redis: it is judged from the expires_at of the last
 * successful lookup, so within RECHECK_INTERVAL_MS.
 */
export const RECHECK_INTERVAL_MS = 250;

const ROUTE = 'GET /api/v1/stream';

export interface WatchedStream {
  /** The tenant the stream was opened for; the key must still act in it. */
  tenant: string;
  /** X-Tenant-ID presented at the upgrade (undefined for subprotocol auth), re-applied on each check. */
  tenantHeader: string | undefined;
  /** Stops delivery at once and closes the socket; `why` is the error code HTTP would answer. */
  invalidate(why: string): void;
}

export interface KeyRechecker {
  /** Starts re-checking `key` for this stream if `id` (from its upgrade) is revocable; returns the unwatch. */
  watch(key: string, id: KeyIdentity, s: WatchedStream): () => void;
  stop(): void;
}

interface Group {
  streams: Set<WatchedStream>;
  /** From the last successful lookup; expiry closes streams even while Redis cannot answer. */
  expiresAt: number | undefined;
  /** A lookup for this key is on the wire: a slow Redis does not get a second one per tick. */
  checking: boolean;
}

export function createKeyRechecker(o: {
  keys: KeyStore;
  logger: Logger;
  registry: Registry;
  intervalMs?: number;
  now?: () => number;
}): KeyRechecker {
  const now = o.now ?? clusterNow;
  const groups = new Map<string, Group>();
  const invalidated = new Counter({
    name: 'cordum_ws_key_invalid_closed_total',
    help: 'Stream clients closed with 4401 because their API key was revoked, expired or no longer allows the stream',
    registers: [o.registry],
  });
  const failed = new Counter({
    name: 'cordum_ws_key_recheck_failed_total',
    help: 'Stream key re-checks the key store could not answer (Redis unreachable); the streams were kept open',
    registers: [o.registry],
  });
  let degraded = false;

  const forget = (key: string, g: Group): void => {
    if (g.streams.size === 0 && groups.get(key) === g) groups.delete(key);
  };

  /** Applies one verdict for `key` to every stream of it: the same tenant/role check as at the upgrade. */
  const apply = (key: string, g: Group, id: KeyIdentity | null): void => {
    for (const s of [...g.streams]) {
      let why: string | null = null;
      try {
        const c = authorizeIdentity(id, ROUTE, s.tenantHeader);
        if (c.tenant !== s.tenant) why = 'tenant_mismatch';
      } catch (err) {
        why = err instanceof ApiError ? err.code : 'unauthenticated';
      }
      if (why !== null && g.streams.delete(s)) {
        invalidated.inc();
        s.invalidate(why);
      }
    }
    forget(key, g);
  };

  const lookup = async (key: string, g: Group): Promise<void> => {
    let id: KeyIdentity | null;
    try {
      // No client address: the server re-checks a key it already verified; that is not a login
      // attempt, so it neither spends nor is refused by the failed-login budget (P55).
      id = await o.keys.lookup(key);
    } catch (err) {
      // "Cannot tell", as HTTP's 503 redis_unavailable is not a 401: the streams keep the verdict
      // of their last successful check (expiry still applies) and are looked up again next tick.
      failed.inc();
      if (!degraded) {
        degraded = true;
        o.logger.warn('stream key re-check failed; open streams kept until the key store answers', { err: errorText(err) });
      }
      return;
    } finally {
      g.checking = false;
    }
    if (degraded) {
      degraded = false;
      o.logger.info('stream key re-checks answered again');
    }
    g.expiresAt = id?.expiresAt;
    apply(key, g, id);
  };

  const tick = (): void => {
    const t = now();
    for (const [key, g] of groups) {
      if (g.expiresAt !== undefined && g.expiresAt <= t) {
        apply(key, g, null);
        continue;
      }
      if (g.checking) continue;
      g.checking = true;
      lookup(key, g).catch((err: unknown) => o.logger.error('stream key re-check crashed', { err: errorText(err) }));
    }
  };

  const timer = setInterval(tick, o.intervalMs ?? RECHECK_INTERVAL_MS);
  timer.unref();

  return {
    watch(key, id, s) {
      if (id.revocable !== true) return () => undefined;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { streams: new Set(), expiresAt: id.expiresAt, checking: false }));
      g.streams.add(s);
      const group = g;
      return () => {
        group.streams.delete(s);
        forget(key, group);
      };
    },
    stop() {
      clearInterval(timer);
      groups.clear();
    },
  };
}
