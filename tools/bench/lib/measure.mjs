// One load model (the stack or the bare pipeline): warm-up, a saturated run at
// fixed concurrency, then a paced run for latency. Every figure comes from Redis
// job timestamps, INFO commandstats and NATS /varz, not from client clocks.
import { drive, collect, summarize } from './load.mjs';
import { commandDelta, commandStats, cpuSeconds, dispatchStages, natsVarz, redisUsedMemory, round, scrapeMetrics } from './stats.mjs';

export async function measureModel({ redis, monitorPort, urls, request, records, opts, log, procs = [], stageUrls = [] }) {
  const own = {};
  const drainMs = Math.max(30_000, opts.duration * 3000);
  const phase = async (label, durationS, rate) => {
    log(`  ${label}: ${durationS}s, ${opts.connections} connections${rate ? `, paced ${rate}/s` : ''}`);
    // Paced phases of the stack: the schedulers' histograms before and after (drained) say where submit→dispatch went.
    const m0 = rate && stageUrls.length ? await scrapeMetrics(stageUrls) : null;
    const d = await drive(urls, { ...request, connections: opts.connections, durationS, rate });
    const { recs, unfinished, stuck } = await collect(redis, d.ids, { ...records, timeoutMs: drainMs, own });
    const stages = m0 !== null ? dispatchStages(m0, await scrapeMetrics(stageUrls)) : null;
    const states = {};
    for (const r of recs.values()) states[r.state] = (states[r.state] ?? 0) + 1;
    for (const [st, n] of Object.entries(stuck)) states[`unfinished:${st}`] = n;
    if (unfinished) log(`  ${unfinished} job(s) not terminal after ${drainMs / 1000}s: ${JSON.stringify(stuck)}`);
    const http = { ...d };
    delete http.ids;
    return { http, states, ...summarize(recs, unfinished), ...(stages ? { dispatchStagesMs: stages } : {}) };
  };

  if (opts.warmup > 0) await phase('warm-up', opts.warmup);

  // Background traffic (heartbeats, registry refreshes, leader renewals) goes on
  // with no jobs at all: measure its rate while idle and take it out of the
  // per-job figures, so they count what a job costs.
  const idleS = opts.idleS ?? Math.min(5, Math.max(3, opts.warmup));
  const i0 = await commandStats(redis);
  const iv0 = await natsVarz(monitorPort);
  const it0 = performance.now();
  await new Promise((r) => setTimeout(r, idleS * 1000));
  const i1 = await commandStats(redis);
  const iv1 = await natsVarz(monitorPort);
  const idleElapsed = (performance.now() - it0) / 1000;
  const idle = commandDelta(i0, i1, { info: 1 });
  const idleMsgsPerS = (iv1.inMsgs - iv0.inMsgs) / idleElapsed;
  const idleDeliveriesPerS = (iv1.outMsgs - iv0.outMsgs) / idleElapsed;

  // Taken outside the commandstats window, so these INFO calls are not counted as the jobs'.
  const mem0 = await redisUsedMemory(redis);
  const before = await commandStats(redis);
  const v0 = await natsVarz(monitorPort);
  const c0 = cpuSeconds(procs);
  const t0 = performance.now();
  for (const k of Object.keys(own)) own[k] = 0;
  own.info = 1;
  const saturated = await phase('saturated', opts.duration);
  const after = await commandStats(redis);
  const mem1 = await redisUsedMemory(redis);
  const v1 = await natsVarz(monitorPort);
  const c1 = cpuSeconds(procs);
  const window = (performance.now() - t0) / 1000;
  const scale = window / idleElapsed;
  const background = Object.fromEntries(Object.entries(idle.byCmd).map(([k, v]) => [k, Math.round(v * scale)]));
  for (const [k, v] of Object.entries(own)) background[k] = (background[k] ?? 0) + v;
  const cmds = commandDelta(before, after, background);
  const raw = commandDelta(before, after, own);
  const jobs = saturated.http.accepted || 1;
  saturated.redisCommandsPerJob = round(cmds.total / jobs, 1);
  saturated.redisCommandsPerJobByCmd = Object.fromEntries(Object.entries(cmds.byCmd).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, round(v / jobs, 2)]));
  saturated.redisCommandsPerJobIncludingBackground = round(raw.total / jobs, 1);
  // What Redis holds per job once it is finished: its record, input, result, decision history,
  // claim, fence and index entries, all kept for the job TTL (nothing expires during a run).
  saturated.redisBytesPerJob = Math.round((mem1 - mem0) / jobs);
  saturated.busMessagesPerJob = round((v1.inMsgs - v0.inMsgs - idleMsgsPerS * window) / jobs, 1);
  saturated.busMessagesPerJobIncludingBackground = round((v1.inMsgs - v0.inMsgs) / jobs, 1);
  // What the server handed to subscribers (out_msgs): a message nobody subscribes to costs no delivery.
  saturated.busDeliveriesPerJob = round((v1.outMsgs - v0.outMsgs - idleDeliveriesPerS * window) / jobs, 1);
  // CPU time per job of every process (services, redis-server, nats-server) over the
  // saturated phase and its drain: unlike jobs/s it hardly moves with other load on the machine.
  saturated.cpuMsPerJob = Object.fromEntries(Object.keys(c1).filter((k) => k in c0).map((k) => [k, round(((c1[k] - c0[k]) * 1000) / jobs, 2)]));
  saturated.background = { idleSeconds: round(idleElapsed, 1), redisCommandsPerS: round(idle.total / idleElapsed, 1), busMessagesPerS: round(idleMsgsPerS, 1), measuredWindowS: round(window, 1) };
  const paced = opts.rate > 0 ? await phase('paced', opts.duration, opts.rate) : null;
  // Service latency at a load the model sustains: paced at half its own saturated rate (or at
  // `halfRate` when given, so the growth pass is timed at exactly pass 1's rate).
  const halfRate = opts.halfRate ?? Math.max(1, Math.round((saturated.completedPerS ?? 0) / 2));
  const half = opts.half === false ? null : await phase('paced at half capacity', opts.duration, halfRate);
  if (half) half.rate = halfRate;
  // --sweep: the same evenly paced phase at each rate, for a latency-against-load curve.
  const sweep = [];
  for (const rate of opts.sweep ?? []) {
    const p = await phase(`sweep, paced ${rate}/s`, opts.duration, rate);
    sweep.push({ rate, ...p });
  }
  return { saturated, paced, half, ...(sweep.length ? { sweep } : {}) };
}
