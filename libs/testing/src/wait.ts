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
  async wait(timeoutMs = 10_000): Promise<T> {
    let t: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.promise,
        new Promise<T>((_, rej) => (t = setTimeout(() => rej(new Error(`latch not opened within ${timeoutMs} ms`)), timeoutMs))),
      ]);
    } finally {
      if (t) clearTimeout(t);
    }
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
