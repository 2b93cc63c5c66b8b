// HTTP load (autocannon at a fixed concurrency; an even open-loop pacer for a fixed
// rate) and job-record collection from Redis timestamps.
import http from 'node:http';
import autocannon from 'autocannon';
import { sleep } from './procs.mjs';
import { percentiles, round } from './stats.mjs';

function runOne(url, { connections, durationS, path, headers, body, ids }) {
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
  return autocannon(opts);
}

/**
 * Open-loop paced load: request k leaves at k / rate seconds (a 1 ms tick sends whatever is
 * due), round-robin over the URLs, on keep-alive sockets (at most `connections` at once in
 * all; more requests wait in the agent). autocannon's own rate mode is not used for this: it
 * lets each connection send its whole per-second budget at the top of every second, so
 * "1,000/s" arrives as a burst of 1,000 requests each second and the latencies measure the
 * burst, not the rate.
 */
function drivePaced(urls, { connections, durationS, rate, path, headers, body }) {
  const ids = [];
  const total = Math.max(1, Math.round(rate * durationS));
  const perUrl = Math.max(1, Math.ceil(connections / urls.length));
  const targets = urls.map((u) => {
    const url = new URL(u);
    return { host: url.hostname, port: Number(url.port), agent: new http.Agent({ keepAlive: true, maxSockets: perUrl }) };
  });
  const reqHeaders = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers };
  const latencies = [];
  // How late each request left against its slot (k / rate): the bench shares the cores with what
  // it measures, so a stalled tick sends its backlog as a burst, and that burst is in the p99s.
  const lags = [];
  let sent = 0;
  let done = 0;
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  const t0 = performance.now();
  return new Promise((resolve) => {
    const finish = () => {
      if (done < total) return;
      for (const t of targets) t.agent.destroy();
      const lat = percentiles(latencies);
      const lag = percentiles(lags);
      resolve({
        ids,
        submitsPerS: round(ok / durationS, 0),
        accepted: ok,
        non2xx,
        errors,
        durationS: round((performance.now() - t0) / 1000, 2),
        httpLatencyMs: { p50: round(lat.p50 ?? 0, 1), p99: round(lat.p99 ?? 0, 1) },
        pacerLagMs: { p50: round(lag.p50 ?? 0, 1), p99: round(lag.p99 ?? 0, 1), max: round(lag.max ?? 0, 1), over2msPct: round((lags.filter((x) => x > 2).length / Math.max(1, lags.length)) * 100, 1) },
      });
    };
    const send = (k) => {
      const t = targets[k % targets.length];
      const started = performance.now();
      lags.push(Math.max(0, started - t0 - (k * 1000) / rate));
      const req = http.request({ host: t.host, port: t.port, path, method: 'POST', headers: reqHeaders, agent: t.agent, timeout: 10_000 }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          latencies.push(performance.now() - started);
          if (res.statusCode === 200) {
            ok += 1;
            try { const id = JSON.parse(Buffer.concat(chunks).toString('utf8')).job_id; if (id) ids.push(id); } catch { /* counted as ok by status */ }
          } else non2xx += 1;
          done += 1;
          finish();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => { errors += 1; done += 1; finish(); });
      req.end(body);
    };
    const tick = setInterval(() => {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate) + 1);
      while (sent < due) send(sent++);
      if (sent >= total) clearInterval(tick);
    }, 1);
  });
}

/**
 * Drives POSTs against one or more base URLs (connections and rate split evenly);
 * returns submits/s, error counts and the accepted job ids. With `rate`, the load
 * is paced evenly (drivePaced); without, autocannon keeps `connections` requests
 * in flight for the duration.
 */
export async function drive(urls, o) {
  if (o.rate) return drivePaced(urls, o);
  const ids = [];
  const n = urls.length;
  const results = await Promise.all(urls.map((u, i) => runOne(u, {
    ...o,
    ids,
    connections: Math.max(1, Math.floor(o.connections / n) + (i < o.connections % n ? 1 : 0)),
  })));
  const ok = results.reduce((s, r) => s + r['2xx'], 0);
  const non2xx = results.reduce((s, r) => s + r.non2xx, 0);
  // autocannon's `errors` already counts each timeout (`timeouts` is the subset).
  const errors = results.reduce((s, r) => s + r.errors, 0);
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
