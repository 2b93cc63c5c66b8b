/** D13: 1 s·2ⁿ capped at 30 s, ±20 % jitter. `n` starts at 0. */
export function backoffMs(n: number, rand: () => number = Math.random): number {
  const base = Math.min(30_000, 1000 * 2 ** Math.max(0, Math.min(n, 15)));
  return Math.round(base * (0.8 + 0.4 * rand()));
}
