import { create, HandshakeSchema, HeartbeatSchema, WORKER_DRAINING_LABEL } from '@cordum/protocol';
import { WorkerRegistry, type WorkerView } from '../src/registry';
import { routeFor, routeReserving } from '../src/route-job';
import { candidates, load, route, type RouteInput } from '../src/routing';
import type { PoolsConfig } from '../src/routing-config';

function w(id: string, over: Partial<WorkerView> = {}): WorkerView {
  return { workerId: id, pool: 'default', activeJobs: 0, maxParallelJobs: 10, cpuLoad: 0, labels: {}, capabilities: [], lastHeartbeat: 0, readyTopics: [], startAck: false, inFlight: 0, settled: 0, ...over };
}

const pools: PoolsConfig = {
  topics: { 'job.echo': ['default'], 'job.gpu': ['gpu'], 'job.secure': ['secure', 'default'] },
  pools: { default: { requires: [] }, gpu: { requires: ['cuda'] }, secure: { requires: ['pii'] } },
};

function input(over: Partial<RouteInput>): RouteInput {
  return { topic: 'job.echo', labels: {}, requires: [], workers: [], pools, dispatchUntracked: false, ...over };
}

describe('routing', () => {
  it('routes a mapped topic only to workers of its pools', () => {
    const d = route(input({ workers: [w('a', { pool: 'gpu' }), w('b', { pool: 'default' })] }));
    expect(d).toMatchObject({ kind: 'worker', worker: { workerId: 'b' }, subject: 'job.echo', direct: false });
  });

  it('honours pool requires against the job requires', () => {
    const ws = [w('d', { pool: 'default' }), w('s', { pool: 'secure', activeJobs: 5 })];
    expect(candidates(input({ topic: 'job.secure', workers: ws })).map((x) => x.workerId).sort()).toEqual(['d', 's']);
    expect(candidates(input({ topic: 'job.secure', requires: ['pii'], workers: ws })).map((x) => x.workerId)).toEqual(['s']);
  });

  it('filters by placement.* labels and ignores other labels', () => {
    const ws = [w('eu', { labels: { region: 'eu' } }), w('us', { labels: { region: 'us' } })];
    expect(route(input({ labels: { 'placement.region': 'us', team: 'x' }, workers: ws }))).toMatchObject({ worker: { workerId: 'us' } });
    expect(route(input({ labels: { 'placement.region': 'ap' }, workers: ws }))).toEqual({ kind: 'no_worker' });
  });

  it('picks the lowest active_jobs + cpu_load/100, counting our in-flight dispatches (D48)', () => {
    const ws = [w('busy', { activeJobs: 2 }), w('hot', { activeJobs: 1, cpuLoad: 90 }), w('cool', { activeJobs: 1, cpuLoad: 10 })];
    expect(route(input({ workers: ws }))).toMatchObject({ worker: { workerId: 'cool' } });
    ws[2]!.inFlight = 2; // cool now has load 3
    expect(route(input({ workers: ws }))).toMatchObject({ worker: { workerId: 'hot' } });
  });

  it('skips workers at ≥ 90 % of max_parallel_jobs and reports overload when all are (D48)', () => {
    const ws = [w('full', { activeJobs: 9, maxParallelJobs: 10 }), w('ok', { activeJobs: 8, maxParallelJobs: 10, cpuLoad: 99 })];
    expect(route(input({ workers: ws }))).toMatchObject({ worker: { workerId: 'ok' } });
    ws[1]!.inFlight = 1;
    expect(route(input({ workers: ws }))).toEqual({ kind: 'overloaded', candidates: 2 });
  });

  it('D40: includes empty-pool workers whose ready_topics contain the topic', () => {
    const agent = w('agent', { pool: '', readyTopics: ['job.echo'] });
    const other = w('other', { pool: '', readyTopics: ['job.else'] });
    expect(candidates(input({ workers: [agent, other] })).map((x) => x.workerId)).toEqual(['agent']);
  });

  it('P73: an empty-pool agent serves a job with requires only if its capabilities list each one', () => {
    const plain = w('plain', { pool: '', readyTopics: ['job.secure'] });
    const able = w('able', { pool: '', readyTopics: ['job.secure'], capabilities: ['pii', 'other'] });
    const secure = w('s', { pool: 'secure' });
    expect(candidates(input({ topic: 'job.secure', requires: ['pii'], workers: [plain, able, secure] })).map((x) => x.workerId).sort()).toEqual(['able', 's']);
    expect(route(input({ topic: 'job.secure', requires: ['pii'], workers: [plain] }))).toEqual({ kind: 'no_worker' });
    expect(candidates(input({ topic: 'job.secure', workers: [plain] })).map((x) => x.workerId)).toEqual(['plain']);
  });

  it('unmapped topic: workers whose pool equals the topic or whose ready_topics contain it', () => {
    const ws = [w('p', { pool: 'job.custom' }), w('r', { pool: 'x', readyTopics: ['job.custom'] }), w('n', { pool: 'default' })];
    expect(candidates(input({ topic: 'job.custom', workers: ws })).map((x) => x.workerId).sort()).toEqual(['p', 'r']);
  });

  it('direct dispatch iff ready_topics list worker.<id>.jobs and the id is subject-safe (D40, D44)', () => {
    expect(route(input({ workers: [w('w-1', { readyTopics: ['worker.w-1.jobs'] })] }))).toMatchObject({ subject: 'worker.w-1.jobs', direct: true });
    expect(route(input({ workers: [w('w-1', { readyTopics: ['job.echo'] })] }))).toMatchObject({ subject: 'job.echo', direct: false });
    expect(route(input({ workers: [w('a.b', { readyTopics: ['worker.a.b.jobs'] })] }))).toMatchObject({ subject: 'job.echo', direct: false });
    expect(route(input({ workers: [w('x'.repeat(129), { readyTopics: [`worker.${'x'.repeat(129)}.jobs`] })] }))).toMatchObject({ direct: false });
  });

  it('no worker → no_worker, or untracked topic dispatch when enabled', () => {
    expect(route(input({}))).toEqual({ kind: 'no_worker' });
    expect(route(input({ dispatchUntracked: true }))).toEqual({ kind: 'untracked', subject: 'job.echo' });
  });

  it('P253: a mapped pool\'s worker whose handshake names other topics is no candidate; one naming none, or a matching wildcard, is', () => {
    const other = w('other', { readyTopics: ['job.two'] }); // listens on job.two only: a publish to job.echo reached someone else or nobody
    const otherDirect = w('od', { readyTopics: ['job.two', 'worker.od.jobs'] }); // would be sent a topic it never named
    const unknown = w('unknown'); // no handshake yet
    const directOnly = w('do', { readyTopics: ['worker.do.jobs'] });
    const wild = w('wild', { readyTopics: ['job.>'] });
    const star = w('star', { readyTopics: ['job.*'] });
    const named = candidates(input({ workers: [other, otherDirect, unknown, directOnly, wild, star] })).map((x) => x.workerId).sort();
    expect(named).toEqual(['do', 'star', 'unknown', 'wild']);
    expect(route(input({ workers: [other, otherDirect] }))).toEqual({ kind: 'no_worker' });
    expect(candidates(input({ topic: 'job.a.b', pools: { topics: { 'job.a.b': ['default'] }, pools: {} }, workers: [wild, star] })).map((x) => x.workerId)).toEqual(['wild']);
    // Subjects that cannot name a job (another SDK's control subjects) leave the worker taken on its pool.
    expect(candidates(input({ workers: [w('ctl', { readyTopics: ['sys.job.cancel', 'worker.ctl.jobs'] })] })).map((x) => x.workerId)).toEqual(['ctl']);
    // `>` only as the last token, as NATS has it.
    expect(candidates(input({ workers: [w('bad', { readyTopics: ['job.>.x'] })] }))).toEqual([]);
  });

  it('P253: wildcards count for node agents and unmapped topics too; a worker whose pool is the unmapped topic but whose handshake names others is no candidate', () => {
    const agent = w('agent', { pool: '', readyTopics: ['job.tools.>'] });
    expect(candidates(input({ topic: 'job.tools.x', pools: { topics: { 'job.tools.x': ['default'] }, pools: {} }, workers: [agent] })).map((x) => x.workerId)).toEqual(['agent']);
    const byPool = w('bp', { pool: 'job.custom', readyTopics: ['job.other', 'worker.bp.jobs'] });
    const byWild = w('bw', { pool: 'x', readyTopics: ['job.*'] });
    const byPoolOnly = w('bo', { pool: 'job.custom' });
    expect(candidates(input({ topic: 'job.custom', workers: [byPool, byWild, byPoolOnly] })).map((x) => x.workerId).sort()).toEqual(['bo', 'bw']);
  });

  it('P253: an unmapped topic serves a job with requires only on workers whose capabilities list each one', () => {
    const plain = w('plain', { pool: 'job.custom' });
    const able = w('able', { pool: 'x', readyTopics: ['job.custom'], capabilities: ['gpu'] });
    expect(candidates(input({ topic: 'job.custom', requires: ['gpu'], workers: [plain, able] })).map((x) => x.workerId)).toEqual(['able']);
    // An empty pools section (the live section deleted) routes every topic this way: requires still hold.
    const none: PoolsConfig = { topics: {}, pools: {} };
    expect(route(input({ topic: 'job.echo', requires: ['gpu'], pools: none, workers: [w('e', { pool: 'x', readyTopics: ['job.echo'] })] }))).toEqual({ kind: 'no_worker' });
  });

  it('P253: untracked dispatch only for a job nothing needs checking for, and only while no live worker serves the topic', () => {
    expect(route(input({ dispatchUntracked: true, requires: ['cuda'] }))).toEqual({ kind: 'no_worker' });
    expect(route(input({ dispatchUntracked: true, labels: { 'placement.zone': 'mars' } }))).toEqual({ kind: 'no_worker' });
    expect(route(input({ dispatchUntracked: true, labels: { team: 'a' } }))).toEqual({ kind: 'untracked', subject: 'job.echo' });
    // A live worker serves the topic but not this job's placement: it would take it from the topic subject.
    expect(route(input({ dispatchUntracked: true, labels: { 'placement.zone': 'mars' }, workers: [w('earth', { labels: { zone: 'earth' } })] }))).toEqual({ kind: 'no_worker' });
    expect(route(input({ dispatchUntracked: true, workers: [w('full', { activeJobs: 10 })] }))).toEqual({ kind: 'overloaded', candidates: 1 });
  });
});

describe('WorkerRegistry', () => {
  let now = 1_000_000;
  const reg = () => new WorkerRegistry({ ttlMs: 30_000, now: () => now });
  const hb = (id: string, over: Record<string, unknown> = {}) =>
    create(HeartbeatSchema, { workerId: id, pool: 'default', activeJobs: 1, maxParallelJobs: 4, cpuLoad: 12.5, labels: { zone: 'a' }, ...over });

  it('P73: cpu_load is a percentage, clamped to 0–100, so a worker cannot win every decision by reporting a negative load', () => {
    const r = reg();
    r.onHeartbeat(hb('neg', { cpuLoad: -1e30 }));
    r.onHeartbeat(hb('big', { cpuLoad: 1e9 }));
    expect(r.get('neg')?.cpuLoad).toBe(0);
    expect(r.get('big')?.cpuLoad).toBe(100);
  });

  // P339: after this replica's own NATS outage longer than the worker TTL every worker looked gone
  // until its next heartbeat, and leaders and intake parked or failed jobs as waiting for a worker.
  it('P339: a worker live when the bus went away keeps its remaining liveness after the bus is back; one already gone stays gone', () => {
    const r = reg();
    r.onHeartbeat(hb('w-live'));
    now += 40_000;
    r.onHeartbeat(hb('w-fresh'));
    now += 5_000; // w-live heard 45 s ago: gone already; w-fresh 5 s ago
    r.busLost();
    now += 60_000; // a minute without NATS
    r.busBack();
    expect(r.live().map((w) => w.workerId)).toEqual(['w-fresh']);
    // Its 25 s left at the outage's start are still left, then it goes like any silent worker.
    now += 24_000;
    expect(r.live().map((w) => w.workerId)).toEqual(['w-fresh']);
    now += 2_000;
    expect(r.live()).toEqual([]);
    // A second busBack without a busLost changes nothing.
    r.busBack();
    expect(r.live()).toEqual([]);
  });

  it('P339: an outage longer than ten worker TTLs, read by live() (metrics scrapes) meanwhile, forgets no worker', () => {
    const r = reg();
    r.onHeartbeat(hb('w-long'));
    now += 10_000;
    r.busLost();
    for (let i = 0; i < 12; i++) {
      now += 60_000; // a scrape a minute for 12 minutes
      expect(r.live()).toEqual([]);
    }
    r.busBack();
    expect(r.live().map((w) => w.workerId)).toEqual(['w-long']);
  });

  it('P243: with signed times, a heartbeat not newer than the last accepted one is ignored; the last time is kept a day, then forgotten', () => {
    const r = reg();
    expect(r.onHeartbeat(hb('w-signed'), 5_000)).toBe(true);
    const seen = r.get('w-signed')?.lastHeartbeat;
    now += 1_000;
    expect(r.onHeartbeat(hb('w-signed', { activeJobs: 3 }), 5_000)).toBe(false);
    expect(r.onHeartbeat(hb('w-signed', { activeJobs: 3 }), 4_000)).toBe(false);
    expect(r.get('w-signed')).toMatchObject({ lastHeartbeat: seen, activeJobs: 1 });
    expect(r.onHeartbeat(hb('w-signed', { activeJobs: 2 }), 5_001)).toBe(true);
    expect(r.get('w-signed')?.activeJobs).toBe(2);
    // Unsigned (no time given): always applied.
    expect(r.onHeartbeat(hb('w-plain'))).toBe(true);
    expect(r.onHeartbeat(hb('w-plain'))).toBe(true);
    // Past a day (pruned at most once a minute, by live()) the worker's last time is forgotten.
    now += 24 * 3_600_000 + 60_001;
    r.live();
    expect(r.onHeartbeat(hb('w-signed'), 5_001)).toBe(true);
  });

  it('P73: a handshake whose worker never heartbeats is forgotten after ten TTLs, like a dead worker', () => {
    const r = reg();
    r.onHandshake(create(HandshakeSchema, { componentId: 'ghost', readyTopics: ['job.echo'] }));
    r.onHandshake(create(HandshakeSchema, { componentId: 'real', readyTopics: ['job.echo'] }));
    now += 10 * 30_000 + 1;
    r.onHeartbeat(hb('real'));
    r.live();
    r.onHeartbeat(hb('ghost'));
    // The ghost's topics went with its handshake; the live worker's stayed.
    expect(r.get('ghost')?.readyTopics).toEqual([]);
    expect(r.get('real')?.readyTopics).toEqual(['job.echo']);
  });

  it("P301: a worker forgotten after ten TTLs of silence keeps its handshake a day: back, it is routable on the topics it named", () => {
    const r = reg();
    // a CAP node agent: pool '', its topics named once, in the handshake it sends at its start
    r.onHandshake(create(HandshakeSchema, { componentId: 'agent', readyTopics: ['job.agent'] }));
    r.onHeartbeat(hb('agent', { pool: '' }));
    now += 10 * 30_000 + 1; // a host asleep, a partition
    r.live();
    expect(r.get('agent')).toBeUndefined();
    now += 3_600_000;
    r.live();
    r.onHeartbeat(hb('agent', { pool: '' }));
    expect(r.get('agent')?.readyTopics).toEqual(['job.agent']);
    // a day after it was forgotten, its handshake goes too (P73: one per id ever seen, bounded)
    now += 10 * 30_000 + 1;
    r.live();
    now += 24 * 3_600_000 + 1;
    r.live();
    r.onHeartbeat(hb('agent', { pool: '' }));
    expect(r.get('agent')?.readyTopics).toEqual([]);
  });

  it('tracks heartbeats and expires workers after the 30 s TTL', () => {
    const r = reg();
    r.onHeartbeat(hb('w1'));
    expect(r.live().map((x) => x.workerId)).toEqual(['w1']);
    expect(r.get('w1')).toMatchObject({ pool: 'default', activeJobs: 1, maxParallelJobs: 4, cpuLoad: 12.5, labels: { zone: 'a' } });
    now += 29_999;
    expect(r.live()).toHaveLength(1);
    now += 2;
    expect(r.live()).toHaveLength(0);
    r.onHeartbeat(hb('w1'));
    expect(r.live()).toHaveLength(1);
  });

  it('merges handshake ready_topics and start_ack, in either order', () => {
    const r = reg();
    r.onHandshake(create(HandshakeSchema, { componentId: 'early', readyTopics: ['worker.early.jobs'], capabilities: { start_ack: true } }));
    r.onHeartbeat(hb('early'));
    expect(r.get('early')).toMatchObject({ readyTopics: ['worker.early.jobs'], startAck: true });
    r.onHeartbeat(hb('late'));
    r.onHandshake(create(HandshakeSchema, { componentId: 'late', readyTopics: ['job.echo'], capabilities: { start_ack: false } }));
    expect(r.get('late')).toMatchObject({ readyTopics: ['job.echo'], startAck: false });
    r.onHeartbeat(hb('late'));
    expect(r.get('late')?.readyTopics).toEqual(['job.echo']);
  });

  it('counts in-flight dispatches until the next heartbeat (D48)', () => {
    const r = reg();
    r.onHeartbeat(hb('w1'));
    r.noteDispatched('w1');
    r.noteDispatched('w1');
    r.noteDispatched('unknown');
    expect(r.get('w1')?.inFlight).toBe(2);
    r.onHeartbeat(hb('w1', { activeJobs: 3 }));
    expect(r.get('w1')).toMatchObject({ inFlight: 0, activeJobs: 3 });
  });

  it('P224: a slot reserved by routing counts at once, survives a heartbeat, and becomes in flight on commit or is given back on release (each once)', () => {
    const r = reg();
    r.onHeartbeat(hb('w1', { activeJobs: 0, maxParallelJobs: 2 }));
    const ctx = { workers: r, pools: () => pools, config: { dispatchUntracked: false } };
    const job = { topic: 'job.echo', labels: {}, requires: [] };
    const a = routeReserving(ctx, job);
    const b = routeReserving(ctx, job);
    expect([a.route.kind, b.route.kind]).toEqual(['worker', 'worker']);
    // two of two taken before either attempt went out: the third waits (D48)
    expect(routeReserving(ctx, job)).toEqual({ route: { kind: 'overloaded', candidates: 1 }, reservation: undefined });
    // a heartbeat (which cannot know of them) keeps the reservations
    r.onHeartbeat(hb('w1', { activeJobs: 0, maxParallelJobs: 2 }));
    expect(load(r.get('w1')!)).toBe(2);
    a.reservation?.commit();
    a.reservation?.commit();
    a.reservation?.release();
    expect(r.get('w1')).toMatchObject({ inFlight: 1, reserved: 1 });
    b.reservation?.release();
    b.reservation?.release();
    b.reservation?.commit();
    expect(r.get('w1')).toMatchObject({ inFlight: 1, reserved: 0 });
    expect(load(r.get('w1')!)).toBe(1);
    // a reservation on a worker that expired meanwhile is a no-op; one for an unknown worker too
    r.reserve('nobody').release();
    expect(r.get('nobody')).toBeUndefined();
  });

  it('frees an in-flight slot when the result of its job arrives, never below zero', () => {
    const r = reg();
    r.onHeartbeat(hb('w1', { maxParallelJobs: 2 }));
    r.noteDispatched('w1');
    r.noteDispatched('w1');
    r.noteFinished('w1');
    expect(r.get('w1')?.inFlight).toBe(1);
    r.noteFinished('w1');
    r.noteFinished('w1');
    r.noteFinished(undefined);
    expect(r.get('w1')?.inFlight).toBe(0);
  });

  it('P32: results beyond our in-flight count end jobs the heartbeat counted, so a burst the heartbeat caught stops reading as overload when it ends', () => {
    const r = reg();
    r.onHeartbeat(hb('w1', { activeJobs: 9, maxParallelJobs: 10 }));
    r.onHeartbeat(hb('w2', { activeJobs: 3, maxParallelJobs: 10 }));
    const routeNow = () => route(input({ workers: r.all() }));
    expect(routeNow()).toMatchObject({ worker: { workerId: 'w2' } });
    r.noteDispatched('w1'); // one of ours on top of the 9 it reported
    expect(load(r.get('w1')!)).toBe(10);
    for (let i = 0; i < 7; i++) r.noteFinished('w1');
    // ours first, then 6 of the 9 the heartbeat counted: 3 left, as w2
    expect(load(r.get('w1')!)).toBe(3);
    r.noteFinished('w1');
    expect(routeNow()).toMatchObject({ worker: { workerId: 'w1' } });
    // never below zero, and the next heartbeat replaces the estimate
    for (let i = 0; i < 5; i++) r.noteFinished('w1');
    expect(load(r.get('w1')!)).toBe(0);
    r.onHeartbeat(hb('w1', { activeJobs: 4, maxParallelJobs: 10 }));
    expect(r.get('w1')).toMatchObject({ activeJobs: 4, inFlight: 0, settled: 0 });
    expect(load(r.get('w1')!)).toBe(4);
  });

  it('P32: a worker_busy refusal frees only our own in-flight slot, not one the heartbeat counted', () => {
    const r = reg();
    r.onHeartbeat(hb('w1', { activeJobs: 10, maxParallelJobs: 10 }));
    r.noteDispatched('w1');
    r.noteFinished('w1', true);
    expect(load(r.get('w1')!)).toBe(10);
    r.noteFinished('w1', true);
    expect(load(r.get('w1')!)).toBe(10);
    r.noteFinished('w1');
    expect(load(r.get('w1')!)).toBe(9);
  });

  it('P34: a worker whose dispatch went unclaimed is routed around while another candidate has room, until it answers or one TTL passes', () => {
    const r = reg();
    // 'a' wins every tie; 'b' reports more load
    r.onHeartbeat(hb('a', { activeJobs: 0, maxParallelJobs: 10 }));
    r.onHeartbeat(hb('b', { activeJobs: 2, maxParallelJobs: 10 }));
    const ctx = { workers: r, pools: () => pools, config: { dispatchUntracked: false } };
    const job = { topic: 'job.echo', labels: {}, requires: [] };
    const routed = (avoid?: string) => { const d = routeFor(ctx, job, avoid); return d.kind === 'worker' ? d.worker.workerId : d.kind; };
    // sent before its last heartbeat: it was alive and heartbeating, and the dispatch never arrived
    const sentBefore = () => now - 1_000;
    expect(routed()).toBe('a');
    expect(r.noteUnclaimed('a', sentBefore())).toBe(true);
    expect(r.noteUnclaimed('a', sentBefore())).toBe(false); // already marked: the caller logs once
    expect(r.noteUnclaimed('unknown', sentBefore())).toBe(false);
    expect(routed()).toBe('b');
    // a heartbeat proves it runs, not that dispatches reach it
    r.onHeartbeat(hb('a', { activeJobs: 0, maxParallelJobs: 10 }));
    expect(routed()).toBe('b');
    // the only candidate with room still gets the job, as does an `avoid`ed one
    r.onHeartbeat(hb('b', { activeJobs: 9, maxParallelJobs: 10 }));
    expect(routed()).toBe('a');
    expect(routed('a')).toBe('a');
    r.onHeartbeat(hb('b', { activeJobs: 2, maxParallelJobs: 10 }));
    // its start ack, progress or result ends the mark
    r.noteAnswered('a');
    expect(routed()).toBe('a');
    r.noteUnclaimed('a', sentBefore());
    r.noteFinished('a', true); // a worker_busy refusal is an answer too
    expect(routed()).toBe('a');
    // and so does one TTL without one
    r.noteUnclaimed('a', sentBefore());
    now += 29_000;
    r.onHeartbeat(hb('a', { activeJobs: 0, maxParallelJobs: 10 }));
    r.onHeartbeat(hb('b', { activeJobs: 2, maxParallelJobs: 10 }));
    expect(routed()).toBe('b');
    now += 1_000;
    expect(routed()).toBe('a');
  });

  it('P256: untracked dispatch waits while a draining worker still serves the topic, and resumes once it has gone', () => {
    const r = reg();
    r.onHeartbeat(hb('leaving', { labels: { [WORKER_DRAINING_LABEL]: 'true' } }));
    const ctx = { workers: r, pools: () => pools, config: { dispatchUntracked: true } };
    const routed = () => routeFor(ctx, { topic: 'job.echo', labels: {}, requires: [] }).kind;
    // It listens on job.echo until it stops: a publish to the topic could reach it.
    expect(routed()).toBe('no_worker');
    now += 31_000; // its heartbeats stopped: gone
    expect(routed()).toBe('untracked');
  });

  it('P34: a worker silent since the unclaimed dispatch (frozen, cut off) is routed to again at its next heartbeat', () => {
    const r = reg();
    r.onHeartbeat(hb('a', { activeJobs: 0, maxParallelJobs: 10 }));
    r.onHeartbeat(hb('b', { activeJobs: 2, maxParallelJobs: 10 }));
    const ctx = { workers: r, pools: () => pools, config: { dispatchUntracked: false } };
    const routed = () => { const d = routeFor(ctx, { topic: 'job.echo', labels: {}, requires: [] }); return d.kind === 'worker' ? d.worker.workerId : d.kind; };
    now += 1_000;
    const sentAt = now; // after a's last heartbeat; it sends none until it wakes
    now += 2_000;
    expect(r.noteUnclaimed('a', sentAt)).toBe(true);
    expect(r.get('a')?.unclaimedSilent).toBe(true);
    r.onHeartbeat(hb('b', { activeJobs: 2, maxParallelJobs: 10 }));
    expect(routed()).toBe('b');
    now += 10_000;
    r.onHeartbeat(hb('a', { activeJobs: 0, maxParallelJobs: 10 })); // it woke
    expect(routed()).toBe('a');
    // a later unclaimed dispatch it had heartbeated after is not forgiven by the next heartbeat
    expect(r.noteUnclaimed('a', now - 1)).toBe(true);
    now += 1;
    r.onHeartbeat(hb('a', { activeJobs: 0, maxParallelJobs: 10 }));
    expect(routed()).toBe('b');
  });

  it('a worker whose last heartbeat says it is draining is never routed to, not even as the last candidate; its next normal heartbeat clears it', () => {
    const r = reg();
    r.onHeartbeat(hb('a', { activeJobs: 0, maxParallelJobs: 10 }));
    r.onHeartbeat(hb('b', { activeJobs: 2, maxParallelJobs: 10 }));
    const ctx = { workers: r, pools: () => pools, config: { dispatchUntracked: false } };
    const routed = (avoid?: string) => { const d = routeFor(ctx, { topic: 'job.echo', labels: {}, requires: [] }, avoid); return d.kind === 'worker' ? d.worker.workerId : d.kind; };
    expect(routed()).toBe('a');
    r.onHeartbeat(hb('a', { activeJobs: 1, maxParallelJobs: 10, labels: { [WORKER_DRAINING_LABEL]: 'true' } }));
    expect(r.get('a')?.draining).toBe(true);
    expect(routed()).toBe('b');
    expect(routed('b')).toBe('b'); // the fallback to an avoided worker never reaches a draining one
    r.onHeartbeat(hb('b', { activeJobs: 2, maxParallelJobs: 10, labels: { [WORKER_DRAINING_LABEL]: 'true' } }));
    expect(routed()).toBe('no_worker');
    r.onHeartbeat(hb('a', { activeJobs: 0, maxParallelJobs: 10 })); // restarted with the same id
    expect(routed()).toBe('a');
  });

  it('ignores heartbeats and handshakes without an id', () => {
    const r = reg();
    r.onHeartbeat(hb(''));
    r.onHandshake(create(HandshakeSchema, { componentId: '' }));
    expect(r.all()).toHaveLength(0);
  });
});
