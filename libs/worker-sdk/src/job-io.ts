// Redis side of a job: the dispatch claim (D1), the ctx input and the res output (CONTRACT §5).
import { defineScripts, scriptSpec, type RedisClient, type ScriptRunner } from '@cordum/redis';
import claimLua from './lua/claim-2.lua';
import { pointerKey, workerKeys } from './keys';

export type ClaimVerdict = 'claimed' | 'duplicate' | 'stale' | 'not_current' | 'terminal';

const VERDICTS: Record<number, ClaimVerdict> = { 1: 'claimed', 0: 'duplicate', [-1]: 'stale', [-2]: 'not_current', [-3]: 'terminal' };

export class InputError extends Error {
  constructor(
    readonly code: 'context_unreadable' | 'context_invalid_json',
    message: string,
    opts?: { cause?: unknown },
  ) {
    super(message, opts);
    this.name = 'InputError';
  }
}

export class JobIo {
  private readonly scripts: ScriptRunner;

  constructor(
    private readonly redis: RedisClient,
    private readonly claimTtlMs: number,
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

  /** Input JSON at the context pointer; null when there is no pointer or no value. */
  async readInput(contextPtr: string): Promise<unknown> {
    const key = pointerKey(contextPtr);
    if (key === null) return null;
    let raw: string | null;
    try {
      raw = await this.redis.get(key);
    } catch (err) {
      throw new InputError('context_unreadable', `cannot read ${key}: ${(err as Error).message}`, { cause: err });
    }
    if (raw === null) return null;
    try {
      return JSON.parse(raw) as unknown;
    } catch (err) {
      throw new InputError('context_invalid_json', `${key} is not JSON`, { cause: err });
    }
  }

  /** Writes `res:<id>`; no TTL here: the scheduler sets EXPIRE when the job turns terminal (D45). */
  async writeResult(jobId: string, result: unknown): Promise<string> {
    await this.redis.set(workerKeys.res(jobId), JSON.stringify(result));
    return workerKeys.resPtr(jobId);
  }
}
