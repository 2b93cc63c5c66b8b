import { redisErrorText, redisFailureKind, throttleFailures } from '@cordum/redis';
import type { Lease, LeaseOptions } from './lease';

/** Structural logger so the lib needs no dependency on service-kit. */
export interface LockLogger {
  info(msg: string, fields?: object): void;
  warn(msg: string, fields?: object): void;
}

export interface ElectorOptions {
  key: string;
  owner: string;
  /** Lease TTL (D7: 15 s). */
  ttlMs?: number;
  /** Renew period while leader and poll period while follower (D7: 5 s). */
  renewMs?: number;
  fenceKey?: string;
  onElected?: (lease: Lease) => void;
  onRevoked?: () => void;
  /**
   * Whether this replica may lead now (default: always). While false it does not campaign, and a
   * leader gives the lease up at its next renew, so a replica that cannot do the job (cut off from
   * NATS, say) leaves it to one that can.
   */
  eligible?: () => boolean;
  logger?: LockLogger;
}

export interface LeaderElector {
  start(): void;
  /** Stops campaigning and releases the lease if held, so another replica takes over at once. */
  stop(): Promise<void>;
  isLeader(): boolean;
  /** The current lease while leader (for fenced writes / safeToAct). */
  lease(): Lease | null;
}

type State = 'idle' | 'running' | 'stopped';

/**
 * Leader election on a lease (D7). A follower tries every renewMs; the leader renews every
 * renewMs. A leader steps down (onRevoked) when a renew finds the lease gone, or when renews have
 * failed for so long that the next one could land after expiry (safeToAct(renewMs) false), so it
 * stops acting before a follower can take over.
 */
export function createElector(tryAcquire: (o: LeaseOptions) => Promise<Lease | null>, o: ElectorOptions): LeaderElector {
  const ttlMs = o.ttlMs ?? 15_000;
  const renewMs = o.renewMs ?? 5_000;
  if (renewMs >= ttlMs) throw new RangeError(`renewMs (${renewMs}) must be < ttlMs (${ttlMs})`);
  let state: State = 'idle';
  let current: Lease | null = null;
  let timer: NodeJS.Timeout | undefined;
  let inflight: Promise<void> = Promise.resolve();
  let stopping: Promise<void> | undefined;
  let stepDownTimer: NodeJS.Timeout | undefined;
  // A follower tries every renewMs or less, so a Redis outage fails every try: log the first
  // failure, then every 30 s or when the error changes, as `redis connection error` is. An
  // outage's errors are one kind: their text alternates between "Command timed out" and a
  // command dropped unsent.
  const campaignFailures = throttleFailures(
    (err, suppressed) => o.logger?.warn('leader campaign failed', { key: o.key, err: redisErrorText(err), ...(suppressed > 0 ? { suppressed } : {}) }),
    { kindOf: redisFailureKind },
  );

  const revoke = (why: string) => {
    const lease = current;
    if (!lease) return;
    current = null;
    if (stepDownTimer) clearTimeout(stepDownTimer);
    stepDownTimer = undefined;
    o.logger?.warn('leadership lost', { key: o.key, owner: o.owner, why });
    // Best effort: if the lease is still ours (renews were merely slow), free it for the others.
    lease.release().catch(() => undefined);
    o.onRevoked?.();
  };

  // A renew can hang for a while when Redis is unreachable; this timer makes the step-down
  // depend on time alone: once renewMs short of expiry without a successful renew, we quit.
  const armStepDown = (lease: Lease) => {
    if (stepDownTimer) clearTimeout(stepDownTimer);
    const delayMs = Math.max(0, ttlMs - renewMs - lease.sinceLastRenewMs());
    stepDownTimer = setTimeout(() => {
      stepDownTimer = undefined;
      if (current !== lease) return;
      if (!lease.safeToAct(renewMs)) revoke('renew overdue');
      else armStepDown(lease);
    }, delayMs);
    stepDownTimer.unref();
  };

  const tick = async () => {
    if (o.eligible !== undefined && !o.eligible()) {
      revoke('not eligible');
      return;
    }
    if (current) {
      const lease = current;
      try {
        if (!(await lease.renew())) return revoke('lease gone or taken');
        if (current === lease) armStepDown(lease);
      } catch (err) {
        o.logger?.warn('leader renew failed', { key: o.key, err: redisErrorText(err) });
      }
      if (current === lease && !lease.safeToAct(renewMs)) revoke('renew overdue');
      return;
    }
    try {
      const lease = await tryAcquire({ key: o.key, owner: o.owner, ttlMs, fenceKey: o.fenceKey });
      campaignFailures.reset();
      if (!lease) return;
      if (state !== 'running') {
        await lease.release();
        return;
      }
      current = lease;
      armStepDown(lease);
      o.logger?.info('elected leader', { key: o.key, owner: o.owner, fence: lease.fence });
      o.onElected?.(lease);
    } catch (err) {
      campaignFailures.failed(err instanceof Error ? err : new Error(String(err)));
    }
  };

  const schedule = (delayMs: number) => {
    timer = setTimeout(() => {
      timer = undefined;
      inflight = tick().finally(() => {
        // Followers jitter below renewMs so takeover after a crash stays within TTL + renewMs.
        if (state === 'running') schedule(current ? renewMs : renewMs * (0.5 + Math.random() * 0.5));
      });
    }, delayMs);
  };

  return {
    start() {
      if (state === 'stopped') throw new Error('elector was stopped; create a new one');
      if (state === 'running') return;
      state = 'running';
      schedule(0);
    },
    stop() {
      stopping ??= (async () => {
        state = 'stopped';
        if (timer) clearTimeout(timer);
        timer = undefined;
        await inflight;
        if (stepDownTimer) clearTimeout(stepDownTimer);
        stepDownTimer = undefined;
        const lease = current;
        if (lease) {
          current = null;
          try {
            await lease.release();
          } catch (err) {
            o.logger?.warn('leader release failed', { key: o.key, err: String(err) });
          }
          o.onRevoked?.();
        }
      })();
      return stopping;
    },
    isLeader: () => current !== null && current.safeToAct(0),
    lease: () => current,
  };
}
