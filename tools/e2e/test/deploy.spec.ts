// No Docker engine runs here, so the Docker description of the stack is checked
// by parsing: every service, env var and port must agree with the code and with
// tools/stack/services.json (the table `npm start` runs from).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { parseGrpcAddress } from '@cordum/protocol';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { canConnect, freePort, replaceFileWhole, repoRoot, startProcess, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { api, startStack, type Stack } from './stack';

interface ServiceDef {
  name: string;
  ports: Record<string, number>;
  optional?: boolean;
  maxReplicas: number;
  /** The env var of the listener that serves /healthz and /readyz. */
  health?: string;
}
interface ComposeService {
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  expose?: string[];
  build?: { context: string; dockerfile: string };
  image?: string;
  stop_grace_period?: string;
  healthcheck?: { test?: string[]; start_period?: string; timeout?: string; interval?: string };
  read_only?: boolean;
  cap_drop?: string[];
  depends_on?: string[];
}
interface ComposeFile {
  services: Record<string, ComposeService>;
}

const table = JSON.parse(readFileSync(join(repoRoot, 'tools/stack/services.json'), 'utf8')) as { services: ServiceDef[]; redisArgs: string[] };
const built = table.services.filter((s) => existsSync(join(repoRoot, 'apps', s.name, 'src/main.ts')));
const load = (f: string) => parse(readFileSync(join(repoRoot, f), 'utf8'), { merge: true }) as ComposeFile;
const base = load('docker-compose.yml');
const ha = load('docker-compose.ha.yaml');

/** `docker compose -f base -f overlay`: services merge key by key, env maps merge. */
function overlay(a: ComposeFile, b: ComposeFile): ComposeFile {
  const services: Record<string, ComposeService> = { ...a.services };
  for (const [name, s] of Object.entries(b.services)) {
    const prev = services[name];
    services[name] = prev ? { ...prev, ...s, environment: { ...prev.environment, ...s.environment } } : s;
  }
  return { services };
}
const merged = overlay(base, ha);

/** The text of every non-test TypeScript source under a directory, one entry per file. */
function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'test' && e.name !== 'node_modules') walk(p);
      } else if (e.name.endsWith('.ts') && !e.name.endsWith('.spec.ts')) out.push(readFileSync(p, 'utf8'));
    }
  };
  walk(dir);
  return out;
}

/** Every upper-case string literal in a directory's TypeScript sources: the env names the code can read. */
function envNamesIn(dir: string): Set<string> {
  const out = new Set<string>();
  for (const text of sourceFiles(dir)) {
    for (const m of text.matchAll(/['"`]([A-Z][A-Z0-9_]{2,})['"`]/g)) out.add(m[1]!);
    // zod object keys: `REDIS_URL: z.string()`
    for (const m of text.matchAll(/^\s*([A-Z][A-Z0-9_]{2,})\s*:/gm)) out.add(m[1]!);
  }
  return out;
}
const commonEnv = envNamesIn(join(repoRoot, 'libs/service-kit/src'));

/** The text of every non-test TypeScript source under apps/ and libs/, read once. */
let codeText: string | undefined;
const allSources = (): string => (codeText ??= [join(repoRoot, 'apps'), join(repoRoot, 'libs')].flatMap(sourceFiles).join('\n'));

/** promtool (Debian's prometheus package) is installed by .ci/run; a machine without it skips these checks outside CI. */
const itWithPromtool = spawnSync('promtool', ['--version']).status === 0 || process.env['CI'] ? it : it.skip;
function promtool(cwd: string, ...args: string[]): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

function appServices(file: ComposeFile, app: string): [string, ComposeService][] {
  return Object.entries(file.services).filter(([, s]) => (s.command ?? []).join(' ').includes(`dist/apps/${app}/main.js`));
}

// deploy/k8s: no cluster runs here, so, as for compose, the manifests are checked against
// services.json, the code's env names, the CONTRACT ports and replica ranges and each other.
// cordum.yaml runs the services; nats.yaml and redis.yaml what they need (kustomization.yaml
// applies the three); redis-cluster/ is a Kustomize component that swaps redis.yaml for a
// Redis Cluster; podmonitor.yaml is the Prometheus Operator's scrape config.
interface Port { name: string; containerPort: number }
interface Probe { httpGet?: { path: string; port: string }; tcpSocket?: { port: string }; exec?: { command: string[] }; periodSeconds?: number; timeoutSeconds?: number; failureThreshold?: number }
interface EnvVar { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } } }
interface SecurityContext {
  runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number; fsGroup?: number; seccompProfile?: { type: string };
  allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; capabilities?: { drop?: string[]; add?: string[] };
}
interface Container {
  name: string; image: string; command?: string[]; args?: string[]; env?: EnvVar[]; ports?: Port[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  livenessProbe?: Probe; readinessProbe?: Probe; startupProbe?: Probe;
  resources?: { requests?: { memory?: string }; limits?: { memory?: string } };
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  securityContext?: SecurityContext;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
type Labels = Record<string, string>;
interface PodSpec {
  terminationGracePeriodSeconds?: number; containers: Container[]; securityContext?: SecurityContext;
  automountServiceAccountToken?: boolean; enableServiceLinks?: boolean;
  topologySpreadConstraints?: { maxSkew: number; topologyKey: string; whenUnsatisfiable: string; labelSelector?: { matchLabels?: Labels } }[];
  affinity?: { podAntiAffinity?: { requiredDuringSchedulingIgnoredDuringExecution?: { topologyKey: string; labelSelector?: { matchLabels?: Labels } }[] } };
  volumes?: { name: string; configMap?: { name: string }; emptyDir?: object; secret?: { secretName: string; items?: { key: string; path: string }[] } }[];
}
interface Doc {
  apiVersion: string; kind: string; metadata: { name: string; labels?: Labels; annotations?: Labels }; data?: Record<string, string>;
  spec: {
    replicas?: number; minAvailable?: number; maxUnavailable?: number; clusterIP?: string; publishNotReadyAddresses?: boolean;
    serviceName?: string; podManagementPolicy?: string;
    selector?: { matchLabels?: Labels } & Record<string, string | Labels>;
    ports?: { name: string; port: number; targetPort: string }[];
    template?: { metadata: { labels: Labels; annotations?: Labels }; spec: PodSpec };
    volumeClaimTemplates?: { metadata: { name: string }; spec: { resources: { requests: { storage: string } } } }[];
    podSelector?: { matchLabels?: Labels };
    ingress?: { from?: { podSelector?: { matchLabels?: Labels } }[]; ports?: { port: string | number }[] }[];
    jobLabel?: string;
    podMetricsEndpoints?: { port: string; path?: string; honorLabels?: boolean }[];
  };
}
const k8sDir = join(repoRoot, 'deploy/k8s');
const k8sDocs = (file: string): Doc[] =>
  parseAllDocuments(readFileSync(join(k8sDir, file), 'utf8')).map((d) => d.toJS() as Doc | null).filter((d): d is Doc => d !== null);
const docs = k8sDocs('cordum.yaml');
const natsDocs = k8sDocs('nats.yaml');
const redisDocs = k8sDocs('redis.yaml');
const clusterDocs = k8sDocs('redis-cluster/redis-cluster.yaml');
const monitorDocs = k8sDocs('podmonitor.yaml');
const kindIn = (list: Doc[], kind: string) => list.filter((d) => d.kind === kind);
const named = (list: Doc[], kind: string, name: string): Doc => {
  const d = list.find((x) => x.kind === kind && x.metadata.name === name);
  if (!d) throw new Error(`no ${kind} ${name}`);
  return d;
};
const workloads = [...docs, ...natsDocs, ...redisDocs, ...clusterDocs].filter((d) => d.kind === 'Deployment' || d.kind === 'StatefulSet');
const labelsMatch = (sel: Labels, labels: Labels) => Object.entries(sel).every(([k, v]) => labels[k] === v);
const firstContainer = (d: Doc) => d.spec.template!.spec.containers[0]!;
const cordumHeader = readFileSync(join(k8sDir, 'cordum.yaml'), 'utf8').split('\napiVersion:')[0]!;
const dockerfile = readFileSync(join(repoRoot, 'deploy/Dockerfile'), 'utf8');
/** Kubernetes quantities (Mi, Gi) and nats/redis sizes (MB, GB, mb, gb: the servers read these as powers of 1024) in bytes. */
function bytes(q: string): number {
  const m = /^(\d+)\s*(Ki|Mi|Gi|KB|MB|GB|kb|mb|gb|K|M|G)?$/.exec(q.trim());
  if (!m) throw new Error(`not a size: ${q}`);
  const unit = (m[2] ?? '').toLowerCase().replace(/i$|b$/, '');
  return Number(m[1]) * ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as Record<string, number>)[unit]!;
}
/** redis.conf directives: name -> value (the rest of the line). */
function redisDirectives(conf: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of conf.split('\n').map((l) => l.trim())) {
    const m = /^([a-z-]+)\s+(.*)$/.exec(line);
    if (m && !line.startsWith('#')) out.set(m[1]!, m[2]!);
  }
  return out;
}
/** Starts a manifest's redis-server (its container command, config and password) on a free port; returns an authenticated client. */
async function runManifestRedis(command: string[], files: Record<string, string>, password: string | undefined): Promise<{ redis: RedisClient; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'cordum-k8s-redis-'));
  const port = await freePort();
  const conf = join(dir, 'etc');
  mkdirSync(conf);
  mkdirSync(join(dir, 'data'));
  for (const [name, text] of Object.entries(files)) {
    // the same file on a free loopback port, with its data in the temp dir (and a cluster's bus
    // on a free port too: port + 10000 may be taken, or past 65535)
    let local = text
      .replace(/^port \d+$/m, `port ${port}`)
      .replace(/^bind .*$/m, 'bind 127.0.0.1')
      .replaceAll('/data', join(dir, 'data'))
      .replaceAll('/etc/redis/', `${conf}/`);
    if (/^cluster-enabled yes$/m.test(local)) local += `cluster-port ${await freePort()}\n`;
    writeFileSync(join(conf, name), local);
  }
  // the command as the container runs it (its shell execs redis-server: a SIGTERM reaches Redis)
  const [cmd, ...args] = command.map((a) => a.replaceAll('/etc/redis/', `${conf}/`).replaceAll('/data', join(dir, 'data')));
  const proc = startProcess('k8s-redis', cmd!, args, password ? { REDISCLI_AUTH: password } : {});
  const stop = async () => {
    await proc.stop(5_000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(() => canConnect(port), 10_000, { message: `manifest redis-server on ${port}: ${proc.output.join('\n')}` });
  } catch (err) {
    await stop();
    throw err;
  }
  const url = password ? `redis://:${password}@127.0.0.1:${port}` : `redis://127.0.0.1:${port}`;
  return { redis: createRedis({ url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 }), stop };
}

describe('docker-compose.yml and docker-compose.ha.yaml', () => {
  it('runs every built service, and only real bundles', () => {
    for (const svc of built) expect(appServices(base, svc.name).length).toBe(1);
    for (const [name, s] of Object.entries(base.services)) {
      const m = /dist\/apps\/([^/]+)\/main\.js/.exec((s.command ?? []).join(' '));
      if (m) expect({ name, exists: existsSync(join(repoRoot, 'apps', m[1]!, 'src/main.ts')) }).toEqual({ name, exists: true });
    }
    expect(Object.keys(base.services)).toEqual(expect.arrayContaining(['redis', 'nats']));
    expect(base.services['nats']!.command).toEqual(expect.arrayContaining(['-js']));
  });

  it('gives every service more than the 15 s its SIGTERM drain may take (Docker\'s default is 10 s)', () => {
    for (const file of [base, merged]) {
      for (const svc of built) {
        for (const [name, s] of appServices(file, svc.name)) {
          const m = /^(\d+)s$/.exec(s.stop_grace_period ?? '');
          expect({ name, grace: s.stop_grace_period, over15: m !== null && Number(m[1]) > 15 }).toEqual({ name, grace: s.stop_grace_period, over15: true });
        }
      }
    }
  });

  it('stops every worker before a scheduler it depends on, so its last results are still recorded (P209)', () => {
    for (const file of [base, merged]) {
      const schedulers = appServices(file, 'scheduler').map(([name]) => name);
      for (const [name, s] of appServices(file, 'echo-worker')) {
        expect({ name, afterScheduler: (s.depends_on ?? []).some((d) => schedulers.includes(d)) }).toEqual({ name, afterScheduler: true });
      }
    }
  });

  it("runs Redis with services.json's redisArgs, as npm start does", () => {
    const cmd = base.services['redis']!.command ?? [];
    expect(table.redisArgs).toEqual(expect.arrayContaining(['--maxmemory-policy', 'noeviction']));
    expect(cmd.slice(cmd.indexOf(table.redisArgs[0]!))).toEqual(table.redisArgs);
    expect(readFileSync(join(repoRoot, 'tools/stack/start.mjs'), 'utf8')).toMatch(/'redis-server', \[[^\]]*\.\.\.table\.redisArgs\]/);
  });

  it('uses only env vars that the service code reads', () => {
    for (const file of [base, merged]) {
      for (const svc of built) {
        const known = new Set([...commonEnv, ...envNamesIn(join(repoRoot, 'apps', svc.name, 'src'))]);
        for (const [name, s] of appServices(file, svc.name)) {
          for (const key of Object.keys(s.environment ?? {})) {
            expect({ service: name, env: key, known: known.has(key) }).toEqual({ service: name, env: key, known: true });
          }
        }
      }
    }
  });

  it('binds each service on its CONTRACT default ports', () => {
    for (const file of [base, merged]) {
      for (const svc of built) {
        for (const [name, s] of appServices(file, svc.name)) {
          for (const [envName, port] of Object.entries(svc.ports)) {
            const value = s.environment?.[envName];
            if (value === undefined) continue; // optional listener (e.g. worker health)
            expect({ service: name, envName, value }).toEqual({ service: name, envName, value: `:${port}` });
          }
        }
      }
    }
    expect(base.services['api-gateway']!.ports).toEqual(expect.arrayContaining(['8081:8081']));
    expect(ha.services['api-gateway-2']!.ports).toEqual(expect.arrayContaining(['8083:8081']));
  });

  it('declares the ports in the code defaults too', () => {
    for (const svc of built) {
      const src = readFileSync(join(repoRoot, 'apps', svc.name, 'src/config.ts'), 'utf8');
      for (const [envName, port] of Object.entries(svc.ports)) {
        if (svc.name === 'echo-worker') continue; // the worker's health listener has no default (optional)
        expect({ envName, declared: src.includes(envName), port: src.includes(String(port)) }).toEqual({ envName, declared: true, port: true });
      }
    }
  });

  it('HA overlay adds a second replica of every service and lists both kernels', () => {
    for (const svc of built) expect({ svc: svc.name, n: appServices(merged, svc.name).length }).toEqual({ svc: svc.name, n: 2 });
    for (const [, s] of [...appServices(merged, 'scheduler'), ...appServices(merged, 'api-gateway')]) {
      expect(s.environment?.['SAFETY_KERNEL_ADDR']?.split(',')).toHaveLength(2);
    }
    const ids = Object.values(merged.services)
      .map((s) => s.environment?.['CORDUM_INSTANCE_ID'])
      .filter(Boolean);
    expect(new Set(ids).size).toBe(ids.length);
    // every service names its instance (the metrics' pod label, the logs' instance); a worker the same as its worker id
    for (const svc of built) {
      for (const [name, s] of appServices(merged, svc.name)) {
        expect({ service: name, id: s.environment?.['CORDUM_INSTANCE_ID'] }).toEqual({ service: name, id: expect.any(String) });
        if (svc.name === 'echo-worker') expect(s.environment?.['CORDUM_INSTANCE_ID']).toBe(s.environment?.['WORKER_ID']);
      }
    }
  });

  it('publishes Redis and NATS on loopback only (no password; the services use the compose network)', () => {
    for (const name of ['redis', 'nats']) {
      for (const p of base.services[name]!.ports ?? []) expect({ service: name, port: p }).toEqual({ service: name, port: expect.stringMatching(/^127\.0\.0\.1:/) });
    }
  });

  it("checks each service's /readyz with the image's node, and Redis and NATS with their own tools", () => {
    for (const file of [base, merged]) {
      for (const svc of built) {
        const port = svc.ports[svc.health ?? ''];
        for (const [name, s] of appServices(file, svc.name)) {
          const test = s.healthcheck?.test ?? [];
          expect({ service: name, test: test.slice(0, 3), url: test[3]?.includes(`fetch('http://127.0.0.1:${port}/readyz')`) }).toEqual({ service: name, test: ['CMD', 'node', '-e'], url: true });
          // a service waits for NATS and retries the stream setup for 60 s at start
          expect({ service: name, startPeriod: Number(/^(\d+)s$/.exec(s.healthcheck?.start_period ?? '')?.[1]) >= 60 }).toEqual({ service: name, startPeriod: true });
        }
      }
    }
    expect(base.services['redis']!.healthcheck?.test).toEqual(['CMD', 'redis-cli', 'ping']);
    expect(base.services['nats']!.healthcheck?.test).toEqual(['CMD', 'wget', '-q', '-O', '/dev/null', 'http://127.0.0.1:8222/healthz']);
    expect((base.services['nats']!.command ?? []).join(' ')).toMatch(/-m 8222\b/);
  });

  it('runs the services as on Kubernetes: read-only, without capabilities, with the production rate limits', () => {
    const k8sGateway = firstContainer(named(docs, 'Deployment', 'api-gateway')).env ?? [];
    for (const file of [base, merged]) {
      for (const svc of built) {
        for (const [name, s] of appServices(file, svc.name)) {
          expect({ service: name, readOnly: s.read_only, capDrop: s.cap_drop }).toEqual({ service: name, readOnly: true, capDrop: ['ALL'] });
        }
      }
      for (const [name, s] of appServices(file, 'api-gateway')) {
        for (const key of ['API_RATE_LIMIT_RPS', 'API_RATE_LIMIT_BURST']) {
          expect({ service: name, key, value: s.environment?.[key] }).toEqual({ service: name, key, value: k8sGateway.find((e) => e.name === key)?.value });
        }
      }
    }
  });

  it('publishes only the API on every interface: metrics on loopback', () => {
    const api = ['GATEWAY_HTTP_ADDR', 'GATEWAY_GRPC_ADDR'].map((k) => table.services.find((t) => t.name === 'api-gateway')!.ports[k]);
    for (const file of [base, merged]) {
      for (const [name, s] of Object.entries(file.services)) {
        for (const p of s.ports ?? []) {
          const target = Number(p.split(':').at(-1));
          if (!api.includes(target)) expect({ service: name, port: p }).toEqual({ service: name, port: expect.stringMatching(/^127\.0\.0\.1:/) });
        }
      }
    }
  });

  it('runs the Redis and NATS versions CI tests against', () => {
    const minor = (out: string) => /v=?(\d+\.\d+)\.\d+/.exec(out)?.[1];
    const tag = (image: string | undefined) => /:(\d+\.\d+)\.\d+(?:-[a-z]+)?$/.exec(image ?? '')?.[1];
    const redisCi = minor(spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout);
    const natsCi = minor(spawnSync('nats-server', ['--version'], { encoding: 'utf8' }).stdout);
    expect(redisCi).toBeDefined();
    expect(natsCi).toBeDefined();
    expect({ compose: tag(base.services['redis']!.image), k8s: tag(firstContainer(named(redisDocs, 'StatefulSet', 'redis')).image) }).toEqual({ compose: redisCi, k8s: redisCi });
    expect(tag(firstContainer(named(clusterDocs, 'StatefulSet', 'redis-cluster')).image)).toBe(redisCi);
    expect({ compose: tag(base.services['nats']!.image), k8s: tag(firstContainer(named(natsDocs, 'StatefulSet', 'nats')).image) }).toEqual({ compose: natsCi, k8s: natsCi });
  });

  it('builds one image from deploy/Dockerfile that contains every bundle', () => {
    const docker = readFileSync(join(repoRoot, 'deploy/Dockerfile'), 'utf8');
    expect(docker).toMatch(/nx run-many -t build/);
    expect(docker).toMatch(/COPY --from=build \/app\/dist \.\/dist/);
    expect(docker).toMatch(/npm install --omit=dev/);
    const builds = Object.values(base.services).filter((s) => s.build);
    expect(builds.length).toBeGreaterThan(0);
    for (const s of builds) expect(s.build).toEqual({ context: '.', dockerfile: 'deploy/Dockerfile' });
    // `COPY . .` must not bring the host's node_modules (other platforms' native binaries), local data or keys
    const ignored = readFileSync(join(repoRoot, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    expect(docker).toMatch(/^COPY \. \.$/m);
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', '.nx', '.cordum', '.git', '.env']));
  });

  it('builds on a supported Node.js LTS, both stages alike, and says which Node the tests ran on', () => {
    const major = /^ARG NODE_MAJOR=(\d+)$/m.exec(dockerfile)?.[1];
    // Node 20 reached its end of life on 2026-04-30
    expect(Number(major)).toBeGreaterThanOrEqual(22);
    expect([...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1])).toEqual(['node:${NODE_MAJOR}-bookworm-slim', 'node:${NODE_MAJOR}-bookworm-slim']);
    expect(dockerfile).toContain(`CI here runs the test suite on Node ${process.versions.node.split('.')[0]}`);
  });
});

describe('tools/stack/services.json', () => {
  it('lists every app with a health listener and sane replica bounds', () => {
    for (const svc of table.services) {
      expect(svc.maxReplicas).toBeGreaterThanOrEqual(1);
      expect(Object.keys(svc.ports).length).toBeGreaterThan(0);
    }
    const apps = readdirSync(join(repoRoot, 'apps')).filter((a) => existsSync(join(repoRoot, 'apps', a, 'src/main.ts')));
    for (const a of apps) expect(table.services.map((s) => s.name)).toContain(a);
  });
});

// What redisArgs are for: under them a finished job's record stays a listpack
// (about 30 % less memory, docs/performance.md "Redis memory per job"); under
// Redis's default hash-max-listpack-value (64) its dispatch and safety values
// make it a hashtable. A record that outgrows 256-byte values fails this.
describe("services.json's redisArgs on a real stack", () => {
  let stack: Stack;
  let redis: RedisClient;
  beforeAll(async () => {
    stack = await startStack({ redisArgs: table.redisArgs });
    redis = createRedis({ url: stack.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
  });
  afterAll(async () => {
    await closeRedis(redis);
    await stack?.stop();
  });

  const runJob = async (): Promise<string> => {
    const res = await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'listpack?', context: { n: 1 } });
    expect(res.status).toBe(200);
    const id = res.body['job_id'] as string;
    await waitFor(async () => (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body['state'] === 'SUCCEEDED', 30_000, {
      intervalMs: 50,
      message: `job ${id} succeeded`,
    });
    return id;
  };

  it("answers docker-compose.yml's health checks: the image's node fetching /readyz", async () => {
    const closed = await freePort();
    for (const svc of ['safety-kernel', 'scheduler', 'api-gateway']) {
      const def = table.services.find((t) => t.name === svc)!;
      const code = appServices(base, svc)[0]![1].healthcheck!.test![3]!;
      const at = (port: number) => code.replace(`:${def.ports[def.health!]}/`, `:${port}/`);
      expect({ svc, ready: spawnSync(process.execPath, ['-e', at(stack.healthPorts.get(`${svc}-1`)!)]).status }).toEqual({ svc, ready: 0 });
      expect({ svc, down: spawnSync(process.execPath, ['-e', at(closed)]).status }).toEqual({ svc, down: 1 });
    }
  });

  it('keeps a finished job record a listpack, and the default setting does not', async () => {
    const policy = await redis.config('GET', 'maxmemory-policy');
    expect(policy).toEqual(['maxmemory-policy', 'noeviction']);
    const id = await runJob();
    expect(await redis.object('ENCODING', `job:meta:{${id}}`)).toBe('listpack');

    await redis.config('SET', 'hash-max-listpack-value', '64');
    const other = await runJob();
    expect(await redis.object('ENCODING', `job:meta:{${other}}`)).toBe('hashtable');
  });
});

// The operations guide names metrics, env vars, API paths and log lines an operator will grep
// or alert on; each must exist, so the page cannot drift from the code unnoticed.
describe('docs/operations.md', () => {
  const doc = readFileSync(join(repoRoot, 'docs/operations.md'), 'utf8');
  const sources = allSources();

  it('names only metrics the code registers', () => {
    const names = [...new Set([...doc.matchAll(/\b(cordum_[a-z_]+)\b/g)].map((m) => m[1]!))];
    expect(names.length).toBeGreaterThan(10);
    for (const name of names) expect({ name, registered: sources.includes(`'${name}'`) }).toEqual({ name, registered: true });
  });

  it('names only env vars and constants the code reads', () => {
    // config-overlay's reload interval is read by every service that watches the config.
    const known = new Set([...commonEnv, ...envNamesIn(join(repoRoot, 'libs/config-overlay/src')), ...readdirSync(join(repoRoot, 'apps')).flatMap((a) => [...envNamesIn(join(repoRoot, 'apps', a, 'src'))])]);
    const names = [...new Set([...doc.matchAll(/`([A-Z][A-Z0-9_]{3,})`/g)].map((m) => m[1]!))];
    expect(names).toEqual(expect.arrayContaining(['JOB_TTL', 'REDIS_URL', 'SAFETY_KERNEL_ADDR']));
    for (const name of names) expect({ name, known: known.has(name) }).toEqual({ name, known: true });
  });

  it('names only API paths the OpenAPI description has', () => {
    const spec = JSON.parse(readFileSync(join(repoRoot, 'docs/openapi.json'), 'utf8')) as { paths: Record<string, Record<string, unknown>> };
    const refs = [...doc.matchAll(/`(?:(GET|POST|PUT|DELETE) )?(\/api\/v1\/[^`\s]*)`/g)].map((m) => ({ method: m[1]?.toLowerCase(), path: m[2]! }));
    expect(refs.length).toBeGreaterThan(5);
    for (const { method, path } of refs) {
      const op = spec.paths[path];
      expect({ path, documented: op !== undefined }).toEqual({ path, documented: true });
      if (method) expect({ path, method, documented: op?.[method] !== undefined }).toEqual({ path, method, documented: true });
    }
  });

  it('has table rows with as many cells as their header, in every doc and README (extra cells are dropped when rendered)', () => {
    const readmes = ['apps', 'libs', 'tools'].flatMap((d) => readdirSync(join(repoRoot, d)).map((p) => `${d}/${p}/README.md`)).filter((f) => existsSync(join(repoRoot, f)));
    const docs = [...readdirSync(join(repoRoot, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`), 'README.md', ...readmes];
    expect(docs.length).toBeGreaterThan(15);
    const bad: string[] = [];
    for (const file of docs) {
      let width: number | undefined;
      for (const [i, line] of readFileSync(join(repoRoot, file), 'utf8').split('\n').entries()) {
        if (!line.startsWith('|')) {
          width = undefined;
          continue;
        }
        const cells = line.replace(/\\\|/g, '').split('|').length - 2; // an escaped \| is text, not a cell border
        if (width === undefined) width = cells;
        else if (cells !== width) bad.push(`${file}:${i + 1} has ${cells} cells, its header ${width}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('quotes log lines word for word', () => {
    const section = doc.slice(doc.indexOf('## Log lines that need a look'), doc.indexOf('## When something fails'));
    const msgs = [...section.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]!);
    expect(msgs.length).toBeGreaterThan(8);
    for (const msg of msgs) expect({ msg, logged: sources.includes(`'${msg}'`) }).toEqual({ msg, logged: true });
  });
});

// deploy/prometheus: the alerting rules operations.md describes. promtool checks their syntax
// and runs their unit tests (itWithPromtool).
describe('deploy/prometheus alerting rules', () => {
  const dir = join(repoRoot, 'deploy/prometheus');
  const rules = parse(readFileSync(join(dir, 'cordum-alerts.yml'), 'utf8')) as { groups: { rules: { alert: string; expr: string; labels?: Record<string, string>; annotations?: Record<string, string> }[] }[] };
  const alerts = rules.groups.flatMap((g) => g.rules);

  itWithPromtool('pass promtool check rules', () => {
    expect(promtool(dir, 'check', 'rules', 'cordum-alerts.yml')).toMatchObject({ status: 0 });
  });

  itWithPromtool('pass their unit tests, which make every alert fire', () => {
    expect(promtool(dir, 'test', 'rules', 'cordum-alerts.test.yml')).toMatchObject({ status: 0 });
    const tests = parse(readFileSync(join(dir, 'cordum-alerts.test.yml'), 'utf8')) as { tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] };
    const fired = new Set(tests.tests.flatMap((t) => t.alert_rule_test).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname));
    for (const a of alerts) expect({ alert: a.alert, tested: fired.has(a.alert) }).toEqual({ alert: a.alert, tested: true });
  });

  it('use only metrics the code registers, and each has a severity and a summary', () => {
    for (const a of alerts) {
      expect({ alert: a.alert, severity: typeof a.labels?.['severity'], summary: typeof a.annotations?.['summary'] }).toEqual({ alert: a.alert, severity: 'string', summary: 'string' });
      expectRegisteredMetrics(a.alert, a.expr);
    }
  });
});

/** Every cordum_* series in a PromQL expression (histogram suffixes stripped) is a metric the code registers. */
function expectRegisteredMetrics(where: string, expr: string): void {
  const sources = allSources();
  for (const m of expr.matchAll(/\b(cordum_[a-z_]+?)(?:_bucket|_sum|_count)?\b/g)) {
    expect({ where, metric: m[1], registered: sources.includes(`'${m[1]}'`) }).toEqual({ where, metric: m[1], registered: true });
  }
}

// deploy/grafana: a dashboard over the same metrics. Its queries are checked for metric names
// and, through promtool (as recording rules, with Grafana's $__rate_interval set to 5m), for syntax.
describe('deploy/grafana/cordum-dashboard.json', () => {
  interface Panel { type: string; title: string; datasource?: { uid: string }; targets?: { expr: string }[] }
  const dash = JSON.parse(readFileSync(join(repoRoot, 'deploy/grafana/cordum-dashboard.json'), 'utf8')) as { uid: string; panels: Panel[]; templating: { list: { name: string; type: string }[] } };
  const graphs = dash.panels.filter((p) => p.type !== 'row');
  const exprs = graphs.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })));

  it('queries only registered metrics through its datasource variable', () => {
    expect(graphs.length).toBeGreaterThan(8);
    expect(dash.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource' }));
    for (const p of graphs) {
      expect({ panel: p.title, datasource: p.datasource?.uid, targets: (p.targets ?? []).length > 0 }).toEqual({ panel: p.title, datasource: '${datasource}', targets: true });
    }
    for (const { title, expr } of exprs) expectRegisteredMetrics(title, expr);
  });

  itWithPromtool('has queries that parse as PromQL', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordum-dash-'));
    try {
      const rules = exprs.map((e, i) => `      - record: cordum_dashboard:panel_${i}\n        expr: ${JSON.stringify(e.expr.replace(/\$__rate_interval/g, '5m'))}`).join('\n');
      writeFileSync(join(dir, 'dashboard.yml'), `groups:\n  - name: dashboard\n    rules:\n${rules}\n`);
      expect(promtool(dir, 'check', 'rules', 'dashboard.yml')).toMatchObject({ status: 0 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/k8s/cordum.yaml', () => {
  const of = (kind: string) => kindIn(docs, kind);
  const deployments = of('Deployment');
  const configMap = named(docs, 'ConfigMap', 'cordum-env');
  const container = firstContainer;
  const podsOf = (sel: Labels) => deployments.filter((d) => labelsMatch(sel, d.spec.template!.metadata.labels));

  it('runs every built service from one image, within its replica range', () => {
    const names = deployments.map((d) => d.metadata.name);
    for (const svc of built) expect(names).toContain(svc.name);
    expect(new Set(deployments.map((d) => container(d).image)).size).toBe(1);
    for (const d of deployments) {
      const svc = table.services.find((t) => t.name === d.metadata.name);
      expect({ name: d.metadata.name, known: svc !== undefined, command: container(d).command }).toEqual({ name: d.metadata.name, known: true, command: ['node', `dist/apps/${d.metadata.name}/main.js`] });
      expect(d.spec.replicas).toBeGreaterThanOrEqual(1);
      expect(d.spec.replicas).toBeLessThanOrEqual(svc!.maxReplicas);
      // SIGTERM stops a service within 15 s (tools/e2e lifecycle.spec.ts)
      expect(d.spec.template!.spec.terminationGracePeriodSeconds).toBeGreaterThan(15);
    }
  });

  it('sets only env vars the code reads, each listener on its CONTRACT port, and the instance id per pod', () => {
    // The ConfigMap is shared, so each of its keys must be read by some service that loads it
    // (SAFETY_KERNEL_ADDR by the gateway and the scheduler; the kernel ignores it).
    const mapReaders = new Map<string, boolean>(Object.keys(configMap.data ?? {}).map((k) => [k, false]));
    for (const d of deployments) {
      const c = container(d);
      const known = new Set([...commonEnv, ...envNamesIn(join(repoRoot, 'apps', d.metadata.name, 'src'))]);
      if ((c.envFrom ?? []).some((e) => e.configMapRef?.name === configMap.metadata.name)) for (const k of mapReaders.keys()) if (known.has(k)) mapReaders.set(k, true);
      for (const key of (c.env ?? []).map((e) => e.name)) {
        expect({ deployment: d.metadata.name, env: key, known: known.has(key) }).toEqual({ deployment: d.metadata.name, env: key, known: true });
      }
      const svc = table.services.find((t) => t.name === d.metadata.name)!;
      for (const [envName, port] of Object.entries(svc.ports)) {
        const value = c.env?.find((e) => e.name === envName)?.value;
        expect({ deployment: d.metadata.name, envName, value }).toEqual({ deployment: d.metadata.name, envName, value: `:${port}` });
        expect(c.ports?.map((p) => p.containerPort)).toContain(port);
      }
      for (const idVar of d.metadata.name === 'echo-worker' ? ['WORKER_ID', 'CORDUM_INSTANCE_ID'] : ['CORDUM_INSTANCE_ID']) {
        expect({ deployment: d.metadata.name, idVar, from: c.env?.find((e) => e.name === idVar)?.valueFrom?.fieldRef?.fieldPath }).toEqual({ deployment: d.metadata.name, idVar, from: 'metadata.name' });
      }
      // the optional exec log is the one file a service writes (see the security test)
      expect(c.env?.find((e) => e.name === 'WORKER_EXEC_LOG')).toBeUndefined();
    }
    for (const [key, read] of mapReaders) expect({ configMapKey: key, read }).toEqual({ configMapKey: key, read: true });
  });

  it('gives no secret to a service through its environment: each is a read-only file (kubectl exec env and /proc/1/environ show the environment)', () => {
    for (const d of deployments) {
      const c = container(d);
      expect({ deployment: d.metadata.name, envFromSecrets: (c.envFrom ?? []).filter((e) => e.secretRef).map((e) => e.secretRef?.name) }).toEqual({ deployment: d.metadata.name, envFromSecrets: [] });
      expect({ deployment: d.metadata.name, secretEnv: (c.env ?? []).filter((e) => e.valueFrom?.secretKeyRef).map((e) => e.name) }).toEqual({ deployment: d.metadata.name, secretEnv: [] });
    }
    // the gateway's admin key: CORDUM_API_KEY_FILE names a read-only mount of the header's cordum-api-key secret
    const gw = deployments.find((d) => d.metadata.name === 'api-gateway')!;
    const c = container(gw);
    const path = c.env?.find((e) => e.name === 'CORDUM_API_KEY_FILE')?.value ?? '';
    const mount = c.volumeMounts?.find((m) => path === `${m.mountPath}/${basename(path)}`);
    expect({ readOnly: mount?.readOnly, secret: gw.spec.template!.spec.volumes?.find((v) => v.name === mount?.name)?.secret }).toEqual({
      readOnly: true, secret: { secretName: 'cordum-api-key', items: [{ key: 'CORDUM_API_KEY', path: basename(path) }] },
    });
    expect(readFileSync(join(repoRoot, 'deploy/k8s/cordum.yaml'), 'utf8')).toContain('kubectl create secret generic cordum-api-key --from-literal=CORDUM_API_KEY=');
  });

  it('takes REDIS_URL, which carries the password, from the secret the header creates, as a file (REDIS_URL_FILE, read again at each connect), never from a ConfigMap', () => {
    for (const cm of [...of('ConfigMap'), ...kindIn(natsDocs, 'ConfigMap'), ...kindIn(redisDocs, 'ConfigMap')]) {
      expect({ configMap: cm.metadata.name, redisUrl: cm.data?.['REDIS_URL'] }).toEqual({ configMap: cm.metadata.name, redisUrl: undefined });
      for (const [k, v] of Object.entries(cm.data ?? {})) expect({ key: k, credentials: /:\/\/[^/\s]*@/.test(v) }).toEqual({ key: k, credentials: false });
    }
    expect(commonEnv.has('REDIS_URL_FILE')).toBe(true);
    for (const d of deployments) {
      const c = container(d);
      expect({ deployment: d.metadata.name, env: c.env?.find((e) => e.name === 'REDIS_URL') }).toEqual({ deployment: d.metadata.name, env: undefined });
      // REDIS_URL_FILE names <mountPath>/<item path> of a read-only mount of the secret's REDIS_URL key
      const path = c.env?.find((e) => e.name === 'REDIS_URL_FILE')?.value ?? '';
      const mount = c.volumeMounts?.find((m) => path === `${m.mountPath}/${basename(path)}`);
      const secret = d.spec.template!.spec.volumes?.find((v) => v.name === mount?.name)?.secret;
      expect({ deployment: d.metadata.name, readOnly: mount?.readOnly, secret }).toEqual({
        deployment: d.metadata.name, readOnly: true, secret: { secretName: 'cordum-redis', items: [{ key: 'REDIS_URL', path: basename(path) }] },
      });
    }
    // `kubectl create secret generic cordum-redis --from-literal=REDIS_PASSWORD=$P --from-literal=REDIS_URL=redis://:$P@redis:6379`
    const create = /kubectl create secret generic cordum-redis(.*)/.exec(cordumHeader.replace(/\\\n#\s*/g, ' '))?.[1] ?? '';
    const url = /--from-literal=REDIS_URL=redis:\/\/:\$P@([a-z0-9-]+):(\d+)/.exec(create);
    expect(create).toMatch(/--from-literal=REDIS_PASSWORD=\$P\b/);
    // the host and port of the URL are redis.yaml's Service, which takes the password from the same secret
    const svc = named(redisDocs, 'Service', url?.[1] ?? '?');
    expect(svc.spec.ports?.map((p) => p.port)).toContain(Number(url?.[2]));
    const auth = firstContainer(named(redisDocs, 'StatefulSet', 'redis')).env?.find((e) => e.name === 'REDISCLI_AUTH')?.valueFrom?.secretKeyRef;
    expect(auth).toEqual({ name: 'cordum-redis', key: 'REDIS_PASSWORD' });
    // ... and NATS_URL is nats.yaml's client Service
    const nats = /^nats:\/\/([a-z0-9-]+):(\d+)$/.exec(configMap.data?.['NATS_URL'] ?? '');
    const natsSvc = named(natsDocs, 'Service', nats?.[1] ?? '?');
    expect(natsSvc.spec.clusterIP).toBeUndefined();
    expect(natsSvc.spec.ports).toContainEqual(expect.objectContaining({ port: Number(nats?.[2]) }));
  });

  it('keeps the gateway serving while its endpoint removal propagates, within the grace period', () => {
    const gw = deployments.find((d) => d.metadata.name === 'api-gateway')!;
    const cmd = container(gw).lifecycle?.preStop?.exec?.command ?? [];
    expect(cmd[0]).toBe('sleep');
    const pause = Number(cmd[1]);
    expect(pause).toBeGreaterThanOrEqual(3);
    // then SIGTERM, and the service stops within 15 s
    expect(gw.spec.template!.spec.terminationGracePeriodSeconds).toBeGreaterThan(pause + 15);
  });

  it('gives every pod a startup probe long enough to wait out NATS and the stream setup before liveness counts', () => {
    for (const d of deployments) {
      const c = container(d);
      const s = c.startupProbe;
      expect({ deployment: d.metadata.name, path: s?.httpGet?.path, port: s?.httpGet?.port }).toEqual({ deployment: d.metadata.name, path: '/healthz', port: c.livenessProbe?.httpGet?.port });
      // the JetStream stream setup alone is retried for 60 s (bus README), NATS down at start is waited out
      expect({ deployment: d.metadata.name, seconds: (s?.periodSeconds ?? 10) * (s?.failureThreshold ?? 3) >= 120 }).toEqual({ deployment: d.metadata.name, seconds: true });
    }
  });

  it('probes /healthz and /readyz on the listener that serves them', () => {
    for (const d of deployments) {
      const c = container(d);
      const svc = table.services.find((t) => t.name === d.metadata.name)!;
      const healthPort = svc.ports[svc.health ?? ''];
      for (const [probe, path] of [[c.livenessProbe, '/healthz'], [c.readinessProbe, '/readyz']] as const) {
        expect(probe?.httpGet?.path).toBe(path);
        expect({ deployment: d.metadata.name, port: c.ports?.find((p) => p.name === probe?.httpGet?.port)?.containerPort }).toEqual({ deployment: d.metadata.name, port: healthPort });
      }
    }
  });

  it("waits for /readyz longer than its checks may take (Kubernetes' default timeout is 1 s)", () => {
    // each /readyz check is bounded (service-kit's health server, the gateway's own), and they run together
    const bounds = [
      /checkTimeoutMs \?\? (\d[\d_]*)/.exec(readFileSync(join(repoRoot, 'libs/service-kit/src/health.ts'), 'utf8'))?.[1],
      /READY_CHECK_TIMEOUT_MS = (\d[\d_]*)/.exec(readFileSync(join(repoRoot, 'apps/api-gateway/src/gateway.ts'), 'utf8'))?.[1],
    ].map((s) => Number((s ?? 'NaN').replaceAll('_', '')));
    expect(bounds.every((b) => b > 0)).toBe(true);
    const readyMs = Math.max(...bounds);
    for (const d of deployments) {
      const c = container(d);
      const r = c.readinessProbe!;
      const l = c.livenessProbe!;
      expect({ deployment: d.metadata.name, readinessWaits: (r.timeoutSeconds ?? 1) * 1000 > readyMs, withinPeriod: (r.timeoutSeconds ?? 1) <= (r.periodSeconds ?? 10) })
        .toEqual({ deployment: d.metadata.name, readinessWaits: true, withinPeriod: true });
      // liveness (no I/O) rides out GC pauses and a busy event loop: never stricter than readiness
      expect({ deployment: d.metadata.name, liveness: (l.timeoutSeconds ?? 1) >= (r.timeoutSeconds ?? 1), startup: (c.startupProbe?.timeoutSeconds ?? 1) > 1 })
        .toEqual({ deployment: d.metadata.name, liveness: true, startup: true });
    }
  });

  it('requests the memory a service uses at load, and sets production rate limits on the gateway (D24)', () => {
    for (const d of deployments.filter((x) => x.metadata.name !== 'echo-worker')) {
      const req = /^(\d+)Mi$/.exec(container(d).resources?.requests?.memory ?? '');
      // ~130 MB RSS per service at load (docs/performance.md, "Memory")
      expect({ deployment: d.metadata.name, mib: Number(req?.[1]) >= 150 }).toEqual({ deployment: d.metadata.name, mib: true });
    }
    const env = container(deployments.find((d) => d.metadata.name === 'api-gateway')!).env ?? [];
    expect(env.find((e) => e.name === 'API_RATE_LIMIT_RPS')?.value).toBe('30');
    expect(env.find((e) => e.name === 'API_RATE_LIMIT_BURST')?.value).toBe('50');
  });

  it("keeps the memory limit far enough above the image's old-space cap for the young generation, code and Buffers", () => {
    const cap = Number(/--max-old-space-size=(\d+)/.exec(dockerfile)?.[1]);
    expect(cap).toBeGreaterThan(0);
    // V8's heap limit is the old space plus the young generation (3 x 16 MB semi-spaces); code,
    // native memory and Buffers (the gateway's 64 concurrent 2 MiB bodies: 128 MiB) are outside it
    const headroom = 48 + 128;
    for (const d of deployments) {
      const limit = bytes(container(d).resources?.limits?.memory ?? '0') / 1024 ** 2;
      expect({ deployment: d.metadata.name, limitMiB: limit, enough: limit >= cap + headroom }).toEqual({ deployment: d.metadata.name, limitMiB: limit, enough: true });
    }
  });

  it('wires Services, the kernel address and disruption budgets to real pods and ports', () => {
    for (const svc of of('Service')) {
      const pods = podsOf(svc.spec.selector as Labels);
      expect({ service: svc.metadata.name, pods: pods.length }).toEqual({ service: svc.metadata.name, pods: 1 });
      for (const p of svc.spec.ports ?? []) expect(container(pods[0]!).ports?.map((c) => c.name)).toContain(p.targetPort);
    }
    const addr = configMap.data?.['SAFETY_KERNEL_ADDR'] ?? '';
    expect(parseGrpcAddress(addr)).toEqual([addr]);
    const m = /^dns:\/\/\/([^:]+):(\d+)$/.exec(addr);
    const kernelSvc = of('Service').find((s) => s.metadata.name === m?.[1]);
    expect(kernelSvc?.spec.clusterIP).toBe('None'); // headless: every kernel pod is an A record
    expect(kernelSvc?.spec.ports?.map((p) => p.port)).toContain(Number(m?.[2]));
    const budgets = of('PodDisruptionBudget');
    expect(budgets.length).toBeGreaterThanOrEqual(3);
    for (const pdb of budgets) {
      const pods = podsOf(pdb.spec.selector?.matchLabels ?? {});
      expect(pods).toHaveLength(1);
      // one pod at a time, whatever the replica count: minAvailable: 1 blocks every drain at 1 replica
      expect({ pdb: pdb.metadata.name, maxUnavailable: pdb.spec.maxUnavailable, minAvailable: pdb.spec.minAvailable }).toEqual({ pdb: pdb.metadata.name, maxUnavailable: 1, minAvailable: undefined });
    }
  });

  it('runs the kernels on the policy of its ConfigMap, which is the bundled config/safety.yaml', () => {
    const kernel = deployments.find((d) => d.metadata.name === 'safety-kernel')!;
    const c = container(kernel);
    const path = c.env?.find((e) => e.name === 'SAFETY_POLICY_PATH')?.value ?? '';
    expect(envNamesIn(join(repoRoot, 'apps/safety-kernel/src'))).toContain('SAFETY_POLICY_PATH');
    const mount = c.volumeMounts?.find((vm) => path.startsWith(`${vm.mountPath}/`));
    expect(mount?.readOnly).toBe(true);
    const cmName = kernel.spec.template!.spec.volumes?.find((v) => v.name === mount?.name)?.configMap?.name;
    const policy = named(docs, 'ConfigMap', cmName ?? '?').data?.[path.slice(mount!.mountPath.length + 1)];
    expect(policy).toBeDefined();
    expect(parse(policy!)).toEqual(parse(readFileSync(join(repoRoot, 'config/safety.yaml'), 'utf8')));
  });

  it('names the image cordum-ts, which the kustomization rewrites', () => {
    for (const d of deployments) expect(container(d).image).toMatch(/^cordum-ts:[\w.-]+$/);
    const k = parse(readFileSync(join(k8sDir, 'kustomization.yaml'), 'utf8')) as { resources: string[]; images: { name: string }[] };
    expect(k.images.map((i) => i.name)).toEqual(['cordum-ts']);
    expect(k.resources).toEqual(['cordum.yaml', 'nats.yaml', 'redis.yaml']);
  });
});

// What every pod of deploy/k8s shares: least privilege, and replicas spread over nodes.
describe('deploy/k8s pods', () => {
  it('run as the numeric non-root user of the image, read-only, without privileges or a service account token', () => {
    const user = /^USER (\d+)(?::(\d+))?$/m.exec(dockerfile);
    expect(user).not.toBeNull(); // a name (USER node) cannot be checked by runAsNonRoot
    for (const w of workloads) {
      const pod = w.spec.template!.spec;
      const where = `${w.kind} ${w.metadata.name}`;
      expect({ where, sc: pod.securityContext }).toEqual({ where, sc: expect.objectContaining({ runAsNonRoot: true, runAsUser: expect.any(Number), seccompProfile: { type: 'RuntimeDefault' } }) });
      expect({ where, token: pod.automountServiceAccountToken, serviceLinks: pod.enableServiceLinks }).toEqual({ where, token: false, serviceLinks: false });
      if (w.kind === 'Deployment') expect({ where, uid: pod.securityContext?.runAsUser, gid: pod.securityContext?.runAsGroup }).toEqual({ where, uid: Number(user?.[1]), gid: Number(user?.[2]) });
      for (const c of pod.containers) {
        expect({ where, container: c.name, sc: c.securityContext }).toEqual({ where, container: c.name, sc: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } } });
      }
    }
    for (const j of kindIn(clusterDocs, 'Job')) {
      const pod = j.spec.template!.spec;
      expect(pod.securityContext).toEqual(expect.objectContaining({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } }));
      for (const c of pod.containers) expect(c.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    }
  });

  it('can have a read-only root filesystem: the services write no files (but the opt-in exec log)', () => {
    const writers = /\b(writeFile|writeFileSync|appendFile|appendFileSync|createWriteStream|mkdir|mkdirSync|mkdtemp|mkdtempSync|copyFile|rename|renameSync)\s*\(/;
    const found: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) {
          if (e.name !== 'test' && e.name !== 'node_modules') walk(p);
        } else if (e.name.endsWith('.ts') && !e.name.endsWith('.spec.ts') && writers.test(readFileSync(p, 'utf8'))) found.push(p.slice(repoRoot.length + 1));
      }
    };
    walk(join(repoRoot, 'apps'));
    for (const lib of readdirSync(join(repoRoot, 'libs'))) if (lib !== 'testing') walk(join(repoRoot, 'libs', lib, 'src'));
    // echo-worker's WORKER_EXEC_LOG (tests only; the manifests do not set it)
    expect(found).toEqual(['apps/echo-worker/src/echo.ts']);
  });

  it('spread each workload over nodes: preferred for the stateless services, required for NATS and Redis', () => {
    expect(workloads.map((w) => w.metadata.name)).toEqual(expect.arrayContaining(['api-gateway', 'scheduler', 'safety-kernel', 'echo-worker', 'nats', 'redis', 'redis-cluster']));
    for (const w of workloads) {
      const pod = w.spec.template!.spec;
      const c = pod.topologySpreadConstraints?.find((t) => t.topologyKey === 'kubernetes.io/hostname');
      const where = `${w.kind} ${w.metadata.name}`;
      expect({ where, maxSkew: c?.maxSkew, when: c?.whenUnsatisfiable, own: labelsMatch(c?.labelSelector?.matchLabels ?? { none: 'none' }, w.spec.template!.metadata.labels) })
        .toEqual({ where, maxSkew: 1, when: w.kind === 'StatefulSet' ? 'DoNotSchedule' : 'ScheduleAnyway', own: true });
    }
    // a JetStream cluster of 3 loses its quorum with a node that holds two of its servers
    const nats = named(natsDocs, 'StatefulSet', 'nats');
    const anti = nats.spec.template!.spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.[0];
    expect(anti?.topologyKey).toBe('kubernetes.io/hostname');
    expect(labelsMatch(anti?.labelSelector?.matchLabels ?? { none: 'none' }, nats.spec.template!.metadata.labels)).toBe(true);
  });
});

describe('deploy/k8s/nats.yaml', () => {
  const sts = named(natsDocs, 'StatefulSet', 'nats');
  const c = firstContainer(sts);
  const conf = named(natsDocs, 'ConfigMap', sts.spec.template!.spec.volumes!.find((v) => v.configMap)!.configMap!.name).data!['nats.conf']!;
  const port = (name: string) => c.ports?.find((p) => p.name === name)?.containerPort;
  const headless = named(natsDocs, 'Service', sts.spec.serviceName ?? '?');
  const block = (name: string) => new RegExp(`^${name} \\{\\n([\\s\\S]*?)^\\}`, 'm').exec(conf)?.[1] ?? '';
  const setting = (text: string, key: string) => new RegExp(`^\\s*${key}:\\s*(\\S+)\\s*$`, 'm').exec(text)?.[1];

  it('is a 3-node JetStream cluster whose routes name every pod through the headless Service', () => {
    expect(sts.spec.replicas).toBe(3);
    expect(sts.spec.podManagementPolicy).toBe('Parallel');
    expect(headless.spec.clusterIP).toBe('None');
    // a node must reach the others (DNS) before it can be ready
    expect(headless.spec.publishNotReadyAddresses).toBe(true);
    expect(labelsMatch(headless.spec.selector as Labels, sts.spec.template!.metadata.labels)).toBe(true);
    const cluster = block('cluster');
    expect(setting(cluster, 'listen')).toBe(`0.0.0.0:${port('cluster')}`);
    const routes = [...cluster.matchAll(/^\s*(nats:\/\/\S+)\s*$/gm)].map((m) => m[1]);
    expect(routes).toEqual([0, 1, 2].map((i) => `nats://${sts.metadata.name}-${i}.${headless.metadata.name}:${port('cluster')}`));
    expect(setting(conf, 'listen')).toBe(`0.0.0.0:${port('client')}`);
    expect(setting(conf, 'http')).toBe(`0.0.0.0:${port('monitor')}`);
    // the client port is CONTRACT's NATS default, and cordum-env's NATS_URL names the client Service
    expect(port('client')).toBe(4222);
    const client = named(natsDocs, 'Service', 'nats');
    expect(client.spec.ports).toEqual([{ name: 'client', port: 4222, targetPort: 'client' }]);
    expect(named(docs, 'ConfigMap', 'cordum-env').data?.['NATS_URL']).toBe(`nats://${client.metadata.name}:4222`);
  });

  it('keeps JetStream on a volume of each pod, with room for CORDUM_SYS (1 GiB per replica)', () => {
    const js = block('jetstream');
    const streams = readFileSync(join(repoRoot, 'libs/bus/src/streams.ts'), 'utf8');
    expect(streams).toMatch(/const GIB = 1024 \* 1024 \* 1024;/);
    expect(streams).toMatch(/max_bytes: GIB,/);
    const store = setting(js, 'store_dir') ?? '';
    const dataMount = c.volumeMounts?.find((m) => store.startsWith(`${m.mountPath}/`) || store === m.mountPath);
    const claim = sts.spec.volumeClaimTemplates?.find((v) => v.metadata.name === dataMount?.name);
    expect(claim).toBeDefined();
    const maxFile = bytes(setting(js, 'max_file_store') ?? '0');
    expect(maxFile).toBeGreaterThanOrEqual(2 * 1024 ** 3);
    expect(bytes(claim!.spec.resources.requests.storage)).toBeGreaterThan(maxFile);
  });

  it('defines every variable its config names, and nats-server takes the config', () => {
    const vars = [...new Set([...conf.matchAll(/:\s*\$([A-Z_]+)\s*$/gm)].map((m) => m[1]!))];
    expect(vars).toEqual(expect.arrayContaining(['POD_NAME', 'CLIENT_ADVERTISE', 'CLUSTER_ADVERTISE']));
    const env: Record<string, string> = {};
    for (const e of c.env ?? []) {
      if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.name') env[e.name] = `${sts.metadata.name}-0`;
      else if (e.value !== undefined) env[e.name] = e.value.replace(/\$\(([A-Z_]+)\)/g, (_, n: string) => env[n] ?? '');
    }
    for (const v of vars) expect({ variable: v, defined: env[v] !== undefined }).toEqual({ variable: v, defined: true });
    // clients reconnect to the other members by the names the servers advertise
    expect(env['CLIENT_ADVERTISE']).toBe(`${sts.metadata.name}-0.${headless.metadata.name}:${port('client')}`);
    expect(env['CLUSTER_ADVERTISE']).toBe(`${sts.metadata.name}-0.${headless.metadata.name}:${port('cluster')}`);
    const dir = mkdtempSync(join(tmpdir(), 'cordum-k8s-nats-'));
    try {
      writeFileSync(join(dir, 'nats.conf'), conf);
      const r = spawnSync('nats-server', ['-t', '-c', join(dir, 'nats.conf')], { env: { ...process.env, ...env }, encoding: 'utf8' });
      expect({ status: r.status, out: `${r.stdout}${r.stderr}` }).toEqual({ status: 0, out: expect.stringContaining('is valid') });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('probes the monitoring port, lets lame duck mode finish, and loses at most one node to a disruption', () => {
    for (const p of [c.startupProbe, c.livenessProbe, c.readinessProbe]) expect(c.ports?.find((x) => x.name === p?.httpGet?.port)?.containerPort).toBe(8222);
    const seconds = (s: string | undefined) => Number(/^(\d+)s$/.exec(s ?? '')?.[1]);
    const lameDuck = seconds(setting(conf, 'lame_duck_duration')) + seconds(setting(conf, 'lame_duck_grace_period'));
    expect(c.lifecycle?.preStop?.exec?.command).toEqual(['/nats-server', '--signal', `ldm=${c.args?.[c.args.indexOf('--pid') + 1]}`]);
    expect(sts.spec.template!.spec.terminationGracePeriodSeconds).toBeGreaterThan(lameDuck);
    const pdb = named(natsDocs, 'PodDisruptionBudget', 'nats');
    expect(pdb.spec.maxUnavailable).toBe(1);
    expect(labelsMatch(pdb.spec.selector?.matchLabels ?? {}, sts.spec.template!.metadata.labels)).toBe(true);
  });
});

describe('deploy/k8s/redis.yaml and the Redis Cluster component', () => {
  const sts = named(redisDocs, 'StatefulSet', 'redis');
  const cm = (list: Doc[], s: Doc) => named(list, 'ConfigMap', s.spec.template!.spec.volumes!.find((v) => v.configMap)!.configMap!.name).data!;
  const conf = cm(redisDocs, sts)['redis.conf']!;
  const csts = named(clusterDocs, 'StatefulSet', 'redis-cluster');
  const cfiles = cm(clusterDocs, csts);
  const component = parse(readFileSync(join(k8sDir, 'redis-cluster/kustomization.yaml'), 'utf8')) as {
    kind: string; resources: string[]; patches: { patch: string }[]; secretGenerator?: unknown;
  };

  it("persists every write (AOF, appendfsync always) on a volume, with services.json's redisArgs", () => {
    for (const [what, text, s] of [['redis', conf, sts], ['redis-cluster', cfiles['redis.conf']!, csts]] as const) {
      const d = redisDirectives(text);
      expect({ what, appendonly: d.get('appendonly'), appendfsync: d.get('appendfsync') }).toEqual({ what, appendonly: 'yes', appendfsync: 'always' });
      for (let i = 0; i < table.redisArgs.length; i += 2) {
        const name = table.redisArgs[i]!.replace(/^--/, '');
        expect({ what, name, value: d.get(name) }).toEqual({ what, name, value: table.redisArgs[i + 1] });
      }
      // noeviction needs a maxmemory, below the container's limit (else the kernel kills a full Redis)
      const max = bytes(d.get('maxmemory') ?? '0');
      expect(max).toBeGreaterThan(0);
      expect(max).toBeLessThan(bytes(firstContainer(s).resources?.limits?.memory ?? '0'));
      const dir = d.get('dir') ?? '';
      const mount = firstContainer(s).volumeMounts?.find((m) => m.mountPath === dir);
      expect(s.spec.volumeClaimTemplates?.map((v) => v.metadata.name)).toContain(mount?.name);
      expect({ what, port: d.get('port'), containerPort: firstContainer(s).ports?.find((p) => p.name === 'redis')?.containerPort }).toEqual({ what, port: '6379', containerPort: 6379 });
    }
    expect(redisDirectives(cfiles['redis.conf']!).get('cluster-enabled')).toBe('yes');
    expect(named(redisDocs, 'Service', 'redis').spec.ports).toEqual([{ name: 'redis', port: 6379, targetPort: 'redis' }]);
  });

  it('runs as its manifest says: redis-server takes the config and requires the password', async () => {
    const c = firstContainer(sts);
    expect(c.command?.slice(0, 2)).toEqual(['sh', '-c']);
    const password = 'k8s-manifest-test';
    const { redis, stop } = await runManifestRedis(c.command!, { 'redis.conf': conf }, password);
    try {
      const get = async (name: string) => ((await redis.config('GET', name)) as string[])[1];
      expect(await get('appendonly')).toBe('yes');
      expect(await get('appendfsync')).toBe('always');
      expect(await get('maxmemory-policy')).toBe('noeviction');
      expect(await get('hash-max-listpack-value')).toBe('256');
      expect(await get('save')).toBe('');
      expect(await get('requirepass')).toBe(password);
    } finally {
      await closeRedis(redis);
      await stop();
    }
  });

  it('runs a cluster node as its manifest says: it requires the password and sends it to its master', async () => {
    const c = firstContainer(csts);
    expect(c.command).toEqual(['sh', '/etc/redis/start.sh']);
    const password = 'k8s-cluster-test';
    const { redis, stop } = await runManifestRedis(c.command!, cfiles, password);
    try {
      const get = async (name: string) => ((await redis.config('GET', name)) as string[])[1];
      expect(await get('cluster-enabled')).toBe('yes');
      expect(await get('appendfsync')).toBe('always');
      expect(await get('maxmemory-policy')).toBe('noeviction');
      expect(await get('requirepass')).toBe(password);
      expect(await get('masterauth')).toBe(password);
    } finally {
      await closeRedis(redis);
      await stop();
    }
  });

  it("is a 6-node cluster the Job creates with a replica per master, which the services find through REDIS_CLUSTER_ADDRESSES", () => {
    expect(csts.spec.replicas).toBe(6);
    const svc = named(clusterDocs, 'Service', csts.spec.serviceName ?? '?');
    expect({ clusterIP: svc.spec.clusterIP, notReady: svc.spec.publishNotReadyAddresses }).toEqual({ clusterIP: 'None', notReady: true });
    expect(labelsMatch(svc.spec.selector as Labels, csts.spec.template!.metadata.labels)).toBe(true);
    const bus = firstContainer(csts).ports?.find((p) => p.name === 'bus')?.containerPort;
    expect(bus).toBe(6379 + 10000); // Redis's default cluster bus port
    const pods = Array.from({ length: 6 }, (_, i) => `${csts.metadata.name}-${i}.${svc.metadata.name}`);
    // the Job's script: the six names, then --cluster create ... --cluster-replicas 1
    const create = cfiles['create.sh']!;
    expect(create).toContain('for i in 0 1 2 3 4 5; do hosts="$hosts redis-cluster-$i.redis-cluster"; done');
    expect(create).toMatch(/redis-cli --cluster create .* --cluster-replicas 1 --cluster-yes/);
    expect(cfiles['start.sh']).toContain('h="redis-cluster-$i.redis-cluster"');
    expect(`${csts.metadata.name}-$i.${svc.metadata.name}`).toBe('redis-cluster-$i.redis-cluster');
    const job = kindIn(clusterDocs, 'Job')[0]!;
    expect(firstContainer(job).command).toEqual(['sh', '/etc/redis/create.sh']);
    // the component: cordum-env gets the six seeds, the standalone Redis goes, REDIS_URL stays defined
    expect(component.kind).toBe('Component');
    expect(component.resources).toEqual(['redis-cluster.yaml']);
    const patches = component.patches.map((p) => parse(p.patch) as { $patch?: string; kind: string; metadata: { name: string }; data?: Record<string, string> });
    const env = patches.find((p) => p.kind === 'ConfigMap' && p.metadata.name === 'cordum-env');
    expect(env?.data?.['REDIS_CLUSTER_ADDRESSES']?.split(',')).toEqual(pods.map((p) => `${p}:6379`));
    expect(commonEnv.has('REDIS_CLUSTER_ADDRESSES')).toBe(true);
    const deleted = patches.filter((p) => p.$patch === 'delete').map((p) => `${p.kind}/${p.metadata.name}`).sort();
    expect(deleted).toEqual(redisDocs.map((d) => `${d.kind}/${d.metadata.name}`).sort());
    // The password: the nodes, the Job and the services take it from the secret cordum-redis,
    // which the component's header creates (the services' REDIS_URL with the same password).
    expect(component.secretGenerator).toBeUndefined();
    for (const w of [csts, job]) {
      const auth = firstContainer(w).env?.find((e) => e.name === 'REDISCLI_AUTH')?.valueFrom?.secretKeyRef;
      expect({ workload: w.metadata.name, auth }).toEqual({ workload: w.metadata.name, auth: { name: 'cordum-redis', key: 'REDIS_PASSWORD' } });
    }
    const header = readFileSync(join(k8sDir, 'redis-cluster/kustomization.yaml'), 'utf8').replace(/\\\n#\s*/g, ' ');
    const secret = /kubectl create secret generic cordum-redis(.*)/.exec(header)?.[1] ?? '';
    expect(secret).toMatch(/--from-literal=REDIS_PASSWORD=\$P\b/);
    expect(secret).toMatch(new RegExp(`--from-literal=REDIS_URL=redis://:\\$P@${pods[0]!.replaceAll('.', '\\.')}:6379`));
    expect(named(clusterDocs, 'PodDisruptionBudget', 'redis-cluster').spec.maxUnavailable).toBe(1);
  });

  it('admit only the stack\'s pods to NATS and Redis, and every Cordum pod carries the label they admit', () => {
    const policies = [...kindIn(natsDocs, 'NetworkPolicy'), ...kindIn(redisDocs, 'NetworkPolicy'), ...kindIn(clusterDocs, 'NetworkPolicy')];
    expect(policies.map((p) => p.metadata.name).sort()).toEqual(['nats', 'redis', 'redis-cluster']);
    const admitted: Labels[] = [];
    for (const p of policies) {
      const target = workloads.find((w) => labelsMatch(p.spec.podSelector?.matchLabels ?? { none: 'none' }, w.spec.template!.metadata.labels));
      expect({ policy: p.metadata.name, selects: target?.metadata.name }).toEqual({ policy: p.metadata.name, selects: p.metadata.name });
      const ports = p.spec.ingress!.flatMap((i) => i.ports ?? []).map((x) => x.port);
      // every port the pods listen on, named as in the container
      expect(ports.sort()).toEqual(firstContainer(target!).ports!.map((x) => x.name).sort());
      for (const i of p.spec.ingress!) for (const f of i.from ?? []) admitted.push(f.podSelector?.matchLabels ?? {});
    }
    const pods = [...workloads, ...kindIn(clusterDocs, 'Job')].map((w) => ({ name: w.metadata.name, labels: w.spec.template!.metadata.labels }));
    for (const pod of pods) expect({ pod: pod.name, admitted: admitted.every((sel) => labelsMatch(sel, pod.labels)) }).toEqual({ pod: pod.name, admitted: true });
  });
});

describe("the Redis pods' readiness probe across a password rotation (real redis-server)", () => {
  // operations.md rotates the password with no restart: ACL SETUSER default >NEW, change the
  // secret, ACL SETUSER default <OLD. A container's env keeps the password it started with, so a
  // probe that logged in with REDISCLI_AUTH from the env failed from the last step on, on every
  // Redis pod (P128 review). The probe reads the mounted secret instead.
  let server: TestServer;
  let dir: string;
  beforeAll(async () => {
    server = await startRedis({ password: 'old-pw' });
    dir = mkdtempSync(join(tmpdir(), 'probe-'));
    // The probe's redis-cli has no -p (6379 in the pod): a wrapper points it at the test server.
    const cli = spawnSync('sh', ['-c', 'command -v redis-cli'], { encoding: 'utf8' }).stdout.trim();
    writeFileSync(join(dir, 'redis-cli'), `#!/bin/sh\nexec ${cli} -p ${server.port} "$@"\n`, { mode: 0o755 });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('passes before, during and after it, in redis.yaml and in the cluster component', () => {
    const probes = [named(redisDocs, 'StatefulSet', 'redis'), named(clusterDocs, 'StatefulSet', 'redis-cluster')].map((s) => {
      const c = firstContainer(s);
      // the secret's REDIS_PASSWORD, mounted read-only; the probe's command with the mount moved here
      const vol = s.spec.template!.spec.volumes?.find((v) => v.secret?.secretName === 'cordum-redis');
      expect({ sts: s.metadata.name, items: vol?.secret?.items }).toEqual({ sts: s.metadata.name, items: [{ key: 'REDIS_PASSWORD', path: 'REDIS_PASSWORD' }] });
      const mount = c.volumeMounts?.find((m) => m.name === vol?.name);
      expect(mount?.readOnly).toBe(true);
      const command = c.readinessProbe!.exec!.command.map((a) => a.replaceAll(`${mount!.mountPath}/`, `${dir}/`));
      return { sts: s.metadata.name, command };
    });
    const secretFile = (pw: string): void => replaceFileWhole(join(dir, 'REDIS_PASSWORD'), pw);
    // REDISCLI_AUTH as the container started with it: the old password, whatever happens after.
    const probe = (command: string[]): number | null => spawnSync(command[0]!, command.slice(1), { env: { PATH: `${dir}:${process.env['PATH'] ?? ''}`, REDISCLI_AUTH: 'old-pw' } }).status;
    const admin = (pw: string, ...args: string[]): string => spawnSync(join(dir, 'redis-cli'), args, { env: { REDISCLI_AUTH: pw }, encoding: 'utf8' }).stdout.trim();
    const all = (step: string): void => {
      for (const p of probes) expect({ step, sts: p.sts, exit: probe(p.command) }).toEqual({ step, sts: p.sts, exit: 0 });
    };
    secretFile('old-pw');
    all('before');
    expect(admin('old-pw', 'ACL', 'SETUSER', 'default', '>new-pw')).toBe('OK');
    all('both passwords');
    secretFile('new-pw');
    all('secret changed');
    expect(admin('new-pw', 'ACL', 'SETUSER', 'default', '<old-pw')).toBe('OK');
    all('old password gone');
    // and a wrong secret is not ready
    secretFile('wrong-pw');
    for (const p of probes) expect({ sts: p.sts, exit: probe(p.command) }).not.toEqual({ sts: p.sts, exit: 0 });
  });
});

describe('deploy/k8s/podmonitor.yaml', () => {
  const pm = monitorDocs[0]!;
  const deployments = kindIn(docs, 'Deployment');

  it('scrapes each service once, on a port that serves /metrics, keeping its own labels', () => {
    expect(pm.kind).toBe('PodMonitor');
    const endpoints = pm.spec.podMetricsEndpoints ?? [];
    for (const e of endpoints) expect({ port: e.port, path: e.path, honorLabels: e.honorLabels }).toEqual({ port: e.port, path: '/metrics', honorLabels: true });
    for (const d of deployments) {
      const labels = d.spec.template!.metadata.labels;
      expect(labelsMatch(pm.spec.selector?.matchLabels ?? { none: 'none' }, labels)).toBe(true);
      const scraped = (firstContainer(d).ports ?? []).filter((p) => endpoints.some((e) => e.port === p.name));
      expect({ deployment: d.metadata.name, scraped: scraped.length }).toEqual({ deployment: d.metadata.name, scraped: 1 });
      // /metrics: every health listener, and the gateway's metrics listener
      const svc = table.services.find((t) => t.name === d.metadata.name)!;
      const metricsPorts = [svc.ports[svc.health ?? ''], svc.ports['GATEWAY_METRICS_ADDR']].filter((p) => p !== undefined);
      if (d.metadata.name === 'api-gateway') expect(scraped[0]!.containerPort).toBe(svc.ports['GATEWAY_METRICS_ADDR']);
      expect(metricsPorts).toContain(scraped[0]!.containerPort);
      // the annotations for annotation-based scraping name the same port
      expect(d.spec.template!.metadata.annotations).toEqual({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(scraped[0]!.containerPort) });
    }
    // NATS and Redis pods carry the selected label, but no port of that name
    for (const w of workloads.filter((x) => x.kind === 'StatefulSet')) {
      expect((firstContainer(w).ports ?? []).filter((p) => endpoints.some((e) => e.port === p.name))).toEqual([]);
    }
  });

  it("gives every target the job CordumTargetDown selects `up` by", () => {
    const rules = parse(readFileSync(join(repoRoot, 'deploy/prometheus/cordum-alerts.yml'), 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
    const down = rules.groups.flatMap((g) => g.rules).find((r) => r.alert === 'CordumTargetDown');
    const job = /^up\{job="([^"]+)"\} == 0$/.exec(down?.expr ?? '')?.[1];
    expect(pm.spec.jobLabel).toBeDefined();
    for (const d of deployments) expect(d.spec.template!.metadata.labels[pm.spec.jobLabel!]).toBe(job);
  });
});

/** kubectl's built-in kustomize, where kubectl is installed (no cluster needed). */
const itWithKubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0 ? it : it.skip;

describe('deploy/k8s kustomizations', () => {
  const build = (dir: string): Doc[] => {
    const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`kubectl kustomize ${dir}: ${r.stderr}`);
    return parseAllDocuments(r.stdout).map((d) => d.toJS() as Doc);
  };
  const ids = (list: Doc[]) => list.map((d) => `${d.kind}/${d.metadata.name}`).sort();

  itWithKubectl('build the stack, and the stack on a Redis Cluster with the component', () => {
    expect(ids(build(k8sDir))).toEqual(ids([...docs, ...natsDocs, ...redisDocs]));
    const dir = mkdtempSync(join(tmpdir(), 'cordum-kustomize-'));
    try {
      // kustomize takes relative paths only
      const rel = relative(dir, k8sDir);
      writeFileSync(join(dir, 'kustomization.yaml'), `resources:\n  - ${rel}\ncomponents:\n  - ${rel}/redis-cluster\nimages:\n  - { name: cordum-ts, newName: registry.example/cordum-ts, newTag: "1.0.0" }\n`);
      const out = build(dir);
      // no Secret: cordum-redis (the nodes' password and REDIS_URL) is created by hand, as without the component
      expect(ids(out)).toEqual(ids([...docs, ...natsDocs, ...clusterDocs]));
      expect(named(out, 'ConfigMap', 'cordum-env').data?.['REDIS_CLUSTER_ADDRESSES']).toMatch(/^redis-cluster-0\.redis-cluster:6379,/);
      for (const d of kindIn(out, 'Deployment')) expect(firstContainer(d).image).toBe('registry.example/cordum-ts:1.0.0');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
