// The bench's histogram arithmetic (lib/stats.mjs): the stage figures of the paced phases are
// quantiles estimated from the schedulers' Prometheus buckets, so the estimate is pinned here
// against hand-worked cases. The .mjs module runs in a child node (jest here is CommonJS).
import { evalModule } from './esm';

const evalStats = (expr: string): unknown => evalModule('tools/bench/lib/stats.mjs', expr);

const scrape = (name: string, counts: [string, number][], labels = 'service="scheduler"'): string =>
  counts.map(([le, n]) => `${name}_bucket{${labels},le="${le}"} ${n}`).join('\n');

describe('bench: quantiles from Prometheus histogram buckets', () => {
  it('interpolates inside the bucket a quantile falls in, over the observations between two scrapes', () => {
    const before = scrape('x', [['0.001', 10], ['0.002', 10], ['0.005', 10], ['+Inf', 10]]);
    // 100 new observations: 50 at or under 1 ms, 40 in (1, 2], 10 in (2, 5].
    const after = scrape('x', [['0.001', 60], ['0.002', 100], ['0.005', 110], ['+Inf', 110]]);
    const q = (p: number): unknown => evalStats(`m.bucketQuantileMs(m.histogramBuckets(${JSON.stringify(before)}, 'x'), m.histogramBuckets(${JSON.stringify(after)}, 'x'), ${p})`);
    expect(q(0.5)).toBe(1); // rank 50 is the last observation of the first bucket
    expect(q(0.7)).toBe(1.5); // rank 70: halfway through (1, 2]
    expect(q(0.99)).toBe(4.7); // rank 99: 9/10 of the way through (2, 5]
  });

  it('returns the last finite bound for a quantile in +Inf, and null when nothing was observed', () => {
    const b = scrape('x', [['0.01', 0], ['+Inf', 0]]);
    const a = scrape('x', [['0.01', 1], ['+Inf', 4]]);
    expect(evalStats(`m.bucketQuantileMs(m.histogramBuckets(${JSON.stringify(b)}, 'x'), m.histogramBuckets(${JSON.stringify(a)}, 'x'), 0.99)`)).toBe(10);
    expect(evalStats(`m.bucketQuantileMs(m.histogramBuckets(${JSON.stringify(b)}, 'x'), m.histogramBuckets(${JSON.stringify(b)}, 'x'), 0.5)`)).toBeNull();
  });

  it('sums the series of several schedulers and keeps only the label set asked for', () => {
    const name = 'cordum_scheduler_job_lock_wait_seconds';
    const text = [
      scrape(name, [['0.001', 3], ['+Inf', 3]], 'pod="s1",result="acquired"'),
      scrape(name, [['0.001', 4], ['+Inf', 5]], 'pod="s2",result="acquired"'),
      scrape(name, [['0.001', 0], ['+Inf', 7]], 'pod="s1",result="timeout"'),
      scrape(`${name}_other`, [['0.001', 100], ['+Inf', 100]]),
    ].join('\n');
    expect(evalStats(`[...m.histogramBuckets(${JSON.stringify(text)}, '${name}', 'result="acquired"')]`)).toEqual([[0.001, 7], [null, 8]]);
  });

  it('splits submit→dispatch into the four stages the schedulers time', () => {
    const names = ['cordum_scheduler_intake_wait_seconds', 'cordum_scheduler_job_lock_wait_seconds', 'cordum_scheduler_safety_check_duration_seconds', 'cordum_scheduler_dispatch_latency_seconds'];
    const text = (n: number): string => names.map((m) => scrape(m, [['0.002', n], ['+Inf', n]], m.includes('lock') ? 'result="acquired"' : 'service="scheduler"')).join('\n');
    expect(evalStats(`m.dispatchStages(${JSON.stringify(text(5))}, ${JSON.stringify(text(25))})`)).toEqual({
      'intake wait': { n: 20, p50: 1, p99: 2 },
      lock: { n: 20, p50: 1, p99: 2 },
      Check: { n: 20, p50: 1, p99: 2 },
      'created→published': { n: 20, p50: 1, p99: 2 },
    });
  });
});
