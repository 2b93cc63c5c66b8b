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
  /** `record` only: this call added the job (it was not in the window yet). */
  added?: boolean;
}

/** Velocity windows (D20). `record` counts the job (once per job_id); `peek` must not write. */
export interface VelocityPort {
  record(q: VelocityQuery): Promise<VelocityOutcome>;
  peek(q: VelocityQuery): Promise<VelocityOutcome>;
  /** P332: takes the job's place back out of the window (a `record` of this Check whose verdict did not let the job go). */
  unrecord(q: VelocityQuery): Promise<void>;
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
  return { record: peek, peek, unrecord: () => Promise.resolve() };
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

/**
 * Verdicts that keep the places a Check took (P332): the job goes now, or once approved (a held
 * job's re-check after its approval answers `require_approval` again, D18, and the kernel cannot
 * tell it from a first hold, so a hold keeps its places).
 */
const KEEPS_PLACES: ReadonlySet<Verdict> = new Set<Verdict>(['allow', 'allow_with_constraints', 'require_approval']);

/**
 * First match wins; a throttle rule under its limit does not match (D20). In `record` mode (Check)
 * each throttle rule passed takes the job's place as it is read (one script call, as before), and
 * the places this Check added are taken back when the verdict does not let the job go (P332): a
 * job throttled by a later rule or denied kept a place in every window it passed, though it did
 * not run, and a backlog on one tight topic throttled a tenant's other work for a whole window.
 */
export async function evaluatePolicy(snapshot: PolicySnapshot, input: CheckInput, velocity: VelocityPort, mode: VelocityMode): Promise<EvalResult> {
  if (mode === 'peek') return evaluateRules(snapshot, input, velocity, mode, []);
  const added: VelocityQuery[] = [];
  const res = await evaluateRules(snapshot, input, velocity, mode, added);
  if (!KEEPS_PLACES.has(res.verdict) && added.length > 0) await Promise.all(added.map((q) => velocity.unrecord(q)));
  return res;
}

function throttled(rule: PolicyRule, snapshotId: string, trace: RuleTraceEntry[], retryAfterMs: number): EvalResult {
  const res = ruleResult(rule, snapshotId, trace, true);
  res.retryAfterMs = Math.max(1, retryAfterMs);
  const spec = rule.velocity;
  if (!rule.reason && spec) res.reason = `rule ${rule.id}: over ${spec.max_requests} requests per ${spec.window_seconds}s by ${spec.key}`;
  return res;
}

/** The rules in order against `input`; in `record` mode the windows this call added the job to go into `added`. */
async function evaluateRules(snapshot: PolicySnapshot, input: CheckInput, velocity: VelocityPort, mode: VelocityMode, added: VelocityQuery[]): Promise<EvalResult> {
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
      const out = mode === 'record' ? await velocity.record(q) : await velocity.peek(q);
      if (!out.over) {
        trace.push({ ruleId: rule.id, matched: false, why: `velocity under limit (${out.count}/${spec.max_requests} per ${spec.window_seconds}s by ${spec.key})` });
        if (out.added) added.push(q);
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
