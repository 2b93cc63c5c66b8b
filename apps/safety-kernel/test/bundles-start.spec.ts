import { Decision, GrpcStatus, Health, KERNEL_NOT_READY, ServingStatus, createPolicyClient, grpcClientFor, type GrpcClient, type PolicyClient } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { safetyKeys } from '../src/keys';
import { snapshotId } from '../src/policy/canonical';
import { parsePolicy } from '../src/policy/parse';
import { startBundleRig, startReplica, type BundleRig, type KernelReplica } from './kernel-harness';

// P48: a kernel whose first config load failed (here: a safety section every writer now
// refuses, left in Redis by an older gateway or a hand edit) must not decide by its
// file's rules alone. Its file allows what a bundle denies, so deciding would let a job
// through that every other kernel denies. With no record of the section kernels with its file
// last applied, it cannot serve what the running kernels serve either, so it decides nothing;
// with one, it serves that section (the start-time fallback, bundles-clash.spec).

const FILE_POLICY = `
version: 1
default_decision: allow
rules: []
`;
const denySecret = { rules: [{ id: 'deny-secret', match: { topics: ['job.secret.>'] }, decision: 'deny', reason: 'secrets stay in' }] };

let rig: BundleRig;
let ready: KernelReplica;
let late: KernelReplica;
let third: KernelReplica | undefined;
let record: string | null;
const recordKey = safetyKeys.appliedBundles(snapshotId(parsePolicy(FILE_POLICY)));
let both: PolicyClient;
type HealthMethods = typeof Health extends { method: infer M } ? M : never;
let lateHealth: GrpcClient<HealthMethods>;

const writeSafety = (bundles: Record<string, unknown>, validate: boolean) => rig.writeBundles(bundles, true, validate);

/** The snapshot ids a replica exports in cordum_safety_policy_snapshot_info. */
const exportedSnapshots = async (r: KernelReplica): Promise<string[]> => {
  const text = await (await fetch(`http://127.0.0.1:${r.kernel.httpPort}/metrics`)).text();
  return [...text.matchAll(/^cordum_safety_policy_snapshot_info\{[^}]*snapshot="([^"]+)"[^}]*\} 1$/gm)].map((m) => m[1] as string);
};

const readyz = async (r: KernelReplica) => {
  const res = await fetch(`http://127.0.0.1:${r.kernel.httpPort}/readyz`);
  return { status: res.status, body: (await res.json()) as { checks: Record<string, boolean> } };
};

beforeAll(async () => {
  rig = await startBundleRig(FILE_POLICY, 'bundles-start');
  const env = { ...rig.env, CORDUM_CONFIG_RELOAD_INTERVAL: '60s' };
  await writeSafety({ ops: denySecret }, true);
  ready = await startReplica(env, 'sk-ready');
  // A later write that no writer accepts (P44): the running kernel rejects it and keeps its policy.
  await writeSafety({ ops: { rules: [{ ...denySecret.rules[0], match: { topic: 'job.secret.>' } }] } }, false);
  await waitFor(() => ready.logs.some((l) => l.includes('policy bundles rejected')), 5000);
  // As after an upgrade from kernels that did not record the section they applied: nothing to fall back to.
  record = await rig.store.redis.get(recordKey);
  await rig.store.redis.del(recordKey);
  late = await startReplica(env, 'sk-late');
  both = createPolicyClient(`127.0.0.1:${ready.kernel.grpcPort},127.0.0.1:${late.kernel.grpcPort}`);
  lateHealth = grpcClientFor(Health, `127.0.0.1:${late.kernel.grpcPort}`, { defaultDeadlineMs: 2000 });
});

afterAll(async () => {
  both?.close();
  lateHealth?.close();
  await Promise.all([ready, late, third].filter((r) => r !== undefined).map((r) => r.close()));
  await rig?.close();
});

describe('a kernel whose policy bundles did not load at start (P48)', () => {
  it('is not ready, answers NOT_SERVING, and refuses Check, Evaluate, Explain, ListRules and ListSnapshots instead of answering by its file alone', async () => {
    expect(await readyz(late)).toMatchObject({ status: 503, body: { checks: { config: false, policy: true } } });
    expect((await lateHealth.check({ service: 'cordum.v1.SafetyKernel' })).status).toBe(ServingStatus.NOT_SERVING);
    expect((await lateHealth.check({ service: '' })).status).toBe(ServingStatus.NOT_SERVING);
    for (const method of ['check', 'evaluate'] as const) {
      await expect(late.client[method]({ jobId: 'j1', topic: 'job.secret.x', tenant: 'acme' })).rejects.toMatchObject({
        code: GrpcStatus.UNAVAILABLE,
        details: `${KERNEL_NOT_READY}: the policy bundles in config are not loaded yet: the stored safety section is refused: safety.bundles.ops: rule 'deny-secret' (rules[0]): match.topic: unknown key`,
      });
    }
    // P206: nor does it describe the file-only policy as if it were in force (an explain of
    // job.secret.x would say "allow, no rule matched"): the same refusal, and the gateway's
    // admin client asks another kernel. Simulate evaluates the caller's candidate and answers.
    const refused = { code: GrpcStatus.UNAVAILABLE, details: expect.stringContaining(`${KERNEL_NOT_READY}: the policy bundles in config are not loaded yet`) };
    await expect(late.client.explain({ jobId: 'j1', topic: 'job.secret.x', tenant: 'acme' })).rejects.toMatchObject(refused);
    await expect(late.client.listRules({})).rejects.toMatchObject(refused);
    await expect(late.client.listSnapshots({})).rejects.toMatchObject(refused);
    const sim = await late.client.simulate({ jobId: 'j1', topic: 'job.secret.x', tenant: 'acme', candidatePolicyYaml: 'version: 1\ndefault_decision: deny\n' });
    expect(sim.decision).toBe(Decision.DENY);
    // the kernel that loaded them keeps deciding with them
    expect((await ready.client.check({ jobId: 'j2', topic: 'job.secret.x', tenant: 'acme' })).decision).toBe(Decision.DENY);
    expect((await ready.client.explain({ jobId: 'j2', topic: 'job.secret.x', tenant: 'acme' })).ruleId).toBe('deny-secret');
    expect((await ready.client.listRules({})).rules.map((r) => r.id)).toEqual(['deny-secret']);
    // P180: it evaluates nothing, so it exports no snapshot (CordumSafetyPoliciesDiffer would
    // fire for its file-only id and tell the operator to fix the files)
    expect(await exportedSnapshots(late)).toEqual([]);
    expect(await exportedSnapshots(ready)).toEqual([ready.kernel.snapshotId]);
  });

  it('a client of both kernels gets every answer from the complete one', async () => {
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? both.check : both.evaluate)({ jobId: `j-${i}`, topic: 'job.secret.x', tenant: 'acme' }, 3000)),
    );
    expect(answers.map((a) => a.ruleId)).toEqual(Array.from({ length: 20 }, () => 'deny-secret'));
    expect(both.suspects).toEqual([`127.0.0.1:${late.kernel.grpcPort}`]);
  });

  it('with the record of the section the running kernel applied, a kernel starting beside the refused section serves that one', async () => {
    expect(record).not.toBeNull();
    await rig.store.redis.set(recordKey, record!);
    third = await startReplica({ ...rig.env, CORDUM_CONFIG_RELOAD_INTERVAL: '60s' }, 'sk-third');
    expect(await readyz(third)).toMatchObject({ status: 200, body: { checks: { config: true } } });
    expect(third.kernel.snapshotId).toBe(ready.kernel.snapshotId);
    expect((await third.client.check({ jobId: 'j-third', topic: 'job.secret.x', tenant: 'acme' })).ruleId).toBe('deny-secret');
  });

  it('decides, reports SERVING and ready once a valid section loads', async () => {
    await writeSafety({ ops: denySecret }, true);
    await waitFor(async () => (await readyz(late)).status === 200, 5000, { message: 'late kernel ready' });
    expect((await lateHealth.check({ service: 'cordum.v1.SafetyKernel' })).status).toBe(ServingStatus.SERVING);
    expect((await late.client.check({ jobId: 'j3', topic: 'job.secret.x', tenant: 'acme' })).ruleId).toBe('deny-secret');
    expect(late.kernel.snapshotId).toBe(ready.kernel.snapshotId);
    expect(await exportedSnapshots(late)).toEqual([ready.kernel.snapshotId]);
  });
});
