// Audit export: AUDIT_TRANSPORT=nats publishes each gateway mutation as a
// SystemAlert on sys.audit.export (JetStream); the default local transport
// keeps a bounded ring.
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { decodePacket } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import { clockOffsetMs, closeRedis, clusterNow, createRedis, type RedisClient } from '@cordum/redis';
import { auditIfUnknown, createAuditSink } from '../src/audit/sink';
import { ApiError } from '../src/http/errors';
import { KEYS, call, onHostBehindRedis, startRig, type Rig } from './harness';

const quiet = createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined });

describe('audit sink, local transport', () => {
  it('keeps only the newest bufferSize events and never touches the bus', () => {
    // A publish counter, not a NATS stand-in: the local transport must not call the bus at all
    // (a throwing stub would be swallowed if the sink caught publish errors).
    let publishes = 0;
    const sink = createAuditSink({
      transport: 'local',
      bufferSize: 3,
      bus: {
        publish: () => {
          publishes += 1;
          return Promise.resolve();
        },
      },
      instanceId: 'gw',
      logger: quiet,
    });
    for (let i = 0; i < 10; i++) sink.record({ action: 'job.cancel', tenant: 'acme', principal_id: 'p', target: `job-${i}` });
    expect(sink.recent().map((r) => r.target)).toEqual(['job-7', 'job-8', 'job-9']);
    expect(publishes).toBe(0);
  });

  it('logs each event at info with its fields, so the default transport leaves a trail an operator can read (P251)', () => {
    const lines: string[] = [];
    const logger = createLogger({ service: 't', instance: 't', level: 'info', write: (l) => lines.push(l) });
    const sink = createAuditSink({ transport: 'local', bufferSize: 3, bus: { publish: () => Promise.resolve() }, instanceId: 'gw', logger });
    sink.record({ action: 'dlq.retry', tenant: 'acme', principal_id: 'ops-1', target: 'job-1', details: { new_job_id: 'job-2', tenant: 'spoofed' } });
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
    // Details nested: none can stand in for the line's own fields (tenant here, level or msg).
    expect(line).toMatchObject({ level: 'info', msg: 'audit', action: 'dlq.retry', tenant: 'acme', principal_id: 'ops-1', target: 'job-1', details: { new_job_id: 'job-2', tenant: 'spoofed' }, audit_id: sink.recent()[0]?.id });
  });
});

describe('audit event time (P300)', () => {
  let server: TestServer;
  let redis: RedisClient;
  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it("is in Redis's time, as job timestamps are: on a host 10 s behind, 10 s ahead of its own clock", () =>
    onHostBehindRedis(redis, 10_000, () => {
      expect(clockOffsetMs()).toBeGreaterThan(9_000);
      const sink = createAuditSink({ transport: 'local', bufferSize: 3, bus: { publish: () => Promise.resolve() }, instanceId: 'gw', logger: quiet });
      sink.record({ action: 'job.cancel', tenant: 'acme', principal_id: 'p', target: 'job-1' });
      const at = Date.parse(sink.recent()[0]?.at ?? '');
      expect(Math.abs(at - clusterNow())).toBeLessThan(1_000);
      expect(at - Date.now()).toBeGreaterThan(9_000);
    }));
});

describe('audit export over NATS', () => {
  let rig: Rig;
  let bus: Bus;
  const seen: { code: string; details: Record<string, string> }[] = [];
  beforeAll(async () => {
    rig = await startRig({ AUDIT_TRANSPORT: 'nats' });
    bus = await connectBus({ servers: [rig.nats.url], name: 'audit-test', logger: quiet });
    bus.subscribe(subjects.audit, (data) => {
      const p = decodePacket(data);
      if (p.payload.case === 'alert') seen.push({ code: p.payload.value.code, details: { ...p.payload.value.details } });
    });
    await bus.flush();
  });
  afterAll(async () => {
    await bus.close();
    await rig.stop();
  });
  /**
   * Mints a key and waits for its audit event: events reach the subscriber in the order the
   * gateway published them, so any event of an earlier request has arrived by then. The key's id.
   */
  const auditBarrier = async (): Promise<string> => {
    const made = await call(rig.url, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body: { role: 'viewer', ttl_seconds: 60 } });
    expect(made.status).toBe(201);
    const id = String(made.body['id']);
    await waitFor(() => seen.some((s) => s.code === 'audit.auth_key.create' && s.details['target'] === id), 5_000, { message: 'the barrier audited' });
    return id;
  };

  it('a cancel and a config write are exported with tenant, principal and target', async () => {
    const id = String((await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'x', topic: 'job.echo' } })).body['job_id']);
    expect((await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator })).status).toBe(200);
    expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scheduler: { input_fail_mode: 'open' } } })).status).toBe(204);
    await waitFor(() => seen.length >= 2, 5_000);
    expect(seen.find((s) => s.code === 'audit.job.cancel')?.details).toMatchObject({ tenant: 'acme', principal_id: 'alice', target: id });
    expect(seen.find((s) => s.code === 'audit.config.put')?.details).toMatchObject({ principal_id: 'admin', target: 'system/default' });
  });

  it('minting and revoking a managed key are exported with the acting principal and the principal of the key (P156)', async () => {
    const made = await call(rig.url, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body: { role: 'admin', principal_id: 'alice', ttl_seconds: 3600 } });
    expect(made.status).toBe(201);
    const id = String(made.body['id']);
    expect((await call(rig.url, 'DELETE', `/api/v1/auth/keys/${id}`, { key: KEYS.admin })).status).toBe(200);
    await waitFor(() => seen.some((s) => s.code === 'audit.auth_key.revoke'), 5_000);
    const created = seen.find((s) => s.code === 'audit.auth_key.create')?.details;
    expect(created).toMatchObject({ tenant: 'acme', principal_id: 'admin', target: id, role: 'admin', key_principal_id: 'alice', expires_at: String(made.body['expires_at']) });
    expect(seen.find((s) => s.code === 'audit.auth_key.revoke')?.details).toMatchObject({ tenant: 'acme', principal_id: 'admin', target: id, key_principal_id: 'alice' });
    // a refused create is not recorded (the barrier's event, published after it, has arrived)
    expect((await call(rig.url, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body: { role: 'root' } })).status).toBe(400);
    const barrier = await auditBarrier();
    expect(seen.filter((s) => s.code === 'audit.auth_key.create').map((s) => s.details['target'])).toEqual([id, barrier]);
  });

  it('a config write that fails with its outcome unknown (Redis frozen) is exported with outcome unknown (P182)', async () => {
    await rig.redis.process.freeze();
    let answer;
    try {
      answer = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scheduler: { input_fail_mode: 'closed' } } });
    } finally {
      rig.redis.process.kill('SIGCONT');
    }
    expect({ status: answer.status, code: answer.body['code'] }).toEqual({ status: 503, code: 'state_unknown' });
    await waitFor(() => seen.some((s) => s.code === 'audit.config.put' && s.details['outcome'] === 'unknown'), 5_000, { message: 'the unknown outcome audited' });
    expect(seen.find((s) => s.code === 'audit.config.put' && s.details['outcome'] === 'unknown')?.details).toMatchObject({
      tenant: 'acme',
      principal_id: 'admin',
      target: 'system/default',
      error: 'state_unknown', // P335: a write whose answer did not come (it was redis_unavailable)
    });
    // a definite refusal is not recorded
    const before = seen.filter((s) => s.code === 'audit.config.put').length;
    expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scheduler: { input_fail_mode: 'sideways' } } })).status).toBe(400);
    await waitFor(async () => (await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).status === 200, 5_000, { message: 'redis answering again' });
    await auditBarrier();
    expect(seen.filter((s) => s.code === 'audit.config.put')).toHaveLength(before);
  });
});

describe('auditIfUnknown', () => {
  const sink = () => createAuditSink({ transport: 'local', bufferSize: 10, bus: { publish: () => Promise.resolve() }, instanceId: 'gw', logger: quiet });
  const event = { action: 'job.cancel', tenant: 'acme', principal_id: 'p', target: 'j1' };

  it('records a 5xx or non-API failure with outcome unknown and rethrows it; a success or a 4xx records nothing', async () => {
    const s = sink();
    await expect(auditIfUnknown(s, event, () => Promise.reject(new ApiError('redis_unavailable')))).rejects.toThrow(ApiError);
    await expect(auditIfUnknown(s, event, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(auditIfUnknown(s, event, () => Promise.reject(new ApiError('job_terminal')))).rejects.toThrow(ApiError);
    expect(await auditIfUnknown(s, event, () => Promise.resolve(7))).toBe(7);
    expect(s.recent().map((r) => r.details)).toEqual([
      { outcome: 'unknown', error: 'redis_unavailable' },
      { outcome: 'unknown', error: 'internal' },
    ]);
  });
});
