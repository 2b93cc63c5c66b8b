/** Polls `fn` until it returns a truthy value (or stops throwing); fails after `timeoutMs`. */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  opts: { intervalMs?: number; message?: string } = {},
): Promise<NonNullable<T>> {
  const intervalMs = opts.intervalMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      lastErr = undefined;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      const why = lastErr instanceof Error ? `: ${lastErr.message}` : '';
      throw new Error(`waitFor timed out after ${timeoutMs} ms${opts.message ? ` (${opts.message})` : ''}${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * `p`, or a rejection with `message` once `ms` have passed, whichever comes first. A rejection
 * of `p` after that is dropped (it would otherwise be unhandled). `message` may be a function,
 * called at the timeout, to report progress made meanwhile.
 */
export async function within<T>(p: Promise<T>, ms: number, message: string | (() => string)): Promise<T> {
  p.catch(() => undefined);
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(typeof message === 'string' ? message : message())), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

/** A one-shot latch: `wait()` resolves once `open()` is called. */
export class Latch<T = void> {
  private resolveFn!: (v: T) => void;
  readonly promise: Promise<T>;
  opened = false;
  constructor() {
    this.promise = new Promise<T>((r) => (this.resolveFn = r));
  }
  open(v: T): void {
    this.opened = true;
    this.resolveFn(v);
  }
  wait(timeoutMs = 10_000): Promise<T> {
    return within(this.promise, timeoutMs, `latch not opened within ${timeoutMs} ms`);
  }
}

/** Counts down to zero; `wait()` resolves at zero. */
export class CountDown {
  private remaining: number;
  private readonly latch = new Latch();
  constructor(n: number) {
    this.remaining = n;
    if (n <= 0) this.latch.open();
  }
  tick(): void {
    this.remaining -= 1;
    if (this.remaining === 0) this.latch.open();
  }
  get left(): number {
    return this.remaining;
  }
  wait(timeoutMs?: number): Promise<void> {
    return this.latch.wait(timeoutMs);
  }
}
