// No Docker engine runs here, so the Docker description of the stack is checked
// by parsing: every service, env var and port must agree with the code and with
// tools/stack/services.json (the table `npm start` runs from).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { parseGrpcAddress } from '@cordum/protocol';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { repoRoot, waitFor } from '@cordum/testing';
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
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', '.nx', '.cordum', '.git']));
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

// deploy/k8s/cordum.yaml: no cluster runs here, so, as for compose, the manifests are checked
// against services.json, the code's env names, the CONTRACT replica ranges and each other.
describe('deploy/k8s/cordum.yaml', () => {
  interface Port { name: string; containerPort: number }
  interface Probe { httpGet: { path: string; port: string }; periodSeconds?: number; failureThreshold?: number }
  interface EnvVar { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }
  interface Container {
    image: string; command: string[]; env?: EnvVar[]; ports?: Port[];
    envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
    livenessProbe?: Probe; readinessProbe?: Probe; startupProbe?: Probe; resources?: { limits?: { memory?: string } };
    lifecycle?: { preStop?: { exec?: { command: string[] } } };
  }
  interface Doc {
    kind: string; metadata: { name: string }; data?: Record<string, string>;
    spec: {
      replicas?: number; minAvailable?: number; clusterIP?: string;
      selector?: { matchLabels?: Record<string, string> } & Record<string, string | Record<string, string>>;
      ports?: { name: string; port: number; targetPort: string }[];
      template?: { metadata: { labels: Record<string, string> }; spec: { terminationGracePeriodSeconds?: number; containers: Container[] } };
    };
  }
  const docs = parseAllDocuments(readFileSync(join(repoRoot, 'deploy/k8s/cordum.yaml'), 'utf8')).map((d) => d.toJS() as Doc);
  const of = (kind: string) => docs.filter((d) => d.kind === kind);
  const deployments = of('Deployment');
  const configMap = of('ConfigMap')[0]!;
  const container = (d: Doc) => d.spec.template!.spec.containers[0]!;
  const matches = (sel: Record<string, string>, labels: Record<string, string>) => Object.entries(sel).every(([k, v]) => labels[k] === v);
  const podsOf = (sel: Record<string, string>) => deployments.filter((d) => matches(sel, d.spec.template!.metadata.labels));

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
    const secretKeys = ['CORDUM_API_KEY'];
    // The ConfigMap is shared, so each of its keys must be read by some service that loads it
    // (SAFETY_KERNEL_ADDR by the gateway and the scheduler; the kernel ignores it).
    const mapReaders = new Map<string, boolean>(Object.keys(configMap.data ?? {}).map((k) => [k, false]));
    for (const d of deployments) {
      const c = container(d);
      const known = new Set([...commonEnv, ...envNamesIn(join(repoRoot, 'apps', d.metadata.name, 'src'))]);
      if ((c.envFrom ?? []).some((e) => e.configMapRef?.name === configMap.metadata.name)) for (const k of mapReaders.keys()) if (known.has(k)) mapReaders.set(k, true);
      const fromSecret = (c.envFrom ?? []).some((e) => e.secretRef) ? secretKeys : [];
      for (const key of [...fromSecret, ...(c.env ?? []).map((e) => e.name)]) {
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
    }
    for (const [key, read] of mapReaders) expect({ configMapKey: key, read }).toEqual({ configMapKey: key, read: true });
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
      expect({ deployment: d.metadata.name, path: s?.httpGet.path, port: s?.httpGet.port }).toEqual({ deployment: d.metadata.name, path: '/healthz', port: c.livenessProbe?.httpGet.port });
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
        expect(probe?.httpGet.path).toBe(path);
        expect({ deployment: d.metadata.name, port: c.ports?.find((p) => p.name === probe?.httpGet.port)?.containerPort }).toEqual({ deployment: d.metadata.name, port: healthPort });
      }
    }
  });

  it('requests the memory a service uses at load, and sets production rate limits on the gateway (D24)', () => {
    for (const d of deployments.filter((x) => x.metadata.name !== 'echo-worker')) {
      const req = /^(\d+)Mi$/.exec((container(d).resources as { requests?: { memory?: string } } | undefined)?.requests?.memory ?? '');
      // ~130 MB RSS per service at load (docs/performance.md, "Memory")
      expect({ deployment: d.metadata.name, mib: Number(req?.[1]) >= 150 }).toEqual({ deployment: d.metadata.name, mib: true });
    }
    const env = container(deployments.find((d) => d.metadata.name === 'api-gateway')!).env ?? [];
    expect(env.find((e) => e.name === 'API_RATE_LIMIT_RPS')?.value).toBe('30');
    expect(env.find((e) => e.name === 'API_RATE_LIMIT_BURST')?.value).toBe('50');
  });

  it('keeps the memory limit above the image heap cap', () => {
    const cap = Number(/--max-old-space-size=(\d+)/.exec(readFileSync(join(repoRoot, 'deploy/Dockerfile'), 'utf8'))?.[1]);
    expect(cap).toBeGreaterThan(0);
    for (const d of deployments) {
      const limit = /^(\d+)Mi$/.exec(container(d).resources?.limits?.memory ?? '');
      expect({ deployment: d.metadata.name, above: Number(limit?.[1]) > cap }).toEqual({ deployment: d.metadata.name, above: true });
    }
  });

  it('wires Services, the kernel address and disruption budgets to real pods and ports', () => {
    for (const svc of of('Service')) {
      const pods = podsOf(svc.spec.selector as Record<string, string>);
      expect({ service: svc.metadata.name, pods: pods.length }).toEqual({ service: svc.metadata.name, pods: 1 });
      for (const p of svc.spec.ports ?? []) expect(container(pods[0]!).ports?.map((c) => c.name)).toContain(p.targetPort);
    }
    const addr = configMap.data?.['SAFETY_KERNEL_ADDR'] ?? '';
    expect(parseGrpcAddress(addr)).toEqual([addr]);
    const m = /^dns:\/\/\/([^:]+):(\d+)$/.exec(addr);
    const kernelSvc = of('Service').find((s) => s.metadata.name === m?.[1]);
    expect(kernelSvc?.spec.clusterIP).toBe('None'); // headless: every kernel pod is an A record
    expect(kernelSvc?.spec.ports?.map((p) => p.port)).toContain(Number(m?.[2]));
    for (const pdb of of('PodDisruptionBudget')) {
      const pods = podsOf(pdb.spec.selector?.matchLabels ?? {});
      expect(pods).toHaveLength(1);
      expect(pdb.spec.minAvailable).toBeLessThan(pods[0]!.spec.replicas!);
    }
  });
});
