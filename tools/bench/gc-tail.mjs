#!/usr/bin/env node
// Where the latency tail comes from (issue 7 profiling): starts Redis, NATS and
// the stack (1 kernel, 1 scheduler, 1 gateway, 1 echo worker) with --trace-gc,
// drives evenly paced load, then lines up the slowest jobs (submit→dispatch at
// or above p98, grouped into clusters of jobs created within 30 ms of each
// other) with the GC pauses the services reported around them, and prints what
// each service allocated per job (the heap growth between one GC and the next,
// summed over the paced phase): unlike jobs/s, that figure does not move with
// the VM's speed, so it shows an allocation cut on its own.
//
//   node tools/bench/gc-tail.mjs [--rate 250] [--duration 15] [--workers 1] [--node-args "--single-threaded-gc"]
//
// A GC line is timed when the bench reads it from the child's stdout, so its
// time is a few ms late at most; pauses under 2 ms are left out of the clusters.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { scriptArgs } from './lib/args.mjs';
import { installCleanup, removeTempDirs, percentiles, sleep, startNats, startRedis, stopAll } from './lib/index.mjs';
import { collect, drive } from './lib/load.mjs';
import { loadCordum } from './lib/cordum.mjs';
import { SERVICE_NODE_OPTIONS, STACK_REQUEST, stackRecords, startStack } from './lib/stack.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = scriptArgs(import.meta.url, process.argv.slice(2), {
  rate: { type: 'number', default: 250, min: 1 },
  duration: { type: 'number', default: 15, min: 1 },
  workers: { type: 'number', default: 1, min: 1, integer: true },
  'node-args': { type: 'string', default: '' },
});
const rate = values.rate;
const durationS = values.duration;
const workers = values.workers;
const extraArgs = values['node-args'].split(/\s+/).filter(Boolean);

// `[pid:0x…]  1234 ms: Scavenge 20.1 (25.0) -> 18.3 (26.0) MB, 1.2 / 0.0 ms  (…)`
const GC_LINE = /(Scavenge|Mark-Compact)[^\d]*([0-9.]+) \([0-9.]+\) -> ([0-9.]+) \([0-9.]+\) MB, ([0-9.]+) \/ [0-9.]+ ms/;

async function main() {
  const [redisSrv, natsSrv] = await Promise.all([startRedis(), startNats()]);
  const stack = await startStack(root, { redisUrl: redisSrv.url, natsUrl: natsSrv.url, workers, extraEnv: { NODE_OPTIONS: SERVICE_NODE_OPTIONS }, nodeArgs: ['--trace-gc', ...extraArgs] });
  const gcs = [];
  for (const p of stack.procs) {
    p.child.stdout.on('data', (b) => {
      for (const l of b.toString('utf8').split('\n')) {
        const m = GC_LINE.exec(l);
        if (m) gcs.push({ proc: p.name, kind: m[1], before: Number(m[2]), after: Number(m[3]), ms: Number(m[4]), at: Date.now() });
      }
    });
  }
  const redis = new Redis(redisSrv.url);
  try {
    const request = STACK_REQUEST;
    const records = stackRecords(await loadCordum(root));
    await drive(stack.gatewayUrls, { ...request, connections: 64, durationS: 3, rate }); // warm-up
    await sleep(1000);
    gcs.length = 0;
    const d = await drive(stack.gatewayUrls, { ...request, connections: 64, durationS, rate });
    const { recs } = await collect(redis, d.ids, { ...records, timeoutMs: 30_000, own: {} });
    const jobs = [...recs.values()].filter((r) => r.state === 'SUCCEEDED' && r.dispatched !== null).sort((a, b) => a.created - b.created);
    if (jobs.length === 0) throw new Error('no job succeeded');
    const toDispatch = (r) => r.dispatched - r.created;
    const dispatch = percentiles(jobs.map(toDispatch));
    const result = percentiles(jobs.map((r) => r.finished - r.created));
    console.log(`paced ${rate}/s for ${durationS}s: ${jobs.length} jobs; submit→dispatch p50/p99 ${dispatch.p50}/${dispatch.p99} ms, submit→result p50/p99 ${result.p50}/${result.p99} ms`);

    const sorted = jobs.map(toDispatch).sort((a, b) => a - b);
    const threshold = sorted[Math.min(sorted.length - 1, Math.ceil(0.98 * sorted.length) - 1)];
    const slowJobs = jobs.filter((r) => toDispatch(r) >= threshold);
    const clusters = [];
    for (const r of slowJobs) {
      const c = clusters.at(-1);
      const lat = toDispatch(r);
      if (c && r.created - c.end < 30) Object.assign(c, { end: r.created, n: c.n + 1, max: Math.max(c.max, lat) });
      else clusters.push({ start: r.created, end: r.created, n: 1, max: lat });
    }
    let withGc = 0;
    const t0 = jobs[0].created;
    const lines = clusters.map((c) => {
      const near = gcs.filter((g) => g.ms >= 2 && g.at >= c.start - 60 && g.at <= c.end + c.max + 20);
      if (near.length) withGc++;
      return `  +${String(c.start - t0).padStart(6)} ms  ${String(c.n).padStart(3)} job(s), max ${c.max} ms   ${near.map((g) => `${g.proc} ${g.kind} ${g.ms.toFixed(1)} ms`).join(', ') || '(no GC pause ≥ 2 ms)'}`;
    });
    // Control: the same window around a job's submit (60 ms before to 80 ms after) for the slow
    // jobs and for jobs at or under the median; GC pauses are frequent, so only the difference
    // between the two says the pauses make the tail.
    const pausedMs = (t) => gcs.filter((g) => g.at >= t - 60 && g.at <= t + 80).reduce((a, g) => a + g.ms, 0);
    const typical = jobs.filter((r) => toDispatch(r) <= dispatch.p50);
    const avg = (list) => (list.length ? list.reduce((a, x) => a + pausedMs(x.created), 0) / list.length : 0);
    console.log(`GC pause ms in services within -60..+80 ms of submit: slowest jobs ${avg(slowJobs).toFixed(1)} ms on average, jobs at or under the median ${avg(typical).toFixed(1)} ms`);
    console.log(`slowest jobs (submit→dispatch ≥ p98 = ${threshold} ms): ${clusters.length} cluster(s), ${withGc} with a GC pause ≥ 2 ms in a service around them`);
    for (const l of lines) console.log(l);
    console.log('GC pauses during the paced phase (ms):');
    const by = new Map();
    for (const g of gcs) {
      const k = `${g.proc} ${g.kind}`;
      const a = by.get(k) ?? [];
      a.push(g.ms);
      by.set(k, a);
    }
    for (const [k, v] of [...by].sort()) {
      const p = percentiles(v);
      console.log(`  ${k.padEnd(32)} n=${String(v.length).padStart(4)}  per s ${(v.length / durationS).toFixed(1).padStart(5)}  p50 ${p.p50}  max ${Math.max(...v).toFixed(1)}`);
    }
    // What the heap grew by between each GC and the next one of the same process: what the
    // service allocated in between (objects that died young included).
    console.log(`heap allocated per job during the paced phase (${d.ids.length} jobs submitted):`);
    for (const name of [...new Set(gcs.map((g) => g.proc))].sort()) {
      const own = gcs.filter((g) => g.proc === name);
      let mb = 0;
      for (let i = 1; i < own.length; i++) mb += Math.max(0, own[i].before - own[i - 1].after);
      console.log(`  ${name.padEnd(18)} ${((mb * 1024) / d.ids.length).toFixed(1).padStart(7)} KB/job  (${mb.toFixed(0)} MB over ${own.length} GCs)`);
    }
  } finally {
    await redis.quit();
    await stack.stop();
  }
}

const done = installCleanup(async () => {
  await stopAll(['api-gateway', 'scheduler', 'echo-worker', 'safety-kernel', 'redis', 'nats']);
  removeTempDirs();
});
main().then(() => done(0), (e) => done(1, `error: ${e?.message ?? e}`));
