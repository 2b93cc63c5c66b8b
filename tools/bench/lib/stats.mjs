// Measurement helpers: percentiles, Redis INFO commandstats, NATS /varz, RSS from /proc.
import { readFileSync } from 'node:fs';

export function percentiles(values) {
  if (values.length === 0) return { n: 0, p50: null, p95: null, p99: null, max: null };
  const s = Float64Array.from(values).sort();
  const at = (q) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  return { n: s.length, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: s[s.length - 1] };
}

/** Bytes Redis has allocated for data and buffers (INFO memory `used_memory`). */
export async function redisUsedMemory(redis) {
  const m = /^used_memory:(\d+)/m.exec(await redis.info('memory'));
  if (!m) throw new Error('INFO memory has no used_memory');
  return Number(m[1]);
}

/** Per-command call counts from INFO commandstats. */
export async function commandStats(redis) {
  const text = await redis.info('commandstats');
  const out = {};
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/**
 * Commands issued between two snapshots, minus the harness's own `own` counts
 * (the polling of job states and the INFO calls themselves).
 */
export function commandDelta(before, after, own = {}) {
  const byCmd = {};
  let total = 0;
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0) - (own[k] ?? 0);
    if (d > 0) { byCmd[k] = d; total += d; }
  }
  return { total, byCmd };
}

/**
 * The scheduler's latency histograms that split submit→dispatch into where it goes (docs/
 * performance.md, "Where the dispatch time goes"): label → metric and the label set to sum.
 */
export const DISPATCH_STAGES = [
  ['intake wait', 'cordum_scheduler_intake_wait_seconds'],
  ['lock', 'cordum_scheduler_job_lock_wait_seconds', 'result="acquired"'],
  ['Check', 'cordum_scheduler_safety_check_duration_seconds'],
  ['created→published', 'cordum_scheduler_dispatch_latency_seconds'],
];

/** Cumulative `_bucket` counts by `le` of one histogram in Prometheus text, summed over the series that contain `having`. */
export function histogramBuckets(text, name, having = '') {
  const out = new Map();
  const re = new RegExp(`^${name}_bucket\\{([^}]*)\\} (\\S+)`, 'gm');
  for (const m of text.matchAll(re)) {
    if (having && !m[1].includes(having)) continue;
    const le = /le="([^"]+)"/.exec(m[1]);
    if (!le) continue;
    const bound = le[1] === '+Inf' ? Infinity : Number(le[1]);
    out.set(bound, (out.get(bound) ?? 0) + Number(m[2]));
  }
  return out;
}

/**
 * Quantile q of the observations made between two scrapes of one histogram, in ms, the way
 * Prometheus' histogram_quantile estimates it (linear inside the bucket it falls in; the upper
 * bound of the last finite bucket when it falls in +Inf). null when nothing was observed.
 */
export function bucketQuantileMs(before, after, q) {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const cum = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0));
  const total = cum.at(-1) ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  const i = cum.findIndex((c) => c >= rank);
  const hi = bounds[i];
  const lo = i > 0 ? bounds[i - 1] : 0;
  if (hi === Infinity) return round(lo * 1000, 1);
  const below = i > 0 ? cum[i - 1] : 0;
  const inBucket = cum[i] - below;
  return round((lo + (hi - lo) * (inBucket > 0 ? (rank - below) / inBucket : 1)) * 1000, 1);
}

/** The /metrics text of every URL, joined (the scrapes of several schedulers sum). */
export async function scrapeMetrics(urls) {
  const texts = await Promise.all(urls.map(async (u) => (await fetch(u, { signal: AbortSignal.timeout(5_000) })).text()));
  return texts.join('\n');
}

/** p50/p99 (ms) of each dispatch stage between two scrapes, and how many observations each had. */
export function dispatchStages(beforeText, afterText) {
  const out = {};
  for (const [label, name, having] of DISPATCH_STAGES) {
    const b = histogramBuckets(beforeText, name, having);
    const a = histogramBuckets(afterText, name, having);
    out[label] = { n: (a.get(Infinity) ?? 0) - (b.get(Infinity) ?? 0), p50: bucketQuantileMs(b, a, 0.5), p99: bucketQuantileMs(b, a, 0.99) };
  }
  return out;
}

export async function natsVarz(monitorPort) {
  const res = await fetch(`http://127.0.0.1:${monitorPort}/varz`);
  const v = await res.json();
  return { inMsgs: v.in_msgs, outMsgs: v.out_msgs };
}

/** {rssKb, hwmKb} of a live pid (null when gone). */
export function memOf(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0);
    return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
  } catch {
    return null;
  }
}

/** CPU seconds (user + system) used so far by each live proc, from /proc/<pid>/stat. */
export function cpuSeconds(procs) {
  const out = {};
  for (const p of procs) {
    try {
      const stat = readFileSync(`/proc/${p.pid}/stat`, 'utf8');
      // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out[p.name] = (Number(f[11]) + Number(f[12])) / CLK_TCK;
    } catch {
      /* gone */
    }
  }
  return out;
}
const CLK_TCK = 100;

/** Polls VmRSS of the given procs every 250 ms; peak() returns MB per name (max of polled RSS and VmHWM). */
export function rssSampler(procs) {
  const peak = new Map();
  const sample = () => {
    for (const p of procs) {
      const m = memOf(p.pid);
      if (m) peak.set(p.name, Math.max(peak.get(p.name) ?? 0, m.rssKb, m.hwmKb));
    }
  };
  sample();
  const t = setInterval(sample, 250);
  t.unref();
  return {
    stop() { sample(); clearInterval(t); },
    peakMb() { return Object.fromEntries([...peak].map(([k, v]) => [k, Math.round(v / 102.4) / 10])); },
  };
}

export const round = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d);
