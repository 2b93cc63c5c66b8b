// What an operator reads when Redis refuses the credentials or is gone (decisions.md P97):
// a bad REDIS_URL password is named as such, not as an outage; a command that never left says so.
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import {
  closeRedis, createRedis, isRedisAuthError, pingRedis, redisErrorText, redisLogEvents, REDIS_NOT_SENT_TEXT, REPORT_EVERY_MS, throttleFailures, type RedisClient,
} from '../src';

type Line = [level: string, msg: string, fields: Record<string, unknown> | undefined];

function capture(): { lines: Line[]; log: Parameters<typeof redisLogEvents>[0] } {
  const lines: Line[] = [];
  return { lines, log: { warn: (m, f) => void lines.push(['warn', m, f]), info: (m, f) => void lines.push(['info', m, f]) } };
}

describe('@cordum/redis with a Redis that requires a password', () => {
  const password = 'right-password';
  let server: TestServer;
  let admin: RedisClient;

  beforeAll(async () => {
    server = await startRedis({ args: ['--requirepass', password] });
    admin = createRedis({ url: `redis://:${password}@127.0.0.1:${server.port}`, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    await waitFor(() => pingRedis(admin), 5_000, { message: 'admin client connects' });
  });
  afterAll(async () => {
    await closeRedis(admin);
    await server.stop();
  });

  it('a wrong password logs "redis refused the credentials in REDIS_URL" once, not "redis connection error", and heals when Redis takes it', async () => {
    const { lines, log } = capture();
    let refused = 0;
    const c = createRedis({ url: `redis://:wrong-password@127.0.0.1:${server.port}`, clusterAddresses: [], poolSize: 1, minIdleConns: 1, events: redisLogEvents(log) });
    c.on('error', () => void refused++);
    try {
      // Every reconnect (backoff ≤ 1 s) is refused again; the process stays up and keeps trying.
      await waitFor(() => refused >= 4, 10_000, { message: 'several refused connects' });
      expect(await pingRedis(c, 300)).toBe(false);
      expect(lines).toEqual([['warn', 'redis refused the credentials in REDIS_URL', expect.objectContaining({ err: expect.stringMatching(/^WRONGPASS/) as string })]]);
      expect(lines.some(([, msg]) => msg === 'redis connection error')).toBe(false);
      // A rotation that reaches Redis before this client: the client's password becomes the right one.
      await admin.config('SET', 'requirepass', 'wrong-password');
      await waitFor(() => pingRedis(c, 300), 10_000, { message: 'client connects with the rotated password' });
      expect(lines.at(-1)).toEqual(['info', 'redis connection restored', { down_ms: expect.any(Number) as number }]);
    } finally {
      await admin.config('SET', 'requirepass', password).catch(() => undefined);
      await closeRedis(c);
    }
  });

  it('no password at all (NOAUTH) is reported the same way', async () => {
    const { lines, log } = capture();
    const c = createRedis({ url: `redis://127.0.0.1:${server.port}`, clusterAddresses: [], poolSize: 1, minIdleConns: 1, events: redisLogEvents(log) });
    try {
      await waitFor(() => lines.length > 0, 5_000, { message: 'first report' });
      expect(lines[0]).toEqual(['warn', 'redis refused the credentials in REDIS_URL', expect.objectContaining({ err: expect.stringMatching(/^NOAUTH/) as string })]);
    } finally {
      await closeRedis(c);
    }
  });
});

describe('@cordum/redis error text for operators', () => {
  it('isRedisAuthError: WRONGPASS, NOAUTH and NOPERM only', () => {
    expect(isRedisAuthError(new Error('WRONGPASS invalid username-password pair or user is disabled.'))).toBe(true);
    expect(isRedisAuthError(new Error('NOAUTH Authentication required.'))).toBe(true);
    expect(isRedisAuthError(new Error("NOPERM User bob has no permissions to run the 'select' command"))).toBe(true);
    expect(isRedisAuthError(new Error('connect ECONNREFUSED 127.0.0.1:1'))).toBe(false);
    expect(isRedisAuthError(new Error('ERR value is not an integer'))).toBe(false);
  });

  it('a command dropped unsent while Redis is gone reads "redis unavailable", not the maxRetriesPerRequest option', async () => {
    const c = createRedis({ url: 'redis://127.0.0.1:1', clusterAddresses: [], poolSize: 1, minIdleConns: 0, events: redisLogEvents(capture().log) });
    try {
      const err = await c.set('k', 'v').then(() => null, (e: unknown) => e);
      expect(String(err)).toMatch(/max retries per request/);
      expect(redisErrorText(err)).toBe(REDIS_NOT_SENT_TEXT);
      expect(REDIS_NOT_SENT_TEXT).toBe('redis unavailable (command not sent: connection down)');
    } finally {
      await closeRedis(c);
    }
    expect(redisErrorText(new Error('ERR wrong number of arguments'))).toBe('ERR wrong number of arguments');
    expect(redisErrorText('plain')).toBe('plain');
  });

  it('throttleFailures: the first failure, then every REPORT_EVERY_MS or when the text changes, counting the rest; a success starts over', () => {
    let now = 0;
    const reports: [string, number][] = [];
    const t = throttleFailures((err, suppressed) => void reports.push([err.message, suppressed]), { now: () => now });
    for (let i = 0; i < 10; i++, now += 1_000) t.failed(new Error('down'));
    expect(reports).toEqual([['down', 0]]);
    now = REPORT_EVERY_MS;
    t.failed(new Error('down'));
    expect(reports).toEqual([['down', 0], ['down', 9]]);
    t.failed(new Error('other'));
    expect(reports.at(-1)).toEqual(['other', 0]);
    t.failed(new Error('other'));
    t.reset();
    t.failed(new Error('other'));
    expect(reports).toEqual([['down', 0], ['down', 9], ['other', 0], ['other', 0]]);
  });

  it('throttleFailures with kindOf: errors of one kind share the throttle whatever their text', () => {
    let now = 0;
    const reports: [string, number][] = [];
    const t = throttleFailures((err, suppressed) => void reports.push([err.message, suppressed]), { now: () => now, kindOf: (err) => (err.message.startsWith('redis') ? 'redis' : err.message) });
    for (const m of ['redis a', 'redis b', 'redis a', 'redis b']) t.failed(new Error(m));
    expect(reports).toEqual([['redis a', 0]]);
    now += REPORT_EVERY_MS;
    t.failed(new Error('redis b'));
    t.failed(new Error('bug'));
    expect(reports).toEqual([['redis a', 0], ['redis b', 3], ['bug', 0]]);
  });
});
