import { CapacityWaiters, type WaitingJob } from '../src/capacity-waiters';

const plain: WaitingJob = { labels: {}, requires: [] };
const gpu: WaitingJob = { labels: { 'placement.gpu': 'true' }, requires: [] };
const any = (): boolean => true;

describe('CapacityWaiters (P225)', () => {
  it('gives the longest waiter of a served topic, each job once, and a job listed again keeps its place', () => {
    const w = new CapacityWaiters();
    w.add('job.a', 'a1', plain);
    w.add('job.b', 'b1', plain);
    w.add('job.a', 'a2', plain);
    w.add('job.a', 'a1', plain);
    expect(w.size()).toBe(3);
    expect(w.take((t) => t === 'job.a')).toBe('a1');
    expect(w.take((t) => t === 'job.a')).toBe('a2');
    expect(w.take((t) => t === 'job.a')).toBeUndefined();
    expect(w.take(() => false)).toBeUndefined();
    w.delete('job.b', 'b1');
    w.delete('job.b', 'nope');
    expect(w.size()).toBe(0);
  });

  it('skips a waiter the freed worker cannot run (its placement or requires) for a younger one it can', () => {
    const w = new CapacityWaiters();
    w.add('job.a', 'needs-gpu', gpu);
    w.add('job.a', 'plain', plain);
    const cpuWorker = (_t: string, j: WaitingJob): boolean => j.labels['placement.gpu'] === undefined;
    expect(w.take(cpuWorker)).toBe('plain');
    expect(w.take(cpuWorker)).toBeUndefined();
    expect(w.take(any)).toBe('needs-gpu');
  });

  it('takes from the topics a worker serves in turn', () => {
    const w = new CapacityWaiters();
    for (const id of ['a1', 'a2', 'a3']) w.add('job.a', id, plain);
    for (const id of ['b1', 'b2']) w.add('job.b', id, plain);
    const taken = Array.from({ length: 5 }, () => w.take(any));
    expect(taken).toEqual(['a1', 'b1', 'a2', 'b2', 'a3']);
  });

  it('is bounded: past 10,000 jobs of a topic the oldest hint goes, past 1,000 topics the least recently served topic goes', () => {
    const w = new CapacityWaiters();
    for (let i = 0; i <= 10_000; i++) w.add('job.a', `a${i}`, plain);
    expect(w.size()).toBe(10_000);
    for (let i = 0; i < 999; i++) w.add(`job.t${i}`, 'x', plain);
    expect(w.take((t) => t === 'job.a')).toBe('a1');
    expect(w.size()).toBe(9_999 + 999);
    // job.a was served last (take moved it to the back): job.t0 is the stalest and goes
    w.add('job.late', 'y', plain);
    expect(w.size()).toBe(9_999 + 999);
    expect(w.take((t) => t === 'job.t0')).toBeUndefined();
    expect(w.take((t) => t === 'job.late')).toBe('y');
  });
});
