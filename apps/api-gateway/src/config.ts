// Gateway env (CONTRACT §1, D26). Pure: parsed once by main.ts and passed down.
import { scryptSync, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { ANY_HOST, commonEnvSchema, defaultInstanceId, loadConfig, natsConnectionConfig, redisConnectionConfig, zAddr, zBool, zCheckedString, zDuration, zInt, zJobTtl, zDlqTtl, zNumber, zParsedString, type NatsConnectionConfig, type RedisConnectionConfig } from '@cordum/service-kit';
import { RATE_LIMIT_BOUNDS, configReloadEnvShape, configReloadIntervalMs } from '@cordum/config-overlay';
import { loadSigningKeyFile, loadVerifyKeysFile, parseGrpcAddress } from '@cordum/protocol';
import { CONTROL_CHAR_MESSAGE, CONTROL_CHAR_RE, MAX_PRINCIPAL_CHARS, ROLES, TENANT_RE, type ApiKeyEntry } from './auth/keys';

/** A key for every tenant (D26). */
export const WILDCARD_TENANT = '*';

/**
 * `key-<12 hex of scrypt(key)>`: stable for a key (P59), and shown to every viewer of its tenant
 * (an approval's `by`), every worker (JobRequest principal_id) and the audit log. P299: it was the
 * key's SHA-256, which a GPU inverts for a short key (8 characters are allowed) in hours; scrypt
 * (N 2^12, a fixed label as salt: the same key gives the same principal on every replica) makes
 * each guess thousands of times dearer. About 10 ms per key, once, at config load.
 */
export function defaultPrincipal(key: string): string {
  return `key-${scryptSync(key, 'cordum:static-key-principal', 6, { N: 4096, r: 8, p: 1 }).toString('hex')}`;
}

const keyEntrySchema = z.object({
  key: z.string().min(8, 'key must be at least 8 characters'),
  tenant: z.string().refine((t) => t === WILDCARD_TENANT || TENANT_RE.test(t), 'tenant must match ^[a-z0-9][a-z0-9_-]{0,62}$ or be "*"'),
  role: z.enum(ROLES),
  principal_id: z.string().min(1).max(MAX_PRINCIPAL_CHARS).refine((v) => !CONTROL_CHAR_RE.test(v), `principal_id ${CONTROL_CHAR_MESSAGE}`).optional(),
});

/** `CORDUM_API_KEYS`: a JSON list `[{key, tenant, role, principal_id}]`; any defect is a config error naming the variable. */
const zApiKeys = z
  .string()
  .optional()
  .transform((raw, ctx): ApiKeyEntry[] => {
    if (raw === undefined || raw.trim() === '') return [];
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'expected a JSON list of {key, tenant, role, principal_id}, got invalid JSON' });
      return z.NEVER;
    }
    const res = z.array(keyEntrySchema).safeParse(parsed);
    if (!res.success) {
      const first = res.error.issues[0];
      const where = first && first.path.length ? `[${first.path.join('.')}] ` : '';
      ctx.addIssue({ code: 'custom', message: `${where}${first?.message ?? 'invalid entry'}` });
      return z.NEVER;
    }
    // Without principal_id the identity derives from the key itself, not its place in the list: a
    // reordered list, or replicas with different lists mid-rollout, must not move an identity (and
    // with it the self-approval check and the audit trail) from one key to another.
    return res.data.map((e) => ({ key: e.key, tenant: e.tenant, role: e.role, principalId: e.principal_id ?? defaultPrincipal(e.key) }));
  });

export const gatewayEnvSchema = commonEnvSchema
  .extend({
    GATEWAY_HTTP_ADDR: zAddr.default({ host: ANY_HOST, port: 8081 }),
    GATEWAY_GRPC_ADDR: zAddr.default({ host: ANY_HOST, port: 8080 }),
    GATEWAY_METRICS_ADDR: zAddr.default({ host: ANY_HOST, port: 9092 }),
    SAFETY_KERNEL_ADDR: zCheckedString(parseGrpcAddress).default('127.0.0.1:50051'),
    CORDUM_API_KEY: z.string().min(8, 'must be at least 8 characters').optional(),
    TENANT_ID: z.string().regex(TENANT_RE, 'must match ^[a-z0-9][a-z0-9_-]{0,62}$').default('default'),
    CORDUM_API_KEYS: zApiKeys,
    JOB_TTL: zJobTtl,
    // P238: a dead letter's life (default 30 d, D45); the same on every gateway and scheduler.
    DLQ_TTL: zDlqTtl,
    AUDIT_TRANSPORT: z.enum(['local', 'buffer', 'nats']).default('local'),
    AUDIT_BUFFER_SIZE: zInt({ min: 1, max: 1_000_000 }).default(1000),
    // Each run SCANs the keyspace (index trim): not more often than once a minute.
    DLQ_CLEANUP_INTERVAL: zDuration.default(3600 * 1000).refine((ms) => ms >= 60_000, { message: 'must be between 1m and 24d' }),
    // D24: defaults 1000/2000; docs recommend 30/50 in production. Overridden live by config `rate_limits`.
    API_RATE_LIMIT_RPS: zNumber({ min: RATE_LIMIT_BOUNDS.minRps, max: RATE_LIMIT_BOUNDS.maxRps }).default(1000),
    API_RATE_LIMIT_BURST: zInt({ min: 1, max: RATE_LIMIT_BOUNDS.maxBurst }).default(2000),
    REDIS_RATE_LIMIT: zBool.default(true),
    // P98: open WebSocket streams per replica, and per tenant on one replica.
    GATEWAY_STREAM_MAX_CLIENTS: zInt({ min: 1, max: 1_000_000 }).default(10_000),
    GATEWAY_STREAM_MAX_CLIENTS_PER_TENANT: zInt({ min: 1, max: 1_000_000 }).default(1_000),
    // P61: a PEM P-256 private key; when set, the JobCancels sent to workers are signed with it.
    CAP_SIGNING_KEY_FILE: zParsedString((path) => loadSigningKeyFile(path, 'private')).optional(),
    // P245: PEM P-256 public key(s); when set, worker progress reaches WebSocket clients only signed.
    CAP_VERIFY_KEY_FILE: zParsedString(loadVerifyKeysFile).optional(),
    ...configReloadEnvShape,
  })
  .superRefine((env, ctx) => {
    // D26: an open gateway is never the default.
    if (env.CORDUM_API_KEY === undefined && env.CORDUM_API_KEYS.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['CORDUM_API_KEY'], message: 'no API keys configured: set CORDUM_API_KEY or CORDUM_API_KEYS (or CORDUM_API_KEY_FILE / CORDUM_API_KEYS_FILE)' });
    }
  });

export type GatewayEnv = z.infer<typeof gatewayEnvSchema>;

/** The API keys may be read from files (mounted secrets) instead: what the variable would hold. */
export const GATEWAY_SECRET_FILES = { CORDUM_API_KEY: 'CORDUM_API_KEY_FILE', CORDUM_API_KEYS: 'CORDUM_API_KEYS_FILE' } as const;

export interface GatewayConfig {
  service: 'api-gateway';
  instanceId: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** REDIS_URL, REDIS_CLUSTER_ADDRESSES, pool sizes and REDIS_TLS_* (redisConnectionConfig). */
  redis: RedisConnectionConfig;
  /** NATS_URL and the NATS login and TLS variables (natsConnectionConfig). */
  nats: NatsConnectionConfig;
  httpAddr: { host: string; port: number };
  grpcAddr: { host: string; port: number };
  metricsAddr: { host: string; port: number };
  safetyKernelAddr: string;
  apiKeys: ApiKeyEntry[];
  jobTtlMs: number;
  /** DLQ_TTL (P238). */
  dlqTtlMs: number;
  /** `nats` exports audit events to sys.audit.export; otherwise a bounded in-memory ring. */
  audit: { transport: 'local' | 'nats'; bufferSize: number };
  dlqCleanupIntervalMs: number;
  rateLimit: { rps: number; burst: number; useRedis: boolean };
  configReloadIntervalMs: number;
  /** P98: bounds on open WebSocket streams on this replica. */
  stream: { maxClients: number; maxClientsPerTenant: number };
  /** P61: JobCancels to workers are signed with this key (for workers that verify). */
  capSigningKey?: KeyObject;
  /** P245: workers' progress (`sys.job.progress`) is streamed only when it verifies with one of these. */
  capVerifyKey?: readonly KeyObject[];
  /** TENANT_ID: the deployment's own tenant, whose admins (and `*` admins) may write the global config (P320). */
  deploymentTenant: string;
}

/** Throws ConfigError (one line naming the variable) on bad env. */
export function loadGatewayConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): GatewayConfig {
  const e = loadConfig(gatewayEnvSchema, env, { secretFiles: GATEWAY_SECRET_FILES });
  const keys: ApiKeyEntry[] = [...e.CORDUM_API_KEYS];
  if (e.CORDUM_API_KEY !== undefined) keys.push({ key: e.CORDUM_API_KEY, tenant: e.TENANT_ID, role: 'admin', principalId: 'admin' });
  return {
    service: 'api-gateway',
    instanceId: e.CORDUM_INSTANCE_ID ?? defaultInstanceId('api-gateway'),
    logLevel: e.CORDUM_LOG_LEVEL,
    redis: redisConnectionConfig(e),
    nats: natsConnectionConfig(e),
    httpAddr: e.GATEWAY_HTTP_ADDR,
    grpcAddr: e.GATEWAY_GRPC_ADDR,
    metricsAddr: e.GATEWAY_METRICS_ADDR,
    safetyKernelAddr: e.SAFETY_KERNEL_ADDR,
    apiKeys: keys,
    jobTtlMs: e.JOB_TTL,
    dlqTtlMs: e.DLQ_TTL,
    audit: { transport: e.AUDIT_TRANSPORT === 'nats' ? 'nats' : 'local', bufferSize: e.AUDIT_BUFFER_SIZE },
    dlqCleanupIntervalMs: e.DLQ_CLEANUP_INTERVAL,
    rateLimit: { rps: e.API_RATE_LIMIT_RPS, burst: e.API_RATE_LIMIT_BURST, useRedis: e.REDIS_RATE_LIMIT },
    configReloadIntervalMs: configReloadIntervalMs(e),
    stream: { maxClients: e.GATEWAY_STREAM_MAX_CLIENTS, maxClientsPerTenant: e.GATEWAY_STREAM_MAX_CLIENTS_PER_TENANT },
    capSigningKey: e.CAP_SIGNING_KEY_FILE,
    capVerifyKey: e.CAP_VERIFY_KEY_FILE,
    deploymentTenant: e.TENANT_ID,
  };
}
