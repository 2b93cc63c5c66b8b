import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { DecisionCacheObserver } from './cache/decision-cache';

/** CONTRACT §7 safety metrics, registered on the process registry. */
export class SafetyMetrics {
  readonly decisions: Counter<'decision'>;
  readonly checkDuration: Histogram;
  readonly cacheHits: Counter;
  readonly cacheMisses: Counter;
  /** hits + misses: hit ratio = rate(hits_total) / rate(lookups_total) without summing two series. */
  readonly cacheLookups: Counter;
  readonly cacheSize: Gauge;
  /** 1 while the replica serves the last applied bundles in place of a stored section it refuses (start-time fallback). */
  readonly bundlesFallback: Gauge;
  /** 1 while the policy file on disk differs from the one in force and is refused (unreadable, invalid, or clashing with a bundle): P219. */
  readonly policyFileRejected: Gauge;
  /**
   * 1 for the policy snapshot this replica evaluates with (file plus bundles), labelled with its
   * id. Kernels that disagree (a rolling SIGHUP half done, different policy files) all look in sync
   * in /config/status, which compares the stored `safety` section only; this series tells them apart.
   */
  readonly policySnapshot: Gauge<'snapshot'>;
  /** Simulate calls refused RESOURCE_EXHAUSTED: simulations run one at a time with at most 2 waiting (P146). */
  readonly simulationsRefused: Counter;

  /** What the snapshot gauge reports at each scrape (P180); unset: what was last `set`. */
  private servingSnapshot: (() => string | null) | undefined;

  /**
   * From now on cordum_safety_policy_snapshot_info reports, at each scrape, the snapshot this
   * replica evaluates with, and no series while it evaluates nothing (not ready, P48).
   */
  reportServingSnapshot(fn: () => string | null): void {
    this.servingSnapshot = fn;
  }

  constructor(registry: Registry) {
    this.decisions = new Counter({
      name: 'cordum_safety_decisions_total',
      help: 'Policy decisions returned by Check and Evaluate',
      labelNames: ['decision'],
      registers: [registry],
    });
    this.checkDuration = new Histogram({
      name: 'cordum_safety_check_duration_seconds',
      help: 'Time to evaluate a Check or Evaluate request, velocity included',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [registry],
    });
    this.cacheHits = new Counter({
      name: 'cordum_safety_decision_cache_hits_total',
      help: 'Check/Evaluate decisions served from the per-replica decision cache',
      registers: [registry],
    });
    this.cacheMisses = new Counter({
      name: 'cordum_safety_decision_cache_misses_total',
      help: 'Decision cache lookups that had to evaluate the policy (velocity paths always miss)',
      registers: [registry],
    });
    this.cacheLookups = new Counter({
      name: 'cordum_safety_decision_cache_lookups_total',
      help: 'Decision cache lookups (hits + misses); 0 while the cache is off',
      registers: [registry],
    });
    this.cacheSize = new Gauge({
      name: 'cordum_safety_decision_cache_size',
      help: 'Entries in the decision cache of this replica',
      registers: [registry],
    });
    this.simulationsRefused = new Counter({
      name: 'cordum_safety_simulations_refused_total',
      help: 'Simulate calls refused because the kernel was running one and 2 more were waiting (they run one at a time so Checks are never held behind them)',
      registers: [registry],
    });
    this.policySnapshot = new Gauge({
      name: 'cordum_safety_policy_snapshot_info',
      help: '1 for the policy snapshot (file plus bundles) this replica evaluates with, by snapshot id (none while it evaluates nothing); more than one id across the kernels for longer than a reload interval means they decide differently',
      labelNames: ['snapshot'],
      registers: [registry],
      collect: () => {
        const serving = this.servingSnapshot;
        if (!serving) return;
        this.policySnapshot.reset();
        const id = serving();
        if (id !== null) this.policySnapshot.set({ snapshot: id }, 1);
      },
    });
    this.bundlesFallback = new Gauge({
      name: 'cordum_safety_bundles_fallback',
      help: '1 while this replica serves the safety section last applied with its policy file because it refuses the stored one',
      registers: [registry],
    });
    this.policyFileRejected = new Gauge({
      name: 'cordum_safety_policy_file_rejected',
      help: '1 while the policy file on disk differs from the policy in force and is refused (unreadable, invalid, or a rule id of a bundle); the previous policy stays',
      registers: [registry],
    });
  }

  cacheObserver(): DecisionCacheObserver {
    return {
      hit: () => {
        this.cacheHits.inc();
        this.cacheLookups.inc();
      },
      miss: () => {
        this.cacheMisses.inc();
        this.cacheLookups.inc();
      },
      size: (n) => this.cacheSize.set(n),
    };
  }
}
