// Baseline (b): the plain queue a TypeScript user would pick instead — BullMQ
// add → process of no-op jobs on the same Redis, worker concurrency 50,
// producer keeping 64 adds in flight. Completed jobs are removed (removeOnComplete)
// so the queue does not grow through the run.
import { Queue, Worker } from 'bullmq';
import { round, sleep } from './lib/index.mjs';

export async function runBullmqBaseline({ redisPort, durationS, warmupS, concurrency = 50, addsInFlight = 64 }) {
  const connection = { host: '127.0.0.1', port: redisPort, maxRetriesPerRequest: null };
  const queue = new Queue('bench', { connection, defaultJobOptions: { removeOnComplete: true, removeOnFail: true } });
  let measuring = false;
  let done = 0;
  const worker = new Worker('bench', async () => undefined, { connection, concurrency });
  worker.on('completed', () => { if (measuring) done++; });
  await worker.waitUntilReady();

  let stop = false;
  let backlogCap = false;
  const producers = Array.from({ length: addsInFlight }, async () => {
    while (!stop) {
      // Keep the queue from growing without bound if adds outrun processing.
      if (backlogCap) { await sleep(5); continue; }
      await queue.add('noop', { n: 1 });
    }
  });
  const capTimer = setInterval(() => {
    queue.getWaitingCount().then((n) => { backlogCap = n > 20_000; }, () => undefined);
  }, 200);

  await sleep(warmupS * 1000);
  measuring = true;
  const t0 = performance.now();
  await sleep(durationS * 1000);
  measuring = false;
  const elapsed = (performance.now() - t0) / 1000;
  stop = true;
  clearInterval(capTimer);
  await Promise.all(producers);
  await worker.close();
  await queue.obliterate({ force: true }).catch(() => undefined);
  await queue.close();
  return { jobsPerS: round(done / elapsed, 0), concurrency, addsInFlight };
}
