import { defineScripts, FENCED, scriptCodes, type RedisClient } from '@cordum/redis';
import { lockScripts } from './scripts';

/**
 * The fencing rule (D4): a lease's lock key holds its token `<owner>:<fence>`, so a write is
 * fenced by checking, inside the same Lua script and slot, that the lock still holds the
 * caller's token. Paste at the top of any fenced script (adjust the KEYS/ARGV indices):
 */
export const FENCE_CHECK_LUA = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -2 end`;

/** Return code of a fenced script whose token no longer matches. */
export const FENCED_CODE = FENCED;

/** Named errors for fenced scripts' negative codes (STYLE 5). */
export const fencingCodes = scriptCodes({ [FENCED]: 'fenced' });

/**
 * The tiny generic fenced write (`fencedSet-2.lua`): SET target = value iff GET lockKey == token.
 * Resolves 1 when written, -2 when fenced. Lock and target must share a hash slot in cluster mode.
 */
export function fencedSet(redis: RedisClient, lockKey: string, target: string, token: string, value: string): Promise<1 | -2> {
  return defineScripts(redis, lockScripts).run<1 | -2>('fencedSet', [lockKey, target], [token, value]);
}
