// A hashed timer wheel (seed 003): O(1) add/cancel, one interval timer for any
// number of pending probes. Pure apart from the injected clock functions, so it
// is unit-tested with fake timers. Items fire no earlier than their delay and
// at most one tick later.

export interface TimerWheelOptions<T> {
  /** Resolution; every tick fires the slot under the cursor. */
  tickMs: number;
  /** Longest delay accepted (sizes the wheel). */
  maxDelayMs: number;
  onExpire: (key: string, item: T) => void;
  setInterval?: (fn: () => void, ms: number) => NodeJS.Timeout;
  clearInterval?: (t: NodeJS.Timeout) => void;
}

export class TimerWheel<T> {
  private readonly slots: Map<string, T>[];
  private readonly where = new Map<string, number>();
  private cursor = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: TimerWheelOptions<T>) {
    if (o.tickMs <= 0 || o.maxDelayMs < o.tickMs) throw new RangeError('timer wheel needs 0 < tickMs <= maxDelayMs');
    this.slots = Array.from({ length: Math.ceil(o.maxDelayMs / o.tickMs) + 2 }, () => new Map<string, T>());
  }

  start(): void {
    if (this.timer) return;
    const set = this.o.setInterval ?? setInterval;
    this.timer = set(() => this.tick(), this.o.tickMs);
    this.timer.unref?.();
  }

  /** Drops every pending item (they are only hints: the reconciler is the backstop). */
  stop(): void {
    if (this.timer) (this.o.clearInterval ?? clearInterval)(this.timer);
    this.timer = undefined;
    for (const s of this.slots) s.clear();
    this.where.clear();
  }

  /** (Re)schedules `key`; a key already pending is moved, never duplicated. */
  add(key: string, item: T, delayMs: number): void {
    this.cancel(key);
    // +1: the add may land just before the next tick, which must not count as a whole tick.
    const ticks = Math.min(this.slots.length - 1, Math.max(1, Math.ceil(Math.min(delayMs, this.o.maxDelayMs) / this.o.tickMs)) + 1);
    const slot = (this.cursor + ticks) % this.slots.length;
    this.slotAt(slot).set(key, item);
    this.where.set(key, slot);
  }

  /** The pending item of `key`, if any. */
  get(key: string): T | undefined {
    const slot = this.where.get(key);
    return slot === undefined ? undefined : this.slotAt(slot).get(key);
  }

  cancel(key: string): boolean {
    const slot = this.where.get(key);
    if (slot === undefined) return false;
    this.slotAt(slot).delete(key);
    this.where.delete(key);
    return true;
  }

  get size(): number {
    return this.where.size;
  }

  private slotAt(i: number): Map<string, T> {
    const s = this.slots[i];
    if (!s) throw new RangeError(`timer wheel slot ${i} out of range`);
    return s;
  }

  private tick(): void {
    this.cursor = (this.cursor + 1) % this.slots.length;
    const due = this.slotAt(this.cursor);
    if (due.size === 0) return;
    const items = [...due];
    due.clear();
    for (const [key, item] of items) {
      this.where.delete(key);
      this.o.onExpire(key, item);
    }
  }
}
