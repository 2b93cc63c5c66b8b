// The bench's "machine steadiness" verdict (lib/report.mjs): one model measured again in the same
// run should give the same saturated jobs/s, so its spread says how much the machine moved.
import { evalModule } from './esm';

interface Repeats { runs: number[]; min: number | null; max: number | null; spread: number | null }
interface Steadiness { verdict: string; reasons: string[]; bare: Repeats; stack: Repeats; bullmq: Repeats; bound: number }

const saturated = (jobsPerS: number): unknown => ({ saturated: { completedPerS: jobsPerS } });

/** A results object with the bare pipeline's and the 1x stack's runs at these jobs/s. */
function results(bare: number[], stack: number[]): unknown {
  const [bareFirst, ...bareRounds] = bare;
  const [pass1, ...stackRest] = stack;
  // The stack's later runs go to the interleaved rounds first, then to the growth rounds' empty stores.
  const rounds = bareRounds.map((b, i) => ({ bareJobsPerS: b, stackJobsPerS: stackRest[i] ?? null }));
  const growth = stackRest.slice(bareRounds.length).map((s) => ({ emptyJobsPerS: s, grownJobsPerS: 1 }));
  return {
    baselines: bareFirst === undefined ? {} : { bare: saturated(bareFirst) },
    stack: { pass1: pass1 === undefined ? undefined : saturated(pass1), growthRounds: { rounds: growth } },
    interleaved: { rounds },
  };
}

const steadiness = (r: unknown): Steadiness => evalModule('tools/bench/lib/report.mjs', `m.steadiness(${JSON.stringify(r)})`) as Steadiness;

describe('bench: machine steadiness', () => {
  it('is steady when each model stays within 1.25× of itself, and counts every run of it', () => {
    const q = steadiness(results([2000, 2200, 2100], [1000, 1100, 1050, 1200, 980]));
    expect(q.verdict).toBe('steady');
    expect(q.reasons).toEqual([]);
    expect(q.bare).toEqual({ runs: [2000, 2200, 2100], min: 2000, max: 2200, spread: 1.1 });
    // pass 1, two interleaved rounds, two growth rounds' empty stores
    expect(q.stack).toEqual({ runs: [1000, 1100, 1050, 1200, 980], min: 980, max: 1200, spread: 1.22 });
    expect(q.bound).toBe(1.25);
  });

  it('is noisy when either model moved more, and says which', () => {
    const bareMoved = steadiness(results([1552, 1918, 1754, 2308], [1221, 1250, 1260, 1230]));
    expect(bareMoved.verdict).toBe('noisy');
    expect(bareMoved.reasons).toEqual(["the bare pipeline's jobs/s moved 1.49× between its 4 runs"]);
    const stackMoved = steadiness(results([2000, 2050], [1000, 1300]));
    expect(stackMoved.verdict).toBe('noisy');
    expect(stackMoved.reasons).toEqual(["the 1x stack's jobs/s moved 1.3× between its 2 runs"]);
  });

  it('counts BullMQ too (the baseline and each interleaved round): the headline ratio moves with it', () => {
    const r = { baselines: { bare: saturated(2000), bullmq: { jobsPerS: 4188 } }, stack: {}, interleaved: { rounds: [{ bareJobsPerS: 2050, stackJobsPerS: null, bullmqJobsPerS: 7200 }] } };
    const q = steadiness(r);
    expect(q.verdict).toBe('noisy');
    expect(q.reasons).toEqual(["BullMQ's jobs/s moved 1.72× between its 2 runs"]);
    expect(steadiness({ baselines: { bullmq: { jobsPerS: 7000 } }, stack: {}, interleaved: { rounds: [{ bareJobsPerS: null, stackJobsPerS: null, bullmqJobsPerS: 7100 }] } }).verdict).toBe('steady');
  });

  it('is unknown when neither model ran twice, and leaves failed runs out', () => {
    expect(steadiness(results([2000], [1000])).verdict).toBe('unknown');
    expect(steadiness(results([], [])).verdict).toBe('unknown');
    // A round that failed has null figures: not a run, so no spread from it.
    const q = steadiness({ baselines: { bare: saturated(2000) }, stack: {}, interleaved: { rounds: [{ bareJobsPerS: null, stackJobsPerS: null }] } });
    expect([q.verdict, q.bare.runs, q.stack.runs]).toEqual(['unknown', [2000], []]);
  });
});
