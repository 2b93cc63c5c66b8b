// POST /api/v1/jobs body (CONTRACT §2, D30, D46, D47). Unknown fields are
// ignored (z.object strips them). `null` on an optional field means "absent",
// because many clients serialise unset fields that way.
import { z } from 'zod';
import { labelBytes, MAX_LABEL_BYTES } from '@cordum/protocol';
import { ApiError, type ErrorDetail } from '../http/errors';

export const TOPIC_RE = /^job(\.[A-Za-z0-9_-]+)+$/;
export const MAX_PROMPT_CHARS = 50_000;
export const MAX_LABELS = 50;

/**
 * A job's labels (submit and the policy routes): at most MAX_LABELS, which the OpenAPI description
 * states as `maxProperties` (a refine alone does not reach it), and MAX_LABEL_BYTES in all (P309:
 * the dispatch carries them twice, and must fit NATS's max_payload).
 */
export const labelsSchema = z
  .record(z.string().max(256), z.string().max(4096))
  .refine((l) => Object.keys(l).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`)
  .refine((l) => labelBytes(l) <= MAX_LABEL_BYTES, `at most ${MAX_LABEL_BYTES} bytes in all (UTF-8 keys and values)`)
  .meta({ maxProperties: MAX_LABELS, description: `at most ${MAX_LABELS} labels, keys ≤ 256 and values ≤ 4096 characters, ${MAX_LABEL_BYTES} bytes in all (UTF-8 keys and values)` });
export const MAX_DEADLINE_MS = 7 * 24 * 3600 * 1000;
export const IDEMPOTENCY_KEY_RE = /^[\x21-\x7e]{1,256}$/;

const opt = <T extends z.ZodType>(s: T) => s.nullish().transform((v) => v ?? undefined);
const shortString = z.string().min(1).max(256);

export const submitBodySchema = z.object({
  prompt: z.string().max(MAX_PROMPT_CHARS, `must be at most ${MAX_PROMPT_CHARS} characters`),
  topic: z.string().max(255, 'must be at most 255 characters').regex(TOPIC_RE, 'must match ^job(\\.[A-Za-z0-9_-]+)+$ (the worker subject, e.g. job.echo)'),
  context: z.unknown().optional().describe('any JSON; the whole body nests at most 100 levels of objects and arrays (MAX_JSON_DEPTH)'),
  // Default interactive: an API caller waiting on a response is the common case (README).
  priority: opt(z.enum(['interactive', 'batch', 'critical'])).transform((p) => p ?? 'interactive'),
  labels: opt(labelsSchema).transform((l) => l ?? {}),
  idempotency_key: opt(z.string().regex(IDEMPOTENCY_KEY_RE, 'must be 1-256 printable ASCII characters without spaces')),
  memory_id: opt(shortString),
  context_mode: opt(z.enum(['raw', 'chat', 'rag'])),
  capability: opt(shortString),
  risk_tags: opt(z.array(shortString).max(64)).transform((v) => v ?? []),
  requires: opt(z.array(shortString).max(64)).transform((v) => v ?? []),
  actor_id: opt(shortString),
  actor_type: opt(z.enum(['human', 'service'])),
  deadline_ms: opt(z.number().int().positive().max(MAX_DEADLINE_MS, 'must be at most 7 days (604800000 ms)')),
  tenant_id: opt(z.string()),
});

export type SubmitBody = z.output<typeof submitBodySchema>;

/**
 * An own `__proto__` label: JSON.parse keeps it, zod's records skip it, so `labels: {"__proto__":
 * …}` was a 200 with the label gone (and its value never type-checked). Refused by name instead.
 */
function protoLabelDetails(body: unknown): ErrorDetail[] {
  const labels = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)['labels'] : undefined;
  return typeof labels === 'object' && labels !== null && Object.hasOwn(labels, '__proto__') ? [{ path: 'labels.__proto__', message: 'key __proto__ is not allowed' }] : [];
}

/** A request body carrying `labels` through its schema: 400 `validation_failed` naming every bad field. */
export function parseLabelledBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body);
  const proto = protoLabelDetails(body);
  if (!r.success || proto.length > 0) throw new ApiError('validation_failed', { details: [...proto, ...(r.success ? [] : zodDetails(r.error))] });
  return r.data;
}

export function zodDetails(err: z.ZodError): ErrorDetail[] {
  return err.issues.map((i) => ({ path: i.path.length ? i.path.map(String).join('.') : '(body)', message: i.message }));
}
