import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { liveFileRules, publishConfigChanged, safetyConfigKeys } from '@cordum/config-overlay';
import { Decision, GrpcStatus, Health, KERNEL_NOT_READY, ServingStatus, grpcClientFor } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { APPLIED_RECORD_TTL_MS } from '../src/kernel';
import { safetyKeys } from '../src/keys';
import { snapshotId } from '../src/policy/canonical';
import { parsePolicy } from '../src/policy/parse';
import { startBundleRig, startReplica, type BundleRig, type KernelReplica } from './kernel-harness';

// A stored `safety` section with a rule id of the kernels' policy file (written past the
// gateway's check: a kernel started later with another file, a hand edit in Redis) is refused
// by every kernel. The running ones keep the section they applied; a kernel that starts then
// serves that same section (recorded per policy file), so restarting every kernel does not
// leave none serving. It does so only when no running kernel applies another section (P48).

/** A policy file of one rule, `id`, denying job.admin.>. */
const fileWithRule = (id: string): string => `
version: 1
default_decision: allow
rules:
  - id: ${id}
    match: { topics: ["job.admin.>"] }
    decision: deny
`;
const FILE_X = fileWithRule('x');
// Another file without rule x: the stored section composes with it.
const FILE_OTHER = fileWithRule('z');
const ruleY = { id: 'y', match: { topics: ['job.secret.>'] }, decision: 'deny', reason: 'secrets stay in' };
const ruleX = { id: 'x', match: { topics: ['job.ops.>'] }, decision: 'require_approval' };
const good = { ops: { rules: [ruleY] } };
const clash = { ops: { rules: [ruleY, ruleX] } };
const CLASH_ERROR = "safety.bundles.ops: rule 'x': id: duplicate rule id (already in the policy file); rename the bundle rule";

let rig: BundleRig;
let env: Record<string, string>;
let otherEnv: Record<string, string>;
const replicas = new Map<string, KernelReplica>();

const start = async (id: string, e = env): Promise<KernelReplica> => {
  const r = await startReplica(e, id);
  replicas.set(id, r);
  return r;
};
const stop = async (id: string): Promise<void> => {
  const r = replicas.get(id);
  replicas.delete(id);
  await r?.close();
};
const replica = (id: string): KernelReplica => {
  const r = replicas.get(id);
  if (!r) throw new Error(`no replica ${id}`);
  return r;
};
const readyz = async (r: KernelReplica): Promise<number> => (await fetch(`http://127.0.0.1:${r.kernel.httpPort}/readyz`)).status;
const health = async (r: KernelReplica): Promise<ServingStatus> => {
  const c = grpcClientFor(Health, `127.0.0.1:${r.kernel.grpcPort}`, { defaultDeadlineMs: 2000 });
  try {
    return (await c.check({ service: 'cordum.v1.SafetyKernel' })).status;
  } finally {
    c.close();
  }
};
const fileRules = () => liveFileRules(rig.store.redis, safetyConfigKeys().fileRules());
const expectRefusal = async (r: KernelReplica): Promise<void> => {
  expect(await readyz(r)).toBe(503);
  expect(await health(r)).toBe(ServingStatus.NOT_SERVING);
  await expect(r.client.check({ jobId: 'j-refused', topic: 'job.secret.a', tenant: 'acme' })).rejects.toMatchObject({
    code: GrpcStatus.UNAVAILABLE,
    details: `${KERNEL_NOT_READY}: the policy bundles in config are not loaded yet: the stored safety section is refused: ${CLASH_ERROR}`,
  });
};

beforeAll(async () => {
  rig = await startBundleRig(FILE_X, 'bundles-clash');
  env = { ...rig.env, CORDUM_CONFIG_RELOAD_INTERVAL: '60s' };
  writeFileSync(join(rig.dir, 'other.yaml'), FILE_OTHER);
  otherEnv = { ...env, SAFETY_POLICY_PATH: join(rig.dir, 'other.yaml') };
});

afterAll(async () => {
  await Promise.all([...replicas.values()].map((r) => r.close()));
  await rig?.close();
});

describe('a stored bundle rule id that is a rule of the policy file', () => {
  it('with nothing applied before: the kernel publishes its file rule ids, is not ready, and says which rule and how to fix it', async () => {
    await rig.writeBundles(clash, true, false);
    const k0 = await start('sk-0');
    expect(await fileRules()).toEqual([expect.objectContaining({ instance_id: 'sk-0', rule_ids: ['x'] })]);
    await expectRefusal(k0);
    const line = k0.logs.find((l) => l.includes('no section to fall back to'));
    expect(line).toContain(CLASH_ERROR);
    expect(line).toContain('no kernel with this policy file has applied a safety section yet');
    await stop('sk-0');
    // a cleanly stopped kernel's ids go at once
    expect(await fileRules()).toEqual([]);
  });

  it('a kernel starting beside it serves the section the running kernels kept, so a restart of every kernel leaves them serving', async () => {
    await rig.writeBundles(good, true);
    const a = await start('sk-a');
    expect(await readyz(a)).toBe(200);
    await rig.writeBundles(clash, true, false);
    await waitFor(() => a.logs.some((l) => l.includes('policy bundles rejected') && l.includes("rule 'x'")), 5000, { message: 'running kernel refuses the section' });

    const b = await start('sk-b');
    expect(await readyz(b)).toBe(200);
    expect(await health(b)).toBe(ServingStatus.SERVING);
    expect(b.kernel.snapshotId).toBe(a.kernel.snapshotId);
    expect(await b.client.check({ jobId: 'j-b', topic: 'job.secret.a', tenant: 'acme' })).toMatchObject({ decision: Decision.DENY, ruleId: 'y' });
    expect(await b.metric('cordum_safety_bundles_fallback')).toBe(1);
    expect(b.logs.find((l) => l.includes('serving the safety section last applied with this policy file'))).toContain(CLASH_ERROR);

    // every kernel restarted: the last one still serves
    const snapshot = a.kernel.snapshotId;
    await stop('sk-a');
    await stop('sk-b');
    const c = await start('sk-c');
    expect(await health(c)).toBe(ServingStatus.SERVING);
    expect(c.kernel.snapshotId).toBe(snapshot);
    expect(await c.client.check({ jobId: 'j-c', topic: 'job.secret.a', tenant: 'acme' })).toMatchObject({ decision: Decision.DENY, ruleId: 'y' });
  });

  it('no fallback while a running kernel (another policy file) applies the stored section: not ready, naming it', async () => {
    const d = await start('sk-d', otherEnv);
    expect(await readyz(d)).toBe(200);
    const e = await start('sk-e');
    await expectRefusal(e);
    expect(e.logs.find((l) => l.includes('no section to fall back to'))).toContain('kernel sk-d applies another safety section');
  });

  it('once the bundle rule is renamed every kernel applies the section and the fallback ends', async () => {
    const renamed = { ops: { rules: [ruleY, { ...ruleX, id: 'x-ops' }] } };
    await rig.writeBundles(renamed, true);
    const [c, d, e] = [replica('sk-c'), replica('sk-d'), replica('sk-e')];
    await waitFor(async () => (await Promise.all([c, d, e].map(readyz))).every((s) => s === 200) && (await c.metric('cordum_safety_bundles_fallback')) === 0, 5000, {
      message: 'all kernels applied the renamed section',
    });
    expect(c.kernel.snapshotId).toBe(e.kernel.snapshotId);
    expect(await e.client.check({ jobId: 'j-e', topic: 'job.ops.a', tenant: 'acme' })).toMatchObject({ decision: Decision.REQUIRE_HUMAN, ruleId: 'x-ops' });
    expect(c.logs.some((l) => l.includes('no longer serving the fallback section'))).toBe(true);
  });

  it('the record of the applied section lives 30 days from the last kernel with that file: renewed while one runs, kept after all stop', async () => {
    const recordKey = safetyKeys.appliedBundles(snapshotId(parsePolicy(FILE_X)));
    const ttl = (): Promise<number> => rig.store.redis.pttl(recordKey);
    const nearFull = (ms: number): boolean => ms > APPLIED_RECORD_TTL_MS - 60_000 && ms <= APPLIED_RECORD_TTL_MS;
    expect(nearFull(await ttl())).toBe(true);

    // A kernel with that file renews it with its file rule ids, every reload interval.
    await start('sk-ttl', { ...env, CORDUM_CONFIG_RELOAD_INTERVAL: '200ms' });
    await rig.store.redis.pexpire(recordKey, 60_000);
    await waitFor(async () => nearFull(await ttl()), 5000, { message: 'record renewed to 30 d by the running kernel' });

    // After every kernel with that file stops, the record stays for the next one to start (fallback) and then expires.
    await Promise.all(['sk-c', 'sk-e', 'sk-ttl'].map(stop));
    expect(nearFull(await ttl())).toBe(true);
  });
});

// A hand-stored section that cannot even be read (a number JSON reads as Infinity: config_corrupt,
// P114) never reached the setter, so a kernel starting beside it stayed not ready while the
// running kernels served: the same start-time fallback now covers it (P122).
describe('a stored safety section that cannot be read (1e999)', () => {
  const KEY = 'cfg:system:default';
  const renamed = { ops: { rules: [ruleY, { ...ruleX, id: 'x-ops' }] } };
  const rawDoc = (dataText: string, revision: number): string =>
    `{"scope":"system","scope_id":"default","revision":${revision},"updated_at":null,"meta":{},"data":${dataText}}`;

  it('a kernel starting beside it serves the section the running kernels kept, and applies the stored one once it is fixed', async () => {
    await stop('sk-d'); // another policy file: it would block the fallback (P48)
    await rig.writeBundles(renamed, true);
    const f = await start('sk-f');
    expect(await readyz(f)).toBe(200);
    const snapshot = f.kernel.snapshotId;

    const corrupt = JSON.stringify({ safety: { bundles: renamed } }).replace('"reason":"secrets stay in"', '"reason":"secrets stay in","weight":1e999');
    expect(corrupt).toContain('1e999');
    await rig.store.redis.set(KEY, rawDoc(corrupt, 100));
    await publishConfigChanged(rig.bus, { scope: 'system', scopeId: 'default', revision: 100, senderId: 'test' });
    await waitFor(() => f.logs.some((l) => l.includes('config section apply failed') && l.includes('safety')), 5000, { message: 'the running kernel refuses the unreadable section' });

    const g = await start('sk-g');
    expect(await readyz(g)).toBe(200);
    expect(await health(g)).toBe(ServingStatus.SERVING);
    expect(g.kernel.snapshotId).toBe(snapshot);
    expect(await g.metric('cordum_safety_bundles_fallback')).toBe(1);
    expect(await g.client.check({ jobId: 'j-g', topic: 'job.ops.a', tenant: 'acme' })).toMatchObject({ decision: Decision.REQUIRE_HUMAN, ruleId: 'x-ops' });
    expect(g.logs.find((l) => l.includes('serving the safety section last applied with this policy file'))).toContain('stored section safety');

    // Fixed by hand (the store refuses a write that would carry the value on): both apply it.
    const fixed = { ops: { rules: [ruleY, { ...ruleX, id: 'x-ops-2' }] } };
    await rig.store.redis.set(KEY, rawDoc(JSON.stringify({ safety: { bundles: fixed } }), 101));
    await publishConfigChanged(rig.bus, { scope: 'system', scopeId: 'default', revision: 101, senderId: 'test' });
    // P294: it answers throughout, never "not ready" between the fallback's end and the watcher's.
    const refusals: string[] = [];
    await waitFor(
      async () => {
        try {
          return (await g.client.check({ jobId: 'j-gx', topic: 'job.ops.a', tenant: 'acme' })).ruleId === 'x-ops-2';
        } catch (err) {
          refusals.push(String((err as Error).message));
          return false;
        }
      },
      5000,
      { message: 'the fixed section answers', intervalMs: 1 },
    );
    expect(refusals).toEqual([]);
    await waitFor(async () => (await g.metric('cordum_safety_bundles_fallback')) === 0 && g.kernel.snapshotId === f.kernel.snapshotId && g.kernel.snapshotId !== snapshot, 5000, {
      message: 'the fixed section applied and the fallback ended',
    });
    expect(await g.client.check({ jobId: 'j-g2', topic: 'job.ops.a', tenant: 'acme' })).toMatchObject({ decision: Decision.REQUIRE_HUMAN, ruleId: 'x-ops-2' });
  });
});

describe('file rule ids in Redis time (P271)', () => {
  it('a kernel whose host clock is 10 min behind Redis publishes an entry that writers, on Redis time, read as live', async () => {
    // The kernel's clock (deps.now) is Redis's, 10 min ahead of this host. Before P271 the entry's
    // expires_at was host time plus 3 reload intervals, already past for a writer (gateway) on
    // Redis time, so its file rule ids went unchecked and a clashing bundle rule was stored.
    const redisTime = (): number => Date.now() + 10 * 60_000;
    const k = await startReplica(env, 'sk-clock', { now: redisTime });
    try {
      await waitFor(async () => (await liveFileRules(rig.store.redis, safetyConfigKeys().fileRules(), redisTime())).some((e) => e.instance_id === 'sk-clock'), 5_000, { message: 'its entry is live in Redis time' });
      const entry = (await liveFileRules(rig.store.redis, safetyConfigKeys().fileRules(), redisTime())).find((e) => e.instance_id === 'sk-clock');
      expect(entry?.expires_at).toBeGreaterThan(redisTime());
    } finally {
      await k.close();
    }
  });
});
