// createWorker refuses bad options at construction, naming the option and the bad entry, before
// it touches NATS or Redis; validateWorkerOptions does the same without any connection.
import { createLogger } from '@cordum/service-kit';
import type { RedisClient } from '@cordum/redis';
import { generateKeyPairSync } from 'node:crypto';
import { Registry } from 'prom-client';
import { createWorker, DEFAULT_STOP_TIMEOUT_MS, MAX_HEARTBEAT_INTERVAL_MS, MIN_HEARTBEAT_INTERVAL_MS, STOP_ANSWER_MARGIN_MS, validateWorkerOptions, workerStopDeadlineMs, type WorkerBus, type WorkerOptions } from '../src';

const touched: string[] = [];
/** A bus and a Redis that record any use: construction must not use either. */
const bus = new Proxy({}, { get: (_t, name) => () => { touched.push(`bus.${String(name)}`); throw new Error('bus used'); } }) as WorkerBus;
const redis = new Proxy({}, { get: (_t, name) => () => { touched.push(`redis.${String(name)}`); throw new Error('redis used'); } }) as unknown as RedisClient;
const logger = createLogger({ service: 'worker-sdk-test', instance: 'test', level: 'error' });

const base: WorkerOptions = {
  workerId: 'opts-worker', pool: 'default', topics: ['job.ok'], bus, redis, logger, maxParallelJobs: 2,
  handler: () => Promise.resolve({ status: 'SUCCEEDED' }),
};

afterEach(() => {
  expect(touched).toEqual([]);
});

function refused(over: Record<string, unknown>): string {
  try {
    createWorker({ ...base, ...over } as WorkerOptions);
  } catch (err) {
    expect(err).toMatchObject({ name: 'WorkerError', code: 'worker_invalid_options' });
    return (err as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(over)}`);
}

test.each([
  ['>'], ['job.>'], ['job.*'], ['sys.job.submit'], ['sys.heartbeat'], ['job.bad topic'], [''], ['echo'], ['job.'], ['job..x'], [`job.${'x'.repeat(252)}`],
])('topic %j is refused, the entry named', (topic) => {
  const message = refused({ topics: ['job.fine', topic] });
  // Named as given (a very long one cut to its first 100 characters).
  expect(message).toMatch(/is not a job topic/);
  expect(message).toContain(`topics: '${topic.slice(0, 90)}`);
  expect(message).toContain('^job(\\.[A-Za-z0-9_-]+)+$');
});

test('topics must be a non-empty array of strings', () => {
  expect(refused({ topics: [] })).toMatch(/^topics must be a non-empty array/);
  expect(refused({ topics: undefined })).toMatch(/^topics must be a non-empty array/);
  expect(refused({ topics: 'job.echo' })).toMatch(/^topics must be a non-empty array/);
  expect(refused({ topics: [42] })).toMatch(/topics: 42 is not a job topic/);
});

test('a topic of 255 characters and the ordinary forms are accepted', () => {
  createWorker({ ...base, topics: ['job.echo', 'job.a-b_C.9', `job.${'x'.repeat(251)}`] });
});

test.each([
  ['heartbeatIntervalMs: 0', { heartbeatIntervalMs: 0 }, /^heartbeatIntervalMs must be an integer from 100 to 10000/],
  ['heartbeatIntervalMs: 99', { heartbeatIntervalMs: 99 }, /^heartbeatIntervalMs/],
  ['heartbeatIntervalMs: 10_001', { heartbeatIntervalMs: 10_001 }, /^heartbeatIntervalMs/],
  ['heartbeatIntervalMs: 60_000', { heartbeatIntervalMs: 60_000 }, /^heartbeatIntervalMs .*got 60000/],
  ['heartbeatIntervalMs: 1.5', { heartbeatIntervalMs: 1.5 }, /^heartbeatIntervalMs/],
  ['handshakeIntervalMs: 0', { handshakeIntervalMs: 0 }, /^handshakeIntervalMs/],
  ['stopTimeoutMs: -1', { stopTimeoutMs: -1 }, /^stopTimeoutMs must be an integer from 0 to 2147478647/],
  // P285: with its 5 s for the answers it must fit a Node timer (a longer one fired at once)
  ['stopTimeoutMs: 2 ** 31', { stopTimeoutMs: 2 ** 31 }, /^stopTimeoutMs must be an integer from 0 to 2147478647 .*about 24.8 days.*got 2147483648/],
  ['stopTimeoutMs: Number.NaN', { stopTimeoutMs: Number.NaN }, /^stopTimeoutMs/],
  ['cancelGraceMs: -1', { cancelGraceMs: -1 }, /^cancelGraceMs/],
  ['maxResultBytes: 0', { maxResultBytes: 0 }, /^maxResultBytes/],
  ['maxResultBytes: 1024 ** 3', { maxResultBytes: 1024 ** 3 }, /^maxResultBytes/],
  ['resultWriteBudgetMs: -5', { resultWriteBudgetMs: -5 }, /^resultWriteBudgetMs/],
  ['claimTtlMs: 0', { claimTtlMs: 0 }, /^claimTtlMs/],
  // P337: a claim must outlive its job (JOB_TTL's floor); 500 was a seconds-for-milliseconds slip
  ['claimTtlMs: 500', { claimTtlMs: 500 }, /^claimTtlMs must be an integer of at least 60000 .*give it your JOB_TTL.*got 500/],
  ["pool: ''", { pool: '' }, /^pool must be a non-empty string/],
  ['pool: undefined', { pool: undefined }, /^pool must be a non-empty string/],
  ["pool: '  '", { pool: '  ' }, /^pool must be a non-empty string/],
  ["workerId: ''", { workerId: '' }, /^workerId must be a non-empty string/],
  ["workerId: 'x'.repeat(256)", { workerId: 'x'.repeat(256) }, /^workerId/],
  ['handler: undefined', { handler: undefined }, /^handler must be a function/],
  ["handler: 'echo'", { handler: 'echo' }, /^handler must be a function/],
  ['maxParallelJobs: Number.NaN', { maxParallelJobs: Number.NaN }, /^maxParallelJobs/],
  ["maxParallelJobs: '4'", { maxParallelJobs: '4' }, /^maxParallelJobs/],
  ['maxParallelJobs: 2 ** 31 (an int32 on the wire)', { maxParallelJobs: 2 ** 31 }, /^maxParallelJobs must be an integer from 1 to 2147483647/],
  ['labels: { zone: 1 }', { labels: { zone: 1 } }, /^labels must map names to string values/],
  ["capabilities: 'job.x'", { capabilities: 'job.x' }, /^capabilities/],
  ['bus: undefined', { bus: undefined }, /^bus is required/],
  ['redis: undefined', { redis: undefined }, /^redis is required/],
])('%s is refused', (_name, over, message) => {
  expect(refused(over)).toMatch(message);
});

test('the heartbeat bounds are exported, and the bounds themselves are accepted', () => {
  expect([MIN_HEARTBEAT_INTERVAL_MS, MAX_HEARTBEAT_INTERVAL_MS]).toEqual([100, 10_000]);
  for (const heartbeatIntervalMs of [100, 10_000]) createWorker({ ...base, heartbeatIntervalMs, stopTimeoutMs: 0, cancelGraceMs: 0 });
});

test('validateWorkerOptions checks the same without any connection, so a config loader can fail before connecting', () => {
  const { bus: _b, redis: _r, logger: _l, ...plain } = base;
  expect(() => validateWorkerOptions(plain)).not.toThrow();
  expect(() => validateWorkerOptions({ ...plain, topics: ['job.>'] })).toThrow(/topics: 'job.>' is not a job topic/);
  expect(() => validateWorkerOptions({ ...plain, heartbeatIntervalMs: 0 })).toThrow(/heartbeatIntervalMs/);
});

describe('keys, labels and the remaining options are checked at construction too (P218)', () => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const k1 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });

  test.each<[string, Record<string, unknown>, RegExp]>([
    ['an RSA signing key', { signingKey: rsa.privateKey }, /signingKey must be an ECDSA P-256 private key .*got a rsa private key/],
    ['a P-384 signing key', { signingKey: k1.privateKey }, /signingKey must be an ECDSA P-256 private key .*got a ec secp384r1 private key/],
    ['a public key as signing key', { signingKey: ec.publicKey }, /signingKey must be an ECDSA P-256 private key .*public key/],
    ['a PEM string as signing key', { signingKey: '-----BEGIN PRIVATE KEY-----' }, /signingKey must be a KeyObject from loadSigningKey/],
    ['a private key as verify key', { verifyKey: ec.privateKey }, /verifyKey must be an ECDSA P-256 public key/],
    ['an RSA key among verify keys', { verifyKey: [ec.publicKey, rsa.publicKey] }, /verifyKey\[1\] must be an ECDSA P-256 public key/],
    ['no verify key at all', { verifyKey: [] }, /verifyKey: an empty array verifies nothing/],
    ['the draining label', { labels: { 'cordum.draining': 'true' } }, /labels: 'cordum\.draining' is reserved/],
    ['a string directDispatch', { directDispatch: 'no' }, /directDispatch must be true or false/],
    ['a numeric sdkVersion', { sdkVersion: 5 }, /sdkVersion must be a string/],
    ['a registry that is not one', { registry: {} }, /registry must be a prom-client Registry/],
  ])('%s is refused', (_name, over, message) => {
    expect(refused(over)).toMatch(message);
  });

  test('good keys, labels and options pass', () => {
    expect(() => validateWorkerOptions({ ...base, signingKey: ec.privateKey, verifyKey: [ec.publicKey], labels: { zone: 'a' }, directDispatch: false, sdkVersion: 'x/1', registry: new Registry() })).not.toThrow();
  });

  test('workerStopDeadlineMs is stopTimeoutMs plus the answers', () => {
    expect(workerStopDeadlineMs({ workerId: 'w' })).toBe(DEFAULT_STOP_TIMEOUT_MS + STOP_ANSWER_MARGIN_MS);
    expect(workerStopDeadlineMs({ workerId: 'w', stopTimeoutMs: 30_000 })).toBe(35_000);
  });
});
