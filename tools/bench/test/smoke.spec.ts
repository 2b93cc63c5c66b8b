// CI runs the bench once in its smoke mode (issue 7: "benchmarks are not tests"):
// every part must run to the end and report every figure, with zero failed jobs.
// Nothing here asserts a timing or a ratio's value, only that it was measured.
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot, serviceBundle, startProcess, type ManagedProcess } from '@cordum/testing';

const SERVICES = ['safety-kernel', 'scheduler', 'api-gateway', 'echo-worker'];

type Pct = { p50: number | null; p95: number | null; p99: number | null };
type Check = { p50Ms: number; p99Ms: number; decisionsPerS: number; errors: number };
type Paced = { dispatchP50: number | null; dispatchP99: number | null; resultP50: number | null; resultP99: number | null };
interface Phase {
  http: { submitsPerS: number; accepted: number; non2xx: number; errors: number; pacerLagMs?: { p50: number; p99: number; max: number; over2msPct: number } };
  succeeded: number;
  failedOrUnfinished: number;
  completedPerS: number | null;
  dispatchStagesMs?: Record<string, { n: number; p50: number | null; p99: number | null }>;
  submitToDispatchMs: Pct;
  submitToResultMs: Pct;
  redisCommandsPerJob?: number | null;
  redisCommandsPerJobByCmd?: Record<string, number>;
  busMessagesPerJob?: number | null;
  redisBytesPerJob?: number;
  busDeliveriesPerJob?: number | null;
}
interface Model {
  error?: string;
  saturated: Phase;
  paced: Phase | null;
  half: (Phase & { rate: number }) | null;
  sweep?: (Phase & { rate: number })[];
  rssMb: Record<string, number>;
}
interface Results {
  options: { smoke: boolean };
  machine: { nproc: number; cpuModel: string };
  versions: { node: string; redis: string | null; nats: string };
  gitCommit: string | null;
  baselines: { jetstream: { roundTripsPerS: number; error?: string }; bullmq: { jobsPerS: number; error?: string }; bare: Model };
  stack: {
    pass1: Model;
    pass2: Model;
    growth: Model & { preload: { terminal: number; pending: number } };
    growthRounds: { durationS: number; halfRate: number | null; rounds: { emptyRanFirst: boolean; emptyJobsPerS: number | null; grownJobsPerS: number | null; emptyHalfP99Ms: number | null; grownHalfP99Ms: number | null; emptyCpuByService: Record<string, number> | null; grownCpuByService: Record<string, number> | null; failedOrUnfinished: number; error?: string }[] };
    skipped?: string;
  };
  safety: { label: string; error?: string; skipped?: string; latency: Check; throughput: Check; stream: { latency: Check; throughput: Check } }[];
  interleaved: { durationS: number; ab?: string; rounds: { bareJobsPerS: number | null; stackJobsPerS: number | null; bareCpuMsPerJob: number | null; stackCpuMsPerJob: number | null; beforeJobsPerS?: number | null; beforeCpuMsPerJob?: number | null; beforeRanFirst?: boolean; stackCpuByService?: Record<string, number> | null; beforeCpuByService?: Record<string, number> | null; stackPaced?: Paced | null; beforePaced?: Paced | null; baselinesRanFirst?: boolean; bullmqJobsPerS?: number | null; jetstreamRoundTripsPerS?: number | null; baselineError?: string; failedOrUnfinished: number; error?: string }[]; abRate?: number };
  ratios: Record<string, unknown>;
  steadiness: { verdict: string; bare: { runs: number[]; spread: number | null }; stack: { runs: number[]; spread: number | null }; bullmq: { runs: number[]; spread: number | null } };
}

function expectPct(p: Pct, what: string): void {
  for (const k of ['p50', 'p95', 'p99'] as const) {
    expect({ what, k, v: typeof p[k] }).toEqual({ what, k, v: 'number' });
  }
}

function expectModel(m: Model, name: string, processes: string[]): void {
  expect({ name, error: m.error }).toEqual({ name, error: undefined });
  for (const [label, ph] of [['saturated', m.saturated], ['paced', m.paced], ['half', m.half]] as const) {
    expect(ph).not.toBeNull();
    if (!ph) return;
    const where = `${name} ${label}`;
    expect({ where, accepted: ph.http.accepted > 0, non2xx: ph.http.non2xx, errors: ph.http.errors }).toEqual({ where, accepted: true, non2xx: 0, errors: 0 });
    // Zero failed jobs: every accepted job ended SUCCEEDED within the drain.
    expect({ where, failed: ph.failedOrUnfinished, succeeded: ph.succeeded }).toEqual({ where, failed: 0, succeeded: ph.http.accepted });
    expectPct(ph.submitToDispatchMs, `${where} submit→dispatch`);
    expectPct(ph.submitToResultMs, `${where} submit→result`);
    // The paced phases say how late the load generator sent (autocannon's saturated phase has no schedule).
    const lag = ph.http.pacerLagMs;
    if (label === 'saturated') expect(lag).toBeUndefined();
    else expect({ where, ordered: lag !== undefined && lag.p50 >= 0 && lag.p99 >= lag.p50 && lag.max >= lag.p99 && lag.over2msPct >= 0 && lag.over2msPct <= 100 }).toEqual({ where, ordered: true });
  }
  const s = m.saturated;
  expect({ name, completedPerS: (s.completedPerS ?? 0) > 0, redis: (s.redisCommandsPerJob ?? 0) > 0, memory: (s.redisBytesPerJob ?? 0) > 0, bus: (s.busMessagesPerJob ?? 0) > 0, deliveries: (s.busDeliveriesPerJob ?? 0) > 0 })
    .toEqual({ name, completedPerS: true, redis: true, memory: true, bus: true, deliveries: true });
  expect(Object.keys(s.redisCommandsPerJobByCmd ?? {}).length).toBeGreaterThan(0);
  expect(Object.keys(m.rssMb).sort()).toEqual([...processes].sort());
  for (const v of Object.values(m.rssMb)) expect(v).toBeGreaterThan(0);
}

describe('npm run bench -- --smoke', () => {
  let out: string;
  let before: string;
  let bench: ManagedProcess;
  let exit: { code: number | null; signal: NodeJS.Signals | null };
  let results: Results;

  beforeAll(async () => {
    for (const s of SERVICES) serviceBundle(s); // a readable error when `npm run build` was not run
    out = mkdtempSync(join(tmpdir(), 'bench-smoke-'));
    // --ab against a copy of this checkout's dist/ outside the checkout, as a user would keep the
    // build from before a change: the A/B mode runs end to end (its figures are the noise floor).
    before = join(out, 'dist-before');
    cpSync(join(repoRoot, 'dist'), before, { recursive: true });
    bench = startProcess('bench', process.execPath, [join(repoRoot, 'tools/bench/run.mjs'), '--smoke', '--sweep', '20', '--interleave', '1', '--ab', before, '--ab-rate', '20', '--out', out], {}, repoRoot);
    exit = await bench.waitExit(420_000);
    const files = readdirSync(out).filter((f) => /^smoke-.*\.json$/.test(f));
    expect(files).toHaveLength(1);
    results = JSON.parse(readFileSync(join(out, files[0]!), 'utf8')) as Results;
  }, 430_000);

  afterAll(async () => {
    await bench?.stop();
    if (out) rmSync(out, { recursive: true, force: true });
  });

  it('exits 0 and prints the table ending with every ratio line', () => {
    expect({ exit, tail: exit.code === 0 ? '' : bench.logs().slice(-3000) }).toEqual({ exit: { code: 0, signal: null }, tail: '' });
    const lines = bench.output;
    const ratioLines = lines.filter((l) => l.startsWith('ratio '));
    expect(ratioLines).toHaveLength(15);
    // A ratio line shows '-' when a figure it needs is missing.
    for (const l of ratioLines) expect(l).not.toMatch(/\s-(,|\s|$)/);
    expect(lines.some((l) => l.startsWith('results: ') && l.includes(out))).toBe(true);
  });

  it('records the machine, versions and git commit', () => {
    expect(results.options.smoke).toBe(true);
    expect(results.machine.nproc).toBeGreaterThan(0);
    expect(results.machine.cpuModel.length).toBeGreaterThan(0);
    expect(results.versions).toEqual({ node: process.version, redis: expect.stringMatching(/^\d+\.\d+/) as unknown, nats: expect.stringMatching(/^\d+\.\d+/) as unknown });
    expect(results.gitCommit).toMatch(/^[0-9a-f]{40}$/);
  });

  it('measures the three baselines', () => {
    expect([results.baselines.jetstream.error, results.baselines.bullmq.error]).toEqual([undefined, undefined]);
    expect(results.baselines.jetstream.roundTripsPerS).toBeGreaterThan(0);
    expect(results.baselines.bullmq.jobsPerS).toBeGreaterThan(0);
    expectModel(results.baselines.bare, 'bare', ['bare-gateway', 'bare-scheduler', 'bare-worker']);
  });

  it('measures both stack passes and the growth pass with zero failed jobs', () => {
    expect(results.stack.skipped).toBeUndefined();
    const workers = ['echo-worker-1']; // --workers defaults to 1, like the bare pipeline's one worker process
    expectModel(results.stack.pass1, 'pass1', ['safety-kernel-1', 'scheduler-1', 'api-gateway-1', ...workers]);
    expectModel(results.stack.pass2, 'pass2', ['safety-kernel-1', 'scheduler-1', 'scheduler-2', 'api-gateway-1', 'api-gateway-2', ...workers]);
    expectModel(results.stack.growth, 'growth', ['safety-kernel-1', 'scheduler-1', 'api-gateway-1', ...workers]);
    expect(results.stack.growth.preload).toEqual(expect.objectContaining({ terminal: 500, pending: 50 }));
    // The growth pass is timed at pass 1's half-capacity rate.
    expect(results.stack.growth.half?.rate).toBe(results.stack.pass1.half?.rate);
  });

  it('runs one growth round by default (stack 1x on the empty Redis, then on the preloaded one) at pass 1\'s half rate, with a grown ÷ empty ratio', () => {
    const g = results.stack.growthRounds;
    expect(g.halfRate).toBe(results.stack.pass1.half?.rate);
    expect(g.rounds).toHaveLength(1);
    const [r] = g.rounds;
    expect({ error: r?.error, failed: r?.failedOrUnfinished, emptyFirst: r?.emptyRanFirst }).toEqual({ error: undefined, failed: 0, emptyFirst: true });
    for (const v of [r?.emptyJobsPerS, r?.grownJobsPerS, r?.emptyHalfP99Ms, r?.grownHalfP99Ms]) expect(v).toBeGreaterThan(0);
    const q = results.ratios['growth_over_empty_rounds'] as { jobsPerS: { perRound: number[]; median: number }; halfP99: { perRound: number[]; median: number } };
    expect(q.jobsPerS.perRound).toEqual([Math.round(((r?.grownJobsPerS ?? 0) / (r?.emptyJobsPerS ?? 1)) * 100) / 100]);
    expect(q.halfP99.perRound).toEqual([Math.round(((r?.grownHalfP99Ms ?? 0) / (r?.emptyHalfP99Ms ?? 1)) * 100) / 100]);
    expect([q.jobsPerS.median, q.halfP99.median]).toEqual([q.jobsPerS.perRound[0], q.halfP99.perRound[0]]);
    // Where the grown store's cost lands: each process's grown ÷ empty CPU per job, from the round's own figures.
    const cpu = (results.ratios['growth_over_empty_rounds'] as { cpuPerJobByService: Record<string, number | null> }).cpuPerJobByService;
    const gw = 'api-gateway-1';
    expect(r?.grownCpuByService?.[gw]).toBeGreaterThan(0);
    expect(cpu[gw]).toBe(Math.round(((r?.grownCpuByService?.[gw] ?? 0) / (r?.emptyCpuByService?.[gw] ?? 1)) * 100) / 100);
    expect(Object.keys(cpu)).toEqual(expect.arrayContaining(['api-gateway-1', 'scheduler-1', 'echo-worker-1', 'redis-server']));
    expect(bench.output.some((l) => l.startsWith('ratio  growth ÷ empty, rounds, CPU per job by process') && l.includes('redis-server='))).toBe(true);
    // The grown arm ran on the preload's own Redis server, not on the one pass 1 used.
    const ports = bench.output.filter((l) => l.includes('stack growth round 1 grown') || l.includes('stack growth:')).map((l) => /Redis on port (\d+)/.exec(l)?.[1]);
    expect(ports).toHaveLength(2);
    expect(ports[0]).toMatch(/^\d+$/);
    expect(ports[1]).toBe(ports[0]);
    expect(bench.output.filter((l) => l.includes('stack growth round 1 empty:') && !l.includes('Redis on port'))).toHaveLength(1);
    expect(bench.output.some((l) => l.startsWith('growth round 1 '))).toBe(true);
  });

  it('runs the --sweep rates on pass 1 only, with zero failed jobs', () => {
    const sweep = results.stack.pass1.sweep ?? [];
    expect(sweep.map((w) => w.rate)).toEqual([20]);
    for (const w of sweep) {
      expect({ accepted: w.http.accepted > 0, failed: w.failedOrUnfinished, succeeded: w.succeeded }).toEqual({ accepted: true, failed: 0, succeeded: w.http.accepted });
      expectPct(w.submitToDispatchMs, 'sweep submit→dispatch');
      expectPct(w.submitToResultMs, 'sweep submit→result');
    }
    expect(results.stack.pass2.sweep).toBeUndefined();
    expect(bench.output.some((l) => l.startsWith('stack 1x') && l.includes('sweep 20/s'))).toBe(true);
    expect(bench.output.filter((l) => l.includes('pacer lag p99/max ms') && l.includes('paced ') && l.includes('half capacity '))).toHaveLength(4);
    // The stack's paced phases split submit→dispatch with the schedulers' histograms: every stage saw every job.
    for (const [where, ph] of [['pass1 paced', results.stack.pass1.paced], ['pass2 half', results.stack.pass2.half]] as const) {
      const st = ph?.dispatchStagesMs ?? {};
      expect({ where, stages: Object.keys(st) }).toEqual({ where, stages: ['intake wait', 'lock', 'Check', 'created→published'] });
      for (const [k, v] of Object.entries(st)) {
        expect({ where, k, seen: v.n >= (ph?.http.accepted ?? 1), ordered: v.p50 !== null && v.p99 !== null && v.p50 >= 0 && v.p99 >= v.p50 }).toEqual({ where, k, seen: true, ordered: true });
      }
    }
    expect(results.baselines.bare.paced?.dispatchStagesMs).toBeUndefined();
    expect(bench.output.filter((l) => l.includes('dispatch stages p50/p99 ms') && l.includes('intake wait '))).toHaveLength(6);
  });

  it('measures safety Check with the decision cache off and on, and the gRPC floor', () => {
    expect(results.safety.map((s) => s.label)).toEqual(['cache off', 'cache on', 'gRPC floor']);
    for (const s of results.safety) {
      expect({ label: s.label, error: s.error, skipped: s.skipped }).toEqual({ label: s.label, error: undefined, skipped: undefined });
      expect(s.latency.p50Ms).toBeGreaterThan(0);
      expect(s.latency.p99Ms).toBeGreaterThanOrEqual(s.latency.p50Ms);
      expect(s.throughput.decisionsPerS).toBeGreaterThan(0);
      expect([s.latency.errors, s.throughput.errors]).toEqual([0, 0]);
      // The same calls as messages on the Decide stream (P17), what the services send.
      expect(s.stream.latency.p99Ms).toBeGreaterThanOrEqual(s.stream.latency.p50Ms);
      expect(s.stream.latency.p50Ms).toBeGreaterThan(0);
      expect(s.stream.throughput.decisionsPerS).toBeGreaterThan(0);
      expect([s.stream.latency.errors, s.stream.throughput.errors]).toEqual([0, 0]);
    }
  });

  it('computes every ratio', () => {
    const keys = ['jobsPerS_over_bullmq', 'jobsPerS_over_jetstream', 'jobsPerS_over_bare', 'p99_over_bare_p99', 'pass2_over_pass1_jobsPerS', 'growth_over_empty_jobsPerS', 'growth_over_empty_p99', 'growth_over_empty_half_p99'];
    expect(Object.keys(results.ratios).sort()).toEqual([...keys, 'growth_over_empty_rounds', 'interleaved_jobsPerS_over_bare', 'interleaved_jobsPerS_over_baselines', 'ab_after_over_before'].sort());
    for (const k of keys) expect({ k, v: typeof results.ratios[k] }).toEqual({ k, v: 'number' });
  });

  it('says how steady the machine was from every run of the bare pipeline and of the 1x stack', () => {
    // bare and BullMQ: the baseline and the one interleaved round; stack 1x: pass 1, that round, the growth round's empty store
    expect([results.steadiness.bare.runs.length, results.steadiness.stack.runs.length, results.steadiness.bullmq.runs.length]).toEqual([2, 3, 2]);
    expect(['steady', 'noisy']).toContain(results.steadiness.verdict);
    for (const m of [results.steadiness.bare, results.steadiness.stack, results.steadiness.bullmq]) expect(m.spread).toBe(Math.round((Math.max(...m.runs) / Math.min(...m.runs)) * 100) / 100);
    expect(bench.output.some((l) => l.startsWith('run ') && l.includes('machine steadiness') && l.includes(results.steadiness.verdict))).toBe(true);
  });

  it('runs the --interleave rounds (bare, then stack 1x) with zero failed jobs and a ratio per round', () => {
    expect(results.interleaved.rounds).toHaveLength(1);
    for (const r of results.interleaved.rounds) {
      expect({ error: r.error, failed: r.failedOrUnfinished }).toEqual({ error: undefined, failed: 0 });
      for (const v of [r.bareJobsPerS, r.stackJobsPerS, r.bareCpuMsPerJob, r.stackCpuMsPerJob]) expect(v).toBeGreaterThan(0);
    }
    const il = results.ratios['interleaved_jobsPerS_over_bare'] as { perRound: number[]; median: number; min: number; max: number; cpuPerJobMedian: number };
    expect(il.perRound).toHaveLength(1);
    expect(il.median).toBe(il.perRound[0]);
    expect([il.min, il.max]).toEqual([il.median, il.median]);
    expect(il.cpuPerJobMedian).toBeGreaterThan(0);
    expect(bench.output.some((l) => l.startsWith('interleave 1 '))).toBe(true);
  });

  it('runs the JetStream and BullMQ baselines in each --interleave round (before bare and the stack in odd rounds) and gives the headline ratios per round', () => {
    const [r] = results.interleaved.rounds;
    expect({ first: r?.baselinesRanFirst, error: r?.baselineError }).toEqual({ first: true, error: undefined });
    for (const v of [r?.bullmqJobsPerS, r?.jetstreamRoundTripsPerS]) expect(v).toBeGreaterThan(0);
    const ib = results.ratios['interleaved_jobsPerS_over_baselines'] as Record<'bullmq' | 'jetstream', { perRound: number[]; median: number }>;
    expect(ib.bullmq.perRound).toEqual([Math.round(((r?.stackJobsPerS ?? 0) / (r?.bullmqJobsPerS ?? 1)) * 100) / 100]);
    expect(ib.jetstream.perRound).toEqual([Math.round(((r?.stackJobsPerS ?? 0) / (r?.jetstreamRoundTripsPerS ?? 1)) * 100) / 100]);
    expect(ib.bullmq.median).toBe(ib.bullmq.perRound[0]);
    expect(bench.output.some((l) => l.startsWith('interleave 1 ') && l.includes('BullMQ jobs/s / JetStream round trips/s'))).toBe(true);
    expect(bench.output.some((l) => l.startsWith('ratio  our jobs/s ÷ BullMQ, interleaved (median)'))).toBe(true);
  });

  it('with --ab, runs the other build\'s stack in each round (before first in odd rounds) and gives an after ÷ before ratio', () => {
    expect(results.interleaved.ab).toBe(before);
    const [r] = results.interleaved.rounds;
    expect(r?.beforeRanFirst).toBe(true);
    for (const v of [r?.beforeJobsPerS, r?.beforeCpuMsPerJob]) expect(v).toBeGreaterThan(0);
    const ab = results.ratios['ab_after_over_before'] as { perRound: number[]; cpuPerRound: number[]; median: number; cpuPerJobMedian: number; cpuPerJobByService: Record<string, number | null> };
    expect(ab.perRound).toEqual([Math.round(((r?.stackJobsPerS ?? 0) / (r?.beforeJobsPerS ?? 1)) * 100) / 100]);
    expect(ab.median).toBe(ab.perRound[0]);
    expect(ab.cpuPerJobMedian).toBeGreaterThan(0);
    // Per process, from the round's own figures.
    const gw = 'api-gateway-1';
    expect(ab.cpuPerJobByService[gw]).toBe(Math.round(((r?.stackCpuByService?.[gw] ?? 0) / (r?.beforeCpuByService?.[gw] ?? 1)) * 100) / 100);
    expect(Object.keys(ab.cpuPerJobByService)).toEqual(expect.arrayContaining(['api-gateway-1', 'scheduler-1', 'echo-worker-1', 'redis-server']));
    expect(bench.output.some((l) => l.startsWith('ratio  after ÷ before (--ab) CPU per job by process') && l.includes('api-gateway-1='))).toBe(true);
    expect(bench.output.some((l) => l.includes(`interleave 1 before`) && l.includes(`bundles from ${before}`))).toBe(true);
    expect(bench.output.some((l) => l.startsWith('ab round 1 '))).toBe(true);
  });

  it('with --ab-rate, both builds\' runs of a round also run paced, and the latency ratios come from the round\'s own figures', () => {
    expect(results.interleaved.abRate).toBe(20);
    const [r] = results.interleaved.rounds;
    for (const p of [r?.stackPaced, r?.beforePaced]) {
      for (const k of ['dispatchP50', 'dispatchP99', 'resultP50', 'resultP99'] as const) expect({ k, v: typeof p?.[k] }).toEqual({ k, v: 'number' });
    }
    const paced = (results.ratios['ab_after_over_before'] as { paced: { rate: number; resultP99: { perRound: (number | null)[]; median: number | null } } }).paced;
    expect(paced.rate).toBe(20);
    const want = r?.stackPaced?.resultP99 && r.beforePaced?.resultP99 ? Math.round((r.stackPaced.resultP99 / r.beforePaced.resultP99) * 100) / 100 : null;
    expect(paced.resultP99.perRound).toEqual([want]);
    expect(bench.output.some((l) => l.startsWith('ab round 1 ') && l.includes('before | after at 20/s'))).toBe(true);
    expect(bench.output.some((l) => l.startsWith('ratio  after ÷ before (--ab) latency at 20/s (median)'))).toBe(true);
  });
});
