import { topicMatches, type PolicyConstraintsSpec, type PolicyMatch, type PolicyRule, type PolicySnapshot, type VelocitySpec } from '@cordum/config-overlay';
import { JOB_TOPIC_RE, MAX_TOPIC_LENGTH } from '@cordum/protocol';
import { canonicalJson } from './canonical';

/** What the evaluator looks at, already extracted from the wire request. */
export interface CheckInput {
  jobId: string;
  tenant: string;
  topic: string;
  principalId: string;
  capability: string;
  riskTags: readonly string[];
  requires: readonly string[];
  labels: Readonly<Record<string, string>>;
  actorType: 'human' | 'service' | '';
}

export type Verdict = 'allow' | 'deny' | 'require_approval' | 'allow_with_constraints' | 'throttle';

export interface RuleTraceEntry {
  ruleId: string;
  matched: boolean;
  why: string;
}

export interface EvalResult {
  verdict: Verdict;
  /** Empty when the default decision applied. */
  ruleId: string;
  reason: string;
  snapshotId: string;
  constraints?: PolicyConstraintsSpec;
  retryAfterMs?: number;
  trace: RuleTraceEntry[];
  /**
   * True when a throttle rule's conditions held, so its velocity window was read
   * (whether or not it was over the limit). Such a result depends on Redis state,
   * not only on the request and snapshot, and must never be cached (D20).
   */
  velocityConsulted: boolean;
}

export interface VelocityQuery {
  ruleId: string;
  /** tenant, topic or principal value the window is keyed by. */
  keyKind: VelocitySpec['key'];
  keyValue: string;
  jobId: string;
  maxRequests: number;
  windowMs: number;
}

export interface VelocityOutcome {
  over: boolean;
  count: number;
  retryAfterMs: number;
}

/** Velocity windows (D20). `record` counts the job (once per job_id); `peek` must not write. */
export interface VelocityPort {
  record(q: VelocityQuery): Promise<VelocityOutcome>;
  peek(q: VelocityQuery): Promise<VelocityOutcome>;
}

/** `record` only for Check (D20); Evaluate/Explain/Simulate peek. */
export type VelocityMode = 'record' | 'peek';

const EMPTY_WINDOW: VelocityOutcome = { over: false, count: 0, retryAfterMs: 0 };

/**
 * The velocity a Simulate reads (P76): the live window of a candidate throttle rule only when the
 * active policy has that rule word for word (same id, match, velocity), so "would this be
 * throttled now" still answers for the rules in force. A candidate that reuses a rule id with a
 * wider match (another tenant's rule without its `tenants`) reads an empty window, not the counts
 * another tenant's jobs made. Never records.
 */
export function simulationVelocity(active: PolicySnapshot, candidate: PolicySnapshot, velocity: VelocityPort): VelocityPort {
  const inForce = new Map(active.policy.rules.map((r) => [r.id, canonicalJson(r)]));
  const live = new Set(candidate.policy.rules.filter((r) => inForce.get(r.id) === canonicalJson(r)).map((r) => r.id));
  const peek = (q: VelocityQuery): Promise<VelocityOutcome> => (live.has(q.ruleId) ? velocity.peek(q) : Promise.resolve(EMPTY_WINDOW));
  return { record: peek, peek };
}

/** Returns null when every condition holds, otherwise the first reason it does not. */
export function whyNotMatched(m: PolicyMatch, input: CheckInput): string | null {
  if (m.tenants?.length && !m.tenants.includes(input.tenant)) return `tenant '${input.tenant}' not in [${m.tenants.join(', ')}]`;
  if (m.topics?.length && !m.topics.some((p) => topicMatches(p, input.topic))) return `topic '${input.topic}' matches none of [${m.topics.join(', ')}]`;
  if (m.capabilities?.length && !m.capabilities.includes(input.capability))
    return `capability '${input.capability}' not in [${m.capabilities.join(', ')}]`;
  if (m.risk_tags?.length && !m.risk_tags.some((t) => input.riskTags.includes(t)))
    return `risk_tags [${input.riskTags.join(', ')}] contain none of [${m.risk_tags.join(', ')}]`;
  if (m.requires?.length) {
    const missing = m.requires.filter((r) => !input.requires.includes(r));
    if (missing.length) return `requires missing [${missing.join(', ')}]`;
  }
  if (m.labels) {
    // A label the job does not carry reads as '' (P207, as Cordum's map lookup does): a rule
    // `labels: {reviewed: ""}` matches a job without `reviewed` as well as one with it empty.
    for (const [k, v] of Object.entries(m.labels)) {
      const has = Object.hasOwn(input.labels, k);
      const got = has ? (input.labels[k] ?? '') : '';
      if (got !== v) return `label ${k} ${has ? `'${got}'` : 'absent'} != '${v}'`;
    }
  }
  if (m.actor_types?.length && !m.actor_types.some((a) => a === input.actorType))
    return `actor_type '${input.actorType}' not in [${m.actor_types.join(', ')}]`;
  return null;
}

function velocityKeyValue(spec: VelocitySpec, input: CheckInput): string {
  switch (spec.key) {
    case 'tenant':
      return input.tenant;
    case 'topic':
      return input.topic;
    case 'principal':
      // A principal id names someone within a tenant (API keys set it freely): alice of acme
      // and alice of globex have a window each, so one tenant cannot use up another's (P76).
      return `${input.tenant}/${input.principalId}`;
  }
}

function ruleResult(rule: PolicyRule, snapshotId: string, trace: RuleTraceEntry[], velocityConsulted: boolean): EvalResult {
  const verdict: Verdict = rule.decision;
  const res: EvalResult = { verdict, ruleId: rule.id, reason: rule.reason ?? `rule ${rule.id}: ${verdict}`, snapshotId, trace, velocityConsulted };
  if (rule.constraints) res.constraints = rule.constraints;
  return res;
}

/** Verdicts that let the job go now: only these use a place in a velocity window (P332). */
const RUNS_NOW: ReadonlySet<Verdict> = new Set<Verdict>(['allow', 'allow_with_constraints']);

/**
 * First match wins; a throttle rule under its limit does not match (D20). In `record` mode (Check)
 * the windows are read first and written only once the verdict lets the job go (P332): a job
 * throttled by a later rule, denied, or held for approval used to take a place in every window it
 * passed, though it did not run. A window filled by another job between the read and the write
 * throttles this one after all (its places already taken stay its own: a re-check adds nothing).
 */
export async function evaluatePolicy(snapshot: PolicySnapshot, input: CheckInput, velocity: VelocityPort, mode: VelocityMode): Promise<EvalResult> {
  if (mode === 'peek') return evaluateRules(snapshot, input, velocity, []);
  const passed: { rule: PolicyRule; query: VelocityQuery }[] = [];
  const res = await evaluateRules(snapshot, input, velocity, passed);
  if (!RUNS_NOW.has(res.verdict)) return res;
  for (const { rule, query } of passed) {
    const out = await velocity.record(query);
    if (out.over) {
      const trace = [...res.trace, { ruleId: rule.id, matched: true, why: `over velocity limit ${query.maxRequests}/${query.windowMs / 1000}s (filled since it was read)` }];
      return throttled(rule, snapshot.id, trace, out.retryAfterMs);
    }
  }
  return res;
}

function throttled(rule: PolicyRule, snapshotId: string, trace: RuleTraceEntry[], retryAfterMs: number): EvalResult {
  const res = ruleResult(rule, snapshotId, trace, true);
  res.retryAfterMs = Math.max(1, retryAfterMs);
  const spec = rule.velocity;
  if (!rule.reason && spec) res.reason = `rule ${rule.id}: over ${spec.max_requests} requests per ${spec.window_seconds}s by ${spec.key}`;
  return res;
}

/** The rules in order against `input`, reading velocity windows only; the throttle rules it passes under their limit go into `passed`. */
async function evaluateRules(snapshot: PolicySnapshot, input: CheckInput, velocity: VelocityPort, passed: { rule: PolicyRule; query: VelocityQuery }[]): Promise<EvalResult> {
  const trace: RuleTraceEntry[] = [];
  let velocityConsulted = false;
  // P205: no job has such a topic (the gateway and the bus refuse one), so a caller asking about
  // it gets a deny, never the default decision: topic rules cannot name it.
  if (input.topic.length > MAX_TOPIC_LENGTH || !JOB_TOPIC_RE.test(input.topic))
    return { verdict: 'deny', ruleId: '', reason: `invalid topic ${JSON.stringify(input.topic.slice(0, 64))}: a job topic matches ${JOB_TOPIC_RE.source}, at most ${MAX_TOPIC_LENGTH} characters`, snapshotId: snapshot.id, trace, velocityConsulted };
  for (const rule of snapshot.policy.rules) {
    const why = whyNotMatched(rule.match, input);
    if (why !== null) {
      trace.push({ ruleId: rule.id, matched: false, why });
      continue;
    }
    if (rule.decision === 'throttle' && rule.velocity) {
      const spec = rule.velocity;
      const q: VelocityQuery = {
        ruleId: rule.id,
        keyKind: spec.key,
        keyValue: velocityKeyValue(spec, input),
        jobId: input.jobId,
        maxRequests: spec.max_requests,
        windowMs: spec.window_seconds * 1000,
      };
      velocityConsulted = true;
      const out = await velocity.peek(q);
      if (!out.over) {
        trace.push({ ruleId: rule.id, matched: false, why: `velocity under limit (${out.count}/${spec.max_requests} per ${spec.window_seconds}s by ${spec.key})` });
        passed.push({ rule, query: q });
        continue;
      }
      trace.push({ ruleId: rule.id, matched: true, why: `over velocity limit ${spec.max_requests}/${spec.window_seconds}s` });
      return throttled(rule, snapshot.id, trace, out.retryAfterMs);
    }
    trace.push({ ruleId: rule.id, matched: true, why: 'all match conditions hold' });
    return ruleResult(rule, snapshot.id, trace, velocityConsulted);
  }
  const d = snapshot.policy.default_decision;
  return { verdict: d, ruleId: '', reason: `no rule matched; default_decision ${d}`, snapshotId: snapshot.id, trace, velocityConsulted };
}
