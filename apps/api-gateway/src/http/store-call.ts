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
    throw new ApiError('redis_unavailable', { cause: err });
  }
}
