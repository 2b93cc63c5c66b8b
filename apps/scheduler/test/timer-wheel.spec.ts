import { TimerWheel } from '../src/timer-wheel';
import { backoffMs } from '../src/backoff';
import { BUSY_NAK_MS, busyNakMs, escalateBusy } from '../src/job-lock';

// Pure logic: fake timers, scoped to this file (STYLE 9).
describe('TimerWheel (fake timers)', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  function wheel(tickMs = 100, maxDelayMs = 1000) {
    const fired: Array<{ key: string; at: number }> = [];
    const start = Date.now();
    const w = new TimerWheel<string>({ tickMs, maxDelayMs, onExpire: (key) => fired.push({ key, at: Date.now() - start }) });
    w.start();
    return { w, fired };
  }

  it('fires an item no earlier than its delay and at most one tick later', () => {
    const { w, fired } = wheel();
    jest.advanceTimersByTime(50); // add mid-tick
    w.add('a', 'x', 300);
    jest.advanceTimersByTime(299);
    expect(fired).toEqual([]);
    jest.advanceTimersByTime(101);
    expect(fired.map((f) => f.key)).toEqual(['a']);
    expect(fired[0]!.at).toBeGreaterThanOrEqual(350);
    expect(fired[0]!.at).toBeLessThanOrEqual(450);
    expect(w.size).toBe(0);
    w.stop();
  });

  it('cancel removes an item; re-adding a key moves it instead of duplicating it', () => {
    const { w, fired } = wheel();
    w.add('a', 'x', 200);
    w.add('b', 'y', 200);
    expect(w.cancel('a')).toBe(true);
    expect(w.cancel('a')).toBe(false);
    w.add('b', 'y2', 600);
    jest.advanceTimersByTime(400);
    expect(fired).toEqual([]);
    jest.advanceTimersByTime(400);
    expect(fired.map((f) => f.key)).toEqual(['b']);
    w.stop();
  });

  it('clamps delays to the wheel size and handles many items across a wrap-around', () => {
    const { w, fired } = wheel(100, 500);
    for (let i = 0; i < 50; i++) w.add(`k${i}`, 'v', (i % 5) * 100 + 100);
    w.add('long', 'v', 10_000); // clamped to maxDelayMs
    jest.advanceTimersByTime(800);
    expect(fired).toHaveLength(51);
    expect(fired.find((f) => f.key === 'long')!.at).toBeLessThanOrEqual(700);
    w.stop();
  });

  it('stop drops pending items and stops ticking', () => {
    const { w, fired } = wheel();
    w.add('a', 'x', 200);
    w.stop();
    jest.advanceTimersByTime(1000);
    expect(fired).toEqual([]);
    expect(w.size).toBe(0);
  });
});

describe('backoffMs (D13)', () => {
  it('is 1 s·2ⁿ capped at 30 s with ±20 % jitter', () => {
    expect(backoffMs(0, () => 0.5)).toBe(1000);
    expect(backoffMs(3, () => 0.5)).toBe(8000);
    expect(backoffMs(10, () => 0.5)).toBe(30_000);
    expect(backoffMs(0, () => 0)).toBe(800);
    expect(backoffMs(10, () => 1)).toBe(36_000);
  });
});

describe('busy NAK schedule (D6 + D8)', () => {
  it('starts at 100 ms and follows 0.1/0.5/1/2/5 s, so 20 deliveries outlast a 30 s lock TTL', () => {
    expect([1, 2, 3, 4, 5, 6, 20].map(busyNakMs)).toEqual([100, 500, 1000, 2000, 5000, 5000, 5000]);
    const span = Array.from({ length: 19 }, (_, i) => busyNakMs(i + 1)).reduce((a, b) => a + b, 0);
    expect(span).toBeGreaterThan(30_000);
    expect(escalateBusy({ kind: 'nak', delayMs: BUSY_NAK_MS }, 4)).toEqual({ kind: 'nak', delayMs: 2000 });
    expect(escalateBusy({ kind: 'nak', delayMs: 5000 }, 4)).toEqual({ kind: 'nak', delayMs: 5000 });
    expect(escalateBusy({ kind: 'ack' }, 4)).toEqual({ kind: 'ack' });
  });
});
