// A `safety` bundle rule whose id is a rule id of a running kernel's policy file is refused
// where it is written (400), instead of being stored and refused by every kernel, which then
// could not start (P48). Runs the built safety kernel next to the in-process gateway:
// needs `npx nx build safety-kernel`.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { liveFileRules, safetyConfigKeys } from '@cordum/config-overlay';
import type { RedisClient } from '@cordum/redis';
import { freePorts, spawnService, waitFor, type ManagedProcess } from '@cordum/testing';
import { KEYS, call, expectEnvelope, rigClients, startRig, type Rig, type RigClients } from './harness';

const FILE_POLICY = `
version: 1
default_decision: allow
rules:
  - id: x
    match: { topics: ["job.admin.>"] }
    decision: deny
`;
const ruleX = { id: 'x', match: { topics: ['job.ops.>'] }, decision: 'require_approval' };
const ruleY = { id: 'y', match: { topics: ['job.ops.>'] }, decision: 'require_approval' };

let rig: Rig;
let clients: RigClients;
let redis: RedisClient;
let kernel: ManagedProcess;
let httpPort: number;
let dir: string;

const getDoc = async () => {
  const r = await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin });
  expect(r.status).toBe(200);
  return r.body as { revision: number; data: Record<string, unknown> };
};

beforeAll(async () => {
  rig = await startRig();
  clients = await rigClients(rig, 'bundle-clash');
  redis = clients.redis;
  dir = mkdtempSync(join(tmpdir(), 'cordum-gw-clash-'));
  writeFileSync(join(dir, 'safety.yaml'), FILE_POLICY);
  const [grpcPort, http] = await freePorts(2);
  httpPort = http!;
  kernel = spawnService(
    'safety-kernel',
    {
      REDIS_URL: rig.redis.url,
      NATS_URL: rig.nats.url,
      SAFETY_POLICY_PATH: join(dir, 'safety.yaml'),
      SAFETY_KERNEL_GRPC_ADDR: `127.0.0.1:${grpcPort!}`,
      SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${httpPort}`,
      CORDUM_INSTANCE_ID: 'sk-clash',
    },
    { cwd: dir },
  );
  await waitFor(
    async () => {
      if (!kernel.running) throw new Error(`kernel exited: ${kernel.logs()}`);
      return (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 200;
    },
    20_000,
    { message: 'safety kernel ready' },
  );
  await waitFor(async () => (await liveFileRules(redis, safetyConfigKeys().fileRules())).some((f) => f.instance_id === 'sk-clash'), 5_000, {
    message: 'the kernel published its file rule ids (is dist/apps/safety-kernel up to date? npx nx build safety-kernel)',
  });
});

afterAll(async () => {
  await kernel?.stop();
  await clients?.close();
  await rig?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a bundle rule id that is a rule of a running kernel’s policy file', () => {
  it.each([
    ['a merge patch', (b: unknown, _revision: number) => ({ safety: { bundles: b } })],
    ['the document form', (b: unknown, _revision: number) => ({ data: { safety: { bundles: b } } })],
    ['the document form with a revision', (b: unknown, revision: number) => ({ data: { safety: { bundles: b } }, revision })],
  ])('is refused through %s: 400 naming the rule on its path, document unchanged', async (_form, body) => {
    const before = await getDoc();
    const r = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: body({ ops: { rules: [ruleY, ruleX] } }, before.revision) });
    expectEnvelope(r, 400, 'validation_failed');
    expect(r.body['details']).toEqual([
      {
        path: 'data.safety.bundles.ops.rules.1.id',
        message: "rule 'x' is a rule of the safety kernels' policy file (SAFETY_POLICY_PATH of sk-clash); rule ids must be unique across the file and the bundles: rename the bundle rule",
      },
    ]);
    expect(await getDoc()).toEqual(before);
  });

  it('a bundle without it is written (204) and applied by the kernel', async () => {
    const r = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { safety: { bundles: { ops: { rules: [ruleY] } } } } });
    expect(r.status).toBe(204);
    await waitFor(
      async () => {
        const st = await call(rig.url, 'GET', '/api/v1/config/status', { key: KEYS.admin });
        const replicas = (st.body['replicas'] ?? []) as { instance_id: string; status: string }[];
        return replicas.some((x) => x.instance_id === 'sk-clash' && x.status === 'IN_SYNC');
      },
      5_000,
      { message: 'kernel IN_SYNC with the new section' },
    );
    // a patch that does not touch the section is not checked against the file
    expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { rate_limits: { rps: 50 } } })).status).toBe(204);
  });

  it('is written as before once no kernel runs (its ids leave with it)', async () => {
    await kernel.stop();
    expect(kernel.exit?.code).toBe(0);
    const r = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { safety: { bundles: { ops: { rules: [ruleX] } } } } });
    expect(r.status).toBe(204);
  });
});
