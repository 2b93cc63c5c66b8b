// Redis side of a job: the dispatch claim (D1), the ctx input and the res output (CONTRACT §5).
import { defineScripts, redisErrorText, scriptSpec, type RedisClient, type ScriptRunner } from '@cordum/redis';
import claimLua from './lua/claim-2.lua';
import { pointerKey, workerKeys } from './keys';

export type ClaimVerdict = 'claimed' | 'duplicate' | 'stale' | 'not_current' | 'terminal';

const VERDICTS: Record<number, ClaimVerdict> = { 1: 'claimed', 0: 'duplicate', [-1]: 'stale', [-2]: 'not_current', [-3]: 'terminal' };

export class InputError extends Error {
  constructor(
    readonly code: 'context_unreadable' | 'context_invalid_json' | 'context_pointer_invalid',
    message: string,
    opts?: { cause?: unknown },
  ) {
    super(message, opts);
    this.name = 'InputError';
  }
}

/**
 * TTL the worker gives `res:<id>` when it writes it: the job TTL's default (JOB_TTL 7 d, D45;
 * CONTRACT §5). The scheduler sets the deployment's exact job TTL when the job turns terminal;
 * this one only bounds a result the scheduler never gets to (the worker died between the write
 * and the result publish, or the job's record expired first). The SDK is not told the
 * deployment's JOB_TTL (1 m to 30 d): with a shorter one the scheduler shortens the key, with a
 * longer one it lengthens it, at the terminal write that follows the publish right away.
 */
export const DEFAULT_RESULT_TTL_MS = 7 * 24 * 3600_000;

export class JobIo {
  private readonly scripts: ScriptRunner;

  constructor(
    private readonly redis: RedisClient,
    private readonly claimTtlMs: number,
    private readonly resultTtlMs: number = DEFAULT_RESULT_TTL_MS,
  ) {
    this.scripts = defineScripts(redis, [scriptSpec('claim-2.lua', claimLua)]);
  }

  async claim(jobId: string, dispatchId: string, attempt: number, workerId: string): Promise<ClaimVerdict> {
    const code = await this.scripts.run<number>(
      'claim',
      [workerKeys.claim(jobId), workerKeys.jobMeta(jobId)],
      [attempt, dispatchId, workerId, this.claimTtlMs],
    );
    const verdict = VERDICTS[Number(code)];
    if (!verdict) throw new Error(`claim-2.lua returned unexpected ${String(code)}`);
    return verdict;
  }

  /**
   * Input JSON at the context pointer; null when there is no pointer or no value. P298: only the
   * job's own `ctx:<job id>` (CONTRACT §5) is read: a request naming another key (another job's
   * context, any string key this worker's Redis user may read) would have handed it to the handler,
   * and through the result to the job's tenant.
   */
  async readInput(jobId: string, contextPtr: string): Promise<unknown> {
    if (contextPtr === '') return null;
    // P318: any other pointer (no scheme, another scheme or case, `redis://` alone) is refused too:
    // read as "no input", the handler ran on null and answered SUCCEEDED.
    const key = pointerKey(contextPtr);
    if (key === null || key !== workerKeys.ctx(jobId)) throw new InputError('context_pointer_invalid', `context pointer ${contextPtr.slice(0, 300)} is not this job's (redis://${workerKeys.ctx(jobId)})`);
    let raw: string | null;
    try {
      raw = await this.redis.get(key);
    } catch (err) {
      throw new InputError('context_unreadable', `cannot read ${key}: ${redisErrorText(err)}`, { cause: err });
    }
    if (raw === null) return null;
    try {
      return JSON.parse(raw) as unknown;
    } catch (err) {
      throw new InputError('context_invalid_json', `${key} is not JSON`, { cause: err });
    }
  }

  /**
   * Writes `res:<id>` with a TTL (DEFAULT_RESULT_TTL_MS): a plain SET would also clear any TTL
   * the key had, and nothing would expire it if the scheduler never applies the result. The
   * scheduler then sets the job TTL when the job turns terminal (D45). `json` is the result
   * already serialised (once, by the caller: a result that cannot be is not a Redis error to retry).
   */
  async writeResult(jobId: string, json: string): Promise<string> {
    await this.redis.set(workerKeys.res(jobId), json, 'PX', this.resultTtlMs);
    return workerKeys.resPtr(jobId);
  }
}
