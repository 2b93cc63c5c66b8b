// What the scheduler logs when it starts against a Redis that refuses REDIS_URL's password
// (decisions.md P97): it says it started, not that it is ready, while /readyz is 503; it names
// the credentials, not an outage; it keeps running and becomes ready once Redis takes them.
import { join } from 'node:path';
import { closeRedis, createRedis, pingRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { repoRoot, startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { Registry } from 'prom-client';
import { loadSchedulerConfig } from '../src/config';
import { createScheduler, type Scheduler } from '../src/scheduler';

describe('scheduler start with a wrong Redis password (in-process, real Redis + NATS)', () => {
  let redisServer: TestServer;
  let natsServer: TestServer;
  let admin: RedisClient;
  let scheduler: Scheduler | undefined;
  const lines: { level: string; msg: string; [k: string]: unknown }[] = [];

  beforeAll(async () => {
    [redisServer, natsServer] = await Promise.all([startRedis({ args: ['--requirepass', 'right-password'] }), startNats()]);
    admin = createRedis({ url: `redis://:right-password@127.0.0.1:${redisServer.port}`, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    await waitFor(() => pingRedis(admin), 5_000, { message: 'admin client connects' });
  });
  afterAll(async () => {
    await scheduler?.stop();
    await closeRedis(admin);
    await Promise.all([redisServer.stop(), natsServer.stop()]);
  });

  const readyz = async (): Promise<number> => (await fetch(`http://127.0.0.1:${scheduler?.httpPort ?? 0}/readyz`)).status;
  const msgs = (): string[] => lines.map((l) => l.msg);

  it('logs "scheduler started" (readiness follows /readyz) and the refused credentials, and is ready once Redis takes the password', async () => {
    const config = loadSchedulerConfig({
      REDIS_URL: `redis://:wrong-password@127.0.0.1:${redisServer.port}`,
      NATS_URL: natsServer.url,
      SCHEDULER_HTTP_ADDR: '127.0.0.1:0',
      SAFETY_KERNEL_ADDR: '127.0.0.1:1',
      POOL_CONFIG_PATH: join(repoRoot, 'config', 'pools.yaml'),
      TIMEOUT_CONFIG_PATH: join(repoRoot, 'config', 'timeouts.yaml'),
      JOB_TTL: '1h',
    });
    const logger = createLogger({ service: 'scheduler', instance: 'sched-badpass', level: 'info', write: (l) => void lines.push(JSON.parse(l) as (typeof lines)[number]) });
    scheduler = createScheduler(config, { logger, instanceId: 'sched-badpass', registry: new Registry() });
    await scheduler.start();

    const started = lines.find((l) => l.msg === 'scheduler started');
    expect(started).toMatchObject({ level: 'info', http_port: scheduler.httpPort, readiness: 'follows /readyz' });
    expect(msgs()).not.toContain('scheduler ready');
    expect(await readyz()).toBe(503);
    expect(lines.find((l) => l.msg === 'redis refused the credentials in REDIS_URL')).toMatchObject({ level: 'warn', err: expect.stringMatching(/^WRONGPASS/) as string });
    expect(msgs()).not.toContain('redis connection error');

    // The rotation reaches Redis: the running scheduler connects and turns ready without a restart.
    await admin.config('SET', 'requirepass', 'wrong-password');
    await waitFor(async () => (await readyz()) === 200, 30_000, { message: 'scheduler /readyz 200 after the password matches', intervalMs: 200 });
    expect(msgs()).toContain('redis connection restored');
    expect(msgs().filter((m) => m === 'redis refused the credentials in REDIS_URL')).toHaveLength(1);
  });
});
