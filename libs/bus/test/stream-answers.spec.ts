// Bus.streamAnswers (decisions.md P263): the readiness check that tells a replica whose NATS
// socket is up but whose JetStream does not answer (a frozen server before the pings notice, a
// lost stream, a cluster node whose peers are gone) from one that can publish.
import { startNats, startNatsCluster, waitFor, type TestCluster, type TestServer } from '@cordum/testing';
import { connect, type NatsConnection } from 'nats';
import { Registry } from 'prom-client';
import { STREAM_SYS, connectBus, subjects, type Bus } from '../src';
import { hasQuorum } from '../src/bus';
import { enc, testLogger } from './helpers';

const TIMEOUT_MS = 1_000;

describe('hasQuorum: what counts as a stream that can store a publish', () => {
  const info = (cluster?: object) => ({ config: { name: STREAM_SYS }, state: {}, ...(cluster ? { cluster } : {}) });
  it.each([
    ['a standalone server (no cluster)', info(), true],
    ['a clustered R1 stream with its leader', info({ leader: 'n0' }), true],
    ['R3: the leader heard both replicas within 5 s', info({ leader: 'n0', replicas: [{ name: 'n1', current: true, active: 4e8 }, { name: 'n2', current: true, active: 9e8 }] }), true],
    ['R3: one replica heard, one silent for 12 s', info({ leader: 'n0', replicas: [{ name: 'n1', current: true, active: 4e8 }, { name: 'n2', current: false, active: 12e9 }] }), true],
    ['R3: both replicas heard though behind (not current: a busy stream)', info({ leader: 'n0', replicas: [{ name: 'n1', current: false, active: 2e7, lag: 40 }, { name: 'n2', current: false, active: 3e7, lag: 12 }] }), true],
    ['R3: the leader alone, both replicas silent for 6 s (still current: the flag lags)', info({ leader: 'n0', replicas: [{ name: 'n1', current: true, active: 6e9 }, { name: 'n2', current: true, active: 6e9 }] }), false],
    ['R3: a heard replica offline', info({ leader: 'n0', replicas: [{ name: 'n1', current: true, active: 1e8, offline: true }, { name: 'n2', current: false, active: 9e9 }] }), false],
    ['R3 without active (older servers): current decides', info({ leader: 'n0', replicas: [{ name: 'n1', current: true }, { name: 'n2', current: false }] }), true],
    ['R3: one replica never heard since the leader started (active 0, not current), the other silent', info({ leader: 'n0', replicas: [{ name: 'n1', current: false, active: 0 }, { name: 'n2', current: false, active: 9e9 }] }), false],
    ['R3: one replica current with active 0', info({ leader: 'n0', replicas: [{ name: 'n1', current: true, active: 0 }, { name: 'n2', current: false, active: 9e9 }] }), true],
    ['R5: the leader and one replica heard', info({ leader: 'n0', replicas: [{ name: 'n1', active: 1e8 }, { name: 'n2', active: 9e9 }, { name: 'n3', active: 9e9 }, { name: 'n4', active: 9e9 }] }), false],
    ['no leader', info({ replicas: [{ name: 'n1', current: true, active: 1e8 }, { name: 'n2', current: true, active: 1e8 }] }), false],
    ['an empty leader', info({ leader: '' }), false],
    ['an error answer', { error: { code: 503, err_code: 10008, description: 'stream not available' } }, false],
    ['not an object', 'nope', false],
  ])('%s', (_what, body, expected) => {
    expect(hasQuorum(body)).toBe(expected);
  });
});

describe('one nats-server', () => {
  let server: TestServer;
  let bus: Bus;
  let raw: NatsConnection;

  beforeAll(async () => {
    server = await startNats();
    bus = await connectBus({ servers: [server.url], name: 'bus-stream-answers', logger: testLogger(), registry: new Registry() });
    raw = await connect({ servers: server.url });
  });

  afterAll(async () => {
    await raw?.close();
    await bus?.close();
    await server?.stop();
  });

  it('is false before CORDUM_SYS exists and after it is deleted, true while it exists', async () => {
    const jsm = await raw.jetstreamManager();
    await jsm.streams.delete(STREAM_SYS).catch(() => undefined);
    expect(await bus.streamAnswers(TIMEOUT_MS)).toBe(false);
    await bus.ensureStreams();
    expect(await bus.streamAnswers(TIMEOUT_MS)).toBe(true);
    await jsm.streams.delete(STREAM_SYS);
    expect(bus.connected).toBe(true);
    expect(await bus.streamAnswers(TIMEOUT_MS)).toBe(false);
    await bus.ensureStreams();
    expect(await bus.streamAnswers(TIMEOUT_MS)).toBe(true);
  });

  it('is false within its timeout while the server is frozen and the connection still counts as up; true after SIGCONT', async () => {
    await bus.ensureStreams();
    await server.process.freeze();
    try {
      const started = Date.now();
      const answered = await bus.streamAnswers(TIMEOUT_MS);
      const tookMs = Date.now() - started;
      // The pings (every 5 s, two unanswered) have not noticed yet: only the request can tell.
      expect({ answered, connected: bus.connected }).toEqual({ answered: false, connected: true });
      expect(tookMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
    } finally {
      server.process.kill('SIGCONT');
    }
    await waitFor(() => bus.streamAnswers(TIMEOUT_MS), 10_000, { message: 'answers after SIGCONT' });
  });

  it('is false once the bus is closed', async () => {
    const other = await connectBus({ servers: [server.url], name: 'bus-stream-answers-2', logger: testLogger(), registry: new Registry() });
    expect(await other.streamAnswers(TIMEOUT_MS)).toBe(true);
    await other.close();
    expect(await other.streamAnswers(TIMEOUT_MS)).toBe(false);
  });
});

describe('a 3-node JetStream cluster', () => {
  let cluster: TestCluster;
  let bus: Bus | undefined;

  beforeAll(async () => {
    cluster = await startNatsCluster();
  });

  afterAll(async () => {
    await bus?.close();
    await cluster?.stop();
  });

  it('a node that lost both peers keeps its clients connected, and publishes to CORDUM_SYS and streamAnswers fail until a peer is back', async () => {
    const setup = await connectBus({ servers: cluster.addresses.split(','), name: 'bus-stream-answers-setup', logger: testLogger(), registry: new Registry() });
    try {
      await setup.ensureStreams();
    } finally {
      await setup.close();
    }
    // The survivor is the stream's leader, the harder case: nats-server 2.9 lets it answer stream
    // info naming itself leader for about 20 s after its peers are gone (their `active` grows past
    // 5 s first; `current: false` after about 10 s), then with no leader; a publish fails all along.
    const raw = await connect({ servers: cluster.addresses.split(',') });
    let leader: string | undefined;
    try {
      const jsm = await raw.jetstreamManager();
      leader = await waitFor(async () => {
        const c = (await jsm.streams.info(STREAM_SYS)).cluster;
        return (c?.replicas ?? []).filter((r) => r.current).length === 2 ? c?.leader : undefined;
      }, 20_000, { message: 'a leader and two current replicas' });
    } finally {
      await raw.close();
    }
    const s = cluster.nodes.findIndex((_n, i) => `n${i}` === leader);
    const survivor = cluster.nodes[s]!;
    const peers = cluster.nodes.filter((_n, i) => i !== s);
    bus = await connectBus({ servers: [survivor.url], name: 'bus-stream-answers-cluster', logger: testLogger(), registry: new Registry() });
    await waitFor(() => bus!.streamAnswers(TIMEOUT_MS), 30_000, { message: 'CORDUM_SYS answers with 3 nodes up' });

    for (const p of peers) p.process.kill('SIGKILL');
    await Promise.all(peers.map((p) => p.process.waitExit(5_000)));
    await waitFor(async () => !(await bus!.streamAnswers(TIMEOUT_MS)), 30_000, { message: 'no answer without a quorum' });
    expect(bus.connected).toBe(true);
    // What the readiness check stands for: a publish to the stream does not succeed either.
    const published = await Promise.race([
      bus.publish(subjects.submit, enc('no quorum'), { msgId: 'stream-answers:no-quorum' }).then(() => 'stored', () => 'failed'),
      new Promise<string>((r) => setTimeout(() => r('pending'), 3_000)),
    ]);
    expect(published).not.toBe('stored');

    const back = cluster.nodes.indexOf(peers[0]!);
    cluster.nodes[back] = await peers[0]!.restart();
    await waitFor(() => bus!.streamAnswers(TIMEOUT_MS), 60_000, { message: 'answers again with a quorum' });
  }, 150_000);
});
