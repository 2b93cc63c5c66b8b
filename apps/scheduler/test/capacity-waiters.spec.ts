import { CapacityWaiters } from '../src/capacity-waiters';

describe('CapacityWaiters (P225)', () => {
  it('gives the longest waiter of a served topic, each job once, and a job listed again keeps its place', () => {
    const w = new CapacityWaiters();
    w.add('job.a', 'a1');
    w.add('job.b', 'b1');
    w.add('job.a', 'a2');
    w.add('job.a', 'a1');
    expect(w.size()).toBe(3);
    expect(w.take((t) => t === 'job.a')).toBe('a1');
    expect(w.take((t) => t === 'job.a')).toBe('a2');
    expect(w.take((t) => t === 'job.a')).toBeUndefined();
    expect(w.take(() => false)).toBeUndefined();
    w.delete('job.b', 'b1');
    w.delete('job.b', 'nope');
    expect(w.size()).toBe(0);
  });

  it('takes from the topics a worker serves in turn', () => {
    const w = new CapacityWaiters();
    for (const id of ['a1', 'a2', 'a3']) w.add('job.a', id);
    for (const id of ['b1', 'b2']) w.add('job.b', id);
    const taken = Array.from({ length: 5 }, () => w.take(() => true));
    expect(taken).toEqual(['a1', 'b1', 'a2', 'b2', 'a3']);
  });

  it('is bounded: past 10,000 jobs of a topic the oldest hint goes, past 1,000 topics a new topic is not listed', () => {
    const w = new CapacityWaiters();
    for (let i = 0; i <= 10_000; i++) w.add('job.a', `a${i}`);
    expect(w.size()).toBe(10_000);
    expect(w.take(() => true)).toBe('a1');
    for (let i = 0; i < 1_000; i++) w.add(`job.t${i}`, 'x');
    // job.a is one of the 1,000: 999 more topics fit
    expect(w.size()).toBe(9_999 + 999);
    w.add('job.late', 'y');
    expect(w.take((t) => t === 'job.late')).toBeUndefined();
  });
});
