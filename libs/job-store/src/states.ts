// The ONE transition table (D12). The Lua scripts receive the allowed sources
// for the target state from here, so Redis enforces exactly this table.

export type JobState =
  | 'PENDING'
  | 'APPROVAL_REQUIRED'
  | 'SCHEDULED'
  | 'DISPATCHED'
  | 'RUNNING'
  | 'RETRYING'
  | 'SUCCEEDED'
  | 'FAILED'
  | 'CANCELLED'
  | 'TIMEOUT'
  | 'DENIED'
  | 'OUTPUT_QUARANTINED';

export const JOB_STATES: readonly JobState[] = [
  'PENDING',
  'APPROVAL_REQUIRED',
  'SCHEDULED',
  'DISPATCHED',
  'RUNNING',
  'RETRYING',
  'SUCCEEDED',
  'FAILED',
  'CANCELLED',
  'TIMEOUT',
  'DENIED',
  'OUTPUT_QUARANTINED',
];

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set<JobState>([
  'SUCCEEDED',
  'FAILED',
  'CANCELLED',
  'TIMEOUT',
  'DENIED',
  'OUTPUT_QUARANTINED',
]);

/**
 * Terminal states that something other than an attempt's own result ends a job in (a cancel, a
 * timeout, a denial): its worker may not know. SUCCEEDED, FAILED and OUTPUT_QUARANTINED of a job
 * with an attempt out come from that attempt's result (the scheduler fails only jobs with no
 * attempt out), so the worker is done (P127, P129).
 */
export const ENDED_BY_OTHERS: ReadonlySet<JobState> = new Set<JobState>([...TERMINAL_STATES].filter((s) => s !== 'SUCCEEDED' && s !== 'FAILED' && s !== 'OUTPUT_QUARANTINED'));

/** States in which the job's current attempt is out with a worker (dispatched, maybe started). */
export const ATTEMPT_OUT_STATES: ReadonlySet<JobState> = new Set<JobState>(['DISPATCHED', 'RUNNING']);

/** Terminal states that get a DLQ entry (D14; never CANCELLED), but for a job failed at submit (D11, failedAtSubmit). */
export const DLQ_STATES: ReadonlySet<JobState> = new Set<JobState>(['FAILED', 'DENIED', 'TIMEOUT']);

/** D11: the error code of a job the gateway failed at submit because its publish failed. */
export const SUBMIT_FAILED_CODE = 'bus_unavailable';

/**
 * D11: a job FAILED at submit (`bus_unavailable`, never dispatched) was never accepted: its client
 * got 503 and retries the request itself (with its Idempotency-Key), so it gets no DLQ entry on any
 * path, and an entry written before that rule is not retried (a retry would run it a second time).
 * Takes a record's (state, error code, attempts) or a DLQ entry's (last_state, reason_code,
 * attempts). A dispatched job whose worker reported `bus_unavailable` (attempts ≥ 1) is an
 * ordinary dead letter.
 */
export function failedAtSubmit(state: string, code: string | undefined, attempts: number): boolean {
  return state === 'FAILED' && code === SUBMIT_FAILED_CODE && attempts === 0;
}

export const TRANSITIONS: Readonly<Record<JobState, readonly JobState[]>> = {
  PENDING: ['APPROVAL_REQUIRED', 'SCHEDULED', 'DENIED', 'FAILED', 'CANCELLED'],
  APPROVAL_REQUIRED: ['PENDING', 'DENIED', 'CANCELLED'],
  SCHEDULED: ['DISPATCHED', 'PENDING', 'FAILED', 'CANCELLED'],
  // DISPATCHED → DISPATCHED is a new attempt of the same job (D1/D12).
  DISPATCHED: ['DISPATCHED', 'RUNNING', 'RETRYING', 'SUCCEEDED', 'FAILED', 'TIMEOUT', 'CANCELLED'],
  RUNNING: ['RETRYING', 'SUCCEEDED', 'FAILED', 'TIMEOUT', 'CANCELLED'],
  RETRYING: ['DISPATCHED', 'FAILED', 'CANCELLED'],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
  TIMEOUT: [],
  DENIED: [],
  OUTPUT_QUARANTINED: [],
};

export function isJobState(s: string): s is JobState {
  return (JOB_STATES as readonly string[]).includes(s);
}

/** States from which `to` may be entered, per the table. */
export function allowedSources(to: JobState): JobState[] {
  return JOB_STATES.filter((from) => TRANSITIONS[from].includes(to));
}

export function canTransition(from: JobState, to: JobState): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Non-terminal states the reconciler / replayer track in `job:active:<state>`. */
export const ACTIVE_STATES: ReadonlySet<JobState> = new Set<JobState>(['PENDING', 'SCHEDULED', 'DISPATCHED', 'RUNNING', 'RETRYING']);
