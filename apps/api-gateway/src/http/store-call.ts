import { withTimeout } from '../util/timeout';
import { ApiError } from './errors';

const STORE_TIMEOUT_MS = 3_000;

/** Any Redis failure below a route is a dependency fault (503), never a 500. */
export async function storeCall<T>(deps: { redisReady(): boolean }, what: string, p: () => Promise<T>): Promise<T> {
  if (!deps.redisReady()) throw new ApiError('redis_unavailable');
  try {
    return await withTimeout(p(), STORE_TIMEOUT_MS, what);
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError('redis_unavailable', { cause: err });
  }
}
