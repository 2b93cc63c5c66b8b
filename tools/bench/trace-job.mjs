#!/usr/bin/env node
// Every Redis command of one job's lifecycle (issue 7 profiling): starts Redis,
// NATS and the stack (1 kernel, 1 scheduler, 1 gateway, 1 echo worker), waits
// for the system to go idle, then submits ONE job with Redis MONITOR on and
// prints each command with the service that sent it (from CLIENT LIST names)
// until the job is SUCCEEDED and Redis has been quiet for a moment.
//
//   node tools/bench/trace-job.mjs [--jobs N] [--json]
//
// Commands run inside Lua scripts are listed under the EVALSHA that ran them.
// Background traffic (heartbeat snapshot, leader leases, config polls) is
// marked `bg` when it names neither the job id nor a key the job writes.
// Then, without --json, the memory Redis holds for the last job's own keys
// (MEMORY USAGE and encoding of each key that names its id).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { scriptArgs } from './lib/args.mjs';
import { installCleanup, removeTempDirs, sleep, startNats, startRedis, stopAll } from './lib/index.mjs';
import { API_KEY, startStack } from './lib/stack.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = scriptArgs(import.meta.url, process.argv.slice(2), { jobs: { type: 'number', default: 1, min: 1, integer: true }, json: { type: 'boolean', default: false } });
const jobs = values.jobs;
const asJson = values.json;

async function main() {
  const [redisSrv, natsSrv] = await Promise.all([startRedis(), startNats()]);
  const stack = await startStack(root, { redisUrl: redisSrv.url, natsUrl: natsSrv.url, workers: 1 });
  const poll = new Redis(redisSrv.url);
  const mon = await new Redis(redisSrv.url).monitor();
  try {
    // Warm every path once (script loads, gRPC channels) so the trace shows the steady state.
    await submitAndWait(stack.gatewayUrls[0], poll);
    await sleep(1500);
    const names = await clientNames(poll);
    const own = new Set([...names].filter(([, n]) => n === '').map(([a]) => a));
    const lines = [];
    let last = performance.now();
    let lua = null;
    mon.on('monitor', (time, argv, source) => {
      last = performance.now();
      if (source === 'lua') {
        lua?.inner.push(argv);
        return;
      }
      if (own.has(source) && !names.has(source)) return;
      const who = names.get(source) || source;
      if (who === '' || own.has(source)) return; // the tracer's own polling
      const line = { at: Number(time) * 1000, who, argv, inner: [] };
      lines.push(line);
      lua = /^eval/i.test(argv[0]) ? line : null;
    });
    const ids = [];
    for (let i = 0; i < jobs; i++) ids.push(await submitAndWait(stack.gatewayUrls[0], poll));
    // Trailing writes (index moves, lock release) land after the state does.
    while (performance.now() - last < 700) await sleep(100);
    mon.disconnect();
    report(lines, ids);
    if (!asJson) await reportMemory(poll, ids[ids.length - 1]);
  } finally {
    poll.disconnect();
    await stack.stop();
  }
}

async function clientNames(redis) {
  const list = await redis.client('LIST');
  const m = new Map();
  for (const l of list.split('\n')) {
    const addr = /addr=(\S+)/.exec(l)?.[1];
    if (addr) m.set(addr, /name=(\S*)/.exec(l)?.[1] ?? '');
  }
  return m;
}

async function submitAndWait(url, redis) {
  const res = await fetch(`${url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': API_KEY }, body: JSON.stringify({ topic: 'job.echo', prompt: 'trace' }) });
  if (res.status !== 200) throw new Error(`submit answered ${res.status}: ${await res.text()}`);
  const { job_id: id } = await res.json();
  for (let i = 0; i < 200; i++) {
    const st = await redis.hget(`job:meta:{${id}}`, 'state');
    if (st === 'SUCCEEDED') return id;
    if (st && !['PENDING', 'SCHEDULED', 'DISPATCHED', 'RUNNING'].includes(st)) throw new Error(`job ended ${st}`);
    await sleep(25);
  }
  throw new Error(`job ${id} not SUCCEEDED in 5 s`);
}

/** Each key naming the job id, with what Redis holds for it (key, value, overhead; not its index entries). */
async function reportMemory(redis, id) {
  const keys = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `*${id}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  keys.sort();
  let total = 0;
  process.stdout.write(`\nRedis memory of the last job's keys (MEMORY USAGE):\n`);
  for (const k of keys) {
    const [type, bytes, encoding] = await Promise.all([redis.type(k), redis.memory('USAGE', k, 'SAMPLES', 0), redis.object('ENCODING', k)]);
    total += Number(bytes);
    process.stdout.write(`  ${String(bytes).padStart(6)} B  ${`${type}/${encoding}`.padEnd(20)} ${k}\n`);
  }
  process.stdout.write(`  ${String(total).padStart(6)} B  in ${keys.length} keys (index entries not included)\n`);
}

const BACKGROUND = /^(zrangebyscore|scan|ping|info|client)$/i;

function report(lines, ids) {
  const mentions = (argv) => argv.some((a) => ids.some((id) => String(a).includes(id)));
  const isRateLimit = (l) => l.inner.some((a) => String(a[1] ?? '').startsWith('cordum:rl:'));
  // A pipelined PEXPIRE / MULTI / EXEC right after a job command of the same client belongs to it.
  const prevJob = new Map();
  const rows = lines.map((l) => {
    let job = !BACKGROUND.test(l.argv[0]) && (mentions(l.argv) || l.inner.some(mentions) || isRateLimit(l));
    if (!job && /^(pexpire|multi|exec)$/i.test(l.argv[0]) && prevJob.get(l.who)) job = true;
    prevJob.set(l.who, job);
    return { ...l, job };
  });
  if (asJson) {
    process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
    return;
  }
  const short = (argv) => argv.map((a) => { const s = String(a); return s.length > 60 ? `${s.slice(0, 57)}...` : s; }).join(' ');
  // EVALSHA <sha> <numkeys> keys... args...: show the keys and args, the body is listed below it.
  const shown = (argv) => (/^evalsha$/i.test(argv[0]) ? ['evalsha', ...argv.slice(3)] : argv);
  const t0 = rows[0]?.at ?? 0;
  let n = 0;
  let inner = 0;
  const byWho = {};
  const byCmd = {};
  for (const r of rows) {
    if (r.job) {
      n++;
      inner += r.inner.length;
      byWho[r.who] = (byWho[r.who] ?? 0) + 1;
      for (const a of [r.argv, ...r.inner]) byCmd[String(a[0]).toLowerCase()] = (byCmd[String(a[0]).toLowerCase()] ?? 0) + 1;
    }
    process.stdout.write(`${(r.at - t0).toFixed(1).padStart(7)} ms ${r.job ? '   ' : 'bg '}${r.who.padEnd(22)} ${short(shown(r.argv))}\n`);
    for (const a of r.inner) process.stdout.write(`${' '.repeat(37)}└ ${short(a)}\n`);
  }
  const per = (x) => (x / ids.length).toFixed(1);
  process.stdout.write(`\n${ids.length} job(s): ${per(n)} commands sent per job, ${per(inner)} more inside scripts (${per(n + inner)} in INFO commandstats)\n`);
  process.stdout.write(`by service: ${JSON.stringify(Object.fromEntries(Object.entries(byWho).map(([k, v]) => [k, Number(per(v))])))}\n`);
  process.stdout.write(`by command: ${JSON.stringify(Object.fromEntries(Object.entries(byCmd).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, Number(per(v))])))}\n`);
}

const fail = installCleanup(async () => {
  await stopAll(['api-gateway', 'scheduler', 'echo-worker', 'safety-kernel', 'redis', 'nats']);
  removeTempDirs();
});
main().then(() => fail(0), (e) => fail(1, `error: ${e?.stack ?? e}`));
