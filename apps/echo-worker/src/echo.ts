// The echo handler (D39): answers {echo: prompt, context, worker_id, attempt}.
// Prompt prefixes drive failure paths for scheduler tests: `fail:` → FAILED
// (error_code echo_failed), `retry:` → FAILED_RETRYABLE (error_code echo_retry).
import type { JobContext, JobOutcome } from '@cordum/worker-sdk';
import { appendFileSync } from 'node:fs';

export interface EchoOptions {
  workerId: string;
  echoDelayMs: number;
  execLogPath?: string;
  /** WORKER_ECHO_FAULTS: `fail:` and `retry:` prompts end FAILED / FAILED_RETRYABLE (tests); off, every job SUCCEEDS (D39). */
  faultPrompts?: boolean;
  onExecution?: (status: JobOutcome['status']) => void;
}

function field(input: unknown, name: string): unknown {
  return typeof input === 'object' && input !== null ? (input as Record<string, unknown>)[name] : undefined;
}

/** Resolves after ms, rejects with the signal's reason once it aborts (→ the SDK reports CANCELLED). */
function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal.reason as Error);
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export function echoHandler(o: EchoOptions): (job: JobContext) => Promise<JobOutcome> {
  return async (job) => {
    if (o.execLogPath) {
      // Synchronous append: the line is on disk before any work, so tests count
      // executions even when the process is SIGKILLed right after.
      const line = { job_id: job.request.jobId, dispatch_id: job.dispatchId, attempt: job.attempt, worker_id: o.workerId, ts: Date.now() };
      appendFileSync(o.execLogPath, `${JSON.stringify(line)}\n`);
    }
    await abortableDelay(o.echoDelayMs, job.signal);
    const prompt = field(job.input, 'prompt');
    const text = typeof prompt === 'string' ? prompt : '';
    const result = { echo: text, context: field(job.input, 'context') ?? null, worker_id: o.workerId, attempt: job.attempt };
    let outcome: JobOutcome;
    if (o.faultPrompts !== true) outcome = { status: 'SUCCEEDED', result };
    else if (text.startsWith('fail:')) outcome = { status: 'FAILED', result, errorCode: 'echo_failed', errorMessage: text.slice(5).trim() || 'echo asked to fail' };
    else if (text.startsWith('retry:')) outcome = { status: 'FAILED_RETRYABLE', result, errorCode: 'echo_retry', errorMessage: text.slice(6).trim() || 'echo asked to retry' };
    else outcome = { status: 'SUCCEEDED', result };
    o.onExecution?.(outcome.status);
    return outcome;
  };
}
