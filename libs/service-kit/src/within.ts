/**
 * `p`'s value, or null when it rejects or has not settled within `ms`. Never throws, and its
 * timer never outlives the race: for a reading that is better absent than late (a readiness
 * check, a gauge read at scrape time).
 */
export async function valueWithin<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([p, late]);
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}
