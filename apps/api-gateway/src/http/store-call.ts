import { committedBeforeError } from '@cordum/job-store';
import { isRedisUnavailable, redisCommandNotRun } from '@cordum/redis';
import { withTimeout } from '../util/timeout';
import { ApiError } from './errors';

const STORE_TIMEOUT_MS = 3_000;

/**
 * Any Redis failure below a route is a dependency fault (503), never a 500. A call still running
 * when the request gives up on it (3 s) may succeed later: `onLate` gets what it produced then,
 * so a caller can undo it (a job lock must be released, not left held and renewing).
 */
export async function storeCall<T>(deps: { redisReady(): boolean }, what: string, p: () => Promise<T>, onLate?: (value: T) => void): Promise<T> {
  if (!deps.redisReady()) throw new ApiError('redis_unavailable');
  const pending = p();
  try {
    return await withTimeout(pending, STORE_TIMEOUT_MS, what);
  } catch (err) {
    if (onLate) pending.then(onLate, () => undefined);
    if (err instanceof ApiError) throw err;
    // P295: stored data that cannot be read is a fault to fix in Redis (500 internal, logged with
    // its key), not an outage to retry: the config routes answered so, GET /pools and /topics 503.
    if ((err as { code?: unknown } | null)?.code === 'config_corrupt') throw err;
    throw new ApiError('redis_unavailable', { cause: err });
  }
}

/**
 * Whether a store call that failed with `cause` may still have run: its answer timed out, or the
 * connection went down with it on the wire. Not when it was never written to the socket ("Stream
 * isn't writeable", ioredis's offline refusal). The submit's create (P39) goes by this.
 */
export function writeMayHaveRun(cause: unknown): boolean {
  if (cause === undefined) return false;
  const msg = cause instanceof Error ? cause.message : String(cause);
  if (/Stream isn't writeable/i.test(msg)) return false;
  return /timed out/i.test(msg) || isRedisUnavailable(cause);
}

/**
 * P258: whether a state change (one transition script, then its index and DLQ writes) that failed
 * with `cause` may have happened: it committed before a later write failed, or its write may have
 * run and Redis does not say it certainly did not (redisCommandNotRun).
 */
export function changeMayHaveRun(cause: unknown): boolean {
  if (committedBeforeError(cause)) return true;
  return writeMayHaveRun(cause) && !redisCommandNotRun(cause);
}

/**
 * storeCall for a state change a client repeats to learn its outcome (an approve, reject or
 * cancel, P258): a failure after which the change may have happened (its answer timed out, the
 * connection dropped with it in flight, or a write after it failed) answers 503 `state_unknown`
 * instead of `redis_unavailable`, which says it did not. Before, an approval that committed while
 * its gateway stalled answered `redis_unavailable`, and the job ran.
 */
export async function storeWrite<T>(deps: { redisReady(): boolean }, what: string, p: () => Promise<T>, unknownMessage?: string): Promise<T> {
  try {
    return await storeCall(deps, what, p);
  } catch (err) {
    if (err instanceof ApiError && err.code === 'redis_unavailable' && changeMayHaveRun(err.cause)) throw new ApiError('state_unknown', { cause: err.cause, ...(unknownMessage ? { message: unknownMessage } : {}) });
    throw err;
  }
}
