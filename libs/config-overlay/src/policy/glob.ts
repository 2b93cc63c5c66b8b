import { JOB_TOPIC_RE, MAX_TOPIC_LENGTH } from '@cordum/protocol';

/**
 * NATS-style subject glob: `*` matches exactly one dot-separated segment, `>`
 * (only as the last segment) matches one or more remaining segments.
 */
export function topicMatches(pattern: string, topic: string): boolean {
  const p = pattern.split('.');
  const t = topic.split('.');
  for (let i = 0; i < p.length; i++) {
    const seg = p[i];
    if (seg === '>') return i === p.length - 1 && t.length > i;
    const ts = t[i];
    if (ts === undefined || ts === '') return false;
    if (seg !== '*' && seg !== ts) return false;
  }
  return p.length === t.length;
}

/** One segment of a job topic (`JOB_TOPIC_RE` in @cordum/protocol: `^job(\.[A-Za-z0-9_-]+)+$`). */
const TOPIC_SEGMENT_RE = /^[A-Za-z0-9_-]+$/;

/** At most this much of an operator's value is quoted back in an error. */
const QUOTE_CHARS = 80;

/** `value` as JSON, cut to QUOTE_CHARS (an error line stays one readable line). */
export function quoteValue(value: string): string {
  return JSON.stringify(value.length > QUOTE_CHARS ? `${value.slice(0, QUOTE_CHARS)}…` : value);
}

/**
 * Why `pattern` is not a topic glob that can match a job topic, or null. Without this a
 * pattern such as `job.>.admin`, `job.ad*`, `Job.admin.>` or `admin.>` loaded and never
 * matched, so a deny rule written with it silently allowed (CONTRACT §8: a policy mistake is
 * a load error). Every topic a job can have matches `^job(\.[A-Za-z0-9_-]+)+$` (the gateway
 * refuses any other), so a pattern must start with `job`, `*` or `>`, name segments in that
 * alphabet, and reach at least two segments.
 */
export function topicPatternError(pattern: string): string | null {
  const q = quoteValue(pattern);
  const segs = pattern.split('.');
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i] ?? '';
    if (seg === '') return `topic pattern ${q} has an empty segment`;
    if (seg === '>' && i !== segs.length - 1) return `topic pattern ${q}: '>' may only be the last segment`;
    if (seg !== '*' && seg !== '>' && /[*>]/.test(seg)) return `topic pattern ${q}: '*' and '>' must be whole segments`;
  }
  const never = `topic pattern ${q} can never match a job topic (${JOB_TOPIC_RE.source})`;
  const first = segs[0] ?? '';
  if (first !== 'job' && first !== '*' && first !== '>') return `${never}: the first segment must be 'job' (lower case), '*' or '>'`;
  const bad = segs.find((s) => s !== '*' && s !== '>' && !TOPIC_SEGMENT_RE.test(s));
  if (bad !== undefined) return `${never}: segment ${quoteValue(bad)} has a character other than letters, digits, '_' and '-'`;
  if (segs.length < 2 && first !== '>') return `${never}: a job topic has at least two segments (e.g. 'job.>')`;
  // Each segment of the pattern matches at least its own length (a wildcard at least 1 character).
  if (pattern.length > MAX_TOPIC_LENGTH) return `${never}: it is longer than the ${MAX_TOPIC_LENGTH} characters a job topic may have`;
  return null;
}
