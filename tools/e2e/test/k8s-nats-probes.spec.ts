// deploy/k8s/nats.yaml's probes, asked of real nats-server 2.9.10 nodes (decisions.md P264). A
// StatefulSet rolls its next pod once the restarted one is Ready, and a pod is Ready only after
// its startup probe passes: the startup probe must wait until the node's stream replicas have
// caught up, or a rolling restart takes the next node down while this one is still behind and
// the stream has one current replica out of three (no quorum: every submit 503 until it catches
// up). Readiness, which also decides who gets client connections through the `nats` Service,
// stays the meta-leader contact: a stream without a quorum must not take every node out of the
// Service (its whole core NATS traffic with it).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { parseAllDocuments } from 'yaml';
import { repoRoot, startNatsCluster, waitFor, type TestNatsCluster } from '@cordum/testing';

interface Probe { httpGet?: { path?: string } }
interface Container { startupProbe?: Probe; livenessProbe?: Probe; readinessProbe?: Probe }
interface Doc { kind?: string; metadata?: { name?: string }; spec?: { template?: { spec?: { containers?: Container[] } } } }

const docs = parseAllDocuments(readFileSync(join(repoRoot, 'deploy/k8s/nats.yaml'), 'utf8')).map((d) => d.toJS() as Doc | null);
const sts = docs.find((d) => d?.kind === 'StatefulSet' && d.metadata?.name === 'nats');
const container = sts?.spec?.template?.spec?.containers?.[0];
const pathOf = (p: Probe | undefined): string => p?.httpGet?.path ?? '(none)';

const STREAM = 'PROBES';
/** Enough data that the restarted node needs a moment to catch up (about 120 MB). */
const MESSAGES = 30_000;
const PAYLOAD = new Uint8Array(4096);

let cluster: TestNatsCluster;
let nc: NatsConnection;

beforeAll(async () => {
  cluster = await startNatsCluster({ monitor: true });
  nc = await connect({ servers: cluster.addresses.split(','), name: 'k8s-nats-probes' });
}, 60_000);

afterAll(async () => {
  await nc?.close();
  await cluster?.stop();
});

async function status(node: number, path: string): Promise<number> {
  try {
    return (await fetch(`http://127.0.0.1:${cluster.monitorPorts[node]!}${path}`, { signal: AbortSignal.timeout(2_000) })).status;
  } catch {
    return 0;
  }
}

it('uses the full /healthz (streams current) for startup and the meta-leader contact for readiness', () => {
  expect({ startup: pathOf(container?.startupProbe), readiness: pathOf(container?.readinessProbe), liveness: pathOf(container?.livenessProbe) })
    .toEqual({ startup: '/healthz', readiness: '/healthz?js-server-only=true', liveness: '/healthz?js-enabled-only=true' });
});

it("a node restarted behind its stream passes the startup probe only once its replica is current; the readiness probe's path does not wait for that", async () => {
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: STREAM, subjects: ['probes.>'], num_replicas: 3 });
  await waitFor(async () => (await jsm.streams.info(STREAM)).cluster?.replicas?.filter((r) => r.current).length === 2, 20_000, { message: 'three current replicas' });
  const leader = (await jsm.streams.info(STREAM)).cluster?.leader;
  const victim = [0, 1, 2].find((i) => `n${i}` !== leader)!;

  // Published through the leader's node: the test's own connection may be on the victim, and its
  // publishes would wait out the reconnect (CI: 5 s publish timeouts on a loaded box).
  const pub = await connect({ servers: [cluster.nodes[[0, 1, 2].find((i) => `n${i}` === leader)!]!.url], name: 'k8s-nats-probes-pub' });
  try {
    cluster.nodes[victim]!.process.kill('SIGKILL');
    await cluster.nodes[victim]!.process.waitExit(5_000);
    const js = pub.jetstream({ timeout: 30_000 });
    for (let sent = 0; sent < MESSAGES; sent += 250) await Promise.all(Array.from({ length: 250 }, () => js.publish('probes.x', PAYLOAD)));
  } finally {
    await pub.close();
  }
  expect((await jsm.streams.info(STREAM)).state.messages).toBe(MESSAGES);

  cluster.nodes[victim] = await cluster.nodes[victim]!.restart();
  const startup = pathOf(container?.startupProbe);
  const readiness = pathOf(container?.readinessProbe);
  let readyWhileStarting = 0;
  await waitFor(async () => {
    const [s, r] = await Promise.all([status(victim, startup), status(victim, readiness)]);
    if (r === 200 && s !== 200) readyWhileStarting += 1;
    return s === 200;
  }, 60_000, { intervalMs: 20, message: `the startup probe's ${startup} answers 200 on n${victim}` });
  // The startup probe passed: the node's replica holds every message.
  const replica = (await jsm.streams.info(STREAM)).cluster?.replicas?.find((r) => r.name === `n${victim}`);
  expect({ current: replica?.current, lag: replica?.lag ?? 0 }).toEqual({ current: true, lag: 0 });
  // While it caught up, the meta-leader check (readiness) already answered 200: it could not have
  // held a rollout back.
  expect(readyWhileStarting).toBeGreaterThan(0);
}, 120_000);
