// `npm start` as a newcomer runs it: it prints a working URL, a dev key and a
// curl example; the example returns a SUCCEEDED job; Ctrl-C stops everything.
import { join } from 'node:path';
import { repoRoot, startNats, startProcess, startRedis, waitFor, type TestServer } from '@cordum/testing';

describe('npm start', () => {
  let redis: TestServer;
  let nats: TestServer;
  beforeAll(async () => {
    [redis, nats] = await Promise.all([startRedis(), startNats()]);
  });
  afterAll(async () => {
    await Promise.all([redis?.stop(), nats?.stop()]);
  });

  it('brings the stack up with replicas, serves the curl example, and stops on SIGINT', async () => {
    // A port offset keeps this stack clear of anything on the default ports, of the test
    // harness's ports (24000–32000, libs/testing ports.ts) and of Linux's ephemeral range
    // (32768–60999): offsets 12000–14000 put the services on 20080–23297 and 62051–64151.
    const offset = 12000 + Math.floor(Math.random() * 21) * 100;
    const launcher = startProcess('npm-start', process.execPath, [
      join(repoRoot, 'tools/stack/start.mjs'),
      '--replicas', 'scheduler=2,api-gateway=2',
      '--port-offset', String(offset),
      // a NATS_URL comma list (CONTRACT §1) is checked at its first entry
    ], { REDIS_URL: redis.url, NATS_URL: `${nats.url},${nats.url}`, CORDUM_API_KEY: 'npm-start-test-key' });
    try {
      await waitFor(() => !launcher.running || launcher.hasLine('Cordum is up.'), 120_000, { message: 'stack up', intervalMs: 200 });
      expect(launcher.running ? 'running' : launcher.logs()).toBe('running');
      const urlLine = launcher.output.find((l) => l.includes('gateway URL'));
      const url = /http:\/\/127\.0\.0\.1:\d+/.exec(urlLine ?? '')?.[0];
      expect(url).toBe(`http://127.0.0.1:${8081 + offset}`);
      expect(launcher.hasLine(`scheduler-2`)).toBe(true);
      expect(launcher.hasLine(`api-gateway-2`)).toBe(true);
      expect(launcher.hasLine(/curl -s -X POST .*\/api\/v1\/jobs/)).toBe(true);
      // the key came from the environment, not .cordum/dev.env, and the banner says so
      expect(launcher.hasLine('npm-start-test-key   (from CORDUM_API_KEY in your environment)')).toBe(true);
      // with a port offset the instance ids differ from a first stack's on the same Redis and NATS
      const metrics = await (await fetch(`http://127.0.0.1:${9092 + offset}/metrics`)).text();
      expect(metrics).toContain(`pod="api-gateway-1-p${offset}"`);

      // The printed curl example, done with fetch, against both gateway replicas.
      for (const base of [url!, `http://127.0.0.1:${8081 + offset + 100}`]) {
        const submit = await fetch(`${base}/api/v1/jobs`, {
          method: 'POST',
          headers: { 'X-API-Key': 'npm-start-test-key', 'Content-Type': 'application/json' },
          body: JSON.stringify({ topic: 'job.echo', prompt: 'hello' }),
        });
        expect(submit.status).toBe(200);
        const { job_id } = (await submit.json()) as { job_id: string };
        const job = await waitFor(async () => {
          const r = await fetch(`${base}/api/v1/jobs/${job_id}`, { headers: { 'X-API-Key': 'npm-start-test-key' } });
          const body = (await r.json()) as { state: string; result: { echo: string } };
          return body.state === 'SUCCEEDED' ? body : null;
        }, 30_000, { message: 'curl example job succeeded' });
        expect(job.result.echo).toBe('hello');
      }

      launcher.kill('SIGINT');
      const exit = await launcher.waitExit(60_000);
      expect(exit.code).toBe(0);
      expect(launcher.hasLine('stopped')).toBe(true);
    } finally {
      await launcher.stop();
    }
  });

  it('rejects a bad flag with one readable line', async () => {
    const p = startProcess('npm-start-bad', process.execPath, [join(repoRoot, 'tools/stack/start.mjs'), '--replicas', 'scheduler=9']);
    const exit = await p.waitExit(10_000);
    expect(exit.code).toBe(2);
    expect(p.errOutput).toEqual([expect.stringContaining('scheduler=9')]);
  });
});
