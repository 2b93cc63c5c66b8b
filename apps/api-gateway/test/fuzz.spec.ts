// Generated fuzz run: ≥ 500 malformed requests across every documented route
// (random bodies, wrong types, huge strings, bad ids, bad query params, bad
// headers). Every answer must be < 500, every non-2xx the JSON error
// envelope, and the gateway must still serve afterwards. Seeded, so a failure
// replays exactly (FUZZ_SEED=<n> to try another sequence).
import { request } from 'node:http';
import { seededRandom } from '@cordum/testing';
import { OPERATIONS } from '../src/http/openapi';
import { KEYS, call, startRig, type Rig } from './harness';

/** node:http (not fetch) so GET and DELETE can carry bodies too. */
function raw(base: string, method: string, path: string, headers: Record<string, string>, body: string | undefined): Promise<{ status: number; contentType: string; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method, headers: body === undefined ? headers : { ...headers, 'Content-Length': String(Buffer.byteLength(body)) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: Record<string, unknown> = {};
        try {
          parsed = text.length ? (JSON.parse(text) as Record<string, unknown>) : {};
        } catch {
          parsed = { raw: text.slice(0, 200) };
        }
        resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body: parsed });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

let rig: Rig;
beforeAll(async () => {
  rig = await startRig();
});
afterAll(async () => {
  await rig.stop();
});

const SEED = Number(process.env['FUZZ_SEED'] ?? 1337);
const rnd = seededRandom(SEED);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
const int = (n: number) => Math.floor(rnd() * n);

const ASCII = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~!$&\'()*+,;=@%/?# "<>\\^`{|}';
const str = (n: number) => Array.from({ length: n }, () => ASCII[int(ASCII.length)]).join('');

const BAD_IDS = ['', '..', '%2e%2e', 'a'.repeat(129), 'x'.repeat(5000), '%00', '%ZZ', 'null', 'undefined', '-1', "1' OR '1'='1", '{id}', '%F0%9F%92%A9', 'job:meta:{x}', '*', 'a%2Fb', '__proto__', 'constructor'];
const BAD_QUERY = ['limit=-1', 'limit=0', 'limit=99999999999', 'limit=1.5', 'limit=', 'limit[]=1', 'limit=1&limit=2', 'state=', 'state=RUNNING%00', 'state[x]=1', 'topic=job.', 'topic=' + 'j'.repeat(300), 'cursor=' + 'A'.repeat(600), 'cursor=%%%', 'cursor=eyJzIjoiYSJ9', 'include_offline=yes', 'scope=galaxy', 'scope_id=a%20b', 'team=' + 'x'.repeat(200), '__proto__[x]=1', 'a=%E0%A4%A'];

function randomJson(depth = 0): unknown {
  switch (int(depth > 3 ? 6 : 9)) {
    case 0:
      return null;
    case 1:
      return rnd() < 0.5;
    case 2:
      return pick([0, -1, 1e308, -1e-308, 2 ** 53 + 1, 3.14]);
    case 3:
      return str(int(40));
    case 4:
      return 'x'.repeat(pick([0, 1, 256, 257, 50_001, 70_000]));
    case 5:
      return [];
    case 6:
      return Array.from({ length: int(5) }, () => randomJson(depth + 1));
    default: {
      const keys = ['prompt', 'topic', 'labels', 'priority', 'context', 'deadline_ms', 'idempotency_key', 'tenant_id', 'data', 'revision', 'scope', 'scope_id', 'reason', 'role', 'ttl_seconds', 'expires_at', '__proto__', 'constructor', str(5)];
      const o: Record<string, unknown> = {};
      for (let i = 0; i < int(6); i++) o[pick(keys)] = randomJson(depth + 1);
      return o;
    }
  }
}

function randomBody(): string | undefined {
  switch (int(10)) {
    case 0:
      return undefined;
    case 1:
      return '{"prompt": "x", "topic": ';
    case 2:
      return str(int(100));
    case 3:
      return '['.repeat(5000);
    case 4:
      return JSON.stringify({ prompt: 'x', topic: 'job.echo', labels: Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`k${i}`, 'v'])) });
    case 5:
      return JSON.stringify({ prompt: 1, topic: ['job.echo'], priority: 'urgent', deadline_ms: -5 });
    default:
      return JSON.stringify(randomJson());
  }
}

function randomHeaders(): { key?: string; tenant?: string; headers: Record<string, string> } {
  const h: Record<string, string> = {};
  const r = rnd();
  let key: string | undefined = pick([KEYS.admin, KEYS.admin, KEYS.operator, KEYS.viewer, KEYS.star, KEYS.globex]);
  if (r < 0.08) key = undefined;
  else if (r < 0.14) key = str(int(40));
  else if (r < 0.18) h['Authorization'] = pick(['Bearer', 'Bearer ', 'Basic abc', `Bearer ${str(20)}`, 'Bearer a b c']);
  let tenant: string | undefined;
  const t = rnd();
  if (t < 0.1) tenant = pick(['', 'UPPER', 'a'.repeat(64), '-x', 'a b', '*', '..', 'globex', 'acme']);
  if (rnd() < 0.2) h['Content-Type'] = pick(['text/plain', 'application/xml', 'application/json; charset=latin1', 'application/json; charset=utf-16', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', '', 'application/vnd.api+json']);
  if (rnd() < 0.1) h['Idempotency-Key'] = pick(['', 'a b', 'x'.repeat(300), str(10)]);
  if (rnd() < 0.05) h['Content-Encoding'] = pick(['gzip', 'br', 'identity', 'bogus']);
  if (rnd() < 0.05) h['X-Request-ID'] = str(200);
  return { key, tenant, headers: h };
}

function fillPath(path: string): string {
  return path.replace(/:([A-Za-z_]+)/g, () => (rnd() < 0.8 ? encodeURIComponent(pick(BAD_IDS)).replace(/%25/g, '%') : 'no-such-id'));
}

interface Outcome {
  route: string;
  status: number;
  code: unknown;
}

describe('fuzz', () => {
  it(`≥ 500 malformed requests (seed ${SEED}) → no 5xx, every error is the JSON envelope, gateway alive`, async () => {
    const ops = OPERATIONS.filter((o) => o.path !== '/metrics');
    const outcomes: Outcome[] = [];
    const bad: string[] = [];
    const TOTAL = 1000;
    const plan = Array.from({ length: TOTAL }, (_, i) => {
      const op = ops[i % ops.length] ?? ops[0]!;
      const q = rnd() < 0.5 ? `?${Array.from({ length: 1 + int(3) }, () => pick(BAD_QUERY)).join('&')}` : '';
      const h = randomHeaders();
      // Bodies on every method, even GET/DELETE: the parser must not care where garbage shows up.
      let body = op.method === 'GET' && rnd() < 0.7 ? undefined : randomBody();
      if (rnd() < 0.01) body = JSON.stringify({ prompt: 'x'.repeat(3 * 1024 * 1024), topic: 'job.echo' });
      return { method: op.method, route: `${op.method} ${op.path}`, path: fillPath(op.path) + q, body, ...h };
    });
    for (let i = 0; i < plan.length; i += 16) {
      const batch = plan.slice(i, i + 16);
      const rs = await Promise.all(
        batch.map(async (p) => {
          const headers: Record<string, string> = { ...p.headers };
          if (p.key !== undefined) headers['X-API-Key'] = p.key;
          if (p.tenant !== undefined) headers['X-Tenant-ID'] = p.tenant;
          if (p.body !== undefined && !('Content-Type' in headers) && rnd() < 0.8) headers['Content-Type'] = 'application/json';
          const r = await raw(rig.url, p.method, p.path, headers, p.body);
          return { p, r };
        }),
      );
      for (const { p, r } of rs) {
        outcomes.push({ route: p.route, status: r.status, code: r.body['code'] });
        const envelope = typeof r.body['error'] === 'string' && typeof r.body['code'] === 'string' && r.body['status'] === r.status && /application\/json/.test(r.contentType);
        const okStatus = r.status < 500 && (r.status < 300 || r.status === 426 || envelope);
        if (!okStatus || (r.status >= 400 && !envelope)) bad.push(`${p.method} ${p.path.slice(0, 120)} → ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
      }
    }
    expect(bad).toEqual([]);
    const fourxx = outcomes.filter((o) => o.status >= 400 && o.status < 500).length;
    expect(outcomes.length).toBe(TOTAL);
    expect(fourxx).toBeGreaterThanOrEqual(500);
    // Every documented route was hit.
    expect(new Set(outcomes.map((o) => o.route)).size).toBe(ops.length);
    // Still alive and still correct.
    expect((await call(rig.url, 'GET', '/healthz')).status).toBe(200);
    const ok = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'after fuzz', topic: 'job.echo' } });
    expect(ok.status).toBe(200);
  });
});
