// A job that ends while NATS is away: its JobResult is the only word the scheduler gets that it
// ran, so the worker keeps trying to publish it (same msg id) for resultPublishBudgetMs, not 5
// tries (≈ 15 s), and it arrives once NATS is back (P157). The harness's one nats-server is
// SIGKILLed and restarted on its port and JetStream store; the observer's durable consumer and
// the worker's bus reconnect by themselves.
import { JobStatus } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { createWorker } from '../src';
import { captureLog, onlyResult, publishJob, startHarness, type Harness } from './harness';

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});

afterAll(async () => {
  await h.close();
});

test('a job that ends during a NATS outage longer than 5 publish tries reports its result once, when NATS is back (P157)', async () => {
  const { logger, lines } = captureLog('info');
  let release = (): void => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const topic = 'job.natsout';
  const w = createWorker({
    workerId: `natsout-${process.pid}`, pool: 'default', topics: [topic], bus: h.bus, redis: h.redis, logger, maxParallelJobs: 1, heartbeatIntervalMs: 1_000,
    handler: async () => {
      await gate;
      return { status: 'SUCCEEDED', result: { ok: 1 } };
    },
  });
  await w.start();
  try {
    const job = await publishJob(h, topic);
    await waitFor(() => w.stats().executed === 1, 10_000, { message: 'the handler runs' });

    h.nats.process.kill('SIGKILL');
    await h.nats.process.waitExit();
    release();
    // Past 5 tries (about 15 s with NATS gone) the worker says it is still trying; before P157 it
    // gave up here and the job was left to the scheduler's running timeout.
    const fifth = await waitFor(
      () => lines.find((l) => l.msg === 'result publish failing, still retrying' || l.msg === 'result publish failed, the scheduler timeout is the backstop'),
      40_000,
      { message: 'five failed publish tries' },
    );
    expect(fifth).toMatchObject({ msg: 'result publish failing, still retrying', job_id: job.jobId, tries: 5 });
    expect(await h.redis.get(`res:${job.jobId}`)).toBe(JSON.stringify({ ok: 1 }));

    h.nats = await h.nats.restart();
    const result = await waitFor(() => onlyResult(h, job.jobId), 30_000, { message: 'the result after NATS is back' });
    expect(result).toMatchObject({ status: JobStatus.SUCCEEDED, resultPtr: `redis://res:${job.jobId}` });
    // logged (and counted succeeded) once the publish's ack is back, which may come after the
    // result reached the stream and this consumer
    const published = await waitFor(() => lines.find((l) => l.msg === 'result published after retries'), 15_000, { message: 'the worker saw its publish acked' });
    expect(published).toMatchObject({ job_id: job.jobId });
    await h.resultsDrained();
    expect(h.results.get(job.jobId)).toHaveLength(1);
    expect(w.stats()).toMatchObject({ succeeded: 1, resultPublishFailures: 0 });
  } finally {
    release();
    await w.stop();
  }
}, 120_000);
