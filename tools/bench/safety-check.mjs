#!/usr/bin/env node
// Safety kernel `Check` micro-benchmark (issue 5): the 12-rule policy of the
// safety e2e suite (tools/bench/safety-policy.yaml), a mix of requests that
// end at different rules (and the default), on a kernel process of its own,
// with the decision cache off and on. Reports p50/p99 latency (1 call in
// flight) and decisions/s (N in flight) per run.
//
//   npm run build && node tools/bench/safety-check.mjs [--duration S (5)] [--warmup S (1)]
//                                                     [--concurrency N (16)] [--json FILE]
//
// Importable (tools/bench/run.mjs): `runSafetyCheckBench({root, cordum?, redisUrl?, natsUrl?,
// durationS?, warmupS?, concurrency?, log?})` → {policy, mix, runs: [{label, cacheTtl, latency,
// throughput, cacheHitRatio}]}; it starts its own redis-server / nats-server unless URLs are given.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { loadCordum } from './lib/cordum.mjs';
import { freePort, installCleanup, removeTempDirs, start, startNats, startRedis, stopAll, waitUntil } from './lib/procs.mjs';
import { percentiles, round } from './lib/stats.mjs';
import { bundlePath } from './lib/stack.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const POLICY_PATH = join(here, 'safety-policy.yaml');

// Decision enum (cordum.v1.Decision) and ActorType (cordum.agent.v1.ActorType) as wire numbers.
const D = { ALLOW: 1, DENY: 2, REQUIRE_HUMAN: 3, THROTTLE: 4, ALLOW_WITH_CONSTRAINTS: 5 };
const HUMAN = 1;
const SERVICE = 2;

/**
 * One request per rule outcome, each with the rule it must end at (checked before measuring, so
 * the bench cannot silently time a wrong policy). Velocity rules are left out on purpose: they
 * are never cached and record per job (D20), which would measure Redis, not the policy.
 */
export const REQUEST_MIX = [
  { name: 'allow-echo', req: { topic: 'job.echo' }, decision: D.ALLOW, ruleId: 'allow-echo' },
  { name: 'hold-prod', req: { topic: 'job.echo', labels: { env: 'prod' } }, decision: D.REQUIRE_HUMAN, ruleId: 'hold-prod' },
  { name: 'deny-admin', req: { topic: 'job.admin.drop' }, decision: D.DENY, ruleId: 'deny-admin' },
  { name: 'deny-pii-export', req: { topic: 'job.export.csv', meta: { riskTags: ['pii'] } }, decision: D.DENY, ruleId: 'deny-pii-export' },
  { name: 'hold-human-delete', req: { topic: 'job.files.delete', meta: { actorType: HUMAN } }, decision: D.REQUIRE_HUMAN, ruleId: 'hold-human-delete' },
  { name: 'constrain-batch', req: { topic: 'job.batch.nightly', meta: { actorType: SERVICE } }, decision: D.ALLOW_WITH_CONSTRAINTS, ruleId: 'constrain-batch' },
  { name: 'allow-ml-train', req: { topic: 'job.train', meta: { capability: 'ml.train', requires: ['gpu', 'cuda'] } }, decision: D.ALLOW, ruleId: 'allow-ml-train' },
  { name: 'deny-gpu-globex', req: { topic: 'job.train', tenant: 'globex', meta: { requires: ['gpu'] } }, decision: D.DENY, ruleId: 'deny-gpu-globex' },
  { name: 'deny-legacy', req: { topic: 'job.legacy.old' }, decision: D.DENY, ruleId: 'deny-legacy' },
  { name: 'default', req: { topic: 'job.other.thing' }, decision: D.ALLOW, ruleId: '' },
];

function request(i) {
  const m = REQUEST_MIX[i % REQUEST_MIX.length];
  const tenant = m.req.tenant ?? 'default';
  return { jobId: `bench-check-${i}`, tenant, priority: 1, principalId: 'bench', labels: {}, ...m.req, meta: { tenantId: tenant, ...(m.req.meta ?? {}) } };
}

async function measure(client, { durationS, warmupS, concurrency }) {
  const lat = [];
  let errors = 0;
  let i = 0;
  const loop = async (until, record) => {
    while (performance.now() < until) {
      const t = performance.now();
      try {
        await client.check(request(i++));
        if (record) lat.push(performance.now() - t);
      } catch {
        if (record) errors++;
      }
    }
  };
  const w = performance.now() + warmupS * 1000;
  await Promise.all(Array.from({ length: concurrency }, () => loop(w, false)));
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, () => loop(t0 + durationS * 1000, true)));
  const elapsed = (performance.now() - t0) / 1000;
  const p = percentiles(lat);
  return { calls: lat.length, decisionsPerS: round(lat.length / elapsed, 0), p50Ms: round(p.p50, 3), p99Ms: round(p.p99, 3), concurrency, errors };
}

async function metricValue(httpPort, name) {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

async function kernelRun(o, label, cacheTtl) {
  const grpc = await freePort();
  const http = await freePort();
  const p = start(`safety-kernel-${label.replace(/\s+/g, '-')}`, process.execPath, [bundlePath(o.root, 'safety-kernel')], {
    env: {
      REDIS_URL: o.redisUrl,
      NATS_URL: o.natsUrl,
      CORDUM_LOG_LEVEL: 'warn',
      CORDUM_INSTANCE_ID: `safety-kernel-bench-${label.replace(/\s+/g, '-')}`,
      SAFETY_KERNEL_GRPC_ADDR: `127.0.0.1:${grpc}`,
      SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${http}`,
      SAFETY_POLICY_PATH: POLICY_PATH,
      SAFETY_DECISION_CACHE_TTL: cacheTtl,
    },
  });
  const client = o.cordum.grpcClientFor(o.cordum.SafetyKernel, `127.0.0.1:${grpc}`, { defaultDeadlineMs: 5000 });
  try {
    await waitUntil(async () => {
      if (!p.running()) throw new Error(`kernel exited: ${p.tail.join(' | ')}`);
      try {
        return (await fetch(`http://127.0.0.1:${http}/readyz`)).status === 200;
      } catch {
        return false;
      }
    }, 30_000, 'safety kernel');
    await client.waitForReady(10_000);
    const rules = (await client.listRules({})).rules.length;
    for (const [i, m] of REQUEST_MIX.entries()) {
      const r = await client.check(request(i));
      if (r.decision !== m.decision || r.ruleId !== m.ruleId) throw new Error(`policy check: ${m.name} answered decision ${r.decision} rule '${r.ruleId}', expected ${m.decision} '${m.ruleId}'`);
    }
    const latency = await measure(client, { durationS: o.durationS, warmupS: o.warmupS, concurrency: 1 });
    const throughput = await measure(client, { durationS: o.durationS, warmupS: o.warmupS, concurrency: o.concurrency });
    const hits = await metricValue(http, 'cordum_safety_decision_cache_hits_total');
    const lookups = await metricValue(http, 'cordum_safety_decision_cache_lookups_total');
    o.log(`  ${label}: p50 ${latency.p50Ms} ms, p99 ${latency.p99Ms} ms (1 in flight); ${throughput.decisionsPerS} decisions/s (${o.concurrency} in flight)`);
    return { label, cacheTtl, rules, latency, throughput, cacheHitRatio: lookups > 0 ? round(hits / lookups, 3) : null };
  } finally {
    client.close();
    await p.stop();
  }
}

export async function runSafetyCheckBench(opts) {
  const o = { durationS: 5, warmupS: 1, concurrency: 16, log: () => undefined, ...opts };
  if (!o.root) throw new Error('runSafetyCheckBench needs {root}');
  o.cordum ??= await loadCordum(o.root);
  const own = [];
  if (!o.redisUrl) {
    const r = await startRedis();
    own.push(r);
    o.redisUrl = r.url;
  }
  if (!o.natsUrl) {
    const n = await startNats();
    own.push(n);
    o.natsUrl = n.url;
  }
  try {
    const runs = [];
    o.log(`safety Check micro-benchmark: ${REQUEST_MIX.length}-request mix over ${POLICY_PATH}`);
    runs.push(await kernelRun(o, 'cache off', '0'));
    runs.push(await kernelRun(o, 'cache on', '60s'));
    return { policy: POLICY_PATH, mix: REQUEST_MIX.map((m) => m.name), durationS: o.durationS, runs };
  } finally {
    for (const s of own) await s.stop();
  }
}

export function safetyCheckTable(result) {
  const rows = [];
  for (const r of result.runs) {
    rows.push([`safety ${r.label}`, `Check p50 / p99 ms (1 in flight, ${r.rules} rules)`, `${r.latency.p50Ms} / ${r.latency.p99Ms}`]);
    rows.push([`safety ${r.label}`, `decisions/s (${r.throughput.concurrency} in flight)`, String(r.throughput.decisionsPerS)]);
    if (r.cacheHitRatio !== null) rows.push([`safety ${r.label}`, 'decision cache hit ratio', String(r.cacheHitRatio)]);
  }
  return rows.map(([a, b, c]) => `${a.padEnd(18)}${b.padEnd(48)}${c}`).join('\n');
}

function parseArgs(argv) {
  const o = { durationS: 5, warmupS: 1, concurrency: 16, json: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const n = Number(argv[++i]);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`${a} needs a positive number`);
      return n;
    };
    if (a === '--duration') o.durationS = num();
    else if (a === '--warmup') o.warmupS = num();
    else if (a === '--concurrency') o.concurrency = Math.floor(num());
    else if (a === '--json') o.json = argv[++i];
    else if (a === '--help' || a === '-h') {
      process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 14).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      process.exit(0);
    } else throw new Error(`unknown argument "${a}" (try --help)`);
  }
  return o;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const root = join(here, '../..');
  const args = parseArgs(process.argv.slice(2));
  const cleanup = async () => {
    await stopAll(['safety-kernel']);
    removeTempDirs();
  };
  installCleanup(cleanup);
  try {
    const result = await runSafetyCheckBench({ root, ...args, log: (l) => process.stderr.write(`${l}\n`) });
    process.stdout.write(`${safetyCheckTable(result)}\n`);
    if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2) + '\n');
  } finally {
    await cleanup();
  }
}
