/**
 * Whether a log line about `key` may be written now: once per `everyMs` per key (a refused packet
 * that repeats every heartbeat is said once a minute, not every time). At most `maxKeys` keys are
 * remembered; past that all are forgotten at once, so a flood of distinct keys costs memory
 * bounded by `maxKeys` and is said again.
 */
export function createLogThrottle(everyMs: number, maxKeys = 1_000): (key: string) => boolean {
  const until = new Map<string, number>();
  return (key) => {
    const now = Date.now();
    if ((until.get(key) ?? 0) > now) return false;
    if (until.size >= maxKeys) until.clear();
    until.set(key, now + everyMs);
    return true;
  };
}
