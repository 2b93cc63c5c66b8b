// Safety kernel `Check` latency and decisions/s through the same gRPC clients the services use:
// `transport: 'unary'` = one Check call per decision (the contract's method), `'stream'` = Check
// as messages on the Decide stream, what the gateway and the scheduler send (P17).
import { percentiles, round } from './stats.mjs';

function checkClient(cordum, addr, transport) {
  if (transport === 'stream') {
    const c = cordum.createPolicyClient(addr, { waitForReady: true });
    return { ready: async () => undefined, check: (req) => c.check(req, 5000), close: () => c.close() };
  }
  const c = cordum.grpcClientFor(cordum.SafetyKernel, addr, { defaultDeadlineMs: 5000 });
  return { ready: () => c.waitForReady(10_000), check: (req) => c.check(req), close: () => c.close() };
}

export async function benchCheck(cordum, { addr, durationS, concurrency = 16, warmupS = 1, transport = 'unary' }) {
  const client = checkClient(cordum, addr, transport);
  try {
    await client.ready();
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
