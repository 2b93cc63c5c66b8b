import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Decision } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startBundleRig, startReplica, type BundleRig, type KernelReplica } from './kernel-harness';

// P203: the policy file is read again every reload interval and a changed one is applied as a
// SIGHUP would apply it (BEHAVIOURS §6: reload via the config watcher). Kubernetes updates a
// mounted ConfigMap in place and signals nobody; before, every replica kept the old policy
// until someone sent each of them SIGHUP.

const ALLOW = `
version: 1
default_decision: allow
rules: []
`;
const DENY_ADMIN = `
version: 1
default_decision: allow
rules:
  - id: deny-admin
    match: { topics: ["job.admin.>"] }
    decision: deny
`;
const HOLD_ADMIN = `
version: 1
default_decision: allow
rules:
  - id: hold-admin
    match: { topics: ["job.admin.>"] }
    decision: require_human
`;

let rig: BundleRig;
let a: KernelReplica;
let b: KernelReplica;
/** The snapshot both replicas reached for DENY_ADMIN (same file, no bundles: the same id). */
let denySnapshot: string | undefined;
/** The interval ticks of a replica: its file rule ids record is written again on each, with a new expiry. */
const tick = async (id: string): Promise<number> => {
  const raw = await rig.store.redis.hget('cordum:safety:file-rules', id);
  return raw === null ? 0 : (JSON.parse(raw) as { expires_at: number }).expires_at;
};
const decision = async (r: KernelReplica, jobId: string) => (await r.client.check({ jobId, topic: 'job.admin.wipe', tenant: 'acme' })).decision;

beforeAll(async () => {
  rig = await startBundleRig(ALLOW, 'file-watch');
  const env = { ...rig.env, CORDUM_CONFIG_RELOAD_INTERVAL: '200ms' };
  [a, b] = await Promise.all([startReplica(env, 'sk-watch-a'), startReplica(env, 'sk-watch-b')]);
});

afterAll(async () => {
  await Promise.all([a, b].filter((r) => r !== undefined).map((r) => r.close()));
  await rig?.close();
});

describe('policy file check (P203)', () => {
  it('applies an edited file on every replica without a SIGHUP, and publishes its rule ids', async () => {
    expect(await decision(a, 'w1')).toBe(Decision.ALLOW);
    const before = a.kernel.snapshotId;
    writeFileSync(rig.env['SAFETY_POLICY_PATH'] as string, DENY_ADMIN);
    await waitFor(async () => (await decision(a, 'w2')) === Decision.DENY && (await decision(b, 'w3')) === Decision.DENY, 10_000);
    expect(a.kernel.snapshotId).not.toBe(before);
    expect(b.kernel.snapshotId).toBe(a.kernel.snapshotId);
    denySnapshot = a.kernel.snapshotId;
    // logged once the apply has returned, a moment after the new policy answers Checks
    await waitFor(() => a.logs.some((l) => l.includes('"msg":"policy reloaded"') && l.includes('"trigger":"file_changed"')), 5_000, { message: 'reload logged' });
    // Config writers now refuse a bundle rule named deny-admin: the new ids are published.
    await waitFor(async () => {
      const raw = await rig.store.redis.hget('cordum:safety:file-rules', 'sk-watch-a');
      return raw !== null && (JSON.parse(raw) as { file_id: string; rule_ids: string[] }).rule_ids.includes('deny-admin');
    }, 5_000);
  });

  it('keeps the policy in force when the file turns invalid, logs it once, and applies the next valid file', async () => {
    const inForce = a.kernel.snapshotId;
    const path = rig.env['SAFETY_POLICY_PATH'] as string;
    writeFileSync(path, 'version: 1\ndefault_decision: maybe\n');
    await waitFor(() => a.logs.some((l) => l.includes('policy file unreadable or invalid') && l.includes('default_decision')), 5_000);
    // Three more intervals of checks on the same invalid file.
    const t0 = await tick('sk-watch-a');
    await waitFor(async () => (await tick('sk-watch-a')) >= t0 + 3 * 200, 5_000);
    expect(a.kernel.snapshotId).toBe(inForce);
    expect(await decision(a, 'w4')).toBe(Decision.DENY);
    // P219: a metric says so, for an alert (all kernels keep the old policy, so none differ)
    expect(await a.metric('cordum_safety_policy_file_rejected')).toBe(1);
    // A later valid file is applied (the bad content is not remembered as "seen").
    writeFileSync(path, HOLD_ADMIN);
    await waitFor(async () => (await decision(a, 'w5')) === Decision.REQUIRE_HUMAN, 10_000);
    expect(a.kernel.snapshotId).not.toBe(inForce);
    // set once the apply has returned, a moment after the new policy answers Checks
    await waitFor(async () => (await a.metric('cordum_safety_policy_file_rejected')) === 0, 5_000, { message: 'policy_file_rejected back to 0' });
    // The invalid file was checked on several intervals but its error logged once.
    expect(a.logs.filter((l) => l.includes('policy file unreadable or invalid')).length).toBe(1);
    // Both replicas on the new file before the next test (each checks on its own timer).
    await waitFor(async () => (await decision(b, 'w5b')) === Decision.REQUIRE_HUMAN && b.kernel.snapshotId === a.kernel.snapshotId, 10_000);
  });

  it('a file that is gone keeps the policy in force, and its return applies', async () => {
    const inForce = b.kernel.snapshotId;
    const path = rig.env['SAFETY_POLICY_PATH'] as string;
    const aside = join(rig.dir, 'aside.yaml');
    renameSync(path, aside);
    await waitFor(() => b.logs.some((l) => l.includes('policy file unreadable or invalid') && l.includes('ENOENT')), 5_000);
    expect(b.kernel.snapshotId).toBe(inForce);
    expect(await decision(b, 'w6')).toBe(Decision.REQUIRE_HUMAN);
    writeFileSync(aside, DENY_ADMIN);
    renameSync(aside, path); // how a ConfigMap update lands: an atomic swap
    await waitFor(async () => (await decision(b, 'w7')) === Decision.DENY, 10_000);
    expect(b.kernel.snapshotId).toBe(denySnapshot);
  });

  it('a file whose rule id clashes with a bundle rule is kept out, its rejection logged once, and applies once the clash is gone', async () => {
    const path = rig.env['SAFETY_POLICY_PATH'] as string;
    await rig.writeBundles({ ops: { rules: [{ id: 'hold-admin', match: { topics: ['job.ops.>'] }, decision: 'deny' }] } }, true);
    await waitFor(async () => (await a.client.check({ jobId: 'c0', topic: 'job.ops.x', tenant: 'acme' })).decision === Decision.DENY, 10_000);
    const inForce = a.kernel.snapshotId;
    writeFileSync(path, HOLD_ADMIN); // its rule id hold-admin is the bundle's
    const rejected = (l: string) => l.includes('"msg":"policy reload rejected, keeping the previous policy"') && l.includes('"trigger":"file_changed"');
    await waitFor(() => a.logs.some(rejected), 5_000);
    const t0 = await tick('sk-watch-a');
    await waitFor(async () => (await tick('sk-watch-a')) >= t0 + 3 * 200, 5_000);
    expect(a.logs.filter(rejected)).toHaveLength(1);
    expect(a.kernel.snapshotId).toBe(inForce);
    expect(await a.metric('cordum_safety_policy_file_rejected')).toBe(1);
    await rig.writeBundles({ ops: null }, true);
    await waitFor(async () => (await decision(a, 'c1')) === Decision.REQUIRE_HUMAN, 10_000);
  });
});
