#!/usr/bin/env node
// `npm run bench`: governed throughput and latency against baselines measured in
// the same run on the same Redis and NATS (issue 7). See docs/performance.md.
//
//   npm run bench                          full run (growth pass included)
//   npm run bench -- --quick               short run (3 s phases, ~2 min in all), no growth pass
//   npm run bench -- --smoke               CI smoke run (3 s phases, ~2 min): proves every part works
//   flags: --duration S (20) --warmup S (5) --connections N (64) --workers N (1)
//          --rate JOBS_PER_S (1000; 0 = no paced run) --growth | --no-growth
//          --growth-rounds N (3; smoke 1: N rounds of stack 1x on an empty Redis and on the preloaded
//          one, alternating: the growth ÷ empty ratio per round)
//          --terminal N (100000) --pending N (10000) --worker-parallel N (256, WORKER_MAX_PARALLEL)
//          --skip-baselines --skip-safety --skip-stack --no-pass2 --out DIR (bench/results) --cpu-prof DIR (V8 profiles)
//          --node-options STR (services' NODE_OPTIONS) --node-args STR (extra node flags, e.g. --trace-gc)
//          --redis-args STR (extra redis-server options for every Redis the run starts, e.g. "--hash-max-listpack-value 1024")
//          --sweep R1,R2,... (pass 1 also runs paced at each rate: latency against load)
//          --interleave N (N rounds of bare then stack 1x, saturated only: the stack ÷ bare ratio per round;
//          unless --skip-baselines, each round also runs JetStream and BullMQ, before the pair in odd rounds
//          and after it in even ones: the stack ÷ BullMQ and ÷ JetStream ratios per round)
//          --ab DIR (with --interleave: each round also runs stack 1x from DIR, a copy of another build's
//          dist/, in alternating order with this checkout's: the after ÷ before ratio per round)
//          --ab-rate R (with --ab: both builds' runs of a round also run a phase paced at R jobs/s:
//          the after ÷ before p50 and p99 latency per round)
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { connect } from 'nats';
import { runBullmqBaseline } from './baseline-bullmq.mjs';
import { runJetStreamBaseline } from './baseline-jetstream.mjs';
import { helpText } from './lib/args.mjs';
import { startBare } from './lib/bare.mjs';
import { loadCordum } from './lib/cordum.mjs';
import { GROWTH_TOPIC, preload } from './lib/growth.mjs';
import { installCleanup, removeTempDirs, rssSampler, startNats, startRedis, stopAll, freePort, start, waitUntil } from './lib/index.mjs';
import { measureModel } from './lib/measure.mjs';
import { failedInModel, ratios, steadiness, table } from './lib/report.mjs';
import { benchCheck } from './lib/safety.mjs';
import { SERVICE_NODE_OPTIONS, STACK_REQUEST, bundlePath, kernelHasDecisionCache, missingBundles, stackRecords, startStack } from './lib/stack.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');

function parseArgs(argv) {
  const o = { duration: 20, warmup: 5, connections: 64, workers: 1, workerParallel: 256, rate: 1000, growth: null, terminal: 100_000, pending: 10_000, quick: false, smoke: false, baselines: true, stack: true, out: null, cpuProf: null, pass2: true, nodeOptions: SERVICE_NODE_OPTIONS, nodeArgs: [], redisArgs: [], sweep: [], interleave: 0, ab: null, abRate: 0, growthRounds: null };
  const num = (a, v) => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < 0) throw new Error(`${a} needs a non-negative number`);
    return n;
  };
  // A space-separated list of command-line options for a child process.
  const words = (a, v) => {
    if (v === undefined) throw new Error(`${a} needs a value`);
    return v.split(/\s+/).filter(Boolean);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--smoke') o.smoke = true;
    else if (a === '--cpu-prof') {
      o.cpuProf = argv[++i];
      if (!o.cpuProf) throw new Error('--cpu-prof needs a directory');
    } else if (a === '--out') {
      o.out = argv[++i];
      if (!o.out) throw new Error('--out needs a directory');
    }
    else if (a === '--growth') o.growth = true;
    else if (a === '--no-growth') o.growth = false;
    else if (a === '--skip-baselines') o.baselines = false;
    else if (a === '--skip-stack') o.stack = false;
    else if (a === '--skip-safety') o.safety = false;
    else if (a === '--no-pass2') o.pass2 = false;
    else if (a === '--sweep') {
      const v = argv[++i] ?? '';
      o.sweep = v.split(',').filter(Boolean).map((x) => num('--sweep', x));
      if (o.sweep.length === 0 || o.sweep.some((r) => r < 1)) throw new Error('--sweep needs rates, e.g. 100,250,500');
    }
    // V8 flags NODE_OPTIONS refuses (--trace-gc, --single-threaded-gc, ...) go on the command line.
    else if (a === '--node-args') o.nodeArgs = words(a, argv[++i]);
    else if (a === '--redis-args') o.redisArgs = words(a, argv[++i]);
    else if (a === '--node-options') {
      o.nodeOptions = argv[++i];
      if (o.nodeOptions === undefined) throw new Error('--node-options needs a value ("" for none)');
    }
    else if (a === '--ab') {
      const v = argv[++i];
      if (v === undefined) throw new Error('--ab needs a directory: a copy of another build\'s dist/ (cp -r dist /tmp/dist-before)');
      o.ab = resolve(v);
    }
    else if (a === '--ab-rate') {
      o.abRate = num(a, argv[++i]);
      if (o.abRate < 1) throw new Error('--ab-rate needs a rate of at least 1 job/s');
    }
    else if (a === '--interleave') {
      o.interleave = num(a, argv[++i]);
      if (!Number.isInteger(o.interleave)) throw new Error('--interleave needs a whole number of rounds');
    }
    else if (a === '--growth-rounds') {
      o.growthRounds = num(a, argv[++i]);
      if (!Number.isInteger(o.growthRounds)) throw new Error('--growth-rounds needs a whole number of rounds');
    }
    else if (['--duration', '--warmup', '--connections', '--workers', '--rate', '--terminal', '--pending'].includes(a)) o[a.slice(2)] = num(a, argv[++i]);
    else if (a === '--worker-parallel') o.workerParallel = num(a, argv[++i]);
    else if (a === '--help' || a === '-h') {
      process.stdout.write(helpText(import.meta.url) + '\n');
      process.exit(0);
    } else throw new Error(`unknown argument "${a}" (try --help)`);
  }
  if (o.quick) {
    const given = new Set(argv);
    if (!given.has('--duration')) o.duration = 3;
    if (!given.has('--warmup')) o.warmup = 1;
    if (!given.has('--connections')) o.connections = 16;
    if (!given.has('--rate')) o.rate = 200;
  }
  if (o.smoke) {
    // Every part of the bench runs (baselines, safety, both stack passes and a
    // small growth pass) so CI proves the harness works end to end; the figures
    // of such short phases mean nothing and nothing asserts on them.
    const given = new Set(argv);
    const set = (flag, key, v) => { if (!given.has(flag)) o[key] = v; };
    set('--duration', 'duration', 3); // 1 s phases accepted nothing on a loaded CI box (responses still in flight at the end)
    set('--warmup', 'warmup', 0);
    set('--connections', 'connections', 4);
    set('--rate', 'rate', 50);
    set('--terminal', 'terminal', 500);
    set('--pending', 'pending', 50);
    if (o.growth === null) o.growth = true;
  }
  if (o.growth === null) o.growth = !o.quick;
  if (o.growthRounds === null) o.growthRounds = o.growth ? (o.smoke ? 1 : 3) : 0;
  else if (o.growthRounds > 0 && !o.growth) throw new Error('--growth-rounds runs on the growth preload: drop --no-growth (or --quick), or give --growth');
  if (o.duration < 1) throw new Error('--duration must be at least 1 s');
  if (o.quick && o.smoke) throw new Error('--quick and --smoke exclude each other');
  if (o.connections < 1 || o.workers < 1) throw new Error('--connections and --workers must be at least 1');
  if (o.abRate > 0 && o.ab === null) throw new Error('--ab-rate paces the --ab runs: give --ab DIR and --interleave N too');
  if (o.ab !== null) {
    if (o.interleave < 1) throw new Error('--ab compares builds in the --interleave rounds: give --interleave N (N ≥ 1)');
    const missing = missingBundles(root, o.ab);
    if (missing.length) throw new Error(`--ab ${o.ab}: no bundle for ${missing.join(', ')} (expected ${o.ab}/apps/<service>/main.js, a copy of dist/)`);
  }
  return o;
}

function gitCommit() {
  // `git rev-parse` also works in a worktree (where .git is a file); the file
  // walk is the fallback for a checkout without the git binary.
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    /* no git binary: read the refs */
  }
  try {
    const head = readFileSync(join(root, '.git/HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head;
    const ref = head.slice(5);
    const loose = join(root, '.git', ref);
    if (existsSync(loose)) return readFileSync(loose, 'utf8').trim();
    const packed = readFileSync(join(root, '.git/packed-refs'), 'utf8');
    return new RegExp(`^([0-9a-f]{40}) ${ref}$`, 'm').exec(packed)?.[1] ?? null;
  } catch {
    return null;
  }
}

/**
 * What code ran, beyond HEAD: whether the tree had uncommitted changes (a hash of `git status` and
 * the diff, so two runs of the same dirty tree match), and each bundle's SHA-256 and build time (the
 * bench runs `dist/`, which may be older than HEAD or built from a dirty tree).
 */
function codeIdentity() {
  const git = (args) => {
    try {
      return execFileSync('git', args, { cwd: root, stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 * 1024 * 1024 }).toString();
    } catch {
      return null;
    }
  };
  const status = git(['status', '--porcelain']);
  const diff = status ? git(['diff', 'HEAD']) : '';
  const headTime = Number(git(['log', '-1', '--format=%ct']) ?? 0) * 1000;
  const bundles = {};
  for (const service of ['api-gateway', 'scheduler', 'safety-kernel', 'echo-worker']) {
    const path = bundlePath(root, service);
    if (!existsSync(path)) continue;
    const builtMs = statSync(path).mtimeMs;
    bundles[service] = { sha256: createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16), builtAt: new Date(builtMs).toISOString(), olderThanHead: headTime > 0 && builtMs < headTime };
  }
  return {
    dirty: status === null ? null : status.trim().length > 0,
    ...(status ? { dirtyHash: createHash('sha256').update(status).update(diff ?? '').digest('hex').slice(0, 16) } : {}),
    bundles,
  };
}

function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  return {
    nproc: Number(execFileSync('nproc').toString().trim()),
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown',
  };
}

const benchT0 = performance.now();
const log = (m) => process.stderr.write(`[+${((performance.now() - benchT0) / 1000).toFixed(1)}s] ${m}\n`);
const errText = (e) => String(e?.message ?? e).slice(0, 500);

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`npm run bench: ${errText(e)}\n`);
    process.exit(2);
  }
  const cleanupState = { redis: null, grown: null };
  const fail = installCleanup(async () => {
    cleanupState.redis?.disconnect();
    cleanupState.grown?.disconnect();
    await stopAll(['api-gateway', 'bare-gateway', 'scheduler', 'bare-', 'echo-worker', 'safety-kernel', 'grpc-floor', 'redis', 'nats']);
    removeTempDirs();
  });
  let results;
  try {
    results = await run(opts, cleanupState);
  } catch (e) {
    await fail(1, `error: ${e?.stack ?? e}`);
    return;
  }
  // P169: --smoke proves every part works, so its exit code says whether one did not (a part
  // that failed is recorded and the run goes on, which a measuring run wants).
  const problems = opts.smoke ? smokeProblems(results) : [];
  if (problems.length > 0) {
    await fail(1, `smoke: ${problems.length} part(s) failed: ${problems.slice(0, 5).join('; ')}`);
    return;
  }
  await fail(0);
}

/**
 * Every `error` recorded and every phase with failed or unfinished jobs, by where in the results;
 * and, since a smoke run proves every part works, a stack pass that was skipped (bundles missing)
 * or a safety section that never ran.
 */
function smokeProblems(results) {
  const out = [];
  if (results.stack?.skipped && results.options?.stack !== false) out.push(`stack: skipped (${results.stack.skipped})`);
  if (results.options?.safety !== false && (!Array.isArray(results.safety) || results.safety.length === 0)) out.push('safety: no Check figures (the safety-kernel bundle is missing)');
  const walk = (v, where) => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${where}[${i}]`));
    else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'error' && typeof x === 'string') out.push(`${where}: ${x}`);
        else if (k === 'failedOrUnfinished' && typeof x === 'number' && x > 0) out.push(`${where}: ${x} jobs failed or unfinished`);
        else walk(x, where ? `${where}.${k}` : k);
      }
    }
  };
  walk(results, '');
  return out;
}

async function run(opts, cleanupState) {
  log(`bench: ${JSON.stringify(opts)}`);
  const [redisSrv, natsSrv] = await Promise.all([startRedis(opts.redisArgs), startNats()]);
  const redis = new Redis(redisSrv.url, { maxRetriesPerRequest: 2 });
  const servers = [{ name: 'redis-server', pid: redisSrv.proc.pid }, { name: 'nats-server', pid: natsSrv.proc.pid }];
  cleanupState.redis = redis;
  // Between passes: an empty Redis and no JetStream streams left by the previous
  // pass (its unprocessed submits would otherwise reach the next pass's scheduler);
  // the services create their streams again at start.
  const flushStreams = async () => {
    const nc = await connect({ servers: natsSrv.url });
    try {
      const jsm = await nc.jetstreamManager();
      for (const si of await jsm.streams.list().next()) await jsm.streams.delete(si.config.name);
    } finally {
      await nc.close();
    }
  };
  const flush = async () => {
    await redis.flushall();
    await flushStreams();
  };
  const results = {
    startedAt: new Date().toISOString(),
    options: opts,
    machine: machine(),
    versions: {
      node: process.version,
      redis: /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? null,
      nats: (await (await fetch(`http://127.0.0.1:${natsSrv.monitorPort}/varz`)).json()).version,
    },
    gitCommit: gitCommit(),
    code: codeIdentity(),
    baselines: {},
    stack: {},
    safety: [],
  };
  const mopts = { duration: opts.duration, warmup: opts.warmup, connections: opts.connections, rate: opts.rate, idleS: opts.smoke ? 1 : undefined };
  const guard = async (what, fn) => {
    try {
      return await fn();
    } catch (e) {
      log(`bench: ${what} failed: ${errText(e)}`);
      return { error: errText(e) };
    }
  };

  /** The bare pipeline (tools/bench/bare) measured as one model. */
  const bareRun = async (mo) => {
    const bare = await startBare(root, { redisUrl: redisSrv.url, natsUrl: natsSrv.url, nodeOptions: opts.nodeOptions, nodeArgs: opts.nodeArgs });
    const rss = rssSampler(bare.procs);
    try {
      const m = await measureModel({
        redis, monitorPort: natsSrv.monitorPort, urls: [bare.url], opts: mo, log, procs: [...bare.procs, ...servers],
        request: { path: '/jobs', headers: {}, body: JSON.stringify({ topic: 'job.echo', prompt: 'hello bench' }) },
        records: { key: (id) => `bare:job:{${id}}`, fields: ['state', 'created_at', 'dispatched_at', 'finished_at'], terminal: new Set(['SUCCEEDED', 'FAILED']) },
      });
      rss.stop();
      return { ...m, rssMb: rss.peakMb() };
    } finally {
      rss.stop();
      await bare.stop();
    }
  };

  if (opts.baselines) {
    log('baseline: raw JetStream publish → pull → ack');
    results.baselines.jetstream = await guard('jetstream', () => runJetStreamBaseline({ natsUrl: natsSrv.url, durationS: opts.duration, warmupS: opts.warmup }));
    log('baseline: BullMQ add → process');
    results.baselines.bullmq = await guard('bullmq', () => runBullmqBaseline({ redisPort: redisSrv.port, durationS: opts.duration, warmupS: opts.warmup }));
    await flush();
    log('baseline: bare pipeline (3 processes)');
    results.baselines.bare = await guard('bare', () => bareRun(mopts));
    await flush();
  }

  let cordumP = null;
  const getCordum = () => (cordumP ??= loadCordum(root));
  if (opts.safety !== false && existsSync(bundlePath(root, 'safety-kernel'))) {
    const cordum = await getCordum();
    log('safety: Check on a kernel of its own, decision cache off');
    results.safety.push({ label: 'cache off', ...(await guard('safety cache off', () => kernelRun(cordum, redisSrv, natsSrv, opts, {}))) });
    if (kernelHasDecisionCache(root)) {
      log('safety: Check with SAFETY_DECISION_CACHE_TTL=60s');
      results.safety.push({ label: 'cache on', ...(await guard('safety cache on', () => kernelRun(cordum, redisSrv, natsSrv, opts, { SAFETY_DECISION_CACHE_TTL: '60s' }))) });
    } else {
      results.safety.push({ label: 'cache on', skipped: 'SAFETY_DECISION_CACHE_TTL is not honoured by this safety-kernel build yet' });
    }
    log('safety: the same calls against a constant-answer server (gRPC floor)');
    results.safety.push({ label: 'gRPC floor', ...(await guard('safety gRPC floor', () => floorRun(cordum, opts))) });
    await flush();
  }

  /** Runs `a` then `b` in odd rounds and `b` then `a` in even ones, so a drift of the VM within a round favours neither; returns [a's result, b's]. */
  const alternate = async (round, a, b) => {
    if (round % 2 === 1) {
      const ra = await a();
      return [ra, await b()];
    }
    const rb = await b();
    return [await a(), rb];
  };

  /**
   * --interleave N: this VM's speed moves by up to 2x within minutes, so a ratio of two
   * passes measured minutes apart moves with it. N rounds of (bare, stack 1x) back to
   * back, saturated only, give one ratio per round from two runs seconds apart; the
   * median of those is the figure that survives the machine's swings.
   *
   * --ab DIR adds a third run to each round: stack 1x from DIR's bundles (the build before a
   * change), in alternating order with this checkout's (before, after in odd rounds; after,
   * before in even ones), so a drift of the VM within a round favours neither build.
   */
  const interleave = async (pass) => {
    const mo = { ...mopts, rate: 0, half: false, sweep: [], duration: Math.min(opts.duration, 10) };
    const cpu = (m) => (m?.saturated?.cpuMsPerJob ? Math.round(Object.values(m.saturated.cpuMsPerJob).reduce((a, b) => a + b, 0) * 100) / 100 : null);
    // --ab-rate (only with --ab): the two builds' runs also get a paced phase (latency at one load, build against build).
    const moAb = opts.abRate > 0 ? { ...mo, rate: opts.abRate } : mo;
    const paced = (m) => {
      const p = m?.paced;
      return p ? { dispatchP50: p.submitToDispatchMs?.p50 ?? null, dispatchP99: p.submitToDispatchMs?.p99 ?? null, resultP50: p.submitToResultMs?.p50 ?? null, resultP99: p.submitToResultMs?.p99 ?? null } : null;
    };
    const rounds = [];
    // The baselines of the headline ratios, in each round too (odd rounds before bare and the
    // stack, even rounds after): measured once before the passes, they carried the VM's drift
    // of the minutes between into "our jobs/s ÷ BullMQ jobs/s".
    const baselineRound = async (i) => {
      const jetstream = await guard(`interleave ${i} jetstream`, () => runJetStreamBaseline({ natsUrl: natsSrv.url, durationS: mo.duration, warmupS: opts.warmup }));
      await flushStreams();
      const bullmq = await guard(`interleave ${i} bullmq`, () => runBullmqBaseline({ redisPort: redisSrv.port, durationS: mo.duration, warmupS: opts.warmup }));
      await flush();
      return { jetstream, bullmq };
    };
    for (let i = 1; i <= opts.interleave; i++) {
      const withBaselines = opts.baselines ? `${i % 2 === 1 ? 'JetStream and BullMQ, then ' : ''}` : '';
      log(`interleave round ${i}/${opts.interleave}: ${withBaselines}bare, then stack 1x${opts.ab ? ` and stack 1x from ${opts.ab}` : ''}${opts.baselines && i % 2 === 0 ? ', then JetStream and BullMQ' : ''}`);
      const base = opts.baselines && i % 2 === 1 ? await baselineRound(i) : null;
      const bare = await guard(`interleave ${i} bare`, () => bareRun(mo));
      await flush();
      const runAfter = async () => {
        const m = await pass(`interleave ${i}`, { schedulers: 1, gateways: 1 }, undefined, moAb);
        await flush();
        return m;
      };
      const runBefore = async () => {
        const m = await pass(`interleave ${i} before`, { schedulers: 1, gateways: 1, distDir: opts.ab }, undefined, moAb);
        await flush();
        return m;
      };
      const [before, stack] = opts.ab ? await alternate(i, runBefore, runAfter) : [null, await runAfter()];
      const baselines = base ?? (opts.baselines ? await baselineRound(i) : null);
      const error = bare?.error ?? stack?.error ?? before?.error;
      rounds.push({
        ...(baselines
          ? {
              baselinesRanFirst: i % 2 === 1,
              bullmqJobsPerS: baselines.bullmq?.jobsPerS ?? null,
              jetstreamRoundTripsPerS: baselines.jetstream?.roundTripsPerS ?? null,
              ...(baselines.bullmq?.error || baselines.jetstream?.error ? { baselineError: baselines.bullmq?.error ?? baselines.jetstream?.error } : {}),
            }
          : {}),
        bareJobsPerS: bare?.saturated?.completedPerS ?? null,
        stackJobsPerS: stack?.saturated?.completedPerS ?? null,
        bareCpuMsPerJob: cpu(bare),
        stackCpuMsPerJob: cpu(stack),
        ...(opts.ab
          ? {
              beforeJobsPerS: before?.saturated?.completedPerS ?? null,
              beforeCpuMsPerJob: cpu(before),
              beforeRanFirst: i % 2 === 1,
              // Per process (gateway, scheduler, ..., redis-server, nats-server): which one the change moved.
              stackCpuByService: stack?.saturated?.cpuMsPerJob ?? null,
              beforeCpuByService: before?.saturated?.cpuMsPerJob ?? null,
              ...(opts.abRate > 0 ? { stackPaced: paced(stack), beforePaced: paced(before) } : {}),
            }
          : {}),
        failedOrUnfinished: failedInModel(bare) + failedInModel(stack) + failedInModel(before),
        ...(error ? { error } : {}),
      });
    }
    return { durationS: mo.duration, ...(opts.ab ? { ab: opts.ab } : {}), ...(opts.abRate > 0 ? { abRate: opts.abRate } : {}), rounds };
  };

  /**
   * --growth-rounds N: the growth pass and pass 1 run minutes apart, and a single p99 of each
   * moved by up to ±40 % between full runs while the store was the same size. N rounds of
   * stack 1x on the flushed Redis and on the preloaded one, back to back and in alternating
   * order (empty first in odd rounds), each a saturated phase and a phase paced at pass 1's
   * half-capacity rate, give one grown ÷ empty ratio per round; the medians are the growth figures.
   */
  const growthRounds = async (pass, grown, passOneHalfRate) => {
    const mo = { ...mopts, rate: 0, sweep: [], duration: Math.min(opts.duration, 10) };
    let halfRate = passOneHalfRate ?? undefined;
    const rounds = [];
    for (let i = 1; i <= opts.growthRounds; i++) {
      log(`growth round ${i}/${opts.growthRounds}: stack 1x on the empty and on the preloaded Redis`);
      const arm = async (which) => {
        const m = await pass(`growth round ${i} ${which}`, { schedulers: 1, gateways: 1, ...(which === 'grown' ? { store: grown } : {}) }, undefined, { ...mo, halfRate });
        if (which === 'grown') await flushStreams();
        else await flush();
        // Without pass 1's rate, both arms of every round run at the first arm's half rate.
        halfRate ??= m?.half?.rate;
        return m;
      };
      const emptyFirst = i % 2 === 1;
      const [empty, full] = await alternate(i, () => arm('empty'), () => arm('grown'));
      const error = empty?.error ?? full?.error;
      rounds.push({
        emptyRanFirst: emptyFirst,
        emptyJobsPerS: empty?.saturated?.completedPerS ?? null,
        grownJobsPerS: full?.saturated?.completedPerS ?? null,
        emptyHalfP99Ms: empty?.half?.submitToResultMs?.p99 ?? null,
        grownHalfP99Ms: full?.half?.submitToResultMs?.p99 ?? null,
        emptyCpuByService: empty?.saturated?.cpuMsPerJob ?? null,
        grownCpuByService: full?.saturated?.cpuMsPerJob ?? null,
        failedOrUnfinished: failedInModel(empty) + failedInModel(full),
        ...(error ? { error } : {}),
      });
    }
    return { durationS: mo.duration, halfRate: halfRate ?? null, rounds };
  };

  const missing = missingBundles(root);
  if (!opts.stack) results.stack.skipped = '--skip-stack';
  else if (missing.length) results.stack.skipped = `missing bundles: ${missing.join(', ')} (run npm run build)`;
  else {
    const cordum = await getCordum();
    const records = stackRecords(cordum);
    const request = STACK_REQUEST;
    // `shape.store`: another Redis server ({ srv, client }) for this pass (the growth preload's).
    const pass = async (label, shape, extra, passOpts = {}, settle = null) => guard(label, async () => {
      const { store: ownStore, ...stackShape } = shape;
      const store = ownStore ?? { srv: redisSrv, client: redis };
      log(`stack ${label}: ${shape.schedulers} scheduler(s), ${shape.gateways} gateway(s), ${opts.workers} echo worker(s)${shape.distDir ? `, bundles from ${shape.distDir}` : ''}${ownStore ? `, Redis on port ${store.srv.port}` : ''}`);
      // The smoke run waits for the first worker snapshot (what GET /api/v1/workers reads) sooner.
      const schedulerEnv = opts.smoke ? { WORKER_SNAPSHOT_INTERVAL: '500ms' } : {};
      const stack = await startStack(root, { redisUrl: store.srv.url, natsUrl: natsSrv.url, workers: opts.workers, workerParallel: opts.workerParallel, schedulerEnv, log, cpuProfDir: opts.cpuProf ? join(resolve(opts.cpuProf), label.replace(/\s+/g, '-')) : null, nodeArgs: opts.nodeArgs, extraEnv: opts.nodeOptions ? { NODE_OPTIONS: opts.nodeOptions } : {}, ...stackShape });
      const rss = rssSampler(stack.procs);
      try {
        const settled = settle ? await settle(stack) : undefined;
        const procs = [...stack.procs, { name: 'redis-server', pid: store.srv.proc.pid }, { name: 'nats-server', pid: natsSrv.proc.pid }];
        const m = await measureModel({ redis: store.client, monitorPort: natsSrv.monitorPort, urls: stack.gatewayUrls, request, records, opts: { ...mopts, ...passOpts }, log, procs, stageUrls: stack.schedulerMetricsUrls });
        if (extra) await extra(stack);
        rss.stop();
        return { ...m, rssMb: rss.peakMb(), ...(settled ? { settled } : {}) };
      } finally {
        rss.stop();
        await stack.stop();
      }
    });

    results.stack.pass1 = await pass('pass 1', { schedulers: 1, gateways: 1 }, undefined, { sweep: opts.sweep });
    await flush();
    if (opts.pass2) {
      results.stack.pass2 = await pass('pass 2', { schedulers: 2, gateways: 2 });
      await flush();
    }
    if (opts.growth) {
      // The preload goes to a Redis server of its own, so the --growth-rounds can run the stack
      // on it and on the (flushed) empty one in turn without preloading again.
      const grownSrv = await startRedis(opts.redisArgs);
      const grown = { srv: grownSrv, client: new Redis(grownSrv.url, { maxRetriesPerRequest: 2 }) };
      cleanupState.grown = grown.client;
      log(`growth: preloading ${opts.terminal} terminal + ${opts.pending} pending jobs via the job-store`);
      const pre = await guard('preload', () => preload(cordum, { redisUrl: grownSrv.url, terminal: opts.terminal, pending: opts.pending, onProgress: log }));
      // Timed at pass 1's half-capacity rate, so the latencies compare at the same load.
      // The backlog is measured in its steady state: the scheduler finds the preloaded jobs as
      // orphans (older than SCHEDULER_PENDING_REPLAY_AGE), checks each once and parks it on its
      // unserved topic (P15); the load starts once all of them wait there.
      const settle = async () => {
        const t0 = Date.now();
        const key = cordum.jobKeys.parked(GROWTH_TOPIC);
        let parked = 0;
        while ((parked = await grown.client.zcard(key)) < opts.pending) {
          if (Date.now() - t0 > 300_000) throw new Error(`only ${parked} of ${opts.pending} pending jobs parked after 300 s`);
          await new Promise((r) => setTimeout(r, 500));
        }
        log(`growth: ${parked} pending jobs parked on ${GROWTH_TOPIC} after ${Math.round((Date.now() - t0) / 1000)} s`);
        return { parked, seconds: Math.round((Date.now() - t0) / 100) / 10 };
      };
      const g = await pass('growth', { schedulers: 1, gateways: 1, store: grown }, undefined, { halfRate: results.stack.pass1?.half?.rate }, settle);
      results.stack.growth = { preload: pre, ...g };
      await flushStreams();
      if (opts.growthRounds > 0 && !g.error && !pre.error) results.stack.growthRounds = await growthRounds(pass, grown, results.stack.pass1?.half?.rate);
      grown.client.disconnect();
      cleanupState.grown = null;
      await grownSrv.stop();
    }
    if (opts.interleave > 0) results.interleaved = await interleave(pass);
  }

  results.ratios = ratios(results);
  results.steadiness = steadiness(results);
  results.finishedAt = new Date().toISOString();
  const dir = opts.out ? resolve(opts.out) : join(root, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${opts.smoke ? 'smoke-' : ''}${results.startedAt.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  process.stdout.write(`\n${table(results)}\n\nresults: ${file}\n`);
  return results;
}

/** Check latency (1 in flight) and decisions/s (16 in flight) against `addr`. */
async function measureCheck(cordum, addr, opts) {
  const d = Math.max(1, Math.min(opts.duration, 10));
  const w = opts.smoke ? 0.2 : opts.quick ? 0.5 : 1;
  const latency = await benchCheck(cordum, { addr, durationS: d, concurrency: 1, warmupS: w });
  const throughput = await benchCheck(cordum, { addr, durationS: d, concurrency: 16, warmupS: w });
  // What the services send since P17: Check as a message on the Decide stream.
  const stream = {
    latency: await benchCheck(cordum, { addr, durationS: d, concurrency: 1, warmupS: w, transport: 'stream' }),
    throughput: await benchCheck(cordum, { addr, durationS: d, concurrency: 16, warmupS: w, transport: 'stream' }),
  };
  return { latency, throughput, stream };
}

/**
 * Check on a kernel of its own, so the figure is the kernel's, not the kernel's
 * under a job load.
 */
async function kernelRun(cordum, redisSrv, natsSrv, opts, extraEnv) {
  const grpc = await freePort();
  const http = await freePort();
  const p = start('safety-kernel-check', process.execPath, [bundlePath(root, 'safety-kernel')], {
    env: { REDIS_URL: redisSrv.url, NATS_URL: natsSrv.url, CORDUM_LOG_LEVEL: 'warn', CORDUM_INSTANCE_ID: 'safety-kernel-check', SAFETY_KERNEL_GRPC_ADDR: `127.0.0.1:${grpc}`, SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${http}`, ...extraEnv },
  });
  try {
    await waitUntil(async () => {
      if (!p.running()) throw new Error(`kernel exited: ${p.tail.join(' | ')}`);
      try { return (await fetch(`http://127.0.0.1:${http}/readyz`)).status === 200; } catch { return false; }
    }, 30_000, 'safety kernel');
    return await measureCheck(cordum, `127.0.0.1:${grpc}`, opts);
  } finally {
    await p.stop();
  }
}

/**
 * The baseline of the Check figures: the same client and calls against a process that
 * serves SafetyKernel through the same gRPC stack with a constant answer
 * (grpc-floor-server.mjs), i.e. what a Check costs before any policy work.
 */
async function floorRun(cordum, opts) {
  const addr = `127.0.0.1:${await freePort()}`;
  const p = start('grpc-floor', process.execPath, [join(root, 'tools/bench/grpc-floor-server.mjs'), cordum.bundleFile, addr]);
  try {
    await waitUntil(() => {
      if (!p.running()) throw new Error(`grpc floor server exited: ${p.tail.join(' | ')}`);
      return p.tail.some((l) => l.includes('grpc floor: listening'));
    }, 30_000, 'grpc floor server');
    return await measureCheck(cordum, addr, opts);
  } finally {
    await p.stop();
  }
}

await main();
