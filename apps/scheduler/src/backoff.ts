/** D13 without jitter: 1 s·2ⁿ capped at 30 s. `n` starts at 0. */
export function backoffBaseMs(n: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, Math.min(n, 15)));
}

/** D13: 1 s·2ⁿ capped at 30 s, ±20 % jitter. `n` starts at 0. */
export function backoffMs(n: number, rand: () => number = Math.random): number {
  return Math.round(backoffBaseMs(n) * (0.8 + 0.4 * rand()));
}
