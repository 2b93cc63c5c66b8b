import { Counter, Registry } from 'prom-client';
import type { JobRecord } from '@cordum/job-store';
import type { SchedulerContext } from '../src/context';
import { createVerifier, MAX_QUEUED_PROBES } from '../src/verifier';

// The delivery verifier's probe queue, driven through its injected context: a store whose reads
// never answer stands for a Redis that stalls. Fake timers drive the wheel, scoped to this file (STYLE 9).
describe('delivery verifier probe queue', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('stays within its bound while probes never answer; the dropped oldest are counted skipped', async () => {
    const registry = new Registry();
    const verify = new Counter({ name: 'verify_test_total', help: 'test', labelNames: ['outcome'], registers: [registry] });
    let release: (v: JobRecord | null) => void = () => undefined;
    const stalled = new Promise<JobRecord | null>((r) => (release = r));
    const read: string[] = [];
    const ctx = {
      store: {
        getJob: (id: string) => {
          read.push(id);
          return stalled;
        },
      },
      metrics: { verify },
      logger: { warn: () => undefined },
    } as unknown as SchedulerContext;
    const v = createVerifier(() => ctx, { enabled: true, delayMs: 1_000, tickMs: 100 });
    v.start();
    const extra = 25;
    const tracked = MAX_QUEUED_PROBES + 10 + extra; // 10 probes run (and stall), the rest wait
    for (let i = 0; i < tracked; i++) v.track(`job-${i}`, `d-${i}`);
    jest.advanceTimersByTime(1_300); // every probe expires
    expect(read).toHaveLength(10);
    expect(v.queued()).toBe(MAX_QUEUED_PROBES);
    const skipped = async () => (await verify.get()).values.find((x) => x.labels['outcome'] === 'skipped')?.value ?? 0;
    expect(await skipped()).toBe(extra);
    // More expiries while the probes still stall: the queue stays at the bound, the count rises.
    for (let i = 0; i < 5; i++) v.track(`late-${i}`, `d-late-${i}`);
    jest.advanceTimersByTime(1_300);
    expect(v.queued()).toBe(MAX_QUEUED_PROBES);
    expect(await skipped()).toBe(extra + 5);
    expect(read).toHaveLength(10);
    const stopped = v.stop();
    release(null);
    await stopped;
    expect(v.queued()).toBe(0);
  });

  it('refuses a bound that is not a positive integer', () => {
    expect(() => createVerifier(() => undefined, { enabled: true, delayMs: 1_000, maxQueued: 0 })).toThrow(RangeError);
  });
});
