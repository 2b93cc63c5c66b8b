// Safety kernel `Check` latency and decisions/s through the same gRPC client the services use.
import { percentiles, round } from './stats.mjs';

export async function benchCheck(cordum, { addr, durationS, concurrency = 16, warmupS = 1 }) {
  const client = cordum.grpcClientFor(cordum.SafetyKernel, addr, { defaultDeadlineMs: 5000 });
  try {
    await client.waitForReady(10_000);
    const req = (i) => ({ jobId: `bench-${i}`, topic: 'job.echo', tenant: 'default', priority: 1, principalId: 'bench', labels: {} });
    const decisions = {};
    let errors = 0;
    const lat = [];
    let i = 0;
    const loop = async (until, record) => {
      while (performance.now() < until) {
        const t = performance.now();
        try {
          const res = await client.check(req(i++));
          if (record) { lat.push(performance.now() - t); decisions[res.decision] = (decisions[res.decision] ?? 0) + 1; }
        } catch {
          if (record) errors++;
        }
      }
    };
    const w = performance.now() + warmupS * 1000;
    await Promise.all(Array.from({ length: concurrency }, () => loop(w, false)));
    const t0 = performance.now();
    const end = t0 + durationS * 1000;
    await Promise.all(Array.from({ length: concurrency }, () => loop(end, true)));
    const elapsed = (performance.now() - t0) / 1000;
    const p = percentiles(lat);
    return { decisionsPerS: round(lat.length / elapsed, 0), p50Ms: round(p.p50, 2), p99Ms: round(p.p99, 2), concurrency, errors, decisions };
  } finally {
    client.close();
  }
}
