// P325: whether a waiting duplicate (an idempotency key's, a concurrent DLQ retry's) may answer with
// the winner's job. It counts the settle window from the record's write, not the request's arrival
// (createdAt since P321), and a PENDING job a scheduler or an approval has written to has settled:
// those writes move updatedAt, and a duplicate of a job waiting for a worker waited up to 8 s.
import type { JobRecord } from '@cordum/job-store';
import { answersWaiter, SUBMIT_SETTLE_MS, stillPublishing } from '../src/submit/service';

const NOW = 1_800_000_000_000;
const job = (over: Partial<JobRecord> = {}): JobRecord =>
  ({ id: 'j', tenant: 'acme', topic: 'job.echo', state: 'PENDING', traceId: 't', priority: 'batch', labels: {}, attempts: 0, contextPtr: 'redis://ctx:j', principalId: 'p', riskTags: [], requires: [], createdAt: NOW - 10_000, updatedAt: NOW - 1_000, ...over }) as JobRecord;

it('a PENDING job written less than SUBMIT_SETTLE_MS ago is still publishing, whenever its request arrived', () => {
  expect(stillPublishing(job(), NOW)).toBe(true);
  expect(stillPublishing(job({ updatedAt: NOW - SUBMIT_SETTLE_MS }), NOW)).toBe(false);
  expect(stillPublishing(job({ state: 'DISPATCHED' }), NOW)).toBe(false);
});

it('a PENDING job a scheduler or an approval wrote to has settled, however recent the write', () => {
  expect(stillPublishing(job({ scheduleTries: 2, workerWait: { since: NOW - 5_000, tries: 2 } }), NOW)).toBe(false);
  expect(stillPublishing(job({ concurrency: { group: 'g', limit: 1 } }), NOW)).toBe(false);
  expect(stillPublishing(job({ approval: { status: 'approved' } as JobRecord['approval'] }), NOW)).toBe(false);
  expect(answersWaiter(job({ scheduleTries: 1 }), 'acme', NOW + 5_000, NOW)).toBe(true);
});

it("a job failed at submit is no answer; one that ran and failed bus_unavailable is; another tenant's never", () => {
  expect(answersWaiter(job({ state: 'FAILED', error: { code: 'bus_unavailable', message: 'x' } }), 'acme', NOW, NOW)).toBe(false);
  expect(answersWaiter(job({ state: 'FAILED', attempts: 1, error: { code: 'bus_unavailable', message: 'x' } }), 'acme', NOW, NOW)).toBe(true);
  expect(answersWaiter(job({ state: 'SUCCEEDED' }), 'globex', NOW, NOW)).toBe(false);
  // Still publishing: answered only SUBMIT_SETTLE_MS past the waiter's own deadline.
  expect(answersWaiter(job(), 'acme', NOW, NOW)).toBe(false);
  expect(answersWaiter(job(), 'acme', NOW - SUBMIT_SETTLE_MS - 1, NOW)).toBe(true);
});
