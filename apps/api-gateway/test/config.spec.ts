// Pure config parsing (CONTRACT §1, D26): defaults, key lists, one-line errors.
import { createHash, scryptSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@cordum/service-kit';
import { loadGatewayConfig } from '../src/config';
import { createStaticKeyStore } from '../src/auth/keys';

const base = { CORDUM_API_KEY: 'admin-key-12345678' };

function configError(env: Record<string, string>): string {
  try {
    loadGatewayConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('expected a ConfigError');
}

describe('loadGatewayConfig', () => {
  it('applies CONTRACT §1 defaults', () => {
    const c = loadGatewayConfig(base);
    expect(c.httpAddr).toEqual({ host: '', port: 8081 });
    expect(c.grpcAddr).toEqual({ host: '', port: 8080 });
    expect(c.metricsAddr).toEqual({ host: '', port: 9092 });
    expect(c.safetyKernelAddr).toBe('127.0.0.1:50051');
    expect(c.jobTtlMs).toBe(7 * 24 * 3600 * 1000);
    expect(c.apiKeys).toEqual([{ key: 'admin-key-12345678', tenant: 'default', role: 'admin', principalId: 'admin' }]);
    expect(c.instanceId).toMatch(/^api-gateway-/);
  });

  it('a key without principal_id gets an identity from the key itself, not from its place in the list', () => {
    const a = { key: 'first-key-123456', tenant: 'acme', role: 'operator' };
    const b = { key: 'second-key-12345', tenant: 'acme', role: 'operator' };
    const one = loadGatewayConfig({ ...base, CORDUM_API_KEYS: JSON.stringify([a, b]) }).apiKeys;
    const reordered = loadGatewayConfig({ ...base, CORDUM_API_KEYS: JSON.stringify([b]) }).apiKeys;
    expect(one[0]?.principalId).toMatch(/^key-[0-9a-f]{12}$/);
    expect(one[0]?.principalId).not.toBe(one[1]?.principalId);
    // b alone (a removed from the list) keeps its identity; position-based, it became a's
    expect(reordered[0]?.principalId).toBe(one[1]?.principalId);
    // P299: not the key's SHA-256, which a GPU inverts for a short key; a slow KDF's output
    expect(one[0]?.principalId).not.toBe(`key-${createHash('sha256').update(a.key).digest('hex').slice(0, 12)}`);
    expect(one[0]?.principalId).toBe(`key-${scryptSync(a.key, 'cordum:static-key-principal', 6, { N: 4096, r: 8, p: 1 }).toString('hex')}`);
  });

  it('parses CORDUM_API_KEYS, TENANT_ID, JOB_TTL and DLQ_TTL', () => {
    const c = loadGatewayConfig({
      ...base,
      TENANT_ID: 'acme',
      JOB_TTL: '2h',
      DLQ_TTL: '3d',
      CORDUM_API_KEYS: JSON.stringify([{ key: 'viewer-key-1234', tenant: '*', role: 'viewer', principal_id: 'v' }]),
    });
    expect(c.jobTtlMs).toBe(7_200_000);
    expect(c.dlqTtlMs).toBe(3 * 86_400_000);
    expect(loadGatewayConfig(base).dlqTtlMs).toBe(30 * 86_400_000); // D45's 30 d (P238)
    expect(c.apiKeys).toEqual([
      { key: 'viewer-key-1234', tenant: '*', role: 'viewer', principalId: 'v' },
      { key: 'admin-key-12345678', tenant: 'acme', role: 'admin', principalId: 'admin' },
    ]);
  });

  // P329: a static principal goes into every JobRequest: bounded and free of control characters.
  it('refuses a static key whose principal_id is longer than 256 characters or has a control character', () => {
    const keys = (principal_id: string): string => JSON.stringify([{ key: 'viewer-key-1234', tenant: 'acme', role: 'viewer', principal_id }]);
    expect(configError({ ...base, CORDUM_API_KEYS: keys('p'.repeat(257)) })).toContain('CORDUM_API_KEYS');
    expect(configError({ ...base, CORDUM_API_KEYS: keys('ops\n{"level":"error"}') })).toContain('principal_id must not contain control characters');
    expect(loadGatewayConfig({ ...base, CORDUM_API_KEYS: keys('p'.repeat(256)) }).apiKeys[0]?.principalId).toHaveLength(256);
  });

  it('takes the NATS login of the common env (natsConnectionConfig)', () => {
    expect(loadGatewayConfig({ ...base, NATS_URL: 'nats://gw:pw@n:4222' }).nats).toEqual({ servers: ['nats://n:4222'], user: 'gw', password: 'pw' });
    expect(configError({ ...base, NATS_URL: 'nats://gw:pw@n:4222', NATS_TOKEN: 'tok' })).toContain('a user:password in NATS_URL and NATS_TOKEN(_FILE) are set together');
  });

  it('refuses to start without any key (D26)', () => {
    expect(configError({})).toMatch(/CORDUM_API_KEY.*no API keys configured/);
  });

  it.each([
    ['not-json', /CORDUM_API_KEYS .*invalid JSON/],
    ['{"key":"x"}', /CORDUM_API_KEYS .*expected array/],
    ['[{"key":"long-enough-key","tenant":"acme","role":"root"}]', /CORDUM_API_KEYS .*role/],
    ['[{"key":"long-enough-key","tenant":"Not Valid","role":"admin"}]', /CORDUM_API_KEYS .*tenant/],
  ])('CORDUM_API_KEYS=%s is one line naming the variable', (raw, re) => {
    const msg = configError({ ...base, CORDUM_API_KEYS: raw });
    expect(msg).toMatch(re);
    // The secret value is never echoed.
    expect(msg).not.toContain('long-enough-key');
  });

  it.each([
    ['GATEWAY_HTTP_ADDR', 'nope'],
    ['TENANT_ID', 'Bad Tenant'],
    ['JOB_TTL', 'forever'],
  ])('%s=%s is a config error naming it', (name, value) => {
    expect(configError({ ...base, [name]: value })).toContain(name);
  });

  it.each([
    // PEXPIRE 0 would delete records as they are written; SET PX 0 is refused by Redis
    ['JOB_TTL', '0', 'JOB_TTL must be between 1m and 30d'],
    ['JOB_TTL', '31d', 'JOB_TTL must be at most 30d'],
    // P238: a dead letter lives at least an hour, at most D45's 30 days
    ['DLQ_TTL', '30m', 'DLQ_TTL must be between 1h and 30d'],
    ['DLQ_TTL', '31d', 'DLQ_TTL must be at most 30d'],
    // each cleanup SCANs the keyspace; 0 would start one every millisecond
    ['DLQ_CLEANUP_INTERVAL', '0', 'DLQ_CLEANUP_INTERVAL must be between 1m and 24d'],
    ['DLQ_CLEANUP_INTERVAL', '700h', 'DLQ_CLEANUP_INTERVAL must be at most 24d'],
    ['CORDUM_CONFIG_RELOAD_INTERVAL', '720h', 'CORDUM_CONFIG_RELOAD_INTERVAL must be at most 24d'],
    // grpc-js would take these as dns:http://… or port 443 and every Check would fail at run time
    ['SAFETY_KERNEL_ADDR', 'http://kernel:50051', 'SAFETY_KERNEL_ADDR use host:port or dns:///host:port, not a URL'],
    ['SAFETY_KERNEL_ADDR', 'kernel', 'SAFETY_KERNEL_ADDR bad host:port "kernel" (port 1-65535)'],
    ['SAFETY_KERNEL_ADDR', '127.0.0.1:99999', 'SAFETY_KERNEL_ADDR bad host:port'],
    ['SAFETY_KERNEL_ADDR', 'kernel-a:50051,kernel-b', 'SAFETY_KERNEL_ADDR bad host:port "kernel-b" in "kernel-a:50051,kernel-b"'],
    // the shared bucket's Lua cannot run these (P91)
    ['API_RATE_LIMIT_RPS', '1e-300', 'API_RATE_LIMIT_RPS must be a number from 0.001 to 1000000 (got "1e-300")'],
    ['API_RATE_LIMIT_RPS', '2000000', 'API_RATE_LIMIT_RPS must be a number from 0.001 to 1000000'],
    ['API_RATE_LIMIT_RPS', 'abc', 'API_RATE_LIMIT_RPS must be a number from 0.001 to 1000000 (got "abc")'],
    ['API_RATE_LIMIT_BURST', '0', 'API_RATE_LIMIT_BURST must be a positive integer <= 1000000'],
    ['API_RATE_LIMIT_BURST', '5000000', 'API_RATE_LIMIT_BURST must be a positive integer <= 1000000'],
    ['AUDIT_BUFFER_SIZE', 'lots', 'AUDIT_BUFFER_SIZE must be a positive integer <= 1000000'],
    // P61: the signing key is read and checked at start
    ['CAP_SIGNING_KEY_FILE', '/nonexistent/cap.key.pem', 'CAP_SIGNING_KEY_FILE cannot read "/nonexistent/cap.key.pem": ENOENT'],
    // P245: so are the workers' public keys
    ['CAP_VERIFY_KEY_FILE', '/nonexistent/cap.pub.pem', 'CAP_VERIFY_KEY_FILE cannot read "/nonexistent/cap.pub.pem": ENOENT'],
  ])('%s=%s is refused at load: %s', (name, value, message) => {
    expect(configError({ ...base, [name]: value })).toContain(message);
  });

  it('takes the documented forms: JOB_TTL 7d, SAFETY_KERNEL_ADDR dns:/// and comma lists', () => {
    for (const addr of ['dns:///safety-kernel-headless:50051', 'kernel:50051', '[::1]:50051', 'a:1,b:2']) {
      expect(loadGatewayConfig({ ...base, JOB_TTL: '7d', SAFETY_KERNEL_ADDR: addr })).toMatchObject({ safetyKernelAddr: addr, jobTtlMs: 7 * 86_400_000 });
    }
  });
});

describe('API keys from files (mounted secrets)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'gw-keys-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string): string => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };

  it('CORDUM_API_KEY_FILE and CORDUM_API_KEYS_FILE hold what the variables would (trailing line break dropped)', () => {
    const c = loadGatewayConfig({
      CORDUM_API_KEY_FILE: file('key', 'admin-key-from-file\n'),
      CORDUM_API_KEYS_FILE: file('keys.json', `${JSON.stringify([{ key: 'viewer-key-file1', tenant: 'acme', role: 'viewer', principal_id: 'v' }])}\n`),
    });
    expect(c.apiKeys).toEqual([
      { key: 'viewer-key-file1', tenant: 'acme', role: 'viewer', principalId: 'v' },
      { key: 'admin-key-from-file', tenant: 'default', role: 'admin', principalId: 'admin' },
    ]);
  });

  it('both the variable and its file, an unreadable file, or a bad list in the file: one line that echoes no key', () => {
    expect(configError({ CORDUM_API_KEY: 'admin-key-12345678', CORDUM_API_KEY_FILE: file('key2', 'other-admin-key-1') })).toBe('invalid config: CORDUM_API_KEY and CORDUM_API_KEY_FILE are both set: set one');
    expect(configError({ ...base, CORDUM_API_KEYS_FILE: join(dir, 'missing.json') })).toBe(`invalid config: CORDUM_API_KEYS_FILE cannot read ${JSON.stringify(join(dir, 'missing.json'))}: ENOENT`);
    const bad = configError({ ...base, CORDUM_API_KEYS_FILE: file('bad.json', '[{"key":"short-secret-k","tenant":"acme","role":"root"}]') });
    expect(bad).toMatch(/^invalid config: CORDUM_API_KEYS \(read from CORDUM_API_KEYS_FILE\) \[0\.role\] .* \(got "<redacted>"\)$/);
    expect(bad).not.toContain('short-secret-k');
  });

  it('without any key, the error names the file variables too', () => {
    expect(configError({})).toContain('no API keys configured: set CORDUM_API_KEY or CORDUM_API_KEYS (or CORDUM_API_KEY_FILE / CORDUM_API_KEYS_FILE)');
  });
});

describe('static key store', () => {
  it('finds keys by exact value only', () => {
    const keys = createStaticKeyStore([
      { key: 'alpha-key-0001', tenant: 'a', role: 'viewer', principalId: 'pa' },
      { key: 'beta-key-00002', tenant: 'b', role: 'admin', principalId: 'pb' },
    ]);
    expect(keys.lookup('beta-key-00002')).toEqual({ tenant: 'b', role: 'admin', principalId: 'pb' });
    expect(keys.lookup('beta-key-0000')).toBeNull();
    expect(keys.lookup('')).toBeNull();
  });
});
