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
