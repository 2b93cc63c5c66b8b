import { GrpcStatus, KERNEL_NOT_READY, grpcError } from '@cordum/protocol';
import { createPolicyAdmin, type PolicyAdmin } from '../src/safety/policy-admin';
import { freePort } from '@cordum/testing';
import { startFakeKernel, type FakeKernel } from './harness';

// P206: /api/v1/policy/* with a comma list of kernels, one of them up but not ready (P48: its
// bundles did not load). It answers UNAVAILABLE `kernel not ready…`; the admin client asks the
// next kernel in the time left, so no answer comes from a policy no kernel enforces and no
// call is a 503 while a ready kernel exists.

let ready: FakeKernel;
let notReady: FakeKernel;
let admin: PolicyAdmin;

beforeAll(async () => {
  [ready, notReady] = await Promise.all([startFakeKernel(), startFakeKernel()]);
  notReady.override = () => {
    throw grpcError(GrpcStatus.UNAVAILABLE, `${KERNEL_NOT_READY}: the policy bundles in config are not loaded yet`);
  };
  admin = createPolicyAdmin(`${notReady.address},${ready.address}`);
});

afterAll(async () => {
  admin?.close();
  await Promise.all([ready?.stop(), notReady?.stop()]);
});

describe('policy admin client over a comma list (P206)', () => {
  it('answers every Evaluate, Explain and Simulate from the ready kernel, each call trying the kernels in turn', async () => {
    const req = { jobId: 'j1', topic: 'job.deny.x', tenant: 'acme' };
    for (let i = 0; i < 6; i++) {
      expect(await admin.evaluate(req)).toMatchObject({ decision: 'deny', rule_id: 'rule-deny' });
      expect(await admin.explain(req)).toMatchObject({ decision: 'deny', rule_id: 'rule-deny' });
      expect(await admin.simulate(req, 'version: 1\n')).toMatchObject({ decision: 'deny', rule_id: 'rule-deny' });
    }
    expect(ready.calls).toHaveLength(18);
    // Round robin still starts every other call at the kernel that is not ready, which refuses it.
    expect(notReady.calls.length).toBeGreaterThanOrEqual(6);
  });

  it('does not ask again after an answer that is not UNAVAILABLE, and maps it as before', async () => {
    const before = ready.calls.length + notReady.calls.length;
    ready.override = () => {
      throw grpcError(GrpcStatus.INVALID_ARGUMENT, 'candidate policy: bad');
    };
    notReady.override = ready.override;
    try {
      await expect(admin.simulate({ jobId: 'j2', topic: 'job.echo' }, 'x')).rejects.toMatchObject({ status: 400, code: 'invalid_policy' });
      expect(ready.calls.length + notReady.calls.length - before).toBe(1);
    } finally {
      ready.override = undefined;
      notReady.override = () => {
        throw grpcError(GrpcStatus.UNAVAILABLE, `${KERNEL_NOT_READY}: the policy bundles in config are not loaded yet`);
      };
    }
  });

  it('is 503 with the last kernel\'s reason when no kernel is ready', async () => {
    const saved = ready.override;
    ready.override = notReady.override;
    try {
      await expect(admin.explain({ jobId: 'j3', topic: 'job.echo' })).rejects.toMatchObject({ status: 503, code: 'safety_unavailable', message: expect.stringContaining(KERNEL_NOT_READY) });
    } finally {
      ready.override = saved;
    }
  });

  it("does not pass grpc-js's connection text, with the kernel's address, to the caller (P222)", async () => {
    const port = await freePort();
    const down = createPolicyAdmin(`127.0.0.1:${port}`, 1_000);
    try {
      const err = (await down.explain({ jobId: 'j4', topic: 'job.echo' }).catch((e: unknown) => e)) as { status: number; code: string; message: string };
      expect(err).toMatchObject({ status: 503, code: 'safety_unavailable' });
      expect(err.message).toMatch(/^safety kernel unavailable: (UNAVAILABLE|DEADLINE_EXCEEDED)$/);
      expect(err.message).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|\d+:\d+/);
    } finally {
      down.close();
    }
  });
});
