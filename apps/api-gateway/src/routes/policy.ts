// /api/v1/policy/* (CONTRACT §2): the safety kernel's Evaluate, Explain,
// Simulate, ListSnapshots and ListRules behind the gateway's auth, tenancy and
// validation. The request is evaluated in the acting tenant (a tenant_id in
// the body must match it, D47); principal_id defaults to the caller's.
import { z } from 'zod';
import type { Request, Response } from 'express';
import { policyCheckInit } from '@cordum/job-store';
import { JOB_ID_RE } from '@cordum/protocol';
import type { Mount } from '../http/app';
import { chargedActingTenant } from '../ratelimit/middleware';
import type { PolicyAdmin } from '../safety/policy-admin';
import type { EvaluateRequest } from '../safety/evaluator';
import { TOPIC_RE, labelsSchema, parseLabelledBody } from '../submit/schema';
import { jsonBody } from './jobs';

const opt = <T extends z.ZodType>(s: T) => s.nullish().transform((v) => v ?? undefined);
const shortString = z.string().min(1).max(256);
/** A candidate policy is a YAML document; 256 KiB is far above any real policy. */
export const MAX_POLICY_YAML_CHARS = 256 * 1024;

export const policyRequestSchema = z.object({
  topic: z.string().max(255, 'must be at most 255 characters').regex(TOPIC_RE, 'must match ^job(\\.[A-Za-z0-9_-]+)+$'),
  // P329: as every other entry point holds a job id (it is echoed as the approval reference).
  job_id: opt(z.string().regex(JOB_ID_RE, 'must match ^[A-Za-z0-9._:-]{1,128}$')),
  priority: opt(z.enum(['interactive', 'batch', 'critical'])).transform((p) => p ?? 'interactive'),
  labels: opt(labelsSchema).transform((l) => l ?? {}),
  memory_id: opt(shortString),
  capability: opt(shortString),
  risk_tags: opt(z.array(shortString).max(64)).transform((v) => v ?? []),
  requires: opt(z.array(shortString).max(64)).transform((v) => v ?? []),
  actor_id: opt(shortString),
  actor_type: opt(z.enum(['human', 'service'])),
  principal_id: opt(shortString),
  tenant_id: opt(z.string()),
});

export const simulateRequestSchema = policyRequestSchema.extend({
  policy_yaml: z.string().min(1, 'required').max(MAX_POLICY_YAML_CHARS, `must be at most ${MAX_POLICY_YAML_CHARS} characters`),
});

export interface PolicyRouteDeps {
  policy: PolicyAdmin;
}

function parse<S extends z.ZodType>(schema: S, req: Request): z.output<S> {
  return parseLabelledBody(schema, req.body);
}

async function checkRequest(res: Response, b: z.output<typeof policyRequestSchema>): Promise<EvaluateRequest> {
  const { caller: c, tenant } = await chargedActingTenant(res, b.tenant_id);
  return policyCheckInit(b.job_id ?? '', {
    tenant,
    topic: b.topic,
    priority: b.priority,
    principalId: b.principal_id ?? c.principalId,
    labels: b.labels,
    memoryId: b.memory_id,
    actorId: b.actor_id,
    actorType: b.actor_type,
    capability: b.capability,
    riskTags: b.risk_tags,
    requires: b.requires,
  });
}

export function mountPolicyRoutes(mount: Mount, deps: PolicyRouteDeps): void {
  mount('POST /api/v1/policy/evaluate', jsonBody(), async (req: Request, res: Response) => {
    const body = parse(policyRequestSchema, req);
    res.status(200).json(await deps.policy.evaluate(await checkRequest(res, body)));
  });
  mount('POST /api/v1/policy/explain', jsonBody(), async (req: Request, res: Response) => {
    const body = parse(policyRequestSchema, req);
    res.status(200).json(await deps.policy.explain(await checkRequest(res, body)));
  });
  mount('POST /api/v1/policy/simulate', jsonBody(), async (req: Request, res: Response) => {
    const body = parse(simulateRequestSchema, req);
    res.status(200).json(await deps.policy.simulate(await checkRequest(res, body), body.policy_yaml));
  });
  // The policy is deployment-wide (like GET /config): no tenant filter applies.
  mount('GET /api/v1/policy/snapshots', async (_req: Request, res: Response) => {
    res.status(200).json(await deps.policy.snapshots());
  });
  mount('GET /api/v1/policy/rules', async (_req: Request, res: Response) => {
    res.status(200).json(await deps.policy.rules());
  });
}
