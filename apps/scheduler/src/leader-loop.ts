// A loop that runs once per cluster: a D7 leader lease (TTL 15 s, renewed every
// 5 s, independent of the loop's own period) plus a self-rescheduling timer.
// The period is read on every turn and `reschedule()` applies a new one at
// once, so a live config change of scan_interval needs no restart (BEHAVIOURS §5).
import type { LeaderElector, Locks } from '@cordum/locks';
import { redisFailureKind, throttleFailures } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';

export interface LeaderLoop {
  start(): void;
  stop(): Promise<void>;
  isLeader(): boolean;
  /** Cancels the pending wait and schedules the next turn with the current period. */
  reschedule(): void;
  /** Runs one turn now if leader (tests, and reschedule on a shorter period). */
  runOnce(): Promise<void>;
}

export function createLeaderLoop(o: {
  name: string;
  locks: Locks;
  key: string;
  owner: string;
  ttlMs: number;
  renewMs: number;
  periodMs: () => number;
  logger: Logger;
  run: () => Promise<void>;
  /** Called on each turn this replica is not the leader (e.g. to zero a gauge only the leader sets). */
  notLeader?: () => void;
  /** Whether this replica may lead now (ElectorOptions.eligible); default always. */
  eligible?: () => boolean;
}): LeaderLoop {
  // P287: a new leader runs its first turn at once. On its own timer it came up to a period after
  // the election: a snapshot writer taking over from a crashed one wrote ~40 s after the crash
  // (every worker in the old snapshot past the 30 s online window meanwhile), a reconciler's
  // first scan came up to scan_interval late.
  const onElected = (): void => {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = undefined;
    void turn().finally(schedule);
  };
  const elector: LeaderElector = o.locks.elector({ key: o.key, owner: o.owner, ttlMs: o.ttlMs, renewMs: o.renewMs, logger: o.logger, onElected, ...(o.eligible ? { eligible: o.eligible } : {}) });
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  // A Redis outage fails every turn; one line per kind of failure per 30 s, with the count of
  // the ones not logged (as `leader campaign failed`). A turn that succeeds ends the run.
  const failures = throttleFailures((err, suppressed) => o.logger.warn(`${o.name} turn failed`, { err, ...(suppressed > 0 ? { suppressed } : {}) }), {
    kindOf: redisFailureKind,
  });

  const turn = async (): Promise<void> => {
    if (!elector.isLeader()) {
      o.notLeader?.();
      return running;
    }
    if (running) return running;
    running = o.run()
      .then(
        () => failures.reset(),
        (err: unknown) => failures.failed(err instanceof Error ? err : new Error(String(err))),
      )
      .finally(() => (running = undefined));
    return running;
  };

  const schedule = (): void => {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void turn().finally(schedule);
    }, o.periodMs());
  };

  return {
    start() {
      elector.start();
      schedule();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      await running;
      await elector.stop();
    },
    isLeader: () => elector.isLeader(),
    reschedule: schedule,
    runOnce: turn,
  };
}
