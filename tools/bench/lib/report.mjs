// The stdout table (ending with the ratio lines) and the ratios themselves.
const fmt = (v) => (v === null || v === undefined ? '-' : typeof v === 'number' ? String(v) : String(v));
const ms = (o) => (o ? `${fmt(o.p50)} / ${fmt(o.p95 ?? '-')} / ${fmt(o.p99)}` : '-');
const nRounds = (n) => `${n} round${n === 1 ? '' : 's'}`;
/** A ratio per process, `name=ratio` separated by spaces (the `CPU per job by process` lines). */
const perProcess = (byService) => Object.entries(byService ?? {}).map(([k, v]) => `${k}=${fmt(v)}`).join(' ');
const ratio = (a, b) => (a && b ? Math.round((a / b) * 100) / 100 : null);

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : Math.round(((v[m - 1] + v[m]) / 2) * 100) / 100;
}

/**
 * The stack's figures of each round over another run of the same round (`<base>JobsPerS`,
 * `<base>CpuMsPerJob`): the per-round jobs/s and CPU-per-job ratios, the jobs/s median,
 * min and max, and the CPU-per-job median.
 */
function roundRatios(rounds, base) {
  const cpuPerRound = rounds.map((r) => ratio(r.stackCpuMsPerJob, r[`${base}CpuMsPerJob`]));
  return { ...spread(rounds.map((r) => ratio(r.stackJobsPerS, r[`${base}JobsPerS`]))), cpuPerRound, cpuPerJobMedian: median(cpuPerRound) };
}

/** Per-round ratios with their median, min and max (rounds without a figure are null and left out). */
function spread(perRound) {
  const ok = perRound.filter((x) => x !== null);
  return { perRound, median: median(perRound), min: ok.length ? Math.min(...ok) : null, max: ok.length ? Math.max(...ok) : null };
}

/** --interleave: one stack ÷ bare ratio per round (jobs/s, and CPU per job), their median, min and max. */
export function interleavedRatios(il) {
  if (!il?.rounds?.length) return null;
  const { cpuPerRound: _cpu, ...r } = roundRatios(il.rounds, 'bare');
  return r;
}

/**
 * --interleave with the baselines: the stack's jobs/s over BullMQ's jobs/s and over JetStream's
 * round trips/s of the same round (minutes apart at most, not the whole run), per round, with
 * their median, min and max; null when no round ran the baselines.
 */
export function interleavedBaselineRatios(il) {
  const rounds = (il?.rounds ?? []).filter((r) => 'bullmqJobsPerS' in r);
  if (!rounds.length) return null;
  return {
    bullmq: spread(rounds.map((r) => ratio(r.stackJobsPerS, r.bullmqJobsPerS))),
    jetstream: spread(rounds.map((r) => ratio(r.stackJobsPerS, r.jetstreamRoundTripsPerS))),
  };
}

/**
 * --ab: this checkout's stack ÷ the other build's, per round (jobs/s, and CPU per job), their
 * median, min and max, and the median after ÷ before CPU per job of each process.
 */
export function abRatios(il) {
  if (!il?.ab || !il.rounds?.length) return null;
  const cpuPerJobByService = cpuRatioByService(il.rounds, 'stackCpuByService', 'beforeCpuByService');
  const pacedRatio = (k) => spread(il.rounds.map((r) => ratio(r.stackPaced?.[k], r.beforePaced?.[k])));
  const paced = il.abRate
    ? { rate: il.abRate, dispatchP50: pacedRatio('dispatchP50'), dispatchP99: pacedRatio('dispatchP99'), resultP50: pacedRatio('resultP50'), resultP99: pacedRatio('resultP99') }
    : null;
  return { ...roundRatios(il.rounds, 'before'), cpuPerJobByService, ...(paced ? { paced } : {}) };
}

/** The median over `rounds` of each process's CPU per job in `top` ÷ the same in `bottom` (per-process maps of each round). */
function cpuRatioByService(rounds, top, bottom) {
  const services = [...new Set(rounds.flatMap((r) => Object.keys(r[top] ?? {})))].sort();
  return Object.fromEntries(services.map((svc) => [svc, median(rounds.map((r) => ratio(r[top]?.[svc], r[bottom]?.[svc])))]));
}

/**
 * --growth-rounds: grown ÷ empty per round, for completed jobs/s (saturated) and for the p99
 * submit→result at the rounds' half-capacity rate; the median, min and max of each; and the
 * median grown ÷ empty CPU per job of each process (saturated), which shows where a grown
 * store's cost lands.
 */
export function growthRoundRatios(g) {
  if (!g?.rounds?.length) return null;
  return {
    jobsPerS: spread(g.rounds.map((x) => ratio(x.grownJobsPerS, x.emptyJobsPerS))),
    halfP99: spread(g.rounds.map((x) => ratio(x.grownHalfP99Ms, x.emptyHalfP99Ms))),
    cpuPerJobByService: cpuRatioByService(g.rounds, 'grownCpuByService', 'emptyCpuByService'),
  };
}

/** The steadiness verdict's bound (docs/performance.md, "Was the machine steady?"). */
export const STEADY_MAX_SPREAD = 1.25;

/** One model's saturated jobs/s each time the run measured it: the runs, their min, max and max ÷ min (null under 2 runs). */
function repeats(values) {
  const runs = values.filter((v) => typeof v === 'number' && v > 0);
  const { min, max } = spread(runs);
  return { runs, min, max, spread: runs.length >= 2 ? ratio(max, min) : null };
}

/**
 * How steady the machine was through the run. The same model measured again in one run should
 * give the same saturated jobs/s, so what moves between its runs is the machine: the bare pipeline
 * (the baseline and every --interleave round) and the 1x stack (pass 1, every --interleave round,
 * every growth round's empty store). `steady` when both spreads (max ÷ min) are within 1.25×,
 * `noisy` past it (with the reasons), `unknown` when neither model ran twice. The pacer's lag is
 * not part of it: the load generator is also late when the model it drives keeps the cores busy.
 */
export function steadiness(r) {
  const bare = repeats([r.baselines?.bare?.saturated?.completedPerS, ...(r.interleaved?.rounds ?? []).map((x) => x.bareJobsPerS)]);
  const stack = repeats([
    r.stack?.pass1?.saturated?.completedPerS,
    ...(r.interleaved?.rounds ?? []).map((x) => x.stackJobsPerS),
    ...(r.stack?.growthRounds?.rounds ?? []).map((x) => x.emptyJobsPerS),
  ]);
  // BullMQ too (the baseline and every --interleave round): the headline ratio's denominator.
  const bullmq = repeats([r.baselines?.bullmq?.jobsPerS, ...(r.interleaved?.rounds ?? []).map((x) => x.bullmqJobsPerS)]);
  const models = { 'the bare pipeline': bare, 'the 1x stack': stack, BullMQ: bullmq };
  const reasons = Object.entries(models)
    .filter(([, m]) => m.spread !== null && m.spread > STEADY_MAX_SPREAD)
    .map(([name, m]) => `${name}'s jobs/s moved ${m.spread}× between its ${m.runs.length} runs`);
  const verdict = Object.values(models).every((m) => m.spread === null) ? 'unknown' : reasons.length ? 'noisy' : 'steady';
  return { verdict, reasons, bare, stack, bullmq, bound: STEADY_MAX_SPREAD };
}

/** The steadiness row of the table: the verdict, then each model's runs against the bound. */
function steadinessRow(q) {
  const one = (name, m) => (m.spread === null ? `${name} ran ${m.runs.length === 1 ? 'once' : 'not at all'}` : `${name} ${m.min}–${m.max} jobs/s over ${m.runs.length} runs, ${m.spread}×`);
  return ['run', `machine steadiness (same model's jobs/s, max ÷ min ≤ ${q.bound})`, `${q.verdict}  (${one('bare', q.bare)}; ${one('stack 1x', q.stack)}${q.bullmq ? `; ${one('BullMQ', q.bullmq)}` : ''})`];
}

export function ratios(r) {
  const ours = r.stack?.pass1?.saturated?.completedPerS;
  const p99 = r.stack?.pass1?.paced?.submitToResultMs?.p99;
  return {
    jobsPerS_over_bullmq: ratio(ours, r.baselines.bullmq?.jobsPerS),
    jobsPerS_over_jetstream: ratio(ours, r.baselines.jetstream?.roundTripsPerS),
    jobsPerS_over_bare: ratio(ours, r.baselines.bare?.saturated?.completedPerS),
    p99_over_bare_p99: ratio(p99, r.baselines.bare?.paced?.submitToResultMs?.p99),
    pass2_over_pass1_jobsPerS: ratio(r.stack?.pass2?.saturated?.completedPerS, ours),
    growth_over_empty_jobsPerS: ratio(r.stack?.growth?.saturated?.completedPerS, ours),
    growth_over_empty_p99: ratio(r.stack?.growth?.paced?.submitToResultMs?.p99, p99),
    growth_over_empty_half_p99: ratio(r.stack?.growth?.half?.submitToResultMs?.p99, r.stack?.pass1?.half?.submitToResultMs?.p99),
    ...(r.stack?.growthRounds ? { growth_over_empty_rounds: growthRoundRatios(r.stack.growthRounds) } : {}),
    ...(r.interleaved ? { interleaved_jobsPerS_over_bare: interleavedRatios(r.interleaved) } : {}),
    ...(interleavedBaselineRatios(r.interleaved) ? { interleaved_jobsPerS_over_baselines: interleavedBaselineRatios(r.interleaved) } : {}),
    ...(r.interleaved?.ab ? { ab_after_over_before: abRatios(r.interleaved) } : {}),
  };
}

/** Failed or unfinished jobs over every phase a model run had (saturated, paced, half capacity, sweep); 0 for a run that failed to start. */
export function failedInModel(m) {
  if (!m?.saturated) return 0;
  return m.saturated.failedOrUnfinished + (m.paced?.failedOrUnfinished ?? 0) + (m.half?.failedOrUnfinished ?? 0) + (m.sweep ?? []).reduce((n, w) => n + w.failedOrUnfinished, 0);
}

function modelRows(name, m) {
  if (!m) return [];
  if (m.error) return [[name, 'error', m.error]];
  const s = m.saturated;
  const rows = [
    [name, 'HTTP submits/s (saturated)', s.http.submitsPerS],
    [name, 'HTTP non-2xx / errors', `${s.http.non2xx} / ${s.http.errors}`],
    [name, 'completed jobs/s', s.completedPerS],
    [name, 'failed or unfinished jobs', failedInModel(m)],
    [name, 'submit→dispatch p50/p95/p99 ms (saturated)', ms(s.submitToDispatchMs)],
    [name, 'submit→result p50/p95/p99 ms (saturated)', ms(s.submitToResultMs)],
  ];
  if (m.paced) {
    rows.push([name, `submit→dispatch p50/p95/p99 ms (paced ${m.paced.http.submitsPerS}/s)`, ms(m.paced.submitToDispatchMs)]);
    rows.push([name, `submit→result p50/p95/p99 ms (paced ${m.paced.http.submitsPerS}/s)`, ms(m.paced.submitToResultMs)]);
  }
  if (m.half) {
    rows.push([name, `submit→dispatch p50/p95/p99 ms (half capacity, ${m.half.http.submitsPerS}/s)`, ms(m.half.submitToDispatchMs)]);
    rows.push([name, `submit→result p50/p95/p99 ms (half capacity, ${m.half.http.submitsPerS}/s)`, ms(m.half.submitToResultMs)]);
  }
  // The load generator's own lateness in the paced phases (it shares the cores with the model).
  const lag = (ph) => (ph?.http.pacerLagMs ? `${fmt(ph.http.pacerLagMs.p99)}/${fmt(ph.http.pacerLagMs.max)} (${fmt(ph.http.pacerLagMs.over2msPct)} % > 2 ms)` : null);
  const lags = [['paced', lag(m.paced)], ['half capacity', lag(m.half)]].filter(([, v]) => v !== null);
  if (lags.length) rows.push([name, 'pacer lag p99/max ms (requests sent late)', lags.map(([k, v]) => `${k} ${v}`).join(', ')]);
  // The schedulers' histograms (stack only): submit→dispatch split into where it went.
  const stages = (ph) => Object.entries(ph.dispatchStagesMs).map(([k, v]) => `${k} ${fmt(v.p50)}/${fmt(v.p99)}`).join(', ');
  for (const [k, ph] of [[`paced ${m.paced?.http.submitsPerS}/s`, m.paced], [`half capacity, ${m.half?.http.submitsPerS}/s`, m.half]]) {
    if (ph?.dispatchStagesMs) rows.push([name, `dispatch stages p50/p99 ms (${k})`, stages(ph)]);
  }
  for (const w of m.sweep ?? []) {
    rows.push([name, `sweep ${w.rate}/s: submit→dispatch / submit→result p50/p99 ms`, `${fmt(w.submitToDispatchMs.p50)}/${fmt(w.submitToDispatchMs.p99)}  ${fmt(w.submitToResultMs.p50)}/${fmt(w.submitToResultMs.p99)}${w.failedOrUnfinished ? `  (${w.failedOrUnfinished} failed or unfinished)` : ''}`]);
  }
  rows.push([name, 'Redis commands per job (net of idle background)', `${fmt(s.redisCommandsPerJob)}  (raw ${fmt(s.redisCommandsPerJobIncludingBackground)})`]);
  if (s.redisBytesPerJob !== undefined) rows.push([name, 'Redis memory per finished job (used_memory growth)', `${fmt(s.redisBytesPerJob)} B`]);
  rows.push([name, 'bus messages per job (NATS in_msgs, net)', `${fmt(s.busMessagesPerJob)}  (raw ${fmt(s.busMessagesPerJobIncludingBackground)})`]);
  if (s.busDeliveriesPerJob !== undefined) rows.push([name, 'bus deliveries per job (NATS out_msgs, net)', fmt(s.busDeliveriesPerJob)]);
  if (s.cpuMsPerJob && Object.keys(s.cpuMsPerJob).length) rows.push([name, 'CPU ms per job (saturated)', Object.entries(s.cpuMsPerJob).map(([k, v]) => `${k}=${v}`).join(' ')]);
  if (m.rssMb) rows.push([name, 'peak RSS MB', Object.entries(m.rssMb).map(([k, v]) => `${k}=${v}`).join(' ')]);
  return rows;
}

export function table(r) {
  const rows = [];
  const b = r.baselines;
  if (b.jetstream) rows.push(['baseline', 'raw JetStream round trips/s (64 in flight)', b.jetstream.error ?? b.jetstream.roundTripsPerS]);
  if (b.bullmq) rows.push(['baseline', 'BullMQ jobs/s (concurrency 50, 64 adds in flight)', b.bullmq.error ?? b.bullmq.jobsPerS]);
  rows.push(...modelRows('bare', b.bare));
  if (r.stack?.skipped) rows.push(['stack', 'skipped', r.stack.skipped]);
  for (const [k, label] of [['pass1', 'stack 1x'], ['pass2', 'stack 2x'], ['growth', 'stack growth']]) rows.push(...modelRows(label, r.stack?.[k]));
  for (const s of r.safety ?? []) {
    if (s.skipped || s.error) {
      rows.push([`safety ${s.label}`, s.skipped ? 'skipped' : 'error', s.skipped ?? s.error]);
      continue;
    }
    rows.push([`safety ${s.label}`, 'Check p50 / p99 ms (1 in flight)', `${s.latency.p50Ms} / ${s.latency.p99Ms}`]);
    rows.push([`safety ${s.label}`, `decisions/s (${s.throughput.concurrency} in flight)`, s.throughput.decisionsPerS]);
    if (s.stream) {
      rows.push([`safety ${s.label}`, 'Decide stream: Check p50 / p99 ms (1 in flight)', `${s.stream.latency.p50Ms} / ${s.stream.latency.p99Ms}`]);
      rows.push([`safety ${s.label}`, `Decide stream: decisions/s (${s.stream.throughput.concurrency} in flight)`, s.stream.throughput.decisionsPerS]);
    }
  }
  (r.interleaved?.rounds ?? []).forEach((x, i) => rows.push([`interleave ${i + 1}`, `bare / stack 1x jobs/s, CPU ms per job (${r.interleaved.durationS}s each)`, x.error ? `error: ${x.error}` : `${fmt(x.bareJobsPerS)} / ${fmt(x.stackJobsPerS)}, ${fmt(x.bareCpuMsPerJob)} / ${fmt(x.stackCpuMsPerJob)}${x.failedOrUnfinished ? `  (${x.failedOrUnfinished} failed or unfinished)` : ''}`]));
  (r.interleaved?.rounds ?? []).forEach((x, i) => {
    if ('bullmqJobsPerS' in x) rows.push([`interleave ${i + 1}`, `BullMQ jobs/s / JetStream round trips/s (${x.baselinesRanFirst ? 'before' : 'after'} bare and stack)`, x.baselineError ? `error: ${x.baselineError}` : `${fmt(x.bullmqJobsPerS)} / ${fmt(x.jetstreamRoundTripsPerS)}`]);
  });
  if (r.interleaved?.ab) {
    r.interleaved.rounds.forEach((x, i) => rows.push([`ab round ${i + 1}`, `before / after jobs/s, CPU ms per job (${x.beforeRanFirst ? 'before ran first' : 'after ran first'})`, x.error ? `error: ${x.error}` : `${fmt(x.beforeJobsPerS)} / ${fmt(x.stackJobsPerS)}, ${fmt(x.beforeCpuMsPerJob)} / ${fmt(x.stackCpuMsPerJob)}`]));
    const lat = (p) => (p ? `${fmt(p.dispatchP50)}/${fmt(p.dispatchP99)}  ${fmt(p.resultP50)}/${fmt(p.resultP99)}` : '-');
    if (r.interleaved.abRate) {
      r.interleaved.rounds.forEach((x, i) => rows.push([`ab round ${i + 1}`, `before | after at ${r.interleaved.abRate}/s: p50/p99 ms to dispatch, to result`, x.error ? `error: ${x.error}` : `${lat(x.beforePaced)}  |  ${lat(x.stackPaced)}`]));
    }
  }
  (r.stack?.growthRounds?.rounds ?? []).forEach((x, i) => rows.push([`growth round ${i + 1}`, `empty / grown jobs/s, p99 ms at ${fmt(r.stack.growthRounds.halfRate)}/s (${x.emptyRanFirst ? 'empty' : 'grown'} ran first)`, x.error ? `error: ${x.error}` : `${fmt(x.emptyJobsPerS)} / ${fmt(x.grownJobsPerS)}, ${fmt(x.emptyHalfP99Ms)} / ${fmt(x.grownHalfP99Ms)}${x.failedOrUnfinished ? `  (${x.failedOrUnfinished} failed or unfinished)` : ''}`]));
  if (r.stack?.growth?.preload) rows.push(['stack growth', 'preloaded terminal / pending', `${r.stack.growth.preload.terminal} / ${r.stack.growth.preload.pending} (${r.stack.growth.preload.seconds}s)`]);
  if (r.steadiness) rows.push(steadinessRow(r.steadiness));
  const w0 = Math.max(...rows.map((x) => x[0].length));
  const w1 = Math.max(...rows.map((x) => x[1].length));
  const lines = rows.map(([a, m, v]) => `${a.padEnd(w0)}  ${m.padEnd(w1)}  ${fmt(v)}`);
  const q = r.ratios;
  lines.push('');
  lines.push(`ratio  our jobs/s ÷ BullMQ jobs/s                 ${fmt(q.jobsPerS_over_bullmq)}   (target ≥ 0.35)`);
  lines.push(`ratio  our jobs/s ÷ raw JetStream round trips/s   ${fmt(q.jobsPerS_over_jetstream)}`);
  lines.push(`ratio  our jobs/s ÷ bare pipeline jobs/s          ${fmt(q.jobsPerS_over_bare)}`);
  lines.push(`ratio  our paced p99 ÷ bare paced p99             ${fmt(q.p99_over_bare_p99)}`);
  lines.push(`ratio  2 schedulers+2 gateways ÷ 1x jobs/s        ${fmt(q.pass2_over_pass1_jobsPerS)}`);
  lines.push(`ratio  growth ÷ empty jobs/s, p99                 ${fmt(q.growth_over_empty_jobsPerS)}, ${fmt(q.growth_over_empty_p99)}   (target within 10 %)`);
  lines.push(`ratio  growth ÷ empty p99 at pass 1's half rate   ${fmt(q.growth_over_empty_half_p99)}`);
  const gr = q.growth_over_empty_rounds;
  if (gr) {
    lines.push(`ratio  growth ÷ empty, rounds (median) jobs/s, p99  ${fmt(gr.jobsPerS.median)}, ${fmt(gr.halfP99.median)}   (${nRounds(gr.jobsPerS.perRound.length)}, ${fmt(gr.jobsPerS.min)}–${fmt(gr.jobsPerS.max)}, ${fmt(gr.halfP99.min)}–${fmt(gr.halfP99.max)}; target within 10 %)`);
    lines.push(`ratio  growth ÷ empty, rounds, CPU per job by process (median)   ${perProcess(gr.cpuPerJobByService)}`);
  }
  const il = q.interleaved_jobsPerS_over_bare;
  if (il) lines.push(`ratio  our jobs/s ÷ bare, interleaved (median)    ${fmt(il.median)}   (${nRounds(il.perRound.length)}, ${fmt(il.min)}–${fmt(il.max)}; CPU per job ${fmt(il.cpuPerJobMedian)}× bare)`);
  const ib = q.interleaved_jobsPerS_over_baselines;
  if (ib) {
    lines.push(`ratio  our jobs/s ÷ BullMQ, interleaved (median)  ${fmt(ib.bullmq.median)}   (${nRounds(ib.bullmq.perRound.length)}, ${fmt(ib.bullmq.min)}–${fmt(ib.bullmq.max)}; target ≥ 0.35)`);
    lines.push(`ratio  our jobs/s ÷ JetStream, interleaved (median)  ${fmt(ib.jetstream.median)}   (${nRounds(ib.jetstream.perRound.length)}, ${fmt(ib.jetstream.min)}–${fmt(ib.jetstream.max)})`);
  }
  const ab = q.ab_after_over_before;
  if (ab) {
    lines.push(`ratio  after ÷ before (--ab) jobs/s (median)      ${fmt(ab.median)}   (${nRounds(ab.perRound.length)}, ${fmt(ab.min)}–${fmt(ab.max)}; CPU per job ${fmt(ab.cpuPerJobMedian)}× before)`);
    lines.push(`ratio  after ÷ before (--ab) CPU per job by process (median)   ${perProcess(ab.cpuPerJobByService)}`);
    const p = ab.paced;
    const r = (x) => `${fmt(x.median)} (${fmt(x.min)}–${fmt(x.max)})`;
    // p99 only: a p50 of 0 ms (a fast machine at a low rate) has no ratio; the JSON keeps the p50 ratios.
    if (p) lines.push(`ratio  after ÷ before (--ab) latency at ${p.rate}/s (median)   p99 to dispatch ${r(p.dispatchP99)}, to result ${r(p.resultP99)}`);
  }
  return lines.join('\n');
}
