// Failed managed-key checks per client address (P55). A managed key's secret is checked
// whenever the pair (id, secret) was not verified before, and the key id is not secret (it
// prefixes the key and names its default principal). Records written before P331 are checked
// with scrypt (≈ 100 ms of a libuv thread): without a bound, anyone could keep every replica's
// thread pool busy with wrong secrets for a known id, so real logins (and DNS lookups on
// reconnect) waited for seconds. SHA-256 records (D27, P331) cost nothing to check; the same
// budget still throttles wrong secrets for them, as any login would. Each replica gives a client
// address FAILED_LOGIN_BURST failed checks, refilled at FAILED_LOGIN_PER_MINUTE a minute; past
// that, a check of a secret not verified before is refused 429 before it runs. A check takes its token
// when it starts and gives it back when it passes (P155). Lookups that need none
// (static keys, a managed key already verified, malformed or unknown keys) are never refused.

export const FAILED_LOGIN_BURST = 20;
export const FAILED_LOGIN_PER_MINUTE = 20;
/**
 * P222: the budget of one key id from one address is FAILED_LOGIN_BURST; the address as a whole
 * gets this many, for every id together (what keeps the thread pool free when one client tries
 * many known ids). Behind an ingress or NAT every client has one address: wrong secrets for one
 * id no longer lock the others' first logins out, as the address-wide budget alone did.
 */
export const FAILED_LOGIN_ADDRESS_BURST = 100;
export const FAILED_LOGIN_ADDRESS_PER_MINUTE = 100;

/**
 * The address a budget counts by: an IPv4 address (IPv4-mapped IPv6 included) as is, an IPv6
 * address by its /64, the smallest block a client is usually given (one /128 each was no bound
 * for a client with a /64 of its own).
 */
export function addressBucket(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1] as string;
  if (!address.includes(':')) return address;
  const [head = '', tail] = (address.split('%')[0] ?? '').split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}
/** Clients tracked per replica; the least recently failed is forgotten first. */
const MAX_CLIENTS = 10_000;

export interface FailedLoginBudget {
  /**
   * Takes a token for a check about to run: 0 when taken, otherwise the ms until one is free
   * (nothing taken). Taken before the check, not counted after it, so checks already running count
   * against the budget: a burst of wrong secrets sent at once runs at most the tokens left (P155).
   */
  take(client: string): number;
  /** Gives back the token of a check that passed. */
  refund(client: string): void;
}

export function createFailedLoginBudget(o: { now?: () => number; burst?: number; perMinute?: number } = {}): FailedLoginBudget {
  const now = o.now ?? Date.now;
  const burst = o.burst ?? FAILED_LOGIN_BURST;
  const perMs = (o.perMinute ?? FAILED_LOGIN_PER_MINUTE) / 60_000;
  /** client → tokens left at `ts`; a client with a full budget is not stored. */
  const buckets = new Map<string, { t: number; ts: number }>();

  const tokens = (client: string): { t: number; ts: number } | undefined => {
    const b = buckets.get(client);
    if (!b) return undefined;
    const n = now();
    b.t = Math.min(burst, b.t + (n - b.ts) * perMs);
    b.ts = n;
    if (b.t >= burst) {
      buckets.delete(client);
      return undefined;
    }
    return b;
  };

  return {
    take(client) {
      const b = tokens(client);
      // (less a hair of float error: a third of a token is 1,000 ms, not 1,001)
      if (b && b.t < 1) return Math.max(1, Math.ceil((1 - b.t) / perMs - 1e-6));
      const cur = b ?? { t: burst, ts: now() };
      cur.t -= 1;
      buckets.delete(client);
      if (buckets.size >= MAX_CLIENTS) {
        const oldest = buckets.keys().next();
        if (!oldest.done) buckets.delete(oldest.value);
      }
      buckets.set(client, cur);
      return 0;
    },
    refund(client) {
      const b = tokens(client);
      if (!b) return;
      b.t += 1;
      if (b.t >= burst) buckets.delete(client);
    },
  };
}
