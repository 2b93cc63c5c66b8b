import { waitFor } from '@cordum/testing';
import { startBundleRig, startReplica, type BundleRig, type KernelReplica } from './kernel-harness';

// P278: the config watcher retries a refused safety section at every reload (each poll interval,
// each notification), so a kernel logged `policy bundles rejected` at error level every 30 s for
// as long as the bad section stayed: one alert per poll per replica. One error per distinct
// section and reason now; the repeats go to debug.

const FILE_POLICY = `
version: 1
default_decision: allow
rules: []
`;
const rule = (id: string, match: Record<string, unknown>) => ({ rules: [{ id, match, decision: 'deny' }] });

let rig: BundleRig;
let kernel: KernelReplica;

const rejections = (): number => kernel.logs.filter((l) => l.includes('"level":"error"') && l.includes('policy bundles rejected')).length;
const polls = (): Promise<number> => kernel.metric('cordum_config_reloads_total', { trigger: 'poll' });
/** Resolves once the watcher has polled (and so retried the section) `n` more times. */
const afterPolls = async (n: number): Promise<void> => {
  const from = await polls();
  await waitFor(async () => (await polls()) >= from + n, 10_000, { message: `${n} more config polls` });
};

beforeAll(async () => {
  rig = await startBundleRig(FILE_POLICY, 'bundles-reject-log');
  await rig.writeBundles({ ops: rule('deny-a', { topics: ['job.a.>'] }) }, false);
  kernel = await startReplica({ ...rig.env, CORDUM_CONFIG_RELOAD_INTERVAL: '200ms' }, 'sk-reject-log');
});

afterAll(async () => {
  await kernel?.close();
  await rig?.close();
});

describe('a refused safety section (P278)', () => {
  it('is logged at error once per section and reason, not at every retry', async () => {
    // `topic` is not a match key (P44): stored past the writers' check, as a hand edit could.
    await rig.writeBundles({ ops: rule('deny-a', { topic: 'job.a.>' }) }, true, false);
    await waitFor(() => rejections() === 1, 5_000, { message: 'the first refusal is logged' });
    await afterPolls(4);
    expect(rejections()).toBe(1);

    // another bad section is a new problem: logged again, once
    await rig.writeBundles({ ops: rule('deny-a', { topic: 'job.b.>' }) }, true, false);
    await waitFor(() => rejections() === 2, 5_000, { message: 'a different refused section is logged' });
    await afterPolls(3);
    expect(rejections()).toBe(2);

    // fixed, then the first bad section again: logged again (the problem came back)
    const applied = (): number => kernel.logs.filter((l) => l.includes('policy bundles applied')).length;
    const appliedBefore = applied();
    await rig.writeBundles({ ops: rule('deny-a', { topics: ['job.c.>'] }) }, true);
    await waitFor(() => applied() > appliedBefore, 5_000, { message: 'the fixed section is applied' });
    await rig.writeBundles({ ops: rule('deny-a', { topic: 'job.a.>' }) }, true, false);
    await waitFor(() => rejections() === 3, 5_000, { message: 'the returning refusal is logged' });
    await afterPolls(3);
    expect(rejections()).toBe(3);
  });
});
