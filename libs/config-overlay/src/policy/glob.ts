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

/**
 * Why `pattern` is not a topic glob this matcher can match, or null. Without this a pattern
 * such as `job.>.admin` or `job.ad*` loaded and never matched, so a deny rule written with it
 * silently allowed (CONTRACT §8: a policy mistake is a load error).
 */
export function topicPatternError(pattern: string): string | null {
  const segs = pattern.split('.');
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i] ?? '';
    if (seg === '') return `topic pattern '${pattern}' has an empty segment`;
    if (seg === '>' && i !== segs.length - 1) return `topic pattern '${pattern}': '>' may only be the last segment`;
    if (seg !== '*' && seg !== '>' && /[*>]/.test(seg)) return `topic pattern '${pattern}': '*' and '>' must be whole segments`;
  }
  return null;
}
