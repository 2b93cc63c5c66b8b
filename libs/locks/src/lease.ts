import { performance } from 'node:perf_hooks';
import type { ScriptRunner } from '@cordum/redis';

export interface LeaseOptions {
  key: string;
  ttlMs: number;
  /** Instance id; the token is `<owner>:<fence>` (D4). */
  owner: string;
  /** Counter INCRed at acquire; default `${key}:fence`. Must share the lock key's hash slot. */
  fenceKey?: string;
}

/**
 * A held lock. Time is measured on the monotonic clock (performance.now), which keeps running
 * while the process is frozen (SIGSTOP, GC pause, VM stall) and never jumps with NTP, so a
 * process that wakes up can tell that its lease may have expired in the meantime (D3).
 */
export class Lease {
  readonly token: string;
  /** Monotonic time the last successful acquire/renew was *sent*: a conservative lower bound. */
  private lastOkAt: number;
  private lost = false;
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<boolean> | undefined;

  constructor(
    private readonly runner: ScriptRunner,
    readonly key: string,
    readonly owner: string,
    readonly fence: number,
    readonly ttlMs: number,
    sentAt: number,
    /** Told when this lease is released or marked released, so local waiters for the key can retry at once. */
    private readonly onReleased?: (key: string) => void,
  ) {
    this.token = `${owner}:${fence}`;
    this.lastOkAt = sentAt;
  }

  /** PEXPIRE iff the lock still holds our token; a missing key is never re-created (D3). */
  async renew(): Promise<boolean> {
    if (this.lost) return false;
    const sentAt = performance.now();
    const res = await this.runner.run<number>('renew', [this.key], [this.token, this.ttlMs]);
    if (res === 1) {
      this.lastOkAt = sentAt;
      return true;
    }
    this.lost = true;
    return false;
  }

  /** DEL iff the lock still holds our token. After release the lease is never safe to act on. */
  async release(): Promise<boolean> {
    this.stopAutoRenew();
    const wasLost = this.lost;
    this.lost = true;
    if (wasLost) return false;
    try {
      return (await this.runner.run<number>('release', [this.key], [this.token])) === 1;
    } finally {
      this.onReleased?.(this.key);
    }
  }

  /**
   * release(), and when Redis refuses it (away, restarting) the same compare-and-delete again
   * in the background every `retryEveryMs` (default 500) until Redis answers or the lock has
   * expired by itself (ttlMs after the last successful acquire or renew). Without the retries a
   * failed release leaves the lock blocking its key for the rest of its TTL after Redis is back.
   * Resolves after the first try; `onError` hears that try's error. The retries are safe: they
   * delete the key only while it still holds our token.
   */
  async releaseOrRetry(o: { retryEveryMs?: number; onError?: (err: unknown) => void } = {}): Promise<void> {
    const expiresAt = this.lastOkAt + this.ttlMs;
    try {
      await this.release();
      return;
    } catch (err) {
      o.onError?.(err);
    }
    const every = o.retryEveryMs ?? 500;
    const retry = (): void => {
      if (performance.now() + every >= expiresAt) return;
      setTimeout(() => {
        this.runner.run<number>('release', [this.key], [this.token]).then(() => undefined, retry);
      }, every).unref();
    };
    retry();
  }

  /**
   * The lock was deleted by a fenced script that checked our token in the same atomic step as
   * its write (e.g. a job-store transition with `release`): forget the lease locally without a
   * DEL round trip. Like after release(), it is never safe to act on again.
   */
  markReleased(): void {
    this.stopAutoRenew();
    const wasLost = this.lost;
    this.lost = true;
    if (!wasLost) this.onReleased?.(this.key);
  }

  /**
   * true iff the last successful acquire/renew was sent less than ttlMs - marginMs ago and the
   * lease was not found lost. Check right before an externally visible side effect (D3).
   */
  safeToAct(marginMs = 5000): boolean {
    return !this.lost && performance.now() - this.lastOkAt < this.ttlMs - marginMs;
  }

  /** Milliseconds since the last successful acquire/renew (monotonic). */
  sinceLastRenewMs(): number {
    return performance.now() - this.lastOkAt;
  }

  get isLost(): boolean {
    return this.lost;
  }

  /**
   * Renews every ttl/3. onLost fires once when a renew finds the lease gone or held by another
   * token, or when renews kept failing (Redis unreachable) until a whole TTL passed, after which
   * Redis has expired the key anyway. The timer is unref'd: a lease never keeps a process alive.
   */
  startAutoRenew(onLost?: () => void): void {
    if (this.timer || this.lost) return;
    const everyMs = Math.max(1, Math.floor(this.ttlMs / 3));
    const lostOnce = () => {
      this.stopAutoRenew();
      this.lost = true;
      onLost?.();
    };
    this.timer = setInterval(() => {
      if (this.renewing) return;
      this.renewing = this.renew();
      this.renewing
        .then((ok) => {
          if (!ok) lostOnce();
        }, () => {
          if (performance.now() - this.lastOkAt >= this.ttlMs) lostOnce();
        })
        .finally(() => (this.renewing = undefined))
        .catch(() => undefined);
    }, everyMs);
    this.timer.unref();
  }

  stopAutoRenew(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
