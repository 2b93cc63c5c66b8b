// P146: Simulate parses and validates a candidate policy on the kernel's one event loop, the loop
// that answers every Check and Evaluate: a 256 KiB candidate holds it for 0.3–0.7 s. Twenty at
// once held Checks past the scheduler's 2 s deadline, which opened the shared breaker (D21) and
// put every job under input_fail_mode on a healthy kernel. So simulations run one at a time, the
// next no sooner than the last one's own run time after it ended (at most half the loop's time
// goes to them, and Checks that arrived meanwhile are answered in between), with at most
// `maxWaiting` waiting; one more is refused RESOURCE_EXHAUSTED, which the gateway answers 429.
import { GrpcStatus, grpcError } from '@cordum/protocol';

export interface SimulationGate {
  run<T>(fn: () => Promise<T>): Promise<T>;
}

export const SIMULATIONS_WAITING_MAX = 2;

export function createSimulationGate(o: { maxWaiting?: number; onRefused?: () => void; now?: () => number } = {}): SimulationGate {
  const maxWaiting = o.maxWaiting ?? SIMULATIONS_WAITING_MAX;
  const now = o.now ?? (() => performance.now());
  let busy = false;
  /** When the next simulation may start: the last one's end plus its run time. */
  let nextAt = 0;
  const waiting: Array<() => void> = [];

  const release = (): void => {
    const next = waiting.shift();
    if (!next) {
      busy = false;
      return;
    }
    const t = setTimeout(next, Math.max(0, nextAt - now()));
    t.unref();
  };

  return {
    async run(fn) {
      if (busy) {
        if (waiting.length >= maxWaiting) {
          o.onRefused?.();
          throw grpcError(GrpcStatus.RESOURCE_EXHAUSTED, `the kernel is running other policy simulations (${maxWaiting} waiting); retry shortly`);
        }
        await new Promise<void>((resolve) => waiting.push(resolve));
      } else {
        busy = true;
        // Checks that arrived during the last simulation get the loop first.
        const wait = nextAt - now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait).unref());
        else await new Promise((resolve) => setImmediate(resolve));
      }
      const started = now();
      try {
        return await fn();
      } finally {
        const end = now();
        nextAt = end + (end - started);
        release();
      }
    },
  };
}
