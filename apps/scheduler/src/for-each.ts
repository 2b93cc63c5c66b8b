/**
 * Runs `fn` over `items` with at most `concurrency` in flight (bounded scans, bounded Redis load).
 * Every item is run, whatever the others did (one job or group that fails every time must not
 * keep the rest from being looked at), and the promise settles only once all of them have: a
 * leader turn that failed is over when its promise is, so the next turn, or a stop(), never runs
 * beside what is left of it. Rejects with the first error once every item is done.
 */
export async function forEachLimit<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const item = items[next++] as T;
        try {
          await fn(item);
        } catch (err) {
          failure ??= { err };
        }
      }
    }),
  );
  if (failure) throw failure.err;
}
