// HTTP load with autocannon and job-record collection from Redis timestamps.
import autocannon from 'autocannon';
import { sleep } from './procs.mjs';
import { percentiles, round } from './stats.mjs';

function runOne(url, { connections, durationS, rate, path, headers, body, ids }) {
  const opts = {
    url,
    connections,
    duration: durationS,
    pipelining: 1,
    timeout: 10,
    requests: [{
      method: 'POST',
      path,
      headers: { 'content-type': 'application/json', ...headers },
      body,
      onResponse: (status, resBody) => {
        if (status !== 200) return;
        try { const id = JSON.parse(resBody).job_id; if (id) ids.push(id); } catch { /* counted as ok by status */ }
      },
    }],
  };
  if (rate) opts.overallRate = rate;
  return autocannon(opts);
}

/**
 * Drives POSTs against one or more base URLs (connections and rate split evenly);
 * returns submits/s, error counts and the accepted job ids.
 */
export async function drive(urls, o) {
  const ids = [];
  const n = urls.length;
  const results = await Promise.all(urls.map((u, i) => runOne(u, {
    ...o,
    ids,
    connections: Math.max(1, Math.floor(o.connections / n) + (i < o.connections % n ? 1 : 0)),
    rate: o.rate ? Math.max(1, Math.round(o.rate / n)) : undefined,
  })));
  const ok = results.reduce((s, r) => s + r['2xx'], 0);
  const non2xx = results.reduce((s, r) => s + r.non2xx, 0);
  const errors = results.reduce((s, r) => s + r.errors + r.timeouts, 0);
  const duration = Math.max(...results.map((r) => r.duration));
  const lat = results[0].latency;
  return {
    ids,
    submitsPerS: round(ok / duration, 0),
    accepted: ok,
    non2xx,
    errors,
    durationS: round(duration, 2),
    httpLatencyMs: { p50: lat.p50, p99: lat.p99 },
  };
}

/**
 * Polls job records until every id is terminal (or timeoutMs), with `read`
 * mapping an id list to [{state, created, dispatched, finished}] via one
 * pipelined HMGET batch. `own` counts the harness's commands so they can be
 * taken out of the commandstats delta.
 */
export async function collect(redis, ids, { key, fields, terminal, timeoutMs, own }) {
  const recs = new Map();
  const lastState = new Map();
  const pending = new Set(ids);
  const deadline = Date.now() + timeoutMs;
  while (pending.size > 0 && Date.now() < deadline) {
    const batch = [...pending];
    for (let i = 0; i < batch.length; i += 2000) {
      const chunk = batch.slice(i, i + 2000);
      const p = redis.pipeline();
      for (const id of chunk) p.hmget(key(id), ...fields);
      own.hmget = (own.hmget ?? 0) + chunk.length;
      const res = await p.exec();
      res.forEach(([err, vals], j) => {
        if (err || !vals || vals[0] === null) return;
        const state = vals[0];
        lastState.set(chunk[j], state);
        if (terminal.has(state)) {
          const num = (v) => (v === null || v === undefined ? null : Number(JSON.parse(v)));
          recs.set(chunk[j], { state, created: num(vals[1]), dispatched: num(vals[2]), finished: num(vals[3]) });
          pending.delete(chunk[j]);
        }
      });
    }
    if (pending.size > 0) await sleep(200);
  }
  const stuck = {};
  for (const id of pending) { const st = lastState.get(id) ?? 'MISSING'; stuck[st] = (stuck[st] ?? 0) + 1; }
  return { recs, unfinished: pending.size, stuck };
}

/** Completed jobs/s and latency percentiles from job timestamps (not client clocks). */
export function summarize(recs, unfinished) {
  const all = [...recs.values()];
  const ok = all.filter((r) => r.state === 'SUCCEEDED');
  const failed = all.length - ok.length + unfinished;
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const r of ok) { t0 = Math.min(t0, r.created); t1 = Math.max(t1, r.finished); }
  const dispatch = percentiles(ok.filter((r) => r.dispatched !== null).map((r) => r.dispatched - r.created));
  const result = percentiles(ok.map((r) => r.finished - r.created));
  const pick = (p) => ({ p50: p.p50, p95: p.p95, p99: p.p99 });
  return {
    succeeded: ok.length,
    failedOrUnfinished: failed,
    completedPerS: ok.length > 1 && t1 > t0 ? round(ok.length / ((t1 - t0) / 1000), 0) : null,
    submitToDispatchMs: pick(dispatch),
    submitToResultMs: pick(result),
  };
}
