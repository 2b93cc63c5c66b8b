// Pure routing (BEHAVIOURS §1.3, D40, D44, D48): no I/O, so it is unit-tested alone.
import { DIRECT_ID_RE, directSubject, type WorkerView } from './registry';
import type { PoolsConfig } from './routing-config';

export const OVERLOAD_RATIO = 0.9;
const PLACEMENT_PREFIX = 'placement.';

export interface RouteInput {
  topic: string;
  labels: Record<string, string>;
  requires: string[];
  workers: WorkerView[];
  pools: PoolsConfig;
  dispatchUntracked: boolean;
  /**
   * Every live worker, draining ones included (routeFor passes only the others as `workers`): a
   * draining worker still listens on the topic's subject, so untracked dispatch waits while one
   * serves it (P256). Defaults to `workers`.
   */
  known?: WorkerView[];
}

export type RouteDecision =
  | { kind: 'worker'; worker: WorkerView; subject: string; direct: boolean }
  /** Candidates exist but all are at ≥ 90 %: backpressure, not a schedule try (D48). */
  | { kind: 'overloaded'; candidates: number }
  | { kind: 'no_worker' }
  /** SCHEDULER_DISPATCH_UNTRACKED: publish to the topic for SDKs that never heartbeat. */
  | { kind: 'untracked'; subject: string };

/** Pools that may serve the topic, honouring pool `requires` against the job's `requires`. */
export function poolsForTopic(pools: PoolsConfig, topic: string, requires: string[]): string[] | null {
  const mapped = pools.topics[topic];
  if (!mapped) return null;
  return mapped.filter((p) => {
    const provides = pools.pools[p]?.requires ?? [];
    return requires.every((r) => provides.includes(r));
  });
}

export function satisfiesPlacement(w: WorkerView, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(labels)) {
    if (!k.startsWith(PLACEMENT_PREFIX)) continue;
    if (w.labels[k.slice(PLACEMENT_PREFIX.length)] !== v) return false;
  }
  return true;
}

/**
 * D48 + P32: the last heartbeat's active jobs less those whose results came since, plus our own
 * dispatches since and those on their way (P224).
 */
export function load(w: WorkerView): number {
  return Math.max(0, w.activeJobs - w.settled) + w.inFlight + (w.reserved ?? 0);
}

export function isOverloaded(w: WorkerView): boolean {
  return w.maxParallelJobs > 0 && load(w) >= OVERLOAD_RATIO * w.maxParallelJobs;
}

export function score(w: WorkerView): number {
  return load(w) + w.cpuLoad / 100;
}

/** D40 + D44: direct only when the worker listens on worker.<id>.jobs and the id is subject-safe. */
export function subjectFor(w: WorkerView, topic: string): { subject: string; direct: boolean } {
  const direct = directSubject(w.workerId);
  if (DIRECT_ID_RE.test(w.workerId) && w.readyTopics.includes(direct)) return { subject: direct, direct: true };
  return { subject: topic, direct: false };
}

/** NATS subject matching: `*` one token, `>` the rest (at least one token, and only as the last token). */
export function subjectMatches(pattern: string, subject: string): boolean {
  if (pattern === subject) return true;
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

/**
 * P253: whether a worker of a mapped pool can be sent the job. A worker whose handshake names the
 * job subjects it listens on (any besides its direct subject) must name one matching the topic:
 * else a dispatch to the topic subject reached another pool's worker or nobody (the attempt timed
 * out not started), and a direct dispatch ran a topic the worker never said it serves. A worker
 * whose handshake names none (not known yet, or an SDK that names only its direct subject or
 * other, non-job subjects) is taken on its pool, as before.
 */
export function servesTopic(w: WorkerView, topic: string): boolean {
  return !w.readyTopics.some(mayNameJobs) || listensOn(w, topic);
}

/** A subject that could match a job topic (`job.…`, or a pattern starting with a wildcard). */
function mayNameJobs(subject: string): boolean {
  const first = subject.split('.', 1)[0];
  return first === 'job' || first === '*' || first === '>';
}

/** P73: the worker's own heartbeat capabilities list each of the job's `requires` (no pool vouches for them). */
function hasCapabilities(w: WorkerView, requires: string[]): boolean {
  return requires.every((r) => w.capabilities.includes(r));
}

/** The worker's handshake names a subject matching the topic (NATS wildcards count). */
function listensOn(w: WorkerView, topic: string): boolean {
  return w.readyTopics.some((t) => subjectMatches(t, topic));
}

/**
 * P15: whether any live worker could serve `topic` at all, whatever a job's labels or requires
 * (overloaded ones count). A job waiting on a topic nobody serves is parked, not polled.
 */
export function topicServed(pools: PoolsConfig, workers: WorkerView[], topic: string): boolean {
  return candidates({ topic, labels: {}, requires: [], workers, pools, dispatchUntracked: false }).length > 0;
}

export function candidates(input: RouteInput): WorkerView[] {
  const { topic, workers } = input;
  const pools = poolsForTopic(input.pools, topic, input.requires);
  const eligible = workers.filter((w) => {
    if (pools) {
      if (pools.includes(w.pool)) return servesTopic(w, topic);
      // D40: a CAP node agent heartbeats with pool '' and names its topics in the handshake. It
      // belongs to no pool, so nothing says it meets the job's `requires`: only its own heartbeat
      // capabilities can (P73). Without this a job requiring `pii` went to any agent on the topic.
      return w.pool === '' && listensOn(w, topic) && hasCapabilities(w, input.requires);
    }
    // P253: an unmapped topic has no pool to vouch for the job's `requires`; the worker's own
    // heartbeat capabilities must list each one, as for a node agent (P73). An empty pools
    // section (a live `PUT {"pools": null}`) routed every job this way without any check.
    return ((w.pool === topic && servesTopic(w, topic)) || listensOn(w, topic)) && hasCapabilities(w, input.requires);
  });
  return eligible.filter((w) => satisfiesPlacement(w, input.labels));
}

/**
 * P253: SCHEDULER_DISPATCH_UNTRACKED publishes to the topic for SDKs that never heartbeat, so
 * nothing about the receiver is known: not for a job with `requires` or `placement.*` labels
 * (nothing can check them), nor while a live worker serves the topic but does not match the job
 * (that worker would take it from the topic subject).
 */
function untrackedAllowed(input: RouteInput): boolean {
  if (input.requires.length > 0 || Object.keys(input.labels).some((k) => k.startsWith(PLACEMENT_PREFIX))) return false;
  return !topicServed(input.pools, input.known ?? input.workers, input.topic);
}

export function route(input: RouteInput): RouteDecision {
  const all = candidates(input);
  const open = all.filter((w) => !isOverloaded(w));
  if (open.length === 0) {
    if (all.length > 0) return { kind: 'overloaded', candidates: all.length };
    return input.dispatchUntracked && untrackedAllowed(input) ? { kind: 'untracked', subject: input.topic } : { kind: 'no_worker' };
  }
  let best = open[0] as WorkerView;
  for (const w of open) {
    const d = score(w) - score(best);
    if (d < 0 || (d === 0 && w.workerId < best.workerId)) best = w;
  }
  return { kind: 'worker', worker: best, ...subjectFor(best, input.topic) };
}
