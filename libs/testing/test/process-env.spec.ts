// A test's child process gets the service variables the test sets, never the ones of the shell
// that runs jest (P167): a developer's `export REDIS_CLUSTER_ADDRESSES=…` for `npm start` wins
// over REDIS_URL in every service, so inherited it sent test jobs, config and leases to that
// cluster.
import { startProcess } from '../src';

const printEnv = `process.stdout.write(JSON.stringify({ cluster: process.env.REDIS_CLUSTER_ADDRESSES ?? null, policy: process.env.SAFETY_POLICY_PATH ?? null, url: process.env.REDIS_URL ?? null, path: process.env.PATH ? 'set' : null }) + '\\n')`;

it('drops inherited service variables, keeps the rest, and passes what the test sets', async () => {
  const saved = { cluster: process.env['REDIS_CLUSTER_ADDRESSES'], policy: process.env['SAFETY_POLICY_PATH'] };
  process.env['REDIS_CLUSTER_ADDRESSES'] = '10.0.0.1:7000';
  process.env['SAFETY_POLICY_PATH'] = '/home/dev/policy.yaml';
  try {
    const p = startProcess('print-env', process.execPath, ['-e', printEnv], { REDIS_URL: 'redis://127.0.0.1:1' });
    await p.waitExit(10_000);
    expect(JSON.parse(p.output[0] ?? 'null')).toEqual({ cluster: null, policy: null, url: 'redis://127.0.0.1:1', path: 'set' });
  } finally {
    for (const [k, v] of [['REDIS_CLUSTER_ADDRESSES', saved.cluster], ['SAFETY_POLICY_PATH', saved.policy]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});
